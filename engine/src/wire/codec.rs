//! Length-prefixed framing: a 4-byte big-endian length, then an rkyv archive.

use rkyv::{rancor, util::AlignedVec};

use super::v1::ClientFrameV1;
use super::{ClientFrame, ServerFrame, Version, WireError};

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Absolute maximum frame size; the configured limit can only be lower.
pub const MAX_FRAME_HARD: usize = 64 * 1024;

const ALIGN: usize = 16;

/// Field limits applied after a frame decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum frame size in bytes (length prefix excluded).
    pub max_frame: usize,
    /// Maximum chat text length in characters.
    pub max_chat_chars: usize,
    /// Maximum length of any lead field, in bytes.
    pub max_field_bytes: usize,
    /// Maximum number of extra lead form fields.
    pub max_form_fields: usize,
    /// Maximum taps in one `Like` frame.
    pub max_like_count: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: 16 * 1024,
            max_chat_chars: 500,
            max_field_bytes: 256,
            max_form_fields: 16,
            max_like_count: 1000,
        }
    }
}

/// Serialize a frame with its length prefix.
pub fn encode<F>(frame: &F) -> Vec<u8>
where
    F: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    // Serializing our own in-memory frame types cannot fail: they hold only
    // owned strings, integers and vectors.
    let body = rkyv::to_bytes::<rancor::Error>(frame).expect("frame types always serialize");
    let mut out = Vec::with_capacity(LEN_PREFIX + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Validate a length prefix against the maximum frame size.
pub fn decode_len(prefix: [u8; LEN_PREFIX], max: usize) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len == 0 {
        return Err(WireError::EmptyFrame);
    }
    let max = max.min(MAX_FRAME_HARD);
    if len > max {
        return Err(WireError::FrameTooLarge { len, max });
    }
    Ok(len)
}

/// Decode and validate one client frame body (length prefix already
/// removed) of the current protocol version.
pub fn decode_client(body: &[u8], limits: &Limits) -> Result<ClientFrame, WireError> {
    decode_client_version(body, limits, Version::CURRENT)
}

/// Decode and validate one client frame body of protocol `version`, as
/// the current frame type.
pub fn decode_client_version(
    body: &[u8],
    limits: &Limits,
    version: Version,
) -> Result<ClientFrame, WireError> {
    fn archived<T>(body: &[u8]) -> Result<T, WireError>
    where
        T: rkyv::Archive,
        T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
            + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
    {
        if (body.as_ptr() as usize).is_multiple_of(ALIGN) {
            rkyv::from_bytes::<T, rancor::Error>(body)
        } else {
            let mut v = AlignedVec::<ALIGN>::with_capacity(body.len());
            v.extend_from_slice(body);
            rkyv::from_bytes::<T, rancor::Error>(&v)
        }
        .map_err(|_| WireError::Malformed)
    }
    let frame = match version {
        Version::V2 => archived::<ClientFrame>(body)?,
        Version::V1 => archived::<ClientFrameV1>(body)?.into(),
    };
    check_client(&frame, limits)?;
    Ok(frame)
}

/// Decode and validate one server frame body (used by clients).
pub fn decode_server(body: &[u8]) -> Result<ServerFrame, WireError> {
    let mut v = AlignedVec::<ALIGN>::with_capacity(body.len());
    v.extend_from_slice(body);
    rkyv::from_bytes::<ServerFrame, rancor::Error>(&v).map_err(|_| WireError::Malformed)
}

fn check_client(frame: &ClientFrame, l: &Limits) -> Result<(), WireError> {
    let field = |s: &str, name: &'static str| {
        if s.len() > l.max_field_bytes {
            Err(WireError::FieldTooLong(name))
        } else {
            Ok(())
        }
    };
    match frame {
        ClientFrame::Hello(h) => {
            field(&h.ticket, "ticket")?;
            field(&h.client, "client")?;
        }
        ClientFrame::Chat { text, .. } => {
            if text.chars().count() > l.max_chat_chars {
                return Err(WireError::FieldTooLong("text"));
            }
        }
        ClientFrame::Like { count } => {
            if *count == 0 || *count > l.max_like_count {
                return Err(WireError::InvalidField("count"));
            }
        }
        ClientFrame::Lead(lead) => {
            field(&lead.phone, "phone")?;
            field(&lead.wechat, "wechat")?;
            field(&lead.name, "name")?;
            field(&lead.honeypot, "honeypot")?;
            field(&lead.consent_version, "consent_version")?;
            if lead.fields.len() > l.max_form_fields {
                return Err(WireError::FieldTooLong("fields"));
            }
            for (k, v) in &lead.fields {
                field(k, "fields")?;
                field(v, "fields")?;
            }
        }
        ClientFrame::Bye | ClientFrame::Withdraw { .. } => {}
        ClientFrame::Refresh { ticket } => field(ticket, "ticket")?,
    }
    Ok(())
}

/// A sans-IO streaming decoder: push bytes as they arrive, pop frames.
///
/// After an error the decoder is poisoned: the connection must be closed with
/// the error's close code.
///
/// Decoded frames are not drained one by one (that would move the rest of
/// the buffer once per frame: quadratic on a large read of tiny frames); a
/// read offset advances instead, and the consumed prefix is dropped once per
/// [`FrameDecoder::push`].
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already decoded.
    pos: usize,
    limits: Limits,
    version: Version,
    failed: bool,
}

impl FrameDecoder {
    /// A decoder of the current protocol version enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        FrameDecoder::with_version(limits, Version::CURRENT)
    }

    /// A decoder of protocol `version` (the connection's ALPN).
    pub fn with_version(limits: Limits, version: Version) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            pos: 0,
            limits,
            version,
            failed: false,
        }
    }

    /// Append received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            // One move per read, of what is left undecoded (at most one
            // partial frame when the caller drains between pushes).
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<ClientFrame>, WireError> {
        if self.failed {
            return Err(WireError::Malformed);
        }
        let rest = &self.buf[self.pos..];
        if rest.len() < LEN_PREFIX {
            return Ok(None);
        }
        let prefix = [rest[0], rest[1], rest[2], rest[3]];
        let result = decode_len(prefix, self.limits.max_frame).and_then(|len| {
            if rest.len() < LEN_PREFIX + len {
                return Ok(None);
            }
            let frame = decode_client_version(
                &rest[LEN_PREFIX..LEN_PREFIX + len],
                &self.limits,
                self.version,
            )?;
            self.pos += LEN_PREFIX + len;
            Ok(Some(frame))
        });
        if result.is_err() {
            self.failed = true;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Hello, Lead};

    fn frames() -> Vec<ClientFrame> {
        vec![
            ClientFrame::Hello(Hello {
                ticket: "v1.1.2.3..ab".into(),
                client: "test".into(),
            }),
            ClientFrame::Chat {
                client_msg_id: 7,
                text: "你好 hello".into(),
            },
            ClientFrame::Like { count: 12 },
            ClientFrame::Lead(Lead {
                client_lead_id: 9,
                phone: "+8613800138000".into(),
                consent: true,
                fields: vec![("city".into(), "上海".into())],
                fill_ms: 5000,
                ..Lead::default()
            }),
            ClientFrame::Bye,
            ClientFrame::Refresh {
                ticket: "v2.k1.1.2.3..ab".into(),
            },
            ClientFrame::Withdraw { client_lead_id: 9 },
        ]
    }

    #[test]
    fn roomgate_1_frames_decode_as_current_ones() {
        use crate::wire::{ClientFrameV1, LeadV1, Version};
        let v1 = ClientFrameV1::Lead(LeadV1 {
            client_lead_id: 9,
            phone: "+8613800138000".into(),
            consent: true,
            fill_ms: 5000,
            ..LeadV1::default()
        });
        let bytes = encode(&v1);
        let mut dec = FrameDecoder::with_version(Limits::default(), Version::V1);
        dec.push(&bytes);
        let Some(ClientFrame::Lead(lead)) = dec.next_frame().unwrap() else {
            panic!("a v1 lead decodes as a lead");
        };
        assert_eq!(lead.client_lead_id, 9);
        assert_eq!(lead.consent_version, "");
        assert!(lead.consent);
        // Every v1 frame converts.
        for f in [
            ClientFrameV1::Like { count: 3 },
            ClientFrameV1::Bye,
            ClientFrameV1::Chat {
                client_msg_id: 1,
                text: "hi".into(),
            },
        ] {
            let got =
                decode_client_version(&encode(&f)[LEN_PREFIX..], &Limits::default(), Version::V1);
            assert_eq!(got, Ok(ClientFrame::from(f)));
        }
        // (The layouts are not self-describing: bytes of one version may
        // validate as another's frame; the ALPN says which one it is.)
        let w = encode(&ClientFrame::Withdraw { client_lead_id: 4 });
        assert_eq!(
            decode_client(&w[LEN_PREFIX..], &Limits::default()),
            Ok(ClientFrame::Withdraw { client_lead_id: 4 })
        );
        // The consent version is a limited field.
        let long = ClientFrame::Lead(Lead {
            consent_version: "v".repeat(300),
            ..Lead::default()
        });
        assert_eq!(
            decode_client(&encode(&long)[LEN_PREFIX..], &Limits::default()),
            Err(WireError::FieldTooLong("consent_version"))
        );
        assert_eq!(Version::from_alpn(b"roomgate/1"), Some(Version::V1));
        assert_eq!(Version::from_alpn(b"roomgate/2"), Some(Version::V2));
        assert_eq!(Version::from_alpn(b"roomgate/3"), None);
    }

    #[test]
    fn roundtrip_through_streaming_decoder_byte_by_byte() {
        let mut dec = FrameDecoder::new(Limits::default());
        let mut out = Vec::new();
        for f in frames() {
            for b in encode(&f) {
                dec.push(&[b]);
                if let Some(got) = dec.next_frame().unwrap() {
                    out.push(got);
                }
            }
        }
        assert_eq!(out, frames());
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn one_large_read_of_tiny_frames_then_a_split_frame() {
        // 10,000 likes in one read, then a frame cut across two reads: every
        // frame decodes once, in order, and the partial one waits.
        let like = encode(&ClientFrame::Like { count: 1 });
        let chat = encode(&frames()[1]);
        let mut read: Vec<u8> = like.repeat(10_000);
        read.extend_from_slice(&chat[..5]);
        let mut dec = FrameDecoder::new(Limits::default());
        dec.push(&read);
        let mut n = 0;
        while let Some(f) = dec.next_frame().unwrap() {
            assert_eq!(f, ClientFrame::Like { count: 1 });
            n += 1;
        }
        assert_eq!(n, 10_000);
        assert_eq!(dec.buffered(), 5);
        dec.push(&chat[5..]);
        assert_eq!(dec.next_frame().unwrap(), Some(frames()[1].clone()));
        assert_eq!(dec.buffered(), 0);
        assert_eq!(dec.next_frame().unwrap(), None);
    }

    #[test]
    fn oversized_prefix_is_rejected_before_buffering_body() {
        let mut dec = FrameDecoder::new(Limits::default());
        dec.push(&(1_000_000u32).to_be_bytes());
        assert_eq!(
            dec.next_frame(),
            Err(WireError::FrameTooLarge {
                len: 1_000_000,
                max: 16 * 1024
            })
        );
        assert_eq!(
            WireError::FrameTooLarge { len: 0, max: 0 }.close_code(),
            crate::wire::CloseCode::FrameTooLarge
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let limits = Limits::default();
        for seed in 0u32..2000 {
            let len = (seed % 97 + 1) as usize;
            let body: Vec<u8> = (0..len)
                .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i as u32 * 40503) >> 7) as u8)
                .collect();
            if let Ok(f) = decode_client(&body, &limits) {
                // Anything that validates must be a well-formed frame.
                let _ = format!("{f:?}");
            }
        }
        assert_eq!(
            decode_client(&[0xff; 3], &limits),
            Err(WireError::Malformed)
        );
    }

    #[test]
    fn truncated_frame_is_malformed() {
        let bytes = encode(&frames()[1]);
        let body = &bytes[LEN_PREFIX..bytes.len() - 2];
        assert_eq!(
            decode_client(body, &Limits::default()),
            Err(WireError::Malformed)
        );
    }

    #[test]
    fn invalid_utf8_in_text_is_malformed() {
        let bytes = encode(&ClientFrame::Chat {
            client_msg_id: 1,
            text: "abcdefghijklmnopqrstuvwxyz".into(),
        });
        let mut body = bytes[LEN_PREFIX..].to_vec();
        let pos = body.windows(3).position(|w| w == b"abc").unwrap();
        body[pos] = 0xff;
        assert_eq!(
            decode_client(&body, &Limits::default()),
            Err(WireError::Malformed)
        );
    }

    #[test]
    fn limits_are_enforced() {
        let l = Limits::default();
        let long = ClientFrame::Chat {
            client_msg_id: 1,
            text: "x".repeat(501),
        };
        let b = encode(&long);
        assert_eq!(
            decode_client(&b[LEN_PREFIX..], &l),
            Err(WireError::FieldTooLong("text"))
        );
        let zero = encode(&ClientFrame::Like { count: 0 });
        assert_eq!(
            decode_client(&zero[LEN_PREFIX..], &l),
            Err(WireError::InvalidField("count"))
        );
        assert_eq!(decode_len([0, 0, 0, 0], 100), Err(WireError::EmptyFrame));
    }

    #[test]
    fn server_frames_roundtrip() {
        let f = ServerFrame::Ack {
            kind: 1,
            client_id: 5,
            verdict: 1,
            reason: 0,
            retry_after_ms: 0,
            replay: false,
        };
        let b = encode(&f);
        assert_eq!(decode_server(&b[LEN_PREFIX..]).unwrap(), f);
    }
}

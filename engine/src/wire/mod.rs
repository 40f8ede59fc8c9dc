//! The roomgate wire protocol: frame types, the length-prefixed codec, tickets
//! and the QUIC application close codes.
//!
//! Sans-IO: nothing here touches a socket. The gate feeds bytes in and gets
//! validated frames out; the loadgen uses the same types to speak the protocol.
//! Every byte from the network is hostile: frames are accessed through rkyv's
//! validation (bytecheck) only, and every failure maps to a [`CloseCode`].

mod codec;
mod frames;
mod reason;
pub mod ticket;
mod v1;

pub use codec::{
    decode_client, decode_client_version, decode_len, decode_server, encode, FrameDecoder, Limits,
    LEN_PREFIX, MAX_FRAME_HARD,
};
pub use frames::{
    AckKind, ArchivedClientFrame, ArchivedServerFrame, ClientFrame, Hello, Lead, Notice,
    NoticeKind, RoomSettings, ServerFrame, Verdict, Welcome,
};
pub use reason::{CloseCode, Reason, ReasonSet};
pub use v1::{ClientFrameV1, LeadV1};

/// The ALPN of the current protocol version, what clients offer.
pub const ALPN: &[u8] = b"roomgate/2";
/// The ALPN of the first version, still accepted ([`ClientFrameV1`]).
pub const ALPN_V1: &[u8] = b"roomgate/1";
/// What the server offers, preferred first.
pub const SERVER_ALPNS: [&[u8]; 2] = [ALPN, ALPN_V1];

/// A protocol version, as negotiated by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// `roomgate/1`: no consent version on leads, no `Withdraw`.
    V1,
    /// `roomgate/2`.
    V2,
}

impl Version {
    /// The version this build's clients speak.
    pub const CURRENT: Version = Version::V2;

    /// The version an ALPN names.
    pub fn from_alpn(alpn: &[u8]) -> Option<Version> {
        match alpn {
            ALPN => Some(Version::V2),
            ALPN_V1 => Some(Version::V1),
            _ => None,
        }
    }

    /// Its ALPN.
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Version::V1 => ALPN_V1,
            Version::V2 => ALPN,
        }
    }
}

/// Everything that can be wrong with bytes received from a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The length prefix announces more than the configured maximum.
    #[error("frame too large: {len} > {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A zero-length frame.
    #[error("empty frame")]
    EmptyFrame,
    /// The bytes are not a valid archived frame (bytecheck failed, bad UTF-8, …).
    #[error("malformed frame")]
    Malformed,
    /// A field exceeds its documented limit.
    #[error("field too long: {0}")]
    FieldTooLong(&'static str),
    /// A field has a value outside its documented domain.
    #[error("invalid field: {0}")]
    InvalidField(&'static str),
}

impl WireError {
    /// The QUIC application close code a connection is closed with for this error.
    pub fn close_code(&self) -> CloseCode {
        match self {
            WireError::FrameTooLarge { .. } => CloseCode::FrameTooLarge,
            WireError::EmptyFrame | WireError::Malformed => CloseCode::MalformedFrame,
            WireError::FieldTooLong(_) | WireError::InvalidField(_) => CloseCode::InvalidField,
        }
    }
}

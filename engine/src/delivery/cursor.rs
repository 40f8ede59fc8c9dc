//! The delivery cursor (sans-IO): where a merchant's pull stopped.
//!
//! A position is the last delivered lead's sort key `(inserted_at,
//! room_id, viewer_id, client_lead_id)`: the order leads reached
//! ClickHouse in (rows stored before migration 12 have `inserted_at =
//! ts`, so cursors issued before it, when the order was `ts`, keep their
//! place). On the wire it is opaque: base64url (no padding) of
//! `version(1) || at_ms(8) || room(8) || viewer(8) ||
//! client_lead_id(8) || tag(16)`, big-endian, where `tag` is the first 16
//! bytes of an HMAC-SHA256 (key derived from `pii.hmac_key`) over the
//! merchant id and the rest. An altered cursor, or another merchant's,
//! does not decode: the API answers 400.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::pii::PiiKeys;

/// The cursor format's version byte.
pub const VERSION: u8 = 1;
const BODY: usize = 1 + 8 * 4;
const TAG: usize = 16;

/// A lead's place in the delivery order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// `leads.inserted_at`, Unix ms.
    pub at_ms: i64,
    /// Room.
    pub room_id: u64,
    /// Viewer.
    pub viewer_id: u64,
    /// The viewer's lead id.
    pub client_lead_id: u64,
}

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// Not base64url, or the wrong length.
    #[error("cursor is not one this API issued")]
    Malformed,
    /// A version this engine does not read.
    #[error("cursor version {0} is not supported")]
    Version(u8),
    /// The tag does not match: altered, or issued to another merchant.
    #[error("cursor was altered or belongs to another key's merchant")]
    Tampered,
}

fn tag(keys: &PiiKeys, merchant: &str, body: &[u8]) -> [u8; TAG] {
    let mut data = Vec::with_capacity(32 + merchant.len() + body.len());
    data.extend_from_slice(b"roomgate/v1/cursor/");
    data.extend_from_slice(merchant.as_bytes());
    data.push(0);
    data.extend_from_slice(body);
    let mac = keys.cursor_mac(&data);
    let mut out = [0u8; TAG];
    out.copy_from_slice(&mac[..TAG]);
    out
}

/// The opaque cursor of `pos` for `merchant`.
pub fn encode(pos: &Position, merchant: &str, keys: &PiiKeys) -> String {
    let mut raw = Vec::with_capacity(BODY + TAG);
    raw.push(VERSION);
    raw.extend_from_slice(&pos.at_ms.to_be_bytes());
    raw.extend_from_slice(&pos.room_id.to_be_bytes());
    raw.extend_from_slice(&pos.viewer_id.to_be_bytes());
    raw.extend_from_slice(&pos.client_lead_id.to_be_bytes());
    let t = tag(keys, merchant, &raw);
    raw.extend_from_slice(&t);
    URL_SAFE_NO_PAD.encode(raw)
}

fn u64_at(raw: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&raw[at..at + 8]);
    u64::from_be_bytes(b)
}

/// The position in a cursor [`encode`] made for `merchant`.
pub fn decode(cursor: &str, merchant: &str, keys: &PiiKeys) -> Result<Position, CursorError> {
    if cursor.len() > 128 {
        return Err(CursorError::Malformed);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .map_err(|_| CursorError::Malformed)?;
    if raw.first().is_some_and(|v| *v != VERSION) {
        return Err(CursorError::Version(raw[0]));
    }
    if raw.len() != BODY + TAG {
        return Err(CursorError::Malformed);
    }
    let (body, given) = raw.split_at(BODY);
    let want = tag(keys, merchant, body);
    if !crate::delivery::keys::ct_eq(&want, given) {
        return Err(CursorError::Tampered);
    }
    Ok(Position {
        at_ms: u64_at(body, 1) as i64,
        room_id: u64_at(body, 9),
        viewer_id: u64_at(body, 17),
        client_lead_id: u64_at(body, 25),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> PiiKeys {
        PiiKeys::from_hex(&"01".repeat(32), &"02".repeat(32), "k1").unwrap()
    }

    const P: Position = Position {
        at_ms: 1_780_000_000_123,
        room_id: 101,
        viewer_id: u64::MAX,
        client_lead_id: 7,
    };

    #[test]
    fn cursors_round_trip_and_are_url_safe() {
        let k = keys();
        let c = encode(&P, "m1", &k);
        assert_eq!(decode(&c, "m1", &k), Ok(P));
        assert!(c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        // Stable: the same position gives the same cursor (a resumed
        // consumer may compare them).
        assert_eq!(c, encode(&P, "m1", &k));
        let neg = Position { at_ms: -5, ..P };
        assert_eq!(decode(&encode(&neg, "m1", &k), "m1", &k), Ok(neg));
    }

    #[test]
    fn altered_foreign_and_garbage_cursors_are_refused() {
        let k = keys();
        let c = encode(&P, "m1", &k);
        // Every single-character change is caught.
        for i in 0..c.len() {
            let mut b = c.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(b).unwrap();
            assert!(decode(&altered, "m1", &k).is_err(), "position {i}");
        }
        assert_eq!(decode(&c, "m2", &k), Err(CursorError::Tampered));
        let other = PiiKeys::from_hex(&"03".repeat(32), &"02".repeat(32), "k1").unwrap();
        assert_eq!(decode(&c, "m1", &other), Err(CursorError::Tampered));
        assert_eq!(decode("", "m1", &k), Err(CursorError::Malformed));
        assert_eq!(decode("not base64!", "m1", &k), Err(CursorError::Malformed));
        assert_eq!(decode(&c[..20], "m1", &k), Err(CursorError::Malformed));
        assert_eq!(
            decode(&"A".repeat(500), "m1", &k),
            Err(CursorError::Malformed)
        );
        let v2 = URL_SAFE_NO_PAD.encode([2u8; BODY + TAG]);
        assert_eq!(decode(&v2, "m1", &k), Err(CursorError::Version(2)));
    }
}

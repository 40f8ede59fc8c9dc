//! Viewer tickets: issued by the platform, verified by the gate.
//!
//! Format (ASCII, `.`-separated):
//! `v2.<key_id>.<room_id>.<viewer_id>.<expires_at_unix_secs>.<device_id>.<hex hmac>`
//! where the HMAC-SHA256, under the secret named by `key_id`, covers
//! everything before the last `.`. `key_id` is 1–16 of `[A-Za-z0-9_-]`;
//! `device_id` may be empty and has no `.`. A ticket is what makes a
//! viewer's identity trustworthy for rate limits and lead dedup.
//!
//! Keys rotate without logging anyone out: the engine accepts the current
//! key and one previous key (each named by its id) while the issuer moves to
//! the new one. Secrets are at least [`MIN_SECRET_BYTES`] bytes: a ticket
//! is an HMAC anyone holding one can attack offline. docs/PROTOCOL.md §8
//! has test vectors.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shortest secret accepted (bytes).
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest key id.
pub const MAX_KEY_ID: usize = 16;

/// What a valid ticket asserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Room the viewer may join.
    pub room_id: u64,
    /// Platform viewer id.
    pub viewer_id: u64,
    /// Expiry, Unix seconds.
    pub expires_at: u64,
    /// Optional device id (may be empty).
    pub device_id: String,
}

/// Why a ticket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// Not in the documented format.
    #[error("malformed ticket")]
    Malformed,
    /// Signed with a key id this engine does not hold (rotated out, or
    /// never configured).
    #[error("unknown ticket key id")]
    UnknownKey,
    /// The signature does not verify under the named key.
    #[error("bad ticket signature")]
    BadSignature,
    /// `expires_at` is in the past.
    #[error("ticket expired")]
    Expired,
    /// `expires_at` is further away than the configured maximum lifetime.
    #[error("ticket lifetime over the maximum")]
    TooLong,
}

/// A key that cannot sign tickets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Shorter than [`MIN_SECRET_BYTES`].
    #[error("ticket secret {0:?} is {1} bytes; at least {MIN_SECRET_BYTES} are required (e.g. `openssl rand -hex 32`)")]
    Short(String, usize),
    /// Key id empty, too long, or with characters outside `[A-Za-z0-9_-]`.
    #[error("ticket key id {0:?} must be 1-{MAX_KEY_ID} of [A-Za-z0-9_-]")]
    BadId(String),
    /// The previous key has the current key's id.
    #[error("the previous ticket key has the same id as the current one ({0:?})")]
    SameId(String),
}

/// One signing key: an id carried in the ticket, and its secret.
#[derive(Clone)]
pub struct TicketKey {
    id: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TicketKey({:?}, <redacted>)", self.id)
    }
}

impl TicketKey {
    /// A key, checked: id shape and secret length.
    pub fn new(id: &str, secret: &[u8]) -> Result<Self, KeyError> {
        if id.is_empty()
            || id.len() > MAX_KEY_ID
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(KeyError::BadId(id.to_owned()));
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::Short(id.to_owned(), secret.len()));
        }
        Ok(TicketKey {
            id: id.to_owned(),
            secret: secret.to_vec(),
        })
    }

    /// The key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.secret).expect("hmac takes any key length")
    }

    /// Sign claims into a ticket string.
    pub fn sign(&self, c: &Claims) -> String {
        let payload = format!(
            "v2.{}.{}.{}.{}.{}",
            self.id, c.room_id, c.viewer_id, c.expires_at, c.device_id
        );
        let mut m = self.mac();
        m.update(payload.as_bytes());
        format!("{payload}.{}", hex::encode(m.finalize().into_bytes()))
    }
}

/// The keys a verifier accepts: the current one (which also signs) and an
/// optional previous one during a rotation.
#[derive(Debug, Clone)]
pub struct TicketKeys {
    current: TicketKey,
    previous: Option<TicketKey>,
    /// Longest accepted `expires_at - now`, seconds.
    max_ttl_secs: u64,
}

impl TicketKeys {
    /// Current key, optional previous key, maximum ticket lifetime.
    pub fn new(
        current: TicketKey,
        previous: Option<TicketKey>,
        max_ttl_secs: u64,
    ) -> Result<Self, KeyError> {
        if let Some(p) = &previous {
            if p.id == current.id {
                return Err(KeyError::SameId(p.id.clone()));
            }
        }
        Ok(TicketKeys {
            current,
            previous,
            max_ttl_secs,
        })
    }

    /// Sign with the current key.
    pub fn sign(&self, c: &Claims) -> String {
        self.current.sign(c)
    }

    /// The longest lifetime accepted, seconds.
    pub fn max_ttl_secs(&self) -> u64 {
        self.max_ttl_secs
    }

    /// Verify a ticket at `now_unix` (seconds). The signature is checked
    /// (in constant time) before anything in the payload is trusted.
    pub fn verify(&self, ticket: &str, now_unix: u64) -> Result<Claims, TicketError> {
        let (payload, sig) = ticket.rsplit_once('.').ok_or(TicketError::Malformed)?;
        let mut parts = payload.split('.');
        let (Some("v2"), Some(kid)) = (parts.next(), parts.next()) else {
            return Err(TicketError::Malformed);
        };
        let key = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| k.id == kid)
            .ok_or(TicketError::UnknownKey)?;
        let sig = hex::decode(sig).map_err(|_| TicketError::Malformed)?;
        let mut m = key.mac();
        m.update(payload.as_bytes());
        m.verify_slice(&sig)
            .map_err(|_| TicketError::BadSignature)?;
        let (Some(room), Some(viewer), Some(exp), Some(device), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TicketError::Malformed);
        };
        let num = |s: &str| {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(TicketError::Malformed);
            }
            s.parse::<u64>().map_err(|_| TicketError::Malformed)
        };
        let claims = Claims {
            room_id: num(room)?,
            viewer_id: num(viewer)?,
            expires_at: num(exp)?,
            device_id: device.to_owned(),
        };
        if claims.expires_at <= now_unix {
            return Err(TicketError::Expired);
        }
        if claims.expires_at - now_unix > self.max_ttl_secs {
            return Err(TicketError::TooLong);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: &[u8] = b"0123456789abcdef0123456789abcdef";
    const S2: &[u8] = b"fedcba9876543210fedcba9876543210";

    fn claims() -> Claims {
        Claims {
            room_id: 42,
            viewer_id: 7,
            expires_at: 2_000,
            device_id: "dev-1".into(),
        }
    }

    fn keys(cur: (&str, &[u8]), prev: Option<(&str, &[u8])>) -> TicketKeys {
        TicketKeys::new(
            TicketKey::new(cur.0, cur.1).unwrap(),
            prev.map(|(i, s)| TicketKey::new(i, s).unwrap()),
            3_600,
        )
        .unwrap()
    }

    #[test]
    fn sign_then_verify() {
        let k = keys(("k1", S1), None);
        let t = k.sign(&claims());
        assert!(t.starts_with("v2.k1.42.7.2000.dev-1."), "{t}");
        assert_eq!(k.verify(&t, 1_000), Ok(claims()));
    }

    /// The documented test vector (docs/PROTOCOL.md §8): another language's
    /// issuer must produce exactly this string.
    #[test]
    fn test_vector() {
        let k = keys(("k1", S1), None);
        let t = k.sign(&claims());
        assert_eq!(
            t,
            "v2.k1.42.7.2000.dev-1.33fffd66a081c3ab9868c59eafa8692da9a6c94a359c45561d9cd5af5ffa6fb0"
        );
    }

    #[test]
    fn rotation_accepts_both_keys_and_names_the_unknown() {
        let old = keys(("k1", S1), None);
        let rotating = keys(("k2", S2), Some(("k1", S1)));
        let new = keys(("k2", S2), None);
        let by_old = old.sign(&claims());
        let by_new = rotating.sign(&claims());
        assert!(by_new.starts_with("v2.k2."));
        assert_eq!(rotating.verify(&by_old, 1_000), Ok(claims()));
        assert_eq!(rotating.verify(&by_new, 1_000), Ok(claims()));
        assert_eq!(new.verify(&by_old, 1_000), Err(TicketError::UnknownKey));
        // Same id, other secret: a forgery, not a rotation.
        let forged = keys(("k2", S1), None).sign(&claims());
        assert_eq!(new.verify(&forged, 1_000), Err(TicketError::BadSignature));
    }

    #[test]
    fn tamper_expiry_lifetime_and_garbage() {
        let k = keys(("k1", S1), None);
        let t = k.sign(&claims());
        let tampered = t.replacen(".42.", ".43.", 1);
        assert_eq!(k.verify(&tampered, 1_000), Err(TicketError::BadSignature));
        assert_eq!(k.verify(&t, 2_000), Err(TicketError::Expired));
        // 2,000 - 10 > 3,600? No; at now = 0 the lifetime is 2,000 s: fine.
        assert_eq!(k.verify(&t, 0), Ok(claims()));
        let long = k.sign(&Claims {
            expires_at: 10_000,
            ..claims()
        });
        assert_eq!(k.verify(&long, 1_000), Err(TicketError::TooLong));
        assert_eq!(k.verify("nonsense", 0), Err(TicketError::Malformed));
        assert_eq!(k.verify("v2.k1.zz", 0), Err(TicketError::Malformed));
        // The old unversioned-key format is refused.
        assert_eq!(
            k.verify("v1.42.7.2000.dev-1.00", 0),
            Err(TicketError::Malformed)
        );
        // A signed payload with a `+` number is malformed, not a different
        // spelling of the same claims.
        let plus = TicketKey::new("k1", S1).unwrap().sign(&claims());
        let plus = plus.replacen(".42.", ".+42.", 1);
        let (payload, _) = plus.rsplit_once('.').unwrap();
        let mut m = TicketKey::new("k1", S1).unwrap().mac();
        m.update(payload.as_bytes());
        let resigned = format!("{payload}.{}", hex::encode(m.finalize().into_bytes()));
        assert_eq!(k.verify(&resigned, 1_000), Err(TicketError::Malformed));
    }

    #[test]
    fn weak_secrets_and_bad_ids_are_refused() {
        assert!(matches!(
            TicketKey::new("k1", b"change-me"),
            Err(KeyError::Short(_, 9))
        ));
        for id in ["", "has.dot", "seventeen-chars-x", "空"] {
            assert!(
                matches!(TicketKey::new(id, S1), Err(KeyError::BadId(_))),
                "{id}"
            );
        }
        let k = TicketKey::new("k1", S1).unwrap();
        assert!(TicketKeys::new(k.clone(), Some(k.clone()), 60).is_err());
        assert!(!format!("{k:?}").contains("0123"));
    }
}

//! Merchant API keys (sans-IO): parse `Authorization: Bearer
//! <key_id>.<secret>`, compare its SHA-256 with the configured hash in
//! constant time, and make new keys (`roomgate merchant-key`).
//!
//! Only hashes are configured: the key itself is shown once, when it is
//! made. The hash covers the whole `<key_id>.<secret>` string, so a
//! secret cannot be moved to another key id.

use sha2::{Digest, Sha256};

use crate::merchants::MerchantId;

/// Longest key id.
pub const MAX_KEY_ID: usize = 32;

/// A configured key: whose it is, and the SHA-256 of `<key_id>.<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The merchant the key pulls for.
    pub merchant: MerchantId,
    /// Its id (`lead_audit.actor`).
    pub key_id: String,
    sha256: [u8; 32],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({} for {})", self.key_id, self.merchant)
    }
}

/// The configured keys.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<ApiKey>,
}

/// True for 1–32 characters of `[A-Za-z0-9_-]` (no `.`: it ends the id
/// in a bearer token).
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// SHA-256 of a whole key.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Equal, in time independent of where `a` and `b` differ (their lengths
/// are public: fixed-size digests and tags).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl KeySet {
    /// Check `(merchant, key_id, sha256 hex)` entries: valid ids, 64 hex
    /// characters, each key id once.
    pub fn new<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Result<Self, String> {
        let mut keys: Vec<ApiKey> = Vec::new();
        for (merchant, key_id, sha) in entries {
            let merchant = MerchantId::parse(merchant).map_err(|e| e.to_string())?;
            if !valid_key_id(key_id) {
                return Err(format!(
                    "key_id {key_id:?}: 1-{MAX_KEY_ID} characters of A-Z, a-z, 0-9, '_' and '-'"
                ));
            }
            let mut sha256 = [0u8; 32];
            hex::decode_to_slice(sha.trim(), &mut sha256).map_err(|_| {
                format!("key {key_id}: sha256 must be 64 hex characters (the key's SHA-256)")
            })?;
            if keys.iter().any(|k| k.key_id == key_id) {
                return Err(format!("key_id {key_id} is given twice"));
            }
            keys.push(ApiKey {
                merchant,
                key_id: key_id.to_owned(),
                sha256,
            });
        }
        Ok(KeySet { keys })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True with no key (every request is refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key an `Authorization` header value names, if its secret is
    /// right.
    pub fn check(&self, authorization: Option<&str>) -> Option<&ApiKey> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        let (id, secret) = token.split_once('.')?;
        if secret.is_empty() || token.len() > 256 {
            return None;
        }
        let given = hash(token);
        // Key ids are not secret; the secret's digest is compared without
        // an early exit.
        let key = self.keys.iter().find(|k| k.key_id == id)?;
        ct_eq(&key.sha256, &given).then_some(key)
    }
}

/// A new key `<key_id>.<secret>` (secret: 32 random bytes, base64url) and
/// its SHA-256 hex, for the config.
pub fn generate(key_id: &str) -> (String, String) {
    use base64::Engine as _;
    let secret: [u8; 32] = rand::random();
    let key = format!(
        "{key_id}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let h = hex::encode(hash(&key));
    (key, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_by_hash_only() {
        let (k1, h1) = generate("k1");
        let (k2, h2) = generate("k2");
        assert!(k1.starts_with("k1.") && k1.len() == 3 + 43);
        assert_ne!(k1, generate("k1").0, "random");
        let set = KeySet::new([("m1", "k1", h1.as_str()), ("m2", "k2", h2.as_str())]).unwrap();
        let bearer = |k: &str| format!("Bearer {k}");
        let got = set.check(Some(&bearer(&k1))).unwrap();
        assert_eq!((got.merchant.as_str(), got.key_id.as_str()), ("m1", "k1"));
        assert_eq!(
            set.check(Some(&bearer(&k2))).unwrap().merchant.as_str(),
            "m2"
        );
        // k2's secret under k1's id, a wrong secret, no scheme, garbage.
        let swapped = format!("k1.{}", k2.split_once('.').unwrap().1);
        for bad in [
            bearer(&swapped),
            bearer(&format!("{k1}x")),
            bearer("k1."),
            bearer("k1"),
            bearer("k9.abc"),
            k1.clone(),
            format!("Basic {k1}"),
            String::new(),
        ] {
            assert!(set.check(Some(&bad)).is_none(), "{bad}");
        }
        assert!(set.check(None).is_none());
        assert!(!format!("{set:?}").contains(&h1));
    }

    #[test]
    fn configured_keys_are_validated() {
        let h = "ab".repeat(32);
        assert!(KeySet::new([("m1", "k1", h.as_str())]).is_ok());
        for (m, id, sha) in [
            ("M1", "k1", h.as_str()),
            ("m1", "k.1", h.as_str()),
            ("m1", "", h.as_str()),
            ("m1", "k1", "abc"),
            ("m1", "k1", "zz"),
        ] {
            assert!(KeySet::new([(m, id, sha)]).is_err(), "{m} {id} {sha}");
        }
        let twice = KeySet::new([("m1", "k1", h.as_str()), ("m2", "k1", h.as_str())]);
        assert!(twice.unwrap_err().contains("twice"));
    }

    #[test]
    fn constant_time_compare_is_equality() {
        assert!(ct_eq(&[1, 2, 3], &[1, 2, 3]));
        assert!(!ct_eq(&[1, 2, 3], &[1, 2, 4]));
        assert!(!ct_eq(&[1, 2, 3], &[1, 2]));
        assert!(ct_eq(&[], &[]));
    }
}

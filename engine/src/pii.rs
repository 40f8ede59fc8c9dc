//! Personal data handling for leads: nothing identifying is stored in clear.
//!
//! - `phone_hmac`: HMAC-SHA256 of the normalised phone under a key that never
//!   reaches ClickHouse, for dedup and joins.
//! - `phone_masked`: `138****5678`, for analysts.
//! - `*_enc`: ChaCha20-Poly1305 ciphertext (`nonce || ciphertext`, hex) under a
//!   separate key, so consultants' tooling can decrypt with the key.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Keys for PII protection.
#[derive(Clone)]
pub struct PiiKeys {
    hmac_key: Vec<u8>,
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for PiiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PiiKeys(..)")
    }
}

/// A key that is not 32 bytes of hex.
#[derive(Debug, thiserror::Error)]
#[error("{0} must be 64 hex characters (32 bytes)")]
pub struct KeyError(pub &'static str);

impl PiiKeys {
    /// Keys from hex strings (64 hex chars each).
    pub fn from_hex(hmac_hex: &str, enc_hex: &str) -> Result<Self, KeyError> {
        let hmac_key = hex::decode(hmac_hex.trim())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or(KeyError("pii.hmac_key"))?;
        let enc = hex::decode(enc_hex.trim())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or(KeyError("pii.enc_key"))?;
        Ok(PiiKeys {
            hmac_key,
            cipher: ChaCha20Poly1305::new(Key::from_slice(&enc)),
        })
    }

    /// Keyed HMAC of a normalised value, hex.
    pub fn hmac_hex(&self, value: &str) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.hmac_key).expect("any key length");
        m.update(value.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    /// Encrypt `plain` with a fresh random nonce; empty input stays empty.
    pub fn encrypt_hex(&self, plain: &str) -> String {
        if plain.is_empty() {
            return String::new();
        }
        let nonce_bytes: [u8; 12] = rand::random();
        let nonce = Nonce::from_slice(&nonce_bytes);
        let ct = self
            .cipher
            .encrypt(nonce, plain.as_bytes())
            .expect("chacha20poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&ct);
        hex::encode(out)
    }

    /// Decrypt a value produced by [`PiiKeys::encrypt_hex`].
    pub fn decrypt_hex(&self, enc: &str) -> Option<String> {
        let raw = hex::decode(enc).ok()?;
        if raw.len() < 12 {
            return None;
        }
        let (n, ct) = raw.split_at(12);
        let plain = self.cipher.decrypt(Nonce::from_slice(n), ct).ok()?;
        String::from_utf8(plain).ok()
    }
}

/// Canonical form of a phone for hashing: digits only, with a leading `+`
/// kept; `0086`/`86`-prefixed 13-digit Chinese mobiles become `+86…`, a bare
/// 11-digit `1…` number is taken as `+86`.
pub fn canonical_phone(raw: &str) -> String {
    let plus = raw.trim_start().starts_with('+');
    let digits: String = raw.chars().filter(|c| c.is_ascii_digit()).collect();
    if plus {
        return format!("+{digits}");
    }
    if let Some(rest) = digits.strip_prefix("00") {
        return format!("+{rest}");
    }
    if digits.len() == 11 && digits.starts_with('1') {
        return format!("+86{digits}");
    }
    digits
}

/// Mask a phone for analysts: keep the first 3 and last 4 national digits.
pub fn mask_phone(canonical: &str) -> String {
    let national = canonical.strip_prefix("+86").unwrap_or(canonical);
    let n = national.chars().count();
    if n <= 7 {
        return "*".repeat(n);
    }
    let head: String = national.chars().take(3).collect();
    let tail: String = national.chars().skip(n - 4).collect();
    format!("{head}{}{tail}", "*".repeat(n - 7))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn canonical_and_mask() {
        assert_eq!(canonical_phone("138 0013 8000"), "+8613800138000");
        assert_eq!(canonical_phone("+86 138-0013-8000"), "+8613800138000");
        assert_eq!(canonical_phone("008613800138000"), "+8613800138000");
        assert_eq!(mask_phone("+8613800138000"), "138****8000");
        assert_eq!(mask_phone("+12"), "***");
    }

    #[test]
    fn encryption_roundtrips_and_is_randomised() {
        let k = PiiKeys::from_hex(K, K).unwrap();
        let a = k.encrypt_hex("13800138000");
        assert_ne!(a, k.encrypt_hex("13800138000"));
        assert_eq!(k.decrypt_hex(&a).as_deref(), Some("13800138000"));
        assert_eq!(k.hmac_hex("x"), k.hmac_hex("x"));
        assert!(PiiKeys::from_hex("abc", K).is_err());
    }
}

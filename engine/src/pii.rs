//! Personal data handling for leads: nothing identifying is stored in clear.
//!
//! Keys are derived per purpose (HKDF-SHA256) from the two configured root
//! keys, so one leaked or rotated derived key does not expose the others:
//!
//! | derived key | from | info | used for |
//! |---|---|---|---|
//! | phone HMAC | `pii.hmac_key` | `roomgate/v1/phone-hmac` | `leads.phone_hmac`: dedup and joins |
//! | IP HMAC | `pii.hmac_key` | `roomgate/v1/ip-hmac` | `leads.ip_hmac`: per-IP velocity |
//! | encryption | `pii.enc_key` | `roomgate/v1/enc/<key_id>` | `leads.*_enc` |
//!
//! - `phone_masked`: `138****5678` ([`mask_phone`]), for analysts.
//! - `*_enc`: ChaCha20-Poly1305, hex of `nonce(12) || ciphertext || tag(16)`,
//!   with associated data binding the ciphertext to its place (see
//!   [`Aad`]): a value copied into another row or column does not decrypt.
//!   `leads.pii_key_id` names the key, so the key can rotate: new rows use
//!   the new id, old rows keep naming theirs.
//!
//! The HMAC keys do not rotate without breaking dedup across the change
//! (the same phone would hash differently); docs/SECURITY.md says so.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Salt of every derivation (fixed: the root keys are already random).
const HKDF_SALT: &[u8] = b"roomgate-pii";

/// Keys for PII protection, derived per purpose.
#[derive(Clone)]
pub struct PiiKeys {
    phone_hmac: [u8; 32],
    ip_hmac: [u8; 32],
    cursor_mac: [u8; 32],
    enc_root: [u8; 32],
    key_id: String,
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for PiiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PiiKeys(key_id {:?}, <redacted>)", self.key_id)
    }
}

/// A key that is not 32 bytes of hex, or a bad key id.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// Where a ciphertext lives: its associated data. Decryption needs the same
/// values, so a ciphertext moved to another row or column fails to decrypt.
///
/// Encoded as `roomgate/v1/<table>/<column>/<key_id>/<room_id>/<viewer_id>/<client_lead_id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aad<'a> {
    /// Table, e.g. `leads`.
    pub table: &'a str,
    /// Column, e.g. `phone_enc`.
    pub column: &'a str,
    /// Room of the row.
    pub room_id: u64,
    /// Viewer of the row.
    pub viewer_id: u64,
    /// The row's client id (`client_lead_id`).
    pub client_id: u64,
}

impl Aad<'_> {
    fn encode(&self, key_id: &str) -> String {
        format!(
            "roomgate/v1/{}/{}/{key_id}/{}/{}/{}",
            self.table, self.column, self.room_id, self.viewer_id, self.client_id
        )
    }
}

fn derive(root: &[u8], info: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(Some(HKDF_SALT), root)
        .expand(info.as_bytes(), &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

fn hex_key(hex_str: &str, name: &str) -> Result<Vec<u8>, KeyError> {
    hex::decode(hex_str.trim())
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| KeyError(format!("{name} must be 64 hex characters (32 bytes)")))
}

impl PiiKeys {
    /// Keys from the two root keys (64 hex chars each) and the id of the
    /// encryption key (1–16 of `[A-Za-z0-9_-]`).
    pub fn from_hex(hmac_hex: &str, enc_hex: &str, key_id: &str) -> Result<Self, KeyError> {
        let hmac_root = hex_key(hmac_hex, "pii.hmac_key")?;
        let enc_root = hex_key(enc_hex, "pii.enc_key")?;
        if key_id.is_empty()
            || key_id.len() > 16
            || !key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(KeyError(format!(
                "pii.key_id {key_id:?} must be 1-16 of [A-Za-z0-9_-]"
            )));
        }
        if hmac_root == enc_root {
            return Err(KeyError(
                "pii.hmac_key and pii.enc_key must differ: one key for two purposes".into(),
            ));
        }
        let enc = derive(&enc_root, &format!("roomgate/v1/enc/{key_id}"));
        let mut root = [0u8; 32];
        root.copy_from_slice(&enc_root);
        Ok(PiiKeys {
            phone_hmac: derive(&hmac_root, "roomgate/v1/phone-hmac"),
            ip_hmac: derive(&hmac_root, "roomgate/v1/ip-hmac"),
            cursor_mac: derive(&hmac_root, "roomgate/v1/delivery-cursor"),
            enc_root: root,
            key_id: key_id.to_owned(),
            cipher: ChaCha20Poly1305::new(Key::from_slice(&enc)),
        })
    }

    /// The encryption key's id (stored in `leads.pii_key_id`).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Keyed HMAC of a canonical phone, hex.
    pub fn phone_hmac(&self, phone: &str) -> String {
        hmac_hex(&self.phone_hmac, phone)
    }

    /// Keyed HMAC of an IP address, hex.
    pub fn ip_hmac(&self, ip: &str) -> String {
        hmac_hex(&self.ip_hmac, ip)
    }

    /// Encrypt `plain` for its place `aad`, with a fresh random nonce;
    /// empty input stays empty.
    pub fn encrypt_hex(&self, plain: &str, aad: Aad<'_>) -> String {
        if plain.is_empty() {
            return String::new();
        }
        let nonce_bytes: [u8; 12] = rand::random();
        let ad = aad.encode(&self.key_id);
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce_bytes),
                Payload {
                    msg: plain.as_bytes(),
                    aad: ad.as_bytes(),
                },
            )
            .expect("chacha20poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&ct);
        hex::encode(out)
    }

    /// Decrypt a value produced by [`PiiKeys::encrypt_hex`] for the same
    /// place; `None` if it was made for another place or key, or altered.
    pub fn decrypt_hex(&self, enc: &str, aad: Aad<'_>) -> Option<String> {
        decrypt_with(&self.cipher, &self.key_id, enc, aad)
    }

    /// Decrypt a value written under key id `key_id` (a row's
    /// `leads.pii_key_id`): the configured key, or the key that id derives
    /// from the same root (`enc_key` kept, `key_id` changed). `None` for
    /// rows from before key ids (`''`), another root, or another place.
    pub fn decrypt_hex_as(&self, key_id: &str, enc: &str, aad: Aad<'_>) -> Option<String> {
        if key_id == self.key_id {
            return self.decrypt_hex(enc, aad);
        }
        if key_id.is_empty() {
            return None;
        }
        let k = derive(&self.enc_root, &format!("roomgate/v1/enc/{key_id}"));
        decrypt_with(
            &ChaCha20Poly1305::new(Key::from_slice(&k)),
            key_id,
            enc,
            aad,
        )
    }

    /// HMAC-SHA256 of `data` under the delivery-cursor key (derived from
    /// `pii.hmac_key`, which does not rotate: cursors outlive restarts).
    pub fn cursor_mac(&self, data: &[u8]) -> [u8; 32] {
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.cursor_mac).expect("any key length");
        m.update(data);
        m.finalize().into_bytes().into()
    }
}

fn decrypt_with(
    cipher: &ChaCha20Poly1305,
    key_id: &str,
    enc: &str,
    aad: Aad<'_>,
) -> Option<String> {
    let raw = hex::decode(enc).ok()?;
    if raw.len() < 12 {
        return None;
    }
    let (n, ct) = raw.split_at(12);
    let ad = aad.encode(key_id);
    let plain = cipher
        .decrypt(
            Nonce::from_slice(n),
            Payload {
                msg: ct,
                aad: ad.as_bytes(),
            },
        )
        .ok()?;
    String::from_utf8(plain).ok()
}

fn hmac_hex(key: &[u8; 32], value: &str) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    m.update(value.as_bytes());
    hex::encode(m.finalize().into_bytes())
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

/// Mask a phone for analysts. A full-length number (11+ national digits,
/// a Chinese mobile) keeps its first 3 and last 4 digits (`138****5678`),
/// as is customary; a shorter number keeps only its last 2, and anything
/// under 8 characters (or not a phone at all) is all stars, so a masked
/// value never shows most of what was typed.
pub fn mask_phone(canonical: &str) -> String {
    let national = canonical.strip_prefix("+86").unwrap_or(canonical);
    let chars: Vec<char> = national.chars().collect();
    let n = chars.len();
    let (head, tail) = match n {
        11.. => (3, 4),
        8..=10 => (0, 2),
        _ => (0, 0),
    };
    let mut out: String = chars[..head].iter().collect();
    out.push_str(&"*".repeat(n - head - tail));
    out.extend(&chars[n - tail..]);
    out
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
        // Not a full number: at most its last 2 characters show.
        assert_eq!(mask_phone("1234567a"), "******7a");
        assert_eq!(mask_phone("0794609581"), "********81");
        assert_eq!(mask_phone("+442079460958"), "+44******0958");
        assert_eq!(mask_phone("12345"), "*****");
    }

    const K2: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    fn at(column: &str, client_id: u64) -> Aad<'_> {
        Aad {
            table: "leads",
            column,
            room_id: 1,
            viewer_id: 2,
            client_id,
        }
    }

    #[test]
    fn encryption_roundtrips_only_in_its_place() {
        let k = PiiKeys::from_hex(K, K2, "k1").unwrap();
        let a = k.encrypt_hex("13800138000", at("phone_enc", 3));
        assert_ne!(a, k.encrypt_hex("13800138000", at("phone_enc", 3)));
        assert_eq!(
            k.decrypt_hex(&a, at("phone_enc", 3)).as_deref(),
            Some("13800138000")
        );
        // Another column, another row, another key id: no plaintext.
        assert_eq!(k.decrypt_hex(&a, at("wechat_enc", 3)), None);
        assert_eq!(k.decrypt_hex(&a, at("phone_enc", 4)), None);
        let rotated = PiiKeys::from_hex(K, K2, "k2").unwrap();
        assert_eq!(rotated.decrypt_hex(&a, at("phone_enc", 3)), None);
        assert_eq!(k.encrypt_hex("", at("name_enc", 3)), "");
        // A row keeps naming its key id: after a key id change on the
        // same root, old rows still decrypt (and only under their id).
        assert_eq!(
            rotated
                .decrypt_hex_as("k1", &a, at("phone_enc", 3))
                .as_deref(),
            Some("13800138000")
        );
        assert_eq!(rotated.decrypt_hex_as("k2", &a, at("phone_enc", 3)), None);
        assert_eq!(rotated.decrypt_hex_as("", &a, at("phone_enc", 3)), None);
        let other_root = PiiKeys::from_hex(K2, K, "k2").unwrap();
        assert_eq!(
            other_root.decrypt_hex_as("k1", &a, at("phone_enc", 3)),
            None
        );
    }

    #[test]
    fn keys_are_separate_per_purpose_and_checked() {
        let k = PiiKeys::from_hex(K, K2, "k1").unwrap();
        assert_eq!(k.phone_hmac("x"), k.phone_hmac("x"));
        assert_ne!(k.phone_hmac("x"), k.ip_hmac("x"));
        assert!(PiiKeys::from_hex("abc", K2, "k1").is_err());
        assert!(PiiKeys::from_hex(K, K, "k1").is_err(), "same key twice");
        assert!(PiiKeys::from_hex(K, K2, "").is_err());
        assert!(PiiKeys::from_hex(K, K2, "a/b").is_err());
        assert!(!format!("{k:?}").contains("0001"));
    }
}

//! What a webhook request carries (sans-IO): the body, the idempotency
//! key and the signature headers, and the verification a receiver does
//! (docs/LEADS.md, "Webhooks").
//!
//! ```text
//! Roomgate-Timestamp:       <unix seconds>
//! Roomgate-Signature:       v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>[,v1=<hex>]
//! Roomgate-Idempotency-Key: <room_id>-<viewer_id>-<client_lead_id>
//! ```
//!
//! During a secret rotation the request is signed under each configured
//! secret (the current one first); a receiver accepts the request when any
//! `v1=` matches its secret.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::delivery::query::Delivered;

/// Header: the signing time, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "roomgate-timestamp";
/// Header: `v1=<hex>` per secret, comma-separated.
pub const SIGNATURE_HEADER: &str = "roomgate-signature";
/// Header: the lead's stable id; a receiver drops a key it has seen.
pub const IDEMPOTENCY_HEADER: &str = "roomgate-idempotency-key";
/// Header: 1 for the first attempt of a lead, then 2, 3, …
pub const ATTEMPT_HEADER: &str = "roomgate-attempt";
/// How far a receiver should let the timestamp be from its clock.
pub const TOLERANCE_SECS: i64 = 300;

/// The idempotency key of a lead: its natural key, the same across
/// attempts, restarts, nodes and pulls.
pub fn idempotency_key(room_id: u64, viewer_id: u64, client_lead_id: u64) -> String {
    format!("{room_id}-{viewer_id}-{client_lead_id}")
}

/// The JSON body of one lead's request (identical across its attempts).
#[derive(Debug, Serialize)]
struct Body<'a> {
    /// Always `lead` (room for other event types later).
    #[serde(rename = "type")]
    kind: &'static str,
    merchant: &'a str,
    idempotency_key: String,
    lead: &'a Delivered,
}

/// The body for `lead` of `merchant`.
pub fn body(merchant: &str, lead: &Delivered) -> Vec<u8> {
    let b = Body {
        kind: "lead",
        merchant,
        idempotency_key: idempotency_key(lead.room_id, lead.viewer_id, lead.client_lead_id),
        lead,
    };
    // A struct of strings, numbers and a JSON map: serializing cannot fail.
    serde_json::to_vec(&b).unwrap_or_default()
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let mut m = match <Hmac<Sha256>>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 accepts any key length"),
    };
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().into()
}

/// The `Roomgate-Signature` value: `v1=<hex>` per secret, in order.
pub fn signature(secrets: &[&[u8]], timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| format!("v1={}", hex::encode(mac(s, timestamp, body))))
        .collect::<Vec<_>>()
        .join(",")
}

/// Why a receiver refuses a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The timestamp is not a number.
    #[error("bad timestamp")]
    Timestamp,
    /// The timestamp is further than the tolerance from now.
    #[error("timestamp outside the tolerance")]
    Stale,
    /// No `v1=` signature matches.
    #[error("no matching signature")]
    Mismatch,
}

/// What a receiver does (and the tests): the timestamp within
/// `tolerance_secs` of `now_secs`, and one `v1=` of `signature_header`
/// equal, in constant time, to the HMAC under `secret`.
pub fn verify(
    secret: &[u8],
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp_header
        .trim()
        .parse()
        .map_err(|_| VerifyError::Timestamp)?;
    // abs_diff: any two i64s (a hostile timestamp must not overflow).
    if now_secs.abs_diff(ts) > u64::try_from(tolerance_secs).unwrap_or(0) {
        return Err(VerifyError::Stale);
    }
    let want = mac(secret, ts, body);
    let ok = signature_header
        .split(',')
        .filter_map(|p| p.trim().strip_prefix("v1="))
        .filter_map(|h| hex::decode(h).ok())
        .any(|given| crate::delivery::keys::ct_eq(&want, &given));
    if ok {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead() -> Delivered {
        Delivered {
            room_id: 101,
            viewer_id: 5,
            client_lead_id: 1,
            ts: 1_781_234_567_890,
            at_ms: 1_781_234_567_890 + 900,
            verdict: "accepted".into(),
            phone: Some("+8613800131025".into()),
            wechat: None,
            name: Some("王五".into()),
            fields: serde_json::Map::new(),
            consent: true,
            consent_version: "v3".into(),
            decrypted: true,
        }
    }

    #[test]
    fn the_signature_is_the_documented_hmac() {
        // The value docs/LEADS.md's Python snippet computes for these
        // inputs (hmac.new(b"s" * 32, b"1700000000.{}", sha256)).
        let sig = signature(&[&[b's'; 32]], 1_700_000_000, b"{}");
        assert_eq!(
            sig,
            "v1=73b0c93d610ddd03ce2b853c7b6263d71114d7f83e5a29ed052cbd2a0fbddebc"
        );
    }

    #[test]
    fn receivers_verify_any_current_secret_within_the_window() {
        let body = body("m1", &lead());
        let (old, new) = (
            b"old-secret-0123456789abcdef012345",
            b"new-secret-0123456789abcdef012345",
        );
        let sig = signature(&[new, old], 1_000, &body);
        assert_eq!(sig.matches("v1=").count(), 2);
        for s in [&old[..], &new[..]] {
            assert_eq!(verify(s, "1000", &sig, &body, 1_100, 300), Ok(()));
        }
        assert_eq!(
            verify(b"other", "1000", &sig, &body, 1_000, 300),
            Err(VerifyError::Mismatch)
        );
        let mut altered = body.clone();
        altered[10] ^= 1;
        assert_eq!(
            verify(new, "1000", &sig, &altered, 1_000, 300),
            Err(VerifyError::Mismatch)
        );
        // The timestamp is signed: another one does not verify.
        assert_eq!(
            verify(new, "1001", &sig, &body, 1_000, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(new, "1000", &sig, &body, 1_301, 300),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(new, "x", &sig, &body, 1_000, 300),
            Err(VerifyError::Timestamp)
        );
        assert_eq!(
            verify(new, "1000", "v1=zz,v0=00", &body, 1_000, 300),
            Err(VerifyError::Mismatch)
        );
        // Extreme timestamps are stale, not an overflow.
        for (ts, now) in [
            (i64::MIN, i64::MAX),
            (i64::MAX, i64::MIN),
            (i64::MIN, 1_000),
        ] {
            assert_eq!(
                verify(new, &ts.to_string(), &sig, &body, now, 300),
                Err(VerifyError::Stale)
            );
        }
        assert_eq!(
            verify(new, "1000", &sig, &body, 1_001, -1),
            Err(VerifyError::Stale),
            "a negative tolerance is zero"
        );
        assert_eq!(verify(new, "1000", &sig, &body, 1_000, -1), Ok(()));
    }

    #[test]
    fn the_body_names_the_lead_and_carries_no_ciphertext() {
        let b = body("m1", &lead());
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["type"], "lead");
        assert_eq!(v["merchant"], "m1");
        assert_eq!(v["idempotency_key"], "101-5-1");
        assert_eq!(v["lead"]["phone"], "+8613800131025");
        assert_eq!(v["lead"]["room_id"], 101);
        let text = String::from_utf8(b.clone()).unwrap();
        assert!(!text.contains("_enc") && !text.contains("hmac"));
        // The same lead, the same bytes: a retry is the same request.
        assert_eq!(body("m1", &lead()), b);
        assert_eq!(idempotency_key(1, u64::MAX, 0), "1-18446744073709551615-0");
    }
}

//! Viewer tickets: issued by the platform, verified by the gate.
//!
//! Format (ASCII, `.`-separated):
//! `v1.<room_id>.<viewer_id>.<expires_at_unix_secs>.<device_id>.<hex hmac>`
//! where the HMAC-SHA256 (under the shared ticket secret) covers everything
//! before the last `.`. `device_id` may be empty. A ticket is what makes a
//! viewer's identity trustworthy for rate limits and lead dedup.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

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
    /// The signature does not verify under the secret.
    #[error("bad ticket signature")]
    BadSignature,
    /// `expires_at` is in the past.
    #[error("ticket expired")]
    Expired,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    HmacSha256::new_from_slice(secret).expect("hmac takes any key length")
}

/// Sign claims into a ticket string.
pub fn sign(secret: &[u8], c: &Claims) -> String {
    let payload = format!(
        "v1.{}.{}.{}.{}",
        c.room_id, c.viewer_id, c.expires_at, c.device_id
    );
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    format!("{payload}.{}", hex::encode(m.finalize().into_bytes()))
}

/// Verify a ticket at `now_unix` (seconds).
pub fn verify(secret: &[u8], ticket: &str, now_unix: u64) -> Result<Claims, TicketError> {
    let (payload, sig) = ticket.rsplit_once('.').ok_or(TicketError::Malformed)?;
    let sig = hex::decode(sig).map_err(|_| TicketError::Malformed)?;
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    m.verify_slice(&sig)
        .map_err(|_| TicketError::BadSignature)?;
    let mut parts = payload.split('.');
    let (Some("v1"), Some(room), Some(viewer), Some(exp), Some(device), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(TicketError::Malformed);
    };
    let num = |s: &str| s.parse::<u64>().map_err(|_| TicketError::Malformed);
    let claims = Claims {
        room_id: num(room)?,
        viewer_id: num(viewer)?,
        expires_at: num(exp)?,
        device_id: device.to_owned(),
    };
    if claims.expires_at <= now_unix {
        return Err(TicketError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            room_id: 42,
            viewer_id: 7,
            expires_at: 2_000,
            device_id: "dev-1".into(),
        }
    }

    #[test]
    fn sign_then_verify() {
        let t = sign(b"secret", &claims());
        assert_eq!(verify(b"secret", &t, 1_000), Ok(claims()));
    }

    #[test]
    fn wrong_secret_tamper_expiry_and_garbage() {
        let t = sign(b"secret", &claims());
        assert_eq!(verify(b"other", &t, 1_000), Err(TicketError::BadSignature));
        let tampered = t.replacen("v1.42.", "v1.43.", 1);
        assert_eq!(
            verify(b"secret", &tampered, 1_000),
            Err(TicketError::BadSignature)
        );
        assert_eq!(verify(b"secret", &t, 2_000), Err(TicketError::Expired));
        assert_eq!(
            verify(b"secret", "nonsense", 0),
            Err(TicketError::Malformed)
        );
        assert_eq!(verify(b"secret", "a.zz", 0), Err(TicketError::Malformed));
    }
}

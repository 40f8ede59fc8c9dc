//! Any string offered as a ticket is refused cleanly or yields claims that
//! sign back to a ticket verifying to the same claims; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomgate::wire::ticket::{sign, verify};

const SECRET: &[u8] = b"fuzz-ticket-secret-of-at-least-32-bytes!";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Unsigned garbage: must be refused without panicking.
    let _ = verify(SECRET, text, 1_000);
    // The same text signed, so the parser behind the signature check is
    // reached too.
    let signed = format!("{text}.{}", sign_payload(text));
    if let Ok(claims) = verify(SECRET, &signed, 1_000) {
        let again = sign(SECRET, &claims);
        assert_eq!(verify(SECRET, &again, 1_000), Ok(claims));
    }
});

/// The hex HMAC `sign` would append to `payload`.
fn sign_payload(payload: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
    m.update(payload.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

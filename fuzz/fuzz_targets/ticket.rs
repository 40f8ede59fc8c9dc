//! Any string offered as a ticket is refused cleanly or yields claims that
//! sign back to a ticket verifying to the same claims; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomgate::wire::ticket::{TicketKey, TicketKeys};

const SECRET: &[u8] = b"fuzz-ticket-secret-of-at-least-32-bytes!";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = TicketKey::new("k1", SECRET).expect("valid key");
    let keys = TicketKeys::new(key, None, 1 << 40).expect("valid keys");
    // Unsigned garbage: refused without panicking.
    let _ = keys.verify(text, 1_000);
    // The same text signed, so the parser behind the signature check is
    // reached too.
    let signed = format!("{text}.{}", mac_hex(text));
    if let Ok(claims) = keys.verify(&signed, 1_000) {
        let again = keys.sign(&claims);
        assert_eq!(keys.verify(&again, 1_000), Ok(claims));
    }
});

/// The hex HMAC a signer would append to `payload`.
fn mac_hex(payload: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
    m.update(payload.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

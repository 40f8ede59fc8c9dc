//! The lead's phone parser and the chat text checks take any text without
//! panicking, and what they return keeps its documented shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomgate::guard::{phone, text};
use roomgate::pii;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for country in ["86", "1", "44"] {
        if let Ok(e164) = phone::to_e164(raw, country) {
            assert!(e164.starts_with('+'), "{e164}");
            assert!(e164[1..].bytes().all(|b| b.is_ascii_digit()), "{e164}");
            let _ = phone::classify(&e164);
            let _ = phone::looks_fake(&e164);
            // Masking never shows more than 7 digits.
            let masked = pii::mask_phone(&e164);
            assert!(masked.chars().filter(char::is_ascii_digit).count() <= 7);
        }
    }
    let canonical = pii::canonical_phone(raw);
    let _ = pii::mask_phone(&canonical);
    let _ = text::normalize(raw);
    let _ = text::skeleton(raw);
    let _ = text::has_link(raw);
    let _ = text::contact_kind(raw);
    // Whatever the text, its redacted form holds no contact the checks see.
    let redacted = text::redact_contacts(raw);
    assert_eq!(text::contact_kind(&redacted), None, "{raw:?} -> {redacted:?}");
    let _ = text::is_flood(raw);
});

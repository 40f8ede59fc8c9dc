//! Any bytes fed to the streaming decoder (of either protocol version,
//! chosen by the first byte) yield frames or a clean error, never a
//! panic, and a decoded frame re-encodes to a current frame that decodes
//! to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomgate::wire::{encode, FrameDecoder, Limits, Version};

fuzz_target!(|data: &[u8]| {
    let version = if data.first().is_some_and(|b| b & 0x80 != 0) {
        Version::V1
    } else {
        Version::V2
    };
    let mut dec = FrameDecoder::with_version(Limits::default(), version);
    // Feed in two uneven pieces to exercise partial frames.
    let cut = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    dec.push(&data[..cut]);
    let mut frames = Vec::new();
    while let Ok(Some(f)) = dec.next_frame() {
        frames.push(f);
    }
    dec.push(&data[cut..]);
    while let Ok(Some(f)) = dec.next_frame() {
        frames.push(f);
    }
    for f in frames {
        let mut again = FrameDecoder::new(Limits::default());
        again.push(&encode(&f));
        assert_eq!(again.next_frame().ok().flatten().as_ref(), Some(&f));
    }
});

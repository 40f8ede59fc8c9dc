//! The write-ahead log: durable records per second with roomgate's group
//! commit (append a group of lead records, one `fdatasync`) against the
//! naive peer measured in the same run — `File::write_all` + `sync_data`
//! per record — and the cost of framing alone (no I/O).
//!
//! Every figure is records made durable per second (`Throughput::Elements`);
//! the peer's rate is also its fsyncs per second. Group sizes 1, 16 and 256
//! show what group commit buys: a worker round under load carries tens to
//! hundreds of records per fsync.
#![allow(missing_docs)]

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use roomgate::sink::LeadRow;
use roomgate::wal::{codec, Entry, Log, Row};

fn lead(i: u64) -> Entry {
    Entry::Row(Row::Lead(Box::new(LeadRow {
        room_id: 42,
        ts: 1_764_000_000_000 + i as i64,
        viewer_id: i,
        session_id: i,
        client_lead_id: i,
        verdict: "accepted",
        reason: "none",
        score: 95,
        reasons: vec![],
        dry_run_reasons: vec![],
        phone_hmac: "9f".repeat(32),
        phone_masked: "138****5678".into(),
        phone_enc: "ab".repeat(40),
        wechat_enc: "cd".repeat(30),
        name_enc: "ef".repeat(20),
        fields_enc: String::new(),
        pii_key_id: "k1".into(),
        ip_hmac: "12".repeat(32),
        consent: true,
        consent_version: "v3".into(),
        fill_ms: 8_000,
    })))
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("wal-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn durable(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_durable_records");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_millis(500));
    for group in [1u64, 16, 256] {
        g.throughput(Throughput::Elements(group));
        // The log as the engine runs it (zeros written ahead of the
        // records, `storage.preallocate`), and appending (each fsync also
        // writes the file's new size): the ratio is what preallocation
        // saves per group on this disk.
        for (name, preallocate) in [
            ("roomgate_group_commit", true),
            ("roomgate_group_commit_appending", false),
        ] {
            g.bench_function(BenchmarkId::new(name, group), |b| {
                let dir = tmp(name);
                let (mut log, _) = Log::open(&dir, 64 << 20, preallocate, |_, _| {}).unwrap();
                let mut i = 0;
                b.iter(|| {
                    for _ in 0..group {
                        i += 1;
                        log.append(&lead(i));
                    }
                    black_box(log.sync().unwrap());
                    log.zero_ahead().unwrap();
                });
                drop(log);
                let _ = std::fs::remove_dir_all(&dir);
            });
        }
        g.bench_function(
            BenchmarkId::new("peer_write_all_sync_data_each", group),
            |b| {
                let dir = tmp("peer");
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("peer.log"))
                    .unwrap();
                let mut buf = Vec::new();
                let mut i = 0;
                b.iter(|| {
                    for _ in 0..group {
                        i += 1;
                        buf.clear();
                        codec::append(&mut buf, i, &lead(i));
                        f.write_all(&buf).unwrap();
                        f.sync_data().unwrap();
                    }
                });
                let _ = std::fs::remove_dir_all(&dir);
            },
        );
    }
    g.finish();
}

fn framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_framing");
    g.throughput(Throughput::Elements(1024));
    let entries: Vec<Entry> = (0..1024).map(lead).collect();
    g.bench_function("encode_crc_1024_leads", |b| {
        let mut buf = Vec::with_capacity(1 << 20);
        b.iter(|| {
            buf.clear();
            for (i, e) in entries.iter().enumerate() {
                codec::append(&mut buf, i as u64 + 1, e);
            }
            black_box(buf.len());
        })
    });
    let mut buf = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        codec::append(&mut buf, i as u64 + 1, e);
    }
    g.bench_function("scan_decode_1024_leads", |b| {
        b.iter(|| {
            let mut n = 0;
            for item in codec::scan(&buf, 0) {
                if let codec::Scan::Record { payload, .. } = item {
                    black_box(codec::decode(payload).unwrap());
                    n += 1;
                }
            }
            assert_eq!(n, 1024);
        })
    });
    g.finish();
}

criterion_group!(benches, durable, framing);
criterion_main!(benches);

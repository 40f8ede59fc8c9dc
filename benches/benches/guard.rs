//! Guard decisions per event kind, and the keyed per-viewer rate limit
//! against the `governor` crate's keyed limiter in the same group.
#![allow(missing_docs)]

use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use governor::clock::FakeRelativeClock;
use governor::{Quota, RateLimiter};
use roomgate::event::{Event, EventKind};
use roomgate::guard::limiter::Gcra;
use roomgate::guard::{Guard, GuardConfig, LeadStage};
use roomgate::wire::Lead;
use rustc_hash::FxHashMap;

const VIEWERS: u64 = 10_000;

fn event(viewer: u64, kind: EventKind) -> Event {
    Event {
        room_id: 1,
        viewer_id: viewer,
        session_id: viewer,
        received_at_ms: 0,
        kind,
    }
}

const LINES: &[&str] = &[
    "主播好，这个课程多少钱？",
    "how much is the wedding package this month",
    "老师讲得好清楚，想报名雅思",
    "is there an online version of the class?",
];

fn decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("guard_decide");
    g.throughput(Throughput::Elements(1));
    let cfg = GuardConfig {
        chat: roomgate::guard::ChatConfig {
            blocked_terms: vec!["傻*逼".into(), "idiot".into(), "加微信".into()],
            ..Default::default()
        },
        ..GuardConfig::default()
    };
    g.bench_function(BenchmarkId::new("chat", "10k_viewers"), |b| {
        let mut guard = Guard::new(&cfg).expect("valid config");
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let viewer = n % VIEWERS;
            let text = format!("{} {}", LINES[(n % 4) as usize], n / VIEWERS);
            let ev = event(
                viewer,
                EventKind::Chat {
                    client_msg_id: n,
                    text,
                },
            );
            // 10 ms apart: within the room cap and each viewer's rate.
            black_box(guard.decide(black_box(n as i64 * 10), &ev))
        })
    });
    g.bench_function(BenchmarkId::new("like", "10k_viewers"), |b| {
        let mut guard = Guard::new(&cfg).expect("valid config");
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let ev = event(
                n % VIEWERS,
                EventKind::Like {
                    count: 3,
                    spread_ms: 0,
                },
            );
            black_box(guard.decide(black_box(n as i64), &ev))
        })
    });
    g.bench_function(BenchmarkId::new("lead_all_stages", "10k_viewers"), |b| {
        let mut guard = Guard::new(&cfg).expect("valid config");
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let lead = Lead {
                client_lead_id: n,
                phone: format!("138{:08}", n % 100_000_000),
                consent: true,
                fill_ms: 12_000,
                ..Lead::default()
            };
            let ev = event(
                n % VIEWERS,
                EventKind::Lead {
                    lead: Box::new(lead.clone()),
                    ip: String::new(),
                },
            );
            let now = n as i64;
            let mut check = guard
                .lead_start(now, &ev, &lead, "10.0.0.1", |p| p.to_owned())
                .expect("fresh lead");
            for stage in LeadStage::ORDER {
                guard.lead_stage(now, stage, &mut check);
            }
            black_box(guard.lead_finish(&check))
        })
    });
    g.finish();
}

/// One keyed per-viewer limiter (20/s, burst 20) over 10,000 viewers.
fn keyed_limit(c: &mut Criterion) {
    let mut g = c.benchmark_group("keyed_rate_limit");
    g.throughput(Throughput::Elements(1));
    g.bench_function(
        BenchmarkId::new("roomgate_gcra_fxhashmap", "10k_keys"),
        |b| {
            let gcra = Gcra::new(20, 1_000, 20);
            let mut tats: FxHashMap<u64, i64> = FxHashMap::default();
            let mut n = 0u64;
            b.iter(|| {
                n += 1;
                let tat = tats.entry(n % VIEWERS).or_default();
                black_box(gcra.check(tat, (n / 64) as i64))
            })
        },
    );
    let quota = Quota::per_second(NonZeroU32::new(20).expect("non-zero"))
        .allow_burst(NonZeroU32::new(20).expect("non-zero"));
    g.bench_function(
        BenchmarkId::new("governor_hashmap_fake_clock_peer", "10k_keys"),
        |b| {
            let clock = FakeRelativeClock::default();
            let limiter = RateLimiter::hashmap_with_clock(quota, clock.clone());
            let mut n = 0u64;
            b.iter(|| {
                n += 1;
                if n.is_multiple_of(64) {
                    clock.advance(Duration::from_millis(1));
                }
                black_box(limiter.check_key(&(n % VIEWERS)).is_ok())
            })
        },
    );
    g.bench_function(BenchmarkId::new("governor_dashmap_peer", "10k_keys"), |b| {
        let limiter = RateLimiter::dashmap(quota);
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            black_box(limiter.check_key(&(n % VIEWERS)).is_ok())
        })
    });
    g.finish();
}

criterion_group!(benches, decide, keyed_limit);
criterion_main!(benches);

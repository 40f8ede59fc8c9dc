//! Guard memory per active viewer: not a timing bench. A counting allocator
//! measures the bytes the guard holds after N viewers in one room each
//! joined, chatted twice, tapped likes and (one in ten) left a lead, and
//! again after every window expired. Run: `cargo bench -p roomgate-benches
//! --bench guard_memory`.
#![allow(missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use roomgate::event::{Event, EventKind};
use roomgate::guard::{Guard, GuardConfig, LeadStage};
use roomgate::wire::Lead;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: delegates to the system allocator and only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Relaxed);
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn ev(viewer: u64, now: i64, kind: EventKind) -> Event {
    Event {
        room_id: 1,
        viewer_id: viewer,
        session_id: viewer,
        received_at_ms: now,
        kind,
    }
}

fn measure(viewers: u64) -> (isize, isize) {
    let cfg = GuardConfig::default();
    let before = LIVE.load(Relaxed);
    let mut guard = Guard::new(&cfg).expect("default config");
    let mut now = 1_000_000i64;
    for v in 0..viewers {
        now += 1;
        guard.decide(
            now,
            &ev(
                v,
                now,
                EventKind::Join {
                    client: String::new(),
                    ip: String::new(),
                },
            ),
        );
        for m in 0..2u64 {
            let text = format!("viewer {v} says hello number {m} to the host");
            guard.decide(
                now,
                &ev(
                    v,
                    now,
                    EventKind::Chat {
                        client_msg_id: m,
                        text,
                    },
                ),
            );
        }
        guard.decide(
            now,
            &ev(
                v,
                now,
                EventKind::Like {
                    count: 5,
                    spread_ms: 0,
                },
            ),
        );
        if v % 10 == 0 {
            let lead = Lead {
                client_lead_id: 1,
                phone: format!("139{:08}", v),
                consent: true,
                fill_ms: 10_000,
                ..Lead::default()
            };
            let e = ev(
                v,
                now,
                EventKind::Lead {
                    lead: Box::new(lead.clone()),
                    ip: String::new(),
                },
            );
            let ip = format!("10.{}.{}.{}", v >> 16 & 255, v >> 8 & 255, v & 255);
            if let Ok(mut c) = guard.lead_start(now, &e, &lead, &ip, |p| format!("{p:0>64}")) {
                for s in LeadStage::ORDER {
                    guard.lead_stage(now, s, &mut c);
                }
                let d = guard.lead_finish(&c).decision;
                guard.lead_seen(now, 1, v, 1, &d);
            }
        }
    }
    let active = LIVE.load(Relaxed) - before;
    // Everyone leaves; two days later every window has expired.
    for v in 0..viewers {
        guard.decide(
            now,
            &ev(
                v,
                now,
                EventKind::Leave {
                    joined_at_ms: 0,
                    close: "normal",
                },
            ),
        );
    }
    guard.tick(now + 2 * 86_400_000);
    let idle = LIVE.load(Relaxed) - before;
    drop(guard);
    (active, idle)
}

fn main() {
    // `cargo test --benches` runs bench binaries with no arguments too; keep
    // that quick.
    let quick = std::env::args().all(|a| a != "--bench");
    let sizes: &[u64] = if quick { &[1_000] } else { &[10_000, 100_000] };
    println!("guard memory (default config; each viewer: join, 2 chats, likes; 1 in 10 a lead)");
    println!(
        "{:>10} {:>14} {:>16} {:>18}",
        "viewers", "active bytes", "bytes/viewer", "after expiry"
    );
    for &n in sizes {
        let (active, idle) = measure(n);
        println!(
            "{n:>10} {active:>14} {:>16.0} {idle:>18}",
            active as f64 / n as f64
        );
    }
}

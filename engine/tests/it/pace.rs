//! Like pacing end to end: while the io runtime runs late, a viewer that
//! sends likes is told `Notice { like_pace, value: ms }`; once the runtime
//! is on time again it is told a shorter pace per calm (5 s each), then
//! `0`. A viewer that sends no like hears nothing of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roomgate::engine::Engine;
use roomgate::wire::{ClientFrame, NoticeKind, ServerFrame};

use crate::client::Viewer;
use crate::harness::{self, admin};

const PACE_MS: u32 = 300;

/// Send a like every 100 ms until a `like_pace` notice arrives (or `within`
/// passes); its value.
async fn pace_told(v: &mut Viewer, within: Duration) -> Option<u32> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        v.send(&ClientFrame::Like { count: 1 }).await;
        match v.next_within(Duration::from_millis(100)).await {
            Some(ServerFrame::Notice(n)) if n.kind == NoticeKind::LikePace as u8 => {
                return Some(n.value)
            }
            Some(ServerFrame::Notice(_)) | None => {}
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    None
}

fn metric(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn like_senders_are_paced_while_the_io_runtime_runs_late() {
    harness::init_tracing();
    let url = harness::shared_clickhouse();
    let mut cfg = harness::config(&url, "pace");
    cfg.server.like_pace_ms = PACE_MS;
    // Lateness only (what the hogs below cause), with a high threshold: a
    // busy test machine does not pace this engine by itself.
    cfg.server.overload_lateness_ms = 20;
    cfg.server.overload_busy_percent = 0;
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let engine = Engine::start(cfg).await.unwrap();
    let addr = engine.quic_addr();
    let mut tapper = Viewer::join(addr, &certs, 1, 1).await;
    let mut quiet = Viewer::join(addr, &certs, 1, 2).await;

    // Overload the runtime the engine's io runs on: both workers are held
    // 40 ms at a time, so its lateness tick runs tens of ms late.
    let hold = Arc::new(AtomicBool::new(true));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let hold = hold.clone();
            tokio::spawn(async move {
                while hold.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(40));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let told = pace_told(&mut tapper, Duration::from_secs(20)).await;
    assert_eq!(
        told,
        Some(PACE_MS),
        "a like sender is paced while the runtime is late"
    );
    let (_, m) = admin(engine.admin_addr(), "GET", "/metrics", None, "").await;
    assert_eq!(metric(&m, "roomgate_like_pace_ms "), i64::from(PACE_MS));
    assert!(metric(&m, "roomgate_io_lateness_us ") > 10_000);

    // On time again: the pace halves per calm, then ends.
    hold.store(false, Ordering::Relaxed);
    for h in hogs {
        h.await.unwrap();
    }
    let mut told = vec![PACE_MS];
    while told.last() != Some(&0) {
        // Longer than the longest calm: a relapse doubles it.
        match pace_told(&mut tapper, Duration::from_secs(70)).await {
            Some(pace) => told.push(pace),
            None => panic!("the pace is not lifted: told {told:?}"),
        }
    }
    // [300, 150, 75, 0] (a relapse on a noisy machine climbs a rung and
    // steps down again: the last three stay the same).
    assert!(
        told.ends_with(&[PACE_MS / 2, PACE_MS / 4, 0]),
        "told {told:?}"
    );
    let (_, m) = admin(engine.admin_addr(), "GET", "/metrics", None, "").await;
    assert_eq!(metric(&m, "roomgate_like_pace_ms "), 0);
    // The tapper kept sending every 100 ms while told 300 (at least one
    // 5 s calm): those frames ignored the pace, and are counted.
    assert!(
        metric(&m, "roomgate_like_frames_early_total ") >= 10,
        "{}",
        metric(&m, "roomgate_like_frames_early_total ")
    );
    assert_eq!(
        metric(&m, "roomgate_like_pace_notices_total "),
        told.len() as i64
    );

    // The viewer that sent no like was told nothing.
    quiet.send(&ClientFrame::Bye).await;
    while let Some(f) = quiet.next_within(Duration::from_secs(5)).await {
        assert!(
            !matches!(&f, ServerFrame::Notice(n) if n.kind == NoticeKind::LikePace as u8),
            "{f:?}"
        );
    }
    engine.shutdown().await.unwrap();
}

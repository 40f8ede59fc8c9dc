//! One ticket holder flooding: its rejected traffic costs a bounded number
//! of rows (one moderation row per viewer, kind, reason and second), and a
//! viewer that keeps tripping hard limits is disconnected with `abusive`.

use std::time::{Duration, Instant};

use roomgate::engine::Engine;
use roomgate::wire::{ClientFrame, CloseCode, ServerFrame};

use crate::client::Viewer;
use crate::harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_costs_bounded_rows_and_ends_in_a_disconnect() {
    harness::init_tracing();
    let url = harness::shared_clickhouse();
    let cfg = harness::config(&url, "abuse");
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let engine = Engine::start(cfg.clone()).await.unwrap();
    let addr = engine.quic_addr();
    let mut v = Viewer::join(addr, &certs, 41, 1).await;
    let started = Instant::now();

    // 5,000 like frames of 1,000 taps (far over the 20/s cap), then the
    // same chat message 200 times.
    let like = roomgate::wire::encode(&ClientFrame::Like { count: 1_000 });
    let mut burst = Vec::new();
    for _ in 0..5_000 {
        burst.extend_from_slice(&like);
    }
    v.send_raw(&burst).await;
    let mut frames = 5_000u64;
    for id in 0..200u64 {
        v.send(&ClientFrame::Chat {
            client_msg_id: id,
            text: "buy now 13800138000".into(),
        })
        .await;
        frames += 1;
    }
    // Rejected acks arrive, then the close.
    while let Some(f) = v.next_within(Duration::from_secs(5)).await {
        assert!(matches!(
            f,
            ServerFrame::Ack { .. } | ServerFrame::Notice(_)
        ));
    }
    assert_eq!(v.close_code().await, Some(CloseCode::Abusive));
    let secs = started.elapsed().as_secs() + 1;
    let metrics = engine.metrics().render();
    engine.shutdown().await.unwrap();

    let rows = harness::scalar(
        &cfg,
        "SELECT count() FROM {db}.moderation_events WHERE viewer_id = 1",
    )
    .await;
    let events = harness::scalar(
        &cfg,
        "SELECT sum(count) FROM {db}.moderation_events WHERE viewer_id = 1",
    )
    .await;
    let reasons = harness::scalar(
        &cfg,
        "SELECT uniqExact(kind, reason) FROM {db}.moderation_events WHERE viewer_id = 1",
    )
    .await;
    eprintln!(
        "flood: {frames} frames sent, {events} rejected events in {rows} moderation rows \
         ({reasons} kinds x reasons, {secs} s)"
    );
    // The bound: one row per (kind, reason) per second of flooding.
    assert!(
        rows <= reasons * secs,
        "{rows} rows for {reasons} reasons in {secs} s"
    );
    assert!(rows * 100 <= frames, "{rows} rows for {frames} frames");
    // Every like frame was over the cap, and chat rejects stop at the
    // disconnect (50 by default).
    assert!(events >= 5_000 + 49, "{events} events");
    assert!(
        metrics.contains("roomgate_connection_closes_total{code=\"abusive\"} 1"),
        "{metrics}"
    );
}

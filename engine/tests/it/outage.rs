//! A ClickHouse outage delays rows, not acks; it never drops or duplicates a lead.

use std::time::Duration;

use roomgate::engine::Engine;
use roomgate::wire::{ClientFrame, Lead, ServerFrame};

use crate::client::Viewer;
use crate::harness::{self, scalar};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_delays_rows_not_acks_and_loses_nothing() {
    harness::init_tracing();
    // A private ClickHouse this test may stop and start.
    let port = 18124;
    let url = harness::clickhouse_up(port);
    let cfg = harness::config(&url, "outage");
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let engine = Engine::start(cfg.clone()).await.unwrap();
    let mut v = Viewer::join(engine.quic_addr(), &certs, 5, 1).await;

    harness::clickhouse_down(port);
    for id in 1..=3u64 {
        v.send(&ClientFrame::Lead(Lead {
            client_lead_id: id,
            phone: format!("1390000000{id}"),
            consent: true,
            fill_ms: 9_000,
            ..Lead::default()
        }))
        .await;
    }
    // The ack is released at the log's durability point: ClickHouse being
    // down does not delay it.
    let mut acked = Vec::new();
    while acked.len() < 3 {
        match v.next_within(Duration::from_secs(5)).await {
            Some(ServerFrame::Ack {
                kind: 2,
                client_id,
                verdict: 1,
                replay: false,
                ..
            }) => acked.push(client_id),
            other => panic!("unexpected {other:?}"),
        }
    }
    acked.sort();
    assert_eq!(acked, vec![1, 2, 3]);
    // Still ready: ClickHouse is down but the log has room, and /readyz
    // says which part is down.
    let (status, body) = harness::admin(engine.admin_addr(), "GET", "/readyz", None, "").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"clickhouse\":\"error") || body.contains("timeout"),
        "{body}"
    );
    // The writers keep retrying; the rows wait in the log.
    tokio::time::sleep(Duration::from_secs(1)).await;
    harness::clickhouse_up(port);
    v.send(&ClientFrame::Bye).await;
    v.close_code().await;
    let metrics = engine.metrics().clone();
    engine.shutdown().await.unwrap();
    let leads = &metrics.tables[2];
    assert!(
        leads.retries.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "inserts were retried"
    );
    assert_eq!(
        leads.dead_rows.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(scalar(&cfg, "SELECT count() FROM {db}.leads").await, 3);
    assert_eq!(
        scalar(&cfg, "SELECT uniqExact(client_lead_id) FROM {db}.leads").await,
        3
    );
    // The join row was written before the outage, the leave after: both once.
    assert_eq!(scalar(&cfg, "SELECT count() FROM {db}.sessions").await, 2);
    harness::clickhouse_down(port);
}

/// SIGTERM's path while ClickHouse is down: shutdown ends within the flush
/// deadline (plus a few seconds), what was not committed stays in the log,
/// and the next start inserts it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_an_outage_is_bounded_and_the_next_start_delivers() {
    harness::init_tracing();
    let port = 18126;
    let url = harness::clickhouse_up(port);
    let mut cfg = harness::config(&url, "outage_stop");
    cfg.clickhouse.shutdown_flush_ms = 2_000;
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let engine = Engine::start(cfg.clone()).await.unwrap();
    let mut v = Viewer::join(engine.quic_addr(), &certs, 6, 1).await;
    harness::clickhouse_down(port);
    for id in 1..=4u64 {
        v.send(&ClientFrame::Lead(Lead {
            client_lead_id: id,
            phone: format!("1370000000{id}"),
            consent: true,
            fill_ms: 9_000,
            ..Lead::default()
        }))
        .await;
    }
    let mut acked = 0;
    while acked < 4 {
        match v.next_within(Duration::from_secs(5)).await {
            Some(ServerFrame::Ack { kind: 2, .. }) => acked += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let t0 = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(15), engine.shutdown())
        .await
        .expect("shutdown is bounded while ClickHouse is down")
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    drop(v);

    // Next start, ClickHouse back: the log's rows go in, once.
    harness::clickhouse_up(port);
    let engine = Engine::start(cfg.clone()).await.unwrap();
    let t0 = std::time::Instant::now();
    while scalar(&cfg, "SELECT count() FROM {db}.leads").await < 4 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "replayed rows arrive"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    engine.shutdown().await.unwrap();
    assert_eq!(scalar(&cfg, "SELECT count() FROM {db}.leads").await, 4);
    assert_eq!(
        scalar(&cfg, "SELECT uniqExact(client_lead_id) FROM {db}.leads").await,
        4
    );
    // The join and the leave (written at the first shutdown) arrive too.
    assert_eq!(scalar(&cfg, "SELECT count() FROM {db}.sessions").await, 2);
    harness::clickhouse_down(port);
}

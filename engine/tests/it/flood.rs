//! A handshake flood from one address (127.0.0.2: QUIC handshakes that
//! never send `Hello`, as fast as the attacker can) while behaving viewers
//! join from another (127.0.0.1): the flood is refused cheaply at its
//! per-address caps, address validation (Retry) kicks in, and every
//! behaving viewer still gets in. The join times with and without the
//! flood are printed (a ratio, not asserted: timing belongs in benches).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roomgate::engine::Engine;
use roomgate::gate::admission::Refusal;

use crate::client::Viewer;
use crate::harness;

/// Join `n` viewers, `par` at a time; their join times, sorted.
async fn join_times(
    addr: SocketAddr,
    certs: &Path,
    room: u64,
    n: u64,
    par: usize,
) -> Vec<Duration> {
    let sem = Arc::new(tokio::sync::Semaphore::new(par));
    let mut tasks = Vec::new();
    for viewer in 0..n {
        let sem = sem.clone();
        let certs = certs.to_owned();
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let t = Instant::now();
            let v = tokio::time::timeout(
                Duration::from_secs(20),
                Viewer::join(addr, &certs, room, viewer),
            )
            .await
            .expect("a behaving viewer joins");
            (t.elapsed(), v)
        }));
    }
    let mut out = Vec::new();
    let mut keep = Vec::new();
    for t in tasks {
        let (d, v) = t.await.unwrap();
        out.push(d);
        keep.push(v);
    }
    drop(keep);
    out.sort();
    out
}

fn p99(v: &[Duration]) -> Duration {
    v[((v.len() * 99).div_ceil(100)).saturating_sub(1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behaving_viewers_join_through_a_handshake_flood() {
    harness::init_tracing();
    let url = harness::shared_clickhouse();
    let mut cfg = harness::config(&url, "flood");
    cfg.server.max_handshakes_per_ip = 16;
    cfg.server.max_connections_per_ip = 64;
    cfg.server.retry_above_handshakes = 8;
    cfg.server.handshake_timeout_ms = 3_000;
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let engine = Engine::start(cfg).await.unwrap();
    let addr = engine.quic_addr();

    let quiet = join_times(addr, &certs, 51, 60, 8).await;

    // The flood: 2,000 handshake attempts from 127.0.0.2, 64 at a time,
    // each connection held open without a Hello.
    let flood_certs = certs.clone();
    let flood = tokio::spawn(async move {
        let mut ep = quinn::Endpoint::client("127.0.0.2:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(crate::client::client_config(&flood_certs));
        let sem = Arc::new(tokio::sync::Semaphore::new(64));
        let mut held = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..2_000 {
            let permit = sem.clone().acquire_owned().await.unwrap();
            let connecting = ep.connect(addr, "localhost").unwrap();
            tasks.spawn(async move {
                let _p = permit;
                tokio::time::timeout(Duration::from_secs(5), connecting)
                    .await
                    .ok()
                    .and_then(Result::ok)
            });
            while let Some(Ok(c)) = tasks.try_join_next() {
                held.extend(c);
            }
        }
        while let Some(Ok(c)) = tasks.join_next().await {
            held.extend(c);
        }
        (held.len(), ep)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let flooded = join_times(addr, &certs, 52, 60, 8).await;
    let (completed, _ep) = flood.await.unwrap();

    let m = engine.metrics();
    let refused_ip =
        m.refused_count(Refusal::IpHandshakes) + m.refused_count(Refusal::IpConnections);
    let retries = m.retries_sent.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "handshake flood: {completed} of 2000 flood handshakes completed, {refused_ip} refused at the \
         per-address caps, {retries} retries; behaving join p99 {:?} quiet vs {:?} flooded ({:.2}x)",
        p99(&quiet),
        p99(&flooded),
        p99(&flooded).as_secs_f64() / p99(&quiet).as_secs_f64()
    );
    assert_eq!(flooded.len(), 60, "every behaving viewer joined");
    assert!(refused_ip > 0, "the flood hit its per-address caps");
    assert!(retries > 0, "address validation kicked in");
    assert_eq!(m.refused_count(Refusal::ServerFull), 0);
    assert!(
        completed <= 64,
        "the flood held at most its per-address connections: {completed}"
    );
    engine.shutdown().await.unwrap();
}

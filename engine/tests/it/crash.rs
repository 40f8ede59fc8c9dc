//! An ack is a promise: leads acked before a kill -9 are stored exactly
//! once, resends after a restart are answered as replays with the original
//! verdict, and SIGTERM flushes and exits cleanly.
//!
//! The engine runs as a real process (`roomgate`), killed with SIGKILL
//! twice while viewers send leads, then stopped with SIGTERM.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roomgate::wire::{ClientFrame, Lead, ServerFrame};

use crate::client::Viewer;
use crate::harness::{self, scalar, SECRET};

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const VIEWERS: u64 = 8;
const LEADS: u64 = 40;
const ROOM: u64 = 77;

/// (viewer, client_lead_id) → verdict of its first ack.
type Acks = Arc<Mutex<HashMap<(u64, u64), u8>>>;
/// Acks of resent leads: (viewer, client_lead_id, verdict, replay flag).
type Replays = Arc<Mutex<Vec<(u64, u64, u8, bool)>>>;

struct Node {
    child: Child,
}

fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

fn start(dir: &Path, port: u16, url: &str, db: &str) -> Node {
    let child = Command::new(env!("CARGO_BIN_EXE_roomgate"))
        .arg("--config")
        .arg(dir.join("engine.toml"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin", "127.0.0.1:0"])
        .arg("--dev-cert")
        .arg(dir.join("cert"))
        .args(["--clickhouse-url", url, "--database", db, "--shards", "2"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--log", "warn"])
        .env("ROOMGATE_TICKET_SECRET", SECRET)
        .env("ROOMGATE_PII_HMAC_KEY", KEY)
        .env("ROOMGATE_PII_ENC_KEY", harness::ENC_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start roomgate");
    Node { child }
}

fn verdict_code(name: &str) -> u8 {
    match name {
        "accepted" => 1,
        "suspect" => 2,
        "rejected" => 3,
        "duplicate" => 4,
        _ => 0,
    }
}

fn lead(viewer: u64, id: u64) -> ClientFrame {
    ClientFrame::Lead(Lead {
        client_lead_id: id,
        phone: format!("139{viewer:04}{id:04}"),
        consent: true,
        fill_ms: 9_000,
        ..Lead::default()
    })
}

/// One viewer: join, send every lead not acked yet (and `resend` acked
/// ones), record acks. Runs until aborted or all are acked.
async fn viewer(
    addr: std::net::SocketAddr,
    certs: PathBuf,
    v: u64,
    acks: Acks,
    resend: Vec<u64>,
    replays: Replays,
) {
    let mut conn = loop {
        if let Some(c) = Viewer::try_join(addr, &certs, ROOM, v).await {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let todo: Vec<u64> = {
        let a = acks.lock().unwrap();
        (1..=LEADS)
            .filter(|id| !a.contains_key(&(v, *id)))
            .collect()
    };
    for id in todo.iter().chain(resend.iter()) {
        conn.send(&lead(v, *id)).await;
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    let want = todo.len() + resend.len();
    let mut got = 0;
    while got < want {
        match conn.next_within(Duration::from_secs(60)).await {
            Some(ServerFrame::Ack {
                kind: 2,
                client_id,
                verdict,
                replay,
                ..
            }) => {
                got += 1;
                let mut a = acks.lock().unwrap();
                let first = *a.entry((v, client_id)).or_insert(verdict);
                if resend.contains(&client_id) || first != verdict {
                    replays
                        .lock()
                        .unwrap()
                        .push((v, client_id, verdict, replay));
                }
            }
            Some(_) => {}
            None => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_leads_survive_kill_9_and_restarts_exactly_once() {
    harness::init_tracing();
    let url = harness::shared_clickhouse();
    let dir = std::env::temp_dir().join(format!("roomgate-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("engine.toml"),
        // Every lead is stored here, rejected ones included: no cap, no
        // disconnects (this test counts rows, not abuse).
        "[batch.default]\nmax_age_ms = 300\n[clickhouse]\nretry_initial_ms = 100\nretry_max_ms = 500\n\
         [guard.abuse]\nmax_rejected_leads_per_hour = 1000000\ndisconnect_rejects = 0\n",
    )
    .unwrap();
    let db = format!("it_crash_{}_{}", std::process::id(), roomgate::now_ms());
    let mut cfg = harness::config(&url, "crash");
    cfg.clickhouse.database = db.clone();
    let port = free_udp_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let certs = dir.join("cert");
    let acks: Acks = Arc::default();
    let replays: Replays = Arc::default();
    let mut kills = 0;
    for cycle in 0..3 {
        let mut node = start(&dir, port, &url, &db);
        let acked_before: Vec<(u64, u64)> = acks.lock().unwrap().keys().copied().collect();
        let mut tasks = Vec::new();
        for v in 1..=VIEWERS {
            // In the last cycle, resend two leads acked before a crash:
            // they must come back as replays with the same verdict.
            let resend: Vec<u64> = if cycle == 2 {
                acked_before
                    .iter()
                    .filter(|(vv, _)| *vv == v)
                    .map(|(_, id)| *id)
                    .take(2)
                    .collect()
            } else {
                Vec::new()
            };
            tasks.push(tokio::spawn(viewer(
                addr,
                certs.clone(),
                v,
                acks.clone(),
                resend,
                replays.clone(),
            )));
        }
        if cycle < 2 {
            // Kill while leads are being sent and acked.
            let t0 = Instant::now();
            let target = acked_before.len() + 40;
            while acks.lock().unwrap().len() < target && t0.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            node.child.kill().unwrap(); // SIGKILL
            node.child.wait().unwrap();
            kills += 1;
            for t in tasks {
                t.abort();
            }
        } else {
            for t in tasks {
                tokio::time::timeout(Duration::from_secs(90), t)
                    .await
                    .expect("every lead acked after the restarts")
                    .unwrap();
            }
            let pid = node.child.id().to_string();
            let st = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
            assert!(st.success());
            let t0 = Instant::now();
            let status = loop {
                if let Some(s) = node.child.try_wait().unwrap() {
                    break s;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(25),
                    "SIGTERM exits within the flush deadline"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert!(status.success(), "clean exit after SIGTERM: {status}");
        }
    }
    assert_eq!(kills, 2);
    let acks = acks.lock().unwrap().clone();
    assert_eq!(acks.len() as u64, VIEWERS * LEADS, "every lead acked");
    // Every acked lead stored exactly once, with the verdict its ack gave.
    let stored = scalar(&cfg, "SELECT count() FROM {db}.leads").await;
    let unique = scalar(
        &cfg,
        "SELECT uniqExact(viewer_id, client_lead_id) FROM {db}.leads",
    )
    .await;
    assert_eq!(unique, VIEWERS * LEADS, "no acked lead lost");
    assert_eq!(stored, VIEWERS * LEADS, "no lead stored twice");
    let verdicts = [
        (1u8, "accepted"),
        (2, "suspect"),
        (3, "rejected"),
        (4, "duplicate"),
    ];
    for (code, name) in verdicts {
        let acked = acks.values().filter(|v| **v == code).count() as u64;
        let rows = scalar(
            &cfg,
            &format!("SELECT count() FROM {{db}}.leads WHERE verdict = '{name}'"),
        )
        .await;
        assert_eq!(rows, acked, "{name}: stored verdicts match acked ones");
    }
    // What a restarted engine reads back from ClickHouse to answer resends
    // as replays: every lead (and the chat, none here) of the window.
    let client_db = clickhouse::Client::default()
        .with_url(&url)
        .with_database(&db);
    let seen = roomgate::engine::recent_ids(&client_db, 600).await;
    assert_eq!(
        seen.iter().filter(|s| s.lead).count() as u64,
        VIEWERS * LEADS,
        "recent leads read back from ClickHouse"
    );
    for s in seen.iter().filter(|s| s.lead) {
        assert_eq!(
            Some(&verdict_code(s.verdict)),
            acks.get(&(s.viewer_id, s.client_id))
        );
    }
    // The last line: a lead stored twice (which only a failover or a lost
    // data directory can cause) still counts once through `leads_unique`.
    assert_eq!(
        scalar(&cfg, "SELECT count() FROM {db}.leads_unique").await,
        VIEWERS * LEADS
    );
    let client = clickhouse::Client::default().with_url(&url);
    client
        .query(&format!(
            "INSERT INTO {db}.leads SELECT * FROM {db}.leads ORDER BY ts LIMIT 3"
        ))
        .execute()
        .await
        .unwrap();
    assert_eq!(
        scalar(&cfg, "SELECT count() FROM {db}.leads").await,
        VIEWERS * LEADS + 3
    );
    assert_eq!(
        scalar(&cfg, "SELECT count() FROM {db}.leads_unique").await,
        VIEWERS * LEADS,
        "a duplicated lead counts once through leads_unique"
    );
    let replays = replays.lock().unwrap().clone();
    assert!(!replays.is_empty(), "acked leads were resent");
    for (v, id, verdict, replay) in replays {
        assert!(replay, "resend of ({v}, {id}) answered as a replay");
        assert_eq!(Some(&verdict), acks.get(&(v, id)), "same verdict");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

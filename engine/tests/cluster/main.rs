//! The engine against a sharded ClickHouse cluster: several local servers
//! started through the project's launcher (`scripts/clickhouse.py
//! cluster-up`, the servers `make cluster-up` starts), the schema's cluster
//! layout (`clickhouse.cluster`), viewers over real QUIC, one shard stopped
//! for 15 s under load. `make cluster-test`.
//!
//! The cluster: `CLUSTER_SHARDS` (2) servers on HTTP ports from
//! `CLUSTER_HTTP_BASE` (18130), cluster `CLUSTER_NAME` (`roomgate`).

#[allow(dead_code)]
#[path = "../it/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../it/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use roomgate::config::Config;
use roomgate::engine::Engine;
use roomgate::sink::migrate::{self, ClusterDdl, Layout};
use roomgate::sink::{writer, ChatRow};
use roomgate::table::Table;
use roomgate::wire::{ClientFrame, Lead, ServerFrame, Verdict};

use crate::client::Viewer;

/// How long the shard is down.
const OUTAGE: Duration = Duration::from_secs(15);
/// Load before the outage and after the shard is back.
const STEADY: Duration = Duration::from_secs(3);
/// Rooms on each shard (by `cityHash64(room_id)`) and viewers per room.
const ROOMS_PER_SHARD: usize = 4;
const VIEWERS_PER_ROOM: u64 = 2;
/// Pause between one viewer's rounds (a chat and a like push each round,
/// a lead every fourth).
const ROUND: Duration = Duration::from_millis(250);

/// The cluster `make cluster-up` starts: (name, HTTP URL of each shard).
struct Cluster {
    name: String,
    urls: Vec<String>,
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn launcher(args: &[&str], env: &[(&str, String)]) {
    let root = harness::repo_root();
    let mut cmd = Command::new("python3");
    cmd.arg(root.join("scripts/clickhouse.py")).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run scripts/clickhouse.py");
    assert!(
        out.status.success(),
        "clickhouse.py {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Start the cluster's servers that are not running (all, or one a test
/// stopped); the same configuration every time.
fn cluster_up() -> Cluster {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let venv = Command::new(harness::repo_root().join("scripts/ensure-venv.sh"))
        .status()
        .expect("run scripts/ensure-venv.sh");
    assert!(venv.success(), "scripts/ensure-venv.sh failed");
    let shards = env_or("CLUSTER_SHARDS", 2);
    let base = env_or("CLUSTER_HTTP_BASE", 18_130);
    let name = std::env::var("CLUSTER_NAME").unwrap_or_else(|_| "roomgate".into());
    launcher(
        &["cluster-up"],
        &[
            ("CLUSTER_SHARDS", shards.to_string()),
            ("CLUSTER_HTTP_BASE", base.to_string()),
            ("CLUSTER_NAME", name.clone()),
        ],
    );
    Cluster {
        name,
        urls: (0..shards)
            .map(|i| format!("http://127.0.0.1:{}", base + i))
            .collect(),
    }
}

/// Stop one server of the cluster (SIGTERM, as `make cluster-down` does).
fn stop_node(url: &str) {
    let port = url.rsplit(':').next().expect("a port").to_owned();
    launcher(&["down"], &[("CLICKHOUSE_HTTP_PORT", port)]);
}

/// An engine config for the cluster: a fresh database, guard limits high
/// enough that every message of the load is accepted.
fn config(cluster: &Cluster, name: &str) -> Config {
    let mut cfg = harness::config(&cluster.urls[0], name);
    cfg.clickhouse.cluster = cluster.name.clone();
    cfg.clickhouse.cluster_urls = cluster.urls.clone();
    let chat = &mut cfg.guard.chat;
    chat.viewer_messages = 10_000;
    chat.viewer_burst = 1_000;
    chat.room_per_sec = 10_000;
    chat.automute_rejects = 0;
    let leads = &mut cfg.guard.leads;
    leads.max_per_viewer = 10_000;
    leads.max_per_ip = 1_000_000;
    cfg.validate().expect("a valid cluster config")
}

/// `SELECT` one number from the server at `url`.
async fn scalar_at(url: &str, db: &str, sql: &str) -> u64 {
    let sql = sql.replace("{db}", db);
    clickhouse::Client::default()
        .with_url(url)
        .query(&sql)
        .fetch_one::<u64>()
        .await
        .unwrap_or_else(|e| panic!("{url}: {sql}: {e}"))
}

/// What one viewer got acknowledged.
#[derive(Default, Debug)]
struct Acked {
    room: u64,
    chats: u64,
    leads: u64,
}

/// One viewer: join, then a chat, a like push and every fourth round a
/// lead until `stop`, waiting for each ack; then `Bye`.
async fn viewer(
    addr: std::net::SocketAddr,
    certs: std::path::PathBuf,
    room: u64,
    id: u64,
    stop: Arc<AtomicBool>,
) -> Acked {
    let mut v = Viewer::join(addr, &certs, room, id).await;
    let mut acked = Acked {
        room,
        ..Acked::default()
    };
    let mut round = 0u64;
    while !stop.load(Relaxed) {
        round += 1;
        v.send(&ClientFrame::Chat {
            client_msg_id: round,
            text: format!("room {room} viewer {id} says hello #{round}"),
        })
        .await;
        v.send(&ClientFrame::Like { count: 3 }).await;
        let lead = round.is_multiple_of(4);
        if lead {
            v.send(&ClientFrame::Lead(Lead {
                client_lead_id: round,
                // A distinct mobile number per lead.
                phone: format!("139{:08}", (room - 9_000) * 100_000 + id * 1_000 + round),
                consent: true,
                fill_ms: 12_000,
                ..Lead::default()
            }))
            .await;
        }
        let mut waiting = 1 + u32::from(lead);
        while waiting > 0 {
            match v.next_within(Duration::from_secs(10)).await {
                Some(ServerFrame::Ack {
                    kind,
                    client_id,
                    verdict,
                    reason,
                    replay: false,
                    ..
                }) if client_id == round => {
                    assert_ne!(
                        Verdict::from_u8(verdict),
                        Some(Verdict::Rejected),
                        "room {room} viewer {id}: kind {kind} rejected, reason {reason}"
                    );
                    match kind {
                        1 => {
                            assert_eq!(Verdict::from_u8(verdict), Some(Verdict::Accepted));
                            acked.chats += 1;
                        }
                        2 => acked.leads += 1,
                        other => panic!("ack of kind {other}"),
                    }
                    waiting -= 1;
                }
                Some(ServerFrame::Notice(_)) => {}
                other => panic!("room {room} viewer {id}: unexpected {other:?}"),
            }
        }
        tokio::time::sleep(ROUND).await;
    }
    v.send(&ClientFrame::Bye).await;
    v.close_code().await;
    acked
}

/// The five event tables and the rollup: rows of each on each node.
const TABLES: [&str; 6] = [
    "chat_messages",
    "like_ticks",
    "leads",
    "sessions",
    "moderation_events",
    "room_minute",
];

/// The tests share the cluster and one of them stops a node: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_cluster_stores_every_row_once_through_a_shard_outage() {
    let _serial = SERIAL.lock().await;
    harness::init_tracing();
    let cluster = cluster_up();
    let shards = cluster.urls.len() as u64;
    assert!(shards >= 2, "the outage test needs at least 2 shards");
    let cfg = config(&cluster, "cluster");
    let db = cfg.clickhouse.database.clone();
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let engine = Engine::start(cfg.clone()).await.unwrap();

    // The layout, on every node: local tables, Distributed tables under
    // the analysts' names, the views per node.
    for url in &cluster.urls {
        for t in TABLES {
            let engine_of = |name: String| {
                let db = db.clone();
                async move {
                    let sql = format!(
                        "SELECT engine FROM system.tables WHERE database = '{db}' AND name = '{name}'"
                    );
                    clickhouse::Client::default()
                        .with_url(url)
                        .query(&sql)
                        .fetch_one::<String>()
                        .await
                        .unwrap_or_else(|e| panic!("{url}: {name}: {e}"))
                }
            };
            assert_eq!(engine_of(t.to_owned()).await, "Distributed", "{url} {t}");
            let local = engine_of(format!("{t}_local")).await;
            assert!(local.ends_with("MergeTree"), "{url} {t}_local: {local}");
        }
        let views = scalar_at(
            url,
            &db,
            "SELECT count() FROM system.tables WHERE database = '{db}' \
             AND engine = 'MaterializedView' AND create_table_query LIKE '%_local GROUP BY%'",
        )
        .await;
        // room_minute's five and lead_facts' two.
        assert_eq!(views, 7, "{url}: the rollups' views read the local tables");
    }
    // Migrations are idempotent on every node.
    assert!(roomgate::engine::migrate(&cfg).await.unwrap().is_empty());

    // Load: every viewer until `stop`.
    let mut rooms = Vec::new();
    for s in 0..shards {
        rooms.extend(
            (9_001..)
                .filter(|&r| migrate::shard_of_room(r, shards) == s)
                .take(ROOMS_PER_SHARD),
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for &room in &rooms {
        for id in 1..=VIEWERS_PER_ROOM {
            tasks.push(tokio::spawn(viewer(
                engine.quic_addr(),
                certs.clone(),
                room,
                id,
                stop.clone(),
            )));
        }
    }
    tokio::time::sleep(STEADY).await;

    // The last shard goes down under load for OUTAGE; shard 1, where the
    // engine sends its inserts, stays up.
    let down = cluster.urls.last().unwrap().clone();
    let d = down.clone();
    tokio::task::spawn_blocking(move || stop_node(&d))
        .await
        .unwrap();
    let metrics = engine.metrics().clone();
    let chat = &metrics.tables[Table::Chat.index()];
    let retries_at_stop = chat.retries.load(Relaxed);
    tokio::time::sleep(OUTAGE).await;
    // Meanwhile the rows waited in the engine's log: inserts failed (a
    // batch is committed only once every shard stored its part) and were
    // retried.
    assert!(
        chat.retries.load(Relaxed) > retries_at_stop,
        "inserts failed while a shard was down"
    );
    assert!(chat.pending_rows.load(Relaxed) > 0, "rows wait in the log");
    tokio::task::spawn_blocking(cluster_up).await.unwrap();
    tokio::time::sleep(STEADY).await;
    stop.store(true, Relaxed);
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    engine.shutdown().await.unwrap();

    // Nothing lost, nothing doubled: exact counts through the Distributed
    // tables, against what the viewers got acknowledged.
    let chats: u64 = acked.iter().map(|a| a.chats).sum();
    let leads: u64 = acked.iter().map(|a| a.leads).sum();
    let viewers = acked.len() as u64;
    let taps = metrics.like_taps_admitted.load(Relaxed);
    eprintln!(
        "{shards} shards, {viewers} viewers: {chats} chat messages, {leads} leads, {taps} like taps admitted; \
         {} chat and {} lead inserts retried while shard {shards} was down",
        chat.retries.load(Relaxed),
        metrics.tables[Table::Leads.index()].retries.load(Relaxed),
    );
    assert!(
        chats > 200 && leads > 50 && taps > 600,
        "{chats} {leads} {taps}"
    );
    for t in [Table::Chat, Table::Likes, Table::Leads, Table::Sessions] {
        let s = &metrics.tables[t.index()];
        assert_eq!(
            s.pending_rows.load(Relaxed),
            0,
            "{t}: nothing left in the log"
        );
        assert_eq!(s.dead_rows.load(Relaxed), 0, "{t}: nothing set aside");
    }
    let node1 = &cluster.urls[0];
    let q = |sql: &'static str| scalar_at(node1, &db, sql);
    assert_eq!(q("SELECT count() FROM {db}.chat_messages").await, chats);
    assert_eq!(
        q("SELECT uniqExact(room_id, viewer_id, client_msg_id) FROM {db}.chat_messages").await,
        chats
    );
    assert_eq!(q("SELECT count() FROM {db}.leads").await, leads);
    assert_eq!(
        q("SELECT uniqExact(room_id, viewer_id, client_lead_id) FROM {db}.leads").await,
        leads
    );
    assert_eq!(q("SELECT count() FROM {db}.leads_unique").await, leads);
    assert_eq!(q("SELECT sum(taps) FROM {db}.like_ticks").await, taps);
    assert_eq!(q("SELECT count() FROM {db}.sessions").await, 2 * viewers);
    // The rollup, filled per node by the views, agrees (retried inserts
    // are deduplicated in the views too).
    assert_eq!(
        q("SELECT sum(chat_messages) FROM {db}.room_minute").await,
        chats
    );
    assert_eq!(q("SELECT sum(leads) FROM {db}.room_minute").await, leads);
    assert_eq!(q("SELECT sum(like_taps) FROM {db}.room_minute").await, taps);

    // Each row on its room's shard: cityHash64(room_id) % shards, which is
    // also what `shard_of_room` computes.
    let mut chats_per_shard: HashMap<u64, u64> = HashMap::new();
    for a in &acked {
        *chats_per_shard
            .entry(migrate::shard_of_room(a.room, shards))
            .or_default() += a.chats;
    }
    for (i, url) in cluster.urls.iter().enumerate() {
        let i = i as u64;
        for t in TABLES {
            let sql = format!(
                "SELECT count() FROM {{db}}.{t}_local WHERE cityHash64(room_id) % {shards} != {i}"
            );
            assert_eq!(scalar_at(url, &db, &sql).await, 0, "{url}: {t}_local");
        }
        assert_eq!(
            scalar_at(url, &db, "SELECT count() FROM {db}.chat_messages_local").await,
            chats_per_shard.get(&i).copied().unwrap_or(0),
            "{url}: chat rows of its rooms"
        );
        assert!(scalar_at(url, &db, "SELECT count() FROM {db}.leads_local").await > 0);
        // Nothing was queued for a later background send.
        assert_eq!(
            scalar_at(
                url,
                &db,
                "SELECT count() FROM system.distribution_queue WHERE database = '{db}'"
            )
            .await,
            0
        );
    }

    for url in &cluster.urls {
        harness::http_query(url, &format!("DROP DATABASE IF EXISTS {db} SYNC")).await;
    }
}

/// A batch whose insert failed after one shard had stored its part (what a
/// shard going down mid-insert, or a lost reply, leaves behind) is retried
/// with the same token through the `Distributed` table: the shard that has
/// its part drops the repeat, the other stores its part, once; the rollup
/// its views feed counts it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_stored_once_on_every_shard() {
    let _serial = SERIAL.lock().await;
    harness::init_tracing();
    let cluster = cluster_up();
    let shards = cluster.urls.len() as u64;
    let cfg = config(&cluster, "cluster_retry");
    let db = cfg.clickhouse.database.clone();
    roomgate::engine::migrate(&cfg).await.unwrap();
    let rows: Vec<ChatRow> = (0..1_000u64)
        .map(|i| ChatRow {
            room_id: 9_100 + i % 20,
            ts: roomgate::now_ms(),
            viewer_id: i,
            session_id: 1,
            client_msg_id: i,
            text: format!("message {i}"),
            verdict: "accepted",
            dry_run_reasons: Vec::new(),
        })
        .collect();
    let timeout = Duration::from_secs(10);
    let token = writer::token("retry", Table::Chat, 1, 1_000);
    // The first attempt reached shard 1 only.
    let first: Vec<&ChatRow> = rows
        .iter()
        .filter(|r| migrate::shard_of_room(r.room_id, shards) == 0)
        .collect();
    assert!(!first.is_empty() && first.len() < rows.len());
    let node1 = clickhouse::Client::default()
        .with_url(&cluster.urls[0])
        .with_database(&db);
    writer::insert_into(
        &node1,
        "chat_messages_local",
        first.clone(),
        &token,
        timeout,
    )
    .await
    .unwrap();
    // The retry, and a second one, as the writer sends them.
    let client = roomgate::sink::client(&cfg.clickhouse);
    for _ in 0..2 {
        writer::insert(&client, &rows, &token, timeout)
            .await
            .unwrap();
    }
    let q = |sql: &'static str| scalar_at(&cluster.urls[0], &db, sql);
    assert_eq!(q("SELECT count() FROM {db}.chat_messages").await, 1_000);
    assert_eq!(
        q("SELECT count() FROM {db}.chat_messages_local").await,
        first.len() as u64
    );
    assert_eq!(
        q("SELECT sum(chat_messages) FROM {db}.room_minute").await,
        1_000
    );
    // The deduplication is the token's: another token stores them again.
    let other = writer::token("retry", Table::Chat, 1, 1_001);
    writer::insert(&client, &rows, &other, timeout)
        .await
        .unwrap();
    assert_eq!(q("SELECT count() FROM {db}.chat_messages").await, 2_000);
    for url in &cluster.urls {
        harness::http_query(url, &format!("DROP DATABASE IF EXISTS {db} SYNC")).await;
    }
}

/// The production variant (`replicated`, `on_cluster`) cannot run on the
/// local cluster (no Keeper in chdb; `ON CLUSTER` is refused there), so
/// every statement of it is parsed by the server instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_ddl_parses() {
    let _serial = SERIAL.lock().await;
    let cluster = cluster_up();
    let mut checked = 0;
    for (replicated, on_cluster) in [(true, true), (true, false), (false, true)] {
        let layout = Layout::Cluster(ClusterDdl {
            name: cluster.name.clone(),
            replicated,
            on_cluster,
        });
        let mut stmts = migrate::setup_statements(&layout, "roomgate").to_vec();
        for m in migrate::plan(&layout, "roomgate").unwrap() {
            stmts.extend(m.statements);
        }
        for s in stmts {
            let ast = harness::http_query(&cluster.urls[0], &format!("EXPLAIN AST {s}")).await;
            if on_cluster {
                assert!(s.contains(" ON CLUSTER "), "{s}");
            }
            assert!(!ast.is_empty(), "{s}");
            checked += 1;
        }
    }
    assert!(checked > 60, "{checked}");
}

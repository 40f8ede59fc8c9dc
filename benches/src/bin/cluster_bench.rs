//! `roomgate-cluster-bench`: on a sharded ClickHouse cluster, rows per
//! second into `chat_messages` through the `Distributed` table against
//! straight into each shard's local table, in one process and one run.
//!
//! It answers the question of `clickhouse.cluster`'s insert path: should a
//! writer send each batch to one node's `Distributed` table
//! (`distributed_foreground_insert = 1`, so the insert returns once every
//! shard has stored its part), or split the batch by shard itself and send
//! each part to the owning shard's `chat_messages_local`?
//!
//! Both sides insert the same N generated `chat_messages` rows
//! ([`roomgate::sink::ChatRow`]: 1,000 rooms, 20–60 character texts,
//! deterministic) in batches of `--batch-rows`, one batch after another as
//! a table writer does, with the engine's insert function and settings
//! ([`roomgate::sink::writer::insert_into`]: RowBinary, LZ4, a
//! deduplication token per batch) and the engine's client
//! ([`roomgate::sink::client`]).
//!
//! - **distributed**: each batch to the first node's `chat_messages`
//!   (the engine's path with `clickhouse.cluster`).
//! - **local**: each batch split by [`roomgate::sink::migrate::shard_of_room`]
//!   (`cityHash64(room_id) % shards`, what the `Distributed` table does),
//!   the parts sent at the same time to their shards' `chat_messages_local`;
//!   the batch is done when every part is. The split is timed.
//!
//! The schema is the engine's cluster layout, migrated node by node. Every
//! rep runs both sides, alternating which goes first; the local tables
//! (and `room_minute_local`, fed by the views) are truncated on every node
//! before each run, and each run is checked: `count()` through the
//! `Distributed` table, and no row on a shard other than its room's.
//! Per-rep rows/s, the medians and the ratio local ÷ distributed are
//! printed; `--json` writes them.
//!
//! ```text
//! make cluster-up
//! cargo run --release -p roomgate-benches --bin roomgate-cluster-bench -- \
//!     --urls http://127.0.0.1:18130,http://127.0.0.1:18131 --rows 1000000 --reps 5
//! make cluster-down
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use clickhouse::Client;
use roomgate::config::ClickHouseConfig;
use roomgate::sink::migrate::{self, ClusterDdl, Layout, LOCAL_SUFFIX};
use roomgate::sink::{self, writer, ChatRow};
use roomgate::table::Table;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Per-insert timeout.
const INSERT_TIMEOUT: Duration = Duration::from_secs(60);

/// Rows per second through the `Distributed` table against straight into
/// the shards' local tables.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// HTTP URL of every node, in shard order (node i is shard i), comma
    /// separated.
    #[arg(long, value_delimiter = ',', required = true)]
    urls: Vec<String>,
    /// Cluster name in the nodes' `<remote_servers>`.
    #[arg(long, default_value = "roomgate")]
    cluster: String,
    /// Rows per run.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Rows per insert (the engine's default `batch.max_rows`).
    #[arg(long, default_value_t = 50_000)]
    batch_rows: usize,
    /// Repetitions (each runs both sides).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Database (created and migrated with the cluster layout).
    #[arg(long, default_value = "roomgate_cluster_perf")]
    database: String,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rows == 0 || args.reps == 0 || args.batch_rows == 0 {
        bail!("--rows, --reps and --batch-rows must be at least 1");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run(args))
}

/// The cluster as the bench sees it.
struct Nodes {
    /// The engine's client (first node, foreground Distributed inserts).
    entry: Client,
    /// One client per shard.
    shards: Vec<Client>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Distributed,
    Local,
}

async fn run(args: Args) -> Result<()> {
    let cfg = ClickHouseConfig {
        url: args.urls[0].clone(),
        database: args.database.clone(),
        cluster: args.cluster.clone(),
        cluster_urls: args.urls.clone(),
        ..ClickHouseConfig::default()
    };
    let layout = Layout::Cluster(ClusterDdl {
        name: args.cluster.clone(),
        replicated: false,
        on_cluster: false,
    });
    let mut shards = Vec::new();
    for (i, (url, client)) in sink::ddl_targets(&cfg).into_iter().enumerate() {
        check_shard(&client, &args.cluster, i + 1, args.urls.len())
            .await
            .with_context(|| format!("node {url}"))?;
        migrate::migrate_layout(&client, &args.database, &layout)
            .await
            .with_context(|| format!("migrate {} at {url}", args.database))?;
        shards.push(client);
    }
    let nodes = Nodes {
        entry: sink::client(&cfg),
        shards,
    };
    let rows: Arc<[ChatRow]> = generate(args.rows).into();
    let nonce = roomgate::now_ms();

    // Warm-up: connections, schema caches; not counted.
    let warm = args.rows.min(args.batch_rows);
    for side in [Side::Distributed, Side::Local] {
        truncate(&nodes).await?;
        let tag = format!("{nonce}-warm");
        insert_all(&nodes, &rows, warm, args.batch_rows, side, &tag).await?;
    }

    let mut dist = Vec::new();
    let mut local = Vec::new();
    for rep in 1..=args.reps {
        let order = if rep % 2 == 1 {
            [Side::Distributed, Side::Local]
        } else {
            [Side::Local, Side::Distributed]
        };
        let mut line = format!("rep {rep}:");
        for side in order {
            truncate(&nodes).await?;
            let t = Instant::now();
            insert_all(
                &nodes,
                &rows,
                rows.len(),
                args.batch_rows,
                side,
                &format!("{nonce}-{rep}"),
            )
            .await
            .with_context(|| format!("rep {rep}: {side:?}"))?;
            let secs = t.elapsed().as_secs_f64();
            check(&nodes, rows.len()).await?;
            let rate = rows.len() as f64 / secs;
            line += &format!(" {side:?} {rate:.0} rows/s ({secs:.2} s)");
            match side {
                Side::Distributed => dist.push(rate),
                Side::Local => local.push(rate),
            }
        }
        eprintln!("{line}");
    }
    truncate(&nodes).await?;
    report(&args, &dist, &local)
}

/// Node `client` is shard `shard` of a cluster `name` of `shards` shards,
/// each of weight 1 (what `shard_of_room` assumes).
async fn check_shard(client: &Client, name: &str, shard: usize, shards: usize) -> Result<()> {
    let (n, local, weights): (u64, u32, u64) = client
        .clone()
        .with_database("default")
        .query(
            "SELECT count(), toUInt32(maxIf(shard_num, is_local)), sum(shard_weight) \
             FROM system.clusters WHERE cluster = ?",
        )
        .bind(name)
        .fetch_one()
        .await
        .context("read system.clusters")?;
    if (n, local as usize, weights) != (shards as u64, shard, shards as u64) {
        bail!(
            "cluster {name}: {n} replicas, this node is shard {local}, total weight {weights}; \
             expected {shards} shards of weight 1 with this node as shard {shard}"
        );
    }
    Ok(())
}

/// Insert the first `count` of `rows` in batches of `batch`, one batch after
/// another.
async fn insert_all(
    nodes: &Nodes,
    rows: &Arc<[ChatRow]>,
    count: usize,
    batch: usize,
    side: Side,
    tag: &str,
) -> Result<()> {
    let table = Table::Chat.name();
    let n = nodes.shards.len() as u64;
    for (i, start) in (0..count).step_by(batch).enumerate() {
        let end = (start + batch).min(count);
        let token = format!("{tag}-{side:?}-{i}");
        match side {
            Side::Distributed => {
                writer::insert_into(
                    &nodes.entry,
                    table,
                    &rows[start..end],
                    &token,
                    INSERT_TIMEOUT,
                )
                .await
                .context("insert through the Distributed table")?;
            }
            Side::Local => {
                let mut parts = vec![Vec::new(); nodes.shards.len()];
                for (j, row) in rows[start..end].iter().enumerate() {
                    parts[migrate::shard_of_room(row.room_id, n) as usize].push(start + j);
                }
                let mut tasks = tokio::task::JoinSet::new();
                for (shard, part) in parts.into_iter().enumerate() {
                    if part.is_empty() {
                        continue;
                    }
                    let client = nodes.shards[shard].clone();
                    let rows = rows.clone();
                    let token = token.clone();
                    tasks.spawn(async move {
                        let local = format!("{table}{LOCAL_SUFFIX}");
                        let mut refs: Vec<&ChatRow> = Vec::with_capacity(part.len());
                        for k in part {
                            refs.push(&rows[k]);
                        }
                        writer::insert_into(&client, &local, refs, &token, INSERT_TIMEOUT).await
                    });
                }
                while let Some(r) = tasks.join_next().await {
                    r.context("insert task")?
                        .context("insert into a local table")?;
                }
            }
        }
    }
    Ok(())
}

/// Empty the local tables the inserts fill, on every node.
async fn truncate(nodes: &Nodes) -> Result<()> {
    for client in &nodes.shards {
        for table in [Table::Chat.name(), "room_minute"] {
            client
                .query(&format!("TRUNCATE TABLE IF EXISTS {table}{LOCAL_SUFFIX}"))
                .execute()
                .await
                .with_context(|| format!("truncate {table}{LOCAL_SUFFIX}"))?;
        }
    }
    Ok(())
}

/// Every row arrived once, each on its room's shard.
async fn check(nodes: &Nodes, n: usize) -> Result<()> {
    let count: u64 = nodes
        .entry
        .query("SELECT count() FROM chat_messages")
        .fetch_one()
        .await
        .context("count rows")?;
    if count != n as u64 {
        bail!("chat_messages holds {count} rows after a run of {n}");
    }
    let shards = nodes.shards.len();
    for (i, client) in nodes.shards.iter().enumerate() {
        let misplaced: u64 = client
            .query("SELECT count() FROM chat_messages_local WHERE cityHash64(room_id) % ? != ?")
            .bind(shards as u64)
            .bind(i as u64)
            .fetch_one()
            .await
            .context("count misplaced rows")?;
        if misplaced > 0 {
            bail!("shard {}: {misplaced} rows of other shards' rooms", i + 1);
        }
    }
    Ok(())
}

fn report(args: &Args, dist: &[f64], local: &[f64]) -> Result<()> {
    let (md, ml) = (median(dist), median(local));
    println!(
        "\ncluster inserts, {} chat_messages rows, {} per insert, {} shards, {} reps\n",
        args.rows,
        args.batch_rows,
        args.urls.len(),
        args.reps
    );
    println!("| rep | through Distributed rows/s | straight to local tables rows/s | local ÷ Distributed |");
    println!("|---:|---:|---:|---:|");
    for (i, (d, l)) in dist.iter().zip(local).enumerate() {
        println!("| {} | {d:.0} | {l:.0} | {:.2} |", i + 1, l / d);
    }
    println!("| median | {md:.0} | {ml:.0} | **{:.2}** |", ml / md);
    if let Some(path) = &args.json {
        let v = serde_json::json!({
            "rows": args.rows,
            "batch_rows": args.batch_rows,
            "shards": args.urls.len(),
            "reps": args.reps,
            "distributed_rows_per_s": dist,
            "local_rows_per_s": local,
            "median_distributed": md,
            "median_local": ml,
            "ratio_local_over_distributed": ml / md,
        });
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// `n` deterministic chat rows over 1,000 rooms (SplitMix64).
fn generate(n: usize) -> Vec<ChatRow> {
    const WORDS: &[&str] = &[
        "主播好",
        "这个多少钱",
        "已下单",
        "求链接",
        "666",
        "哈哈哈哈",
        "包邮吗",
        "上车了",
        "nice",
        "how much for two?",
        "👍👍",
        "3号链接",
        "XL码有吗",
        "谢谢",
        "家人们冲",
    ];
    let mut state: u64 = 0x636c_7573_7465_7221;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    const T0_MS: i64 = 1_796_126_400_000; // 2026-12-01 12:00 UTC
    let mut ts = T0_MS;
    (0..n)
        .map(|i| {
            let room_id = 20_000 + next() % 1_000;
            let viewer_id = 1 + next() % 200_000;
            ts += (next() % 6) as i64;
            let target = 20 + (next() % 41) as usize;
            let mut text = String::new();
            while text.chars().count() < target {
                text.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
                text.push(' ');
            }
            ChatRow {
                room_id,
                ts,
                viewer_id,
                session_id: viewer_id.wrapping_mul(0x9e37_79b9) ^ (room_id << 40),
                client_msg_id: i as u64 + 1,
                text,
                verdict: "accepted",
                dry_run_reasons: Vec::new(),
            }
        })
        .collect()
}

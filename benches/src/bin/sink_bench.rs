//! `roomgate-sink-bench`: ClickHouse sink throughput of the engine's
//! writers against the `clickhouse` crate's own `Inserter`, in one process
//! and one run.
//!
//! It answers "how many rows per second do the engine's writers get into
//! ClickHouse, compared with bulk-inserting the same rows the plain way?".
//! Both sides write the same N generated `chat_messages` rows
//! ([`roomgate::sink::ChatRow`]: 10 rooms, many viewers, 20–60 character
//! texts, deterministic) into the same table of the same server through the
//! same client (`roomgate::sink::client`: HTTP, RowBinary, LZ4, schema
//! validation), with the same batch size.
//!
//! - **engine**: the engine's real path. A fresh write-ahead log in a
//!   temporary directory ([`roomgate::wal::start`], the engine's storage
//!   defaults) is filled with the rows as the shard workers do (rounds of
//!   1,024 rows handed to [`roomgate::wal::LogHandle::submit`], then a
//!   barrier until they are durable); that fill is timed and reported on
//!   its own, but is not part of the sink figure. Then the five writers are
//!   started with [`roomgate::sink::spawn`] (`min_insert_interval_ms` 0, the
//!   engine's read interval and read size, batch policy `max_rows` =
//!   `--batch-rows`, `max_bytes` 64 MiB so rows decide, `max_age_ms`
//!   1,000) and timed from their start until
//!   [`roomgate::metrics::Metrics`] counts every row committed. Once every
//!   row has been read from the log the writers are told to drain (as at
//!   shutdown), so a last partial batch is sent at once instead of after
//!   `max_age_ms`.
//!   Each rep also prints how much of the engine's time was spent inside
//!   its inserts (`insert_us_sum`): the rest is the writer reading,
//!   decoding and batching the log between inserts.
//! - **peer**: one task on the same runtime writing the rows (already in
//!   memory) with [`clickhouse::inserter::Inserter`]
//!   (`with_max_rows(--batch-rows)`, `with_max_bytes` 64 MiB, `commit()`
//!   after every row, `end()` last), the crate's default insert settings.
//!
//! One batch through each side warms up first (not counted). Every rep
//! runs engine then peer (ABAB…), the table (and the
//! `room_minute` rollup its view feeds) truncated before each run, and each
//! run is checked with `SELECT count()`. Per-rep rows/s, the medians and
//! the ratio engine ÷ peer are printed; `--json` writes them as
//! `{"rows","reps","engine_rows_per_s","peer_rows_per_s","median_engine",
//! "median_peer","ratio","log_fill_rows_per_s", …}`.
//!
//! As a diagnostic each rep also runs the engine's writers with
//! `null_sink` (batches read, decoded, formed and marked in the log, then
//! dropped instead of inserted): the rate of the engine's side of the
//! pipeline alone.
//!
//! ```text
//! CLICKHOUSE_HTTP_PORT=18127 CLICKHOUSE_DATA=build/clickhouse/dev-18127 python3 scripts/clickhouse.py up
//! cargo run --release -p roomgate-benches --bin roomgate-sink-bench -- \
//!     --clickhouse-url http://127.0.0.1:18127 --rows 1000000 --reps 3 --json build/sink-bench.json
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use clickhouse::Client;
use roomgate::batch::BatchPolicy;
use roomgate::config::{BatchConfig, ClickHouseConfig, StorageConfig};
use roomgate::metrics::Metrics;
use roomgate::sink::{self, ChatRow, WriterSettings};
use roomgate::table::Table;
use roomgate::wal::{self, LogSettings, Row, Submit};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Rows per shard round handed to the log (the engine's default
/// `shards.drain_batch`).
const ROUND_ROWS: usize = 1_024;
/// Batch byte limit on both sides: high enough that `--batch-rows` decides.
const MAX_BATCH_BYTES: usize = 64 << 20;
/// Longest one run may take before the bench gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// The engine's ClickHouse writers against the `clickhouse` crate's
/// `Inserter`: rows per second into one table, same rows, same server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// ClickHouse HTTP URL, e.g. http://127.0.0.1:18127.
    #[arg(long)]
    clickhouse_url: String,
    /// Rows per run.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Repetitions (each runs the engine, then the peer).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Database (created and migrated; its `chat_messages` is truncated).
    #[arg(long, default_value = "roomgate_perf")]
    database: String,
    /// Rows per insert on both sides (the engine's `batch.max_rows`).
    #[arg(long, default_value_t = 100_000)]
    batch_rows: usize,
    /// Skip the engine's null-sink diagnostic run.
    #[arg(long)]
    no_null_sink: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
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
    // The engine's runtime: multi-threaded, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run(args))
}

/// One rep's figures.
struct Rep {
    engine: Run,
    peer: f64,
    null_sink: Option<f64>,
}

/// An engine run: log fill and sink rates, rows/s.
struct Run {
    fill: f64,
    sink: f64,
    /// Seconds from the writers' start to the last commit.
    secs: f64,
    /// Seconds of those spent inside inserts (request start to response).
    insert_secs: f64,
    batches: u64,
    retries: u64,
}

async fn run(args: Args) -> Result<()> {
    let cfg = ClickHouseConfig {
        url: args.clickhouse_url.clone(),
        database: args.database.clone(),
        ..ClickHouseConfig::default()
    };
    let client = sink::client(&cfg);
    let applied = sink::migrate::migrate(&client, &args.database)
        .await
        .with_context(|| format!("migrate {} at {}", args.database, args.clickhouse_url))?;
    if !applied.is_empty() {
        eprintln!("migrations applied: {applied:?}");
    }
    let t = Instant::now();
    let rows: Arc<[ChatRow]> = generate(args.rows).into();
    let text_bytes: usize = rows.iter().map(|r| r.text.len()).sum();
    eprintln!(
        "generated {} chat rows in {:.2} s (texts {:.1} bytes on average)",
        rows.len(),
        t.elapsed().as_secs_f64(),
        text_bytes as f64 / rows.len() as f64
    );
    let batch = BatchConfig {
        default: BatchPolicy {
            max_rows: args.batch_rows,
            max_bytes: MAX_BATCH_BYTES,
            max_age_ms: 1_000,
        },
        ..BatchConfig::default()
    };
    let scratch = std::env::temp_dir().join(format!("roomgate-sink-bench-{}", std::process::id()));

    // Warm-up: the connection pool, the schema cache and the server's
    // caches, with one batch through each side; not counted.
    let warm = rows.len().min(args.batch_rows);
    truncate(&client).await?;
    peer(&client, &rows, warm, args.batch_rows).await?;
    truncate(&client).await?;
    engine(
        &client,
        &rows[..warm],
        &batch,
        &scratch.join("warm-up"),
        false,
    )
    .await?;

    let mut reps = Vec::with_capacity(args.reps);
    for rep in 1..=args.reps {
        truncate(&client).await?;
        let engine_run = engine(
            &client,
            &rows,
            &batch,
            &scratch.join(format!("rep{rep}-engine")),
            false,
        )
        .await
        .with_context(|| format!("rep {rep}: engine"))?;
        check_count(&client, rows.len()).await?;
        truncate(&client).await?;
        let t = Instant::now();
        peer(&client, &rows, rows.len(), args.batch_rows)
            .await
            .with_context(|| format!("rep {rep}: peer"))?;
        let peer_secs = t.elapsed().as_secs_f64();
        let peer_rate = rows.len() as f64 / peer_secs;
        check_count(&client, rows.len()).await?;
        let null_sink = if args.no_null_sink {
            None
        } else {
            // Not inserting, but the server's merges of the peer's parts
            // would still compete for the cores.
            truncate(&client).await?;
            let r = engine(
                &client,
                &rows,
                &batch,
                &scratch.join(format!("rep{rep}-null")),
                true,
            )
            .await
            .with_context(|| format!("rep {rep}: engine, null sink"))?;
            Some(r.sink)
        };
        eprintln!(
            "rep {rep}: engine {:.0} rows/s ({} inserts, {} retries, {:.2} s of {:.2} s inside inserts), peer {:.0} rows/s ({:.2} s), log fill {:.0} rows/s{}",
            engine_run.sink,
            engine_run.batches,
            engine_run.retries,
            engine_run.insert_secs,
            engine_run.secs,
            peer_rate,
            peer_secs,
            engine_run.fill,
            null_sink.map_or(String::new(), |n| format!(", engine null sink {n:.0} rows/s")),
        );
        reps.push(Rep {
            engine: engine_run,
            peer: peer_rate,
            null_sink,
        });
    }
    truncate(&client).await?;
    let _ = std::fs::remove_dir_all(&scratch);
    report(&args, &reps)
}

/// Print the table and write the JSON.
fn report(args: &Args, reps: &[Rep]) -> Result<()> {
    let engine: Vec<f64> = reps.iter().map(|r| r.engine.sink).collect();
    let peer: Vec<f64> = reps.iter().map(|r| r.peer).collect();
    let fill: Vec<f64> = reps.iter().map(|r| r.engine.fill).collect();
    let nulls: Vec<f64> = reps.iter().filter_map(|r| r.null_sink).collect();
    let (me, mp, mf) = (median(&engine), median(&peer), median(&fill));
    let ratio = me / mp;
    println!(
        "\nsink throughput, {} chat_messages rows, {} per insert, {} reps (engine then peer each rep)\n",
        args.rows, args.batch_rows, args.reps
    );
    println!(
        "| rep | engine writers rows/s | Inserter rows/s | engine ÷ Inserter | log fill rows/s | engine null sink rows/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (i, r) in reps.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.0} | {} |",
            i + 1,
            r.engine.sink,
            r.peer,
            r.engine.sink / r.peer,
            r.engine.fill,
            r.null_sink.map_or("-".into(), |n| format!("{n:.0}")),
        );
    }
    println!(
        "| median | {me:.0} | {mp:.0} | **{ratio:.2}** | {mf:.0} | {} |",
        if nulls.is_empty() {
            "-".into()
        } else {
            format!("{:.0}", median(&nulls))
        }
    );
    println!(
        "\nratio engine ÷ Inserter (medians) = {ratio:.3} (target ≥ 0.9: {})",
        if ratio >= 0.9 { "met" } else { "NOT met" }
    );
    if let Some(path) = &args.json {
        let mut v = serde_json::json!({
            "rows": args.rows,
            "reps": args.reps,
            "engine_rows_per_s": engine,
            "peer_rows_per_s": peer,
            "median_engine": me,
            "median_peer": mp,
            "ratio": ratio,
            "log_fill_rows_per_s": mf,
            "log_fill_rows_per_s_per_rep": fill,
            "batch_rows": args.batch_rows,
            "engine_inserts_per_rep": reps.iter().map(|r| r.engine.batches).collect::<Vec<_>>(),
            "engine_retries_per_rep": reps.iter().map(|r| r.engine.retries).collect::<Vec<_>>(),
            "engine_secs_per_rep": reps.iter().map(|r| r.engine.secs).collect::<Vec<_>>(),
            "engine_insert_secs_per_rep": reps.iter().map(|r| r.engine.insert_secs).collect::<Vec<_>>(),
        });
        if !nulls.is_empty() {
            v["engine_null_sink_rows_per_s"] = serde_json::json!(nulls);
            v["median_engine_null_sink"] = serde_json::json!(median(&nulls));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The engine's path: fill a fresh log in `dir` with `rows` (timed apart),
/// then run the five writers until every row is committed.
async fn engine(
    client: &Client,
    rows: &[ChatRow],
    batch: &BatchConfig,
    dir: &Path,
    null_sink: bool,
) -> Result<Run> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let storage = StorageConfig::default();
    let metrics = Arc::new(Metrics::new(1));
    let (log, recovery, _opened, log_thread) = wal::start(
        LogSettings {
            dir: wal::wal_dir(dir),
            segment_bytes: storage.segment_bytes,
            max_bytes: storage.max_bytes,
            max_group_bytes: storage.max_group_bytes,
            group_commit: std::time::Duration::from_micros(storage.group_commit_us),
            preallocate: storage.preallocate,
        },
        metrics.clone(),
    )
    .with_context(|| format!("open a log in {}", dir.display()))?;

    // The shards' part: rounds of decided rows handed to the log. The rows
    // are built before the clock starts (a shard builds them anyway).
    let rounds: Vec<Submit> = rows
        .chunks(ROUND_ROWS)
        .map(|c| Submit {
            rows: c.iter().cloned().map(Row::Chat).collect(),
            ..Submit::default()
        })
        .collect();
    let t = Instant::now();
    let submitter = log.clone();
    tokio::task::spawn_blocking(move || {
        for round in rounds {
            submitter.submit(round);
        }
    })
    .await
    .context("log fill task")?;
    log.barrier().await.context("log barrier")?;
    let fill = rows.len() as f64 / t.elapsed().as_secs_f64();

    // The sink: the writers as the engine starts them.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(None);
    let (_schema_tx, schema_rx) = tokio::sync::watch::channel(true);
    let n = rows.len() as u64;
    let stats = &metrics.tables[Table::Chat.index()];
    let t = Instant::now();
    let writers = sink::spawn(sink::Writers {
        client,
        batch,
        // The engine's settings, without the pacing (a bulk load).
        settings: WriterSettings {
            min_interval: Duration::ZERO,
            null_sink,
            ..WriterSettings::from_config(&ClickHouseConfig::default(), dir)
        },
        metrics: &metrics,
        log: &log,
        recovery: &recovery,
        stop: &stop_rx,
        schema: &schema_rx,
    });
    let mut draining = false;
    loop {
        let committed = stats.rows.load(Relaxed) + stats.dead_rows.load(Relaxed);
        if committed >= n {
            break;
        }
        // Everything read (committed + held by the writer): drain, as at
        // shutdown, so a last partial batch need not wait for its age.
        let read = committed as i64 + stats.pending_rows.load(Relaxed);
        if !draining && read >= n as i64 {
            draining = true;
            let _ = stop_tx.send(Some(Instant::now() + RUN_TIMEOUT));
        }
        if t.elapsed() > RUN_TIMEOUT {
            bail!(
                "writers committed {committed} of {n} rows in {} s",
                RUN_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let dead = stats.dead_rows.load(Relaxed);
    if dead > 0 {
        bail!("{dead} rows were set aside as bad data (see the log above)");
    }

    // Stop the writers (the other four are still paging through the log
    // for rows of their tables) and the log thread.
    let _ = stop_tx.send(Some(Instant::now()));
    for w in writers {
        w.await.context("sink writer")?;
    }
    drop(log);
    drop(recovery);
    tokio::task::spawn_blocking(move || log_thread.join())
        .await
        .context("join the log thread")?
        .map_err(|_| anyhow::anyhow!("the log thread panicked"))?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(Run {
        fill,
        sink: n as f64 / secs,
        secs,
        insert_secs: stats.insert_us_sum.load(Relaxed) as f64 / 1e6,
        batches: stats.batches.load(Relaxed),
        retries: stats.retries.load(Relaxed),
    })
}

/// The peer: the crate's `Inserter` writing the first `n` of `rows` from
/// one task on the runtime (as a writer runs), same batch size.
async fn peer(client: &Client, rows: &Arc<[ChatRow]>, n: usize, batch_rows: usize) -> Result<()> {
    let client = client.clone();
    let rows = rows.clone();
    let task = tokio::spawn(async move {
        let timeout = Some(Duration::from_secs(30));
        let mut inserter = client
            .inserter::<ChatRow>(Table::Chat.name())
            .with_max_rows(batch_rows as u64)
            .with_max_bytes(MAX_BATCH_BYTES as u64)
            .with_timeouts(timeout, timeout);
        for row in &rows[..n] {
            inserter.write(row).await?;
            inserter.commit().await?;
        }
        inserter.end().await?;
        anyhow::Ok(())
    });
    task.await.context("peer task")?
}

/// Empty `chat_messages` and the rollup its view feeds.
async fn truncate(client: &Client) -> Result<()> {
    for table in [Table::Chat.name(), "room_minute"] {
        client
            .query(&format!("TRUNCATE TABLE IF EXISTS {table}"))
            .execute()
            .await
            .with_context(|| format!("truncate {table}"))?;
    }
    Ok(())
}

/// Every row arrived, once.
async fn check_count(client: &Client, n: usize) -> Result<()> {
    let count: u64 = client
        .query(&format!("SELECT count() FROM {}", Table::Chat.name()))
        .fetch_one()
        .await
        .context("count rows")?;
    if count != n as u64 {
        bail!("chat_messages holds {count} rows after a run of {n}");
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

/// SplitMix64: a small deterministic generator (the rows must be the same
/// in every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Live-room chat: fragments joined into 20–60 character messages.
const FRAGMENTS: &[&str] = &[
    "主播好",
    "这个多少钱",
    "已下单",
    "求链接",
    "666",
    "哈哈哈哈",
    "什么时候发货",
    "有优惠券吗",
    "上车了",
    "支持主播",
    "颜色好看",
    "尺码偏大吗",
    "第一次来",
    "关注了",
    "能便宜点吗",
    "质量怎么样",
    "包邮吗",
    "再讲一遍",
    "想要同款",
    "库存还有吗",
    "hello from Shanghai",
    "nice",
    "is this still available?",
    "how much for two?",
    "👍👍",
    "❤️",
    "👏",
    "lol",
    "3号链接",
    "XL码有吗",
    "刚到",
    "回放在哪看",
    "谢谢",
    "太划算了",
    "家人们冲",
];

/// `n` deterministic chat rows: 10 rooms (one much busier), 200,000
/// viewers, one message every ~3 ms over the afternoon of 2026-12-01.
fn generate(n: usize) -> Vec<ChatRow> {
    const ROOMS: [u64; 10] = [
        10_001, 10_002, 10_003, 10_004, 10_005, 10_006, 10_007, 10_008, 10_009, 10_010,
    ];
    const T0_MS: i64 = 1_796_126_400_000; // 2026-12-01 12:00 UTC
    let mut rng = Rng(0x726f_6f6d_6761_7465);
    let mut ts = T0_MS;
    (0..n)
        .map(|i| {
            // Room 0 carries ~40 % of the chat; the rest share the remainder.
            let room = if rng.below(10) < 4 {
                ROOMS[0]
            } else {
                ROOMS[1 + rng.below(9) as usize]
            };
            let viewer_id = 1 + rng.below(200_000);
            ts += rng.below(6) as i64;
            let target = 20 + rng.below(41) as usize;
            let mut text = String::with_capacity(target * 3);
            let mut chars = 0;
            while chars < target {
                let f = FRAGMENTS[rng.below(FRAGMENTS.len() as u64) as usize];
                if chars > 0 {
                    text.push(if rng.below(3) == 0 { '，' } else { ' ' });
                    chars += 1;
                }
                text.push_str(f);
                chars += f.chars().count();
            }
            if chars > target {
                let cut = text
                    .char_indices()
                    .nth(target)
                    .map_or(text.len(), |(at, _)| at);
                text.truncate(cut);
            }
            let (verdict, dry_run_reasons) = match rng.below(100) {
                0..=1 => ("suspect", vec!["link"]),
                2 => ("accepted", vec!["blocked_term"]),
                _ => ("accepted", Vec::new()),
            };
            ChatRow {
                room_id: room,
                ts,
                viewer_id,
                session_id: viewer_id.wrapping_mul(0x9e37_79b9) ^ (room << 40),
                client_msg_id: i as u64 + 1,
                text,
                verdict,
                dry_run_reasons,
            }
        })
        .collect()
}

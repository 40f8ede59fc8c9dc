//! Wiring: open the log (replaying it), start the writers, shards, gate and
//! admin port; shut them down in order: stop reading frames → let the shards
//! decide what they hold → make it durable → deliver every ack → close
//! connections with `shutting_down` → flush to ClickHouse until a deadline
//! (what is left stays in the log for the next start).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::config::{redact_url, Config};
use crate::gate::{self, GateCtx};
use crate::metrics::Metrics;
use crate::shard::{ShardSettings, Shards};
use crate::sink::{self, WriterSettings};
use crate::wal::{self, LogHandle, SeenId};

/// Apply migrations, retrying while ClickHouse is unreachable (up to ~60 s).
pub async fn migrate(cfg: &Config) -> Result<Vec<u32>> {
    migrate_within(cfg, Duration::from_secs(60)).await
}

/// Apply migrations, retrying while ClickHouse is unreachable for up to
/// `budget`. On a cluster without `ON CLUSTER` they are applied to each
/// node of `clickhouse.cluster_urls` in turn; the versions returned are
/// those any node applied.
pub async fn migrate_within(cfg: &Config, budget: Duration) -> Result<Vec<u32>> {
    let targets = sink::ddl_targets(&cfg.clickhouse);
    let layout = sink::layout(&cfg.clickhouse);
    if targets.is_empty() {
        // `roomgate migrate` runs without the start-up validation.
        anyhow::bail!("clickhouse.cluster_urls must list the HTTP URL of every node of clickhouse.cluster (or set clickhouse.on_cluster)");
    }
    let mut delay = Duration::from_millis(250);
    let mut waited = Duration::ZERO;
    loop {
        match migrate_nodes(cfg, &targets, &layout).await {
            Ok(v) => return Ok(v),
            Err((url, e)) if waited < budget => {
                tracing::warn!(error = %e, url = %redact_url(url), "migration failed; retrying");
                tokio::time::sleep(delay).await;
                waited += delay;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err((url, e)) => {
                return Err(e).with_context(|| format!("migrate ClickHouse at {}", redact_url(url)))
            }
        }
    }
}

/// One pass of the migrations over `targets`; the failing node's URL with
/// the error.
async fn migrate_nodes<'a>(
    cfg: &Config,
    targets: &'a [(String, clickhouse::Client)],
    layout: &sink::migrate::Layout,
) -> std::result::Result<Vec<u32>, (&'a str, clickhouse::error::Error)> {
    let db = &cfg.clickhouse.database;
    let mut applied = Vec::new();
    for (url, client) in targets {
        let v = sink::migrate::migrate_layout(client, db, layout)
            .await
            .map_err(|e| (url.as_str(), e))?;
        // Retention is housekeeping: a failure (no ALTER grant, a
        // table managed elsewhere) is reported, never blocks the
        // writers or readiness.
        if let Err(e) =
            sink::migrate::apply_retention_layout(client, db, cfg.clickhouse.text_ttl_days, layout)
                .await
        {
            tracing::warn!(error = %e, url = %redact_url(url), "cannot set the text retention (clickhouse.text_ttl_days); continuing");
        }
        if targets.len() > 1 && !v.is_empty() {
            tracing::info!(url = %redact_url(url), applied = ?v, "node migrated");
        }
        for version in v {
            if !applied.contains(&version) {
                applied.push(version);
            }
        }
    }
    Ok(applied)
}

/// Run the engine until `stop` resolves, then shut down gracefully.
pub async fn run(cfg: Config, stop: impl std::future::Future<Output = ()>) -> Result<()> {
    let engine = Engine::start(cfg).await?;
    stop.await;
    engine.shutdown().await
}

/// A running engine.
pub struct Engine {
    metrics: Arc<Metrics>,
    shards: Arc<Shards>,
    writers: Vec<tokio::task::JoinHandle<()>>,
    admin: tokio::task::JoinHandle<()>,
    merchant_api: Option<crate::delivery::MerchantApi>,
    webhooks: Option<Arc<crate::delivery::webhook::Webhooks>>,
    gate: tokio::task::JoinHandle<()>,
    shutdown_tx: watch::Sender<bool>,
    drained_tx: watch::Sender<bool>,
    writers_stop: watch::Sender<Option<std::time::Instant>>,
    ctx: Arc<GateCtx>,
    log: LogHandle,
    log_thread: std::thread::JoinHandle<()>,
    flush: Duration,
    quic_addr: SocketAddr,
    admin_addr: SocketAddr,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("quic_addr", &self.quic_addr)
            .field("admin_addr", &self.admin_addr)
            .finish()
    }
}

impl Engine {
    /// Migrate (if configured), start the sink, shards, admin port and gate.
    pub async fn start(cfg: Config) -> Result<Engine> {
        let metrics = Arc::new(Metrics::new(cfg.shards.count));
        let pii = Arc::new(cfg.pii.keys()?);
        // The writers insert only once the schema is known to be current.
        // ClickHouse being down at start does not keep viewers out: acks
        // wait for the log, and migrations are retried in the background.
        let null_sink = cfg.clickhouse.null_sink;
        if null_sink {
            tracing::warn!("clickhouse.null_sink: rows are counted and dropped after the log (benchmarks only)");
        }
        let (schema_tx, schema_rx) = watch::channel(null_sink || !cfg.clickhouse.migrate_on_start);
        if cfg.clickhouse.migrate_on_start && !null_sink {
            match migrate_within(&cfg, Duration::from_secs(10)).await {
                Ok(applied) => {
                    tracing::info!(?applied, database = %cfg.clickhouse.database, "schema up to date");
                    let _ = schema_tx.send(true);
                }
                Err(e) if !unreachable(&e) => {
                    // ClickHouse answered and refused (SQL, permissions):
                    // retrying will not help; say so at start.
                    return Err(e);
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "ClickHouse unreachable at start: accepting viewers (the log holds their rows); migrations retried in the background");
                    let cfg = cfg.clone();
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            if let Ok(applied) = migrate_within(&cfg, Duration::ZERO).await {
                                tracing::info!(
                                    ?applied,
                                    "schema up to date; writers start inserting"
                                );
                                let _ = schema_tx.send(true);
                                return;
                            }
                        }
                    });
                }
            }
        }
        // The log first: what it holds is replayed before viewers come.
        let (log, recovery, opened, log_thread) = wal::start(
            wal::LogSettings {
                dir: wal::wal_dir(&cfg.storage.dir),
                segment_bytes: cfg.storage.segment_bytes,
                max_bytes: cfg.storage.max_bytes,
                max_group_bytes: cfg.storage.max_group_bytes,
                group_commit: std::time::Duration::from_micros(cfg.storage.group_commit_us),
                preallocate: cfg.storage.preallocate,
            },
            metrics.clone(),
        )
        .with_context(|| format!("open the log in {}", cfg.storage.dir.display()))?;
        let replay_rows: u64 = recovery.tables.iter().map(|t| t.rows_after).sum();
        metrics
            .log
            .replayed_rows
            .store(replay_rows, std::sync::atomic::Ordering::Relaxed);
        metrics
            .log
            .corrupt_regions
            .store(opened.corrupt_regions, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            dir = %cfg.storage.dir.display(),
            log_id = log.id(),
            records = opened.records,
            segments = opened.segments,
            uncommitted_rows = replay_rows,
            torn_bytes = opened.torn_bytes,
            corrupt_regions = opened.corrupt_regions,
            "log opened"
        );
        let client = sink::client(&cfg.clickhouse);
        let mut restore = if null_sink {
            Vec::new()
        } else {
            recent_ids(&client, cfg.guard.idempotency_window_secs).await
        };
        restore.extend(recovery.seen.iter().cloned());
        restore.sort_by_key(|l| l.ts);
        metrics
            .log
            .restored_ids
            .store(restore.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let (writers_stop, stop_rx) = watch::channel(None);
        let writers = sink::spawn(sink::Writers {
            client: &client,
            batch: &cfg.batch,
            settings: WriterSettings {
                skip_stored_leads: !cfg.routing.nodes.is_empty(),
                ..WriterSettings::from_config(&cfg.clickhouse, &cfg.storage.dir)
            },
            metrics: &metrics,
            log: &log,
            recovery: &recovery,
            stop: &stop_rx,
            schema: &schema_rx,
        });
        drop(recovery);
        let shards = Arc::new(
            Shards::start(
                &ShardSettings {
                    count: cfg.shards.count,
                    capacity: cfg.shards.queue_capacity,
                    urgent_capacity: cfg.shards.urgent_capacity,
                    drain_batch: cfg.shards.drain_batch,
                    linger: std::time::Duration::from_micros(cfg.shards.linger_us),
                    guard: cfg.guard.clone(),
                },
                log.clone(),
                pii.clone(),
                metrics.clone(),
                &restore,
            )
            .map_err(|e| anyhow::anyhow!(e))
            .context("start shard workers")?,
        );
        for room in &cfg.rooms {
            for ctl in room_controls(room) {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let shard = shards.shard_of_room(room.id);
                if shards
                    .admin(shard, crate::shard::AdminOp::Control(ctl, tx))
                    .is_err()
                {
                    anyhow::bail!("too many [[rooms]] settings for the admin queue");
                }
                rx.await
                    .context("shard worker gone")?
                    .map_err(|e| anyhow::anyhow!("[[rooms]] id = {}: {e}", room.id))?;
            }
        }
        drop(restore);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (drained_tx, drained_rx) = watch::channel(false);
        let routing = Arc::new(crate::route::Routing::new(
            cfg.routing.node_id.clone(),
            cfg.routing.node_set()?,
        ));
        if let Some(nodes) = routing.nodes() {
            tracing::info!(node = routing.self_id(), nodes = %nodes, "routing rooms over engine nodes");
        }
        // Other nodes' leads for the cross-room lead rules (reads only
        // while the node list has more than one node).
        if !null_sink && cfg.routing.facts_interval_secs > 0 {
            let leads = &cfg.guard.leads;
            let task = crate::facts::FactsTask {
                client: sink::client(&cfg.clickhouse),
                shards: shards.clone(),
                routing: routing.clone(),
                metrics: metrics.clone(),
                interval: Duration::from_secs(cfg.routing.facts_interval_secs),
                velocity_window_ms: (leads.velocity_window_secs as i64).saturating_mul(1000),
                duplicate_window_ms: (leads.duplicate_window_secs as i64).saturating_mul(1000),
            };
            tokio::spawn(task.run(shutdown_rx.clone(), schema_rx.clone()));
        }
        // The room → merchant mapping; `[[rooms]] merchant` keys are
        // written once the schema is current (retried while ClickHouse
        // is down).
        let merchants = (!null_sink).then(|| {
            crate::merchants::MerchantStore::new(
                sink::client(&cfg.clickhouse),
                Duration::from_secs(5),
            )
        });
        if let Some(store) = &merchants {
            tokio::spawn(crate::merchants::upsert_in_background(
                store.clone(),
                cfg.room_merchants()?,
                schema_rx.clone(),
                shutdown_rx.clone(),
            ));
        }
        // Withdrawn and erased leads lose their personal columns.
        let eraser = (!null_sink).then(|| {
            Arc::new(crate::erase::Eraser::new(
                sink::client(&cfg.clickhouse),
                crate::erase::Eraser::targets(&cfg.clickhouse),
                if cfg.routing.node_id.is_empty() {
                    "engine".to_owned()
                } else {
                    cfg.routing.node_id.clone()
                },
                Duration::from_millis(cfg.erasure.timeout_ms.max(1)),
                metrics.clone(),
            ))
        });
        if let Some(e) = &eraser {
            if cfg.erasure.interval_secs > 0 {
                tokio::spawn(e.clone().run(
                    Duration::from_secs(cfg.erasure.interval_secs),
                    schema_rx.clone(),
                    shutdown_rx.clone(),
                ));
            }
        }
        // Lead webhooks: one sender per configured merchant.
        let webhooks = crate::delivery::webhook::start(
            &cfg,
            pii.clone(),
            metrics.clone(),
            routing.clone(),
            schema_rx.clone(),
            shutdown_rx.clone(),
        )?;
        let (admin_addr, admin) = admin::bind(
            cfg.server.admin,
            AdminState {
                metrics: metrics.clone(),
                shards: shards.clone(),
                routing: routing.clone(),
                takeover_window_secs: (!null_sink).then_some(cfg.guard.idempotency_window_secs),
                merchants: merchants.clone(),
                eraser: eraser.clone(),
                webhooks: webhooks.clone(),
                token: cfg.server.admin_token.clone().map(Arc::new),
                health: Arc::new(admin::Health {
                    schema: schema_rx.clone(),
                    log: log.clone(),
                    clickhouse: sink::client(&cfg.clickhouse),
                    shutdown: shutdown_rx.clone(),
                }),
            },
            shutdown_rx.clone(),
        )
        .await?;
        let admin = tokio::spawn(admin);
        let merchant_api = crate::delivery::start(
            &cfg,
            pii,
            eraser.clone(),
            metrics.clone(),
            shutdown_rx.clone(),
        )
        .await?;
        let endpoints = gate::endpoints(&cfg.server, cfg.server.endpoints)?;
        let quic_addr = endpoints
            .first()
            .context("no QUIC endpoint")?
            .local_addr()
            .context("QUIC local address")?;
        let limits = cfg.limits.to_limits();
        let ctx = Arc::new(GateCtx {
            shards: shards.clone(),
            metrics: metrics.clone(),
            tickets: cfg.tickets.keys()?,
            refresh_notice_secs: cfg.tickets.refresh_notice_secs,
            limits,
            room_settings: cfg.welcome_settings(),
            handshake_timeout: Duration::from_millis(cfg.server.handshake_timeout_ms),
            max_pending_acks: cfg.server.max_pending_acks,
            busy_retry_after_ms: cfg.server.busy_retry_after_ms,
            shed_likes_above: cfg.shards.shed_likes_above,
            shed_chat_above: cfg.shards.shed_chat_above,
            admission: std::sync::Mutex::new(gate::admission::Admission::new(
                gate::admission::AdmissionLimits {
                    max_connections: cfg.server.max_connections,
                    max_connections_per_ip: cfg.server.max_connections_per_ip,
                    max_handshakes_per_ip: cfg.server.max_handshakes_per_ip,
                    retry_above_handshakes: cfg.server.retry_above_handshakes,
                },
            )),
            frame_timeout: Duration::from_millis(cfg.server.frame_timeout_ms),
            moderation_bucket_ms: cfg.guard.abuse.moderation_bucket_ms as i64,
            log: log.clone(),
            shutdown: shutdown_rx,
            drained: drained_rx,
            reading: std::sync::atomic::AtomicUsize::new(0),
            // Random high half: unique across restarts and across nodes.
            next_session: AtomicU64::new(u64::from(rand::random::<u32>()) << 32),
            routing,
            like_pace_ms: std::sync::atomic::AtomicU32::new(0),
        });
        tracing::info!(
            listen = %quic_addr,
            admin = %admin_addr,
            shards = cfg.shards.count,
            clickhouse = %redact_url(&cfg.clickhouse.url),
            database = %cfg.clickhouse.database,
            "roomgate running"
        );
        tracing::info!(endpoints = endpoints.len(), addr = %quic_addr, "QUIC endpoints bound");
        let pacer = gate::pace::Pacer::new(
            Duration::from_millis(cfg.server.overload_lateness_ms.into()),
            cfg.server.overload_busy_percent.saturating_mul(10),
            cfg.server.like_pace_ms,
            gate::pace::CALM,
        )
        .cap_taps(cfg.guard.likes.viewer_per_sec);
        let gate = tokio::spawn(gate::serve_all(endpoints, ctx.clone(), pacer));
        Ok(Engine {
            metrics,
            shards,
            writers,
            admin,
            merchant_api,
            webhooks,
            gate,
            shutdown_tx,
            drained_tx,
            writers_stop,
            ctx,
            log,
            log_thread,
            flush: Duration::from_millis(cfg.clickhouse.shutdown_flush_ms),
            quic_addr,
            admin_addr,
        })
    }

    /// The bound QUIC address.
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The merchant API's bound address, when it runs.
    pub fn merchant_api_addr(&self) -> Option<SocketAddr> {
        self.merchant_api.as_ref().map(|m| m.addr)
    }

    /// The engine's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Shut down in order: stop accepting and stop reading frames → let the
    /// shards decide what they hold → make it durable → deliver every ack →
    /// close connections with `shutting_down` → flush the log to ClickHouse
    /// until `clickhouse.shutdown_flush_ms`; the rest stays in the log.
    pub async fn shutdown(self) -> Result<()> {
        use std::sync::atomic::Ordering;
        tracing::info!("shutdown: stop reading frames");
        let _ = self.shutdown_tx.send(true);
        let t0 = std::time::Instant::now();
        // Sessions hand over their last events (likes, `Leave`).
        while self.ctx.reading.load(Ordering::SeqCst) > 0 && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::info!("shutdown: deciding what the shards hold");
        self.log.closing();
        let s = self.shards.clone();
        tokio::task::spawn_blocking(move || s.shutdown())
            .await
            .context("shard shutdown")?;
        drop(self.shards);
        tracing::info!("shutdown: making it durable and delivering acks");
        let _ = self.log.barrier().await;
        let _ = self.drained_tx.send(true);
        if tokio::time::timeout(Duration::from_secs(5), self.gate)
            .await
            .is_err()
        {
            tracing::warn!("connections did not close within 5 s");
        }
        drop(self.ctx);
        tracing::info!(
            deadline_ms = self.flush.as_millis() as u64,
            "shutdown: flushing the log to ClickHouse"
        );
        let _ = self
            .writers_stop
            .send(Some(std::time::Instant::now() + self.flush));
        for w in self.writers {
            w.await.context("sink writer")?;
        }
        drop(self.log);
        // The log thread ends when the last handle is gone (a connection
        // task still closing may hold one for a moment). Everything acked is
        // already durable, so do not wait for it forever.
        let lt = self.log_thread;
        let joined = tokio::task::spawn_blocking(move || lt.join());
        if tokio::time::timeout(Duration::from_secs(5), joined)
            .await
            .is_err()
        {
            tracing::warn!("log thread still running at exit; acked records are already durable");
        }
        let _ = self.admin.await;
        if let Some(m) = self.merchant_api {
            let _ = m.task.await;
        }
        if let Some(w) = self.webhooks {
            // Each sender finishes its request wave (at most
            // `webhooks.timeout_ms`) and records a settled page.
            w.stopped().await;
        }
        tracing::info!(
            summary = %summary(&self.metrics),
            log_bytes_on_disk = self.metrics.log.bytes.load(Ordering::Relaxed),
            "roomgate stopped"
        );
        Ok(())
    }
}

/// True when `e` says ClickHouse could not be reached (as opposed to a
/// server that answered with an error).
fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<clickhouse::error::Error>(),
            Some(clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut)
        )
    })
}

/// Leads and chat decisions ClickHouse holds from the last `window_secs`:
/// a resend of one after a restart (whose log no longer has it) is a
/// replay, not a new lead or message. Best effort: if ClickHouse does not
/// answer within 5 s the engine starts with what its log holds.
pub async fn recent_ids(client: &clickhouse::Client, window_secs: u64) -> Vec<SeenId> {
    try_recent_ids(client, window_secs, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| {
            tracing::warn!("{e}; replays of leads and chat older than the log are not recognised");
            Vec::new()
        })
}

/// [`recent_ids`], or why ClickHouse could not give them within `limit`.
pub async fn try_recent_ids(
    client: &clickhouse::Client,
    window_secs: u64,
    limit: Duration,
) -> Result<Vec<SeenId>, String> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Seen {
        lead: bool,
        room_id: u64,
        viewer_id: u64,
        client_id: u64,
        verdict: String,
        reason: String,
        ts_ms: i64,
    }
    let retry_later = crate::wal::recovery::RETRY_LATER
        .iter()
        .map(|r| format!("'{r}'"))
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "SELECT true AS lead, room_id, viewer_id, client_lead_id AS client_id, verdict, reason, \
                toUnixTimestamp64Milli(ts) AS ts_ms \
         FROM leads WHERE ts >= now64(3) - toIntervalSecond(?) \
         UNION ALL \
         SELECT false, room_id, viewer_id, client_msg_id, verdict, 'none', toUnixTimestamp64Milli(ts) \
         FROM chat_messages WHERE ts >= now64(3) - toIntervalSecond(?) \
         UNION ALL \
         SELECT false, room_id, viewer_id, client_id, 'rejected', reason, toUnixTimestamp64Milli(ts) \
         FROM moderation_events WHERE ts >= now64(3) - toIntervalSecond(?) \
           AND kind = 'chat' AND NOT dry_run AND reason NOT IN ({retry_later})"
    );
    let q = client
        .query(&sql)
        .bind(window_secs)
        .bind(window_secs)
        .bind(window_secs);
    match tokio::time::timeout(limit, q.fetch_all::<Seen>()).await {
        Ok(Ok(rows)) => Ok(rows
            .into_iter()
            .map(|r| SeenId {
                lead: r.lead,
                room_id: r.room_id,
                viewer_id: r.viewer_id,
                client_id: r.client_id,
                verdict: crate::wal::codec::intern(&r.verdict).unwrap_or("accepted"),
                reason: crate::wal::codec::intern(&r.reason).unwrap_or("none"),
                ts: r.ts_ms,
            })
            .collect()),
        Ok(Err(e)) => Err(format!("cannot read recent decisions from ClickHouse: {e}")),
        Err(_) => Err(format!(
            "ClickHouse did not answer for recent decisions within {} s",
            limit.as_secs()
        )),
    }
}

/// The controls that establish a `[[rooms]]` entry.
fn room_controls(r: &crate::guard::RoomConfig) -> Vec<crate::guard::Control> {
    use crate::guard::Control;
    let mut out = Vec::new();
    if let Some(secs) = r.slow_mode_secs {
        out.push(Control::SlowMode { room: r.id, secs });
    }
    if r.chat_per_sec.is_some() || r.viewer_messages.is_some() {
        out.push(Control::RoomLimits {
            room: r.id,
            chat_per_sec: r.chat_per_sec,
            viewer_messages: r.viewer_messages,
        });
    }
    if !r.blocked_terms.is_empty() {
        out.push(Control::AddTerms {
            room: Some(r.id),
            terms: r.blocked_terms.clone(),
        });
    }
    for &viewer in &r.muted {
        out.push(Control::Mute {
            room: r.id,
            viewer,
            secs: 0,
        });
    }
    for &viewer in &r.banned {
        out.push(Control::Ban { room: r.id, viewer });
    }
    out
}

fn summary(m: &Metrics) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    crate::table::Table::ALL
        .iter()
        .map(|t| (t, &m.tables[t.index()]))
        .map(|(t, s)| {
            format!(
                "{t}={} rows/{} batches/{} retries/{} set aside",
                s.rows.load(Relaxed),
                s.batches.load(Relaxed),
                s.retries.load(Relaxed),
                s.dead_rows.load(Relaxed)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

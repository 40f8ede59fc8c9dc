//! Wiring: start the sink, shards, gate and admin port; shut them down in
//! order (stop accepting → close sessions → drain shards → flush batches).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::gate::{self, GateCtx};
use crate::metrics::Metrics;
use crate::pii::PiiKeys;
use crate::shard::{ShardSettings, Shards};
use crate::sink::{self, WriterSettings};
use crate::wire::RoomSettings;

/// Apply migrations, retrying while ClickHouse is unreachable (up to ~60 s).
pub async fn migrate(cfg: &Config) -> Result<Vec<u32>> {
    let client = sink::client(&cfg.clickhouse);
    let mut delay = Duration::from_millis(250);
    let mut waited = Duration::ZERO;
    loop {
        match sink::migrate::migrate(&client, &cfg.clickhouse.database).await {
            Ok(v) => return Ok(v),
            Err(e) if waited < Duration::from_secs(60) => {
                tracing::warn!(error = %e, url = %cfg.clickhouse.url, "migration failed; retrying");
                tokio::time::sleep(delay).await;
                waited += delay;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("migrate ClickHouse at {}", cfg.clickhouse.url))
            }
        }
    }
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
    gate: tokio::task::JoinHandle<()>,
    shutdown_tx: watch::Sender<bool>,
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
        let pii = Arc::new(PiiKeys::from_hex(
            cfg.pii.hmac_key.as_deref().unwrap_or_default(),
            cfg.pii.enc_key.as_deref().unwrap_or_default(),
        )?);
        if cfg.clickhouse.migrate_on_start {
            let applied = migrate(&cfg).await?;
            tracing::info!(?applied, database = %cfg.clickhouse.database, "schema up to date");
        }
        let boot_ms = crate::now_ms();
        let boot_id = format!("{boot_ms:x}{:08x}", rand::random::<u32>());
        let client = sink::client(&cfg.clickhouse);
        let (sink_tx, writers) = sink::spawn(
            &client,
            &cfg.batch,
            WriterSettings {
                boot_id: boot_id.clone(),
                retry_initial: Duration::from_millis(cfg.clickhouse.retry_initial_ms),
                retry_max: Duration::from_millis(cfg.clickhouse.retry_max_ms),
                min_interval: Duration::from_millis(cfg.clickhouse.min_insert_interval_ms),
                insert_timeout: Duration::from_millis(cfg.clickhouse.insert_timeout_ms),
                dead_letter_dir: cfg.clickhouse.dead_letter_dir.clone(),
                shutdown_grace: Duration::from_millis(cfg.clickhouse.shutdown_grace_ms),
            },
            &metrics,
        );
        let shards = Arc::new(
            Shards::start(
                &ShardSettings {
                    count: cfg.shards.count,
                    capacity: cfg.shards.queue_capacity,
                    drain_batch: cfg.shards.drain_batch,
                    guard: cfg.guard.clone(),
                },
                sink_tx.clone(),
                pii,
                metrics.clone(),
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
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (admin_addr, admin) = admin::bind(
            cfg.server.admin,
            AdminState {
                metrics: metrics.clone(),
                shards: shards.clone(),
                token: cfg.server.admin_token.as_deref().map(Into::into),
            },
            shutdown_rx.clone(),
        )
        .await?;
        let admin = tokio::spawn(admin);
        let endpoint = gate::endpoint(&cfg.server)?;
        let quic_addr = endpoint.local_addr().context("QUIC local address")?;
        let limits = cfg.limits.to_limits();
        let ctx = Arc::new(GateCtx {
            shards: shards.clone(),
            metrics: metrics.clone(),
            secret: cfg.tickets.secret.clone().unwrap_or_default().into_bytes(),
            limits,
            room_settings: RoomSettings {
                slow_mode_secs: 0,
                max_chat_chars: limits.max_chat_chars.min(cfg.guard.chat.max_chars) as u32,
                max_frame_bytes: limits.max_frame as u32,
            },
            handshake_timeout: Duration::from_millis(cfg.server.handshake_timeout_ms),
            max_pending_acks: cfg.server.max_pending_acks,
            busy_retry_after_ms: cfg.server.busy_retry_after_ms,
            max_connections: cfg.server.max_connections,
            moderation: sink_tx.moderation.clone(),
            shutdown: shutdown_rx,
            // Random high half: unique across restarts and across nodes.
            next_session: AtomicU64::new(u64::from(rand::random::<u32>()) << 32),
        });
        drop(sink_tx);
        tracing::info!(
            listen = %quic_addr,
            admin = %admin_addr,
            shards = cfg.shards.count,
            clickhouse = %cfg.clickhouse.url,
            database = %cfg.clickhouse.database,
            boot_id,
            "roomgate running"
        );
        let gate = tokio::spawn(gate::serve(endpoint, ctx));
        Ok(Engine {
            metrics,
            shards,
            writers,
            admin,
            gate,
            shutdown_tx,
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

    /// The engine's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stop accepting, close every session, drain the shards and flush every
    /// batch to ClickHouse.
    pub async fn shutdown(self) -> Result<()> {
        tracing::info!("shutdown: closing sessions");
        let _ = self.shutdown_tx.send(true);
        self.gate.await.context("gate task")?;
        tracing::info!("shutdown: draining shard queues");
        let s = self.shards.clone();
        tokio::task::spawn_blocking(move || s.shutdown())
            .await
            .context("shard shutdown")?;
        drop(self.shards);
        tracing::info!("shutdown: flushing batches to ClickHouse");
        for w in self.writers {
            w.await.context("sink writer")?;
        }
        let _ = self.admin.await;
        tracing::info!(summary = %summary(&self.metrics), "roomgate stopped");
        Ok(())
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
    crate::metrics::TABLES
        .iter()
        .zip(m.tables.iter())
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

//! One load run: bind endpoints, ramp viewers in, drive every room's
//! arrivals for the duration, then drain, close and summarize.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use quinn::Endpoint;
use tokio::{
    sync::{watch, Semaphore},
    task::JoinSet,
    time::{sleep_until, Instant},
};

use crate::{
    cli::Config,
    endpoint,
    report::{self, Summary},
    room::{self, Registry, RoomLoad},
    schedule::{ramp_offset, LikePlan},
    stats::Stats,
    viewer::{self, Ctx, ViewerSpec},
};

/// Seconds between status lines.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// Extra time after the drain timeout for viewers to say `Bye` and close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Bound on waiting for the endpoints to go idle (closes acknowledged).
const IDLE_WAIT: Duration = Duration::from_secs(5);

/// Run the load described by `cfg`. Errors only if the run cannot start.
pub async fn run(cfg: Config) -> Result<Summary> {
    let client = endpoint::client_config(&cfg.cert, cfg.keep_alive)?;
    let endpoints = endpoint::bind(cfg.sockets, cfg.server_addr, &client)?;
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock before 1970")?
        .as_secs();
    let stats = Arc::new(Stats::default());
    let ctx = Arc::new(Ctx {
        stats: stats.clone(),
        server: cfg.server_addr,
        server_name: cfg.server_name.clone(),
        secret: cfg.secret.0.clone(),
        expires_at: unix_now + cfg.duration.as_secs() + 3600,
        drain_timeout: cfg.drain_timeout,
        // 2^20 ids per viewer per run; runs started a second apart never overlap.
        id_base: unix_now << 20,
    });
    let likes = LikePlan::new(cfg.like_rate);
    let registries: Vec<Arc<Registry>> = (0..cfg.rooms)
        .map(|_| Arc::new(Registry::new(cfg.viewers)))
        .collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    tracing::info!(
        server = %cfg.server_addr,
        rooms = cfg.rooms,
        viewers = cfg.total_viewers(),
        taps_per_like_frame = likes.taps_per_frame,
        "starting load"
    );

    let t0 = Instant::now();
    let mut drivers = JoinSet::new();
    for (r, registry) in registries.iter().enumerate() {
        let load = RoomLoad {
            room_id: cfg.room_id(r as u32),
            seed: cfg.seed,
            chat_rate: cfg.chat_rate,
            likes,
            lead_rate: cfg.lead_rate,
            resend_share: cfg.resend_share,
            duration: cfg.duration,
        };
        drivers.spawn(room::drive(
            load,
            registry.clone(),
            stats.clone(),
            t0,
            stop_rx.clone(),
        ));
    }
    let connector = tokio::spawn(connect_all(
        cfg.clone(),
        ctx.clone(),
        endpoints.clone(),
        registries.clone(),
        t0,
        stop_rx.clone(),
    ));
    let status = tokio::spawn(status_loop(stats.clone(), t0));

    // Load phase: until the duration is over or Ctrl-C.
    tokio::select! {
        () = sleep_until(t0 + cfg.duration) => {}
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: stopping the load and draining (Ctrl-C again to quit now)");
            tokio::spawn(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            });
        }
    }
    let _ = stop_tx.send(true);
    let load_time = t0.elapsed().min(cfg.duration);
    while drivers.join_next().await.is_some() {}
    // The drivers closed their registries: viewers drain and say Bye.

    let mut viewers = connector.await.context("connector task")?;
    let deadline = Instant::now() + cfg.drain_timeout + SHUTDOWN_GRACE;
    loop {
        match timeout_at_opt(deadline, viewers.join_next()).await {
            Some(Some(Ok(()))) => {}
            Some(Some(Err(e))) => tracing::error!(error = %e, "viewer task failed"),
            Some(None) => break,
            None => {
                tracing::warn!(
                    left = viewers.len(),
                    "viewers still open after the drain; aborting them"
                );
                viewers.abort_all();
                while viewers.join_next().await.is_some() {}
                break;
            }
        }
    }
    status.abort();
    let idle_deadline = Instant::now() + IDLE_WAIT;
    for ep in &endpoints {
        if timeout_at_opt(idle_deadline, ep.wait_idle())
            .await
            .is_none()
        {
            tracing::debug!("endpoint not idle in time");
        }
    }
    let wall = t0.elapsed();
    let config = serde_json::to_value(&cfg).context("serialize config")?;
    Ok(report::summarize(
        &stats,
        config,
        likes.taps_per_frame,
        load_time,
        wall,
    ))
}

async fn timeout_at_opt<F: std::future::Future>(deadline: Instant, f: F) -> Option<F::Output> {
    tokio::time::timeout_at(deadline, f).await.ok()
}

/// Start every viewer on the linear ramp, at most `max_handshakes` at once,
/// rooms interleaved so all rooms fill together. Returns the viewer tasks.
async fn connect_all(
    cfg: Config,
    ctx: Arc<Ctx>,
    endpoints: Vec<Endpoint>,
    registries: Vec<Arc<Registry>>,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let handshakes = Arc::new(Semaphore::new(cfg.max_handshakes as usize));
    let total = cfg.total_viewers();
    let mut set = JoinSet::new();
    for i in 0..total {
        let at = t0 + ramp_offset(i, total, cfg.ramp);
        let permit = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            permit = async {
                sleep_until(at).await;
                handshakes.clone().acquire_owned().await
            } => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let r = (i % u64::from(cfg.rooms)) as u32;
        let slot = (i / u64::from(cfg.rooms)) as u32;
        let spec = ViewerSpec {
            room_id: cfg.room_id(r),
            viewer_id: cfg.viewer_id(r, slot),
            slot,
            registry: registries[r as usize].clone(),
            endpoint: endpoints[(i % endpoints.len() as u64) as usize].clone(),
        };
        set.spawn(viewer::run(ctx.clone(), spec, permit));
        while set.try_join_next().is_some() {}
    }
    if t0.elapsed() > cfg.ramp + Duration::from_secs(1) && !*stop.borrow() {
        tracing::warn!(
            took_s = t0.elapsed().as_secs_f64(),
            ramp_s = cfg.ramp.as_secs_f64(),
            "the join ramp ran late: handshakes were slower than the ramp (see --max-handshakes)"
        );
    }
    set
}

async fn status_loop(stats: Arc<Stats>, t0: Instant) {
    let mut prev = report::Sample::default();
    let mut last = t0;
    let mut tick = tokio::time::interval_at(t0 + STATUS_EVERY, STATUS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = tick.tick().await;
        eprintln!(
            "{}",
            report::status_line(&stats, now - t0, now - last, &mut prev)
        );
        last = now;
    }
}

//! One load run: bind endpoints, join viewers per the scenario's phases,
//! drive every room's plan for the duration, then drain, close and
//! summarize.

use std::{
    io::IsTerminal,
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
    cli::{Config, VIEWER_ID_STRIDE},
    content::Content,
    endpoint,
    plan::{self, PlannedPresence, RoomPlan},
    report::{self, GroundTruth, Summary},
    room::{self, Registry},
    schedule::LikePlan,
    stats::Stats,
    viewer::{self, Ctx, ViewerSpec},
};

/// Seconds between status lines when stderr is not a terminal.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// Extra time after the drain timeout for viewers to say `Bye` and close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Bound on waiting for the endpoints to go idle (closes acknowledged).
const IDLE_WAIT: Duration = Duration::from_secs(5);
/// Client ids of one run: `id_base .. id_base + ID_SPAN` per viewer.
const ID_SPAN: u64 = 1 << 20;
/// A worker of a split run plans a viewer present this long after its
/// planned join time (its handshake), and after its return from churn.
const JOIN_SLACK: Duration = Duration::from_secs(1);

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The timeline's bucket width: 1 s, wider for long runs (≤ ~600 buckets).
fn bucket_width(duration: Duration) -> Duration {
    Duration::from_secs((duration.as_secs_f64() / 600.0).ceil().max(1.0) as u64)
}

/// Run the load described by `cfg`. Errors only if the run cannot start.
pub async fn run(cfg: Config) -> Result<Summary> {
    let sc = cfg.scenario.clone();
    let client = endpoint::client_config(&cfg.cert, cfg.keep_alive, cfg.idle_timeout)?;
    let endpoints = endpoint::bind(cfg.sockets, cfg.server_addr, &client)?;
    let content = Arc::new(Content::new(&sc.blocked_terms())?);
    let started_unix_ms = unix_ms();
    let unix_now = (started_unix_ms / 1000).max(0) as u64;
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let handshakes = Arc::new(Semaphore::new(cfg.max_handshakes as usize));
    // 2^20 ids per viewer per run; runs started a second apart never overlap.
    let id_base = unix_now << 20;
    let ctx = Arc::new(Ctx {
        stats: stats.clone(),
        servers: cfg.servers.clone(),
        server_name: cfg.server_name.clone(),
        ticket_key: cfg.ticket_key.clone(),
        ticket_ttl: cfg.ticket_ttl,
        drain_timeout: cfg.drain_timeout,
        id_base,
        handshakes: handshakes.clone(),
        stop: stop_rx.clone(),
        stopped_at: std::sync::OnceLock::new(),
    });
    let registries: Vec<Arc<Registry>> = (0..cfg.rooms)
        .map(|r| {
            let split = cfg
                .worker
                .map(|w| (w, PlannedPresence::new(&sc, cfg.room_id(r), JOIN_SLACK)));
            Arc::new(Registry::new(cfg.layout.clone(), split))
        })
        .collect();
    for w in &cfg.warnings {
        tracing::warn!("scenario: {w}");
    }
    if !sc.description.is_empty() {
        tracing::info!("scenario: {}", sc.description);
    }
    let classes: Vec<String> = cfg
        .layout
        .ranges
        .iter()
        .map(|r| format!("{}={}", r.class, r.count))
        .collect();
    let viewers: u64 = cfg
        .layout
        .ranges
        .iter()
        .map(|r| cfg.class_viewers(r.class))
        .sum();
    tracing::info!(
        server = %cfg.servers_list.clone().unwrap_or_else(|| cfg.server_addr.to_string()),
        worker = %cfg.worker.map_or_else(|| "all".to_owned(), |w| w.to_string()),
        rooms = cfg.rooms,
        viewers,
        classes = %classes.join(" "),
        taps_per_like_frame = LikePlan::new(
            sc.classes.viewer.as_ref().map_or(0.0, |v| v.like_rate)
        )
        .taps_per_frame,
        "starting load"
    );

    let t0 = Instant::now();
    stats.start_timeline(t0, bucket_width(cfg.duration));
    let mut drivers = JoinSet::new();
    for (r, registry) in registries.iter().enumerate() {
        let plan = RoomPlan::new(
            sc.clone(),
            cfg.layout.clone(),
            content.clone(),
            cfg.room_id(r as u32),
        );
        drivers.spawn(room::drive(
            plan,
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
    let sampler = tokio::spawn(sample_loop(stats.clone(), t0));

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
    let _ = ctx.stopped_at.set(Instant::now());
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
    sampler.abort();
    stats.sample(t0.elapsed());
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
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
    let mut summary = report::summarize(
        &stats,
        config,
        LikePlan::new(sc.classes.viewer.as_ref().map_or(0.0, |v| v.like_rate)).taps_per_frame,
        load_time,
        wall,
    );
    let counts: Vec<_> = cfg
        .layout
        .ranges
        .iter()
        .map(|r| (r.class, cfg.class_viewers(r.class)))
        .collect();
    report::add_details(&mut summary, &stats, &counts);
    let (mut leads, withdrawals) = {
        let mut d = stats.detail();
        (
            std::mem::take(&mut d.leads),
            std::mem::take(&mut d.withdrawals),
        )
    };
    // Each lead record says whether (and how) its lead was withdrawn.
    crate::stats::join_withdrawals(&mut leads, withdrawals);
    if let Some(w) = cfg.worker {
        // What `merge` needs to add this worker's share to the others' (the
        // lead records go to the leads file, as in every run).
        summary.worker = Some(report::WorkerShare {
            worker: w,
            stats: serde_json::to_value(&*stats).context("serialize the worker's stats")?,
        });
    }
    leads.sort_by_key(|l| (l.room_id, l.viewer_id, l.client_lead_id));
    summary.ground_truth = Some(GroundTruth {
        scenario: cfg.scenario_file.as_ref().map(|p| p.display().to_string()),
        description: sc.description.clone(),
        seed: sc.seed,
        viewer_id_stride: VIEWER_ID_STRIDE,
        room_ids: (0..cfg.rooms).map(|r| cfg.room_id(r)).collect(),
        viewers_per_room: cfg.viewers,
        classes: cfg.layout.ranges.clone(),
        client_ids: [id_base, id_base + ID_SPAN - 1],
        started_unix_ms,
        ended_unix_ms: unix_ms(),
        leads_file: None,
        leads: leads.len(),
        consent_version: Some(crate::content::CONSENT_VERSION.to_owned()),
        tolerances: sc.verify.clone(),
        lead_records: leads,
    });
    Ok(summary)
}

async fn timeout_at_opt<F: std::future::Future>(deadline: Instant, f: F) -> Option<F::Output> {
    tokio::time::timeout_at(deadline, f).await.ok()
}

/// Start every viewer at its join time, at most `max_handshakes` handshakes
/// at once, rooms interleaved so all rooms fill together. Returns the
/// viewer tasks.
async fn connect_all(
    cfg: Config,
    ctx: Arc<Ctx>,
    endpoints: Vec<Endpoint>,
    registries: Vec<Arc<Registry>>,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let order = plan::join_order(&cfg.scenario);
    let last = order.last().map_or(Duration::ZERO, |o| o.0);
    let mut set = JoinSet::new();
    let mut i: u64 = 0;
    'outer: for (at, slot) in order {
        if !cfg.runs(slot) {
            continue;
        }
        for r in 0..cfg.rooms {
            let permit = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break 'outer,
                permit = async {
                    sleep_until(t0 + at).await;
                    ctx.handshakes.clone().acquire_owned().await
                } => match permit {
                    Ok(p) => p,
                    Err(_) => break 'outer,
                },
            };
            let room_id = cfg.room_id(r);
            let spec = ViewerSpec {
                room_id,
                viewer_id: cfg.viewer_id(r, slot),
                slot,
                class: cfg.layout.class_of(slot),
                registry: registries[r as usize].clone(),
                endpoint: endpoints[(i % endpoints.len() as u64) as usize].clone(),
                join_at: t0 + at,
                churn: plan::churn(&cfg.scenario, room_id, slot, at)
                    .map(|(leave, away)| (t0 + leave, away)),
            };
            i += 1;
            set.spawn(viewer::run(ctx.clone(), spec, permit));
            while set.try_join_next().is_some() {}
        }
    }
    if t0.elapsed() > last + Duration::from_secs(1) && !*stop.borrow() {
        tracing::warn!(
            took_s = t0.elapsed().as_secs_f64(),
            planned_s = last.as_secs_f64(),
            "joining ran late: handshakes were slower than planned (see --max-handshakes)"
        );
    }
    set
}

/// Live progress on stderr: one line rewritten every second on a
/// terminal, a plain line every 5 s otherwise.
async fn status_loop(stats: Arc<Stats>, t0: Instant) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_secs(1)
    } else {
        STATUS_EVERY
    };
    let mut prev = report::Sample::default();
    let mut last = t0;
    let mut tick = tokio::time::interval_at(t0 + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = tick.tick().await;
        let line = report::status_line(&stats, now - t0, now - last, &mut prev);
        if tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
        last = now;
    }
}

/// Cumulative counters once per timeline bucket.
async fn sample_loop(stats: Arc<Stats>, t0: Instant) {
    let width = stats.origin().map_or(Duration::from_secs(1), |o| o.1);
    let mut tick = tokio::time::interval_at(t0 + width, width);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = tick.tick().await;
        stats.sample(now - t0);
    }
}

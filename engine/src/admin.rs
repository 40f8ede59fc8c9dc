//! The admin HTTP port (loopback by default).
//!
//! - `GET /metrics` (Prometheus text), `GET /livez` (the process
//!   answers), `GET /readyz` (and its alias `/healthz`: ready to take
//!   viewers, JSON with each part's state): open.
//! - `/admin/...`: live room controls, behind a bearer token
//!   (`admin.token` / `ROOMGATE_ADMIN_TOKEN`). Each change is queued to the
//!   shard that owns the room (or every shard, for global changes) and
//!   applied between two drain rounds: no restart, no lock. See
//!   `docs/ADMIN.md` for a curl example per call.
//! - `/admin/rooms/{room}/merchant`: the room's merchant, read from and
//!   written to ClickHouse at once (an error when it cannot be reached:
//!   the caller retries).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::{oneshot, watch};

use crate::config::Secret;
use crate::guard::{Control, RoomSettingsView};
use crate::metrics::Metrics;
use crate::shard::{AdminOp, Shards};
use crate::wal::LogHandle;
use crate::wire::Reason;

/// Shared state of the admin handlers.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// Counters to export.
    pub metrics: Arc<Metrics>,
    /// Where controls go.
    pub shards: Arc<Shards>,
    /// Bearer token for `/admin`; `None` disables the admin API.
    pub token: Option<Arc<Secret>>,
    /// What `/readyz` looks at.
    pub health: Arc<Health>,
    /// Which rooms this node owns; `PUT /admin/routing` replaces the list.
    pub routing: Arc<crate::route::Routing>,
    /// How far back decisions are read from ClickHouse when rooms move to
    /// this node (`guard.idempotency_window_secs`); `None` with the null
    /// sink.
    pub takeover_window_secs: Option<u64>,
    /// The room → merchant mapping (`/admin/rooms/{room}/merchant`);
    /// `None` with the null sink.
    pub merchants: Option<crate::merchants::MerchantStore>,
    /// Erasure of leads' personal data (`POST /admin/leads/erase`);
    /// `None` with the null sink.
    pub eraser: Option<Arc<crate::erase::Eraser>>,
    /// Lead webhooks (`/admin/webhooks`); `None` when not configured.
    pub webhooks: Option<Arc<crate::delivery::webhook::Webhooks>>,
}

/// How long sessions of rooms that moved away get to finish their acks
/// before the rest are closed regardless.
const HANDOVER_GRACE: Duration = Duration::from_secs(5);

/// The parts of the engine readiness depends on.
#[derive(Debug)]
pub struct Health {
    /// True once migrations are applied (or were not asked for).
    pub schema: watch::Receiver<bool>,
    /// The log: over its disk budget or not.
    pub log: LogHandle,
    /// Pinged (`SELECT 1`, 1 s timeout) on each readiness probe.
    pub clickhouse: clickhouse::Client,
    /// True once shutdown began.
    pub shutdown: watch::Receiver<bool>,
}

/// `/readyz`: may a load balancer send viewers here? Ready = not shutting
/// down, migrations applied, and either ClickHouse answers or the log is
/// below its disk budget (acks only need the log; a ClickHouse outage is
/// absorbed until the budget is reached).
async fn readyz(State(s): State<AdminState>) -> Response {
    let h = &s.health;
    let migrations = *h.schema.borrow();
    let shutting_down = *h.shutdown.borrow();
    let log_full = h.log.is_full();
    let ping = tokio::time::timeout(
        Duration::from_secs(1),
        h.clickhouse.query("SELECT 1").fetch_one::<u8>(),
    )
    .await;
    let clickhouse = match ping {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "timeout (1 s)".to_owned(),
    };
    let ready = !shutting_down && migrations && (clickhouse == "ok" || !log_full);
    let log = &s.metrics.log;
    let body = serde_json::json!({
        "ready": ready,
        "shutting_down": shutting_down,
        "migrations_applied": migrations,
        "clickhouse": clickhouse,
        "log": {
            "over_budget": log_full,
            "bytes": log.bytes.load(std::sync::atomic::Ordering::Relaxed),
            "backlog_records": log.backlog_records.load(std::sync::atomic::Ordering::Relaxed),
        },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Equal in time independent of where they differ and of their lengths:
/// both sides are hashed to 32 bytes first, and the digests compared
/// without an early exit.
fn token_matches(given: &str, token: &Secret) -> bool {
    use sha2::{Digest, Sha256};
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(token.expose().as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

async fn auth(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    let Some(token) = &s.token else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "admin API disabled: set admin.token or ROOMGATE_ADMIN_TOKEN",
        );
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time comparison: the token guards live room controls.
    let ok = given.is_some_and(|g| token_matches(g, token));
    if !ok {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    next.run(req).await
}

const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Apply `ctl` on `shards` (one or all) and wait for each to confirm.
async fn apply(s: &AdminState, ctl: Control, targets: Vec<usize>) -> Response {
    let mut waits = Vec::new();
    for shard in targets {
        let (tx, rx) = oneshot::channel();
        if s.shards
            .admin(shard, AdminOp::Control(ctl.clone(), tx))
            .is_err()
        {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "shard admin queue full; retry",
            );
        }
        waits.push(rx);
    }
    for rx in waits {
        match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return error(StatusCode::BAD_REQUEST, e),
            _ => return error(StatusCode::GATEWAY_TIMEOUT, "shard did not answer"),
        }
    }
    tracing::info!(control = ?ctl, "admin control applied");
    (StatusCode::OK, Json(serde_json::json!({ "ok": true }))).into_response()
}

fn room_shard(s: &AdminState, room: u64) -> Vec<usize> {
    vec![s.shards.shard_of_room(room)]
}

fn all_shards(s: &AdminState) -> Vec<usize> {
    (0..s.shards.len()).collect()
}

async fn get_room(State(s): State<AdminState>, Path(room): Path<u64>) -> Response {
    let (tx, rx) = oneshot::channel::<RoomSettingsView>();
    if s.shards
        .admin(s.shards.shard_of_room(room), AdminOp::Room(room, tx))
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shard admin queue full; retry",
        );
    }
    match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
        Ok(Ok(view)) => Json(view).into_response(),
        _ => error(StatusCode::GATEWAY_TIMEOUT, "shard did not answer"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlowMode {
    secs: u32,
}

async fn slow_mode(
    State(s): State<AdminState>,
    Path(room): Path<u64>,
    Json(b): Json<SlowMode>,
) -> Response {
    apply(
        &s,
        Control::SlowMode { room, secs: b.secs },
        room_shard(&s, room),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    chat_per_sec: Option<u32>,
    viewer_messages: Option<u32>,
}

async fn limits(
    State(s): State<AdminState>,
    Path(room): Path<u64>,
    Json(b): Json<Limits>,
) -> Response {
    if b.chat_per_sec == Some(0) || b.viewer_messages == Some(0) {
        return error(
            StatusCode::BAD_REQUEST,
            "limits must be at least 1 (use mute or slow mode to silence)",
        );
    }
    let ctl = Control::RoomLimits {
        room,
        chat_per_sec: b.chat_per_sec,
        viewer_messages: b.viewer_messages,
    };
    apply(&s, ctl, room_shard(&s, room)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Terms {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

async fn terms_for(s: &AdminState, room: Option<u64>, b: Terms) -> Response {
    let targets = match room {
        Some(r) => room_shard(s, r),
        None => all_shards(s),
    };
    if !b.add.is_empty() {
        let r = apply(s, Control::AddTerms { room, terms: b.add }, targets.clone()).await;
        if r.status() != StatusCode::OK || b.remove.is_empty() {
            return r;
        }
    }
    apply(
        s,
        Control::RemoveTerms {
            room,
            terms: b.remove,
        },
        targets,
    )
    .await
}

async fn room_terms(
    State(s): State<AdminState>,
    Path(room): Path<u64>,
    Json(b): Json<Terms>,
) -> Response {
    terms_for(&s, Some(room), b).await
}

async fn global_terms(State(s): State<AdminState>, Json(b): Json<Terms>) -> Response {
    terms_for(&s, None, b).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Mute {
    #[serde(default)]
    secs: u64,
}

async fn viewer_action(
    State(s): State<AdminState>,
    Path((room, viewer, action)): Path<(u64, u64, String)>,
    body: axum::body::Bytes,
) -> Response {
    let body: Option<Mute> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => Some(b),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
        }
    };
    let ctl = match action.as_str() {
        "mute" => Control::Mute {
            room,
            viewer,
            secs: body.map_or(0, |b| b.secs),
        },
        "unmute" => Control::Unmute { room, viewer },
        "ban" => Control::Ban { room, viewer },
        "unban" => Control::Unban { room, viewer },
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("unknown action {other:?}: mute, unmute, ban, unban"),
            )
        }
    };
    apply(&s, ctl, room_shard(&s, room)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DryRun {
    on: bool,
}

async fn dry_run(
    State(s): State<AdminState>,
    Path(rule): Path<String>,
    Json(b): Json<DryRun>,
) -> Response {
    let Some(rule) = Reason::from_name(&rule) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown rule {rule:?}; see docs/REASONS.md"),
        );
    };
    apply(&s, Control::DryRun { rule, on: b.on }, all_shards(&s)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingBody {
    nodes: Vec<crate::config::NodeConfig>,
    /// Take rooms over even when their recent decisions cannot be read
    /// from ClickHouse (resends of leads the old owner stored are then
    /// stored again).
    #[serde(default)]
    force: bool,
}

/// How long reading recent decisions back may take when rooms move here.
const TAKEOVER_READ_LIMIT: Duration = Duration::from_secs(30);

fn routing_view(s: &AdminState) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = s
        .routing
        .nodes()
        .map(|n| {
            n.nodes()
                .iter()
                .map(|n| serde_json::json!({ "id": n.id, "addr": n.addr }))
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({ "node_id": s.routing.self_id(), "nodes": nodes })
}

async fn get_routing(State(s): State<AdminState>) -> Response {
    Json(routing_view(&s)).into_response()
}

/// Replace the node list; close the sessions of rooms that moved away
/// (`wrong_node`, naming the new owner) on every shard.
async fn put_routing(State(s): State<AdminState>, Json(b): Json<RoutingBody>) -> Response {
    let nodes = b
        .nodes
        .into_iter()
        .map(|n| crate::route::Node {
            id: n.id,
            addr: n.addr,
        })
        .collect();
    let nodes = match crate::route::NodeSet::new(nodes) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("nodes: {e}")),
    };
    if s.routing.self_id().is_empty() {
        return error(
            StatusCode::CONFLICT,
            "this node has no routing.node_id: set it in the config and restart",
        );
    }
    // Rooms that move here: first learn what their old owner decided and
    // stored (a resend of it is then a replay, not a second lead), then
    // take them.
    let me = s.routing.self_id().to_owned();
    let before = s.routing.nodes();
    let gains = |room: u64| {
        nodes.owner(room).id == me && before.as_ref().is_some_and(|b| b.owner(room).id != me)
    };
    let mut restored = None;
    if let Some(window) = s.takeover_window_secs {
        let read =
            crate::engine::try_recent_ids(&s.health.clickhouse, window, TAKEOVER_READ_LIMIT).await;
        let ids: Vec<_> = match read {
            Ok(ids) => ids.into_iter().filter(|l| gains(l.room_id)).collect(),
            Err(e) if b.force => {
                tracing::warn!("{e}; taking the rooms over anyway (force)");
                Vec::new()
            }
            Err(e) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "{e}: rooms moving here would store resends of what their old \
                         owner already stored; the list is unchanged. Retry, or send \"force\": true"
                    ),
                )
            }
        };
        let ids = Arc::new(ids);
        let mut n = 0;
        for shard in all_shards(&s) {
            match ask(&s.shards, shard, |tx| AdminOp::Restore(ids.clone(), tx)).await {
                Ok(k) => n += k,
                Err(r) => return r,
            }
        }
        restored = Some(n);
    }
    tracing::info!(nodes = %nodes, restored_ids = ?restored, "admin: node list replaced");
    s.routing.set(nodes);
    // After the grace, whatever has not moved is closed anyway: sessions
    // still finishing their acks, and a session that passed its `Hello`
    // just before the new list and reached its shard after this pass.
    // Scheduled before the pass below, so a pass that fails half-way is
    // completed too. (Only the shards and the routing: holding the log
    // would keep a shutdown waiting.)
    let (shards, routing) = (s.shards.clone(), s.routing.clone());
    tokio::spawn(async move {
        tokio::time::sleep(HANDOVER_GRACE).await;
        for shard in 0..shards.len() {
            let reroute = |reply| AdminOp::Reroute {
                routing: routing.clone(),
                force: true,
                reply,
            };
            if ask(&shards, shard, reroute).await.is_err() {
                tracing::warn!(
                    shard,
                    "sessions of moved rooms not closed: shard did not answer"
                );
            }
        }
    });
    let mut moving = 0;
    for shard in all_shards(&s) {
        let reroute = |reply| AdminOp::Reroute {
            routing: s.routing.clone(),
            force: false,
            reply,
        };
        match ask(&s.shards, shard, reroute).await {
            Ok(k) => moving += k,
            Err(r) => return r,
        }
    }
    let mut view = routing_view(&s);
    view["moving_sessions"] = moving.into();
    view["restored_ids"] = restored.into();
    Json(view).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MerchantBody {
    merchant: String,
}

/// The answer when there is no mapping (null sink).
fn no_merchant_store() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no ClickHouse (clickhouse.null_sink): room merchants are not kept",
    )
}

/// A mapping call that ClickHouse did not complete.
fn merchant_failed(e: crate::merchants::MerchantError, write: bool) -> Response {
    use crate::merchants::MerchantError;
    match e {
        MerchantError::Invalid(_) => error(StatusCode::BAD_REQUEST, e.to_string()),
        e if write => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{e}: the change may not be stored; retry (the call is idempotent)"),
        ),
        e => error(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; retry")),
    }
}

fn merchant_view(room: u64, a: Option<&crate::merchants::Assignment>) -> Response {
    Json(serde_json::json!({
        "room": room,
        "merchant": a.map(|a| a.merchant.as_str()),
        "updated_at_ms": a.map(|a| a.updated_at_ms),
    }))
    .into_response()
}

async fn get_merchant(State(s): State<AdminState>, Path(room): Path<u64>) -> Response {
    let Some(store) = &s.merchants else {
        return no_merchant_store();
    };
    match store.get(room).await {
        Ok(Some(a)) => merchant_view(room, Some(&a)),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "error": format!("room {room} has no merchant"),
                "room": room,
                "merchant": null,
            })),
        )
            .into_response(),
        Err(e) => merchant_failed(e, false),
    }
}

/// Give `room` a merchant (`Some`) or none, in ClickHouse, now.
async fn set_merchant(
    s: &AdminState,
    room: u64,
    merchant: Option<crate::merchants::MerchantId>,
) -> Response {
    let Some(store) = &s.merchants else {
        return no_merchant_store();
    };
    if let Err(e) = store.set(&[(room, merchant.as_ref())]).await {
        return merchant_failed(e, true);
    }
    tracing::info!(room, merchant = ?merchant.as_ref().map(|m| m.as_str()), "admin: room merchant set");
    match store.get(room).await {
        Ok(a) => merchant_view(room, a.as_ref()),
        // Stored; only the read-back failed.
        Err(_) => Json(serde_json::json!({
            "room": room,
            "merchant": merchant.as_ref().map(|m| m.as_str()),
            "updated_at_ms": null,
        }))
        .into_response(),
    }
}

async fn put_merchant(
    State(s): State<AdminState>,
    Path(room): Path<u64>,
    Json(b): Json<MerchantBody>,
) -> Response {
    match crate::merchants::MerchantId::parse(&b.merchant) {
        Ok(m) => set_merchant(&s, room, Some(m)).await,
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn delete_merchant(State(s): State<AdminState>, Path(room): Path<u64>) -> Response {
    set_merchant(&s, room, None).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EraseBody {
    room_id: u64,
    viewer_id: u64,
    client_lead_id: u64,
    /// Who asked (a support ticket, an operator).
    actor: String,
}

/// Erase one lead's personal data on request: recorded in
/// `lead_withdrawals` (`erase`, source `admin`), never delivered again,
/// personal columns blanked now (200) or by the next pass (202).
async fn erase_lead(State(s): State<AdminState>, Json(b): Json<EraseBody>) -> Response {
    let Some(eraser) = &s.eraser else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no ClickHouse (clickhouse.null_sink): no leads are stored",
        );
    };
    if let Err(e) = crate::erase::check_actor(&b.actor) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let key = crate::erase::LeadKey {
        room_id: b.room_id,
        viewer_id: b.viewer_id,
        client_lead_id: b.client_lead_id,
    };
    erase_answer(
        key,
        eraser
            .erase_now(key, "admin", &format!("admin:{}", b.actor))
            .await,
    )
}

/// The answer to an erasure call (admin and merchant API alike).
pub fn erase_answer(
    key: crate::erase::LeadKey,
    r: Result<crate::erase::Erasure, crate::erase::EraseError>,
) -> Response {
    use crate::erase::Erasure;
    let body = |erased: bool| {
        serde_json::json!({
            "room_id": key.room_id,
            "viewer_id": key.viewer_id,
            "client_lead_id": key.client_lead_id,
            "recorded": true,
            "erased": erased,
        })
    };
    match r {
        Ok(Erasure::Done) => {
            tracing::info!(?key, "lead erased on request");
            Json(body(true)).into_response()
        }
        Ok(Erasure::Pending) => (StatusCode::ACCEPTED, Json(body(false))).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, ?key, "erasure request not recorded");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "lead storage unavailable; the request was not recorded: retry",
            )
        }
    }
}

/// Send one request to `shard` and wait for its answer.
async fn ask<T>(
    shards: &Shards,
    shard: usize,
    op: impl FnOnce(oneshot::Sender<T>) -> AdminOp,
) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    if shards.admin(shard, op(tx)).is_err() {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shard admin queue full; retry",
        ));
    }
    match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(error(StatusCode::GATEWAY_TIMEOUT, "shard did not answer")),
    }
}

/// Bind the admin port (so a taken port fails start-up) and return the
/// bound address and the server future, which ends when `shutdown` flips.
pub async fn bind(
    addr: SocketAddr,
    state: AdminState,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let admin = Router::new()
        .route("/rooms/{room}", get(get_room))
        .route("/rooms/{room}/slow-mode", put(slow_mode))
        .route("/rooms/{room}/limits", put(limits))
        .route("/rooms/{room}/terms", post(room_terms))
        .route(
            "/rooms/{room}/merchant",
            get(get_merchant).put(put_merchant).delete(delete_merchant),
        )
        .route(
            "/rooms/{room}/viewers/{viewer}/{action}",
            post(viewer_action),
        )
        .route("/terms", post(global_terms))
        .route("/rules/{rule}/dry-run", put(dry_run))
        .route("/routing", get(get_routing).put(put_routing))
        .route("/leads/erase", post(erase_lead))
        .nest(
            "/webhooks",
            crate::delivery::webhook::admin_router(state.webhooks.clone()),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/healthz", get(readyz))
        .nest("/admin", admin)
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind admin port {addr}"))?;
    let addr = listener.local_addr().context("admin local address")?;
    tracing::info!(%addr, "admin port listening (/metrics, /livez, /readyz, /admin)");
    Ok((addr, async move {
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "admin server failed");
        }
    }))
}

//! Lead delivery, push: per-merchant signed webhooks (docs/LEADS.md,
//! "Webhooks").
//!
//! Each configured merchant's accepted leads are POSTed, one lead per
//! request, to its URL, in the pull API's order and with its filters
//! (the same [`crate::delivery::query::leads_sql`] and decryption), signed
//! (HMAC-SHA256 over `"<timestamp>.<body>"`), with the lead's stable
//! idempotency key. A failed attempt is retried with backoff; after
//! `max_attempts` the lead waits in `webhook_backlog` (retried every
//! `backlog_retry_secs` and on `POST /admin/webhooks/backlog/retry`),
//! never dropped. A server-side cursor per merchant (`webhook_cursors`)
//! passes a page once each of its leads was delivered or stored in the
//! backlog. Before every wave (every retry round) the leads are checked
//! against `lead_withdrawals`: a lead withdrawn or erased meanwhile is
//! cancelled, never sent again. Every request is written to `lead_audit`
//! (`action = 'webhook'`) before it leaves (and before its lead is
//! decrypted); each 2xx adds a `webhook_delivered` row, the delivery.
//!
//! With `routing.nodes`, one node sends a merchant's webhooks: the
//! rendezvous owner of `fnv1a64(merchant id)`; without, this node sends
//! for every merchant.
//!
//! Pure parts: [`sign`] (body, signature, verification), [`backoff`]
//! (retry schedule), [`outbox`] (per-lead attempts, when to give up),
//! [`store`] (SQL and rows), [`settings`] (`[webhooks]`). I/O: [`http`]
//! (the client), `runner` (one loop per merchant), and the admin
//! routes here.

pub mod backoff;
pub mod http;
pub mod outbox;
mod runner;
pub mod settings;
pub mod sign;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::{mpsc, oneshot, watch};

pub use runner::{sender_node, sends_here, Status, SweepReport};
pub use settings::{Target, WebhookMerchantConfig, WebhooksConfig};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pii::PiiKeys;
use crate::route::Routing;
use runner::{Ctx, Runner, Shared};

/// The running webhook senders (one task per merchant).
pub struct Webhooks {
    ctx: Arc<Ctx>,
    merchants: Vec<Arc<Shared>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("merchants", &self.merchants.len())
            .finish()
    }
}

/// How long `POST /admin/webhooks/backlog/retry` waits for the passes.
const RETRY_WAIT: Duration = Duration::from_secs(60);

/// Start a sender per configured merchant (none when `[webhooks]` has no
/// merchants). They begin once `schema` is true and end when `shutdown`
/// flips.
pub fn start(
    cfg: &Config,
    pii: Arc<PiiKeys>,
    metrics: Arc<Metrics>,
    routing: Arc<Routing>,
    schema: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<Arc<Webhooks>>> {
    let Some(w) = &cfg.webhooks else {
        return Ok(None);
    };
    if w.merchants.is_empty() {
        return Ok(None);
    }
    let targets = w.targets()?;
    let mut ch = cfg.clickhouse.clone();
    if let Some(user) = &w.clickhouse_user {
        ch.user = user.clone();
        ch.password = w.clickhouse_password.clone().unwrap_or_default();
    } else if let Some(pw) = &w.clickhouse_password {
        ch.password = pw.clone();
    }
    let sender = http::Sender::new(Duration::from_millis(w.timeout_ms), w.ca_file.as_deref())
        .context("webhooks: HTTP client")?;
    if w.insecure_http {
        tracing::warn!(
            "webhooks.insecure_http: http:// receivers on loopback allowed (development only)"
        );
    }
    let ctx = Arc::new(Ctx {
        client: crate::sink::client(&ch),
        pii,
        sender,
        metrics,
        routing,
        settle_ms: i64::try_from(w.settle_ms).unwrap_or(i64::MAX),
        interval: Duration::from_millis(w.interval_ms),
        batch: w.batch,
        concurrency: w.concurrency,
        max_attempts: w.max_attempts,
        backoff: w.backoff(),
        backlog_every: Duration::from_secs(w.backlog_retry_secs),
        backlog_batch: w.backlog_batch,
        query_timeout: Duration::from_millis(w.query_timeout_ms),
    });
    let mut merchants = Vec::new();
    let mut tasks = Vec::new();
    for target in targets {
        let (tx, rx) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            target,
            status: Mutex::new(Status::default()),
            retry: tx,
        });
        let runner = Runner::new(shared.clone(), ctx.clone(), rx);
        tasks.push(tokio::spawn(runner.run(schema.clone(), shutdown.clone())));
        merchants.push(shared);
    }
    tracing::info!(
        merchants = merchants.len(),
        max_attempts = w.max_attempts,
        "webhooks configured"
    );
    Ok(Some(Arc::new(Webhooks {
        ctx,
        merchants,
        tasks: Mutex::new(tasks),
    })))
}

impl Webhooks {
    /// Wait for every sender to end (after shutdown flipped).
    pub async fn stopped(&self) {
        let tasks = match self.tasks.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for t in tasks {
            let _ = t.await;
        }
    }

    fn find(&self, merchant: &str) -> Option<&Arc<Shared>> {
        self.merchants
            .iter()
            .find(|m| m.target.merchant.as_str() == merchant)
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

fn not_configured() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "webhooks are not configured on this node ([webhooks] merchants)",
    )
}

/// `GET /admin/webhooks`: every merchant's webhook, what this node knows
/// (sending here or not, in flight, last success and error) and what
/// ClickHouse holds (cursor, backlog by state).
async fn status(State(w): State<Option<Arc<Webhooks>>>) -> Response {
    let Some(w) = w else {
        return not_configured();
    };
    let c = &w.ctx;
    let counts = c
        .within(
            "backlog counts",
            c.client
                .query(store::BACKLOG_COUNTS_SQL)
                .fetch_all::<store::CountRow>(),
        )
        .await;
    let mut out = Vec::new();
    let mut clickhouse_error = None;
    for m in &w.merchants {
        let id = m.target.merchant.as_str();
        let cursor = c
            .within(
                "cursor",
                c.client
                    .query(store::CURSOR_SQL)
                    .bind(id)
                    .fetch_optional::<store::CursorRow>(),
            )
            .await;
        let cursor = match cursor {
            Ok(Some(r)) => serde_json::json!({
                "inserted_at_ms": r.at_ms, "room_id": r.room_id, "viewer_id": r.viewer_id,
                "client_lead_id": r.client_lead_id, "updated_at_ms": r.updated_ms,
            }),
            Ok(None) => serde_json::Value::Null,
            Err(e) => {
                clickhouse_error = Some(e);
                serde_json::Value::Null
            }
        };
        let backlog = match &counts {
            Ok(rows) => {
                let mut b = serde_json::json!({ "waiting": 0, "delivered": 0, "cancelled": 0 });
                for r in rows.iter().filter(|r| r.merchant_id == id) {
                    b[r.state.as_str()] = r.n.into();
                }
                b
            }
            Err(e) => {
                clickhouse_error = Some(e.clone());
                serde_json::Value::Null
            }
        };
        out.push(serde_json::json!({
            "merchant": id,
            "url": m.target.display_url(),
            "sender_node": sender_node(&c.routing, id),
            "cursor": cursor,
            "backlog": backlog,
            "here": m.status(),
        }));
    }
    Json(serde_json::json!({
        "node_id": c.routing.self_id(),
        "merchants": out,
        "clickhouse_error": clickhouse_error,
    }))
    .into_response()
}

/// `GET /admin/webhooks/backlog?merchant=&state=&limit=`.
async fn backlog(
    State(w): State<Option<Arc<Webhooks>>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(w) = w else {
        return not_configured();
    };
    if let Some(k) = q
        .keys()
        .find(|k| !["merchant", "state", "limit"].contains(&k.as_str()))
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown parameter {k:?}: merchant, state, limit"),
        );
    }
    let merchant = q
        .get("merchant")
        .map(String::as_str)
        .filter(|m| !m.is_empty());
    if let Some(m) = merchant {
        if crate::merchants::MerchantId::parse(m).is_err() {
            return error(
                StatusCode::BAD_REQUEST,
                format!("merchant {m:?}: [a-z0-9_-]"),
            );
        }
    }
    let state = match q.get("state").map(String::as_str) {
        None | Some("") | Some("waiting") => Some(store::State::Waiting),
        Some("delivered") => Some(store::State::Delivered),
        Some("cancelled") => Some(store::State::Cancelled),
        Some("all") => None,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("state {other:?}: waiting (default), delivered, cancelled or all"),
            )
        }
    };
    let limit = match q.get("limit").map(|l| l.parse::<u32>()) {
        None => 100,
        Some(Ok(l)) if (1..=1_000).contains(&l) => l,
        Some(_) => return error(StatusCode::BAD_REQUEST, "limit must be 1 to 1000"),
    };
    let c = &w.ctx;
    let sql = store::backlog_sql(merchant, state, store::Order::Lead, limit);
    match c
        .within(
            "backlog",
            c.client.query(&sql).fetch_all::<store::BacklogRow>(),
        )
        .await
    {
        Ok(rows) => Json(serde_json::json!({ "entries": rows })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "admin: webhook backlog not read");
            error(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; retry"))
        }
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    merchant: Option<String>,
}

/// `POST /admin/webhooks/backlog/retry` (body `{"merchant": "m1"}` or
/// empty: every merchant): a backlog pass now, on this node for the
/// merchants it sends for; answers with each pass's report.
async fn retry(State(w): State<Option<Arc<Webhooks>>>, body: axum::body::Bytes) -> Response {
    let Some(w) = w else {
        return not_configured();
    };
    let b: RetryBody = if body.iter().all(u8::is_ascii_whitespace) {
        RetryBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
        }
    };
    let chosen: Vec<&Arc<Shared>> = match &b.merchant {
        Some(m) => match w.find(m) {
            Some(s) => vec![s],
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("merchant {m:?} has no webhook"),
                )
            }
        },
        None => w.merchants.iter().collect(),
    };
    let mut waits = Vec::new();
    for m in chosen {
        let id = m.target.merchant.as_str().to_owned();
        let node = sender_node(&w.ctx.routing, &id);
        if !sends_here(&w.ctx.routing, &id) {
            waits.push((id, node, None));
            continue;
        }
        let (tx, rx) = oneshot::channel();
        if m.retry.try_send(tx).is_err() {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{id}: too many retry requests queued; retry"),
            );
        }
        waits.push((id, node, Some(rx)));
    }
    let mut out = Vec::new();
    for (id, node, rx) in waits {
        let report = match rx {
            None => serde_json::json!({
                "merchant": id, "ran": false, "sender_node": node,
                "note": "another node sends this merchant's webhooks: ask it",
            }),
            Some(rx) => match tokio::time::timeout(RETRY_WAIT, rx).await {
                Ok(Ok(r)) => serde_json::json!({ "merchant": id, "ran": r.ran_here, "report": r }),
                _ => serde_json::json!({
                    "merchant": id, "ran": null,
                    "note": "the pass did not finish in time; see GET /admin/webhooks",
                }),
            },
        };
        out.push(report);
    }
    tracing::info!(merchant = ?b.merchant, "admin: webhook backlog retried");
    Json(serde_json::json!({ "merchants": out })).into_response()
}

/// The admin routes under `/admin/webhooks` (behind the admin token);
/// `w` is `None` when webhooks are off (every route answers 404).
pub fn admin_router<S: Clone + Send + Sync + 'static>(w: Option<Arc<Webhooks>>) -> Router<S> {
    Router::new()
        .route("/", get(status))
        .route("/backlog", get(backlog))
        .route("/backlog/retry", post(retry))
        .with_state(w)
}

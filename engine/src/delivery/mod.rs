//! Lead delivery, pull: the merchant API (docs/LEADS.md).
//!
//! `GET /v1/leads?cursor=…&limit=…[&include=suspect]` with
//! `Authorization: Bearer <key_id>.<secret>` returns the key's merchant's
//! accepted leads, decrypted, in the order `(ts, room_id, viewer_id,
//! client_lead_id)`, after the cursor and at least `settle_ms` old, and
//! the cursor to send next. Every delivered lead is written to
//! `lead_audit` before the answer leaves: when that insert fails the
//! answer is 503 and nothing is delivered (no unaudited decryption).
//!
//! Its own port, HTTPS (rustls; plain HTTP only with `insecure_http`).
//! ClickHouse is the source of truth: nothing is kept between requests,
//! so any engine node answers any pull.
//!
//! Pure parts: [`cursor`] (the opaque cursor), [`keys`] (API keys),
//! [`query`] (SQL, decryption, audit rows).
//!
//! Push: [`webhook`] (signed per-lead webhooks, retried, with a backlog).

pub mod cursor;
pub mod keys;
pub mod query;
pub mod webhook;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::pii::PiiKeys;
use keys::KeySet;

/// Shared state of the handlers.
#[derive(Clone)]
struct ApiState {
    keys: Arc<KeySet>,
    pii: Arc<PiiKeys>,
    client: clickhouse::Client,
    settle_ms: i64,
    timeout: Duration,
    /// Erasure on request (`POST /v1/leads/erase`).
    eraser: Option<Arc<crate::erase::Eraser>>,
    /// Counters.
    metrics: Arc<crate::metrics::Metrics>,
}

/// Count the answer of `endpoint`.
fn counted(s: &ApiState, endpoint: crate::metrics::ApiEndpoint, r: Response) -> Response {
    s.metrics
        .merchant_api
        .request(endpoint, r.status().as_u16());
    r
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

fn unavailable(msg: String) -> Response {
    // The details (database, user, columns, server version) stay in the
    // log: the merchant only needs to know to retry.
    tracing::warn!(error = %msg, "merchant API: ClickHouse call failed; answering 503");
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "lead storage unavailable; nothing was delivered: retry with the same cursor",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
}

async fn within<T>(
    s: &ApiState,
    what: &str,
    f: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
) -> Result<T, Response> {
    match tokio::time::timeout(s.timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(format!("{what}: clickhouse: {e}"))),
        Err(_) => Err(unavailable(format!(
            "{what}: clickhouse did not answer within {} ms",
            s.timeout.as_millis()
        ))),
    }
}

fn unauthorized() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong API key (Authorization: Bearer <key_id>.<secret>)",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// `POST /v1/leads/erase` body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EraseBody {
    room_id: u64,
    viewer_id: u64,
    client_lead_id: u64,
}

/// A merchant erases one of its leads' personal data (a viewer asked it
/// to): recorded, never delivered again, blanked now (200) or by the next
/// pass (202); audited as `erase`. A lead of a room that is not the
/// merchant's now gets 404 (nothing says whether it exists).
async fn erase_lead(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<EraseBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let r = erase_lead_inner(&s, headers, body).await;
    counted(&s, crate::metrics::ApiEndpoint::Erase, r)
}

async fn erase_lead_inner(
    s: &ApiState,
    headers: HeaderMap,
    body: Result<Json<EraseBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(key) = s.keys.check(auth) else {
        return unauthorized();
    };
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{e}: send {{\"room_id\", \"viewer_id\", \"client_lead_id\"}}"),
            )
        }
    };
    let Some(eraser) = &s.eraser else {
        return unavailable("no eraser (clickhouse.null_sink)".into());
    };
    let merchant = key.merchant.as_str();
    let rooms: Vec<u64> = match within(
        s,
        "merchant rooms",
        s.client.query(query::ROOMS_SQL).bind(merchant).fetch_all(),
    )
    .await
    {
        Ok(r) => r,
        Err(r) => return r,
    };
    if !rooms.contains(&b.room_id) {
        return error(
            StatusCode::NOT_FOUND,
            format!("room {} is not one of your rooms", b.room_id),
        );
    }
    let lead = crate::erase::LeadKey {
        room_id: b.room_id,
        viewer_id: b.viewer_id,
        client_lead_id: b.client_lead_id,
    };
    let sql = query::erase_audit_sql(crate::now_ms(), merchant, &key.key_id, &lead);
    if let Err(r) = within(s, "audit", s.client.query(&sql).execute()).await {
        return r;
    }
    let r = eraser
        .erase_now(lead, "merchant", &format!("key:{}", key.key_id))
        .await;
    crate::admin::erase_answer(lead, r)
}

async fn get_leads(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let r = get_leads_inner(&s, headers, q).await;
    counted(&s, crate::metrics::ApiEndpoint::Leads, r)
}

async fn get_leads_inner(s: &ApiState, headers: HeaderMap, q: HashMap<String, String>) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(key) = s.keys.check(auth) else {
        return unauthorized();
    };
    let merchant = key.merchant.as_str();
    if let Some(k) = q
        .keys()
        .find(|k| !["cursor", "limit", "include"].contains(&k.as_str()))
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown parameter {k:?}: cursor, limit, include"),
        );
    }
    let limit = match q.get("limit").map(|l| l.parse::<u32>()) {
        None => query::DEFAULT_LIMIT,
        Some(Ok(l)) if (1..=query::MAX_LIMIT).contains(&l) => l,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("limit must be 1 to {}", query::MAX_LIMIT),
            )
        }
    };
    let include_suspect = match q.get("include").map(String::as_str) {
        None | Some("") => false,
        Some("suspect") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("include={other:?}: only include=suspect"),
            )
        }
    };
    let after = match q.get("cursor").map(String::as_str) {
        None | Some("") => None,
        Some(c) => match cursor::decode(c, merchant, &s.pii) {
            Ok(p) => Some(p),
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        },
    };
    let rooms: Vec<u64> = match within(
        s,
        "merchant rooms",
        s.client.query(query::ROOMS_SQL).bind(merchant).fetch_all(),
    )
    .await
    {
        Ok(r) => r,
        Err(r) => return r,
    };
    let now = crate::now_ms();
    let mut rows = Vec::new();
    if !rooms.is_empty() {
        let page = query::Page {
            rooms,
            after,
            upto_ms: now.saturating_sub(s.settle_ms),
            include_suspect,
            limit,
        };
        let sql = query::leads_sql(&page);
        rows = match within(
            s,
            "leads",
            s.client.query(&sql).fetch_all::<query::LeadRow>(),
        )
        .await
        {
            Ok(r) => r,
            Err(r) => return r,
        };
    }
    let next = rows.last().map(query::LeadRow::position).or(after);
    let leads: Vec<query::Delivered> = rows.iter().map(|r| query::decrypt(r, &s.pii)).collect();
    // Audit first: a lead whose delivery is not recorded is not delivered.
    if !leads.is_empty() {
        let sql = query::audit_sql(now, merchant, &key.key_id, &leads);
        if let Err(r) = within(s, "audit", s.client.query(&sql).execute()).await {
            return r;
        }
    }
    let undecryptable = leads.iter().filter(|l| !l.decrypted).count();
    let m = &s.metrics.merchant_api;
    m.leads_delivered
        .fetch_add(leads.len() as u64, std::sync::atomic::Ordering::Relaxed);
    m.undecryptable
        .fetch_add(undecryptable as u64, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        merchant,
        key_id = %key.key_id,
        leads = leads.len(),
        undecryptable,
        "merchant API: leads delivered"
    );
    let has_more = leads.len() == limit as usize;
    Json(serde_json::json!({
        "leads": leads,
        "next_cursor": next.map(|p| cursor::encode(&p, merchant, &s.pii)),
        "has_more": has_more,
    }))
    .into_response()
}

/// TLS connections, handshaken off the accept path, as an axum listener.
struct TlsListener {
    rx: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop ended (shutdown): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// Most TLS handshakes in progress; more connections wait in the backlog.
const MAX_HANDSHAKES: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn tls_listener(
    tcp: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<TlsListener> {
    let addr = tcp.local_addr().context("merchant API local address")?;
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = tokio::select! {
                r = tcp.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "merchant API accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => return,
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let hs = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                drop(permit);
                match hs {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, peer)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "merchant API TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "merchant API TLS handshake timed out"),
                }
            });
        }
    });
    Ok(TlsListener { rx, addr })
}

fn server_tls(cert: &std::path::Path, key: &std::path::Path) -> Result<Arc<rustls::ServerConfig>> {
    let (certs, key) = crate::gate::tls::load(cert, key)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("tls versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("merchant_api: certificate and key do not match")?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// A running merchant API.
#[derive(Debug)]
pub struct MerchantApi {
    /// The bound address.
    pub addr: SocketAddr,
    /// The server; ends after shutdown flips.
    pub task: tokio::task::JoinHandle<()>,
}

/// Start the merchant API if `cfg` asks for it (bound before this returns,
/// so a taken port fails start-up).
pub async fn start(
    cfg: &Config,
    pii: Arc<PiiKeys>,
    eraser: Option<Arc<crate::erase::Eraser>>,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<MerchantApi>> {
    let Some(m) = &cfg.merchant_api else {
        return Ok(None);
    };
    let Some(listen) = m.listen_addr()? else {
        return Ok(None);
    };
    let keys = m.key_set()?;
    if keys.is_empty() {
        tracing::warn!("merchant_api has no keys: every request gets 401");
    }
    let mut ch = cfg.clickhouse.clone();
    if let Some(user) = &m.clickhouse_user {
        ch.user = user.clone();
        ch.password = m.clickhouse_password.clone().unwrap_or_default();
    } else if let Some(pw) = &m.clickhouse_password {
        ch.password = pw.clone();
    }
    let state = ApiState {
        keys: Arc::new(keys),
        pii,
        client: crate::sink::client(&ch),
        settle_ms: i64::try_from(m.settle_ms).unwrap_or(i64::MAX),
        timeout: Duration::from_millis(m.query_timeout_ms),
        eraser,
        metrics,
    };
    let app = Router::new()
        .route("/v1/leads", get(get_leads))
        .route("/v1/leads/erase", post(erase_lead))
        .with_state(state);
    let tcp = TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind merchant API port {listen}"))?;
    let addr = tcp.local_addr().context("merchant API local address")?;
    let mut stop_rx = shutdown.clone();
    let stop = async move {
        let _ = stop_rx.wait_for(|s| *s).await.map(|_| ());
    };
    let task = if m.insecure_http {
        tracing::warn!(%addr, "merchant API on PLAIN HTTP (merchant_api.insecure_http): API keys and decrypted contacts cross the network in clear; development only");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(tcp, app).with_graceful_shutdown(stop).await {
                tracing::error!(error = %e, "merchant API failed");
            }
        })
    } else {
        let (Some(cert), Some(key)) = (&m.cert, &m.key) else {
            anyhow::bail!("merchant_api.cert and merchant_api.key are required");
        };
        let listener = tls_listener(tcp, server_tls(cert, key)?, shutdown)?;
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %e, "merchant API failed");
            }
        })
    };
    tracing::info!(%addr, tls = !m.insecure_http, settle_ms = m.settle_ms, "merchant API listening (GET /v1/leads, POST /v1/leads/erase)");
    Ok(Some(MerchantApi { addr, task }))
}

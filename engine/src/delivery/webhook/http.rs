//! The webhook sender's HTTP client: one POST, its outcome as an
//! [`Attempt`]. HTTPS with rustls (Mozilla roots plus `webhooks.ca_file`),
//! HTTP/1.1 with pooled keep-alive connections, redirects not followed,
//! the whole exchange within `timeout`. What a receiver answers is read
//! (up to 64 KiB, so the connection can be reused) and dropped: it may
//! echo personal data, so only the status is kept.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::outbox::Attempt;
use super::sign;

/// Most bytes of an answer read (then the connection is dropped).
const MAX_ANSWER: usize = 64 << 10;

/// A POST to send.
#[derive(Clone)]
pub struct Request {
    /// Where.
    pub url: hyper::Uri,
    /// The JSON body.
    pub body: Bytes,
    /// `Roomgate-Timestamp`.
    pub timestamp: i64,
    /// `Roomgate-Signature`.
    pub signature: String,
    /// `Roomgate-Idempotency-Key`.
    pub idempotency_key: String,
    /// `Roomgate-Attempt`.
    pub attempt: u32,
}

impl std::fmt::Debug for Request {
    /// No path or query (a token), no body (contacts).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("url", &super::settings::redacted_url(&self.url.to_string()))
            .field("body_bytes", &self.body.len())
            .field("timestamp", &self.timestamp)
            .field("idempotency_key", &self.idempotency_key)
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// The client (cheap to clone: one pool).
#[derive(Clone)]
pub struct Sender {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn tls(ca_file: Option<&Path>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).with_context(|| format!("webhooks.ca_file {}", path.display()))?;
        let mut n = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.with_context(|| format!("webhooks.ca_file {}", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("webhooks.ca_file {}: a certificate", path.display()))?;
            n += 1;
        }
        if n == 0 {
            anyhow::bail!("webhooks.ca_file {}: no certificate", path.display());
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("tls versions")?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

impl Sender {
    /// A client whose requests take at most `timeout`.
    pub fn new(timeout: Duration, ca_file: Option<&Path>) -> Result<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls(ca_file)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(16)
            .build(https);
        Ok(Sender { client, timeout })
    }

    /// Send `r`; never an error: a failure is an [`Attempt::Failed`].
    pub async fn post(&self, r: Request) -> Attempt {
        let t = self.timeout;
        match tokio::time::timeout(t, self.exchange(r)).await {
            Ok(a) => a,
            Err(_) => Attempt::Failed {
                error: format!("timeout after {} ms", t.as_millis()),
                retry_after: None,
            },
        }
    }

    async fn exchange(&self, r: Request) -> Attempt {
        let failed = |error: String| Attempt::Failed {
            error,
            retry_after: None,
        };
        let req = hyper::Request::post(r.url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                USER_AGENT,
                HeaderValue::from_static(concat!("roomgate-webhook/", env!("CARGO_PKG_VERSION"))),
            )
            .header(sign::TIMESTAMP_HEADER, r.timestamp)
            .header(sign::SIGNATURE_HEADER, r.signature)
            .header(sign::IDEMPOTENCY_HEADER, r.idempotency_key)
            .header(sign::ATTEMPT_HEADER, r.attempt)
            .body(Full::new(r.body));
        let req = match req {
            Ok(q) => q,
            Err(e) => return failed(format!("request: {e}")),
        };
        let resp = match self.client.request(req).await {
            Ok(resp) => resp,
            Err(e) => return failed(transport_error(&e)),
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read the answer (bounded) so the connection goes back to the
        // pool; its content is not kept.
        let _ = Limited::new(resp.into_body(), MAX_ANSWER).collect().await;
        if status.is_success() {
            Attempt::Delivered
        } else {
            Attempt::Failed {
                error: format!("http {}", status.as_u16()),
                retry_after,
            }
        }
    }
}

/// A transport error, shortly: the innermost cause names it (connection
/// refused, certificate, DNS).
fn transport_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let what = if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    format!("{what}: {cause}").chars().take(200).collect()
}

//! Shared set-up: ClickHouse, engine config, queries.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use roomgate::config::Config;

pub const SECRET: &str = "engine-integration-test-secret-32b";
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// The encryption root key: a different key from the HMAC root.
pub const ENC_KEY: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Start (or reuse) the launcher's ClickHouse on `port`; returns its URL.
pub fn clickhouse_up(port: u16) -> String {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let root = repo_root();
    let data = root.join(format!("build/clickhouse/test-data-{port}"));
    let venv = Command::new(root.join("scripts/ensure-venv.sh"))
        .status()
        .expect("run scripts/ensure-venv.sh");
    assert!(venv.success(), "scripts/ensure-venv.sh failed");
    let out = Command::new("python3")
        .arg(root.join("scripts/clickhouse.py"))
        .arg("up")
        .env("CLICKHOUSE_HTTP_PORT", port.to_string())
        .env("CLICKHOUSE_DATA", &data)
        .env_remove("CLICKHOUSE_TCP_PORT")
        .output()
        .expect("run scripts/clickhouse.py up");
    assert!(
        out.status.success(),
        "clickhouse up on {port} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    format!("http://127.0.0.1:{port}")
}

/// The ClickHouse port a test binary runs its own server on: `var`, or
/// `default` (the delivery, webhook and grants tests).
#[allow(dead_code)]
pub fn port_from_env(var: &str, default: u16) -> u16 {
    std::env::var(var)
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(default)
}

/// Stops a test's own ClickHouse (on this port) however the test ends
/// (the delivery and webhook tests).
#[allow(dead_code)]
pub struct Down(pub u16);

impl Drop for Down {
    fn drop(&mut self) {
        clickhouse_down(self.0);
    }
}

pub fn clickhouse_down(port: u16) {
    let out = Command::new("python3")
        .arg(repo_root().join("scripts/clickhouse.py"))
        .arg("down")
        .env("CLICKHOUSE_HTTP_PORT", port.to_string())
        .output()
        .expect("run scripts/clickhouse.py down");
    assert!(out.status.success(), "clickhouse down failed");
}

/// The shared test ClickHouse (port from `ROOMGATE_TEST_CLICKHOUSE_PORT`,
/// default 18123).
pub fn shared_clickhouse() -> String {
    let port = std::env::var("ROOMGATE_TEST_CLICKHOUSE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(18123);
    clickhouse_up(port)
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A config on ephemeral ports with a fresh database.
pub fn config(url: &str, name: &str) -> Config {
    let mut cfg = Config::default();
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    cfg.server.admin = "127.0.0.1:0".parse().unwrap();
    let dir = std::env::temp_dir().join(format!(
        "roomgate-it-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    cfg.server.dev_cert_dir = Some(dir.join("cert"));
    cfg.storage.dir = dir.join("data");
    cfg.clickhouse.url = url.to_owned();
    cfg.clickhouse.database = format!("it_{name}_{}_{}", std::process::id(), roomgate::now_ms());
    cfg.clickhouse.retry_initial_ms = 100;
    cfg.clickhouse.retry_max_ms = 500;
    cfg.tickets.secret = Some(SECRET.into());
    cfg.pii.hmac_key = Some(KEY.into());
    cfg.pii.enc_key = Some(ENC_KEY.into());
    cfg.shards.count = 2;
    // Two SO_REUSEPORT endpoints on one port, steered by connection ID:
    // every integration test runs over the several-endpoints path (the
    // default, one per core), whatever cores the test machine has.
    cfg.server.endpoints = 2;
    cfg.batch.default.max_age_ms = 200;
    // No like pacing: a test machine's hiccup would tell a viewer to pace
    // (a notice the tests do not expect). `pace.rs` turns it on.
    cfg.server.like_pace_ms = 0;
    cfg.validate().unwrap()
}

/// `SELECT` a single number.
pub async fn scalar(cfg: &Config, sql: &str) -> u64 {
    let client = clickhouse::Client::default().with_url(&cfg.clickhouse.url);
    let sql = sql.replace("{db}", &cfg.clickhouse.database);
    client
        .query(&sql)
        .fetch_one::<u64>()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ROOMGATE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A minimal HTTP/1.1 request to the admin port: (status, body).
pub async fn admin(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// Run `sql` against ClickHouse's HTTP interface at `url` and return the raw
/// body (any `FORMAT`). HTTP/1.0, so the body is not chunked.
pub async fn http_query(url: &str, sql: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!(
        "POST / HTTP/1.0\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{sql}",
        sql.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{sql}: {out}"
    );
    body.to_owned()
}

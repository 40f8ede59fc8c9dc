//! Lead delivery, push, end to end: the engine with rooms of two
//! merchants (and one of none), leads over real QUIC (accepted, suspect,
//! duplicate, without consent), and a local receiver per merchant. m1's
//! receiver fails (500), times out, fails again — the leads wait in the
//! backlog, visible on the admin API — then recovers: the admin retry
//! drains the backlog; later leads get through after one failure. Checks:
//! every accepted lead arrives, signatures verify (computed here from the
//! documented spec), idempotency keys are exactly the accepted leads'
//! and repeat only with the same body, nothing else is sent, every
//! request is audited, every delivered lead has exactly one
//! `webhook_delivered` audit row (the backlogged ones none until the
//! backlog delivers them), and a restart re-sends nothing. Last, a lead
//! whose receiver keeps refusing it is withdrawn by its viewer while it is
//! being retried: never POSTed again once the withdrawal is stored, and
//! cancelled (not backlogged, not delivered). `make webhook-test`.
//!
//! Its own ClickHouse on `ROOMGATE_WEBHOOK_CLICKHOUSE_PORT` (default
//! 18164), through the project's launcher; stopped at the end.

#[allow(dead_code)]
#[path = "../it/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../it/harness.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use roomgate::config::{Secret, WebhookMerchantConfig, WebhooksConfig};
use roomgate::engine::Engine;
use roomgate::wire::{ClientFrame, Lead, ServerFrame};
use serde_json::Value;
use sha2::Sha256;

use crate::client::Viewer;

const TOKEN: &str = "webhook-test-admin-token";
const SECRET_M1: &str = "m1-webhook-secret-0123456789abcdef";
const SECRET_M2: &str = "m2-webhook-secret-0123456789abcdef";
const TIMEOUT_MS: u64 = 400;

fn port() -> u16 {
    harness::port_from_env("ROOMGATE_WEBHOOK_CLICKHOUSE_PORT", 18164)
}

/// How m1's receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Attempt 1: 500; 2: sleep past the timeout; 3+: 500.
    Down,
    /// Attempt 1: 500 (with Retry-After: 0); later attempts: 200.
    Flaky,
    /// 200.
    Up,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    merchant: String,
    timestamp: String,
    signature: String,
    key: String,
    attempt: u32,
    body: Vec<u8>,
    status: u16,
}

#[derive(Default)]
struct Receiver {
    mode: Mutex<Option<Mode>>,
    /// Idempotency keys always answered 500, whatever the mode.
    refuse: Mutex<BTreeSet<String>>,
    seen: Mutex<Vec<Seen>>,
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    UrlPath(merchant): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, HeaderMap, &'static str) {
    let attempt: u32 = header(&headers, "roomgate-attempt").parse().unwrap_or(0);
    let mode = if merchant == "m1" {
        r.mode.lock().unwrap().unwrap_or(Mode::Up)
    } else {
        Mode::Up
    };
    let refused = r
        .refuse
        .lock()
        .unwrap()
        .contains(&header(&headers, "roomgate-idempotency-key"));
    let (status, sleep) = match (mode, attempt) {
        _ if refused => (StatusCode::INTERNAL_SERVER_ERROR, false),
        (Mode::Down, 2) => (StatusCode::OK, true),
        (Mode::Down, _) => (StatusCode::INTERNAL_SERVER_ERROR, false),
        (Mode::Flaky, 1) => (StatusCode::SERVICE_UNAVAILABLE, false),
        _ => (StatusCode::OK, false),
    };
    r.seen.lock().unwrap().push(Seen {
        merchant,
        timestamp: header(&headers, "roomgate-timestamp"),
        signature: header(&headers, "roomgate-signature"),
        key: header(&headers, "roomgate-idempotency-key"),
        attempt,
        body: body.to_vec(),
        status: if sleep { 0 } else { status.as_u16() },
    });
    if sleep {
        // Past the sender's timeout: it gives up on this attempt.
        tokio::time::sleep(Duration::from_millis(TIMEOUT_MS + 300)).await;
    }
    let mut h = HeaderMap::new();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert("retry-after", "0".parse().unwrap());
    }
    // An answer that echoes personal data: never stored by the sender.
    (status, h, "{\"echo\": \"+8613800000000\"}")
}

/// A lead from `viewer` in `room`; its verdict code.
async fn send_lead(
    addr: SocketAddr,
    certs: &Path,
    room: u64,
    viewer: u64,
    phone: &str,
    consent: bool,
) -> u8 {
    let mut v = Viewer::join(addr, certs, room, viewer).await;
    v.send(&ClientFrame::Lead(Lead {
        client_lead_id: 1,
        phone: phone.to_owned(),
        wechat: format!("wx_{viewer}"),
        name: format!("客户{viewer}"),
        fields: vec![("course".into(), format!("piano-{viewer}"))],
        consent,
        consent_version: "v1".into(),
        fill_ms: 25_000,
        ..Lead::default()
    }))
    .await;
    loop {
        match v.next_within(Duration::from_secs(10)).await {
            Some(ServerFrame::Ack { verdict, .. }) => return verdict,
            Some(ServerFrame::Notice(_)) => {}
            other => panic!("room {room} viewer {viewer}: unexpected {other:?}"),
        }
    }
}

/// The documented verification, written here from the spec (not the
/// engine's code): HMAC-SHA256(secret, "<timestamp>.<body>") in hex, one
/// of the `v1=` values; the timestamp within 5 minutes.
fn verifies(secret: &str, s: &Seen) -> bool {
    let ts: i64 = s.timestamp.parse().unwrap();
    let now = roomgate::now_ms() / 1000;
    if (now - ts).abs() > 300 {
        return false;
    }
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(format!("{ts}.").as_bytes());
    m.update(&s.body);
    let want = hex::encode(m.finalize().into_bytes());
    s.signature
        .split(',')
        .any(|p| p.strip_prefix("v1=") == Some(want.as_str()))
}

async fn admin(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = harness::admin(addr, method, path, Some(TOKEN), body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn wait_for(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f().await {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deliver_every_accepted_lead_signed_retried_and_backlogged() {
    harness::init_tracing();
    let t0 = std::time::Instant::now();
    let url = harness::clickhouse_up(port());
    let _down = harness::Down(port());

    // The merchants' receivers.
    let recv = Arc::new(Receiver::default());
    *recv.mode.lock().unwrap() = Some(Mode::Down);
    let app = axum::Router::new()
        .route("/hooks/{merchant}", axum::routing::post(receive))
        .with_state(recv.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut cfg = harness::config(&url, "webhook");
    cfg.rooms = roomgate::config::Config::from_toml(
        "[[rooms]]\nid = 101\nmerchant = \"m1\"\n[[rooms]]\nid = 102\nmerchant = \"m1\"\n\
         [[rooms]]\nid = 201\nmerchant = \"m2\"\n",
    )
    .unwrap()
    .rooms;
    cfg.guard.leads.max_per_ip = 1_000;
    cfg.guard.leads.virtual_operator_penalty = 50;
    cfg.clickhouse.shutdown_flush_ms = 1_000;
    cfg.server.admin_token = Some(Secret::new(TOKEN));
    let merchant = |m: &str, secret: &str| WebhookMerchantConfig {
        merchant: m.into(),
        url: format!("http://{hook}/hooks/{m}"),
        secret: Some(Secret::new(secret)),
        secret_env: None,
        previous_secret: None,
        previous_secret_env: None,
        include_suspect: false,
    };
    cfg.webhooks = Some(WebhooksConfig {
        merchants: vec![merchant("m1", SECRET_M1), merchant("m2", SECRET_M2)],
        interval_ms: 100,
        settle_ms: 300,
        batch: 3,
        concurrency: 2,
        max_attempts: 3,
        backoff_initial_ms: 50,
        backoff_max_ms: 200,
        timeout_ms: TIMEOUT_MS,
        // Only the admin call drains the backlog in this test.
        backlog_retry_secs: 3_600,
        insecure_http: true,
        query_timeout_ms: 3_000,
        ..WebhooksConfig::default()
    });
    let cfg = cfg.validate().unwrap();
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let engine = Engine::start(cfg.clone()).await.unwrap();
    let (quic, adm) = (engine.quic_addr(), engine.admin_addr());

    // Leads: m1's accepted ones, m2's, one of no merchant, and for m1 a
    // suspect, a duplicate and one without consent, none to be sent.
    let mut accepted: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (room, viewer) in [(101, 1), (102, 2), (101, 3), (102, 4)] {
        let phone = format!("1380013{room:03}{viewer}");
        assert_eq!(send_lead(quic, &certs, room, viewer, &phone, true).await, 1);
        accepted.insert(
            format!("{room}-{viewer}-1"),
            ("m1".into(), format!("+86{phone}")),
        );
    }
    for (room, viewer) in [(201, 20), (201, 21), (301, 30)] {
        let phone = format!("139001{room:03}{viewer:02}");
        assert_eq!(send_lead(quic, &certs, room, viewer, &phone, true).await, 1);
        if room == 201 {
            accepted.insert(
                format!("{room}-{viewer}-1"),
                ("m2".into(), format!("+86{phone}")),
            );
        }
    }
    assert_eq!(
        send_lead(quic, &certs, 102, 8, "17055512398", true).await,
        2
    );
    assert_eq!(
        send_lead(quic, &certs, 101, 9, "13800131011", true).await,
        4
    );
    assert_ne!(
        send_lead(quic, &certs, 101, 10, "13800131210", false).await,
        1
    );

    // m1's receiver is down: each lead fails, times out, fails, and waits
    // in the backlog; m2's get through.
    // One count query, for the backlog's states and the audit's deliveries.
    let count = |sql: String| {
        let cfg = cfg.clone();
        async move { harness::scalar(&cfg, &sql).await }
    };
    let backlog_of = |m: &str, state: &str| {
        count(format!("SELECT count() FROM {{db}}.webhook_backlog FINAL WHERE merchant_id = '{m}' AND state = '{state}'"))
    };
    wait_for("m1's four leads in the backlog", 30, async || {
        backlog_of("m1", "waiting").await == 4
    })
    .await;
    // Deliveries in the audit: a `webhook_delivered` row per 2xx only.
    let delivered_rows = |m: &str| {
        count(format!("SELECT count() FROM {{db}}.lead_audit WHERE action = 'webhook_delivered' AND merchant_id = '{m}'"))
    };
    wait_for("m2's two deliveries audited", 10, async || {
        delivered_rows("m2").await == 2
    })
    .await;
    assert_eq!(
        delivered_rows("m1").await,
        0,
        "m1's leads failed every attempt: no delivery"
    );
    assert_eq!(
        harness::scalar(
            &cfg,
            "SELECT count() FROM {db}.lead_audit WHERE action = 'webhook' AND merchant_id = 'm1'",
        )
        .await,
        12,
        "m1: four leads, three attempts each, each audited before it left"
    );
    let m2_ok = recv
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.merchant == "m2" && s.status == 200)
        .count();
    assert_eq!(m2_ok, 2, "m2's receiver is up");
    {
        let seen = recv.seen.lock().unwrap();
        let mut per_key: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for s in seen.iter().filter(|s| s.merchant == "m1") {
            per_key.entry(&s.key).or_default().push(s.attempt);
        }
        assert_eq!(per_key.len(), 4, "{per_key:?}");
        for (k, attempts) in &per_key {
            let mut a = attempts.clone();
            a.sort();
            assert_eq!(a, [1, 2, 3], "{k}: max_attempts, then the backlog");
        }
    }

    // The admin API shows it: status, backlog entries (no personal data),
    // token required.
    let (status, _) = harness::admin(adm, "GET", "/admin/webhooks", None, "").await;
    assert_eq!(status, 401);
    let (status, s) = admin(adm, "GET", "/admin/webhooks", "").await;
    assert_eq!(status, 200, "{s}");
    let m1 = &s["merchants"][0];
    assert_eq!(m1["merchant"], "m1");
    assert_eq!(m1["backlog"]["waiting"], 4, "{s}");
    assert!(
        m1["here"]["consecutive_failures"].as_u64().unwrap() >= 3,
        "{s}"
    );
    assert!(m1["here"]["sending_here"].as_bool().unwrap());
    assert!(
        !m1["cursor"].is_null(),
        "the cursor passed the backlogged page: {s}"
    );
    assert_eq!(s["merchants"][1]["backlog"]["waiting"], 0);
    let (status, b) = admin(adm, "GET", "/admin/webhooks/backlog?merchant=m1", "").await;
    assert_eq!(status, 200, "{b}");
    let entries = b["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    for e in entries {
        assert_eq!(
            (&e["state"], &e["attempts"]),
            (&Value::from("waiting"), &Value::from(3)),
            "{e}"
        );
        let err = e["last_error"].as_str().unwrap();
        assert!(err == "http 500" || err.starts_with("timeout"), "{err}");
    }
    let text = b.to_string();
    assert!(!text.contains("+86") && !text.contains("wx_"), "{text}");
    let (status, _) = admin(adm, "GET", "/admin/webhooks/backlog?state=nope", "").await;
    assert_eq!(status, 400);
    let (status, _) = admin(
        adm,
        "POST",
        "/admin/webhooks/backlog/retry",
        "{\"merchant\":\"m9\"}",
    )
    .await;
    assert_eq!(status, 404);

    // A retry while still down: one probe, nothing delivered, all waiting.
    let (status, r) = admin(
        adm,
        "POST",
        "/admin/webhooks/backlog/retry",
        "{\"merchant\":\"m1\"}",
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let rep = &r["merchants"][0]["report"];
    assert_eq!(
        (rep["attempted"].as_u64(), rep["delivered"].as_u64()),
        (Some(1), Some(0)),
        "{r}"
    );
    assert_eq!(rep["waiting"], 4, "{r}");

    // Recovered: the admin retry drains the backlog.
    *recv.mode.lock().unwrap() = Some(Mode::Up);
    let (status, r) = admin(adm, "POST", "/admin/webhooks/backlog/retry", "").await;
    assert_eq!(status, 200, "{r}");
    let rep = &r["merchants"][0]["report"];
    assert_eq!(rep["delivered"], 4, "{r}");
    assert_eq!(rep["waiting"], 0, "{r}");
    assert_eq!(backlog_of("m1", "delivered").await, 4);
    assert_eq!(
        delivered_rows("m1").await,
        4,
        "the backlog delivered them: one delivery row each"
    );

    // Later leads: the first attempt fails (503, Retry-After: 0), the
    // second gets through; nothing waits.
    *recv.mode.lock().unwrap() = Some(Mode::Flaky);
    for (room, viewer) in [(101, 5), (102, 6)] {
        let phone = format!("1380013{room:03}{viewer}");
        assert_eq!(send_lead(quic, &certs, room, viewer, &phone, true).await, 1);
        accepted.insert(
            format!("{room}-{viewer}-1"),
            ("m1".into(), format!("+86{phone}")),
        );
    }
    let delivered = |recv: &Receiver| -> BTreeSet<String> {
        recv.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.status == 200)
            .map(|s| s.key.clone())
            .collect()
    };
    let want: BTreeSet<String> = accepted.keys().cloned().collect();
    wait_for("every accepted lead delivered", 20, async || {
        delivered(&recv) == want
    })
    .await;
    assert_eq!(backlog_of("m1", "waiting").await, 0);

    // A restart re-sends nothing: the cursor and the backlog are in
    // ClickHouse. (Restarted with many attempts per lead: the withdrawal
    // below happens while a lead is still being retried from its page.)
    let before = recv.seen.lock().unwrap().len();
    engine.shutdown().await.unwrap();
    let mut cfg2 = cfg.clone();
    if let Some(w) = cfg2.webhooks.as_mut() {
        w.max_attempts = 100;
    }
    let engine = Engine::start(cfg2).await.unwrap();
    let (quic, adm) = (engine.quic_addr(), engine.admin_addr());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        recv.seen.lock().unwrap().len(),
        before,
        "re-sent after a restart"
    );

    // Every request: signed under its merchant's secret, about an accepted
    // lead of that merchant, decrypted; a key repeats only with the same
    // body.
    let seen = recv.seen.lock().unwrap().clone();
    let mut bodies: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for s in &seen {
        let (m, phone) = accepted
            .get(&s.key)
            .unwrap_or_else(|| panic!("{} sent, not an accepted lead", s.key));
        assert_eq!(&s.merchant, m, "{}", s.key);
        let secret = if m == "m1" { SECRET_M1 } else { SECRET_M2 };
        assert!(verifies(secret, s), "{}: signature", s.key);
        let other = if m == "m1" { SECRET_M2 } else { SECRET_M1 };
        assert!(!verifies(other, s));
        let body: Value = serde_json::from_slice(&s.body).unwrap();
        assert_eq!(body["idempotency_key"], s.key.as_str());
        assert_eq!(body["merchant"], m.as_str());
        assert_eq!(body["lead"]["phone"], phone.as_str());
        assert_eq!(body["lead"]["verdict"], "accepted");
        assert_eq!(body["lead"]["decrypted"], true);
        let first = bodies
            .entry(s.key.clone())
            .or_insert_with(|| s.body.clone());
        assert_eq!(first, &s.body, "{}: a retry is the same body", s.key);
    }
    let keys: BTreeSet<String> = seen.iter().map(|s| s.key.clone()).collect();
    assert_eq!(keys, want, "exactly the accepted leads");
    for k in ["102-8-1", "101-9-1", "101-10-1", "301-30-1"] {
        assert!(!keys.contains(k), "{k} is not to be sent");
    }
    // Timeouts happened, and Retry-After was honoured.
    assert!(seen.iter().any(|s| s.status == 0));
    assert!(seen.iter().any(|s| s.status == 503));

    // Audit: every request has its row (written before it left), naming
    // the webhook and the attempt.
    for s in &seen {
        let (room, rest) = s.key.split_once('-').unwrap();
        let (viewer, id) = rest.split_once('-').unwrap();
        let n = harness::scalar(
            &cfg,
            &format!(
                "SELECT count() FROM {{db}}.lead_audit WHERE action = 'webhook' AND merchant_id = '{}' \
                 AND actor = 'webhook:{hook}' AND room_id = {room} AND viewer_id = {viewer} \
                 AND client_lead_id = {id} AND detail LIKE 'verdict=accepted;attempt={}%'",
                s.merchant, s.attempt
            ),
        )
        .await;
        assert!(n >= 1, "{} attempt {}: not audited", s.key, s.attempt);
    }
    let audited = harness::scalar(
        &cfg,
        "SELECT count() FROM {db}.lead_audit WHERE action = 'webhook'",
    )
    .await;
    assert!(audited as usize >= seen.len(), "{audited} < {}", seen.len());

    // Deliveries: exactly one `webhook_delivered` row per delivered lead
    // (each got exactly one 2xx), naming the webhook, after the 2xx.
    for s in seen.iter().filter(|s| s.status == 200) {
        let (room, rest) = s.key.split_once('-').unwrap();
        let (viewer, id) = rest.split_once('-').unwrap();
        let n = harness::scalar(
            &cfg,
            &format!(
                "SELECT count() FROM {{db}}.lead_audit WHERE action = 'webhook_delivered' \
                 AND merchant_id = '{}' AND actor = 'webhook:{hook}' AND room_id = {room} \
                 AND viewer_id = {viewer} AND client_lead_id = {id} \
                 AND detail LIKE 'verdict=accepted;attempt={}%'",
                s.merchant, s.attempt
            ),
        )
        .await;
        assert_eq!(n, 1, "{}: one delivery row", s.key);
    }
    assert_eq!(
        seen.iter().filter(|s| s.status == 200).count(),
        want.len(),
        "one 2xx per lead"
    );
    assert_eq!(
        harness::scalar(
            &cfg,
            "SELECT count() FROM {db}.lead_audit WHERE action = 'webhook_delivered'",
        )
        .await as usize,
        want.len(),
        "a delivery row per delivered lead, none for a failed attempt"
    );

    // A lead withdrawn while its webhook is being retried: m1's receiver
    // refuses it (500) every time; its viewer withdraws it; once the
    // withdrawal is stored it is never POSTed again, and it is cancelled,
    // not backlogged.
    const GONE: &str = "101-40-1";
    recv.refuse.lock().unwrap().insert(GONE.into());
    let tries = |recv: &Receiver| {
        let seen = recv.seen.lock().unwrap();
        let mine: Vec<u16> = seen
            .iter()
            .filter(|s| s.key == GONE)
            .map(|s| s.status)
            .collect();
        mine
    };
    assert_eq!(
        send_lead(quic, &certs, 101, 40, "13800131040", true).await,
        1
    );
    wait_for("the lead being retried", 20, async || {
        tries(&recv).len() >= 2
    })
    .await;
    let mut v = Viewer::join(quic, &certs, 101, 40).await;
    assert_eq!(v.withdraw(1).await, (3, 1, 1), "withdrawal acked");
    wait_for("the withdrawal stored", 20, async || {
        harness::scalar(
            &cfg,
            "SELECT count() FROM {db}.lead_withdrawals WHERE room_id = 101 AND viewer_id = 40 AND client_lead_id = 1",
        )
        .await
            >= 1
    })
    .await;
    // A wave checked just before the row landed may still go out (it is
    // answered at once); nothing after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = tries(&recv);
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let end = tries(&recv);
    assert_eq!(
        end.len(),
        after.len(),
        "{GONE} POSTed after its withdrawal was stored"
    );
    assert!(
        end.len() < 100,
        "{GONE}: still being retried when withdrawn ({} attempts)",
        end.len()
    );
    assert!(end.iter().all(|&st| st == 500), "{end:?}");
    let (status, s) = admin(adm, "GET", "/admin/webhooks", "").await;
    assert_eq!(status, 200, "{s}");
    let here = &s["merchants"][0]["here"];
    assert_eq!(here["cancelled"], 1, "{s}");
    assert_eq!(here["in_flight"], 0, "the page settled: {s}");
    assert_eq!(
        harness::scalar(
            &cfg,
            "SELECT count() FROM {db}.webhook_backlog WHERE room_id = 101 AND viewer_id = 40",
        )
        .await,
        0,
        "cancelled, not backlogged"
    );
    assert_eq!(
        harness::scalar(
            &cfg,
            "SELECT count() FROM {db}.lead_audit WHERE action = 'webhook_delivered' AND room_id = 101 AND viewer_id = 40",
        )
        .await,
        0
    );
    assert_eq!(
        harness::scalar(
            &cfg,
            "SELECT count() FROM {db}.lead_audit WHERE action = 'webhook' AND room_id = 101 AND viewer_id = 40",
        )
        .await as usize,
        end.len(),
        "every attempt audited, nothing more"
    );

    // Metrics.
    let (status, m) = harness::admin(engine.admin_addr(), "GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    assert!(
        m.contains("roomgate_webhook_requests_total{result=\"delivered\"}"),
        "{m}"
    );
    assert!(m.contains("roomgate_webhook_backlog_waiting 0"), "{m}");
    assert!(
        m.contains("roomgate_webhook_leads_total{outcome=\"cancelled\"} 1"),
        "{m}"
    );

    engine.shutdown().await.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("webhook test: {secs:.1} s, {} requests", seen.len());
    assert!(secs < 60.0, "took {secs:.1} s");
}

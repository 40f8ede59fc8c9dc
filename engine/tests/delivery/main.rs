//! Lead delivery, pull, end to end: the engine with rooms of two
//! merchants (and one of none), leads over real QUIC (accepted, suspect,
//! duplicate), then the merchant API over HTTPS: pages, cursor, suspect
//! flag, isolation, errors, the audit, and 503 with ClickHouse down.
//! `make delivery-test`.
//!
//! Its own ClickHouse on `ROOMGATE_DELIVERY_CLICKHOUSE_PORT` (default
//! 18162), through the project's launcher; stopped at the end.

#[allow(dead_code)]
#[path = "../it/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../it/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use roomgate::config::{ApiKeyConfig, MerchantApiConfig};
use roomgate::engine::Engine;
use roomgate::wire::{ClientFrame, Lead, ServerFrame};
use serde_json::Value;

use crate::client::Viewer;

fn port() -> u16 {
    harness::port_from_env("ROOMGATE_DELIVERY_CLICKHOUSE_PORT", 18162)
}

/// A lead from `viewer` in `room`; its verdict code.
async fn send_lead(addr: SocketAddr, certs: &Path, room: u64, viewer: u64, phone: &str) -> u8 {
    let mut v = Viewer::join(addr, certs, room, viewer).await;
    v.send(&ClientFrame::Lead(Lead {
        client_lead_id: 1,
        phone: phone.to_owned(),
        wechat: format!("wx_{viewer}"),
        name: format!("客户{viewer}"),
        fields: vec![("course".into(), format!("piano-{viewer}"))],
        consent: true,
        consent_version: "2026-12-v3".into(),
        fill_ms: 25_000,
        ..Lead::default()
    }))
    .await;
    loop {
        match v.next_within(Duration::from_secs(10)).await {
            Some(ServerFrame::Ack {
                verdict, reason, ..
            }) => {
                eprintln!(
                    "room {room} viewer {viewer} {phone}: verdict {verdict} reason {reason:?}"
                );
                return verdict;
            }
            Some(ServerFrame::Notice(_)) => {}
            other => panic!("room {room} viewer {viewer}: unexpected {other:?}"),
        }
    }
}

/// One HTTPS request (`body`: a JSON body to POST, else a GET) with an
/// optional bearer key: (status, JSON body).
async fn https(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let req = match body {
        None => {
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
        }
        Some(b) => format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{b}",
            b.len()
        ),
    };
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let out = String::from_utf8(out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// `GET path` over HTTPS with an optional bearer key.
async fn get(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
    key: Option<&str>,
) -> (u16, Value) {
    https(addr, tls, path, key, None).await
}

/// `POST path` with a JSON body over HTTPS.
async fn post(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
    key: &str,
    body: &str,
) -> (u16, Value) {
    https(addr, tls, path, Some(key), Some(body)).await
}

/// Rows of `leads` for `keys` (room, viewer; lead id 1) that still hold
/// personal data.
async fn personal_left(cfg: &roomgate::config::Config, keys: &[(u64, u64)]) -> u64 {
    let list = keys
        .iter()
        .map(|(r, v)| format!("({r}, {v}, 1)"))
        .collect::<Vec<_>>()
        .join(", ");
    harness::scalar(
        cfg,
        &format!(
            "SELECT count() FROM {{db}}.leads WHERE (room_id, viewer_id, client_lead_id) IN ({list}) \
             AND (phone_masked != '' OR phone_enc != '' OR wechat_enc != '' OR name_enc != '' OR fields_enc != '')"
        ),
    )
    .await
}

/// Every page from `cursor` on with `limit`: the leads, the last cursor,
/// the number of requests.
async fn pull_all(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    key: &str,
    query: &str,
    limit: u32,
) -> (Vec<Value>, String, usize) {
    let (mut leads, mut cursor, mut calls) = (Vec::new(), String::new(), 0);
    loop {
        let path = format!("/v1/leads?limit={limit}&cursor={cursor}{query}");
        let (status, body) = get(addr, tls, &path, Some(key)).await;
        assert_eq!(status, 200, "{body}");
        calls += 1;
        let page = body["leads"].as_array().unwrap().clone();
        assert!(page.len() <= limit as usize);
        if let Some(c) = body["next_cursor"].as_str() {
            cursor = c.to_owned();
        }
        let more = body["has_more"].as_bool().unwrap();
        leads.extend(page);
        if !more {
            return (leads, cursor, calls);
        }
        assert!(calls < 50, "no end");
    }
}

fn key_of(l: &Value) -> (i64, u64, u64, u64) {
    (
        l["ts"].as_i64().unwrap(),
        l["room_id"].as_u64().unwrap(),
        l["viewer_id"].as_u64().unwrap(),
        l["client_lead_id"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchants_pull_their_accepted_leads_once_each_audited() {
    harness::init_tracing();
    let t0 = std::time::Instant::now();
    let url = harness::clickhouse_up(port());
    let _down = harness::Down(port());

    // HTTPS material for the merchant API, and a client that trusts it.
    let dir = std::env::temp_dir().join(format!(
        "roomgate-delivery-{}-{}",
        std::process::id(),
        roomgate::now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("api-cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("api-key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );

    let (k1, h1) = roomgate::delivery::keys::generate("k1");
    let (k2, h2) = roomgate::delivery::keys::generate("k2");
    let mut cfg = harness::config(&url, "delivery");
    cfg.rooms = roomgate::config::Config::from_toml(
        "[[rooms]]\nid = 101\nmerchant = \"m1\"\n[[rooms]]\nid = 102\nmerchant = \"m1\"\n\
         [[rooms]]\nid = 201\nmerchant = \"m2\"\n",
    )
    .unwrap()
    .rooms;
    cfg.guard.leads.max_per_ip = 1_000;
    // 170… numbers (virtual operators) become suspect.
    cfg.guard.leads.virtual_operator_penalty = 50;
    cfg.clickhouse.shutdown_flush_ms = 1_000;
    cfg.erasure.interval_secs = 1;
    cfg.server.admin_token = Some("admin-token-0123456789".into());
    cfg.merchant_api = Some(MerchantApiConfig {
        listen: "127.0.0.1:0".into(),
        cert: Some(dir.join("api-cert.pem")),
        key: Some(dir.join("api-key.pem")),
        keys: vec![
            ApiKeyConfig {
                merchant: "m1".into(),
                key_id: "k1".into(),
                sha256: h1,
            },
            ApiKeyConfig {
                merchant: "m2".into(),
                key_id: "k2".into(),
                sha256: h2,
            },
        ],
        settle_ms: 300,
        query_timeout_ms: 3_000,
        ..MerchantApiConfig::default()
    });
    let cfg = cfg.validate().unwrap();
    let db = cfg.clickhouse.database.clone();
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let engine = Engine::start(cfg.clone()).await.unwrap();
    let (quic, api) = (engine.quic_addr(), engine.merchant_api_addr().unwrap());

    // Leads: m1's rooms 101 and 102, m2's 201, 301 of no merchant.
    let mut sent: HashMap<(u64, u64), String> = HashMap::new();
    let mut accepted_m1 = 0;
    for (room, viewer) in [
        (101, 1),
        (102, 5),
        (101, 2),
        (102, 6),
        (101, 3),
        (102, 7),
        (101, 4),
    ] {
        let phone = format!("1380013{room:03}{viewer}");
        assert_eq!(send_lead(quic, &certs, room, viewer, &phone).await, 1);
        sent.insert((room, viewer), format!("+86{phone}"));
        accepted_m1 += 1;
    }
    for (room, viewer) in [(201, 20), (201, 21), (301, 30)] {
        let phone = format!("139001{room:03}{viewer:02}");
        assert_eq!(send_lead(quic, &certs, room, viewer, &phone).await, 1);
        sent.insert((room, viewer), format!("+86{phone}"));
    }
    // Suspect (a virtual operator's number) and duplicate (viewer 1's
    // phone again in room 101).
    assert_eq!(send_lead(quic, &certs, 102, 8, "17055512398").await, 2);
    assert_eq!(send_lead(quic, &certs, 101, 9, "13800131011").await, 4);

    // All twelve stored and the mapping written; then past the settle delay.
    let stored = async {
        loop {
            let n = harness::scalar(&cfg, "SELECT count() FROM {db}.leads").await;
            let m = harness::scalar(&cfg, "SELECT count() FROM {db}.room_merchants FINAL").await;
            if n == 12 && m == 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), stored)
        .await
        .expect("leads and mapping stored");
    tokio::time::sleep(Duration::from_millis(400)).await;

    // m1, three at a time: exactly its accepted leads, once each, in order,
    // decrypted.
    let (m1, last, calls) = pull_all(api, &tls, &k1, "", 3).await;
    assert_eq!(m1.len(), accepted_m1, "{m1:?}");
    assert_eq!(calls, 3, "7 leads in pages of 3: 3 + 3 + 1");
    // In the order they were stored: (inserted_at, room, viewer, id).
    let mut keys = Vec::new();
    for l in &m1 {
        let (_, room, viewer, id) = key_of(l);
        let at = harness::scalar(
            &cfg,
            &format!(
                "SELECT toUInt64(toUnixTimestamp64Milli(min(inserted_at))) FROM {{db}}.leads \
                 WHERE room_id = {room} AND viewer_id = {viewer} AND client_lead_id = {id}"
            ),
        )
        .await;
        keys.push((at, room, viewer, id));
    }
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "strictly ordered: {keys:?}"
    );
    for l in &m1 {
        let (room, viewer) = (
            l["room_id"].as_u64().unwrap(),
            l["viewer_id"].as_u64().unwrap(),
        );
        assert!(room == 101 || room == 102, "{l}");
        assert_eq!(l["verdict"], "accepted");
        assert_eq!(
            l["phone"].as_str(),
            Some(sent[&(room, viewer)].as_str()),
            "{l}"
        );
        assert_eq!(l["wechat"].as_str(), Some(format!("wx_{viewer}").as_str()));
        assert_eq!(l["name"].as_str(), Some(format!("客户{viewer}").as_str()));
        assert_eq!(l["fields"]["course"], format!("piano-{viewer}"));
        assert_eq!(
            (&l["consent"], &l["decrypted"]),
            (&Value::Bool(true), &Value::Bool(true))
        );
        assert_eq!(l["consent_version"], "2026-12-v3");
        let text = l.to_string();
        assert!(!text.contains("hmac") && !text.contains("_enc") && !text.contains("****"));
    }
    // Caught up: the last cursor gives nothing new and stays valid.
    let (status, body) = get(api, &tls, &format!("/v1/leads?cursor={last}"), Some(&k1)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["leads"].as_array().unwrap().len(), 0);
    assert_eq!(body["next_cursor"].as_str(), Some(last.as_str()));
    // A consumer that crashed after page 1 resumes with page 1's cursor
    // and gets page 2 again, the same leads.
    let (_, p1) = get(api, &tls, "/v1/leads?limit=3", Some(&k1)).await;
    let c1 = p1["next_cursor"].as_str().unwrap().to_owned();
    let (_, p2) = get(
        api,
        &tls,
        &format!("/v1/leads?limit=3&cursor={c1}"),
        Some(&k1),
    )
    .await;
    let (_, p2_again) = get(
        api,
        &tls,
        &format!("/v1/leads?limit=3&cursor={c1}"),
        Some(&k1),
    )
    .await;
    assert_eq!(p2["leads"], p2_again["leads"]);
    assert_eq!(p2["leads"].as_array().unwrap()[..], m1[3..6]);

    // The suspect lead only when asked for; never the duplicate.
    assert!(!m1
        .iter()
        .any(|l| l["viewer_id"] == 8 || l["viewer_id"] == 9));
    let (with_suspect, _, _) = pull_all(api, &tls, &k1, "&include=suspect", 1000).await;
    assert_eq!(with_suspect.len(), accepted_m1 + 1);
    let suspect: Vec<_> = with_suspect
        .iter()
        .filter(|l| l["verdict"] == "suspect")
        .collect();
    assert_eq!(suspect.len(), 1);
    assert_eq!(suspect[0]["viewer_id"], 8);
    assert_eq!(suspect[0]["phone"], "+8617055512398");
    assert!(!with_suspect.iter().any(|l| l["viewer_id"] == 9));

    // m2 sees its two and none of m1's; room 301 (no merchant) nobody.
    let (m2, _, _) = pull_all(api, &tls, &k2, "", 100).await;
    let rooms: Vec<_> = m2.iter().map(|l| l["room_id"].as_u64().unwrap()).collect();
    assert_eq!(rooms, [201, 201]);

    // Errors: m1's cursor for m2, an altered cursor, bad limits, bad keys.
    let (status, _) = get(api, &tls, &format!("/v1/leads?cursor={last}"), Some(&k2)).await;
    assert_eq!(status, 400);
    let mut altered = last.clone().into_bytes();
    altered[10] = if altered[10] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let (status, body) = get(api, &tls, &format!("/v1/leads?cursor={altered}"), Some(&k1)).await;
    assert_eq!(status, 400, "{body}");
    for q in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "include=rejected",
        "cursor=%21%21",
    ] {
        let (status, _) = get(api, &tls, &format!("/v1/leads?{q}"), Some(&k1)).await;
        assert_eq!(status, 400, "{q}");
    }
    let wrong = format!("k1.{}", k2.split_once('.').unwrap().1);
    for key in [Some(wrong.as_str()), Some("k1.nope"), None] {
        let (status, body) = get(api, &tls, "/v1/leads", key).await;
        assert_eq!(status, 401, "{key:?}");
        assert!(body["leads"].is_null());
    }

    // Audit: one row per lead per delivery, by key, before the answer.
    let delivered_m1 = m1.len() + 3 + 3 + 3 + with_suspect.len();
    assert_eq!(
        harness::scalar(&cfg, "SELECT count() FROM {db}.lead_audit WHERE merchant_id = 'm1' AND actor = 'k1' AND action = 'pull'").await,
        delivered_m1 as u64
    );
    assert_eq!(
        harness::scalar(
            &cfg,
            "SELECT count() FROM {db}.lead_audit WHERE merchant_id = 'm2' AND actor = 'k2'"
        )
        .await,
        2
    );
    for l in &with_suspect {
        let (_, room, viewer, id) = key_of(l);
        let n = harness::scalar(
            &cfg,
            &format!(
            "SELECT count() FROM {{db}}.lead_audit WHERE merchant_id = 'm1' AND room_id = {room} \
             AND viewer_id = {viewer} AND client_lead_id = {id}"
        ),
        )
        .await;
        assert!(
            n >= 1,
            "lead {room}/{viewer}/{id} delivered without an audit row"
        );
    }
    assert_eq!(
        harness::scalar(
            &cfg,
            "SELECT count() FROM {db}.lead_audit WHERE detail = 'verdict=suspect'"
        )
        .await,
        1
    );
    assert_eq!(
        harness::scalar(
            &cfg,
            "SELECT count() FROM {db}.lead_audit WHERE room_id = 301"
        )
        .await,
        0
    );
    let _ = db;

    // A lead stored late (decided a minute before the leads already
    // delivered, stored only now: a node's log draining after an outage)
    // comes after the cursor, not behind it. A copy of viewer 2's lead
    // under another id (its ciphertexts do not decrypt there: bound to
    // the id).
    clickhouse::Client::default()
        .with_url(&cfg.clickhouse.url)
        .query(&format!(
            "INSERT INTO {db}.leads (room_id, ts, viewer_id, session_id, client_lead_id, verdict, \
             reason, score, phone_hmac, phone_masked, phone_enc, pii_key_id, consent, consent_version) \
             SELECT room_id, ts - INTERVAL 60 SECOND, viewer_id, session_id, 99, verdict, reason, score, \
             phone_hmac, phone_masked, phone_enc, pii_key_id, consent, consent_version \
             FROM {db}.leads WHERE room_id = 101 AND viewer_id = 2"
        ))
        .execute()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, body) = get(api, &tls, &format!("/v1/leads?cursor={last}"), Some(&k1)).await;
    assert_eq!(status, 200, "{body}");
    let late = body["leads"].as_array().unwrap();
    assert_eq!(late.len(), 1, "{body}");
    assert_eq!(
        (&late[0]["viewer_id"], &late[0]["client_lead_id"]),
        (&Value::from(2), &Value::from(99))
    );
    let first_ts = m1.iter().map(|l| l["ts"].as_i64().unwrap()).min().unwrap();
    assert!(
        late[0]["ts"].as_i64().unwrap() < first_ts,
        "decided before every delivered lead"
    );

    // Withdrawal and erasure. Viewer 1 of room 101 withdraws its lead over
    // the protocol; m1 erases viewer 5's lead of room 102 through the API;
    // the platform erases viewer 20's of m2's room 201 (admin API).
    let mut v = Viewer::join(quic, &certs, 101, 1).await;
    assert_eq!(v.withdraw(1).await, (3, 1, 1));
    let erase = |room: u64, viewer: u64| {
        format!(r#"{{"room_id": {room}, "viewer_id": {viewer}, "client_lead_id": 1}}"#)
    };
    let (status, body) = post(api, &tls, "/v1/leads/erase", &k1, &erase(102, 5)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["recorded"], &body["erased"]),
        (&Value::Bool(true), &Value::Bool(true))
    );
    // Not m2's room: 404, nothing recorded.
    let (status, _) = post(api, &tls, "/v1/leads/erase", &k2, &erase(101, 2)).await;
    assert_eq!(status, 404);
    let (status, _) = post(api, &tls, "/v1/leads/erase", &k1, "{\"room_id\": 1}").await;
    assert_eq!(status, 400);
    let (status, _) = post(api, &tls, "/v1/leads/erase", "k1.nope", &erase(102, 5)).await;
    assert_eq!(status, 401);
    let admin_body =
        r#"{"room_id": 201, "viewer_id": 20, "client_lead_id": 1, "actor": "ticket-77"}"#;
    let (status, body) = harness::admin(
        engine.admin_addr(),
        "POST",
        "/admin/leads/erase",
        Some("admin-token-0123456789"),
        admin_body,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The withdrawal reaches ClickHouse with its batch, the eraser's next
    // pass blanks it: within a few seconds nothing personal is left of the
    // three, and the other leads keep theirs.
    let gone = async {
        loop {
            if personal_left(&cfg, &[(101, 1), (102, 5), (201, 20)]).await == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), gone)
        .await
        .expect("withdrawn and erased leads blanked");
    assert_eq!(
        personal_left(&cfg, &[(101, 2), (102, 6), (201, 21)]).await,
        3
    );
    assert_eq!(
        harness::scalar(
            &cfg,
            "SELECT count() FROM {db}.lead_withdrawals WHERE action = 'erased'"
        )
        .await,
        3
    );
    assert_eq!(
        harness::scalar(
            &cfg,
            "SELECT count() FROM {db}.lead_withdrawals WHERE action = 'withdraw' AND source = 'viewer' AND room_id = 101 AND viewer_id = 1"
        )
        .await,
        1
    );
    assert_eq!(
        harness::scalar(&cfg, "SELECT count() FROM {db}.lead_audit WHERE action = 'erase' AND merchant_id = 'm1' AND actor = 'k1' AND room_id = 102 AND viewer_id = 5").await,
        1
    );
    // Never delivered again: m1 from the start gets its other five, m2 one.
    let (again, _, _) = pull_all(api, &tls, &k1, "", 100).await;
    let who: Vec<_> = again
        .iter()
        .map(|l| {
            (
                l["room_id"].as_u64().unwrap(),
                l["viewer_id"].as_u64().unwrap(),
            )
        })
        .collect();
    // (Its seven, the late copy, minus the two withdrawn and erased.)
    assert_eq!(again.len(), accepted_m1 + 1 - 2, "{who:?}");
    assert!(
        !who.contains(&(101, 1)) && !who.contains(&(102, 5)),
        "{who:?}"
    );
    let (m2_again, _, _) = pull_all(api, &tls, &k2, "", 100).await;
    assert_eq!(m2_again.len(), 1);
    assert_eq!(m2_again[0]["viewer_id"], 21);

    // The API's own counters.
    let (status, metrics) = harness::admin(engine.admin_addr(), "GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    let value = |line: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line} missing"))
    };
    assert!(
        value("roomgate_merchant_api_requests_total{endpoint=\"leads\",status=\"200\"} ") >= 10
    );
    assert_eq!(
        value("roomgate_merchant_api_requests_total{endpoint=\"leads\",status=\"401\"} "),
        3
    );
    assert_eq!(
        value("roomgate_merchant_api_requests_total{endpoint=\"erase\",status=\"404\"} "),
        1
    );
    assert!(value("roomgate_merchant_api_leads_delivered_total ") >= delivered_m1 as u64);
    // The late copy (its ciphertexts are bound to another id), pulled
    // twice: after the cursor, and again from the start.
    assert_eq!(value("roomgate_merchant_api_undecryptable_total "), 2);

    // ClickHouse down: 503, the consumer retries with the same cursor.
    harness::clickhouse_down(port());
    let (status, body) = get(api, &tls, "/v1/leads", Some(&k1)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["leads"].is_null());

    engine.shutdown().await.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("delivery test: {secs:.1} s");
    assert!(secs < 60.0, "took {secs:.1} s");
}

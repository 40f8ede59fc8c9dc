//! Who sees what in ClickHouse, end to end: `roomgate grants --format
//! users-xml` for two merchants' rooms, a local ClickHouse started with it
//! through the project's launcher (`CLICKHOUSE_USERS_XML`), the schema
//! migrated as `migrator`, the engine running as `writer` with rooms
//! mapped by `[[rooms]]` and the admin API, viewers' leads and chat over
//! real QUIC; then each user logs in over HTTP. `make grants-test`.
//!
//! Its own server on `ROOMGATE_GRANTS_CLICKHOUSE_PORT` (default 18160):
//! the users are read at start, so it is restarted with this run's file.

#[allow(dead_code)]
#[path = "../it/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../it/harness.rs"]
mod harness;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use roomgate::engine::Engine;
use roomgate::wire::{ClientFrame, Lead, ServerFrame};

use crate::client::Viewer;

const TOKEN: &str = "grants-test-admin-token";

/// Users and their passwords (the file `roomgate grants` reads).
const PASSWORDS: &[(&str, &str)] = &[
    ("writer", "writer-password-0001"),
    ("migrator", "migrator-password-0001"),
    ("analyst", "analyst-password-0001"),
    ("delivery", "delivery-password-0001"),
    ("merchant_m1", "m1-password-000001"),
    ("merchant_m2", "m2-password-000001"),
    ("merchant_m3", "m3-password-000001"),
];

fn password(user: &str) -> &'static str {
    PASSWORDS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, p)| *p)
        .unwrap()
}

fn port() -> u16 {
    harness::port_from_env("ROOMGATE_GRANTS_CLICKHOUSE_PORT", 18160)
}

fn launcher(cmd: &str, env: &[(&str, String)]) {
    let mut c = Command::new("python3");
    c.arg(harness::repo_root().join("scripts/clickhouse.py"))
        .arg(cmd)
        .env("CLICKHOUSE_HTTP_PORT", port().to_string())
        .env_remove("CLICKHOUSE_TCP_PORT")
        .env_remove("CLICKHOUSE_USERS_XML");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run scripts/clickhouse.py");
    assert!(
        out.status.success(),
        "clickhouse.py {cmd} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `roomgate grants` with this run's config and passwords.
fn grants(config: &Path, passwords: &Path, format: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_roomgate"))
        .arg("--config")
        .arg(config)
        .args([
            "grants",
            "--format",
            format,
            "--merchant",
            "m3",
            "--passwords",
        ])
        .arg(passwords)
        .output()
        .expect("run roomgate grants");
    assert!(
        out.status.success(),
        "roomgate grants: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Run `sql` as `user` over HTTP: the body, or the error text.
async fn query_as(url: &str, user: &str, pw: &str, sql: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!(
        "POST / HTTP/1.0\r\nHost: {host}\r\nX-ClickHouse-User: {user}\r\nX-ClickHouse-Key: {pw}\r\nContent-Length: {}\r\n\r\n{sql}",
        sql.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") {
        Ok(body.trim().to_owned())
    } else {
        Err(body.trim().to_owned())
    }
}

struct Db {
    url: String,
    name: String,
}

impl Db {
    async fn ok(&self, user: &str, sql: &str) -> String {
        let sql = sql.replace("{db}", &self.name);
        query_as(&self.url, user, password_or_empty(user), &sql)
            .await
            .unwrap_or_else(|e| panic!("{user}: {sql}: {e}"))
    }

    /// The query fails for `user` with ClickHouse error `code`.
    async fn denied(&self, user: &str, sql: &str, code: u32) {
        let sql = sql.replace("{db}", &self.name);
        match query_as(&self.url, user, password_or_empty(user), &sql).await {
            Ok(body) => panic!("{user}: {sql}: expected code {code}, got rows {body:?}"),
            Err(e) => assert!(e.contains(&format!("Code: {code}.")), "{user}: {sql}: {e}"),
        }
    }

    /// The rooms `user` sees in `table`.
    async fn rooms(&self, user: &str, table: &str) -> String {
        self.ok(
            user,
            &format!("SELECT arraySort(groupUniqArray(room_id)) FROM {{db}}.{table}"),
        )
        .await
    }

    /// Poll (as `default`) until `sql` returns `want`.
    async fn wait_for(&self, sql: &str, want: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.ok("default", sql).await;
            if got == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{sql}: {got}, want {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn password_or_empty(user: &str) -> &'static str {
    if user == "default" {
        ""
    } else {
        password(user)
    }
}

/// A chat and a lead from viewer `viewer` in `room`; both accepted.
async fn chat_and_lead(addr: std::net::SocketAddr, certs: &Path, room: u64, viewer: u64) {
    let mut v = Viewer::join(addr, certs, room, viewer).await;
    v.send(&ClientFrame::Chat {
        client_msg_id: 1,
        text: format!("hello from room {room}"),
    })
    .await;
    v.send(&ClientFrame::Lead(Lead {
        client_lead_id: 1,
        phone: format!("1380013{room:04}"),
        name: "王五".into(),
        consent: true,
        fill_ms: 25_000,
        ..Lead::default()
    }))
    .await;
    let mut acks = 0;
    while acks < 2 {
        match v.next_within(Duration::from_secs(10)).await {
            Some(ServerFrame::Ack { verdict, .. }) => {
                assert_eq!(verdict, 1, "room {room}: not accepted");
                acks += 1;
            }
            Some(ServerFrame::Notice(_)) => {}
            other => panic!("room {room}: unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_sees_what_its_role_allows() {
    harness::init_tracing();
    let t0 = std::time::Instant::now();
    let venv = Command::new(harness::repo_root().join("scripts/ensure-venv.sh"))
        .status()
        .expect("run scripts/ensure-venv.sh");
    assert!(venv.success(), "scripts/ensure-venv.sh failed");

    // This run's database, rooms and passwords; `roomgate grants` turns
    // them into the server's users.xml.
    let db = format!("grants_{}_{}", std::process::id(), roomgate::now_ms());
    let dir = std::env::temp_dir().join(format!("roomgate-grants-{db}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("roomgate.toml");
    std::fs::write(
        &config,
        format!(
            "[clickhouse]\ndatabase = \"{db}\"\n\
             [[rooms]]\nid = 101\nmerchant = \"m1\"\n\
             [[rooms]]\nid = 102\nmerchant = \"m1\"\n\
             [[rooms]]\nid = 201\nmerchant = \"m2\"\n"
        ),
    )
    .unwrap();
    let passwords = dir.join("passwords");
    let text: String = PASSWORDS
        .iter()
        .map(|(u, p)| format!("{u} = {p}\n"))
        .collect();
    std::fs::write(&passwords, text).unwrap();
    let users_xml = dir.join("users.xml");
    std::fs::write(&users_xml, grants(&config, &passwords, "users-xml")).unwrap();
    let sql = grants(&config, &passwords, "sql");
    for (_, pw) in PASSWORDS {
        assert!(!sql.contains(pw), "a password in the SQL");
    }

    // A server with these users (restarted: users are read at start).
    launcher("down", &[]);
    let data = harness::repo_root().join(format!("build/clickhouse/grants-data-{}", port()));
    launcher(
        "up",
        &[
            ("CLICKHOUSE_DATA", data.display().to_string()),
            ("CLICKHOUSE_USERS_XML", users_xml.display().to_string()),
        ],
    );
    let url = format!("http://127.0.0.1:{}", port());
    let d = Db {
        url: url.clone(),
        name: db.clone(),
    };

    // The SQL form parses (as a production server would take it), for
    // one server and for an ON CLUSTER cluster.
    let cluster_sql = {
        use roomgate::access;
        use roomgate::sink::migrate::{ClusterDdl, Layout};
        let hashes = PASSWORDS
            .iter()
            .map(|(u, p)| (u.to_string(), access::PasswordHash::of(p)))
            .collect();
        let ids = ["m1", "m2", "m3"].map(|m| roomgate::merchants::MerchantId::parse(m).unwrap());
        let layout = Layout::Cluster(ClusterDdl {
            name: "rg".into(),
            replicated: true,
            on_cluster: true,
        });
        let plan = access::plan(&access::Spec {
            database: &db,
            layout: &layout,
            merchants: &ids,
            passwords: &hashes,
        })
        .unwrap();
        access::sql(&plan)
    };
    for stmt in sql
        .lines()
        .chain(cluster_sql.lines())
        .filter(|l| !l.is_empty() && !l.starts_with("--"))
    {
        d.ok(
            "default",
            &format!("EXPLAIN AST {}", stmt.trim_end_matches(';')),
        )
        .await;
    }

    // Migrations as `migrator`; the engine as `writer`, which has no DDL
    // rights and only confirms the schema is current.
    let mut cfg = roomgate::config::Config::from_file(&config).unwrap();
    cfg.clickhouse.url = url.clone();
    cfg.clickhouse.user = "migrator".into();
    cfg.clickhouse.password = password("migrator").into();
    let applied = roomgate::engine::migrate_within(&cfg, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(applied.len(), roomgate::sink::migrate::MIGRATIONS.len());
    let mut engine_cfg = harness::config(&url, "grants");
    engine_cfg.clickhouse.database = db.clone();
    engine_cfg.clickhouse.user = "writer".into();
    engine_cfg.clickhouse.password = password("writer").into();
    engine_cfg.rooms = cfg.rooms.clone();
    engine_cfg.server.admin_token = Some(TOKEN.into());
    let certs = engine_cfg.server.dev_cert_dir.clone().unwrap();
    let engine = Engine::start(engine_cfg.validate().unwrap()).await.unwrap();
    let (addr, admin) = (engine.quic_addr(), engine.admin_addr());

    // The mapping: [[rooms]] at start, the admin API for room 202.
    d.wait_for(
        "SELECT arrayStringConcat(groupArray(concat(toString(room_id), ':', merchant_id)), ',') \
         FROM (SELECT * FROM {db}.room_merchants FINAL ORDER BY room_id)",
        "101:m1,102:m1,201:m2",
    )
    .await;
    let call = |method: &'static str, path: &'static str, body: &'static str| {
        harness::admin(admin, method, path, Some(TOKEN), body)
    };
    let (status, body) = call("PUT", "/admin/rooms/202/merchant", r#"{"merchant": "m2"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""merchant":"m2""#), "{body}");
    let (status, body) = call("GET", "/admin/rooms/202/merchant", "").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""room":202"#) && body.contains(r#""merchant":"m2""#),
        "{body}"
    );
    let (status, body) = call("PUT", "/admin/rooms/202/merchant", r#"{"merchant": "M2!"}"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = call("GET", "/admin/rooms/301/merchant", "").await;
    assert_eq!(status, 404);

    // Leads and chat in rooms of both merchants and in a room of none.
    let rooms = [101u64, 102, 201, 202, 301];
    for (i, room) in rooms.into_iter().enumerate() {
        chat_and_lead(addr, &certs, room, 1_000 + i as u64).await;
    }
    d.wait_for("SELECT count() FROM {db}.leads", "5").await;
    d.wait_for("SELECT count() FROM {db}.chat_messages", "5")
        .await;

    // The analyst: every room, no ciphertext or HMAC.
    d.denied("analyst", "SELECT phone_enc FROM {db}.leads", 497)
        .await;
    d.denied("analyst", "SELECT ip_hmac FROM {db}.leads", 497)
        .await;
    d.denied("analyst", "SELECT * FROM {db}.leads_unique", 497)
        .await;
    d.denied("analyst", "SELECT key FROM {db}.lead_facts", 497)
        .await;
    assert_eq!(d.ok("analyst", "SELECT count() FROM {db}.leads").await, "5");
    assert_eq!(
        d.ok(
            "analyst",
            "SELECT countIf(phone_masked LIKE '138****%') FROM {db}.leads_unique"
        )
        .await,
        "5"
    );
    assert_eq!(
        d.rooms("analyst", "chat_messages").await,
        "[101,102,201,202,301]"
    );
    assert_eq!(
        d.ok("analyst", "SELECT sum(leads) FROM {db}.room_minute")
            .await,
        "5"
    );

    // Merchants: their rooms' rows, no personal columns.
    for (user, want) in [
        ("merchant_m1", "[101,102]"),
        ("merchant_m2", "[201,202]"),
        ("merchant_m3", "[]"),
    ] {
        for table in [
            "leads",
            "chat_messages",
            "sessions",
            "room_minute",
            "leads_unique",
            "lead_facts",
        ] {
            assert_eq!(d.rooms(user, table).await, want, "{user} {table}");
        }
        for sql in [
            "SELECT phone_enc FROM {db}.leads",
            "SELECT phone_masked FROM {db}.leads",
            "SELECT phone_hmac FROM {db}.leads",
            "SELECT text FROM {db}.chat_messages",
            "SELECT detail FROM {db}.moderation_events",
        ] {
            d.denied(user, sql, 497).await;
        }
    }
    assert_eq!(
        d.ok(
            "merchant_m1",
            "SELECT count(), countIf(verdict = 'accepted') FROM {db}.leads"
        )
        .await,
        "2\t2"
    );
    assert_eq!(
        d.ok(
            "merchant_m2",
            "SELECT toString(arraySort(groupArray(room_id))) FROM {db}.room_merchants FINAL"
        )
        .await,
        "[201,202]"
    );

    // A room moved to another merchant: the next query follows it.
    let (status, body) = call("PUT", "/admin/rooms/202/merchant", r#"{"merchant": "m1"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(d.rooms("merchant_m1", "leads").await, "[101,102,202]");
    assert_eq!(d.rooms("merchant_m2", "leads").await, "[201]");
    let (status, _) = call("DELETE", "/admin/rooms/101/merchant", "").await;
    assert_eq!(status, 200);
    assert_eq!(d.rooms("merchant_m1", "chat_messages").await, "[102,202]");

    // The writer inserted everything above; it reads back only what the
    // engine needs.
    d.denied("writer", "SELECT phone_enc FROM {db}.leads", 497)
        .await;
    d.denied("writer", "SELECT text FROM {db}.chat_messages", 497)
        .await;
    d.denied(
        "writer",
        "CREATE TABLE {db}.x (a UInt8) ENGINE = Memory",
        497,
    )
    .await;
    let writer = clickhouse::Client::default()
        .with_url(&url)
        .with_user("writer")
        .with_password(password("writer"))
        .with_database(&db);
    let seen = roomgate::engine::try_recent_ids(&writer, 3_600, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(seen.iter().filter(|s| s.lead).count(), 5);
    d.ok(
        "writer",
        "SELECT kind, key, room_id, uniqExactMerge(lead_ids), max(registered) FROM {db}.lead_facts \
         WHERE minute >= now() - 3600 GROUP BY minute, kind, key, room_id",
    )
    .await;
    d.ok(
        "writer",
        "INSERT INTO {db}.sessions (room_id, ts, viewer_id, session_id, event) VALUES (999, now64(3), 1, 1, 'join')",
    )
    .await;
    d.denied(
        "analyst",
        "INSERT INTO {db}.sessions (room_id) VALUES (1)",
        497,
    )
    .await;
    // The eraser (as writer) may blank the personal columns of leads, and
    // nothing else; nobody else may.
    let blank = roomgate::erase::mutation_sql(
        &format!("{db}.leads"),
        "",
        &[roomgate::erase::LeadKey {
            room_id: 999,
            viewer_id: 1,
            client_lead_id: 1,
        }],
    );
    d.ok("writer", &format!("{blank} SETTINGS mutations_sync = 2"))
        .await;
    d.denied(
        "writer",
        "ALTER TABLE {db}.leads UPDATE verdict = 'accepted' WHERE room_id = 999",
        497,
    )
    .await;
    d.denied("analyst", &blank, 497).await;
    d.denied("delivery", &blank, 497).await;
    let wrong = query_as(&url, "analyst", "not-the-password", "SELECT 1").await;
    assert!(wrong.unwrap_err().contains("Code: 516."));

    engine.shutdown().await.unwrap();
    launcher("down", &[]);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("grants test: {:.1} s", t0.elapsed().as_secs_f64());
}

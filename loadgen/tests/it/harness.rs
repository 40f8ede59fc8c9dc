//! Set-up: ClickHouse through the project's launcher, the engine
//! in-process with `loadgen/engine-loadtest.toml`, the loadgen binary.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// The loadgen binary built for this test.
pub const LOADGEN: &str = env!("CARGO_BIN_EXE_roomgate-loadgen");
const SECRET: &str = "loadgen-integration-test-secret-32b";
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// The encryption root key: a different key from the HMAC root.
pub const ENC_KEY: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Start (or reuse) the launcher's ClickHouse on the test port
/// (`ROOMGATE_TEST_CLICKHOUSE_PORT`, default 18123); returns its URL.
fn clickhouse_up() -> String {
    let port: u16 = std::env::var("ROOMGATE_TEST_CLICKHOUSE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(18123);
    let root = repo_root();
    let venv = Command::new(root.join("scripts/ensure-venv.sh"))
        .status()
        .expect("run scripts/ensure-venv.sh");
    assert!(venv.success(), "scripts/ensure-venv.sh failed");
    let out = Command::new("python3")
        .arg(root.join("scripts/clickhouse.py"))
        .arg("up")
        .env("CLICKHOUSE_HTTP_PORT", port.to_string())
        .env(
            "CLICKHOUSE_DATA",
            root.join(format!("build/clickhouse/test-data-{port}")),
        )
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

/// A finished run: its database, files and how to verify it.
pub struct Run {
    /// ClickHouse URL.
    pub url: String,
    /// The run's database.
    pub database: String,
    /// Scratch directory (summary, lead records, cert).
    pub dir: PathBuf,
    /// The engine, when the run left it running ([`Run::start_live`]).
    engine: Option<roomgate::engine::Engine>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Run {
    /// Start the engine, run `scenario` with the loadgen, stop the engine
    /// (it flushes every batch).
    pub async fn start(scenario: &str) -> Run {
        Run::start_split(scenario, 1).await
    }

    /// As [`Run::start`], with `workers` loadgen processes at once (each
    /// `--worker K/N`, summary `worker-K.json`) when `workers` > 1.
    pub async fn start_split(scenario: &str, workers: u32) -> Run {
        let mut run = Run::start_live(scenario, workers).await;
        run.stop_engine().await;
        run
    }

    /// Stop the engine (it flushes every batch), if still running.
    pub async fn stop_engine(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.shutdown().await.expect("engine shuts down cleanly");
        }
    }

    /// As [`Run::start_split`], leaving the engine running (its eraser
    /// too): stop it with [`Run::stop_engine`].
    pub async fn start_live(scenario: &str, workers: u32) -> Run {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("ROOMGATE_LOG")
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let url = tokio::task::spawn_blocking(clickhouse_up).await.unwrap();
        // One sequence number for the directory and the database: tests of
        // this binary run in parallel and may start in the same millisecond.
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("roomgate-loadgen-it-{}-{seq}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let database = format!("lgit_{}_{}_{seq}", std::process::id(), roomgate::now_ms());

        let mut cfg =
            roomgate::config::Config::from_file(&repo_root().join("loadgen/engine-loadtest.toml"))
                .expect("loadgen/engine-loadtest.toml");
        cfg.server.listen = "127.0.0.1:0".parse().unwrap();
        cfg.server.admin = "127.0.0.1:0".parse().unwrap();
        cfg.server.dev_cert_dir = Some(dir.join("cert"));
        cfg.clickhouse.url = url.clone();
        cfg.clickhouse.database = database.clone();
        cfg.storage.dir = dir.join("data");
        cfg.tickets.secret = Some(SECRET.into());
        cfg.pii.hmac_key = Some(KEY.into());
        cfg.pii.enc_key = Some(ENC_KEY.into());
        cfg.shards.count = 2;
        cfg.batch.default.max_age_ms = 200;
        // Tickets of 10 s, warned 8 s ahead: every session outliving its
        // ticket refreshes it on the open stream.
        cfg.tickets.refresh_notice_secs = 8;
        // Withdrawn leads are erased within a second.
        cfg.erasure.interval_secs = 1;
        let cfg = cfg.validate().expect("engine config");
        let engine = roomgate::engine::Engine::start(cfg)
            .await
            .expect("engine starts");
        let addr = engine.quic_addr();

        let scenario_path = dir.join("scenario.toml");
        std::fs::write(&scenario_path, scenario).unwrap();
        let mut loadgens = Vec::new();
        for k in 1..=workers {
            let summary = if workers == 1 {
                "summary.json".to_owned()
            } else {
                format!("worker-{k}.json")
            };
            let mut args: Vec<String> = vec![
                "--server".into(),
                addr.to_string(),
                "--cert".into(),
                dir.join("cert/cert.pem").display().to_string(),
                "--scenario".into(),
                scenario_path.display().to_string(),
                "--summary-json".into(),
                dir.join(summary).display().to_string(),
                "--ticket-ttl".into(),
                "10".into(),
            ];
            if workers > 1 {
                args.extend(["--worker".into(), format!("{k}/{workers}")]);
            }
            loadgens.push(tokio::task::spawn_blocking(move || {
                Command::new(LOADGEN)
                    .args(&args)
                    .env("ROOMGATE_TICKET_SECRET", SECRET)
                    .env("RUST_LOG", "warn")
                    .output()
                    .expect("run roomgate-loadgen")
            }));
        }
        let mut outs = Vec::new();
        for l in loadgens {
            outs.push(l.await.unwrap());
        }
        let mut run = Run {
            url,
            database,
            dir,
            engine: Some(engine),
        };
        for out in outs {
            if !out.status.success() {
                run.stop_engine().await;
            }
            assert!(
                out.status.success(),
                "loadgen failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        run
    }

    /// `roomgate-loadgen ARGS…` with `--clickhouse-url`/`--database` of
    /// this run appended: (exit code, stdout + stderr).
    pub fn loadgen(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = Command::new(LOADGEN)
            .args(args)
            .args(["--clickhouse-url", &self.url, "--database", &self.database])
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run roomgate-loadgen");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    }

    /// A JSON file of the run's directory.
    pub fn json(&self, name: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.join(name)).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The run's summary JSON.
    pub fn summary(&self) -> serde_json::Value {
        self.json("summary.json")
    }

    /// The run's lead records.
    pub fn leads(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("summary.leads.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `verify` arguments for this run.
    pub fn verify_args(&self) -> Vec<String> {
        vec![
            "verify".into(),
            "--clickhouse-url".into(),
            self.url.clone(),
            "--database".into(),
            self.database.clone(),
            "--summary-json".into(),
            self.dir.join("summary.json").display().to_string(),
            // The engine has stopped: everything is in already.
            "--settle-secs".into(),
            "0.2".into(),
        ]
    }

    /// Run `verify`: (exit code, stdout + stderr).
    pub fn verify(&self) -> (Option<i32>, String) {
        let out = Command::new(LOADGEN)
            .args(self.verify_args())
            .env("RUST_LOG", "warn")
            .output()
            .expect("run roomgate-loadgen verify");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !std::thread::panicking() && Path::new(&self.dir).exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Tampering with the run's database.
pub struct Ch {
    client: clickhouse::Client,
    database: String,
}

impl Ch {
    /// A client for `url`.
    pub fn new(url: &str, database: &str) -> Self {
        Ch {
            client: clickhouse::Client::default()
                .with_url(url)
                // A tampered row must really land, even if identical to an
                // earlier block.
                .with_setting("insert_deduplicate", "0"),
            database: database.into(),
        }
    }

    /// Run a statement (`{db}` is the run's database).
    pub async fn exec(&self, sql: &str) {
        let sql = sql.replace("{db}", &self.database);
        self.client
            .query(&sql)
            .execute()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// `SELECT count() FROM <from>`.
    pub async fn count(&self, from: &str) -> u64 {
        let sql = format!(
            "SELECT count() FROM {}",
            from.replace("{db}", &self.database)
        );
        self.client
            .query(&sql)
            .fetch_one::<u64>()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

//! Loadgen integration test: a small scenario end to end — the engine
//! in-process, the real `roomgate-loadgen` binary over QUIC, a real
//! ClickHouse started through the project's launcher (`scripts/clickhouse.py`)
//! with a fresh database — then `verify` must pass, and must fail with the
//! right message when ClickHouse is tampered with: a lead row deleted, a lead
//! row duplicated, a chat row accepted for an abusive viewer. And the same
//! scenario split over two loadgen processes (`--worker K/N`), merged and
//! verified as one run. And `loadgen/scenarios/withdrawals.toml` (viewers
//! withdrawing leads), split and verified while the engine's eraser runs,
//! then each withdrawal check broken in ClickHouse.

mod harness;

use std::process::Command;

use harness::{Ch, Run};

/// Small enough for a 2-core machine in well under a minute: 2 rooms of 60
/// viewers, 12 s. Harassers are caught on every message, so their tolerance
/// is 0 and a single smuggled chat row must fail verify.
const SCENARIO: &str = r#"
description = "loadgen integration test"
seed = 11
rooms = 2
viewers = 60
duration = 12
resend_share = 0.05
drain_timeout = 10

[join]
ramp = 2

[classes.chatter]
share = 0.3
chat_rate = 2

[classes.like_tapper]
share = 0.2
like_rate = 30

[classes.lead_submitter]
share = 0.25
lead_rate = 1

[classes.harasser]
share = 0.05
chat_rate = 0.5

[classes.fake_lead_bot]
share = 0.05
lead_rate = 0.4

[verify]
max_legit_rejected = 0.0
max_busy = 0.0

[verify.max_abuse_accepted]
harasser = 0.0
fake_lead_bot = 1.0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_a_real_run_and_catches_missing_duplicate_and_unexpected_rows() {
    let run = Run::start(SCENARIO).await;
    let s = run.summary();
    let ch = Ch::new(&run.url, &run.database);

    // The run itself: every viewer connected, every class sent something.
    assert_eq!(s["connections"]["connected"], 120, "{}", s["connections"]);
    // Sessions outlived their 10 s tickets by refreshing them, none expired.
    assert!(
        s["connections"]["tickets_refreshed"].as_u64().unwrap_or(0) >= 100,
        "{}",
        s["connections"]
    );
    assert!(
        s["connections"]["close_codes"]
            .get("ticket_expired")
            .is_none(),
        "{}",
        s["connections"]
    );
    for class in ["chatter", "lead_submitter", "harasser", "fake_lead_bot"] {
        let sent = &s["classes"][class]["sent"];
        assert!(
            sent["chat"].as_u64().unwrap_or(0) + sent["lead"].as_u64().unwrap_or(0) > 0,
            "{class} sent nothing: {sent}"
        );
    }

    // 1. Untouched: verify passes.
    let (code, out) = run.verify();
    assert_eq!(
        code,
        Some(0),
        "verify must pass on an untouched run:\n{out}"
    );
    assert!(out.contains("verify: PASSED"), "{out}");
    assert!(out.contains("harasser"), "per-class table: {out}");

    // An accepted lead to tamper with (from the run's lead records).
    let lead = run
        .leads()
        .into_iter()
        .find(|l| l["verdict"] == "accepted" && l["class"] == "lead_submitter")
        .expect("an accepted legitimate lead");
    let (viewer, id) = (
        lead["viewer_id"].as_u64().unwrap(),
        lead["client_lead_id"].as_u64().unwrap(),
    );
    let which = format!("viewer_id = {viewer} AND client_lead_id = {id}");
    ch.exec(&format!(
        "CREATE TABLE {{db}}.saved ENGINE = Memory AS SELECT * FROM {{db}}.leads WHERE {which}"
    ))
    .await;

    // 2. A duplicated lead row.
    ch.exec(&format!(
        "INSERT INTO {{db}}.leads SELECT * FROM {{db}}.leads WHERE {which}"
    ))
    .await;
    assert_eq!(ch.count(&format!("{{db}}.leads WHERE {which}")).await, 2);
    let (code, out) = run.verify();
    assert_eq!(code, Some(3), "a duplicated lead must fail verify:\n{out}");
    assert!(
        out.contains("FAIL leads: none stored twice")
            && out.contains(&format!("lead {id} stored 2 times")),
        "{out}"
    );

    // 3. A missing lead row (both copies deleted).
    ch.exec(&format!(
        "ALTER TABLE {{db}}.leads DELETE WHERE {which} SETTINGS mutations_sync = 1"
    ))
    .await;
    assert_eq!(ch.count(&format!("{{db}}.leads WHERE {which}")).await, 0);
    let (code, out) = run.verify();
    assert_eq!(code, Some(3), "a missing lead must fail verify:\n{out}");
    assert!(
        out.contains("FAIL acked leads: none missing")
            && out.contains(&format!("lead {id} acked accepted")),
        "{out}"
    );

    // Restored: verify passes again (so each failure above was the tamper's).
    ch.exec("INSERT INTO {db}.leads SELECT * FROM {db}.saved")
        .await;
    let (code, out) = run.verify();
    assert_eq!(code, Some(0), "restored run must pass again:\n{out}");

    // 4. An unexpected accept: a chat row for a harasser, whose every
    //    message the engine rejected.
    let gt = &s["ground_truth"];
    let harasser_index = gt["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == "harasser")
        .expect("harasser range")["first"]
        .as_u64()
        .unwrap();
    let room = gt["room_ids"][0].as_u64().unwrap();
    let client_id = gt["client_ids"][1].as_u64().unwrap();
    ch.exec(&format!(
        "INSERT INTO {{db}}.chat_messages \
         (room_id, ts, viewer_id, session_id, client_msg_id, text, verdict, dry_run_reasons) \
         VALUES ({room}, now64(3), {}, 0, {client_id}, 'smuggled', 'accepted', [])",
        room * 1_000_000 + harasser_index
    ))
    .await;
    let (code, out) = run.verify();
    assert_eq!(
        code,
        Some(3),
        "an unexpected accept must fail verify:\n{out}"
    );
    assert!(
        out.contains("unexpected accept: 1 chat rows for class harasser but 0 acked accepted")
            && out.contains("FAIL harasser: abuse got through"),
        "{out}"
    );

    // The HTML report of the verified run is one self-contained file.
    let html = run.dir.join("report.html");
    let st = Command::new(harness::LOADGEN)
        .args(run.verify_args())
        .arg("--report-html")
        .arg(&html)
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(3));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("verify FAILED") && page.contains("<svg"));
    assert!(!page.contains("<script"));
}

/// Two loadgen processes, each one half of the viewers, load one engine;
/// `merge` combines their summaries into one run that verifies, with the
/// histograms merged and every lead record of both workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_split_over_two_workers_merges_into_one_verified_run() {
    let run = Run::start_split(SCENARIO, 2).await;
    let w: Vec<serde_json::Value> = (1..=2)
        .map(|k| run.json(&format!("worker-{k}.json")))
        .collect();
    for (k, s) in w.iter().enumerate() {
        assert_eq!(s["worker"]["worker"]["k"], k as u64 + 1);
        assert_eq!(s["connections"]["connected"], 60, "{}", s["connections"]);
    }
    let (code, out) = run.loadgen(&["merge", "worker-2.json", "--verify", "--settle-secs", "0.2"]);
    assert_eq!(code, Some(1), "one worker is not a run:\n{out}");
    assert!(out.contains("missing workers: 1/2"), "{out}");

    let (code, out) = run.loadgen(&[
        "merge",
        "worker-2.json",
        "worker-1.json",
        "--summary-json",
        "merged.json",
        "--verify",
        "--settle-secs",
        "0.2",
    ]);
    assert_eq!(code, Some(0), "the merged run must verify:\n{out}");
    assert!(out.contains("verify: PASSED"), "{out}");
    let m = run.json("merged.json");
    assert_eq!(m["merged_workers"], 2);
    assert!(m.get("worker").is_none());
    assert_eq!(m["connections"]["connected"], 120, "{}", m["connections"]);
    let sum = |path: &[&str]| -> u64 {
        w.iter()
            .map(|s| path.iter().fold(s, |v, k| &v[*k]).as_u64().unwrap())
            .sum()
    };
    for path in [
        &["sent", "chat"][..],
        &["sent", "lead"],
        &["sent", "like"],
        &["acked", "lead", "accepted"],
        &["latency_us", "chat", "count"],
        &["latency_us", "handshake", "count"],
    ] {
        let merged = path.iter().fold(&m, |v, k| &v[*k]).as_u64().unwrap();
        assert_eq!(merged, sum(path), "{path:?}");
    }
    // Percentiles come from the merged histogram: between the workers'.
    let p99 = |s: &serde_json::Value| s["latency_us"]["chat"]["p99"].as_u64().unwrap();
    let (lo, hi) = (p99(&w[0]).min(p99(&w[1])), p99(&w[0]).max(p99(&w[1])));
    assert!((lo..=hi).contains(&p99(&m)), "{lo} {} {hi}", p99(&m));
    let leads = std::fs::read_to_string(run.dir.join("merged.leads.jsonl")).unwrap();
    assert_eq!(
        leads.lines().count() as u64,
        m["ground_truth"]["leads"].as_u64().unwrap()
    );
    assert_eq!(
        m["ground_truth"]["leads"].as_u64().unwrap(),
        (1..=2)
            .map(|k| w[k - 1]["ground_truth"]["leads"].as_u64().unwrap())
            .sum::<u64>()
    );
}

/// The shipped withdrawals scenario, split over two loadgen processes:
/// viewers withdraw a share of their accepted leads; `merge --verify`,
/// while the engine (and its eraser) still runs, must pass: every acked
/// withdrawal logged, no other, the consent version stored, the withdrawn
/// leads erased and the others kept. Then verify must catch each of these
/// broken in ClickHouse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_are_logged_and_erased_and_verify_catches_what_is_not() {
    let scenario = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/withdrawals.toml"),
    )
    .unwrap();
    let mut run = Run::start_live(&scenario, 2).await;
    let (code, out) = run.loadgen(&[
        "merge",
        "worker-1.json",
        "worker-2.json",
        "--summary-json",
        "summary.json",
        "--verify",
        "--settle-secs",
        "1",
        "--erase-wait-secs",
        "20",
    ]);
    run.stop_engine().await;
    assert_eq!(code, Some(0), "the withdrawals run must verify:\n{out}");
    for line in [
        "ok   withdrawals: every acked one logged (withdraw, viewer)",
        "ok   withdrawals: no rows for leads not withdrawn",
        "ok   leads: consent version stored",
        "ok   withdrawn leads: personal columns erased",
        "ok   leads not withdrawn: personal columns kept",
    ] {
        assert!(out.contains(line), "{line}:\n{out}");
    }
    let s = run.summary();
    let w = &s["withdrawals"];
    let sent = w["sent"].as_u64().unwrap();
    assert!(sent > 10, "{w}");
    assert_eq!(w["acked"]["accepted"], sent, "{w}");
    assert_eq!(w["unacked"], 0, "{w}");
    assert_eq!(s["latency_us"]["withdraw"]["count"], sent);
    assert!(s["latency_us"]["withdraw"]["p99"].as_u64().unwrap() > 0);
    assert_eq!(s["anomalies"]["unexpected_acks"], 0);
    let v = &s["verify"];
    assert_eq!(v["withdrawn"], sent, "{v}");
    assert_eq!(
        v["erased_rows"], sent,
        "each withdrawn lead erased once: {v}"
    );

    // The lead records say which leads were withdrawn.
    let leads = run.leads();
    let withdrawn: Vec<&serde_json::Value> = leads
        .iter()
        .filter(|l| l["withdrawal"] == "accepted")
        .collect();
    assert_eq!(withdrawn.len() as u64, sent);
    assert!(withdrawn
        .iter()
        .all(|l| l["verdict"] == "accepted" && l["class"] == "lead_submitter"));
    let kept = leads
        .iter()
        .find(|l| l["verdict"] == "accepted" && l.get("withdrawal").is_none())
        .expect("an accepted lead not withdrawn");
    let key = |l: &serde_json::Value| {
        format!(
            "room_id = {} AND viewer_id = {} AND client_lead_id = {}",
            l["room_id"], l["viewer_id"], l["client_lead_id"]
        )
    };
    let (gone, kept) = (key(withdrawn[0]), key(kept));
    let ch = Ch::new(&run.url, &run.database);
    let verify = |what: &str| {
        let mut args = run.verify_args();
        args.extend(["--erase-wait-secs".into(), "1".into()]);
        let out = Command::new(harness::LOADGEN)
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(3),
            "{what} must fail verify:\n{text}"
        );
        text
    };

    // 1. A withdrawn lead not erased.
    ch.exec(&format!(
        "ALTER TABLE {{db}}.leads UPDATE phone_masked = '138****0000' WHERE {gone} \
         SETTINGS mutations_sync = 1"
    ))
    .await;
    let out = verify("a withdrawn lead holding personal data");
    assert!(
        out.contains("FAIL withdrawn leads: personal columns erased")
            && out.contains("still hold personal data after"),
        "{out}"
    );
    ch.exec(&format!(
        "ALTER TABLE {{db}}.leads UPDATE phone_masked = '' WHERE {gone} \
         SETTINGS mutations_sync = 1"
    ))
    .await;

    // 2. A lead not withdrawn, erased.
    ch.exec(&format!(
        "ALTER TABLE {{db}}.leads UPDATE phone_enc = '' WHERE {kept} SETTINGS mutations_sync = 1"
    ))
    .await;
    let out = verify("an erased lead that was not withdrawn");
    assert!(
        out.contains("FAIL leads not withdrawn: personal columns kept"),
        "{out}"
    );

    // 3. A withdrawal row for a lead not withdrawn; one missing for a
    //    withdrawn lead; a lead stored with another consent version.
    ch.exec(&format!(
        "INSERT INTO {{db}}.lead_withdrawals \
         SELECT now64(3), room_id, viewer_id, client_lead_id, 'withdraw', 'viewer', 'x' \
         FROM {{db}}.leads WHERE {kept}"
    ))
    .await;
    ch.exec(&format!(
        "ALTER TABLE {{db}}.lead_withdrawals DELETE WHERE {gone} AND action = 'withdraw' \
         SETTINGS mutations_sync = 1"
    ))
    .await;
    ch.exec(&format!(
        "ALTER TABLE {{db}}.leads UPDATE consent_version = 'v0' WHERE {kept} \
         SETTINGS mutations_sync = 1"
    ))
    .await;
    let out = verify("withdrawal rows and consent versions that do not match");
    for line in [
        "FAIL withdrawals: every acked one logged (withdraw, viewer)",
        "FAIL withdrawals: no rows for leads not withdrawn",
        "FAIL leads: consent version stored",
    ] {
        assert!(out.contains(line), "{line}:\n{out}");
    }
    assert!(out.contains("\"v0\""), "{out}");
}

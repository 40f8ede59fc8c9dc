//! Loadgen integration test: a small scenario end to end — the engine
//! in-process, the real `roomgate-loadgen` binary over QUIC, a real
//! ClickHouse started through the project's launcher (`scripts/clickhouse.py`)
//! with a fresh database — then `verify` must pass, and must fail with the
//! right message when ClickHouse is tampered with: a lead row deleted, a lead
//! row duplicated, a chat row accepted for an abusive viewer.

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

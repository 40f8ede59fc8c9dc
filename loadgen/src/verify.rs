//! `verify`: compare a run's ground truth with what ClickHouse stored.
//!
//! Input: the run's summary (its `ground_truth` and `classes` sections) and
//! the lead records (every lead sent: its acked verdict, or `unacked`).
//! Output: per class and kind — sent, acked, stored, passed / blocked by
//! reason — the guard's recall and precision per abusive class, and a list
//! of checks; any failed check makes `verify` exit 1.
//!
//! Rows are scoped to the run by room id and client id range (chat, leads,
//! chat moderation rows) or by room id and time window (likes, sessions),
//! so a shared database works as long as no other run used the same rooms
//! at the same time. A row's class comes from its viewer id in SQL
//! ([`ClassLayout::sql_class`]).
//!
//! Definitions (see loadgen/README.md, "Verify"):
//! - an event is *decided* when the guard answered on it; `busy` (overload)
//!   is counted apart and is neither pass nor block;
//! - chat *passes* when stored in `chat_messages` and is *blocked* when a
//!   (non-dry-run) `moderation_events` row rejected it;
//! - a lead *passes* when stored with verdict `accepted`; any other verdict
//!   (`rejected`, `suspect`, `duplicate`) *blocks* it from the consultants;
//! - like taps are blocked when rate limited (`moderation_events`, kind
//!   `like`); the rest pass;
//! - for an abusive class C judged on kind k: TP = C's blocked events,
//!   FN = C's passed events, FP = legitimate events of kind k blocked for a
//!   reason in C's rule family ([`Class::rule_family`]);
//!   recall = TP / (TP + FN), precision = TP / (TP + FP);
//! - a lead is *withdrawn* when its `Withdraw` was acked `accepted`: it has
//!   a `lead_withdrawals` row (`withdraw`, `viewer`), and the engine's
//!   eraser blanks its personal columns in `leads` (verify waits for that,
//!   up to `--erase-wait-secs`); no other lead of the run has a withdrawal
//!   row or loses its personal columns.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::{
    report::{GroundTruth, Summary},
    scenario::Tolerances,
    stats::LeadRecord,
    truth::{Class, ClassLayout},
};

/// Where ClickHouse is.
#[derive(Debug, Clone)]
pub struct Target {
    /// HTTP(S) URL.
    pub url: String,
    /// Database.
    pub database: String,
    /// User.
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
}

/// How long to wait for the engine's last batches.
#[derive(Debug, Clone, Copy)]
pub struct Settle {
    /// Row counts must stay unchanged this long.
    pub quiet: Duration,
    /// Give up waiting (and verify what is there) after this long.
    pub max_wait: Duration,
    /// Then wait up to this long for the withdrawn leads' personal columns
    /// to be erased; zero skips that check.
    pub erase_wait: Duration,
}

impl Default for Settle {
    fn default() -> Self {
        Settle {
            quiet: Duration::from_secs(3),
            max_wait: Duration::from_secs(60),
            erase_wait: Duration::from_secs(30),
        }
    }
}

/// A `leads` row still holds personal data (any of the columns the eraser
/// blanks).
const PERSONAL: &str = "(phone_masked != '' OR phone_enc != '' OR wechat_enc != '' \
                        OR name_enc != '' OR fields_enc != '')";

/// One class's traffic of one kind, as ClickHouse recorded it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassKind {
    /// The class.
    pub class: Class,
    /// `chat`, `lead` or `like` (like: counts are taps).
    pub kind: String,
    /// First sends (like: taps).
    pub sent: u64,
    /// Acked accepted, as the loadgen saw it.
    pub acked_accepted: u64,
    /// Content rows stored: chat rows, lead rows of any verdict (like: 0,
    /// like rows are per room, not per viewer).
    pub stored: u64,
    /// Passed the guard.
    pub passed: u64,
    /// Blocked by the guard (`busy` not included).
    pub blocked: u64,
    /// Answered `busy` (overload).
    pub busy: u64,
    /// Why blocked: chat reject reasons; for leads every reason of every
    /// non-accepted row; for likes the taps rate limited.
    pub reasons: BTreeMap<String, u64>,
    /// Would-be rejects of rules in dry-run.
    pub dry_run: BTreeMap<String, u64>,
    /// Leads: rows per verdict.
    pub verdicts: BTreeMap<String, u64>,
}

/// The guard's quality on one abusive class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// The class.
    pub class: Class,
    /// The kind it is judged on.
    pub kind: String,
    /// Its decided events.
    pub events: u64,
    /// True positives: its events blocked.
    pub blocked: u64,
    /// False negatives: its events that passed.
    pub passed: u64,
    /// False positives: legitimate events of the kind blocked for a reason
    /// of the class's rule family.
    pub legit_blocked: u64,
    /// TP / (TP + FN); 1 when there were no events.
    pub recall: f64,
    /// TP / (TP + FP); 1 when nothing was blocked.
    pub precision: f64,
    /// The share of its events that got through (FN / events).
    pub passed_share: f64,
    /// The tolerance on `passed_share`.
    pub tolerance: f64,
}

/// One check; a failed one fails `verify`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Passed.
    pub ok: bool,
    /// Figures, and examples of what failed.
    pub detail: String,
}

/// Everything `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// ClickHouse URL.
    pub url: String,
    /// Database.
    pub database: String,
    /// Every check passed.
    pub passed: bool,
    /// Per class and kind.
    pub classes: Vec<ClassKind>,
    /// Per abusive class.
    pub quality: Vec<Quality>,
    /// The checks.
    pub checks: Vec<Check>,
    /// Like taps stored in `like_ticks` for the run's rooms and time.
    pub like_taps_stored: u64,
    /// Sessions: join / leave rows for the run's rooms and time.
    pub session_rows: [u64; 2],
    /// Seconds spent waiting for the rows to settle.
    pub waited_s: f64,
    /// Withdrawals acked `accepted` (lead records).
    #[serde(default)]
    pub withdrawn: u64,
    /// `lead_withdrawals` rows of the run with action `withdraw`.
    #[serde(default)]
    pub withdrawal_rows: u64,
    /// `lead_withdrawals` rows of the run with action `erased` (the
    /// engine's eraser recording what it blanked).
    #[serde(default)]
    pub erased_rows: u64,
    /// Seconds spent waiting for the withdrawn leads to be erased (`None`:
    /// not waited, `--erase-wait-secs 0`).
    #[serde(default)]
    pub erase_waited_s: Option<f64>,
}

/// A ClickHouse HTTP client for JSONEachRow queries.
struct Ch {
    client: clickhouse::Client,
}

impl Ch {
    fn new(t: &Target) -> Self {
        let mut client = clickhouse::Client::default()
            .with_url(&t.url)
            .with_setting("output_format_json_quote_64bit_integers", "0");
        if let Some(u) = &t.user {
            client = client.with_user(u);
        }
        if let Some(p) = &t.password {
            client = client.with_password(p);
        }
        Ch { client }
    }

    async fn rows<T: serde::de::DeserializeOwned>(&self, sql: &str) -> Result<Vec<T>> {
        let bytes = self
            .client
            .query(sql)
            .fetch_bytes("JSONEachRow")
            .with_context(|| format!("query: {sql}"))?
            .collect()
            .await
            .with_context(|| format!("ClickHouse query failed: {sql}"))?;
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice(l)
                    .with_context(|| format!("unexpected row {:?}", String::from_utf8_lossy(l)))
            })
            .collect()
    }
}

/// The run's scope in SQL.
struct Scope {
    db: String,
    rooms: String,
    ids: String,
    window: String,
    class: String,
    from_ms: i64,
    to_ms: i64,
}

impl Scope {
    fn new(db: &str, gt: &GroundTruth, layout: &ClassLayout) -> Self {
        let rooms = gt
            .room_ids
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        // Rows carry the engine's receive time; allow for clock and flush.
        let from = gt.started_unix_ms - 5_000;
        let to = gt.ended_unix_ms + 60_000;
        Scope {
            db: format!("`{db}`"),
            rooms: format!("room_id IN ({rooms})"),
            ids: format!("BETWEEN {} AND {}", gt.client_ids[0], gt.client_ids[1]),
            window: format!(
                "ts BETWEEN fromUnixTimestamp64Milli(toInt64({from})) \
                 AND fromUnixTimestamp64Milli(toInt64({to}))"
            ),
            class: layout.sql_class(),
            from_ms: from,
            to_ms: to,
        }
    }

    /// `like_ticks.ts` is a `DateTime` (seconds).
    fn tick_window(&self) -> String {
        format!(
            "ts BETWEEN toDateTime(intDiv(toInt64({}), 1000)) AND toDateTime(intDiv(toInt64({}), 1000))",
            self.from_ms, self.to_ms
        )
    }

    fn counts_sql(&self) -> String {
        let Scope {
            db,
            rooms,
            ids,
            window,
            ..
        } = self;
        let ticks = self.tick_window();
        format!(
            "SELECT \
             (SELECT count() FROM {db}.chat_messages WHERE {rooms} AND client_msg_id {ids}) AS chat, \
             (SELECT count() FROM {db}.leads WHERE {rooms} AND client_lead_id {ids}) AS leads, \
             (SELECT count() FROM {db}.moderation_events WHERE {rooms} AND {window}) AS moderation, \
             (SELECT sum(taps) FROM {db}.like_ticks WHERE {rooms} AND {ticks}) AS taps, \
             (SELECT count() FROM {db}.sessions WHERE {rooms} AND {window}) AS sessions, \
             (SELECT count() FROM {db}.lead_withdrawals WHERE {rooms} AND client_lead_id {ids}) \
             AS withdrawals"
        )
    }

    /// Rows of leads with a withdrawal row that still hold personal data.
    fn unerased_sql(&self) -> String {
        let Scope { db, rooms, ids, .. } = self;
        format!(
            "SELECT count() AS n FROM {db}.leads WHERE {rooms} AND client_lead_id {ids} \
             AND {PERSONAL} AND (room_id, viewer_id, client_lead_id) IN \
             (SELECT room_id, viewer_id, client_lead_id FROM {db}.lead_withdrawals \
              WHERE {rooms} AND client_lead_id {ids} AND action = 'withdraw')"
        )
    }

    /// Withdrawn leads the eraser has not closed with an `erased` row yet.
    /// It blanks a lead before it writes that row, so blank leads alone do
    /// not say the eraser is done.
    fn unmarked_sql(&self) -> String {
        let Scope { db, rooms, ids, .. } = self;
        format!(
            "SELECT count() AS n FROM (SELECT room_id, viewer_id, client_lead_id \
             FROM {db}.lead_withdrawals WHERE {rooms} AND client_lead_id {ids} \
             GROUP BY room_id, viewer_id, client_lead_id \
             HAVING countIf(action = 'withdraw') > 0 AND countIf(action = 'erased') = 0)"
        )
    }
}

#[derive(Debug, Deserialize, PartialEq)]
struct Counts {
    chat: u64,
    leads: u64,
    moderation: u64,
    taps: u64,
    sessions: u64,
    withdrawals: u64,
}

#[derive(Debug, Deserialize)]
struct CountRow {
    n: u64,
}

/// `lead_withdrawals` rows of one lead, per action and source.
#[derive(Debug, Deserialize)]
struct WithdrawRow {
    room_id: u64,
    viewer_id: u64,
    client_lead_id: u64,
    action: String,
    source: String,
    n: u64,
}

#[derive(Debug, Deserialize)]
struct ChatRow {
    class: String,
    rows: u64,
    ids: u64,
}

#[derive(Debug, Deserialize)]
struct ModRow {
    class: String,
    kind: String,
    reason: String,
    dry_run: bool,
    n: u64,
    taps: u64,
}

/// Rejected leads a viewer sent over its hourly cap: acked, counted in
/// `moderation_events` (kind `lead`), no `leads` row.
#[derive(Debug, Deserialize)]
struct UnstoredLeads {
    room_id: u64,
    viewer_id: u64,
    n: u64,
}

#[derive(Debug, Deserialize)]
struct LeadRow {
    room_id: u64,
    viewer_id: u64,
    client_lead_id: u64,
    verdict: String,
    reasons: Vec<String>,
    dry_run_reasons: Vec<String>,
    consent_version: String,
    /// Any personal column is non-empty.
    personal: u8,
    /// The phone columns (every loadgen lead has a phone) are non-empty.
    has_phone: u8,
}

#[derive(Debug, Deserialize)]
struct SessionRow {
    joins: u64,
    leaves: u64,
}

#[derive(Debug, Deserialize)]
struct TapRow {
    taps: u64,
}

/// Load the lead records of a summary written to `path`.
pub fn load_leads(summary: &Summary, path: &Path) -> Result<Vec<LeadRecord>> {
    let gt = summary
        .ground_truth
        .as_ref()
        .context("the summary has no ground_truth section (was it written by an older loadgen?)")?;
    let Some(name) = &gt.leads_file else {
        return Ok(Vec::new());
    };
    let file = path.parent().unwrap_or(Path::new(".")).join(name);
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("{}: cannot read the lead records", file.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: bad line", file.display(), i + 1))
        })
        .collect()
}

/// The lead records' file name for a summary at `summary`.
pub fn leads_path(summary: &Path) -> PathBuf {
    let stem = summary
        .file_stem()
        .map_or_else(|| "summary".into(), |s| s.to_string_lossy().into_owned());
    summary.with_file_name(format!("{stem}.leads.jsonl"))
}

fn class_of(layout: &ClassLayout, stride: u64, viewer_id: u64) -> Option<Class> {
    let i = viewer_id % stride;
    (i < u64::from(layout.viewers)).then(|| layout.class_of(i as u32))
}

fn share(n: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 / of as f64
    }
}

fn pct(x: f64) -> String {
    format!("{:.3}%", x * 100.0)
}

/// Verify the run described by `summary` (with its lead records) against
/// the rows in `target`.
pub async fn verify(
    target: &Target,
    summary: &Summary,
    leads: &[LeadRecord],
    tol: &Tolerances,
    settle: Settle,
) -> Result<VerifyReport> {
    if target.database.is_empty()
        || !target
            .database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        bail!(
            "--database {:?}: expected letters, digits and _",
            target.database
        );
    }
    let gt = summary
        .ground_truth
        .as_ref()
        .context("the summary has no ground_truth section (was it written by an older loadgen?)")?;
    let layout = ClassLayout {
        viewers: gt.viewers_per_room,
        ranges: gt.classes.clone(),
    };
    let stride = gt.viewer_id_stride.max(1);
    let ch = Ch::new(target);
    let sc = Scope::new(&target.database, gt, &layout);

    // Wait until the engine's last batches are in: counts unchanged for
    // `quiet`, or `max_wait` is over.
    let started = tokio::time::Instant::now();
    let mut last: Option<Counts> = None;
    let mut stable_since = started;
    loop {
        let now: Counts = ch
            .rows::<Counts>(&sc.counts_sql())
            .await?
            .pop()
            .context("no answer to the count query")?;
        let t = tokio::time::Instant::now();
        if last.as_ref() != Some(&now) {
            stable_since = t;
            last = Some(now);
        }
        if t - stable_since >= settle.quiet || t - started >= settle.max_wait {
            break;
        }
        tokio::time::sleep(
            Duration::from_millis(500).min(settle.quiet.max(Duration::from_millis(50))),
        )
        .await;
    }
    let waited = started.elapsed();

    // Then, if the run withdrew leads, wait for the engine's eraser: until
    // no lead with a withdrawal row holds personal data and each has its
    // `erased` row, or time is up.
    let withdrawn_records = leads
        .iter()
        .filter(|l| l.withdrawal.as_deref() == Some("accepted"))
        .count() as u64;
    let erase_waited = if settle.erase_wait.is_zero() {
        None
    } else {
        let started = tokio::time::Instant::now();
        if withdrawn_records > 0 {
            loop {
                let mut left = 0;
                for sql in [sc.unerased_sql(), sc.unmarked_sql()] {
                    left += ch.rows::<CountRow>(&sql).await?.pop().map_or(0, |r| r.n);
                }
                if left == 0 || started.elapsed() >= settle.erase_wait {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Some(started.elapsed())
    };

    let Scope {
        db,
        rooms,
        ids,
        window,
        class,
        ..
    } = &sc;
    let chat_rows: Vec<ChatRow> = ch
        .rows(&format!(
            "SELECT {class} AS class, count() AS rows, uniqExact(viewer_id, client_msg_id) AS ids \
             FROM {db}.chat_messages WHERE {rooms} AND client_msg_id {ids} GROUP BY class"
        ))
        .await?;
    let mod_rows: Vec<ModRow> = ch
        .rows(&format!(
            "SELECT {class} AS class, toString(kind) AS kind, toString(reason) AS reason, dry_run, \
             sum(count) AS n, sum(toUInt64OrZero(extract(detail, '^(\\\\d+) of'))) AS taps \
             FROM {db}.moderation_events WHERE {rooms} AND \
             ((kind = 'chat' AND client_id {ids}) OR (kind = 'like' AND {window})) \
             GROUP BY class, kind, reason, dry_run"
        ))
        .await?;
    let lead_rows: Vec<LeadRow> = ch
        .rows(&format!(
            "SELECT room_id, viewer_id, client_lead_id, toString(verdict) AS verdict, \
             arrayMap(x -> toString(x), reasons) AS reasons, \
             arrayMap(x -> toString(x), dry_run_reasons) AS dry_run_reasons, \
             toString(consent_version) AS consent_version, \
             toUInt8({PERSONAL}) AS personal, \
             toUInt8(phone_masked != '' AND phone_enc != '') AS has_phone \
             FROM {db}.leads WHERE {rooms} AND client_lead_id {ids}"
        ))
        .await?;
    let withdraw_rows: Vec<WithdrawRow> = ch
        .rows(&format!(
            "SELECT room_id, viewer_id, client_lead_id, toString(action) AS action, \
             toString(source) AS source, count() AS n FROM {db}.lead_withdrawals \
             WHERE {rooms} AND client_lead_id {ids} \
             GROUP BY room_id, viewer_id, client_lead_id, action, source"
        ))
        .await?;
    let unstored_rows: Vec<UnstoredLeads> = ch
        .rows(&format!(
            "SELECT room_id, viewer_id, sum(count) AS n FROM {db}.moderation_events \
             WHERE {rooms} AND kind = 'lead' AND client_id {ids} GROUP BY room_id, viewer_id"
        ))
        .await?;
    let ticks = sc.tick_window();
    let taps: Vec<TapRow> = ch
        .rows(&format!(
            "SELECT sum(taps) AS taps FROM {db}.like_ticks WHERE {rooms} AND {ticks}"
        ))
        .await?;
    let sessions: Vec<SessionRow> = ch
        .rows(&format!(
            "SELECT countIf(event = 'join') AS joins, countIf(event = 'leave') AS leaves \
             FROM {db}.sessions WHERE {rooms} AND {window}"
        ))
        .await?;
    let like_taps_stored = taps.first().map_or(0, |t| t.taps);
    let session_rows = sessions.first().map_or([0, 0], |s| [s.joins, s.leaves]);

    // Per class and kind.
    let mut ck: BTreeMap<(Class, &'static str), ClassKind> = BTreeMap::new();
    for r in &gt.classes {
        let c = r.class;
        let s = summary.classes.get(c.as_str()).cloned().unwrap_or_default();
        for (kind, sent, acked) in [
            ("chat", s.sent.chat, s.acked.chat.accepted),
            ("lead", s.sent.lead, s.acked.lead.accepted),
            ("like", s.sent.like, 0),
        ] {
            ck.insert(
                (c, kind),
                ClassKind {
                    class: c,
                    kind: kind.into(),
                    sent,
                    acked_accepted: acked,
                    ..ClassKind::default()
                },
            );
        }
    }
    let mut unknown_rows = 0u64;
    let mut chat_dupes: Vec<String> = Vec::new();
    for r in &chat_rows {
        let Some(e) = Class::from_name(&r.class).and_then(|c| ck.get_mut(&(c, "chat"))) else {
            unknown_rows += r.rows;
            continue;
        };
        e.stored += r.rows;
        e.passed += r.rows;
        if r.rows > r.ids {
            chat_dupes.push(format!("{}: {} rows for {} ids", r.class, r.rows, r.ids));
        }
    }
    for r in &mod_rows {
        let kind = match r.kind.as_str() {
            "chat" => "chat",
            "like" => "like",
            _ => continue,
        };
        let Some(e) = Class::from_name(&r.class).and_then(|c| ck.get_mut(&(c, kind))) else {
            unknown_rows += r.n;
            continue;
        };
        let n = if kind == "like" { r.taps } else { r.n };
        if r.dry_run {
            *e.dry_run.entry(r.reason.clone()).or_default() += r.n;
        } else if r.reason == "busy" {
            e.busy += n;
        } else {
            *e.reasons.entry(r.reason.clone()).or_default() += n;
            e.blocked += n;
        }
    }
    for e in ck.values_mut().filter(|e| e.kind == "like") {
        e.passed = e.sent.saturating_sub(e.blocked);
    }
    let mut lead_count: HashMap<(u64, u64, u64), Vec<&LeadRow>> = HashMap::new();
    for r in &lead_rows {
        lead_count
            .entry((r.room_id, r.viewer_id, r.client_lead_id))
            .or_default()
            .push(r);
        let Some(e) = class_of(&layout, stride, r.viewer_id).and_then(|c| ck.get_mut(&(c, "lead")))
        else {
            unknown_rows += 1;
            continue;
        };
        e.stored += 1;
        *e.verdicts.entry(r.verdict.clone()).or_default() += 1;
        for d in &r.dry_run_reasons {
            *e.dry_run.entry(d.clone()).or_default() += 1;
        }
        if r.verdict == "accepted" {
            e.passed += 1;
        } else {
            e.blocked += 1;
            for x in &r.reasons {
                *e.reasons.entry(x.clone()).or_default() += 1;
            }
        }
    }

    let mut checks = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| {
        checks.push(Check {
            name: name.into(),
            ok,
            detail,
        })
    };

    // 1. Acked leads: stored exactly once, with the acked verdict; no
    //    lead rows the loadgen did not send.
    let mut missing = Vec::new();
    let mut twice = Vec::new();
    let mut differs = Vec::new();
    let mut acked = 0;
    let mut known = std::collections::HashSet::new();
    // Rejected leads acked but without a row, per viewer: the engine's cap
    // on stored rejected leads (guard.abuse.max_rejected_leads_per_hour).
    let mut rejected_rowless: HashMap<(u64, u64), u64> = HashMap::new();
    for l in leads {
        let key = (l.room_id, l.viewer_id, l.client_lead_id);
        known.insert(key);
        let rows = lead_count.get(&key).map_or(&[][..], Vec::as_slice);
        if l.verdict == "unacked" {
            if rows.len() > 1 {
                twice.push(format!(
                    "viewer {} lead {} (unacked) stored {} times",
                    l.viewer_id,
                    l.client_lead_id,
                    rows.len()
                ));
            }
            continue;
        }
        acked += 1;
        match rows.len() {
            0 if l.verdict == "rejected" => {
                *rejected_rowless
                    .entry((l.room_id, l.viewer_id))
                    .or_default() += 1;
            }
            0 => missing.push(format!(
                "viewer {} ({}) lead {} acked {}",
                l.viewer_id, l.class, l.client_lead_id, l.verdict
            )),
            1 => {
                if rows[0].verdict != l.verdict {
                    differs.push(format!(
                        "viewer {} lead {}: acked {}, stored {}",
                        l.viewer_id, l.client_lead_id, l.verdict, rows[0].verdict
                    ));
                }
            }
            n => twice.push(format!(
                "viewer {} ({}) lead {} stored {n} times",
                l.viewer_id, l.class, l.client_lead_id
            )),
        }
    }
    let counted: HashMap<(u64, u64), u64> = unstored_rows
        .iter()
        .map(|u| ((u.room_id, u.viewer_id), u.n))
        .collect();
    let uncounted: Vec<String> = rejected_rowless
        .iter()
        .chain(counted.iter())
        .map(|(k, _)| *k)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter_map(|k| {
            let (rowless, n) = (
                rejected_rowless.get(&k).copied().unwrap_or(0),
                counted.get(&k).copied().unwrap_or(0),
            );
            (rowless != n).then(|| {
                format!(
                    "viewer {}: {rowless} rejected leads acked without a row, {n} counted in moderation_events",
                    k.1
                )
            })
        })
        .collect();
    let unexpected: Vec<String> = lead_count
        .iter()
        .filter(|(k, _)| !known.contains(k))
        .map(|((_, v, id), rows)| format!("viewer {v} lead {id} ({} rows)", rows.len()))
        .collect();
    let examples = |v: &[String]| -> String {
        let mut s = v.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
        if v.len() > 5 {
            let _ = write!(s, "; … {} more", v.len() - 5);
        }
        s
    };
    check(
        "acked leads: none missing",
        missing.is_empty(),
        if missing.is_empty() {
            format!("{acked} acked leads all stored")
        } else {
            format!(
                "{} of {acked} acked leads missing: {}",
                missing.len(),
                examples(&missing)
            )
        },
    );
    check(
        "rejected leads over the cap: counted in moderation_events",
        uncounted.is_empty(),
        if uncounted.is_empty() {
            format!(
                "{} rejected leads acked without a row, each counted",
                rejected_rowless.values().sum::<u64>()
            )
        } else {
            examples(&uncounted)
        },
    );
    check(
        "leads: none stored twice",
        twice.is_empty(),
        if twice.is_empty() {
            format!("{} lead rows, one per lead", lead_rows.len())
        } else {
            format!("{} leads stored twice: {}", twice.len(), examples(&twice))
        },
    );
    check(
        "leads: stored verdict = acked verdict",
        differs.is_empty(),
        if differs.is_empty() {
            "all equal".into()
        } else {
            format!("{} differ: {}", differs.len(), examples(&differs))
        },
    );
    check(
        "leads: no rows the run did not send",
        unexpected.is_empty(),
        if unexpected.is_empty() {
            "none".into()
        } else {
            format!(
                "{} unexpected lead rows: {}",
                unexpected.len(),
                examples(&unexpected)
            )
        },
    );

    // 1b. Withdrawals: every acked one logged, none for leads not
    //     withdrawn, the withdrawn leads erased, the others kept; every
    //     lead stored with the consent version it was sent with.
    type Key = (u64, u64, u64);
    let withdrawal_of: HashMap<Key, &str> = leads
        .iter()
        .filter_map(|l| {
            l.withdrawal
                .as_deref()
                .map(|w| ((l.room_id, l.viewer_id, l.client_lead_id), w))
        })
        .collect();
    let mut w_rows: HashMap<Key, Vec<&WithdrawRow>> = HashMap::new();
    for r in &withdraw_rows {
        w_rows
            .entry((r.room_id, r.viewer_id, r.client_lead_id))
            .or_default()
            .push(r);
    }
    let rows_of = |action: &str| -> u64 {
        withdraw_rows
            .iter()
            .filter(|r| r.action == action)
            .map(|r| r.n)
            .sum()
    };
    let (withdrawal_rows, erased_rows) = (rows_of("withdraw"), rows_of("erased"));
    let mut w_missing = Vec::new();
    let mut w_extra = 0u64;
    for (key, _) in withdrawal_of.iter().filter(|(_, w)| **w == "accepted") {
        let rows = w_rows.get(key).map_or(&[][..], Vec::as_slice);
        let logged: u64 = rows
            .iter()
            .filter(|r| r.action == "withdraw" && r.source == "viewer")
            .map(|r| r.n)
            .sum();
        if logged == 0 {
            w_missing.push(format!(
                "viewer {} lead {}: no (withdraw, viewer) row{}",
                key.1,
                key.2,
                if rows.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (rows: {})",
                        rows.iter()
                            .map(|r| format!("{}/{}", r.action, r.source))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ));
        }
        w_extra += logged.saturating_sub(1);
    }
    let mut w_unexpected: Vec<String> = w_rows
        .iter()
        .filter(|(k, _)| !matches!(withdrawal_of.get(k), Some(&"accepted" | &"unacked")))
        .map(|(k, rows)| {
            format!(
                "viewer {} lead {} ({}): {}",
                k.1,
                k.2,
                match withdrawal_of.get(k) {
                    Some(w) => format!("withdrawal {w}"),
                    None if known.contains(k) => "not withdrawn".to_owned(),
                    None => "not a lead of the run".to_owned(),
                },
                rows.iter()
                    .map(|r| format!("{} {}/{}", r.n, r.action, r.source))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    w_unexpected.sort();
    check(
        "withdrawals: every acked one logged (withdraw, viewer)",
        w_missing.is_empty(),
        if w_missing.is_empty() {
            format!(
                "{withdrawn_records} acked withdrawals, {withdrawal_rows} withdraw rows{}",
                if w_extra > 0 {
                    format!(" ({w_extra} more than one per lead: resent after a lost ack)")
                } else {
                    String::new()
                }
            )
        } else {
            format!(
                "{} of {withdrawn_records} acked withdrawals not logged: {}",
                w_missing.len(),
                examples(&w_missing)
            )
        },
    );
    check(
        "withdrawals: no rows for leads not withdrawn",
        w_unexpected.is_empty(),
        if w_unexpected.is_empty() {
            "none".into()
        } else {
            format!(
                "{} leads with unexpected withdrawal rows: {}",
                w_unexpected.len(),
                examples(&w_unexpected)
            )
        },
    );
    if let Some(version) = &gt.consent_version {
        let bad: Vec<String> = lead_rows
            .iter()
            .filter(|r| &r.consent_version != version)
            .map(|r| {
                format!(
                    "viewer {} lead {}: {:?}",
                    r.viewer_id, r.client_lead_id, r.consent_version
                )
            })
            .collect();
        check(
            "leads: consent version stored",
            bad.is_empty(),
            if bad.is_empty() {
                format!("{} rows with {version:?}", lead_rows.len())
            } else {
                format!(
                    "{} of {} rows not {version:?}: {}",
                    bad.len(),
                    lead_rows.len(),
                    examples(&bad)
                )
            },
        );
    }
    let key_of = |r: &LeadRow| (r.room_id, r.viewer_id, r.client_lead_id);
    match erase_waited {
        None => check(
            "withdrawn leads: personal columns erased",
            true,
            "skipped (--erase-wait-secs 0)".into(),
        ),
        Some(waited) => {
            let withdrawn_rows: Vec<&LeadRow> = lead_rows
                .iter()
                .filter(|r| withdrawal_of.get(&key_of(r)) == Some(&"accepted"))
                .collect();
            let unerased: Vec<String> = withdrawn_rows
                .iter()
                .filter(|r| r.personal != 0)
                .map(|r| format!("viewer {} lead {}", r.viewer_id, r.client_lead_id))
                .collect();
            check(
                "withdrawn leads: personal columns erased",
                unerased.is_empty(),
                if unerased.is_empty() {
                    format!(
                        "{} rows of {withdrawn_records} withdrawn leads blank (waited {:.1} s; \
                         {erased_rows} erased rows)",
                        withdrawn_rows.len(),
                        waited.as_secs_f64()
                    )
                } else {
                    format!(
                        "{} of {} rows of withdrawn leads still hold personal data after \
                         {:.1} s: {}",
                        unerased.len(),
                        withdrawn_rows.len(),
                        waited.as_secs_f64(),
                        examples(&unerased)
                    )
                },
            );
        }
    }
    // Leads not withdrawn (no withdrawal, or one rejected) keep their
    // personal data; an unacked withdrawal may or may not have happened.
    let kept: Vec<&LeadRow> = lead_rows
        .iter()
        .filter(|r| {
            known.contains(&key_of(r))
                && matches!(withdrawal_of.get(&key_of(r)), None | Some(&"rejected"))
        })
        .collect();
    let lost: Vec<String> = kept
        .iter()
        .filter(|r| r.has_phone == 0)
        .map(|r| format!("viewer {} lead {}", r.viewer_id, r.client_lead_id))
        .collect();
    check(
        "leads not withdrawn: personal columns kept",
        lost.is_empty(),
        if lost.is_empty() {
            format!("{} rows keep their phone", kept.len())
        } else {
            format!(
                "{} of {} rows lost their phone columns: {}",
                lost.len(),
                kept.len(),
                examples(&lost)
            )
        },
    );

    // 2. Chat: stored rows = accepted acks, per class; no duplicates.
    let mut mismatch = Vec::new();
    for r in &gt.classes {
        let Some(e) = ck.get(&(r.class, "chat")) else {
            continue;
        };
        let unacked = summary
            .classes
            .get(r.class.as_str())
            .map_or(0, |c| c.unacked.chat);
        if e.stored < e.acked_accepted || e.stored > e.acked_accepted + unacked {
            let what = if e.stored > e.acked_accepted {
                "unexpected accept"
            } else {
                "missing"
            };
            mismatch.push(format!(
                "{what}: {} chat rows for class {} but {} acked accepted{}",
                e.stored,
                r.class,
                e.acked_accepted,
                if unacked > 0 {
                    format!(" (+{unacked} unacked)")
                } else {
                    String::new()
                }
            ));
        }
    }
    if unknown_rows > 0 {
        mismatch.push(format!(
            "{unknown_rows} rows of viewers outside the run's layout"
        ));
    }
    check(
        "chat: stored rows = accepted acks, per class",
        mismatch.is_empty(),
        if mismatch.is_empty() {
            "equal for every class".into()
        } else {
            mismatch.join("; ")
        },
    );
    check(
        "chat: none stored twice",
        chat_dupes.is_empty(),
        if chat_dupes.is_empty() {
            "one row per message".into()
        } else {
            format!("stored twice: {}", chat_dupes.join("; "))
        },
    );

    // 3. Likes: stored + rate limited = sent.
    let taps_sent = summary.sent.like;
    let taps_limited: u64 = ck
        .values()
        .filter(|e| e.kind == "like")
        .map(|e| e.blocked)
        .sum();
    let accounted = like_taps_stored + taps_limited;
    let lost = taps_sent.saturating_sub(accounted);
    let lost_ok = lost as f64 <= tol.max_likes_lost * taps_sent as f64;
    check(
        "likes: stored + rate limited = sent",
        accounted <= taps_sent && lost_ok,
        if lost > 0 {
            format!(
                "{like_taps_stored} stored + {taps_limited} limited, {taps_sent} sent: {lost} lost ({:.2} %, tolerance {:.2} %)",
                100.0 * lost as f64 / taps_sent.max(1) as f64,
                100.0 * tol.max_likes_lost
            )
        } else {
            format!("{like_taps_stored} stored + {taps_limited} limited, {taps_sent} sent")
        },
    );

    // 4. Legitimate events: rejected and busy within tolerance.
    for kind in ["chat", "lead", "like"] {
        let (blocked, decided, busy) = ck
            .values()
            .filter(|e| e.kind == kind && !e.class.is_abusive())
            .fold((0, 0, 0), |(b, d, y), e| {
                (b + e.blocked, d + e.blocked + e.passed, y + e.busy)
            });
        if decided + busy == 0 {
            continue;
        }
        let reasons: BTreeMap<&String, u64> = ck
            .values()
            .filter(|e| e.kind == kind && !e.class.is_abusive())
            .flat_map(|e| e.reasons.iter())
            .fold(BTreeMap::new(), |mut m, (r, n)| {
                *m.entry(r).or_default() += n;
                m
            });
        let r = share(blocked, decided);
        check(
            &format!(
                "legitimate {kind} rejected ≤ {}",
                pct(tol.max_legit_rejected)
            ),
            r <= tol.max_legit_rejected,
            format!(
                "{blocked} of {decided} ({}){}",
                pct(r),
                if reasons.is_empty() {
                    String::new()
                } else {
                    format!(
                        ": {}",
                        reasons
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                }
            ),
        );
        if kind == "chat" {
            let b = share(busy, decided + busy);
            check(
                &format!("legitimate chat busy ≤ {}", pct(tol.max_busy)),
                b <= tol.max_busy,
                format!("{busy} of {} ({})", decided + busy, pct(b)),
            );
        }
    }

    // 5. Abuse: recall, precision, and what got through within tolerance.
    let mut quality = Vec::new();
    for c in Class::ABUSIVE {
        let Some(kind) = c.abuse_kind() else { continue };
        let Some(e) = ck.get(&(c, kind)) else {
            continue;
        };
        let events = e.blocked + e.passed;
        if events == 0 && e.sent == 0 {
            continue;
        }
        let family = c.rule_family();
        let legit_blocked: u64 = if kind == "lead" {
            lead_rows
                .iter()
                .filter(|r| {
                    r.verdict != "accepted"
                        && class_of(&layout, stride, r.viewer_id).is_some_and(|k| !k.is_abusive())
                        && r.reasons.iter().any(|x| family.contains(&x.as_str()))
                })
                .count() as u64
        } else {
            ck.values()
                .filter(|x| x.kind == kind && !x.class.is_abusive())
                .flat_map(|x| x.reasons.iter())
                .filter(|(r, _)| family.contains(&r.as_str()))
                .map(|(_, n)| n)
                .sum()
        };
        let tolerance = tol.max_abuse_accepted.get(c).unwrap_or(0.0);
        let q = Quality {
            class: c,
            kind: kind.into(),
            events,
            blocked: e.blocked,
            passed: e.passed,
            legit_blocked,
            recall: if events == 0 {
                1.0
            } else {
                share(e.blocked, events)
            },
            precision: if e.blocked + legit_blocked == 0 {
                1.0
            } else {
                share(e.blocked, e.blocked + legit_blocked)
            },
            passed_share: share(e.passed, events),
            tolerance,
        };
        check(
            &format!("{c}: abuse got through ≤ {}", pct(tolerance)),
            q.passed_share <= tolerance,
            format!(
                "{} of {events} {kind} events passed ({}); recall {:.3}, precision {:.3}",
                e.passed,
                pct(q.passed_share),
                q.recall,
                q.precision
            ),
        );
        quality.push(q);
    }

    // 6. The run itself: acks came back, viewers connected, load offered.
    let s = summary;
    let frames = s.sent.chat + s.sent.lead + s.resent.chat + s.resent.lead + s.withdrawals.sent;
    let unacked = s.unacked.chat + s.unacked.lead + s.withdrawals.unacked;
    check(
        &format!("acks: unacked ≤ {}", pct(tol.max_unacked)),
        share(unacked, frames) <= tol.max_unacked,
        format!(
            "{unacked} of {frames} chat/lead/withdraw frames unacked ({})",
            pct(share(unacked, frames))
        ),
    );
    let c = &s.connections;
    check(
        &format!("connections: failed ≤ {}", pct(tol.max_failed_connections)),
        share(c.failed, c.attempted) <= tol.max_failed_connections,
        format!(
            "{} of {} attempts failed{}",
            c.failed,
            c.attempted,
            if c.failures.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    c.failures
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
        ),
    );
    if let Some(limit) = tol.max_lead_ack_p99_ms {
        let p99 = s.latency_us.lead.p99 as f64 / 1000.0;
        check(
            &format!("leads: ack p99 ≤ {limit} ms"),
            s.latency_us.lead.count > 0 && p99 <= limit,
            format!(
                "lead ack p99 {p99:.1} ms over {} leads (p50 {:.1} ms, max {:.1} ms)",
                s.latency_us.lead.count,
                s.latency_us.lead.p50 as f64 / 1000.0,
                s.latency_us.lead.max as f64 / 1000.0
            ),
        );
    }
    let dropped = s.dropped_local.chat + s.dropped_local.like + s.dropped_local.lead;
    check(
        "load offered: nothing dropped by the loadgen",
        dropped == 0,
        format!("{dropped} events dropped locally"),
    );

    let passed = checks.iter().all(|c| c.ok);
    Ok(VerifyReport {
        url: target.url.clone(),
        database: target.database.clone(),
        passed,
        classes: ck
            .into_values()
            .filter(|e| e.sent > 0 || e.stored > 0 || e.blocked > 0)
            .collect(),
        quality,
        checks,
        like_taps_stored,
        session_rows,
        waited_s: (waited.as_secs_f64() * 10.0).round() / 10.0,
        withdrawn: withdrawn_records,
        withdrawal_rows,
        erased_rows,
        erase_waited_s: erase_waited.map(|w| (w.as_secs_f64() * 10.0).round() / 10.0),
    })
}

fn map_line(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The report as text.
pub fn text(r: &VerifyReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "verify: database {} on {} (rows settled after {:.1} s)",
        r.database, r.url, r.waited_s
    );
    let _ = writeln!(
        o,
        "{:<15} {:<5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}  blocked by reason / dry-run",
        "class", "kind", "sent", "acked_ok", "stored", "passed", "blocked", "busy"
    );
    for e in &r.classes {
        let mut why = map_line(&e.reasons);
        if !e.dry_run.is_empty() {
            let _ = write!(why, "  dry-run: {}", map_line(&e.dry_run));
        }
        let stored = if e.kind == "like" {
            "-".to_owned()
        } else {
            e.stored.to_string()
        };
        let acked = if e.kind == "like" {
            "-".to_owned()
        } else {
            e.acked_accepted.to_string()
        };
        let _ = writeln!(
            o,
            "{:<15} {:<5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}  {why}",
            format!("{}{}", e.class, if e.class.is_abusive() { "*" } else { "" }),
            e.kind,
            e.sent,
            acked,
            stored,
            e.passed,
            e.blocked,
            e.busy,
        );
    }
    let _ = writeln!(
        o,
        "(like counts are taps; like rows are per room: {} taps stored in like_ticks; \
         sessions: {} joins, {} leaves)",
        r.like_taps_stored, r.session_rows[0], r.session_rows[1]
    );
    if r.withdrawn + r.withdrawal_rows > 0 {
        let _ = writeln!(
            o,
            "withdrawals: {} leads withdrawn (acked accepted); lead_withdrawals: {} withdraw rows, \
             {} erased rows{}",
            r.withdrawn,
            r.withdrawal_rows,
            r.erased_rows,
            r.erase_waited_s
                .map(|s| format!("; waited {s:.1} s for their erasure"))
                .unwrap_or_default()
        );
    }
    if !r.quality.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "guard quality per abusive class (positive = abuse):");
        let _ = writeln!(
            o,
            "{:<15} {:<5} {:>8} {:>8} {:>8} {:>9} {:>7} {:>9} {:>9} {:>9}",
            "class",
            "kind",
            "events",
            "TP",
            "FN",
            "FP_legit",
            "recall",
            "precision",
            "passed",
            "tolerance"
        );
        for q in &r.quality {
            let _ = writeln!(
                o,
                "{:<15} {:<5} {:>8} {:>8} {:>8} {:>9} {:>7.3} {:>9.3} {:>9} {:>9}",
                q.class.as_str(),
                q.kind,
                q.events,
                q.blocked,
                q.passed,
                q.legit_blocked,
                q.recall,
                q.precision,
                pct(q.passed_share),
                pct(q.tolerance)
            );
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "checks:");
    for c in &r.checks {
        let _ = writeln!(
            o,
            "  {:<4} {}: {}",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    let failed = r.checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        let _ = writeln!(o, "verify: PASSED ({} checks)", r.checks.len());
    } else {
        let _ = writeln!(o, "verify: FAILED ({failed} of {} checks)", r.checks.len());
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leads_file_sits_next_to_the_summary() {
        assert_eq!(
            leads_path(Path::new("build/x/summary.json")),
            PathBuf::from("build/x/summary.leads.jsonl")
        );
    }

    #[test]
    fn scope_is_the_run_s_rooms_ids_and_time() {
        let gt = GroundTruth {
            room_ids: vec![3, 4],
            client_ids: [100, 200],
            started_unix_ms: 1_700_000_000_000,
            ended_unix_ms: 1_700_000_060_000,
            viewer_id_stride: 1_000_000,
            viewers_per_room: 10,
            ..GroundTruth::default()
        };
        let layout = ClassLayout::new(10, &[(Class::Lurker, 10)]);
        let s = Scope::new("db_1", &gt, &layout);
        assert_eq!(s.rooms, "room_id IN (3,4)");
        assert_eq!(s.ids, "BETWEEN 100 AND 200");
        assert_eq!((s.from_ms, s.to_ms), (1_699_999_995_000, 1_700_000_120_000));
        assert!(s.counts_sql().contains("`db_1`.leads"));
        assert!(s.counts_sql().contains("`db_1`.lead_withdrawals"));
        assert!(s.unerased_sql().contains("phone_enc != ''"));
    }
}

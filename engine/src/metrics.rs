//! Every counter the engine keeps, and their Prometheus text exposition.
//!
//! Counters are plain atomics in one struct; hot paths add per batch where
//! they can. Metric names live here and nowhere else.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::event::Kind;
use crate::gate::admission::Refusal;
use crate::table::Table;
use crate::wire::{CloseCode, Reason, Verdict};

const KINDS: usize = 4;
const REASONS: usize = 64;
const VERDICTS: usize = 5;
const CLOSES: usize = CloseCode::ALL.len();

/// The lead rules that look at other nodes' facts (docs/ROUTING.md,
/// "Cross-node facts").
pub const CROSS_NODE_RULES: [Reason; 3] = [
    Reason::DuplicateLead,
    Reason::VelocityIp,
    Reason::VelocityPhone,
];

fn cross_node_index(r: Reason) -> Option<usize> {
    CROSS_NODE_RULES.iter().position(|x| *x == r)
}

/// Reads of other nodes' lead facts (`lead_facts`), by the facts task.
#[derive(Debug, Default)]
pub struct FactStats {
    /// Reads merged into every shard.
    pub reads: AtomicU64,
    /// Reads that failed (ClickHouse unreachable or an error).
    pub read_errors: AtomicU64,
    /// Rows read.
    pub rows: AtomicU64,
}

/// The outcome of one webhook request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookResult {
    /// A 2xx answer.
    Delivered = 0,
    /// Another status.
    HttpError = 1,
    /// No answer within `webhooks.timeout_ms`.
    Timeout = 2,
    /// Connection, TLS or protocol error.
    Transport = 3,
}

impl WebhookResult {
    /// Every result, in index order.
    pub const ALL: [WebhookResult; 4] = [
        WebhookResult::Delivered,
        WebhookResult::HttpError,
        WebhookResult::Timeout,
        WebhookResult::Transport,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Delivered => "delivered",
            WebhookResult::HttpError => "http_error",
            WebhookResult::Timeout => "timeout",
            WebhookResult::Transport => "transport_error",
        }
    }
}

/// Lead webhooks (`crate::delivery::webhook`), summed over merchants.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Requests by [`WebhookResult`].
    attempts: [AtomicU64; 4],
    /// Leads delivered from a page.
    pub leads_delivered: AtomicU64,
    /// Leads that failed every attempt and went to the backlog.
    pub leads_backlogged: AtomicU64,
    /// Leads of a page withdrawn or erased before a (re)try: not sent.
    pub leads_cancelled: AtomicU64,
    /// Backlog entries delivered by a pass.
    pub backlog_delivered: AtomicU64,
    /// Backlog entries no longer deliverable.
    pub backlog_cancelled: AtomicU64,
    /// Waves not sent because their audit rows could not be written.
    pub audit_failures: AtomicU64,
    /// ClickHouse calls of the senders that failed (retried).
    pub store_errors: AtomicU64,
    /// Backlog entries waiting, of the merchants this node sends for (as of
    /// each one's last pass).
    pub backlog_waiting: AtomicI64,
    /// Leads of current pages not yet delivered or in the backlog.
    pub in_flight: AtomicI64,
}

impl WebhookStats {
    /// Count one request.
    pub fn attempt(&self, r: WebhookResult) {
        self.attempts[r as usize].fetch_add(1, Relaxed);
    }

    /// Requests with result `r` so far.
    pub fn attempts(&self, r: WebhookResult) -> u64 {
        self.attempts[r as usize].load(Relaxed)
    }

    fn render(&self, s: &mut String) {
        let head = |s: &mut String, name: &str, ty: &str, help: &str| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {ty}");
        };
        head(
            s,
            "roomgate_webhook_requests_total",
            "counter",
            "Lead webhook requests, by result (delivered = 2xx).",
        );
        for r in WebhookResult::ALL {
            let _ = writeln!(
                s,
                "roomgate_webhook_requests_total{{result=\"{}\"}} {}",
                r.as_str(),
                self.attempts(r)
            );
        }
        head(
            s,
            "roomgate_webhook_leads_total",
            "counter",
            "Leads by webhook outcome: delivered (from a page), backlogged (every attempt failed), cancelled (from a page: withdrawn or erased before an attempt), backlog_delivered, backlog_cancelled (withdrawn, erased or moved before a retry).",
        );
        for (outcome, n) in [
            ("delivered", &self.leads_delivered),
            ("backlogged", &self.leads_backlogged),
            ("cancelled", &self.leads_cancelled),
            ("backlog_delivered", &self.backlog_delivered),
            ("backlog_cancelled", &self.backlog_cancelled),
        ] {
            let _ = writeln!(
                s,
                "roomgate_webhook_leads_total{{outcome=\"{outcome}\"}} {}",
                n.load(Relaxed)
            );
        }
        for (name, kind, help, v) in [
            (
                "roomgate_webhook_backlog_waiting",
                "gauge",
                "Leads waiting in the webhook backlog, of the merchants this node sends for.",
                self.backlog_waiting.load(Relaxed),
            ),
            (
                "roomgate_webhook_in_flight",
                "gauge",
                "Leads of current webhook pages not yet delivered or in the backlog.",
                self.in_flight.load(Relaxed),
            ),
            (
                "roomgate_webhook_audit_failures_total",
                "counter",
                "Webhook waves not sent because their lead_audit rows could not be written.",
                self.audit_failures.load(Relaxed) as i64,
            ),
            (
                "roomgate_webhook_store_errors_total",
                "counter",
                "ClickHouse calls of the webhook senders that failed (cursor, backlog, leads, audit); retried.",
                self.store_errors.load(Relaxed) as i64,
            ),
        ] {
            head(s, name, kind, help);
            let _ = writeln!(s, "{name} {v}");
        }
    }
}

/// The merchant API's endpoints, for its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiEndpoint {
    /// `GET /v1/leads`.
    Leads = 0,
    /// `POST /v1/leads/erase`.
    Erase = 1,
}

/// The statuses the merchant API answers with; anything else is `other`.
const API_STATUSES: [u16; 6] = [200, 202, 400, 401, 404, 503];

/// The merchant API (`crate::delivery`).
#[derive(Debug, Default)]
pub struct MerchantApiStats {
    /// Requests by endpoint and status ([`API_STATUSES`], then other).
    requests: [[AtomicU64; 7]; 2],
    /// Leads delivered by pulls (each delivery, so a re-pull counts again).
    pub leads_delivered: AtomicU64,
    /// Delivered leads with a field that did not decrypt.
    pub undecryptable: AtomicU64,
}

impl MerchantApiStats {
    /// Count one answer.
    pub fn request(&self, endpoint: ApiEndpoint, status: u16) {
        let i = API_STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(API_STATUSES.len());
        self.requests[endpoint as usize][i].fetch_add(1, Relaxed);
    }

    /// Answers so far of `endpoint` with `status` (tests).
    pub fn requests(&self, endpoint: ApiEndpoint, status: u16) -> u64 {
        API_STATUSES
            .iter()
            .position(|s| *s == status)
            .map_or(0, |i| self.requests[endpoint as usize][i].load(Relaxed))
    }

    fn render(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "# HELP roomgate_merchant_api_requests_total Merchant API answers, by endpoint and HTTP status.\n# TYPE roomgate_merchant_api_requests_total counter"
        );
        for (e, name) in [(ApiEndpoint::Leads, "leads"), (ApiEndpoint::Erase, "erase")] {
            for (i, n) in self.requests[e as usize].iter().enumerate() {
                let status = API_STATUSES
                    .get(i)
                    .map_or_else(|| "other".to_owned(), u16::to_string);
                let _ = writeln!(
                    s,
                    "roomgate_merchant_api_requests_total{{endpoint=\"{name}\",status=\"{status}\"}} {}",
                    n.load(Relaxed)
                );
            }
        }
        for (name, help, v) in [
            (
                "roomgate_merchant_api_leads_delivered_total",
                "Leads the merchant API delivered (decrypted, audited); a lead pulled again counts again.",
                &self.leads_delivered,
            ),
            (
                "roomgate_merchant_api_undecryptable_total",
                "Delivered leads with a field that did not decrypt (a key the engine no longer derives).",
                &self.undecryptable,
            ),
        ] {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
    }
}

/// Overflow outcomes at the shard queue, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// A lead or session event waited for queue space (backpressure).
    Waited = 0,
    /// A chat message was answered `busy`.
    Busy = 1,
    /// Like taps were held back and coalesced into a later push.
    Coalesced = 2,
}

/// Per-table sink counters.
#[derive(Debug, Default)]
pub struct TableStats {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Rows committed.
    pub rows: AtomicU64,
    /// Insert attempts that failed and were retried.
    pub retries: AtomicU64,
    /// Batches set aside (non-retryable data error) to the dead-letter dir.
    pub dead_batches: AtomicU64,
    /// Rows set aside.
    pub dead_rows: AtomicU64,
    /// Rows left out of a batch because ClickHouse already had them
    /// (leads another node stored; `[routing]` only).
    pub skipped_stored: AtomicU64,
    /// Sum of successful insert latencies, µs.
    pub insert_us_sum: AtomicU64,
    /// Max insert latency seen, µs.
    pub insert_us_max: AtomicU64,
    /// Rows waiting in the table's batcher and queue.
    pub pending_rows: AtomicI64,
}

/// (name, type, help, getter) of a per-table metric.
type TableMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&TableStats) -> i64,
);

/// Write-ahead log counters (updated by the log thread, once per group).
#[derive(Debug, Default)]
pub struct LogStats {
    /// Group commits (one fsync each).
    pub fsyncs: AtomicU64,
    /// Sum of write+fsync time, µs.
    pub fsync_us_sum: AtomicU64,
    /// Slowest write+fsync, µs.
    pub fsync_us_max: AtomicU64,
    /// Bytes appended.
    pub bytes_written: AtomicU64,
    /// Acks released after their records were durable.
    pub acks: AtomicU64,
    /// Bytes in the log's segments now.
    pub bytes: AtomicU64,
    /// Last durable LSN.
    pub durable_lsn: AtomicU64,
    /// Records from the oldest one a writer still needs to the durable end:
    /// 0 when ClickHouse has everything (an upper bound on the backlog).
    pub backlog_records: AtomicU64,
    /// Segments deleted after their rows were committed.
    pub segments_deleted: AtomicU64,
    /// Times the log went over its disk budget.
    pub full_events: AtomicU64,
    /// Records recovered at start that were not yet committed.
    pub replayed_rows: AtomicU64,
    /// Corrupt regions skipped at start.
    pub corrupt_regions: AtomicU64,
    /// Lead and chat ids restored into the idempotency window at start.
    pub restored_ids: AtomicU64,
}

/// Counters of one shard worker round, kept in plain integers by the
/// sans-IO shard core and added to [`Metrics`] once per round
/// ([`Metrics::add_round`]), not once per message.
#[derive(Debug, Clone)]
pub struct RoundStats {
    verdicts: [[u64; VERDICTS]; KINDS],
    reasons: [[u64; REASONS]; KINDS],
    dry_runs: [[u64; REASONS]; KINDS],
    /// Like taps admitted by the guard.
    pub like_taps_admitted: u64,
    /// Like taps over the per-viewer cap.
    pub like_taps_limited: u64,
    /// Leads finished this round (decided, replayed or merged with a resend
    /// in flight): the I/O layer's count of leads in flight goes down by it.
    pub leads_done: usize,
    /// Rejected events counted into a moderation row already open for
    /// their viewer, reason and bucket (no row of their own).
    pub moderation_folded: u64,
    /// Rejected leads over the per-viewer hourly cap: acked, counted in a
    /// moderation row, no `leads` row.
    pub leads_unstored: u64,
    /// Withdrawals logged (`lead_withdrawals` rows).
    pub withdrawals: u64,
    /// Withdrawals over the per-viewer hourly cap: rejected, no row.
    pub withdrawals_limited: u64,
    /// Leads flagged only because of other nodes' facts, by rule
    /// ([`CROSS_NODE_RULES`]).
    cross_node: [u64; 3],
    any: bool,
}

impl Default for RoundStats {
    fn default() -> Self {
        RoundStats {
            verdicts: [[0; VERDICTS]; KINDS],
            reasons: [[0; REASONS]; KINDS],
            dry_runs: [[0; REASONS]; KINDS],
            like_taps_admitted: 0,
            like_taps_limited: 0,
            leads_done: 0,
            moderation_folded: 0,
            leads_unstored: 0,
            withdrawals: 0,
            withdrawals_limited: 0,
            cross_node: [0; 3],
            any: false,
        }
    }
}

impl RoundStats {
    /// Count a decision of `kind` with `verdict` and `reason`.
    pub fn decision(&mut self, kind: Kind, verdict: Verdict, reason: Reason) {
        self.any = true;
        self.verdicts[kind as usize][verdict as usize] += 1;
        if reason != Reason::None {
            self.reasons[kind as usize][reason_index(reason)] += 1;
        }
    }

    /// Count a dry-run hit of `rule` on an event of `kind`.
    pub fn dry_run(&mut self, kind: Kind, rule: Reason) {
        self.any = true;
        self.dry_runs[kind as usize][reason_index(rule)] += 1;
    }

    /// Count a lead that `rule` flagged only because of other nodes' facts.
    pub fn cross_node(&mut self, rule: Reason) {
        if let Some(i) = cross_node_index(rule) {
            self.any = true;
            self.cross_node[i] += 1;
        }
    }

    /// Count like taps admitted and over the cap.
    pub fn likes(&mut self, admitted: u64, limited: u64) {
        self.any = true;
        self.like_taps_admitted += admitted;
        self.like_taps_limited += limited;
    }

    /// Decisions counted for `kind` and `verdict` (tests).
    pub fn verdict_count(&self, kind: Kind, verdict: Verdict) -> u64 {
        self.verdicts[kind as usize][verdict as usize]
    }

    /// Leads `rule` flagged only because of other nodes' facts (tests).
    pub fn cross_node_count(&self, rule: Reason) -> u64 {
        cross_node_index(rule).map_or(0, |i| self.cross_node[i])
    }
}

/// All engine counters.
#[derive(Debug)]
pub struct Metrics {
    /// Decisions by kind and verdict.
    verdicts: [[AtomicU64; VERDICTS]; KINDS],
    /// Decisions by kind and reason (rejects, flags, replays).
    reasons: [[AtomicU64; REASONS]; KINDS],
    /// Queue overflow outcomes by kind.
    overflow: [[AtomicU64; 3]; KINDS],
    /// Like taps received at the gate.
    pub like_taps: AtomicU64,
    /// Like taps admitted by the guard (stored in `like_ticks`).
    pub like_taps_admitted: AtomicU64,
    /// Like taps over the per-viewer cap.
    pub like_taps_limited: AtomicU64,
    /// Dry-run hits by kind and rule.
    dry_runs: [[AtomicU64; REASONS]; KINDS],
    /// Frames decoded, by kind.
    frames: [AtomicU64; KINDS],
    /// Connections accepted and welcomed.
    pub connections_opened: AtomicU64,
    /// Connections currently open.
    pub connections_open: AtomicI64,
    /// Connection attempts refused before any TLS work, by
    /// [`Refusal`] (index in `Refusal::ALL`).
    connections_refused: [AtomicU64; 3],
    /// Retry packets sent (address validation under a handshake flood).
    pub retries_sent: AtomicU64,
    /// Handshakes in progress now (accepted, no valid `Hello` yet).
    pub handshakes_in_progress: AtomicI64,
    /// The io runtime's lateness, smoothed, µs (`gate::pace`).
    pub io_lateness_us: AtomicI64,
    /// The io runtime's workers' busy share, smoothed, per mille.
    pub io_busy_permille: AtomicI64,
    /// The interval like senders are asked to keep now, ms (0 = none).
    pub like_pace_ms: AtomicI64,
    /// `like_pace` notices sent.
    pub like_pace_notices: AtomicU64,
    /// Like frames that came sooner than half the pace their session was
    /// told after its previous one (clients that ignore `like_pace`).
    pub like_frames_early: AtomicU64,
    /// Session tickets renewed by a `Refresh` frame.
    pub ticket_refreshes: AtomicU64,
    /// Connection closes by code.
    closes: [AtomicU64; CLOSES],
    /// Current depth of each shard queue.
    pub queue_depth: Vec<AtomicI64>,
    /// Per-table sink counters, indexed by [`Table::index`].
    pub tables: [TableStats; Table::COUNT],
    /// The write-ahead log.
    pub log: LogStats,
    /// Moderation rows dropped because the sink queue was full (overload).
    pub moderation_dropped: AtomicU64,
    /// Rejected events counted into an open moderation row (no row of
    /// their own).
    pub moderation_folded: AtomicU64,
    /// Rejected leads over the per-viewer hourly cap (no `leads` row).
    pub leads_rejected_unstored: AtomicU64,
    /// Withdrawals logged.
    pub withdrawals: AtomicU64,
    /// Withdrawals over the per-viewer hourly cap.
    pub withdrawals_limited: AtomicU64,
    /// Leads whose personal columns the eraser blanked.
    pub leads_erased: AtomicU64,
    /// Erasure passes that failed (retried at the next one).
    pub erase_failures: AtomicU64,
    /// Client ids forgotten early by the idempotency window, per shard.
    pub idempotency_evicted: Vec<AtomicU64>,
    /// Leads flagged only because of other nodes' facts, by rule
    /// ([`CROSS_NODE_RULES`]).
    cross_node: [AtomicU64; 3],
    /// Reads of other nodes' lead facts.
    pub facts: FactStats,
    /// Lead webhooks.
    pub webhooks: WebhookStats,
    /// The merchant API.
    pub merchant_api: MerchantApiStats,
}

fn close_index(c: CloseCode) -> usize {
    CloseCode::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

fn reason_index(r: Reason) -> usize {
    Reason::ALL
        .iter()
        .position(|x| *x == r)
        .unwrap_or(0)
        .min(REASONS - 1)
}

impl Metrics {
    /// Zeroed counters for `shards` queues.
    pub fn new(shards: usize) -> Self {
        Metrics {
            verdicts: Default::default(),
            reasons: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            overflow: Default::default(),
            like_taps: AtomicU64::new(0),
            like_taps_admitted: AtomicU64::new(0),
            like_taps_limited: AtomicU64::new(0),
            dry_runs: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            frames: Default::default(),
            connections_opened: AtomicU64::new(0),
            connections_open: AtomicI64::new(0),
            connections_refused: Default::default(),
            retries_sent: AtomicU64::new(0),
            io_lateness_us: AtomicI64::new(0),
            io_busy_permille: AtomicI64::new(0),
            like_pace_ms: AtomicI64::new(0),
            like_pace_notices: AtomicU64::new(0),
            like_frames_early: AtomicU64::new(0),
            handshakes_in_progress: AtomicI64::new(0),
            ticket_refreshes: AtomicU64::new(0),
            closes: Default::default(),
            queue_depth: (0..shards).map(|_| AtomicI64::new(0)).collect(),
            tables: Default::default(),
            log: LogStats::default(),
            moderation_dropped: AtomicU64::new(0),
            moderation_folded: AtomicU64::new(0),
            leads_rejected_unstored: AtomicU64::new(0),
            withdrawals: AtomicU64::new(0),
            withdrawals_limited: AtomicU64::new(0),
            leads_erased: AtomicU64::new(0),
            erase_failures: AtomicU64::new(0),
            idempotency_evicted: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            cross_node: Default::default(),
            facts: FactStats::default(),
            webhooks: WebhookStats::default(),
            merchant_api: MerchantApiStats::default(),
        }
    }

    /// Count `n` decisions of `kind` with `verdict` and `reason`.
    pub fn decision(&self, kind: Kind, verdict: Verdict, reason: Reason, n: u64) {
        self.verdicts[kind as usize][verdict as usize].fetch_add(n, Relaxed);
        if reason != Reason::None {
            self.reasons[kind as usize][reason_index(reason)].fetch_add(n, Relaxed);
        }
    }

    /// Add one round's counters.
    pub fn add_round(&self, r: &RoundStats) {
        if !r.any {
            return;
        }
        for k in 0..KINDS {
            for v in 0..VERDICTS {
                if r.verdicts[k][v] > 0 {
                    self.verdicts[k][v].fetch_add(r.verdicts[k][v], Relaxed);
                }
            }
            for i in 0..REASONS {
                if r.reasons[k][i] > 0 {
                    self.reasons[k][i].fetch_add(r.reasons[k][i], Relaxed);
                }
                if r.dry_runs[k][i] > 0 {
                    self.dry_runs[k][i].fetch_add(r.dry_runs[k][i], Relaxed);
                }
            }
        }
        if r.like_taps_admitted > 0 {
            self.like_taps_admitted
                .fetch_add(r.like_taps_admitted, Relaxed);
        }
        if r.like_taps_limited > 0 {
            self.like_taps_limited
                .fetch_add(r.like_taps_limited, Relaxed);
        }
        if r.moderation_folded > 0 {
            self.moderation_folded
                .fetch_add(r.moderation_folded, Relaxed);
        }
        if r.leads_unstored > 0 {
            self.leads_rejected_unstored
                .fetch_add(r.leads_unstored, Relaxed);
        }
        if r.withdrawals > 0 {
            self.withdrawals.fetch_add(r.withdrawals, Relaxed);
        }
        if r.withdrawals_limited > 0 {
            self.withdrawals_limited
                .fetch_add(r.withdrawals_limited, Relaxed);
        }
        for (i, n) in r.cross_node.iter().enumerate() {
            if *n > 0 {
                self.cross_node[i].fetch_add(*n, Relaxed);
            }
        }
    }

    /// Leads `rule` flagged only because of other nodes' facts so far.
    pub fn cross_node_count(&self, rule: Reason) -> u64 {
        cross_node_index(rule).map_or(0, |i| self.cross_node[i].load(Relaxed))
    }

    /// Count a dry-run hit: `rule` would have rejected an event of `kind`.
    pub fn dry_run(&self, kind: Kind, rule: Reason) {
        self.dry_runs[kind as usize][reason_index(rule)].fetch_add(1, Relaxed);
    }

    /// Count a queue overflow outcome.
    pub fn overflow(&self, kind: Kind, what: Overflow) {
        self.overflow[kind as usize][what as usize].fetch_add(1, Relaxed);
    }

    /// Count a decoded frame.
    pub fn frame(&self, kind: Kind) {
        self.frames[kind as usize].fetch_add(1, Relaxed);
    }

    /// Count `n` frames of one kind at once (a session's read batch).
    pub fn frames(&self, kind: Kind, n: u64) {
        if n > 0 {
            self.frames[kind as usize].fetch_add(n, Relaxed);
        }
    }

    /// Frames of `kind` decoded so far.
    pub fn frame_count(&self, kind: Kind) -> u64 {
        self.frames[kind as usize].load(Relaxed)
    }

    /// Count a connection attempt refused before its handshake.
    pub fn refused(&self, why: Refusal) {
        self.connections_refused[why as usize].fetch_add(1, Relaxed);
    }

    /// Connection attempts refused for `why` so far.
    pub fn refused_count(&self, why: Refusal) -> u64 {
        self.connections_refused[why as usize].load(Relaxed)
    }

    /// Publish the admission counters.
    pub fn set_admission(&self, open: usize, handshaking: usize) {
        self.connections_open.store(open as i64, Relaxed);
        self.handshakes_in_progress
            .store(handshaking as i64, Relaxed);
    }

    /// Count a connection close.
    pub fn close(&self, code: CloseCode) {
        self.closes[close_index(code)].fetch_add(1, Relaxed);
    }

    /// Value of a decision counter (tests, summaries).
    pub fn verdict_count(&self, kind: Kind, verdict: Verdict) -> u64 {
        self.verdicts[kind as usize][verdict as usize].load(Relaxed)
    }

    /// Value of an overflow counter.
    pub fn overflow_count(&self, kind: Kind, what: Overflow) -> u64 {
        self.overflow[kind as usize][what as usize].load(Relaxed)
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(8 * 1024);
        let head = |s: &mut String, name: &str, ty: &str, help: &str| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {ty}");
        };
        head(
            &mut s,
            "roomgate_events_total",
            "counter",
            "Guard decisions by event kind and verdict.",
        );
        for k in Kind::ALL {
            for v in [
                Verdict::Accepted,
                Verdict::Suspect,
                Verdict::Rejected,
                Verdict::Duplicate,
            ] {
                let n = self.verdicts[k as usize][v as usize].load(Relaxed);
                let _ = writeln!(
                    s,
                    "roomgate_events_total{{kind=\"{}\",verdict=\"{}\"}} {n}",
                    k.as_str(),
                    v.as_str()
                );
            }
        }
        head(
            &mut s,
            "roomgate_event_reasons_total",
            "counter",
            "Decisions by event kind and reason code.",
        );
        for k in Kind::ALL {
            for r in Reason::ALL.iter().filter(|r| **r != Reason::None) {
                let n = self.reasons[k as usize][reason_index(*r)].load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        s,
                        "roomgate_event_reasons_total{{kind=\"{}\",reason=\"{}\"}} {n}",
                        k.as_str(),
                        r.as_str()
                    );
                }
            }
        }
        head(
            &mut s,
            "roomgate_dry_run_total",
            "counter",
            "Would-be rejects of rules in dry-run, by kind and rule.",
        );
        for k in Kind::ALL {
            for r in Reason::ALL.iter().filter(|r| **r != Reason::None) {
                let n = self.dry_runs[k as usize][reason_index(*r)].load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        s,
                        "roomgate_dry_run_total{{kind=\"{}\",rule=\"{}\"}} {n}",
                        k.as_str(),
                        r.as_str()
                    );
                }
            }
        }
        head(
            &mut s,
            "roomgate_queue_overflow_total",
            "counter",
            "Shard queue overflow outcomes by kind (waited, busy, coalesced).",
        );
        for k in Kind::ALL {
            for (i, o) in ["waited", "busy", "coalesced"].iter().enumerate() {
                let n = self.overflow[k as usize][i].load(Relaxed);
                let _ = writeln!(
                    s,
                    "roomgate_queue_overflow_total{{kind=\"{}\",outcome=\"{o}\"}} {n}",
                    k.as_str()
                );
            }
        }
        head(
            &mut s,
            "roomgate_frames_total",
            "counter",
            "Client frames decoded by kind.",
        );
        for k in Kind::ALL {
            let _ = writeln!(
                s,
                "roomgate_frames_total{{kind=\"{}\"}} {}",
                k.as_str(),
                self.frames[k as usize].load(Relaxed)
            );
        }
        head(
            &mut s,
            "roomgate_like_taps_total",
            "counter",
            "Like taps received.",
        );
        let _ = writeln!(
            s,
            "roomgate_like_taps_total {}",
            self.like_taps.load(Relaxed)
        );
        head(
            &mut s,
            "roomgate_like_taps_admitted_total",
            "counter",
            "Like taps admitted by the guard (stored in like_ticks).",
        );
        let _ = writeln!(
            s,
            "roomgate_like_taps_admitted_total {}",
            self.like_taps_admitted.load(Relaxed)
        );
        head(
            &mut s,
            "roomgate_like_taps_limited_total",
            "counter",
            "Like taps over the per-viewer cap (rate_limited).",
        );
        let _ = writeln!(
            s,
            "roomgate_like_taps_limited_total {}",
            self.like_taps_limited.load(Relaxed)
        );
        head(
            &mut s,
            "roomgate_connections_opened_total",
            "counter",
            "Sessions welcomed.",
        );
        let _ = writeln!(
            s,
            "roomgate_connections_opened_total {}",
            self.connections_opened.load(Relaxed)
        );
        head(
            &mut s,
            "roomgate_connections_open",
            "gauge",
            "Connections open now.",
        );
        let _ = writeln!(
            s,
            "roomgate_connections_open {}",
            self.connections_open.load(Relaxed)
        );
        head(
            &mut s,
            "roomgate_connections_refused_total",
            "counter",
            "Connection attempts refused before any TLS work: at the connection cap (server_full), or at the per-address caps (ip_connections, ip_handshakes).",
        );
        for why in Refusal::ALL {
            let _ = writeln!(
                s,
                "roomgate_connections_refused_total{{why=\"{}\"}} {}",
                why.as_str(),
                self.refused_count(why)
            );
        }
        for (name, kind, help, v) in [
            (
                "roomgate_quic_retries_total",
                "counter",
                "Retry packets sent to validate addresses while many handshakes were in progress (server.retry_above_handshakes).",
                self.retries_sent.load(Relaxed) as i64,
            ),
            (
                "roomgate_handshakes_in_progress",
                "gauge",
                "Connections accepted that have not sent a valid Hello yet.",
                self.handshakes_in_progress.load(Relaxed),
            ),
            (
                "roomgate_io_lateness_us",
                "gauge",
                "How late the io runtime runs a task due now, smoothed (µs): the wait a lead's frame or a handshake sees before it is handled. Above server.overload_lateness_ms like senders are paced.",
                self.io_lateness_us.load(Relaxed),
            ),
            (
                "roomgate_io_busy_permille",
                "gauge",
                "Share of the time the io runtime's workers are busy (not parked), smoothed, per mille. Above server.overload_busy_percent like senders are paced.",
                self.io_busy_permille.load(Relaxed),
            ),
            (
                "roomgate_like_pace_ms",
                "gauge",
                "The interval like senders are asked to keep now (ms; 0 = not paced): server.like_pace_ms, or a half or a quarter of it, while the io runtime is overloaded (docs/TUNING.md, Like pacing).",
                self.like_pace_ms.load(Relaxed),
            ),
            (
                "roomgate_like_pace_notices_total",
                "counter",
                "like_pace notices sent (pacing on or off, one per session that sent a like meanwhile).",
                self.like_pace_notices.load(Relaxed) as i64,
            ),
            (
                "roomgate_like_frames_early_total",
                "counter",
                "Like frames that came sooner than half the pace their session was told after its previous like frame: clients that ignore like_pace (they are still served).",
                self.like_frames_early.load(Relaxed) as i64,
            ),
        ] {
            head(&mut s, name, kind, help);
            let _ = writeln!(s, "{name} {v}");
        }
        head(
            &mut s,
            "roomgate_ticket_refreshes_total",
            "counter",
            "Session tickets renewed by a Refresh frame (expiries without one are closes with code ticket_expired).",
        );
        let _ = writeln!(
            s,
            "roomgate_ticket_refreshes_total {}",
            self.ticket_refreshes.load(Relaxed)
        );
        head(
            &mut s,
            "roomgate_connection_closes_total",
            "counter",
            "Connection closes by close code.",
        );
        for c in CloseCode::ALL {
            let _ = writeln!(
                s,
                "roomgate_connection_closes_total{{code=\"{}\"}} {}",
                c.as_str(),
                self.closes[close_index(*c)].load(Relaxed)
            );
        }
        head(
            &mut s,
            "roomgate_queue_depth",
            "gauge",
            "Events waiting in each shard queue.",
        );
        for (i, d) in self.queue_depth.iter().enumerate() {
            let _ = writeln!(
                s,
                "roomgate_queue_depth{{shard=\"{i}\"}} {}",
                d.load(Relaxed)
            );
        }
        let table_metrics: [TableMetric; 9] = [
            (
                "roomgate_sink_batches_total",
                "counter",
                "Batches committed to ClickHouse.",
                |t| t.batches.load(Relaxed) as i64,
            ),
            (
                "roomgate_sink_rows_total",
                "counter",
                "Rows committed to ClickHouse.",
                |t| t.rows.load(Relaxed) as i64,
            ),
            (
                "roomgate_sink_retries_total",
                "counter",
                "Insert attempts retried.",
                |t| t.retries.load(Relaxed) as i64,
            ),
            (
                "roomgate_sink_dead_batches_total",
                "counter",
                "Batches set aside after a non-retryable error.",
                |t| t.dead_batches.load(Relaxed) as i64,
            ),
            (
                "roomgate_sink_dead_rows_total",
                "counter",
                "Rows set aside after a non-retryable error.",
                |t| t.dead_rows.load(Relaxed) as i64,
            ),
            (
                "roomgate_sink_skipped_stored_total",
                "counter",
                "Rows left out of a batch because ClickHouse already held them (stored by another node).",
                |t| t.skipped_stored.load(Relaxed) as i64,
            ),
            (
                "roomgate_sink_insert_seconds_sum",
                "counter",
                "Total time of successful inserts.",
                |t| t.insert_us_sum.load(Relaxed) as i64,
            ),
            (
                "roomgate_sink_insert_seconds_max",
                "gauge",
                "Slowest successful insert.",
                |t| t.insert_us_max.load(Relaxed) as i64,
            ),
            (
                "roomgate_sink_pending_rows",
                "gauge",
                "Rows read from the log by the writer and not yet committed.",
                |t| t.pending_rows.load(Relaxed),
            ),
        ];
        for (name, ty, help, get) in table_metrics {
            head(&mut s, name, ty, help);
            for t in Table::ALL {
                let v = get(&self.tables[t.index()]);
                if name.contains("seconds") {
                    let _ = writeln!(s, "{name}{{table=\"{t}\"}} {:.6}", v as f64 / 1e6);
                } else {
                    let _ = writeln!(s, "{name}{{table=\"{t}\"}} {v}");
                }
            }
        }
        head(
            &mut s,
            "roomgate_moderation_rows_dropped_total",
            "counter",
            "Moderation rows not written because the sink was saturated.",
        );
        let _ = writeln!(
            s,
            "roomgate_moderation_rows_dropped_total {}",
            self.moderation_dropped.load(Relaxed)
        );
        for (name, help, v) in [
            (
                "roomgate_moderation_events_folded_total",
                "Rejected events counted into an open moderation row (one row per viewer, kind, reason and bucket).",
                self.moderation_folded.load(Relaxed),
            ),
            (
                "roomgate_leads_rejected_unstored_total",
                "Rejected leads over the per-viewer hourly cap: acked, counted in moderation_events, no leads row.",
                self.leads_rejected_unstored.load(Relaxed),
            ),
            (
                "roomgate_lead_withdrawals_total",
                "Withdraw frames logged as lead_withdrawals rows (acked once durable).",
                self.withdrawals.load(Relaxed),
            ),
            (
                "roomgate_lead_withdrawals_limited_total",
                "Withdraw frames over guard.abuse.max_withdrawals_per_hour: rejected (rate_limited), no row.",
                self.withdrawals_limited.load(Relaxed),
            ),
            (
                "roomgate_leads_erased_total",
                "Leads whose personal columns the eraser blanked (withdrawn or erased on request).",
                self.leads_erased.load(Relaxed),
            ),
            (
                "roomgate_erase_failures_total",
                "Erasure passes that failed (ClickHouse unreachable or refused); the requests stay pending and are retried.",
                self.erase_failures.load(Relaxed),
            ),
        ] {
            head(&mut s, name, "counter", help);
            let _ = writeln!(s, "{name} {v}");
        }
        let l = &self.log;
        let log_metrics: [(&str, &str, &str, u64); 13] = [
            ("roomgate_log_backlog_records", "gauge", "Log records from the oldest one not yet committed to ClickHouse to the durable end (0 = ClickHouse has everything).", l.backlog_records.load(Relaxed)),
            (
                "roomgate_log_fsyncs_total",
                "counter",
                "Group commits of the write-ahead log (one fsync each).",
                l.fsyncs.load(Relaxed),
            ),
            (
                "roomgate_log_fsync_seconds_sum",
                "counter",
                "Total write+fsync time of group commits.",
                l.fsync_us_sum.load(Relaxed),
            ),
            (
                "roomgate_log_fsync_seconds_max",
                "gauge",
                "Slowest group commit.",
                l.fsync_us_max.load(Relaxed),
            ),
            (
                "roomgate_log_written_bytes_total",
                "counter",
                "Bytes appended to the log.",
                l.bytes_written.load(Relaxed),
            ),
            (
                "roomgate_log_acks_total",
                "counter",
                "Acks released after their records were durable.",
                l.acks.load(Relaxed),
            ),
            (
                "roomgate_log_bytes",
                "gauge",
                "Bytes in the log's segments (rows not yet committed, and their segments).",
                l.bytes.load(Relaxed),
            ),
            (
                "roomgate_log_durable_lsn",
                "gauge",
                "Last durable log sequence number.",
                l.durable_lsn.load(Relaxed),
            ),
            (
                "roomgate_log_segments_deleted_total",
                "counter",
                "Segments deleted after every row in them was committed.",
                l.segments_deleted.load(Relaxed),
            ),
            (
                "roomgate_log_full_total",
                "counter",
                "Times the log went over its disk budget (overflow policy applied).",
                l.full_events.load(Relaxed),
            ),
            (
                "roomgate_log_replayed_rows",
                "gauge",
                "Rows found in the log at start that were not yet committed.",
                l.replayed_rows.load(Relaxed),
            ),
            (
                "roomgate_log_corrupt_regions",
                "gauge",
                "Corrupt regions skipped when the log was opened (ALERT if > 0).",
                l.corrupt_regions.load(Relaxed),
            ),
            (
                "roomgate_log_restored_ids",
                "gauge",
                "Lead and chat ids restored into the idempotency window at start (from the log and ClickHouse).",
                l.restored_ids.load(Relaxed),
            ),
        ];
        for (name, ty, help, v) in log_metrics {
            head(&mut s, name, ty, help);
            if name.contains("seconds") {
                let _ = writeln!(s, "{name} {:.6}", v as f64 / 1e6);
            } else {
                let _ = writeln!(s, "{name} {v}");
            }
        }
        head(
            &mut s,
            "roomgate_idempotency_evicted_total",
            "counter",
            "Client ids forgotten before their window ended.",
        );
        let _ = writeln!(
            s,
            "roomgate_idempotency_evicted_total {}",
            self.idempotency_evicted
                .iter()
                .map(|c| c.load(Relaxed))
                .sum::<u64>()
        );
        head(
            &mut s,
            "roomgate_cross_node_facts_total",
            "counter",
            "Leads a cross-room rule flagged only because of other nodes' facts read from ClickHouse, by rule.",
        );
        for (i, r) in CROSS_NODE_RULES.iter().enumerate() {
            let _ = writeln!(
                s,
                "roomgate_cross_node_facts_total{{rule=\"{}\"}} {}",
                r.as_str(),
                self.cross_node[i].load(Relaxed)
            );
        }
        head(
            &mut s,
            "roomgate_cross_node_fact_reads_total",
            "counter",
            "Reads of other nodes' lead facts (lead_facts): merged into every shard (ok) or failed.",
        );
        let f = &self.facts;
        for (result, n) in [("ok", &f.reads), ("failed", &f.read_errors)] {
            let _ = writeln!(
                s,
                "roomgate_cross_node_fact_reads_total{{result=\"{result}\"}} {}",
                n.load(Relaxed)
            );
        }
        head(
            &mut s,
            "roomgate_cross_node_fact_rows_total",
            "counter",
            "Rows of lead_facts read.",
        );
        let _ = writeln!(
            s,
            "roomgate_cross_node_fact_rows_total {}",
            f.rows.load(Relaxed)
        );
        self.webhooks.render(&mut s);
        self.merchant_api.render(&mut s);
        s
    }
}

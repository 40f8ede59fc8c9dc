//! Everything the run counts: plain atomics for hot counters, one mutex for
//! the histograms and per-reason maps (taken once per ack, not per like).
//!
//! Latencies are microseconds in HdrHistograms (3 significant digits, up to
//! one hour). Chat and lead latency is measured from each event's *intended*
//! send time to its first ack; handshake latency from `connect` to `Welcome`,
//! join latency from the intended join time to `Welcome` (so it includes any
//! wait for a handshake slot). Per time bucket there is a smaller histogram
//! (2 significant digits) per kind, keyed by intended send time, for the
//! report's latency-over-time chart; and a sampler records cumulative
//! counters once per bucket for throughput over time.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Mutex, MutexGuard, OnceLock,
    },
    time::Duration,
};

use hdrhistogram::Histogram;
use roomgate::wire::{Reason, RoomSettings, Verdict};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{schedule::Kind, truth::Class};

/// Largest latency a histogram holds (larger values saturate), in µs.
const HIST_MAX_US: u64 = 3_600 * 1_000_000;

/// A full-precision latency histogram.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_max(HIST_MAX_US, 3).expect("static histogram bounds are valid")
}

/// A per-bucket latency histogram (2 significant digits: ~1 % error, a
/// tenth of the memory).
fn bucket_histogram() -> Histogram<u64> {
    Histogram::new_with_max(HIST_MAX_US, 2).expect("static histogram bounds are valid")
}

/// A counter per [`Kind`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PerKind([AtomicU64; 4]);

impl PerKind {
    /// Add `n` for `kind`.
    pub fn add(&self, kind: Kind, n: u64) {
        self.0[kind.index()].fetch_add(n, Relaxed);
    }

    /// Current value for `kind`.
    pub fn get(&self, kind: Kind) -> u64 {
        self.0[kind.index()].load(Relaxed)
    }

    /// Sum over all kinds.
    pub fn total(&self) -> u64 {
        Kind::ALL.iter().map(|k| self.get(*k)).sum()
    }
}

/// A counter per [`Class`] and [`Kind`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PerClassKind([PerKind; Class::COUNT]);

impl PerClassKind {
    /// Add `n` for `class` and `kind`.
    pub fn add(&self, class: Class, kind: Kind, n: u64) {
        self.0[class.index()].add(kind, n);
    }

    /// Current value.
    pub fn get(&self, class: Class, kind: Kind) -> u64 {
        self.0[class.index()].get(kind)
    }
}

/// Ack outcomes, by verdict and reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdicts {
    /// Non-replay acks with verdict accepted.
    pub accepted: u64,
    /// Non-replay acks with verdict suspect.
    pub suspect: u64,
    /// Non-replay acks with verdict rejected.
    pub rejected: u64,
    /// Non-replay acks with verdict duplicate (a lead for a phone the room
    /// already has: stored for the record, not a new lead).
    pub duplicate: u64,
    /// Acks with `replay: true` (the id was seen before; nothing stored).
    pub replay: u64,
    /// Acks with a verdict code this build does not know.
    pub unknown_verdict: u64,
    /// Reason codes (other than `none`) by name, over all acks.
    pub reasons: BTreeMap<String, u64>,
}

impl Verdicts {
    /// Count one ack.
    pub fn record(&mut self, verdict: u8, reason: u16, replay: bool) {
        if replay {
            self.replay += 1;
        } else {
            // By name, so a verdict added to the wire enum lands in
            // `unknown_verdict` instead of breaking the build.
            match Verdict::from_u8(verdict).map(Verdict::as_str) {
                Some("accepted") => self.accepted += 1,
                Some("suspect") => self.suspect += 1,
                Some("rejected") => self.rejected += 1,
                Some("duplicate") => self.duplicate += 1,
                _ => self.unknown_verdict += 1,
            }
        }
        if reason != Reason::None.code() {
            bump(&mut self.reasons, &reason_name(reason));
        }
    }

    /// Every ack received.
    pub fn total(&self) -> u64 {
        self.accepted
            + self.suspect
            + self.rejected
            + self.duplicate
            + self.replay
            + self.unknown_verdict
    }
}

/// Ack outcomes and latency for one kind (chat or lead).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckCounts {
    /// Verdicts and reasons.
    pub verdicts: Verdicts,
    /// Intended send → first ack, µs.
    #[serde(with = "hist")]
    pub latency: Histogram<u64>,
}

impl Default for AckCounts {
    fn default() -> Self {
        AckCounts {
            verdicts: Verdicts::default(),
            latency: histogram(),
        }
    }
}

/// One lead the loadgen sent, and what it knows of its fate: the record
/// `verify` checks ClickHouse against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadRecord {
    /// Room.
    pub room_id: u64,
    /// Viewer.
    pub viewer_id: u64,
    /// Client lead id.
    pub client_lead_id: u64,
    /// The acked verdict (`accepted`, `suspect`, `rejected`, `duplicate`),
    /// or `unacked` when no ack came (stored or not: unknown).
    pub verdict: String,
    /// The acked reason (`none` if none).
    pub reason: String,
    /// The viewer's class.
    pub class: Class,
    /// The lead was withdrawn (`Withdraw` frame): the withdrawal's acked
    /// verdict (`accepted`, `rejected`), or `unacked`; absent when the
    /// viewer did not withdraw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawal: Option<String>,
}

/// A withdrawal's fate, joined into its lead's [`LeadRecord`] at the end
/// of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalRecord {
    /// Room.
    pub room_id: u64,
    /// Viewer.
    pub viewer_id: u64,
    /// The withdrawn lead's client id.
    pub client_lead_id: u64,
    /// The acked verdict, or `unacked`.
    pub verdict: String,
}

/// Set each lead record's `withdrawal` from the withdrawals sent (the
/// first record of a lead wins: it is its first ack).
pub fn join_withdrawals(leads: &mut [LeadRecord], withdrawals: Vec<WithdrawalRecord>) {
    let mut by_key: std::collections::HashMap<(u64, u64, u64), String> =
        std::collections::HashMap::with_capacity(withdrawals.len());
    for w in withdrawals {
        by_key
            .entry((w.room_id, w.viewer_id, w.client_lead_id))
            .or_insert(w.verdict);
    }
    for l in leads {
        if let Some(v) = by_key.remove(&(l.room_id, l.viewer_id, l.client_lead_id)) {
            l.withdrawal = Some(v);
        }
    }
}

/// Cumulative counters at one instant, for throughput over time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    /// Chat first sends.
    pub chat: u64,
    /// Like taps.
    pub taps: u64,
    /// Like frames.
    pub like_frames: u64,
    /// Lead first sends.
    pub lead: u64,
    /// Chat acks (all).
    pub chat_acks: u64,
    /// Lead acks (all).
    pub lead_acks: u64,
    /// Chat acks rejected (first acks).
    pub chat_rejected: u64,
    /// Lead acks not accepted (first acks: rejected, suspect, duplicate).
    pub lead_flagged: u64,
    /// Connected viewers (gauge).
    pub viewers: u64,
}

/// The mutex-protected part of [`Stats`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Detail {
    /// Ack outcomes, indexed by [`Kind::index`] (the like slot stays empty).
    pub acks: [AckCounts; 4],
    /// Ack outcomes per class: `[chat, lead]`.
    pub class_acks: [[Verdicts; 2]; Class::COUNT],
    /// Connect → `Welcome`, µs.
    #[serde(with = "hist")]
    pub handshake: Histogram<u64>,
    /// Intended join time → `Welcome`, µs.
    #[serde(with = "hist")]
    pub join: Histogram<u64>,
    /// How each attempted connection ended, by close code or error name.
    pub close_codes: BTreeMap<String, u64>,
    /// Why failed connection attempts failed.
    pub failures: BTreeMap<String, u64>,
    /// Notices received, by kind name.
    pub notices: BTreeMap<String, u64>,
    /// Settings from the first `Welcome` (not in a worker's snapshot: the
    /// summary has them).
    #[serde(skip)]
    pub settings: Option<RoomSettings>,
    /// Per time bucket (by intended send time): `[chat, lead]` latency.
    #[serde(with = "hist_buckets")]
    pub buckets: Vec<[Option<Histogram<u64>>; 2]>,
    /// Every lead's first ack (or `unacked`).
    pub leads: Vec<LeadRecord>,
    /// Every withdrawal's first ack (or `unacked`).
    #[serde(default)]
    pub withdrawals: Vec<WithdrawalRecord>,
}

impl Default for Detail {
    fn default() -> Self {
        Detail {
            acks: Default::default(),
            class_acks: Default::default(),
            handshake: histogram(),
            join: histogram(),
            close_codes: BTreeMap::new(),
            failures: BTreeMap::new(),
            notices: BTreeMap::new(),
            settings: None,
            buckets: Vec::new(),
            leads: Vec::new(),
            withdrawals: Vec::new(),
        }
    }
}

/// Run-wide counters, shared by every task. A worker of a split run writes
/// them whole into its summary (histograms as value/count pairs), and
/// `merge` adds the workers' up with [`Stats::absorb`] and summarizes the
/// sum exactly as one process would.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Frames written: chat and lead first sends, like frames, withdrawals
    /// (first sends).
    pub sent: PerKind,
    /// Like taps written (sum of `Like.count`).
    pub taps_sent: AtomicU64,
    /// Chat and lead resends written (same client id as a first send).
    pub resent: PerKind,
    /// Per class: chat and lead first sends, like taps.
    pub class_sent: PerClassKind,
    /// Per class: like frames (in the like slot).
    pub class_frames: PerClassKind,
    /// Per class: chat and lead resends.
    pub class_resent: PerClassKind,
    /// Per class: frames whose ack never came (chat, lead).
    pub class_unacked: PerClassKind,
    /// Per class: events not sent (no viewer, viewer gone, queue full).
    pub class_not_sent: PerClassKind,
    /// Events the loadgen could not hand to a viewer because its queue was
    /// full: the loadgen (or that connection's flow control) fell behind.
    pub dropped_local: PerKind,
    /// Arrivals while the class had no connected (or free) viewer.
    pub no_viewer: PerKind,
    /// Events lost because their viewer's connection had ended.
    pub disconnected: PerKind,
    /// Chat/lead/withdraw frames written whose ack never came.
    pub unacked: PerKind,
    /// Acks for an id or kind this viewer has nothing outstanding for.
    pub unexpected_acks: AtomicU64,
    /// Server frames that failed to decode or came out of order.
    pub bad_server_frames: AtomicU64,
    /// A `replay: true` ack arrived before any other ack for its id: the
    /// server answered a resend before deciding on the original (for a lead:
    /// acked a resend before the original was durable).
    pub replay_before_first: PerKind,
    /// Connection attempts started.
    pub attempted: AtomicU64,
    /// Attempts that got a `Welcome`.
    pub connected: AtomicU64,
    /// Attempts that did not.
    pub failed: AtomicU64,
    /// Attempts and sessions closed with `wrong_node`, followed to the node
    /// it named (an attempt's is in `close_codes` as `wrong_node`, not in
    /// `failed`).
    #[serde(default)]
    pub redirected: AtomicU64,
    /// Sessions currently open (gauge).
    pub active: AtomicU64,
    /// Viewers that left and came back (churn): second sessions started.
    pub rejoins: AtomicU64,
    /// Viewers started.
    pub viewers: AtomicU64,
    /// Viewers that got a `Welcome` at least once.
    pub viewers_connected: AtomicU64,
    /// Reconnect attempts after a lost connection.
    pub reconnect_attempts: AtomicU64,
    /// Sessions welcomed after a lost connection.
    pub reconnected: AtomicU64,
    /// Unacked chat / leads / withdrawals resent (same ids) after
    /// reconnecting.
    pub reconnect_resent: PerKind,
    /// `Refresh` frames sent in answer to `ticket_expiring`.
    pub tickets_refreshed: AtomicU64,
    /// Start of the run and the timeline's bucket width.
    #[serde(skip)]
    origin: OnceLock<(Instant, Duration)>,
    /// Cumulative counters, one per bucket.
    samples: Mutex<Vec<Sample>>,
    detail: Mutex<Detail>,
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    if let Some(v) = map.get_mut(key) {
        *v += 1;
    } else {
        map.insert(key.to_owned(), 1);
    }
}

/// Name of a reason code for tables and JSON (`code_N` if unknown).
pub fn reason_name(code: u16) -> String {
    Reason::from_code(code).map_or_else(|| format!("code_{code}"), |r| r.as_str().to_owned())
}

/// Name of a verdict code (`verdict_N` if unknown).
pub fn verdict_name(code: u8) -> String {
    Verdict::from_u8(code).map_or_else(|| format!("verdict_{code}"), |v| v.as_str().to_owned())
}

/// Name of a notice kind for tables and JSON.
pub fn notice_name(kind: u8) -> String {
    match kind {
        1 => "slow_mode".into(),
        2 => "muted".into(),
        3 => "unmuted".into(),
        4 => "shutting_down".into(),
        5 => "ticket_expiring".into(),
        6 => "ticket_refreshed".into(),
        7 => "like_pace".into(),
        k => format!("kind_{k}"),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// One acknowledgement, as the reader saw it.
#[derive(Debug, Clone, Copy)]
pub struct AckEvent {
    /// Chat or lead.
    pub kind: Kind,
    /// The sending viewer's class.
    pub class: Class,
    /// Verdict code.
    pub verdict: u8,
    /// Reason code.
    pub reason: u16,
    /// `replay` flag.
    pub replay: bool,
    /// Latency sample (first ack of an id) and the event's intended time.
    pub latency: Option<(Duration, Instant)>,
}

impl Stats {
    /// Lock the detail part (poisoning is ignored: counters stay usable).
    pub fn detail(&self) -> MutexGuard<'_, Detail> {
        self.detail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start the timeline at `t0` with buckets of `width`.
    pub fn start_timeline(&self, t0: Instant, width: Duration) {
        let _ = self.origin.set((t0, width.max(Duration::from_millis(100))));
    }

    /// The timeline's start and bucket width, once started.
    pub fn origin(&self) -> Option<(Instant, Duration)> {
        self.origin.get().copied()
    }

    fn bucket(&self, at: Instant) -> Option<usize> {
        let (t0, w) = self.origin()?;
        Some((at.saturating_duration_since(t0).as_nanos() / w.as_nanos().max(1)) as usize)
    }

    /// Record one ack.
    pub fn record_ack(&self, a: AckEvent) {
        let bucket = a.latency.and_then(|(_, at)| self.bucket(at));
        let mut d = self.detail();
        let i = a.kind.index();
        d.acks[i].verdicts.record(a.verdict, a.reason, a.replay);
        if let Some(j) = match a.kind {
            Kind::Chat => Some(0),
            Kind::Lead => Some(1),
            Kind::Like | Kind::Withdraw => None,
        } {
            d.class_acks[a.class.index()][j].record(a.verdict, a.reason, a.replay);
            if let (Some((l, _)), Some(b)) = (a.latency, bucket) {
                if d.buckets.len() <= b {
                    d.buckets.resize_with(b + 1, Default::default);
                }
                d.buckets[b][j]
                    .get_or_insert_with(bucket_histogram)
                    .saturating_record(micros(l));
            }
        }
        if let Some((l, _)) = a.latency {
            d.acks[i].latency.saturating_record(micros(l));
        }
    }

    /// Remember a lead's fate for `verify`.
    pub fn record_lead(&self, r: LeadRecord) {
        self.detail().leads.push(r);
    }

    /// Remember a withdrawal's fate for `verify`.
    pub fn record_withdrawal(&self, r: WithdrawalRecord) {
        self.detail().withdrawals.push(r);
    }

    /// Record a successful handshake (connect → `Welcome`; `join` from the
    /// intended join time).
    pub fn record_welcome(&self, took: Duration, join: Duration, settings: &RoomSettings) {
        self.connected.fetch_add(1, Relaxed);
        self.active.fetch_add(1, Relaxed);
        let mut d = self.detail();
        d.handshake.saturating_record(micros(took));
        d.join.saturating_record(micros(join));
        if d.settings.is_none() {
            d.settings = Some(settings.clone());
        }
    }

    /// Record a failed attempt; the first failure of each kind is logged with
    /// its detail so a misconfiguration (wrong cert, wrong secret) is visible.
    pub fn record_failure(&self, label: &str, detail: &str) {
        self.failed.fetch_add(1, Relaxed);
        let mut d = self.detail();
        if !d.failures.contains_key(label) {
            tracing::warn!(reason = label, detail, "connection attempt failed");
        }
        bump(&mut d.failures, label);
        bump(&mut d.close_codes, label);
    }

    /// Record an attempt closed with `wrong_node` (not a failure: the
    /// viewer follows it; `redirected` counts it once followed).
    pub fn record_redirect(&self) {
        bump(&mut self.detail().close_codes, "wrong_node");
    }

    /// Record how an established session ended.
    pub fn record_close(&self, label: &str) {
        self.active.fetch_sub(1, Relaxed);
        bump(&mut self.detail().close_codes, label);
    }

    /// Count a notice.
    pub fn record_notice(&self, kind: u8) {
        bump(&mut self.detail().notices, &notice_name(kind));
    }

    /// Take a cumulative sample for the timeline.
    pub fn sample(&self, t: Duration) {
        let (chat_acks, lead_acks, chat_rejected, lead_flagged) = {
            let d = self.detail();
            let c = &d.acks[Kind::Chat.index()].verdicts;
            let l = &d.acks[Kind::Lead.index()].verdicts;
            (
                c.total(),
                l.total(),
                c.rejected,
                l.rejected + l.suspect + l.duplicate,
            )
        };
        let s = Sample {
            t: t.as_secs_f64(),
            chat: self.sent.get(Kind::Chat),
            taps: self.taps_sent.load(Relaxed),
            like_frames: self.sent.get(Kind::Like),
            lead: self.sent.get(Kind::Lead),
            chat_acks,
            lead_acks,
            chat_rejected,
            lead_flagged,
            viewers: self.active.load(Relaxed),
        };
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s);
    }

    /// The samples taken so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn add_map(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

impl PerKind {
    fn absorb(&self, o: PerKind) {
        for (a, b) in self.0.iter().zip(o.0) {
            a.fetch_add(b.into_inner(), Relaxed);
        }
    }
}

impl PerClassKind {
    fn absorb(&self, o: PerClassKind) {
        for (a, b) in self.0.iter().zip(o.0) {
            a.absorb(b);
        }
    }
}

impl Verdicts {
    fn absorb(&mut self, o: Verdicts) {
        let Verdicts {
            accepted,
            suspect,
            rejected,
            duplicate,
            replay,
            unknown_verdict,
            reasons,
        } = o;
        self.accepted += accepted;
        self.suspect += suspect;
        self.rejected += rejected;
        self.duplicate += duplicate;
        self.replay += replay;
        self.unknown_verdict += unknown_verdict;
        add_map(&mut self.reasons, reasons);
    }
}

/// Add `b` into `a` (same bounds by construction; a mismatch saturates).
fn add_hist(a: &mut Histogram<u64>, b: &Histogram<u64>) {
    if a.add(b).is_err() {
        for v in b.iter_recorded() {
            a.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

impl Stats {
    /// Add another worker's counters, histograms, samples and lead records
    /// into these. Every field is named, so a new counter cannot be
    /// forgotten by the merge.
    pub fn absorb(&self, o: Stats) {
        let Stats {
            sent,
            taps_sent,
            resent,
            class_sent,
            class_frames,
            class_resent,
            class_unacked,
            class_not_sent,
            dropped_local,
            no_viewer,
            disconnected,
            unacked,
            unexpected_acks,
            bad_server_frames,
            replay_before_first,
            attempted,
            connected,
            failed,
            redirected,
            active,
            rejoins,
            viewers,
            viewers_connected,
            reconnect_attempts,
            reconnected,
            reconnect_resent,
            tickets_refreshed,
            origin: _,
            samples,
            detail,
        } = o;
        for (a, b) in [
            (&self.sent, sent),
            (&self.resent, resent),
            (&self.dropped_local, dropped_local),
            (&self.no_viewer, no_viewer),
            (&self.disconnected, disconnected),
            (&self.unacked, unacked),
            (&self.replay_before_first, replay_before_first),
            (&self.reconnect_resent, reconnect_resent),
        ] {
            a.absorb(b);
        }
        for (a, b) in [
            (&self.class_sent, class_sent),
            (&self.class_frames, class_frames),
            (&self.class_resent, class_resent),
            (&self.class_unacked, class_unacked),
            (&self.class_not_sent, class_not_sent),
        ] {
            a.absorb(b);
        }
        for (a, b) in [
            (&self.taps_sent, taps_sent),
            (&self.unexpected_acks, unexpected_acks),
            (&self.bad_server_frames, bad_server_frames),
            (&self.attempted, attempted),
            (&self.connected, connected),
            (&self.failed, failed),
            (&self.redirected, redirected),
            (&self.active, active),
            (&self.rejoins, rejoins),
            (&self.viewers, viewers),
            (&self.viewers_connected, viewers_connected),
            (&self.reconnect_attempts, reconnect_attempts),
            (&self.reconnected, reconnected),
            (&self.tickets_refreshed, tickets_refreshed),
        ] {
            a.fetch_add(b.into_inner(), Relaxed);
        }
        {
            // Samples line up by bucket (each worker samples once per
            // bucket from its own start); counts and gauges add up.
            let theirs = samples.into_inner().unwrap_or_else(|e| e.into_inner());
            let mut ours = self.samples.lock().unwrap_or_else(|e| e.into_inner());
            if ours.len() < theirs.len() {
                ours.resize(theirs.len(), Sample::default());
            }
            for (a, b) in ours.iter_mut().zip(theirs) {
                *a = Sample {
                    t: a.t.max(b.t),
                    chat: a.chat + b.chat,
                    taps: a.taps + b.taps,
                    like_frames: a.like_frames + b.like_frames,
                    lead: a.lead + b.lead,
                    chat_acks: a.chat_acks + b.chat_acks,
                    lead_acks: a.lead_acks + b.lead_acks,
                    chat_rejected: a.chat_rejected + b.chat_rejected,
                    lead_flagged: a.lead_flagged + b.lead_flagged,
                    viewers: a.viewers + b.viewers,
                };
            }
        }
        let Detail {
            acks,
            class_acks,
            handshake,
            join,
            close_codes,
            failures,
            notices,
            settings,
            buckets,
            leads,
            withdrawals,
        } = detail.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut d = self.detail();
        for (a, b) in d.acks.iter_mut().zip(acks) {
            a.verdicts.absorb(b.verdicts);
            add_hist(&mut a.latency, &b.latency);
        }
        for (a, b) in d.class_acks.iter_mut().zip(class_acks) {
            for (x, y) in a.iter_mut().zip(b) {
                x.absorb(y);
            }
        }
        add_hist(&mut d.handshake, &handshake);
        add_hist(&mut d.join, &join);
        add_map(&mut d.close_codes, close_codes);
        add_map(&mut d.failures, failures);
        add_map(&mut d.notices, notices);
        if d.settings.is_none() {
            d.settings = settings;
        }
        if d.buckets.len() < buckets.len() {
            d.buckets.resize_with(buckets.len(), Default::default);
        }
        for (a, b) in d.buckets.iter_mut().zip(buckets) {
            for (x, y) in a.iter_mut().zip(b) {
                match (x.as_mut(), y) {
                    (Some(x), Some(y)) => add_hist(x, &y),
                    (None, y) => *x = y,
                    (Some(_), None) => {}
                }
            }
        }
        d.leads.extend(leads);
        d.withdrawals.extend(withdrawals);
    }
}

/// A histogram as its precision and `[value, count]` pairs: exact for a
/// histogram of the same precision, and plain JSON.
#[derive(Debug, Serialize, Deserialize)]
struct HistRepr {
    sigfig: u8,
    counts: Vec<[u64; 2]>,
}

impl HistRepr {
    fn of(h: &Histogram<u64>) -> Self {
        HistRepr {
            sigfig: h.sigfig(),
            counts: h
                .iter_recorded()
                .map(|v| [v.value_iterated_to(), v.count_at_value()])
                .collect(),
        }
    }

    fn build(self) -> Result<Histogram<u64>, String> {
        let mut h = Histogram::new_with_max(HIST_MAX_US, self.sigfig.clamp(1, 5))
            .map_err(|e| format!("histogram: {e}"))?;
        for [v, n] in self.counts {
            h.saturating_record_n(v, n);
        }
        Ok(h)
    }
}

/// `#[serde(with)]` for one histogram.
mod hist {
    use hdrhistogram::Histogram;
    use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

    use super::HistRepr;

    pub fn serialize<S: Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        HistRepr::of(h).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        HistRepr::deserialize(d)?.build().map_err(D::Error::custom)
    }
}

/// `#[serde(with)]` for the timeline's per-bucket histograms.
mod hist_buckets {
    use hdrhistogram::Histogram;
    use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

    use super::HistRepr;

    type Buckets = Vec<[Option<Histogram<u64>>; 2]>;

    pub fn serialize<S: Serializer>(b: &Buckets, s: S) -> Result<S::Ok, S::Error> {
        let repr: Vec<[Option<HistRepr>; 2]> = b
            .iter()
            .map(|pair| {
                [
                    pair[0].as_ref().map(HistRepr::of),
                    pair[1].as_ref().map(HistRepr::of),
                ]
            })
            .collect();
        repr.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Buckets, D::Error> {
        let repr: Vec<[Option<HistRepr>; 2]> = Vec::deserialize(d)?;
        repr.into_iter()
            .map(|[a, b]| {
                Ok([
                    a.map(HistRepr::build).transpose()?,
                    b.map(HistRepr::build).transpose()?,
                ])
            })
            .collect::<Result<_, String>>()
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(kind: Kind, verdict: u8, reason: u16, replay: bool, ms: Option<u64>) -> AckEvent {
        AckEvent {
            kind,
            class: Class::Viewer,
            verdict,
            reason,
            replay,
            latency: ms.map(|m| (Duration::from_millis(m), Instant::now())),
        }
    }

    #[test]
    fn verdicts_count_first_acks_and_replays_separately() {
        let s = Stats::default();
        s.record_ack(ack(Kind::Chat, 1, 0, false, Some(3)));
        s.record_ack(ack(Kind::Chat, 1, 2, true, None));
        s.record_ack(ack(Kind::Chat, 3, 1, false, Some(1)));
        s.record_ack(ack(Kind::Lead, 2, 0, false, Some(1000)));
        let d = s.detail();
        let c = &d.acks[Kind::Chat.index()].verdicts;
        assert_eq!((c.accepted, c.suspect, c.rejected, c.replay), (1, 0, 1, 1));
        assert_eq!(c.reasons.get("busy"), Some(&1));
        assert_eq!(c.reasons.get("replay"), Some(&1));
        assert_eq!(d.acks[Kind::Chat.index()].latency.len(), 2);
        assert_eq!(d.acks[Kind::Lead.index()].verdicts.suspect, 1);
        assert_eq!(d.class_acks[Class::Viewer.index()][0].total(), 3);
        assert_eq!(d.class_acks[Class::Chatter.index()][0].total(), 0);
        assert!(d.buckets.is_empty(), "no timeline before it starts");
    }

    #[test]
    fn timeline_buckets_by_intended_time() {
        let s = Stats::default();
        let t0 = Instant::now();
        s.start_timeline(t0, Duration::from_secs(1));
        let mut a = ack(Kind::Chat, 1, 0, false, None);
        a.latency = Some((Duration::from_millis(5), t0 + Duration::from_millis(2500)));
        s.record_ack(a);
        let d = s.detail();
        assert_eq!(d.buckets.len(), 3);
        assert_eq!(d.buckets[2][0].as_ref().map(|h| h.len()), Some(1));
        assert!(d.buckets[0][0].is_none());
    }

    #[test]
    fn withdrawals_join_their_leads_first_record_first() {
        let lead = |id| LeadRecord {
            room_id: 1,
            viewer_id: 2,
            client_lead_id: id,
            verdict: "accepted".into(),
            reason: "none".into(),
            class: Class::LeadSubmitter,
            withdrawal: None,
        };
        let w = |id, v: &str| WithdrawalRecord {
            room_id: 1,
            viewer_id: 2,
            client_lead_id: id,
            verdict: v.into(),
        };
        let mut leads = vec![lead(1), lead(2), lead(3)];
        join_withdrawals(
            &mut leads,
            vec![
                w(2, "accepted"),
                w(2, "unacked"),
                w(3, "rejected"),
                w(9, "accepted"),
            ],
        );
        let got: Vec<_> = leads.iter().map(|l| l.withdrawal.as_deref()).collect();
        assert_eq!(got, [None, Some("accepted"), Some("rejected")]);
        // Absent from the JSON line when not withdrawn (older readers).
        let line = serde_json::to_string(&leads[0]).unwrap();
        assert!(!line.contains("withdrawal"), "{line}");
        let back: LeadRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, leads[0]);
    }

    /// Two workers' stats, written to JSON and read back, add up to the
    /// stats of one process that saw both workers' events.
    #[test]
    fn merged_worker_stats_equal_one_process() {
        let t0 = Instant::now();
        let one = Stats::default();
        let workers = [Stats::default(), Stats::default()];
        one.start_timeline(t0, Duration::from_secs(1));
        for w in &workers {
            w.start_timeline(t0, Duration::from_secs(1));
        }
        for i in 0..500u64 {
            let w = &workers[(i % 2) as usize];
            let mut a = ack(
                Kind::Chat,
                1 + (i % 3) as u8,
                (i % 4) as u16,
                i % 7 == 0,
                None,
            );
            a.class = Class::ALL[(i % 9) as usize];
            a.latency = Some((
                Duration::from_micros(100 + i * i * 37),
                t0 + Duration::from_millis(i * 13),
            ));
            for s in [&one, w] {
                s.record_ack(a);
                s.sent.add(Kind::Like, i);
                s.class_sent.add(a.class, Kind::Chat, 1);
                s.attempted.fetch_add(1, Relaxed);
                s.record_welcome(
                    Duration::from_micros(i * 1000 + 7),
                    Duration::from_micros(i * 999),
                    &RoomSettings::default(),
                );
                s.record_failure(if i % 2 == 0 { "a" } else { "b" }, "x");
                s.record_lead(LeadRecord {
                    room_id: 1,
                    viewer_id: i,
                    client_lead_id: i,
                    verdict: "accepted".into(),
                    reason: "none".into(),
                    class: a.class,
                    withdrawal: None,
                });
                if i % 5 == 0 {
                    s.record_ack(AckEvent {
                        kind: Kind::Withdraw,
                        ..a
                    });
                    s.sent.add(Kind::Withdraw, 1);
                    s.record_withdrawal(WithdrawalRecord {
                        room_id: 1,
                        viewer_id: i,
                        client_lead_id: i,
                        verdict: "accepted".into(),
                    });
                }
            }
            if i % 100 == 99 {
                for s in [&one, &workers[0], &workers[1]] {
                    s.sample(Duration::from_millis(i * 13));
                }
            }
        }
        let merged = Stats::default();
        for w in workers {
            let json = serde_json::to_string(&w).unwrap();
            merged.absorb(serde_json::from_str(&json).unwrap());
        }
        let (a, b) = (one.detail(), merged.detail());
        assert_eq!(a.acks[Kind::Withdraw.index()].latency.len(), 100);
        assert_eq!(a.withdrawals.len(), 100);
        assert_eq!(b.withdrawals.len(), 100);
        assert_eq!(merged.sent.get(Kind::Withdraw), 100);
        for k in [Kind::Chat, Kind::Lead, Kind::Withdraw] {
            assert_eq!(a.acks[k.index()].verdicts, b.acks[k.index()].verdicts);
            assert_eq!(a.acks[k.index()].latency, b.acks[k.index()].latency);
        }
        assert_eq!(a.class_acks, b.class_acks);
        assert_eq!(a.handshake, b.handshake);
        assert_eq!(a.join, b.join);
        assert_eq!(a.failures, b.failures);
        assert_eq!(a.buckets, b.buckets);
        let mut leads = b.leads.clone();
        leads.sort_by_key(|l| l.viewer_id);
        assert_eq!(a.leads, leads);
        assert_eq!(one.samples(), merged.samples());
        assert_eq!(merged.sent.get(Kind::Like), one.sent.get(Kind::Like));
        assert_eq!(merged.connected.load(Relaxed), 500);
        for c in Class::ALL {
            assert_eq!(
                merged.class_sent.get(c, Kind::Chat),
                one.class_sent.get(c, Kind::Chat)
            );
        }
    }
}

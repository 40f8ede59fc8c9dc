//! Everything the run counts: plain atomics for hot counters, one mutex for
//! the histograms and per-reason maps (taken once per ack, not per like).
//!
//! Latencies are microseconds in HdrHistograms (3 significant digits, up to
//! one hour). Chat and lead latency is measured from each event's *intended*
//! send time to its first ack; handshake latency from `connect` to `Welcome`.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Mutex, MutexGuard,
    },
    time::Duration,
};

use hdrhistogram::Histogram;
use roomgate::wire::{Reason, RoomSettings, Verdict};

use crate::schedule::Kind;

/// Largest latency a histogram holds (larger values saturate), in µs.
const HIST_MAX_US: u64 = 3_600 * 1_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_max(HIST_MAX_US, 3).expect("static histogram bounds are valid")
}

/// A counter per [`Kind`].
#[derive(Debug, Default)]
pub struct PerKind([AtomicU64; 3]);

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

/// Ack outcomes for one kind (chat or lead).
#[derive(Debug, Clone)]
pub struct AckCounts {
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
    /// Intended send → first ack, µs.
    pub latency: Histogram<u64>,
}

impl Default for AckCounts {
    fn default() -> Self {
        AckCounts {
            accepted: 0,
            suspect: 0,
            rejected: 0,
            duplicate: 0,
            replay: 0,
            unknown_verdict: 0,
            reasons: BTreeMap::new(),
            latency: histogram(),
        }
    }
}

impl AckCounts {
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

/// The mutex-protected part of [`Stats`].
#[derive(Debug)]
pub struct Detail {
    /// Ack outcomes, indexed by [`Kind::index`] (the like slot stays empty).
    pub acks: [AckCounts; 3],
    /// Connect → `Welcome`, µs.
    pub handshake: Histogram<u64>,
    /// How each attempted connection ended, by close code or error name.
    pub close_codes: BTreeMap<String, u64>,
    /// Why failed connection attempts failed.
    pub failures: BTreeMap<String, u64>,
    /// Notices received, by kind name.
    pub notices: BTreeMap<String, u64>,
    /// Settings from the first `Welcome`.
    pub settings: Option<RoomSettings>,
}

impl Default for Detail {
    fn default() -> Self {
        Detail {
            acks: Default::default(),
            handshake: histogram(),
            close_codes: BTreeMap::new(),
            failures: BTreeMap::new(),
            notices: BTreeMap::new(),
            settings: None,
        }
    }
}

/// Run-wide counters, shared by every task.
#[derive(Debug, Default)]
pub struct Stats {
    /// Frames written: chat and lead first sends, like frames.
    pub sent: PerKind,
    /// Like taps written (sum of `Like.count`).
    pub taps_sent: AtomicU64,
    /// Chat and lead resends written (same client id as a first send).
    pub resent: PerKind,
    /// Events the loadgen could not hand to a viewer because its queue was
    /// full: the loadgen (or that connection's flow control) fell behind.
    pub dropped_local: PerKind,
    /// Arrivals while the room had no connected viewer (start of the ramp).
    pub no_viewer: PerKind,
    /// Events lost because their viewer's connection had ended.
    pub disconnected: PerKind,
    /// Chat/lead frames written whose ack never came.
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
    /// Sessions currently open (gauge).
    pub active: AtomicU64,
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

/// Name of a notice kind for tables and JSON.
pub fn notice_name(kind: u8) -> String {
    match kind {
        1 => "slow_mode".into(),
        2 => "muted".into(),
        3 => "unmuted".into(),
        4 => "shutting_down".into(),
        k => format!("kind_{k}"),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Stats {
    /// Lock the detail part (poisoning is ignored: counters stay usable).
    pub fn detail(&self) -> MutexGuard<'_, Detail> {
        self.detail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record one ack. `latency` is set for the first ack of a client id.
    pub fn record_ack(
        &self,
        kind: Kind,
        verdict: u8,
        reason: u16,
        replay: bool,
        latency: Option<Duration>,
    ) {
        let mut d = self.detail();
        let a = &mut d.acks[kind.index()];
        if replay {
            a.replay += 1;
        } else {
            // By name, so a verdict added to the wire enum lands in
            // `unknown_verdict` instead of breaking the build.
            match Verdict::from_u8(verdict).map(Verdict::as_str) {
                Some("accepted") => a.accepted += 1,
                Some("suspect") => a.suspect += 1,
                Some("rejected") => a.rejected += 1,
                Some("duplicate") => a.duplicate += 1,
                _ => a.unknown_verdict += 1,
            }
        }
        if reason != Reason::None.code() {
            bump(&mut a.reasons, &reason_name(reason));
        }
        if let Some(l) = latency {
            a.latency.saturating_record(micros(l));
        }
    }

    /// Record a successful handshake (connect → `Welcome`).
    pub fn record_welcome(&self, took: Duration, settings: &RoomSettings) {
        self.connected.fetch_add(1, Relaxed);
        self.active.fetch_add(1, Relaxed);
        let mut d = self.detail();
        d.handshake.saturating_record(micros(took));
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

    /// Record how an established session ended.
    pub fn record_close(&self, label: &str) {
        self.active.fetch_sub(1, Relaxed);
        bump(&mut self.detail().close_codes, label);
    }

    /// Count a notice.
    pub fn record_notice(&self, kind: u8) {
        bump(&mut self.detail().notices, &notice_name(kind));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_count_first_acks_and_replays_separately() {
        let s = Stats::default();
        s.record_ack(Kind::Chat, 1, 0, false, Some(Duration::from_millis(3)));
        s.record_ack(Kind::Chat, 1, 2, true, None);
        s.record_ack(Kind::Chat, 3, 1, false, Some(Duration::from_millis(1)));
        s.record_ack(Kind::Lead, 2, 0, false, Some(Duration::from_secs(1)));
        let d = s.detail();
        let c = &d.acks[Kind::Chat.index()];
        assert_eq!((c.accepted, c.suspect, c.rejected, c.replay), (1, 0, 1, 1));
        assert_eq!(c.reasons.get("busy"), Some(&1));
        assert_eq!(c.reasons.get("replay"), Some(&1));
        assert_eq!(c.latency.len(), 2);
        assert_eq!(d.acks[Kind::Lead.index()].suspect, 1);
    }
}

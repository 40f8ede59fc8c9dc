//! Output: the live status line, the end-of-run [`Summary`] (JSON, parsed by
//! other tools, so fields are only ever added) and its text table.

use std::{
    collections::BTreeMap, fmt::Write as _, sync::atomic::Ordering::Relaxed, time::Duration,
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::{
    scenario::Tolerances,
    schedule::Kind,
    stats::{LeadRecord, Stats, Verdicts},
    truth::{Class, ClassRange, Worker},
    verify::VerifyReport,
};

/// Counts for chat and lead.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatLead {
    /// Chat.
    pub chat: u64,
    /// Lead.
    pub lead: u64,
}

/// Counts for every kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AllKinds {
    /// Chat.
    pub chat: u64,
    /// Like.
    pub like: u64,
    /// Lead.
    pub lead: u64,
}

impl AllKinds {
    fn from(f: impl Fn(Kind) -> u64) -> Self {
        AllKinds {
            chat: f(Kind::Chat),
            like: f(Kind::Like),
            lead: f(Kind::Lead),
        }
    }

    fn total(&self) -> u64 {
        self.chat + self.like + self.lead
    }
}

/// Ack outcomes of one kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AckSummary {
    /// First (non-replay) acks with verdict accepted: distinct messages stored.
    pub accepted: u64,
    /// First acks with verdict suspect (stored, flagged).
    pub suspect: u64,
    /// First acks with verdict rejected.
    pub rejected: u64,
    /// First acks with verdict duplicate (leads: a phone the room already has).
    pub duplicate: u64,
    /// Acks with `replay: true` (resends; nothing new stored).
    pub replay: u64,
    /// Acks with a verdict code this build does not know.
    pub unknown_verdict: u64,
    /// Reason codes other than `none`, over all acks.
    pub reasons: BTreeMap<String, u64>,
}

impl From<&Verdicts> for AckSummary {
    fn from(a: &Verdicts) -> Self {
        AckSummary {
            accepted: a.accepted,
            suspect: a.suspect,
            rejected: a.rejected,
            duplicate: a.duplicate,
            replay: a.replay,
            unknown_verdict: a.unknown_verdict,
            reasons: a.reasons.clone(),
        }
    }
}

/// Acks per kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Acked {
    /// Chat acks.
    pub chat: AckSummary,
    /// Lead acks.
    pub lead: AckSummary,
}

/// Like traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Likes {
    /// Taps sent (sum of `Like.count`).
    pub taps_sent: u64,
    /// `Like` frames sent.
    pub frames: u64,
    /// Taps per frame (1 unless the like rate exceeds 2000/s per room).
    pub taps_per_frame: u32,
}

/// Latency distribution in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
    /// Mean.
    pub mean: f64,
    /// Samples.
    pub count: u64,
}

impl From<&Histogram<u64>> for Latency {
    fn from(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
            count: h.len(),
        }
    }
}

/// Latencies: chat and lead from intended send to first ack, handshake from
/// connect to `Welcome`, join from the intended join time to `Welcome`,
/// withdraw from the withdrawal's scheduled time to its first ack.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    /// Chat.
    pub chat: Latency,
    /// Lead.
    pub lead: Latency,
    /// Withdraw.
    #[serde(default)]
    pub withdraw: Latency,
    /// Handshake.
    pub handshake: Latency,
    /// Join: intended join time → `Welcome` (includes waiting for a
    /// handshake slot: the join storm's view).
    #[serde(default)]
    pub join: Latency,
}

/// Percentile spectra (the HdrHistogram plot): `[percentile, µs]` points.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spectra {
    /// Chat.
    pub chat: Vec<[f64; 2]>,
    /// Lead.
    pub lead: Vec<[f64; 2]>,
    /// Withdraw.
    #[serde(default)]
    pub withdraw: Vec<[f64; 2]>,
    /// Handshake.
    pub handshake: Vec<[f64; 2]>,
    /// Join.
    pub join: Vec<[f64; 2]>,
}

/// `[percentile, value]` points at 0, 50, 75, 87.5, … % (four per halving
/// of the tail) up to the maximum.
pub fn spectrum(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut k = 0;
    loop {
        let q = 1.0 - 0.5f64.powf(f64::from(k) / 4.0);
        if q > 0.99999 || 1.0 / (1.0 - q) > h.len() as f64 {
            break;
        }
        out.push([round3(q * 100.0), h.value_at_quantile(q) as f64]);
        k += 1;
    }
    out.push([100.0, h.max() as f64]);
    out
}

/// Latency of one timeline bucket, µs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BucketLatency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Maximum.
    pub max: u64,
    /// Samples.
    pub count: u64,
}

/// One timeline bucket: rates over the bucket, latency of the events whose
/// intended send time fell in it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimePoint {
    /// End of the bucket, seconds from the start.
    pub t: f64,
    /// Chat first sends per second.
    pub chat_per_s: f64,
    /// Like taps per second.
    pub taps_per_s: f64,
    /// Like frames per second.
    pub like_frames_per_s: f64,
    /// Lead first sends per second.
    pub lead_per_s: f64,
    /// Chat acks per second.
    pub chat_acks_per_s: f64,
    /// Lead acks per second.
    pub lead_acks_per_s: f64,
    /// Chat first acks rejected, per second.
    pub chat_rejected_per_s: f64,
    /// Lead first acks not accepted, per second.
    pub lead_flagged_per_s: f64,
    /// Connected viewers at the end of the bucket.
    pub viewers: u64,
    /// Chat latency.
    pub chat: Option<BucketLatency>,
    /// Lead latency.
    pub lead: Option<BucketLatency>,
}

/// Throughput and latency over time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// Bucket width, seconds.
    pub bucket_s: f64,
    /// One point per bucket.
    pub points: Vec<TimePoint>,
}

/// One class's traffic, summed over rooms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassSummary {
    /// Viewers of the class over all rooms.
    pub viewers: u64,
    /// Every event of the class is abuse.
    pub abusive: bool,
    /// Chat and lead first sends; like taps.
    pub sent: AllKinds,
    /// Like frames.
    pub like_frames: u64,
    /// Chat and lead resends.
    pub resent: ChatLead,
    /// Ack outcomes.
    pub acked: Acked,
    /// Frames whose ack never came.
    pub unacked: ChatLead,
    /// Events planned for the class but not sent (no free connected viewer,
    /// viewer gone, queue full).
    pub not_sent: AllKinds,
}

/// What `verify` needs to map ClickHouse rows back to this run and its
/// classes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// Scenario file, if any.
    pub scenario: Option<String>,
    /// The scenario's description.
    pub description: String,
    /// Seed.
    pub seed: u64,
    /// Viewer ids are `room_id * viewer_id_stride + index`.
    pub viewer_id_stride: u64,
    /// Rooms of the run.
    pub room_ids: Vec<u64>,
    /// Viewers per room.
    pub viewers_per_room: u32,
    /// Class of each viewer index range (the same in every room).
    pub classes: Vec<ClassRange>,
    /// Client ids (chat and lead) of this run lie in `[first, last]`.
    pub client_ids: [u64; 2],
    /// Wall clock at the start of the run, Unix ms.
    pub started_unix_ms: i64,
    /// Wall clock at the end of the run, Unix ms.
    pub ended_unix_ms: i64,
    /// File (next to the summary) with one JSON line per lead sent: room,
    /// viewer, client id, acked verdict (or `unacked`), class.
    pub leads_file: Option<String>,
    /// Leads in it.
    pub leads: usize,
    /// The consent text version every lead carried (`roomgate/2`);
    /// `None` in summaries of older loadgens (verify skips the check).
    #[serde(default)]
    pub consent_version: Option<String>,
    /// The scenario's `[verify]` tolerances.
    pub tolerances: Tolerances,
    /// The leads themselves (in memory only; written to `leads_file`).
    #[serde(skip)]
    pub lead_records: Vec<LeadRecord>,
}

/// Connection outcomes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Connections {
    /// Attempts started.
    pub attempted: u64,
    /// Attempts that got a `Welcome`.
    pub connected: u64,
    /// Attempts that did not.
    pub failed: u64,
    /// Attempts and sessions closed with `wrong_node` and followed to the
    /// owner it named (not failed); also in `close_codes`.
    #[serde(default)]
    pub redirected: u64,
    /// Viewers that left and came back (churn): their second attempts are
    /// in `attempted` too.
    #[serde(default)]
    pub rejoined: u64,
    /// Viewers started.
    #[serde(default)]
    pub viewers: u64,
    /// Viewers that got a `Welcome` at least once.
    #[serde(default)]
    pub viewers_connected: u64,
    /// Reconnect attempts after a lost connection (engine restart, reset,
    /// timeout); they are in `attempted` too.
    #[serde(default)]
    pub reconnect_attempts: u64,
    /// Of those, sessions welcomed.
    #[serde(default)]
    pub reconnected: u64,
    /// Unacked chat messages / leads resent with the same ids after a
    /// reconnect.
    #[serde(default)]
    pub reconnect_resent: ChatLead,
    /// `Refresh` frames sent with a new ticket when the engine announced
    /// the session's ticket was about to expire.
    #[serde(default)]
    pub tickets_refreshed: u64,
    /// Why attempts failed (close code name or error kind).
    pub failures: BTreeMap<String, u64>,
    /// How every attempted connection ended: `normal` after `Bye`, a close
    /// code name, or an error kind. Sums to `attempted`.
    pub close_codes: BTreeMap<String, u64>,
}

/// Lead withdrawals (`Withdraw` frames, `[withdrawals]`). Invariant:
/// `acked` (all verdicts) + `unacked` = `sent`; `resent` (after a lost
/// connection, same id) is not in `sent`, as for leads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WithdrawSummary {
    /// Withdrawals written (first sends).
    pub sent: u64,
    /// Resent with the same id after a lost connection, unacked until then.
    pub resent: u64,
    /// First acks by verdict (`accepted`: logged in `lead_withdrawals`;
    /// `rejected` with reason `rate_limited`: over the engine's hourly cap).
    pub acked: AckSummary,
    /// Withdrawals whose ack never came.
    pub unacked: u64,
    /// Scheduled but never written: the viewer's session ended first.
    pub not_sent: u64,
}

/// Events generated but not sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotSent {
    /// The room had no connected viewer yet.
    pub no_viewer: AllKinds,
    /// The chosen viewer's connection had ended.
    pub disconnected: AllKinds,
}

/// Things that indicate a server (or loadgen) bug.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Anomalies {
    /// Acks for nothing outstanding (unknown id or kind).
    pub unexpected_acks: u64,
    /// Server frames that failed to decode or came out of order.
    pub bad_server_frames: u64,
    /// Replay acks that arrived before the original's ack (for a lead: the
    /// resend was acked before the original was durable).
    pub replay_before_first: ChatLead,
}

/// Room settings from the first `Welcome`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSettings {
    /// Slow mode seconds (0 = off).
    pub slow_mode_secs: u32,
    /// Max chat characters.
    pub max_chat_chars: u32,
    /// Max frame bytes.
    pub max_frame_bytes: u32,
}

/// The end-of-run summary, written with `--summary-json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Frames sent: chat and lead first sends only; like = taps.
    pub sent: AllKinds,
    /// Chat and lead resends (same client id).
    pub resent: ChatLead,
    /// Ack outcomes.
    pub acked: Acked,
    /// Chat/lead frames (first sends and resends) whose ack never came.
    pub unacked: ChatLead,
    /// Lead withdrawals.
    #[serde(default)]
    pub withdrawals: WithdrawSummary,
    /// Like traffic.
    pub likes: Likes,
    /// Events dropped because a viewer's queue was full: the loadgen did not
    /// offer the configured load. Must be 0 for a valid run.
    pub dropped_local: AllKinds,
    /// Events generated but not sent for other reasons.
    pub not_sent: NotSent,
    /// Latencies in microseconds.
    pub latency_us: Latencies,
    /// Connection outcomes.
    pub connections: Connections,
    /// Notices received, by kind.
    pub notices: BTreeMap<String, u64>,
    /// Bug indicators.
    pub anomalies: Anomalies,
    /// Room settings the server announced.
    pub server_settings: Option<ServerSettings>,
    /// The run's parameters.
    pub config: serde_json::Value,
    /// Seconds the load ran (the configured duration unless interrupted).
    pub duration_s: f64,
    /// Seconds from start to the end of shutdown (ramp, load, drain, close).
    pub wall_s: f64,
    /// Per class (by name): what it sent and what came back.
    #[serde(default)]
    pub classes: BTreeMap<String, ClassSummary>,
    /// What `verify` needs.
    #[serde(default)]
    pub ground_truth: Option<GroundTruth>,
    /// Throughput and latency over time.
    #[serde(default)]
    pub timeline: Option<Timeline>,
    /// Latency percentile spectra.
    #[serde(default)]
    pub latency_spectrum: Option<Spectra>,
    /// The verify report, when the run was verified (`--verify`).
    #[serde(default)]
    pub verify: Option<VerifyReport>,
    /// A worker of a split run (`--worker K/N`): its share and raw counters,
    /// for `merge`. A merged summary has `merged_workers` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerShare>,
    /// Workers a merged summary was combined from (0 for one process).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub merged_workers: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One worker's share of a split run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerShare {
    /// Which share, `K/N`.
    pub worker: Worker,
    /// Its [`Stats`], whole: counters, histograms (value/count pairs) and
    /// timeline samples.
    pub stats: serde_json::Value,
}

/// Build the summary from the run's counters.
pub fn summarize(
    stats: &Stats,
    config: serde_json::Value,
    taps_per_frame: u32,
    duration: Duration,
    wall: Duration,
) -> Summary {
    let d = stats.detail();
    Summary {
        sent: AllKinds {
            like: stats.taps_sent.load(Relaxed),
            ..AllKinds::from(|k| stats.sent.get(k))
        },
        resent: ChatLead {
            chat: stats.resent.get(Kind::Chat),
            lead: stats.resent.get(Kind::Lead),
        },
        acked: Acked {
            chat: (&d.acks[Kind::Chat.index()].verdicts).into(),
            lead: (&d.acks[Kind::Lead.index()].verdicts).into(),
        },
        unacked: ChatLead {
            chat: stats.unacked.get(Kind::Chat),
            lead: stats.unacked.get(Kind::Lead),
        },
        withdrawals: WithdrawSummary {
            sent: stats.sent.get(Kind::Withdraw),
            resent: stats.reconnect_resent.get(Kind::Withdraw),
            acked: (&d.acks[Kind::Withdraw.index()].verdicts).into(),
            unacked: stats.unacked.get(Kind::Withdraw),
            not_sent: stats.disconnected.get(Kind::Withdraw),
        },
        likes: Likes {
            taps_sent: stats.taps_sent.load(Relaxed),
            frames: stats.sent.get(Kind::Like),
            taps_per_frame,
        },
        dropped_local: AllKinds::from(|k| stats.dropped_local.get(k)),
        not_sent: NotSent {
            no_viewer: AllKinds::from(|k| stats.no_viewer.get(k)),
            disconnected: AllKinds::from(|k| stats.disconnected.get(k)),
        },
        latency_us: Latencies {
            chat: (&d.acks[Kind::Chat.index()].latency).into(),
            lead: (&d.acks[Kind::Lead.index()].latency).into(),
            withdraw: (&d.acks[Kind::Withdraw.index()].latency).into(),
            handshake: (&d.handshake).into(),
            join: (&d.join).into(),
        },
        connections: Connections {
            attempted: stats.attempted.load(Relaxed),
            connected: stats.connected.load(Relaxed),
            failed: stats.failed.load(Relaxed),
            redirected: stats.redirected.load(Relaxed),
            rejoined: stats.rejoins.load(Relaxed),
            viewers: stats.viewers.load(Relaxed),
            viewers_connected: stats.viewers_connected.load(Relaxed),
            reconnect_attempts: stats.reconnect_attempts.load(Relaxed),
            reconnected: stats.reconnected.load(Relaxed),
            reconnect_resent: ChatLead {
                chat: stats.reconnect_resent.get(Kind::Chat),
                lead: stats.reconnect_resent.get(Kind::Lead),
            },
            tickets_refreshed: stats.tickets_refreshed.load(Relaxed),
            failures: d.failures.clone(),
            close_codes: d.close_codes.clone(),
        },
        notices: d.notices.clone(),
        anomalies: Anomalies {
            unexpected_acks: stats.unexpected_acks.load(Relaxed),
            bad_server_frames: stats.bad_server_frames.load(Relaxed),
            replay_before_first: ChatLead {
                chat: stats.replay_before_first.get(Kind::Chat),
                lead: stats.replay_before_first.get(Kind::Lead),
            },
        },
        server_settings: d.settings.as_ref().map(|s| ServerSettings {
            slow_mode_secs: s.slow_mode_secs,
            max_chat_chars: s.max_chat_chars,
            max_frame_bytes: s.max_frame_bytes,
        }),
        config,
        duration_s: round3(duration.as_secs_f64()),
        wall_s: round3(wall.as_secs_f64()),
        classes: BTreeMap::new(),
        ground_truth: None,
        timeline: None,
        latency_spectrum: None,
        verify: None,
        worker: None,
        merged_workers: 0,
    }
}

fn bucket_latency(h: &Option<Histogram<u64>>) -> Option<BucketLatency> {
    h.as_ref().filter(|h| !h.is_empty()).map(|h| BucketLatency {
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        max: h.max(),
        count: h.len(),
    })
}

/// Add what the basic summary lacks: per-class counts (`counts` = viewers
/// per class over all rooms), the timeline and the latency spectra.
pub fn add_details(s: &mut Summary, stats: &Stats, counts: &[(Class, u64)]) {
    let d = stats.detail();
    for &(class, viewers) in counts {
        let k = |f: &crate::stats::PerClassKind| AllKinds::from(|kind| f.get(class, kind));
        let cl = |f: &crate::stats::PerClassKind| ChatLead {
            chat: f.get(class, Kind::Chat),
            lead: f.get(class, Kind::Lead),
        };
        let acks = &d.class_acks[class.index()];
        s.classes.insert(
            class.as_str().to_owned(),
            ClassSummary {
                viewers,
                abusive: class.is_abusive(),
                sent: k(&stats.class_sent),
                like_frames: stats.class_frames.get(class, Kind::Like),
                resent: cl(&stats.class_resent),
                acked: Acked {
                    chat: (&acks[0]).into(),
                    lead: (&acks[1]).into(),
                },
                unacked: cl(&stats.class_unacked),
                not_sent: k(&stats.class_not_sent),
            },
        );
    }
    s.latency_spectrum = Some(Spectra {
        chat: spectrum(&d.acks[Kind::Chat.index()].latency),
        lead: spectrum(&d.acks[Kind::Lead.index()].latency),
        withdraw: spectrum(&d.acks[Kind::Withdraw.index()].latency),
        handshake: spectrum(&d.handshake),
        join: spectrum(&d.join),
    });
    let samples = stats.samples();
    let width = stats.origin().map_or(1.0, |(_, w)| w.as_secs_f64());
    let mut prev = crate::stats::Sample::default();
    let mut points = Vec::with_capacity(samples.len());
    for (i, x) in samples.iter().enumerate() {
        let dt = (x.t - prev.t).max(1e-9);
        let rate = |a: u64, b: u64| round3(a.saturating_sub(b) as f64 / dt);
        let none = [None, None];
        let lat = d.buckets.get(i).unwrap_or(&none);
        points.push(TimePoint {
            t: round3(x.t),
            chat_per_s: rate(x.chat, prev.chat),
            taps_per_s: rate(x.taps, prev.taps),
            like_frames_per_s: rate(x.like_frames, prev.like_frames),
            lead_per_s: rate(x.lead, prev.lead),
            chat_acks_per_s: rate(x.chat_acks, prev.chat_acks),
            lead_acks_per_s: rate(x.lead_acks, prev.lead_acks),
            chat_rejected_per_s: rate(x.chat_rejected, prev.chat_rejected),
            lead_flagged_per_s: rate(x.lead_flagged, prev.lead_flagged),
            viewers: x.viewers,
            chat: bucket_latency(&lat[0]),
            lead: bucket_latency(&lat[1]),
        });
        prev = *x;
    }
    s.timeline = Some(Timeline {
        bucket_s: width,
        points,
    });
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(us: u64) -> String {
    if us >= 100_000 {
        format!("{:.0}", us as f64 / 1000.0)
    } else {
        format!("{:.2}", us as f64 / 1000.0)
    }
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

/// Problems a reader of the results must not miss.
pub fn warnings(s: &Summary) -> Vec<String> {
    let mut w = Vec::new();
    let dropped = s.dropped_local.total();
    if dropped > 0 {
        w.push(format!(
            "LOADGEN FELL BEHIND: {dropped} events dropped locally (chat {} like {} lead {}): \
             viewer queues were full, so the configured load was NOT offered; \
             give the loadgen more CPU or lower the rates",
            s.dropped_local.chat, s.dropped_local.like, s.dropped_local.lead
        ));
    }
    if s.connections.connected == 0 {
        w.push("no viewer connected: see the connection failures above".into());
    } else if s.connections.failed > 0 {
        w.push(format!(
            "{} of {} connection attempts failed ({})",
            s.connections.failed,
            s.connections.attempted,
            map_line(&s.connections.failures)
        ));
    }
    if s.unacked.chat + s.unacked.lead + s.withdrawals.unacked > 0 {
        w.push(format!(
            "unacked after the drain timeout: chat {} lead {} withdraw {}",
            s.unacked.chat, s.unacked.lead, s.withdrawals.unacked
        ));
    }
    let a = &s.anomalies;
    if a.unexpected_acks + a.bad_server_frames > 0 {
        w.push(format!(
            "server protocol anomalies: {} unexpected acks, {} bad frames",
            a.unexpected_acks, a.bad_server_frames
        ));
    }
    let early = &a.replay_before_first;
    if early.chat + early.lead > 0 {
        w.push(format!(
            "replay acks before the original's ack: chat {} lead {} \
             (the server answered a resend before deciding on / storing the original)",
            early.chat, early.lead
        ));
    }
    w
}

/// The human-readable summary table.
pub fn text(s: &Summary) -> String {
    let mut o = String::new();
    let secs = s.duration_s.max(1e-9);
    let _ = writeln!(
        o,
        "roomgate-loadgen: {:.1} s of load ({:.1} s wall)",
        s.duration_s, s.wall_s
    );
    let c = &s.connections;
    let _ = writeln!(
        o,
        "connections: attempted {}  connected {}  failed {}",
        c.attempted, c.connected, c.failed
    );
    let _ = writeln!(o, "  ended: {}", map_line(&c.close_codes));
    if c.rejoined > 0 {
        let _ = writeln!(o, "  rejoined after leaving (churn): {}", c.rejoined);
    }
    let _ = writeln!(
        o,
        "  viewers: {} started, {} connected at least once",
        c.viewers, c.viewers_connected
    );
    if c.reconnect_attempts > 0 {
        let _ = writeln!(
            o,
            "  reconnects after a lost connection: {} attempts, {} welcomed; resent unacked chat {} lead {}",
            c.reconnect_attempts, c.reconnected, c.reconnect_resent.chat, c.reconnect_resent.lead
        );
    }
    if c.redirected > 0 {
        let _ = writeln!(
            o,
            "  followed to another node (wrong_node): {}",
            c.redirected
        );
    }
    if c.tickets_refreshed > 0 {
        let _ = writeln!(
            o,
            "  tickets refreshed on ticket_expiring: {}",
            c.tickets_refreshed
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<8} {:>9} {:>8} {:>7} {:>9} {:>8} {:>8} {:>9} {:>7} {:>7} {:>7}",
        "kind",
        "sent",
        "per_s",
        "resent",
        "accepted",
        "suspect",
        "rejected",
        "duplicate",
        "replay",
        "unacked",
        "dropped"
    );
    for (name, sent, resent, a, unacked, dropped) in [
        (
            "chat",
            s.sent.chat,
            s.resent.chat,
            &s.acked.chat,
            s.unacked.chat,
            s.dropped_local.chat,
        ),
        (
            "lead",
            s.sent.lead,
            s.resent.lead,
            &s.acked.lead,
            s.unacked.lead,
            s.dropped_local.lead,
        ),
    ] {
        let _ = writeln!(
            o,
            "{name:<8} {sent:>9} {:>8.1} {resent:>7} {:>9} {:>8} {:>8} {:>9} {:>7} {unacked:>7} {dropped:>7}",
            sent as f64 / secs,
            a.accepted,
            a.suspect,
            a.rejected,
            a.duplicate,
            a.replay
        );
    }
    let wd = &s.withdrawals;
    if wd.sent + wd.not_sent > 0 {
        let _ = writeln!(
            o,
            "{:<8} {:>9} {:>8.1} {:>7} {:>9} {:>8} {:>8} {:>9} {:>7} {:>7} {:>7}   (resent after a reconnect; {} not sent)",
            "withdraw",
            wd.sent,
            wd.sent as f64 / secs,
            wd.resent,
            wd.acked.accepted,
            "-",
            wd.acked.rejected,
            "-",
            wd.acked.replay,
            wd.unacked,
            "-",
            wd.not_sent
        );
    }
    let _ = writeln!(
        o,
        "{:<8} {:>9} {:>8.1} {:>7} {:>9} {:>8} {:>8} {:>9} {:>7} {:>7} {:>7}   (taps; {} frames of {})",
        "like",
        s.likes.taps_sent,
        s.likes.taps_sent as f64 / secs,
        "-",
        "-",
        "-",
        "-",
        "-",
        "-",
        "-",
        s.dropped_local.like,
        s.likes.frames,
        s.likes.taps_per_frame
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency", "count", "p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms"
    );
    for (name, l) in [
        ("chat", &s.latency_us.chat),
        ("lead", &s.latency_us.lead),
        ("withdraw", &s.latency_us.withdraw),
        ("handshake", &s.latency_us.handshake),
        ("join", &s.latency_us.join),
    ] {
        if matches!(name, "join" | "withdraw") && l.count == 0 {
            continue;
        }
        let _ = writeln!(
            o,
            "{name:<10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            l.count,
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max)
        );
    }
    if !(s.classes.is_empty() || s.classes.len() == 1 && s.classes.contains_key("viewer")) {
        let _ = writeln!(o);
        let _ = write!(o, "{}", class_table(s));
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "reasons: chat {}", map_line(&s.acked.chat.reasons));
    let _ = writeln!(o, "         lead {}", map_line(&s.acked.lead.reasons));
    if wd.sent > 0 {
        let _ = writeln!(o, "     withdraw {}", map_line(&wd.acked.reasons));
    }
    let _ = writeln!(o, "notices: {}", map_line(&s.notices));
    let ns = &s.not_sent;
    if ns.no_viewer.total() + ns.disconnected.total() > 0 {
        let _ = writeln!(
            o,
            "not sent: no viewer yet chat {} like {} lead {}; viewer gone chat {} like {} lead {}",
            ns.no_viewer.chat,
            ns.no_viewer.like,
            ns.no_viewer.lead,
            ns.disconnected.chat,
            ns.disconnected.like,
            ns.disconnected.lead
        );
    }
    for w in warnings(s) {
        let _ = writeln!(o, "WARNING: {w}");
    }
    o
}

/// Per class: what was sent and how the engine answered (acks).
pub fn class_table(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<15} {:>7} {:>9} {:>9} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "class",
        "viewers",
        "chat",
        "accepted",
        "rejected",
        "like_taps",
        "leads",
        "accepted",
        "flagged",
        "unacked",
        "not_sent"
    );
    let mut rows: Vec<(&String, &ClassSummary)> = s.classes.iter().collect();
    rows.sort_by_key(|(name, _)| Class::from_name(name).map_or(usize::MAX, Class::index));
    for (name, c) in rows {
        let lead_flagged = c.acked.lead.rejected + c.acked.lead.suspect + c.acked.lead.duplicate;
        let _ = writeln!(
            o,
            "{:<15} {:>7} {:>9} {:>9} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
            format!("{name}{}", if c.abusive { "*" } else { "" }),
            c.viewers,
            c.sent.chat,
            c.acked.chat.accepted,
            c.acked.chat.rejected,
            c.sent.like,
            c.sent.lead,
            c.acked.lead.accepted,
            lead_flagged,
            c.unacked.chat + c.unacked.lead,
            c.not_sent.total()
        );
    }
    let _ = writeln!(
        o,
        "(* abusive; acks as the viewers saw them — `verify` checks ClickHouse)"
    );
    o
}

/// Counters sampled by the status line, to turn totals into rates.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sample {
    sent: [u64; 3],
}

/// One live status line; `prev` holds the previous sample for rates.
pub fn status_line(
    stats: &Stats,
    elapsed: Duration,
    since_prev: Duration,
    prev: &mut Sample,
) -> String {
    let now = Sample {
        sent: [
            stats.sent.get(Kind::Chat),
            stats.taps_sent.load(Relaxed),
            stats.sent.get(Kind::Lead),
        ],
    };
    let secs = since_prev.as_secs_f64().max(1e-9);
    let before = std::mem::replace(prev, now);
    let rate = |i: usize| now.sent[i].saturating_sub(before.sent[i]) as f64 / secs;
    let (acks_chat, acks_lead, p99_chat, p99_lead) = {
        let d = stats.detail();
        let c = &d.acks[Kind::Chat.index()];
        let l = &d.acks[Kind::Lead.index()];
        let p99 = |h: &Histogram<u64>| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(0.99)
            }
        };
        (
            c.verdicts.total(),
            l.verdicts.total(),
            p99(&c.latency),
            p99(&l.latency),
        )
    };
    let dropped = stats.dropped_local.total();
    format!(
        "[{:>5.0}s] viewers {} (connecting {}, failed {})  sent/s chat {:.0} like {:.0} lead {:.1}  acks chat {} lead {}  p99 chat {}ms lead {}ms{}",
        elapsed.as_secs_f64(),
        stats.active.load(Relaxed),
        stats.attempted.load(Relaxed).saturating_sub(stats.connected.load(Relaxed) + stats.failed.load(Relaxed)),
        stats.failed.load(Relaxed),
        rate(0),
        rate(1),
        rate(2),
        acks_chat,
        acks_lead,
        ms(p99_chat),
        ms(p99_lead),
        if dropped > 0 { format!("  DROPPED_LOCAL {dropped}") } else { String::new() }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::AckEvent;

    fn sample_stats() -> Stats {
        let s = Stats::default();
        s.sent.add(Kind::Chat, 3);
        s.sent.add(Kind::Lead, 1);
        s.sent.add(Kind::Like, 10);
        s.taps_sent.store(10, Relaxed);
        s.resent.add(Kind::Chat, 1);
        let ack = |kind, verdict, reason, replay, ms: Option<u64>| AckEvent {
            kind,
            class: Class::Viewer,
            verdict,
            reason,
            replay,
            latency: ms.map(|m| (Duration::from_millis(m), tokio::time::Instant::now())),
        };
        s.record_ack(ack(Kind::Chat, 1, 0, false, Some(2)));
        s.record_ack(ack(Kind::Chat, 1, 2, true, None));
        s.record_ack(ack(Kind::Chat, 3, 1, false, Some(5)));
        s.record_ack(ack(Kind::Lead, 1, 0, false, Some(1500)));
        s.sent.add(Kind::Withdraw, 3);
        s.reconnect_resent.add(Kind::Withdraw, 1);
        s.record_ack(ack(Kind::Withdraw, 1, 0, false, Some(4)));
        s.record_ack(ack(Kind::Withdraw, 3, 10, false, Some(6)));
        s.unacked.add(Kind::Withdraw, 1);
        s.unacked.add(Kind::Chat, 1);
        s.attempted.store(2, Relaxed);
        s.record_welcome(
            Duration::from_millis(4),
            Duration::from_millis(4),
            &Default::default(),
        );
        s.record_failure("bad_ticket", "closed by peer");
        s.record_close("normal");
        s
    }

    #[test]
    fn summary_json_has_the_documented_shape() {
        let config = serde_json::json!({"rooms": 1});
        let sum = summarize(
            &sample_stats(),
            config,
            1,
            Duration::from_secs(2),
            Duration::from_secs(5),
        );
        let v = serde_json::to_value(&sum).unwrap();
        let n = |p: &str| {
            v.pointer(p)
                .unwrap_or_else(|| panic!("missing {p} in {v:#}"))
                .as_u64()
                .unwrap_or_else(|| panic!("{p} is not an integer"))
        };
        assert_eq!(n("/sent/chat"), 3);
        assert_eq!(n("/sent/like"), 10);
        assert_eq!(n("/sent/lead"), 1);
        assert_eq!(n("/resent/chat"), 1);
        assert_eq!(n("/resent/lead"), 0);
        for kind in ["chat", "lead"] {
            for field in ["accepted", "suspect", "rejected", "duplicate", "replay"] {
                n(&format!("/acked/{kind}/{field}"));
            }
            assert!(v
                .pointer(&format!("/acked/{kind}/reasons"))
                .unwrap()
                .is_object());
            n(&format!("/unacked/{kind}"));
        }
        assert_eq!(n("/acked/chat/accepted"), 1);
        assert_eq!(n("/acked/chat/rejected"), 1);
        assert_eq!(n("/acked/chat/replay"), 1);
        assert_eq!(n("/acked/chat/reasons/busy"), 1);
        assert_eq!(n("/acked/lead/accepted"), 1);
        assert_eq!(n("/unacked/chat"), 1);
        assert_eq!(n("/likes/taps_sent"), 10);
        assert_eq!(n("/withdrawals/sent"), 3);
        assert_eq!(n("/withdrawals/resent"), 1);
        assert_eq!(n("/withdrawals/acked/accepted"), 1);
        assert_eq!(n("/withdrawals/acked/rejected"), 1);
        assert_eq!(n("/withdrawals/acked/reasons/rate_limited"), 1);
        assert_eq!(n("/withdrawals/unacked"), 1);
        assert_eq!(n("/latency_us/withdraw/count"), 2);
        assert_eq!(
            n("/acked/lead/accepted"),
            1,
            "withdrawals are not counted as leads"
        );
        for kind in ["chat", "lead", "handshake"] {
            for q in ["p50", "p90", "p99", "p999", "max", "count"] {
                n(&format!("/latency_us/{kind}/{q}"));
            }
        }
        assert_eq!(n("/latency_us/chat/count"), 2);
        let p99 = n("/latency_us/lead/p99");
        assert!((1_499_000..=1_501_000).contains(&p99), "{p99}");
        assert_eq!(n("/connections/attempted"), 2);
        assert_eq!(n("/connections/connected"), 1);
        assert_eq!(n("/connections/failed"), 1);
        assert_eq!(n("/connections/close_codes/normal"), 1);
        assert_eq!(n("/connections/close_codes/bad_ticket"), 1);
        assert_eq!(n("/config/rooms"), 1);
        assert_eq!(v["duration_s"].as_f64(), Some(2.0));
        // Round-trips, so other tools can parse it with the same types.
        let back: Summary = serde_json::from_value(v).unwrap();
        assert_eq!(back, sum);
    }

    #[test]
    fn text_names_every_kind_and_warns_loudly_about_local_drops() {
        let stats = sample_stats();
        stats.dropped_local.add(Kind::Like, 7);
        let sum = summarize(
            &stats,
            serde_json::json!({}),
            1,
            Duration::from_secs(2),
            Duration::from_secs(5),
        );
        let t = text(&sum);
        for word in [
            "chat",
            "lead",
            "like",
            "withdraw",
            "rate_limited=1",
            "handshake",
            "bad_ticket=1",
            "busy=1",
        ] {
            assert!(t.contains(word), "{word} missing in\n{t}");
        }
        assert!(t.contains("LOADGEN FELL BEHIND: 7 events"), "{t}");
        let clean = summarize(
            &Stats::default(),
            serde_json::json!({}),
            1,
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert!(!text(&clean).contains("FELL BEHIND"));
    }

    #[test]
    fn status_line_reports_rates_since_the_previous_sample() {
        let stats = Stats::default();
        let mut prev = Sample::default();
        stats.sent.add(Kind::Chat, 250);
        let line = status_line(
            &stats,
            Duration::from_secs(5),
            Duration::from_secs(5),
            &mut prev,
        );
        assert!(line.contains("chat 50 "), "{line}");
        let line = status_line(
            &stats,
            Duration::from_secs(10),
            Duration::from_secs(5),
            &mut prev,
        );
        assert!(line.contains("chat 0 "), "{line}");
    }
}

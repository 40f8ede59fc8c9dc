//! Scenarios: what a load run does, as a TOML file (`--scenario FILE`).
//!
//! Top-level keys mirror the command-line flags (`rooms`, `viewers`,
//! `duration`, …); a flag given on the command line overrides the file.
//! `[classes.*]` say who the viewers are (behaviour classes with shares and
//! rates), `[join]` / `[churn]` / `[[like_storms]]` how the room moves, and
//! `[verify]` what `verify` tolerates. Every field states its default;
//! `loadgen/README.md` is the reference and `loadgen/scenarios/` has
//! examples. Without `--scenario` the run uses [`Scenario::basic`]: every
//! viewer is a mixed legitimate `viewer` (the basic loadgen's behaviour).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::truth::{Class, ClassLayout};

/// A scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// One line saying what the scenario is for (printed, and in the
    /// summary and report). Default empty.
    pub description: String,
    /// Seed of every random choice (schedules, content, picks). Default 1.
    pub seed: u64,
    /// Rooms. Default 1.
    pub rooms: u32,
    /// Viewers per room. Default 10,000.
    pub viewers: u32,
    /// Seconds of load, counted from the start of the join. Default 60.
    pub duration: f64,
    /// First room id; rooms are `room_base..room_base + rooms`. Default 1.
    pub room_base: u64,
    /// Share (0..=1) of chats and leads written a second time with the same
    /// client id 50–500 ms later (idempotency). Default 0.02.
    pub resend_share: f64,
    /// Seconds to wait for outstanding acks after the load. Default 15.
    pub drain_timeout: f64,
    /// UDP sockets the connections are spread over. Default 8.
    pub sockets: u32,
    /// Concurrent handshakes at most. Default 256.
    pub max_handshakes: u32,
    /// How viewers join.
    pub join: Join,
    /// Viewers that leave and come back.
    pub churn: Churn,
    /// How a tapping viewer's taps become frames.
    pub likes: LikeShape,
    /// Room-wide like storms at set times. Default none.
    pub like_storms: Vec<LikeStorm>,
    /// The behaviour classes.
    pub classes: Classes,
    /// Legitimate viewers withdrawing their accepted leads.
    pub withdrawals: Withdrawals,
    /// What `verify` tolerates.
    pub verify: Tolerances,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            description: String::new(),
            seed: 1,
            rooms: 1,
            viewers: 10_000,
            duration: 60.0,
            room_base: 1,
            resend_share: 0.02,
            drain_timeout: 15.0,
            sockets: 8,
            max_handshakes: 256,
            join: Join::default(),
            churn: Churn::default(),
            likes: LikeShape::default(),
            like_storms: Vec::new(),
            classes: Classes::default(),
            withdrawals: Withdrawals::default(),
            verify: Tolerances::default(),
        }
    }
}

/// `[join]`: a linear ramp (`ramp`), or arrival phases (`[[join.phases]]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Join {
    /// Seconds over which all viewers start joining, evenly; 0 = a join
    /// storm (everyone at once, bounded by `max_handshakes`). Default 10.
    /// Not allowed together with `phases`.
    pub ramp: Option<f64>,
    /// Arrival phases, Tsung style: each brings `share` of the viewers,
    /// starting at `at` over `ramp` seconds (0 = storm). Default none.
    pub phases: Vec<JoinPhase>,
}

/// Default `[join] ramp`.
pub const DEFAULT_RAMP: f64 = 10.0;

/// One `[[join.phases]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JoinPhase {
    /// Seconds from the start when the phase begins. Default 0.
    pub at: f64,
    /// Share of each room's viewers joining in this phase; the phases'
    /// shares sum to 1. Default 1.
    pub share: f64,
    /// Seconds over which they join evenly; 0 = all at once. Default 0.
    pub ramp: f64,
}

impl Default for JoinPhase {
    fn default() -> Self {
        JoinPhase {
            at: 0.0,
            share: 1.0,
            ramp: 0.0,
        }
    }
}

/// `[churn]`: a share of viewers leave once (`Bye`) and rejoin later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Churn {
    /// Share (0..=1) of viewers that leave and rejoin. Default 0.
    pub share: f64,
    /// Seconds away, uniform in `[min, max]`. Default [5, 30].
    pub away: [f64; 2],
}

impl Default for Churn {
    fn default() -> Self {
        Churn {
            share: 0.0,
            away: [5.0, 30.0],
        }
    }
}

/// `[withdrawals]`: a legitimate viewer (classes `viewer` and
/// `lead_submitter`) whose lead was acked `accepted` withdraws it a little
/// later with a `Withdraw` frame (`roomgate/2`), resent with the same id
/// after a reconnect until acked. Which leads are withdrawn, and after how
/// long, is drawn from the seed when the lead is planned, so the plan (and
/// a split run's ground truth) does not depend on the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Withdrawals {
    /// Share (0..=1) of legitimate leads withdrawn once accepted. Default 0.
    pub share: f64,
    /// Seconds from the lead's accepted ack to the withdrawal, uniform in
    /// `[min, max]`. Default [1, 3].
    pub after: [f64; 2],
}

impl Default for Withdrawals {
    fn default() -> Self {
        Withdrawals {
            share: 0.0,
            after: [1.0, 3.0],
        }
    }
}

/// `[likes]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LikeShape {
    /// A tapping viewer's app sends its taps as one `Like{count}` frame
    /// every this many ms (bursts and storms). Default 500.
    pub flush_ms: u64,
}

impl Default for LikeShape {
    fn default() -> Self {
        LikeShape { flush_ms: 500 }
    }
}

/// One `[[like_storms]]` entry: the host asks for likes and the room taps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LikeStorm {
    /// Seconds from the start. Default 30.
    pub at: f64,
    /// Seconds the storm lasts. Default 10.
    pub duration: f64,
    /// Share of the connected legitimate viewers (every legitimate class,
    /// lurkers included) that tap. Default 0.5.
    pub participation: f64,
    /// Taps per second of each participant, uniform in `[min, max]`; the
    /// engine's per-viewer cap is 20/s. Default [5, 15].
    pub taps_per_sec: [f64; 2],
}

impl Default for LikeStorm {
    fn default() -> Self {
        LikeStorm {
            at: 30.0,
            duration: 10.0,
            participation: 0.5,
            taps_per_sec: [5.0, 15.0],
        }
    }
}

/// `[classes.*]`: who the viewers are. Each class takes `share` of every
/// room's viewers (rounded, at least one viewer when the share is above 0);
/// lurkers are everyone else. Rates are per room.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Classes {
    /// Mixed legitimate viewers (the basic loadgen).
    pub viewer: Option<ViewerClass>,
    /// Chatters.
    pub chatter: Option<Chatter>,
    /// Like tappers.
    pub like_tapper: Option<LikeTapper>,
    /// Lead submitters.
    pub lead_submitter: Option<LeadSubmitter>,
    /// Flooders.
    pub flooder: Option<Flooder>,
    /// Copy-paste raiders.
    pub raider: Option<Raider>,
    /// Harassers.
    pub harasser: Option<Harasser>,
    /// Fake-lead bots.
    pub fake_lead_bot: Option<FakeLeadBot>,
}

/// `[classes.viewer]`: every event goes to a uniformly random viewer of the
/// class (the basic loadgen's model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ViewerClass {
    /// Share of the room. Default 1.
    pub share: f64,
    /// Chat messages per second per room (Poisson). Default 50.
    pub chat_rate: f64,
    /// Like taps per second per room (Poisson); above 2000/s taps ride in
    /// `Like{count}` frames so frames/s stays ≤ 2000. Default 1000.
    pub like_rate: f64,
    /// Leads per second per room (Poisson). Default 2.
    pub lead_rate: f64,
}

impl Default for ViewerClass {
    fn default() -> Self {
        ViewerClass {
            share: 1.0,
            chat_rate: 50.0,
            like_rate: 1000.0,
            lead_rate: 2.0,
        }
    }
}

/// `[classes.chatter]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Chatter {
    /// Share of the room. Default 0.2.
    pub share: f64,
    /// Messages per second per room from all chatters (Poisson, a random
    /// chatter each). Keep the per-chatter rate far below the engine's
    /// per-viewer limit (20 per 30 s) and the room total below its room cap
    /// (40/s). Default 20.
    pub chat_rate: f64,
}

impl Default for Chatter {
    fn default() -> Self {
        Chatter {
            share: 0.2,
            chat_rate: 20.0,
        }
    }
}

/// `[classes.like_tapper]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LikeTapper {
    /// Share of the room. Default 0.3.
    pub share: f64,
    /// Taps per second per room from all tappers, on average. Default 1000.
    pub like_rate: f64,
    /// Taps per second within a burst, uniform in `[min, max]`. Default [5, 15].
    pub burst_taps_per_sec: [f64; 2],
    /// Burst length in seconds, uniform in `[min, max]`. Default [1, 5].
    pub burst_secs: [f64; 2],
}

impl Default for LikeTapper {
    fn default() -> Self {
        LikeTapper {
            share: 0.3,
            like_rate: 1000.0,
            burst_taps_per_sec: [5.0, 15.0],
            burst_secs: [1.0, 5.0],
        }
    }
}

/// `[classes.lead_submitter]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeadSubmitter {
    /// Share of the room: the most viewers that convert (each submits at
    /// most `leads_per_viewer` leads). Default 0.03.
    pub share: f64,
    /// Leads per second per room (Poisson, a random submitter that has not
    /// submitted yet each). Default 1.
    pub lead_rate: f64,
    /// Form fill time in seconds, log-uniform in `[min, max]` (the engine
    /// rejects fills under 3 s as `too_fast`). Default [8, 90].
    pub fill_secs: [f64; 2],
    /// Leads per submitter, each with its own phone. Default 1.
    pub leads_per_viewer: u32,
}

impl Default for LeadSubmitter {
    fn default() -> Self {
        LeadSubmitter {
            share: 0.03,
            lead_rate: 1.0,
            fill_secs: [8.0, 90.0],
            leads_per_viewer: 1,
        }
    }
}

/// `[classes.flooder]`: floods — one flooder sending many messages fast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Flooder {
    /// Share of the room. Default 0.001.
    pub share: f64,
    /// Floods starting per second per room (Poisson; a flooder not already
    /// flooding each). Default 0.05.
    pub flood_rate: f64,
    /// Messages per flood, uniform in `[min, max]`. Default [15, 40].
    pub messages: [u32; 2],
    /// Messages per second during a flood (the engine allows a viewer 20
    /// per 30 s, bursts of 5). Default 3.
    pub msgs_per_sec: f64,
    /// Weights of what a flood message is: a distinct ordinary line (caught
    /// by rate only), the flood's first line again (duplicate), or a
    /// repeated-character flood ("哈哈哈哈哈哈哈哈哈哈"). Default [2, 1, 1].
    pub mix: [f64; 3],
}

impl Default for Flooder {
    fn default() -> Self {
        Flooder {
            share: 0.001,
            flood_rate: 0.05,
            messages: [15, 40],
            msgs_per_sec: 3.0,
            mix: [2.0, 1.0, 1.0],
        }
    }
}

/// `[classes.raider]`: copy-paste waves — one long text from many viewers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Raider {
    /// Share of the room. Default 0.005.
    pub share: f64,
    /// Wave start times, seconds from the start. Default [30].
    pub waves: Vec<f64>,
    /// Extra waves per second per room (Poisson), besides `waves`. Default 0.
    pub wave_rate: f64,
    /// Raiders posting in one wave (at most the class size). Default 25.
    pub wave_viewers: u32,
    /// Seconds a wave is spread over. Default 8.
    pub wave_secs: f64,
    /// Share of copies disguised with invisible characters, full-width
    /// letters, case and spacing (all undone by the engine's normalizer).
    /// Default 0.5.
    pub evasion_share: f64,
}

impl Default for Raider {
    fn default() -> Self {
        Raider {
            share: 0.005,
            waves: vec![30.0],
            wave_rate: 0.0,
            wave_viewers: 25,
            wave_secs: 8.0,
            evasion_share: 0.5,
        }
    }
}

/// `[classes.harasser]`: every message carries a blocked term (with
/// evasions), a link or contact details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Harasser {
    /// Share of the room. Default 0.002.
    pub share: f64,
    /// Messages per second per room from all harassers (Poisson). Default 0.5.
    pub chat_rate: f64,
    /// The engine's blocked terms (`guard.chat.blocked_terms`), used to
    /// write abuse and to keep legitimate lines clean. Default: the list in
    /// `loadgen/engine-loadtest.toml`.
    pub terms: Vec<String>,
    /// Weights of blocked term, link and contact details. Default [2, 1, 1].
    pub mix: [f64; 3],
}

impl Default for Harasser {
    fn default() -> Self {
        Harasser {
            share: 0.002,
            chat_rate: 0.5,
            terms: crate::content::DEFAULT_BLOCKED_TERMS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            mix: [2.0, 1.0, 1.0],
        }
    }
}

/// `[classes.fake_lead_bot]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeLeadBot {
    /// Share of the room. Default 0.002.
    pub share: f64,
    /// Bot submissions (tactic starts) per second per room (Poisson).
    /// Default 0.3.
    pub lead_rate: f64,
    /// Tactic weights.
    pub tactics: Tactics,
    /// Leads filed by one bot viewer in the `many_leads` tactic, uniform in
    /// `[min, max]` (the engine allows 3 per viewer per hour). Default [5, 8].
    pub many_leads: [u32; 2],
    /// Phones the `shared_phone` tactic uses, the same in every room of the
    /// run (the engine allows one phone in 5 rooms per hour). Default 2.
    pub shared_phones: u32,
}

impl Default for FakeLeadBot {
    fn default() -> Self {
        FakeLeadBot {
            share: 0.002,
            lead_rate: 0.3,
            tactics: Tactics::default(),
            many_leads: [5, 8],
            shared_phones: 2,
        }
    }
}

/// `[classes.fake_lead_bot.tactics]`: relative weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tactics {
    /// 13-digit IoT (1064x) and 11-digit 14x IoT numbers. Default 1.
    pub iot: f64,
    /// 145 data-card numbers. Default 1.
    pub data_card: f64,
    /// The hidden honeypot field filled in. Default 1.
    pub honeypot: f64,
    /// Submitted 0.1–2.5 s after the form was shown. Default 1.
    pub too_fast: f64,
    /// One phone in many rooms (and again in the same room). Default 1.
    pub shared_phone: f64,
    /// One viewer filing many leads with different phones. Default 1.
    pub many_leads: f64,
    /// Made-up numbers (13812345678, 13988888888). Default 1.
    pub fake_pattern: f64,
    /// Consent box not ticked. Default 0.
    pub no_consent: f64,
}

impl Default for Tactics {
    fn default() -> Self {
        Tactics {
            iot: 1.0,
            data_card: 1.0,
            honeypot: 1.0,
            too_fast: 1.0,
            shared_phone: 1.0,
            many_leads: 1.0,
            fake_pattern: 1.0,
            no_consent: 0.0,
        }
    }
}

impl Tactics {
    /// The weights in [`crate::content::Tactic::ALL`] order.
    pub fn weights(&self) -> [f64; 8] {
        [
            self.iot,
            self.data_card,
            self.honeypot,
            self.too_fast,
            self.shared_phone,
            self.many_leads,
            self.fake_pattern,
            self.no_consent,
        ]
    }
}

/// `[verify]`: tolerances of `verify` (shares, 0..=1). Overridable with
/// `verify`'s flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tolerances {
    /// Legitimate chat / lead / like events the guard may reject (`busy`
    /// excluded), as a share of the legitimate events of that kind. Default 0.
    pub max_legit_rejected: f64,
    /// Legitimate chat answered `busy` (overload), as a share. Default 0.01.
    pub max_busy: f64,
    /// Chat and lead frames whose ack never came, as a share of those sent.
    /// Default 0.
    pub max_unacked: f64,
    /// Connection attempts that failed, as a share of attempts. Default 0.
    pub max_failed_connections: f64,
    /// Lead ack latency p99 (intended send → first ack), milliseconds, over
    /// the whole run: checked when set (the overload scenario: leads stay
    /// fast however busy chat and likes make the engine). Default unset.
    pub max_lead_ack_p99_ms: Option<f64>,
    /// Like taps sent but neither stored nor rate limited, as a share of
    /// taps sent: what an engine crash may lose (taps still summed in memory
    /// for the current second). Never negative: more stored than sent
    /// always fails. Default 0.
    pub max_likes_lost: f64,
    /// Per abusive class, the share of its events that may get through.
    pub max_abuse_accepted: AbuseTolerances,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            max_legit_rejected: 0.0,
            max_busy: 0.01,
            max_unacked: 0.0,
            max_failed_connections: 0.0,
            max_lead_ack_p99_ms: None,
            max_likes_lost: 0.0,
            max_abuse_accepted: AbuseTolerances::default(),
        }
    }
}

/// `[verify.max_abuse_accepted]`. The defaults follow from the engine's
/// default rules: a flooder's first burst (5) passes, the first 4 raiders of
/// a wave pass, a bot's first 3 leads and a shared phone's first room pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AbuseTolerances {
    /// Default 0.4.
    pub flooder: f64,
    /// Default 0.3.
    pub raider: f64,
    /// Every harasser message carries something the engine documents as
    /// caught. Default 0.
    pub harasser: f64,
    /// Default 0.5.
    pub fake_lead_bot: f64,
}

impl Default for AbuseTolerances {
    fn default() -> Self {
        AbuseTolerances {
            flooder: 0.4,
            raider: 0.3,
            harasser: 0.0,
            fake_lead_bot: 0.5,
        }
    }
}

impl AbuseTolerances {
    /// The tolerance of `class` (`None` for legitimate classes).
    pub fn get(&self, class: Class) -> Option<f64> {
        match class {
            Class::Flooder => Some(self.flooder),
            Class::Raider => Some(self.raider),
            Class::Harasser => Some(self.harasser),
            Class::FakeLeadBot => Some(self.fake_lead_bot),
            _ => None,
        }
    }

    /// Set the tolerance of an abusive `class`; false for others.
    pub fn set(&mut self, class: Class, v: f64) -> bool {
        let slot = match class {
            Class::Flooder => &mut self.flooder,
            Class::Raider => &mut self.raider,
            Class::Harasser => &mut self.harasser,
            Class::FakeLeadBot => &mut self.fake_lead_bot,
            _ => return false,
        };
        *slot = v;
        true
    }
}

/// A share in 0..=1.
fn share(name: &str, v: f64) -> Result<f64> {
    if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
        bail!("{name} must be in 0..=1, got {v}");
    }
    Ok(v)
}

/// A non-negative finite number.
fn non_negative(name: &str, v: f64) -> Result<f64> {
    if !(v.is_finite() && v >= 0.0) {
        bail!("{name} must be a non-negative number, got {v}");
    }
    Ok(v)
}

/// An interval `[min, max]` with `0 <= min <= max`.
fn interval(name: &str, v: [f64; 2]) -> Result<()> {
    non_negative(name, v[0])?;
    non_negative(name, v[1])?;
    if v[0] > v[1] {
        bail!("{name} = [{}, {}]: min is above max", v[0], v[1]);
    }
    Ok(())
}

impl Scenario {
    /// The basic loadgen's scenario: one class of mixed viewers.
    pub fn basic() -> Self {
        Scenario {
            classes: Classes {
                viewer: Some(ViewerClass::default()),
                ..Classes::default()
            },
            ..Scenario::default()
        }
    }

    /// Parse a scenario file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--scenario {}: cannot read", path.display()))?;
        Self::parse(&text).with_context(|| format!("--scenario {}", path.display()))
    }

    /// Parse scenario TOML.
    pub fn parse(text: &str) -> Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Join phases with the default applied.
    pub fn join_phases(&self) -> Vec<JoinPhase> {
        if self.join.phases.is_empty() {
            vec![JoinPhase {
                at: 0.0,
                share: 1.0,
                ramp: self.join.ramp.unwrap_or(DEFAULT_RAMP),
            }]
        } else {
            self.join.phases.clone()
        }
    }

    /// Set a linear ramp (the `--ramp` flag): replaces any phases.
    pub fn set_ramp(&mut self, ramp: f64) {
        self.join.ramp = Some(ramp);
        self.join.phases.clear();
    }

    /// Share of each class (lurkers not included).
    fn shares(&self) -> Vec<(Class, f64)> {
        let c = &self.classes;
        [
            (Class::Viewer, c.viewer.as_ref().map(|x| x.share)),
            (Class::Chatter, c.chatter.as_ref().map(|x| x.share)),
            (Class::LikeTapper, c.like_tapper.as_ref().map(|x| x.share)),
            (
                Class::LeadSubmitter,
                c.lead_submitter.as_ref().map(|x| x.share),
            ),
            (Class::Flooder, c.flooder.as_ref().map(|x| x.share)),
            (Class::Raider, c.raider.as_ref().map(|x| x.share)),
            (Class::Harasser, c.harasser.as_ref().map(|x| x.share)),
            (
                Class::FakeLeadBot,
                c.fake_lead_bot.as_ref().map(|x| x.share),
            ),
        ]
        .into_iter()
        .filter_map(|(class, s)| s.map(|s| (class, s)))
        .collect()
    }

    /// Viewers per class in each room: `share × viewers` rounded, at least
    /// one for a share above 0; lurkers take the rest.
    pub fn layout(&self) -> Result<ClassLayout> {
        let mut counts = Vec::new();
        let mut used: u64 = 0;
        for (class, s) in self.shares() {
            share(&format!("classes.{class}.share"), s)?;
            let n = if s > 0.0 {
                ((s * f64::from(self.viewers)).round() as u64).max(1)
            } else {
                0
            };
            used += n;
            counts.push((class, n as u32));
        }
        if used > u64::from(self.viewers) {
            bail!(
                "the class shares need {used} viewers per room but a room has {} \
                 (shares must sum to at most 1)",
                self.viewers
            );
        }
        counts.push((Class::Lurker, self.viewers - used as u32));
        Ok(ClassLayout::new(self.viewers, &counts))
    }

    /// Check every value; returns warnings (the run still starts).
    pub fn validate(&self) -> Result<Vec<String>> {
        let mut warn = Vec::new();
        if self.rooms == 0 || self.viewers == 0 {
            bail!("rooms and viewers must be at least 1");
        }
        if u64::from(self.viewers) >= crate::truth::VIEWER_ID_STRIDE {
            bail!(
                "viewers must be below {} (viewer ids are room_id*{}+i)",
                crate::truth::VIEWER_ID_STRIDE,
                crate::truth::VIEWER_ID_STRIDE
            );
        }
        if self
            .room_base
            .checked_add(u64::from(self.rooms))
            .and_then(|r| r.checked_mul(crate::truth::VIEWER_ID_STRIDE))
            .is_none()
        {
            bail!("room_base {} is too large", self.room_base);
        }
        if !(self.duration.is_finite() && self.duration > 0.0) {
            bail!(
                "duration must be a positive number of seconds, got {}",
                self.duration
            );
        }
        share("resend_share", self.resend_share)?;
        non_negative("drain_timeout", self.drain_timeout)?;
        if self.sockets == 0 || self.max_handshakes == 0 {
            bail!("sockets and max_handshakes must be at least 1");
        }
        if self.join.ramp.is_some() && !self.join.phases.is_empty() {
            bail!("[join]: give either ramp or phases, not both");
        }
        let phases = self.join_phases();
        let mut total = 0.0;
        for (i, p) in phases.iter().enumerate() {
            non_negative(&format!("join.phases[{i}].at"), p.at)?;
            non_negative(&format!("join.phases[{i}].ramp"), p.ramp)?;
            share(&format!("join.phases[{i}].share"), p.share)?;
            if p.at + p.ramp > self.duration {
                bail!(
                    "join: a phase ends at {} s, after the duration ({} s)",
                    p.at + p.ramp,
                    self.duration
                );
            }
            total += p.share;
        }
        if (total - 1.0).abs() > 1e-6 {
            bail!("join.phases: the shares sum to {total}, not 1");
        }
        share("churn.share", self.churn.share)?;
        interval("churn.away", self.churn.away)?;
        share("withdrawals.share", self.withdrawals.share)?;
        interval("withdrawals.after", self.withdrawals.after)?;
        if self.likes.flush_ms == 0 {
            bail!("likes.flush_ms must be at least 1");
        }
        for (i, s) in self.like_storms.iter().enumerate() {
            non_negative(&format!("like_storms[{i}].at"), s.at)?;
            non_negative(&format!("like_storms[{i}].duration"), s.duration)?;
            share(&format!("like_storms[{i}].participation"), s.participation)?;
            interval(&format!("like_storms[{i}].taps_per_sec"), s.taps_per_sec)?;
            if s.taps_per_sec[1] > 20.0 {
                warn.push(format!(
                    "like_storms[{i}]: up to {} taps/s per viewer is above the engine's \
                     default per-viewer cap (20/s): legitimate taps will be rate limited",
                    s.taps_per_sec[1]
                ));
            }
        }
        let layout = self.layout()?;
        let per_viewer = |class: Class, rate: f64| rate / f64::from(layout.count(class).max(1));
        let c = &self.classes;
        if let Some(v) = &c.viewer {
            non_negative("classes.viewer.chat_rate", v.chat_rate)?;
            non_negative("classes.viewer.like_rate", v.like_rate)?;
            non_negative("classes.viewer.lead_rate", v.lead_rate)?;
        }
        let mut legit_chat = 0.0;
        if let Some(ch) = &c.chatter {
            non_negative("classes.chatter.chat_rate", ch.chat_rate)?;
            legit_chat += ch.chat_rate;
            let pv = per_viewer(Class::Chatter, ch.chat_rate) * 60.0;
            if pv > 4.0 {
                warn.push(format!(
                    "classes.chatter: {pv:.1} messages per chatter per minute is close to the \
                     engine's per-viewer limit (40/min, bursts of 5): some legitimate chat \
                     may be rate limited; add chatters or lower chat_rate"
                ));
            }
        }
        if let Some(v) = &c.viewer {
            legit_chat += v.chat_rate;
        }
        if legit_chat > 30.0 {
            warn.push(format!(
                "{legit_chat} legitimate messages/s per room is close to the engine's default \
                 room cap (40/s): expect `busy` rejects"
            ));
        }
        if let Some(t) = &c.like_tapper {
            non_negative("classes.like_tapper.like_rate", t.like_rate)?;
            interval(
                "classes.like_tapper.burst_taps_per_sec",
                t.burst_taps_per_sec,
            )?;
            interval("classes.like_tapper.burst_secs", t.burst_secs)?;
            if t.burst_taps_per_sec[1] > 20.0 {
                warn.push(
                    "classes.like_tapper: bursts above 20 taps/s exceed the engine's \
                     per-viewer cap"
                        .into(),
                );
            }
            let mean_burst = (t.burst_taps_per_sec[0] + t.burst_taps_per_sec[1]) / 2.0
                * (t.burst_secs[0] + t.burst_secs[1])
                / 2.0;
            let concurrent =
                t.like_rate / mean_burst.max(1e-9) * (t.burst_secs[0] + t.burst_secs[1]) / 2.0;
            if concurrent > 0.5 * f64::from(layout.count(Class::LikeTapper)) {
                warn.push(format!(
                    "classes.like_tapper: like_rate {} needs about {concurrent:.0} tappers \
                     bursting at once, more than half the {} tappers: bursts will be skipped",
                    t.like_rate,
                    layout.count(Class::LikeTapper)
                ));
            }
        }
        if let Some(l) = &c.lead_submitter {
            non_negative("classes.lead_submitter.lead_rate", l.lead_rate)?;
            interval("classes.lead_submitter.fill_secs", l.fill_secs)?;
            if l.fill_secs[0] < 3.0 {
                warn.push(
                    "classes.lead_submitter: fills under 3 s are rejected as too_fast".into(),
                );
            }
            let capacity =
                f64::from(layout.count(Class::LeadSubmitter)) * f64::from(l.leads_per_viewer);
            let wanted = l.lead_rate * self.duration;
            if wanted > capacity {
                warn.push(format!(
                    "classes.lead_submitter: lead_rate × duration = {wanted:.0} leads per room \
                     but only {capacity:.0} submitter slots: the rest are not sent"
                ));
            }
            if l.leads_per_viewer > 3 {
                warn.push(
                    "classes.lead_submitter: more than 3 leads per viewer trips the engine's \
                     velocity_viewer rule"
                        .into(),
                );
            }
        }
        if self.withdrawals.share > 0.0 && self.legit_lead_rate() <= 0.0 {
            warn.push(
                "withdrawals.share is set but no legitimate class sends leads \
                 ([classes.viewer] or [classes.lead_submitter] lead_rate): nothing to withdraw"
                    .into(),
            );
        }
        let leads_each = c.lead_submitter.as_ref().map_or(1, |l| l.leads_per_viewer);
        if self.withdrawals.share > 0.0 && leads_each > 20 {
            warn.push(format!(
                "withdrawals: a submitter with {leads_each} leads may withdraw more than the \
                 engine's 20 per viewer and hour (guard.abuse.max_withdrawals_per_hour): \
                 the rest are rejected rate_limited"
            ));
        }
        if let Some(f) = &c.flooder {
            non_negative("classes.flooder.flood_rate", f.flood_rate)?;
            if !(f.msgs_per_sec.is_finite() && f.msgs_per_sec > 0.0) {
                bail!("classes.flooder.msgs_per_sec must be positive");
            }
            if f.messages[0] > f.messages[1] || f.messages[0] == 0 {
                bail!("classes.flooder.messages must be [min, max] with 1 <= min <= max");
            }
            weights("classes.flooder.mix", &f.mix)?;
        }
        if let Some(r) = &c.raider {
            for (i, w) in r.waves.iter().enumerate() {
                non_negative(&format!("classes.raider.waves[{i}]"), *w)?;
            }
            non_negative("classes.raider.wave_rate", r.wave_rate)?;
            non_negative("classes.raider.wave_secs", r.wave_secs)?;
            share("classes.raider.evasion_share", r.evasion_share)?;
            if r.wave_viewers > layout.count(Class::Raider) {
                warn.push(format!(
                    "classes.raider: wave_viewers {} is more than the {} raiders per room",
                    r.wave_viewers,
                    layout.count(Class::Raider)
                ));
            }
            if r.wave_viewers < 5 {
                warn.push(
                    "classes.raider: waves of fewer than 5 viewers are below the engine's \
                     default raid threshold and all pass"
                        .into(),
                );
            }
        }
        if let Some(h) = &c.harasser {
            non_negative("classes.harasser.chat_rate", h.chat_rate)?;
            weights("classes.harasser.mix", &h.mix)?;
            if h.terms.is_empty() && h.mix[0] > 0.0 {
                bail!("classes.harasser.terms is empty but mix gives blocked terms a weight");
            }
        }
        if let Some(b) = &c.fake_lead_bot {
            non_negative("classes.fake_lead_bot.lead_rate", b.lead_rate)?;
            weights("classes.fake_lead_bot.tactics", &b.tactics.weights())?;
            if b.many_leads[0] > b.many_leads[1] || b.many_leads[0] == 0 {
                bail!("classes.fake_lead_bot.many_leads must be [min, max] with 1 <= min <= max");
            }
            if b.tactics.shared_phone > 0.0 && b.shared_phones == 0 {
                bail!("classes.fake_lead_bot.shared_phones must be at least 1");
            }
        }
        let t = &self.verify;
        share("verify.max_legit_rejected", t.max_legit_rejected)?;
        share("verify.max_busy", t.max_busy)?;
        share("verify.max_unacked", t.max_unacked)?;
        share("verify.max_failed_connections", t.max_failed_connections)?;
        if t.max_lead_ack_p99_ms
            .is_some_and(|v| v.is_nan() || v <= 0.0)
        {
            bail!("verify.max_lead_ack_p99_ms must be above 0");
        }
        for class in Class::ABUSIVE {
            share(
                &format!("verify.max_abuse_accepted.{class}"),
                t.max_abuse_accepted.get(class).unwrap_or(0.0),
            )?;
        }
        Ok(warn)
    }

    /// Legitimate chat messages per second per room (the `--chat-rate`
    /// figure of this scenario).
    pub fn legit_chat_rate(&self) -> f64 {
        let c = &self.classes;
        c.viewer.as_ref().map_or(0.0, |v| v.chat_rate)
            + c.chatter.as_ref().map_or(0.0, |v| v.chat_rate)
    }

    /// Legitimate baseline like taps per second per room (storms excluded).
    pub fn legit_like_rate(&self) -> f64 {
        let c = &self.classes;
        c.viewer.as_ref().map_or(0.0, |v| v.like_rate)
            + c.like_tapper.as_ref().map_or(0.0, |v| v.like_rate)
    }

    /// Legitimate leads per second per room.
    pub fn legit_lead_rate(&self) -> f64 {
        let c = &self.classes;
        c.viewer.as_ref().map_or(0.0, |v| v.lead_rate)
            + c.lead_submitter.as_ref().map_or(0.0, |v| v.lead_rate)
    }

    /// `--chat-rate`: the chatters' rate, or the mixed viewers' without chatters.
    pub fn set_chat_rate(&mut self, r: f64) -> Result<()> {
        let c = &mut self.classes;
        match (&mut c.chatter, &mut c.viewer) {
            (Some(ch), _) => ch.chat_rate = r,
            (None, Some(v)) => v.chat_rate = r,
            (None, None) => bail!("--chat-rate: the scenario has no [classes.chatter]"),
        }
        Ok(())
    }

    /// `--like-rate`: the like tappers' rate, or the mixed viewers'.
    pub fn set_like_rate(&mut self, r: f64) -> Result<()> {
        let c = &mut self.classes;
        match (&mut c.like_tapper, &mut c.viewer) {
            (Some(t), _) => t.like_rate = r,
            (None, Some(v)) => v.like_rate = r,
            (None, None) => bail!("--like-rate: the scenario has no [classes.like_tapper]"),
        }
        Ok(())
    }

    /// `--lead-rate`: the lead submitters' rate, or the mixed viewers'.
    pub fn set_lead_rate(&mut self, r: f64) -> Result<()> {
        let c = &mut self.classes;
        match (&mut c.lead_submitter, &mut c.viewer) {
            (Some(l), _) => l.lead_rate = r,
            (None, Some(v)) => v.lead_rate = r,
            (None, None) => bail!("--lead-rate: the scenario has no [classes.lead_submitter]"),
        }
        Ok(())
    }

    /// The blocked terms the content generator writes abuse with and keeps
    /// legitimate lines clear of.
    pub fn blocked_terms(&self) -> Vec<String> {
        self.classes.harasser.as_ref().map_or_else(
            || {
                crate::content::DEFAULT_BLOCKED_TERMS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            },
            |h| h.terms.clone(),
        )
    }
}

fn weights(name: &str, w: &[f64]) -> Result<()> {
    for v in w {
        non_negative(name, *v)?;
    }
    if w.iter().sum::<f64>() <= 0.0 {
        bail!("{name}: at least one weight must be above 0");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_is_one_class_of_mixed_viewers() {
        let s = Scenario::basic();
        // The basic loadgen's 50 msg/s is above the engine's room cap: said.
        let w = s.validate().unwrap();
        assert!(w.len() == 1 && w[0].contains("room cap"), "{w:?}");
        let l = s.layout().unwrap();
        assert_eq!(l.range(Class::Viewer), 0..10_000);
        assert_eq!(l.count(Class::Lurker), 0);
        assert_eq!(s.join_phases()[0].ramp, DEFAULT_RAMP);
        assert_eq!(
            (
                s.legit_chat_rate(),
                s.legit_like_rate(),
                s.legit_lead_rate()
            ),
            (50.0, 1000.0, 2.0)
        );
    }

    #[test]
    fn shares_round_with_at_least_one_and_lurkers_take_the_rest() {
        let s = Scenario::parse(
            "viewers = 1000\n[classes.chatter]\nshare = 0.25\n\
             [classes.harasser]\nshare = 0.0001\n[classes.raider]\nshare = 0\n",
        )
        .unwrap();
        let l = s.layout().unwrap();
        assert_eq!(l.count(Class::Chatter), 250);
        assert_eq!(l.count(Class::Harasser), 1);
        assert_eq!(l.count(Class::Raider), 0);
        assert_eq!(l.count(Class::Lurker), 749);
        let too_many =
            Scenario::parse("[classes.chatter]\nshare = 0.7\n[classes.like_tapper]\nshare = 0.4\n")
                .unwrap();
        assert!(too_many.layout().is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(Scenario::parse("viewerz = 3\n").is_err());
        assert!(Scenario::parse("[classes.chatter]\nchat_rat = 3\n").is_err());
        assert!(Scenario::parse("[classes.troll]\nshare = 0.1\n").is_err());
        for bad in [
            "duration = 0\n",
            "resend_share = 2\n",
            "[join]\nramp = 5\n[[join.phases]]\nshare = 1\n",
            "[[join.phases]]\nshare = 0.5\n",
            "duration = 10\n[[join.phases]]\nat = 8\nramp = 5\n",
            "[churn]\naway = [10, 5]\n",
            "[withdrawals]\nshare = 1.5\n",
            "[withdrawals]\nafter = [3, 1]\n",
            "[classes.flooder]\nmessages = [0, 3]\n",
            "[verify]\nmax_busy = 1.5\n",
            "[classes.fake_lead_bot.tactics]\niot = 0\ndata_card = 0\nhoneypot = 0\n\
             too_fast = 0\nshared_phone = 0\nmany_leads = 0\nfake_pattern = 0\n",
        ] {
            let s = Scenario::parse(bad).unwrap();
            assert!(s.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn rate_overrides_go_to_the_legit_class() {
        let mut s = Scenario::parse("[classes.chatter]\nshare = 0.5\n").unwrap();
        s.set_chat_rate(7.0).unwrap();
        assert_eq!(s.classes.chatter.as_ref().unwrap().chat_rate, 7.0);
        assert!(s.set_like_rate(1.0).is_err());
        let mut b = Scenario::basic();
        b.set_lead_rate(9.0).unwrap();
        assert_eq!(b.legit_lead_rate(), 9.0);
        b.set_ramp(0.0);
        assert_eq!(b.join_phases()[0].ramp, 0.0);
    }

    #[test]
    fn every_shipped_scenario_parses_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
                let warnings = s.validate().unwrap_or_else(|e| panic!("{path:?}: {e:#}"));
                assert!(warnings.is_empty(), "{path:?}: {warnings:?}");
                assert!(!s.description.is_empty(), "{path:?} has no description");
                n += 1;
            }
        }
        for name in [
            "steady-10k",
            "like-storm",
            "spam-raid",
            "fake-lead-bots",
            "join-storm",
        ] {
            assert!(dir.join(format!("{name}.toml")).exists(), "{name}");
        }
        assert!(n >= 5);
    }
}

//! The guard: every accept / reject decision, sans-IO.
//!
//! A shard worker owns one [`Guard`] and calls it with the current time; the
//! guard returns a [`Decision`] and never touches a socket, a clock or a
//! lock. All state is bounded and expires ([`Guard::tick`]).
//!
//! - Chat ([`Guard::decide`]): replay → banned → muted → too long → slow mode
//!   → per-viewer rate → duplicate → flood → blocked terms → link → contact
//!   info → spam wave → room cap (`busy`). The first reject wins; auto-mute
//!   follows repeated rejects.
//! - Likes: a per-viewer tap cap; taps beyond it are `rate_limited`.
//! - Leads ([`Guard::lead_start`], [`Guard::lead_stage`],
//!   [`Guard::lead_finish`]): checks run in stages, each on the shard that
//!   owns the stage's key (room, phone HMAC, IP HMAC, viewer), so
//!   cross-room facts are shard-local and need no lock (DESIGN.md). With
//!   several engine nodes the cross-room stages also count other nodes'
//!   leads, read from ClickHouse and merged by [`Guard::merge_facts`]
//!   ([`facts`]).
//!
//! A rule in dry-run records its would-be reject in [`Decision::dry_run`]
//! and lets the event pass.

pub mod config;
pub mod facts;
pub mod limiter;
pub mod phone;
mod room;
pub mod terms;
pub mod text;
pub mod window;

use std::hash::{Hash, Hasher};

use rustc_hash::{FxHashMap, FxHasher};

pub use config::{ChatConfig, GuardConfig, LeadConfig, LikeConfig, RoomConfig};
pub use facts::{FactBatch, IpFact, PhoneFact};
use facts::{RemoteCount, RemoteRoom};
use limiter::{Gcra, SlidingCount};
use room::{RaidEntry, RoomState};
use terms::BlockedTerms;
use window::Window;

use crate::event::{Event, EventKind};
use crate::wire::{Lead, NoticeKind, Reason, ReasonSet, Verdict};

/// The guard's answer for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Outcome.
    pub verdict: Verdict,
    /// The deciding reason (`Reason::None` when accepted without remark).
    pub reason: Reason,
    /// Suggested wait before retrying, ms (0 = none).
    pub retry_after_ms: u32,
    /// The event repeats one already decided: ack again, store nothing.
    pub replay: bool,
    /// Rules in dry-run that would have rejected this event.
    pub dry_run: ReasonSet,
    /// Likes: taps admitted (the rest were rate limited).
    pub admitted: u32,
    /// This decision auto-muted the viewer for this many seconds (0 = no).
    pub muted_secs: u32,
}

impl Decision {
    /// Plain accept.
    pub const ACCEPT: Decision = Decision {
        verdict: Verdict::Accepted,
        reason: Reason::None,
        retry_after_ms: 0,
        replay: false,
        dry_run: ReasonSet::EMPTY,
        admitted: 0,
        muted_secs: 0,
    };

    pub(crate) fn reject(reason: Reason, retry_after_ms: u32) -> Decision {
        Decision {
            verdict: Verdict::Rejected,
            reason,
            retry_after_ms,
            ..Decision::ACCEPT
        }
    }

    /// True when the event's content row is written (chat, likes).
    pub fn stores(&self) -> bool {
        !self.replay && self.verdict != Verdict::Rejected
    }
}

/// A lead on its way through the check stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadCheck {
    /// Room.
    pub room_id: u64,
    /// Viewer.
    pub viewer_id: u64,
    /// E.164 form of the phone, empty if it did not parse.
    pub phone_e164: String,
    /// Keyed HMAC of the phone (hex): the phone stage's key.
    pub phone_key: String,
    /// The IP stage's key: the keyed HMAC of the remote IP (hex, as in
    /// `leads.ip_hmac`; the I/O layer holds the key).
    pub ip: String,
    /// Reasons found so far (rejects and flags).
    pub reasons: ReasonSet,
    /// Reasons of rules in dry-run.
    pub dry_run: ReasonSet,
    /// Cross-room rules that fired only because of other nodes' facts
    /// ([`Guard::merge_facts`]), in dry-run or not.
    pub remote: ReasonSet,
    /// Score penalties so far.
    pub penalty: u32,
}

/// The stages a lead passes through, in order. Each runs on the shard that
/// owns its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadStage {
    /// IP velocity.
    Ip,
    /// Viewer velocity.
    Viewer,
    /// Phone facts: duplicate in room, rooms per phone. Last, so it knows
    /// whether the lead is rejected and only registers phones of leads
    /// that will be stored as leads (a rejected lead must not make the
    /// viewer's corrected resubmission a duplicate).
    Phone,
}

impl LeadStage {
    /// Stages after the room's own checks, in order.
    pub const ORDER: [LeadStage; 3] = [LeadStage::Ip, LeadStage::Viewer, LeadStage::Phone];

    /// The routing key of this stage for `check`.
    pub fn key(self, check: &LeadCheck) -> u64 {
        match self {
            LeadStage::Phone => LeadStage::fact_key(&check.phone_key),
            LeadStage::Ip => LeadStage::fact_key(&check.ip),
            LeadStage::Viewer => {
                let mut h = FxHasher::default();
                check.viewer_id.hash(&mut h);
                h.finish()
            }
        }
    }

    /// The routing key of a phone or IP key (`phone_hmac`, `ip_hmac`): the
    /// shard of `shard_of(fact_key(k))` owns its facts.
    pub fn fact_key(key: &str) -> u64 {
        let mut h = FxHasher::default();
        key.hash(&mut h);
        h.finish()
    }
}

/// A finished lead decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeadVerdict {
    /// The ack's decision (verdict, deciding reason).
    pub decision: Decision,
    /// 0–100.
    pub score: u8,
    /// Every reason found (rejects and flags).
    pub reasons: ReasonSet,
}

/// A live change to a room or rule (admin API, config at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Set slow mode (seconds; 0 = off).
    SlowMode {
        /// Room.
        room: u64,
        /// Seconds.
        secs: u32,
    },
    /// Set the room-wide chat cap and/or the per-viewer chat limit.
    RoomLimits {
        /// Room.
        room: u64,
        /// Messages per second room-wide.
        chat_per_sec: Option<u32>,
        /// Messages per viewer per `viewer_period_secs`.
        viewer_messages: Option<u32>,
    },
    /// Add blocked terms to a room (`None` = global).
    AddTerms {
        /// Room, or global.
        room: Option<u64>,
        /// Patterns.
        terms: Vec<String>,
    },
    /// Remove blocked terms.
    RemoveTerms {
        /// Room, or global.
        room: Option<u64>,
        /// Patterns.
        terms: Vec<String>,
    },
    /// Mute a viewer for `secs` (0 = until unmuted).
    Mute {
        /// Room.
        room: u64,
        /// Viewer.
        viewer: u64,
        /// Seconds.
        secs: u64,
    },
    /// Unmute a viewer.
    Unmute {
        /// Room.
        room: u64,
        /// Viewer.
        viewer: u64,
    },
    /// Ban a viewer from a room (closes their sessions).
    Ban {
        /// Room.
        room: u64,
        /// Viewer.
        viewer: u64,
    },
    /// Lift a ban.
    Unban {
        /// Room.
        room: u64,
        /// Viewer.
        viewer: u64,
    },
    /// Switch a rule's dry-run.
    DryRun {
        /// The rule's reason.
        rule: Reason,
        /// On or off.
        on: bool,
    },
}

/// What the I/O layer must do after a [`Control`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing to announce.
    None,
    /// Send a notice to every viewer of the room.
    Broadcast {
        /// Room.
        room: u64,
        /// Notice kind.
        kind: NoticeKind,
        /// Value.
        value: u32,
    },
    /// Send a notice to one viewer's sessions in the room.
    Viewer {
        /// Room.
        room: u64,
        /// Viewer.
        viewer: u64,
        /// Notice kind.
        kind: NoticeKind,
        /// Value.
        value: u32,
    },
    /// Close the viewer's sessions in the room (banned).
    Kick {
        /// Room.
        room: u64,
        /// Viewer.
        viewer: u64,
    },
}

/// A control that cannot be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// A blocked term is not valid.
    #[error("blocked term: {0}")]
    Term(#[from] terms::TermError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ClientKey {
    room: u64,
    viewer: u64,
    lead: bool,
    id: u64,
}

/// Per-shard guard state.
#[derive(Debug)]
pub struct Guard {
    cfg: GuardConfig,
    seen: Window<ClientKey, (Verdict, Reason)>,
    dry_run: ReasonSet,
    global_terms: Vec<String>,
    global: Option<BlockedTerms>,
    rooms: FxHashMap<u64, RoomState>,
    chat_viewer: Gcra,
    likes: Gcra,
    /// (phone key, room) → first lead time: duplicate leads.
    phone_rooms: Window<(String, u64), ()>,
    /// phone key → rooms with a lead in the velocity window.
    phone_velocity: Window<String, Vec<(u64, i64)>>,
    ip_velocity: Window<String, SlidingCount>,
    viewer_velocity: Window<u64, SlidingCount>,
    /// phone key → rooms where other nodes (and this one, read back) saw
    /// it, from ClickHouse ([`Guard::merge_facts`]).
    remote_phones: Window<String, Vec<RemoteRoom>>,
    /// IP key → leads per minute, from ClickHouse.
    remote_ips: Window<String, RemoteCount>,
    last_sweep_ms: i64,
    /// Latest time passed in (for read-only views such as `room_settings`).
    last_now_ms: i64,
}

fn text_hash(s: &str) -> u64 {
    let mut h = FxHasher::default();
    s.hash(&mut h);
    h.finish()
}

const HARD_LEAD_REJECTS: [Reason; 8] = [
    Reason::PhoneInvalid,
    Reason::PhoneUnreachable,
    Reason::NoConsent,
    Reason::BotHoneypot,
    Reason::TooFast,
    Reason::VelocityViewer,
    Reason::VelocityIp,
    Reason::VelocityPhone,
];

impl Guard {
    /// A guard with `cfg`. Unknown dry-run rule names and invalid global
    /// terms are configuration errors.
    pub fn new(cfg: &GuardConfig) -> Result<Self, String> {
        let mut dry_run = ReasonSet::EMPTY;
        for name in &cfg.dry_run {
            let r = Reason::from_name(name)
                .ok_or_else(|| format!("guard.dry_run: unknown rule {name:?}"))?;
            dry_run.insert(r);
        }
        let global = if cfg.chat.blocked_terms.is_empty() {
            None
        } else {
            Some(
                BlockedTerms::new(&cfg.chat.blocked_terms)
                    .map_err(|e| format!("guard.chat.blocked_terms: {e}"))?,
            )
        };
        let c = &cfg.chat;
        let l = &cfg.leads;
        let vel_ms = (l.velocity_window_secs as i64).saturating_mul(1000);
        let dup_ms = (l.duplicate_window_secs as i64).saturating_mul(1000);
        Ok(Guard {
            seen: Window::new(
                (cfg.idempotency_window_secs as i64).saturating_mul(1000),
                cfg.idempotency_capacity,
            ),
            dry_run,
            global_terms: cfg.chat.blocked_terms.clone(),
            global,
            rooms: FxHashMap::default(),
            chat_viewer: Gcra::new(
                c.viewer_messages,
                c.viewer_period_secs * 1000,
                c.viewer_burst,
            ),
            likes: Gcra::new(cfg.likes.viewer_per_sec, 1_000, cfg.likes.viewer_burst),
            phone_rooms: Window::new(dup_ms, l.capacity),
            phone_velocity: Window::new(vel_ms, l.capacity),
            ip_velocity: Window::new(vel_ms, l.capacity),
            viewer_velocity: Window::new(vel_ms, l.capacity),
            remote_phones: Window::new(vel_ms.max(dup_ms), l.capacity),
            remote_ips: Window::new(vel_ms, l.capacity),
            last_sweep_ms: 0,
            last_now_ms: 0,
            cfg: cfg.clone(),
        })
    }

    /// Is `rule` in dry-run?
    pub fn is_dry_run(&self, rule: Reason) -> bool {
        self.dry_run.contains(rule)
    }

    fn room(&mut self, room: u64) -> &mut RoomState {
        self.rooms.entry(room).or_default()
    }

    /// Decide on a session, chat or like event at `now_ms` (Unix ms).
    /// Leads go through [`Guard::lead_start`].
    pub fn decide(&mut self, now_ms: i64, ev: &Event) -> Decision {
        self.last_now_ms = self.last_now_ms.max(now_ms);
        match &ev.kind {
            EventKind::Join { .. } => {
                let banned = {
                    let v = self
                        .room(ev.room_id)
                        .viewers
                        .entry(ev.viewer_id)
                        .or_default();
                    v.sessions += 1;
                    v.banned
                };
                if banned {
                    return Decision::reject(Reason::Banned, 0);
                }
                Decision::ACCEPT
            }
            EventKind::Leave { .. } => {
                if let Some(v) = self.room(ev.room_id).viewers.get_mut(&ev.viewer_id) {
                    v.sessions = v.sessions.saturating_sub(1);
                }
                Decision::ACCEPT
            }
            EventKind::Like { count, spread_ms } => {
                self.like(now_ms, ev.room_id, ev.viewer_id, *count, *spread_ms)
            }
            EventKind::Chat {
                client_msg_id,
                text,
            } => {
                let key = ClientKey {
                    room: ev.room_id,
                    viewer: ev.viewer_id,
                    lead: false,
                    id: *client_msg_id,
                };
                if let Some(&(verdict, reason)) = self.seen.get(&key, now_ms) {
                    return Decision {
                        verdict,
                        reason,
                        replay: true,
                        ..Decision::ACCEPT
                    };
                }
                let d = self.chat(now_ms, ev.room_id, ev.viewer_id, text);
                // A reject that says "retry after" (overload, rate, slow
                // mode, mute) is not a verdict on the message: a resend with
                // the same id after `retry_after_ms` is decided afresh.
                let retryable = matches!(
                    d.reason,
                    Reason::Busy | Reason::RateLimited | Reason::SlowMode | Reason::Muted
                );
                if !retryable {
                    self.seen.insert(key, (d.verdict, d.reason), now_ms);
                }
                d
            }
            // Decided by the shard ([`crate::shard`]): no guard rule.
            EventKind::Lead { .. } | EventKind::Withdraw { .. } => Decision::ACCEPT,
        }
    }

    fn like(
        &mut self,
        now_ms: i64,
        room: u64,
        viewer: u64,
        count: u32,
        spread_ms: u32,
    ) -> Decision {
        let gcra = self.likes;
        let dry = self.dry_run.contains(Reason::RateLimited);
        let v = self
            .rooms
            .entry(room)
            .or_default()
            .viewers
            .entry(viewer)
            .or_default();
        // Taps coalesced over `spread_ms` are judged as if they arrived over
        // that span: what the cap allowed at its start, then the rest now.
        let start = now_ms - i64::from(spread_ms);
        let mut admitted = gcra.admit_n(&mut v.like_tat, start, count);
        if admitted < count && spread_ms > 0 {
            admitted += gcra.admit_n(&mut v.like_tat, now_ms, count - admitted);
        }
        if admitted == count {
            return Decision {
                admitted,
                ..Decision::ACCEPT
            };
        }
        if dry {
            let mut d = Decision {
                admitted: count,
                ..Decision::ACCEPT
            };
            d.dry_run.insert(Reason::RateLimited);
            return d;
        }
        // Some or all taps over the cap: the rest are counted as rejected.
        Decision {
            verdict: if admitted == 0 {
                Verdict::Rejected
            } else {
                Verdict::Accepted
            },
            reason: Reason::RateLimited,
            admitted,
            ..Decision::ACCEPT
        }
    }

    fn chat(&mut self, now: i64, room_id: u64, viewer_id: u64, text: &str) -> Decision {
        let mut d = Decision::ACCEPT;
        let tat_before = self
            .room(room_id)
            .viewers
            .entry(viewer_id)
            .or_default()
            .chat_tat;
        let mut h = 0;
        let decided = self.chat_rules(now, room_id, viewer_id, text, &mut d, &mut h);
        let v = self.room(room_id).viewers.entry(viewer_id).or_default();
        if !decided {
            // Only accepted messages count for slow mode and duplicates.
            v.last_chat_ms = now;
            v.recent.push_back((h, now));
            while v.recent.len() > 64 {
                v.recent.pop_front();
            }
            return d;
        }
        // A rejected message does not use up the viewer's rate budget.
        if d.reason != Reason::RateLimited {
            v.chat_tat = tat_before;
        }
        // Auto-mute after repeated rejects (overload `busy` is not the
        // viewer's fault and does not count).
        let c = &self.cfg.chat;
        if c.automute_rejects > 0
            && !matches!(d.reason, Reason::Busy | Reason::Muted | Reason::Banned)
        {
            let (window, mute_ms, n) = (
                (c.automute_window_secs as i64).saturating_mul(1000),
                (c.automute_secs as i64).saturating_mul(1000),
                c.automute_rejects as usize,
            );
            let v = self.room(room_id).viewers.entry(viewer_id).or_default();
            if v.rejects.hit(now, window, n) + 1 >= n {
                v.muted_until = v.muted_until.max(now.saturating_add(mute_ms));
                v.rejects = SlidingCount::default();
                d.muted_secs = (mute_ms / 1000) as u32;
            }
        }
        d
    }

    /// Run the chat rules; true when one rejected (`d` holds it).
    fn chat_rules(
        &mut self,
        now: i64,
        room_id: u64,
        viewer_id: u64,
        text: &str,
        d: &mut Decision,
        h_out: &mut u64,
    ) -> bool {
        let cfg = &self.cfg.chat;
        let default_slow = cfg.slow_mode_secs;
        let max_chars = cfg.max_chars;
        let dup_ms = (cfg.duplicate_window_secs as i64).saturating_mul(1000);
        let room_default = cfg.room_per_sec;
        let chat_gcra = self.chat_viewer;
        let (viewer_msgs, period_ms, burst) = (
            cfg.viewer_messages,
            cfg.viewer_period_secs * 1000,
            cfg.viewer_burst,
        );
        let dry = self.dry_run;
        let hit = |d: &mut Decision, reason: Reason, retry: u32| -> bool {
            if dry.contains(reason) {
                d.dry_run.insert(reason);
                false
            } else {
                *d = Decision {
                    dry_run: d.dry_run,
                    ..Decision::reject(reason, retry)
                };
                true
            }
        };

        let room = self.rooms.entry(room_id).or_default();
        let slow = room.slow_mode_secs.unwrap_or(default_slow);
        let viewer_gcra = match room.viewer_messages {
            Some(n) => Gcra::new(n, period_ms, burst),
            None => chat_gcra,
        };
        let _ = viewer_msgs;
        let v = room.viewers.entry(viewer_id).or_default();
        if v.banned && hit(d, Reason::Banned, 0) {
            return true;
        }
        if v.muted_until > now {
            let left = if v.muted_until == i64::MAX {
                0
            } else {
                (v.muted_until - now).min(i64::from(u32::MAX)) as u32
            };
            if hit(d, Reason::Muted, left) {
                return true;
            }
        }
        if text.chars().count() > max_chars && hit(d, Reason::TooLong, 0) {
            return true;
        }
        // Normalized once for every check below.
        let normalized = text::Normalized::new(text);
        let norm = normalized.cut();
        if norm.is_empty() && hit(d, Reason::Empty, 0) {
            return true;
        }
        if slow > 0 && v.last_chat_ms > 0 {
            let next = v.last_chat_ms + i64::from(slow) * 1000;
            if now < next && hit(d, Reason::SlowMode, (next - now) as u32) {
                return true;
            }
        }
        if let Err(wait) = viewer_gcra.check(&mut v.chat_tat, now) {
            if hit(d, Reason::RateLimited, wait) {
                return true;
            }
        }
        let h = text_hash(norm);
        while v.recent.front().is_some_and(|(_, t)| now - t >= dup_ms) {
            v.recent.pop_front();
        }
        let duplicate = v.recent.iter().any(|(x, _)| *x == h);
        if duplicate && hit(d, Reason::Duplicate, 0) {
            return true;
        }
        *h_out = h;
        if text::is_flood_normalized(norm) && hit(d, Reason::Flood, 0) {
            return true;
        }
        let skel = text::skeleton_of_normalized(norm);
        let blocked = room.terms.as_ref().and_then(|t| t.matches(&skel)).is_some()
            || self
                .global
                .as_ref()
                .and_then(|t| t.matches(&skel))
                .is_some();
        if blocked && hit(d, Reason::BlockedTerm, 0) {
            return true;
        }
        if text::has_link_normalized(norm) && hit(d, Reason::Link, 0) {
            return true;
        }
        // The whole message, not the cut normalized form: padding must not
        // push a phone number out of sight.
        if text::contact_kind_normalized(normalized.whole()).is_some()
            && hit(d, Reason::ContactInfo, 0)
        {
            return true;
        }
        let raid_min = self.cfg.chat.raid_min_chars;
        if norm.chars().count() >= raid_min
            && self.raid(now, room_id, viewer_id, h)
            && hit(d, Reason::SpamWave, 0)
        {
            return true;
        }
        let room = self.rooms.entry(room_id).or_default();
        let room_gcra = room.room_limiter(room_default);
        if let Err(wait) = room_gcra.check(&mut room.room_tat, now) {
            if hit(d, Reason::Busy, wait) {
                return true;
            }
        }
        false
    }

    /// Record a copy of text `h` by `viewer`; true when a wave is on.
    fn raid(&mut self, now: i64, room_id: u64, viewer: u64, h: u64) -> bool {
        let c = &self.cfg.chat;
        let (k, window, cap) = (
            c.raid_viewers.max(2) as usize,
            (c.raid_window_secs as i64).saturating_mul(1000),
            c.raid_capacity.max(1),
        );
        let room = self.rooms.entry(room_id).or_default();
        if !room.raids.contains_key(&h) {
            while room.raids.len() >= cap {
                match room.raid_order.pop_front() {
                    Some(old) => {
                        room.raids.remove(&old);
                    }
                    None => break,
                }
            }
            room.raid_order.push_back(h);
        }
        let e: &mut RaidEntry = room.raids.entry(h).or_default();
        if now - e.last_ms >= window {
            // Quiet for a whole window: any wave is over.
            e.wave = false;
        }
        e.last_ms = now;
        e.viewers.retain(|(_, t)| now - t < window);
        let len = e.viewers.len();
        match e.viewers.iter_mut().find(|(v, _)| *v == viewer) {
            Some(slot) => slot.1 = now,
            None if len < k => e.viewers.push((viewer, now)),
            None => {}
        }
        if e.viewers.len() >= k {
            e.wave = true;
        }
        e.wave
    }

    /// Room-stage checks of a lead (form, phone format). `phone_key` maps
    /// the E.164 phone to its keyed HMAC (the I/O layer holds the key).
    /// Returns `Err(decision)` for a replay.
    pub fn lead_start(
        &mut self,
        now_ms: i64,
        ev: &Event,
        lead: &Lead,
        ip: &str,
        phone_key: impl Fn(&str) -> String,
    ) -> Result<LeadCheck, Decision> {
        let key = ClientKey {
            room: ev.room_id,
            viewer: ev.viewer_id,
            lead: true,
            id: lead.client_lead_id,
        };
        if let Some(&(verdict, reason)) = self.seen.get(&key, now_ms) {
            return Err(Decision {
                verdict,
                reason,
                replay: true,
                ..Decision::ACCEPT
            });
        }
        let l = &self.cfg.leads;
        let mut c = LeadCheck {
            room_id: ev.room_id,
            viewer_id: ev.viewer_id,
            phone_e164: String::new(),
            phone_key: String::new(),
            ip: ip.to_owned(),
            reasons: ReasonSet::EMPTY,
            dry_run: ReasonSet::EMPTY,
            remote: ReasonSet::EMPTY,
            penalty: 0,
        };
        let mut flags = Vec::new();
        match phone::to_e164(&lead.phone, &l.default_country) {
            Ok(e164) => {
                match phone::classify(&e164) {
                    phone::PhoneClass::Mobile => {}
                    phone::PhoneClass::VirtualOperator => flags.push(Reason::VirtualOperator),
                    phone::PhoneClass::Unreachable => flags.push(Reason::PhoneUnreachable),
                    phone::PhoneClass::Invalid => flags.push(Reason::PhoneInvalid),
                }
                if phone::looks_fake(&e164) {
                    flags.push(Reason::FakePattern);
                }
                c.phone_key = phone_key(&e164);
                c.phone_e164 = e164;
            }
            Err(_) => {
                flags.push(Reason::PhoneInvalid);
                c.phone_key = phone_key(lead.phone.trim());
            }
        }
        if !lead.consent {
            flags.push(Reason::NoConsent);
        }
        if !lead.honeypot.is_empty() {
            flags.push(Reason::BotHoneypot);
        }
        if lead.fill_ms < l.min_fill_ms {
            flags.push(Reason::TooFast);
        }
        for r in flags {
            self.flag(&mut c, r);
        }
        Ok(c)
    }

    fn flag(&self, c: &mut LeadCheck, r: Reason) {
        if self.dry_run.contains(r) {
            c.dry_run.insert(r);
            return;
        }
        c.reasons.insert(r);
        let l = &self.cfg.leads;
        c.penalty += match r {
            Reason::VirtualOperator => u32::from(l.virtual_operator_penalty),
            Reason::FakePattern => u32::from(l.fake_pattern_penalty),
            _ => 0,
        };
    }

    /// Run one stage's checks (on the shard owning `stage.key(check)`).
    pub fn lead_stage(&mut self, now_ms: i64, stage: LeadStage, c: &mut LeadCheck) {
        let l = &self.cfg.leads;
        let window = (l.velocity_window_secs as i64).saturating_mul(1000);
        match stage {
            LeadStage::Phone => {
                let max_rooms = l.max_rooms_per_phone as usize;
                if c.phone_e164.is_empty() {
                    return;
                }
                // What ClickHouse says of this phone (other nodes' leads).
                let dup_window = (l.duplicate_window_secs as i64).saturating_mul(1000);
                let (remote_dup, remote_rooms) = match self.remote_phones.get(&c.phone_key, now_ms)
                {
                    Some(rs) => (
                        facts::registered_in(rs, c.room_id, now_ms, dup_window),
                        facts::rooms_in(rs, now_ms, window),
                    ),
                    None => (false, Vec::new()),
                };
                let dup_key = (c.phone_key.clone(), c.room_id);
                let rejected = HARD_LEAD_REJECTS.iter().any(|r| c.reasons.contains(*r));
                if self.phone_rooms.get(&dup_key, now_ms).is_some() {
                    self.flag(c, Reason::DuplicateLead);
                } else if remote_dup {
                    self.flag(c, Reason::DuplicateLead);
                    c.remote.insert(Reason::DuplicateLead);
                } else if !rejected {
                    self.phone_rooms.insert(dup_key, (), now_ms);
                }
                let mut rooms = self
                    .phone_velocity
                    .get(&c.phone_key, now_ms)
                    .cloned()
                    .unwrap_or_default();
                rooms.retain(|(_, t)| now_ms - t < window);
                if !rooms.iter().any(|(r, _)| *r == c.room_id) {
                    rooms.push((c.room_id, now_ms));
                }
                let too_many = rooms.len() > max_rooms;
                let with_remote = rooms.len()
                    + remote_rooms
                        .iter()
                        .filter(|r| !rooms.iter().any(|(x, _)| x == *r))
                        .count();
                rooms.truncate(max_rooms + 1);
                self.phone_velocity
                    .insert(c.phone_key.clone(), rooms, now_ms);
                if too_many {
                    self.flag(c, Reason::VelocityPhone);
                } else if with_remote > max_rooms {
                    self.flag(c, Reason::VelocityPhone);
                    c.remote.insert(Reason::VelocityPhone);
                }
            }
            LeadStage::Ip => {
                let max = l.max_per_ip as usize;
                let mut count = self
                    .ip_velocity
                    .get(&c.ip, now_ms)
                    .cloned()
                    .unwrap_or_default();
                let with_remote = self.remote_ips.get(&c.ip, now_ms).map(|r| {
                    let (before, after) = count.split_at(r.read_at_ms, now_ms, window);
                    facts::merged_count(r.in_window(now_ms, window), before, after)
                });
                let before = count.hit(now_ms, window, max + 1);
                self.ip_velocity.insert(c.ip.clone(), count, now_ms);
                if before >= max {
                    self.flag(c, Reason::VelocityIp);
                } else if with_remote.is_some_and(|n| n >= max) {
                    self.flag(c, Reason::VelocityIp);
                    c.remote.insert(Reason::VelocityIp);
                }
            }
            LeadStage::Viewer => {
                let max = l.max_per_viewer as usize;
                let mut count = self
                    .viewer_velocity
                    .get(&c.viewer_id, now_ms)
                    .cloned()
                    .unwrap_or_default();
                let before = count.hit(now_ms, window, max + 1);
                self.viewer_velocity.insert(c.viewer_id, count, now_ms);
                if before >= max {
                    self.flag(c, Reason::VelocityViewer);
                }
            }
        }
    }

    /// The final verdict of a lead whose stages all ran. Called on the
    /// lead's room shard? No: on the last stage's shard; it only reads the
    /// check and the config. Records the client id for replays on the room
    /// shard via [`Guard::lead_seen`].
    pub fn lead_finish(&self, c: &LeadCheck) -> LeadVerdict {
        let l = &self.cfg.leads;
        let mut reasons = c.reasons;
        if let Some(r) = HARD_LEAD_REJECTS
            .iter()
            .copied()
            .find(|r| reasons.contains(*r))
        {
            return LeadVerdict {
                decision: Decision {
                    dry_run: c.dry_run,
                    ..Decision::reject(r, 0)
                },
                score: 0,
                reasons,
            };
        }
        let score = 100u32.saturating_sub(c.penalty).min(100) as u8;
        let (verdict, reason) = if reasons.contains(Reason::DuplicateLead) {
            (Verdict::Duplicate, Reason::DuplicateLead)
        } else if score < l.suspect_below && self.dry_run.contains(Reason::LowScore) {
            let mut dry = c.dry_run;
            dry.insert(Reason::LowScore);
            return LeadVerdict {
                decision: Decision {
                    verdict: Verdict::Accepted,
                    reason: reasons.iter().next().unwrap_or(Reason::None),
                    dry_run: dry,
                    ..Decision::ACCEPT
                },
                score,
                reasons,
            };
        } else if score < l.suspect_below {
            reasons.insert(Reason::LowScore);
            let first_flag = reasons
                .iter()
                .find(|r| *r != Reason::LowScore)
                .unwrap_or(Reason::LowScore);
            (Verdict::Suspect, first_flag)
        } else {
            (
                Verdict::Accepted,
                reasons.iter().next().unwrap_or(Reason::None),
            )
        };
        LeadVerdict {
            decision: Decision {
                verdict,
                reason,
                dry_run: c.dry_run,
                ..Decision::ACCEPT
            },
            score,
            reasons,
        }
    }

    /// Remember a lead's client id and verdict for replays (room shard).
    pub fn lead_seen(
        &mut self,
        now_ms: i64,
        room: u64,
        viewer: u64,
        client_lead_id: u64,
        d: &Decision,
    ) {
        let key = ClientKey {
            room,
            viewer,
            lead: true,
            id: client_lead_id,
        };
        self.seen.insert(key, (d.verdict, d.reason), now_ms);
    }

    /// Restore a lead or chat message decided before a restart (found in
    /// the log or in ClickHouse) into the idempotency window, at its
    /// original time, so a resend is answered as a replay. Unknown names
    /// restore as accepted.
    pub fn restore(&mut self, l: &crate::wal::SeenId) {
        let verdict = [
            Verdict::Accepted,
            Verdict::Suspect,
            Verdict::Rejected,
            Verdict::Duplicate,
        ]
        .into_iter()
        .find(|v| v.as_str() == l.verdict)
        .unwrap_or(Verdict::Accepted);
        let reason = Reason::from_name(l.reason).unwrap_or(Reason::None);
        let key = ClientKey {
            room: l.room_id,
            viewer: l.viewer_id,
            lead: l.lead,
            id: l.client_id,
        };
        self.seen.insert(key, (verdict, reason), l.ts);
    }

    /// Apply a live control; returns what to announce.
    pub fn control(&mut self, now_ms: i64, ctl: &Control) -> Result<Effect, ControlError> {
        self.last_now_ms = self.last_now_ms.max(now_ms);
        Ok(match ctl {
            Control::SlowMode { room, secs } => {
                let r = self.room(*room);
                r.slow_mode_secs = Some(*secs);
                r.pinned = true;
                Effect::Broadcast {
                    room: *room,
                    kind: NoticeKind::SlowMode,
                    value: *secs,
                }
            }
            Control::RoomLimits {
                room,
                chat_per_sec,
                viewer_messages,
            } => {
                let r = self.room(*room);
                if chat_per_sec.is_some() {
                    r.chat_per_sec = *chat_per_sec;
                }
                if viewer_messages.is_some() {
                    r.viewer_messages = *viewer_messages;
                }
                r.pinned = true;
                Effect::None
            }
            Control::AddTerms { room, terms } | Control::RemoveTerms { room, terms } => {
                let add = matches!(ctl, Control::AddTerms { .. });
                let edit = |list: &mut Vec<String>| {
                    for t in terms {
                        if add {
                            if !list.contains(t) {
                                list.push(t.clone());
                            }
                        } else {
                            list.retain(|x| x != t);
                        }
                    }
                };
                match room {
                    Some(id) => {
                        let r = self.room(*id);
                        let before = r.term_list.clone();
                        edit(&mut r.term_list);
                        r.pinned = true;
                        if let Err(e) = r.rebuild_terms() {
                            r.term_list = before;
                            return Err(e.into());
                        }
                    }
                    None => {
                        let mut list = self.global_terms.clone();
                        edit(&mut list);
                        self.global = if list.is_empty() {
                            None
                        } else {
                            Some(BlockedTerms::new(&list)?)
                        };
                        self.global_terms = list;
                    }
                }
                Effect::None
            }
            Control::Mute { room, viewer, secs } => {
                let until = if *secs == 0 {
                    i64::MAX
                } else {
                    now_ms.saturating_add((*secs as i64).saturating_mul(1000))
                };
                let r = self.room(*room);
                r.pinned = true;
                r.viewers.entry(*viewer).or_default().muted_until = until;
                Effect::Viewer {
                    room: *room,
                    viewer: *viewer,
                    kind: NoticeKind::Muted,
                    value: (*secs).min(u64::from(u32::MAX)) as u32,
                }
            }
            Control::Unmute { room, viewer } => {
                if let Some(v) = self.room(*room).viewers.get_mut(viewer) {
                    v.muted_until = 0;
                }
                Effect::Viewer {
                    room: *room,
                    viewer: *viewer,
                    kind: NoticeKind::Unmuted,
                    value: 0,
                }
            }
            Control::Ban { room, viewer } => {
                let r = self.room(*room);
                r.pinned = true;
                r.viewers.entry(*viewer).or_default().banned = true;
                Effect::Kick {
                    room: *room,
                    viewer: *viewer,
                }
            }
            Control::Unban { room, viewer } => {
                if let Some(v) = self.room(*room).viewers.get_mut(viewer) {
                    v.banned = false;
                }
                Effect::None
            }
            Control::DryRun { rule, on } => {
                if *on {
                    self.dry_run.insert(*rule);
                } else {
                    self.dry_run.remove(*rule);
                }
                Effect::None
            }
        })
    }

    /// The room's slow mode, seconds (cheap: for every join).
    pub fn slow_mode_secs(&self, room: u64) -> u32 {
        self.rooms
            .get(&room)
            .and_then(|r| r.slow_mode_secs)
            .unwrap_or(self.cfg.chat.slow_mode_secs)
    }

    /// Current settings of a room (admin API).
    pub fn room_settings(&self, room: u64) -> RoomSettingsView {
        let c = &self.cfg.chat;
        let r = self.rooms.get(&room);
        RoomSettingsView {
            room,
            slow_mode_secs: r.and_then(|r| r.slow_mode_secs).unwrap_or(c.slow_mode_secs),
            chat_per_sec: r.and_then(|r| r.chat_per_sec).unwrap_or(c.room_per_sec),
            viewer_messages: r
                .and_then(|r| r.viewer_messages)
                .unwrap_or(c.viewer_messages),
            blocked_terms: r.map(|r| r.term_list.clone()).unwrap_or_default(),
            global_terms: self.global_terms.clone(),
            muted: r
                .map(|r| {
                    r.viewers
                        .iter()
                        .filter(|(_, v)| v.muted_until > self.last_now_ms)
                        .map(|(id, _)| *id)
                        .collect()
                })
                .unwrap_or_default(),
            banned: r
                .map(|r| {
                    r.viewers
                        .iter()
                        .filter(|(_, v)| v.banned)
                        .map(|(id, _)| *id)
                        .collect()
                })
                .unwrap_or_default(),
            dry_run: self.dry_run.names(),
            viewers_tracked: r.map_or(0, |r| r.viewers.len()),
        }
    }

    /// Expire state; cheap to call often (sweeps at most once a second).
    pub fn tick(&mut self, now_ms: i64) {
        self.last_now_ms = self.last_now_ms.max(now_ms);
        if now_ms - self.last_sweep_ms < 1_000 {
            return;
        }
        self.last_sweep_ms = now_ms;
        self.seen.expire(now_ms);
        self.phone_rooms.expire(now_ms);
        self.phone_velocity.expire(now_ms);
        self.ip_velocity.expire(now_ms);
        self.viewer_velocity.expire(now_ms);
        self.remote_phones.expire(now_ms);
        self.remote_ips.expire(now_ms);
        let c = &self.cfg.chat;
        let dup_ms = (c.duplicate_window_secs as i64).saturating_mul(1000);
        let raid_ms = (c.raid_window_secs as i64).saturating_mul(1000);
        let mute_window = (c.automute_window_secs as i64).saturating_mul(1000);
        let (chat, likes) = (self.chat_viewer, self.likes);
        let default_slow = c.slow_mode_secs;
        self.rooms.retain(|_, room| {
            let slow_ms = i64::from(room.slow_mode_secs.unwrap_or(default_slow)) * 1000;
            room.viewers.retain(|_, v| {
                v.recent.retain(|(_, t)| now_ms - t < dup_ms);
                v.rejects.expire(now_ms, mute_window);
                v.sessions > 0
                    || v.banned
                    || v.muted_until > now_ms
                    || !v.recent.is_empty()
                    || !v.rejects.is_empty()
                    || now_ms - v.last_chat_ms < slow_ms
                    || !chat.idle(v.chat_tat, now_ms)
                    || !likes.idle(v.like_tat, now_ms)
            });
            room.raids.retain(|_, e| now_ms - e.last_ms < raid_ms);
            let raids = &room.raids;
            room.raid_order.retain(|h| raids.contains_key(h));
            room.pinned || !room.viewers.is_empty() || !room.raids.is_empty()
        });
    }

    /// Rooms with state on this shard.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Client ids currently remembered.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    /// Client ids forgotten before their window ended (capacity pressure).
    pub fn evicted_early(&self) -> u64 {
        self.seen.evicted_early()
    }
}

/// A room's effective settings (admin API `GET`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomSettingsView {
    /// Room.
    pub room: u64,
    /// Slow mode seconds.
    pub slow_mode_secs: u32,
    /// Room-wide chat cap.
    pub chat_per_sec: u32,
    /// Per-viewer messages per period.
    pub viewer_messages: u32,
    /// The room's blocked terms.
    pub blocked_terms: Vec<String>,
    /// Global blocked terms.
    pub global_terms: Vec<String>,
    /// Muted viewers.
    pub muted: Vec<u64>,
    /// Banned viewers.
    pub banned: Vec<u64>,
    /// Rules in dry-run.
    pub dry_run: Vec<&'static str>,
    /// Viewers with guard state in the room.
    pub viewers_tracked: usize,
}

#[cfg(test)]
mod tests;

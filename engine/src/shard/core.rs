//! The shard's decisions, sans-IO (quinn-proto style): no threads, queues,
//! clocks or channels. The worker loop ([`super`]) feeds it with
//! [`ShardCore::handle`], [`ShardCore::handle_hop`], [`ShardCore::control`]
//! and [`ShardCore::tick`], then takes what it decided with
//! [`ShardCore::poll_output`]: the round's rows and the acks that wait for
//! them (for the log), frames and closes to send now, lead hops to other
//! shards, and the round's counters.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{ack_frame, shard_of, Envelope, LeadHop};
use crate::event::{EventKind, Kind, Replier};
use crate::guard::config::AbuseConfig;
use crate::guard::{Control, Decision, Effect, Guard, LeadStage, RoomSettingsView};
use crate::metrics::RoundStats;
use crate::pii::{mask_phone, PiiKeys};
use crate::sink::{
    ChatRow, LeadRow, LikeRow, LikeViewerRow, ModerationRow, SessionRow, WithdrawalRow,
};
use crate::wal::{Ack, Row, Submit};
use crate::wire::{AckKind, CloseCode, Notice, NoticeKind, Reason, ServerFrame, Verdict};

/// The identifying fields of an event, kept after its payload moved.
#[derive(Debug, Clone, Copy)]
pub(super) struct Head {
    pub(super) room_id: u64,
    pub(super) viewer_id: u64,
    pub(super) session_id: u64,
    pub(super) ts: i64,
}

type InFlightKey = (u64, u64, u64);

/// A room's open sessions: session id → (viewer, connection).
type RoomSessions = FxHashMap<u64, (u64, Arc<dyn Replier>)>;

/// What a round decided.
#[derive(Debug, Default)]
pub struct Output {
    /// Rows for the log and the acks released once they are durable.
    pub round: Submit,
    /// Frames to send now (notices; they promise nothing durable).
    pub frames: Vec<(Arc<dyn Replier>, ServerFrame)>,
    /// Connections to close now.
    pub closes: Vec<(Arc<dyn Replier>, CloseCode)>,
    /// Leads to hand to another shard (index) for their next stage.
    pub hops: Vec<(usize, LeadHop)>,
    /// The round's counters.
    pub stats: RoundStats,
}

/// All state of one shard's rooms and the facts it owns.
pub struct ShardCore {
    index: usize,
    shards: usize,
    guard: Guard,
    /// Like taps per (room, unix second) not yet logged.
    likes: FxHashMap<(u64, u32), u64>,
    /// Like taps per (room, unix minute, viewer) not yet logged.
    likers: FxHashMap<(u64, u32, u64), u64>,
    /// The earliest minute in `likers` (Unix s): the map is only looked
    /// through once that minute is over, not every round.
    likers_from: Option<u32>,
    /// Open sessions per room.
    sessions: FxHashMap<u64, RoomSessions>,
    /// Open sessions per (room, viewer), oldest first, each with whether it
    /// was already closed as replaced (its `Leave` is still to come).
    by_viewer: FxHashMap<(u64, u64), Vec<(u64, bool)>>,
    /// Leads of this shard's rooms still travelling their stages, with every
    /// connection waiting for their ack (first send + in-flight resends).
    in_flight: FxHashMap<InFlightKey, Vec<Arc<dyn Replier>>>,
    pii: Arc<PiiKeys>,
    abuse: AbuseConfig,
    /// Moderation rows being aggregated over their bucket.
    moderation: FxHashMap<ModKey, ModAgg>,
    /// Rejects per (room, viewer) in the current disconnect window:
    /// (window start ms, count).
    strikes: FxHashMap<(u64, u64), (i64, u32)>,
    /// Rejected leads stored per (room, viewer) this hour: (hour start ms,
    /// count).
    lead_rejects: FxHashMap<(u64, u64), (i64, u32)>,
    /// Withdrawals logged per (room, viewer) this hour: (hour start ms,
    /// count).
    withdrawals: FxHashMap<(u64, u64), (i64, u32)>,
    /// When the aggregates and windows are next looked at (ms).
    next_sweep: i64,
    out: Output,
}

/// The moderation row an event is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ModKey {
    room_id: u64,
    viewer_id: u64,
    kind: &'static str,
    reason: Reason,
    dry_run: bool,
}

/// A moderation row being aggregated.
#[derive(Debug)]
struct ModAgg {
    /// Bucket number (`ts / moderation_bucket_ms`).
    bucket: i64,
    row: ModerationRow,
    /// Likes: taps over the cap, and taps in those frames.
    taps_over: u64,
    taps: u64,
    /// Leads over the cap: their acks (and `abusive` closes) are released
    /// with this row, so an ack never precedes its durable record.
    acks: Vec<Ack>,
    closes: Vec<(Arc<dyn Replier>, CloseCode)>,
}

/// What a moderation row keeps of the events it counts.
#[derive(Debug)]
enum Sample {
    /// The first message (already masked of contacts).
    Text(String),
    /// Like taps: over the cap, of the frame's taps.
    Taps { over: u64, of: u64 },
    /// Nothing (a lead: its fields are personal data).
    Nothing,
}

impl std::fmt::Debug for ShardCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardCore")
            .field("index", &self.index)
            .field("shards", &self.shards)
            .finish()
    }
}

impl ShardCore {
    /// Shard `index` of `shards`, deciding with `guard`, bounding what one
    /// viewer's rejects cost by `abuse`.
    pub fn new(
        index: usize,
        shards: usize,
        guard: Guard,
        pii: Arc<PiiKeys>,
        abuse: AbuseConfig,
    ) -> Self {
        ShardCore {
            index,
            shards: shards.max(1),
            guard,
            likes: FxHashMap::default(),
            likers: FxHashMap::default(),
            likers_from: None,
            sessions: FxHashMap::default(),
            by_viewer: FxHashMap::default(),
            in_flight: FxHashMap::default(),
            pii,
            abuse: AbuseConfig {
                moderation_bucket_ms: abuse.moderation_bucket_ms.max(1),
                ..abuse
            },
            moderation: FxHashMap::default(),
            strikes: FxHashMap::default(),
            lead_rejects: FxHashMap::default(),
            withdrawals: FxHashMap::default(),
            next_sweep: 0,
            out: Output::default(),
        }
    }

    /// Take everything decided since the last call.
    pub fn poll_output(&mut self) -> Output {
        std::mem::take(&mut self.out)
    }

    /// True when nothing is waiting to be taken.
    pub fn output_is_empty(&self) -> bool {
        let o = &self.out;
        o.round.is_empty() && o.frames.is_empty() && o.closes.is_empty() && o.hops.is_empty()
    }

    /// Time passed: log the like seconds that are over, let the guard expire
    /// its windows.
    pub fn tick(&mut self, now: i64) {
        self.flush_likes(Some(now));
        self.guard.tick(now);
        if now >= self.next_sweep {
            self.sweep(Some(now));
            self.next_sweep = now + (self.abuse.moderation_bucket_ms as i64).min(100);
        }
    }

    /// Shutdown: log every like second and every moderation aggregate, the
    /// current ones included.
    pub fn finish(&mut self) {
        self.flush_likes(None);
        self.sweep(None);
    }

    /// Emit the moderation rows whose bucket is over (all of them at
    /// `None`), forget expired strike and lead-cap windows.
    fn sweep(&mut self, now: Option<i64>) {
        let ms = self.abuse.moderation_bucket_ms as i64;
        let due: Vec<ModKey> = self
            .moderation
            .iter()
            .filter(|(_, a)| now.is_none_or(|now| (a.bucket + 1) * ms <= now))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            if let Some(a) = self.moderation.remove(&k) {
                self.emit_moderation(a);
            }
        }
        if let Some(now) = now {
            let window = (self.abuse.disconnect_window_secs as i64).saturating_mul(1000);
            self.strikes.retain(|_, (start, _)| now - *start < window);
            self.lead_rejects
                .retain(|_, (start, _)| now - *start < HOUR_MS);
            self.withdrawals
                .retain(|_, (start, _)| now - *start < HOUR_MS);
        }
    }

    /// Client ids forgotten early by the idempotency window.
    pub fn evicted_early(&self) -> u64 {
        self.guard.evicted_early()
    }

    /// The open sessions of every room for which `keep` is false (rooms
    /// that moved to another engine node), to be closed with `wrong_node`.
    pub fn sessions_leaving(&self, keep: &dyn Fn(u64) -> bool) -> Vec<Arc<dyn Replier>> {
        self.sessions
            .iter()
            .filter(|(room, _)| !keep(**room))
            .flat_map(|(_, m)| m.values().map(|(_, r)| r.clone()))
            .collect()
    }

    /// Merge lead facts read from ClickHouse (other nodes' leads) for the
    /// phone and IP keys this shard owns; returns how many were taken.
    pub fn merge_facts(&mut self, now: i64, batch: &crate::guard::FactBatch) -> usize {
        self.guard.merge_facts(now, batch)
    }

    /// Remember decisions made elsewhere (the rooms of this shard only);
    /// returns how many were this shard's.
    pub fn restore(&mut self, ids: &[crate::wal::SeenId]) -> usize {
        let mut n = 0;
        for l in ids
            .iter()
            .filter(|l| shard_of(l.room_id, self.shards) == self.index)
        {
            self.guard.restore(l);
            n += 1;
        }
        n
    }

    /// A room's current settings.
    pub fn room_settings(&self, room: u64) -> RoomSettingsView {
        self.guard.room_settings(room)
    }

    /// Apply a live control (slow mode, mute, ban, terms…) and announce it.
    pub fn control(&mut self, now: i64, ctl: &Control) -> Result<(), String> {
        let effect = self.guard.control(now, ctl).map_err(|e| e.to_string())?;
        self.effect(&effect);
        Ok(())
    }

    fn flush_likes(&mut self, now: Option<i64>) {
        let minute = now.map(|n| (n / 60_000 * 60) as u32);
        let due = match (self.likers_from, minute) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(from), Some(current)) => from < current,
        };
        if due {
            let out = &mut self.out.round.rows;
            let mut left: Option<u32> = None;
            self.likers.retain(|&(room_id, m, viewer_id), taps| {
                if minute.is_some_and(|c| m >= c) {
                    left = Some(left.map_or(m, |l| l.min(m)));
                    return true;
                }
                out.push(Row::LikeViewer(LikeViewerRow {
                    room_id,
                    minute: m,
                    viewer_id,
                    taps: *taps,
                }));
                false
            });
            self.likers_from = left;
        }
        if self.likes.is_empty() {
            return;
        }
        let current = now.map(|n| (n / 1000) as u32);
        let out = &mut self.out.round.rows;
        self.likes.retain(|&(room_id, ts), taps| {
            if current.is_some_and(|c| ts >= c) {
                return true;
            }
            out.push(Row::Like(LikeRow {
                room_id,
                ts,
                taps: *taps,
            }));
            false
        });
    }

    fn effect(&mut self, effect: &Effect) {
        let notice = |kind: NoticeKind, value: u32| {
            let text = match kind {
                NoticeKind::SlowMode if value == 0 => "slow mode off".to_owned(),
                NoticeKind::SlowMode => format!("slow mode: one message every {value} s"),
                NoticeKind::Muted if value == 0 => "you are muted in this room".to_owned(),
                NoticeKind::Muted => format!("you are muted for {value} s"),
                NoticeKind::Unmuted => "you may chat again".to_owned(),
                NoticeKind::ShuttingDown => "server shutting down".to_owned(),
                NoticeKind::TicketExpiring | NoticeKind::TicketRefreshed | NoticeKind::LikePace => {
                    String::new()
                }
            };
            ServerFrame::Notice(Notice {
                kind: kind as u8,
                value,
                text,
            })
        };
        match *effect {
            Effect::None => {}
            Effect::Broadcast { room, kind, value } => {
                let frame = notice(kind, value);
                for (_, r) in self
                    .sessions
                    .get(&room)
                    .into_iter()
                    .flat_map(|m| m.values())
                {
                    self.out.frames.push((r.clone(), frame.clone()));
                }
            }
            Effect::Viewer {
                room,
                viewer,
                kind,
                value,
            } => {
                let frame = notice(kind, value);
                let to: Vec<_> = self.viewer_sessions(room, viewer).cloned().collect();
                for r in to {
                    self.out.frames.push((r, frame.clone()));
                }
            }
            Effect::Kick { room, viewer } => {
                let to: Vec<_> = self.viewer_sessions(room, viewer).cloned().collect();
                for r in to {
                    self.out.closes.push((r, CloseCode::Banned));
                }
            }
        }
    }

    /// The open sessions of `viewer` in `room`.
    fn viewer_sessions(&self, room: u64, viewer: u64) -> impl Iterator<Item = &Arc<dyn Replier>> {
        let room_sessions = self.sessions.get(&room);
        self.by_viewer
            .get(&(room, viewer))
            .into_iter()
            .flatten()
            .filter_map(move |(id, _)| room_sessions?.get(id).map(|(_, r)| r))
    }

    /// A session of `viewer` in `room` opened: past
    /// `guard.abuse.max_sessions_per_viewer`, the oldest ones are closed
    /// with `session_replaced` (the newest wins).
    fn session_opened(&mut self, room: u64, viewer: u64, session: u64) {
        let list = self.by_viewer.entry((room, viewer)).or_default();
        list.push((session, false));
        let max = self.abuse.max_sessions_per_viewer;
        if max == 0 {
            return;
        }
        let mut live = list.iter().filter(|(_, replaced)| !replaced).count();
        let mut replace = Vec::new();
        for (id, replaced) in list.iter_mut() {
            if live <= max {
                break;
            }
            if !*replaced {
                *replaced = true;
                live -= 1;
                replace.push(*id);
            }
        }
        for id in replace {
            if let Some((_, r)) = self.sessions.get(&room).and_then(|m| m.get(&id)) {
                // After the acks decided for that session so far, and those
                // of this round (the log releases a round's acks before its
                // closes). Its chat still waiting behind a backlog in the
                // events lane is stored, but its ack goes to a closed
                // connection: the app's resend is answered as a replay.
                self.out
                    .round
                    .closes
                    .push((r.clone(), CloseCode::SessionReplaced));
            }
        }
    }

    fn session_closed(&mut self, room: u64, viewer: u64, session: u64) {
        if let Some(list) = self.by_viewer.get_mut(&(room, viewer)) {
            list.retain(|(id, _)| *id != session);
            if list.is_empty() {
                self.by_viewer.remove(&(room, viewer));
            }
        }
    }

    /// A lead arriving from another shard: run its stage here, then move it
    /// on.
    pub fn handle_hop(&mut self, now: i64, mut hop: LeadHop) {
        if hop.stage < LeadStage::ORDER.len() {
            self.guard
                .lead_stage(now, LeadStage::ORDER[hop.stage], &mut hop.check);
            hop.stage += 1;
        }
        self.advance(now, hop);
    }

    /// Run the lead's stages that this shard owns; hand it to the next
    /// owner, or finish it when it is back on its room shard.
    fn advance(&mut self, now: i64, mut hop: LeadHop) {
        loop {
            let target = match LeadStage::ORDER.get(hop.stage) {
                Some(stage) => shard_of(stage.key(&hop.check), self.shards),
                None => shard_of(hop.head.room_id, self.shards),
            };
            if target != self.index {
                self.out.hops.push((target, hop));
                return;
            }
            match LeadStage::ORDER.get(hop.stage) {
                Some(stage) => {
                    self.guard.lead_stage(now, *stage, &mut hop.check);
                    hop.stage += 1;
                }
                None => return self.finish_lead(now, hop),
            }
        }
    }

    fn finish_lead(&mut self, now: i64, hop: LeadHop) {
        let LeadHop {
            check, head, lead, ..
        } = hop;
        let v = self.guard.lead_finish(&check);
        let d = v.decision;
        self.guard
            .lead_seen(now, head.room_id, head.viewer_id, lead.client_lead_id, &d);
        self.out.stats.decision(Kind::Lead, d.verdict, d.reason);
        for r in d.dry_run.iter() {
            self.out.stats.dry_run(Kind::Lead, r);
        }
        for r in check.remote.iter() {
            self.out.stats.cross_node(r);
        }
        let key = (head.room_id, head.viewer_id, lead.client_lead_id);
        let to = self.in_flight.remove(&key).unwrap_or_default();
        let frame = ack_frame(AckKind::Lead, lead.client_lead_id, &d);
        let replay = ack_frame(
            AckKind::Lead,
            lead.client_lead_id,
            &Decision { replay: true, ..d },
        );
        let fields = serde_json::to_string(&lead.fields).unwrap_or_default();
        let phone_clear = if check.phone_e164.is_empty() {
            lead.phone.trim().to_owned()
        } else {
            check.phone_e164.clone()
        };
        let at = |column| crate::pii::Aad {
            table: "leads",
            column,
            room_id: head.room_id,
            viewer_id: head.viewer_id,
            client_id: lead.client_lead_id,
        };
        let row = LeadRow {
            room_id: head.room_id,
            ts: head.ts,
            viewer_id: head.viewer_id,
            session_id: head.session_id,
            client_lead_id: lead.client_lead_id,
            verdict: d.verdict.as_str(),
            reason: d.reason.as_str(),
            score: v.score,
            reasons: v.reasons.names(),
            dry_run_reasons: d.dry_run.names(),
            phone_hmac: check.phone_key.clone(),
            phone_masked: mask_phone(&phone_clear),
            phone_enc: self.pii.encrypt_hex(&phone_clear, at("phone_enc")),
            wechat_enc: self.pii.encrypt_hex(&lead.wechat, at("wechat_enc")),
            name_enc: self.pii.encrypt_hex(&lead.name, at("name_enc")),
            fields_enc: if lead.fields.is_empty() {
                String::new()
            } else {
                self.pii.encrypt_hex(&fields, at("fields_enc"))
            },
            pii_key_id: self.pii.key_id().to_owned(),
            ip_hmac: check.ip.clone(),
            consent: lead.consent,
            consent_version: lead.consent_version.clone(),
            fill_ms: lead.fill_ms,
        };
        // The first sender gets the ack, resends made while it was in
        // flight get it as a replay; every ack waits until the lead's record
        // is durable.
        let mut acks: Vec<Ack> = Vec::with_capacity(to.len());
        let mut closes = Vec::new();
        let abusive =
            d.verdict == Verdict::Rejected && self.strike(now, head.room_id, head.viewer_id);
        for (i, r) in to.into_iter().enumerate() {
            if abusive {
                closes.push((r.clone(), CloseCode::Abusive));
            }
            let frame = if i == 0 {
                frame.clone()
            } else {
                replay.clone()
            };
            acks.push(Ack { to: r, frame });
        }
        // Every lead is stored with its verdict, up to a cap of rejected
        // ones per viewer and hour; beyond it a rejected lead is counted in
        // a moderation row (no fields) and its ack rides with that row.
        if d.verdict != Verdict::Rejected
            || self.store_rejected_lead(now, head.room_id, head.viewer_id)
        {
            self.out.round.rows.push(Row::Lead(Box::new(row)));
            self.out.round.acks.extend(acks);
            self.out.round.closes.extend(closes);
        } else {
            self.out.stats.leads_unstored += 1;
            self.moderation(
                &head,
                "lead",
                lead.client_lead_id,
                d.reason,
                false,
                Sample::Nothing,
            );
            let key = ModKey {
                room_id: head.room_id,
                viewer_id: head.viewer_id,
                kind: "lead",
                reason: d.reason,
                dry_run: false,
            };
            if let Some(a) = self.moderation.get_mut(&key) {
                a.acks.extend(acks);
                a.closes.extend(closes);
            }
        }
        self.out.stats.leads_done += 1;
    }

    /// One event from the gate.
    pub fn handle(&mut self, now: i64, env: Envelope) {
        let Envelope { event: ev, reply } = env;
        let kind = ev.kind.kind();
        let head = Head {
            room_id: ev.room_id,
            viewer_id: ev.viewer_id,
            session_id: ev.session_id,
            ts: ev.received_at_ms,
        };
        if let EventKind::Lead { lead, ip } = &ev.kind {
            let key = (ev.room_id, ev.viewer_id, lead.client_lead_id);
            if let Some(waiting) = self.in_flight.get_mut(&key) {
                // A resend while the first is still being checked: it gets
                // the same verdict, as a replay, when the first finishes.
                waiting.extend(reply);
                self.out
                    .stats
                    .decision(Kind::Lead, Verdict::Accepted, Reason::Replay);
                self.out.stats.leads_done += 1;
                return;
            }
            let pii = self.pii.clone();
            // The IP stage is keyed by the IP's HMAC, as `leads.ip_hmac`
            // stores it: facts read back from ClickHouse match it.
            match self
                .guard
                .lead_start(now, &ev, lead, &pii.ip_hmac(ip), |p| pii.phone_hmac(p))
            {
                Err(replay) => {
                    self.out.stats.leads_done += 1;
                    self.out
                        .stats
                        .decision(Kind::Lead, replay.verdict, Reason::Replay);
                    // The original's record may not be durable yet: this ack
                    // queues behind it, so a replay never overtakes it.
                    let frame = ack_frame(AckKind::Lead, lead.client_lead_id, &replay);
                    if let Some(to) = reply {
                        self.out.round.acks.push(Ack { to, frame });
                    }
                }
                Ok(check) => {
                    self.in_flight.insert(key, reply.into_iter().collect());
                    let EventKind::Lead { lead, .. } = ev.kind else {
                        return;
                    };
                    self.advance(
                        now,
                        LeadHop {
                            check,
                            stage: 0,
                            head,
                            lead,
                        },
                    );
                }
            }
            return;
        }
        if let EventKind::Withdraw { client_lead_id } = ev.kind {
            return self.withdraw(now, &head, client_lead_id, reply);
        }
        let d = self.guard.decide(now, &ev);
        self.out.stats.decision(
            kind,
            d.verdict,
            if d.replay { Reason::Replay } else { d.reason },
        );
        for r in d.dry_run.iter() {
            self.out.stats.dry_run(kind, r);
        }
        match ev.kind {
            EventKind::Join { client, .. } => {
                if d.verdict == Verdict::Rejected {
                    if let Some(r) = &reply {
                        self.out.closes.push((r.clone(), CloseCode::Banned));
                    }
                }
                if let Some(r) = reply {
                    self.sessions
                        .entry(ev.room_id)
                        .or_default()
                        .insert(ev.session_id, (ev.viewer_id, r.clone()));
                    self.session_opened(ev.room_id, ev.viewer_id, ev.session_id);
                    let slow = self.guard.slow_mode_secs(ev.room_id);
                    if slow > 0 {
                        self.effect(&Effect::Viewer {
                            room: ev.room_id,
                            viewer: ev.viewer_id,
                            kind: NoticeKind::SlowMode,
                            value: slow,
                        });
                    }
                }
                self.out.round.rows.push(Row::Session(SessionRow {
                    room_id: ev.room_id,
                    ts: ev.received_at_ms,
                    viewer_id: ev.viewer_id,
                    session_id: ev.session_id,
                    event: "join",
                    watch_ms: 0,
                    client,
                    close: "",
                }));
            }
            EventKind::Leave {
                joined_at_ms,
                close,
            } => {
                if let Some(m) = self.sessions.get_mut(&ev.room_id) {
                    m.remove(&ev.session_id);
                    if m.is_empty() {
                        self.sessions.remove(&ev.room_id);
                    }
                }
                self.session_closed(ev.room_id, ev.viewer_id, ev.session_id);
                self.out.round.rows.push(Row::Session(SessionRow {
                    room_id: ev.room_id,
                    ts: ev.received_at_ms,
                    viewer_id: ev.viewer_id,
                    session_id: ev.session_id,
                    event: "leave",
                    watch_ms: (ev.received_at_ms - joined_at_ms).max(0) as u64,
                    client: String::new(),
                    close,
                }));
            }
            EventKind::Like { count, .. } => {
                if d.admitted > 0 {
                    let sec = (ev.received_at_ms / 1000) as u32;
                    *self.likes.entry((ev.room_id, sec)).or_default() += u64::from(d.admitted);
                    let minute = sec / 60 * 60;
                    *self
                        .likers
                        .entry((ev.room_id, minute, ev.viewer_id))
                        .or_default() += u64::from(d.admitted);
                    self.likers_from = Some(self.likers_from.map_or(minute, |f| f.min(minute)));
                }
                let over = count - d.admitted.min(count);
                self.out.stats.likes(u64::from(d.admitted), u64::from(over));
                if over > 0 {
                    self.moderation(
                        &head,
                        "like",
                        0,
                        d.reason,
                        false,
                        Sample::Taps {
                            over: u64::from(over),
                            of: u64::from(count),
                        },
                    );
                }
                if d.dry_run.contains(Reason::RateLimited) {
                    self.moderation(
                        &head,
                        "like",
                        0,
                        Reason::RateLimited,
                        true,
                        Sample::Taps {
                            over: 0,
                            of: u64::from(count),
                        },
                    );
                }
            }
            EventKind::Chat {
                client_msg_id,
                text,
            } => {
                if let Some(r) = &reply {
                    // Sent once this round is durable (the stored row, or
                    // the moderation row of a reject).
                    self.out.round.acks.push(Ack {
                        to: r.clone(),
                        frame: ack_frame(AckKind::Chat, client_msg_id, &d),
                    });
                    if d.muted_secs > 0 {
                        // After the ack it explains.
                        self.out.round.acks.push(Ack {
                            to: r.clone(),
                            frame: ServerFrame::Notice(Notice {
                                kind: NoticeKind::Muted as u8,
                                value: d.muted_secs,
                                text: format!(
                                    "too many rejected messages: muted for {} s",
                                    d.muted_secs
                                ),
                            }),
                        });
                    }
                }
                if d.replay {
                    return;
                }
                // A message stored as accepted passed every check, the
                // contact check included; any other may carry a phone or
                // an ID (its checks stopped at the first hit, or the
                // contact rule runs dry): masked before it is stored.
                let text = if d.stores() && d.dry_run.is_empty() {
                    text
                } else {
                    crate::guard::text::redact_contacts(&text).into_owned()
                };
                for r in d.dry_run.iter() {
                    self.moderation(
                        &head,
                        "chat",
                        client_msg_id,
                        r,
                        true,
                        Sample::Text(text.clone()),
                    );
                }
                if d.stores() {
                    self.out.round.rows.push(Row::Chat(ChatRow {
                        room_id: ev.room_id,
                        ts: ev.received_at_ms,
                        viewer_id: ev.viewer_id,
                        session_id: ev.session_id,
                        client_msg_id,
                        text,
                        verdict: d.verdict.as_str(),
                        dry_run_reasons: d.dry_run.names(),
                    }));
                } else {
                    if d.reason != Reason::Busy && self.strike(now, ev.room_id, ev.viewer_id) {
                        // After the round's acks: the reject's ack goes first.
                        if let Some(r) = &reply {
                            self.out.round.closes.push((r.clone(), CloseCode::Abusive));
                        }
                    }
                    self.moderation(
                        &head,
                        "chat",
                        client_msg_id,
                        d.reason,
                        false,
                        Sample::Text(text),
                    );
                }
            }
            // Handled above.
            EventKind::Lead { .. } | EventKind::Withdraw { .. } => {}
        }
    }

    /// Count one rejected (or dry-run) event in its moderation row: one row
    /// per (room, viewer, kind, reason, dry-run) and bucket, so a flood costs
    /// a bounded number of rows, not one per frame.
    fn moderation(
        &mut self,
        ev: &Head,
        kind: &'static str,
        client_id: u64,
        reason: Reason,
        dry_run: bool,
        sample: Sample,
    ) {
        let bucket = ev.ts.div_euclid(self.abuse.moderation_bucket_ms as i64);
        let key = ModKey {
            room_id: ev.room_id,
            viewer_id: ev.viewer_id,
            kind,
            reason,
            dry_run,
        };
        let (over, of) = match &sample {
            Sample::Taps { over, of } => (*over, *of),
            _ => (0, 0),
        };
        if let Some(a) = self.moderation.get_mut(&key) {
            if a.bucket == bucket {
                a.row.count = a.row.count.saturating_add(1);
                a.taps_over += over;
                a.taps += of;
                self.out.stats.moderation_folded += 1;
                return;
            }
            if let Some(old) = self.moderation.remove(&key) {
                self.emit_moderation(old);
            }
        }
        let detail = match sample {
            Sample::Text(t) => t,
            _ => String::new(),
        };
        self.moderation.insert(
            key,
            ModAgg {
                bucket,
                row: ModerationRow {
                    room_id: ev.room_id,
                    ts: ev.ts,
                    viewer_id: ev.viewer_id,
                    session_id: ev.session_id,
                    kind,
                    client_id,
                    reason: reason.as_str(),
                    dry_run,
                    count: 1,
                    detail,
                },
                taps_over: over,
                taps: of,
                acks: Vec::new(),
                closes: Vec::new(),
            },
        );
    }

    fn emit_moderation(&mut self, a: ModAgg) {
        let mut row = a.row;
        if row.kind == "like" {
            row.detail = if row.dry_run {
                format!("{} taps", a.taps)
            } else {
                format!("{} of {} taps over the cap", a.taps_over, a.taps)
            };
        }
        self.out.round.rows.push(Row::Moderation(row));
        self.out.round.acks.extend(a.acks);
        self.out.round.closes.extend(a.closes);
    }

    /// A rejected chat message or lead: true when the viewer has reached
    /// `guard.abuse.disconnect_rejects` in the window (its connection is to
    /// be closed with `abusive`, after the reject's ack).
    fn strike(&mut self, now: i64, room_id: u64, viewer_id: u64) -> bool {
        let limit = self.abuse.disconnect_rejects;
        if limit == 0 {
            return false;
        }
        let window = (self.abuse.disconnect_window_secs as i64).saturating_mul(1000);
        let e = self.strikes.entry((room_id, viewer_id)).or_insert((now, 0));
        if now - e.0 >= window {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
        e.1 >= limit
    }

    /// A viewer withdraws one of its leads: a `lead_withdrawals` row, acked
    /// once durable; over the hourly cap, rejected (`rate_limited`) and
    /// counted in a moderation row. The lead need not be known here (it
    /// may be older than the idempotency window): delivery and the eraser
    /// match it by its key in ClickHouse.
    fn withdraw(
        &mut self,
        now: i64,
        head: &Head,
        client_lead_id: u64,
        reply: Option<Arc<dyn Replier>>,
    ) {
        let e = self
            .withdrawals
            .entry((head.room_id, head.viewer_id))
            .or_insert((now, 0));
        if now - e.0 >= HOUR_MS {
            *e = (now, 0);
        }
        if e.1 >= self.abuse.max_withdrawals_per_hour {
            self.out.stats.withdrawals_limited += 1;
            self.moderation(
                head,
                "withdraw",
                client_lead_id,
                Reason::RateLimited,
                false,
                Sample::Nothing,
            );
            let d = Decision::reject(Reason::RateLimited, 60_000);
            if let Some(r) = reply {
                let key = ModKey {
                    room_id: head.room_id,
                    viewer_id: head.viewer_id,
                    kind: "withdraw",
                    reason: Reason::RateLimited,
                    dry_run: false,
                };
                let ack = Ack {
                    to: r,
                    frame: ack_frame(AckKind::Withdraw, client_lead_id, &d),
                };
                // Released with the moderation row that records it.
                if let Some(a) = self.moderation.get_mut(&key) {
                    a.acks.push(ack);
                }
            }
            return;
        }
        e.1 += 1;
        self.out.stats.withdrawals += 1;
        self.out.round.rows.push(Row::Withdrawal(WithdrawalRow {
            ts: head.ts,
            room_id: head.room_id,
            viewer_id: head.viewer_id,
            client_lead_id,
            action: "withdraw",
            source: "viewer",
            actor: format!("session:{}", head.session_id),
        }));
        if let Some(r) = reply {
            self.out.round.acks.push(Ack {
                to: r,
                frame: ack_frame(AckKind::Withdraw, client_lead_id, &Decision::ACCEPT),
            });
        }
    }

    /// Whether a rejected lead of this viewer is still stored as a `leads`
    /// row this hour (`guard.abuse.max_rejected_leads_per_hour`).
    fn store_rejected_lead(&mut self, now: i64, room_id: u64, viewer_id: u64) -> bool {
        let e = self
            .lead_rejects
            .entry((room_id, viewer_id))
            .or_insert((now, 0));
        if now - e.0 >= HOUR_MS {
            *e = (now, 0);
        }
        if e.1 >= self.abuse.max_rejected_leads_per_hour {
            return false;
        }
        e.1 += 1;
        true
    }
}

const HOUR_MS: i64 = 3_600_000;

#[cfg(test)]
mod tests {
    //! A deterministic harness: cores fed by hand, hops routed by hand, no
    //! threads, no clock, no log.

    use std::sync::Mutex;

    use super::*;
    use crate::event::Event;
    use crate::guard::GuardConfig;
    use crate::wire::Lead;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const T0: i64 = 1_764_000_000_000;

    #[derive(Debug, Default)]
    struct Conn {
        closed: Mutex<Vec<CloseCode>>,
    }
    impl Replier for Conn {
        fn reply(&self, _: ServerFrame) {
            panic!("the core never sends directly; frames go through its output");
        }
        fn close(&self, code: CloseCode) {
            self.closed.lock().unwrap().push(code);
        }
    }

    fn core(index: usize, shards: usize) -> ShardCore {
        core_with(index, shards, AbuseConfig::default())
    }

    fn core_with(index: usize, shards: usize, abuse: AbuseConfig) -> ShardCore {
        let pii = Arc::new(PiiKeys::from_hex(KEY, &KEY.replace('0', "f"), "k1").unwrap());
        ShardCore::new(
            index,
            shards,
            Guard::new(&GuardConfig::default()).unwrap(),
            pii,
            abuse,
        )
    }

    fn env(room: u64, viewer: u64, at: i64, kind: EventKind, conn: &Arc<Conn>) -> Envelope {
        Envelope {
            event: Event {
                room_id: room,
                viewer_id: viewer,
                session_id: 1,
                received_at_ms: at,
                kind,
            },
            reply: Some(conn.clone() as Arc<dyn Replier>),
        }
    }

    fn lead(id: u64) -> EventKind {
        EventKind::Lead {
            lead: Box::new(Lead {
                client_lead_id: id,
                phone: "13905718264".into(),
                consent: true,
                fill_ms: 9_000,
                ..Lead::default()
            }),
            ip: "10.0.0.1".into(),
        }
    }

    fn acks(o: &Output) -> Vec<(u8, u64, u8, bool)> {
        o.round
            .acks
            .iter()
            .filter_map(|a| match a.frame {
                ServerFrame::Ack {
                    kind,
                    client_id,
                    verdict,
                    replay,
                    ..
                } => Some((kind, client_id, verdict, replay)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn chat_and_leads_wait_for_the_log_and_resends_are_replays() {
        let mut c = core(0, 1);
        let v = Arc::new(Conn::default());
        c.handle(
            T0,
            env(
                1,
                7,
                T0,
                EventKind::Join {
                    client: "t".into(),
                    ip: "10.0.0.1".into(),
                },
                &v,
            ),
        );
        let chat = |id| EventKind::Chat {
            client_msg_id: id,
            text: "hello room".into(),
        };
        c.handle(T0 + 10, env(1, 7, T0 + 10, chat(5), &v));
        c.handle(T0 + 20, env(1, 7, T0 + 20, lead(9), &v));
        let o = c.poll_output();
        // Nothing is sent directly: both acks ride the round to the log.
        assert!(o.frames.is_empty() && o.closes.is_empty() && o.hops.is_empty());
        assert_eq!(acks(&o), vec![(1, 5, 1, false), (2, 9, 1, false)]);
        let tables: Vec<_> = o.round.rows.iter().map(Row::table).collect();
        use crate::table::Table::*;
        assert_eq!(tables, vec![Sessions, Chat, Leads]);
        let Row::Lead(l) = &o.round.rows[2] else {
            unreachable!()
        };
        assert_eq!(
            (l.verdict, l.reason, l.client_lead_id),
            ("accepted", "none", 9)
        );
        assert!(l.phone_enc.len() > 20 && !l.phone_enc.contains("13905718264"));
        assert_eq!(o.stats.leads_done, 1);
        assert_eq!(o.stats.verdict_count(Kind::Chat, Verdict::Accepted), 1);
        // Resends: acked as replays, nothing stored again.
        c.handle(T0 + 30, env(1, 7, T0 + 30, chat(5), &v));
        c.handle(T0 + 40, env(1, 7, T0 + 40, lead(9), &v));
        let o = c.poll_output();
        assert_eq!(acks(&o), vec![(1, 5, 1, true), (2, 9, 1, true)]);
        assert!(o.round.rows.is_empty());
        assert_eq!(o.stats.leads_done, 1);
    }

    #[test]
    fn facts_keyed_as_the_lead_rows_reach_the_lead_stages() {
        use crate::guard::{FactBatch, IpFact, PhoneFact};
        let mut c = core(0, 1);
        let v = Arc::new(Conn::default());
        c.handle(T0, env(1, 7, T0, lead(1), &v));
        let o = c.poll_output();
        let Some(Row::Lead(row)) = o.round.rows.first() else {
            panic!("a lead row")
        };
        assert_eq!(row.ip_hmac, c.pii.ip_hmac("10.0.0.1"));
        // ClickHouse, keyed by the row's phone_hmac and ip_hmac: the phone
        // in five more rooms, twenty leads from the IP.
        let minute = T0 - T0 % 60_000;
        let batch = FactBatch {
            read_at_ms: T0 + 1,
            phones: (100..105)
                .map(|room| PhoneFact {
                    phone_key: row.phone_hmac.clone(),
                    room_id: room,
                    minute_ms: minute,
                    registered: true,
                })
                .collect(),
            ips: vec![IpFact {
                ip_key: row.ip_hmac.clone(),
                minute_ms: minute,
                leads: 20,
            }],
        };
        assert_eq!(c.merge_facts(T0 + 1, &batch), 6);
        c.handle(T0 + 2, env(2, 8, T0 + 2, lead(2), &v));
        let o = c.poll_output();
        let Some(Row::Lead(row)) = o.round.rows.first() else {
            panic!("a lead row")
        };
        assert_eq!((row.verdict, row.reason), ("rejected", "velocity_ip"));
        assert!(row.reasons.contains(&"velocity_phone"), "{:?}", row.reasons);
        assert_eq!(o.stats.cross_node_count(Reason::VelocityIp), 1);
        assert_eq!(o.stats.cross_node_count(Reason::VelocityPhone), 1);
        assert_eq!(o.stats.cross_node_count(Reason::DuplicateLead), 0);
    }

    #[test]
    fn a_lead_travels_its_stages_across_shards_and_is_acked_once() {
        let shards = 3;
        let mut cores: Vec<ShardCore> = (0..shards).map(|i| core(i, shards)).collect();
        let v = Arc::new(Conn::default());
        let room = (0..100).find(|r| shard_of(*r, shards) == 1).unwrap();
        cores[1].handle(T0, env(room, 7, T0, lead(3), &v));
        // A resend while the first is in flight waits for the same verdict.
        cores[1].handle(T0 + 1, env(room, 7, T0 + 1, lead(3), &v));
        let mut rows = Vec::new();
        let mut all_acks = Vec::new();
        let mut hops = 0;
        let mut queue: Vec<(usize, LeadHop)> = Vec::new();
        for c in cores.iter_mut() {
            let o = c.poll_output();
            rows.extend(o.round.rows.iter().map(Row::table));
            all_acks.extend(acks(&o));
            queue.extend(o.hops);
        }
        while let Some((target, hop)) = queue.pop() {
            hops += 1;
            assert!(hops < 20, "hops terminate");
            cores[target].handle_hop(T0 + 2, hop);
            let o = cores[target].poll_output();
            rows.extend(o.round.rows.iter().map(Row::table));
            all_acks.extend(acks(&o));
            queue.extend(o.hops);
        }
        assert!(hops >= 1, "the stages live on other shards");
        assert_eq!(rows, vec![crate::table::Table::Leads], "stored once");
        assert_eq!(all_acks, vec![(2, 3, 1, false), (2, 3, 1, true)]);
    }

    #[test]
    fn like_seconds_are_logged_when_over_and_at_shutdown() {
        let mut c = core(0, 1);
        let v = Arc::new(Conn::default());
        let like = |n| EventKind::Like {
            count: n,
            spread_ms: 0,
        };
        c.handle(T0, env(4, 1, T0, like(5), &v));
        c.handle(T0 + 100, env(4, 2, T0 + 100, like(3), &v));
        c.tick(T0 + 500);
        let o = c.poll_output();
        assert!(o.round.rows.is_empty(), "the second is not over");
        assert_eq!(o.stats.like_taps_admitted, 8, "counted when decided");
        c.tick(T0 + 1_000);
        let o = c.poll_output();
        assert_eq!(
            o.round.rows,
            vec![Row::Like(LikeRow {
                room_id: 4,
                ts: (T0 / 1000) as u32,
                taps: 8
            })]
        );
        c.handle(T0 + 1_200, env(4, 1, T0 + 1_200, like(2), &v));
        c.finish();
        let mut rows = c.poll_output().round.rows;
        // The likers of the minute, per viewer, and the current second.
        rows.sort_by_key(|r| match r {
            Row::LikeViewer(l) => l.viewer_id,
            _ => 0,
        });
        let minute = (T0 / 60_000 * 60) as u32;
        let liker = |viewer_id, taps| {
            Row::LikeViewer(LikeViewerRow {
                room_id: 4,
                minute,
                viewer_id,
                taps,
            })
        };
        assert_eq!(
            rows,
            vec![
                Row::Like(LikeRow {
                    room_id: 4,
                    ts: (T0 / 1000) as u32 + 1,
                    taps: 2
                }),
                liker(1, 7),
                liker(2, 3)
            ],
            "shutdown logs the current second and minute"
        );
    }

    #[test]
    fn a_withdrawal_is_logged_and_acked_with_its_row_and_capped_per_hour() {
        let abuse = AbuseConfig {
            max_withdrawals_per_hour: 2,
            ..AbuseConfig::default()
        };
        let mut c = core_with(0, 1, abuse);
        let v = Arc::new(Conn::default());
        let w = |id| EventKind::Withdraw { client_lead_id: id };
        c.handle(T0, env(3, 8, T0, w(41), &v));
        let o = c.poll_output();
        assert_eq!(
            o.round.rows,
            vec![Row::Withdrawal(WithdrawalRow {
                ts: T0,
                room_id: 3,
                viewer_id: 8,
                client_lead_id: 41,
                action: "withdraw",
                source: "viewer",
                actor: "session:1".into(),
            })]
        );
        // The ack rides with the row: sent once the row is durable.
        assert_eq!(
            acks(&o),
            [(AckKind::Withdraw as u8, 41, Verdict::Accepted as u8, false)]
        );
        assert_eq!(o.stats.withdrawals, 1);
        c.handle(T0 + 1, env(3, 8, T0 + 1, w(42), &v));
        assert_eq!(c.poll_output().round.rows.len(), 1);
        // Over the cap: no row; rejected, its ack waits for the moderation
        // row that counts it.
        c.handle(T0 + 2, env(3, 8, T0 + 2, w(43), &v));
        let o = c.poll_output();
        assert!(o.round.rows.is_empty() && o.round.acks.is_empty());
        assert_eq!(o.stats.withdrawals_limited, 1);
        c.finish();
        let o = c.poll_output();
        assert!(matches!(
            &o.round.rows[..],
            [Row::Moderation(m)] if m.kind == "withdraw" && m.reason == "rate_limited"
        ));
        assert_eq!(
            acks(&o),
            [(AckKind::Withdraw as u8, 43, Verdict::Rejected as u8, false)]
        );
        // Another viewer, and the same viewer an hour later, may withdraw.
        c.handle(T0 + 3, env(3, 9, T0 + 3, w(1), &v));
        c.handle(T0 + HOUR_MS, env(3, 8, T0 + HOUR_MS, w(44), &v));
        assert_eq!(c.poll_output().round.rows.len(), 2);
    }

    #[test]
    fn likers_are_logged_per_viewer_when_their_minute_is_over() {
        let mut c = core(0, 1);
        let v = Arc::new(Conn::default());
        let like = |n| EventKind::Like {
            count: n,
            spread_ms: 0,
        };
        let start = T0 / 60_000 * 60_000;
        c.handle(start, env(4, 1, start, like(5), &v));
        c.handle(start + 30_000, env(4, 1, start + 30_000, like(1), &v));
        c.handle(start + 59_000, env(5, 2, start + 59_000, like(2), &v));
        c.tick(start + 59_999);
        let o = c.poll_output();
        assert!(
            !o.round.rows.iter().any(|r| matches!(r, Row::LikeViewer(_))),
            "the minute is not over"
        );
        c.tick(start + 60_000);
        let mut likers: Vec<LikeViewerRow> = c
            .poll_output()
            .round
            .rows
            .into_iter()
            .filter_map(|r| match r {
                Row::LikeViewer(l) => Some(l),
                _ => None,
            })
            .collect();
        likers.sort_by_key(|l| l.room_id);
        let minute = (start / 1000) as u32;
        assert_eq!(
            likers,
            vec![
                LikeViewerRow {
                    room_id: 4,
                    minute,
                    viewer_id: 1,
                    taps: 6
                },
                LikeViewerRow {
                    room_id: 5,
                    minute,
                    viewer_id: 2,
                    taps: 2
                }
            ]
        );
    }

    #[test]
    fn a_ban_closes_the_viewers_sessions_and_restored_ids_replay() {
        let mut c = core(0, 1);
        let v = Arc::new(Conn::default());
        c.handle(
            T0,
            env(
                1,
                7,
                T0,
                EventKind::Join {
                    client: "t".into(),
                    ip: "x".into(),
                },
                &v,
            ),
        );
        c.control(T0 + 1, &Control::Ban { room: 1, viewer: 7 })
            .unwrap();
        let o = c.poll_output();
        assert_eq!(o.closes.len(), 1);
        assert_eq!(o.closes[0].1, CloseCode::Banned);

        let mut c = core(0, 1);
        c.guard.restore(&crate::wal::SeenId {
            lead: true,
            room_id: 1,
            viewer_id: 8,
            client_id: 9,
            verdict: "suspect",
            reason: "fake_pattern",
            ts: T0,
        });
        c.handle(T0 + 5, env(1, 8, T0 + 5, lead(9), &v));
        let o = c.poll_output();
        assert_eq!(
            acks(&o),
            vec![(2, 9, 2, true)],
            "replayed with the restored verdict"
        );
        assert!(o.round.rows.is_empty());
    }

    /// Every output until `finish`, merged.
    fn drain_all(c: &mut ShardCore, outs: &mut Vec<Output>) {
        c.finish();
        outs.push(c.poll_output());
    }

    fn moderation_rows(outs: &[Output]) -> Vec<ModerationRow> {
        outs.iter()
            .flat_map(|o| o.round.rows.iter())
            .filter_map(|r| match r {
                Row::Moderation(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_flood_costs_one_moderation_row_per_reason_and_second_and_ends_in_a_disconnect() {
        let mut c = core(0, 1);
        let v = Arc::new(Conn::default());
        let mut outs = Vec::new();
        // 2,000 like frames of 100 taps and 40 copies of one message over
        // 2 s: likes are over the cap, chat is rejected (duplicate, rate).
        for i in 0..2_000i64 {
            let at = T0 + i;
            c.handle(
                at,
                env(
                    1,
                    7,
                    at,
                    EventKind::Like {
                        count: 100,
                        spread_ms: 0,
                    },
                    &v,
                ),
            );
            if i % 50 == 0 {
                let chat = EventKind::Chat {
                    client_msg_id: i as u64,
                    text: "spam 13800138000".into(),
                };
                c.handle(at, env(1, 7, at, chat, &v));
            }
            c.tick(at);
            outs.push(c.poll_output());
        }
        drain_all(&mut c, &mut outs);
        let rows = moderation_rows(&outs);
        // One row per (kind, reason, second): 2 seconds of likes, and at
        // most 2 seconds × the chat reasons.
        let likes: Vec<_> = rows.iter().filter(|r| r.kind == "like").collect();
        assert_eq!(likes.len(), 2, "{likes:?}");
        assert_eq!(likes.iter().map(|r| u64::from(r.count)).sum::<u64>(), 2_000);
        let over: u64 = likes
            .iter()
            .map(|r| r.detail.split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        let limited: u64 = outs.iter().map(|o| o.stats.like_taps_limited).sum();
        assert_eq!(over, limited);
        let chat: Vec<_> = rows.iter().filter(|r| r.kind == "chat").collect();
        let rejected_chat: u64 = chat.iter().map(|r| u64::from(r.count)).sum();
        assert!(rejected_chat >= 38, "{chat:?}");
        assert!(chat.len() <= 2 * 3, "{chat:?}");
        // The sample is masked.
        assert!(
            chat.iter().all(|r| !r.detail.contains("13800138000")),
            "{chat:?}"
        );
        // Rows written ÷ frames sent.
        assert!(rows.len() * 200 <= 2_040, "{} rows", rows.len());
        // 40 rejects is under the default of 50: still connected.
        assert!(outs.iter().all(|o| o.round.closes.is_empty()));
    }

    #[test]
    fn a_viewer_past_the_reject_limit_is_disconnected_as_abusive() {
        let mut c = core_with(
            0,
            1,
            AbuseConfig {
                disconnect_rejects: 5,
                ..AbuseConfig::default()
            },
        );
        let v = Arc::new(Conn::default());
        let mut outs = Vec::new();
        for i in 0..8u64 {
            let at = T0 + i as i64;
            let chat = EventKind::Chat {
                client_msg_id: i,
                text: "same text".into(),
            };
            c.handle(at, env(1, 7, at, chat, &v));
            outs.push(c.poll_output());
        }
        let abusive = |o: &Output| {
            o.round
                .closes
                .iter()
                .filter(|(_, c)| *c == CloseCode::Abusive)
                .count()
        };
        let closes: Vec<usize> = outs.iter().map(abusive).collect();
        // The 5th reject closes (the first message is accepted).
        assert_eq!(closes, vec![0, 0, 0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn rejected_leads_over_the_hourly_cap_are_counted_not_stored() {
        let mut c = core(0, 1);
        let v = Arc::new(Conn::default());
        let mut outs = Vec::new();
        for id in 0..15u64 {
            let at = T0 + id as i64 * 10;
            let kind = EventKind::Lead {
                lead: Box::new(Lead {
                    client_lead_id: id,
                    phone: "13905718264".into(),
                    consent: false,
                    fill_ms: 9_000,
                    ..Lead::default()
                }),
                ip: "10.0.0.1".into(),
            };
            c.handle(at, env(1, 7, at, kind, &v));
            outs.push(c.poll_output());
        }
        drain_all(&mut c, &mut outs);
        let leads = outs
            .iter()
            .flat_map(|o| o.round.rows.iter())
            .filter(|r| matches!(r, Row::Lead(_)))
            .count();
        assert_eq!(leads, 10);
        let rows = moderation_rows(&outs);
        assert!(rows.iter().all(|r| r.kind == "lead" && r.detail.is_empty()));
        assert_eq!(rows.iter().map(|r| r.count).sum::<u32>(), 5);
        // Every one is acked, rejected.
        let acked: Vec<_> = outs.iter().flat_map(acks).collect();
        assert_eq!(acked.len(), 15);
        assert!(acked.iter().all(|a| a.2 == Verdict::Rejected as u8));
        assert_eq!(outs.iter().map(|o| o.stats.leads_unstored).sum::<u64>(), 5);
        // The 5 capped leads' acks ride with their moderation row: never
        // before the record they promise is durable.
        let last = outs.last().unwrap();
        assert_eq!(acks(last).len(), 5);
        assert_eq!(moderation_rows(std::slice::from_ref(last)).len(), 1);
    }

    #[test]
    fn a_third_session_of_a_viewer_replaces_the_oldest() {
        let mut c = core(0, 1);
        let conns: Vec<Arc<Conn>> = (0..4).map(|_| Arc::new(Conn::default())).collect();
        let join = || EventKind::Join {
            client: "t".into(),
            ip: "10.0.0.1".into(),
        };
        for (i, conn) in conns.iter().enumerate().take(3) {
            let mut e = env(1, 7, T0, join(), conn);
            e.event.session_id = i as u64 + 1;
            c.handle(T0, e);
        }
        let o = c.poll_output();
        let replaced = |o: &Output| {
            o.round
                .closes
                .iter()
                .filter(|(_, code)| *code == CloseCode::SessionReplaced)
                .count()
        };
        assert_eq!(replaced(&o), 1);
        // The oldest (session 1) is the one closed.
        assert!(Arc::ptr_eq(
            &o.round.closes[0].0,
            &(conns[0].clone() as Arc<dyn Replier>)
        ));
        // Session 1 leaves; a 4th joins: session 2 is now the oldest.
        let mut leave = env(
            1,
            7,
            T0 + 5,
            EventKind::Leave {
                joined_at_ms: T0,
                close: "session_replaced",
            },
            &conns[0],
        );
        leave.event.session_id = 1;
        c.handle(T0 + 5, leave);
        let mut e = env(1, 7, T0 + 6, join(), &conns[3]);
        e.event.session_id = 4;
        c.handle(T0 + 6, e);
        let o = c.poll_output();
        assert_eq!(replaced(&o), 1);
        assert!(Arc::ptr_eq(
            &o.round.closes[0].0,
            &(conns[1].clone() as Arc<dyn Replier>)
        ));
        // Another viewer is not affected.
        let mut e = env(1, 8, T0 + 7, join(), &conns[3]);
        e.event.session_id = 9;
        c.handle(T0 + 7, e);
        assert_eq!(replaced(&c.poll_output()), 0);
    }
}

//! Shard queues and workers.
//!
//! `shard = hash(room_id) % N`. Each shard is a lock-free bounded
//! [`ArrayQueue`] drained by one worker thread that owns all state of its
//! rooms (the guard, like aggregation, the room's sessions): no locks on the
//! event path. Workers drain in rounds and hand each round's rows, with the
//! acks that wait for them, to the write-ahead log in one submission
//! ([`crate::wal`]), and park when idle.
//!
//! Overflow is a decision per kind, taken by the caller of
//! [`Shards::try_push`]: leads and session events wait ([`Shards::push_wait`]),
//! chat is answered `busy`, likes are coalesced into a count.
//!
//! Cross-room lead facts (the same phone, IP or viewer across rooms) live in
//! the shard that owns the fact's key: a lead travels room shard → phone
//! shard → IP shard → viewer shard → back to its room shard, one way, through
//! each shard's hop queue ([`LeadHop`]); no lock is ever taken.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;

use crate::event::{Event, EventKind, Kind};
use crate::guard::{
    Control, Decision, Effect, Guard, GuardConfig, LeadCheck, LeadStage, RoomSettingsView,
};
use crate::metrics::{Metrics, Overflow};
use crate::pii::{mask_phone, PiiKeys};
use crate::sink::{ChatRow, LeadRow, LikeRow, ModerationRow, SessionRow};
use crate::wal::{Ack, LogHandle, Row, SeenId, Submit};
use crate::wire::{AckKind, CloseCode, Lead, Notice, NoticeKind, Reason, ServerFrame, Verdict};

pub use crate::event::Replier;

/// An event plus the way back to its viewer.
#[derive(Debug)]
pub struct Envelope {
    /// The event.
    pub event: Event,
    /// The viewer's connection, for acks and notices.
    pub reply: Option<Arc<dyn Replier>>,
}

/// A lead travelling through its check stages.
#[derive(Debug)]
pub struct LeadHop {
    check: LeadCheck,
    /// Index into [`LeadStage::ORDER`]; `ORDER.len()` = back home to finish.
    stage: usize,
    head: Head,
    lead: Box<Lead>,
}

/// What an admin request asks a shard.
#[derive(Debug)]
pub enum AdminOp {
    /// Apply a control.
    Control(Control, oneshot::Sender<Result<(), String>>),
    /// Read a room's settings.
    Room(u64, oneshot::Sender<RoomSettingsView>),
}

/// The ack frame for a decision.
pub fn ack_frame(kind: AckKind, client_id: u64, d: &Decision) -> ServerFrame {
    ServerFrame::Ack {
        kind: kind as u8,
        client_id,
        verdict: d.verdict as u8,
        reason: d.reason.code(),
        retry_after_ms: d.retry_after_ms,
        replay: d.replay,
    }
}

/// Map a key (room id, fact hash) to its shard (stable across restarts).
pub fn shard_of(key: u64, shards: usize) -> usize {
    // splitmix64 finaliser: spreads sequential ids evenly.
    let mut z = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % shards as u64) as usize
}

const HOP_CAPACITY: usize = 65_536;
const ADMIN_CAPACITY: usize = 1_024;

struct Queue {
    q: ArrayQueue<Envelope>,
    hops: ArrayQueue<LeadHop>,
    admin: ArrayQueue<AdminOp>,
    sleeping: AtomicBool,
    closed: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Queue {
    fn wake(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }
}

/// Settings for the workers.
#[derive(Debug, Clone)]
pub struct ShardSettings {
    /// Number of shards.
    pub count: usize,
    /// Capacity of each queue.
    pub capacity: usize,
    /// Events drained per round.
    pub drain_batch: usize,
    /// Guard settings.
    pub guard: GuardConfig,
}

/// The running shards.
pub struct Shards {
    queues: Arc<Vec<Queue>>,
    /// Leads pushed but not yet finished (queued, or travelling stages).
    leads_pending: Arc<AtomicUsize>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards")
            .field("count", &self.queues.len())
            .finish()
    }
}

impl Shards {
    /// Start `settings.count` workers appending to `log`. `restore` are
    /// leads and chat messages already decided (found in the log or in
    /// ClickHouse at start): a resend of one is answered as a replay with
    /// its original verdict.
    pub fn start(
        settings: &ShardSettings,
        log: LogHandle,
        pii: Arc<PiiKeys>,
        metrics: Arc<Metrics>,
        restore: &[SeenId],
    ) -> Result<Self, String> {
        let queues: Arc<Vec<Queue>> = Arc::new(
            (0..settings.count)
                .map(|_| Queue {
                    q: ArrayQueue::new(settings.capacity),
                    hops: ArrayQueue::new(HOP_CAPACITY),
                    admin: ArrayQueue::new(ADMIN_CAPACITY),
                    sleeping: AtomicBool::new(false),
                    closed: AtomicBool::new(false),
                    thread: OnceLock::new(),
                })
                .collect(),
        );
        let leads_pending = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for i in 0..settings.count {
            let mut guard = Guard::new(&settings.guard)?;
            for l in restore
                .iter()
                .filter(|l| shard_of(l.room_id, settings.count) == i)
            {
                guard.restore(l);
            }
            let mut worker = Worker {
                index: i,
                queues: queues.clone(),
                leads_pending: leads_pending.clone(),
                guard,
                likes: FxHashMap::default(),
                sessions: FxHashMap::default(),
                in_flight: FxHashMap::default(),
                pending_hops: VecDeque::new(),
                log: log.clone(),
                pii: pii.clone(),
                metrics: metrics.clone(),
                drain_batch: settings.drain_batch.max(1),
                out: Submit::default(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("roomgate-shard-{i}"))
                .spawn(move || worker.run())
                .map_err(|e| format!("spawn shard worker: {e}"))?;
            let _ = queues[i].thread.set(handle.thread().clone());
            threads.push(handle);
        }
        Ok(Shards {
            queues,
            leads_pending,
            threads: Mutex::new(threads),
            metrics,
        })
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// Always false: there is at least one shard.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// The shard that owns `room`.
    pub fn shard_of_room(&self, room: u64) -> usize {
        shard_of(room, self.queues.len())
    }

    /// Push without waiting; gives the envelope back if the queue is full.
    pub fn try_push(&self, env: Envelope) -> Result<(), Envelope> {
        let q = &self.queues[shard_of(env.event.room_id, self.queues.len())];
        let lead = matches!(env.event.kind, EventKind::Lead { .. });
        if lead {
            self.leads_pending.fetch_add(1, Ordering::SeqCst);
        }
        let r = q.q.push(env);
        if r.is_err() && lead {
            self.leads_pending.fetch_sub(1, Ordering::SeqCst);
        }
        q.wake();
        r
    }

    /// Push, waiting for space (backpressure): for events that must not be
    /// dropped (leads, session start/end). While this waits the connection
    /// reads nothing, so QUIC flow control pushes back on the viewer.
    pub async fn push_wait(&self, mut env: Envelope) {
        let kind = env.event.kind.kind();
        let mut delay = Duration::from_millis(1);
        let mut counted = false;
        loop {
            match self.try_push(env) {
                Ok(()) => return,
                Err(back) => {
                    env = back;
                    if !counted {
                        self.metrics.overflow(kind, Overflow::Waited);
                        counted = true;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(20));
                }
            }
        }
    }

    /// Queue an admin operation on shard `shard`; `Err` when its admin queue
    /// is full (the caller answers 503).
    pub fn admin(&self, shard: usize, op: AdminOp) -> Result<(), AdminOp> {
        let q = &self.queues[shard % self.queues.len()];
        let r = q.admin.push(op);
        if let Some(t) = q.thread.get() {
            t.unpark();
        }
        r
    }

    /// Drain every queue and stop the workers (blocking). Call after the
    /// gate stopped producing.
    pub fn shutdown(&self) {
        for q in self.queues.iter() {
            q.closed.store(true, Ordering::SeqCst);
            if let Some(t) = q.thread.get() {
                t.unpark();
            }
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a shard worker panicked");
            }
        }
    }
}

/// The identifying fields of an event, kept after its payload moved.
#[derive(Debug, Clone, Copy)]
struct Head {
    room_id: u64,
    viewer_id: u64,
    session_id: u64,
    ts: i64,
}

type InFlightKey = (u64, u64, u64);

/// A room's open sessions: session id → (viewer, connection).
type RoomSessions = FxHashMap<u64, (u64, Arc<dyn Replier>)>;

struct Worker {
    index: usize,
    queues: Arc<Vec<Queue>>,
    leads_pending: Arc<AtomicUsize>,
    guard: Guard,
    /// Like taps per (room, unix second) not yet handed to the sink.
    likes: FxHashMap<(u64, u32), u64>,
    /// Open sessions per room: session id → (viewer, connection).
    sessions: FxHashMap<u64, RoomSessions>,
    /// Leads of this shard's rooms still travelling their stages, with every
    /// connection waiting for their ack (first send + in-flight resends).
    in_flight: FxHashMap<InFlightKey, Vec<Arc<dyn Replier>>>,
    /// Hops whose target queue was full; retried every round.
    pending_hops: VecDeque<(usize, LeadHop)>,
    log: LogHandle,
    pii: Arc<PiiKeys>,
    metrics: Arc<Metrics>,
    drain_batch: usize,
    /// This round's rows and the acks that wait for them.
    out: Submit,
}

impl Worker {
    fn queue(&self) -> &Queue {
        &self.queues[self.index]
    }

    fn run(&mut self) {
        tracing::debug!(shard = self.index, "shard worker started");
        let mut buf = Vec::with_capacity(self.drain_batch);
        loop {
            let now = crate::now_ms();
            let mut work = self.admin_ops(now);
            work += self.hops(now);
            while buf.len() < self.drain_batch {
                match self.queue().q.pop() {
                    Some(e) => buf.push(e),
                    None => break,
                }
            }
            work += buf.len();
            if work == 0 {
                self.flush_likes(Some(now));
                self.guard.tick(now);
                self.ship();
                let q = &self.queues[self.index];
                // A worker may stop only when no lead anywhere could still
                // need one of its stages.
                let idle = q.q.is_empty()
                    && q.hops.is_empty()
                    && self.pending_hops.is_empty()
                    && self.leads_pending.load(Ordering::SeqCst) == 0;
                if q.closed.load(Ordering::SeqCst) && idle {
                    break;
                }
                q.sleeping.store(true, Ordering::SeqCst);
                if q.q.is_empty()
                    && q.hops.is_empty()
                    && q.admin.is_empty()
                    && !q.closed.load(Ordering::SeqCst)
                {
                    std::thread::park_timeout(Duration::from_millis(100));
                } else if q.closed.load(Ordering::SeqCst) {
                    // Waiting for leads in flight on other shards.
                    std::thread::park_timeout(Duration::from_millis(5));
                }
                q.sleeping.store(false, Ordering::SeqCst);
                continue;
            }
            self.metrics.queue_depth[self.index]
                .store(self.queue().q.len() as i64, Ordering::Relaxed);
            for env in buf.drain(..) {
                self.handle(now, env);
            }
            self.flush_likes(Some(now));
            self.guard.tick(now);
            self.ship();
        }
        self.flush_likes(None);
        self.ship();
        self.metrics.queue_depth[self.index].store(0, Ordering::Relaxed);
        tracing::debug!(shard = self.index, "shard worker stopped");
    }

    fn lead_done(&self) {
        self.leads_pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// Hand the round to the log. Blocking here is the backpressure chain:
    /// a log behind (or over its disk budget) stops this worker, its queue
    /// fills, the gate pushes back on viewers.
    fn ship(&mut self) {
        self.log.submit(std::mem::take(&mut self.out));
        self.metrics.idempotency_evicted[self.index]
            .store(self.guard.evicted_early(), Ordering::Relaxed);
    }

    /// Hand completed seconds (all, when `now` is `None`) to the sink.
    fn flush_likes(&mut self, now: Option<i64>) {
        if self.likes.is_empty() {
            return;
        }
        let current = now.map(|n| (n / 1000) as u32);
        let out = &mut self.out.rows;
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

    fn admin_ops(&mut self, now: i64) -> usize {
        let mut n = 0;
        while let Some(op) = self.queue().admin.pop() {
            n += 1;
            match op {
                AdminOp::Room(room, tx) => {
                    let _ = tx.send(self.guard.room_settings(room));
                }
                AdminOp::Control(ctl, tx) => {
                    let r = self.guard.control(now, &ctl).map_err(|e| e.to_string());
                    if let Ok(effect) = &r {
                        self.effect(effect);
                    }
                    let _ = tx.send(r.map(|_| ()));
                }
            }
        }
        n
    }

    fn effect(&self, effect: &Effect) {
        let notice = |kind: NoticeKind, value: u32| {
            let text = match kind {
                NoticeKind::SlowMode if value == 0 => "slow mode off".to_owned(),
                NoticeKind::SlowMode => format!("slow mode: one message every {value} s"),
                NoticeKind::Muted if value == 0 => "you are muted in this room".to_owned(),
                NoticeKind::Muted => format!("you are muted for {value} s"),
                NoticeKind::Unmuted => "you may chat again".to_owned(),
                NoticeKind::ShuttingDown => "server shutting down".to_owned(),
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
                    r.reply(frame.clone());
                }
            }
            Effect::Viewer {
                room,
                viewer,
                kind,
                value,
            } => {
                let frame = notice(kind, value);
                for r in self.viewer_sessions(room, viewer) {
                    r.reply(frame.clone());
                }
            }
            Effect::Kick { room, viewer } => {
                for r in self.viewer_sessions(room, viewer) {
                    r.close(CloseCode::Banned);
                }
            }
        }
    }

    /// The open sessions of `viewer` in `room`.
    fn viewer_sessions(&self, room: u64, viewer: u64) -> impl Iterator<Item = &Arc<dyn Replier>> {
        self.sessions
            .get(&room)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(move |(v, _)| *v == viewer)
            .map(|(_, r)| r)
    }

    fn hops(&mut self, now: i64) -> usize {
        let mut n = 0;
        for _ in 0..self.pending_hops.len() {
            let Some((target, hop)) = self.pending_hops.pop_front() else {
                break;
            };
            if let Err(hop) = self.queues[target].hops.push(hop) {
                self.pending_hops.push_back((target, hop));
            } else {
                self.queues[target].wake();
                n += 1;
            }
        }
        while let Some(mut hop) = self.queue().hops.pop() {
            n += 1;
            if hop.stage < LeadStage::ORDER.len() {
                self.guard
                    .lead_stage(now, LeadStage::ORDER[hop.stage], &mut hop.check);
                hop.stage += 1;
            }
            self.advance(now, hop);
        }
        n
    }

    /// Run the lead's stages that this shard owns; forward it to the next
    /// owner, or finish it when it is back on its room shard.
    fn advance(&mut self, now: i64, mut hop: LeadHop) {
        let n = self.queues.len();
        loop {
            let target = match LeadStage::ORDER.get(hop.stage) {
                Some(stage) => shard_of(stage.key(&hop.check), n),
                None => shard_of(hop.head.room_id, n),
            };
            if target != self.index {
                if let Err(back) = self.queues[target].hops.push(hop) {
                    self.pending_hops.push_back((target, back));
                } else {
                    self.queues[target].wake();
                }
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
        self.metrics.decision(Kind::Lead, d.verdict, d.reason, 1);
        for r in d.dry_run.iter() {
            self.metrics.dry_run(Kind::Lead, r);
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
            phone_enc: self.pii.encrypt_hex(&phone_clear),
            wechat_enc: self.pii.encrypt_hex(&lead.wechat),
            name_enc: self.pii.encrypt_hex(&lead.name),
            fields_enc: if lead.fields.is_empty() {
                String::new()
            } else {
                self.pii.encrypt_hex(&fields)
            },
            ip_hmac: self.pii.hmac_hex(&check.ip),
            consent: lead.consent,
            fill_ms: lead.fill_ms,
        };
        // Every lead is stored with its verdict; its ack waits until the
        // record is durable. The first sender gets the ack, resends made
        // while it was in flight get it as a replay.
        self.out.rows.push(Row::Lead(row));
        let mut to = to.into_iter();
        if let Some(first) = to.next() {
            self.out.acks.push(Ack { to: first, frame });
        }
        for r in to {
            self.out.acks.push(Ack {
                to: r,
                frame: replay.clone(),
            });
        }
        self.lead_done();
    }

    fn handle(&mut self, now: i64, env: Envelope) {
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
                self.metrics
                    .decision(Kind::Lead, Verdict::Accepted, Reason::Replay, 1);
                self.lead_done();
                return;
            }
            let pii = self.pii.clone();
            match self
                .guard
                .lead_start(now, &ev, lead, ip, |p| pii.hmac_hex(p))
            {
                Err(replay) => {
                    self.lead_done();
                    self.metrics
                        .decision(Kind::Lead, replay.verdict, Reason::Replay, 1);
                    // The original's record may not be durable yet: this ack
                    // queues behind it, so a replay never overtakes it.
                    let frame = ack_frame(AckKind::Lead, lead.client_lead_id, &replay);
                    if let Some(to) = reply {
                        self.out.acks.push(Ack { to, frame });
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
        let d = self.guard.decide(now, &ev);
        self.metrics.decision(
            kind,
            d.verdict,
            if d.replay { Reason::Replay } else { d.reason },
            1,
        );
        for r in d.dry_run.iter() {
            self.metrics.dry_run(kind, r);
        }
        match ev.kind {
            EventKind::Join { client, .. } => {
                if d.verdict == Verdict::Rejected {
                    if let Some(r) = &reply {
                        r.close(CloseCode::Banned);
                    }
                }
                if let Some(r) = reply {
                    self.sessions
                        .entry(ev.room_id)
                        .or_default()
                        .insert(ev.session_id, (ev.viewer_id, r.clone()));
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
                self.out.rows.push(Row::Session(SessionRow {
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
                self.out.rows.push(Row::Session(SessionRow {
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
                }
                self.metrics
                    .like_taps_admitted
                    .fetch_add(u64::from(d.admitted), Ordering::Relaxed);
                let over = count - d.admitted.min(count);
                if over > 0 {
                    self.metrics
                        .like_taps_limited
                        .fetch_add(u64::from(over), Ordering::Relaxed);
                    self.moderation(
                        &head,
                        "like",
                        0,
                        d.reason,
                        false,
                        format!("{over} of {count} taps over the cap"),
                    );
                }
                if d.dry_run.contains(Reason::RateLimited) {
                    self.moderation(
                        &head,
                        "like",
                        0,
                        Reason::RateLimited,
                        true,
                        format!("{count} taps"),
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
                    self.out.acks.push(Ack {
                        to: r.clone(),
                        frame: ack_frame(AckKind::Chat, client_msg_id, &d),
                    });
                    if d.muted_secs > 0 {
                        // After the ack it explains.
                        self.out.acks.push(Ack {
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
                for r in d.dry_run.iter() {
                    self.moderation(&head, "chat", client_msg_id, r, true, text.clone());
                }
                if d.stores() {
                    self.out.rows.push(Row::Chat(ChatRow {
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
                    self.moderation(&head, "chat", client_msg_id, d.reason, false, text);
                }
            }
            EventKind::Lead { .. } => {}
        }
    }

    fn moderation(
        &mut self,
        ev: &Head,
        kind: &'static str,
        client_id: u64,
        reason: Reason,
        dry_run: bool,
        detail: String,
    ) {
        self.out.rows.push(Row::Moderation(ModerationRow {
            room_id: ev.room_id,
            ts: ev.ts,
            viewer_id: ev.viewer_id,
            session_id: ev.session_id,
            kind,
            client_id,
            reason: reason.as_str(),
            dry_run,
            detail,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_of_is_stable_and_spread() {
        let mut counts = [0usize; 4];
        for room in 0..10_000u64 {
            counts[shard_of(room, 4)] += 1;
        }
        for c in counts {
            assert!((2_000..3_000).contains(&c), "{counts:?}");
        }
        assert_eq!(shard_of(42, 7), shard_of(42, 7));
    }
}

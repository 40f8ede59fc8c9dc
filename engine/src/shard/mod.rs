//! Shard queues and workers (the I/O layer around [`core::ShardCore`]).
//!
//! `shard = hash(room_id) % N`. Each shard is a lock-free bounded
//! [`ArrayQueue`] drained by one worker thread that owns all state of its
//! rooms (the guard, like aggregation, the room's sessions): no locks on the
//! event path. Workers drain in rounds and hand each round's rows, with the
//! acks that wait for them, to the write-ahead log in one submission
//! ([`crate::wal`]), and park when idle. With `ShardSettings::linger` set
//! (`shards.linger_us`, off by default), a worker naps that long after a
//! round with dense chat instead: chat pushed meanwhile does not wake it (a
//! dense stream costs a wake per nap, not per message), urgent work still
//! does.
//!
//! Each shard has two lanes: **urgent** (leads, session starts and ends)
//! and **events** (chat, likes). A worker's round takes what the events lane
//! holds (up to `drain_batch`), then everything urgent, and handles the
//! urgent ones first: a lead or a join never waits behind a backlog of
//! chat and likes. Anything pushed to the urgent lane before an event was
//! pushed is handled before that event.
//!
//! Overflow is a decision per kind, taken by the caller of
//! [`Shards::try_push`]: leads and session events wait ([`Shards::wait_push`]),
//! chat is answered `busy`, likes are coalesced into a count. The gate sheds
//! before the events lane is full, by [`Shards::pressure`]: likes are held
//! (coalesced) first, then chat is answered `busy`.
//!
//! Cross-room lead facts (the same phone, IP or viewer across rooms) live in
//! the shard that owns the fact's key: a lead travels room shard → phone
//! shard → IP shard → viewer shard → back to its room shard, one way, through
//! each shard's hop queue ([`LeadHop`]); no lock is ever taken.
//!
//! Every decision lives in [`core`], which is sans-IO and tested without
//! threads; this module owns the queues, the worker threads and parking.

pub mod core;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use tokio::sync::oneshot;

use self::core::ShardCore;
use crate::event::{Event, EventKind};
use crate::guard::{Control, Decision, Guard, GuardConfig, LeadCheck, RoomSettingsView};
use crate::metrics::{Metrics, Overflow};
use crate::pii::PiiKeys;
use crate::wal::{LogHandle, SeenId};
use crate::wire::{AckKind, CloseCode, Lead, ServerFrame};

pub use crate::event::Replier;

/// An event plus the way back to its viewer.
#[derive(Debug)]
pub struct Envelope {
    /// The event.
    pub event: Event,
    /// The viewer's connection, for acks and closes; `None` for likes and
    /// session ends (never answered: notices and kicks go through the
    /// replier the shard keeps from the session's `Join`).
    pub reply: Option<Arc<dyn Replier>>,
}

/// A lead travelling through its check stages.
#[derive(Debug)]
pub struct LeadHop {
    check: LeadCheck,
    /// Index into [`LeadStage::ORDER`]; `ORDER.len()` = back home to finish.
    stage: usize,
    head: core::Head,
    lead: Box<Lead>,
}

/// What an admin request asks a shard.
#[derive(Debug)]
pub enum AdminOp {
    /// Apply a control.
    Control(Control, oneshot::Sender<Result<(), String>>),
    /// Read a room's settings.
    Room(u64, oneshot::Sender<RoomSettingsView>),
    /// The node list changed: sessions of rooms this node no longer owns
    /// move away ([`Replier::move_away`]), or with `force` are closed with
    /// `wrong_node` after their queued acks; answers how many.
    Reroute {
        /// The routing now in force.
        routing: Arc<crate::route::Routing>,
        /// Close now instead of waiting for the sessions' acks.
        force: bool,
        /// How many sessions were told.
        reply: oneshot::Sender<usize>,
    },
    /// Ids another node decided (read from ClickHouse when rooms move
    /// here): a resend of one is a replay. Answers how many were this
    /// shard's.
    Restore(Arc<Vec<SeenId>>, oneshot::Sender<usize>),
    /// Lead facts of the whole cluster read from ClickHouse, for the phone
    /// and IP keys this shard owns (`crate::facts`). Answers how many were
    /// taken.
    Facts(Box<crate::guard::FactBatch>, oneshot::Sender<usize>),
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
/// Events queued before a sleeping worker is woken for likes, or a
/// napping one for chat (a quarter of the events lane if that is less: the
/// gate sheds from a quarter full).
const LAZY_WAKE_AT: usize = 256;
/// Longest sleep of an idle worker: likes pushed without a wake wait at
/// most this long (or `linger`, if longer).
const LAZY_PARK: Duration = Duration::from_millis(20);
const ADMIN_CAPACITY: usize = 1_024;

struct Queue {
    /// The events lane: chat and likes.
    q: ArrayQueue<Envelope>,
    /// The urgent lane: leads, session starts and ends.
    urgent: ArrayQueue<Envelope>,
    hops: ArrayQueue<LeadHop>,
    admin: ArrayQueue<AdminOp>,
    /// [`AWAKE`], [`NAPPING`] or [`ASLEEP`]: who must wake the worker.
    state: AtomicU8,
    /// Events waiting that wake the worker whatever its state
    /// ([`LAZY_WAKE_AT`] or a quarter of the events lane).
    wake_at: usize,
    closed: AtomicBool,
    thread: OnceLock<Thread>,
}

/// The worker is in a round: nobody wakes it.
const AWAKE: u8 = 0;
/// The worker handled chat a moment ago and looks again within
/// `ShardSettings::linger`: only urgent work, hops, admin operations and a
/// backlog wake it.
const NAPPING: u8 = 1;
/// The worker is idle: every push but a like wakes it.
const ASLEEP: u8 = 2;

impl Queue {
    /// Wake the worker unless it is in a round.
    fn wake(&self) {
        if self.state.load(Ordering::SeqCst) != AWAKE {
            self.unpark();
        }
    }

    /// Wake the worker only if it is idle (not napping: it looks soon).
    fn wake_if_asleep(&self) {
        if self.state.load(Ordering::SeqCst) == ASLEEP {
            self.unpark();
        }
    }

    fn unpark(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// Settings for the workers.
#[derive(Debug, Clone)]
pub struct ShardSettings {
    /// Number of shards.
    pub count: usize,
    /// Capacity of each shard's events lane (chat, likes).
    pub capacity: usize,
    /// Capacity of each shard's urgent lane (leads, session starts/ends).
    pub urgent_capacity: usize,
    /// Events drained per round.
    pub drain_batch: usize,
    /// How long a worker that just handled chat (while chat is dense) naps
    /// before it looks again, not woken by chat meanwhile (zero: woken per
    /// message).
    pub linger: Duration,
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
                    q: ArrayQueue::new(settings.capacity.max(1)),
                    urgent: ArrayQueue::new(settings.urgent_capacity.max(1)),
                    hops: ArrayQueue::new(HOP_CAPACITY),
                    admin: ArrayQueue::new(ADMIN_CAPACITY),
                    state: AtomicU8::new(AWAKE),
                    wake_at: LAZY_WAKE_AT.min(settings.capacity.max(1) / 4).max(1),
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
                core: ShardCore::new(
                    i,
                    settings.count,
                    guard,
                    pii.clone(),
                    settings.guard.abuse.clone(),
                ),
                pending_hops: VecDeque::new(),
                log: log.clone(),
                metrics: metrics.clone(),
                drain_batch: settings.drain_batch.max(1),
                linger: settings.linger,
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

    /// How full the events lane of `room`'s shard is, 0.0 (empty) to 1.0
    /// (full): what the gate sheds by.
    pub fn pressure(&self, room: u64) -> f64 {
        let q = &self.queues[shard_of(room, self.queues.len())].q;
        q.len() as f64 / q.capacity() as f64
    }

    /// Push without waiting to the event's lane; gives the envelope back if
    /// the lane is full.
    pub fn try_push(&self, env: Envelope) -> Result<(), Envelope> {
        let q = &self.queues[shard_of(env.event.room_id, self.queues.len())];
        let lead = matches!(env.event.kind, EventKind::Lead { .. });
        if lead {
            self.leads_pending.fetch_add(1, Ordering::SeqCst);
        }
        let urgent = matches!(
            env.event.kind,
            EventKind::Lead { .. }
                | EventKind::Withdraw { .. }
                | EventKind::Join { .. }
                | EventKind::Leave { .. }
        );
        // Wake-ups are what a frame's hand-off costs most (a futex wake
        // and a context switch, measured: docs/TUNING.md). Urgent events
        // always wake the worker. Likes have no ack and are summed per
        // second: they wake it only once a batch of them waits (it looks on
        // its own every LAZY_PARK). Chat wakes an idle worker, but not one
        // napping after chat (only with `linger` set): that one looks again
        // within `linger`, so a dense stream of chat costs a wake per
        // linger, not per message.
        let like = matches!(env.event.kind, EventKind::Like { .. });
        let r = if urgent {
            q.urgent.push(env)
        } else {
            q.q.push(env)
        };
        if r.is_err() && lead {
            self.leads_pending.fetch_sub(1, Ordering::SeqCst);
        }
        if urgent || q.q.len() >= q.wake_at {
            q.wake();
        } else if !like {
            q.wake_if_asleep();
        }
        r
    }

    /// Wait for space (backpressure) for an event that must not be dropped
    /// (leads, withdrawals, session start/end) and whose queue
    /// [`Shards::try_push`] just found full: try again with backoff until
    /// it is taken. While this waits the connection reads nothing, so QUIC
    /// flow control pushes back on the viewer. Connections box this future
    /// (the rare path), so it is not space in every connection's task.
    pub(crate) async fn wait_push(&self, mut env: Envelope) {
        self.metrics
            .overflow(env.event.kind.kind(), Overflow::Waited);
        let mut delay = Duration::from_millis(1);
        loop {
            tokio::time::sleep(delay).await;
            match self.try_push(env) {
                Ok(()) => return,
                Err(back) => env = back,
            }
            delay = (delay * 2).min(Duration::from_millis(20));
        }
    }

    /// Queue an admin operation on shard `shard`; `Err` when its admin queue
    /// is full (the caller answers 503).
    pub fn admin(&self, shard: usize, op: AdminOp) -> Result<(), AdminOp> {
        let q = &self.queues[shard % self.queues.len()];
        let r = q.admin.push(op);
        q.unpark();
        r
    }

    /// Drain every queue and stop the workers (blocking). Call after the
    /// gate stopped producing.
    pub fn shutdown(&self) {
        for q in self.queues.iter() {
            q.closed.store(true, Ordering::SeqCst);
            q.unpark();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a shard worker panicked");
            }
        }
    }
}

/// One shard's thread: drains its queues into the [`ShardCore`] and carries
/// out what the core decided (log, frames, hops, counters).
struct Worker {
    index: usize,
    queues: Arc<Vec<Queue>>,
    leads_pending: Arc<AtomicUsize>,
    core: ShardCore,
    /// Hops whose target queue was full; retried every round.
    pending_hops: VecDeque<(usize, LeadHop)>,
    log: LogHandle,
    metrics: Arc<Metrics>,
    drain_batch: usize,
    linger: Duration,
}

impl Worker {
    fn queue(&self) -> &Queue {
        &self.queues[self.index]
    }

    fn run(&mut self) {
        tracing::debug!(shard = self.index, "shard worker started");
        let mut buf = Vec::with_capacity(self.drain_batch);
        let mut urgent = Vec::new();
        // The last round had chat, and chat is dense: nap (chat does not
        // wake a napping worker) instead of sleeping until woken.
        let mut recent = false;
        // When the last round with chat started.
        let mut last_chat: Option<Instant> = None;
        loop {
            let now = crate::now_ms();
            let mut work = self.admin_ops(now);
            work += self.hops(now);
            let q = &self.queues[self.index];
            work += take_round(&q.q, &q.urgent, self.drain_batch, &mut buf, &mut urgent);
            if work == 0 {
                self.core.tick(now);
                self.ship();
                let q = &self.queues[self.index];
                // A worker may stop only when no lead anywhere could still
                // need one of its stages.
                let idle = q.q.is_empty()
                    && q.urgent.is_empty()
                    && q.hops.is_empty()
                    && self.pending_hops.is_empty()
                    && self.leads_pending.load(Ordering::SeqCst) == 0;
                if q.closed.load(Ordering::SeqCst) && idle {
                    break;
                }
                let nap = std::mem::take(&mut recent) && !self.linger.is_zero();
                q.state
                    .store(if nap { NAPPING } else { ASLEEP }, Ordering::SeqCst);
                if q.closed.load(Ordering::SeqCst) {
                    // Waiting for leads in flight on other shards.
                    std::thread::park_timeout(Duration::from_millis(5));
                } else if q.urgent.is_empty() && q.hops.is_empty() && q.admin.is_empty() {
                    if nap && q.q.len() < q.wake_at {
                        std::thread::park_timeout(self.linger);
                    } else if q.q.is_empty() {
                        std::thread::park_timeout(LAZY_PARK);
                    }
                }
                q.state.store(AWAKE, Ordering::SeqCst);
                continue;
            }
            // Only chat makes a worker nap (likes wake it in batches
            // anyway, urgent events always), and only while chat is dense:
            // rounds with chat at most two lingers apart. At sparse chat a
            // nap would find nothing and cost a second wake-up. Without a
            // linger (the default) none of this is looked at.
            recent = false;
            if !self.linger.is_zero()
                && buf
                    .iter()
                    .any(|e| !matches!(e.event.kind, EventKind::Like { .. }))
            {
                let t = Instant::now();
                recent = last_chat.is_some_and(|l| t.duration_since(l) <= self.linger * 2);
                last_chat = Some(t);
            }
            self.metrics.queue_depth[self.index]
                .store(self.queue().q.len() as i64, Ordering::Relaxed);
            for env in urgent.drain(..).chain(buf.drain(..)) {
                self.core.handle(now, env);
            }
            self.core.tick(now);
            self.ship();
        }
        self.core.finish();
        self.ship();
        self.metrics.queue_depth[self.index].store(0, Ordering::Relaxed);
        tracing::debug!(shard = self.index, "shard worker stopped");
    }

    /// Carry out the round: frames and closes now, hops to their shards,
    /// rows and acks to the log, counters once. Blocking in `submit` is the
    /// backpressure chain: a log behind (or over its disk budget) stops this
    /// worker, its queue fills, the gate pushes back on viewers.
    fn ship(&mut self) {
        let out = self.core.poll_output();
        for (r, frame) in out.frames {
            r.reply(frame);
        }
        for (r, code) in out.closes {
            r.close(code);
        }
        for (target, hop) in out.hops {
            self.send_hop(target, hop);
        }
        self.log.submit(out.round);
        self.metrics.add_round(&out.stats);
        if out.stats.leads_done > 0 {
            self.leads_pending
                .fetch_sub(out.stats.leads_done, Ordering::SeqCst);
        }
        self.metrics.idempotency_evicted[self.index]
            .store(self.core.evicted_early(), Ordering::Relaxed);
    }

    fn send_hop(&mut self, target: usize, hop: LeadHop) {
        if let Err(back) = self.queues[target].hops.push(hop) {
            self.pending_hops.push_back((target, back));
        } else {
            self.queues[target].wake();
        }
    }

    fn admin_ops(&mut self, now: i64) -> usize {
        let mut n = 0;
        while let Some(op) = self.queue().admin.pop() {
            n += 1;
            match op {
                AdminOp::Room(room, tx) => {
                    let _ = tx.send(self.core.room_settings(room));
                }
                AdminOp::Reroute {
                    routing,
                    force,
                    reply,
                } => {
                    let leaving = self
                        .core
                        .sessions_leaving(&|room| routing.elsewhere(room).is_none());
                    for r in &leaving {
                        // Refuse new frames first; forced: close even with
                        // acks still to come.
                        r.move_away();
                        if force {
                            r.close_after_replies(CloseCode::WrongNode);
                        }
                    }
                    let _ = reply.send(leaving.len());
                }
                AdminOp::Restore(ids, tx) => {
                    let n = self.core.restore(&ids);
                    let _ = tx.send(n);
                }
                AdminOp::Facts(batch, tx) => {
                    let _ = tx.send(self.core.merge_facts(now, &batch));
                }
                AdminOp::Control(ctl, tx) => {
                    let r = self.core.control(now, &ctl);
                    // Notices and kicks go out before the caller hears back.
                    self.ship();
                    let _ = tx.send(r);
                }
            }
        }
        n
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
        while let Some(hop) = self.queue().hops.pop() {
            n += 1;
            self.core.handle_hop(now, hop);
        }
        n
    }
}

/// Take one round from a shard's lanes: up to `max` events, then
/// everything urgent. The round is handled `urgent` first, then `events`;
/// because the urgent lane is read after the events lane, anything pushed
/// to it before an event of the round was pushed is in the round too (a
/// session's join before its first chat). Returns how many were taken.
fn take_round<T>(
    events_lane: &ArrayQueue<T>,
    urgent_lane: &ArrayQueue<T>,
    max: usize,
    events: &mut Vec<T>,
    urgent: &mut Vec<T>,
) -> usize {
    let before = events.len() + urgent.len();
    while events.len() < max {
        match events_lane.pop() {
            Some(e) => events.push(e),
            None => break,
        }
    }
    while let Some(e) = urgent_lane.pop() {
        urgent.push(e);
    }
    events.len() + urgent.len() - before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_takes_urgent_events_pushed_before_its_events_and_bounds_the_events() {
        let events = ArrayQueue::new(16);
        let urgent = ArrayQueue::new(16);
        let (mut ev, mut ur) = (Vec::new(), Vec::new());
        // A join (urgent) then its chat (events), then another urgent one.
        urgent.push("join").unwrap();
        events.push("chat 1").unwrap();
        events.push("chat 2").unwrap();
        events.push("chat 3").unwrap();
        urgent.push("lead").unwrap();
        assert_eq!(take_round(&events, &urgent, 2, &mut ev, &mut ur), 4);
        let order: Vec<_> = ur.drain(..).chain(ev.drain(..)).collect();
        assert_eq!(order, ["join", "lead", "chat 1", "chat 2"]);
        // The rest next round; an empty round takes nothing.
        assert_eq!(take_round(&events, &urgent, 2, &mut ev, &mut ur), 1);
        assert_eq!(ev, ["chat 3"]);
        ev.clear();
        assert_eq!(take_round(&events, &urgent, 2, &mut ev, &mut ur), 0);
    }

    /// Collects the frames the log releases, for the threaded test below.
    #[derive(Debug)]
    struct Acks(std::sync::mpsc::Sender<ServerFrame>);

    impl Replier for Acks {
        fn reply(&self, frame: ServerFrame) {
            let _ = self.0.send(frame);
        }
        fn close(&self, _: CloseCode) {}
    }

    fn acked_id(frame: ServerFrame) -> u64 {
        match frame {
            ServerFrame::Ack { client_id, .. } => client_id,
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    #[test]
    fn a_napping_worker_is_woken_by_a_lead_and_takes_the_waiting_chat_along() {
        let dir = std::env::temp_dir().join(format!("rg-shard-{}", rand::random::<u64>()));
        let metrics = Arc::new(Metrics::new(1));
        let (log, _, _, log_thread) = crate::wal::start(
            crate::wal::LogSettings {
                dir: dir.clone(),
                segment_bytes: 1 << 20,
                max_bytes: 1 << 30,
                max_group_bytes: 1 << 20,
                group_commit: Duration::ZERO,
                preallocate: true,
            },
            metrics.clone(),
        )
        .unwrap();
        const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        let pii = Arc::new(PiiKeys::from_hex(KEY, &KEY.replace('0', "f"), "k1").unwrap());
        // A nap far longer than the test: only a wake can end it.
        let shards = Shards::start(
            &ShardSettings {
                count: 1,
                capacity: 1_024,
                urgent_capacity: 1_024,
                drain_batch: 1_024,
                linger: Duration::from_secs(600),
                guard: GuardConfig::default(),
            },
            log.clone(),
            pii,
            metrics,
            &[],
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let acks: Arc<dyn Replier> = Arc::new(Acks(tx));
        let env = |viewer: u64, kind: EventKind| Envelope {
            event: crate::event::Event {
                room_id: 7,
                viewer_id: viewer,
                session_id: viewer,
                received_at_ms: crate::now_ms(),
                kind,
            },
            reply: Some(acks.clone()),
        };
        let chat = |id: u64| EventKind::Chat {
            client_msg_id: id,
            text: format!("hello number {id}"),
        };
        let wait = Duration::from_secs(30);
        // An idle worker is woken by chat. Two rounds with chat within two
        // lingers of each other: chat is dense, so after the second the
        // worker naps.
        shards.try_push(env(1, chat(1))).unwrap();
        assert_eq!(acked_id(rx.recv_timeout(wait).unwrap()), 1);
        shards.try_push(env(1, chat(2))).unwrap();
        assert_eq!(acked_id(rx.recv_timeout(wait).unwrap()), 2);
        let q = &shards.queues[0];
        let deadline = std::time::Instant::now() + wait;
        while q.state.load(Ordering::SeqCst) != NAPPING {
            assert!(
                std::time::Instant::now() < deadline,
                "the worker never napped"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Chat does not wake a napping worker: it waits out the nap
        // (600 s: the test would time out)...
        shards.try_push(env(2, chat(4))).unwrap();
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "chat woke a napping worker"
        );
        // ...but a lead does, at once, and its round takes the chat along.
        let lead = Lead {
            client_lead_id: 3,
            phone: "13800138000".into(),
            consent: true,
            fill_ms: 5_000,
            ..Lead::default()
        };
        shards
            .try_push(env(
                3,
                EventKind::Lead {
                    lead: Box::new(lead),
                    ip: "10.0.0.1".into(),
                },
            ))
            .unwrap();
        let mut got = vec![
            acked_id(rx.recv_timeout(wait).unwrap()),
            acked_id(rx.recv_timeout(wait).unwrap()),
        ];
        got.sort_unstable();
        assert_eq!(got, [3, 4], "the lead and the chat it took along");
        shards.shutdown();
        drop(shards);
        drop(log);
        log_thread.join().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn shard_of_is_stable_and_spread() {
        let mut counts = [0usize; 4];
        for room in 0..10_000u64 {
            counts[shard_of(room, 4)] += 1;
        }
        for c in counts {
            assert!((2_000..3_000).contains(&c), "{counts:?}");
        }
        // Pinned vectors: a change to the function would move rooms between
        // shards (and facts between their owners) on upgrade.
        let got: Vec<usize> = [0u64, 1, 42, 1000, 1 << 63]
            .iter()
            .map(|k| shard_of(*k, 7))
            .collect();
        assert_eq!(got, vec![2, 2, 5, 0, 6]);
        assert_eq!(shard_of(1000, 2), 0);
    }
}

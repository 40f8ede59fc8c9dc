//! Shard queues and workers.
//!
//! `shard = hash(room_id) % N`. Each shard is a lock-free bounded
//! [`ArrayQueue`] drained by one worker thread that owns all state of its
//! rooms (the guard, like aggregation): no locks on the event path. Workers
//! drain in rounds, hand each round's rows to the sink in one vector per
//! table, and park when idle.
//!
//! Overflow is a decision per kind, taken by the caller of
//! [`Shards::try_push`]: leads and session events wait ([`Shards::push_wait`]),
//! chat is answered `busy`, likes are coalesced into a count.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use rustc_hash::FxHashMap;

use crate::event::{Event, EventKind};
use crate::guard::{Decision, Guard, GuardConfig};
use crate::metrics::{Metrics, Overflow};
use crate::pii::{canonical_phone, mask_phone, PiiKeys};
use crate::sink::{ChatRow, Item, LeadRow, LikeRow, ModerationRow, SessionRow, SinkTx};
use crate::wire::{AckKind, Reason, ServerFrame};

/// Where a worker sends frames for one viewer's connection.
pub trait Replier: Send + Sync + std::fmt::Debug {
    /// Queue a frame to the viewer; never blocks.
    fn reply(&self, frame: ServerFrame);
}

/// An ack to send later (after its row is committed).
#[derive(Debug)]
pub struct DeferredAck {
    to: Arc<dyn Replier>,
    frame: ServerFrame,
}

impl DeferredAck {
    /// Send it now.
    pub fn send(self) {
        self.to.reply(self.frame);
    }
}

/// An event plus the way back to its viewer.
#[derive(Debug)]
pub struct Envelope {
    /// The event.
    pub event: Event,
    /// The viewer's connection, for acks and notices.
    pub reply: Option<Arc<dyn Replier>>,
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

/// Map a room to its shard (stable across restarts and builds).
pub fn shard_of(room_id: u64, shards: usize) -> usize {
    // splitmix64 finaliser: spreads sequential room ids evenly.
    let mut z = room_id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % shards as u64) as usize
}

struct Queue {
    q: ArrayQueue<Envelope>,
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
    queues: Vec<Arc<Queue>>,
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
    /// Start `settings.count` workers writing to `sink`.
    pub fn start(
        settings: &ShardSettings,
        sink: SinkTx,
        pii: Arc<PiiKeys>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for i in 0..settings.count {
            let queue = Arc::new(Queue {
                q: ArrayQueue::new(settings.capacity),
                sleeping: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                thread: OnceLock::new(),
            });
            let mut worker = Worker {
                index: i,
                queue: queue.clone(),
                guard: Guard::new(&settings.guard),
                likes: FxHashMap::default(),
                sink: sink.clone(),
                pii: pii.clone(),
                metrics: metrics.clone(),
                drain_batch: settings.drain_batch.max(1),
                out: Round::default(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("roomgate-shard-{i}"))
                .spawn(move || worker.run())?;
            let _ = queue.thread.set(handle.thread().clone());
            queues.push(queue);
            threads.push(handle);
        }
        Ok(Shards {
            queues,
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

    /// Push without waiting; gives the envelope back if the queue is full.
    pub fn try_push(&self, env: Envelope) -> Result<(), Envelope> {
        let q = &self.queues[shard_of(env.event.room_id, self.queues.len())];
        let r = q.q.push(env);
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

    /// Drain every queue and stop the workers (blocking). Call after the
    /// gate stopped producing.
    pub fn shutdown(&self) {
        for q in &self.queues {
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

/// Rows produced by one drain round, one vector per table.
#[derive(Default)]
struct Round {
    chat: Vec<Item<ChatRow>>,
    likes: Vec<Item<LikeRow>>,
    leads: Vec<Item<LeadRow>>,
    sessions: Vec<Item<SessionRow>>,
    moderation: Vec<Item<ModerationRow>>,
}

/// The identifying fields of an event, kept after its payload moved.
struct Head {
    room_id: u64,
    viewer_id: u64,
    session_id: u64,
    ts: i64,
}

struct Worker {
    index: usize,
    queue: Arc<Queue>,
    guard: Guard,
    /// Like taps per (room, unix second) not yet handed to the sink.
    likes: FxHashMap<(u64, u32), u64>,
    sink: SinkTx,
    pii: Arc<PiiKeys>,
    metrics: Arc<Metrics>,
    drain_batch: usize,
    out: Round,
}

fn send_rows<R>(
    tx: &tokio::sync::mpsc::Sender<Vec<Item<R>>>,
    rows: &mut Vec<Item<R>>,
    m: &Metrics,
    table: usize,
) {
    if rows.is_empty() {
        return;
    }
    m.tables[table]
        .pending_rows
        .fetch_add(rows.len() as i64, Ordering::Relaxed);
    let batch = std::mem::take(rows);
    // Blocking here is the backpressure chain: a saturated writer stops this
    // worker, its queue fills, the gate pushes back on viewers.
    if tx.blocking_send(batch).is_err() {
        tracing::error!(table, "sink writer gone; rows lost");
    }
}

impl Worker {
    fn run(&mut self) {
        tracing::debug!(shard = self.index, "shard worker started");
        let mut buf = Vec::with_capacity(self.drain_batch);
        loop {
            while buf.len() < self.drain_batch {
                match self.queue.q.pop() {
                    Some(e) => buf.push(e),
                    None => break,
                }
            }
            let now = crate::now_ms();
            if buf.is_empty() {
                self.flush_likes(Some(now));
                self.guard.tick(now);
                self.ship();
                if self.queue.closed.load(Ordering::SeqCst) && self.queue.q.is_empty() {
                    break;
                }
                self.queue.sleeping.store(true, Ordering::SeqCst);
                if self.queue.q.is_empty() && !self.queue.closed.load(Ordering::SeqCst) {
                    std::thread::park_timeout(Duration::from_millis(100));
                }
                self.queue.sleeping.store(false, Ordering::SeqCst);
                continue;
            }
            self.metrics.queue_depth[self.index]
                .store(self.queue.q.len() as i64, Ordering::Relaxed);
            for env in buf.drain(..) {
                self.handle(now, env);
            }
            self.flush_likes(Some(now));
            self.ship();
        }
        self.flush_likes(None);
        self.ship();
        self.metrics.queue_depth[self.index].store(0, Ordering::Relaxed);
        tracing::debug!(shard = self.index, "shard worker stopped");
    }

    fn ship(&mut self) {
        let m = &self.metrics;
        send_rows(&self.sink.chat, &mut self.out.chat, m, 0);
        send_rows(&self.sink.likes, &mut self.out.likes, m, 1);
        send_rows(&self.sink.leads, &mut self.out.leads, m, 2);
        send_rows(&self.sink.sessions, &mut self.out.sessions, m, 3);
        send_rows(&self.sink.moderation, &mut self.out.moderation, m, 4);
        self.metrics
            .idempotency_evicted
            .fetch_max(self.guard.evicted_early(), Ordering::Relaxed);
    }

    /// Hand completed seconds (all, when `now` is `None`) to the sink.
    fn flush_likes(&mut self, now: Option<i64>) {
        if self.likes.is_empty() {
            return;
        }
        let current = now.map(|n| (n / 1000) as u32);
        let out = &mut self.out.likes;
        self.likes.retain(|&(room_id, ts), taps| {
            if current.is_some_and(|c| ts >= c) {
                return true;
            }
            out.push(Item::row(LikeRow {
                room_id,
                ts,
                taps: *taps,
            }));
            false
        });
    }

    fn handle(&mut self, now: i64, env: Envelope) {
        let Envelope { event: ev, reply } = env;
        let d = self.guard.decide(now, &ev);
        let kind = ev.kind.kind();
        let head = Head {
            room_id: ev.room_id,
            viewer_id: ev.viewer_id,
            session_id: ev.session_id,
            ts: ev.received_at_ms,
        };
        self.metrics.decision(
            kind,
            d.verdict,
            if d.replay { Reason::Replay } else { d.reason },
            1,
        );
        match ev.kind {
            EventKind::Join { client, .. } => self.out.sessions.push(Item::row(SessionRow {
                room_id: ev.room_id,
                ts: ev.received_at_ms,
                viewer_id: ev.viewer_id,
                session_id: ev.session_id,
                event: "join",
                watch_ms: 0,
                client,
                close: "",
            })),
            EventKind::Leave {
                joined_at_ms,
                close,
            } => self.out.sessions.push(Item::row(SessionRow {
                room_id: ev.room_id,
                ts: ev.received_at_ms,
                viewer_id: ev.viewer_id,
                session_id: ev.session_id,
                event: "leave",
                watch_ms: (ev.received_at_ms - joined_at_ms).max(0) as u64,
                client: String::new(),
                close,
            })),
            EventKind::Like { count } => {
                if d.stores() {
                    let sec = (ev.received_at_ms / 1000) as u32;
                    *self.likes.entry((ev.room_id, sec)).or_default() += u64::from(count);
                }
            }
            EventKind::Chat {
                client_msg_id,
                text,
            } => {
                if let Some(r) = &reply {
                    r.reply(ack_frame(AckKind::Chat, client_msg_id, &d));
                }
                if d.stores() {
                    self.out.chat.push(Item::row(ChatRow {
                        room_id: ev.room_id,
                        ts: ev.received_at_ms,
                        viewer_id: ev.viewer_id,
                        session_id: ev.session_id,
                        client_msg_id,
                        text,
                        verdict: d.verdict.as_str(),
                        dry_run_reasons: Vec::new(),
                    }));
                } else if !d.replay {
                    self.moderation(&head, "chat", client_msg_id, d.reason, text);
                }
            }
            EventKind::Lead { lead, ip } => {
                let id = lead.client_lead_id;
                let frame = ack_frame(AckKind::Lead, id, &d);
                if !d.stores() {
                    if let Some(r) = &reply {
                        r.reply(frame);
                    }
                    if !d.replay {
                        self.moderation(&head, "lead", id, d.reason, String::new());
                    }
                    return;
                }
                let phone = canonical_phone(&lead.phone);
                let fields = serde_json::to_string(&lead.fields).unwrap_or_default();
                let row = LeadRow {
                    room_id: ev.room_id,
                    ts: ev.received_at_ms,
                    viewer_id: ev.viewer_id,
                    session_id: ev.session_id,
                    client_lead_id: id,
                    verdict: d.verdict.as_str(),
                    score: 100,
                    reasons: Vec::new(),
                    dry_run_reasons: Vec::new(),
                    phone_hmac: self.pii.hmac_hex(&phone),
                    phone_masked: mask_phone(&phone),
                    phone_enc: self.pii.encrypt_hex(&phone),
                    wechat_enc: self.pii.encrypt_hex(&lead.wechat),
                    name_enc: self.pii.encrypt_hex(&lead.name),
                    fields_enc: if lead.fields.is_empty() {
                        String::new()
                    } else {
                        self.pii.encrypt_hex(&fields)
                    },
                    ip_hmac: self.pii.hmac_hex(&ip),
                    consent: lead.consent,
                    fill_ms: lead.fill_ms,
                };
                // The lead's ack waits until its row is committed.
                let ack = reply.map(|to| DeferredAck { to, frame });
                self.out.leads.push(Item { row, ack });
            }
        }
    }

    fn moderation(
        &mut self,
        ev: &Head,
        kind: &'static str,
        client_id: u64,
        reason: Reason,
        detail: String,
    ) {
        self.out.moderation.push(Item::row(ModerationRow {
            room_id: ev.room_id,
            ts: ev.ts,
            viewer_id: ev.viewer_id,
            session_id: ev.session_id,
            kind,
            client_id,
            reason: reason.as_str(),
            dry_run: false,
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

//! One viewer connection: handshake, `Hello`, the frame loop, acks out.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::GateCtx;
use crate::event::{Event, EventKind, Kind};
use crate::guard::Decision;
use crate::metrics::Overflow;
use crate::shard::{ack_frame, Envelope, Replier};
use crate::sink::ModerationRow;
use crate::wal::{Row, Submit};
use crate::wire::{
    self, ticket, AckKind, ClientFrame, CloseCode, FrameDecoder, Reason, ServerFrame, Verdict,
    Welcome,
};

/// Frames to the connection's writer task.
#[derive(Debug)]
enum Out {
    Frame(ServerFrame),
    /// Finish the stream and close the connection with this code (and
    /// reason phrase, if not the code's name) after everything queued
    /// before it was written.
    Close(CloseCode, Option<Box<str>>),
}

/// Why a frame could not be queued.
#[derive(Debug)]
enum Refused {
    /// `max_pending_acks` frames wait already: the viewer does not read.
    Full(Out),
    /// The writer is gone (the connection is closing).
    Closed,
}

/// One connection's frames on their way to its writer task: shard workers
/// queue (never wait), the writer takes them in order. It holds only what
/// waits (nothing while the writer sleeps), so an idle viewer costs a few
/// dozen bytes here; a tokio channel allocates a block of 32 slots per
/// connection up front (~2 KiB per viewer, measured with heaptrack:
/// docs/TUNING.md, "Memory per viewer").
#[derive(Debug)]
struct OutQueue {
    state: Mutex<OutState>,
    /// Wakes the writer; a wake with no writer waiting is kept for its next
    /// wait, so none is lost.
    ready: Notify,
}

#[derive(Debug)]
struct OutState {
    frames: VecDeque<Out>,
    /// Most frames waiting before the queue refuses.
    cap: usize,
    /// The writer ended (or the session, before its end): nothing more is
    /// taken.
    closed: bool,
}

impl OutQueue {
    fn new(cap: usize) -> Self {
        Self {
            state: Mutex::new(OutState {
                frames: VecDeque::new(),
                cap,
                closed: false,
            }),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `out` behind what waits, without waiting; refused when
    /// `cap` frames wait.
    fn push(&self, out: Out) -> Result<(), Refused> {
        self.push_within(out, false)
    }

    /// Queue `out` whatever waits (the session's own last frame: its close
    /// after the acks).
    fn push_last(&self, out: Out) -> Result<(), Refused> {
        self.push_within(out, true)
    }

    fn push_within(&self, out: Out, over_cap: bool) -> Result<(), Refused> {
        {
            let mut st = self.lock();
            if st.closed {
                return Err(Refused::Closed);
            }
            if st.frames.len() >= st.cap && !over_cap {
                return Err(Refused::Full(out));
            }
            st.frames.push_back(out);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// The next frame, if one waits.
    fn try_pop(&self) -> Option<Out> {
        self.lock().frames.pop_front()
    }

    /// The next frame, waiting for one; `None` once the queue is closed.
    /// Before it waits, the emptied queue gives its memory back.
    async fn pop(&self) -> Option<Out> {
        loop {
            {
                let mut st = self.lock();
                if let Some(out) = st.frames.pop_front() {
                    return Some(out);
                }
                if st.closed {
                    return None;
                }
                if st.frames.capacity() > 0 {
                    st.frames = VecDeque::new();
                }
            }
            self.ready.notified().await;
        }
    }

    /// Refuse what comes and drop what waits: the writer ended, or the
    /// session did without reaching its end (then the writer stops too).
    fn close(&self) {
        {
            let mut st = self.lock();
            st.closed = true;
            st.frames = VecDeque::new();
        }
        self.ready.notify_one();
    }
}

/// Closes its queue when dropped: held by the writer task (however it
/// ends: done, a failed write, aborted, even before its first poll) and by
/// the session until it reaches [`Session::end`] (a session that unwinds
/// or is dropped before then stops its writer, which would otherwise keep
/// the connection open).
struct Closing(Option<Arc<OutQueue>>);

impl Closing {
    fn new(queue: &Arc<OutQueue>) -> Self {
        Self(Some(queue.clone()))
    }

    /// The session reached its end: the close is now its own business.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some(q) = self.0.take() {
            q.close();
        }
    }
}

/// The worker-facing side of a connection.
#[derive(Debug)]
struct ConnReplier {
    tx: Arc<OutQueue>,
    conn: quinn::Connection,
    /// The close code the engine closed this connection with (`NOT_CLOSED`
    /// until then), so the session records why it ended.
    closed_with: Arc<AtomicU32>,
    /// The session's room and the routing, for a `wrong_node` close's
    /// reason phrase (the room's new owner).
    room_id: u64,
    routing: Arc<crate::route::Routing>,
    /// Moving the session to another node without leaving anything
    /// half-done (only with a node list: one node never moves rooms).
    handover: Option<Arc<Handover>>,
}

/// A session's chat messages and leads handed over but not yet acked, and
/// whether its room is moving to another node. The session counts a frame
/// in before it checks `moving`; the replier sets `moving` before it reads
/// the count (both `SeqCst`): so either the session refuses the frame, or
/// the replier waits for its ack before it closes. Nothing the client is
/// told to resend elsewhere is stored here too.
#[derive(Debug, Default)]
struct Handover {
    moving: AtomicBool,
    inflight: AtomicU32,
}

impl Handover {
    /// Count a chat message or lead in. `Err(last)` when the room is
    /// moving: the frame must not be handed over, and `last` says this
    /// session now has nothing in flight (the caller closes it: an ack that
    /// raced with this frame may have seen it counted and left the close).
    fn admit(&self) -> Result<(), bool> {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        if self.moving.load(Ordering::SeqCst) {
            let prev = self.inflight.fetch_sub(1, Ordering::SeqCst);
            return Err(prev == 1);
        }
        Ok(())
    }

    /// An ack went out; `true` when that was the last one of a moving
    /// session.
    fn acked(&self) -> bool {
        let prev = self
            .inflight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            })
            .unwrap_or(0);
        prev <= 1 && self.moving.load(Ordering::SeqCst)
    }

    /// Start moving; `true` when nothing is in flight (close now).
    fn start_moving(&self) -> bool {
        self.moving.store(true, Ordering::SeqCst);
        self.inflight.load(Ordering::SeqCst) == 0
    }
}

/// How long a moving session may take to get its last acks out before it
/// is closed anyway.
const HANDOVER_GRACE: Duration = Duration::from_secs(5);

impl ConnReplier {
    /// The reason phrase for `code` when it is not the code's name.
    fn phrase(&self, code: CloseCode) -> Option<Box<str>> {
        (code == CloseCode::WrongNode).then(|| {
            self.routing
                .wrong_node_reason(self.room_id)
                .unwrap_or_else(|| code.as_str().to_owned())
                .into_boxed_str()
        })
    }
}

const NOT_CLOSED: u32 = u32::MAX;

impl Replier for ConnReplier {
    fn reply(&self, frame: ServerFrame) {
        let ack = matches!(frame, ServerFrame::Ack { .. });
        match self.tx.push(Out::Frame(frame)) {
            Ok(()) | Err(Refused::Closed) => {}
            Err(Refused::Full(_)) => {
                // The viewer does not read its acks: bounded memory wins.
                self.close(CloseCode::SlowConsumer);
            }
        }
        if ack && self.handover.as_ref().is_some_and(|h| h.acked()) {
            self.close_after_replies(CloseCode::WrongNode);
        }
    }

    fn move_away(&self) {
        if self.handover.as_ref().is_none_or(|h| h.start_moving()) {
            self.close_after_replies(CloseCode::WrongNode);
        }
    }

    fn close(&self, code: CloseCode) {
        let _ = self.closed_with.compare_exchange(
            NOT_CLOSED,
            code.code(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        close_with(&self.conn, code, self.phrase(code).as_deref());
    }

    fn close_after_replies(&self, code: CloseCode) {
        let first = self
            .closed_with
            .compare_exchange(
                NOT_CLOSED,
                code.code(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok();
        // Behind the queued frames; if the queue is full, at once.
        let phrase = self.phrase(code);
        if first {
            match self.tx.push(Out::Close(code, phrase)) {
                Ok(()) => {}
                Err(Refused::Full(Out::Close(_, phrase))) => {
                    close_with(&self.conn, code, phrase.as_deref());
                }
                Err(_) => close_with(&self.conn, code, self.phrase(code).as_deref()),
            }
        }
    }
}

fn close(conn: &quinn::Connection, code: CloseCode) {
    close_with(conn, code, None);
}

/// Close with `code` and `phrase` (the code's name if `None`).
fn close_with(conn: &quinn::Connection, code: CloseCode, phrase: Option<&str>) {
    let phrase = phrase.unwrap_or(code.as_str());
    conn.close(code.code().into(), phrase.as_bytes());
}

/// Map why a connection ended to a close code for metrics and `sessions`.
fn close_of(err: &quinn::ConnectionError) -> CloseCode {
    match err {
        quinn::ConnectionError::ApplicationClosed(c) => {
            CloseCode::from_code(c.error_code.into_inner()).unwrap_or(CloseCode::Normal)
        }
        quinn::ConnectionError::LocallyClosed => CloseCode::Normal,
        quinn::ConnectionError::TimedOut => CloseCode::IdleTimeout,
        _ => CloseCode::Normal,
    }
}

/// An admitted connection's place in [`super::admission::Admission`]:
/// its handshake slot is given back at a valid `Hello` (or when it ends
/// without one), its connection slot when it ends.
struct Slot<'a> {
    ctx: &'a GateCtx,
    ip: IpAddr,
    handshaking: bool,
}

impl Slot<'_> {
    fn handshake_over(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            let mut a = self.ctx.admission.lock().unwrap_or_else(|p| p.into_inner());
            a.handshake_over(self.ip);
            self.ctx.metrics.set_admission(a.open(), a.handshaking());
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut a = self.ctx.admission.lock().unwrap_or_else(|p| p.into_inner());
        if self.handshaking {
            a.handshake_over(self.ip);
        }
        a.closed(self.ip);
        self.ctx.metrics.set_admission(a.open(), a.handshaking());
    }
}

/// Serve one admitted connection to its end.
///
/// The connection's task lives as long as the viewer stays, so its future
/// is kept small (docs/TUNING.md, "Memory per viewer"): the `Incoming`
/// (several hundred bytes) comes boxed and is gone after the accept, the
/// `Hello` phase's locals end with it, a frame is handled without an await,
/// and the rare waits (a full shard queue, the session's end) are boxed
/// futures of their own instead of space every connection carries.
pub(super) async fn run(incoming: Box<quinn::Incoming>, ctx: Arc<GateCtx>, ip: IpAddr) {
    let mut slot = Slot {
        ctx: &ctx,
        ip,
        handshaking: true,
    };
    let deadline = Instant::now() + ctx.handshake_timeout;
    let code = match incoming.accept() {
        Ok(connecting) => handshake_and_session(connecting, &ctx, &mut slot, deadline).await,
        Err(_) => None,
    };
    drop(slot);
    if let Some(code) = code {
        ctx.metrics.close(code);
    }
}

async fn handshake_and_session(
    connecting: quinn::Connecting,
    ctx: &Arc<GateCtx>,
    slot: &mut Slot<'_>,
    deadline: Instant,
) -> Option<CloseCode> {
    let conn = match tokio::time::timeout_at(deadline.into(), connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "handshake failed");
            return None;
        }
        Err(_) => return Some(CloseCode::HelloTimeout),
    };
    Some(session(&conn, ctx, slot, deadline).await)
}

/// The protocol version the connection negotiated (its ALPN; the server
/// offers only known ones, and a client that offered none speaks the
/// first version).
fn protocol_version(conn: &quinn::Connection) -> wire::Version {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .and_then(|p| wire::Version::from_alpn(&p))
        .unwrap_or(wire::Version::V1)
}

/// Read exactly one frame during the hello phase.
async fn read_hello(
    recv: &mut quinn::RecvStream,
    dec: &mut FrameDecoder,
) -> Result<ClientFrame, CloseCode> {
    loop {
        match dec.next_frame() {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(e) => return Err(e.close_code()),
        }
        match recv.read_chunk(16 * 1024, true).await {
            Ok(Some(chunk)) => dec.push(&chunk.bytes),
            Ok(None) => return Err(CloseCode::UnexpectedFrame),
            Err(_) => return Err(CloseCode::Normal),
        }
    }
}

/// A connection past its `Hello`: the stream, the decoder (it may hold the
/// start of the next frame), the ticket's claims and the app's name.
struct Opened {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    dec: FrameDecoder,
    claims: ticket::Claims,
    client: String,
}

/// The `Hello` phase: the stream, a valid ticket for a room this node
/// owns. `Err` after the connection was closed with that code.
async fn open(
    conn: &quinn::Connection,
    ctx: &GateCtx,
    deadline: Instant,
) -> Result<Opened, CloseCode> {
    let mut dec = FrameDecoder::with_version(ctx.limits, protocol_version(conn));
    let hello = async {
        let (send, mut recv) = conn.accept_bi().await.map_err(|e| close_of(&e))?;
        let frame = read_hello(&mut recv, &mut dec).await?;
        Ok::<_, CloseCode>((send, recv, frame))
    };
    let (send, recv, frame) = match tokio::time::timeout_at(deadline.into(), hello).await {
        Ok(Ok(x)) => x,
        Ok(Err(code)) => {
            close(conn, code);
            return Err(code);
        }
        Err(_) => {
            close(conn, CloseCode::HelloTimeout);
            return Err(CloseCode::HelloTimeout);
        }
    };
    let ClientFrame::Hello(hello) = frame else {
        close(conn, CloseCode::UnexpectedFrame);
        return Err(CloseCode::UnexpectedFrame);
    };
    let claims = match ctx
        .tickets
        .verify(&hello.ticket, (crate::now_ms() / 1000) as u64)
    {
        Ok(c) => c,
        Err(e) => {
            let code = ticket_close(e);
            tracing::debug!(error = %e, "ticket refused");
            close(conn, code);
            return Err(code);
        }
    };
    if let Some(phrase) = ctx.routing.wrong_node_reason(claims.room_id) {
        // Another node owns the room: tell the client where it lives.
        tracing::debug!(room = claims.room_id, %phrase, "room owned by another node");
        close_with(conn, CloseCode::WrongNode, Some(&phrase));
        return Err(CloseCode::WrongNode);
    }
    // Free text from the app: stored (`sessions.client`), so masked.
    let client =
        crate::guard::text::redact_contacts(&hello.client.chars().take(64).collect::<String>())
            .into_owned();
    Ok(Opened {
        send,
        recv,
        dec,
        claims,
        client,
    })
}

async fn session(
    conn: &quinn::Connection,
    ctx: &Arc<GateCtx>,
    slot: &mut Slot<'_>,
    deadline: Instant,
) -> CloseCode {
    let Opened {
        send,
        mut recv,
        mut dec,
        claims,
        client,
    } = match open(conn, ctx, deadline).await {
        Ok(o) => o,
        Err(code) => return code,
    };
    let now_ms = crate::now_ms();
    slot.handshake_over();
    ctx.metrics.frame(Kind::Session);
    ctx.metrics
        .connections_opened
        .fetch_add(1, Ordering::Relaxed);
    let session_id = ctx.session_id();
    let tx = Arc::new(OutQueue::new(ctx.max_pending_acks.max(4)));
    let closed_with = Arc::new(AtomicU32::new(NOT_CLOSED));
    // Only a node of a deployment (`routing.node_id`) can see its rooms
    // move: one node keeps the hot path free of the count.
    let handover = (!ctx.routing.self_id().is_empty()).then(|| Arc::new(Handover::default()));
    let replier: Arc<dyn Replier> = Arc::new(ConnReplier {
        tx: tx.clone(),
        conn: conn.clone(),
        closed_with: closed_with.clone(),
        room_id: claims.room_id,
        routing: ctx.routing.clone(),
        handover: handover.clone(),
    });
    let writer = tokio::spawn(write_loop(send, Closing::new(&tx), conn.clone()));
    let unended = Closing::new(&tx);
    // A new queue has room for its first frame.
    let _ = tx.push(Out::Frame(ServerFrame::Welcome(Welcome {
        room_id: claims.room_id,
        viewer_id: claims.viewer_id,
        session_id,
        settings: ctx.room_settings.clone(),
    })));
    let mut s = Session {
        ctx: ctx.clone(),
        room_id: claims.room_id,
        viewer_id: claims.viewer_id,
        session_id,
        ip: slot.ip.to_string(),
        replier,
        pending_likes: 0,
        pending_since_ms: 0,
        likes_retry_at: None,
        counts: [0; 5],
        expires_at: claims.expires_at,
        notice_at: None,
        expiry: tokio::time::Instant::now(),
        busy: None,
        busy_due: None,
        handover,
        told_pace_ms: 0,
        told_at_ms: now_ms,
        last_like_ms: now_ms,
        last_like_full: false,
    };
    s.set_expiry(claims.expires_at);
    let ip = s.ip.clone();
    s.push_wait(EventKind::Join { client, ip }).await;
    ctx.reading.fetch_add(1, Ordering::SeqCst);
    let code = s.frames(conn, &mut recv, &mut dec, &tx).await;
    // The end: once per session, so boxed (its waits would otherwise be
    // space in every connection's task).
    unended.disarm();
    Box::pin(s.end(conn, code, now_ms, &closed_with, tx, writer)).await
}

/// The close code for a refused ticket.
fn ticket_close(e: ticket::TicketError) -> CloseCode {
    match e {
        ticket::TicketError::Expired => CloseCode::TicketExpired,
        _ => CloseCode::BadTicket,
    }
}

/// The monotonic instant at Unix time `unix_ms` (now if that has passed).
fn instant_at_ms(unix_ms: i64) -> tokio::time::Instant {
    let ms = unix_ms.saturating_sub(crate::now_ms()).max(0);
    tokio::time::Instant::now() + Duration::from_millis(ms as u64)
}

/// The monotonic instant at Unix time `unix_secs` (now if that has passed).
fn instant_at(unix_secs: u64) -> tokio::time::Instant {
    let ms = i64::try_from(unix_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000)
        .saturating_sub(crate::now_ms())
        .max(0);
    tokio::time::Instant::now() + Duration::from_millis(ms as u64)
}

/// `queue` is a parameter, not built in the body, so it closes the queue
/// even if the task is aborted before its first poll.
async fn write_loop(mut send: quinn::SendStream, queue: Closing, conn: quinn::Connection) {
    if let Some(q) = &queue.0 {
        write_frames(&mut send, q, &conn).await;
    }
}

async fn write_frames(send: &mut quinn::SendStream, queue: &OutQueue, conn: &quinn::Connection) {
    // Frames queued together are written together: one stream write (one
    // lock of the connection, one wake of its driver) per batch, not per ack.
    // Given back after each write: an idle viewer costs nothing here.
    let mut buf = Vec::new();
    let mut closing = None;
    loop {
        let Some(first) = queue.pop().await else {
            // Closed: the session ended without its own close.
            return;
        };
        let mut next = Some(first);
        while let Some(out) = next.take() {
            match out {
                Out::Frame(f) => buf.extend_from_slice(&wire::encode(&f)),
                Out::Close(code, phrase) => {
                    closing = Some((code, phrase));
                    break;
                }
            }
            if buf.len() >= WRITE_BATCH_BYTES {
                break;
            }
            next = queue.try_pop();
        }
        if !buf.is_empty() {
            if send.write_all(&buf).await.is_err() {
                return;
            }
            buf = Vec::new();
        }
        if let Some((code, phrase)) = closing {
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
            close_with(conn, code, phrase.as_deref());
            return;
        }
    }
}

/// Most bytes gathered into one stream write.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// The span a like frame's taps were added up over, ms: a client told
/// the pace `told_ms` added them up since its previous like frame (at
/// `last_ms`), at most one pace ago; the per-viewer cap judges them over
/// that span. Never before the previous frame, so taps already judged are
/// not judged again over the same time; 0 when not paced (or the clock
/// stepped back).
fn paced_span_ms(told_ms: u32, last_ms: i64, now_ms: i64) -> i64 {
    i64::from(told_ms)
        .min(now_ms.saturating_sub(last_ms))
        .max(0)
}

/// A like frame at `now_ms` from a session told the pace `told_ms` at
/// `told_at_ms`, whose previous like frame came at `last_ms`, ignored the
/// pace: it came sooner than half of it (the half leaves room for a
/// client's timer and the network bunching frames). Not when unpaced, not
/// within one pace of the telling (frames already on their way), and not
/// when the previous frame was full (`after_full`: it carried
/// `max_like_count` taps, so this one is the rest of the same batch, split
/// because one frame cannot carry it all).
fn early_like(told_ms: u32, told_at_ms: i64, last_ms: i64, now_ms: i64, after_full: bool) -> bool {
    let pace = i64::from(told_ms);
    told_ms > 0
        && !after_full
        && now_ms.saturating_sub(told_at_ms) >= pace
        && now_ms.saturating_sub(last_ms) < pace / 2
}

/// What a frame left for the frame loop.
enum Then {
    /// Read on.
    Next,
    /// Its shard's queue is full: wait until it takes this, reading nothing.
    Wait(Envelope),
    /// End the session.
    Close(CloseCode),
}

struct Session {
    ctx: Arc<GateCtx>,
    room_id: u64,
    viewer_id: u64,
    session_id: u64,
    ip: String,
    replier: Arc<dyn Replier>,
    pending_likes: u32,
    /// When the oldest pending tap arrived (Unix ms); for a paced client's
    /// frame, when it started adding its taps up ([`paced_span_ms`]).
    pending_since_ms: i64,
    /// Held taps are offered to the shard again at this time.
    likes_retry_at: Option<tokio::time::Instant>,
    /// Frames (chat, like, lead), like taps and like frames that ignored
    /// the pace ([`early_like`]) read since the counters were last
    /// published: one atomic add per kind per read, not per frame.
    counts: [u64; 5],
    /// The ticket's expiry (Unix s): the session ends then unless a
    /// `Refresh` moved it.
    expires_at: u64,
    /// When to send the `ticket_expiring` notice; `None` once sent.
    notice_at: Option<tokio::time::Instant>,
    /// `expires_at` as a monotonic instant.
    expiry: tokio::time::Instant,
    /// The open `busy` moderation row: (bucket, row).
    busy: Option<(i64, ModerationRow)>,
    /// When the open `busy` row's bucket ends (fixed when it opens, so the
    /// session timer is not moved on every read).
    busy_due: Option<tokio::time::Instant>,
    /// Chat and leads in flight; whether the room is moving away.
    handover: Option<Arc<Handover>>,
    /// The like pace this session was last told, ms (0 = none).
    told_pace_ms: u32,
    /// When it was told (Unix ms): frames already on their way then are
    /// not counted as ignoring it ([`early_like`]).
    told_at_ms: i64,
    /// When its last like frame arrived (Unix ms; the session's start
    /// before the first).
    last_like_ms: i64,
    /// Its last like frame carried `max_like_count` taps: the next may be
    /// the rest of the same batch ([`early_like`]).
    last_like_full: bool,
}

impl Session {
    /// Arm the notice and expiry timers for a ticket expiring at `unix`.
    fn set_expiry(&mut self, unix: u64) {
        self.expires_at = unix;
        self.expiry = instant_at(unix);
        self.notice_at = Some(instant_at(
            unix.saturating_sub(self.ctx.refresh_notice_secs),
        ));
    }

    /// The next ticket timer: the notice, then the expiry.
    fn ticket_timer(&self) -> tokio::time::Instant {
        self.notice_at.unwrap_or(self.expiry)
    }

    /// A ticket timer fired: send the notice, or end the session.
    fn on_ticket_timer(&mut self) -> Option<CloseCode> {
        if self.notice_at.take().is_some() {
            let left = (self.expires_at as i64 - crate::now_ms() / 1000).max(0) as u32;
            self.replier.reply(ServerFrame::Notice(wire::Notice {
                kind: wire::NoticeKind::TicketExpiring as u8,
                value: left,
                text: format!("ticket expires in {left} s: send Refresh with a new ticket"),
            }));
            return None;
        }
        Some(CloseCode::TicketExpired)
    }

    /// A `Refresh` frame: a valid ticket for the same room and viewer moves
    /// the expiry; anything else ends the session.
    fn refresh(&mut self, ticket: &str) -> Option<CloseCode> {
        let now = (crate::now_ms() / 1000) as u64;
        match self.ctx.tickets.verify(ticket, now) {
            Ok(c)
                if c.room_id == self.room_id
                    && c.viewer_id == self.viewer_id
                    && c.expires_at > self.expires_at =>
            {
                self.set_expiry(c.expires_at);
                self.ctx
                    .metrics
                    .ticket_refreshes
                    .fetch_add(1, Ordering::Relaxed);
                self.replier.reply(ServerFrame::Notice(wire::Notice {
                    kind: wire::NoticeKind::TicketRefreshed as u8,
                    value: (c.expires_at - now) as u32,
                    text: String::new(),
                }));
                None
            }
            Ok(_) => {
                tracing::debug!(
                    viewer = self.viewer_id,
                    "refresh ticket for another room or viewer"
                );
                Some(CloseCode::BadTicket)
            }
            Err(e) => {
                tracing::debug!(viewer = self.viewer_id, error = %e, "refresh ticket refused");
                Some(ticket_close(e))
            }
        }
    }

    fn envelope(&self, kind: EventKind) -> Envelope {
        // Likes and the session's end are never answered (the shard keeps
        // the session's replier from its `Join`): no reference-count
        // round trip between this thread and the shard's per like frame.
        let answered = !matches!(kind, EventKind::Like { .. } | EventKind::Leave { .. });
        Envelope {
            reply: answered.then(|| self.replier.clone()),
            event: Event {
                room_id: self.room_id,
                viewer_id: self.viewer_id,
                session_id: self.session_id,
                received_at_ms: crate::now_ms(),
                kind,
            },
        }
    }

    /// Hand an event that must not be dropped to its shard; only when the
    /// queue is full, wait (a boxed future: the rare path).
    async fn push_wait(&self, kind: EventKind) {
        if let Err(env) = self.ctx.shards.try_push(self.envelope(kind)) {
            Box::pin(self.ctx.shards.wait_push(env)).await;
        }
    }

    /// The session's end after its frame loop stopped with `code`: the
    /// last counts, likes and `busy` row, the `Leave`, then the close
    /// (after the queued acks when the viewer or a shutdown ended it).
    async fn end(
        mut self,
        conn: &quinn::Connection,
        mut code: CloseCode,
        joined_at_ms: i64,
        closed_with: &AtomicU32,
        tx: Arc<OutQueue>,
        writer: tokio::task::JoinHandle<()>,
    ) -> CloseCode {
        self.flush_counts();
        if code == CloseCode::WrongNode {
            // The room moved: the replier closes once the last ack is out.
            if tokio::time::timeout(HANDOVER_GRACE, conn.closed())
                .await
                .is_err()
            {
                // Not done in time: close behind what is queued.
                self.replier.close_after_replies(CloseCode::WrongNode);
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            }
        }
        // A close the engine itself made (ban, slow consumer) names the reason.
        if let Some(c) = CloseCode::from_code(u64::from(closed_with.load(Ordering::Relaxed))) {
            code = c;
        }
        self.flush_likes_wait().await;
        self.flush_busy();
        self.push_wait(EventKind::Leave {
            joined_at_ms,
            close: code.as_str(),
        })
        .await;
        let ctx = &self.ctx;
        ctx.reading.fetch_sub(1, Ordering::SeqCst);
        if code == CloseCode::ShuttingDown {
            // Shutdown order: every frame this viewer sent is decided and
            // durable, and its ack queued, before the connection closes.
            let mut drained = ctx.drained.clone();
            let _ = tokio::time::timeout(Duration::from_secs(30), drained.wait_for(|d| *d)).await;
        }
        if code == CloseCode::Normal || code == CloseCode::ShuttingDown {
            // Let queued acks go out before the close.
            let _ = tx.push_last(Out::Close(code, None));
            let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
        } else {
            let phrase = (code == CloseCode::WrongNode)
                .then(|| ctx.routing.wrong_node_reason(self.room_id))
                .flatten();
            close_with(conn, code, phrase.as_deref());
            writer.abort();
        }
        code
    }

    /// The frame loop; returns how the session ended.
    async fn frames(
        &mut self,
        conn: &quinn::Connection,
        recv: &mut quinn::RecvStream,
        dec: &mut FrameDecoder,
        tx: &OutQueue,
    ) -> CloseCode {
        let mut shutdown = self.ctx.shutdown.clone();
        if *shutdown.borrow() {
            return CloseCode::ShuttingDown;
        }
        let mut partial_since: Option<tokio::time::Instant> = None;
        // One timer for every deadline of the session (ticket, stalled
        // frame, busy row, held likes), moved only when the earliest one
        // changes: not a timer registered and cancelled per read.
        let mut armed = Some(self.ticket_timer());
        let timer = tokio::time::sleep_until(self.ticket_timer());
        tokio::pin!(timer);
        let closed = conn.closed();
        tokio::pin!(closed);
        // Made once: a `changed()` made per read registers and removes a
        // waiter on the one shutdown channel every connection shares.
        let stopping = shutdown.changed();
        tokio::pin!(stopping);
        loop {
            let mut decoded = false;
            loop {
                match dec.next_frame() {
                    Ok(Some(frame)) => {
                        decoded = true;
                        match self.frame(frame) {
                            Then::Next => {}
                            Then::Close(code) => return code,
                            // Its shard's queue is full: this connection
                            // reads nothing more until it is taken.
                            Then::Wait(env) => Box::pin(self.ctx.shards.wait_push(env)).await,
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(viewer = self.viewer_id, error = %e, "bad frame; closing");
                        return e.close_code();
                    }
                }
            }
            self.flush_counts();
            self.flush_busy_if_due(crate::now_ms());
            // A frame that started to arrive must complete in time (counted
            // from the last complete frame): a client cannot hold its
            // buffer half-filled.
            if dec.buffered() == 0 {
                partial_since = None;
            } else if decoded || partial_since.is_none() {
                partial_since = Some(tokio::time::Instant::now());
            }
            let frame_deadline = partial_since.map(|t| t + self.ctx.frame_timeout);
            let busy_due = self.busy_due;
            let next = [frame_deadline, busy_due, self.likes_retry_at]
                .into_iter()
                .flatten()
                .fold(self.ticket_timer(), std::cmp::min);
            if armed != Some(next) {
                armed = Some(next);
                timer.as_mut().reset(next);
            }
            tokio::select! {
                chunk = recv.read_chunk(64 * 1024, true) => match chunk {
                    Ok(Some(c)) => dec.push(&c.bytes),
                    // The viewer finished its stream without `Bye`.
                    Ok(None) => return CloseCode::Normal,
                    Err(quinn::ReadError::ConnectionLost(e)) => return close_of(&e),
                    Err(_) => return CloseCode::Normal,
                },
                () = &mut timer => {
                    let now = tokio::time::Instant::now();
                    if frame_deadline.is_some_and(|t| t <= now) {
                        return CloseCode::FrameTimeout;
                    }
                    if busy_due.is_some_and(|t| t <= now) {
                        self.flush_busy();
                    }
                    if self.likes_retry_at.is_some_and(|t| t <= now) {
                        self.likes_retry_at = None;
                        self.flush_likes();
                    }
                    if self.ticket_timer() <= now {
                        if let Some(code) = self.on_ticket_timer() {
                            return code;
                        }
                    }
                    // Fired: re-armed above with the next deadline.
                    armed = None;
                }
                _ = &mut stopping => {
                    let _ = tx.push(Out::Frame(ServerFrame::Notice(wire::Notice {
                        kind: wire::NoticeKind::ShuttingDown as u8,
                        value: 0,
                        text: "server shutting down; reconnect later".into(),
                    })));
                    return CloseCode::ShuttingDown;
                }
                err = &mut closed => return close_of(&err),
            }
        }
    }

    /// Handle one frame, without waiting: what must wait for a full
    /// queue comes back as [`Then::Wait`].
    fn frame(&mut self, frame: ClientFrame) -> Then {
        match frame {
            ClientFrame::Hello(_) => return Then::Close(CloseCode::UnexpectedFrame),
            ClientFrame::Bye => return Then::Close(CloseCode::Normal),
            ClientFrame::Refresh { ticket } => {
                return self.refresh(&ticket).map_or(Then::Next, Then::Close)
            }
            ClientFrame::Chat {
                client_msg_id,
                text,
            } => {
                self.counts[0] += 1;
                if let Some(code) = self.admit() {
                    // The room moved: the client resends it to the new owner.
                    return Then::Close(code);
                }
                let env = self.envelope(EventKind::Chat {
                    client_msg_id,
                    text,
                });
                // A full log (over its disk budget) sheds chat like a full
                // queue does; so does a busy shard, before its events lane
                // is full: room is kept for likes' counts and the lane
                // drains quickly.
                let shed = self.ctx.log.is_full()
                    || self.ctx.shards.pressure(self.room_id) > self.ctx.shed_chat_above;
                let pushed = if shed {
                    Err(env)
                } else {
                    self.ctx.shards.try_push(env)
                };
                if let Err(env) = pushed {
                    self.ctx.metrics.overflow(Kind::Chat, Overflow::Busy);
                    self.busy(env, client_msg_id);
                }
            }
            ClientFrame::Like { count } => {
                self.counts[1] += 1;
                self.counts[3] += u64::from(count);
                let now = crate::now_ms();
                self.counts[4] += u64::from(early_like(
                    self.told_pace_ms,
                    self.told_at_ms,
                    self.last_like_ms,
                    now,
                    self.last_like_full,
                ));
                self.last_like_full = count >= self.ctx.limits.max_like_count;
                if self.pending_likes == 0 {
                    self.pending_since_ms =
                        now - paced_span_ms(self.told_pace_ms, self.last_like_ms, now);
                }
                self.last_like_ms = now;
                self.pending_likes = self.pending_likes.saturating_add(count);
                self.follow_pace();
                self.flush_likes_at(now);
            }
            ClientFrame::Lead(lead) => {
                self.counts[2] += 1;
                if let Some(code) = self.admit() {
                    return Then::Close(code);
                }
                let ip = self.ip.clone();
                return self.hand_over(EventKind::Lead {
                    lead: Box::new(lead),
                    ip,
                });
            }
            ClientFrame::Withdraw { client_lead_id } => {
                // Counted with leads (the same lane: it must not wait
                // behind chat), and like a lead it is refused while the
                // room moves away: the client resends it to the new owner.
                self.counts[2] += 1;
                if let Some(code) = self.admit() {
                    return Then::Close(code);
                }
                return self.hand_over(EventKind::Withdraw { client_lead_id });
            }
        }
        Then::Next
    }

    /// Hand an event that must not be dropped to its shard, or give it back
    /// to wait for room.
    fn hand_over(&self, kind: EventKind) -> Then {
        match self.ctx.shards.try_push(self.envelope(kind)) {
            Ok(()) => Then::Next,
            Err(env) => Then::Wait(env),
        }
    }

    /// Count a chat message or lead in flight; `Some(wrong_node)` when the
    /// room is moving away (the frame is not handed over).
    fn admit(&self) -> Option<CloseCode> {
        let h = self.handover.as_ref()?;
        match h.admit() {
            Ok(()) => None,
            Err(last) => {
                if last {
                    self.replier.close_after_replies(CloseCode::WrongNode);
                }
                Some(CloseCode::WrongNode)
            }
        }
    }

    /// Publish the frame counts gathered since the last call.
    fn flush_counts(&mut self) {
        let [chat, like, lead, taps, early] = std::mem::take(&mut self.counts);
        let m = &self.ctx.metrics;
        m.frames(Kind::Chat, chat);
        m.frames(Kind::Like, like);
        m.frames(Kind::Lead, lead);
        if taps > 0 {
            m.like_taps.fetch_add(taps, Ordering::Relaxed);
        }
        if early > 0 {
            m.like_frames_early.fetch_add(early, Ordering::Relaxed);
        }
    }

    /// Answer `busy` and count it in the session's open `busy` moderation
    /// row (one per bucket: a flood under overload costs a row per second,
    /// not one per frame).
    fn busy(&mut self, env: Envelope, client_msg_id: u64) {
        let d = Decision {
            verdict: Verdict::Rejected,
            reason: Reason::Busy,
            retry_after_ms: self.ctx.busy_retry_after_ms,
            ..Decision::ACCEPT
        };
        self.ctx
            .metrics
            .decision(Kind::Chat, d.verdict, d.reason, 1);
        self.replier
            .reply(ack_frame(AckKind::Chat, client_msg_id, &d));
        let ev = env.event;
        let bucket = ev
            .received_at_ms
            .div_euclid(self.ctx.moderation_bucket_ms.max(1));
        if let Some((b, row)) = &mut self.busy {
            if *b == bucket {
                row.count = row.count.saturating_add(1);
                self.ctx
                    .metrics
                    .moderation_folded
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.flush_busy();
        }
        let detail = match ev.kind {
            // Not checked by the guard: it may hold a phone or an ID.
            EventKind::Chat { text, .. } => crate::guard::text::redact_contacts(&text).into_owned(),
            _ => String::new(),
        };
        let ms = self.ctx.moderation_bucket_ms.max(1);
        self.busy_due = Some(instant_at_ms((bucket + 1).saturating_mul(ms)));
        self.busy = Some((
            bucket,
            ModerationRow {
                room_id: ev.room_id,
                ts: ev.received_at_ms,
                viewer_id: ev.viewer_id,
                session_id: ev.session_id,
                kind: "chat",
                client_id: client_msg_id,
                reason: Reason::Busy.as_str(),
                dry_run: false,
                count: 1,
                detail,
            },
        ));
    }

    /// Log the open `busy` row if its bucket is over (or always, at the
    /// session's end).
    fn flush_busy_if_due(&mut self, now_ms: i64) {
        let ms = self.ctx.moderation_bucket_ms.max(1);
        if self
            .busy
            .as_ref()
            .is_some_and(|(b, _)| (b + 1) * ms <= now_ms)
        {
            self.flush_busy();
        }
    }

    fn flush_busy(&mut self) {
        self.busy_due = None;
        let Some((_, row)) = self.busy.take() else {
            return;
        };
        // Overload already: never block the gate for a moderation row.
        let round = Submit {
            rows: vec![Row::Moderation(row)],
            acks: Vec::new(),
            closes: Vec::new(),
        };
        if self.ctx.log.try_submit(round).is_err() {
            self.ctx
                .metrics
                .moderation_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Try to hand pending like taps to the shard; keep them on overflow,
    /// and while the shard is under pressure (they go in one frame later:
    /// likes are what an overloaded engine coalesces first).
    fn flush_likes(&mut self) {
        self.flush_likes_at(crate::now_ms());
    }

    /// [`Session::flush_likes`] at `now_ms` (Unix ms, already read).
    fn flush_likes_at(&mut self, now_ms: i64) {
        if self.pending_likes == 0 {
            return;
        }
        if self.ctx.shards.pressure(self.room_id) > self.ctx.shed_likes_above {
            self.ctx.metrics.overflow(Kind::Like, Overflow::Coalesced);
            self.retry_likes_later();
            return;
        }
        let spread_ms = (now_ms - self.pending_since_ms).clamp(0, i64::from(u32::MAX)) as u32;
        let env = self.envelope(EventKind::Like {
            count: self.pending_likes,
            spread_ms,
        });
        match self.ctx.shards.try_push(env) {
            Ok(()) => {
                self.pending_likes = 0;
                self.likes_retry_at = None;
            }
            Err(_) => {
                self.ctx.metrics.overflow(Kind::Like, Overflow::Coalesced);
                self.retry_likes_later();
            }
        }
    }

    /// Tell a like sender the pace when it changed since it was last told
    /// (`gate::pace`): only sessions that send likes hear of it.
    fn follow_pace(&mut self) {
        let pace = self.ctx.like_pace_ms.load(Ordering::Relaxed);
        if pace == self.told_pace_ms {
            return;
        }
        self.told_pace_ms = pace;
        self.told_at_ms = self.last_like_ms;
        self.ctx
            .metrics
            .like_pace_notices
            .fetch_add(1, Ordering::Relaxed);
        let text = if pace == 0 {
            "likes: send as they come".to_owned()
        } else {
            format!("server busy: send likes at most every {pace} ms")
        };
        self.replier.reply(ServerFrame::Notice(wire::Notice {
            kind: wire::NoticeKind::LikePace as u8,
            value: pace,
            text,
        }));
    }

    /// Held taps: offer them again in 100 ms (or with the next like frame).
    fn retry_likes_later(&mut self) {
        if self.likes_retry_at.is_none() {
            self.likes_retry_at = Some(tokio::time::Instant::now() + Duration::from_millis(100));
        }
    }

    /// At session end, pending likes are pushed with backpressure.
    async fn flush_likes_wait(&mut self) {
        if self.pending_likes > 0 {
            let count = std::mem::take(&mut self.pending_likes);
            let spread_ms =
                (crate::now_ms() - self.pending_since_ms).clamp(0, i64::from(u32::MAX)) as u32;
            self.push_wait(EventKind::Like { count, spread_ms }).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_like_frame_is_judged_over_the_time_since_the_previous_one() {
        // Not paced: the frame's taps arrived now.
        assert_eq!(paced_span_ms(0, 1_000, 5_000), 0);
        // Paced at 250 ms: over the time since the previous frame, at most
        // one pace.
        assert_eq!(paced_span_ms(250, 4_900, 5_000), 100);
        assert_eq!(paced_span_ms(250, 1_000, 5_000), 250);
        // The clock stepped back: nothing credited.
        assert_eq!(paced_span_ms(250, 6_000, 5_000), 0);
        assert_eq!(
            paced_span_ms(u32::MAX, i64::MIN, i64::MAX),
            i64::from(u32::MAX)
        );
    }

    #[test]
    fn a_like_frame_sooner_than_half_the_told_pace_ignored_it() {
        // Not paced: never early.
        assert!(!early_like(0, 0, 5_000, 5_000, false));
        // Paced at 300 ms (told long ago): early under 150 ms after the
        // previous frame.
        assert!(early_like(300, 0, 4_900, 5_000, false));
        assert!(!early_like(300, 0, 4_850, 5_000, false));
        assert!(!early_like(300, 0, 1_000, 5_000, false));
        // Within one pace of the telling: on its way before, not counted.
        assert!(!early_like(300, 4_750, 4_900, 5_000, false));
        assert!(early_like(300, 4_700, 4_900, 5_000, false));
        // The clock stepped back: early (the frame is not late, at least).
        assert!(early_like(300, 0, 6_000, 5_000, false));
        assert!(!early_like(u32::MAX, i64::MIN, i64::MIN, i64::MAX, false));
        // Right after a full frame: the rest of a batch split in frames of
        // `max_like_count` taps, not a client ignoring the pace.
        assert!(!early_like(300, 0, 4_900, 5_000, true));
    }

    #[test]
    fn a_moving_session_closes_after_its_last_ack_and_refuses_new_frames() {
        let h = Handover::default();
        assert!(
            h.admit().is_ok() && h.admit().is_ok(),
            "two frames handed over"
        );
        assert!(!h.acked(), "not moving yet");
        assert!(!h.start_moving(), "one still in flight: wait for its ack");
        assert_eq!(h.admit(), Err(false), "no new frame while moving");
        assert!(h.acked(), "the last ack: close now");
        // The race: a refused frame counted in while the last ack went out
        // (the ack saw 2 and left the close): the refusal closes.
        let r = Handover::default();
        assert!(r.admit().is_ok());
        assert!(!r.start_moving());
        r.inflight.fetch_add(1, Ordering::SeqCst); // the refused frame, counted in
        assert!(!r.acked(), "the ack sees two in flight");
        r.moving.store(true, Ordering::SeqCst);
        assert_eq!(
            r.inflight.fetch_sub(1, Ordering::SeqCst),
            1,
            "…and the refusal takes the count to 0: it must close"
        );
        // An extra ack (never expected) does not wrap the count around.
        assert!(h.acked());
        assert_eq!(h.inflight.load(Ordering::SeqCst), 0);
        let idle = Handover::default();
        assert!(idle.start_moving(), "nothing in flight: close at once");
        // A frame refused when it alone was counted: the refusal is the
        // last one out, so it must close (no ack will come to do it).
        assert_eq!(idle.admit(), Err(true));
        assert_eq!(idle.inflight.load(Ordering::SeqCst), 0);
    }

    fn notice(value: u32) -> Out {
        Out::Frame(ServerFrame::Notice(wire::Notice {
            kind: wire::NoticeKind::TicketRefreshed as u8,
            value,
            text: String::new(),
        }))
    }

    fn value(out: Out) -> Option<u32> {
        match out {
            Out::Frame(ServerFrame::Notice(n)) => Some(n.value),
            _ => None,
        }
    }

    #[test]
    fn the_out_queue_keeps_order_refuses_past_its_cap_and_after_the_writer_ends() {
        let q = OutQueue::new(2);
        assert!(q.push(notice(1)).is_ok() && q.push(notice(2)).is_ok());
        assert!(matches!(q.push(notice(3)), Err(Refused::Full(_))));
        // The session's close goes behind the acks even when they fill it.
        assert!(q.push_last(Out::Close(CloseCode::Normal, None)).is_ok());
        assert_eq!(q.try_pop().and_then(value), Some(1));
        assert_eq!(q.try_pop().and_then(value), Some(2));
        assert!(matches!(
            q.try_pop(),
            Some(Out::Close(CloseCode::Normal, None))
        ));
        assert!(q.try_pop().is_none());
        q.close();
        assert!(matches!(q.push(notice(4)), Err(Refused::Closed)));
        assert!(matches!(q.push_last(notice(5)), Err(Refused::Closed)));
        assert!(q.try_pop().is_none());
    }

    #[tokio::test]
    async fn the_writer_is_woken_by_a_frame_queued_before_or_while_it_waits() {
        let q = Arc::new(OutQueue::new(8));
        // Queued before the writer waits: taken at once.
        q.push(notice(1)).expect("room");
        assert_eq!(q.pop().await.and_then(value), Some(1));
        // Queued from another task while the writer waits.
        let w = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await.and_then(value) }
        });
        tokio::task::yield_now().await;
        q.push(notice(2)).expect("room");
        let got = tokio::time::timeout(Duration::from_secs(5), w).await;
        assert_eq!(got.expect("woken").expect("joined"), Some(2));
        // A session that ends without its own close stops a waiting writer.
        let w = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await.is_none() }
        });
        tokio::task::yield_now().await;
        drop(Closing::new(&q));
        let got = tokio::time::timeout(Duration::from_secs(5), w).await;
        assert!(got.expect("woken").expect("joined"), "closed: None");
        // A disarmed guard leaves the queue open.
        let open = Arc::new(OutQueue::new(1));
        Closing::new(&open).disarm();
        assert!(open.push(notice(3)).is_ok());
    }
}

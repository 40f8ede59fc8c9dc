//! One simulated viewer: a QUIC connection with one bidirectional stream.
//!
//! Lifecycle: connect, `Hello` → `Welcome` (timed as the handshake), join the
//! room's registry, then
//! 1. **load**: write whatever the room driver queues (plus scheduled
//!    resends) until the driver stops, or until the viewer's churn time;
//! 2. **drain**: send the remaining resends, wait for every outstanding
//!    chat/lead ack (bounded by the drain timeout);
//! 3. **bye**: `Bye`, finish the stream, wait for the server to close the
//!    connection (code 0 = `normal`).
//!
//! A viewer that churns leaves this way once, stays away, then connects
//! again (a new session, same viewer id, client ids carrying on).
//!
//! A viewer whose connection is lost (reset, `shutting_down`, idle timeout,
//! a failed write) reconnects with exponential backoff and jitter and first
//! resends every chat message and lead not acked yet, with the same client
//! ids: what a real app does after an engine restart. It keeps trying until
//! the load stops and the drain timeout has passed.
//!
//! A reader task decodes server frames and matches each ack to the
//! `(kind, client id)` it answers; the first ack of an id is a latency sample
//! measured from the event's intended send time, and for a lead the record
//! `verify` checks ClickHouse against.
//!
//! Withdrawals (`[withdrawals]`): a lead planned with a withdraw delay is,
//! once its first ack says `accepted`, scheduled for withdrawal that long
//! after the ack. When due the writer sends `Withdraw { client_lead_id }`,
//! tracked like a lead (kind [`Kind::Withdraw`], id = the lead's id): it is
//! resent with the same id after a reconnect until acked, and a withdrawal
//! still scheduled when a connection is lost is carried to the next one.
//! Its latency runs from the scheduled time to its first ack.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use quinn::{
    ConnectionError, Endpoint, ReadError, ReadExactError, RecvStream, SendStream, VarInt,
    WriteError,
};
use roomgate::wire::{
    decode_len, decode_server, encode, ticket, AckKind, ClientFrame, CloseCode, Hello, NoticeKind,
    ServerFrame, Verdict, Welcome, WireError, LEN_PREFIX, MAX_FRAME_HARD,
};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use tokio::{
    sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore},
    time::{sleep_until, timeout, Instant},
};

use crate::{
    plan::Action,
    room::{Command, Registry},
    schedule::Kind,
    servers::{parse_wrong_node, Servers, Target},
    stats::{verdict_name, AckEvent, LeadRecord, Stats, WithdrawalRecord},
    truth::Class,
};

/// `Hello.client`.
pub const CLIENT_NAME: &str = "roomgate-loadgen/0.1";
/// Commands a viewer may have queued before the room driver drops events.
const QUEUE: usize = 32;
/// Most taps in one `Like` frame: the engine's default frame limit
/// (`wire::Limits::max_like_count`, checked by a test).
const MAX_LIKE_COUNT: u32 = 1_000;
/// Bound on connect + `Hello` + `Welcome`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the server to close the connection after `Bye`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest wait before reconnecting after a lost connection.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// A chat message, lead or withdrawal without its ack when a connection
/// was lost, resent with the same id after reconnecting; or a withdrawal
/// scheduled but not sent yet (`sent: false`), scheduled again there.
#[derive(Debug, Clone)]
pub struct Carry {
    kind: Kind,
    id: u64,
    intended: Instant,
    bytes: Vec<u8>,
    /// Written at least once (else: a withdrawal still to send at
    /// `intended`).
    sent: bool,
    /// A lead: withdraw it this long after its `accepted` ack.
    withdraw: Option<Duration>,
}

/// How a session (or an attempt at one) ended.
enum End {
    /// Finished (`Bye`, or the run is over): the viewer is done.
    Done,
    /// Left by churn; comes back later.
    Left,
    /// The connection was lost (or could not be made): reconnect and
    /// resend. `connected`: this attempt had got a `Welcome`.
    Lost { carry: Vec<Carry>, connected: bool },
    /// `wrong_node`: another node owns the room; reconnect there at once
    /// and resend. `to` = (node id, `host:port`) from the reason phrase;
    /// `connected`: the close ended a welcomed session (the room moved).
    Redirect {
        carry: Vec<Carry>,
        to: (String, String),
        connected: bool,
    },
}

/// Close labels after which reconnecting cannot help (the server refused
/// this viewer or its frames): the viewer ends, as without reconnects.
const FINAL_CLOSES: [&str; 15] = [
    "banned",
    "abusive",
    "session_replaced",
    "frame_timeout",
    "refused",
    "bad_ticket",
    "ticket_expired",
    "server_full",
    "slow_consumer",
    "malformed_frame",
    "frame_too_large",
    "invalid_field",
    "unexpected_frame",
    "hello_timeout",
    "internal",
];

/// The end of a viewer's drain window: `drain_timeout` after the load
/// stopped (or from now while it runs).
fn drain_deadline(ctx: &Ctx) -> Instant {
    ctx.stopped_at.get().copied().unwrap_or_else(Instant::now) + ctx.drain_timeout
}

/// What every viewer shares.
pub struct Ctx {
    /// Run counters.
    pub stats: Arc<Stats>,
    /// Where viewers connect (one server or routed nodes).
    pub servers: Arc<Servers>,
    /// TLS server name.
    pub server_name: String,
    /// Ticket key.
    pub ticket_key: ticket::TicketKey,
    /// Ticket lifetime, seconds: each ticket (at join and on refresh)
    /// expires this long after it is signed.
    pub ticket_ttl: u64,
    /// Wait for outstanding acks after the load stops.
    pub drain_timeout: Duration,
    /// First client id of every viewer. Derived from the start time so a
    /// re-run against the same engine does not collide with the previous
    /// run's ids (which the server would answer as replays).
    pub id_base: u64,
    /// Bounds concurrent handshakes (a rejoin takes a slot too).
    pub handshakes: Arc<Semaphore>,
    /// Fires when the load stops (a viewer away stays away).
    pub stop: watch::Receiver<bool>,
    /// When the load stopped: every drain and reconnect ends by this plus
    /// `drain_timeout` (the driver aborts viewers a little later).
    pub stopped_at: std::sync::OnceLock<Instant>,
}

/// Who this viewer is and where it connects from.
#[derive(Debug)]
pub struct ViewerSpec {
    /// Room id (in the ticket).
    pub room_id: u64,
    /// Viewer id (in the ticket).
    pub viewer_id: u64,
    /// Index of this viewer within its room's registry.
    pub slot: u32,
    /// The viewer's class.
    pub class: Class,
    /// The room's registry of connected viewers.
    pub registry: Arc<Registry>,
    /// The client endpoint (UDP socket) to connect from.
    pub endpoint: Endpoint,
    /// When the viewer was meant to start joining.
    pub join_at: Instant,
    /// Churn: leave at this time and come back after this long.
    pub churn: Option<(Instant, Duration)>,
}

/// Run one viewer to completion: one session, or two when it churns.
/// `permit` bounds concurrent handshakes and is released once `Welcome`
/// arrives (or the attempt fails).
pub async fn run(ctx: Arc<Ctx>, spec: ViewerSpec, permit: OwnedSemaphorePermit) {
    let mut next_id = ctx.id_base;
    let mut permit = Some(permit);
    let mut intended = spec.join_at;
    let mut leave_at = spec.churn.map(|c| c.0);
    let mut stop = ctx.stop.clone();
    let mut carry: Vec<Carry> = Vec::new();
    let mut reconnecting = false;
    let mut backoff = RECONNECT_FIRST;
    ctx.stats.viewers.fetch_add(1, Relaxed);
    let mut ever_connected = false;
    let mut target = Target::new(&ctx.servers, spec.room_id);
    loop {
        let Some(addr) = target.addr() else {
            return;
        };
        let p = match permit.take() {
            Some(p) => p,
            None => tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s), if !reconnecting => return,
                p = ctx.handshakes.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            },
        };
        let end = session(
            &ctx,
            &spec,
            p,
            addr,
            intended,
            leave_at,
            &mut next_id,
            std::mem::take(&mut carry),
            Retry {
                reconnecting: reconnecting && ever_connected,
                fail_over: target.can_fail_over(),
            },
            &mut ever_connected,
        )
        .await;
        let (c, connected) = match end {
            End::Done => return,
            End::Left => {
                reconnecting = false;
                backoff = RECONNECT_FIRST;
                let Some((_, away)) = spec.churn else {
                    return;
                };
                // Away for a while, then back (unless the load ends first).
                leave_at = None;
                intended = Instant::now() + away;
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => return,
                    () = sleep_until(intended) => {}
                }
                ctx.stats.rejoins.fetch_add(1, Relaxed);
                continue;
            }
            End::Redirect {
                carry: c,
                to,
                connected,
            } => {
                if connected {
                    target.welcomed();
                }
                match ctx.servers.resolve(&to.0, &to.1).await {
                    Some(to) if target.redirect(to) => {
                        // Straight to the owner the engine named.
                        ctx.stats.redirected.fetch_add(1, Relaxed);
                        if ever_connected {
                            ctx.stats.reconnect_attempts.fetch_add(1, Relaxed);
                        }
                        carry = c;
                        reconnecting = true;
                        intended = Instant::now();
                        continue;
                    }
                    // Unresolvable, or a redirect loop: as a failed attempt.
                    _ => {
                        if !connected {
                            ctx.stats.failed.fetch_add(1, Relaxed);
                        }
                        target.failed();
                        (c, connected)
                    }
                }
            }
            End::Lost {
                carry: c,
                connected,
            } => {
                if connected {
                    target.welcomed();
                } else {
                    // Could not connect: the next node of the room's ranking.
                    target.failed();
                }
                (c, connected)
            }
        };
        carry = c;
        if connected {
            // A new outage: start the backoff over.
            backoff = RECONNECT_FIRST;
        }
        let wait = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        if *stop.borrow() && (carry.is_empty() || Instant::now() + wait >= drain_deadline(&ctx)) {
            give_up(&ctx, &spec, &carry);
            return;
        }
        reconnecting = true;
        // Jitter spreads a room's viewers over the window so a
        // restarted engine is not hit by all of them at once.
        backoff = (backoff * 2).min(RECONNECT_MAX);
        intended = Instant::now() + wait;
        sleep_until(intended).await;
        if ever_connected {
            ctx.stats.reconnect_attempts.fetch_add(1, Relaxed);
        }
        leave_at = leave_at.filter(|t| *t > Instant::now());
    }
}

/// The viewer stops retrying: what it carries is counted as unacked (a
/// withdrawal never written: as not sent).
fn give_up(ctx: &Ctx, spec: &ViewerSpec, carry: &[Carry]) {
    for c in carry {
        if !c.sent {
            ctx.stats.disconnected.add(c.kind, 1);
            ctx.stats.class_not_sent.add(spec.class, c.kind, 1);
            continue;
        }
        ctx.stats.unacked.add(c.kind, 1);
        ctx.stats.class_unacked.add(spec.class, c.kind, 1);
        match c.kind {
            Kind::Lead => ctx.stats.record_lead(unacked_lead(spec, c.id)),
            Kind::Withdraw => ctx.stats.record_withdrawal(unacked_withdrawal(spec, c.id)),
            Kind::Chat | Kind::Like => {}
        }
    }
}

fn unacked_lead(spec: &ViewerSpec, id: u64) -> LeadRecord {
    LeadRecord {
        room_id: spec.room_id,
        viewer_id: spec.viewer_id,
        client_lead_id: id,
        verdict: "unacked".into(),
        reason: "none".into(),
        class: spec.class,
        withdrawal: None,
    }
}

fn unacked_withdrawal(spec: &ViewerSpec, lead_id: u64) -> WithdrawalRecord {
    WithdrawalRecord {
        room_id: spec.room_id,
        viewer_id: spec.viewer_id,
        client_lead_id: lead_id,
        verdict: "unacked".into(),
    }
}

/// What a failed attempt leads to.
#[derive(Debug, Clone, Copy)]
struct Retry {
    /// The attempt follows a lost connection of a welcomed viewer: a
    /// failure means "try again", not "this viewer failed to join".
    reconnecting: bool,
    /// Another node of the room's ranking is still untried: a failed
    /// first join goes on there (unless the server refused the viewer).
    fail_over: bool,
}

/// One connection attempt and, if it connects, one session. `carry` is
/// resent first.
#[allow(clippy::too_many_arguments)]
async fn session(
    ctx: &Ctx,
    spec: &ViewerSpec,
    permit: OwnedSemaphorePermit,
    addr: SocketAddr,
    intended: Instant,
    leave_at: Option<Instant>,
    next_id: &mut u64,
    carry: Vec<Carry>,
    retry: Retry,
    ever_connected: &mut bool,
) -> End {
    ctx.stats.attempted.fetch_add(1, Relaxed);
    let mut outcome = Outcome {
        stats: &ctx.stats,
        connected: false,
        recorded: false,
    };
    let started = Instant::now();
    let attempt = timeout(HANDSHAKE_TIMEOUT, handshake(ctx, spec, addr))
        .await
        .unwrap_or_else(|_| Err(Failure::new("handshake_timeout", "no Welcome within 30 s")));
    let session = match attempt {
        Ok(s) => s,
        Err(Failure {
            redirect: Some(to), ..
        }) => {
            outcome.redirected();
            return End::Redirect {
                carry,
                to,
                connected: false,
            };
        }
        Err(f) => {
            outcome.failed(&f.label, &f.detail);
            // A failed first join ends the viewer (unless another node may
            // take it); a failed reconnect is tried again.
            let fail_over = retry.fail_over && !FINAL_CLOSES.contains(&f.label.as_str());
            return if retry.reconnecting || fail_over {
                End::Lost {
                    carry,
                    connected: false,
                }
            } else {
                End::Done
            };
        }
    };
    drop(permit);
    let now = Instant::now();
    ctx.stats.record_welcome(
        now - started,
        now.saturating_duration_since(intended),
        &session.welcome.settings,
    );
    outcome.connected = true;
    if retry.reconnecting {
        ctx.stats.reconnected.fetch_add(1, Relaxed);
    }
    if !*ever_connected {
        *ever_connected = true;
        ctx.stats.viewers_connected.fetch_add(1, Relaxed);
    }
    let (label, end) = session.run(ctx, spec, leave_at, next_id, carry).await;
    outcome.closed(&label);
    end
}

/// Records how a viewer ended exactly once, even if its task is aborted at
/// shutdown (then as `aborted`), so close codes always sum to attempts.
struct Outcome<'a> {
    stats: &'a Stats,
    connected: bool,
    recorded: bool,
}

impl Outcome<'_> {
    fn failed(&mut self, label: &str, detail: &str) {
        self.recorded = true;
        self.stats.record_failure(label, detail);
    }

    fn closed(&mut self, label: &str) {
        self.recorded = true;
        self.stats.record_close(label);
    }

    fn redirected(&mut self) {
        self.recorded = true;
        self.stats.record_redirect();
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            if self.connected {
                self.closed("aborted");
            } else {
                self.failed("aborted", "still connecting at shutdown");
            }
        }
    }
}

/// Why a connection attempt failed: a short label (close code name or error
/// kind) for counting, and the full error for the log.
#[derive(Debug)]
struct Failure {
    label: String,
    detail: String,
    /// `wrong_node`: the owner it names, (id, `host:port`).
    redirect: Option<(String, String)>,
}

impl Failure {
    fn new(label: impl Into<String>, detail: impl ToString) -> Self {
        Failure {
            label: label.into(),
            detail: detail.to_string(),
            redirect: None,
        }
    }
}

/// The owner a `wrong_node` close names, if `e` is one.
fn redirect_of(e: &ConnectionError) -> Option<(String, String)> {
    match e {
        ConnectionError::ApplicationClosed(c)
            if c.error_code.into_inner() == u64::from(CloseCode::WrongNode.code()) =>
        {
            parse_wrong_node(&c.reason)
        }
        _ => None,
    }
}

impl From<quinn::ConnectError> for Failure {
    fn from(e: quinn::ConnectError) -> Self {
        Failure::new("connect_error", e)
    }
}

impl From<ConnectionError> for Failure {
    fn from(e: ConnectionError) -> Self {
        let redirect = redirect_of(&e);
        Failure {
            redirect,
            ..Failure::new(connection_label(&e), e)
        }
    }
}

impl From<WriteError> for Failure {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::ConnectionLost(c) => c.into(),
            e => Failure::new("stream_error", e),
        }
    }
}

impl From<ReadFail> for Failure {
    fn from(e: ReadFail) -> Self {
        match e {
            ReadFail::Read(ReadExactError::ReadError(ReadError::ConnectionLost(c))) => c.into(),
            ReadFail::Read(ReadExactError::FinishedEarly(_)) => Failure::new(
                "stream_finished",
                "server finished the stream before Welcome",
            ),
            ReadFail::Read(e) => Failure::new("stream_error", e),
            ReadFail::Wire(e) => Failure::new("bad_server_frame", e),
        }
    }
}

/// Name of a QUIC application close code (`app_0x..` if unknown).
pub fn close_code_name(code: u64) -> String {
    CloseCode::from_code(code).map_or_else(|| format!("app_{code:#x}"), |c| c.as_str().to_owned())
}

/// Short label for how a connection ended.
pub fn connection_label(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ApplicationClosed(c) => close_code_name(c.error_code.into_inner()),
        ConnectionError::TransportError(t) if (0x100..0x200).contains(&u64::from(t.code)) => {
            "tls_error".into()
        }
        ConnectionError::TransportError(_) => "transport_error".into(),
        // Refused before any handshake (connection cap, per-address caps).
        ConnectionError::ConnectionClosed(c)
            if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
        {
            "refused".into()
        }
        ConnectionError::ConnectionClosed(_) => "peer_transport_error".into(),
        ConnectionError::Reset => "reset".into(),
        ConnectionError::TimedOut => "timed_out".into(),
        ConnectionError::LocallyClosed => "locally_closed".into(),
        ConnectionError::VersionMismatch => "version_mismatch".into(),
        ConnectionError::CidsExhausted => "cids_exhausted".into(),
    }
}

#[derive(Debug)]
enum ReadFail {
    Read(ReadExactError),
    Wire(WireError),
}

/// Read one length-prefixed server frame.
async fn read_frame(recv: &mut RecvStream, buf: &mut Vec<u8>) -> Result<ServerFrame, ReadFail> {
    let mut prefix = [0u8; LEN_PREFIX];
    recv.read_exact(&mut prefix).await.map_err(ReadFail::Read)?;
    let len = decode_len(prefix, MAX_FRAME_HARD).map_err(ReadFail::Wire)?;
    buf.resize(len, 0);
    recv.read_exact(buf).await.map_err(ReadFail::Read)?;
    decode_server(buf).map_err(ReadFail::Wire)
}

fn close(conn: &quinn::Connection, code: CloseCode) {
    conn.close(VarInt::from_u32(code.code()), code.as_str().as_bytes());
}

/// A ticket for this viewer, valid `ticket_ttl` from now.
fn sign_ticket(ctx: &Ctx, room_id: u64, viewer_id: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    ctx.ticket_key.sign(&ticket::Claims {
        room_id,
        viewer_id,
        expires_at: now + ctx.ticket_ttl,
        device_id: format!("lg{viewer_id}"),
    })
}

async fn handshake(ctx: &Ctx, spec: &ViewerSpec, addr: SocketAddr) -> Result<Session, Failure> {
    let conn = spec.endpoint.connect(addr, &ctx.server_name)?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let ticket = sign_ticket(ctx, spec.room_id, spec.viewer_id);
    let hello = ClientFrame::Hello(Hello {
        ticket,
        client: CLIENT_NAME.to_owned(),
    });
    send.write_all(&encode(&hello)).await?;
    match read_frame(&mut recv, &mut Vec::new()).await? {
        ServerFrame::Welcome(welcome) => Ok(Session {
            conn,
            send,
            recv,
            welcome,
        }),
        other => {
            close(&conn, CloseCode::UnexpectedFrame);
            Err(Failure::new(
                "unexpected_frame",
                format!("expected Welcome, got {other:?}"),
            ))
        }
    }
}

/// A chat message or lead awaiting its ack(s).
#[derive(Debug)]
struct Entry {
    kind: Kind,
    id: u64,
    intended: Instant,
    /// Acks still expected: one per frame written with this id.
    expected: u32,
    /// The first ack arrived (its latency was recorded).
    first_acked: bool,
    /// Resent after a reconnect: the lost connection may have stored it
    /// already, so its first ack may rightly be a replay.
    carried: bool,
    /// The frame, to resend after a reconnect.
    bytes: Vec<u8>,
    /// A lead: withdraw it this long after an `accepted` first ack.
    withdraw: Option<Duration>,
}

/// A withdrawal to send at `at` (its intended time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scheduled {
    at: Instant,
    lead_id: u64,
}

/// What an ack meant to the frame it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Acked {
    /// The first ack of this id: the latency sample and the event's
    /// intended time. `None` for the ack of a resend after that.
    latency: Option<(Duration, Instant)>,
    /// The frame had been carried over from a lost connection.
    carried: bool,
}

/// Outstanding acks of one viewer, shared by its writer and reader, and
/// the withdrawals it has scheduled. A viewer has a handful at most, so
/// vectors beat maps.
#[derive(Debug, Default)]
struct Outstanding {
    inner: std::sync::Mutex<OutInner>,
    /// Signalled when nothing is outstanding any more, or the reader ended.
    settled: Notify,
    /// Signalled when the reader scheduled a withdrawal or the like pace
    /// changed (the writer recomputes when to wake).
    wake: Notify,
    /// The like pace the server asked for (`Notice` kind `like_pace`), ms;
    /// 0 = send likes as they come.
    like_pace_ms: AtomicU32,
}

#[derive(Debug, Default)]
struct OutInner {
    entries: Vec<Entry>,
    /// Withdrawals not sent yet, in no particular order.
    scheduled: Vec<Scheduled>,
    reader_done: bool,
}

impl Outstanding {
    /// The server's like pace now.
    fn like_pace(&self) -> Duration {
        Duration::from_millis(self.like_pace_ms.load(Relaxed).into())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A frame with this id is about to be written. `first` = a first send
    /// (its ack is a latency sample); a resend after the first ack came is
    /// not. `withdraw`: a lead to withdraw this long after it is accepted.
    fn expect(
        &self,
        kind: Kind,
        id: u64,
        intended: Instant,
        first: bool,
        bytes: &[u8],
        withdraw: Option<Duration>,
    ) {
        self.expect_as(kind, id, intended, first, false, bytes, withdraw);
    }

    /// A frame carried over from a lost connection is about to be written
    /// again: its first ack is still to come and may be a replay.
    fn expect_carried(
        &self,
        kind: Kind,
        id: u64,
        intended: Instant,
        bytes: &[u8],
        withdraw: Option<Duration>,
    ) {
        self.expect_as(kind, id, intended, true, true, bytes, withdraw);
    }

    #[allow(clippy::too_many_arguments)]
    fn expect_as(
        &self,
        kind: Kind,
        id: u64,
        intended: Instant,
        first: bool,
        carried: bool,
        bytes: &[u8],
        withdraw: Option<Duration>,
    ) {
        let mut g = self.lock();
        if let Some(e) = g.entries.iter_mut().find(|e| e.kind == kind && e.id == id) {
            e.expected += 1;
        } else {
            g.entries.push(Entry {
                kind,
                id,
                intended,
                expected: 1,
                first_acked: !first,
                carried,
                bytes: bytes.to_vec(),
                withdraw,
            });
        }
    }

    /// Frames whose first ack never came: resent after a reconnect; and
    /// the withdrawals not sent yet, scheduled again after it.
    fn carry(&self) -> Vec<Carry> {
        let g = self.lock();
        let sent = g.entries.iter().filter(|e| !e.first_acked).map(|e| Carry {
            kind: e.kind,
            id: e.id,
            intended: e.intended,
            bytes: e.bytes.clone(),
            sent: true,
            withdraw: e.withdraw,
        });
        let scheduled = g.scheduled.iter().map(|s| Carry {
            kind: Kind::Withdraw,
            id: s.lead_id,
            intended: s.at,
            bytes: Vec::new(),
            sent: false,
            withdraw: None,
        });
        sent.chain(scheduled).collect()
    }

    /// Withdraw lead `lead_id` at `at`.
    fn schedule(&self, at: Instant, lead_id: u64) {
        self.lock().scheduled.push(Scheduled { at, lead_id });
        self.wake.notify_one();
    }

    /// When the next scheduled withdrawal is due.
    fn next_scheduled(&self) -> Option<Instant> {
        self.lock().scheduled.iter().map(|s| s.at).min()
    }

    /// A scheduled withdrawal due by `now`, taken off the schedule.
    fn pop_due(&self, now: Instant) -> Option<Scheduled> {
        let mut g = self.lock();
        let i = g
            .scheduled
            .iter()
            .enumerate()
            .filter(|(_, s)| s.at <= now)
            .min_by_key(|(_, s)| s.at)?
            .0;
        Some(g.scheduled.swap_remove(i))
    }

    /// The withdrawals still scheduled (at the end of the session).
    fn take_scheduled(&self) -> Vec<Scheduled> {
        std::mem::take(&mut self.lock().scheduled)
    }

    /// The frame announced by `expect` could not be written.
    fn unexpect(&self, kind: Kind, id: u64) {
        let mut g = self.lock();
        if let Some(i) = g.entries.iter().position(|e| e.kind == kind && e.id == id) {
            g.entries[i].expected -= 1;
            if g.entries[i].expected == 0 {
                g.entries.swap_remove(i);
            }
        }
    }

    /// An ack arrived at `now`. `None` if nothing was outstanding for it;
    /// otherwise the latency to record and the event's intended send time,
    /// if this is the id's first ack. The first ack of a lead planned for
    /// withdrawal, when `accepted`, schedules its withdrawal.
    fn ack(&self, kind: Kind, id: u64, now: Instant, accepted: bool) -> Option<Acked> {
        let mut g = self.lock();
        let i = g
            .entries
            .iter()
            .position(|e| e.kind == kind && e.id == id)?;
        let e = &mut g.entries[i];
        let first = !e.first_acked;
        let latency = first.then(|| (now.saturating_duration_since(e.intended), e.intended));
        let carried = e.carried;
        let withdraw = e
            .withdraw
            .filter(|_| first && accepted && kind == Kind::Lead);
        e.first_acked = true;
        e.expected -= 1;
        if e.expected == 0 {
            g.entries.swap_remove(i);
        }
        if let Some(after) = withdraw {
            g.scheduled.push(Scheduled {
                at: now + after,
                lead_id: id,
            });
            self.wake.notify_one();
        }
        if g.entries.is_empty() {
            self.settled.notify_one();
        }
        Some(Acked { latency, carried })
    }

    fn reader_done(&self) {
        self.lock().reader_done = true;
        self.settled.notify_one();
    }

    /// Nothing more to wait for: all acked and no withdrawal scheduled, or
    /// no reader to receive acks.
    fn is_settled(&self) -> bool {
        let g = self.lock();
        (g.entries.is_empty() && g.scheduled.is_empty()) || g.reader_done
    }

    /// Ids of `kind` whose first ack never came (at the end of the session).
    fn unacked_ids(&self, kind: Kind) -> Vec<u64> {
        self.lock()
            .entries
            .iter()
            .filter(|e| e.kind == kind && !e.first_acked)
            .map(|e| e.id)
            .collect()
    }

    /// Leads whose first ack never came (at the end of the session).
    #[cfg(test)]
    fn unacked_leads(&self) -> Vec<u64> {
        self.unacked_ids(Kind::Lead)
    }

    /// Frames still unacked, per kind (at the end of the session).
    fn unacked(&self) -> [(Kind, u64); 3] {
        let g = self.lock();
        let count = |k: Kind| {
            g.entries
                .iter()
                .filter(|e| e.kind == k)
                .map(|e| u64::from(e.expected))
                .sum()
        };
        [
            (Kind::Chat, count(Kind::Chat)),
            (Kind::Lead, count(Kind::Lead)),
            (Kind::Withdraw, count(Kind::Withdraw)),
        ]
    }
}

/// A frame to send again with the same id.
#[derive(Debug)]
struct Resend {
    at: Instant,
    kind: Kind,
    id: u64,
    intended: Instant,
    bytes: Vec<u8>,
}

/// The write half of a session.
struct Writer {
    send: SendStream,
    acks: Arc<Outstanding>,
    stats: Arc<Stats>,
    class: Class,
    next_id: u64,
    /// Scheduled resends, ordered by `at`.
    pending: std::collections::VecDeque<Resend>,
    /// Like taps held while the server paces likes, sent at `likes_due`,
    /// and how many planned like events they came from.
    held_taps: u32,
    held_events: u64,
    likes_due: Option<Instant>,
    /// When the last like frame was written.
    last_like: Option<Instant>,
}

impl Writer {
    fn next_resend(&self) -> Option<Instant> {
        self.pending.front().map(|r| r.at)
    }

    /// One `Like` frame of `count` taps from `events` planned like events;
    /// `false` if the stream is dead (the events are counted not sent).
    async fn write_likes(&mut self, count: u32, events: u64) -> bool {
        let bytes = encode(&ClientFrame::Like { count });
        if self.send.write_all(&bytes).await.is_err() {
            self.not_sent_likes(events);
            return false;
        }
        self.last_like = Some(Instant::now());
        self.stats.sent.add(Kind::Like, 1);
        self.stats.taps_sent.fetch_add(u64::from(count), Relaxed);
        self.stats
            .class_sent
            .add(self.class, Kind::Like, u64::from(count));
        self.stats.class_frames.add(self.class, Kind::Like, 1);
        true
    }

    /// Send the taps held by the like pace (in frames of at most
    /// [`MAX_LIKE_COUNT`] taps); `false` if the stream is dead.
    async fn send_held_likes(&mut self) -> bool {
        self.likes_due = None;
        let mut events = std::mem::take(&mut self.held_events);
        while self.held_taps > 0 {
            let n = self.held_taps.min(MAX_LIKE_COUNT);
            self.held_taps -= n;
            // The events go with the first frame (its failure loses them).
            if !self.write_likes(n, std::mem::take(&mut events)).await {
                self.held_taps = 0;
                return false;
            }
        }
        true
    }

    /// Like events that never reached the server.
    fn not_sent_likes(&self, events: u64) {
        if events > 0 {
            self.stats.disconnected.add(Kind::Like, events);
            self.stats
                .class_not_sent
                .add(self.class, Kind::Like, events);
        }
    }

    /// The session ends with taps still held (the connection was lost or
    /// closed first): they were not sent.
    fn abandon_held_likes(&mut self) {
        let events = std::mem::take(&mut self.held_events);
        self.not_sent_likes(events);
        self.held_taps = 0;
        self.likes_due = None;
    }

    /// The server changed the pace: held taps go now if it was lifted, else
    /// at the new pace after the last frame. `false` if the stream is dead.
    async fn repace(&mut self) -> bool {
        if self.held_taps == 0 {
            return true;
        }
        let pace = self.acks.like_pace();
        if pace.is_zero() {
            return self.send_held_likes().await;
        }
        self.likes_due = Some(self.last_like.map_or_else(Instant::now, |t| t + pace));
        true
    }

    /// Write one command; `false` if the stream is dead.
    async fn send_cmd(&mut self, cmd: Command) -> bool {
        let Command {
            action,
            intended,
            class,
            resend,
            withdraw,
        } = cmd;
        debug_assert_eq!(class, self.class, "an event comes from its viewer's class");
        match action {
            Action::Like(count) => {
                let pace = self.acks.like_pace();
                if pace.is_zero() && self.held_taps == 0 {
                    return self.write_likes(count, 1).await;
                }
                // Paced: add the taps up, one frame per pace.
                self.held_taps = self.held_taps.saturating_add(count);
                self.held_events += 1;
                let now = Instant::now();
                let next = self.last_like.map_or(now, |t| t + pace);
                if next <= now {
                    return self.send_held_likes().await;
                }
                self.likes_due.get_or_insert(next);
                true
            }
            Action::Chat(text) => {
                let id = self.take_id();
                let bytes = encode(&ClientFrame::Chat {
                    client_msg_id: id,
                    text,
                });
                self.send_tracked(Kind::Chat, id, intended, bytes, resend, None)
                    .await
            }
            Action::Lead(mut lead) => {
                let id = self.take_id();
                lead.client_lead_id = id;
                let bytes = encode(&ClientFrame::Lead(*lead));
                self.send_tracked(Kind::Lead, id, intended, bytes, resend, withdraw)
                    .await
            }
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    async fn send_tracked(
        &mut self,
        kind: Kind,
        id: u64,
        intended: Instant,
        bytes: Vec<u8>,
        resend: Option<Duration>,
        withdraw: Option<Duration>,
    ) -> bool {
        // Registered before writing: the ack may arrive before write_all returns.
        self.acks.expect(kind, id, intended, true, &bytes, withdraw);
        if self.send.write_all(&bytes).await.is_err() {
            self.acks.unexpect(kind, id);
            self.stats.disconnected.add(kind, 1);
            self.stats.class_not_sent.add(self.class, kind, 1);
            return false;
        }
        self.stats.sent.add(kind, 1);
        self.stats.class_sent.add(self.class, kind, 1);
        if let Some(after) = resend {
            let r = Resend {
                at: Instant::now() + after,
                kind,
                id,
                intended,
                bytes,
            };
            let i = self.pending.partition_point(|p| p.at <= r.at);
            self.pending.insert(i, r);
        }
        true
    }

    /// Write every resend due by `now`; `false` if the stream is dead.
    async fn send_due(&mut self, now: Instant) -> bool {
        while self.pending.front().is_some_and(|r| r.at <= now) {
            let Some(r) = self.pending.pop_front() else {
                break;
            };
            self.acks
                .expect(r.kind, r.id, r.intended, false, &r.bytes, None);
            if self.send.write_all(&r.bytes).await.is_err() {
                self.acks.unexpect(r.kind, r.id);
                return false;
            }
            self.stats.resent.add(r.kind, 1);
            self.stats.class_resent.add(self.class, r.kind, 1);
        }
        true
    }

    /// Write every withdrawal due by `now`; `false` if the stream is dead.
    /// Each is registered before it is written and stays outstanding if
    /// the write fails: it is carried to the next connection and resent.
    async fn send_withdrawals(&mut self, now: Instant) -> bool {
        while let Some(s) = self.acks.pop_due(now) {
            let bytes = encode(&ClientFrame::Withdraw {
                client_lead_id: s.lead_id,
            });
            self.acks
                .expect(Kind::Withdraw, s.lead_id, s.at, true, &bytes, None);
            self.stats.sent.add(Kind::Withdraw, 1);
            self.stats.class_sent.add(self.class, Kind::Withdraw, 1);
            if self.send.write_all(&bytes).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Answer `ticket_expiring` with a fresh ticket; `false` if the stream
    /// is dead.
    async fn refresh(&mut self, ctx: &Ctx, who: &Who) -> bool {
        let ticket = sign_ticket(ctx, who.room_id, who.viewer_id);
        let ok = self
            .send
            .write_all(&encode(&ClientFrame::Refresh { ticket }))
            .await
            .is_ok();
        if ok {
            self.stats.tickets_refreshed.fetch_add(1, Relaxed);
        }
        ok
    }

    /// `Bye`, then finish the stream; `false` if the stream is dead.
    async fn bye(&mut self) -> bool {
        self.send
            .write_all(&encode(&ClientFrame::Bye))
            .await
            .is_ok()
            && self.send.finish().is_ok()
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A connected, welcomed session.
struct Session {
    conn: quinn::Connection,
    send: SendStream,
    recv: RecvStream,
    welcome: Welcome,
}

impl Session {
    /// Run load, drain and bye; returns the label of how the connection
    /// ended and whether the viewer left by churn. `next_id` carries the
    /// viewer's client ids across sessions.
    async fn run(
        self,
        ctx: &Ctx,
        spec: &ViewerSpec,
        leave_at: Option<Instant>,
        next_id: &mut u64,
        carry: Vec<Carry>,
    ) -> (String, End) {
        let Session {
            conn, send, recv, ..
        } = self;
        let acks = Arc::new(Outstanding::default());
        let (tx, mut rx) = mpsc::channel(QUEUE);
        // After the load stopped `join` refuses; `tx` is then dropped and the
        // queue reads as closed, so the viewer goes straight to `Bye`.
        spec.registry.join(spec.slot, tx);
        let who = Who {
            room_id: spec.room_id,
            viewer_id: spec.viewer_id,
            class: spec.class,
        };
        let (refresh_tx, mut refresh_rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(
            recv,
            conn.clone(),
            acks.clone(),
            ctx.stats.clone(),
            who,
            refresh_tx,
        ));
        let mut w = Writer {
            send,
            acks: acks.clone(),
            stats: ctx.stats.clone(),
            class: spec.class,
            next_id: *next_id,
            pending: Default::default(),
            held_taps: 0,
            held_events: 0,
            likes_due: None,
            last_like: None,
        };
        let closed = conn.closed();
        tokio::pin!(closed);
        let mut end: Option<ConnectionError> = None;
        let mut ok = true;
        let mut left = false;

        // 0. After a reconnect: resend what the lost connection left unacked.
        // Each one's first ack is still to come: that ack is the latency
        // sample, measured from the original intended time. All are
        // registered first, so a failed write leaves them to carry again.
        // Withdrawals not sent yet are scheduled again, at their time.
        for c in &carry {
            if c.sent {
                w.acks
                    .expect_carried(c.kind, c.id, c.intended, &c.bytes, c.withdraw);
            } else {
                w.acks.schedule(c.intended, c.id);
            }
        }
        for c in carry.iter().filter(|c| c.sent) {
            if w.send.write_all(&c.bytes).await.is_err() {
                ok = false;
                break;
            }
            ctx.stats.reconnect_resent.add(c.kind, 1);
        }
        drop(carry);

        // 1. Load (until the driver stops, or the viewer leaves by churn).
        while ok {
            tokio::select! {
                biased;
                e = &mut closed => {
                    end = Some(e);
                    break;
                }
                () = sleep_opt(leave_at) => {
                    left = true;
                    break;
                }
                () = sleep_opt(w.next_resend()) => ok = w.send_due(Instant::now()).await,
                () = sleep_opt(acks.next_scheduled()) => {
                    ok = w.send_withdrawals(Instant::now()).await;
                }
                () = sleep_opt(w.likes_due) => ok = w.send_held_likes().await,
                () = acks.wake.notified() => ok = w.repace().await,
                Some(()) = refresh_rx.recv() => ok = w.refresh(ctx, &who).await,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => ok = w.send_cmd(cmd).await,
                    None => break,
                },
            }
        }
        // Taps the pace still holds go out before the drain and `Bye`.
        if ok && end.is_none() && w.held_taps > 0 {
            ok = w.send_held_likes().await;
        }
        spec.registry.leave(spec.slot);
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            ctx.stats.disconnected.add(cmd.kind(), 1);
            ctx.stats.class_not_sent.add(spec.class, cmd.kind(), 1);
        }

        // 2. Drain.
        if ok && end.is_none() {
            // Within the run's drain window, also after a reconnect.
            let deadline = drain_deadline(ctx);
            while !(w.pending.is_empty() && acks.is_settled()) {
                tokio::select! {
                    biased;
                    e = &mut closed => {
                        end = Some(e);
                        break;
                    }
                    () = sleep_until(deadline) => break,
                    () = sleep_opt(w.next_resend()) => {
                        ok = w.send_due(Instant::now()).await;
                        if !ok {
                            break;
                        }
                    }
                    () = sleep_opt(acks.next_scheduled()) => {
                        ok = w.send_withdrawals(Instant::now()).await;
                        if !ok {
                            break;
                        }
                    }
                    () = acks.wake.notified() => {}
                    Some(()) = refresh_rx.recv() => {
                        ok = w.refresh(ctx, &who).await;
                        if !ok {
                            break;
                        }
                    }
                    () = acks.settled.notified() => {}
                }
            }
        }
        // Resends not sent by now never will be; they were never expected.
        w.pending.clear();
        w.abandon_held_likes();

        // 3. Bye: the server answers by closing with code 0.
        let mut label = None;
        if ok && end.is_none() {
            if w.bye().await {
                match timeout(CLOSE_TIMEOUT, &mut closed).await {
                    Ok(e) => end = Some(e),
                    Err(_) => label = Some("bye_timeout".to_owned()),
                }
            } else {
                label = Some("stream_error".to_owned());
            }
        }
        let end = end.or_else(|| conn.close_reason());
        let redirect = end.as_ref().and_then(redirect_of);
        let label = match end {
            Some(e) => connection_label(&e),
            None => {
                close(&conn, CloseCode::Normal);
                label.unwrap_or_else(|| "stream_error".to_owned())
            }
        };
        // The connection is closed now, so the reader ends promptly.
        if timeout(CLOSE_TIMEOUT, reader).await.is_err() {
            tracing::debug!(viewer = spec.viewer_id, "reader did not end after close");
        }
        *next_id = w.next_id;
        if left {
            // Churn: what is unacked now is counted below, as before.
        } else if let Some(to) = redirect {
            // The room moved to another node: go there, resend the unacked.
            let mut next = acks.carry();
            next.sort_by_key(|c| c.id);
            return (
                label,
                End::Redirect {
                    carry: next,
                    to,
                    connected: true,
                },
            );
        } else if label != "normal" && !FINAL_CLOSES.contains(&label.as_str()) {
            // Lost (engine restart, `shutting_down`, reset, idle timeout…):
            // reconnect and resend what has no ack yet, ids unchanged.
            // Frames carried in but never written again stay in the carry.
            let mut next = acks.carry();
            next.sort_by_key(|c| c.id);
            return (
                label,
                End::Lost {
                    carry: next,
                    connected: true,
                },
            );
        }
        for (kind, n) in acks.unacked() {
            ctx.stats.unacked.add(kind, n);
            ctx.stats.class_unacked.add(spec.class, kind, n);
        }
        for id in acks.unacked_ids(Kind::Lead) {
            ctx.stats.record_lead(unacked_lead(spec, id));
        }
        for id in acks.unacked_ids(Kind::Withdraw) {
            ctx.stats.record_withdrawal(unacked_withdrawal(spec, id));
        }
        // Withdrawals whose time had not come by the end of the drain.
        let unsent = acks.take_scheduled().len() as u64;
        ctx.stats.disconnected.add(Kind::Withdraw, unsent);
        ctx.stats
            .class_not_sent
            .add(spec.class, Kind::Withdraw, unsent);
        (label, if left { End::Left } else { End::Done })
    }
}

/// Whose acks a reader receives.
#[derive(Debug, Clone, Copy)]
struct Who {
    room_id: u64,
    viewer_id: u64,
    class: Class,
}

/// Decode server frames until the stream or connection ends.
async fn read_loop(
    mut recv: RecvStream,
    conn: quinn::Connection,
    acks: Arc<Outstanding>,
    stats: Arc<Stats>,
    who: Who,
    refresh: mpsc::UnboundedSender<()>,
) {
    let mut buf = Vec::new();
    loop {
        match read_frame(&mut recv, &mut buf).await {
            Ok(ServerFrame::Ack {
                kind,
                client_id,
                verdict,
                reason,
                replay,
                ..
            }) => {
                let now = Instant::now();
                let kind = match AckKind::from_u8(kind) {
                    Some(AckKind::Chat) => Kind::Chat,
                    Some(AckKind::Lead) => Kind::Lead,
                    Some(AckKind::Withdraw) => Kind::Withdraw,
                    None => {
                        stats.unexpected_acks.fetch_add(1, Relaxed);
                        continue;
                    }
                };
                let accepted = Verdict::from_u8(verdict) == Some(Verdict::Accepted);
                match acks.ack(kind, client_id, now, accepted) {
                    Some(Acked { latency, carried }) => {
                        let first = latency.is_some();
                        // A first ack flagged as a replay is right for a
                        // frame carried over from a lost connection (the
                        // original was stored there, its ack was lost);
                        // on the connection that sent the original it is
                        // the server answering a resend too early.
                        if replay && first && !carried {
                            stats.replay_before_first.add(kind, 1);
                        }
                        if kind == Kind::Lead && first {
                            stats.record_lead(LeadRecord {
                                room_id: who.room_id,
                                viewer_id: who.viewer_id,
                                client_lead_id: client_id,
                                verdict: verdict_name(verdict),
                                reason: crate::stats::reason_name(reason),
                                class: who.class,
                                withdrawal: None,
                            });
                        }
                        if kind == Kind::Withdraw && first {
                            stats.record_withdrawal(WithdrawalRecord {
                                room_id: who.room_id,
                                viewer_id: who.viewer_id,
                                client_lead_id: client_id,
                                verdict: verdict_name(verdict),
                            });
                        }
                        // The first ack counts under its verdict even when
                        // flagged a replay: the id was stored once, and the
                        // verdict is the stored one. Later acks are replays.
                        stats.record_ack(AckEvent {
                            kind,
                            class: who.class,
                            verdict,
                            reason,
                            replay: replay && !first,
                            latency,
                        });
                    }
                    None => {
                        stats.unexpected_acks.fetch_add(1, Relaxed);
                    }
                }
            }
            Ok(ServerFrame::Notice(n)) => {
                stats.record_notice(n.kind);
                if n.kind == NoticeKind::TicketExpiring as u8 {
                    let _ = refresh.send(());
                } else if n.kind == NoticeKind::LikePace as u8 {
                    // At most the engine's own cap on the pace.
                    let pace = n.value.min(roomgate::config::MAX_LIKE_PACE_MS);
                    acks.like_pace_ms.store(pace, Relaxed);
                    acks.wake.notify_one();
                }
            }
            Ok(ServerFrame::Welcome(_)) => {
                stats.bad_server_frames.fetch_add(1, Relaxed);
            }
            Err(ReadFail::Wire(e)) => {
                tracing::warn!(error = %e, "undecodable server frame; closing the connection");
                stats.bad_server_frames.fetch_add(1, Relaxed);
                close(&conn, e.close_code());
                break;
            }
            Err(ReadFail::Read(_)) => break,
        }
    }
    acks.reader_done();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_likes_fit_the_engines_frame_limits() {
        let limits = roomgate::wire::Limits::default();
        assert_eq!(MAX_LIKE_COUNT, limits.max_like_count);
        assert!(
            roomgate::config::MAX_LIKE_PACE_MS
                >= roomgate::config::Config::default().server.like_pace_ms
        );
    }

    #[test]
    fn first_ack_is_the_latency_sample_and_resends_are_expected_again() {
        let o = Outstanding::default();
        let t = Instant::now();
        o.expect(Kind::Lead, 7, t, true, &[], None);
        o.expect(Kind::Lead, 7, t, false, &[], None); // resend before the first ack
        assert!(!o.is_settled());
        let later = t + Duration::from_millis(1200);
        let sample = |latency| {
            Some(Acked {
                latency,
                carried: false,
            })
        };
        assert_eq!(
            o.ack(Kind::Lead, 7, later, true),
            sample(Some((Duration::from_millis(1200), t)))
        );
        assert_eq!(
            o.ack(Kind::Lead, 7, later, true),
            sample(None),
            "replay ack: no sample"
        );
        assert!(o.is_settled());
        assert_eq!(
            o.ack(Kind::Lead, 7, later, true),
            None,
            "nothing outstanding"
        );
        // Resend after the first ack: expected again, still no latency sample.
        o.expect(Kind::Chat, 1, t, true, &[], None);
        assert!(o.ack(Kind::Chat, 1, later, true).unwrap().latency.is_some());
        o.expect(Kind::Chat, 1, t, false, &[], None);
        assert_eq!(
            o.unacked(),
            [(Kind::Chat, 1), (Kind::Lead, 0), (Kind::Withdraw, 0)]
        );
        assert!(o.unacked_leads().is_empty());
        assert_eq!(o.ack(Kind::Chat, 1, later, true), sample(None));
        // A kind mismatch is not a match.
        o.expect(Kind::Chat, 2, t, true, &[], None);
        assert_eq!(o.ack(Kind::Lead, 2, later, true), None);
        o.unexpect(Kind::Chat, 2);
        // Carried over from a lost connection: the first ack is the sample
        // and says the frame was carried (its replay flag is then expected).
        o.expect_carried(Kind::Chat, 3, t, &[], None);
        assert_eq!(
            o.ack(Kind::Chat, 3, later, true),
            Some(Acked {
                latency: Some((Duration::from_millis(1200), t)),
                carried: true
            })
        );
        assert_eq!(o.carry().len(), 0);
        // A lead with no ack at all is reported for verify.
        o.expect(Kind::Lead, 9, t, true, &[], None);
        assert_eq!(o.unacked_leads(), [9]);
    }

    #[test]
    fn an_accepted_lead_schedules_its_withdrawal_which_is_carried_until_acked() {
        let o = Outstanding::default();
        let t = Instant::now();
        let after = Some(Duration::from_secs(2));
        o.expect(Kind::Lead, 5, t, true, &[], after);
        o.expect(Kind::Lead, 6, t, true, &[], after);
        o.expect(Kind::Lead, 7, t, true, &[], None);
        let acked = t + Duration::from_millis(10);
        // Rejected: no withdrawal; not planned: none either.
        assert!(o.ack(Kind::Lead, 6, acked, false).is_some());
        assert!(o.ack(Kind::Lead, 7, acked, true).is_some());
        assert_eq!(o.next_scheduled(), None);
        assert!(o.ack(Kind::Lead, 5, acked, true).is_some());
        let due = acked + Duration::from_secs(2);
        assert_eq!(o.next_scheduled(), Some(due));
        assert!(!o.is_settled(), "a withdrawal is still to send");
        // Lost before it was due: carried as not sent, scheduled again.
        let carry = o.carry();
        assert_eq!(carry.len(), 1);
        assert!(carry[0].kind == Kind::Withdraw && carry[0].id == 5 && !carry[0].sent);
        assert_eq!(carry[0].intended, due);
        assert_eq!(o.pop_due(due - Duration::from_millis(1)), None);
        assert_eq!(
            o.pop_due(due),
            Some(Scheduled {
                at: due,
                lead_id: 5
            })
        );
        // Sent, then lost before its ack: carried as sent, same id.
        o.expect(Kind::Withdraw, 5, due, true, &[1, 2], None);
        let carry = o.carry();
        assert!(carry.len() == 1 && carry[0].sent && carry[0].bytes == [1, 2]);
        assert_eq!(o.unacked_ids(Kind::Withdraw), [5]);
        assert_eq!(o.unacked()[2], (Kind::Withdraw, 1));
        let late = due + Duration::from_millis(3);
        assert_eq!(
            o.ack(Kind::Withdraw, 5, late, true).and_then(|a| a.latency),
            Some((Duration::from_millis(3), due))
        );
        assert!(o.is_settled());
        // A lead carried over keeps its withdrawal plan.
        o.expect_carried(Kind::Lead, 8, t, &[], after);
        assert_eq!(o.carry()[0].withdraw, after);
        o.ack(Kind::Lead, 8, late, true);
        assert_eq!(o.take_scheduled().len(), 1);
        assert!(o.is_settled());
    }

    #[test]
    fn close_codes_have_names() {
        assert_eq!(close_code_name(0), "normal");
        assert_eq!(close_code_name(0x20), "bad_ticket");
        assert_eq!(close_code_name(0x999), "app_0x999");
    }
}

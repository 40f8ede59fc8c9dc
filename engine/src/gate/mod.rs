//! The gate: QUIC front door.
//!
//! Accepts connections (TLS 1.3, ALPN `roomgate/2` or `roomgate/1`), enforces the connection
//! cap and handshake timeout, verifies the viewer's ticket, then runs one
//! task per connection that decodes frames and pushes events to the shards
//! (see [`conn`]). Acks come back through a bounded per-connection channel.

pub mod admission;
mod conn;
pub mod pace;
pub mod steer;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::shard::Shards;
use crate::wal::LogHandle;
use crate::wire::{CloseCode, Limits, RoomSettings};

/// Everything a connection task needs.
#[derive(Debug)]
pub struct GateCtx {
    /// Where events go.
    pub shards: Arc<Shards>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Ticket keys (current and, during a rotation, previous).
    pub tickets: crate::wire::ticket::TicketKeys,
    /// Seconds before a session's ticket expires that the
    /// `ticket_expiring` notice goes out.
    pub refresh_notice_secs: u64,
    /// Frame limits.
    pub limits: Limits,
    /// Sent in `Welcome`.
    pub room_settings: RoomSettings,
    /// Handshake + `Hello` deadline.
    pub handshake_timeout: Duration,
    /// Ack channel capacity per connection.
    pub max_pending_acks: usize,
    /// `retry_after_ms` on `busy`.
    pub busy_retry_after_ms: u32,
    /// Events-lane share above which likes are held (`shards.shed_likes_above`).
    pub shed_likes_above: f64,
    /// Events-lane share above which chat is answered `busy`
    /// (`shards.shed_chat_above`).
    pub shed_chat_above: f64,
    /// Connections and handshakes in progress, and their caps.
    pub admission: std::sync::Mutex<admission::Admission>,
    /// Time allowed for a started frame to complete.
    pub frame_timeout: Duration,
    /// Bucket of the `busy` moderation rows, ms
    /// (`guard.abuse.moderation_bucket_ms`).
    pub moderation_bucket_ms: i64,
    /// The log: moderation rows for rejects decided in the gate (`busy`),
    /// and its disk-budget state.
    pub log: LogHandle,
    /// Flips to true when shutdown begins: sessions stop reading frames.
    pub shutdown: watch::Receiver<bool>,
    /// Flips to true when everything the sessions handed over is decided,
    /// durable and acked: sessions then close with `shutting_down`.
    pub drained: watch::Receiver<bool>,
    /// Sessions still reading frames or handing over their last events.
    pub reading: std::sync::atomic::AtomicUsize,
    /// Session id generator.
    pub next_session: AtomicU64,
    /// Which rooms this node owns (several engine nodes).
    pub routing: Arc<crate::route::Routing>,
    /// The interval like senders are asked to keep now, ms (0 = none):
    /// set by [`pace::run`], told to each session at its next like.
    pub like_pace_ms: AtomicU32,
}

impl GateCtx {
    /// A fresh session id: unique within this process, and across restarts
    /// because it starts from the boot time.
    pub fn session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}

/// Build the quinn endpoint from config and TLS material.
pub fn endpoint(cfg: &ServerConfig) -> Result<quinn::Endpoint> {
    let mut eps = endpoints(cfg, 1)?;
    eps.pop().context("no endpoint built")
}

/// Build `n` quinn endpoints on `server.listen`. With more than one, each
/// has its own UDP socket bound with `SO_REUSEPORT`, and a BPF program on
/// the group sends each packet to the endpoint whose connection ID it
/// carries ([`steer`]): packet processing is not one task's work, and a
/// viewer whose address changes stays on its endpoint. Where the program
/// cannot be attached the kernel spreads viewers by address and port
/// (logged). A listen port of 0 is resolved by the first bind.
pub fn endpoints(cfg: &ServerConfig, n: usize) -> Result<Vec<quinn::Endpoint>> {
    let (certs, key) = match (&cfg.dev_cert_dir, &cfg.cert, &cfg.key) {
        (_, Some(c), Some(k)) => tls::load(c, k)?,
        (Some(dir), _, _) => tls::dev_pair(dir)?,
        _ => anyhow::bail!("no certificate configured"),
    };
    let crypto = tls::server_crypto(certs, key)?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(cfg.max_streams_per_connection.into())
        .max_concurrent_uni_streams(0u8.into())
        // Server keep-alives: a silent viewer whose app is alive stays
        // connected; a vanished one still times out.
        .keep_alive_interval(Some(Duration::from_millis(cfg.idle_timeout_ms / 3)))
        .max_idle_timeout(Some(
            Duration::from_millis(cfg.idle_timeout_ms)
                .try_into()
                .context("server.idle_timeout_ms out of range")?,
        ))
        // Small per-stream windows bound memory with 10k+ viewers and make
        // backpressure reach the viewer quickly.
        .stream_receive_window((64u32 * 1024).into())
        .receive_window((128u32 * 1024).into())
        .send_window(256 * 1024)
        .datagram_receive_buffer_size(None);
    let mut server = quinn::ServerConfig::with_crypto(crypto);
    server.transport_config(Arc::new(transport));
    // One endpoint config for all (the same stateless-reset key), each
    // with its own connection IDs (`steer`), checked with one key.
    let shared = quinn::EndpointConfig::default();
    let n = u8::try_from(n.max(1)).context("server.endpoints must be at most 255")?;
    let cid_key: u64 = rand::random();
    let mut addr = cfg.listen;
    let mut out = Vec::with_capacity(usize::from(n));
    let mut steered = true;
    for i in 0..n {
        let (socket, attached) = udp_socket(addr, (n > 1).then_some(n))
            .with_context(|| format!("bind QUIC endpoint on {addr}"))?;
        steered &= attached;
        // The same socket (a second descriptor), to turn GRO off once quinn
        // has set its options.
        let handle = socket.try_clone().context("duplicate the UDP socket")?;
        let runtime = quinn::default_runtime().context("no async runtime for quinn")?;
        let mut endpoint_config = shared.clone();
        endpoint_config.cid_generator(move || Box::new(steer::RoutedCids::new(i, n, cid_key)));
        let ep = quinn::Endpoint::new(endpoint_config, Some(server.clone()), socket, runtime)
            .with_context(|| format!("start QUIC endpoint on {addr}"))?;
        if attached {
            if let Err(e) = steer::no_gro(&handle) {
                tracing::warn!(error = %e, "cannot turn UDP GRO off on a steered socket: a client with several connections on one socket may see some misrouted");
            }
        }
        drop(handle);
        // Later sockets bind the port the first one got.
        addr = ep.local_addr().context("QUIC local address")?;
        out.push(ep);
    }
    if n > 1 && !steered {
        tracing::warn!(
            endpoints = n,
            "no connection-ID steering on this platform: the kernel spreads viewers by address, and one whose address changes is reset (it reconnects)"
        );
    }
    Ok(out)
}

/// Socket buffer size asked of the kernel (it may grant less; Linux caps it
/// at net.core.rmem_max / wmem_max).
const UDP_BUFFER: usize = 8 << 20;

/// A UDP socket with large buffers: 10,000 viewers saying `Bye` at once
/// overflow the default ~208 KiB receive buffer. With `group: Some(n)` it
/// joins a reuse-port group of `n` sockets steered by connection ID
/// ([`steer::attach`]); the bool says whether the steering took.
fn udp_socket(addr: SocketAddr, group: Option<u8>) -> std::io::Result<(std::net::UdpSocket, bool)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if group.is_some() {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // Best effort: dual-stack where the platform allows it.
        let _ = socket.set_only_v6(false);
    }
    for set in [Socket::set_recv_buffer_size, Socket::set_send_buffer_size] {
        if let Err(e) = set(&socket, UDP_BUFFER) {
            tracing::warn!(error = %e, "cannot enlarge UDP socket buffer");
        }
    }
    socket.bind(&addr.into())?;
    let socket: std::net::UdpSocket = socket.into();
    // After `bind`: a socket that has a reuse-port group of its own before
    // it binds cannot join the port's group. The program is the group's;
    // each socket sets it again, harmlessly.
    let steered = match group {
        Some(n) => match steer::attach(&socket, n) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "reuse-port steering program not attached");
                false
            }
        },
        None => false,
    };
    Ok((socket, steered))
}

/// The accept loop's decision on one incoming connection: Retry, refuse
/// (both without any TLS work), or start its handshake in a task.
fn admit(incoming: quinn::Incoming, ctx: &Arc<GateCtx>, tasks: &mut JoinSet<()>) {
    use admission::Admit;
    let ip = incoming.remote_address().ip();
    let decision = {
        let mut a = ctx.admission.lock().unwrap_or_else(|p| p.into_inner());
        let d = a.admit(
            ip,
            incoming.remote_address_validated(),
            incoming.may_retry(),
        );
        ctx.metrics.set_admission(a.open(), a.handshaking());
        d
    };
    match decision {
        Admit::Accept => {
            tasks.spawn(conn::run(Box::new(incoming), ctx.clone(), ip));
        }
        Admit::Retry => match incoming.retry() {
            Ok(()) => {
                ctx.metrics.retries_sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                ctx.metrics.refused(admission::Refusal::ServerFull);
                e.into_incoming().refuse();
            }
        },
        Admit::Refuse(why) => {
            ctx.metrics.refused(why);
            incoming.refuse();
        }
    }
}

/// [`serve`] on every endpoint, and `pacer` deciding when like senders are
/// paced (`server.overload_lateness_ms`, `server.overload_busy_percent`,
/// `server.like_pace_ms`); returns when every endpoint is done.
pub async fn serve_all(endpoints: Vec<quinn::Endpoint>, ctx: Arc<GateCtx>, pacer: pace::Pacer) {
    let mut all = JoinSet::new();
    for ep in endpoints.iter().cloned() {
        all.spawn(serve(ep, ctx.clone()));
    }
    // Every socket stays open until every endpoint has drained: closing one
    // while others still serve would move the group's last socket into its
    // place, and packets steered by index would reach the wrong endpoint.
    let _keep = endpoints;
    // The lateness is measured (a gauge) even when pacing is off.
    let pacer = tokio::spawn(pace::run(ctx.clone(), pacer));
    while all.join_next().await.is_some() {}
    pacer.abort();
}

/// Accept connections until shutdown, then wait for every connection task to
/// close its session (each pushes its `Leave` event).
pub async fn serve(endpoint: quinn::Endpoint, ctx: Arc<GateCtx>) {
    let mut shutdown = ctx.shutdown.clone();
    let mut tasks = JoinSet::new();
    let addr: Option<SocketAddr> = endpoint.local_addr().ok();
    tracing::info!(addr = ?addr, "gate accepting QUIC connections");
    loop {
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                admit(incoming, &ctx, &mut tasks);
            }
            _ = shutdown.changed() => break,
        }
    }
    endpoint.set_server_config(None);
    tracing::info!(
        connections = tasks.len(),
        "gate stopped accepting; closing sessions"
    );
    while tasks.join_next().await.is_some() {}
    endpoint.close(CloseCode::ShuttingDown.code().into(), b"shutting_down");
    let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
}

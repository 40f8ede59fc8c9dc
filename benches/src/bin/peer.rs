//! `roomgate-peer`: a bare quinn peer speaking `roomgate/2`.
//!
//! It is the baseline of `make perf`'s front-door ratio: the same protocol
//! with no guard, queue or storage. The QUIC endpoint is the engine's own
//! ([`roomgate::gate::endpoints`], one unless `--endpoints` says more: TLS
//! 1.3 with the dev certificate written
//! to `--cert-dir`, ALPN `roomgate/2`, the same transport parameters and UDP
//! buffers), and frames go through the engine's codec ([`roomgate::wire`]).
//! Per connection it answers `Hello` with a `Welcome` (the ticket is parsed
//! for its room and viewer, never verified), `Chat` and `Lead` with an
//! accepted `Ack` at once, ignores `Like` and `Refresh`, and on `Bye` (or
//! the end of the client's stream) finishes its side and closes with code 0,
//! as the engine does. The acks of one read are encoded into one buffer and
//! written once.
//!
//! Prints `roomgate-peer listening on ADDR` once ready; on SIGTERM or Ctrl-C
//! prints `{"frames":N,"acks":M,"connections":C}` (client frames decoded,
//! acks sent, connections that completed the QUIC handshake) and exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use roomgate::config::Config;
use roomgate::wire::{
    self, AckKind, ClientFrame, CloseCode, FrameDecoder, Limits, Reason, RoomSettings, ServerFrame,
    Verdict, Welcome,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A bare `roomgate/2` QUIC peer: no guard, queue or storage.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// UDP address to serve QUIC on.
    #[arg(long, default_value = "127.0.0.1:4533")]
    listen: SocketAddr,
    /// Directory of the dev certificate: `cert.pem` is reused if there,
    /// else generated (as the engine's `server.dev_cert_dir`).
    #[arg(long, value_name = "DIR")]
    cert_dir: PathBuf,
    /// The engine's TOML configuration, for the same transport settings and
    /// frame limits (default: the engine's defaults).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// QUIC endpoints on `listen`, as the engine's `server.endpoints` (0 =
    /// cores). Default 1: a bare quinn server has one.
    #[arg(long, default_value_t = 1)]
    endpoints: usize,
}

/// What every connection shares.
struct Ctx {
    limits: Limits,
    settings: RoomSettings,
    handshake_timeout: Duration,
    next_session: AtomicU64,
    frames: AtomicU64,
    acks: AtomicU64,
    connections: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut cfg = match &args.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    cfg.server.listen = args.listen;
    cfg.server.dev_cert_dir = Some(args.cert_dir);
    cfg.server.cert = None;
    cfg.server.key = None;
    let limits = cfg.limits.to_limits();
    let ctx = Arc::new(Ctx {
        limits,
        // What the engine sends in `Welcome`.
        settings: cfg.welcome_settings(),
        handshake_timeout: Duration::from_millis(cfg.server.handshake_timeout_ms),
        next_session: AtomicU64::new((roomgate::now_ms() as u64 / 1000) << 32),
        frames: AtomicU64::new(0),
        acks: AtomicU64::new(0),
        connections: AtomicU64::new(0),
    });
    cfg.server.endpoints = args.endpoints;
    let n = cfg.server.endpoint_count();
    let endpoints = roomgate::gate::endpoints(&cfg.server, n)?;
    let addr = endpoints
        .first()
        .context("no endpoint")?
        .local_addr()
        .context("local address")?;
    println!("roomgate-peer listening on {addr} ({n} endpoints)");
    for endpoint in &endpoints {
        let (endpoint, ctx) = (endpoint.clone(), ctx.clone());
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                tokio::spawn(connection(incoming, ctx.clone()));
            }
        });
    }
    stop_signal().await?;
    for endpoint in &endpoints {
        endpoint.close(CloseCode::ShuttingDown.code().into(), b"shutting_down");
    }
    for endpoint in &endpoints {
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    }
    println!(
        r#"{{"frames":{},"acks":{},"connections":{}}}"#,
        ctx.frames.load(Relaxed),
        ctx.acks.load(Relaxed),
        ctx.connections.load(Relaxed)
    );
    Ok(())
}

/// SIGTERM or Ctrl-C.
async fn stop_signal() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("listen for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("listen for Ctrl-C")?;
    Ok(())
}

fn close(conn: &quinn::Connection, code: CloseCode) {
    conn.close(code.code().into(), code.as_str().as_bytes());
}

/// Room and viewer from `v2.<key_id>.<room>.<viewer>.…` (0 if absent): the
/// signature, expiry and key are not checked.
fn room_and_viewer(ticket: &str) -> (u64, u64) {
    let mut parts = ticket.split('.').skip(2);
    let mut num = || parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (num(), num())
}

/// Serve one connection to its end.
async fn connection(incoming: quinn::Incoming, ctx: Arc<Ctx>) {
    let deadline = Instant::now() + ctx.handshake_timeout;
    let Ok(Ok(conn)) = tokio::time::timeout_at(deadline.into(), incoming).await else {
        return;
    };
    ctx.connections.fetch_add(1, Relaxed);
    let Ok(Ok((mut send, mut recv))) =
        tokio::time::timeout_at(deadline.into(), conn.accept_bi()).await
    else {
        close(&conn, CloseCode::HelloTimeout);
        return;
    };
    let mut dec = FrameDecoder::new(ctx.limits);
    let mut out = Vec::with_capacity(4096);
    let mut welcomed = false;
    let code = 'session: loop {
        loop {
            let frame = match dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => break 'session e.close_code(),
            };
            ctx.frames.fetch_add(1, Relaxed);
            let ack = match frame {
                ClientFrame::Hello(h) if !welcomed => {
                    welcomed = true;
                    let (room_id, viewer_id) = room_and_viewer(&h.ticket);
                    let welcome = ServerFrame::Welcome(Welcome {
                        room_id,
                        viewer_id,
                        session_id: ctx.next_session.fetch_add(1, Relaxed),
                        settings: ctx.settings.clone(),
                    });
                    out.extend_from_slice(&wire::encode(&welcome));
                    continue;
                }
                _ if !welcomed => break 'session CloseCode::UnexpectedFrame,
                ClientFrame::Hello(_) => break 'session CloseCode::UnexpectedFrame,
                ClientFrame::Bye => break 'session CloseCode::Normal,
                ClientFrame::Like { .. } | ClientFrame::Refresh { .. } => continue,
                ClientFrame::Chat { client_msg_id, .. } => (AckKind::Chat, client_msg_id),
                ClientFrame::Lead(lead) => (AckKind::Lead, lead.client_lead_id),
                ClientFrame::Withdraw { client_lead_id } => (AckKind::Withdraw, client_lead_id),
            };
            out.extend_from_slice(&wire::encode(&ServerFrame::Ack {
                kind: ack.0 as u8,
                client_id: ack.1,
                verdict: Verdict::Accepted as u8,
                reason: Reason::None as u16,
                retry_after_ms: 0,
                replay: false,
            }));
            ctx.acks.fetch_add(1, Relaxed);
        }
        if !out.is_empty() {
            if send.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        let chunk = if welcomed {
            recv.read_chunk(64 * 1024, true).await
        } else {
            match tokio::time::timeout_at(deadline.into(), recv.read_chunk(16 * 1024, true)).await {
                Ok(r) => r,
                Err(_) => break CloseCode::HelloTimeout,
            }
        };
        match chunk {
            Ok(Some(c)) => dec.push(&c.bytes),
            // The client finished its stream: without a `Hello` that is an
            // unexpected end, after one a `Bye` without the frame.
            Ok(None) if !welcomed => break CloseCode::UnexpectedFrame,
            Ok(None) => break CloseCode::Normal,
            Err(_) => return,
        }
    };
    // As the engine ends a session: normally, the frames of this read go
    // out, the stream is finished, then code 0; on an error, closed at once.
    if code == CloseCode::Normal {
        if !out.is_empty() && send.write_all(&out).await.is_err() {
            return;
        }
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
    }
    close(&conn, code);
}

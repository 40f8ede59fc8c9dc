//! Command-line flags, validated once into a typed [`Config`].

use std::{
    net::{SocketAddr, ToSocketAddrs},
    path::PathBuf,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;

/// Environment variable holding the shared ticket secret.
pub const SECRET_ENV: &str = "ROOMGATE_TICKET_SECRET";

/// Simulated live-stream rooms over QUIC: viewers join, chat, tap likes and
/// leave leads at open-loop Poisson rates; latency is measured from each
/// event's intended send time.
///
/// The ticket secret is read from the ROOMGATE_TICKET_SECRET environment
/// variable (required; the same secret the engine verifies tickets with).
#[derive(Debug, Clone, Parser)]
#[command(name = "roomgate-loadgen", version)]
pub struct Args {
    /// Engine address, host:port [default: 127.0.0.1:4433].
    #[arg(long, default_value = "127.0.0.1:4433")]
    pub server: String,

    /// PEM certificate the server presents; trusted as the only root (required).
    #[arg(long)]
    pub cert: PathBuf,

    /// TLS server name to verify the certificate against [default: localhost].
    #[arg(long, default_value = "localhost")]
    pub server_name: String,

    /// Number of rooms [default: 1].
    #[arg(long, default_value_t = 1)]
    pub rooms: u32,

    /// Viewers per room [default: 10000].
    #[arg(long, default_value_t = 10_000)]
    pub viewers: u32,

    /// Seconds of load, counted from the start of the join ramp [default: 60].
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,

    /// Seconds over which viewers join, linearly [default: 10].
    #[arg(long, default_value_t = 10.0)]
    pub ramp: f64,

    /// Chat messages per second per room (Poisson) [default: 50].
    #[arg(long, default_value_t = 50.0)]
    pub chat_rate: f64,

    /// Like taps per second per room (Poisson); above 2000/s taps are
    /// batched into Like{count} frames so frames/s stays ≤ 2000 [default: 1000].
    #[arg(long, default_value_t = 1000.0)]
    pub like_rate: f64,

    /// Leads per second per room (Poisson) [default: 2].
    #[arg(long, default_value_t = 2.0)]
    pub lead_rate: f64,

    /// Fraction (0..=1) of chats and leads sent a second time with the same
    /// client id 50–500 ms later, to exercise server idempotency [default: 0.02].
    #[arg(long, default_value_t = 0.02)]
    pub resend_share: f64,

    /// UDP sockets (quinn client endpoints) the connections are spread over [default: 8].
    #[arg(long, default_value_t = 8)]
    pub sockets: u32,

    /// Seed for arrival schedules and content [default: 1].
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// First room id; rooms are room_base..room_base+rooms [default: 1].
    #[arg(long, default_value_t = 1)]
    pub room_base: u64,

    /// Seconds to wait for outstanding chat/lead acks after the load stops [default: 15].
    #[arg(long, default_value_t = 15.0)]
    pub drain_timeout: f64,

    /// Write the JSON summary to this file [default: none].
    #[arg(long)]
    pub summary_json: Option<PathBuf>,

    /// Maximum concurrent handshakes (connect + Hello + Welcome) [default: 256].
    #[arg(long, default_value_t = 256)]
    pub max_handshakes: u32,

    /// QUIC keep-alive interval in seconds; must be below the server's idle
    /// timeout, since most viewers are silent for long stretches [default: 5].
    #[arg(long, default_value_t = 5.0)]
    pub keep_alive: f64,
}

/// A validated run configuration. Serialized (without the secret) into the
/// summary's `config` section.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The `--server` argument as given.
    pub server: String,
    /// The address it resolved to.
    pub server_addr: SocketAddr,
    /// Certificate file trusted as the only root.
    pub cert: PathBuf,
    /// TLS server name.
    pub server_name: String,
    /// Number of rooms.
    pub rooms: u32,
    /// Viewers per room.
    pub viewers: u32,
    /// Load duration.
    #[serde(rename = "duration_s", serialize_with = "secs")]
    pub duration: Duration,
    /// Join ramp.
    #[serde(rename = "ramp_s", serialize_with = "secs")]
    pub ramp: Duration,
    /// Chat messages per second per room.
    pub chat_rate: f64,
    /// Like taps per second per room.
    pub like_rate: f64,
    /// Leads per second per room.
    pub lead_rate: f64,
    /// Share of chats and leads resent with the same id.
    pub resend_share: f64,
    /// Client endpoints (UDP sockets).
    pub sockets: u32,
    /// RNG seed.
    pub seed: u64,
    /// First room id.
    pub room_base: u64,
    /// Wait for outstanding acks after the load stops.
    #[serde(rename = "drain_timeout_s", serialize_with = "secs")]
    pub drain_timeout: Duration,
    /// Where the JSON summary goes.
    pub summary_json: Option<PathBuf>,
    /// Concurrent handshake cap.
    pub max_handshakes: u32,
    /// QUIC keep-alive interval.
    #[serde(rename = "keep_alive_s", serialize_with = "secs")]
    pub keep_alive: Duration,
    /// Ticket HMAC secret (never serialized or printed).
    #[serde(skip)]
    pub secret: Secret,
}

/// The ticket secret; `Debug` does not reveal it.
#[derive(Clone, Default)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Viewer ids are `room_id * VIEWER_ID_STRIDE + index`, unique across rooms.
pub const VIEWER_ID_STRIDE: u64 = 1_000_000;

fn seconds(name: &str, v: f64, allow_zero: bool) -> Result<Duration> {
    if !v.is_finite() || v < 0.0 || (!allow_zero && v == 0.0) {
        bail!(
            "--{name} must be a {} number of seconds, got {v}",
            if allow_zero {
                "non-negative"
            } else {
                "positive"
            }
        );
    }
    Ok(Duration::from_secs_f64(v))
}

fn rate(name: &str, v: f64) -> Result<f64> {
    if !v.is_finite() || v < 0.0 {
        bail!("--{name} must be a non-negative number of events per second, got {v}");
    }
    Ok(v)
}

impl Config {
    /// Validate flags and read the secret from `secret` (the environment
    /// variable's value, passed in so tests need not touch the environment).
    pub fn from_args(a: Args, secret: Option<String>) -> Result<Config> {
        let secret = match secret {
            Some(s) if !s.is_empty() => Secret(s.into_bytes()),
            _ => bail!(
                "{SECRET_ENV} is not set: export the ticket secret the engine was started with \
                 (e.g. {SECRET_ENV}=devsecret)"
            ),
        };
        let server_addr = a
            .server
            .to_socket_addrs()
            .with_context(|| format!("--server {}: cannot resolve (expected host:port)", a.server))?
            .next()
            .with_context(|| format!("--server {}: resolves to no address", a.server))?;
        if a.rooms == 0 || a.viewers == 0 {
            bail!("--rooms and --viewers must be at least 1");
        }
        if u64::from(a.viewers) >= VIEWER_ID_STRIDE {
            bail!("--viewers must be below {VIEWER_ID_STRIDE} (viewer ids are room_id*{VIEWER_ID_STRIDE}+i)");
        }
        if a.room_base
            .checked_add(u64::from(a.rooms))
            .and_then(|r| r.checked_mul(VIEWER_ID_STRIDE))
            .is_none()
        {
            bail!("--room-base {} is too large", a.room_base);
        }
        let duration = seconds("duration", a.duration, false)?;
        let ramp = seconds("ramp", a.ramp, true)?;
        if ramp > duration {
            bail!(
                "--ramp ({}) must not exceed --duration ({})",
                a.ramp,
                a.duration
            );
        }
        if !(0.0..=1.0).contains(&a.resend_share) {
            bail!("--resend-share must be in 0..=1, got {}", a.resend_share);
        }
        if a.sockets == 0 || a.max_handshakes == 0 {
            bail!("--sockets and --max-handshakes must be at least 1");
        }
        Ok(Config {
            server: a.server,
            server_addr,
            cert: a.cert,
            server_name: a.server_name,
            rooms: a.rooms,
            viewers: a.viewers,
            duration,
            ramp,
            chat_rate: rate("chat-rate", a.chat_rate)?,
            like_rate: rate("like-rate", a.like_rate)?,
            lead_rate: rate("lead-rate", a.lead_rate)?,
            resend_share: a.resend_share,
            sockets: a.sockets,
            seed: a.seed,
            room_base: a.room_base,
            drain_timeout: seconds("drain-timeout", a.drain_timeout, true)?,
            summary_json: a.summary_json,
            max_handshakes: a.max_handshakes,
            keep_alive: seconds("keep-alive", a.keep_alive, false)?,
            secret,
        })
    }

    /// Total viewers over all rooms.
    pub fn total_viewers(&self) -> u64 {
        u64::from(self.rooms) * u64::from(self.viewers)
    }

    /// Room id of room index `r`.
    pub fn room_id(&self, r: u32) -> u64 {
        self.room_base + u64::from(r)
    }

    /// Viewer id of viewer `i` in room index `r`.
    pub fn viewer_id(&self, r: u32, i: u32) -> u64 {
        self.room_id(r) * VIEWER_ID_STRIDE + u64::from(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["roomgate-loadgen", "--cert", "c.pem"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn defaults_match_the_documentation() {
        let c = Config::from_args(args(&[]), Some("s".into())).unwrap();
        assert_eq!(c.server_addr, SocketAddr::from(([127, 0, 0, 1], 4433)));
        assert_eq!(c.server_name, "localhost");
        assert_eq!((c.rooms, c.viewers), (1, 10_000));
        assert_eq!(c.duration, Duration::from_secs(60));
        assert_eq!(c.ramp, Duration::from_secs(10));
        assert_eq!((c.chat_rate, c.like_rate, c.lead_rate), (50.0, 1000.0, 2.0));
        assert_eq!(c.resend_share, 0.02);
        assert_eq!((c.sockets, c.seed, c.room_base), (8, 1, 1));
        assert_eq!(c.drain_timeout, Duration::from_secs(15));
        assert_eq!(c.max_handshakes, 256);
        assert_eq!(c.summary_json, None);
    }

    #[test]
    fn missing_secret_and_bad_values_are_clear_errors() {
        let e = Config::from_args(args(&[]), None).unwrap_err().to_string();
        assert!(e.contains(SECRET_ENV), "{e}");
        let e = Config::from_args(args(&[]), Some(String::new()))
            .unwrap_err()
            .to_string();
        assert!(e.contains(SECRET_ENV), "{e}");
        for bad in [
            &["--resend-share", "1.5"][..],
            &["--ramp", "100"],
            &["--duration", "0"],
            &["--viewers", "0"],
            &["--chat-rate=-1"],
            &["--server", "no-port-here"],
        ] {
            assert!(
                Config::from_args(args(bad), Some("s".into())).is_err(),
                "{bad:?}"
            );
        }
        assert!(
            Args::try_parse_from(["roomgate-loadgen"]).is_err(),
            "--cert is required"
        );
    }

    #[test]
    fn viewer_ids_are_unique_across_rooms() {
        let c = Config::from_args(
            args(&["--rooms", "3", "--room-base", "7"]),
            Some("s".into()),
        )
        .unwrap();
        assert_eq!(c.room_id(2), 9);
        assert_eq!(c.viewer_id(0, 9_999), 7_009_999);
        assert_eq!(c.viewer_id(1, 0), 8_000_000);
    }
}

//! Command-line flags, validated once into a typed [`Config`].
//!
//! What the load *is* (rooms, viewers, classes, rates, join, churn, storms,
//! tolerances) comes from a scenario file ([`Scenario`]); the flags that
//! share a name with a scenario key override it. Without `--scenario` the
//! run is [`Scenario::basic`]. Where and how to connect (server, cert,
//! sockets, keep-alive) and what to write are flags only.

use std::{
    net::{SocketAddr, ToSocketAddrs},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, Parser, Subcommand};
use roomgate::{
    route::NodeSet,
    wire::ticket::{TicketKey, MIN_SECRET_BYTES},
};
use serde::Serialize;

use crate::{
    scenario::{Scenario, Tolerances},
    servers::Servers,
    truth::{Class, ClassLayout, Worker},
    verify::{Settle, Target},
};

pub use crate::truth::VIEWER_ID_STRIDE;

/// Environment variable holding the shared ticket secret.
pub const SECRET_ENV: &str = "ROOMGATE_TICKET_SECRET";

/// Simulated live-stream rooms over QUIC: viewers join, chat, tap likes and
/// leave leads at open-loop Poisson rates; latency is measured from each
/// event's intended send time. A scenario file (--scenario) describes
/// behaviour classes (legitimate and abusive) with ground truth that
/// `verify` checks against ClickHouse.
///
/// The ticket secret is read from the ROOMGATE_TICKET_SECRET environment
/// variable (required; the same secret the engine verifies tickets with).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "roomgate-loadgen",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// `verify`, or nothing to run a load.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Run flags.
    #[command(flatten)]
    pub run: Args,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Check a finished run (its --summary-json) against ClickHouse: per
    /// class sent / accepted / rejected by reason / stored, the guard's
    /// precision and recall per abusive class; exit 3 if a check fails.
    Verify(VerifyArgs),
    /// Combine the summaries of a split run's workers (--worker K/N) into
    /// one summary and report: counters added, latency histograms merged
    /// (not averaged), lead records joined; optionally verify the whole run.
    Merge(MergeArgs),
}

/// Flags of `merge`.
#[derive(Debug, Clone, ClapArgs)]
pub struct MergeArgs {
    /// The workers' summaries (each worker's --summary-json; its lead
    /// records are read from next to it), one per worker 1/N … N/N.
    #[arg(required = true, value_name = "SUMMARY_JSON")]
    pub summaries: Vec<PathBuf>,

    /// Write the merged summary here, and its lead records next to it.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,

    /// Write the merged HTML report here.
    #[arg(long)]
    pub report_html: Option<PathBuf>,

    /// Verify the merged run against ClickHouse (needs --database); the
    /// exit code is verify's.
    #[arg(long)]
    pub verify: bool,

    /// Where ClickHouse is.
    #[command(flatten)]
    pub clickhouse: ChArgs,

    /// Tolerances (default: the ones the workers recorded).
    #[command(flatten)]
    pub tolerances: TolArgs,
}

/// Flags of a load run.
#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    /// Scenario file (TOML; see loadgen/README.md and loadgen/scenarios/).
    /// Flags given on the command line override its keys [default: the
    /// basic mix: every viewer chats, taps and leaves leads].
    #[arg(long)]
    pub scenario: Option<PathBuf>,

    /// Engine address, host:port [default: 127.0.0.1:4433].
    #[arg(long, default_value = "127.0.0.1:4433")]
    pub server: String,

    /// Several engine nodes, `id=addr,id=addr,...` (the engines' `[routing]`
    /// list): each room goes to the node that owns it (the engine's own
    /// rendezvous function, docs/ROUTING.md); viewers follow `wrong_node`
    /// closes and, when a node cannot be reached, try the next node of
    /// their room's ranking. Instead of --server.
    #[arg(long, value_name = "ID=ADDR,...", conflicts_with = "server")]
    pub servers: Option<String>,

    /// PEM certificate the server presents; trusted as the only root (required).
    #[arg(long)]
    pub cert: Option<PathBuf>,

    /// TLS server name to verify the certificate against [default: localhost].
    #[arg(long, default_value = "localhost")]
    pub server_name: String,

    /// Number of rooms [scenario: rooms; default: 1].
    #[arg(long)]
    pub rooms: Option<u32>,

    /// Viewers per room [scenario: viewers; default: 10000].
    #[arg(long)]
    pub viewers: Option<u32>,

    /// Seconds of load, counted from the start of the join ramp
    /// [scenario: duration; default: 60].
    #[arg(long)]
    pub duration: Option<f64>,

    /// Seconds over which viewers join, linearly; 0 = a join storm; replaces
    /// the scenario's join phases [scenario: join.ramp; default: 10].
    #[arg(long)]
    pub ramp: Option<f64>,

    /// Legitimate chat messages per second per room (Poisson): the chatters'
    /// rate in a scenario [scenario: classes.chatter.chat_rate; default: 50].
    #[arg(long)]
    pub chat_rate: Option<f64>,

    /// Legitimate like taps per second per room: the like tappers' rate in a
    /// scenario; without one, above 2000/s taps are batched into Like{count}
    /// frames so frames/s stays ≤ 2000
    /// [scenario: classes.like_tapper.like_rate; default: 1000].
    #[arg(long)]
    pub like_rate: Option<f64>,

    /// Legitimate leads per second per room (Poisson)
    /// [scenario: classes.lead_submitter.lead_rate; default: 2].
    #[arg(long)]
    pub lead_rate: Option<f64>,

    /// Fraction (0..=1) of chats and leads sent a second time with the same
    /// client id 50–500 ms later, to exercise server idempotency
    /// [scenario: resend_share; default: 0.02].
    #[arg(long)]
    pub resend_share: Option<f64>,

    /// UDP sockets (quinn client endpoints) the connections are spread over
    /// [scenario: sockets; default: 8].
    #[arg(long)]
    pub sockets: Option<u32>,

    /// Seed for arrival schedules, content and viewer picks
    /// [scenario: seed; default: 1].
    #[arg(long)]
    pub seed: Option<u64>,

    /// First room id; rooms are room_base..room_base+rooms
    /// [scenario: room_base; default: 1].
    #[arg(long)]
    pub room_base: Option<u64>,

    /// Seconds to wait for outstanding chat/lead acks after the load stops
    /// [scenario: drain_timeout; default: 15].
    #[arg(long)]
    pub drain_timeout: Option<f64>,

    /// Write the JSON summary to this file, and the lead records next to it
    /// (<name>.leads.jsonl) [default: none].
    #[arg(long)]
    pub summary_json: Option<PathBuf>,

    /// Write a self-contained HTML report (charts) to this file [default: none].
    #[arg(long)]
    pub report_html: Option<PathBuf>,

    /// Maximum concurrent handshakes (connect + Hello + Welcome)
    /// [scenario: max_handshakes; default: 256].
    #[arg(long)]
    pub max_handshakes: Option<u32>,

    /// QUIC keep-alive interval in seconds; must be below the server's idle
    /// timeout, since most viewers are silent for long stretches [default: 5].
    #[arg(long, default_value_t = 5.0)]
    pub keep_alive: f64,

    /// QUIC idle timeout in seconds the viewers propose: how long a viewer
    /// takes to notice a vanished server (kill -9) and reconnect
    /// [default: 30].
    #[arg(long, default_value_t = 30.0)]
    pub idle_timeout: f64,

    /// Id of the ticket key (the engine's tickets.key_id; env
    /// ROOMGATE_TICKET_KEY_ID) [default: k1].
    #[arg(long, env = "ROOMGATE_TICKET_KEY_ID", default_value = "k1")]
    pub ticket_key_id: String,

    /// Lifetime of each ticket, seconds: a session outliving it answers the
    /// engine's ticket_expiring notice with a Refresh frame [default: 3600].
    #[arg(long, default_value_t = 3600)]
    pub ticket_ttl: u64,

    /// Exit non-zero (4) when fewer than this share of the viewers ever
    /// connected [default: 0.5].
    #[arg(long, default_value_t = 0.5)]
    pub min_connected: f64,

    /// Run one share of the viewers, K of N (e.g. 2/3): this process runs
    /// the viewers whose index i has i % N == K - 1, in every room, and
    /// plans every room's events exactly as one process would (same seed),
    /// sending only its viewers' events. Run N workers with the same flags
    /// and scenario, each with its own --summary-json, then combine them
    /// with `roomgate-loadgen merge` [default: one process runs everything].
    #[arg(long, value_name = "K/N")]
    pub worker: Option<Worker>,

    /// After the run, verify it against ClickHouse (needs --clickhouse-url
    /// and --database); the exit code is verify's. Not with --worker: verify
    /// the merged summary.
    #[arg(long)]
    pub verify: bool,

    /// ClickHouse to verify against.
    #[command(flatten)]
    pub clickhouse: ChArgs,

    /// Verify tolerances.
    #[command(flatten)]
    pub tolerances: TolArgs,
}

/// Where ClickHouse is.
#[derive(Debug, Clone, ClapArgs)]
pub struct ChArgs {
    /// ClickHouse HTTP(S) URL [default: http://127.0.0.1:8123].
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    pub clickhouse_url: String,

    /// ClickHouse database the engine writes to (required for verify).
    #[arg(long)]
    pub database: Option<String>,

    /// ClickHouse user [env: ROOMGATE_CLICKHOUSE_USER; default: the server's default].
    #[arg(long, env = "ROOMGATE_CLICKHOUSE_USER")]
    pub clickhouse_user: Option<String>,

    /// ClickHouse password [env: ROOMGATE_CLICKHOUSE_PASSWORD].
    #[arg(long, env = "ROOMGATE_CLICKHOUSE_PASSWORD", hide_env_values = true)]
    pub clickhouse_password: Option<String>,

    /// Verify waits until the run's row counts stay unchanged this many
    /// seconds (the engine flushes batches by age) [default: 3].
    #[arg(long, default_value_t = 3.0)]
    pub settle_secs: f64,

    /// …but at most this many seconds [default: 60].
    #[arg(long, default_value_t = 60.0)]
    pub wait_secs: f64,

    /// Then wait up to this many seconds for the engine's eraser to blank
    /// the personal columns of every withdrawn lead in `leads` (checked
    /// once they are blank, or when the time is up); 0 skips that check
    /// [default: 30].
    #[arg(long, default_value_t = 30.0)]
    pub erase_wait_secs: f64,
}

/// Tolerance overrides (the scenario's `[verify]`).
#[derive(Debug, Clone, Default, ClapArgs)]
pub struct TolArgs {
    /// Share of legitimate events the guard may reject [scenario:
    /// verify.max_legit_rejected; default: 0].
    #[arg(long)]
    pub max_legit_rejected: Option<f64>,

    /// Share of legitimate chat that may be answered busy [scenario:
    /// verify.max_busy; default: 0.01].
    #[arg(long)]
    pub max_busy: Option<f64>,

    /// Share of chat/lead frames that may go unacked [scenario:
    /// verify.max_unacked; default: 0].
    #[arg(long)]
    pub max_unacked: Option<f64>,

    /// Share of connection attempts that may fail [scenario:
    /// verify.max_failed_connections; default: 0].
    #[arg(long)]
    pub max_failed_connections: Option<f64>,

    /// Share of like taps that may be lost (neither stored nor rate
    /// limited): an engine crash loses the taps it was summing
    /// [scenario: verify.max_likes_lost; default: 0].
    #[arg(long)]
    pub max_likes_lost: Option<f64>,

    /// CLASS=SHARE: share of an abusive class's events that may get through,
    /// repeatable (e.g. raider=0.2) [scenario: verify.max_abuse_accepted].
    #[arg(long, value_name = "CLASS=SHARE")]
    pub max_abuse_accepted: Vec<String>,
}

impl TolArgs {
    /// Apply the overrides to `t`.
    pub fn apply(&self, t: &mut Tolerances) -> Result<()> {
        let check = |name: &str, v: f64| -> Result<f64> {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                bail!("--{name} must be in 0..=1, got {v}");
            }
            Ok(v)
        };
        if let Some(v) = self.max_legit_rejected {
            t.max_legit_rejected = check("max-legit-rejected", v)?;
        }
        if let Some(v) = self.max_busy {
            t.max_busy = check("max-busy", v)?;
        }
        if let Some(v) = self.max_unacked {
            t.max_unacked = check("max-unacked", v)?;
        }
        if let Some(v) = self.max_failed_connections {
            t.max_failed_connections = check("max-failed-connections", v)?;
        }
        if let Some(v) = self.max_likes_lost {
            t.max_likes_lost = check("max-likes-lost", v)?;
        }
        for kv in &self.max_abuse_accepted {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--max-abuse-accepted {kv}: expected CLASS=SHARE"))?;
            let class = Class::from_name(k.trim())
                .filter(|c| c.is_abusive())
                .with_context(|| {
                    format!(
                        "--max-abuse-accepted {kv}: {k} is not an abusive class \
                         (flooder, raider, harasser, fake_lead_bot)"
                    )
                })?;
            let v: f64 = v
                .trim()
                .parse()
                .with_context(|| format!("--max-abuse-accepted {kv}: not a number"))?;
            t.max_abuse_accepted
                .set(class, check("max-abuse-accepted", v)?);
        }
        Ok(())
    }
}

/// Flags of `verify`.
#[derive(Debug, Clone, ClapArgs)]
pub struct VerifyArgs {
    /// The run's summary (--summary-json of the run); its lead records are
    /// read from next to it.
    #[arg(long)]
    pub summary_json: PathBuf,

    /// Also write an HTML report of the run with the verify results.
    #[arg(long)]
    pub report_html: Option<PathBuf>,

    /// Where ClickHouse is.
    #[command(flatten)]
    pub clickhouse: ChArgs,

    /// Tolerances (default: the ones recorded in the summary).
    #[command(flatten)]
    pub tolerances: TolArgs,
}

impl ChArgs {
    /// The verify target and wait; errors without `--database`.
    pub fn target(&self) -> Result<(Target, Settle)> {
        let database = self
            .database
            .clone()
            .filter(|d| !d.is_empty())
            .context("--database is required to verify (the engine's ClickHouse database)")?;
        let secs = |name: &str, v: f64| -> Result<Duration> {
            if !(v.is_finite() && v >= 0.0) {
                bail!("--{name} must be a non-negative number of seconds, got {v}");
            }
            Ok(Duration::from_secs_f64(v))
        };
        Ok((
            Target {
                url: self.clickhouse_url.clone(),
                database,
                user: self.clickhouse_user.clone().filter(|u| !u.is_empty()),
                password: self.clickhouse_password.clone().filter(|p| !p.is_empty()),
            },
            Settle {
                quiet: secs("settle-secs", self.settle_secs)?,
                max_wait: secs("wait-secs", self.wait_secs)?,
                erase_wait: secs("erase-wait-secs", self.erase_wait_secs)?,
            },
        ))
    }
}

/// A validated run configuration. Serialized (without the secret) into the
/// summary's `config` section; the first keys are the basic loadgen's.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The `--server` argument as given.
    pub server: String,
    /// The address it resolved to (with `--servers`: the first node's).
    pub server_addr: SocketAddr,
    /// The `--servers` list, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers_list: Option<String>,
    /// Where viewers connect.
    #[serde(skip)]
    pub servers: Arc<Servers>,
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
    /// Join ramp (the longest phase's).
    #[serde(rename = "ramp_s", serialize_with = "secs")]
    pub ramp: Duration,
    /// Legitimate chat messages per second per room.
    pub chat_rate: f64,
    /// Legitimate like taps per second per room (storms excluded).
    pub like_rate: f64,
    /// Legitimate leads per second per room.
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
    /// QUIC idle timeout proposed by the viewers.
    #[serde(rename = "idle_timeout_s", serialize_with = "secs")]
    pub idle_timeout: Duration,
    /// Least share of viewers that must connect for exit code 0.
    pub min_connected: f64,
    /// Scenario file, if any.
    pub scenario_file: Option<PathBuf>,
    /// Where the HTML report goes.
    pub report_html: Option<PathBuf>,
    /// The resolved scenario (file + flags).
    #[serde(serialize_with = "arc")]
    pub scenario: Arc<Scenario>,
    /// Viewer classes per room.
    #[serde(skip)]
    pub layout: Arc<ClassLayout>,
    /// Scenario warnings (logged at start).
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// Verify after the run.
    #[serde(skip)]
    pub verify: Option<(Target, Settle)>,
    /// Lifetime of each ticket, seconds.
    #[serde(rename = "ticket_ttl_s")]
    pub ticket_ttl: u64,
    /// This process's share of a split run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<Worker>,
    /// The ticket key (id and secret; `Debug` does not reveal the secret,
    /// and it is never serialized).
    #[serde(skip)]
    pub ticket_key: TicketKey,
}

fn arc<S: serde::Serializer, T: Serialize>(v: &Arc<T>, s: S) -> Result<S::Ok, S::Error> {
    (**v).serialize(s)
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

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

impl Config {
    /// Validate flags (over the scenario file, if any) and read the secret
    /// from `secret` (the environment variable's value, passed in so tests
    /// need not touch the environment).
    pub fn from_args(a: Args, secret: Option<String>) -> Result<Config> {
        let ticket_key = match secret {
            Some(s) if !s.is_empty() => TicketKey::new(&a.ticket_key_id, s.as_bytes())
                .map_err(|e| anyhow::anyhow!("{SECRET_ENV} / --ticket-key-id: {e}"))?,
            _ => bail!(
                "{SECRET_ENV} is not set: export the ticket secret the engine was started with \
                 (at least {MIN_SECRET_BYTES} bytes)"
            ),
        };
        if a.ticket_ttl == 0 {
            bail!("--ticket-ttl must be at least 1 second");
        }
        let Some(cert) = a.cert.clone() else {
            bail!("--cert is required: the PEM certificate the engine presents");
        };
        let resolve = |flag: &str, addr: &str| -> Result<SocketAddr> {
            addr.to_socket_addrs()
                .with_context(|| format!("{flag} {addr}: cannot resolve (expected host:port)"))?
                .next()
                .with_context(|| format!("{flag} {addr}: resolves to no address"))
        };
        let (server_addr, servers) = match &a.servers {
            Some(list) => {
                let nodes: NodeSet = list
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--servers {list}: {e}"))?;
                let mut addrs = std::collections::HashMap::new();
                for n in nodes.nodes() {
                    addrs.insert(n.id.clone(), resolve("--servers", &n.addr)?);
                }
                let first = nodes
                    .nodes()
                    .first()
                    .map(|n| n.id.clone())
                    .unwrap_or_default();
                let addr = addrs.get(&first).copied().context("--servers: empty")?;
                (addr, Servers::routed(nodes, addrs))
            }
            None => {
                let addr = resolve("--server", &a.server)?;
                (addr, Servers::single(addr))
            }
        };
        let mut sc = match &a.scenario {
            Some(p) => Scenario::load(p)?,
            None => Scenario::basic(),
        };
        if let Some(v) = a.rooms {
            sc.rooms = v;
        }
        if let Some(v) = a.viewers {
            sc.viewers = v;
        }
        if let Some(v) = a.duration {
            seconds("duration", v, false)?;
            sc.duration = v;
        }
        if let Some(v) = a.ramp {
            seconds("ramp", v, true)?;
            sc.set_ramp(v);
        }
        for (name, v) in [
            ("chat-rate", a.chat_rate),
            ("like-rate", a.like_rate),
            ("lead-rate", a.lead_rate),
        ] {
            let Some(v) = v else { continue };
            if !v.is_finite() || v < 0.0 {
                bail!("--{name} must be a non-negative number of events per second, got {v}");
            }
            match name {
                "chat-rate" => sc.set_chat_rate(v)?,
                "like-rate" => sc.set_like_rate(v)?,
                _ => sc.set_lead_rate(v)?,
            }
        }
        if let Some(v) = a.resend_share {
            if !(0.0..=1.0).contains(&v) {
                bail!("--resend-share must be in 0..=1, got {v}");
            }
            sc.resend_share = v;
        }
        if let Some(v) = a.sockets {
            sc.sockets = v;
        }
        if let Some(v) = a.seed {
            sc.seed = v;
        }
        if let Some(v) = a.room_base {
            sc.room_base = v;
        }
        if let Some(v) = a.drain_timeout {
            seconds("drain-timeout", v, true)?;
            sc.drain_timeout = v;
        }
        if let Some(v) = a.max_handshakes {
            sc.max_handshakes = v;
        }
        a.tolerances.apply(&mut sc.verify)?;
        let warnings = sc.validate().context("invalid scenario")?;
        let layout = Arc::new(sc.layout()?);
        if a.verify && a.worker.is_some() {
            bail!(
                "--verify verifies a whole run: run the workers without it, then \
                 `roomgate-loadgen merge --verify` their summaries"
            );
        }
        if a.worker.is_some() && a.summary_json.is_none() {
            bail!("--worker needs --summary-json: `roomgate-loadgen merge` reads the workers' summaries");
        }
        let verify = if a.verify {
            Some(a.clickhouse.target()?)
        } else {
            None
        };
        let ramp = sc.join_phases().iter().map(|p| p.ramp).fold(0.0, f64::max);
        Ok(Config {
            server: a.server,
            server_addr,
            servers_list: a.servers.clone(),
            servers: Arc::new(servers),
            cert,
            server_name: a.server_name,
            rooms: sc.rooms,
            viewers: sc.viewers,
            duration: Duration::from_secs_f64(sc.duration),
            ramp: Duration::from_secs_f64(ramp),
            chat_rate: sc.legit_chat_rate(),
            like_rate: sc.legit_like_rate(),
            lead_rate: sc.legit_lead_rate(),
            resend_share: sc.resend_share,
            sockets: sc.sockets,
            seed: sc.seed,
            room_base: sc.room_base,
            drain_timeout: Duration::from_secs_f64(sc.drain_timeout),
            summary_json: a.summary_json,
            max_handshakes: sc.max_handshakes,
            keep_alive: seconds("keep-alive", a.keep_alive, false)?,
            idle_timeout: seconds("idle-timeout", a.idle_timeout, false)?,
            min_connected: if (0.0..=1.0).contains(&a.min_connected) {
                a.min_connected
            } else {
                bail!(
                    "--min-connected must be between 0 and 1, got {}",
                    a.min_connected
                )
            },
            scenario_file: a.scenario,
            report_html: a.report_html,
            scenario: Arc::new(sc),
            layout,
            warnings,
            verify,
            ticket_ttl: a.ticket_ttl,
            worker: a.worker,
            ticket_key,
        })
    }

    /// Does this process run viewer index `slot` (always, unless split)?
    pub fn runs(&self, slot: u32) -> bool {
        self.worker.is_none_or(|w| w.owns(slot))
    }

    /// Viewers of `class` this process runs, over all rooms.
    pub fn class_viewers(&self, class: Class) -> u64 {
        let n = self.layout.range(class).filter(|s| self.runs(*s)).count() as u64;
        n * u64::from(self.rooms)
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

    const SECRET: &str = "loadgen-unit-test-secret-32-bytes!";

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["roomgate-loadgen", "--cert", "c.pem"];
        v.extend_from_slice(extra);
        Cli::try_parse_from(v).unwrap().run
    }

    #[test]
    fn defaults_match_the_documentation() {
        let c = Config::from_args(args(&[]), Some(SECRET.into())).unwrap();
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
        assert_eq!(c.layout.range(Class::Viewer), 0..10_000);
        assert!(c.verify.is_none());
    }

    #[test]
    fn missing_secret_cert_and_bad_values_are_clear_errors() {
        let e = Config::from_args(args(&[]), None).unwrap_err().to_string();
        assert!(e.contains(SECRET_ENV), "{e}");
        let e = Config::from_args(args(&[]), Some(String::new()))
            .unwrap_err()
            .to_string();
        assert!(e.contains(SECRET_ENV), "{e}");
        let no_cert = Cli::try_parse_from(["roomgate-loadgen"]).unwrap().run;
        let e = Config::from_args(no_cert, Some(SECRET.into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--cert is required"), "{e}");
        for bad in [
            &["--resend-share", "1.5"][..],
            &["--ramp", "100"],
            &["--duration", "0"],
            &["--viewers", "0"],
            &["--chat-rate=-1"],
            &["--server", "no-port-here"],
            &["--verify"],
            &["--max-abuse-accepted", "chatter=0.1"],
            &["--max-abuse-accepted", "raider"],
        ] {
            assert!(
                Config::from_args(args(bad), Some(SECRET.into())).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn flags_override_the_scenario_file() {
        let dir = std::env::temp_dir().join(format!("lg-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s.toml");
        std::fs::write(
            &f,
            "rooms = 3\nviewers = 500\nduration = 30\nseed = 7\n\
             [join]\nramp = 5\n[classes.chatter]\nshare = 0.5\nchat_rate = 4\n\
             [verify]\nmax_busy = 0.2\n",
        )
        .unwrap();
        let path = f.to_str().unwrap();
        let c = Config::from_args(args(&["--scenario", path]), Some(SECRET.into())).unwrap();
        assert_eq!((c.rooms, c.viewers, c.seed, c.chat_rate), (3, 500, 7, 4.0));
        assert_eq!(c.ramp, Duration::from_secs(5));
        assert_eq!(c.scenario.verify.max_busy, 0.2);
        let c = Config::from_args(
            args(&[
                "--scenario",
                path,
                "--rooms",
                "2",
                "--chat-rate",
                "9",
                "--ramp",
                "0",
                "--max-busy",
                "0.5",
                "--max-abuse-accepted",
                "raider=0.1",
            ]),
            Some(SECRET.into()),
        )
        .unwrap();
        assert_eq!((c.rooms, c.viewers, c.chat_rate), (2, 500, 9.0));
        assert_eq!(c.ramp, Duration::ZERO);
        assert_eq!(c.scenario.verify.max_busy, 0.5);
        assert_eq!(c.scenario.verify.max_abuse_accepted.raider, 0.1);
        assert!(
            Config::from_args(
                args(&["--scenario", path, "--like-rate", "5"]),
                Some(SECRET.into())
            )
            .is_err(),
            "no like tappers to give the rate to"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn verify_subcommand_parses() {
        let c = Cli::try_parse_from([
            "roomgate-loadgen",
            "verify",
            "--summary-json",
            "s.json",
            "--database",
            "db",
        ])
        .unwrap();
        let Some(Command::Verify(v)) = c.command else {
            panic!("verify expected")
        };
        let (t, settle) = v.clickhouse.target().unwrap();
        assert_eq!(
            (t.url.as_str(), t.database.as_str()),
            ("http://127.0.0.1:8123", "db")
        );
        assert_eq!(settle.quiet, Duration::from_secs(3));
        assert_eq!(settle.erase_wait, Duration::from_secs(30));
    }

    #[test]
    fn viewer_ids_are_unique_across_rooms() {
        let c = Config::from_args(
            args(&["--rooms", "3", "--room-base", "7"]),
            Some(SECRET.into()),
        )
        .unwrap();
        assert_eq!(c.room_id(2), 9);
        assert_eq!(c.viewer_id(0, 9_999), 7_009_999);
        assert_eq!(c.viewer_id(1, 0), 8_000_000);
    }
}

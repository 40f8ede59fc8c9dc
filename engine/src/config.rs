//! Configuration: a TOML file (pipeline semantics) plus flags and environment
//! (addresses, secrets), validated once into [`Config`].
//!
//! Every field has a stated default; `docs/CONFIG.md` is the reference.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::batch::BatchPolicy;
use crate::guard::{GuardConfig, RoomConfig};
use crate::table::Table;
use crate::wire::ticket::{TicketKey, TicketKeys};
use crate::wire::Limits;

/// A secret from the config file or the environment: its `Debug` never
/// shows the value, so a debug-printed [`Config`] leaks nothing.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(v: impl Into<String>) -> Self {
        Secret(v.into())
    }

    /// The value, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(v: &str) -> Self {
        Secret(v.to_owned())
    }
}

impl From<String> for Secret {
    fn from(v: String) -> Self {
        Secret(v)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("Secret(<empty>)")
        } else {
            f.write_str("Secret(<redacted>)")
        }
    }
}

/// A URL with any `user:password@` part replaced by `***@`, for logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// QUIC listener and connection limits.
    pub server: ServerConfig,
    /// Ticket verification.
    pub tickets: TicketConfig,
    /// Shard queues and workers.
    pub shards: ShardConfig,
    /// Frame and field limits.
    pub limits: LimitsConfig,
    /// The guard's rules.
    pub guard: GuardConfig,
    /// Where rows go.
    pub clickhouse: ClickHouseConfig,
    /// Batch sealing per table.
    pub batch: BatchConfig,
    /// PII keys for leads.
    pub pii: PiiConfig,
    /// The write-ahead log and dead-letter store.
    pub storage: StorageConfig,
    /// Per-room settings loaded at start (`[[rooms]]`).
    pub rooms: Vec<RoomConfig>,
    /// Several engine nodes: which rooms this node owns.
    pub routing: RoutingConfig,
    /// Blanking withdrawn and erased leads' personal data.
    pub erasure: ErasureConfig,
    /// The merchant API (lead delivery, pull); absent = off.
    pub merchant_api: Option<MerchantApiConfig>,
    /// Lead webhooks (lead delivery, push); absent or no merchants = off.
    pub webhooks: Option<WebhooksConfig>,
}

pub use crate::delivery::webhook::{WebhookMerchantConfig, WebhooksConfig};

/// `[erasure]`: how often withdrawn and erased leads' personal columns
/// are blanked in ClickHouse (docs/LEADS.md, [`crate::erase`]).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ErasureConfig {
    /// Seconds between passes; 0 = only on an erasure call (the viewers'
    /// withdrawals then wait for one). Default 10.
    pub interval_secs: u64,
    /// How long one ClickHouse call of a pass (a mutation waits for its
    /// parts to be rewritten) may take, ms. Default 60,000.
    pub timeout_ms: u64,
}

impl Default for ErasureConfig {
    fn default() -> Self {
        ErasureConfig {
            interval_secs: 10,
            timeout_ms: 60_000,
        }
    }
}

/// `[merchant_api]`: merchants pull their leads (docs/LEADS.md). The
/// section absent, or `listen = ""`, turns it off.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MerchantApiConfig {
    /// TCP address of the API. `""` = off. Default `127.0.0.1:9480`.
    pub listen: String,
    /// PEM certificate chain for HTTPS. Required unless `insecure_http`.
    pub cert: Option<PathBuf>,
    /// PEM private key for HTTPS. Required unless `insecure_http`.
    pub key: Option<PathBuf>,
    /// Development only: plain HTTP (decrypted contacts and API keys in
    /// clear on the network; logged as a warning). Default false.
    pub insecure_http: bool,
    /// API keys: `{ merchant = "m1", key_id = "k1", sha256 = "<hex>" }`,
    /// the SHA-256 of the whole key `<key_id>.<secret>` (`roomgate
    /// merchant-key` makes one). Default none (every request gets 401).
    pub keys: Vec<ApiKeyConfig>,
    /// Leads are delivered once they are this old, ms: rows reach
    /// ClickHouse a batch late, and a cursor must not pass a lead that is
    /// still on its way. Default 10,000.
    pub settle_ms: u64,
    /// Time allowed for each ClickHouse call of a pull, ms (then 503).
    /// Default 10,000.
    pub query_timeout_ms: u64,
    /// ClickHouse user the API reads leads and writes `lead_audit` as
    /// (the `delivery` user of `roomgate grants`). Default: `clickhouse.user`.
    pub clickhouse_user: Option<String>,
    /// Its password (`ROOMGATE_MERCHANT_API_CLICKHOUSE_PASSWORD`).
    /// Default: `clickhouse.password` when `clickhouse_user` is unset.
    pub clickhouse_password: Option<Secret>,
}

impl Default for MerchantApiConfig {
    fn default() -> Self {
        MerchantApiConfig {
            listen: "127.0.0.1:9480".into(),
            cert: None,
            key: None,
            insecure_http: false,
            keys: Vec::new(),
            settle_ms: 10_000,
            query_timeout_ms: 10_000,
            clickhouse_user: None,
            clickhouse_password: None,
        }
    }
}

/// One merchant API key of `[merchant_api] keys`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The merchant it pulls for.
    pub merchant: String,
    /// Its id: the part before `.` in the key; `lead_audit.actor`.
    pub key_id: String,
    /// SHA-256 (hex) of the whole key.
    pub sha256: String,
}

impl MerchantApiConfig {
    /// The bound address, `None` when off.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let l = self.listen.trim();
        if l.is_empty() {
            return Ok(None);
        }
        l.parse()
            .map(Some)
            .map_err(|_| ConfigError::Invalid(format!("merchant_api.listen {l:?}: not host:port")))
    }

    /// The keys, checked.
    pub fn key_set(&self) -> Result<crate::delivery::keys::KeySet, ConfigError> {
        crate::delivery::keys::KeySet::new(
            self.keys
                .iter()
                .map(|k| (k.merchant.as_str(), k.key_id.as_str(), k.sha256.as_str())),
        )
        .map_err(|e| ConfigError::Invalid(format!("merchant_api.keys: {e}")))
    }

    fn check(&self, null_sink: bool) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.listen_addr()?.is_none() {
            return Ok(());
        }
        self.key_set()?;
        if !self.insecure_http && (self.cert.is_none() || self.key.is_none()) {
            return bad("merchant_api.cert and merchant_api.key are required (or insecure_http = true, development only)");
        }
        if null_sink {
            return bad("merchant_api needs ClickHouse: not with clickhouse.null_sink");
        }
        if self.settle_ms > 3_600_000 {
            return bad("merchant_api.settle_ms must be at most 3,600,000 (an hour)");
        }
        if self.query_timeout_ms == 0 {
            return bad("merchant_api.query_timeout_ms must be at least 1");
        }
        Ok(())
    }
}

/// `[routing]`: the engine nodes rooms are spread over (docs/ROUTING.md).
/// Without `nodes` this node owns every room.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// This node's id in `nodes` (required with `nodes`). A node whose id
    /// is not in the list owns no room: it only drains its log.
    pub node_id: String,
    /// Every engine node: `{ id = "…", addr = "host:port" }`. The same list
    /// on every node (and in the ticket issuer). Default empty.
    pub nodes: Vec<NodeConfig>,
    /// With more than one node: every this many seconds, read the leads of
    /// every node from ClickHouse (`lead_facts`) for the cross-room lead
    /// rules (docs/ROUTING.md, "Cross-node facts"). 0 = off. Default 10.
    pub facts_interval_secs: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            node_id: String::new(),
            nodes: Vec::new(),
            facts_interval_secs: 10,
        }
    }
}

/// One engine node of `[routing]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Stable id: the only input to the room hash.
    pub id: String,
    /// `host:port` viewers connect to (sent in `wrong_node` closes).
    pub addr: String,
}

impl From<&crate::route::Node> for NodeConfig {
    fn from(n: &crate::route::Node) -> Self {
        NodeConfig {
            id: n.id.clone(),
            addr: n.addr.clone(),
        }
    }
}

impl RoutingConfig {
    /// The node list, validated; `None` without one.
    pub fn node_set(&self) -> Result<Option<crate::route::NodeSet>, ConfigError> {
        if self.nodes.is_empty() {
            return Ok(None);
        }
        let nodes = self
            .nodes
            .iter()
            .map(|n| crate::route::Node {
                id: n.id.clone(),
                addr: n.addr.clone(),
            })
            .collect();
        crate::route::NodeSet::new(nodes)
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("routing.nodes: {e}")))
    }
}

/// `[storage]`: the write-ahead log, where acks become durable.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Data directory: the log in `<dir>/wal`, set-aside batches in
    /// `<dir>/dead-letter`. Relative paths are relative to the working
    /// directory. In production use a local disk (not tmpfs, not NFS) that
    /// survives restarts and deploys: the node's acked-but-uncommitted rows
    /// live here. Default `roomgate-data`.
    pub dir: PathBuf,
    /// Segment size: the log rolls to a new file at this size, and deletes
    /// whole segments once every row in them is committed. Default 64 MiB.
    pub segment_bytes: u64,
    /// Disk budget of the log, bytes. Above it the overflow policy applies
    /// (leads wait, chat gets `busy`, likes coalesce) until committed
    /// segments are deleted. Default 8 GiB.
    pub max_bytes: u64,
    /// Most bytes written per group commit (one fsync). Default 4 MiB.
    pub max_group_bytes: usize,
    /// Shortest time between the starts of two group commits, µs: what
    /// arrives meanwhile joins the next fsync. Bounds the fsync rate (its
    /// CPU and disk load) under load; adds at most this much to an ack.
    /// 0 = fsync as soon as the previous one is done. Default 4,000.
    pub group_commit_us: u64,
    /// Write zeros up to 1 MiB ahead of the log's write position, so the
    /// fsync of a group writes the data and not the file's size as well
    /// (measured on ext4: BENCHMARKS.md). Turn it off on copy-on-write
    /// filesystems (btrfs, ZFS), where it only doubles the writes.
    /// Default true.
    pub preallocate: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: PathBuf::from("roomgate-data"),
            segment_bytes: 64 << 20,
            max_bytes: 8 << 30,
            max_group_bytes: 4 << 20,
            group_commit_us: 4_000,
            preallocate: true,
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// UDP address the QUIC endpoint binds. Default `127.0.0.1:4433`.
    pub listen: SocketAddr,
    /// TCP address of the admin HTTP port (`/metrics`). Default `127.0.0.1:9464`.
    pub admin: SocketAddr,
    /// PEM certificate chain. Required unless `dev_cert_dir` is set.
    pub cert: Option<PathBuf>,
    /// PEM private key. Required unless `dev_cert_dir` is set.
    pub key: Option<PathBuf>,
    /// Generate a self-signed certificate for `localhost` and write
    /// `cert.pem` into this directory (development only). Default unset.
    pub dev_cert_dir: Option<PathBuf>,
    /// Most concurrent connections; more are refused at the QUIC level
    /// (no TLS work). Default 50,000.
    pub max_connections: usize,
    /// Most concurrent connections from one IP address; 0 = no cap.
    /// Default 5,000 (mobile carriers put many viewers behind one address).
    pub max_connections_per_ip: usize,
    /// Most handshakes in progress (accepted, no valid `Hello` yet) from one
    /// IP address; 0 = no cap. Default 256.
    pub max_handshakes_per_ip: usize,
    /// Above this many handshakes in progress in total, a new connection
    /// from an address QUIC has not validated is answered with a Retry
    /// (address validation: a spoofed source cannot complete it); 0 =
    /// always. Default 1,000.
    pub retry_above_handshakes: usize,
    /// Time allowed for a frame that has started to arrive to complete, ms;
    /// a frame stalled half-sent closes the connection with
    /// `frame_timeout`. Default 10,000.
    pub frame_timeout_ms: u64,
    /// Time allowed for the QUIC handshake plus `Hello`, ms. Default 10,000.
    pub handshake_timeout_ms: u64,
    /// QUIC idle timeout, ms. Default 30,000.
    pub idle_timeout_ms: u64,
    /// Bidirectional streams a client may open per connection. Default 1.
    pub max_streams_per_connection: u32,
    /// QUIC endpoints on `listen`, each with its own UDP socket
    /// (`SO_REUSEPORT`) and receive task. A BPF program on the sockets
    /// sends each packet to the endpoint whose connection ID it carries
    /// (`gate::steer`), so a viewer whose address or port changes (a phone
    /// switching networks, a NAT rebinding) stays on its endpoint. 0 = the
    /// number of available cores (at most 255). Default 0.
    pub endpoints: usize,
    /// Worker threads of the io runtime (QUIC, TLS, the sessions' read
    /// loops and acks; the admin API and the ClickHouse writers' requests
    /// too). 0 = the number of available cores. Fewer threads
    /// switch less when the node's cores are shared (with the shards, the
    /// log, other processes) but cap the QUIC side at that many cores
    /// (docs/TUNING.md). Default 0.
    pub io_threads: usize,
    /// Acks buffered per connection before the viewer is treated as not
    /// reading and disconnected (`slow_consumer`). Default 1,024.
    pub max_pending_acks: usize,
    /// `retry_after_ms` sent with a `busy` chat ack. Default 1,000.
    pub busy_retry_after_ms: u32,
    /// Like pacing (docs/TUNING.md): while the io runtime is overloaded
    /// (its smoothed lateness above `overload_lateness_ms`, or its workers
    /// busier than `overload_busy_percent`), every session that sends a
    /// like is told to send at most one `Like` frame per `like_pace_ms`,
    /// adding up its taps (`Notice` kind `like_pace`); the pace halves
    /// twice, then ends, as the runtime stays calm. 0 = that signal is not
    /// watched; otherwise at least 2. Default 5.
    pub overload_lateness_ms: u32,
    /// Busy share of the io runtime's workers (percent of the time not
    /// parked) above which like senders are paced; 0 = not watched.
    /// Default 90.
    pub overload_busy_percent: u32,
    /// The longest interval asked of like senders while paced, ms; 0 =
    /// never pace. At most 60,000. Default 1,000.
    pub like_pace_ms: u32,
    /// Bearer token for the admin API (`/admin/...`); prefer
    /// `ROOMGATE_ADMIN_TOKEN`. Unset = admin API disabled (503).
    pub admin_token: Option<Secret>,
}

/// The cores this process may use (what a setting of 0 means), at least 1.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Most io runtime threads `server.io_threads` may ask for.
const MAX_IO_THREADS: usize = 1_024;
/// Endpoints a node can steer between: the routing byte of a connection ID
/// (`gate::steer`).
const MAX_ENDPOINTS: usize = 255;

impl ServerConfig {
    /// The io runtime's worker threads: `io_threads`, or the number of
    /// available cores for 0 (never more than `validate` allows: the
    /// runtime is built before the configuration is checked).
    pub fn io_worker_threads(&self) -> usize {
        match self.io_threads {
            0 => cores(),
            n => n.min(MAX_IO_THREADS),
        }
    }

    /// The QUIC endpoints to bind: `endpoints`, or the number of available
    /// cores (at most 255) for 0.
    pub fn endpoint_count(&self) -> usize {
        match self.endpoints {
            0 => cores().min(MAX_ENDPOINTS),
            n => n,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:4433".parse().expect("valid literal"),
            admin: "127.0.0.1:9464".parse().expect("valid literal"),
            cert: None,
            key: None,
            dev_cert_dir: None,
            max_connections: 50_000,
            max_connections_per_ip: 5_000,
            max_handshakes_per_ip: 256,
            retry_above_handshakes: 1_000,
            frame_timeout_ms: 10_000,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            max_streams_per_connection: 1,
            endpoints: 0,
            io_threads: 0,
            max_pending_acks: 1_024,
            busy_retry_after_ms: 1_000,
            overload_lateness_ms: 5,
            overload_busy_percent: 90,
            like_pace_ms: 1_000,
            admin_token: None,
        }
    }
}

/// Longest `server.like_pace_ms` accepted (clients may cap what they
/// follow at this).
pub const MAX_LIKE_PACE_MS: u32 = 60_000;

/// `[tickets]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TicketConfig {
    /// Shared HMAC secret, at least 32 bytes. Prefer the
    /// `ROOMGATE_TICKET_SECRET` environment variable, which overrides this.
    /// Required.
    pub secret: Option<Secret>,
    /// Id of `secret`, carried in every ticket (`ROOMGATE_TICKET_KEY_ID`).
    /// Default `k1`.
    pub key_id: String,
    /// During a key rotation, the secret being retired: tickets naming
    /// `previous_key_id` still verify (`ROOMGATE_TICKET_PREVIOUS_SECRET`).
    /// Default unset.
    pub previous_secret: Option<Secret>,
    /// Id of `previous_secret` (`ROOMGATE_TICKET_PREVIOUS_KEY_ID`).
    pub previous_key_id: Option<String>,
    /// Longest ticket lifetime accepted: a ticket expiring later than this
    /// many seconds from now is refused (`bad_ticket`). Default 86,400.
    pub max_ttl_secs: u64,
    /// Seconds before a session's ticket expires that the engine sends the
    /// `ticket_expiring` notice; the client answers with a `Refresh` frame
    /// or is closed with `ticket_expired` at expiry. Default 60.
    pub refresh_notice_secs: u64,
}

impl Default for TicketConfig {
    fn default() -> Self {
        TicketConfig {
            secret: None,
            key_id: "k1".into(),
            previous_secret: None,
            previous_key_id: None,
            max_ttl_secs: 86_400,
            refresh_notice_secs: 60,
        }
    }
}

/// Longest `tickets.max_ttl_secs` accepted: a year.
pub const MAX_TICKET_TTL_SECS: u64 = 365 * 86_400;

impl TicketConfig {
    /// The verifying (and signing) keys, checked.
    pub fn keys(&self) -> Result<TicketKeys, ConfigError> {
        self.try_keys().map_err(ConfigError::Invalid)
    }

    fn try_keys(&self) -> Result<TicketKeys, String> {
        let secret = self.secret.as_ref().ok_or(
            "a ticket secret is required (ROOMGATE_TICKET_SECRET or tickets.secret, at least 32 bytes)",
        )?;
        let current = TicketKey::new(&self.key_id, secret.expose().as_bytes())
            .map_err(|e| format!("tickets: {e}"))?;
        let previous = match (&self.previous_secret, &self.previous_key_id) {
            (None, None) => None,
            (Some(s), Some(id)) => Some(
                TicketKey::new(id, s.expose().as_bytes()).map_err(|e| format!("tickets: {e}"))?,
            ),
            _ => {
                return Err(
                    "tickets.previous_secret and tickets.previous_key_id go together".into(),
                )
            }
        };
        if !(1..=MAX_TICKET_TTL_SECS).contains(&self.max_ttl_secs) {
            return Err(format!(
                "tickets.max_ttl_secs must be between 1 and {MAX_TICKET_TTL_SECS} (a year)"
            ));
        }
        TicketKeys::new(current, previous, self.max_ttl_secs).map_err(|e| format!("tickets: {e}"))
    }
}

/// `[shards]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardConfig {
    /// Number of shards (queues and worker threads); 0 = available cores.
    /// Default 0.
    pub count: usize,
    /// Capacity of each shard's events lane (chat and likes), events.
    /// Default 65,536.
    pub queue_capacity: usize,
    /// Capacity of each shard's urgent lane (leads, session starts and
    /// ends), events. Default 16,384.
    pub urgent_capacity: usize,
    /// Most events a worker drains per round. Default 1,024.
    pub drain_batch: usize,
    /// While chat is dense (rounds with chat at most two lingers apart), a
    /// worker naps this long after a round with chat, and chat pushed
    /// meanwhile does not wake it (urgent events, hops, admin operations
    /// and a backlog still do): a dense stream of chat costs a wake-up per
    /// nap, not per message, for up to this much more chat ack latency.
    /// 0 = woken per message. At most 100,000. Default 0: under a
    /// saturating overload the nap measured worse lead ack p99
    /// (docs/TUNING.md).
    pub linger_us: u64,
    /// Above this share of the events lane in use, the gate holds like taps
    /// in each session's pending count instead of queueing them (retried
    /// every 100 ms and with each like frame; pushed once the lane is below
    /// it, and at the session's end in any case). Default 0.25.
    pub shed_likes_above: f64,
    /// Above this share of the events lane in use, the gate answers chat
    /// `busy` without queueing it. Default 0.5.
    pub shed_chat_above: f64,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            count: 0,
            queue_capacity: 65_536,
            urgent_capacity: 16_384,
            drain_batch: 1_024,
            linger_us: 0,
            shed_likes_above: 0.25,
            shed_chat_above: 0.5,
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Maximum frame size, bytes (hard cap 65,536). Default 16,384.
    pub max_frame_bytes: usize,
    /// Maximum chat message length, characters. Default 500.
    pub max_chat_chars: usize,
    /// Maximum bytes of any lead field. Default 256.
    pub max_field_bytes: usize,
    /// Maximum extra lead form fields. Default 16.
    pub max_form_fields: usize,
    /// Maximum taps in one `Like` frame. Default 1,000.
    pub max_like_count: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        LimitsConfig {
            max_frame_bytes: l.max_frame,
            max_chat_chars: l.max_chat_chars,
            max_field_bytes: l.max_field_bytes,
            max_form_fields: l.max_form_fields,
            max_like_count: l.max_like_count,
        }
    }
}

impl LimitsConfig {
    /// As wire limits.
    pub fn to_limits(&self) -> Limits {
        Limits {
            max_frame: self.max_frame_bytes.min(crate::wire::MAX_FRAME_HARD),
            max_chat_chars: self.max_chat_chars,
            max_field_bytes: self.max_field_bytes,
            max_form_fields: self.max_form_fields,
            max_like_count: self.max_like_count,
        }
    }
}

/// `[clickhouse]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP(S) URL. Default `http://127.0.0.1:8123`.
    pub url: String,
    /// User. Default `default`.
    pub user: String,
    /// Password; prefer `ROOMGATE_CLICKHOUSE_PASSWORD`. Default empty.
    pub password: Secret,
    /// Database (created by migrations). Default `roomgate`.
    pub database: String,
    /// Apply migrations at start-up. Default true.
    pub migrate_on_start: bool,
    /// First retry delay, ms; doubles up to `retry_max_ms`. Default 200.
    pub retry_initial_ms: u64,
    /// Longest retry delay, ms. Default 10,000.
    pub retry_max_ms: u64,
    /// Minimum gap between two inserts into one table, ms: paces the
    /// catch-up after an outage (with full batches of `batch.max_rows`).
    /// Default 250 (at most 4 inserts per second per table).
    pub min_insert_interval_ms: u64,
    /// Timeout of one insert request, ms. Default 30,000.
    pub insert_timeout_ms: u64,
    /// Days after which chat text (`chat_messages.text`) and moderation
    /// samples (`moderation_events.detail`) are emptied by a column TTL;
    /// 0 = keep forever. Applied at start after the migrations, only when
    /// it differs. Default 30.
    pub text_ttl_days: u32,
    /// At shutdown, how long the writers keep flushing the log to
    /// ClickHouse, ms. What is not committed by then stays in the log and is
    /// sent after the next start. Default 10,000.
    pub shutdown_flush_ms: u64,
    /// Benchmarks only: no ClickHouse at all. Rows still go through the
    /// log and the writers form and mark their batches, but each batch is
    /// counted and dropped instead of inserted (no migrations, no restored
    /// ids). `make perf` measures the front door with it. Default false.
    pub null_sink: bool,
    /// Name of a ClickHouse cluster (its `<remote_servers>` entry) to lay
    /// the schema out on: each table becomes `<table>_local` on every node
    /// plus a `Distributed` table under its own name, sharded by
    /// `cityHash64(room_id)`, and inserts go through the `Distributed`
    /// tables in the foreground (`url` is any node). Empty = one server.
    /// Default empty.
    pub cluster: String,
    /// HTTP(S) URLs of every node of `cluster`, to which the migrations are
    /// applied one node after another. Required with `cluster` unless
    /// `on_cluster`. Default empty.
    pub cluster_urls: Vec<String>,
    /// Production clusters: the local tables are `Replicated*MergeTree`
    /// with Keeper path `/clickhouse/tables/{shard}/<database>/<table>_local`
    /// and replica `{replica}` (macros every server defines). Needs
    /// `cluster`. Default false.
    pub replicated: bool,
    /// Production clusters: every DDL statement is sent once, to `url`,
    /// with `ON CLUSTER '<cluster>'` (ClickHouse's distributed DDL, which
    /// needs Keeper) instead of to each of `cluster_urls`. Needs `cluster`.
    /// Default false.
    pub on_cluster: bool,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            user: "default".into(),
            password: Secret::default(),
            text_ttl_days: 30,
            database: "roomgate".into(),
            migrate_on_start: true,
            retry_initial_ms: 200,
            retry_max_ms: 10_000,
            min_insert_interval_ms: 250,
            insert_timeout_ms: 30_000,
            shutdown_flush_ms: 10_000,
            null_sink: false,
            cluster: String::new(),
            cluster_urls: Vec::new(),
            replicated: false,
            on_cluster: false,
        }
    }
}

/// `[batch]`: the default policy and per-table overrides.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Policy for every table, unless overridden.
    pub default: BatchPolicy,
    /// `leads` overrides.
    pub leads: BatchOverride,
    /// `chat_messages` overrides.
    pub chat_messages: BatchOverride,
    /// `like_ticks` overrides.
    pub like_ticks: BatchOverride,
    /// `sessions` overrides.
    pub sessions: BatchOverride,
    /// `moderation_events` overrides.
    pub moderation_events: BatchOverride,
    /// `lead_withdrawals` overrides.
    pub lead_withdrawals: BatchOverride,
    /// `like_viewers` overrides.
    pub like_viewers: BatchOverride,
}

/// Per-table overrides: a field not given falls back to the table's
/// built-in value, then to `[batch.default]`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BatchOverride {
    /// Seal at this many rows.
    pub max_rows: Option<usize>,
    /// Seal at this many estimated bytes.
    pub max_bytes: Option<usize>,
    /// Seal when the oldest row is this old, ms.
    pub max_age_ms: Option<u64>,
}

impl BatchConfig {
    /// The effective policy for `table`.
    pub fn policy(&self, table: Table) -> BatchPolicy {
        let o = match table {
            Table::Leads => self.leads,
            Table::Chat => self.chat_messages,
            Table::Likes => self.like_ticks,
            Table::Sessions => self.sessions,
            Table::Moderation => self.moderation_events,
            Table::Withdrawals => self.lead_withdrawals,
            Table::LikeViewers => self.like_viewers,
        };
        let d = self.default;
        BatchPolicy {
            max_rows: o.max_rows.unwrap_or(d.max_rows).max(1),
            max_bytes: o.max_bytes.unwrap_or(d.max_bytes),
            max_age_ms: o.max_age_ms.unwrap_or(d.max_age_ms),
        }
    }
}

/// `[pii]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PiiConfig {
    /// 32-byte root key of the HMACs (phone, IP: derived per purpose), hex;
    /// prefer `ROOMGATE_PII_HMAC_KEY`. Required.
    pub hmac_key: Option<Secret>,
    /// 32-byte root key of the encryption key, hex; prefer
    /// `ROOMGATE_PII_ENC_KEY`. Required; must differ from `hmac_key`.
    pub enc_key: Option<Secret>,
    /// Id of `enc_key`, stored with every ciphertext (`leads.pii_key_id`)
    /// and bound into it; change it with the key (`ROOMGATE_PII_KEY_ID`).
    /// Default `k1`.
    pub key_id: String,
}

impl Default for PiiConfig {
    fn default() -> Self {
        PiiConfig {
            hmac_key: None,
            enc_key: None,
            key_id: "k1".into(),
        }
    }
}

impl PiiConfig {
    /// The derived keys, checked.
    pub fn keys(&self) -> Result<crate::pii::PiiKeys, ConfigError> {
        self.try_keys().map_err(ConfigError::Invalid)
    }

    fn try_keys(&self) -> Result<crate::pii::PiiKeys, String> {
        let (Some(h), Some(e)) = (&self.hmac_key, &self.enc_key) else {
            return Err("pii.hmac_key and pii.enc_key are required (ROOMGATE_PII_HMAC_KEY, ROOMGATE_PII_ENC_KEY: 64 hex chars each)".into());
        };
        crate::pii::PiiKeys::from_hex(h.expose(), e.expose(), &self.key_id)
            .map_err(|e| e.to_string())
    }
}

/// A configuration problem, reported once at start-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {source}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Cause.
        source: Box<toml::de::Error>,
    },
    /// A value is missing or out of range.
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// The room settings every `Welcome` carries (slow mode is per room and
    /// announced by notice).
    pub fn welcome_settings(&self) -> crate::wire::RoomSettings {
        let limits = self.limits.to_limits();
        crate::wire::RoomSettings {
            slow_mode_secs: 0,
            max_chat_chars: limits.max_chat_chars.min(self.guard.chat.max_chars) as u32,
            max_frame_bytes: limits.max_frame as u32,
        }
    }

    /// The `[[rooms]] merchant` keys, checked: valid ids, one merchant per
    /// room.
    pub fn room_merchants(&self) -> Result<Vec<(u64, crate::merchants::MerchantId)>, ConfigError> {
        let mut out: Vec<(u64, crate::merchants::MerchantId)> = Vec::new();
        for r in &self.rooms {
            let Some(m) = &r.merchant else { continue };
            let m = crate::merchants::MerchantId::parse(m)
                .map_err(|e| ConfigError::Invalid(format!("[[rooms]] id = {}: {e}", r.id)))?;
            if let Some((_, other)) = out.iter().find(|(id, _)| *id == r.id) {
                if *other != m {
                    return Err(ConfigError::Invalid(format!(
                        "[[rooms]] id = {} has two merchants ({other}, {m})",
                        r.id
                    )));
                }
                continue;
            }
            out.push((r.id, m));
        }
        Ok(out)
    }

    /// Load from a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.into(),
                source,
            },
            other => other,
        })
    }

    /// Parse TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            source: Box::new(e),
        })
    }

    /// Check ranges and required values; resolve `shards.count = 0`.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        self.server.endpoints = self.server.endpoint_count();
        if self.server.endpoints > MAX_ENDPOINTS {
            return bad("server.endpoints must be at most 255 (0 = the number of cores)");
        }
        if self.server.io_threads > MAX_IO_THREADS {
            return bad("server.io_threads must be at most 1024 (0 = the number of cores)");
        }
        if self.shards.count == 0 {
            self.shards.count = cores();
        }
        if self.storage.segment_bytes < 4096 || self.storage.max_bytes < self.storage.segment_bytes
        {
            return bad(
                "storage.segment_bytes must be at least 4096 and at most storage.max_bytes",
            );
        }
        if !self.routing.nodes.is_empty() {
            self.routing.node_set()?;
            if self.routing.node_id.is_empty() {
                return bad(
                    "routing.node_id is required with routing.nodes: this node's id in the list",
                );
            }
        }
        if self.shards.queue_capacity < 16 {
            return bad("shards.queue_capacity must be at least 16");
        }
        if self.shards.urgent_capacity < 16 {
            return bad("shards.urgent_capacity must be at least 16");
        }
        if self.shards.linger_us > 100_000 {
            return bad("shards.linger_us must be at most 100000 (100 ms)");
        }
        let share = 0.0..=1.0;
        if !share.contains(&self.shards.shed_likes_above)
            || !share.contains(&self.shards.shed_chat_above)
        {
            return bad("shards.shed_likes_above and shards.shed_chat_above must be in 0..=1");
        }
        if self.shards.shed_chat_above < self.shards.shed_likes_above {
            return bad("shards.shed_chat_above must be at least shards.shed_likes_above (likes are shed before chat)");
        }
        self.tickets.keys()?;
        if self.server.dev_cert_dir.is_none()
            && (self.server.cert.is_none() || self.server.key.is_none())
        {
            return bad(
                "server.cert and server.key are required (or --dev-cert DIR for development)",
            );
        }
        if self.server.max_streams_per_connection == 0 {
            return bad("server.max_streams_per_connection must be at least 1");
        }
        if self.server.like_pace_ms > MAX_LIKE_PACE_MS || self.server.overload_lateness_ms > 60_000
        {
            return bad(
                "server.like_pace_ms and server.overload_lateness_ms must be at most 60000",
            );
        }
        if self.server.overload_busy_percent > 100 {
            return bad("server.overload_busy_percent must be at most 100");
        }
        if self.server.overload_lateness_ms == 1 {
            // A calm runtime runs 0-1 ms late (timers round up to the ms).
            return bad("server.overload_lateness_ms must be 0 (not watched) or at least 2");
        }
        if let Err(e) = crate::guard::Guard::new(&self.guard) {
            return Err(ConfigError::Invalid(e));
        }
        if self
            .server
            .admin_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16)
        {
            return bad("server.admin_token must be at least 16 characters");
        }
        self.pii.keys()?;
        if !self
            .clickhouse
            .database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return bad("clickhouse.database must be [A-Za-z0-9_]+");
        }
        self.room_merchants()?;
        if let Some(m) = &self.merchant_api {
            m.check(self.clickhouse.null_sink)?;
        }
        if let Some(w) = &self.webhooks {
            w.check(self.clickhouse.null_sink)?;
        }
        let ch = &self.clickhouse;
        if !ch
            .cluster
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return bad("clickhouse.cluster must be [A-Za-z0-9_-]+");
        }
        if ch.cluster.is_empty() && (!ch.cluster_urls.is_empty() || ch.replicated || ch.on_cluster)
        {
            return bad(
                "clickhouse.cluster_urls, replicated and on_cluster need clickhouse.cluster",
            );
        }
        if !ch.cluster.is_empty() && !ch.on_cluster && ch.cluster_urls.is_empty() {
            return bad("clickhouse.cluster_urls must list the HTTP URL of every node of clickhouse.cluster (or set clickhouse.on_cluster)");
        }
        if ch
            .cluster_urls
            .iter()
            .any(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return bad("clickhouse.cluster_urls must be http:// or https:// URLs");
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides_parse() {
        let c = Config::from_toml(
            "[shards]\ncount = 3\n[batch.default]\nmax_rows = 9\n[batch.leads]\nmax_bytes = 100\n[clickhouse]\ndatabase = \"x\"\n",
        )
        .unwrap();
        assert_eq!(c.shards.count, 3);
        // An override of one field keeps the others from [batch.default].
        let leads = c.batch.policy(Table::Leads);
        assert_eq!(
            (leads.max_rows, leads.max_bytes, leads.max_age_ms),
            (9, 100, 1_000)
        );
        assert_eq!(c.batch.policy(Table::Chat).max_rows, 9);
        assert_eq!(c.batch.policy(Table::Chat).max_age_ms, 1_000);
        assert_eq!(c.storage.dir, PathBuf::from("roomgate-data"));
        assert!(Config::from_toml("[nope]\n").is_err());
    }

    #[test]
    fn secrets_do_not_debug_print_and_urls_lose_credentials() {
        let mut c = Config::default();
        c.tickets.secret = Some(Secret::new("super-secret-ticket-key-0123456789"));
        c.pii.enc_key = Some(Secret::new("c3".repeat(32)));
        c.clickhouse.password = Secret::new("hunter2");
        c.server.admin_token = Some(Secret::new("admin-token-123456"));
        let printed = format!("{c:?}");
        for s in ["super-secret", "c3c3", "hunter2", "admin-token"] {
            assert!(!printed.contains(s), "{s} in {printed}");
        }
        assert_eq!(
            redact_url("https://u:p@ch.example:8443/x?y=1"),
            "https://***@ch.example:8443/x?y=1"
        );
        assert_eq!(redact_url("http://127.0.0.1:8123"), "http://127.0.0.1:8123");
        assert_eq!(redact_url("http://h/a@b"), "http://h/a@b");
    }

    #[test]
    fn ticket_secrets_are_long_and_rotations_paired() {
        let mut c = TicketConfig {
            secret: Some(Secret::new("change-me")),
            ..TicketConfig::default()
        };
        assert!(c.keys().unwrap_err().to_string().contains("at least 32"));
        c.secret = Some(Secret::new("x".repeat(32)));
        assert!(c.keys().is_ok());
        c.previous_secret = Some(Secret::new("y".repeat(32)));
        assert!(c.keys().unwrap_err().to_string().contains("go together"));
        c.previous_key_id = Some("k0".into());
        assert!(c.keys().is_ok());
    }

    #[test]
    fn io_threads_default_to_the_cores_and_are_bounded() {
        let c = Config::default();
        assert_eq!(c.server.io_threads, 0);
        assert!(c.server.io_worker_threads() >= 1);
        let c = Config::from_toml("[server]\nio_threads = 1\n").unwrap();
        assert_eq!(c.server.io_worker_threads(), 1);
        let c = Config::from_toml("[server]\nio_threads = 5000\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("io_threads"));
    }

    #[test]
    fn the_example_file_parses() {
        let c = Config::from_toml(include_str!("../../roomgate.example.toml")).unwrap();
        assert_eq!(c.tickets.key_id, "k1");
        assert_eq!(c.clickhouse.text_ttl_days, 30);
    }

    #[test]
    fn room_merchants_are_checked() {
        let c = Config::from_toml(
            "[[rooms]]\nid = 1\nmerchant = \"m1\"\n[[rooms]]\nid = 2\n[[rooms]]\nid = 1\nmerchant = \"m1\"\n",
        )
        .unwrap();
        let got: Vec<(u64, String)> = c
            .room_merchants()
            .unwrap()
            .into_iter()
            .map(|(r, m)| (r, m.to_string()))
            .collect();
        assert_eq!(got, [(1, "m1".to_owned())]);
        for bad in [
            "[[rooms]]\nid = 1\nmerchant = \"M 1\"\n",
            "[[rooms]]\nid = 1\nmerchant = \"a\"\n[[rooms]]\nid = 1\nmerchant = \"b\"\n",
        ] {
            let err = Config::from_toml(bad)
                .unwrap()
                .room_merchants()
                .unwrap_err();
            assert!(err.to_string().contains("id = 1"), "{err}");
        }
    }

    #[test]
    fn the_merchant_api_is_off_unless_configured_and_needs_tls() {
        assert!(Config::default().merchant_api.is_none());
        let c = Config::from_toml("[merchant_api]\n").unwrap();
        let m = c.merchant_api.unwrap();
        assert_eq!(
            m.listen_addr().unwrap(),
            Some("127.0.0.1:9480".parse().unwrap())
        );
        assert_eq!(m.settle_ms, 10_000);
        let err = m.check(false).unwrap_err().to_string();
        assert!(err.contains("merchant_api.cert"), "{err}");
        let off = Config::from_toml("[merchant_api]\nlisten = \"\"\n").unwrap();
        assert!(off.merchant_api.unwrap().check(false).is_ok());
        let dev = Config::from_toml(&format!(
            "[merchant_api]\ninsecure_http = true\nkeys = [{{ merchant = \"m1\", key_id = \"k1\", sha256 = \"{}\" }}]\n",
            "ab".repeat(32)
        ))
        .unwrap()
        .merchant_api
        .unwrap();
        assert!(dev.check(false).is_ok());
        assert_eq!(dev.key_set().unwrap().len(), 1);
        assert!(dev.check(true).is_err(), "null sink");
        let bad_key = Config::from_toml(
            "[merchant_api]\ninsecure_http = true\nkeys = [{ merchant = \"m1\", key_id = \"k1\", sha256 = \"x\" }]\n",
        )
        .unwrap();
        assert!(bad_key.merchant_api.unwrap().check(false).is_err());
    }

    #[test]
    fn validate_requires_secrets() {
        let err = Config::default().validate().unwrap_err().to_string();
        assert!(err.contains("ticket secret"), "{err}");
    }
}

//! The ClickHouse sink: row types, migrations and one writer task per table.
//!
//! Shard workers hand rows over in per-round vectors through bounded channels
//! ([`SinkTx`]); a full channel blocks the worker, which fills its shard queue,
//! which pushes back on the gate: an outage delays rows, it never drops an
//! accepted lead.

pub mod migrate;
pub mod rows;
pub mod writer;

use std::sync::Arc;

use clickhouse::Client;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{BatchConfig, ClickHouseConfig};
use crate::metrics::Metrics;
pub use rows::{ChatRow, LeadRow, LikeRow, ModerationRow, SessionRow};
pub use writer::{Item, WriterSettings};

/// Per-round vectors buffered per table before workers block.
const CHANNEL_DEPTH: usize = 64;

/// Senders into the table writers (cloned into each shard worker).
#[derive(Clone, Debug)]
pub struct SinkTx {
    /// `chat_messages`.
    pub chat: mpsc::Sender<Vec<Item<ChatRow>>>,
    /// `like_ticks`.
    pub likes: mpsc::Sender<Vec<Item<LikeRow>>>,
    /// `leads`.
    pub leads: mpsc::Sender<Vec<Item<LeadRow>>>,
    /// `sessions`.
    pub sessions: mpsc::Sender<Vec<Item<SessionRow>>>,
    /// `moderation_events`.
    pub moderation: mpsc::Sender<Vec<Item<ModerationRow>>>,
}

/// Build the HTTP client from config (URL, user, password, database, LZ4).
pub fn client(cfg: &ClickHouseConfig) -> Client {
    Client::default()
        .with_url(&cfg.url)
        .with_user(&cfg.user)
        .with_password(&cfg.password)
        .with_database(&cfg.database)
        .with_compression(clickhouse::Compression::Lz4)
}

/// Start the five writers on the current tokio runtime.
pub fn spawn(
    client: &Client,
    batch: &BatchConfig,
    settings: WriterSettings,
    metrics: &Arc<Metrics>,
) -> (SinkTx, Vec<JoinHandle<()>>) {
    let settings = Arc::new(settings);
    let mut handles = Vec::new();
    macro_rules! table {
        ($idx:expr, $name:literal) => {{
            let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
            let w = writer::TableWriter::new(
                $name,
                $idx,
                client.clone(),
                batch.policy($name),
                settings.clone(),
                metrics.clone(),
            );
            handles.push(tokio::spawn(w.run(rx)));
            tx
        }};
    }
    let tx = SinkTx {
        chat: table!(0, "chat_messages"),
        likes: table!(1, "like_ticks"),
        leads: table!(2, "leads"),
        sessions: table!(3, "sessions"),
        moderation: table!(4, "moderation_events"),
    };
    (tx, handles)
}

//! The ClickHouse sink: row types, migrations, one writer task per table
//! reading the write-ahead log, and the dead-letter store.
//!
//! Nothing here holds an ack: acks were released when their rows became
//! durable in the log. A ClickHouse outage delays rows (they wait in the
//! log, up to its disk budget); it never drops one.

pub mod dead_letter;
pub mod migrate;
pub mod rows;
pub mod writer;

use std::sync::Arc;

use clickhouse::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{BatchConfig, ClickHouseConfig};
use crate::metrics::Metrics;
use crate::table::Table;
use crate::wal::{LogHandle, Recovery};
pub use rows::{ChatRow, LeadRow, LikeRow, ModerationRow, SessionRow};
pub use writer::{StopRx, TableRow, WriterSettings};

/// Build the HTTP client from config (URL, user, password, database, LZ4).
pub fn client(cfg: &ClickHouseConfig) -> Client {
    Client::default()
        .with_url(&cfg.url)
        .with_user(&cfg.user)
        .with_password(cfg.password.expose())
        .with_database(&cfg.database)
        .with_compression(clickhouse::Compression::Lz4)
}

/// What the writers are started with.
#[derive(Debug)]
pub struct Writers<'a> {
    /// ClickHouse.
    pub client: &'a Client,
    /// Batch policies.
    pub batch: &'a BatchConfig,
    /// Retry and pacing.
    pub settings: WriterSettings,
    /// Counters.
    pub metrics: &'a Arc<Metrics>,
    /// The log they read.
    pub log: &'a LogHandle,
    /// Where each table stands after the log was replayed.
    pub recovery: &'a Recovery,
    /// The stop signal (with the flush deadline).
    pub stop: &'a StopRx,
    /// True once the schema is current.
    pub schema: &'a watch::Receiver<bool>,
}

/// Start the five writers on the current tokio runtime; each starts by
/// re-sending what the recovery says its table has not committed.
pub fn spawn(w: Writers<'_>) -> Vec<JoinHandle<()>> {
    fn one<R: TableRow>(w: &Writers<'_>, settings: &Arc<WriterSettings>) -> JoinHandle<()> {
        let writer = writer::TableWriter::<R>::new(
            w.client.clone(),
            w.batch.policy(R::TABLE),
            settings.clone(),
            w.metrics.clone(),
            w.log.clone(),
            w.recovery.table(R::TABLE).clone(),
            w.schema.clone(),
        );
        tokio::spawn(writer.run(w.stop.clone()))
    }
    let s = Arc::new(w.settings.clone());
    let handles = vec![
        one::<ChatRow>(&w, &s),
        one::<LikeRow>(&w, &s),
        one::<LeadRow>(&w, &s),
        one::<SessionRow>(&w, &s),
        one::<ModerationRow>(&w, &s),
    ];
    debug_assert_eq!(handles.len(), Table::COUNT);
    handles
}

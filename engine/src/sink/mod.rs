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
        .with_password(&cfg.password)
        .with_database(&cfg.database)
        .with_compression(clickhouse::Compression::Lz4)
}

/// Start the five writers on the current tokio runtime; each starts by
/// re-sending what `recovery` says its table has not committed.
pub fn spawn(
    client: &Client,
    batch: &BatchConfig,
    settings: WriterSettings,
    metrics: &Arc<Metrics>,
    log: &LogHandle,
    recovery: &Recovery,
    stop: &StopRx,
) -> Vec<JoinHandle<()>> {
    fn one<R: TableRow>(
        client: &Client,
        batch: &BatchConfig,
        settings: &Arc<WriterSettings>,
        metrics: &Arc<Metrics>,
        log: &LogHandle,
        recovery: &Recovery,
        stop: &StopRx,
    ) -> JoinHandle<()> {
        let w = writer::TableWriter::<R>::new(
            client.clone(),
            batch.policy(R::TABLE),
            settings.clone(),
            metrics.clone(),
            log.clone(),
            recovery.table(R::TABLE).clone(),
        );
        tokio::spawn(w.run(stop.clone()))
    }
    let s = Arc::new(settings);
    let handles = vec![
        one::<ChatRow>(client, batch, &s, metrics, log, recovery, stop),
        one::<LikeRow>(client, batch, &s, metrics, log, recovery, stop),
        one::<LeadRow>(client, batch, &s, metrics, log, recovery, stop),
        one::<SessionRow>(client, batch, &s, metrics, log, recovery, stop),
        one::<ModerationRow>(client, batch, &s, metrics, log, recovery, stop),
    ];
    debug_assert_eq!(handles.len(), Table::COUNT);
    handles
}

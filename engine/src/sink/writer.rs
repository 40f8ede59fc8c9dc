//! One writer task per table: batch, insert with an idempotent token, retry
//! retryable errors with backoff, set aside data errors, then release the
//! acks that waited for the commit.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse::{Client, Row, RowOwned, RowWrite};
use serde::Serialize;
use tokio::sync::mpsc;

use super::rows::RowSize;
use crate::batch::{BatchPolicy, Batcher, Sealed};
use crate::metrics::Metrics;
use crate::shard::DeferredAck;

/// A row plus the ack (if any) to send once it is committed.
#[derive(Debug)]
pub struct Item<R> {
    /// The row; `None` for an ack that only has to wait for every row
    /// queued before it (a lead resend answered while the original's row is
    /// not committed yet).
    pub row: Option<R>,
    /// Sent after the row's batch is committed (leads: durable acks).
    pub ack: Option<DeferredAck>,
}

impl<R> Item<R> {
    /// A row with no deferred ack.
    pub fn row(row: R) -> Self {
        Item {
            row: Some(row),
            ack: None,
        }
    }
}

/// Retry and pacing settings shared by all writers.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// Unique per engine process; part of every dedup token.
    pub boot_id: String,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Minimum gap between inserts into one table.
    pub min_interval: Duration,
    /// Per-insert timeout.
    pub insert_timeout: Duration,
    /// Where non-retryable batches are written.
    pub dead_letter_dir: std::path::PathBuf,
    /// How long to keep retrying after shutdown began before spilling the
    /// remaining batches to the dead-letter dir.
    pub shutdown_grace: Duration,
}

/// How an insert error is handled.
#[derive(Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again (network, timeouts, overload, unknown server errors).
    Retry,
    /// The data itself is rejected: retrying cannot help.
    SetAside,
}

/// Classify an insert error. Data/type errors (codes such as 6, 27, 53, 117)
/// fail the same way on every retry; everything else may pass later.
pub fn classify(err: &clickhouse::error::Error) -> ErrorClass {
    use clickhouse::error::Error as E;
    match err {
        E::BadResponse(msg) => match server_code(msg) {
            Some(6 | 26 | 27 | 32 | 33 | 38 | 41 | 53 | 69 | 70 | 72 | 117 | 131 | 349) => {
                ErrorClass::SetAside
            }
            _ => ErrorClass::Retry,
        },
        E::Custom(_)
        | E::SchemaMismatch(_)
        | E::SequenceMustHaveLength
        | E::InvalidUtf8Encoding(_)
        | E::VariantDiscriminatorIsOutOfBound(_) => ErrorClass::SetAside,
        _ => ErrorClass::Retry,
    }
}

/// The numeric server error code in a ClickHouse error message ("Code: 53. …").
pub fn server_code(msg: &str) -> Option<u32> {
    let rest = &msg[msg.find("Code: ")? + 6..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Writer for one table.
pub struct TableWriter<R> {
    table: &'static str,
    index: usize,
    client: Client,
    policy: BatchPolicy,
    settings: Arc<WriterSettings>,
    metrics: Arc<Metrics>,
    _row: std::marker::PhantomData<R>,
}

impl<R> TableWriter<R>
where
    R: Row + RowOwned + RowWrite + RowSize + Serialize + Send + Sync + 'static,
{
    /// A writer for `table` (its index in [`crate::metrics::TABLES`]).
    pub fn new(
        table: &'static str,
        index: usize,
        client: Client,
        policy: BatchPolicy,
        settings: Arc<WriterSettings>,
        metrics: Arc<Metrics>,
    ) -> Self {
        TableWriter {
            table,
            index,
            client,
            policy,
            settings,
            metrics,
            _row: std::marker::PhantomData,
        }
    }

    /// Run until the channel closes (shutdown), then flush.
    pub async fn run(self, mut rx: mpsc::Receiver<Vec<Item<R>>>) {
        let mut batcher: Batcher<Item<R>> = Batcher::new(self.policy);
        let mut last_insert: Option<Instant> = None;
        let epoch = Instant::now();
        let epoch_ms = crate::now_ms();
        let now = || epoch_ms + epoch.elapsed().as_millis() as i64;
        loop {
            let deadline = batcher.deadline();
            let sleep = async {
                match deadline {
                    Some(d) => {
                        let wait = (d - now()).max(0) as u64;
                        tokio::time::sleep(Duration::from_millis(wait)).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = rx.recv() => {
                    let Some(items) = msg else { break };
                    for item in items {
                        let size = item.row.as_ref().map_or(0, RowSize::size);
                        if let Some(sealed) = batcher.push(item, size, now()) {
                            self.commit(sealed, &mut last_insert, false).await;
                        }
                    }
                }
                () = sleep => {
                    if let Some(sealed) = batcher.poll(now()) {
                        self.commit(sealed, &mut last_insert, false).await;
                    }
                }
            }
        }
        if let Some(sealed) = batcher.flush() {
            self.commit(sealed, &mut last_insert, true).await;
        }
        tracing::debug!(table = self.table, "writer stopped");
    }

    async fn commit(
        &self,
        sealed: Sealed<Item<R>>,
        last: &mut Option<Instant>,
        shutting_down: bool,
    ) {
        let stats = &self.metrics.tables[self.index];
        let token = format!("{}-{}-{}", self.settings.boot_id, self.table, sealed.seq);
        let n = sealed.rows.iter().filter(|i| i.row.is_some()).count() as u64;
        let mut delay = self.settings.retry_initial;
        let started = Instant::now();
        loop {
            if n == 0 {
                break;
            }
            if let Some(prev) = *last {
                let gap = prev.elapsed();
                if gap < self.settings.min_interval {
                    tokio::time::sleep(self.settings.min_interval - gap).await;
                }
            }
            *last = Some(Instant::now());
            let t0 = Instant::now();
            match self.insert(&sealed.rows, &token).await {
                Ok(()) => {
                    let us = t0.elapsed().as_micros() as u64;
                    stats.batches.fetch_add(1, Relaxed);
                    stats.rows.fetch_add(n, Relaxed);
                    stats.insert_us_sum.fetch_add(us, Relaxed);
                    stats.insert_us_max.fetch_max(us, Relaxed);
                    tracing::debug!(table = self.table, rows = n, us, token, "batch committed");
                    break;
                }
                Err(e) if classify(&e) == ErrorClass::SetAside => {
                    tracing::error!(table = self.table, rows = n, token, error = %e, "batch rejected by ClickHouse; set aside");
                    self.set_aside(&sealed.rows, &token, &e.to_string());
                    break;
                }
                Err(e) => {
                    stats.retries.fetch_add(1, Relaxed);
                    let give_up = shutting_down && started.elapsed() > self.settings.shutdown_grace;
                    if give_up {
                        tracing::error!(table = self.table, rows = n, token, error = %e, "ClickHouse still failing at shutdown; spilling batch to dead-letter dir");
                        self.set_aside(&sealed.rows, &token, &e.to_string());
                        break;
                    }
                    tracing::warn!(table = self.table, rows = n, token, error = %e, retry_in_ms = delay.as_millis() as u64, "insert failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.settings.retry_max);
                }
            }
        }
        stats.pending_rows.fetch_sub(n as i64, Relaxed);
        for item in sealed.rows {
            if let Some(ack) = item.ack {
                ack.send();
            }
        }
    }

    async fn insert(&self, rows: &[Item<R>], token: &str) -> clickhouse::error::Result<()> {
        let timeout = Some(self.settings.insert_timeout);
        let mut insert = self
            .client
            .insert::<R>(self.table)
            .await?
            .with_setting("insert_deduplication_token", token)
            .with_setting("insert_deduplicate", "1")
            .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1")
            .with_timeouts(timeout, timeout);
        for row in rows.iter().filter_map(|i| i.row.as_ref()) {
            insert.write(row).await?;
        }
        insert.end().await
    }

    fn set_aside(&self, rows: &[Item<R>], token: &str, error: &str) {
        let stats = &self.metrics.tables[self.index];
        stats.dead_batches.fetch_add(1, Relaxed);
        stats.dead_rows.fetch_add(
            rows.iter().filter(|i| i.row.is_some()).count() as u64,
            Relaxed,
        );
        let dir = &self.settings.dead_letter_dir;
        let path = dir.join(format!("{token}.jsonl"));
        let mut out = String::new();
        out.push_str(
            &serde_json::json!({"table": self.table, "token": token, "error": error}).to_string(),
        );
        out.push('\n');
        for row in rows.iter().filter_map(|i| i.row.as_ref()) {
            match serde_json::to_string(row) {
                Ok(line) => out.push_str(&line),
                Err(e) => {
                    out.push_str(&serde_json::json!({"unserializable": e.to_string()}).to_string())
                }
            }
            out.push('\n');
        }
        if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, out)) {
            tracing::error!(path = %path.display(), error = %e, "cannot write dead-letter file; rows lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_are_set_aside_others_retried() {
        use clickhouse::error::Error as E;
        let bad = E::BadResponse("Code: 53. DB::Exception: Type mismatch".into());
        assert_eq!(classify(&bad), ErrorClass::SetAside);
        let busy = E::BadResponse("Code: 252. DB::Exception: Too many parts".into());
        assert_eq!(classify(&busy), ErrorClass::Retry);
        assert_eq!(classify(&E::TimedOut), ErrorClass::Retry);
        assert_eq!(server_code("xx Code: 117. y"), Some(117));
        assert_eq!(server_code("no code"), None);
    }
}

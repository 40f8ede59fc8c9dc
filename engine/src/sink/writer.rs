//! One writer task per table. It reads its table's rows from the log,
//! batches them (rows / bytes / age), records each insert's LSN range in
//! the log before sending it, inserts with a token derived from that range,
//! retries what may pass later, sets aside what never will, and logs the
//! outcome. Acks do not wait for it: they were released when the rows
//! became durable in the log.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse::{Client, Row, RowOwned, RowWrite};
use serde::Serialize;
use tokio::sync::watch;

use super::dead_letter;
use super::rows::RowSize;
use crate::batch::BatchPolicy;
use crate::metrics::Metrics;
use crate::table::Table;
use crate::wal::{self, codec, BatchMark, Entry, LogHandle, Outcome, TableRecovery};

/// A row type the sink writes to one table.
pub trait TableRow:
    Row + RowOwned + RowWrite + RowSize + Serialize + Clone + Send + Sync + Sized + 'static
{
    /// Its table.
    const TABLE: Table;
    /// This table's row out of a logged row (`None`: another table's).
    fn from_row(row: wal::Row) -> Option<Self>;
    /// As a logged row.
    fn into_row(self) -> wal::Row;
}

/// Retry and pacing settings shared by all writers.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Minimum gap between inserts into one table: paces the catch-up
    /// after an outage.
    pub min_interval: Duration,
    /// Per-insert timeout.
    pub insert_timeout: Duration,
    /// Where non-retryable batches are written (fsynced) before they are
    /// marked done.
    pub dead_letter_dir: std::path::PathBuf,
    /// Shortest pause between two looks for new rows in the log (the pause
    /// is an eighth of the table's batch age, up to 100 ms).
    pub read_interval: Duration,
    /// Most bytes read from the log per look.
    pub read_bytes: usize,
    /// Benchmarks only (`clickhouse.null_sink`): batches are formed and
    /// marked in the log as usual, then counted as committed without being
    /// sent anywhere.
    pub null_sink: bool,
    /// Several engine nodes (`[routing]`): before a batch of leads is
    /// inserted, leads ClickHouse already holds (same room, viewer and
    /// client lead id: stored by another node) are taken out of it.
    pub skip_stored_leads: bool,
}

impl WriterSettings {
    /// The settings the engine runs with: retries, pacing and timeouts from
    /// `[clickhouse]`, dead letters under `storage_dir`.
    pub fn from_config(
        ch: &crate::config::ClickHouseConfig,
        storage_dir: &std::path::Path,
    ) -> Self {
        WriterSettings {
            retry_initial: Duration::from_millis(ch.retry_initial_ms),
            retry_max: Duration::from_millis(ch.retry_max_ms),
            min_interval: Duration::from_millis(ch.min_insert_interval_ms),
            insert_timeout: Duration::from_millis(ch.insert_timeout_ms),
            dead_letter_dir: crate::wal::dead_letter_dir(storage_dir),
            read_interval: Duration::from_millis(10),
            read_bytes: 4 << 20,
            null_sink: ch.null_sink,
            skip_stored_leads: false,
        }
    }
}

/// The natural key of a lead row: `(room_id, viewer_id, client_lead_id)`.
fn lead_key<R: TableRow>(row: &R) -> Option<(u64, u64, u64)> {
    if R::TABLE != Table::Leads {
        return None;
    }
    match row.clone().into_row() {
        wal::Row::Lead(l) => Some((l.room_id, l.viewer_id, l.client_lead_id)),
        _ => None,
    }
}

/// Of `keys`, those ClickHouse already has a `leads` row for.
async fn stored_leads(
    client: &clickhouse::Client,
    keys: &[(u64, u64, u64)],
    timeout: Duration,
) -> Result<std::collections::HashSet<(u64, u64, u64)>, clickhouse::error::Error> {
    let list = |f: fn(&(u64, u64, u64)) -> u64| {
        let mut v: Vec<u64> = keys.iter().map(f).collect();
        v.sort_unstable();
        v.dedup();
        v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    };
    // Coarse in SQL (rooms and ids prune well), exact below.
    let sql = format!(
        "SELECT room_id, viewer_id, client_lead_id FROM leads \
         WHERE room_id IN ({}) AND client_lead_id IN ({})",
        list(|k| k.0),
        list(|k| k.2)
    );
    let q = client.query(&sql).fetch_all::<(u64, u64, u64)>();
    let found = match tokio::time::timeout(timeout, q).await {
        Ok(r) => r?,
        Err(_) => return Err(clickhouse::error::Error::TimedOut),
    };
    let wanted: std::collections::HashSet<_> = keys.iter().copied().collect();
    Ok(found.into_iter().filter(|k| wanted.contains(k)).collect())
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
/// fail the same way on every retry; everything else may pass later,
/// including 32/33 (`ATTEMPT_TO_READ_AFTER_EOF`, `CANNOT_READ_ALL_DATA`),
/// which a body truncated by a proxy or a dropped connection also causes.
pub fn classify(err: &clickhouse::error::Error) -> ErrorClass {
    use clickhouse::error::Error as E;
    match err {
        E::BadResponse(msg) => match server_code(msg) {
            Some(6 | 26 | 27 | 38 | 41 | 53 | 69 | 70 | 72 | 117 | 131 | 349) => {
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

/// The deduplication token of the insert of `table` rows `first..=last` of
/// the log `log_id`: the same insert always gets the same token, and no
/// other insert ever does.
pub fn token(log_id: &str, table: Table, first: u64, last: u64) -> String {
    format!("{log_id}-{}-{first}-{last}", table.name())
}

/// Insert `rows` into `table` with `token` (idempotent retries).
pub async fn insert<R: TableRow>(
    client: &Client,
    rows: &[R],
    token: &str,
    timeout: Duration,
) -> clickhouse::error::Result<()> {
    insert_into(client, R::TABLE.name(), rows, token, timeout).await
}

/// [`insert`] into the table named `table` (e.g. a cluster's local table
/// instead of the `Distributed` one: `roomgate-cluster-bench` compares
/// them), with the same settings.
pub async fn insert_into<'a, R: TableRow>(
    client: &Client,
    table: &str,
    rows: impl IntoIterator<Item = &'a R>,
    token: &str,
    timeout: Duration,
) -> clickhouse::error::Result<()> {
    let timeout = Some(timeout);
    let mut insert = client
        .insert::<R>(table)
        .await?
        .with_setting("insert_deduplication_token", token)
        .with_setting("insert_deduplicate", "1")
        .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1")
        .with_timeouts(timeout, timeout);
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}

/// A batch being filled or sent.
struct Batch<R> {
    rows: Vec<R>,
    first: u64,
    last: u64,
    bytes: usize,
    opened_at: Option<Instant>,
    /// Already recorded in the log (a recovered insert being re-sent).
    recorded: Option<BatchMark>,
}

impl<R> Batch<R> {
    fn new() -> Self {
        Batch {
            rows: Vec::new(),
            first: 0,
            last: 0,
            bytes: 0,
            opened_at: None,
            recorded: None,
        }
    }
}

/// A log read on the blocking pool: the reader back, and this table's rows.
type ReadTask<R> = tokio::task::JoinHandle<(wal::Reader, Vec<(u64, R)>)>;

/// Writer for one table.
pub struct TableWriter<R> {
    client: Client,
    policy: BatchPolicy,
    settings: Arc<WriterSettings>,
    metrics: Arc<Metrics>,
    log: LogHandle,
    recovery: TableRecovery,
    /// True once migrations are applied: no insert before (a missing
    /// column would look like bad data).
    schema: watch::Receiver<bool>,
    _row: std::marker::PhantomData<R>,
}

/// Tells writers to stop: `Some(deadline)` = flush what the log holds
/// until `deadline`, then stop; whatever is not committed stays in the log.
pub type StopRx = watch::Receiver<Option<Instant>>;

enum Step {
    /// Rows were read or a batch was sent: look again at once.
    Again,
    /// Wait for new rows, the batch's age, or the stop signal.
    Wait,
    /// Stop now.
    Stop,
}

impl<R: TableRow> TableWriter<R> {
    /// A writer that starts where `recovery` says this table stands.
    pub fn new(
        client: Client,
        policy: BatchPolicy,
        settings: Arc<WriterSettings>,
        metrics: Arc<Metrics>,
        log: LogHandle,
        recovery: TableRecovery,
        schema: watch::Receiver<bool>,
    ) -> Self {
        TableWriter {
            client,
            policy,
            settings,
            metrics,
            log,
            recovery,
            schema,
            _row: std::marker::PhantomData,
        }
    }

    /// Run until stopped.
    pub async fn run(self, mut stop: StopRx) {
        let table = R::TABLE;
        let mut reader = Some(self.log.reader(self.recovery.done_through + 1));
        let mut durable = self.log.durable();
        let mut pending: VecDeque<BatchMark> = self.recovery.pending.iter().copied().collect();
        if !pending.is_empty() || self.recovery.rows_after > 0 {
            tracing::info!(%table, inserts = pending.len(), rows = self.recovery.rows_after, "replaying rows not yet committed");
        }
        let mut buf: VecDeque<(u64, R)> = VecDeque::new();
        let mut batch: Batch<R> = Batch::new();
        let mut last_insert: Option<Instant> = None;
        loop {
            let deadline = *stop.borrow();
            let durable_lsn = *durable.borrow();
            let step = self
                .step(
                    &mut reader,
                    durable_lsn,
                    &mut pending,
                    &mut buf,
                    &mut batch,
                    &mut last_insert,
                    deadline,
                    &stop,
                )
                .await;
            if let Step::Stop = step {
                // Do not publish a new mark here: a batch abandoned at the
                // deadline is no longer in `batch`, and its rows must stay.
                break;
            }
            let safe = batch
                .rows
                .first()
                .map(|_| batch.first)
                .or(buf.front().map(|(l, _)| *l))
                .unwrap_or_else(|| reader.as_ref().map_or(0, |r| r.position()));
            self.log.set_safe(table, safe);
            if let Step::Again = step {
                continue;
            }
            let age = batch
                .opened_at
                .map(|t| t + Duration::from_millis(self.policy.max_age_ms));
            tokio::select! {
                r = durable.changed() => {
                    if r.is_err() && deadline.is_none() {
                        // The log stopped: nothing more will arrive.
                        break;
                    }
                    // Let group commits accumulate before reading: every
                    // writer reads the whole log, so a look per fsync (up
                    // to hundreds a second) costs more than it brings. An
                    // eighth of the batch age keeps sealing on time.
                    tokio::time::sleep(self.read_pause()).await;
                }
                () = sleep_until(age) => {}
                r = stop.changed(), if deadline.is_none() => {
                    if r.is_err() { break; }
                }
                () = sleep_until(deadline) => break,
            }
        }
        tracing::debug!(%table, "writer stopped");
    }

    /// How long to let new records accumulate before the next look: an
    /// eighth of the batch's age limit, between `read_interval` and 100 ms.
    fn read_pause(&self) -> Duration {
        let floor = self.settings.read_interval;
        Duration::from_millis(self.policy.max_age_ms / 8)
            .clamp(floor, floor.max(Duration::from_millis(100)))
    }

    /// Start reading this table's rows up to `durable` on the blocking
    /// pool, when the buffer has room and the log has more.
    fn start_read(
        &self,
        reader: &mut Option<wal::Reader>,
        buf: &VecDeque<(u64, R)>,
        durable: u64,
    ) -> Option<ReadTask<R>> {
        let r = reader.take()?;
        if buf.len() >= self.policy.max_rows || r.position() > durable {
            *reader = Some(r);
            return None;
        }
        let table = R::TABLE;
        let max = self.settings.read_bytes;
        Some(tokio::task::spawn_blocking(move || {
            let mut r = r;
            let mut rows = Vec::new();
            let res = r.read(durable, max, |lsn, payload| {
                if codec::row_table(payload) != Some(table) {
                    return;
                }
                match codec::decode(payload) {
                    Ok(Entry::Row(row)) => {
                        if let Some(row) = R::from_row(row) {
                            rows.push((lsn, row));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(lsn, %table, error = %e, "log row does not decode; skipped")
                    }
                }
            });
            if let Err(e) = res {
                tracing::error!(%table, error = %e, "cannot read the log");
            }
            (r, rows)
        }))
    }

    /// Take a read's rows into the buffer; true when it found any.
    async fn finish_read(
        &self,
        read: ReadTask<R>,
        reader: &mut Option<wal::Reader>,
        buf: &mut VecDeque<(u64, R)>,
    ) -> bool {
        let (r, rows) = read.await.expect("log read task does not panic");
        *reader = Some(r);
        self.metrics.tables[R::TABLE.index()]
            .pending_rows
            .fetch_add(rows.len() as i64, Relaxed);
        let any = !rows.is_empty();
        buf.extend(rows);
        any
    }

    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        reader: &mut Option<wal::Reader>,
        durable: u64,
        pending: &mut VecDeque<BatchMark>,
        buf: &mut VecDeque<(u64, R)>,
        batch: &mut Batch<R>,
        last_insert: &mut Option<Instant>,
        deadline: Option<Instant>,
        stop: &StopRx,
    ) -> Step {
        let table = R::TABLE;
        let mut read_any = false;
        // 1. Read more rows when the buffer has room.
        if let Some(read) = self.start_read(reader, buf, durable) {
            read_any = self.finish_read(read, reader, buf).await;
        }
        let caught_up = reader.as_ref().is_none_or(|r| r.position() > durable);
        // 2. Fill the batch.
        let now = Instant::now();
        let mut sealed = false;
        if let Some(mark) = pending.front().copied() {
            // A recovered insert: exactly the rows of its range.
            batch.recorded = Some(mark);
            batch.first = mark.first;
            batch.last = mark.last;
            while let Some((lsn, _)) = buf.front() {
                if *lsn > mark.last {
                    sealed = true;
                    break;
                }
                let (_, row) = buf.pop_front().expect("front exists");
                batch.bytes += row.size();
                batch.rows.push(row);
            }
            if reader.as_ref().is_none_or(|r| r.position() > mark.last) {
                sealed = true;
            }
            if sealed {
                pending.pop_front();
                if batch.rows.len() as u32 != mark.rows {
                    tracing::warn!(%table, first = mark.first, last = mark.last, logged = mark.rows, found = batch.rows.len(), "a recovered insert has fewer rows than recorded (corrupt log records were skipped)");
                }
                if batch.rows.is_empty() {
                    self.log.mark_later(Entry::Done {
                        table,
                        first: mark.first,
                        last: mark.last,
                        outcome: Outcome::Committed,
                    });
                    *batch = Batch::new();
                    return Step::Again;
                }
            }
        } else {
            while batch.rows.len() < self.policy.max_rows && batch.bytes < self.policy.max_bytes {
                let Some((lsn, row)) = buf.pop_front() else {
                    break;
                };
                if batch.rows.is_empty() {
                    batch.first = lsn;
                    batch.opened_at = Some(now);
                }
                batch.last = lsn;
                batch.bytes += row.size();
                batch.rows.push(row);
            }
            let full =
                batch.rows.len() >= self.policy.max_rows || batch.bytes >= self.policy.max_bytes;
            let old = batch
                .opened_at
                .is_some_and(|t| now >= t + Duration::from_millis(self.policy.max_age_ms));
            let flushing = deadline.is_some() && caught_up && buf.is_empty();
            sealed = !batch.rows.is_empty() && (full || old || flushing);
        }
        // 3. Send a sealed batch, reading the next rows while the insert
        // is in flight (the read and decode would otherwise add to every
        // insert's time: make perf's sink figure).
        if sealed {
            let b = std::mem::replace(batch, Batch::new());
            let next = self.start_read(reader, buf, durable);
            let committed = self.commit(b, last_insert, stop).await;
            if let Some(read) = next {
                self.finish_read(read, reader, buf).await;
            }
            if !committed {
                return Step::Stop;
            }
            return Step::Again;
        }
        if deadline.is_some() && caught_up && buf.is_empty() && batch.rows.is_empty() {
            return Step::Stop;
        }
        if read_any && !caught_up {
            return Step::Again;
        }
        Step::Wait
    }

    /// Record, send and settle one insert. `false`: the stop deadline
    /// passed first (the insert stays in the log for the next start).
    async fn commit(&self, b: Batch<R>, last: &mut Option<Instant>, stop: &StopRx) -> bool {
        let table = R::TABLE;
        let stats = &self.metrics.tables[table.index()];
        let n = b.rows.len() as u64;
        if b.recorded.is_none() {
            let mark = Entry::Batch {
                table,
                first: b.first,
                last: b.last,
                rows: b.rows.len() as u32,
            };
            if self.log.mark(mark).await.is_err() {
                tracing::warn!(%table, "log stopped before an insert could be recorded");
                return false;
            }
        }
        if self.settings.null_sink {
            stats.batches.fetch_add(1, Relaxed);
            stats.rows.fetch_add(n, Relaxed);
            self.done(&b, Outcome::Committed);
            return true;
        }
        let token = token(self.log.id(), table, b.first, b.last);
        let mut schema = self.schema.clone();
        let ready = schema.wait_for(|ready| *ready);
        if !matches!(
            before_deadline(stop, async { ready.await.is_ok() }).await,
            Some(true)
        ) {
            tracing::warn!(%table, rows = n, "schema not ready by the shutdown deadline; the batch stays in the log");
            return false;
        }
        let mut delay = self.settings.retry_initial;
        loop {
            if let Some(prev) = *last {
                let gap = prev.elapsed();
                if gap < self.settings.min_interval
                    && before_deadline(stop, tokio::time::sleep(self.settings.min_interval - gap))
                        .await
                        .is_none()
                {
                    return false;
                }
            }
            *last = Some(Instant::now());
            let t0 = Instant::now();
            let filtered;
            let mut rows = &b.rows[..];
            if self.settings.skip_stored_leads && R::TABLE == Table::Leads {
                let keys: Vec<_> = rows.iter().filter_map(lead_key).collect();
                match stored_leads(&self.client, &keys, self.settings.insert_timeout).await {
                    Ok(stored) if !stored.is_empty() => {
                        // Another node stored these (a resend it acked after
                        // this node died with them in its log) — or this
                        // batch's earlier attempt did: either way, in.
                        filtered = rows
                            .iter()
                            .filter(|r| lead_key(*r).is_none_or(|k| !stored.contains(&k)))
                            .cloned()
                            .collect::<Vec<_>>();
                        let skipped = rows.len() - filtered.len();
                        stats.skipped_stored.fetch_add(skipped as u64, Relaxed);
                        tracing::info!(%table, skipped, token, "leads already in ClickHouse left out of the batch");
                        rows = &filtered;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        stats.retries.fetch_add(1, Relaxed);
                        tracing::warn!(%table, rows = n, token, error = %e, "cannot check the batch's leads against ClickHouse; retrying");
                        if before_deadline(stop, tokio::time::sleep(delay))
                            .await
                            .is_none()
                        {
                            return false;
                        }
                        delay = (delay * 2).min(self.settings.retry_max);
                        continue;
                    }
                }
                if rows.is_empty() {
                    stats.batches.fetch_add(1, Relaxed);
                    self.done(&b, Outcome::Committed);
                    return true;
                }
            }
            let attempt = insert(&self.client, rows, &token, self.settings.insert_timeout);
            let Some(result) = before_deadline(stop, attempt).await else {
                tracing::warn!(%table, rows = n, token, "shutdown deadline reached during an insert; it stays in the log");
                return false;
            };
            match result {
                Ok(()) => {
                    let us = t0.elapsed().as_micros() as u64;
                    stats.batches.fetch_add(1, Relaxed);
                    stats.rows.fetch_add(rows.len() as u64, Relaxed);
                    stats.insert_us_sum.fetch_add(us, Relaxed);
                    stats.insert_us_max.fetch_max(us, Relaxed);
                    tracing::debug!(%table, rows = n, us, token, "batch committed");
                    self.done(&b, Outcome::Committed);
                    return true;
                }
                Err(e) if classify(&e) == ErrorClass::SetAside => {
                    tracing::error!(%table, rows = n, token, error = %e, "batch rejected by ClickHouse as bad data; setting it aside");
                    match dead_letter::write(
                        &self.settings.dead_letter_dir,
                        &token,
                        table,
                        &e.to_string(),
                        b.first,
                        &b.rows,
                    ) {
                        Ok(path) => {
                            stats.dead_batches.fetch_add(1, Relaxed);
                            stats.dead_rows.fetch_add(n, Relaxed);
                            tracing::error!(%table, rows = n, path = %path.display(), "batch set aside; re-insert after a fix with `roomgate dead-letter replay`");
                            self.done(&b, Outcome::SetAside);
                            return true;
                        }
                        Err(err) => {
                            // Not durable elsewhere: keep it in the log and
                            // try again later.
                            tracing::error!(%table, rows = n, error = %err, "cannot write the dead-letter file; the batch stays in the log");
                        }
                    }
                }
                Err(e) => {
                    stats.retries.fetch_add(1, Relaxed);
                    tracing::warn!(%table, rows = n, token, error = %e, retry_in_ms = delay.as_millis() as u64, "insert failed; retrying");
                }
            }
            if before_deadline(stop, tokio::time::sleep(delay))
                .await
                .is_none()
            {
                tracing::warn!(%table, rows = n, token, "shutdown deadline reached while ClickHouse fails; the batch stays in the log");
                return false;
            }
            delay = (delay * 2).min(self.settings.retry_max);
        }
    }

    fn done(&self, b: &Batch<R>, outcome: Outcome) {
        let table = R::TABLE;
        self.metrics.tables[table.index()]
            .pending_rows
            .fetch_sub(b.rows.len() as i64, Relaxed);
        self.log.mark_later(Entry::Done {
            table,
            first: b.first,
            last: b.last,
            outcome,
        });
    }
}

/// Run `fut` unless the shutdown deadline passes first (`None`). The
/// deadline may be set while `fut` runs (SIGTERM during a retry); a stop
/// channel whose sender is gone means stop now.
async fn before_deadline<F: std::future::Future>(stop: &StopRx, fut: F) -> Option<F::Output> {
    let mut stop = stop.clone();
    tokio::pin!(fut);
    loop {
        let deadline = *stop.borrow_and_update();
        tokio::select! {
            out = &mut fut => return Some(out),
            () = sleep_until(deadline) => return None,
            r = stop.changed(), if deadline.is_none() => {
                if r.is_err() {
                    return None;
                }
            }
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
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
        let truncated = E::BadResponse("Code: 33. DB::Exception: Cannot read all data".into());
        assert_eq!(classify(&truncated), ErrorClass::Retry);
        assert_eq!(classify(&E::TimedOut), ErrorClass::Retry);
        assert_eq!(server_code("xx Code: 117. y"), Some(117));
        assert_eq!(server_code("no code"), None);
    }

    #[test]
    fn tokens_name_the_log_table_and_range() {
        assert_eq!(token("ab12", Table::Leads, 7, 90), "ab12-leads-7-90");
        assert_ne!(
            token("ab12", Table::Leads, 7, 90),
            token("ab13", Table::Leads, 7, 90)
        );
    }
}

//! Cross-node lead facts, the I/O side (docs/ROUTING.md, "Cross-node
//! facts").
//!
//! With more than one engine node, a task reads the recent rows of
//! `lead_facts` (every node's leads, schemas/007_lead_facts.sql) every
//! `routing.facts_interval_secs` and hands each shard the facts of the
//! phone and IP keys it owns ([`AdminOp::Facts`]); the shard's guard merges
//! them with its own state ([`crate::guard::facts`]). Nothing here decides.
//!
//! Reads are incremental: the first one covers the longest lead window,
//! each later one the minutes since the previous read minus
//! [`LOOKBACK_MS`] (rows reach ClickHouse a little after their lead is
//! decided). Merging is idempotent, so the overlap costs only the re-read.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::guard::{FactBatch, IpFact, LeadStage, PhoneFact};
use crate::metrics::Metrics;
use crate::route::Routing;
use crate::shard::{shard_of, AdminOp, Shards};

/// Each read goes back this far before the previous one: rows written to
/// ClickHouse later than this after their lead (an outage's backlog) are
/// not read.
pub const LOOKBACK_MS: i64 = 120_000;

/// Most rows per read; a read cut short goes on at once from where it
/// stopped.
pub const MAX_ROWS: usize = 200_000;

const MINUTE_MS: i64 = 60_000;
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed read (the next one starts where this one did).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FactsError {
    /// ClickHouse refused or could not be reached.
    #[error("query lead_facts: {0}")]
    Query(#[from] clickhouse::error::Error),
    /// ClickHouse did not answer in time.
    #[error("query lead_facts: timed out")]
    Timeout,
    /// A shard's admin queue was full or it did not answer.
    #[error("shard {0} did not take the facts")]
    Shard(usize),
}

/// What the task needs.
#[derive(Debug)]
pub struct FactsTask {
    /// ClickHouse (the engine's database).
    pub client: clickhouse::Client,
    /// The shards to hand the facts to.
    pub shards: Arc<Shards>,
    /// The node list in force: the task reads only while it has more than
    /// one node.
    pub routing: Arc<Routing>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// `routing.facts_interval_secs`.
    pub interval: Duration,
    /// `guard.leads.velocity_window_secs`, ms.
    pub velocity_window_ms: i64,
    /// `guard.leads.duplicate_window_secs`, ms.
    pub duplicate_window_ms: i64,
}

/// Where the next read starts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    next_ms: Option<i64>,
}

fn minute_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(MINUTE_MS)
}

impl Cursor {
    /// The first minute of the next read at `now_ms`: all of
    /// `longest_window_ms` the first time.
    pub fn since(&self, now_ms: i64, longest_window_ms: i64) -> i64 {
        minute_of(
            self.next_ms
                .unwrap_or_else(|| now_ms.saturating_sub(longest_window_ms)),
        )
    }

    /// Record a read sent at `read_at_ms` from minute `since_ms` that
    /// returned `rows` rows, the last of minute `last_minute_ms`. True when
    /// it was cut short at [`MAX_ROWS`] and the next read should follow at
    /// once: from its last minute (read again, which is harmless), or the
    /// next one if a single minute filled the read.
    pub fn advance(
        &mut self,
        since_ms: i64,
        read_at_ms: i64,
        rows: usize,
        last_minute_ms: i64,
    ) -> bool {
        if rows >= MAX_ROWS {
            self.next_ms = Some(if last_minute_ms > since_ms {
                last_minute_ms
            } else {
                since_ms + MINUTE_MS
            });
            true
        } else {
            self.next_ms = Some(read_at_ms - LOOKBACK_MS);
            false
        }
    }

    /// Start again from the whole window (the node list went down to one
    /// node: facts read later may have a gap).
    pub fn reset(&mut self) {
        self.next_ms = None;
    }
}

/// One row of the read: a phone in a room, or an IP, in a minute.
#[derive(Debug, Clone, clickhouse::Row, serde::Deserialize)]
struct FactRow {
    phone: u8,
    key: String,
    room: u64,
    minute_ms: i64,
    leads: u32,
    /// Not `registered`: an alias equal to a column name would replace the
    /// column in `WHERE` (schemas/README.md).
    registers: u8,
}

/// Phone facts per (minute, phone, room) and IP facts per (minute, IP)
/// from `?` (first minute) on; phone facts older than the velocity window
/// (`?`) only where they registered the phone (for `duplicate_lead`).
const SQL: &str = "\
    SELECT kind = 'phone' AS phone, key, if(kind = 'phone', room_id, 0) AS room, \
           toInt64(toUnixTimestamp(minute)) * 1000 AS minute_ms, \
           toUInt32(uniqExactMerge(lead_ids)) AS leads, max(registered) AS registers \
    FROM lead_facts \
    WHERE minute >= toDateTime(?) \
      AND (minute >= toDateTime(?) OR (kind = 'phone' AND registered = 1)) \
    GROUP BY minute, kind, key, room \
    ORDER BY minute \
    LIMIT ?";

/// The facts of the whole read, sent at `read_at_ms`.
fn to_batch(rows: Vec<FactRow>, read_at_ms: i64) -> FactBatch {
    let mut batch = FactBatch {
        read_at_ms,
        ..FactBatch::default()
    };
    for r in rows {
        if r.phone != 0 {
            batch.phones.push(PhoneFact {
                phone_key: r.key,
                room_id: r.room,
                minute_ms: r.minute_ms,
                registered: r.registers != 0,
            });
        } else {
            batch.ips.push(IpFact {
                ip_key: r.key,
                minute_ms: r.minute_ms,
                leads: r.leads,
            });
        }
    }
    batch
}

/// `batch` cut into one batch per shard: each fact goes to the shard that
/// runs its key's lead stage (phone stage, IP stage).
pub fn split(batch: FactBatch, shards: usize) -> Vec<FactBatch> {
    let shards = shards.max(1);
    let mut out: Vec<FactBatch> = (0..shards)
        .map(|_| FactBatch {
            read_at_ms: batch.read_at_ms,
            ..FactBatch::default()
        })
        .collect();
    for f in batch.phones {
        out[shard_of(LeadStage::fact_key(&f.phone_key), shards)]
            .phones
            .push(f);
    }
    for f in batch.ips {
        out[shard_of(LeadStage::fact_key(&f.ip_key), shards)]
            .ips
            .push(f);
    }
    out
}

fn several_nodes(routing: &Routing) -> bool {
    routing.nodes().is_some_and(|n| n.nodes().len() > 1)
}

impl FactsTask {
    /// Run until `stop` turns true; reads begin once `schema` is true (the
    /// table exists).
    pub async fn run(self, mut stop: watch::Receiver<bool>, mut schema: watch::Receiver<bool>) {
        let mut cursor = Cursor::default();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() || stop.has_changed().is_err() {
                return;
            }
            if !*schema.borrow_and_update() {
                continue;
            }
            if !several_nodes(&self.routing) {
                cursor.reset();
                continue;
            }
            loop {
                match self.read_once(&mut cursor).await {
                    Ok(more) => {
                        if failing {
                            tracing::info!("reading other nodes' lead facts again");
                            failing = false;
                        }
                        if !more {
                            break;
                        }
                    }
                    Err(e) => {
                        self.metrics
                            .facts
                            .read_errors
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if failing {
                            tracing::debug!(error = %e, "cannot read other nodes' lead facts");
                        } else {
                            tracing::warn!(error = %e, "cannot read other nodes' lead facts; cross-room lead rules see this node's leads only until it works again");
                            failing = true;
                        }
                        break;
                    }
                }
            }
        }
    }

    /// One read, merged into every shard; true when it was cut short.
    async fn read_once(&self, cursor: &mut Cursor) -> Result<bool, FactsError> {
        use std::sync::atomic::Ordering::Relaxed;
        let read_at = crate::now_ms();
        let longest = self.velocity_window_ms.max(self.duplicate_window_ms);
        let since = cursor.since(read_at, longest);
        let velocity_since = minute_of(read_at.saturating_sub(self.velocity_window_ms));
        let q = self
            .client
            .query(SQL)
            .bind(since / 1000)
            .bind(velocity_since / 1000)
            .bind(MAX_ROWS as u64);
        let rows = tokio::time::timeout(QUERY_TIMEOUT, q.fetch_all::<FactRow>())
            .await
            .map_err(|_| FactsError::Timeout)??;
        let n = rows.len();
        let last_minute = rows.last().map_or(since, |r| r.minute_ms);
        self.metrics.facts.rows.fetch_add(n as u64, Relaxed);
        let batches = split(to_batch(rows, read_at), self.shards.len());
        for (shard, batch) in batches.into_iter().enumerate() {
            if batch.phones.is_empty() && batch.ips.is_empty() {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            if self
                .shards
                .admin(shard, AdminOp::Facts(Box::new(batch), tx))
                .is_err()
            {
                return Err(FactsError::Shard(shard));
            }
            match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
                Ok(Ok(_)) => {}
                _ => return Err(FactsError::Shard(shard)),
            }
        }
        self.metrics.facts.reads.fetch_add(1, Relaxed);
        tracing::debug!(rows = n, since_ms = since, "other nodes' lead facts merged");
        Ok(cursor.advance(since, read_at, n, last_minute))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::LeadCheck;
    use crate::wire::ReasonSet;

    const T0: i64 = 1_700_000_040_000;

    #[test]
    fn the_first_read_covers_the_window_then_reads_overlap_by_the_lookback() {
        let mut c = Cursor::default();
        let day = 86_400_000;
        assert_eq!(c.since(T0 + 5_000, day), T0 - day);
        assert!(!c.advance(T0 - day, T0 + 5_000, 10, T0));
        assert_eq!(
            c.since(T0 + 15_000, day),
            minute_of(T0 + 5_000 - LOOKBACK_MS)
        );
        // Cut short: go on from the last minute read; a minute that fills a
        // read alone is passed.
        assert!(c.advance(T0 - day, T0 + 15_000, MAX_ROWS, T0 - 60_000));
        assert_eq!(c.since(T0 + 16_000, day), T0 - 60_000);
        assert!(c.advance(T0 - 60_000, T0 + 16_000, MAX_ROWS, T0 - 60_000));
        assert_eq!(c.since(T0 + 17_000, day), T0);
        c.reset();
        assert_eq!(c.since(T0, day), T0 - day);
    }

    #[test]
    fn each_fact_goes_to_the_shard_that_runs_its_stage() {
        let keys: Vec<String> = (0..50).map(|i| format!("{i:064x}")).collect();
        let batch = FactBatch {
            read_at_ms: T0,
            phones: keys
                .iter()
                .map(|k| PhoneFact {
                    phone_key: k.clone(),
                    room_id: 1,
                    minute_ms: T0,
                    registered: true,
                })
                .collect(),
            ips: keys
                .iter()
                .map(|k| IpFact {
                    ip_key: k.clone(),
                    minute_ms: T0,
                    leads: 1,
                })
                .collect(),
        };
        let shards = 4;
        let split = split(batch, shards);
        assert_eq!(split.iter().map(|b| b.phones.len()).sum::<usize>(), 50);
        assert!(split.iter().all(|b| b.read_at_ms == T0));
        for (i, b) in split.iter().enumerate() {
            for f in &b.phones {
                let c = LeadCheck {
                    room_id: 1,
                    viewer_id: 1,
                    phone_e164: "+8613912873465".into(),
                    phone_key: f.phone_key.clone(),
                    ip: f.phone_key.clone(),
                    reasons: ReasonSet::EMPTY,
                    dry_run: ReasonSet::EMPTY,
                    remote: ReasonSet::EMPTY,
                    penalty: 0,
                };
                assert_eq!(shard_of(LeadStage::Phone.key(&c), shards), i);
                assert_eq!(shard_of(LeadStage::Ip.key(&c), shards), i);
            }
        }
        assert!(split.iter().filter(|b| !b.ips.is_empty()).count() > 1);
    }
}

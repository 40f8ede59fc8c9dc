//! Withdrawn and erased leads lose their personal data (docs/LEADS.md,
//! "Consent, withdrawal and erasure").
//!
//! A request is a `lead_withdrawals` row: `withdraw` from the viewer's
//! `Withdraw` frame (through the log, like any row), `erase` from the
//! merchant API or the admin API (inserted directly). From then on the
//! lead is not delivered (the delivery query leaves out every key with a
//! row there). The [`Eraser`] then blanks the lead's personal columns in
//! `leads` with a mutation (`ALTER TABLE … UPDATE`), for every stored copy
//! of the lead, and records that with an `erased` row (source `engine`),
//! so each request is mutated once. It runs every
//! `erasure.interval_secs` on every node, and at once for an erasure call.
//!
//! Why a mutation and not crypto-shredding: the ciphertexts are under one
//! platform key (rotated by key id, docs/SECURITY.md), not a key per lead
//! or viewer; shredding would need a key store as durable and replicated
//! as ClickHouse itself, and `phone_masked` is not encrypted at all. A
//! mutation removes the bytes from the table's current parts; ClickHouse
//! deletes the replaced parts after `old_parts_lifetime` (8 minutes by
//! default). What stays: the natural key, the verdict and reasons, and the
//! keyed HMACs of phone and IP (`phone_hmac`, `ip_hmac`, `lead_facts`),
//! which the fraud rules need and which cannot be reversed without the
//! platform's HMAC key.
//!
//! The SQL is built here (pure); the calls are in [`Eraser`].

use std::time::Duration;

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};

use crate::sink::WithdrawalRow;

/// The personal columns of `leads` an erasure blanks.
pub const PERSONAL_COLUMNS: [&str; 5] = [
    "phone_masked",
    "phone_enc",
    "wechat_enc",
    "name_enc",
    "fields_enc",
];

/// Most leads erased by one mutation.
pub const MAX_BATCH: usize = 500;

/// Most pending requests looked at in one pass.
pub const MAX_PENDING: usize = 5_000;

/// A request whose lead is not in `leads` after this long is closed
/// without a mutation (a withdrawal naming a lead that was never stored:
/// a client's bug or a hostile one). A lead still on its way (the
/// engine's log drains after a ClickHouse outage) normally arrives well
/// within it.
pub const ORPHAN_AFTER_MS: i64 = 24 * 3_600_000;

/// How long an erasure call waits for its pass before answering 202.
const ERASE_NOW_WAIT: Duration = Duration::from_secs(10);

/// A lead's natural key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Row, Deserialize, Serialize)]
pub struct LeadKey {
    /// Room.
    pub room_id: u64,
    /// Viewer.
    pub viewer_id: u64,
    /// The viewer's lead id.
    pub client_lead_id: u64,
}

/// A pending request: the lead, when it was first and last asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Row, Deserialize)]
pub struct Pending {
    /// Room.
    pub room_id: u64,
    /// Viewer.
    pub viewer_id: u64,
    /// The viewer's lead id.
    pub client_lead_id: u64,
    /// The first request's time, Unix ms.
    pub first_ms: i64,
    /// The last request's time, Unix ms.
    pub last_ms: i64,
}

impl Pending {
    /// Its lead.
    pub fn key(&self) -> LeadKey {
        LeadKey {
            room_id: self.room_id,
            viewer_id: self.viewer_id,
            client_lead_id: self.client_lead_id,
        }
    }
}

/// The requests not yet erased: leads with a `withdraw` or `erase` row
/// later than their last `erased` row (none: the epoch), so a request
/// repeated after an erasure (a copy of the lead stored later) erases
/// again.
const PENDING: &str = "SELECT room_id, viewer_id, client_lead_id, \
     toInt64(toUnixTimestamp64Milli(minIf(ts, action != 'erased'))) AS first_ms, \
     toInt64(toUnixTimestamp64Milli(maxIf(ts, action != 'erased'))) AS last_ms \
     FROM lead_withdrawals \
     GROUP BY room_id, viewer_id, client_lead_id \
     HAVING maxIf(ts, action != 'erased') > maxIf(ts, action = 'erased')";

/// The stored leads of the pending requests' rooms (open columns only:
/// the engine's user may not read the personal ones). `GLOBAL`: read once
/// on the node that runs the query, also through a cluster's
/// `Distributed` tables.
fn stored_keys() -> String {
    format!(
        "(SELECT room_id, viewer_id, client_lead_id FROM leads \
         WHERE room_id GLOBAL IN (SELECT room_id FROM ({PENDING})))"
    )
}

/// The pending requests whose lead is stored, oldest first (`limit` of
/// them): a request whose lead is not in ClickHouse yet (still in an
/// engine's log) waits without taking a place.
pub fn pending_stored_sql(limit: usize) -> String {
    format!(
        "SELECT * FROM ({PENDING}) \
         WHERE (room_id, viewer_id, client_lead_id) GLOBAL IN {} \
         ORDER BY first_ms, room_id, viewer_id, client_lead_id \
         LIMIT {}",
        stored_keys(),
        limit.clamp(1, MAX_PENDING)
    )
}

/// The pending requests first made before `cutoff_ms` whose lead is not
/// stored: closed without a mutation ([`ORPHAN_AFTER_MS`]).
pub fn orphans_sql(cutoff_ms: i64, limit: usize) -> String {
    format!(
        "SELECT * FROM ({PENDING}) \
         WHERE first_ms < {cutoff_ms} \
         AND (room_id, viewer_id, client_lead_id) GLOBAL NOT IN {} \
         ORDER BY first_ms, room_id, viewer_id, client_lead_id \
         LIMIT {}",
        stored_keys(),
        limit.clamp(1, MAX_PENDING)
    )
}

fn tuples(keys: &[LeadKey]) -> String {
    keys.iter()
        .map(|k| format!("({}, {}, {})", k.room_id, k.viewer_id, k.client_lead_id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The mutation blanking `keys` in `table` (`leads`, or `leads_local` on
/// each node of a cluster; `on_cluster` is `" ON CLUSTER name"` or `""`).
/// Every value is a number: no injection.
pub fn mutation_sql(table: &str, on_cluster: &str, keys: &[LeadKey]) -> String {
    let set = PERSONAL_COLUMNS
        .iter()
        .map(|c| format!("{c} = ''"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "ALTER TABLE {table}{on_cluster} UPDATE {set} \
         WHERE (room_id, viewer_id, client_lead_id) IN ({})",
        tuples(keys)
    )
}

/// The `erased` rows closing `requests`, each stamped after the
/// request's last row (`max(now, last + 1 ms)`: with a clock behind the
/// gate's, an `erased` row older than its request would leave it pending).
pub fn erased_rows(requests: &[Pending], now_ms: i64, actor: &str) -> Vec<WithdrawalRow> {
    requests
        .iter()
        .map(|r| WithdrawalRow {
            ts: now_ms.max(r.last_ms.saturating_add(1)),
            room_id: r.room_id,
            viewer_id: r.viewer_id,
            client_lead_id: r.client_lead_id,
            action: "erased",
            source: "engine",
            actor: actor.to_owned(),
        })
        .collect()
}

/// Where the mutation runs.
#[derive(Clone)]
pub struct Target {
    /// The server.
    pub client: Client,
    /// The table (`leads`, or `leads_local` on a cluster's nodes).
    pub table: String,
    /// `" ON CLUSTER name"` or `""`.
    pub on_cluster: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("table", &self.table)
            .field("on_cluster", &self.on_cluster)
            .finish()
    }
}

/// How an erasure call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erasure {
    /// Recorded, and the personal columns are blank.
    Done,
    /// Recorded (the lead is no longer delivered); the blanking waits for
    /// the next pass.
    Pending,
}

/// An erasure call's `actor`: 1–128 printable characters.
pub fn check_actor(actor: &str) -> Result<(), String> {
    if actor.is_empty() || actor.chars().count() > 128 || actor.chars().any(char::is_control) {
        return Err(
            "actor must be 1-128 printable characters (who asked, e.g. a ticket number)".into(),
        );
    }
    Ok(())
}

/// Why an erasure pass failed (the requests stay pending: the next pass
/// or call retries them).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EraseError {
    /// ClickHouse refused or could not be reached.
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// ClickHouse did not answer in time.
    #[error("clickhouse did not answer within {0} s")]
    Timeout(u64),
}

/// Blanks the personal columns of withdrawn and erased leads.
#[derive(Debug)]
pub struct Eraser {
    /// Reads the requests, writes the `erased` rows (through the
    /// `Distributed` tables on a cluster).
    client: ClientDebug,
    /// Where the mutations go (one per node, or one with `ON CLUSTER`).
    targets: Vec<Target>,
    /// Who this is, in the `erased` rows' `actor`.
    node: String,
    timeout: Duration,
    /// One pass at a time.
    running: Mutex<()>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

struct ClientDebug(Client);

impl std::fmt::Debug for ClientDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Client")
    }
}

impl Eraser {
    /// An eraser reading through `client`, mutating `targets`.
    pub fn new(
        client: Client,
        targets: Vec<Target>,
        node: String,
        timeout: Duration,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Self {
        Eraser {
            client: ClientDebug(client),
            targets,
            node,
            timeout,
            running: Mutex::new(()),
            metrics,
        }
    }

    /// The targets for the engine's ClickHouse settings: `leads` on one
    /// server; `leads_local` on every node of a cluster (or once, `ON
    /// CLUSTER`).
    pub fn targets(cfg: &crate::config::ClickHouseConfig) -> Vec<Target> {
        let cluster = !cfg.cluster.is_empty();
        let table = if cluster {
            format!("leads{}", crate::sink::migrate::LOCAL_SUFFIX)
        } else {
            "leads".to_owned()
        };
        let on_cluster = if cluster && cfg.on_cluster {
            format!(" ON CLUSTER `{}`", cfg.cluster)
        } else {
            String::new()
        };
        crate::sink::ddl_targets(cfg)
            .into_iter()
            .map(|(_, client)| Target {
                client,
                table: table.clone(),
                on_cluster: on_cluster.clone(),
            })
            .collect()
    }

    async fn within<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
    ) -> Result<T, EraseError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| EraseError::Timeout(self.timeout.as_secs()))?
            .map_err(EraseError::from)
    }

    /// Record an erasure request (merchant or admin) for `key`.
    pub async fn request(
        &self,
        key: LeadKey,
        source: &'static str,
        actor: &str,
    ) -> Result<(), EraseError> {
        let row = WithdrawalRow {
            ts: crate::now_ms(),
            room_id: key.room_id,
            viewer_id: key.viewer_id,
            client_lead_id: key.client_lead_id,
            action: "erase",
            source,
            actor: actor.to_owned(),
        };
        self.within(async {
            let mut insert = self
                .client
                .0
                .insert::<WithdrawalRow>("lead_withdrawals")
                .await?;
            insert.write(&row).await?;
            insert.end().await
        })
        .await
    }

    /// Record an erasure request for `key` and erase at once: what an
    /// erasure call answers. A request that could not be recorded is an
    /// error (nothing happened: retry); a recorded one whose pass failed
    /// is [`Erasure::Pending`] (the background passes retry it).
    pub async fn erase_now(
        &self,
        key: LeadKey,
        source: &'static str,
        actor: &str,
    ) -> Result<Erasure, EraseError> {
        self.request(key, source, actor).await?;
        // The caller waits at most this long; a pass cut short leaves the
        // request pending for the next one (a mutation already sent runs
        // on, and running it again is harmless).
        let pass = tokio::time::timeout(ERASE_NOW_WAIT, self.pass())
            .await
            .unwrap_or(Err(EraseError::Timeout(ERASE_NOW_WAIT.as_secs())));
        match pass {
            Ok(blanked) if blanked.contains(&key) => Ok(Erasure::Done),
            // Its lead is not stored yet (or was erased by a concurrent
            // pass of another node).
            Ok(_) => Ok(Erasure::Pending),
            Err(e) => {
                tracing::warn!(error = %e, "erasure recorded; the immediate pass failed (the background pass retries)");
                Ok(Erasure::Pending)
            }
        }
    }

    /// Erase every pending request whose lead is stored (in mutations of
    /// up to [`MAX_BATCH`] leads) and close old orphans; returns how many
    /// leads were blanked, which.
    pub async fn pass(&self) -> Result<Vec<LeadKey>, EraseError> {
        let _one = self.running.lock().await;
        let stored: Vec<Pending> = self
            .within(
                self.client
                    .0
                    .query(&pending_stored_sql(MAX_PENDING))
                    .fetch_all::<Pending>(),
            )
            .await?;
        let mut blanked = Vec::with_capacity(stored.len());
        for chunk in stored.chunks(MAX_BATCH) {
            let keys: Vec<LeadKey> = chunk.iter().map(Pending::key).collect();
            for t in &self.targets {
                let sql = mutation_sql(&t.table, &t.on_cluster, &keys);
                self.within(
                    t.client
                        .query(&sql)
                        .with_setting("mutations_sync", "2")
                        .execute(),
                )
                .await?;
            }
            self.mark(&erased_rows(chunk, crate::now_ms(), &self.node))
                .await?;
            self.metrics
                .leads_erased
                .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                leads = chunk.len(),
                "erased the personal data of withdrawn leads"
            );
            blanked.extend(keys);
        }
        let orphans: Vec<Pending> = self
            .within(
                self.client
                    .0
                    .query(&orphans_sql(
                        crate::now_ms().saturating_sub(ORPHAN_AFTER_MS),
                        MAX_PENDING,
                    ))
                    .fetch_all::<Pending>(),
            )
            .await?;
        if !orphans.is_empty() {
            let actor = format!("{};no lead", self.node);
            self.mark(&erased_rows(&orphans, crate::now_ms(), &actor))
                .await?;
            tracing::warn!(
                requests = orphans.len(),
                "withdrawal or erasure requests closed: no such lead stored after 24 h"
            );
        }
        Ok(blanked)
    }

    async fn mark(&self, rows: &[WithdrawalRow]) -> Result<(), EraseError> {
        self.within(async {
            let mut insert = self
                .client
                .0
                .insert::<WithdrawalRow>("lead_withdrawals")
                .await?;
            for r in rows {
                insert.write(r).await?;
            }
            insert.end().await
        })
        .await
    }

    /// Run a pass every `interval` once the schema is current, until
    /// shutdown; a failed pass is retried at the next one.
    pub async fn run(
        self: std::sync::Arc<Self>,
        interval: Duration,
        mut schema: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        tokio::select! {
            r = schema.wait_for(|ok| *ok) => if r.is_err() { return },
            _ = shutdown.wait_for(|s| *s) => return,
        }
        loop {
            if let Err(e) = self.pass().await {
                self.metrics
                    .erase_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %e, "erasure pass failed; retrying at the next one");
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(r: u64, v: u64, c: u64) -> LeadKey {
        LeadKey {
            room_id: r,
            viewer_id: v,
            client_lead_id: c,
        }
    }

    #[test]
    fn the_mutation_blanks_every_personal_column_of_exactly_the_keys() {
        let sql = mutation_sql("leads", "", &[key(1, 2, 3), key(4, 5, 6)]);
        assert_eq!(
            sql,
            "ALTER TABLE leads UPDATE phone_masked = '', phone_enc = '', wechat_enc = '', \
             name_enc = '', fields_enc = '' \
             WHERE (room_id, viewer_id, client_lead_id) IN ((1, 2, 3), (4, 5, 6))"
        );
        let c = mutation_sql("leads_local", " ON CLUSTER `rg`", &[key(1, 2, 3)]);
        assert!(c.starts_with("ALTER TABLE leads_local ON CLUSTER `rg` UPDATE "));
    }

    #[test]
    fn every_personal_and_encrypted_lead_column_is_erased() {
        // A new personal or ciphertext column on `leads` must be added
        // here, or erasure would leave it behind.
        let leads = crate::access::CLASSES
            .iter()
            .find(|c| c.table == "leads")
            .expect("leads is classified");
        let mut must: Vec<&str> = leads
            .personal
            .iter()
            .chain(leads.sealed.iter().filter(|c| c.ends_with("_enc")))
            .copied()
            .collect();
        must.sort_unstable();
        let mut erased = PERSONAL_COLUMNS.to_vec();
        erased.sort_unstable();
        assert_eq!(erased, must);
    }

    #[test]
    fn only_requests_of_stored_leads_are_blanked_orphans_close_after_a_day() {
        let sql = pending_stored_sql(100_000);
        // Pending: a withdraw or erase later than the last erasure.
        assert!(sql.contains("HAVING maxIf(ts, action != 'erased') > maxIf(ts, action = 'erased')"));
        // Only those whose lead is stored take a place (of the pending
        // rooms' leads, read once), oldest first.
        assert!(sql.contains(
            "WHERE (room_id, viewer_id, client_lead_id) GLOBAL IN (SELECT room_id, viewer_id, client_lead_id FROM leads WHERE room_id GLOBAL IN (SELECT room_id FROM (SELECT"
        ));
        assert!(sql.contains("ORDER BY first_ms"));
        assert!(sql.ends_with(&format!("LIMIT {MAX_PENDING}")));
        let o = orphans_sql(86_400_000, 10);
        assert!(o.contains("WHERE first_ms < 86400000 AND (room_id, viewer_id, client_lead_id) GLOBAL NOT IN (SELECT"));
        assert!(o.ends_with("LIMIT 10"));
    }

    #[test]
    fn an_erased_mark_comes_after_its_request_whatever_the_clock() {
        let p = Pending {
            room_id: 1,
            viewer_id: 2,
            client_lead_id: 3,
            first_ms: 50,
            last_ms: 900,
        };
        let rows = erased_rows(&[p], 7, "node-a");
        assert_eq!(rows[0].action, "erased");
        assert_eq!(rows[0].source, "engine");
        assert_eq!((rows[0].room_id, rows[0].client_lead_id), (1, 3));
        // This node's clock (7) is behind the request's (900).
        assert_eq!(rows[0].ts, 901);
        assert_eq!(erased_rows(&[p], 5_000, "n")[0].ts, 5_000);
    }
}

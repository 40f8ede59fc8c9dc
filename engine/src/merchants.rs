//! Rooms belong to merchants: the room → merchant mapping, kept in
//! ClickHouse (`room_merchants`, migration 8), set through the admin API
//! (`/admin/rooms/{room}/merchant`) and by `[[rooms]] merchant` keys at
//! start, read by the merchants' row policies ([`crate::access`]) and,
//! later, by lead delivery and dashboards.
//!
//! Writes go straight to ClickHouse: a call that cannot reach it fails and
//! the caller retries (a change is idempotent). The `[[rooms]]` keys are
//! written in the background once the schema is current, retried every
//! 5 s while ClickHouse is down. [`MerchantId`] and [`changes`] are pure.

use std::collections::HashMap;
use std::time::Duration;

use clickhouse::{Client, Row};
use serde::Deserialize;
use tokio::sync::watch;

/// Longest merchant id.
pub const MAX_LEN: usize = 64;

/// A merchant id: 1–64 characters of `[a-z0-9_-]`, so it is safe in SQL
/// literals, ClickHouse user names (`merchant_<id>`) and XML element names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MerchantId(String);

impl MerchantId {
    /// Check `s`.
    pub fn parse(s: &str) -> Result<Self, MerchantError> {
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
        if s.is_empty() || s.len() > MAX_LEN || !s.chars().all(ok) {
            return Err(MerchantError::Invalid(s.chars().take(80).collect()));
        }
        Ok(MerchantId(s.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MerchantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a mapping call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MerchantError {
    /// Not a valid merchant id.
    #[error("invalid merchant id {0:?}: 1-64 characters of a-z, 0-9, '_' and '-'")]
    Invalid(String),
    /// ClickHouse refused or could not be reached.
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// ClickHouse did not answer in time (the change may or may not be
    /// stored).
    #[error("clickhouse did not answer within {0} s")]
    Timeout(u64),
}

/// A room's current merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The merchant.
    pub merchant: MerchantId,
    /// When it was set (ClickHouse's clock), Unix ms.
    pub updated_at_ms: i64,
}

/// The rows to write so that every room of `wanted` has its merchant,
/// given the rooms' `current` merchants (a room missing there has none).
/// Rooms already right are left alone, so a restart does not add rows.
pub fn changes<'a>(
    wanted: &'a [(u64, MerchantId)],
    current: &HashMap<u64, String>,
) -> Vec<(u64, &'a MerchantId)> {
    let mut out: Vec<(u64, &MerchantId)> = wanted
        .iter()
        .filter(|(room, m)| current.get(room).map(String::as_str) != Some(m.as_str()))
        .map(|(room, m)| (*room, m))
        .collect();
    out.sort_by_key(|(room, _)| *room);
    out.dedup_by_key(|(room, _)| *room);
    out
}

#[derive(Row, Deserialize)]
struct Current {
    room_id: u64,
    merchant_id: String,
    updated_at_ms: i64,
}

/// The mapping in ClickHouse (through the engine's client: its database,
/// and on a cluster the `Distributed` table with foreground inserts).
#[derive(Debug, Clone)]
pub struct MerchantStore {
    client: Client,
    timeout: Duration,
}

impl MerchantStore {
    /// A store that gives each call `timeout`.
    pub fn new(client: Client, timeout: Duration) -> Self {
        MerchantStore { client, timeout }
    }

    async fn within<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
    ) -> Result<T, MerchantError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(MerchantError::Timeout(self.timeout.as_secs())),
        }
    }

    /// The current merchants of `rooms` (rooms without one are absent).
    pub async fn current(&self, rooms: &[u64]) -> Result<HashMap<u64, Assignment>, MerchantError> {
        if rooms.is_empty() {
            return Ok(HashMap::new());
        }
        let list = rooms
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        // FINAL, as the merchants' row policies read it (the last insert
        // wins a tie on updated_at).
        let sql = format!(
            "SELECT room_id, merchant_id, toUnixTimestamp64Milli(updated_at) AS updated_at_ms \
             FROM room_merchants FINAL WHERE room_id IN ({list})"
        );
        let rows = self
            .within(self.client.query(&sql).fetch_all::<Current>())
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let merchant = MerchantId::parse(&r.merchant_id).ok()?;
                Some((
                    r.room_id,
                    Assignment {
                        merchant,
                        updated_at_ms: r.updated_at_ms,
                    },
                ))
            })
            .collect())
    }

    /// `room`'s merchant, if it has one.
    pub async fn get(&self, room: u64) -> Result<Option<Assignment>, MerchantError> {
        Ok(self.current(&[room]).await?.remove(&room))
    }

    /// Give `rooms` their merchants (`None`: no merchant), in one insert.
    pub async fn set(&self, rooms: &[(u64, Option<&MerchantId>)]) -> Result<(), MerchantError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let values = rooms
            .iter()
            .map(|(room, m)| format!("({room}, '{}', now64(3))", m.map_or("", |m| m.as_str())))
            .collect::<Vec<_>>()
            .join(", ");
        // Ids are [a-z0-9_-]: safe as literals.
        let sql = format!(
            "INSERT INTO room_merchants (room_id, merchant_id, updated_at) VALUES {values}"
        );
        self.within(self.client.query(&sql).execute()).await
    }

    /// Write what `wanted` changes ([`changes`]); the number of rooms
    /// written.
    pub async fn upsert(&self, wanted: &[(u64, MerchantId)]) -> Result<usize, MerchantError> {
        let rooms: Vec<u64> = wanted.iter().map(|(r, _)| *r).collect();
        let current: HashMap<u64, String> = self
            .current(&rooms)
            .await?
            .into_iter()
            .map(|(r, a)| (r, a.merchant.0))
            .collect();
        let todo = changes(wanted, &current);
        let rows: Vec<(u64, Option<&MerchantId>)> =
            todo.iter().map(|(r, m)| (*r, Some(*m))).collect();
        self.set(&rows).await?;
        Ok(rows.len())
    }
}

/// Write the `[[rooms]]` merchant keys once the schema is current,
/// retrying every 5 s while ClickHouse fails, until done or shutdown.
pub async fn upsert_in_background(
    store: MerchantStore,
    wanted: Vec<(u64, MerchantId)>,
    mut schema: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    if wanted.is_empty() {
        return;
    }
    loop {
        tokio::select! {
            r = schema.wait_for(|ready| *ready) => if r.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        match store.upsert(&wanted).await {
            Ok(n) => {
                tracing::info!(
                    rooms = wanted.len(),
                    written = n,
                    "[[rooms]] merchants stored"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot store the [[rooms]] merchants; retrying in 5 s");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_lowercase_and_safe() {
        for ok in ["m1", "acme_photo-2", &"a".repeat(64), "0"] {
            assert_eq!(MerchantId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "M1",
            "m 1",
            "m'1",
            "m1;DROP",
            "商户",
            &"a".repeat(65),
            "m.1",
            "<m>",
        ] {
            assert!(MerchantId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_rooms_whose_merchant_differs_are_written() {
        let m = |s: &str| MerchantId::parse(s).unwrap();
        let wanted = vec![(3, m("b")), (1, m("a")), (2, m("a")), (1, m("a"))];
        let current: HashMap<u64, String> = [(1, "a".to_owned()), (2, "x".to_owned())]
            .into_iter()
            .collect();
        let got: Vec<(u64, &str)> = changes(&wanted, &current)
            .into_iter()
            .map(|(r, m)| (r, m.as_str()))
            .collect();
        assert_eq!(got, [(2, "a"), (3, "b")]);
        assert!(changes(&wanted[1..2], &current).is_empty());
    }
}

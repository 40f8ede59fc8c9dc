//! Versioned schema migrations, applied idempotently.
//!
//! The SQL lives in `schemas/NNN_name.sql` and is compiled into the binary.
//! Applied versions are recorded in `<db>.schema_migrations`; every statement
//! is itself idempotent (`IF NOT EXISTS`), so an interrupted run is simply
//! run again.

use clickhouse::{Client, Row};
use serde::Deserialize;

/// A migration: version, name, SQL with `{db}` placeholders.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "init", include_str!("../../../schemas/001_init.sql")),
    (
        2,
        "room_minute",
        include_str!("../../../schemas/002_room_minute.sql"),
    ),
    (
        3,
        "lead_reason",
        include_str!("../../../schemas/003_lead_reason.sql"),
    ),
    (
        4,
        "leads_unique",
        include_str!("../../../schemas/004_leads_unique.sql"),
    ),
    (
        5,
        "pii_key_id",
        include_str!("../../../schemas/005_pii_key_id.sql"),
    ),
    (
        6,
        "moderation_count",
        include_str!("../../../schemas/006_moderation_count.sql"),
    ),
];

/// Split a migration file into statements (`;` at end of line; `--` comments
/// dropped).
pub fn statements(sql: &str, db: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if trimmed.ends_with(';') {
            let stmt = cur.trim().trim_end_matches(';').replace("{db}", db);
            out.push(stmt);
            cur.clear();
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().replace("{db}", db));
    }
    out
}

#[derive(Row, Deserialize)]
struct Applied {
    version: u32,
}

/// Create the database if needed and apply every pending migration.
/// Returns the versions applied by this call.
pub async fn migrate(client: &Client, db: &str) -> Result<Vec<u32>, clickhouse::error::Error> {
    // The client may carry a default database that does not exist yet.
    let root = client.clone().with_database("default");
    root.query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .execute()
        .await?;
    root.query(&format!(
        "CREATE TABLE IF NOT EXISTS {db}.schema_migrations \
         (version UInt32, name String, applied_at DateTime DEFAULT now()) \
         ENGINE = ReplacingMergeTree ORDER BY version"
    ))
    .execute()
    .await?;
    let applied: Vec<u32> = root
        .query(&format!("SELECT version FROM {db}.schema_migrations FINAL"))
        .fetch_all::<Applied>()
        .await?
        .into_iter()
        .map(|a| a.version)
        .collect();
    let mut done = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        for stmt in statements(sql, db) {
            root.query(&stmt).execute().await?;
        }
        root.query(&format!(
            "INSERT INTO {db}.schema_migrations (version, name) VALUES ({version}, '{name}')"
        ))
        .execute()
        .await?;
        tracing::info!(version, name, "migration applied");
        done.push(*version);
    }
    Ok(done)
}

/// Columns holding free text a viewer typed (masked of contacts, but still
/// personal), which expire after `clickhouse.text_ttl_days`.
pub const TEXT_COLUMNS: &[(&str, &str)] =
    &[("chat_messages", "text"), ("moderation_events", "detail")];

#[derive(Row, Deserialize)]
struct CreateQuery {
    create_table_query: String,
}

/// The column TTL clause for `days` (`None` = keep forever).
pub fn text_ttl(days: u32) -> Option<String> {
    (days > 0).then(|| format!("TTL toDateTime(ts) + toIntervalDay({days})"))
}

/// What to change on `column` of a table whose `CREATE` query is `create`
/// so its TTL matches `days`; `None` when it already does.
pub fn retention_change(create: &str, column: &str, days: u32) -> Option<String> {
    let def = create
        .find(&format!("`{column}` "))
        .map(|at| &create[at..])
        .map(|d| {
            &d[..d
                .find(", `")
                .or_else(|| d.find(") ENGINE"))
                .unwrap_or(d.len())]
        })
        .unwrap_or("");
    match text_ttl(days) {
        Some(ttl) if !def.contains(&ttl) => Some(format!("MODIFY COLUMN {column} {ttl}")),
        None if def.contains(" TTL ") => Some(format!("MODIFY COLUMN {column} REMOVE TTL")),
        _ => None,
    }
}

/// Make the free-text columns expire after `days` (0 = never), changing
/// only what differs: a changed TTL is applied to existing parts by
/// ClickHouse (a mutation), so it is not re-applied at every start.
pub async fn apply_retention(
    client: &Client,
    db: &str,
    days: u32,
) -> Result<(), clickhouse::error::Error> {
    let root = client.clone().with_database("default");
    for (table, column) in TEXT_COLUMNS {
        let create = root
            .query("SELECT create_table_query FROM system.tables WHERE database = ? AND name = ?")
            .bind(db)
            .bind(*table)
            .fetch_one::<CreateQuery>()
            .await?
            .create_table_query;
        if let Some(change) = retention_change(&create, column, days) {
            root.query(&format!("ALTER TABLE {db}.{table} {change}"))
                .execute()
                .await?;
            tracing::info!(table, column, days, "text retention changed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_changes_only_what_differs() {
        let bare = "CREATE TABLE d.c (`ts` DateTime64(3), `text` String CODEC(ZSTD(1)), `verdict` String) ENGINE = MergeTree ORDER BY ts";
        let with = "CREATE TABLE d.c (`ts` DateTime64(3), `text` String CODEC(ZSTD(1)) TTL toDateTime(ts) + toIntervalDay(30), `verdict` String) ENGINE = MergeTree ORDER BY ts";
        let last = "CREATE TABLE d.m (`ts` DateTime64(3), `detail` String CODEC(ZSTD(1)) TTL toDateTime(ts) + toIntervalDay(30)) ENGINE = MergeTree ORDER BY ts";
        assert_eq!(
            retention_change(bare, "text", 30).as_deref(),
            Some("MODIFY COLUMN text TTL toDateTime(ts) + toIntervalDay(30)")
        );
        assert_eq!(retention_change(with, "text", 30), None);
        assert_eq!(retention_change(last, "detail", 30), None);
        assert_eq!(
            retention_change(with, "text", 7).as_deref(),
            Some("MODIFY COLUMN text TTL toDateTime(ts) + toIntervalDay(7)")
        );
        assert_eq!(
            retention_change(with, "text", 0).as_deref(),
            Some("MODIFY COLUMN text REMOVE TTL")
        );
        assert_eq!(retention_change(bare, "text", 0), None);
    }

    #[test]
    fn every_migration_splits_into_idempotent_statements() {
        for (_, _, sql) in MIGRATIONS {
            let stmts = statements(sql, "rg_test");
            assert!(!stmts.is_empty());
            for s in stmts {
                assert!(
                    s.starts_with("CREATE ")
                        || s.starts_with("ALTER TABLE ")
                        || s.starts_with("DROP VIEW IF EXISTS "),
                    "{s}"
                );
                assert!(
                    s.contains("IF NOT EXISTS") || s.starts_with("DROP VIEW IF EXISTS "),
                    "not idempotent: {s}"
                );
                assert!(!s.contains("{db}"));
                assert!(!s.ends_with(';'));
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_splits_into_idempotent_statements() {
        for (_, _, sql) in MIGRATIONS {
            let stmts = statements(sql, "rg_test");
            assert!(!stmts.is_empty());
            for s in stmts {
                assert!(
                    s.starts_with("CREATE ") || s.starts_with("ALTER TABLE "),
                    "{s}"
                );
                assert!(s.contains("IF NOT EXISTS"), "not idempotent: {s}");
                assert!(!s.contains("{db}"));
                assert!(!s.ends_with(';'));
            }
        }
    }
}

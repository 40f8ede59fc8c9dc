//! Versioned schema migrations, applied idempotently.
//!
//! The SQL lives in `schemas/NNN_name.sql` and is compiled into the binary.
//! Applied versions are recorded in `<db>.schema_migrations`; every statement
//! is itself idempotent (`IF NOT EXISTS`), so an interrupted run is simply
//! run again.
//!
//! On a sharded cluster (`clickhouse.cluster`) the same files are rewritten
//! statement by statement ([`cluster_statements`]): each table becomes a
//! `<name>_local` table on every node plus a `Distributed` table under the
//! original name, materialized views read and write the local tables, and
//! the production variant adds `ReplicatedMergeTree` engines and `ON
//! CLUSTER` (schemas/README.md, "Cluster layout").

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
    (
        7,
        "lead_facts",
        include_str!("../../../schemas/007_lead_facts.sql"),
    ),
    (
        8,
        "room_merchants",
        include_str!("../../../schemas/008_room_merchants.sql"),
    ),
    (
        9,
        "lead_audit",
        include_str!("../../../schemas/009_lead_audit.sql"),
    ),
    (
        10,
        "consent_withdrawals",
        include_str!("../../../schemas/010_consent_withdrawals.sql"),
    ),
    (
        11,
        "webhooks",
        include_str!("../../../schemas/011_webhooks.sql"),
    ),
    (
        12,
        "lead_inserted_at",
        include_str!("../../../schemas/012_lead_inserted_at.sql"),
    ),
];

/// Split a migration file into statements (`;` at end of line; `--` comments
/// dropped).
pub fn statements(sql: &str, db: &str) -> Vec<String> {
    split(sql)
        .into_iter()
        .map(|s| s.replace("{db}", db))
        .collect()
}

/// The statements of a migration file, `{db}` left in place.
fn split(sql: &str) -> Vec<String> {
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
            out.push(cur.trim().trim_end_matches(';').to_owned());
            cur.clear();
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// Where the schema lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One server: the migration files as they are.
    Single,
    /// A sharded cluster: local tables on every node, `Distributed` tables
    /// in front of them.
    Cluster(ClusterDdl),
}

/// How the cluster variant of the schema is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDdl {
    /// Cluster name, as in the servers' `<remote_servers>`.
    pub name: String,
    /// `Replicated*MergeTree` local tables (Keeper paths with the `{shard}`
    /// and `{replica}` macros) instead of plain `*MergeTree`.
    pub replicated: bool,
    /// Every statement carries `ON CLUSTER '<name>'` and is sent once (to
    /// `clickhouse.url`), instead of being sent to each node.
    pub on_cluster: bool,
}

/// Suffix of the per-node table behind each `Distributed` table.
pub const LOCAL_SUFFIX: &str = "_local";

/// The sharding key of every `Distributed` table: all rows of a room on one
/// shard, so per-room queries and the per-room rollups stay shard-local.
pub const SHARDING_KEY: &str = "cityHash64(room_id)";

/// A statement the cluster rewriter does not know how to translate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot write the cluster variant of: {0}")]
pub struct RewriteError(pub String);

/// ClickHouse's `cityHash64(room_id)` of a `UInt64`: for one integer
/// argument it is `intHash64` (a 64-bit mix of the value xor a constant),
/// not CityHash of its bytes.
pub fn room_hash(room_id: u64) -> u64 {
    let mut x = room_id ^ 0x4cf2_d2ba_ae6d_a887;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// The shard (0-based; `_shard_num` - 1) holding `room_id`'s rows on a
/// cluster of `shards` shards of equal weight, as the `Distributed` tables
/// place them: `cityHash64(room_id) % shards`.
pub fn shard_of_room(room_id: u64, shards: u64) -> u64 {
    room_hash(room_id) % shards.max(1)
}

/// The tables the migrations create with `CREATE TABLE` (the sharded ones
/// on a cluster), in creation order.
pub fn sharded_tables() -> Vec<String> {
    MIGRATIONS
        .iter()
        .flat_map(|(_, _, sql)| split(sql))
        .filter_map(|s| {
            s.strip_prefix("CREATE TABLE IF NOT EXISTS {db}.")
                .map(|rest| ident(rest).to_owned())
        })
        .collect()
}

/// The leading identifier of `s` (`[A-Za-z0-9_]*`).
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// ` ON CLUSTER '<name>'` when the DDL is sent once for the whole cluster.
fn on_cluster(c: &ClusterDdl) -> String {
    if c.on_cluster {
        format!(" ON CLUSTER '{}'", c.name)
    } else {
        String::new()
    }
}

/// Replace every `{db}.<t>` whose `<t>` is one of `tables` (whole
/// identifiers only) by `{db}.<t>_local`.
fn to_local(stmt: &str, tables: &[String]) -> String {
    const DB: &str = "{db}.";
    let mut out = String::with_capacity(stmt.len() + 32);
    let mut rest = stmt;
    while let Some(at) = rest.find(DB) {
        let (head, tail) = rest.split_at(at + DB.len());
        out.push_str(head);
        let name = ident(tail);
        out.push_str(name);
        if tables.iter().any(|t| t == name) {
            out.push_str(LOCAL_SUFFIX);
        }
        rest = &tail[name.len()..];
    }
    out.push_str(rest);
    out
}

/// `stmt` with `extra` inserted right after the `{db}.<name>` that follows
/// `prefix` (where `ON CLUSTER` goes in `CREATE` and `DROP`).
fn after_name(stmt: &str, prefix: &str, extra: &str) -> Option<String> {
    let rest = stmt.strip_prefix(prefix)?.strip_prefix("{db}.")?;
    let name = ident(rest);
    if name.is_empty() {
        return None;
    }
    let at = prefix.len() + "{db}.".len() + name.len();
    Some(format!("{}{extra}{}", &stmt[..at], &stmt[at..]))
}

/// The local table's engine: `E` or `E(args)` as written, or its
/// `Replicated` form with the Keeper path and replica name first.
fn local_engine(engine: &str, table: &str, replicated: bool) -> Result<String, RewriteError> {
    if !replicated {
        return Ok(engine.to_owned());
    }
    let name = ident(engine);
    if !name.ends_with("MergeTree") || name.starts_with("Replicated") {
        return Err(RewriteError(format!("engine {engine}")));
    }
    let args = engine[name.len()..].trim();
    let args = match args.strip_prefix('(').and_then(|a| a.strip_suffix(')')) {
        Some(a) if !a.trim().is_empty() => format!(", {}", a.trim()),
        Some(_) => String::new(),
        None if args.is_empty() => String::new(),
        None => return Err(RewriteError(format!("engine {engine}"))),
    };
    Ok(format!(
        "Replicated{name}('/clickhouse/tables/{{shard}}/{{db}}/{table}{LOCAL_SUFFIX}', '{{replica}}'{args})"
    ))
}

/// The cluster variant of one migration statement (`{db}` not yet
/// replaced); `tables` are the sharded tables ([`sharded_tables`]).
///
/// - `CREATE TABLE {db}.t (…) ENGINE = E …` → `{db}.t_local` with the same
///   columns and clauses (engine `Replicated…` when replicated), then
///   `{db}.t AS {db}.t_local ENGINE = Distributed(cluster, db, t_local,
///   cityHash64(room_id))`.
/// - `CREATE MATERIALIZED VIEW`: every sharded table it names becomes its
///   local table (a view per node, over the node's own rows).
/// - `CREATE VIEW`: unchanged (it reads the `Distributed` tables).
/// - `ALTER TABLE {db}.t ADD|DROP|RENAME|COMMENT COLUMN …` and `MODIFY
///   COLUMN` of a type: the local table, then the `Distributed` one; any
///   other `ALTER` (TTL, codec, settings) the local table only.
/// - `DROP VIEW`: unchanged.
///
/// Each gets `ON CLUSTER` when [`ClusterDdl::on_cluster`].
pub fn cluster_statements(
    stmt: &str,
    c: &ClusterDdl,
    tables: &[String],
) -> Result<Vec<String>, RewriteError> {
    let oc = on_cluster(c);
    let unknown = || RewriteError(stmt.lines().next().unwrap_or(stmt).to_owned());
    const TABLE: &str = "CREATE TABLE IF NOT EXISTS ";
    const MV: &str = "CREATE MATERIALIZED VIEW IF NOT EXISTS ";
    const VIEW: &str = "CREATE VIEW IF NOT EXISTS ";
    const ALTER: &str = "ALTER TABLE ";
    const DROP_VIEW: &str = "DROP VIEW IF EXISTS ";
    if let Some(rest) = stmt.strip_prefix(TABLE) {
        let name = ident(rest.strip_prefix("{db}.").ok_or_else(unknown)?);
        let at = stmt.find("ENGINE = ").ok_or_else(unknown)?;
        let columns = &stmt[TABLE.len() + "{db}.".len() + name.len()..at];
        if !columns.contains("room_id ") {
            return Err(RewriteError(format!("{name} has no room_id to shard by")));
        }
        let engine_at = at + "ENGINE = ".len();
        let engine_end = engine_end(&stmt[engine_at..]).ok_or_else(unknown)? + engine_at;
        let engine = local_engine(&stmt[engine_at..engine_end], name, c.replicated)?;
        let local = format!(
            "{TABLE}{{db}}.{name}{LOCAL_SUFFIX}{oc}{columns}ENGINE = {engine}{}",
            &stmt[engine_end..]
        );
        let distributed = format!(
            "{TABLE}{{db}}.{name}{oc} AS {{db}}.{name}{LOCAL_SUFFIX} \
             ENGINE = Distributed('{}', '{{db}}', '{name}{LOCAL_SUFFIX}', {SHARDING_KEY})",
            c.name
        );
        return Ok(vec![local, distributed]);
    }
    if stmt.starts_with(MV) {
        let s = after_name(stmt, MV, &oc).ok_or_else(unknown)?;
        return Ok(vec![to_local(&s, tables)]);
    }
    for prefix in [VIEW, DROP_VIEW] {
        if stmt.starts_with(prefix) {
            return Ok(vec![after_name(stmt, prefix, &oc).ok_or_else(unknown)?]);
        }
    }
    if let Some(rest) = stmt.strip_prefix(ALTER) {
        let name = ident(rest.strip_prefix("{db}.").ok_or_else(unknown)?);
        if !tables.iter().any(|t| t == name) {
            return Err(unknown());
        }
        let local = after_name(&to_local(stmt, tables), ALTER, &oc).ok_or_else(unknown)?;
        let action = rest["{db}.".len() + name.len()..].trim_start();
        // Columns are the Distributed table's too; TTLs, codecs and
        // settings are storage, which only the local table has.
        let column = [
            "ADD COLUMN ",
            "DROP COLUMN ",
            "RENAME COLUMN ",
            "COMMENT COLUMN ",
        ]
        .iter()
        .any(|a| action.starts_with(a));
        let column_type = action.starts_with("MODIFY COLUMN ")
            && !["TTL ", "CODEC(", "REMOVE "]
                .iter()
                .any(|a| action.contains(a));
        let both = column || column_type;
        if !both {
            return Ok(vec![local]);
        }
        let distributed = after_name(stmt, ALTER, &oc).ok_or_else(unknown)?;
        return Ok(vec![local, distributed]);
    }
    Err(unknown())
}

/// Length of the engine clause at the start of `s`: its name and, if
/// present, its balanced `(…)` arguments.
fn engine_end(s: &str) -> Option<usize> {
    let name = ident(s).len();
    if name == 0 {
        return None;
    }
    if !s[name..].starts_with('(') {
        return Some(name);
    }
    let mut depth = 0usize;
    for (i, ch) in s[name..].char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(name + i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// One migration as it will be run: version, name, statements with the
/// database name filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Version (`schema_migrations.version`).
    pub version: u32,
    /// Name (`schema_migrations.name`).
    pub name: &'static str,
    /// Statements, in order.
    pub statements: Vec<String>,
}

/// Every migration for `layout` and `db`, in version order.
pub fn plan(layout: &Layout, db: &str) -> Result<Vec<Planned>, RewriteError> {
    if let Layout::Cluster(c) = layout {
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if c.name.is_empty() || !c.name.chars().all(ok) {
            return Err(RewriteError(format!("cluster name {:?}", c.name)));
        }
    }
    let tables = sharded_tables();
    MIGRATIONS
        .iter()
        .map(|(version, name, sql)| {
            let statements = match layout {
                Layout::Single => statements(sql, db),
                Layout::Cluster(c) => {
                    let mut out = Vec::new();
                    for stmt in split(sql) {
                        out.extend(cluster_statements(&stmt, c, &tables)?);
                    }
                    out.into_iter().map(|s| s.replace("{db}", db)).collect()
                }
            };
            Ok(Planned {
                version: *version,
                name,
                statements,
            })
        })
        .collect()
}

/// What runs before the migrations: the database and the table recording
/// them (one per node on a cluster: each node records what it has run).
pub fn setup_statements(layout: &Layout, db: &str) -> [String; 2] {
    let oc = match layout {
        Layout::Single => String::new(),
        Layout::Cluster(c) => on_cluster(c),
    };
    [
        format!("CREATE DATABASE IF NOT EXISTS {db}{oc}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations{oc} \
             (version UInt32, name String, applied_at DateTime DEFAULT now()) \
             ENGINE = ReplacingMergeTree ORDER BY version"
        ),
    ]
}

#[derive(Row, Deserialize)]
struct Applied {
    version: u32,
}

/// Create the database if needed and apply every pending migration.
/// Returns the versions applied by this call.
pub async fn migrate(client: &Client, db: &str) -> Result<Vec<u32>, clickhouse::error::Error> {
    migrate_layout(client, db, &Layout::Single).await
}

/// [`migrate`] for `layout`, on the server `client` talks to. On a cluster
/// without `ON CLUSTER`, call it once per node; with it, once.
pub async fn migrate_layout(
    client: &Client,
    db: &str,
    layout: &Layout,
) -> Result<Vec<u32>, clickhouse::error::Error> {
    let plan = plan(layout, db).map_err(|e| clickhouse::error::Error::Custom(e.to_string()))?;
    // The client may carry a default database that does not exist yet.
    let root = client.clone().with_database("default");
    let read_applied = || async {
        let rows = root
            .query(&format!("SELECT version FROM {db}.schema_migrations FINAL"))
            .fetch_all::<Applied>()
            .await?;
        Ok::<Vec<u32>, clickhouse::error::Error>(rows.into_iter().map(|a| a.version).collect())
    };
    // Schema already current: nothing to create. A user without DDL
    // rights (the engine's writer, docs/ACCESS.md) gets this far too.
    if let Ok(applied) = read_applied().await {
        if plan.iter().all(|p| applied.contains(&p.version)) {
            return Ok(Vec::new());
        }
    }
    for stmt in setup_statements(layout, db) {
        root.query(&stmt).execute().await?;
    }
    let applied = read_applied().await?;
    let mut done = Vec::new();
    for Planned {
        version,
        name,
        statements,
    } in plan
    {
        if applied.contains(&version) {
            continue;
        }
        for stmt in statements {
            root.query(&stmt).execute().await?;
        }
        root.query(&format!(
            "INSERT INTO {db}.schema_migrations (version, name) VALUES ({version}, '{name}')"
        ))
        .execute()
        .await?;
        tracing::info!(version, name, "migration applied");
        done.push(version);
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
    apply_retention_layout(client, db, days, &Layout::Single).await
}

/// [`apply_retention`] for `layout`: on a cluster the TTL belongs to the
/// local tables (a `Distributed` table has none), on the node `client`
/// talks to (or, with `ON CLUSTER`, on every node).
pub async fn apply_retention_layout(
    client: &Client,
    db: &str,
    days: u32,
    layout: &Layout,
) -> Result<(), clickhouse::error::Error> {
    let root = client.clone().with_database("default");
    let (suffix, oc) = match layout {
        Layout::Single => ("", String::new()),
        Layout::Cluster(c) => (LOCAL_SUFFIX, on_cluster(c)),
    };
    for (table, column) in TEXT_COLUMNS {
        let table = format!("{table}{suffix}");
        let create = root
            .query("SELECT create_table_query FROM system.tables WHERE database = ? AND name = ?")
            .bind(db)
            .bind(&table)
            .fetch_one::<CreateQuery>()
            .await?
            .create_table_query;
        if let Some(change) = retention_change(&create, column, days) {
            root.query(&format!("ALTER TABLE {db}.{table}{oc} {change}"))
                .execute()
                .await?;
            tracing::info!(%table, column, days, "text retention changed");
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

    fn ddl(replicated: bool, on_cluster: bool) -> Layout {
        Layout::Cluster(ClusterDdl {
            name: "rg".into(),
            replicated,
            on_cluster,
        })
    }

    fn all(layout: &Layout) -> Vec<String> {
        let mut out = setup_statements(layout, "db").to_vec();
        for m in plan(layout, "db").unwrap() {
            out.extend(m.statements);
        }
        out
    }

    #[test]
    fn the_single_layout_is_the_files_as_they_are() {
        let planned = plan(&Layout::Single, "db").unwrap();
        assert_eq!(planned.len(), MIGRATIONS.len());
        for (p, (version, name, sql)) in planned.iter().zip(MIGRATIONS) {
            assert_eq!((p.version, p.name), (*version, *name));
            assert_eq!(p.statements, statements(sql, "db"));
        }
        assert_eq!(
            setup_statements(&Layout::Single, "db")[0],
            "CREATE DATABASE IF NOT EXISTS db"
        );
    }

    #[test]
    fn every_table_gets_a_local_table_and_a_distributed_one() {
        let tables = sharded_tables();
        assert_eq!(
            tables,
            [
                "chat_messages",
                "like_ticks",
                "leads",
                "sessions",
                "moderation_events",
                "room_minute",
                "lead_facts",
                "room_merchants",
                "lead_audit",
                "lead_withdrawals",
                "like_viewers",
                "webhook_cursors",
                "webhook_backlog"
            ]
        );
        let stmts = all(&ddl(false, false));
        for t in &tables {
            let local = format!("CREATE TABLE IF NOT EXISTS db.{t}_local\n(");
            let at = stmts.iter().position(|s| s.starts_with(&local)).unwrap();
            assert_eq!(
                stmts[at + 1],
                format!(
                    "CREATE TABLE IF NOT EXISTS db.{t} AS db.{t}_local ENGINE = \
                     Distributed('rg', 'db', '{t}_local', cityHash64(room_id))"
                )
            );
        }
        let chat = stmts
            .iter()
            .find(|s| s.starts_with("CREATE TABLE IF NOT EXISTS db.chat_messages_local"))
            .unwrap();
        assert!(chat.ends_with(
            ")\nENGINE = MergeTree\nPARTITION BY toYYYYMMDD(ts)\nORDER BY (room_id, ts, viewer_id)\n\
             SETTINGS non_replicated_deduplication_window = 1000"
        ));
        assert!(chat.contains("    text             String CODEC(ZSTD),\n"));
    }

    #[test]
    fn views_and_alters_are_placed_per_node() {
        let stmts = all(&ddl(false, false));
        // A materialized view runs on each node, over its local rows.
        let mv = stmts
            .iter()
            .find(|s| s.contains("room_minute_chat_mv"))
            .unwrap();
        assert!(mv.starts_with(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS db.room_minute_chat_mv TO db.room_minute_local AS"
        ));
        assert!(mv.contains("FROM db.chat_messages_local GROUP BY"), "{mv}");
        // Other views read the whole cluster.
        let view = stmts.iter().find(|s| s.contains("leads_unique")).unwrap();
        assert!(view.contains("FROM db.leads\n"), "{view}");
        // A column goes to the local table first, then the Distributed one.
        let at = stmts
            .iter()
            .position(|s| {
                s.starts_with("ALTER TABLE db.leads_local ADD COLUMN IF NOT EXISTS reason")
            })
            .unwrap();
        assert!(stmts[at + 1].starts_with("ALTER TABLE db.leads ADD COLUMN IF NOT EXISTS reason"));
        assert!(stmts.contains(&"DROP VIEW IF EXISTS db.room_minute_moderation_mv".to_owned()));
        for s in &stmts {
            assert!(!s.contains("{db}") && !s.contains("ON CLUSTER"), "{s}");
            assert!(!s.contains("_local_local"), "{s}");
        }
    }

    #[test]
    fn the_production_variant_is_replicated_and_on_cluster() {
        let stmts = all(&ddl(true, true));
        let likes = stmts
            .iter()
            .find(|s| s.starts_with("CREATE TABLE IF NOT EXISTS db.like_ticks_local"))
            .unwrap();
        assert!(
            likes.starts_with("CREATE TABLE IF NOT EXISTS db.like_ticks_local ON CLUSTER 'rg'\n(")
        );
        assert!(likes.contains(
            "ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/db/like_ticks_local', '{replica}', taps)\n"
        ));
        let leads = stmts
            .iter()
            .find(|s| s.starts_with("CREATE TABLE IF NOT EXISTS db.leads_local"))
            .unwrap();
        assert!(leads.contains(
            "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db/leads_local', '{replica}')\n"
        ));
        for s in &stmts {
            assert!(s.contains(" ON CLUSTER 'rg'"), "{s}");
            assert!(
                !s.contains("ENGINE = MergeTree") && !s.contains("ENGINE = Summing"),
                "{s}"
            );
        }
        // Replicated without ON CLUSTER (DDL sent node by node).
        for s in all(&ddl(true, false)) {
            assert!(!s.contains("ON CLUSTER"), "{s}");
        }
    }

    /// The production variant is the tested local variant plus `ON CLUSTER`
    /// and replicated engines, and nothing else.
    #[test]
    fn the_production_variant_differs_only_in_engines_and_on_cluster() {
        fn unreplicate(s: &str) -> String {
            let s = s.replace(" ON CLUSTER 'rg'", "");
            let Some(at) = s.find("ENGINE = Replicated") else {
                return s;
            };
            let engine = &s[at + "ENGINE = Replicated".len()..];
            let name = ident(engine);
            let end = engine_end(engine).unwrap();
            let args = &engine[name.len() + 1..end - 1];
            // Path and replica, then the engine's own arguments.
            let mut parts = args.splitn(3, ", ");
            assert!(parts
                .next()
                .unwrap()
                .starts_with("'/clickhouse/tables/{shard}/db/"));
            assert_eq!(parts.next(), Some("'{replica}'"));
            let own = parts.next().map(|a| format!("({a})")).unwrap_or_default();
            format!("{}ENGINE = {name}{own}{}", &s[..at], &engine[end..])
        }
        for (replicated, on) in [(true, true), (true, false), (false, true)] {
            let prod: Vec<String> = all(&ddl(replicated, on))
                .iter()
                .map(|s| unreplicate(s))
                .collect();
            assert_eq!(
                prod,
                all(&ddl(false, false)),
                "replicated {replicated}, on cluster {on}"
            );
        }
    }

    #[test]
    fn unknown_statements_are_refused_not_guessed() {
        let c = ClusterDdl {
            name: "rg".into(),
            replicated: true,
            on_cluster: false,
        };
        let tables = vec!["t".to_owned()];
        let quoted = Layout::Cluster(ClusterDdl {
            name: "rg' x".into(),
            ..c.clone()
        });
        assert!(plan(&quoted, "db").is_err());
        for bad in [
            "INSERT INTO {db}.t VALUES (1)",
            "CREATE TABLE IF NOT EXISTS {db}.u (a UInt8) ENGINE = MergeTree ORDER BY a",
            "CREATE TABLE IF NOT EXISTS {db}.u (room_id UInt64) ENGINE = Log",
            "ALTER TABLE {db}.other ADD COLUMN IF NOT EXISTS x UInt8",
        ] {
            assert!(cluster_statements(bad, &c, &tables).is_err(), "{bad}");
        }
        // Other ALTERs (TTL, codecs, settings) only make sense on the local
        // table; a column's type is the Distributed table's too.
        for (alter, both) in [
            ("MODIFY TTL toDate(ts) + 1", false),
            (
                "MODIFY COLUMN text TTL toDateTime(ts) + toIntervalDay(7)",
                false,
            ),
            ("MODIFY COLUMN text REMOVE TTL", false),
            ("MODIFY COLUMN text String CODEC(ZSTD(3))", false),
            (
                "MODIFY SETTING non_replicated_deduplication_window = 10",
                false,
            ),
            ("MODIFY COLUMN score UInt16", true),
            ("DROP COLUMN IF EXISTS score", true),
        ] {
            let out = cluster_statements(&format!("ALTER TABLE {{db}}.t {alter}"), &c, &tables);
            let mut want = vec![format!("ALTER TABLE {{db}}.t_local {alter}")];
            if both {
                want.push(format!("ALTER TABLE {{db}}.t {alter}"));
            }
            assert_eq!(out.unwrap(), want);
        }
    }

    #[test]
    fn rooms_hash_to_shards_as_clickhouse_does() {
        // SELECT cityHash64(toUInt64(x)) on ClickHouse 26.9.
        assert_eq!(room_hash(12_345), 16_722_121_143_744_093_920);
        assert_eq!(room_hash(0), 4_761_183_170_873_013_810);
        assert_eq!(room_hash(u64::MAX), 14_600_443_904_207_254_319);
        assert_eq!(shard_of_room(12_345, 2), 16_722_121_143_744_093_920 % 2);
        assert_eq!(shard_of_room(7, 1), 0);
        assert_eq!(shard_of_room(7, 0), 0);
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
                // MODIFY COLUMN and MATERIALIZE COLUMN are idempotent as
                // they are (the same default again; values already stored
                // are not rewritten).
                let idempotent_alter = s.starts_with("ALTER TABLE ")
                    && (s.contains(" MODIFY COLUMN ") || s.contains(" MATERIALIZE COLUMN "));
                assert!(
                    s.contains("IF NOT EXISTS")
                        || s.starts_with("DROP VIEW IF EXISTS ")
                        || idempotent_alter,
                    "not idempotent: {s}"
                );
                assert!(!s.contains("{db}"));
                assert!(!s.ends_with(';'));
            }
        }
    }
}

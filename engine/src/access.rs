//! Who sees what in ClickHouse (sans-IO): roles, users, column grants and
//! row policies, written as SQL for a production server and as the
//! `users.xml` the local chdb server needs, from one [`Plan`]
//! (`roomgate grants`, docs/ACCESS.md).
//!
//! - `roomgate_writer` (user `writer`): the engine. `INSERT` into the
//!   tables it writes, `SELECT` on the columns it reads back
//!   ([`ENGINE_READS`]), and what the materialized views on those tables
//!   read and write (they run with the inserting user's rights); no DDL:
//!   migrations run as `migrator`.
//! - `roomgate_migrator` (user `migrator`): DDL and data on the database.
//! - `roomgate_analyst` (user `analyst`): every room; [`Class::Open`] and
//!   [`Class::Personal`] columns, never [`Class::Sealed`] (ciphertexts,
//!   HMACs).
//! - `roomgate_delivery` (user `delivery`): the merchant API
//!   ([`crate::delivery`]): the lead columns it decrypts
//!   ([`DELIVERY_READS`], ciphertexts included), the mapping, and
//!   `INSERT` into `lead_audit`. The writer never reads ciphertexts.
//! - `roomgate_merchant` (users `merchant_<id>`): [`Class::Open`] columns
//!   of the tables with a `room_id`, and a row policy per user and table:
//!   the rooms `room_merchants` gives the merchant now, so a mapping change
//!   applies to the next query, with no new grants; on tables with a
//!   `merchant_id` (`room_merchants`, `lead_audit`), its own rows.
//!
//! Every column the migrations define ([`crate::sink::schema`]) must be in
//! [`CLASSES`] (a unit test checks it, and [`plan`] refuses otherwise), so
//! a new column cannot reach analysts or merchants unclassified.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::merchants::MerchantId;
use crate::sink::migrate::{self, Layout, LOCAL_SUFFIX};
use crate::sink::schema::{self, SchemaTable};

/// Who may read a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Analysts and merchants (merchants: their rooms' rows).
    Open,
    /// Personal data: analysts, not merchants (merchants get a lead's
    /// contact only through the delivery API).
    Personal,
    /// Ciphertexts and keyed hashes: neither (only the engine and the
    /// migrator).
    Sealed,
}

/// The classes of one table's columns.
#[derive(Debug)]
pub struct TableClasses {
    /// Table.
    pub table: &'static str,
    /// [`Class::Open`] columns.
    pub open: &'static [&'static str],
    /// [`Class::Personal`] columns.
    pub personal: &'static [&'static str],
    /// [`Class::Sealed`] columns.
    pub sealed: &'static [&'static str],
}

/// Every column of every table the migrations create. Views (`SELECT *`
/// of a table) take their table's classes.
pub const CLASSES: &[TableClasses] = &[
    TableClasses {
        table: "chat_messages",
        open: &[
            "room_id",
            "ts",
            "viewer_id",
            "session_id",
            "client_msg_id",
            "verdict",
            "dry_run_reasons",
        ],
        personal: &["text"],
        sealed: &[],
    },
    TableClasses {
        table: "like_ticks",
        open: &["room_id", "ts", "taps"],
        personal: &[],
        sealed: &[],
    },
    TableClasses {
        table: "leads",
        open: &[
            "room_id",
            "ts",
            "viewer_id",
            "session_id",
            "client_lead_id",
            "verdict",
            "reason",
            "score",
            "reasons",
            "dry_run_reasons",
            "pii_key_id",
            "consent",
            "consent_version",
            "fill_ms",
            "inserted_at",
        ],
        personal: &["phone_masked"],
        sealed: &[
            "phone_hmac",
            "phone_enc",
            "wechat_enc",
            "name_enc",
            "fields_enc",
            "ip_hmac",
        ],
    },
    TableClasses {
        table: "sessions",
        open: &[
            "room_id",
            "ts",
            "viewer_id",
            "session_id",
            "event",
            "watch_ms",
            "client",
            "close",
        ],
        personal: &[],
        sealed: &[],
    },
    TableClasses {
        table: "moderation_events",
        open: &[
            "room_id",
            "ts",
            "viewer_id",
            "session_id",
            "kind",
            "client_id",
            "reason",
            "dry_run",
            "count",
        ],
        personal: &["detail"],
        sealed: &[],
    },
    TableClasses {
        table: "room_minute",
        open: &[
            "room_id",
            "minute",
            "joins",
            "leaves",
            "watch_ms",
            "chat_messages",
            "like_taps",
            "leads",
            "leads_accepted",
            "rejects",
        ],
        personal: &[],
        sealed: &[],
    },
    TableClasses {
        table: "lead_facts",
        open: &["minute", "kind", "room_id", "lead_ids", "registered"],
        personal: &[],
        // phone_hmac / ip_hmac values.
        sealed: &["key"],
    },
    TableClasses {
        table: "room_merchants",
        open: &["room_id", "merchant_id", "updated_at"],
        personal: &[],
        sealed: &[],
    },
    TableClasses {
        table: "lead_audit",
        open: &[
            "ts",
            "merchant_id",
            "actor",
            "action",
            "room_id",
            "viewer_id",
            "client_lead_id",
            "detail",
        ],
        personal: &[],
        sealed: &[],
    },
    TableClasses {
        table: "lead_withdrawals",
        open: &[
            "ts",
            "room_id",
            "viewer_id",
            "client_lead_id",
            "action",
            "source",
            "actor",
        ],
        personal: &[],
        sealed: &[],
    },
    TableClasses {
        table: "like_viewers",
        open: &["room_id", "minute", "viewer_id", "taps"],
        personal: &[],
        sealed: &[],
    },
    // Lead keys, positions, states and status codes: no personal data.
    TableClasses {
        table: "webhook_cursors",
        open: crate::delivery::webhook::store::CURSOR_COLUMNS,
        personal: &[],
        sealed: &[],
    },
    TableClasses {
        table: "webhook_backlog",
        open: crate::delivery::webhook::store::BACKLOG_COLUMNS,
        personal: &[],
        sealed: &[],
    },
];

/// The webhook sender's own tables (it runs as `delivery`: it reads the
/// ciphertexts it decrypts): read and written, every column.
pub const WEBHOOK_TABLES: &[(&str, &[&str])] = &[
    (
        crate::delivery::webhook::store::CURSORS_TABLE,
        crate::delivery::webhook::store::CURSOR_COLUMNS,
    ),
    (
        crate::delivery::webhook::store::BACKLOG_TABLE,
        crate::delivery::webhook::store::BACKLOG_COLUMNS,
    ),
];

/// The table every delivery is recorded in.
pub const AUDIT_TABLE: &str = "lead_audit";

/// What the merchant API reads (`roomgate_delivery`): the lead columns
/// it decrypts and orders by, and the mapping.
pub const DELIVERY_READS: &[(&str, &[&str])] = &[
    ("leads", crate::delivery::query::LEAD_COLUMNS),
    ("room_merchants", &["room_id", "merchant_id", "updated_at"]),
    (
        WITHDRAWALS_TABLE,
        &["room_id", "viewer_id", "client_lead_id"],
    ),
];

/// The withdrawal and erasure requests (the engine writes them all: its
/// viewers' withdrawals, the merchant and admin APIs' erasure requests,
/// its `erased` marks); the merchant API reads them to leave those leads
/// out.
pub const WITHDRAWALS_TABLE: &str = "lead_withdrawals";

/// The room → merchant table the merchants' row policies read.
pub const MERCHANTS_TABLE: &str = "room_merchants";

/// The columns the engine reads back, per table: recent decisions at
/// start and when rooms move here (`leads`, `chat_messages`,
/// `moderation_events`), stored leads after a failover (`leads`), other
/// nodes' lead facts (`lead_facts`), the mapping (`room_merchants`), and
/// whether the schema is current (`schema_migrations`).
pub const ENGINE_READS: &[(&str, &[&str])] = &[
    (
        "leads",
        &[
            "room_id",
            "ts",
            "viewer_id",
            "client_lead_id",
            "verdict",
            "reason",
        ],
    ),
    (
        "chat_messages",
        &["room_id", "ts", "viewer_id", "client_msg_id", "verdict"],
    ),
    (
        "moderation_events",
        &[
            "room_id",
            "ts",
            "viewer_id",
            "client_id",
            "kind",
            "reason",
            "dry_run",
        ],
    ),
    (
        "lead_facts",
        &["minute", "kind", "key", "room_id", "lead_ids", "registered"],
    ),
    ("room_merchants", &["room_id", "merchant_id", "updated_at"]),
    (
        WITHDRAWALS_TABLE,
        &["ts", "room_id", "viewer_id", "client_lead_id", "action"],
    ),
    ("schema_migrations", &["version"]),
];

/// The tables the engine inserts into: the log's tables and the mapping.
pub fn engine_writes() -> Vec<&'static str> {
    let mut out: Vec<&str> = crate::table::Table::ALL.iter().map(|t| t.name()).collect();
    out.push(MERCHANTS_TABLE);
    out
}

/// Role names.
pub const WRITER_ROLE: &str = "roomgate_writer";
/// The migrator's role.
pub const MIGRATOR_ROLE: &str = "roomgate_migrator";
/// The analysts' role.
pub const ANALYST_ROLE: &str = "roomgate_analyst";
/// The merchants' role (their rows come from their row policies).
pub const MERCHANT_ROLE: &str = "roomgate_merchant";
/// The merchant API's role.
pub const DELIVERY_ROLE: &str = "roomgate_delivery";

/// The user of merchant `m`.
pub fn merchant_user(m: &MerchantId) -> String {
    format!("merchant_{m}")
}

/// A SHA-256 password hash (ClickHouse `sha256_hash` /
/// `password_sha256_hex`).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash([u8; 32]);

impl PasswordHash {
    /// The hash of `password`.
    pub fn of(password: &str) -> Self {
        use sha2::{Digest, Sha256};
        PasswordHash(Sha256::digest(password.as_bytes()).into())
    }

    /// Lowercase hex.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

/// Shortest plain password accepted.
pub const MIN_PASSWORD_LEN: usize = 12;

/// Parse a passwords file: one `user = password` per line (`#` comments,
/// blank lines), or `user = sha256:<64 hex>` to give only the hash.
pub fn parse_passwords(text: &str) -> Result<BTreeMap<String, PasswordHash>, AccessError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| AccessError::Passwords(format!("line {}: {why}", i + 1));
        let (user, value) = line
            .split_once('=')
            .ok_or_else(|| bad("not user = password"))?;
        let (user, value) = (user.trim(), value.trim());
        if user.is_empty() {
            return Err(bad("no user name"));
        }
        out.insert(user.to_owned(), password_value(value).map_err(|w| bad(&w))?);
    }
    Ok(out)
}

/// A password or `sha256:<hex>` as its hash.
pub fn password_value(value: &str) -> Result<PasswordHash, String> {
    if let Some(h) = value.strip_prefix("sha256:") {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(h.trim(), &mut bytes)
            .map_err(|_| "sha256: needs 64 hex characters".to_owned())?;
        return Ok(PasswordHash(bytes));
    }
    if value.chars().count() < MIN_PASSWORD_LEN {
        return Err(format!(
            "a password needs at least {MIN_PASSWORD_LEN} characters"
        ));
    }
    Ok(PasswordHash::of(value))
}

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The migrations could not be read.
    #[error(transparent)]
    Schema(#[from] schema::SchemaError),
    /// A column the migrations define is not in [`CLASSES`] (or the other
    /// way round, or classed twice, or a `*_enc` / `*_hmac` column is not
    /// sealed).
    #[error("column classes: {0}")]
    Classes(String),
    /// A user has no password.
    #[error("no password for {0} (give it in the passwords file or the environment)")]
    NoPassword(String),
    /// The passwords file.
    #[error("passwords: {0}")]
    Passwords(String),
    /// The database or cluster name.
    #[error("{0}")]
    Name(String),
}

/// What a plan is made from.
#[derive(Debug)]
pub struct Spec<'a> {
    /// `clickhouse.database`.
    pub database: &'a str,
    /// One server or a cluster (then grants cover the `_local` tables too,
    /// and row policies go on them).
    pub layout: &'a Layout,
    /// Merchants to create users for.
    pub merchants: &'a [MerchantId],
    /// Password hash per user name.
    pub passwords: &'a BTreeMap<String, PasswordHash>,
}

/// One `GRANT privileges ON target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// e.g. `INSERT, SHOW COLUMNS` or `SELECT(room_id, ts)`.
    pub privileges: String,
    /// `db.table`, `db.*` or `*.*`.
    pub on: String,
}

/// A row policy of one user on one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `db.table`.
    pub on: String,
    /// The `table` part (users.xml nests it under the database).
    pub table: String,
    /// The condition.
    pub filter: String,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Name.
    pub name: String,
    /// Its role.
    pub role: &'static str,
    /// Password hash.
    pub password: PasswordHash,
    /// Row policies (merchants).
    pub policies: Vec<Policy>,
}

/// Roles, their grants, users and row policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Database.
    pub database: String,
    /// `ON CLUSTER` target, for a cluster whose DDL goes out once.
    pub on_cluster: Option<String>,
    /// Each role and its grants.
    pub roles: Vec<(&'static str, Vec<Grant>)>,
    /// Users.
    pub users: Vec<User>,
}

/// The classes of `table`'s columns; views take their table's.
fn classes_of<'a>(t: &SchemaTable) -> Option<&'a TableClasses> {
    let base = t.view_of.as_deref().unwrap_or(&t.name);
    CLASSES.iter().find(|c| c.table == base)
}

/// The class of `column` in `c`.
fn class(c: &TableClasses, column: &str) -> Option<Class> {
    [
        (Class::Open, c.open),
        (Class::Personal, c.personal),
        (Class::Sealed, c.sealed),
    ]
    .into_iter()
    .find(|(_, cols)| cols.contains(&column))
    .map(|(k, _)| k)
}

/// Check [`CLASSES`] against the tables the migrations define.
pub fn check_classes(tables: &[SchemaTable]) -> Result<(), AccessError> {
    let bad = |m: String| Err(AccessError::Classes(m));
    for t in tables.iter().filter(|t| t.view_of.is_none()) {
        let Some(c) = classes_of(t) else {
            return bad(format!("table {} is not classified", t.name));
        };
        for col in &t.columns {
            let n = [c.open, c.personal, c.sealed]
                .iter()
                .filter(|cols| cols.contains(&col.as_str()))
                .count();
            if n != 1 {
                return bad(format!("{}.{col} is in {n} classes, not 1", t.name));
            }
            let secret = col.ends_with("_enc") || col.ends_with("_hmac");
            if secret && class(c, col) != Some(Class::Sealed) {
                return bad(format!("{}.{col} must be sealed", t.name));
            }
        }
    }
    for c in CLASSES {
        let Some(t) = tables.iter().find(|t| t.name == c.table) else {
            return bad(format!("{} is classified but not created", c.table));
        };
        for col in c.open.iter().chain(c.personal).chain(c.sealed) {
            if !t.columns.iter().any(|x| x == col) {
                return bad(format!("{}.{col} is classified but not created", c.table));
            }
        }
    }
    for (table, cols) in ENGINE_READS.iter().chain(DELIVERY_READS) {
        if *table == "schema_migrations" {
            continue;
        }
        let Some(t) = tables.iter().find(|t| t.name == *table) else {
            return bad(format!("the engine reads {table}, which is not created"));
        };
        if let Some(col) = cols.iter().find(|c| !t.columns.iter().any(|x| x == *c)) {
            return bad(format!(
                "the engine reads {table}.{col}, which is not created"
            ));
        }
    }
    Ok(())
}

/// The names a grant on `t` goes to: `db.t`, and on a cluster also
/// `db.t_local` for a table (reads and inserts through the `Distributed`
/// table check the local table too).
fn targets(db: &str, t: &SchemaTable, cluster: bool) -> Vec<String> {
    let mut out = vec![format!("{db}.{}", t.name)];
    if cluster && t.view_of.is_none() {
        out.push(format!("{db}.{}{LOCAL_SUFFIX}", t.name));
    }
    out
}

fn select(cols: &[&str]) -> String {
    format!("SELECT({})", cols.join(", "))
}

/// The table engines the migrations create tables with, for `layout`.
pub fn table_engines(layout: &Layout, db: &str) -> Result<Vec<String>, AccessError> {
    let planned = migrate::plan(layout, db).map_err(|e| AccessError::Classes(e.to_string()))?;
    let mut out: Vec<String> = Vec::new();
    let setup = migrate::setup_statements(layout, db);
    let stmts = setup
        .iter()
        .chain(planned.iter().flat_map(|p| p.statements.iter()));
    for stmt in stmts.filter(|s| s.starts_with("CREATE TABLE ")) {
        if let Some((_, rest)) = stmt.split_once("ENGINE = ") {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let engine = &rest[..end];
            if !engine.is_empty() && !out.iter().any(|e| e == engine) {
                out.push(engine.to_owned());
            }
        }
    }
    Ok(out)
}

/// The roles, users and policies for `spec`.
pub fn plan(spec: &Spec<'_>) -> Result<Plan, AccessError> {
    let db = spec.database;
    if db.is_empty() || !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(AccessError::Name(format!("database {db:?}: [A-Za-z0-9_]+")));
    }
    let schema = schema::schema()?;
    let tables = schema.tables;
    check_classes(&tables)?;
    let (cluster, on_cluster) = match spec.layout {
        Layout::Single => (false, None),
        Layout::Cluster(c) => {
            let ok = |ch: char| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-';
            if c.name.is_empty() || !c.name.chars().all(ok) {
                return Err(AccessError::Name(format!("cluster {:?}", c.name)));
            }
            (true, c.on_cluster.then(|| c.name.clone()))
        }
    };
    let find = |name: &str| tables.iter().find(|t| t.name == name);
    let grant = |privileges: String, on: String| Grant { privileges, on };

    let mut writer = Vec::new();
    for name in engine_writes() {
        let t = find(name).ok_or_else(|| AccessError::Classes(format!("{name} not created")))?;
        for on in targets(db, t, cluster) {
            writer.push(grant("INSERT, SHOW COLUMNS".into(), on));
        }
    }
    for (name, cols) in ENGINE_READS {
        match find(name) {
            Some(t) => {
                for on in targets(db, t, cluster) {
                    writer.push(grant(select(cols), on));
                }
            }
            // Created before the migrations, one per node.
            None => writer.push(grant(select(cols), format!("{db}.{name}"))),
        }
    }

    // Materialized views fill their targets with the rights of the user
    // who inserts (views without a definer: chdb; SQL SECURITY INVOKER):
    // the columns each view reads, and its target, down the chain.
    let mut written: Vec<&str> = engine_writes();
    let mut i = 0;
    while i < written.len() {
        let source_name = written[i];
        for v in schema.views.iter().filter(|v| v.source == source_name) {
            let cols: Vec<&str> = v.columns.iter().map(String::as_str).collect();
            let (Some(source), Some(target)) = (find(&v.source), find(&v.target)) else {
                return Err(AccessError::Classes(format!(
                    "view {} not understood",
                    v.name
                )));
            };
            for on in targets(db, source, cluster) {
                writer.push(grant(select(&cols), on));
            }
            if !written.contains(&v.target.as_str()) {
                for on in targets(db, target, cluster) {
                    writer.push(grant("INSERT".into(), on));
                }
                written.push(&target.name);
            }
        }
        i += 1;
    }

    let mut delivery = Vec::new();
    for (name, cols) in DELIVERY_READS {
        let t = find(name).ok_or_else(|| AccessError::Classes(format!("{name} not created")))?;
        for on in targets(db, t, cluster) {
            delivery.push(grant(select(cols), on));
        }
    }
    let audit = find(AUDIT_TABLE)
        .ok_or_else(|| AccessError::Classes(format!("{AUDIT_TABLE} not created")))?;
    for on in targets(db, audit, cluster) {
        delivery.push(grant("INSERT".into(), on));
    }
    for (name, cols) in WEBHOOK_TABLES {
        let t = find(name).ok_or_else(|| AccessError::Classes(format!("{name} not created")))?;
        for on in targets(db, t, cluster) {
            delivery.push(grant(format!("{}, INSERT", select(cols)), on));
        }
    }
    // The eraser (crate::erase) blanks withdrawn leads' personal columns
    // with a mutation: on the local tables of a cluster.
    let leads = find("leads").ok_or_else(|| AccessError::Classes("leads not created".into()))?;
    let erase = format!(
        "ALTER UPDATE({})",
        crate::erase::PERSONAL_COLUMNS.join(", ")
    );
    for on in targets(db, leads, cluster) {
        writer.push(grant(erase.clone(), on));
    }

    let mut migrator = vec![grant(
        "CREATE DATABASE, CREATE TABLE, CREATE VIEW, DROP VIEW, ALTER TABLE, SELECT, INSERT".into(),
        format!("{db}.*"),
    )];
    // Creating a table needs a grant on its engine (ClickHouse 26: the
    // server's table_engines_require_grant).
    for engine in table_engines(spec.layout, db)? {
        migrator.push(grant("TABLE ENGINE".into(), engine));
    }
    if on_cluster.is_some() {
        migrator.push(grant("CLUSTER".into(), "*.*".into()));
    }

    let mut analyst = Vec::new();
    let mut merchant = Vec::new();
    for t in &tables {
        let c = classes_of(t)
            .ok_or_else(|| AccessError::Classes(format!("{} is not classified", t.name)))?;
        let cols = |keep: &dyn Fn(Class) -> bool| -> Vec<&str> {
            t.columns
                .iter()
                .map(String::as_str)
                .filter(|col| class(c, col).is_some_and(keep))
                .collect()
        };
        let readable = cols(&|k| k != Class::Sealed);
        let open = cols(&|k| k == Class::Open);
        for on in targets(db, t, cluster) {
            if !readable.is_empty() {
                analyst.push(grant(select(&readable), on.clone()));
            }
            if t.has_room_id() && !open.is_empty() {
                merchant.push(grant(select(&open), on));
            }
        }
    }

    let password = |user: &str| {
        spec.passwords
            .get(user)
            .cloned()
            .ok_or_else(|| AccessError::NoPassword(user.to_owned()))
    };
    let mut users = Vec::new();
    for (name, role) in [
        ("writer", WRITER_ROLE),
        ("migrator", MIGRATOR_ROLE),
        ("analyst", ANALYST_ROLE),
        ("delivery", DELIVERY_ROLE),
    ] {
        users.push(User {
            name: name.to_owned(),
            role,
            password: password(name)?,
            policies: Vec::new(),
        });
    }
    let suffix = if cluster { LOCAL_SUFFIX } else { "" };
    let mut merchants = spec.merchants.to_vec();
    merchants.sort();
    merchants.dedup();
    for m in &merchants {
        let name = merchant_user(m);
        // On a cluster the policies go on the local tables (ClickHouse
        // refuses a row policy on a Distributed table, code 182); a room's
        // mapping is on the same shard as its rows.
        let policies = tables
            .iter()
            .filter(|t| t.view_of.is_none() && t.has_room_id())
            .map(|t| {
                let table = format!("{}{suffix}", t.name);
                let filter = if t.columns.iter().any(|c| c == "merchant_id") {
                    format!("merchant_id = '{m}'")
                } else {
                    format!(
                        "room_id IN (SELECT room_id FROM {db}.{MERCHANTS_TABLE}{suffix} FINAL \
                         WHERE merchant_id = '{m}')"
                    )
                };
                Policy {
                    on: format!("{db}.{table}"),
                    table,
                    filter,
                }
            })
            .collect();
        users.push(User {
            password: password(&name)?,
            name,
            role: MERCHANT_ROLE,
            policies,
        });
    }
    Ok(Plan {
        database: db.to_owned(),
        on_cluster,
        roles: vec![
            (WRITER_ROLE, writer),
            (MIGRATOR_ROLE, migrator),
            (ANALYST_ROLE, analyst),
            (MERCHANT_ROLE, merchant),
            (DELIVERY_ROLE, delivery),
        ],
        users,
    })
}

/// The plan as SQL statements for a production server, each ending in
/// `;`, with a comment header. Idempotent: roles get `REVOKE ALL` then
/// their grants, users their current password, policies `OR REPLACE`.
pub fn sql(p: &Plan) -> String {
    let oc = p
        .on_cluster
        .as_ref()
        .map(|c| format!(" ON CLUSTER '{c}'"))
        .unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "-- roomgate access for database {db} (docs/ACCESS.md), from `roomgate grants --format sql`.\n\
         -- Run as a user with access management (e.g. clickhouse-client --multiquery < this file).\n\
         -- Re-running it is safe: roles are revoked and granted again, passwords reset,\n\
         -- row policies replaced. Users other than merchants must see every row: keep the\n\
         -- server's access_control_improvements.users_without_row_policies_can_read_rows\n\
         -- at its default (true).",
        db = p.database
    );
    for (role, grants) in &p.roles {
        let _ = writeln!(s, "\nCREATE ROLE IF NOT EXISTS {role}{oc};");
        let _ = writeln!(s, "REVOKE{oc} ALL ON *.* FROM {role};");
        for g in grants {
            let _ = writeln!(s, "GRANT{oc} {} ON {} TO {role};", g.privileges, g.on);
        }
    }
    for u in &p.users {
        let (name, hash) = (format!("`{}`", u.name), u.password.hex());
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "CREATE USER IF NOT EXISTS {name}{oc} IDENTIFIED WITH sha256_hash BY '{hash}';"
        );
        let _ = writeln!(
            s,
            "ALTER USER {name}{oc} IDENTIFIED WITH sha256_hash BY '{hash}';"
        );
        // Row policies before the role: a merchant is never, even while
        // this script runs or after it stopped half-way, a user with the
        // role and without its policies (who would see every room).
        for pol in &u.policies {
            let _ = writeln!(
                s,
                "CREATE ROW POLICY OR REPLACE {name}{oc} ON {} USING {} TO {name};",
                pol.on, pol.filter
            );
        }
        let _ = writeln!(s, "GRANT{oc} {} TO {name};", u.role);
    }
    s
}

/// `s` escaped for XML text.
fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The plan as a `users.xml` for the local chdb server
/// (`CLICKHOUSE_USERS_XML`, scripts/clickhouse.py adds the `default`
/// user, profile and quota). Users connect from loopback only.
pub fn users_xml(p: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        // No `--` inside an XML comment.
        "<clickhouse>\n  <!-- roomgate access for database {} (docs/ACCESS.md), from roomgate grants (format users-xml). -->\n  <users>",
        p.database
    );
    for u in &p.users {
        let _ = writeln!(s, "    <{}>", u.name);
        let _ = writeln!(
            s,
            "      <password_sha256_hex>{}</password_sha256_hex>",
            u.password.hex()
        );
        s.push_str("      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>\n");
        s.push_str("      <profile>default</profile>\n      <quota>default</quota>\n");
        let _ = writeln!(s, "      <grants><query>GRANT {}</query></grants>", u.role);
        if !u.policies.is_empty() {
            let _ = writeln!(s, "      <databases>\n        <{}>", p.database);
            for pol in &u.policies {
                let _ = writeln!(
                    s,
                    "          <{t}><filter>{}</filter></{t}>",
                    xml_text(&pol.filter),
                    t = pol.table
                );
            }
            let _ = writeln!(s, "        </{}>\n      </databases>", p.database);
        }
        let _ = writeln!(s, "    </{}>", u.name);
    }
    s.push_str("  </users>\n  <roles>\n");
    for (role, grants) in &p.roles {
        let _ = writeln!(s, "    <{role}>\n      <grants>");
        for g in grants {
            let _ = writeln!(
                s,
                "        <query>GRANT {} ON {}</query>",
                xml_text(&g.privileges),
                g.on
            );
        }
        let _ = writeln!(s, "      </grants>\n    </{role}>");
    }
    s.push_str("  </roles>\n</clickhouse>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::migrate::ClusterDdl;

    fn passwords(merchants: &[&str]) -> BTreeMap<String, PasswordHash> {
        let mut users: Vec<String> = ["writer", "migrator", "analyst", "delivery"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        users.extend(merchants.iter().map(|m| format!("merchant_{m}")));
        users
            .into_iter()
            .map(|u| {
                let h = PasswordHash::of(&format!("{u}-password"));
                (u, h)
            })
            .collect()
    }

    fn plan_for(layout: &Layout, merchants: &[&str]) -> Plan {
        let ids: Vec<MerchantId> = merchants
            .iter()
            .map(|m| MerchantId::parse(m).unwrap())
            .collect();
        let pw = passwords(merchants);
        plan(&Spec {
            database: "rg",
            layout,
            merchants: &ids,
            passwords: &pw,
        })
        .unwrap()
    }

    fn role<'a>(p: &'a Plan, name: &str) -> &'a [Grant] {
        &p.roles.iter().find(|(r, _)| *r == name).unwrap().1
    }

    /// Every column of every table is classified, exactly once, and
    /// ciphertexts and HMACs are sealed: a new column fails here until it
    /// is added to CLASSES.
    #[test]
    fn every_column_of_every_table_is_classified() {
        let tables = schema::tables().unwrap();
        check_classes(&tables).unwrap();
        for t in &tables {
            let c = classes_of(t).unwrap();
            for col in &t.columns {
                assert!(class(c, col).is_some(), "{}.{col}", t.name);
            }
        }
        // The check catches a new unclassified column and a leaky class.
        let mut more = tables.clone();
        more[2].columns.push("email_enc".into());
        assert!(check_classes(&more).is_err());
        let mut new_table = tables.clone();
        new_table.push(SchemaTable {
            name: "payouts".into(),
            columns: vec!["room_id".into()],
            view_of: None,
        });
        assert!(check_classes(&new_table)
            .unwrap_err()
            .to_string()
            .contains("payouts"));
    }

    #[test]
    fn analysts_never_get_sealed_columns_and_merchants_only_open_ones() {
        let p = plan_for(&Layout::Single, &["m1"]);
        let analyst = role(&p, ANALYST_ROLE);
        let merchant = role(&p, MERCHANT_ROLE);
        let all = |g: &[Grant]| {
            g.iter()
                .map(|g| format!("{} ON {}", g.privileges, g.on))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let (a, m) = (all(analyst), all(merchant));
        for sealed in ["phone_enc", "phone_hmac", "ip_hmac", "name_enc", " key"] {
            assert!(!a.contains(sealed) && !m.contains(sealed), "{sealed}");
        }
        // (`lead_audit.detail` is open: no personal data in it.)
        for personal in ["phone_masked", "text", "detail) ON rg.moderation_events"] {
            assert!(a.contains(personal) && !m.contains(personal), "{personal}");
        }
        assert!(a.contains("ON rg.leads_unique") && m.contains("ON rg.leads_unique"));
        assert!(a.contains("SELECT(room_id, ts, viewer_id, session_id, client_lead_id, verdict, reason, score, reasons, dry_run_reasons, phone_masked, pii_key_id, consent, consent_version, fill_ms, inserted_at) ON rg.leads\n"));
        assert!(!a.contains("_local") && !a.contains("INSERT"));
        let writer = all(role(&p, WRITER_ROLE));
        assert!(writer.contains("INSERT, SHOW COLUMNS ON rg.leads\n"));
        assert!(writer.contains("INSERT, SHOW COLUMNS ON rg.room_merchants\n"));
        assert!(writer.contains("SELECT(version) ON rg.schema_migrations"));
        // The writer never reads ciphertexts; it may only blank them (the
        // eraser's mutation).
        let erase =
            "ALTER UPDATE(phone_masked, phone_enc, wechat_enc, name_enc, fields_enc) ON rg.leads";
        assert!(writer.contains(erase));
        assert!(!writer.replace(erase, "").contains("phone_enc") && !writer.contains("CREATE"));
        assert!(!writer.contains("INSERT, SHOW COLUMNS ON rg.room_minute"));
        // What the views on the written tables need.
        assert!(writer.contains("INSERT ON rg.room_minute\n"));
        assert!(writer.contains("INSERT ON rg.lead_facts\n"));
        assert!(writer.contains(
            "SELECT(room_id, ts, viewer_id, client_lead_id, verdict, reason, reasons, phone_hmac) ON rg.leads\n"
        ));
        let migrator = all(role(&p, MIGRATOR_ROLE)) + "\n";
        for engine in [
            "MergeTree",
            "SummingMergeTree",
            "ReplacingMergeTree",
            "AggregatingMergeTree",
        ] {
            assert!(
                migrator.contains(&format!("TABLE ENGINE ON {engine}\n")),
                "{engine}"
            );
        }
        assert!(!migrator.contains("Distributed") && !migrator.contains("CLUSTER"));
    }

    #[test]
    fn merchants_see_their_rooms_through_the_mapping() {
        let p = plan_for(&Layout::Single, &["m2", "m1", "m1"]);
        let names: Vec<&str> = p.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "writer",
                "migrator",
                "analyst",
                "delivery",
                "merchant_m1",
                "merchant_m2"
            ]
        );
        let m1 = &p.users[4];
        let tables: Vec<&str> = m1.policies.iter().map(|p| p.on.as_str()).collect();
        assert_eq!(
            tables,
            [
                "rg.chat_messages",
                "rg.like_ticks",
                "rg.leads",
                "rg.sessions",
                "rg.moderation_events",
                "rg.room_minute",
                "rg.lead_facts",
                "rg.room_merchants",
                "rg.lead_audit",
                "rg.lead_withdrawals",
                "rg.like_viewers",
                "rg.webhook_cursors",
                "rg.webhook_backlog"
            ]
        );
        // Webhook cursors and backlog: the merchant's own.
        assert_eq!(m1.policies[12].filter, "merchant_id = 'm1'");
        assert_eq!(
            m1.policies[2].filter,
            "room_id IN (SELECT room_id FROM rg.room_merchants FINAL WHERE merchant_id = 'm1')"
        );
        assert_eq!(m1.policies[7].filter, "merchant_id = 'm1'");
        // The audit: the merchant's own deliveries, wherever the room went.
        assert_eq!(m1.policies[8].filter, "merchant_id = 'm1'");
        // Other users have no policy.
        assert!(p.users[..4].iter().all(|u| u.policies.is_empty()));
        // The merchant API reads ciphertexts; the writer does not.
        let delivery = role(&p, DELIVERY_ROLE);
        assert!(delivery.iter().any(|g| g.on == "rg.leads"
            && g.privileges.contains("phone_enc")
            && !g.privileges.contains("hmac")));
        assert!(delivery
            .iter()
            .any(|g| g.on == "rg.lead_audit" && g.privileges == "INSERT"));
        assert!(!delivery
            .iter()
            .any(|g| g.privileges.contains("INSERT") && g.on == "rg.leads"));
        // The webhook sender (as `delivery`) keeps its cursor and backlog.
        assert!(delivery.iter().any(|g| g.on == "rg.webhook_backlog"
            && g.privileges
                == "SELECT(merchant_id, room_id, viewer_id, client_lead_id, lead_inserted_at, state, \
                    attempts, last_error, created_at, updated_at), INSERT"));
        assert!(delivery
            .iter()
            .any(|g| g.on == "rg.webhook_cursors" && g.privileges.ends_with(", INSERT")));
        assert!(!role(&p, WRITER_ROLE)
            .iter()
            .any(|g| g.on.contains("webhook")));
    }

    #[test]
    fn on_a_cluster_local_tables_get_the_grants_and_the_policies() {
        let layout = Layout::Cluster(ClusterDdl {
            name: "rgc".into(),
            replicated: true,
            on_cluster: true,
        });
        let p = plan_for(&layout, &["m1"]);
        assert_eq!(p.on_cluster.as_deref(), Some("rgc"));
        let merchant = role(&p, MERCHANT_ROLE);
        assert!(merchant.iter().any(|g| g.on == "rg.leads_local"));
        assert!(merchant.iter().any(|g| g.on == "rg.leads"));
        assert!(!merchant.iter().any(|g| g.on == "rg.leads_unique_local"));
        let pol = &p.users[4].policies;
        assert!(pol.iter().all(|p| p.on.ends_with("_local")));
        assert!(pol[0]
            .filter
            .contains("FROM rg.room_merchants_local FINAL WHERE merchant_id = 'm1'"));
        let writer = role(&p, WRITER_ROLE);
        assert!(writer
            .iter()
            .any(|g| g.on == "rg.schema_migrations" && g.privileges == "SELECT(version)"));
        assert!(!writer.iter().any(|g| g.on == "rg.schema_migrations_local"));
        assert!(role(&p, MIGRATOR_ROLE)
            .iter()
            .any(|g| g.privileges == "CLUSTER"));
        let engines: Vec<&str> = role(&p, MIGRATOR_ROLE)
            .iter()
            .filter(|g| g.privileges == "TABLE ENGINE")
            .map(|g| g.on.as_str())
            .collect();
        assert!(engines.contains(&"ReplicatedMergeTree") && engines.contains(&"Distributed"));
        let s = sql(&p);
        for line in s.lines().filter(|l| !l.starts_with("--") && !l.is_empty()) {
            assert!(line.contains(" ON CLUSTER 'rgc'"), "{line}");
        }
    }

    #[test]
    fn sql_and_xml_carry_hashes_never_passwords() {
        let p = plan_for(&Layout::Single, &["m-1"]);
        let s = sql(&p);
        let x = users_xml(&p);
        let hash = PasswordHash::of("merchant_m-1-password").hex();
        assert!(s.contains(&format!(
            "CREATE USER IF NOT EXISTS `merchant_m-1` IDENTIFIED WITH sha256_hash BY '{hash}';"
        )));
        assert!(x.contains(&format!(
            "<password_sha256_hex>{hash}</password_sha256_hex>"
        )));
        for out in [&s, &x] {
            assert!(!out.contains("-password"));
        }
        assert!(s.contains("GRANT roomgate_merchant TO `merchant_m-1`;"));
        assert!(s.contains(
            "CREATE ROW POLICY OR REPLACE `merchant_m-1` ON rg.leads USING room_id IN (SELECT room_id FROM rg.room_merchants FINAL WHERE merchant_id = 'm-1') TO `merchant_m-1`;"
        ));
        assert!(s.contains("REVOKE ALL ON *.* FROM roomgate_analyst;"));
        assert!(
            x.contains("<merchant_m-1>")
                && x.contains("<grants><query>GRANT roomgate_merchant</query></grants>")
        );
        assert!(x.contains("          <leads><filter>room_id IN (SELECT"));
        assert!(x.contains("<query>GRANT INSERT, SHOW COLUMNS ON rg.leads</query>"));
        // Every statement ends its line.
        for line in s.lines().filter(|l| !l.starts_with("--") && !l.is_empty()) {
            assert!(line.ends_with(';'), "{line}");
        }
    }

    #[test]
    fn missing_passwords_and_bad_names_are_refused() {
        let ids = [MerchantId::parse("m9").unwrap()];
        let pw = passwords(&[]);
        let spec = Spec {
            database: "rg",
            layout: &Layout::Single,
            merchants: &ids,
            passwords: &pw,
        };
        assert!(plan(&spec).unwrap_err().to_string().contains("merchant_m9"));
        let spec = Spec {
            database: "rg; DROP",
            merchants: &[],
            ..spec
        };
        assert!(plan(&spec).is_err());
    }

    #[test]
    fn password_files_parse() {
        let hex = PasswordHash::of("x").hex();
        let text = format!(
            "# users\nwriter = correct horse battery\n\n analyst=sha256:{hex}\nmerchant_m1 = a=b=c=d=e=f=g\n"
        );
        let pw = parse_passwords(&text).unwrap();
        assert_eq!(pw["writer"], PasswordHash::of("correct horse battery"));
        assert_eq!(pw["analyst"].hex(), hex);
        assert_eq!(pw["merchant_m1"], PasswordHash::of("a=b=c=d=e=f=g"));
        for bad in [
            "writer",
            "writer = short",
            "= nobody-at-all-here",
            "a = sha256:12",
        ] {
            assert!(parse_passwords(bad).is_err(), "{bad}");
        }
        assert!(!format!("{:?}", pw["writer"]).contains(&pw["writer"].hex()));
    }
}

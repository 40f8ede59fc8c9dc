//! The tables, views and columns the migrations define, read from the
//! migration files themselves (sans-IO): what [`crate::access`] grants on,
//! so a column added by a new migration cannot be missed.
//!
//! Understood statements: `CREATE TABLE` (its column list), `ALTER TABLE
//! … ADD / DROP / RENAME COLUMN` (other `ALTER`s keep the names),
//! `CREATE VIEW … AS SELECT * FROM <table>` (a view with the table's
//! columns), `CREATE MATERIALIZED VIEW … TO` (no table of its own: reads
//! go to its target) and `DROP VIEW`. Anything else is an error, so a
//! migration of a new shape fails the unit tests until it is understood
//! here.

use super::migrate::{statements, MIGRATIONS};

/// A table or view as the migrations leave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaTable {
    /// Name (without the database).
    pub name: String,
    /// Column names, in order.
    pub columns: Vec<String>,
    /// `Some(table)` for a view that selects every column of `table`.
    pub view_of: Option<String>,
}

impl SchemaTable {
    /// True when the rows carry a `room_id` (the merchants' row policies
    /// filter on it).
    pub fn has_room_id(&self) -> bool {
        self.columns.iter().any(|c| c == "room_id")
    }
}

/// A materialized view: an insert into `source` also inserts into
/// `target`, reading `columns` of `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatView {
    /// Name.
    pub name: String,
    /// The table it reads (inserts into it trigger the view).
    pub source: String,
    /// The table it writes.
    pub target: String,
    /// The columns of `source` its query names (every column for `*`).
    pub columns: Vec<String>,
}

/// The tables, views and materialized views the migrations leave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    /// Tables and `SELECT *` views, in creation order.
    pub tables: Vec<SchemaTable>,
    /// Materialized views, in creation order.
    pub views: Vec<MatView>,
}

/// A statement whose effect on the tables' columns is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the columns of: {0}")]
pub struct SchemaError(pub String);

/// Every table and view after all [`MIGRATIONS`], in creation order.
pub fn tables() -> Result<Vec<SchemaTable>, SchemaError> {
    Ok(schema()?.tables)
}

/// The whole schema after all [`MIGRATIONS`].
pub fn schema() -> Result<Schema, SchemaError> {
    let mut out = Schema::default();
    for (_, _, sql) in MIGRATIONS {
        for stmt in statements(sql, "{db}") {
            apply(&mut out, &stmt)?;
        }
    }
    Ok(out)
}

/// Every identifier in `s` (outside string literals).
fn identifiers(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(at) =
        rest.find(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '`' || c == '\'')
    {
        rest = &rest[at..];
        if let Some(lit) = rest.strip_prefix('\'') {
            rest = lit.find('\'').map_or("", |end| &lit[end + 1..]);
            continue;
        }
        let (id, tail) = split_ident(rest);
        if id.is_empty() {
            rest = &rest[1..];
            continue;
        }
        out.push(id);
        rest = tail;
    }
    out
}

/// The leading identifier of `s` (`[A-Za-z0-9_]*`, or a backquoted name)
/// and what follows it.
fn split_ident(s: &str) -> (&str, &str) {
    if let Some(rest) = s.strip_prefix('`') {
        return match rest.find('`') {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => ("", s),
        };
    }
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// The leading identifier of `s`.
fn ident(s: &str) -> &str {
    split_ident(s).0
}

/// `s` after `prefix` and `{db}.`: the object's name and what follows it.
fn named<'a>(s: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = s.strip_prefix(prefix)?.strip_prefix("{db}.")?;
    let (name, rest) = split_ident(rest);
    (!name.is_empty()).then_some((name, rest))
}

/// Split `s` at commas outside parentheses and quotes.
fn top_level_split(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut quote, mut start) = (Vec::new(), 0usize, None, 0);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth = depth.saturating_sub(1),
            (None, ',') if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// The column names of a `( … )` column list.
fn column_list(body: &str) -> Vec<String> {
    top_level_split(body)
        .into_iter()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .filter(|e| {
            let word = ident(e).to_ascii_uppercase();
            !matches!(word.as_str(), "INDEX" | "PROJECTION" | "CONSTRAINT")
        })
        .map(|e| ident(e).to_owned())
        .collect()
}

/// The text inside the parentheses that open at the start of `s`.
fn parenthesised(s: &str) -> Option<&str> {
    let s = s.trim_start();
    if !s.starts_with('(') {
        return None;
    }
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(&s[1..i]);
                }
            }
            _ => {}
        }
    }
    None
}

fn apply(schema: &mut Schema, stmt: &str) -> Result<(), SchemaError> {
    let out = &mut schema.tables;
    let err = || SchemaError(stmt.lines().next().unwrap_or(stmt).to_owned());
    if let Some((name, rest)) = named(stmt, "CREATE TABLE IF NOT EXISTS ") {
        let columns = column_list(parenthesised(rest).ok_or_else(err)?);
        if columns.is_empty() || out.iter().any(|t| t.name == name) {
            return Err(err());
        }
        out.push(SchemaTable {
            name: name.to_owned(),
            columns,
            view_of: None,
        });
        return Ok(());
    }
    if let Some((name, rest)) = named(stmt, "CREATE VIEW IF NOT EXISTS ") {
        let source = rest
            .trim_start()
            .strip_prefix("AS\nSELECT *\nFROM {db}.")
            .or_else(|| rest.trim_start().strip_prefix("AS SELECT * FROM {db}."))
            .map(ident)
            .ok_or_else(err)?;
        let columns = out
            .iter()
            .find(|t| t.name == source && t.view_of.is_none())
            .ok_or_else(err)?
            .columns
            .clone();
        out.push(SchemaTable {
            name: name.to_owned(),
            columns,
            view_of: Some(source.to_owned()),
        });
        return Ok(());
    }
    if let Some((name, rest)) = named(stmt, "CREATE MATERIALIZED VIEW IF NOT EXISTS ") {
        let target = rest.trim_start().strip_prefix("TO {db}.").map(ident);
        let query = rest.split_once(" AS").map(|(_, q)| q);
        let source = query
            .and_then(|q| q.split_once("FROM {db}."))
            .map(|(_, s)| ident(s));
        let (Some(target), Some(query), Some(source)) = (target, query, source) else {
            return Err(err());
        };
        let table = out
            .iter()
            .find(|t| t.name == source && t.view_of.is_none())
            .ok_or_else(err)?;
        let used = identifiers(query);
        let star = query.contains('*');
        let columns = table
            .columns
            .iter()
            .filter(|c| star || used.contains(&c.as_str()))
            .cloned()
            .collect();
        schema.views.push(MatView {
            name: name.to_owned(),
            source: source.to_owned(),
            target: target.to_owned(),
            columns,
        });
        return Ok(());
    }
    if let Some((name, _)) = named(stmt, "DROP VIEW IF EXISTS ") {
        out.retain(|t| !(t.name == name && t.view_of.is_some()));
        schema.views.retain(|v| v.name != name);
        return Ok(());
    }
    if let Some((name, rest)) = named(stmt, "ALTER TABLE ") {
        let table = out
            .iter_mut()
            .find(|t| t.name == name && t.view_of.is_none())
            .ok_or_else(err)?;
        for action in top_level_split(rest) {
            alter(&mut table.columns, action.trim()).ok_or_else(err)?;
        }
        // Views are `SELECT *`: they follow their table.
        let columns = table.columns.clone();
        for v in out
            .iter_mut()
            .filter(|t| t.view_of.as_deref() == Some(name))
        {
            v.columns = columns.clone();
        }
        return Ok(());
    }
    Err(err())
}

/// One `ALTER TABLE` action on `columns`; `None` when not understood.
fn alter(columns: &mut Vec<String>, action: &str) -> Option<()> {
    fn after<'a>(a: &'a str, p: &str) -> Option<&'a str> {
        let r = a.strip_prefix(p)?;
        let r = r.strip_prefix("IF NOT EXISTS ").unwrap_or(r);
        Some(r.strip_prefix("IF EXISTS ").unwrap_or(r))
    }
    if let Some(rest) = after(action, "ADD COLUMN ") {
        let name = ident(rest);
        if name.is_empty() {
            return None;
        }
        if !columns.iter().any(|c| c == name) {
            // `… AFTER c` / `… FIRST` place it; otherwise it goes last.
            let at = match rest.rsplit_once(" AFTER ") {
                Some((_, after)) => columns.iter().position(|c| c == ident(after.trim()))? + 1,
                None if rest.trim_end().ends_with(" FIRST") => 0,
                None => columns.len(),
            };
            columns.insert(at, name.to_owned());
        }
        return Some(());
    }
    if let Some(rest) = after(action, "DROP COLUMN ") {
        let name = ident(rest);
        columns.retain(|c| c != name);
        return Some(());
    }
    if let Some(rest) = after(action, "RENAME COLUMN ") {
        let (from, rest) = split_ident(rest);
        let to = rest.trim_start().strip_prefix("TO ")?;
        let to = ident(to.trim_start());
        if to.is_empty() {
            return None;
        }
        for c in columns.iter_mut().filter(|c| *c == from) {
            *c = to.to_owned();
        }
        return Some(());
    }
    // MODIFY / COMMENT / TTL / SETTING …: names unchanged.
    ["MODIFY ", "COMMENT COLUMN ", "MATERIALIZE ", "REMOVE "]
        .iter()
        .any(|p| action.starts_with(p))
        .then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_is_understood() {
        let tables = tables().unwrap();
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "chat_messages",
                "like_ticks",
                "leads",
                "sessions",
                "moderation_events",
                "room_minute",
                "leads_unique",
                "lead_facts",
                "room_merchants",
                "lead_audit",
                "lead_withdrawals",
                "like_viewers",
                "webhook_cursors",
                "webhook_backlog"
            ]
        );
        let leads = &tables[2];
        // Columns added by later migrations are there, in file order.
        assert!(leads.columns.contains(&"reason".to_owned()));
        assert!(leads.columns.contains(&"pii_key_id".to_owned()));
        assert_eq!(leads.columns.first().map(String::as_str), Some("room_id"));
        assert_eq!(leads.columns.len(), 22);
        // The view has the table's columns, including the later ones.
        assert_eq!(leads.columns[5..7], ["verdict", "reason"]);
        assert_eq!(tables[6].columns, leads.columns);
        assert_eq!(tables[6].view_of.as_deref(), Some("leads"));
        let moderation = &tables[4];
        assert!(moderation.columns.contains(&"count".to_owned()));
        assert!(tables.iter().all(SchemaTable::has_room_id));
        // Codecs and aggregate types with commas are one column each.
        assert_eq!(tables[0].columns.len(), 8);
        assert_eq!(
            tables[7].columns,
            ["minute", "kind", "key", "room_id", "lead_ids", "registered"]
        );
    }

    #[test]
    fn materialized_views_name_their_source_columns() {
        let s = schema().unwrap();
        let names: Vec<&str> = s.views.iter().map(|v| v.name.as_str()).collect();
        // room_minute_moderation_mv was replaced by migration 6.
        assert_eq!(
            names,
            [
                "room_minute_sessions_mv",
                "room_minute_chat_mv",
                "room_minute_likes_mv",
                "room_minute_leads_mv",
                "room_minute_rejects_mv",
                "lead_facts_phone_mv",
                "lead_facts_ip_mv"
            ]
        );
        let phone = &s.views[5];
        assert_eq!(
            (phone.source.as_str(), phone.target.as_str()),
            ("leads", "lead_facts")
        );
        assert_eq!(
            phone.columns,
            [
                "room_id",
                "ts",
                "viewer_id",
                "client_lead_id",
                "verdict",
                "reason",
                "reasons",
                "phone_hmac"
            ]
        );
        // A name inside a string literal is not a column ('accepted').
        assert_eq!(s.views[3].columns, ["room_id", "ts", "verdict"]);
    }

    #[test]
    fn alters_rename_and_drop_and_unknown_shapes_fail() {
        let mut t = Schema::default();
        apply(
            &mut t,
            "CREATE TABLE IF NOT EXISTS {db}.t\n(\n a UInt8,\n b Array(Tuple(x UInt8, y String)) CODEC(ZSTD),\n `c d` String,\n INDEX i a TYPE minmax\n)\nENGINE = MergeTree ORDER BY a",
        )
        .unwrap();
        assert_eq!(t.tables[0].columns, ["a", "b", "c d"]);
        apply(
            &mut t,
            "CREATE VIEW IF NOT EXISTS {db}.v AS SELECT * FROM {db}.t",
        )
        .unwrap();
        apply(
            &mut t,
            "ALTER TABLE {db}.t ADD COLUMN IF NOT EXISTS e String DEFAULT 'x,y', DROP COLUMN IF EXISTS a",
        )
        .unwrap();
        apply(&mut t, "ALTER TABLE {db}.t RENAME COLUMN b TO bb").unwrap();
        apply(
            &mut t,
            "ALTER TABLE {db}.t MODIFY COLUMN e String CODEC(ZSTD)",
        )
        .unwrap();
        assert_eq!(t.tables[0].columns, ["bb", "c d", "e"]);
        apply(
            &mut t,
            "ALTER TABLE {db}.t ADD COLUMN IF NOT EXISTS f UInt8 AFTER bb",
        )
        .unwrap();
        apply(&mut t, "ALTER TABLE {db}.t ADD COLUMN g UInt8 FIRST").unwrap();
        assert_eq!(t.tables[0].columns, ["g", "bb", "f", "c d", "e"]);
        assert!(apply(&mut t, "ALTER TABLE {db}.t ADD COLUMN h UInt8 AFTER nope").is_err());
        assert_eq!(t.tables[1].columns, t.tables[0].columns);
        apply(&mut t, "DROP VIEW IF EXISTS {db}.v").unwrap();
        assert_eq!(t.tables.len(), 1);
        for bad in [
            "CREATE VIEW IF NOT EXISTS {db}.w AS SELECT a FROM {db}.t",
            "ALTER TABLE {db}.t FREEZE",
            "ALTER TABLE {db}.nope ADD COLUMN x UInt8",
            "INSERT INTO {db}.t VALUES (1)",
            "CREATE TABLE IF NOT EXISTS {db}.t (a UInt8) ENGINE = Log",
        ] {
            assert!(apply(&mut t, bad).is_err(), "{bad}");
        }
    }
}

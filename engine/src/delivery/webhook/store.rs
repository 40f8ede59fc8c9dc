//! What the webhook sender reads and writes in ClickHouse (sans-IO): the
//! SQL of the cursor, the backlog and the audit rows, and their rows
//! (schemas/011_webhooks.sql).

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::delivery::cursor::Position;
use crate::delivery::query::Delivered;

/// The cursors table.
pub const CURSORS_TABLE: &str = "webhook_cursors";
/// The backlog table.
pub const BACKLOG_TABLE: &str = "webhook_backlog";

/// The columns of `webhook_cursors`.
pub const CURSOR_COLUMNS: &[&str] = &[
    "merchant_id",
    "inserted_at",
    "room_id",
    "viewer_id",
    "client_lead_id",
    "updated_at",
];

/// The columns of `webhook_backlog`.
pub const BACKLOG_COLUMNS: &[&str] = &[
    "merchant_id",
    "room_id",
    "viewer_id",
    "client_lead_id",
    "lead_inserted_at",
    "state",
    "attempts",
    "last_error",
    "created_at",
    "updated_at",
];

/// A backlog entry's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Retried by every sweep until delivered.
    Waiting,
    /// Delivered by a sweep.
    Delivered,
    /// No longer deliverable (withdrawn, erased, room moved).
    Cancelled,
}

impl State {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Delivered => "delivered",
            State::Cancelled => "cancelled",
        }
    }
}

/// A SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn ms(v: i64) -> String {
    format!("fromUnixTimestamp64Milli(toInt64({v}))")
}

/// The merchant's cursor: the greatest position stored and the greatest
/// `updated_at` (bind: the merchant id). No row before the first page.
pub const CURSOR_SQL: &str = "SELECT toUnixTimestamp64Milli(p.1) AS at_ms, p.2 AS room_id, \
     p.3 AS viewer_id, p.4 AS client_lead_id, toUnixTimestamp64Milli(u) AS updated_ms \
     FROM (SELECT max((inserted_at, room_id, viewer_id, client_lead_id)) AS p, max(updated_at) AS u, \
     count() AS n FROM webhook_cursors WHERE merchant_id = ?) WHERE n > 0";

/// A row of [`CURSOR_SQL`].
#[derive(Debug, Clone, Copy, Row, Deserialize, PartialEq, Eq)]
pub struct CursorRow {
    /// Position: the lead's `inserted_at`, Unix ms.
    pub at_ms: i64,
    /// Position: room.
    pub room_id: u64,
    /// Position: viewer.
    pub viewer_id: u64,
    /// Position: lead id.
    pub client_lead_id: u64,
    /// The greatest `updated_at`, Unix ms.
    pub updated_ms: i64,
}

impl CursorRow {
    /// The position.
    pub fn position(&self) -> Position {
        Position {
            at_ms: self.at_ms,
            room_id: self.room_id,
            viewer_id: self.viewer_id,
            client_lead_id: self.client_lead_id,
        }
    }
}

/// The insert moving `merchant`'s cursor to `p`, stamped `updated_ms`.
pub fn cursor_insert(merchant: &str, p: &Position, updated_ms: i64) -> String {
    format!(
        "INSERT INTO webhook_cursors ({}) VALUES ({}, {}, {}, {}, {}, {})",
        CURSOR_COLUMNS.join(", "),
        literal(merchant),
        ms(p.at_ms),
        p.room_id,
        p.viewer_id,
        p.client_lead_id,
        ms(updated_ms)
    )
}

/// One backlog row (as read, and as written).
#[derive(Debug, Clone, Row, Deserialize, Serialize, PartialEq, Eq)]
pub struct BacklogRow {
    /// Merchant.
    pub merchant_id: String,
    /// The lead: room.
    pub room_id: u64,
    /// The lead: viewer.
    pub viewer_id: u64,
    /// The lead: the viewer's lead id.
    pub client_lead_id: u64,
    /// The lead's `inserted_at` (its place in the order), Unix ms.
    pub lead_at_ms: i64,
    /// `waiting`, `delivered` or `cancelled`.
    pub state: String,
    /// Every attempt so far.
    pub attempts: u32,
    /// The last failure (a status code or transport error).
    pub last_error: String,
    /// When it first waited, Unix ms.
    pub created_ms: i64,
    /// This row's time, Unix ms.
    pub updated_ms: i64,
}

impl BacklogRow {
    /// The lead's place in the delivery order.
    pub fn position(&self) -> Position {
        Position {
            at_ms: self.lead_at_ms,
            room_id: self.room_id,
            viewer_id: self.viewer_id,
            client_lead_id: self.client_lead_id,
        }
    }

    /// A new waiting entry for `lead`, at `now_ms`.
    pub fn waiting(
        merchant: &str,
        lead: &Delivered,
        attempts: u32,
        error: &str,
        now_ms: i64,
    ) -> Self {
        BacklogRow {
            merchant_id: merchant.to_owned(),
            room_id: lead.room_id,
            viewer_id: lead.viewer_id,
            client_lead_id: lead.client_lead_id,
            lead_at_ms: lead.at_ms,
            state: State::Waiting.as_str().to_owned(),
            attempts,
            last_error: error.to_owned(),
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }

    /// The next row of this entry: `state`, `attempts`, `error`, stamped
    /// after this one (`max(now, updated + 1)`: the latest row wins the
    /// merge even if clocks disagree).
    pub fn next(&self, state: State, attempts: u32, error: Option<&str>, now_ms: i64) -> Self {
        BacklogRow {
            state: state.as_str().to_owned(),
            attempts,
            last_error: error.map_or_else(|| self.last_error.clone(), str::to_owned),
            updated_ms: now_ms.max(self.updated_ms.saturating_add(1)),
            ..self.clone()
        }
    }
}

/// The insert of `rows`; `None` when there are none.
pub fn backlog_insert(rows: &[BacklogRow]) -> Option<String> {
    if rows.is_empty() {
        return None;
    }
    let values = rows
        .iter()
        .map(|r| {
            format!(
                "({}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                literal(&r.merchant_id),
                r.room_id,
                r.viewer_id,
                r.client_lead_id,
                ms(r.lead_at_ms),
                literal(&r.state),
                r.attempts,
                literal(&r.last_error),
                ms(r.created_ms),
                ms(r.updated_ms)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "INSERT INTO webhook_backlog ({}) VALUES {values}",
        BACKLOG_COLUMNS.join(", ")
    ))
}

/// The backlog entries of `merchant` (all merchants when `None`) in
/// `state` (every state when `None`), oldest lead first, at most `limit`.
pub fn backlog_sql(merchant: Option<&str>, state: Option<State>, limit: u32) -> String {
    let mut filters = Vec::new();
    if let Some(m) = merchant {
        filters.push(format!("merchant_id = {}", literal(m)));
    }
    if let Some(s) = state {
        filters.push(format!("state = {}", literal(s.as_str())));
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filters.join(" AND "))
    };
    format!(
        "SELECT merchant_id, room_id, viewer_id, client_lead_id, \
         toUnixTimestamp64Milli(lead_inserted_at) AS lead_at_ms, state, attempts, last_error, \
         toUnixTimestamp64Milli(created_at) AS created_ms, \
         toUnixTimestamp64Milli(updated_at) AS updated_ms \
         FROM webhook_backlog FINAL{filter} \
         ORDER BY merchant_id, lead_inserted_at, room_id, viewer_id, client_lead_id LIMIT {limit}"
    )
}

/// The merchant's waiting entries (bind: the merchant id).
pub const BACKLOG_WAITING_SQL: &str =
    "SELECT count() FROM webhook_backlog FINAL WHERE merchant_id = ? AND state = 'waiting'";

/// Backlog entries per merchant and state.
pub const BACKLOG_COUNTS_SQL: &str = "SELECT merchant_id, state, count() AS n \
     FROM webhook_backlog FINAL GROUP BY merchant_id, state ORDER BY merchant_id, state";

/// A row of [`BACKLOG_COUNTS_SQL`].
#[derive(Debug, Clone, Row, Deserialize, PartialEq, Eq)]
pub struct CountRow {
    /// Merchant.
    pub merchant_id: String,
    /// State.
    pub state: String,
    /// Entries.
    pub n: u64,
}

/// What the audit says of one webhook attempt: the verdict, the attempt
/// number, `backlog` for a sweep's, `undecryptable` when it was.
pub fn audit_detail(lead: &Delivered, attempt: u32, backlog: bool) -> String {
    let mut d = format!("verdict={};attempt={attempt}", lead.verdict);
    if backlog {
        d.push_str(";backlog");
    }
    if !lead.decrypted {
        d.push_str(";undecryptable");
    }
    d
}

/// The `lead_audit` insert for one wave: one row per lead about to be
/// sent, `action = 'webhook'`, `actor` = the webhook ([`super::settings::Target::actor`]).
pub fn audit_sql(
    now_ms: i64,
    merchant: &str,
    actor: &str,
    sends: &[(&Delivered, String)],
) -> String {
    let rows = sends
        .iter()
        .map(|(l, detail)| {
            format!(
                "({}, {}, {}, 'webhook', {}, {}, {}, {})",
                ms(now_ms),
                literal(merchant),
                literal(actor),
                l.room_id,
                l.viewer_id,
                l.client_lead_id,
                literal(detail)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO lead_audit (ts, merchant_id, actor, action, room_id, viewer_id, \
         client_lead_id, detail) VALUES {rows}"
    )
}

/// The position just before `p` in the delivery order: a page "after" it
/// starts at `p` itself (how a backlog entry's lead is read again through
/// [`crate::delivery::query::leads_sql`], with its filters).
pub fn just_before(p: &Position) -> Position {
    let mut q = *p;
    if q.client_lead_id > 0 {
        q.client_lead_id -= 1;
    } else if q.viewer_id > 0 {
        q.viewer_id -= 1;
        q.client_lead_id = u64::MAX;
    } else if q.room_id > 0 {
        q.room_id -= 1;
        q.viewer_id = u64::MAX;
        q.client_lead_id = u64::MAX;
    } else {
        q.at_ms = q.at_ms.saturating_sub(1);
        q.room_id = u64::MAX;
        q.viewer_id = u64::MAX;
        q.client_lead_id = u64::MAX;
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lead() -> Delivered {
        Delivered {
            room_id: 7,
            viewer_id: 8,
            client_lead_id: 9,
            ts: 1_000,
            at_ms: 1_000,
            verdict: "accepted".into(),
            phone: Some("+8613800138000".into()),
            wechat: None,
            name: None,
            fields: serde_json::Map::new(),
            consent: true,
            consent_version: String::new(),
            decrypted: true,
        }
    }

    #[test]
    fn the_sql_names_leads_by_key_and_carries_no_contact() {
        let p = Position {
            at_ms: 1_000,
            room_id: 7,
            viewer_id: 8,
            client_lead_id: 9,
        };
        assert_eq!(
            cursor_insert("m1", &p, 2_000),
            "INSERT INTO webhook_cursors (merchant_id, inserted_at, room_id, viewer_id, client_lead_id, updated_at) \
             VALUES ('m1', fromUnixTimestamp64Milli(toInt64(1000)), 7, 8, 9, fromUnixTimestamp64Milli(toInt64(2000)))"
        );
        let w = BacklogRow::waiting("m1", &lead(), 8, "http 500", 5_000);
        assert_eq!(w.position(), p);
        let sql = backlog_insert(std::slice::from_ref(&w)).unwrap();
        assert!(sql.ends_with(
            "VALUES ('m1', 7, 8, 9, fromUnixTimestamp64Milli(toInt64(1000)), 'waiting', 8, 'http 500', \
             fromUnixTimestamp64Milli(toInt64(5000)), fromUnixTimestamp64Milli(toInt64(5000)))"
        ), "{sql}");
        assert!(!sql.contains("+86"));
        assert_eq!(backlog_insert(&[]), None);
        // A later state is stamped after the earlier one, even if the
        // clock went back.
        let d = w.next(State::Delivered, 9, None, 4_000);
        assert_eq!((d.updated_ms, d.created_ms, d.attempts), (5_001, 5_000, 9));
        assert_eq!(
            (d.state.as_str(), d.last_error.as_str()),
            ("delivered", "http 500")
        );
        assert_eq!(
            w.next(State::Waiting, 9, Some("timeout"), 9_000).updated_ms,
            9_000
        );

        let q = backlog_sql(Some("m'1"), Some(State::Waiting), 10);
        assert!(q.contains("FROM webhook_backlog FINAL WHERE merchant_id = 'm\\'1' AND state = 'waiting' ORDER BY"), "{q}");
        assert!(q.ends_with("LIMIT 10"));
        assert!(!backlog_sql(None, None, 1).contains("WHERE"));

        let mut l = lead();
        assert_eq!(audit_detail(&l, 3, false), "verdict=accepted;attempt=3");
        l.decrypted = false;
        assert_eq!(
            audit_detail(&l, 9, true),
            "verdict=accepted;attempt=9;backlog;undecryptable"
        );
        let a = audit_sql(1_000, "m1", "webhook:crm.example.com", &[(&l, "x".into())]);
        assert_eq!(
            a,
            "INSERT INTO lead_audit (ts, merchant_id, actor, action, room_id, viewer_id, client_lead_id, detail) \
             VALUES (fromUnixTimestamp64Milli(toInt64(1000)), 'm1', 'webhook:crm.example.com', 'webhook', 7, 8, 9, 'x')"
        );
    }

    #[test]
    fn the_position_before_the_smallest_steps_back_a_millisecond() {
        let p = Position {
            at_ms: 5,
            room_id: 0,
            viewer_id: 0,
            client_lead_id: 0,
        };
        let q = just_before(&p);
        assert_eq!(
            (q.at_ms, q.room_id, q.viewer_id, q.client_lead_id),
            (4, u64::MAX, u64::MAX, u64::MAX)
        );
    }

    proptest! {
        #[test]
        fn just_before_is_the_immediate_predecessor(
            ts in -5i64..5, room in 0u64..3, viewer in 0u64..3, id in 0u64..3,
            ts2 in -5i64..5, room2 in 0u64..3, viewer2 in 0u64..3, id2 in 0u64..3,
        ) {
            let p = Position { at_ms: ts, room_id: room, viewer_id: viewer, client_lead_id: id };
            let r = Position { at_ms: ts2, room_id: room2, viewer_id: viewer2, client_lead_id: id2 };
            let q = just_before(&p);
            prop_assert!(q < p);
            // Nothing lies strictly between: "after q" starts at p.
            prop_assert!(!(q < r && r < p));
        }
    }
}

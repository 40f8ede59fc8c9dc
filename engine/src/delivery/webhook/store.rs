//! What the webhook sender reads and writes in ClickHouse (sans-IO): the
//! SQL of the cursor, the backlog, the withdrawal check and the audit
//! rows, and their rows (schemas/011_webhooks.sql).
//!
//! SQL built here with `format!` carries numbers, fixed words and
//! [`literal`]s only; `?` never appears raw in it (the clickhouse crate
//! would take it for a bind placeholder, even inside a quoted literal).

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::delivery::cursor::Position;

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

/// A SQL string literal. `?` is written `\x3F` (ClickHouse decodes it):
/// the clickhouse crate takes a raw `?` anywhere in a query, even inside
/// quotes, for a bind placeholder ("unbound query argument").
pub fn literal(s: &str) -> String {
    format!(
        "'{}'",
        s.replace('\\', "\\\\")
            .replace('\'', "\\'")
            .replace('?', "\\x3F")
    )
}

/// A lead's natural key: `(room_id, viewer_id, client_lead_id)`.
pub type Key = (u64, u64, u64);

/// The audit action of a request about to leave (written before it).
pub const AUDIT_SENT: &str = "webhook";
/// The audit action of a request the receiver answered 2xx: a delivery.
pub const AUDIT_DELIVERED: &str = "webhook_delivered";

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

    /// A new waiting entry for the lead at `lead` (its place in the
    /// order), at `now_ms`.
    pub fn waiting(
        merchant: &str,
        lead: &Position,
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

/// The order backlog entries are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Oldest lead first (the admin API's listing).
    Lead,
    /// Least recently tried first (`updated_at`, then the lead's place):
    /// a pass's probe. Each failed attempt writes a later `updated_at`,
    /// so a lead the receiver always refuses goes to the back and the
    /// probe rotates over the waiting leads instead of blocking them.
    LeastRecentlyTried,
}

/// The backlog entries of `merchant` (all merchants when `None`) in
/// `state` (every state when `None`), in `order`, at most `limit`.
pub fn backlog_sql(
    merchant: Option<&str>,
    state: Option<State>,
    order: Order,
    limit: u32,
) -> String {
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
         ORDER BY merchant_id, {order}lead_inserted_at, room_id, viewer_id, client_lead_id LIMIT {limit}",
        order = match order {
            Order::Lead => "",
            Order::LeastRecentlyTried => "updated_at, ",
        }
    )
}

/// Sort `rows` as [`Order::LeastRecentlyTried`] reads them (the pass sorts
/// what it read again: the order is this function's, whatever the
/// server's).
pub fn sort_least_recently_tried(rows: &mut [BacklogRow]) {
    rows.sort_by_key(|r| (r.updated_ms, r.position()));
}

/// A row of [`withdrawn_sql`].
#[derive(Debug, Clone, Copy, Row, Deserialize, PartialEq, Eq)]
pub struct KeyRow {
    /// Room.
    pub room_id: u64,
    /// Viewer.
    pub viewer_id: u64,
    /// The viewer's lead id.
    pub client_lead_id: u64,
}

impl KeyRow {
    /// The key.
    pub fn key(&self) -> Key {
        (self.room_id, self.viewer_id, self.client_lead_id)
    }
}

/// The query of which of `keys` have a withdrawal or erasure request
/// (any row in `lead_withdrawals`: `withdraw`, `erase` or `erased`), as
/// [`KeyRow`]s. `None` without keys. Numbers only.
pub fn withdrawn_sql(keys: &[Key]) -> Option<String> {
    if keys.is_empty() {
        return None;
    }
    let list = keys
        .iter()
        .map(|(r, v, c)| format!("({r}, {v}, {c})"))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "SELECT DISTINCT room_id, viewer_id, client_lead_id FROM lead_withdrawals \
         WHERE (room_id, viewer_id, client_lead_id) IN ({list})"
    ))
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
/// number, `backlog` for a sweep's, `undecryptable` when a field did not
/// decrypt (known on the delivered row only: the lead is decrypted after
/// its pre-send row is written).
pub fn audit_detail(verdict: &str, attempt: u32, backlog: bool, undecryptable: bool) -> String {
    let mut d = format!("verdict={verdict};attempt={attempt}");
    if backlog {
        d.push_str(";backlog");
    }
    if undecryptable {
        d.push_str(";undecryptable");
    }
    d
}

/// The `lead_audit` insert for one wave: one row per lead, `action` =
/// [`AUDIT_SENT`] (about to be sent) or [`AUDIT_DELIVERED`] (answered
/// 2xx), `actor` = the webhook ([`super::settings::Target::actor`]).
pub fn audit_sql(
    now_ms: i64,
    merchant: &str,
    actor: &str,
    action: &str,
    rows: &[(Key, String)],
) -> String {
    let rows = rows
        .iter()
        .map(|((room, viewer, id), detail)| {
            format!(
                "({}, {}, {}, {}, {room}, {viewer}, {id}, {})",
                ms(now_ms),
                literal(merchant),
                literal(actor),
                literal(action),
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

    fn lead() -> Position {
        Position {
            at_ms: 1_000,
            room_id: 7,
            viewer_id: 8,
            client_lead_id: 9,
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

        let q = backlog_sql(Some("m'1"), Some(State::Waiting), Order::Lead, 10);
        assert!(q.contains("FROM webhook_backlog FINAL WHERE merchant_id = 'm\\'1' AND state = 'waiting' ORDER BY merchant_id, lead_inserted_at, room_id"), "{q}");
        assert!(q.ends_with("LIMIT 10"));
        assert!(!backlog_sql(None, None, Order::Lead, 1).contains("WHERE"));

        assert_eq!(
            audit_detail("accepted", 3, false, false),
            "verdict=accepted;attempt=3"
        );
        assert_eq!(
            audit_detail("accepted", 9, true, true),
            "verdict=accepted;attempt=9;backlog;undecryptable"
        );
        let a = audit_sql(
            1_000,
            "m1",
            "webhook:crm.example.com",
            AUDIT_SENT,
            &[((7, 8, 9), "x".into())],
        );
        assert_eq!(
            a,
            "INSERT INTO lead_audit (ts, merchant_id, actor, action, room_id, viewer_id, client_lead_id, detail) \
             VALUES (fromUnixTimestamp64Milli(toInt64(1000)), 'm1', 'webhook:crm.example.com', 'webhook', 7, 8, 9, 'x')"
        );
        let d = audit_sql(
            2_000,
            "m1",
            "webhook:h",
            AUDIT_DELIVERED,
            &[((7, 8, 9), "a".into()), ((1, 2, 3), "b".into())],
        );
        assert!(
            d.ends_with(
                "VALUES (fromUnixTimestamp64Milli(toInt64(2000)), 'm1', 'webhook:h', 'webhook_delivered', 7, 8, 9, 'a'), \
                 (fromUnixTimestamp64Milli(toInt64(2000)), 'm1', 'webhook:h', 'webhook_delivered', 1, 2, 3, 'b')"
            ),
            "{d}"
        );
    }

    #[test]
    fn no_raw_question_mark_reaches_the_client() {
        // The clickhouse crate binds `?` even inside quotes: an error text
        // with one would fail the insert ("unbound query argument").
        let w = BacklogRow::waiting("m1", &lead(), 3, "transport: GET /x?token=1 what?", 5_000);
        let sql =
            backlog_insert(&[w.clone(), w.next(State::Waiting, 4, Some("?"), 6_000)]).unwrap();
        assert!(!sql.contains('?'), "{sql}");
        assert!(
            sql.contains(r"'transport: GET /x\x3Ftoken=1 what\x3F'"),
            "{sql}"
        );
        assert!(sql.contains(r", 4, '\x3F', "), "{sql}");
        assert_eq!(literal(r"a'b\?"), r"'a\'b\\\x3F'");
        let a = audit_sql(
            0,
            "m1",
            "webhook:h?",
            AUDIT_SENT,
            &[((1, 2, 3), "?".into())],
        );
        assert!(!a.contains('?'), "{a}");
        let q = backlog_sql(Some("m?"), None, Order::LeastRecentlyTried, 1);
        assert!(!q.contains('?'), "{q}");
        assert!(!cursor_insert("m?", &lead(), 1).contains('?'));
    }

    #[test]
    fn the_withdrawal_check_names_the_keys_with_numbers_only() {
        assert_eq!(withdrawn_sql(&[]), None);
        assert_eq!(
            withdrawn_sql(&[(101, 5, 1), (102, u64::MAX, 0)]).unwrap(),
            "SELECT DISTINCT room_id, viewer_id, client_lead_id FROM lead_withdrawals \
             WHERE (room_id, viewer_id, client_lead_id) IN ((101, 5, 1), (102, 18446744073709551615, 0))"
        );
    }

    #[test]
    fn a_refused_lead_does_not_block_the_backlog_the_probe_rotates() {
        let q = backlog_sql(
            Some("m1"),
            Some(State::Waiting),
            Order::LeastRecentlyTried,
            100,
        );
        assert!(
            q.contains("ORDER BY merchant_id, updated_at, lead_inserted_at, room_id, viewer_id, client_lead_id LIMIT 100"),
            "{q}"
        );
        // Three waiting leads; the oldest (a) is refused by the receiver
        // every time, the others would get through. A pass probes the
        // least recently tried entry; a failed probe stops the pass and
        // writes that entry again with a later updated_at (BacklogRow::next).
        let at = |at_ms, viewer_id| Position {
            at_ms,
            room_id: 1,
            viewer_id,
            client_lead_id: 1,
        };
        let mut store: Vec<BacklogRow> = [(1_000, 1, 10), (2_000, 2, 10), (3_000, 3, 20)]
            .iter()
            .map(|&(t, v, now)| BacklogRow::waiting("m1", &at(t, v), 8, "http 500", now))
            .collect();
        let mut probed = Vec::new();
        let mut now = 100;
        for _pass in 0..3 {
            let mut pass: Vec<BacklogRow> = store
                .iter()
                .filter(|r| r.state == "waiting")
                .cloned()
                .collect();
            sort_least_recently_tried(&mut pass);
            let Some(probe) = pass.first() else { break };
            probed.push(probe.viewer_id);
            // Viewer 1's lead is refused; the others are delivered (a
            // delivered probe lets the pass go on: they all are).
            let written: Vec<BacklogRow> = if probe.viewer_id == 1 {
                vec![probe.next(State::Waiting, probe.attempts + 1, Some("http 422"), now)]
            } else {
                pass.iter()
                    .map(|e| {
                        if e.viewer_id == 1 {
                            e.next(State::Waiting, e.attempts + 1, Some("http 422"), now)
                        } else {
                            e.next(State::Delivered, e.attempts + 1, None, now)
                        }
                    })
                    .collect()
            };
            for w in written {
                if let Some(r) = store.iter_mut().find(|r| r.position() == w.position()) {
                    assert!(w.updated_ms > r.updated_ms, "a try moves it back");
                    *r = w;
                }
            }
            now += 100;
        }
        assert_eq!(
            probed,
            [1, 2, 1],
            "the refused lead probes first, then the next one gets its turn"
        );
        let states: Vec<&str> = store.iter().map(|r| r.state.as_str()).collect();
        assert_eq!(states, ["waiting", "delivered", "delivered"]);
        // Equal times: the older lead first.
        let mut tie = vec![
            BacklogRow::waiting("m1", &at(2, 2), 1, "", 5),
            BacklogRow::waiting("m1", &at(1, 1), 1, "", 5),
        ];
        sort_least_recently_tried(&mut tie);
        assert_eq!(tie[0].viewer_id, 1);
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

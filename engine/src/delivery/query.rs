//! What a pull reads and writes (sans-IO): the SQL of a page, the rows it
//! returns, their decryption into the JSON a merchant gets, and the audit
//! rows.
//!
//! A page is the merchant's leads in the order `(inserted_at, room_id,
//! viewer_id, client_lead_id)` (the order they reached ClickHouse: a lead
//! stored late, after an outage or a failover, comes after the cursor, not
//! behind it) strictly after the cursor, up to `now - settle`:
//! - rooms: the merchant's rooms now (`room_merchants FINAL`), read first
//!   and passed as a literal list (an `IN (subquery)` over a
//!   `Distributed` table inside a query over another one is refused by
//!   ClickHouse's default `distributed_product_mode`);
//! - one row per lead: the first decision per `(room_id, viewer_id,
//!   client_lead_id)`, as `leads_unique` keeps it, but computed over the
//!   merchant's rooms only (the room filter is part of the key, so it may
//!   be applied before the dedup; a verdict filter may not), and over the
//!   rows stored since [`DEDUP_HORIZON_MS`] before the cursor (so a page
//!   does not read the merchant's whole history: a copy of a lead stored
//!   more than that after its first is delivered again, same identity);
//! - `verdict = 'accepted'` (and `'suspect'` when asked for), with
//!   consent;
//! - not withdrawn or erased: no row for the lead's key in
//!   `lead_withdrawals` (`GLOBAL NOT IN`: the set is read once, also
//!   through a cluster's `Distributed` tables).

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::cursor::Position;
use crate::pii::{Aad, PiiKeys};

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page size.
pub const MAX_LIMIT: u32 = 1_000;

/// One page request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The merchant's rooms.
    pub rooms: Vec<u64>,
    /// The last delivered lead (`None`: from the start).
    pub after: Option<Position>,
    /// Only leads stored (`inserted_at`) at or before this (now − settle
    /// delay), Unix ms.
    pub upto_ms: i64,
    /// Deliver `suspect` leads too.
    pub include_suspect: bool,
    /// Most leads.
    pub limit: u32,
}

/// The query of the merchant's current rooms (bind: the merchant id).
pub const ROOMS_SQL: &str =
    "SELECT room_id FROM room_merchants FINAL WHERE merchant_id = ? ORDER BY room_id";

/// How far before the cursor a page looks for earlier copies of a lead
/// (the first decision wins): a day.
pub const DEDUP_HORIZON_MS: i64 = 24 * 3_600_000;

/// The columns a page reads from `leads` (the delivery role's grant).
pub const LEAD_COLUMNS: &[&str] = &[
    "room_id",
    "ts",
    "viewer_id",
    "client_lead_id",
    "verdict",
    "phone_enc",
    "wechat_enc",
    "name_enc",
    "fields_enc",
    "pii_key_id",
    "consent",
    "consent_version",
    "inserted_at",
];

/// The SQL of `p` (every value is a number or a fixed word: no
/// injection).
pub fn leads_sql(p: &Page) -> String {
    let rooms = p
        .rooms
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let verdicts = if p.include_suspect {
        "'accepted', 'suspect'"
    } else {
        "'accepted'"
    };
    let (after, horizon) = match p.after {
        Some(a) => (
            format!(
                " AND (inserted_at, room_id, viewer_id, client_lead_id) > \
                 (fromUnixTimestamp64Milli(toInt64({})), {}, {}, {})",
                a.at_ms, a.room_id, a.viewer_id, a.client_lead_id
            ),
            format!(
                " AND inserted_at > fromUnixTimestamp64Milli(toInt64({}))",
                a.at_ms.saturating_sub(DEDUP_HORIZON_MS)
            ),
        ),
        None => (String::new(), String::new()),
    };
    let cols = LEAD_COLUMNS.join(", ");
    format!(
        "SELECT room_id, toUnixTimestamp64Milli(ts) AS ts_ms, viewer_id, client_lead_id, verdict, \
         phone_enc, wechat_enc, name_enc, fields_enc, pii_key_id, consent, consent_version, \
         toUnixTimestamp64Milli(inserted_at) AS at_ms \
         FROM (SELECT {cols} FROM leads \
         WHERE room_id IN ({rooms}) AND inserted_at <= fromUnixTimestamp64Milli(toInt64({upto})){horizon} \
         AND (room_id, viewer_id, client_lead_id) GLOBAL NOT IN \
         (SELECT room_id, viewer_id, client_lead_id FROM lead_withdrawals WHERE room_id IN ({rooms})) \
         ORDER BY room_id, viewer_id, client_lead_id, ts \
         LIMIT 1 BY room_id, viewer_id, client_lead_id) \
         WHERE verdict IN ({verdicts}) AND consent{after} \
         ORDER BY inserted_at, room_id, viewer_id, client_lead_id \
         LIMIT {limit}",
        upto = p.upto_ms,
        limit = p.limit.clamp(1, MAX_LIMIT),
    )
}

/// A row of [`leads_sql`].
#[derive(Debug, Clone, Row, Deserialize, PartialEq, Eq)]
pub struct LeadRow {
    /// Room.
    pub room_id: u64,
    /// `ts`, Unix ms.
    pub ts_ms: i64,
    /// Viewer.
    pub viewer_id: u64,
    /// The viewer's lead id.
    pub client_lead_id: u64,
    /// `accepted` or `suspect`.
    pub verdict: String,
    /// Ciphertexts (hex; `''` = not given).
    pub phone_enc: String,
    /// WeChat id, encrypted.
    pub wechat_enc: String,
    /// Name, encrypted.
    pub name_enc: String,
    /// Form fields (JSON `[[name, value], …]`), encrypted.
    pub fields_enc: String,
    /// The key the ciphertexts are under.
    pub pii_key_id: String,
    /// The viewer agreed to be contacted.
    pub consent: bool,
    /// The consent text version the viewer saw.
    pub consent_version: String,
    /// `inserted_at`, Unix ms: its place in the delivery order.
    pub at_ms: i64,
}

impl LeadRow {
    /// Its place in the delivery order.
    pub fn position(&self) -> Position {
        Position {
            at_ms: self.at_ms,
            room_id: self.room_id,
            viewer_id: self.viewer_id,
            client_lead_id: self.client_lead_id,
        }
    }
}

/// A lead as a merchant gets it: decrypted, no HMACs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Delivered {
    /// Room.
    pub room_id: u64,
    /// Viewer (the platform's pseudonymous id).
    pub viewer_id: u64,
    /// The viewer's lead id: with room and viewer, the lead's identity.
    pub client_lead_id: u64,
    /// When the engine decided it, Unix ms.
    pub ts: i64,
    /// `accepted` or `suspect`.
    pub verdict: String,
    /// Phone (E.164 when it parsed as one), `null` if not given.
    pub phone: Option<String>,
    /// WeChat id, `null` if not given.
    pub wechat: Option<String>,
    /// Name, `null` if not given.
    pub name: Option<String>,
    /// Extra form fields, name → value.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The viewer agreed to be contacted.
    pub consent: bool,
    /// The version of the consent text the viewer agreed to (`""` from
    /// older apps).
    pub consent_version: String,
    /// When the lead reached ClickHouse (its place in the delivery
    /// order), Unix ms; not sent to merchants.
    #[serde(skip)]
    pub at_ms: i64,
    /// False when a ciphertext did not decrypt (a key this engine no
    /// longer derives): those fields are `null`.
    pub decrypted: bool,
}

/// Decrypt `row` with the engine's keys, under the key id it names.
pub fn decrypt(row: &LeadRow, keys: &PiiKeys) -> Delivered {
    let mut ok = true;
    let mut open = |column: &str, enc: &str| -> Option<String> {
        if enc.is_empty() {
            return None;
        }
        let aad = Aad {
            table: "leads",
            column,
            room_id: row.room_id,
            viewer_id: row.viewer_id,
            client_id: row.client_lead_id,
        };
        let plain = keys.decrypt_hex_as(&row.pii_key_id, enc, aad);
        ok &= plain.is_some();
        plain
    };
    let phone = open("phone_enc", &row.phone_enc);
    let wechat = open("wechat_enc", &row.wechat_enc);
    let name = open("name_enc", &row.name_enc);
    let fields_json = open("fields_enc", &row.fields_enc);
    let mut fields = serde_json::Map::new();
    if let Some(j) = fields_json {
        match serde_json::from_str::<Vec<(String, String)>>(&j) {
            Ok(pairs) => {
                for (k, v) in pairs {
                    fields.insert(k, serde_json::Value::String(v));
                }
            }
            Err(_) => ok = false,
        }
    }
    Delivered {
        room_id: row.room_id,
        viewer_id: row.viewer_id,
        client_lead_id: row.client_lead_id,
        ts: row.ts_ms,
        verdict: row.verdict.clone(),
        phone,
        wechat,
        name,
        fields,
        consent: row.consent,
        consent_version: row.consent_version.clone(),
        at_ms: row.at_ms,
        decrypted: ok,
    }
}

/// A SQL string literal. `?` is written as `\x3F`: the `clickhouse`
/// crate takes a bare `?` anywhere in a query for a bind placeholder.
fn literal(s: &str) -> String {
    format!(
        "'{}'",
        s.replace('\\', "\\\\")
            .replace('\'', "\\'")
            .replace('?', "\\x3F")
    )
}

/// The `lead_audit` insert for leads delivered by `actor` (a key id) of
/// `merchant` at `now_ms`: one row per lead, `action = 'pull'`; `detail`
/// carries the verdict and `undecryptable` when it was.
pub fn audit_sql(now_ms: i64, merchant: &str, actor: &str, leads: &[Delivered]) -> String {
    let rows = leads
        .iter()
        .map(|l| {
            let detail = if l.decrypted {
                format!("verdict={}", l.verdict)
            } else {
                format!("verdict={};undecryptable", l.verdict)
            };
            format!(
                "(fromUnixTimestamp64Milli(toInt64({now_ms})), {}, {}, 'pull', {}, {}, {}, {})",
                literal(merchant),
                literal(actor),
                l.room_id,
                l.viewer_id,
                l.client_lead_id,
                literal(&detail)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO lead_audit (ts, merchant_id, actor, action, room_id, viewer_id, \
         client_lead_id, detail) VALUES {rows}"
    )
}

/// The `lead_audit` row of an erasure request by `actor` (a key id) of
/// `merchant`: `action = 'erase'`, written before the request.
pub fn erase_audit_sql(
    now_ms: i64,
    merchant: &str,
    actor: &str,
    lead: &crate::erase::LeadKey,
) -> String {
    format!(
        "INSERT INTO lead_audit (ts, merchant_id, actor, action, room_id, viewer_id, \
         client_lead_id, detail) VALUES (fromUnixTimestamp64Milli(toInt64({now_ms})), {}, {}, \
         'erase', {}, {}, {}, 'requested')",
        literal(merchant),
        literal(actor),
        lead.room_id,
        lead.viewer_id,
        lead.client_lead_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> PiiKeys {
        PiiKeys::from_hex(&"01".repeat(32), &"02".repeat(32), "k1").unwrap()
    }

    #[test]
    fn a_page_reads_first_decisions_of_the_rooms_after_the_cursor() {
        let mut p = Page {
            rooms: vec![101, 102],
            after: None,
            upto_ms: 1_000,
            include_suspect: false,
            limit: 5,
        };
        let sql = leads_sql(&p);
        assert!(sql.contains(
            "WHERE room_id IN (101,102) AND inserted_at <= fromUnixTimestamp64Milli(toInt64(1000)) AND (room_id"
        ));
        assert!(sql.contains("LIMIT 1 BY room_id, viewer_id, client_lead_id)"));
        // Withdrawn and erased leads are left out before the dedup (the
        // key is the dedup key).
        assert!(sql.contains(
            "AND (room_id, viewer_id, client_lead_id) GLOBAL NOT IN (SELECT room_id, viewer_id, client_lead_id FROM lead_withdrawals WHERE room_id IN (101,102)) ORDER BY room_id, viewer_id, client_lead_id, ts"
        ));
        assert!(sql.contains(
            "WHERE verdict IN ('accepted') AND consent ORDER BY inserted_at, room_id, viewer_id, client_lead_id LIMIT 5"
        ));
        assert!(!sql.contains("_hmac") && !sql.contains("phone_masked"));
        // The dedup runs before the verdict and cursor filters: a later
        // duplicate of an earlier lead is never delivered.
        let dedup = sql.find("LIMIT 1 BY").unwrap();
        assert!(sql.find("verdict IN").unwrap() > dedup);
        p.after = Some(Position {
            at_ms: 90_000_000,
            room_id: 101,
            viewer_id: 3,
            client_lead_id: 4,
        });
        p.include_suspect = true;
        p.limit = 50_000;
        let sql = leads_sql(&p);
        assert!(sql.contains(
            "WHERE verdict IN ('accepted', 'suspect') AND consent AND (inserted_at, room_id, viewer_id, client_lead_id) > (fromUnixTimestamp64Milli(toInt64(90000000)), 101, 3, 4)"
        ));
        // After a cursor, earlier copies are looked for a day back only.
        assert!(sql.contains(
            "AND inserted_at <= fromUnixTimestamp64Milli(toInt64(1000)) AND inserted_at > fromUnixTimestamp64Milli(toInt64(3600000)) AND (room_id"
        ));
        assert!(sql.ends_with("LIMIT 1000"));
    }

    #[test]
    fn rows_decrypt_in_their_place_only() {
        let k = keys();
        let at = |column| Aad {
            table: "leads",
            column,
            room_id: 7,
            viewer_id: 8,
            client_id: 9,
        };
        let mut row = LeadRow {
            room_id: 7,
            ts_ms: 5,
            at_ms: 6,
            viewer_id: 8,
            client_lead_id: 9,
            verdict: "accepted".into(),
            phone_enc: k.encrypt_hex("+8613800138000", at("phone_enc")),
            wechat_enc: String::new(),
            name_enc: k.encrypt_hex("王五", at("name_enc")),
            fields_enc: k.encrypt_hex(r#"[["course","piano"]]"#, at("fields_enc")),
            pii_key_id: "k1".into(),
            consent: true,
            consent_version: "v3".into(),
        };
        let d = decrypt(&row, &k);
        assert_eq!(d.phone.as_deref(), Some("+8613800138000"));
        assert_eq!((d.wechat, d.name.as_deref()), (None, Some("王五")));
        assert_eq!(d.fields["course"], "piano");
        assert!(d.decrypted && d.consent);
        let json = serde_json::to_string(&decrypt(&row, &k)).unwrap();
        assert!(!json.contains("hmac") && !json.contains("_enc"), "{json}");
        // Another row's ciphertext (or key id) does not decrypt here.
        row.client_lead_id = 10;
        let d = decrypt(&row, &k);
        assert!(!d.decrypted && d.phone.is_none());
        let sql = audit_sql(1_000, "m1", "k1", &[d]);
        assert_eq!(
            sql,
            "INSERT INTO lead_audit (ts, merchant_id, actor, action, room_id, viewer_id, client_lead_id, detail) \
             VALUES (fromUnixTimestamp64Milli(toInt64(1000)), 'm1', 'k1', 'pull', 7, 8, 10, 'verdict=accepted;undecryptable')"
        );
        assert_eq!(literal(r"a'b\"), r"'a\'b\\'");
        assert_eq!(literal("a?b"), r"'a\x3Fb'");
    }
}

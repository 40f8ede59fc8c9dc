//! Row types, one per table, as the `clickhouse` crate serialises them
//! (RowBinary, field order = column order in `schemas/`).

use clickhouse::Row;
use serde::Serialize;

/// Estimated in-memory/wire size of a row, for the batcher's byte limit.
pub trait RowSize {
    /// Approximate bytes.
    fn size(&self) -> usize;
}

/// `chat_messages`.
#[derive(Debug, Clone, Row, Serialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ChatRow {
    pub room_id: u64,
    /// Unix ms.
    pub ts: i64,
    pub viewer_id: u64,
    pub session_id: u64,
    pub client_msg_id: u64,
    pub text: String,
    pub verdict: &'static str,
    pub dry_run_reasons: Vec<&'static str>,
}

/// `like_ticks`: taps per room per second.
#[derive(Debug, Clone, Row, Serialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct LikeRow {
    pub room_id: u64,
    /// Unix seconds.
    pub ts: u32,
    pub taps: u64,
}

/// `leads`.
#[derive(Debug, Clone, Row, Serialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct LeadRow {
    pub room_id: u64,
    pub ts: i64,
    pub viewer_id: u64,
    pub session_id: u64,
    pub client_lead_id: u64,
    pub verdict: &'static str,
    /// The ack's reason (what a resend is answered with).
    pub reason: &'static str,
    pub score: u8,
    pub reasons: Vec<&'static str>,
    pub dry_run_reasons: Vec<&'static str>,
    pub phone_hmac: String,
    pub phone_masked: String,
    pub phone_enc: String,
    pub wechat_enc: String,
    pub name_enc: String,
    pub fields_enc: String,
    /// Id of the key `*_enc` are encrypted under (bound into each).
    pub pii_key_id: String,
    pub ip_hmac: String,
    pub consent: bool,
    /// The consent text version the viewer saw ('' = not sent).
    pub consent_version: String,
    pub fill_ms: u32,
}

/// `sessions`: one row at join, one at leave.
#[derive(Debug, Clone, Row, Serialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SessionRow {
    pub room_id: u64,
    pub ts: i64,
    pub viewer_id: u64,
    pub session_id: u64,
    pub event: &'static str,
    pub watch_ms: u64,
    pub client: String,
    pub close: &'static str,
}

/// `moderation_events`: every reject and dry-run reject.
#[derive(Debug, Clone, Row, Serialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ModerationRow {
    pub room_id: u64,
    pub ts: i64,
    pub viewer_id: u64,
    pub session_id: u64,
    pub kind: &'static str,
    pub client_id: u64,
    pub reason: &'static str,
    pub dry_run: bool,
    /// Events this row stands for (rejects are aggregated per viewer,
    /// reason and bucket).
    pub count: u32,
    /// A sample: the first message of the bucket (contacts masked), or the
    /// like taps over the cap.
    pub detail: String,
}

/// `lead_withdrawals`: a withdrawal (the viewer's `Withdraw` frame) or an
/// erasure request (merchant API, admin API) of one lead.
#[derive(Debug, Clone, Row, Serialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct WithdrawalRow {
    /// Unix ms.
    pub ts: i64,
    pub room_id: u64,
    pub viewer_id: u64,
    pub client_lead_id: u64,
    /// `withdraw` or `erase`.
    pub action: &'static str,
    /// `viewer`, `merchant` or `admin`.
    pub source: &'static str,
    /// The session id, API key id or admin caller.
    pub actor: String,
}

/// `like_viewers`: like taps one viewer made in a room in one minute.
#[derive(Debug, Clone, Row, Serialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct LikeViewerRow {
    pub room_id: u64,
    /// Unix seconds, a whole minute.
    pub minute: u32,
    pub viewer_id: u64,
    pub taps: u64,
}

impl RowSize for ChatRow {
    fn size(&self) -> usize {
        48 + self.text.len() + self.dry_run_reasons.len() * 16
    }
}
impl RowSize for LikeRow {
    fn size(&self) -> usize {
        20
    }
}
impl RowSize for LeadRow {
    fn size(&self) -> usize {
        64 + self.phone_hmac.len()
            + self.phone_masked.len()
            + self.phone_enc.len()
            + self.wechat_enc.len()
            + self.name_enc.len()
            + self.fields_enc.len()
            + self.ip_hmac.len()
            + self.consent_version.len()
            + (self.reasons.len() + self.dry_run_reasons.len()) * 16
    }
}
impl RowSize for SessionRow {
    fn size(&self) -> usize {
        56 + self.client.len()
    }
}
impl RowSize for ModerationRow {
    fn size(&self) -> usize {
        64 + self.detail.len()
    }
}

impl RowSize for WithdrawalRow {
    fn size(&self) -> usize {
        56 + self.actor.len()
    }
}
impl RowSize for LikeViewerRow {
    fn size(&self) -> usize {
        28
    }
}

macro_rules! table_row {
    ($row:ident, $variant:ident, $table:ident) => {
        table_row!($row, $variant, $table, |r| r, |r| r);
    };
    ($row:ident, $variant:ident, $table:ident, $unwrap:expr, $wrap:expr) => {
        impl super::writer::TableRow for $row {
            const TABLE: crate::table::Table = crate::table::Table::$table;
            fn from_row(row: crate::wal::Row) -> Option<Self> {
                match row {
                    crate::wal::Row::$variant(r) => Some($unwrap(r)),
                    _ => None,
                }
            }
            fn into_row(self) -> crate::wal::Row {
                crate::wal::Row::$variant($wrap(self))
            }
        }
    };
}
table_row!(ChatRow, Chat, Chat);
table_row!(LikeRow, Like, Likes);
table_row!(LeadRow, Lead, Leads, |r: Box<LeadRow>| *r, Box::new);
table_row!(SessionRow, Session, Sessions);
table_row!(ModerationRow, Moderation, Moderation);
table_row!(WithdrawalRow, Withdrawal, Withdrawals);
table_row!(LikeViewerRow, LikeViewer, LikeViewers);

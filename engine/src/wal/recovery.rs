//! What a restart must redo, read from the log (sans-IO): per table, how
//! far rows are committed and which recorded inserts may not have been;
//! and every lead's verdict, to answer resends as replays.

use super::codec::{Entry, Outcome, Row};
use crate::table::Table;

/// An idempotency entry restored at start: a lead or chat message already
/// decided, and the verdict a resend is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenId {
    /// A lead (`true`) or a chat message.
    pub lead: bool,
    /// Room.
    pub room_id: u64,
    /// Viewer.
    pub viewer_id: u64,
    /// The client's id (`client_lead_id` or `client_msg_id`).
    pub client_id: u64,
    /// Verdict name.
    pub verdict: &'static str,
    /// Reason name.
    pub reason: &'static str,
    /// When it was received, Unix ms.
    pub ts: i64,
}

/// Chat rejects that tell the viewer to retry later: not a verdict on the
/// message, never remembered (as in the guard).
pub const RETRY_LATER: [&str; 4] = ["busy", "rate_limited", "slow_mode", "muted"];

/// The idempotency entry a logged row stands for, if any.
pub fn seen_id(row: &Row) -> Option<SeenId> {
    match row {
        Row::Lead(l) => Some(SeenId {
            lead: true,
            room_id: l.room_id,
            viewer_id: l.viewer_id,
            client_id: l.client_lead_id,
            verdict: l.verdict,
            reason: l.reason,
            ts: l.ts,
        }),
        Row::Chat(c) => Some(SeenId {
            lead: false,
            room_id: c.room_id,
            viewer_id: c.viewer_id,
            client_id: c.client_msg_id,
            verdict: c.verdict,
            reason: "none",
            ts: c.ts,
        }),
        Row::Moderation(m)
            if m.kind == "chat" && !m.dry_run && !RETRY_LATER.contains(&m.reason) =>
        {
            Some(SeenId {
                lead: false,
                room_id: m.room_id,
                viewer_id: m.viewer_id,
                client_id: m.client_id,
                verdict: "rejected",
                reason: m.reason,
                ts: m.ts,
            })
        }
        _ => None,
    }
}

/// An insert recorded in the log (`Entry::Batch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMark {
    /// First row's LSN.
    pub first: u64,
    /// Last row's LSN.
    pub last: u64,
    /// Rows.
    pub rows: u32,
}

/// One table's state after recovery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableRecovery {
    /// Every row of this table with an LSN ≤ this is committed (or set
    /// aside).
    pub done_through: u64,
    /// Inserts recorded but not known to be done, in order: each is
    /// re-sent exactly, with the same token, before anything else.
    pub pending: Vec<BatchMark>,
    /// Rows of this table in the log after `done_through`.
    pub rows_after: u64,
}

/// Recovery state, built by [`Recovery::observe`]-ing every entry in LSN
/// order.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Per table, in [`Table::ALL`] order.
    pub tables: [TableRecovery; Table::COUNT],
    /// Leads and chat messages decided in the log (committed or not), in
    /// log order. Chat rejects that mean "retry later" are not included.
    pub seen: Vec<SeenId>,
    /// Rows per table seen (for the start-up log line).
    rows: [Vec<u64>; Table::COUNT],
}

impl Recovery {
    /// Take one entry into account.
    pub fn observe(&mut self, lsn: u64, entry: Entry) {
        match entry {
            Entry::Row(row) => {
                let t = row.table();
                if let Some(seen) = seen_id(&row) {
                    self.seen.push(seen);
                }
                self.rows[t.index()].push(lsn);
            }
            Entry::Batch {
                table,
                first,
                last,
                rows,
            } => self.tables[table.index()]
                .pending
                .push(BatchMark { first, last, rows }),
            Entry::Done {
                table,
                last,
                outcome,
                ..
            } => {
                let t = &mut self.tables[table.index()];
                t.done_through = t.done_through.max(last);
                t.pending.retain(|b| b.last > last);
                if outcome == Outcome::SetAside {
                    tracing::debug!(%table, last, "recovered a set-aside batch marker");
                }
            }
        }
    }

    /// Finish: count the rows each table still has to send.
    pub fn finish(mut self) -> Self {
        for t in Table::ALL {
            let done = self.tables[t.index()].done_through;
            let after = self.rows[t.index()].iter().filter(|&&l| l > done).count();
            self.tables[t.index()].rows_after = after as u64;
            self.rows[t.index()] = Vec::new();
        }
        self
    }

    /// The state of `table`.
    pub fn table(&self, table: Table) -> &TableRecovery {
        &self.tables[table.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::codec::tests::lead;

    #[test]
    fn done_markers_settle_batches_and_leads_are_remembered() {
        let mut r = Recovery::default();
        r.observe(1, Entry::Row(lead(1, 2, 3)));
        r.observe(2, Entry::Row(lead(1, 2, 4)));
        let b = |first, last| Entry::Batch {
            table: Table::Leads,
            first,
            last,
            rows: 1,
        };
        r.observe(3, b(1, 1));
        r.observe(4, b(2, 2));
        r.observe(
            5,
            Entry::Done {
                table: Table::Leads,
                first: 1,
                last: 1,
                outcome: Outcome::Committed,
            },
        );
        let r = r.finish();
        let t = r.table(Table::Leads);
        assert_eq!(t.done_through, 1);
        assert_eq!(
            t.pending,
            vec![BatchMark {
                first: 2,
                last: 2,
                rows: 1
            }]
        );
        assert_eq!(t.rows_after, 1);
        assert_eq!(r.seen.len(), 2);
        assert!(r.seen.iter().all(|s| s.lead));
        assert_eq!(r.table(Table::Chat), &TableRecovery::default());
    }
}

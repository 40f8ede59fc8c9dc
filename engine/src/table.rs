//! The tables the engine writes, as one enum: names, indices and per-table
//! settings are looked up here and nowhere else.

/// A ClickHouse table the sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `chat_messages`: accepted (and dry-run) chat.
    Chat = 0,
    /// `like_ticks`: taps per room per second.
    Likes = 1,
    /// `leads`: every lead with its verdict.
    Leads = 2,
    /// `sessions`: join / leave.
    Sessions = 3,
    /// `moderation_events`: every reject and dry-run reject.
    Moderation = 4,
    /// `lead_withdrawals`: viewers' withdrawals of their leads.
    Withdrawals = 5,
    /// `like_viewers`: like taps per room, minute and viewer.
    LikeViewers = 6,
}

impl Table {
    /// Every table, in index order.
    pub const ALL: [Table; 7] = [
        Table::Chat,
        Table::Likes,
        Table::Leads,
        Table::Sessions,
        Table::Moderation,
        Table::Withdrawals,
        Table::LikeViewers,
    ];

    /// Number of tables.
    pub const COUNT: usize = 7;

    /// The table's name in ClickHouse.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Chat => "chat_messages",
            Table::Likes => "like_ticks",
            Table::Leads => "leads",
            Table::Sessions => "sessions",
            Table::Moderation => "moderation_events",
            Table::Withdrawals => "lead_withdrawals",
            Table::LikeViewers => "like_viewers",
        }
    }

    /// Index into per-table arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The table with this index (the log's record tag).
    pub fn from_index(i: u8) -> Option<Table> {
        Table::ALL.get(usize::from(i)).copied()
    }

    /// The table with this ClickHouse name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indices_round_trip() {
        for t in Table::ALL {
            assert_eq!(Table::from_name(t.name()), Some(t));
            assert_eq!(Table::from_index(t.index() as u8), Some(t));
        }
        assert_eq!(Table::from_name("lead"), None);
        assert_eq!(Table::from_index(7), None);
    }
}

//! Per-room and per-viewer guard state, owned by one shard worker.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::limiter::{Gcra, SlidingCount, Tat};
use super::terms::BlockedTerms;

/// One viewer's chat and like state in one room.
#[derive(Debug, Default)]
pub(crate) struct ViewerState {
    pub chat_tat: Tat,
    pub like_tat: Tat,
    /// Unix ms of the last accepted chat message (slow mode).
    pub last_chat_ms: i64,
    /// (hash of normalized text, ms) of recent accepted messages.
    pub recent: VecDeque<(u64, i64)>,
    /// Rejects in the auto-mute window.
    pub rejects: SlidingCount,
    /// Muted until (Unix ms); `i64::MAX` = until unmuted.
    pub muted_until: i64,
    /// Banned from the room.
    pub banned: bool,
    /// Open sessions of this viewer in the room.
    pub sessions: u32,
}

/// Copies of one text seen in a room (raid detection).
#[derive(Debug, Default)]
pub(crate) struct RaidEntry {
    /// Distinct viewers and when each last posted it.
    pub viewers: Vec<(u64, i64)>,
    /// Last time any copy arrived.
    pub last_ms: i64,
    /// A wave was detected; copies are rejected while it lasts.
    pub wave: bool,
}

/// One room's settings and state.
#[derive(Debug, Default)]
pub(crate) struct RoomState {
    pub slow_mode_secs: Option<u32>,
    pub chat_per_sec: Option<u32>,
    pub viewer_messages: Option<u32>,
    pub term_list: Vec<String>,
    pub terms: Option<BlockedTerms>,
    /// Room-wide chat limiter state and its current limiter.
    pub room_tat: Tat,
    pub viewers: FxHashMap<u64, ViewerState>,
    pub raids: FxHashMap<u64, RaidEntry>,
    /// Insertion order of `raids` keys, for capacity eviction.
    pub raid_order: VecDeque<u64>,
    /// True when the room has settings that must outlive its viewers.
    pub pinned: bool,
}

impl RoomState {
    /// Effective room-wide chat limiter.
    pub fn room_limiter(&self, default_per_sec: u32) -> Gcra {
        let per_sec = self.chat_per_sec.unwrap_or(default_per_sec).max(1);
        Gcra::new(per_sec, 1_000, per_sec)
    }

    /// Rebuild the room's term matcher from `term_list`.
    pub fn rebuild_terms(&mut self) -> Result<(), super::terms::TermError> {
        self.terms = if self.term_list.is_empty() {
            None
        } else {
            Some(BlockedTerms::new(&self.term_list)?)
        };
        Ok(())
    }
}

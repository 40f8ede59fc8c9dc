//! The event that flows from the gate through a shard into the guard.

use crate::wire::{CloseCode, Lead, ServerFrame};

/// Where frames for one viewer's connection go (acks, notices, a close).
pub trait Replier: Send + Sync + std::fmt::Debug {
    /// Queue a frame to the viewer; never blocks.
    fn reply(&self, frame: ServerFrame);
    /// Close the viewer's connection with `code`.
    fn close(&self, code: CloseCode);
    /// Close with `code` after the frames already queued to the viewer are
    /// written (the ack that explains the close goes out first).
    fn close_after_replies(&self, code: CloseCode) {
        self.close(code);
    }
    /// The session's room moved to another engine node: refuse new chat
    /// messages and leads, and close with `wrong_node` once every one
    /// already handed over is acked, so the client has nothing to resend
    /// that this node also stores.
    fn move_away(&self) {
        self.close_after_replies(CloseCode::WrongNode);
    }
}

/// One thing a viewer did, as the gate hands it to a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Room from the viewer's ticket.
    pub room_id: u64,
    /// Viewer from the ticket.
    pub viewer_id: u64,
    /// Engine-assigned session id.
    pub session_id: u64,
    /// When the gate decoded it, Unix milliseconds.
    pub received_at_ms: i64,
    /// What happened.
    pub kind: EventKind,
}

/// The payload of an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The viewer's session started (valid `Hello`).
    Join {
        /// Client description from `Hello`.
        client: String,
        /// Remote IP address, as text.
        ip: String,
    },
    /// The session ended.
    Leave {
        /// When the session started, Unix milliseconds.
        joined_at_ms: i64,
        /// Close code name (`normal`, `idle_timeout`, …).
        close: &'static str,
    },
    /// A chat message.
    Chat {
        /// Client id.
        client_msg_id: u64,
        /// Text.
        text: String,
    },
    /// Like taps (possibly coalesced from several frames).
    Like {
        /// Taps.
        count: u32,
        /// Over how many ms the taps arrived (0 for one frame of an unpaced
        /// client; the gate sets it when it coalesced frames held back by a
        /// full queue, and to the time since the previous like frame, at
        /// most the pace, for a client told a like pace), so the guard
        /// judges them at the rate they were tapped.
        spread_ms: u32,
    },
    /// A lead submission.
    Lead {
        /// The form as received.
        lead: Box<Lead>,
        /// Remote IP address, as text.
        ip: String,
    },
    /// The viewer withdraws one of its leads in this room.
    Withdraw {
        /// The lead's client id.
        client_lead_id: u64,
    },
}

/// Event kinds, for counters and overflow policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Join / leave.
    Session = 0,
    /// Chat.
    Chat = 1,
    /// Likes.
    Like = 2,
    /// Leads.
    Lead = 3,
}

impl Kind {
    /// All kinds, in index order.
    pub const ALL: [Kind; 4] = [Kind::Session, Kind::Chat, Kind::Like, Kind::Lead];

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Session => "session",
            Kind::Chat => "chat",
            Kind::Like => "like",
            Kind::Lead => "lead",
        }
    }
}

impl EventKind {
    /// The kind of this payload.
    pub fn kind(&self) -> Kind {
        match self {
            EventKind::Join { .. } | EventKind::Leave { .. } => Kind::Session,
            EventKind::Chat { .. } => Kind::Chat,
            EventKind::Like { .. } => Kind::Like,
            EventKind::Lead { .. } | EventKind::Withdraw { .. } => Kind::Lead,
        }
    }
}

//! Frame types exchanged on a viewer session's bidirectional stream.
//!
//! Frames are rkyv-archived structs. Enumerations that a newer peer may extend
//! (verdicts, reasons, notice kinds) travel as plain integers so an older peer
//! still validates the frame and can treat an unknown value gracefully.

use rkyv::{Archive, Deserialize, Serialize};

/// A frame sent by the viewer's app.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// First frame of a session: proves who the viewer is.
    Hello(Hello),
    /// A chat message.
    Chat {
        /// Client-chosen id, unique per viewer; a resend reuses it.
        client_msg_id: u64,
        /// The message text (UTF-8, validated).
        text: String,
    },
    /// One or more like taps, already summed by the app.
    Like {
        /// Number of taps (≥ 1).
        count: u32,
    },
    /// A lead form submission.
    Lead(Lead),
    /// The viewer leaves; the server closes the connection with code 0.
    Bye,
    /// A fresh ticket for the open session, sent after a `ticket_expiring`
    /// notice (or any time before expiry): same room and viewer, a later
    /// expiry than the session's. Anything else closes the connection with
    /// `bad_ticket` (an expired one: `ticket_expired`).
    Refresh {
        /// The new ticket (same format as in `Hello`).
        ticket: String,
    },
    /// The viewer withdraws a lead it sent in this room (`roomgate/2`):
    /// it is not delivered to the merchant any more and its contact
    /// details are erased. Acked (`AckKind::Withdraw`) once durable.
    Withdraw {
        /// The `client_lead_id` of the lead.
        client_lead_id: u64,
    },
}

/// The session opener.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Platform-issued ticket (see [`crate::wire::ticket`]).
    pub ticket: String,
    /// Free-form client description (app name and version), for logs.
    pub client: String,
}

/// A lead: contact details a viewer leaves for the merchant's consultant.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Lead {
    /// Client-chosen id, unique per viewer; a resend reuses it.
    pub client_lead_id: u64,
    /// Phone number as typed (normalised by the engine).
    pub phone: String,
    /// WeChat ID, may be empty.
    pub wechat: String,
    /// Name, may be empty.
    pub name: String,
    /// Extra form fields (key, value).
    pub fields: Vec<(String, String)>,
    /// The viewer ticked the consent box.
    pub consent: bool,
    /// The version of the consent text the viewer was shown (`roomgate/2`;
    /// `''` from `roomgate/1` clients).
    pub consent_version: String,
    /// A field hidden from humans; bots fill it.
    pub honeypot: String,
    /// Milliseconds between the form being shown and submitted, measured on
    /// the device (a duration, so device clock skew does not matter).
    pub fill_ms: u32,
}

/// A frame sent by the server.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// Reply to a valid `Hello`.
    Welcome(Welcome),
    /// The verdict on one chat message or lead.
    Ack {
        /// [`AckKind`] as `u8`.
        kind: u8,
        /// The client id the frame carried.
        client_id: u64,
        /// [`Verdict`] as `u8`.
        verdict: u8,
        /// [`crate::wire::Reason`] code; 0 when accepted without remark.
        reason: u16,
        /// Milliseconds the app should wait before retrying; 0 = not applicable.
        retry_after_ms: u32,
        /// True when this id was seen before: the ack repeats the first verdict
        /// and nothing new was stored.
        replay: bool,
    },
    /// Something about the room or this viewer changed.
    Notice(Notice),
}

/// Session parameters sent with `Welcome`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// Room from the ticket.
    pub room_id: u64,
    /// Viewer from the ticket.
    pub viewer_id: u64,
    /// Server-assigned session id (unique per engine process).
    pub session_id: u64,
    /// Current room settings.
    pub settings: RoomSettings,
}

/// Room settings a client needs to behave.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomSettings {
    /// Minimum seconds between one viewer's chat messages; 0 = off.
    pub slow_mode_secs: u32,
    /// Maximum chat message length in characters.
    pub max_chat_chars: u32,
    /// Maximum frame size in bytes (length prefix excluded).
    pub max_frame_bytes: u32,
}

/// A server notice.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// [`NoticeKind`] as `u8`.
    pub kind: u8,
    /// Kind-specific value (seconds of slow mode, seconds muted, …).
    pub value: u32,
    /// Human-readable text.
    pub text: String,
}

/// Which client frame an `Ack` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AckKind {
    /// A `Chat` frame.
    Chat = 1,
    /// A `Lead` frame.
    Lead = 2,
    /// A `Withdraw` frame.
    Withdraw = 3,
}

impl AckKind {
    /// Decode from the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(AckKind::Chat),
            2 => Some(AckKind::Lead),
            3 => Some(AckKind::Withdraw),
            _ => None,
        }
    }
}

/// The outcome of the guard for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Verdict {
    /// Stored and, for leads, handed to consultants.
    Accepted = 1,
    /// Stored, but flagged: a lead whose score is below the threshold, or a
    /// duplicate lead kept for the record.
    Suspect = 2,
    /// Not stored as content; recorded in `moderation_events` (leads: stored
    /// in `leads` with this verdict and its reasons).
    Rejected = 3,
    /// A lead for a phone already received in this room: stored for the
    /// record, not handed to consultants as new.
    Duplicate = 4,
}

impl Verdict {
    /// Decode from the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Verdict::Accepted),
            2 => Some(Verdict::Suspect),
            3 => Some(Verdict::Rejected),
            4 => Some(Verdict::Duplicate),
            _ => None,
        }
    }

    /// Lowercase name used in tables, metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Suspect => "suspect",
            Verdict::Rejected => "rejected",
            Verdict::Duplicate => "duplicate",
        }
    }
}

/// What a `Notice` announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NoticeKind {
    /// Slow mode changed; `value` = seconds (0 = off).
    SlowMode = 1,
    /// This viewer is muted for `value` seconds.
    Muted = 2,
    /// This viewer may chat again.
    Unmuted = 3,
    /// The server is shutting down; reconnect later.
    ShuttingDown = 4,
    /// The session's ticket expires in `value` seconds: send a `Refresh`
    /// frame with a new ticket before then, or be closed with
    /// `ticket_expired`.
    TicketExpiring = 5,
    /// A `Refresh` was accepted; the session is now valid for `value`
    /// more seconds.
    TicketRefreshed = 6,
    /// The server is overloaded: send `Like` frames at most once every
    /// `value` ms, adding up the taps between them (0 = pacing over: send
    /// as before).
    LikePace = 7,
}

impl NoticeKind {
    /// Decode from the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => NoticeKind::SlowMode,
            2 => NoticeKind::Muted,
            3 => NoticeKind::Unmuted,
            4 => NoticeKind::ShuttingDown,
            5 => NoticeKind::TicketExpiring,
            6 => NoticeKind::TicketRefreshed,
            7 => NoticeKind::LikePace,
            _ => return None,
        })
    }
}

//! Reason codes carried in `Ack` frames and close codes used to end a QUIC
//! connection. Both tables are documented in `docs/PROTOCOL.md`; codes are
//! stable and never reused.

macro_rules! reasons {
    ($( $(#[$m:meta])* $name:ident = $code:literal, $s:literal; )*) => {
        /// Why an event was not accepted as-is. Sent to the viewer, written to
        /// `moderation_events` and counted in metrics.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        #[non_exhaustive]
        pub enum Reason { $( $(#[$m])* $name = $code, )* }

        impl Reason {
            /// Every reason, in code order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// Stable lowercase name (tables, metrics, JSON).
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$name => $s,)* }
            }

            /// Decode a wire code; `None` for a code this build does not know.
            pub fn from_code(code: u16) -> Option<Self> {
                match code { $($code => Some(Reason::$name),)* _ => None }
            }
        }
    };
}

reasons! {
    /// No remark.
    None = 0, "none";
    /// The engine is overloaded (shard queue full); retry after `retry_after_ms`.
    Busy = 1, "busy";
    /// Client id seen before; the ack repeats the first verdict.
    Replay = 2, "replay";
    /// Too many messages / taps from this viewer; retry after `retry_after_ms`.
    RateLimited = 10, "rate_limited";
    /// Slow mode: wait `retry_after_ms` between messages.
    SlowMode = 11, "slow_mode";
    /// The same text from this viewer within the duplicate window.
    Duplicate = 12, "duplicate";
    /// The same text from many viewers at once (copy-paste raid).
    SpamWave = 13, "spam_wave";
    /// A blocked term (room or global list), evasions included.
    BlockedTerm = 14, "blocked_term";
    /// A link in chat.
    Link = 15, "link";
    /// Contact details in chat (phone, WeChat, QQ): poaching viewers.
    ContactInfo = 16, "contact_info";
    /// Longer than the room's maximum message length.
    TooLong = 17, "too_long";
    /// A repeated-character flood.
    Flood = 18, "flood";
    /// The viewer is muted in this room; retry after `retry_after_ms`.
    Muted = 19, "muted";
    /// The viewer is banned from this room.
    Banned = 20, "banned";
    /// Nothing left after normalization (blank or invisible characters only).
    Empty = 21, "empty";
    /// The phone number is not a valid number.
    PhoneInvalid = 30, "phone_invalid";
    /// The phone number cannot take a call (IoT / data-only ranges).
    PhoneUnreachable = 31, "phone_unreachable";
    /// Flag: a virtual-operator number (lower score).
    VirtualOperator = 32, "virtual_operator";
    /// The consent box was not ticked.
    NoConsent = 33, "no_consent";
    /// The hidden honeypot field was filled (a bot).
    BotHoneypot = 34, "bot_honeypot";
    /// Submitted too soon after the form was shown.
    TooFast = 35, "too_fast";
    /// The same phone already left a lead in this room recently.
    DuplicateLead = 36, "duplicate_lead";
    /// Too many leads from this viewer.
    VelocityViewer = 37, "velocity_viewer";
    /// Too many leads from this IP address.
    VelocityIp = 38, "velocity_ip";
    /// The same phone in too many rooms.
    VelocityPhone = 39, "velocity_phone";
    /// Flag: the number looks made up (runs like 12345678, 88888888).
    FakePattern = 40, "fake_pattern";
    /// Flag: the lead's score is below the suspect threshold.
    LowScore = 41, "low_score";
}

impl Reason {
    /// Wire code.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// Parse a stable name (config files, admin API).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.as_str() == name)
    }
}

/// A set of reasons, as a bitset over [`Reason::ALL`] positions (cheap to
/// copy, no allocation on the hot path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ReasonSet(u64);

impl ReasonSet {
    /// The empty set.
    pub const EMPTY: ReasonSet = ReasonSet(0);

    fn bit(r: Reason) -> u64 {
        let i = Reason::ALL.iter().position(|x| *x == r).unwrap_or(0);
        1u64 << (i as u32 % 64)
    }

    /// Add a reason.
    pub fn insert(&mut self, r: Reason) {
        self.0 |= Self::bit(r);
    }

    /// Remove a reason.
    pub fn remove(&mut self, r: Reason) {
        self.0 &= !Self::bit(r);
    }

    /// Membership.
    pub fn contains(self, r: Reason) -> bool {
        self.0 & Self::bit(r) != 0
    }

    /// True when empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The reasons, in code order.
    pub fn iter(self) -> impl Iterator<Item = Reason> {
        Reason::ALL
            .iter()
            .copied()
            .filter(move |r| self.contains(*r))
    }

    /// Their names, in code order.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Reason::as_str).collect()
    }
}

const _: () = assert!(
    Reason::ALL.len() <= 64,
    "ReasonSet holds at most 64 reasons"
);

/// QUIC application close codes. A connection closed by the server carries one
/// of these; the reason phrase is the [`CloseCode::as_str`] text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum CloseCode {
    /// Normal close (after `Bye`, or by the client).
    Normal = 0x00,
    /// A frame failed validation (bytecheck, UTF-8, unknown variant, empty).
    MalformedFrame = 0x10,
    /// A length prefix exceeded the maximum frame size.
    FrameTooLarge = 0x11,
    /// A field broke its limit (text too long, like count 0, …).
    InvalidField = 0x12,
    /// A frame arrived out of order (anything before `Hello`, a second `Hello`).
    UnexpectedFrame = 0x13,
    /// A frame started to arrive and did not complete within
    /// `server.frame_timeout_ms`.
    FrameTimeout = 0x14,
    /// The ticket's signature or format is wrong.
    BadTicket = 0x20,
    /// The ticket has expired.
    TicketExpired = 0x21,
    /// No `Hello` within the handshake timeout.
    HelloTimeout = 0x22,
    /// Another engine node owns the ticket's room (docs/ROUTING.md); the
    /// reason phrase is `wrong_node <owner id> <owner host:port>`.
    WrongNode = 0x23,
    /// The server is at its connection cap.
    ServerFull = 0x30,
    /// The server is shutting down.
    ShuttingDown = 0x31,
    /// The viewer is banned from the room.
    Banned = 0x32,
    /// The connection was idle too long (from QUIC's idle timeout).
    IdleTimeout = 0x33,
    /// The viewer did not read its acks fast enough (ack buffer full).
    SlowConsumer = 0x34,
    /// The viewer kept tripping hard limits (`guard.abuse`): too many
    /// rejected messages and leads in a short window.
    Abusive = 0x35,
    /// A newer session of the same viewer in the same room took this one's
    /// place (`guard.abuse.max_sessions_per_viewer`).
    SessionReplaced = 0x36,
    /// An internal error; a bug, please report.
    Internal = 0x3f,
}

impl CloseCode {
    /// Wire value.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// Stable lowercase name, also sent as the close reason phrase.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::MalformedFrame => "malformed_frame",
            CloseCode::FrameTooLarge => "frame_too_large",
            CloseCode::InvalidField => "invalid_field",
            CloseCode::UnexpectedFrame => "unexpected_frame",
            CloseCode::FrameTimeout => "frame_timeout",
            CloseCode::BadTicket => "bad_ticket",
            CloseCode::TicketExpired => "ticket_expired",
            CloseCode::HelloTimeout => "hello_timeout",
            CloseCode::WrongNode => "wrong_node",
            CloseCode::ServerFull => "server_full",
            CloseCode::ShuttingDown => "shutting_down",
            CloseCode::Banned => "banned",
            CloseCode::IdleTimeout => "idle_timeout",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::Abusive => "abusive",
            CloseCode::SessionReplaced => "session_replaced",
            CloseCode::Internal => "internal",
        }
    }

    /// Every close code.
    pub const ALL: &'static [CloseCode] = &[
        CloseCode::Normal,
        CloseCode::MalformedFrame,
        CloseCode::FrameTooLarge,
        CloseCode::InvalidField,
        CloseCode::UnexpectedFrame,
        CloseCode::FrameTimeout,
        CloseCode::BadTicket,
        CloseCode::TicketExpired,
        CloseCode::HelloTimeout,
        CloseCode::WrongNode,
        CloseCode::ServerFull,
        CloseCode::ShuttingDown,
        CloseCode::Banned,
        CloseCode::IdleTimeout,
        CloseCode::SlowConsumer,
        CloseCode::Abusive,
        CloseCode::SessionReplaced,
        CloseCode::Internal,
    ];

    /// Decode a wire value.
    pub fn from_code(code: u64) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|c| u64::from(c.code()) == code)
    }
}

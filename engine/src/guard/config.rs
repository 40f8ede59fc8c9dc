//! The guard's settings (`[guard]`, `[guard.chat]`, `[guard.likes]`,
//! `[guard.leads]`, `[[rooms]]` in the config file). Every field states its
//! default; `docs/CONFIG.md` and `docs/REASONS.md` are the reference.

use serde::Deserialize;

/// `[guard]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardConfig {
    /// How long a chat / lead client id is remembered for replay detection,
    /// seconds. Default 600.
    pub idempotency_window_secs: u64,
    /// Most client ids remembered per shard; beyond it the oldest are
    /// forgotten early (counted). Default 1,000,000.
    pub idempotency_capacity: usize,
    /// Rules in dry-run: their would-be rejects are recorded and counted as
    /// dry-run, the event passes. Names from docs/REASONS.md (e.g.
    /// `["spam_wave", "contact_info"]`). Default none.
    pub dry_run: Vec<String>,
    /// Chat rules.
    pub chat: ChatConfig,
    /// Like rules.
    pub likes: LikeConfig,
    /// Lead rules.
    pub leads: LeadConfig,
    /// Limits on what one abusive viewer may cost in storage and
    /// connections.
    pub abuse: AbuseConfig,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            idempotency_window_secs: 600,
            idempotency_capacity: 1_000_000,
            dry_run: Vec::new(),
            chat: ChatConfig::default(),
            likes: LikeConfig::default(),
            leads: LeadConfig::default(),
            abuse: AbuseConfig::default(),
        }
    }
}

/// `[guard.abuse]`: what one viewer's rejected traffic may cost.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AbuseConfig {
    /// Rejected chat and over-cap likes are recorded as one
    /// `moderation_events` row per (room, viewer, kind, reason, dry-run,
    /// bucket) with a `count` and the first message as a (masked) sample.
    /// Bucket length, ms. Default 1,000.
    pub moderation_bucket_ms: u64,
    /// Rejected chat messages and leads (not `busy`, which is the engine's
    /// overload) that disconnect a viewer with `abusive` when reached within
    /// `disconnect_window_secs`; 0 = never. Default 50.
    pub disconnect_rejects: u32,
    /// Window of `disconnect_rejects`, seconds. Default 10.
    pub disconnect_window_secs: u64,
    /// Rejected leads stored per viewer per hour as `leads` rows; beyond it a
    /// rejected lead is acked as usual but only counted in a
    /// `moderation_events` row (kind `lead`). Default 10.
    pub max_rejected_leads_per_hour: u32,
    /// `Withdraw` frames logged per viewer and room per hour; beyond it a
    /// withdrawal is rejected (`rate_limited`) without a row. Default 20.
    pub max_withdrawals_per_hour: u32,
    /// Most concurrent sessions of one viewer in one room (one ticket);
    /// a newer session closes the oldest with `session_replaced`, so an app
    /// reconnecting before its old connection timed out is let in at once.
    /// 0 = no cap. Default 2.
    pub max_sessions_per_viewer: usize,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        AbuseConfig {
            moderation_bucket_ms: 1_000,
            disconnect_rejects: 50,
            disconnect_window_secs: 10,
            max_rejected_leads_per_hour: 10,
            max_withdrawals_per_hour: 20,
            max_sessions_per_viewer: 2,
        }
    }
}

/// `[guard.chat]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// Per-viewer limit: messages per `viewer_period_secs`. Default 20.
    pub viewer_messages: u32,
    /// Per-viewer limit period, seconds. Default 30.
    pub viewer_period_secs: u64,
    /// Per-viewer burst (messages at once). Default 5.
    pub viewer_burst: u32,
    /// Room-wide cap, messages per second; beyond it `busy`. Default 40.
    pub room_per_sec: u32,
    /// Slow mode default for every room, seconds between one viewer's
    /// messages; 0 = off. Default 0.
    pub slow_mode_secs: u32,
    /// Duplicate window: same normalized text from one viewer, seconds.
    /// Default 30.
    pub duplicate_window_secs: u64,
    /// Raid: this many distinct viewers posting the same text… Default 5.
    pub raid_viewers: u32,
    /// …within this many seconds make a spam wave; it lasts while copies
    /// keep arriving within this window. Default 20.
    pub raid_window_secs: u64,
    /// Global blocked terms (`*` = any characters). Default none.
    pub blocked_terms: Vec<String>,
    /// Maximum message length, characters (≤ the wire limit). Default 200.
    pub max_chars: usize,
    /// Auto-mute after this many rejects… (0 = off). Default 5.
    pub automute_rejects: u32,
    /// …within this many seconds… Default 60.
    pub automute_window_secs: u64,
    /// …for this many seconds. Default 300.
    pub automute_secs: u64,
    /// Only texts at least this long (normalized characters) count towards
    /// a raid: short cheers ("666", "主播好") are organically repeated by
    /// many viewers at once. Default 8.
    pub raid_min_chars: usize,
    /// Texts tracked per room for raid detection (oldest forgotten first).
    /// Default 20,000.
    pub raid_capacity: usize,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            viewer_messages: 20,
            viewer_period_secs: 30,
            viewer_burst: 5,
            room_per_sec: 40,
            slow_mode_secs: 0,
            duplicate_window_secs: 30,
            raid_viewers: 5,
            raid_window_secs: 20,
            blocked_terms: Vec::new(),
            max_chars: 200,
            automute_rejects: 5,
            automute_window_secs: 60,
            automute_secs: 300,
            raid_min_chars: 8,
            raid_capacity: 20_000,
        }
    }
}

/// `[guard.likes]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LikeConfig {
    /// Per-viewer cap, taps per second. Default 20.
    pub viewer_per_sec: u32,
    /// Per-viewer burst, taps. Default 20.
    pub viewer_burst: u32,
}

impl Default for LikeConfig {
    fn default() -> Self {
        LikeConfig {
            viewer_per_sec: 20,
            viewer_burst: 20,
        }
    }
}

/// `[guard.leads]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeadConfig {
    /// Country code for numbers typed without one. Default "86".
    pub default_country: String,
    /// Minimum form fill time, ms; faster → `too_fast`. Default 3,000.
    pub min_fill_ms: u32,
    /// Same phone, same room within this many seconds → `duplicate_lead`.
    /// Default 86,400 (24 h).
    pub duplicate_window_secs: u64,
    /// Velocity window, seconds. Default 3,600.
    pub velocity_window_secs: u64,
    /// More leads than this per viewer per window → `velocity_viewer`.
    /// Default 3.
    pub max_per_viewer: u32,
    /// More leads than this per IP per window → `velocity_ip`. Default 10.
    pub max_per_ip: u32,
    /// One phone in more rooms than this per window → `velocity_phone`.
    /// Default 5.
    pub max_rooms_per_phone: u32,
    /// Accepted leads scoring below this are stored as `suspect`. Default 60.
    pub suspect_below: u8,
    /// Score penalty of a virtual-operator number. Default 30.
    pub virtual_operator_penalty: u8,
    /// Score penalty of a made-up-looking number. Default 50.
    pub fake_pattern_penalty: u8,
    /// Phone/IP/viewer keys tracked per shard for duplicates and velocity
    /// (oldest forgotten first). Default 1,000,000.
    pub capacity: usize,
}

impl Default for LeadConfig {
    fn default() -> Self {
        LeadConfig {
            default_country: "86".into(),
            min_fill_ms: 3_000,
            duplicate_window_secs: 86_400,
            velocity_window_secs: 3_600,
            max_per_viewer: 3,
            max_per_ip: 10,
            max_rooms_per_phone: 5,
            suspect_below: 60,
            virtual_operator_penalty: 30,
            fake_pattern_penalty: 50,
            capacity: 1_000_000,
        }
    }
}

/// `[[rooms]]`: settings for one room, loaded at start; the admin API changes
/// them live.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RoomConfig {
    /// Room id.
    pub id: u64,
    /// Slow mode, seconds (overrides `guard.chat.slow_mode_secs`).
    pub slow_mode_secs: Option<u32>,
    /// Room-wide chat cap, messages/s (overrides `guard.chat.room_per_sec`).
    pub chat_per_sec: Option<u32>,
    /// Per-viewer chat limit, messages per `guard.chat.viewer_period_secs`.
    pub viewer_messages: Option<u32>,
    /// Blocked terms of this room, in addition to the global ones.
    pub blocked_terms: Vec<String>,
    /// Viewers muted in this room (indefinitely, until unmuted).
    pub muted: Vec<u64>,
    /// Viewers banned from this room.
    pub banned: Vec<u64>,
    /// The merchant the room belongs to (1-64 of `[a-z0-9_-]`), written
    /// to ClickHouse (`room_merchants`) at start; not a guard setting.
    /// Default unset (the mapping is left as it is).
    pub merchant: Option<String>,
}

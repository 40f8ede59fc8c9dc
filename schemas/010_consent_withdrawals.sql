-- roomgate 010: consent versions, withdrawals and erasure, likers.
--
-- leads.consent_version: the version of the consent text the viewer saw
-- when submitting (the lead frame's `consent_version`; '' = a client that
-- did not send one, or a row written before this migration).
ALTER TABLE {db}.leads ADD COLUMN IF NOT EXISTS consent_version LowCardinality(String) DEFAULT '' AFTER consent;

-- lead_withdrawals: one row per withdrawal or erasure request of a lead
-- (docs/LEADS.md, "Consent, withdrawal and erasure"). A lead with any row
-- here is never delivered again (pull or webhook), and the engine's
-- eraser blanks the lead's personal columns in `leads` (a mutation).
-- action = 'withdraw' (the viewer's Withdraw frame, acked once logged) or
-- 'erase' (a merchant's or the platform's request); source = 'viewer',
-- 'merchant' or 'admin'; actor = the session id, API key id or admin
-- caller. No personal data: the lead is named by its natural key.
-- Sharded by room_id like every table.
CREATE TABLE IF NOT EXISTS {db}.lead_withdrawals
(
    ts              DateTime64(3) CODEC(Delta, ZSTD),
    room_id         UInt64,
    viewer_id       UInt64,
    client_lead_id  UInt64,
    action          LowCardinality(String),
    source          LowCardinality(String),
    actor           String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (room_id, viewer_id, client_lead_id, ts)
SETTINGS non_replicated_deduplication_window = 1000;

-- like_viewers: who liked, per room and minute (likes in `like_ticks` have
-- no viewer ids). One row per (room, minute, viewer) that tapped at least
-- once, with the taps the guard admitted; the dashboards count likers and
-- the interaction rate from it. Summed on merge: aggregate with sum() and
-- GROUP BY, count likers with uniqExact(viewer_id).
CREATE TABLE IF NOT EXISTS {db}.like_viewers
(
    room_id    UInt64,
    minute     DateTime CODEC(Delta, ZSTD),
    viewer_id  UInt64,
    taps       UInt64
)
ENGINE = SummingMergeTree(taps)
PARTITION BY toYYYYMM(minute)
ORDER BY (room_id, minute, viewer_id)
SETTINGS non_replicated_deduplication_window = 1000;

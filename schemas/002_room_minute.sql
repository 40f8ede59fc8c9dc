-- roomgate 002: per-room per-minute rollup for dashboards (room funnel).
-- One SummingMergeTree target fed by one materialized view per source table;
-- each view fills its own columns and leaves the others at 0.

CREATE TABLE IF NOT EXISTS {db}.room_minute
(
    room_id        UInt64,
    minute         DateTime,
    joins          UInt64,
    leaves         UInt64,
    watch_ms       UInt64,
    chat_messages  UInt64,
    like_taps      UInt64,
    leads          UInt64,
    leads_accepted UInt64,
    rejects        UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (room_id, minute)
-- Retries are deduplicated in the source tables; with this window (and the
-- engine's deduplicate_blocks_in_dependent_materialized_views=1) the views'
-- blocks are too, so a retried insert never counts twice here.
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.room_minute_sessions_mv TO {db}.room_minute AS
SELECT room_id, toStartOfMinute(ts) AS minute,
       countIf(event = 'join') AS joins, countIf(event = 'leave') AS leaves,
       sum(watch_ms) AS watch_ms
FROM {db}.sessions GROUP BY room_id, minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.room_minute_chat_mv TO {db}.room_minute AS
SELECT room_id, toStartOfMinute(ts) AS minute, count() AS chat_messages
FROM {db}.chat_messages GROUP BY room_id, minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.room_minute_likes_mv TO {db}.room_minute AS
SELECT room_id, toStartOfMinute(ts) AS minute, sum(taps) AS like_taps
FROM {db}.like_ticks GROUP BY room_id, minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.room_minute_leads_mv TO {db}.room_minute AS
SELECT room_id, toStartOfMinute(ts) AS minute, count() AS leads,
       countIf(verdict = 'accepted') AS leads_accepted
FROM {db}.leads GROUP BY room_id, minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.room_minute_moderation_mv TO {db}.room_minute AS
SELECT room_id, toStartOfMinute(ts) AS minute, countIf(NOT dry_run) AS rejects
FROM {db}.moderation_events GROUP BY room_id, minute;

-- roomgate 001: the five event tables.
-- `{db}` is replaced by the configured database name.
-- Every table sets non_replicated_deduplication_window so the engine's
-- insert_deduplication_token makes retries idempotent on plain MergeTree.

CREATE TABLE IF NOT EXISTS {db}.chat_messages
(
    room_id          UInt64,
    ts               DateTime64(3) CODEC(Delta, ZSTD),
    viewer_id        UInt64,
    session_id       UInt64,
    client_msg_id    UInt64,
    text             String CODEC(ZSTD),
    verdict          LowCardinality(String),
    dry_run_reasons  Array(LowCardinality(String))
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (room_id, ts, viewer_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.like_ticks
(
    room_id  UInt64,
    ts       DateTime CODEC(Delta, ZSTD),
    taps     UInt64
)
ENGINE = SummingMergeTree(taps)
PARTITION BY toYYYYMM(ts)
ORDER BY (room_id, ts)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.leads
(
    room_id          UInt64,
    ts               DateTime64(3) CODEC(Delta, ZSTD),
    viewer_id        UInt64,
    session_id       UInt64,
    client_lead_id   UInt64,
    verdict          LowCardinality(String),
    score            UInt8,
    reasons          Array(LowCardinality(String)),
    dry_run_reasons  Array(LowCardinality(String)),
    phone_hmac       String,
    phone_masked     String TTL toDateTime(ts) + INTERVAL 180 DAY,
    phone_enc        String TTL toDateTime(ts) + INTERVAL 180 DAY,
    wechat_enc       String TTL toDateTime(ts) + INTERVAL 180 DAY,
    name_enc         String TTL toDateTime(ts) + INTERVAL 180 DAY,
    fields_enc       String TTL toDateTime(ts) + INTERVAL 180 DAY,
    ip_hmac          String,
    consent          Bool,
    fill_ms          UInt32
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (room_id, ts, viewer_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.sessions
(
    room_id     UInt64,
    ts          DateTime64(3) CODEC(Delta, ZSTD),
    viewer_id   UInt64,
    session_id  UInt64,
    event       LowCardinality(String),
    watch_ms    UInt64,
    client      LowCardinality(String),
    close       LowCardinality(String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (room_id, ts, viewer_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.moderation_events
(
    room_id     UInt64,
    ts          DateTime64(3) CODEC(Delta, ZSTD),
    viewer_id   UInt64,
    session_id  UInt64,
    kind        LowCardinality(String),
    client_id   UInt64,
    reason      LowCardinality(String),
    dry_run     Bool,
    detail      String CODEC(ZSTD)
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (room_id, ts, viewer_id)
SETTINGS non_replicated_deduplication_window = 1000;

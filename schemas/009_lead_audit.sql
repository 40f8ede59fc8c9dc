-- roomgate 009: who got which lead's contact, when (docs/LEADS.md, "Audit").
-- One row per lead per delivery, written by the merchant API before its
-- answer leaves (a pull whose audit insert fails delivers nothing):
-- actor = the API key id (webhooks: webhook:<host[:port]>), action =
-- 'pull', 'webhook' (a webhook attempt, written before it leaves: not a
-- delivery), 'webhook_delivered' (a webhook answered 2xx: the delivery)
-- or 'erase' (an erasure request), detail = the verdict, and
-- 'undecryptable' when a ciphertext did not decrypt. No personal data: the lead is named by its natural key
-- (room_id, viewer_id, client_lead_id). Kept without a TTL (the audit
-- outlives the contacts' 180 days). Sharded by room_id like every table.
-- Merchants see their own rows (merchant_id), analysts all.
CREATE TABLE IF NOT EXISTS {db}.lead_audit
(
    ts              DateTime64(3) CODEC(Delta, ZSTD),
    merchant_id     LowCardinality(String),
    actor           LowCardinality(String),
    action          LowCardinality(String),
    room_id         UInt64,
    viewer_id       UInt64,
    client_lead_id  UInt64,
    detail          String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (merchant_id, ts, room_id, viewer_id, client_lead_id);

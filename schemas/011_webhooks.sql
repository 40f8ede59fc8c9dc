-- roomgate 011: lead webhooks (docs/LEADS.md, "Webhooks"). Written and
-- read by the engine's webhook sender (as the `delivery` user). No
-- personal data: leads are named by their natural key (room_id,
-- viewer_id, client_lead_id), errors are status codes and transport
-- errors, never a receiver's answer body.
--
-- webhook_cursors: how far each merchant's webhook stream has gone. One
-- row per page passed: the page's last lead (its sort key (inserted_at,
-- room_id, viewer_id, client_lead_id): leads.inserted_at, migration 12),
-- written once every lead of the page was delivered or put in
-- webhook_backlog. The cursor is the greatest position of the merchant
-- (read with max((inserted_at, room_id, viewer_id, client_lead_id))), so
-- a merge, a replay or two nodes during a handover
-- cannot move it back; updated_at rises with every row of a merchant
-- (the sender continues from the highest stored one), so the row merges
-- keep is the greatest. room_id is the last lead's room: the sharding key
-- on a cluster (read across shards: max over the Distributed table).
CREATE TABLE IF NOT EXISTS {db}.webhook_cursors
(
    merchant_id     LowCardinality(String),
    inserted_at     DateTime64(3),
    room_id         UInt64,
    viewer_id       UInt64,
    client_lead_id  UInt64,
    updated_at      DateTime64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY merchant_id;

-- webhook_backlog: leads whose webhook failed max_attempts times, until
-- delivered. One row per state change of a (merchant, lead), the latest
-- (highest updated_at) is the state: read with FINAL. state = 'waiting'
-- (retried every webhooks.backlog_retry_secs and on POST
-- /admin/webhooks/backlog/retry), 'delivered', or 'cancelled' (no longer
-- deliverable when retried: withdrawn, erased, or its room moved to
-- another merchant). Never deleted: waiting entries stay until
-- delivered. lead_inserted_at = leads.inserted_at (with the key, the
-- lead's place in the order); attempts = every attempt so far; created_at = when it first
-- waited. Sharded by room_id like every table: a lead's rows are on one
-- shard, so FINAL through the Distributed table is exact.
CREATE TABLE IF NOT EXISTS {db}.webhook_backlog
(
    merchant_id     LowCardinality(String),
    room_id         UInt64,
    viewer_id       UInt64,
    client_lead_id  UInt64,
    lead_inserted_at DateTime64(3),
    state           LowCardinality(String),
    attempts        UInt32,
    last_error      String,
    created_at      DateTime64(3),
    updated_at      DateTime64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (merchant_id, room_id, viewer_id, client_lead_id);

-- roomgate 007: cross-node lead facts (docs/ROUTING.md, "Cross-node facts").
-- With several engine nodes each node reads this rollup every
-- routing.facts_interval_secs, so its cross-room lead rules (velocity_phone,
-- velocity_ip, duplicate_lead) also see the leads decided on other nodes.
-- One row per minute, kind ('phone' or 'ip'), key (phone_hmac or ip_hmac)
-- and room, fed from every stored lead, whatever its verdict (what the
-- guard counts):
-- lead_ids: the distinct leads (room_id, viewer_id, client_lead_id), so a
-- lead stored twice (a resend after failover, a retried insert) counts once.
-- registered: a lead of the minute registered the phone in the room for
-- duplicate_lead, as the phone stage does: not rejected before it
-- (velocity_phone is decided there) and not itself a duplicate
-- (guard::facts::registers in the engine says the same).
-- Sorted by minute first: the engine reads the last minutes only.
CREATE TABLE IF NOT EXISTS {db}.lead_facts
(
    minute     DateTime,
    kind       LowCardinality(String),
    key        String,
    room_id    UInt64,
    lead_ids   AggregateFunction(uniqExact, UInt64),
    registered SimpleAggregateFunction(max, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, kind, key, room_id)
TTL minute + INTERVAL 8 DAY
SETTINGS ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.lead_facts_phone_mv TO {db}.lead_facts AS
SELECT toStartOfMinute(ts) AS minute, 'phone' AS kind, phone_hmac AS key, room_id,
       uniqExactState(cityHash64(room_id, viewer_id, client_lead_id)) AS lead_ids,
       max(toUInt8(NOT has(reasons, 'duplicate_lead')
           AND (verdict IN ('accepted', 'suspect') OR reason = 'velocity_phone'))) AS registered
FROM {db}.leads GROUP BY minute, key, room_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.lead_facts_ip_mv TO {db}.lead_facts AS
SELECT toStartOfMinute(ts) AS minute, 'ip' AS kind, ip_hmac AS key, room_id,
       uniqExactState(cityHash64(room_id, viewer_id, client_lead_id)) AS lead_ids,
       toUInt8(0) AS registered
FROM {db}.leads GROUP BY minute, key, room_id;

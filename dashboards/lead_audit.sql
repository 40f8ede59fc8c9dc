-- roomgate lead delivery audit (ClickHouse SQL, database `roomgate`).
-- Every lead delivered (docs/LEADS.md, "Audit"), from roomgate.lead_audit:
-- a delivery is a `pull` row (one per lead per answer, written before the
-- answer left) or a `webhook_delivered` row (one per lead its receiver
-- answered 2xx). `webhook` rows are attempts (written before each request,
-- failed ones too) and `erase` rows erasure requests: neither is a
-- delivery, and no query here counts them as one. Same format as room_funnel.sql: "-- query:" blocks run as is in
-- /play or clickhouse-client; the "-- chart:" block is for /dashboard
-- (parameters {rounding:UInt32}, {seconds:UInt32}). Analysts see every
-- merchant; a merchant's user sees its own rows.


-- query: Deliveries per merchant and key (last 7 days)
-- deliveries counts every delivery (a lead pulled again after a consumer
-- resumed counts again; a webhook counts once per 2xx, not per attempt);
-- leads counts distinct leads. key_id = the API key, or webhook:<host>.
SELECT
    merchant_id,
    actor                                                   AS key_id,
    action,
    count()                                                 AS deliveries,
    uniqExact(room_id, viewer_id, client_lead_id)           AS leads,
    countIf(detail LIKE '%verdict=suspect%')                AS suspect,
    countIf(detail LIKE '%undecryptable%')                  AS undecryptable,
    min(ts)                                                 AS first,
    max(ts)                                                 AS last
FROM roomgate.lead_audit
WHERE ts >= now() - INTERVAL 7 DAY AND action IN ('pull', 'webhook_delivered')
GROUP BY merchant_id, actor, action
ORDER BY merchant_id, key_id, action;

-- query: Latest deliveries (100)
SELECT ts, merchant_id, actor AS key_id, action, room_id, viewer_id, client_lead_id, detail
FROM roomgate.lead_audit
WHERE action IN ('pull', 'webhook_delivered')
ORDER BY ts DESC
LIMIT 100;

-- query: Leads delivered more than once (last 7 days)
-- A consumer that resumed from an older cursor, two consumers on one
-- merchant, a pull besides the webhook, a webhook whose 2xx was lost and
-- sent again: who got the contact, and how often. Retried webhook attempts
-- (`webhook` rows) and erasure requests (`erase`) are not deliveries.
SELECT merchant_id, room_id, viewer_id, client_lead_id,
       count() AS deliveries, groupUniqArray(actor) AS keys, min(ts) AS first, max(ts) AS last
FROM roomgate.lead_audit
WHERE ts >= now() - INTERVAL 7 DAY AND action IN ('pull', 'webhook_delivered')
GROUP BY merchant_id, room_id, viewer_id, client_lead_id
HAVING deliveries > 1
ORDER BY deliveries DESC, last DESC
LIMIT 100;

-- chart: Leads delivered per merchant
SELECT toUnixTimestamp(toStartOfInterval(ts, toIntervalSecond({rounding:UInt32}))) AS t,
       merchant_id, count() AS deliveries
FROM roomgate.lead_audit
WHERE ts >= now() - {seconds:UInt32} AND action IN ('pull', 'webhook_delivered')
GROUP BY t, merchant_id
ORDER BY t, merchant_id;

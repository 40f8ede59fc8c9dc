-- roomgate lead delivery audit (ClickHouse SQL, database `roomgate`).
-- Every lead the merchant API delivered (docs/LEADS.md, "Audit"): one row
-- per lead per delivery in roomgate.lead_audit, written before the answer
-- left. Same format as room_funnel.sql: "-- query:" blocks run as is in
-- /play or clickhouse-client; the "-- chart:" block is for /dashboard
-- (parameters {rounding:UInt32}, {seconds:UInt32}). Analysts see every
-- merchant; a merchant's user sees its own rows.


-- query: Deliveries per merchant and key (last 7 days)
-- deliveries counts every delivery (a lead pulled again after a consumer
-- resumed counts again); leads counts distinct leads.
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
WHERE ts >= now() - INTERVAL 7 DAY
GROUP BY merchant_id, actor, action
ORDER BY merchant_id, key_id, action;

-- query: Latest deliveries (100)
SELECT ts, merchant_id, actor AS key_id, action, room_id, viewer_id, client_lead_id, detail
FROM roomgate.lead_audit
ORDER BY ts DESC
LIMIT 100;

-- query: Leads delivered more than once (last 7 days)
-- A consumer that resumed from an older cursor, or two consumers on one
-- merchant: who got the contact, and how often.
SELECT merchant_id, room_id, viewer_id, client_lead_id,
       count() AS deliveries, groupUniqArray(actor) AS keys, min(ts) AS first, max(ts) AS last
FROM roomgate.lead_audit
WHERE ts >= now() - INTERVAL 7 DAY
GROUP BY merchant_id, room_id, viewer_id, client_lead_id
HAVING deliveries > 1
ORDER BY deliveries DESC, last DESC
LIMIT 100;

-- chart: Leads delivered per merchant
SELECT toUnixTimestamp(toStartOfInterval(ts, toIntervalSecond({rounding:UInt32}))) AS t,
       merchant_id, count() AS deliveries
FROM roomgate.lead_audit
WHERE ts >= now() - {seconds:UInt32}
GROUP BY t, merchant_id
ORDER BY t, merchant_id;

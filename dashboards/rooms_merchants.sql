-- roomgate per-room and per-merchant dashboards (ClickHouse SQL, database
-- `roomgate`): views (观看人次), unique viewers, average watch time
-- (平均停留时长), interaction rate (互动转化率), leads, valid-lead rate,
-- delivered, withdrawn, abuse by reason. Definitions: dashboards/README.md.
--
-- Same block format as room_funnel.sql ("-- query:" tables, "-- chart:"
-- time series for /dashboard; one parser reads every dashboards/*.sql, and
-- dashboards/make_grafana.py turns the same blocks into the Grafana
-- dashboard). Every block takes the query parameters
--   {seconds:UInt32}  look-back, s (used when {from:String} is empty)
--   {from:String}, {to:String}  optional absolute period, '2026-01-01 00:00:00'
--   {room:UInt64}     one room; 0 = all rooms
--   {merchant:String} the rooms of one merchant (room_merchants, now); '' = all
-- and the charts {rounding:UInt32} (bucket, s; a multiple of 60). From
-- clickhouse-client: --param_seconds=86400 --param_from= --param_to=
-- --param_room=0 --param_merchant= --param_rounding=60.
--
-- A room's merchant is its current one (room_merchants, latest row per
-- room; '' = none): a room that moved counts for its new merchant with its
-- whole history. Every per-merchant figure is the sum of its rooms' figures
-- (unique and interacting viewers: distinct viewer ids over its rooms).
-- scripts/dashboards_test.py runs every block against a real loadgen run.


-- =========================================================================
-- Part 1: tables
-- =========================================================================

-- query: Rooms: views, viewers, watch time, interaction, leads, delivery, abuse
-- One row per room with activity in the period. views = join rows;
-- unique_viewers = distinct viewers with a join; avg_watch_s over sessions
-- that ended in the period; chatted / liked / left_lead / interacting =
-- those viewers (joined in the period) who chatted (accepted chat), liked
-- (like_viewers) or left a lead (any verdict) in the period;
-- interaction_rate = interacting / unique_viewers. leads = distinct leads
-- (every verdict), valid_leads = accepted, delivered / withdrawn = of these
-- leads, those with a delivery (lead_audit `pull`, or `webhook_delivered`:
-- a webhook answered 2xx, not an attempt) / a withdrawal or erasure
-- (lead_withdrawals) at any time since. abuse_events = rejected
-- chat, like pushes over the cap and rejected leads, `busy` excluded.
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to,
     merchants AS
     (
         SELECT room_id, argMax(merchant_id, updated_at) AS merchant_id
         FROM roomgate.room_merchants
         GROUP BY room_id
     ),
     picked AS (SELECT room_id FROM merchants WHERE merchant_id = {merchant:String}),
     per_viewer AS
     (
         SELECT room_id, viewer_id, sum(j) AS joined,
                max(c) AS has_chat, max(l) AS has_like, max(d) AS has_lead
         FROM
         (
             SELECT room_id, viewer_id, count() AS j, 0 AS c, 0 AS l, 0 AS d
             FROM roomgate.sessions
             WHERE event = 'join' AND ts BETWEEN from AND to
               AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
               AND ({merchant:String} = '' OR room_id IN picked)
             GROUP BY room_id, viewer_id
             UNION ALL
             SELECT DISTINCT room_id, viewer_id, 0, 1, 0, 0
             FROM roomgate.chat_messages
             WHERE ts BETWEEN from AND to
               AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
               AND ({merchant:String} = '' OR room_id IN picked)
             UNION ALL
             SELECT DISTINCT room_id, viewer_id, 0, 0, 1, 0
             FROM roomgate.like_viewers
             WHERE minute BETWEEN toStartOfMinute(from) AND to
               AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
               AND ({merchant:String} = '' OR room_id IN picked)
             UNION ALL
             SELECT DISTINCT room_id, viewer_id, 0, 0, 0, 1
             FROM roomgate.leads_unique
             WHERE ts BETWEEN from AND to
               AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
               AND ({merchant:String} = '' OR room_id IN picked)
         )
         GROUP BY room_id, viewer_id
     ),
     audience AS
     (
         SELECT room_id,
                sum(joined)                                                  AS views,
                countIf(joined > 0)                                          AS unique_viewers,
                countIf(joined > 0 AND has_chat)                             AS chatted,
                countIf(joined > 0 AND has_like)                             AS liked,
                countIf(joined > 0 AND has_lead)                             AS left_lead,
                countIf(joined > 0 AND (has_chat OR has_like OR has_lead))   AS interacting
         FROM per_viewer
         GROUP BY room_id
     ),
     watch AS
     (
         SELECT room_id, count() AS ended_sessions, sum(watch_ms) AS watch_ms
         FROM roomgate.sessions
         WHERE event = 'leave' AND ts BETWEEN from AND to
           AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
           AND ({merchant:String} = '' OR room_id IN picked)
         GROUP BY room_id
     ),
     lead_counts AS
     (
         SELECT room_id,
                count()                       AS leads,
                countIf(verdict = 'accepted') AS valid_leads,
                countIf((room_id, viewer_id, client_lead_id) IN
                        (SELECT room_id, viewer_id, client_lead_id FROM roomgate.lead_audit
                         WHERE action IN ('pull', 'webhook_delivered') AND ts >= from)) AS delivered,
                countIf((room_id, viewer_id, client_lead_id) IN
                        (SELECT room_id, viewer_id, client_lead_id FROM roomgate.lead_withdrawals
                         WHERE ts >= from)) AS withdrawn,
                countIf(verdict = 'rejected') AS rejected_leads
         FROM roomgate.leads_unique
         WHERE ts BETWEEN from AND to
           AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
           AND ({merchant:String} = '' OR room_id IN picked)
         GROUP BY room_id
     ),
     moderation AS
     (
         SELECT room_id, sum(count) AS rejects
         FROM roomgate.moderation_events
         WHERE NOT dry_run AND reason != 'busy' AND ts BETWEEN from AND to
           AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
           AND ({merchant:String} = '' OR room_id IN picked)
         GROUP BY room_id
     ),
     rooms AS
     (
         SELECT room_id FROM audience UNION DISTINCT SELECT room_id FROM watch
         UNION DISTINCT SELECT room_id FROM lead_counts UNION DISTINCT SELECT room_id FROM moderation
     )
SELECT
    r.room_id                                                           AS room_id,
    m.merchant_id                                                       AS merchant_id,
    a.views                                                             AS views,
    a.unique_viewers                                                    AS unique_viewers,
    w.ended_sessions                                                    AS ended_sessions,
    round(w.watch_ms / nullIf(w.ended_sessions, 0) / 1000, 1)           AS avg_watch_s,
    a.chatted                                                           AS chatted,
    a.liked                                                             AS liked,
    a.left_lead                                                         AS left_lead,
    a.interacting                                                       AS interacting_viewers,
    round(a.interacting / nullIf(a.unique_viewers, 0), 4)               AS interaction_rate,
    l.leads                                                             AS leads,
    l.valid_leads                                                       AS valid_leads,
    round(l.valid_leads / nullIf(l.leads, 0), 4)                        AS valid_lead_rate,
    l.delivered                                                         AS delivered,
    l.withdrawn                                                         AS withdrawn,
    d.rejects + l.rejected_leads                                        AS abuse_events
FROM rooms AS r
LEFT JOIN merchants AS m ON m.room_id = r.room_id
LEFT JOIN audience AS a ON a.room_id = r.room_id
LEFT JOIN watch AS w ON w.room_id = r.room_id
LEFT JOIN lead_counts AS l ON l.room_id = r.room_id
LEFT JOIN moderation AS d ON d.room_id = r.room_id
ORDER BY merchant_id, room_id;

-- query: Merchants: views, viewers, watch time, interaction, leads, delivery, abuse
-- The rooms above summed per merchant ('' = rooms without a merchant);
-- rooms = rooms with activity in the period. unique_viewers and the
-- interacting viewers count distinct viewer ids over the merchant's rooms
-- (a viewer in two of its rooms counts once); every other column is the
-- sum of its rooms'.
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to,
     merchants AS
     (
         SELECT room_id, argMax(merchant_id, updated_at) AS merchant_id
         FROM roomgate.room_merchants
         GROUP BY room_id
     ),
     picked AS (SELECT room_id FROM merchants WHERE merchant_id = {merchant:String}),
     per_viewer AS
     (
         SELECT room_id, viewer_id, sum(j) AS joined,
                max(c) AS has_chat, max(l) AS has_like, max(d) AS has_lead
         FROM
         (
             SELECT room_id, viewer_id, count() AS j, 0 AS c, 0 AS l, 0 AS d
             FROM roomgate.sessions
             WHERE event = 'join' AND ts BETWEEN from AND to
               AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
               AND ({merchant:String} = '' OR room_id IN picked)
             GROUP BY room_id, viewer_id
             UNION ALL
             SELECT DISTINCT room_id, viewer_id, 0, 1, 0, 0
             FROM roomgate.chat_messages
             WHERE ts BETWEEN from AND to
               AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
               AND ({merchant:String} = '' OR room_id IN picked)
             UNION ALL
             SELECT DISTINCT room_id, viewer_id, 0, 0, 1, 0
             FROM roomgate.like_viewers
             WHERE minute BETWEEN toStartOfMinute(from) AND to
               AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
               AND ({merchant:String} = '' OR room_id IN picked)
             UNION ALL
             SELECT DISTINCT room_id, viewer_id, 0, 0, 0, 1
             FROM roomgate.leads_unique
             WHERE ts BETWEEN from AND to
               AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
               AND ({merchant:String} = '' OR room_id IN picked)
         )
         GROUP BY room_id, viewer_id
     ),
     per_room AS
     (
         SELECT room_id, views, ended_sessions, watch_ms, leads, valid_leads, delivered, withdrawn,
                rejects + rejected_leads AS abuse_events
         FROM
         (
             SELECT room_id, sum(joined) AS views, 0 AS ended_sessions, 0 AS watch_ms, 0 AS leads,
                    0 AS valid_leads, 0 AS delivered, 0 AS withdrawn, 0 AS rejects, 0 AS rejected_leads
             FROM per_viewer
             GROUP BY room_id
             UNION ALL
             SELECT room_id, 0, count(), sum(watch_ms), 0, 0, 0, 0, 0, 0
             FROM roomgate.sessions
             WHERE event = 'leave' AND ts BETWEEN from AND to
               AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
               AND ({merchant:String} = '' OR room_id IN picked)
             GROUP BY room_id
             UNION ALL
             SELECT room_id, 0, 0, 0, count(), countIf(verdict = 'accepted'),
                    countIf((room_id, viewer_id, client_lead_id) IN
                            (SELECT room_id, viewer_id, client_lead_id FROM roomgate.lead_audit
                             WHERE action IN ('pull', 'webhook_delivered') AND ts >= from)),
                    countIf((room_id, viewer_id, client_lead_id) IN
                            (SELECT room_id, viewer_id, client_lead_id FROM roomgate.lead_withdrawals
                             WHERE ts >= from)),
                    0, countIf(verdict = 'rejected')
             FROM roomgate.leads_unique
             WHERE ts BETWEEN from AND to
               AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
               AND ({merchant:String} = '' OR room_id IN picked)
             GROUP BY room_id
             UNION ALL
             SELECT room_id, 0, 0, 0, 0, 0, 0, 0, sum(count), 0
             FROM roomgate.moderation_events
             WHERE NOT dry_run AND reason != 'busy' AND ts BETWEEN from AND to
               AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
               AND ({merchant:String} = '' OR room_id IN picked)
             GROUP BY room_id
         )
     ),
     totals AS
     (
         SELECT m.merchant_id AS merchant_id,
                uniqExact(p.room_id)    AS rooms,
                sum(p.views)            AS views,
                sum(p.ended_sessions)   AS ended_sessions,
                sum(p.watch_ms)         AS watch_ms,
                sum(p.leads)            AS leads,
                sum(p.valid_leads)      AS valid_leads,
                sum(p.delivered)        AS delivered,
                sum(p.withdrawn)        AS withdrawn,
                sum(p.abuse_events)     AS abuse_events
         FROM per_room AS p
         LEFT JOIN merchants AS m ON m.room_id = p.room_id
         GROUP BY merchant_id
     ),
     audience AS
     (
         SELECT m.merchant_id AS merchant_id,
                uniqExactIf(v.viewer_id, v.joined > 0)                                                 AS unique_viewers,
                uniqExactIf(v.viewer_id, v.joined > 0 AND v.has_chat)                                  AS chatted,
                uniqExactIf(v.viewer_id, v.joined > 0 AND v.has_like)                                  AS liked,
                uniqExactIf(v.viewer_id, v.joined > 0 AND v.has_lead)                                  AS left_lead,
                uniqExactIf(v.viewer_id, v.joined > 0 AND (v.has_chat OR v.has_like OR v.has_lead))    AS interacting
         FROM per_viewer AS v
         LEFT JOIN merchants AS m ON m.room_id = v.room_id
         GROUP BY merchant_id
     )
SELECT
    t.merchant_id                                                       AS merchant_id,
    t.rooms                                                             AS rooms,
    t.views                                                             AS views,
    a.unique_viewers                                                    AS unique_viewers,
    t.ended_sessions                                                    AS ended_sessions,
    round(t.watch_ms / nullIf(t.ended_sessions, 0) / 1000, 1)           AS avg_watch_s,
    a.chatted                                                           AS chatted,
    a.liked                                                             AS liked,
    a.left_lead                                                         AS left_lead,
    a.interacting                                                       AS interacting_viewers,
    round(a.interacting / nullIf(a.unique_viewers, 0), 4)               AS interaction_rate,
    t.leads                                                             AS leads,
    t.valid_leads                                                       AS valid_leads,
    round(t.valid_leads / nullIf(t.leads, 0), 4)                        AS valid_lead_rate,
    t.delivered                                                         AS delivered,
    t.withdrawn                                                         AS withdrawn,
    t.abuse_events                                                      AS abuse_events
FROM totals AS t
LEFT JOIN audience AS a ON a.merchant_id = t.merchant_id
ORDER BY merchant_id;

-- query: Abuse by reason per room
-- events: rejected chat messages and like pushes over the cap
-- (moderation_events, not dry-run, `busy` excluded: that is overload, not
-- abuse), and rejected leads (leads, by the reason their ack carried; over
-- a viewer's hourly cap they are moderation rows of kind 'lead').
-- viewers = distinct viewers behind them. Dry-run hits: room_funnel.sql,
-- "Moderation by reason"; suspect and duplicate leads: the lead queries.
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to,
     merchants AS
     (
         SELECT room_id, argMax(merchant_id, updated_at) AS merchant_id
         FROM roomgate.room_merchants
         GROUP BY room_id
     ),
     picked AS (SELECT room_id FROM merchants WHERE merchant_id = {merchant:String})
SELECT e.room_id AS room_id, m.merchant_id AS merchant_id, e.kind AS kind, e.reason AS reason,
       sum(e.events) AS events, uniqExact(e.viewer_id) AS viewers
FROM
(
    SELECT room_id, viewer_id, toString(kind) AS kind, toString(reason) AS reason, toUInt64(count) AS events
    FROM roomgate.moderation_events
    WHERE NOT dry_run AND reason != 'busy' AND ts BETWEEN from AND to
      AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
      AND ({merchant:String} = '' OR room_id IN picked)
    UNION ALL
    SELECT room_id, viewer_id, 'lead', toString(if(reason = '', reasons[1], reason)), toUInt64(1)
    FROM roomgate.leads_unique
    WHERE verdict = 'rejected' AND ts BETWEEN from AND to
      AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
      AND ({merchant:String} = '' OR room_id IN picked)
) AS e
LEFT JOIN merchants AS m ON m.room_id = e.room_id
GROUP BY room_id, merchant_id, kind, reason
ORDER BY merchant_id, room_id, events DESC, kind, reason;

-- query: Abuse by reason per merchant
-- The rows above summed per merchant ('' = rooms without a merchant);
-- viewers = distinct viewer ids over its rooms.
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to,
     merchants AS
     (
         SELECT room_id, argMax(merchant_id, updated_at) AS merchant_id
         FROM roomgate.room_merchants
         GROUP BY room_id
     ),
     picked AS (SELECT room_id FROM merchants WHERE merchant_id = {merchant:String})
SELECT m.merchant_id AS merchant_id, e.kind AS kind, e.reason AS reason,
       sum(e.events) AS events, uniqExact(e.viewer_id) AS viewers, uniqExact(e.room_id) AS rooms
FROM
(
    SELECT room_id, viewer_id, toString(kind) AS kind, toString(reason) AS reason, toUInt64(count) AS events
    FROM roomgate.moderation_events
    WHERE NOT dry_run AND reason != 'busy' AND ts BETWEEN from AND to
      AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
      AND ({merchant:String} = '' OR room_id IN picked)
    UNION ALL
    SELECT room_id, viewer_id, 'lead', toString(if(reason = '', reasons[1], reason)), toUInt64(1)
    FROM roomgate.leads_unique
    WHERE verdict = 'rejected' AND ts BETWEEN from AND to
      AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
      AND ({merchant:String} = '' OR room_id IN picked)
) AS e
LEFT JOIN merchants AS m ON m.room_id = e.room_id
GROUP BY merchant_id, kind, reason
ORDER BY merchant_id, events DESC, kind, reason;

-- query: Withdrawals and erasures per merchant
-- Requests in the period (by the request's time, unlike `withdrawn` above,
-- which counts leads of the period withdrawn at any time): per merchant,
-- action ('withdraw' by the viewer, 'erase' on request) and source
-- ('viewer', 'merchant', 'admin'). requests counts rows, leads distinct leads.
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to,
     merchants AS
     (
         SELECT room_id, argMax(merchant_id, updated_at) AS merchant_id
         FROM roomgate.room_merchants
         GROUP BY room_id
     ),
     picked AS (SELECT room_id FROM merchants WHERE merchant_id = {merchant:String})
SELECT m.merchant_id AS merchant_id, w.action AS action, w.source AS source,
       count() AS requests, uniqExact(w.room_id, w.viewer_id, w.client_lead_id) AS leads,
       min(w.ts) AS first, max(w.ts) AS last
FROM roomgate.lead_withdrawals AS w
LEFT JOIN merchants AS m ON m.room_id = w.room_id
WHERE w.ts BETWEEN from AND to
  AND ({room:UInt64} = 0 OR w.room_id = {room:UInt64})
  AND ({merchant:String} = '' OR w.room_id IN picked)
GROUP BY merchant_id, action, source
ORDER BY merchant_id, action, source;


-- =========================================================================
-- Part 2: /dashboard charts (time series; first column t = Unix seconds)
-- Series per merchant are labelled '(none)' for rooms without a merchant.
-- =========================================================================

-- chart: Views per merchant per {rounding}s
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to,
     merchants AS
     (
         SELECT room_id, argMax(merchant_id, updated_at) AS merchant_id
         FROM roomgate.room_merchants
         GROUP BY room_id
     ),
     picked AS (SELECT room_id FROM merchants WHERE merchant_id = {merchant:String})
SELECT toStartOfInterval(r.minute, INTERVAL {rounding:UInt32} SECOND)::INT AS t,
       if(m.merchant_id = '', '(none)', m.merchant_id) AS merchant, sum(r.joins) AS views
FROM roomgate.room_minute AS r
LEFT JOIN merchants AS m ON m.room_id = r.room_id
WHERE r.minute BETWEEN toStartOfMinute(from) AND to
  AND ({room:UInt64} = 0 OR r.room_id = {room:UInt64})
  AND ({merchant:String} = '' OR r.room_id IN picked)
GROUP BY t, merchant
ORDER BY t, merchant;

-- chart: Views and unique viewers per {rounding}s
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to,
     merchants AS
     (
         SELECT room_id, argMax(merchant_id, updated_at) AS merchant_id
         FROM roomgate.room_merchants
         GROUP BY room_id
     ),
     picked AS (SELECT room_id FROM merchants WHERE merchant_id = {merchant:String})
SELECT toStartOfInterval(ts, INTERVAL {rounding:UInt32} SECOND)::INT AS t,
       count() AS views, uniqExact(room_id, viewer_id) AS unique_viewers
FROM roomgate.sessions
WHERE event = 'join' AND ts BETWEEN from AND to
  AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
  AND ({merchant:String} = '' OR room_id IN picked)
GROUP BY t
ORDER BY t WITH FILL STEP {rounding:UInt32};

-- chart: Average watch time (s) per {rounding}s
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to,
     merchants AS
     (
         SELECT room_id, argMax(merchant_id, updated_at) AS merchant_id
         FROM roomgate.room_merchants
         GROUP BY room_id
     ),
     picked AS (SELECT room_id FROM merchants WHERE merchant_id = {merchant:String})
SELECT toStartOfInterval(minute, INTERVAL {rounding:UInt32} SECOND)::INT AS t,
       round(sum(watch_ms) / nullIf(sum(leaves), 0) / 1000, 1) AS avg_watch_s
FROM roomgate.room_minute
WHERE minute BETWEEN toStartOfMinute(from) AND to
  AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
  AND ({merchant:String} = '' OR room_id IN picked)
GROUP BY t
ORDER BY t;

-- chart: Viewers who chatted, liked, left a lead per {rounding}s
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to,
     merchants AS
     (
         SELECT room_id, argMax(merchant_id, updated_at) AS merchant_id
         FROM roomgate.room_merchants
         GROUP BY room_id
     ),
     picked AS (SELECT room_id FROM merchants WHERE merchant_id = {merchant:String})
SELECT toStartOfInterval(at, INTERVAL {rounding:UInt32} SECOND)::INT AS t,
       action, uniqExact(room_id, viewer_id) AS viewers
FROM
(
    SELECT toDateTime(ts) AS at, room_id, viewer_id, 'chatted' AS action
    FROM roomgate.chat_messages
    WHERE ts BETWEEN from AND to
      AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
      AND ({merchant:String} = '' OR room_id IN picked)
    UNION ALL
    SELECT minute, room_id, viewer_id, 'liked'
    FROM roomgate.like_viewers
    WHERE minute BETWEEN toStartOfMinute(from) AND to
      AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
      AND ({merchant:String} = '' OR room_id IN picked)
    UNION ALL
    SELECT toDateTime(ts), room_id, viewer_id, 'left a lead'
    FROM roomgate.leads_unique
    WHERE ts BETWEEN from AND to
      AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
      AND ({merchant:String} = '' OR room_id IN picked)
)
GROUP BY t, action
ORDER BY t, action;

-- chart: Valid-lead rate per merchant
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to,
     merchants AS
     (
         SELECT room_id, argMax(merchant_id, updated_at) AS merchant_id
         FROM roomgate.room_merchants
         GROUP BY room_id
     ),
     picked AS (SELECT room_id FROM merchants WHERE merchant_id = {merchant:String})
SELECT toStartOfInterval(l.ts, INTERVAL {rounding:UInt32} SECOND)::INT AS t,
       if(m.merchant_id = '', '(none)', m.merchant_id) AS merchant,
       round(countIf(l.verdict = 'accepted') / count(), 4) AS valid_lead_rate
FROM roomgate.leads_unique AS l
LEFT JOIN merchants AS m ON m.room_id = l.room_id
WHERE l.ts BETWEEN from AND to
  AND ({room:UInt64} = 0 OR l.room_id = {room:UInt64})
  AND ({merchant:String} = '' OR l.room_id IN picked)
GROUP BY t, merchant
ORDER BY t, merchant;

-- chart: Leads delivered and withdrawn per {rounding}s
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to,
     merchants AS
     (
         SELECT room_id, argMax(merchant_id, updated_at) AS merchant_id
         FROM roomgate.room_merchants
         GROUP BY room_id
     ),
     picked AS (SELECT room_id FROM merchants WHERE merchant_id = {merchant:String})
SELECT toStartOfInterval(at, INTERVAL {rounding:UInt32} SECOND)::INT AS t,
       series, uniqExact(room_id, viewer_id, client_lead_id) AS leads
FROM
(
    SELECT toDateTime(ts) AS at, room_id, viewer_id, client_lead_id, 'delivered' AS series
    FROM roomgate.lead_audit
    WHERE action IN ('pull', 'webhook_delivered') AND ts BETWEEN from AND to
      AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
      AND ({merchant:String} = '' OR room_id IN picked)
    UNION ALL
    SELECT toDateTime(ts), room_id, viewer_id, client_lead_id, 'withdrawn'
    FROM roomgate.lead_withdrawals
    WHERE action != 'erased' AND ts BETWEEN from AND to
      AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
      AND ({merchant:String} = '' OR room_id IN picked)
)
GROUP BY t, series
ORDER BY t, series;

-- chart: Abuse per merchant per {rounding}s
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to,
     merchants AS
     (
         SELECT room_id, argMax(merchant_id, updated_at) AS merchant_id
         FROM roomgate.room_merchants
         GROUP BY room_id
     ),
     picked AS (SELECT room_id FROM merchants WHERE merchant_id = {merchant:String})
SELECT toStartOfInterval(e.at, INTERVAL {rounding:UInt32} SECOND)::INT AS t,
       if(m.merchant_id = '', '(none)', m.merchant_id) AS merchant, sum(e.events) AS events
FROM
(
    SELECT toDateTime(ts) AS at, room_id, toUInt64(count) AS events
    FROM roomgate.moderation_events
    WHERE NOT dry_run AND reason != 'busy' AND ts BETWEEN from AND to
      AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
      AND ({merchant:String} = '' OR room_id IN picked)
    UNION ALL
    SELECT toDateTime(ts), room_id, toUInt64(1)
    FROM roomgate.leads_unique
    WHERE verdict = 'rejected' AND ts BETWEEN from AND to
      AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
      AND ({merchant:String} = '' OR room_id IN picked)
) AS e
LEFT JOIN merchants AS m ON m.room_id = e.room_id
GROUP BY t, merchant
ORDER BY t, merchant;

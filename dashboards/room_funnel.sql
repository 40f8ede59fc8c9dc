-- roomgate analyst queries (ClickHouse SQL, database `roomgate`).
--
-- Part 1 ("-- query:" blocks): tables for analysts. Each runs as is: paste
-- it into http://<clickhouse>:8123/play or clickhouse-client. They look back
-- over a fixed period (`INTERVAL 1 DAY` etc.); add `AND room_id = …` to the
-- WHERE clauses to focus on one room.
--
-- Part 2 ("-- chart:" blocks): time series for ClickHouse's built-in
-- /dashboard page. They use the page's query parameters {rounding:UInt32},
-- {seconds:UInt32}, {from:String}, {to:String} plus {room:UInt64}
-- (0 = all rooms); dashboards/make_dashboard_url.py turns them into a link.
-- To run one elsewhere, pass the parameters, e.g. clickhouse-client
-- --param_rounding=60 --param_seconds=86400 --param_from= --param_to=
-- --param_room=0.
--
-- Read schemas/README.md first: room_minute and like_ticks are Summing-
-- MergeTree tables, so every query aggregates them with sum() ... GROUP BY.


-- =========================================================================
-- Part 1: analyst tables
-- =========================================================================

-- query: Room funnel per minute (last 3 hours)
-- One row per room and minute. watch_minutes is the watch time of the
-- sessions that ended in that minute. leads counts every lead row (all
-- verdicts) as the rollup received it: a lead stored twice (failover, see
-- docs/DURABILITY.md) counts twice here; the queries below that read
-- roomgate.leads_unique count each lead once. accepted_lead_rate =
-- accepted leads / leads. rejects = chat
-- rejects and like pushes over the per-viewer cap (moderation_events).
SELECT
    room_id, minute, joins, leaves, watch_minutes, chat, likes, leads, leads_accepted,
    round(leads_accepted / nullIf(leads, 0), 3) AS accepted_lead_rate,
    rejects
FROM
(
    SELECT
        room_id,
        minute,
        sum(joins)                      AS joins,
        sum(leaves)                     AS leaves,
        round(sum(watch_ms) / 60000, 1) AS watch_minutes,
        sum(chat_messages)              AS chat,
        sum(like_taps)                  AS likes,
        sum(leads)                      AS leads,
        sum(leads_accepted)             AS leads_accepted,
        sum(rejects)                    AS rejects
    FROM roomgate.room_minute
    WHERE minute >= now() - INTERVAL 3 HOUR
    GROUP BY room_id, minute
)
ORDER BY room_id, minute;

-- query: Room summary (last 24 hours)
-- viewers = distinct viewers who joined; interaction_rate = share of those
-- viewers who chatted, liked (like_viewers) or left a lead in the period;
-- avg_watch_minutes over sessions that ended in the period. With views,
-- merchants, delivery and abuse, per room and per merchant:
-- rooms_merchants.sql.
WITH now() - INTERVAL 1 DAY AS since
SELECT
    s.room_id                                                  AS room_id,
    s.viewers                                                  AS viewers,
    round(s.watch_ms / 3600000, 2)                             AS watch_hours,
    round(s.watch_ms / 60000 / nullIf(s.ended_sessions, 0), 1) AS avg_watch_minutes,
    i.interacting_viewers                                      AS interacting_viewers,
    round(i.interacting_viewers / nullIf(s.viewers, 0), 3)     AS interaction_rate,
    l.leads                                                    AS leads,
    l.accepted                                                 AS leads_accepted,
    round(l.accepted / nullIf(l.leads, 0), 3)                  AS accepted_lead_rate
FROM
(
    SELECT room_id,
           uniqExactIf(viewer_id, event = 'join') AS viewers,
           sumIf(watch_ms, event = 'leave')       AS watch_ms,
           countIf(event = 'leave')               AS ended_sessions
    FROM roomgate.sessions
    WHERE ts >= since
    GROUP BY room_id
) AS s
LEFT JOIN
(
    SELECT room_id, uniqExact(viewer_id) AS interacting_viewers
    FROM
    (
        SELECT room_id, viewer_id FROM roomgate.chat_messages WHERE ts >= since
        UNION ALL
        SELECT room_id, viewer_id FROM roomgate.like_viewers WHERE minute >= toStartOfMinute(since)
        UNION ALL
        SELECT room_id, viewer_id FROM roomgate.leads_unique WHERE ts >= since
    )
    WHERE (room_id, viewer_id) IN
          (SELECT room_id, viewer_id FROM roomgate.sessions WHERE event = 'join' AND ts >= since)
    GROUP BY room_id
) AS i ON i.room_id = s.room_id
LEFT JOIN
(
    SELECT room_id, count() AS leads, countIf(verdict = 'accepted') AS accepted
    FROM roomgate.leads_unique
    WHERE ts >= since
    GROUP BY room_id
) AS l ON l.room_id = s.room_id
ORDER BY viewers DESC;

-- query: Leads per room with verdict breakdown (last 7 days)
-- Every lead is stored with its verdict (accepted, suspect, duplicate,
-- rejected); by_verdict also shows verdicts added later. distinct_phones
-- uses the keyed phone HMAC, never the phone itself. Reasons: next query.
SELECT
    room_id,
    count()                                           AS leads,
    countIf(verdict = 'accepted')                     AS accepted,
    countIf(verdict = 'suspect')                      AS suspect,
    countIf(verdict = 'duplicate')                    AS duplicate,
    countIf(verdict = 'rejected')                     AS rejected,
    round(countIf(verdict = 'accepted') / count(), 3) AS accepted_rate,
    sumMap(map(toString(verdict), toUInt64(1)))       AS by_verdict,
    round(avg(score), 1)                              AS avg_score,
    uniqExact(phone_hmac)                             AS distinct_phones,
    countIf(consent)                                  AS with_consent,
    quantileExact(0.5)(fill_ms)                       AS median_fill_ms
FROM roomgate.leads_unique
WHERE ts >= now() - INTERVAL 7 DAY
GROUP BY room_id
ORDER BY leads DESC;

-- query: Lead reasons (last 7 days)
-- Every reason found on leads, rejects and flags, by verdict.
SELECT
    room_id,
    reason,
    verdict,
    count() AS leads
FROM roomgate.leads_unique
ARRAY JOIN reasons AS reason
WHERE ts >= now() - INTERVAL 7 DAY
GROUP BY room_id, reason, verdict
ORDER BY room_id, leads DESC;

-- query: Concurrent viewers per minute (approximation, last 24 hours)
-- A session counts in every minute between its join and its leave (or
-- now, while it has no leave row). Sessions that joined more than 48 hours
-- ago and are still open are not seen; sessions of an engine that stopped
-- without a graceful shutdown have no leave row and count until now.
SELECT
    room_id,
    minute,
    uniqExact(viewer_id) AS viewers,
    count()              AS sessions
FROM
(
    WITH now() - INTERVAL 1 DAY AS from_ts, now() AS to_ts
    SELECT
        room_id,
        viewer_id,
        greatest(toDateTime(minIf(ts, event = 'join')), from_ts) AS t_start,
        if(countIf(event = 'leave') = 0, to_ts,
           least(toDateTime(maxIf(ts, event = 'leave')), to_ts)) AS t_end
    FROM roomgate.sessions
    WHERE ts >= now() - INTERVAL 2 DAY
    GROUP BY room_id, viewer_id, session_id
    HAVING t_end >= t_start
)
ARRAY JOIN timeSlots(t_start, toUInt32(t_end - t_start), 60) AS minute
GROUP BY room_id, minute
ORDER BY room_id, minute;

-- query: Top chatters per room (last 24 hours)
-- distinct_texts much lower than messages suggests copy-paste.
SELECT
    room_id,
    viewer_id,
    count()                          AS messages,
    uniqExact(text)                  AS distinct_texts,
    round(avg(lengthUTF8(text)), 1)  AS avg_chars,
    min(ts)                          AS first_message,
    max(ts)                          AS last_message
FROM roomgate.chat_messages
WHERE ts >= now() - INTERVAL 1 DAY
GROUP BY room_id, viewer_id
ORDER BY room_id, messages DESC
LIMIT 10 BY room_id;

-- query: Moderation by reason (last 24 hours)
-- Chat rejects and like taps over the cap (kind = 'chat' / 'like');
-- dry_run = true rows are would-be rejects of rules in dry-run mode. Lead
-- rejects are in roomgate.leads (verdict = 'rejected'), not here.
SELECT
    room_id,
    kind,
    reason,
    dry_run,
    sum(count)           AS events,
    uniqExact(viewer_id) AS viewers,
    min(ts)              AS first_seen,
    max(ts)              AS last_seen
FROM roomgate.moderation_events
WHERE ts >= now() - INTERVAL 1 DAY
GROUP BY room_id, kind, reason, dry_run
ORDER BY room_id, events DESC;

-- query: Session ends by close code (last 24 hours)
-- How viewers' connections ended (docs/PROTOCOL.md, close codes).
SELECT
    room_id,
    close,
    count()                                 AS sessions,
    round(avg(watch_ms) / 60000, 1)         AS avg_watch_minutes
FROM roomgate.sessions
WHERE event = 'leave' AND ts >= now() - INTERVAL 1 DAY
GROUP BY room_id, close
ORDER BY room_id, sessions DESC;


-- =========================================================================
-- Part 2: /dashboard charts (time series; first column t = Unix seconds)
-- Charts from room_minute have minute resolution: use a rounding that is a
-- multiple of 60.
-- =========================================================================

-- chart: Viewers joining and leaving per {rounding}s
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to
SELECT toStartOfInterval(minute, INTERVAL {rounding:UInt32} SECOND)::INT AS t,
       sum(joins) AS joins, sum(leaves) AS leaves
FROM roomgate.room_minute
WHERE minute BETWEEN toStartOfMinute(from) AND to
  AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
GROUP BY t
ORDER BY t WITH FILL STEP {rounding:UInt32};

-- chart: Concurrent viewers (approx., from sessions)
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to
SELECT slot::INT AS t, uniqExact(viewer_id) AS viewers
FROM
(
    SELECT viewer_id,
           greatest(toDateTime(minIf(ts, event = 'join')), from) AS t_start,
           if(countIf(event = 'leave') = 0, to,
              least(toDateTime(maxIf(ts, event = 'leave')), to)) AS t_end
    FROM roomgate.sessions
    WHERE ts >= from - INTERVAL 1 DAY AND ts <= to
      AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
    GROUP BY room_id, viewer_id, session_id
    HAVING t_end >= t_start
)
ARRAY JOIN timeSlots(t_start, toUInt32(t_end - t_start), {rounding:UInt32}) AS slot
GROUP BY t
ORDER BY t WITH FILL STEP {rounding:UInt32};

-- chart: Chat messages per {rounding}s
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to
SELECT toStartOfInterval(minute, INTERVAL {rounding:UInt32} SECOND)::INT AS t,
       sum(chat_messages) AS chat
FROM roomgate.room_minute
WHERE minute BETWEEN toStartOfMinute(from) AND to
  AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
GROUP BY t
ORDER BY t WITH FILL STEP {rounding:UInt32};

-- chart: Like taps per {rounding}s
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to
SELECT toStartOfInterval(minute, INTERVAL {rounding:UInt32} SECOND)::INT AS t,
       sum(like_taps) AS likes
FROM roomgate.room_minute
WHERE minute BETWEEN toStartOfMinute(from) AND to
  AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
GROUP BY t
ORDER BY t WITH FILL STEP {rounding:UInt32};

-- chart: Leads and accepted leads per {rounding}s
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to
SELECT toStartOfInterval(minute, INTERVAL {rounding:UInt32} SECOND)::INT AS t,
       sum(leads) AS leads, sum(leads_accepted) AS accepted
FROM roomgate.room_minute
WHERE minute BETWEEN toStartOfMinute(from) AND to
  AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
GROUP BY t
ORDER BY t WITH FILL STEP {rounding:UInt32};

-- chart: Accepted-lead rate
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to
SELECT toStartOfInterval(minute, INTERVAL {rounding:UInt32} SECOND)::INT AS t,
       round(sum(leads_accepted) / nullIf(sum(leads), 0), 3) AS accepted_rate
FROM roomgate.room_minute
WHERE minute BETWEEN toStartOfMinute(from) AND to
  AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
GROUP BY t
ORDER BY t;

-- chart: Leads by verdict per {rounding}s
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to
SELECT toStartOfInterval(ts, INTERVAL {rounding:UInt32} SECOND)::INT AS t,
       verdict, count() AS leads
FROM roomgate.leads_unique
WHERE ts BETWEEN from AND to
  AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
GROUP BY t, verdict
ORDER BY t, verdict;

-- chart: Rejects by reason per {rounding}s
WITH toDateTimeOrDefault({from:String}, '', now() - {seconds:UInt32}) AS from,
     toDateTimeOrDefault({to:String}, '', now()) AS to
SELECT toStartOfInterval(ts, INTERVAL {rounding:UInt32} SECOND)::INT AS t,
       reason, sum(count) AS rejects
FROM roomgate.moderation_events
WHERE ts BETWEEN from AND to AND NOT dry_run
  AND ({room:UInt64} = 0 OR room_id = {room:UInt64})
GROUP BY t, reason
ORDER BY t, reason;

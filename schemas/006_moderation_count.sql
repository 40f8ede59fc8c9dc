-- roomgate 006: moderation rows aggregate their events.
-- One row per (room, viewer, kind, reason, dry_run) and bucket
-- (guard.abuse.moderation_bucket_ms, 1 s by default), with the number of
-- events it stands for and the first one as a sample: a flood costs a
-- bounded number of rows. Rows from before this migration count 1.
-- Count events with sum(count), not count().
ALTER TABLE {db}.moderation_events ADD COLUMN IF NOT EXISTS count UInt32 DEFAULT 1 AFTER dry_run;

-- The room funnel counted rows; it now sums the chat and like rejects
-- (lead rejects are in `leads`). The new view is created before the old one
-- is dropped, so no insert in between goes uncounted (one in that instant
-- may be counted twice).
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.room_minute_rejects_mv TO {db}.room_minute AS
SELECT room_id, toStartOfMinute(ts) AS minute, sumIf(count, NOT dry_run AND kind IN ('chat', 'like')) AS rejects
FROM {db}.moderation_events GROUP BY room_id, minute;
DROP VIEW IF EXISTS {db}.room_minute_moderation_mv;

-- roomgate 008: which merchant each room belongs to (docs/ACCESS.md).
-- A dimension table: one row per change, the latest (highest updated_at)
-- per room is the room's merchant; merchant_id '' = unassigned. Written by
-- the engine (the admin API, and [[rooms]] merchant keys at start); read
-- by the merchants' row policies, lead delivery and dashboards. Read it
-- with FINAL (or argMax(merchant_id, updated_at) GROUP BY room_id).
-- Sharded by room_id like every other table, so on a cluster a room's
-- mapping sits on the same shard as the room's rows and the row policies
-- read it locally. No deduplication window: each change is a new row
-- (updated_at is the server's time at the insert), and a repeated change
-- is harmless.
CREATE TABLE IF NOT EXISTS {db}.room_merchants
(
    room_id      UInt64,
    merchant_id  LowCardinality(String),
    updated_at   DateTime64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY room_id;

-- roomgate 004: leads counted once per natural key.
-- A lead is one (room_id, viewer_id, client_lead_id). The engine stores
-- each exactly once across crashes and restarts (docs/DURABILITY.md); a
-- second row can only appear when a resend reaches an engine that knows
-- neither its log nor a recent ClickHouse row for it (failover to another
-- node, a lost data directory while ClickHouse was down, a resend after the
-- idempotency window). This view keeps the first decision of each key, so
-- analysts and dashboards never count a lead twice; read leads through it.
CREATE VIEW IF NOT EXISTS {db}.leads_unique AS
SELECT *
FROM {db}.leads
ORDER BY room_id, viewer_id, client_lead_id, ts
LIMIT 1 BY room_id, viewer_id, client_lead_id;

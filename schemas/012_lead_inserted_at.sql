-- roomgate 012: leads.inserted_at, when the row reached ClickHouse: the
-- order lead delivery follows (docs/LEADS.md, "Delivery lag"). A lead
-- delivered in insertion order cannot land behind a cursor, however late
-- it was stored (a ClickHouse outage, the engine's log draining after it,
-- a failover resend); in decision order (`ts`) it could.
--
-- Rows written before this migration take inserted_at = ts, so cursors
-- issued before it keep their place exactly: the column is added with
-- DEFAULT ts, materialized into every existing part (waited for), and
-- only then given its real default, the server's clock at the insert.
-- Each statement is idempotent: MATERIALIZE COLUMN does not rewrite
-- values already stored, and MODIFY COLUMN sets the same default again.
ALTER TABLE {db}.leads ADD COLUMN IF NOT EXISTS inserted_at DateTime64(3) DEFAULT ts;
ALTER TABLE {db}.leads MATERIALIZE COLUMN inserted_at SETTINGS mutations_sync = 2;
ALTER TABLE {db}.leads MODIFY COLUMN inserted_at DateTime64(3) DEFAULT now64(3);

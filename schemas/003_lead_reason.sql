-- roomgate 003: the reason a lead's ack carried, next to its verdict.
-- A restarted engine reads (verdict, reason) of recent leads back, so a
-- viewer's resend is answered as a replay with the original ack.
ALTER TABLE {db}.leads ADD COLUMN IF NOT EXISTS reason LowCardinality(String) DEFAULT '' AFTER verdict;

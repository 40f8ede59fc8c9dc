-- roomgate 005: which key each lead's ciphertexts are under.
-- `*_enc` are bound (AEAD associated data) to table, column, key id and the
-- row's room, viewer and client lead id; the key id names the encryption
-- key so it can rotate: new rows carry the new id, old rows keep theirs
-- (docs/SECURITY.md). '' = a row written before this migration (no
-- associated data, key as configured then).
ALTER TABLE {db}.leads ADD COLUMN IF NOT EXISTS pii_key_id LowCardinality(String) DEFAULT '' AFTER fields_enc;

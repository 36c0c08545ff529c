-- The audit trail pages by id (ids sort by creation time in byte order, as
-- for the other paged tables in 0002, 0005 and 0006); under a linguistic
-- collation, as initdb picks on many hosts, "id < cursor" skipped and
-- repeated entries.
ALTER TABLE audit_logs ALTER COLUMN id TYPE text COLLATE "C";

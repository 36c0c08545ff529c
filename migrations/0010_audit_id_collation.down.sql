ALTER TABLE audit_logs ALTER COLUMN id TYPE text COLLATE "default";

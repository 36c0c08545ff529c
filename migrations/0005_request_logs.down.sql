DROP INDEX IF EXISTS usage_records_day_idx;
CREATE INDEX request_logs_request_idx ON request_logs (request_id);
DROP INDEX IF EXISTS request_logs_list_idx;
CREATE INDEX request_logs_list_idx ON request_logs (organization_id, livemode, created_at DESC);
ALTER TABLE request_logs ALTER COLUMN request_id TYPE text COLLATE "default";

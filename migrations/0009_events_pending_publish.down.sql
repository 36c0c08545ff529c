DROP INDEX IF EXISTS events_pending_publish_idx;
ALTER TABLE events DROP COLUMN IF EXISTS pending_publish;

DROP INDEX IF EXISTS webhook_deliveries_recover_idx;
DROP INDEX IF EXISTS webhook_deliveries_event_idx;
ALTER TABLE webhook_deliveries DROP COLUMN IF EXISTS manual_pending;

ALTER TABLE webhook_attempts ALTER COLUMN delivery_id TYPE text COLLATE "default";
ALTER TABLE webhook_attempts ALTER COLUMN id TYPE text COLLATE "default";
ALTER TABLE webhook_deliveries ALTER COLUMN endpoint_id TYPE text COLLATE "default";
ALTER TABLE webhook_deliveries ALTER COLUMN event_id TYPE text COLLATE "default";
ALTER TABLE webhook_deliveries ALTER COLUMN id TYPE text COLLATE "default";
ALTER TABLE webhook_endpoint_secrets ALTER COLUMN endpoint_id TYPE text COLLATE "default";
ALTER TABLE webhook_endpoints ALTER COLUMN id TYPE text COLLATE "default";
ALTER TABLE events ALTER COLUMN type TYPE text COLLATE "default";
ALTER TABLE events ALTER COLUMN id TYPE text COLLATE "default";

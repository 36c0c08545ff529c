ALTER TABLE webhook_endpoints DROP COLUMN IF EXISTS dead_alerted_at;
ALTER TABLE webhook_endpoints DROP COLUMN IF EXISTS failing_alert_level;
ALTER TABLE webhook_deliveries DROP COLUMN IF EXISTS lease_id;

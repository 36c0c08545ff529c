ALTER TABLE webhook_deliveries DROP COLUMN IF EXISTS manual_claimed;

ALTER TABLE webhook_deliveries DROP COLUMN manual_attempts;

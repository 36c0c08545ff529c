-- A claimed manual attempt not yet recorded is a pending manual request
-- again, as it was before 0011.
UPDATE webhook_deliveries SET manual_pending = true WHERE manual_claimed;
ALTER TABLE webhook_deliveries DROP COLUMN IF EXISTS manual_claimed;

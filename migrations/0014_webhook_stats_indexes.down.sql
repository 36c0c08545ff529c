DROP INDEX IF EXISTS webhook_deliveries_created_idx;
DROP INDEX IF EXISTS webhook_attempts_created_idx;

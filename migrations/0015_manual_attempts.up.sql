-- A manual retry ("Retry now", an endpoint's recovery) is an attempt like any
-- other, but the automatic schedule counts only its own: someone retrying by
-- hand while debugging an endpoint must not use up its days of automatic
-- retries. attempts stays the count of every attempt.
ALTER TABLE webhook_deliveries ADD COLUMN manual_attempts integer NOT NULL DEFAULT 0;
UPDATE webhook_deliveries d SET manual_attempts = m.n
FROM (SELECT delivery_id, count(*) AS n FROM webhook_attempts WHERE trigger = 'manual' GROUP BY delivery_id) m
WHERE m.delivery_id = d.id;

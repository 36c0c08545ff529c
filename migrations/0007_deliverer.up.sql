-- The deliverer's bookkeeping (deliverer/).

-- Which claim holds a delivery's lease. locked_until says until when; the
-- lease id says whose it is, so a deliverer that lost its lease (it stalled
-- past locked_until and another took the delivery over) cannot record a
-- result over the new holder's, and lease renewals touch only their own.
ALTER TABLE webhook_deliveries ADD COLUMN lease_id text;

-- Alerting state, so that each alert is raised once per episode however
-- many deliverers run: the highest failing_since threshold already alerted
-- (0 = none; reset with failing_since), and when an alert about dead
-- deliveries last went out.
ALTER TABLE webhook_endpoints ADD COLUMN failing_alert_level smallint NOT NULL DEFAULT 0;
ALTER TABLE webhook_endpoints ADD COLUMN dead_alerted_at timestamptz;

-- Events and webhooks API (controlplane/events, controlplane/webhooks).

-- List cursors compare ids (id < $cursor ORDER BY id DESC) and ids are
-- time-sortable only byte by byte, so, as for customers in 0002, the id
-- columns the lists page over use the "C" collation. events.type too: the
-- type filter's prefix form (customer.*) is a byte range on it, which the
-- events_type_idx index serves only under "C". The columns that reference
-- an id follow it so that joins and foreign keys compare alike.
ALTER TABLE events ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE events ALTER COLUMN type TYPE text COLLATE "C";
ALTER TABLE webhook_endpoints ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE webhook_endpoint_secrets ALTER COLUMN endpoint_id TYPE text COLLATE "C";
ALTER TABLE webhook_deliveries ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE webhook_deliveries ALTER COLUMN event_id TYPE text COLLATE "C";
ALTER TABLE webhook_deliveries ALTER COLUMN endpoint_id TYPE text COLLATE "C";
ALTER TABLE webhook_attempts ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE webhook_attempts ALTER COLUMN delivery_id TYPE text COLLATE "C";

-- A manual retry (POST /v1/webhook-deliveries/{id}/retry, …/recover) or a
-- test event (POST /v1/webhook-endpoints/{id}/test) sets the delivery to
-- pending, next_attempt_at = now() and manual_pending = true. The deliverer
-- records its next attempt of that delivery with trigger 'manual' and clears
-- the flag in the same statement that records the attempt.
ALTER TABLE webhook_deliveries ADD COLUMN manual_pending boolean NOT NULL DEFAULT false;

-- Delivery lists filtered by event, and the per-event delivery summary of
-- GET /v1/events/{id}, look deliveries up by event within a tenant.
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id, id DESC);
-- Recovery walks an endpoint's failed and dead deliveries by age.
CREATE INDEX webhook_deliveries_recover_idx ON webhook_deliveries (endpoint_id, created_at)
    WHERE status IN ('failed', 'dead');

-- The dashboard's overview counts a tenant's webhook attempts and deliveries
-- of the last 24 hours, and an endpoint's page that endpoint's deliveries of
-- the last 24 hours (dashboard/usage.go, dashboard/store.go).
-- webhook_attempts had no index on its tenant columns, so every overview read
-- every tenant's attempts; the deliveries indexes end in id, so the counts
-- read all of a tenant's (or an endpoint's) deliveries ever made to keep one
-- day of them.
CREATE INDEX webhook_attempts_created_idx ON webhook_attempts (organization_id, livemode, created_at);
CREATE INDEX webhook_deliveries_created_idx ON webhook_deliveries (organization_id, livemode, created_at);

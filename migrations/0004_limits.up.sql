-- Limit overrides are per environment, like every tenant row: a plan raises
-- an organisation's live limits without touching its sandbox ones. Rows
-- written before this migration were meant for live.
ALTER TABLE limit_overrides ADD COLUMN livemode boolean NOT NULL DEFAULT true;
ALTER TABLE limit_overrides ALTER COLUMN livemode DROP DEFAULT;
ALTER TABLE limit_overrides DROP CONSTRAINT limit_overrides_pkey;
ALTER TABLE limit_overrides ADD PRIMARY KEY (organization_id, livemode, api_key_id, policy);
-- The names the gateway's rate_limit policies may have (they become Redis
-- hash fields, where ':' separates parts).
ALTER TABLE limit_overrides ADD CONSTRAINT limit_overrides_policy_check
    CHECK (policy ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$');
ALTER TABLE limit_overrides ADD CONSTRAINT limit_overrides_burst_check
    CHECK (burst IS NULL OR burst > 0);

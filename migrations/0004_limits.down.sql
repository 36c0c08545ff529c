DELETE FROM limit_overrides WHERE NOT livemode;
ALTER TABLE limit_overrides DROP CONSTRAINT limit_overrides_burst_check;
ALTER TABLE limit_overrides DROP CONSTRAINT limit_overrides_policy_check;
ALTER TABLE limit_overrides DROP CONSTRAINT limit_overrides_pkey;
ALTER TABLE limit_overrides ADD PRIMARY KEY (organization_id, api_key_id, policy);
ALTER TABLE limit_overrides DROP COLUMN livemode;

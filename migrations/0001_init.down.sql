DROP TABLE IF EXISTS customers, audit_logs, usage_records, request_logs, webhook_attempts,
    webhook_deliveries, webhook_endpoint_secrets, webhook_endpoints, events, limit_overrides,
    api_keys, sessions, memberships, users, organizations CASCADE;

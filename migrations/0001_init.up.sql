-- The platform's data model (DESIGN §4). Every tenant row carries
-- organization_id and livemode; every query filters on both.

CREATE TABLE organizations (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    -- API version pinned at the organisation's first API request (NULL until then).
    api_version text,
    -- Request body capture for debugging (off by default; live needs an owner).
    body_capture_sandbox boolean NOT NULL DEFAULT false,
    body_capture_live    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id            text PRIMARY KEY,
    email         text NOT NULL,
    name          text NOT NULL DEFAULT '',
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE memberships (
    organization_id text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id         text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'viewer')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

CREATE TABLE sessions (
    -- SHA-256 of the session token; the token itself is only in the cookie.
    token_hash      bytea PRIMARY KEY,
    user_id         text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    organization_id text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    livemode        boolean NOT NULL DEFAULT false,
    csrf_token      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX sessions_user_idx ON sessions (user_id);

CREATE TABLE api_keys (
    id              text PRIMARY KEY,
    organization_id text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    environment     text NOT NULL CHECK (environment IN ('sandbox', 'live')),
    kind            text NOT NULL CHECK (kind IN ('secret', 'restricted')),
    name            text NOT NULL DEFAULT '',
    prefix          text NOT NULL,
    key_hash        bytea NOT NULL UNIQUE,
    last4           text NOT NULL,
    scopes          text[] NOT NULL DEFAULT '{}',
    ip_allowlist    cidr[] NOT NULL DEFAULT '{}',
    expires_at      timestamptz,
    revoked_at      timestamptz,
    last_used_at    timestamptz,
    rolled_to       text REFERENCES api_keys(id),
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_org_idx ON api_keys (organization_id, environment, created_at DESC);

-- Per-organisation or per-key limits set through the control plane (a plan);
-- the gateway reads them with the key.
CREATE TABLE limit_overrides (
    organization_id text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    api_key_id      text NOT NULL DEFAULT '',  -- '' = the whole organisation
    policy          text NOT NULL,             -- e.g. 'per-key', 'quota-monthly'
    quota           bigint NOT NULL CHECK (quota > 0),
    window_seconds  bigint NOT NULL CHECK (window_seconds > 0),
    burst           bigint,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, api_key_id, policy)
);

CREATE TABLE events (
    id              text PRIMARY KEY,
    organization_id text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    livemode        boolean NOT NULL,
    type            text NOT NULL,
    api_version     text NOT NULL,
    data            jsonb NOT NULL,
    request_id      text,
    idempotency_key text,
    created_at      timestamptz NOT NULL
);
CREATE INDEX events_list_idx ON events (organization_id, livemode, id DESC);
CREATE INDEX events_type_idx ON events (organization_id, livemode, type, id DESC);
CREATE INDEX events_request_idx ON events (request_id);

CREATE TABLE webhook_endpoints (
    id              text PRIMARY KEY,
    organization_id text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    livemode        boolean NOT NULL,
    url             text NOT NULL,
    description     text NOT NULL DEFAULT '',
    enabled_events  text[] NOT NULL,
    status          text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    disabled_reason text,
    api_version     text,
    metadata        jsonb NOT NULL DEFAULT '{}',
    -- Start of the current run of consecutive failures (NULL when healthy).
    failing_since   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_list_idx ON webhook_endpoints (organization_id, livemode, id DESC);

-- Signing secrets, encrypted with the master key. Several are live during a
-- rotation; expired ones stop signing.
CREATE TABLE webhook_endpoint_secrets (
    id          text PRIMARY KEY,
    endpoint_id text NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    ciphertext  bytea NOT NULL,
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoint_secrets_endpoint_idx ON webhook_endpoint_secrets (endpoint_id);

CREATE TABLE webhook_deliveries (
    id               text PRIMARY KEY,
    organization_id  text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    livemode         boolean NOT NULL,
    event_id         text NOT NULL,
    endpoint_id      text NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    last_status_code integer,
    next_attempt_at  timestamptz,
    -- Lease held by the deliverer working on it; an expired lease means the
    -- worker died and another may take the delivery.
    locked_until     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status IN ('pending', 'failed');
CREATE INDEX webhook_deliveries_list_idx ON webhook_deliveries (organization_id, livemode, id DESC);
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id DESC);

CREATE TABLE webhook_attempts (
    id               text PRIMARY KEY,
    delivery_id      text NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    organization_id  text NOT NULL,
    livemode         boolean NOT NULL,
    status_code      integer,
    latency_ms       integer NOT NULL,
    response_snippet text NOT NULL DEFAULT '',
    error            text NOT NULL DEFAULT '',
    trigger          text NOT NULL CHECK (trigger IN ('scheduled', 'manual')),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, created_at);

-- One row per request through the gateway, partitioned by day so retention is
-- a partition drop. The ingester creates partitions ahead of time.
CREATE TABLE request_logs (
    request_id       text NOT NULL,
    created_at       timestamptz NOT NULL,
    organization_id  text NOT NULL,
    livemode         boolean NOT NULL,
    api_key_id       text NOT NULL DEFAULT '',
    method           text NOT NULL,
    route            text NOT NULL DEFAULT '',
    path             text NOT NULL,
    status           integer NOT NULL,
    duration_us      bigint NOT NULL,
    upstream_us      bigint NOT NULL DEFAULT 0,
    bytes_in         bigint NOT NULL DEFAULT 0,
    bytes_out        bigint NOT NULL DEFAULT 0,
    client_ip        text NOT NULL DEFAULT '',
    user_agent       text NOT NULL DEFAULT '',
    api_version      text NOT NULL DEFAULT '',
    idempotency_key  text NOT NULL DEFAULT '',
    idempotent_replayed boolean NOT NULL DEFAULT false,
    rate_limit       text NOT NULL DEFAULT '',
    error_type       text NOT NULL DEFAULT '',
    error_code       text NOT NULL DEFAULT '',
    request_headers  jsonb,
    response_headers jsonb,
    request_body     text,
    response_body    text,
    PRIMARY KEY (created_at, request_id)
) PARTITION BY RANGE (created_at);
CREATE INDEX request_logs_list_idx ON request_logs (organization_id, livemode, created_at DESC);
CREATE INDEX request_logs_request_idx ON request_logs (request_id);

CREATE TABLE usage_records (
    organization_id text NOT NULL,
    livemode        boolean NOT NULL,
    api_key_id      text NOT NULL DEFAULT '',
    metric          text NOT NULL,
    day             date NOT NULL,
    quantity        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (organization_id, livemode, api_key_id, metric, day)
);

CREATE TABLE audit_logs (
    id              text PRIMARY KEY,
    organization_id text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    livemode        boolean,
    actor_type      text NOT NULL CHECK (actor_type IN ('user', 'api_key', 'system', 'cli')),
    actor_id        text NOT NULL,
    action          text NOT NULL,
    target_type     text NOT NULL DEFAULT '',
    target_id       text NOT NULL DEFAULT '',
    data            jsonb NOT NULL DEFAULT '{}',
    ip              text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_list_idx ON audit_logs (organization_id, id DESC);

-- The sample API's own table: the "existing backend" knows nothing of the
-- platform beyond the organisation and environment the gateway vouches for.
CREATE TABLE customers (
    id              text PRIMARY KEY,
    organization_id text NOT NULL,
    livemode        boolean NOT NULL,
    email           text,
    name            text,
    description     text,
    phone           text,
    metadata        jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_list_idx ON customers (organization_id, livemode, id DESC);
CREATE INDEX customers_email_idx ON customers (organization_id, livemode, lower(email), id DESC);

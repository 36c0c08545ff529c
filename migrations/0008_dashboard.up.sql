-- The dashboard (dashboard/): invitations, login throttling and the
-- fixed-window counters that rate-limit dashboard actions. Sessions are in
-- 0001.

-- An invitation to join an organisation. The token is only in the link
-- shown once to the inviter; its SHA-256 is kept.
CREATE TABLE invitations (
    id              text COLLATE "C" PRIMARY KEY,
    organization_id text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    email           text NOT NULL,
    role            text NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'viewer')),
    token_hash      bytea NOT NULL UNIQUE,
    invited_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    accepted_at     timestamptz,
    accepted_by     text,
    revoked_at      timestamptz
);
CREATE INDEX invitations_org_idx ON invitations (organization_id, created_at DESC);

-- Failed sign-ins, one row each, counted over a sliding window per
-- (email, client address) and per client address.
CREATE TABLE login_failures (
    id         bigserial PRIMARY KEY,
    email      text NOT NULL,   -- lower-cased
    ip         text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_email_ip_idx ON login_failures (email, ip, created_at);
CREATE INDEX login_failures_ip_idx ON login_failures (ip, created_at);

-- Fixed-window counters for dashboard actions (per user, per client address).
CREATE TABLE dashboard_rate_limits (
    bucket       text NOT NULL,
    window_start timestamptz NOT NULL,
    hits         integer NOT NULL,
    PRIMARY KEY (bucket, window_start)
);

-- Sessions are looked up by hash (primary key) and expired in bulk.
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

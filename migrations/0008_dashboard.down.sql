DROP INDEX IF EXISTS sessions_expires_idx;
DROP TABLE IF EXISTS dashboard_rate_limits;
DROP TABLE IF EXISTS login_failures;
DROP TABLE IF EXISTS invitations;

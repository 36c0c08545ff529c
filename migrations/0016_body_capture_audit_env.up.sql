-- A body-capture change belongs to one environment, but its audit entries
-- were written without one, so each environment's trail showed the other's.
UPDATE audit_logs SET livemode = true
WHERE action = 'organization.updated' AND livemode IS NULL AND data ? 'body_capture_live';
UPDATE audit_logs SET livemode = false
WHERE action = 'organization.updated' AND livemode IS NULL AND data ? 'body_capture_sandbox';

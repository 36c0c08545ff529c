UPDATE audit_logs SET livemode = NULL
WHERE action = 'organization.updated' AND (data ? 'body_capture_live' OR data ? 'body_capture_sandbox');

ALTER TABLE request_logs DROP COLUMN auth_refused;

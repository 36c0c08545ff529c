ALTER TABLE request_logs DROP COLUMN error_message, DROP COLUMN error_param;

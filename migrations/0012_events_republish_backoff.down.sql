ALTER TABLE events
    DROP COLUMN IF EXISTS republish_count,
    DROP COLUMN IF EXISTS republished_at;

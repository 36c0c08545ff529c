-- The republisher used to produce every row still pending_publish on every
-- sweep, so a Kafka outage or a lagging ingester grew the producer's spool by
-- a whole batch every ten seconds. It now remembers its last send of a row and
-- how many it made, and waits longer after each (grace·2^n, capped).
ALTER TABLE events
    ADD COLUMN republished_at timestamptz,
    ADD COLUMN republish_count integer NOT NULL DEFAULT 0;

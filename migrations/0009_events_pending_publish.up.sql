-- Events created through POST /v1/events are stored, then produced to Kafka
-- from memory. pending_publish marks such a row until a consumer has read it
-- back from Kafka, so that a control plane killed in between does not lose
-- the event: the republisher produces rows still pending after a grace time.
ALTER TABLE events ADD COLUMN pending_publish boolean NOT NULL DEFAULT false;
CREATE INDEX events_pending_publish_idx ON events (created_at) WHERE pending_publish;

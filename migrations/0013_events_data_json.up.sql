-- events.data keeps the bytes it was given. As jsonb it came back with its
-- keys reordered (shortest first) and its numbers rewritten (1E2 as 100), so
-- a webhook's retries, built from the stored row, differed from its first
-- attempt, built from the Kafka message: the same webhook-id with another
-- body, and GET /v1/events/{id} showed objects in an order no backend chose.
-- json stores the text as given and still has the -> and ->> operators.
ALTER TABLE events ALTER COLUMN data TYPE json USING data::json;

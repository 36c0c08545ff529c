-- A request api_key refused after identifying its key (expired, outside its
-- IP allowlist, a scope or API version it lacks) is logged under the
-- organisation but not metered as a request: the ingester reads this flag.
-- A constant default makes this a catalogue change on every partition.
ALTER TABLE request_logs ADD COLUMN auth_refused boolean NOT NULL DEFAULT false;

-- The error object's message and param of a failed request, kept without
-- body capture: they are what the API told the client, and what a support
-- engineer reads first. A constant default makes this a catalogue change on
-- every partition, not a rewrite.
ALTER TABLE request_logs
    ADD COLUMN error_message text NOT NULL DEFAULT '',
    ADD COLUMN error_param   text NOT NULL DEFAULT '';

-- A job's webhook body is kept as the text that was sent, not as `jsonb`.
--
-- The body is fixed at the first attempt so that every retry sends the same bytes (same
-- `webhook-id`, same links). For a job of 100,000 documents it is some 85 MB of JSON: as
-- `jsonb` the database parsed it into a tree on the way in and printed it again on the way
-- out, and autos held it as a tree of JSON values; as text it is stored and read as it is.
-- `payload` stays for the deliveries written before (and the small test messages): they are
-- sent as before.
ALTER TABLE webhook_deliveries ADD COLUMN body text;

-- Multipart uploads in progress, recorded on the document being transferred: a process that
-- dies mid-transfer leaves its upload's parts in the bucket, and the sweeper, recovering the
-- document once its lease runs out, aborts the upload recorded here. Cleared whenever the
-- claim ends (stored, failed, given back, swept).
ALTER TABLE documents
    ADD COLUMN upload_key text,
    ADD COLUMN upload_id text;

-- The sweeper looks for them in every pass. Only the rare rows with an upload are indexed,
-- and transitions that leave the columns empty stay heap-only updates.
CREATE INDEX documents_uploads ON documents (upload_id) WHERE upload_id IS NOT NULL;

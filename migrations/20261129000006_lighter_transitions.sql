-- Lighter document transitions: a batch claims and settles its documents a few at a time, and
-- on a busy machine PostgreSQL's work per transition is what the pipeline competes with.
--
-- 1. Progress notifications per statement, not per row: one per job and statement (naming
--    the last document, by position, whose status changed). Listeners read the job once per
--    burst of notifications anyway, so nothing they show changes; there are simply fewer
--    notifications to queue, signal and read.
DROP TRIGGER documents_progress ON documents;
DROP FUNCTION autos_notify_document();

CREATE FUNCTION autos_notify_documents() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('autos_progress', changed.job_id::text || ':' || changed.id::text)
    FROM (SELECT DISTINCT ON (n.job_id) n.job_id, n.id
          FROM new_rows n JOIN old_rows o ON o.id = n.id
          WHERE n.job_id IS NOT NULL AND o.status IS DISTINCT FROM n.status
          ORDER BY n.job_id, n.position DESC) AS changed;
    RETURN NULL;
END;
$$;

CREATE TRIGGER documents_progress AFTER UPDATE ON documents
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION autos_notify_documents();

-- 2. Transitions as heap-only (HOT) updates: no index covers a column a transition changes
--    (status, lease, claim, task), and pages keep room for the new row versions. The sweeper
--    finds expired leases through the active jobs' documents instead of an index of leases;
--    the per-job lookups use an index on the job alone.
DROP INDEX documents_pending_tasks;
DROP INDEX documents_expired_leases;
CREATE INDEX documents_job ON documents (job_id);
DROP INDEX documents_job_status_id;
ALTER TABLE documents SET (fillfactor = 70);
ALTER TABLE download_jobs SET (fillfactor = 70);

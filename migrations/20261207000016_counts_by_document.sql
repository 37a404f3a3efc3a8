-- The counts' functions look up the jobs of the documents that changed, one document at a time;
-- pages of a job's documents are read in the job's order from an index.
--
-- `autos_shift_counts` (migration 0010) and `autos_shift_refresh_counts` (0012) joined the
-- changed documents to `job_documents` / `refresh_jobs` and to the active jobs, and left the
-- order to the planner. autos' connections keep one generic plan per statement, made on a
-- young database's statistics (a few rows, a handful of active jobs): the plan started from
-- the active jobs and read every document of each — 2,000 index entries for a claim of five
-- in a job of 2,000, 100,000 in a job of 100,000, for each of its 20,000 claims and each of
-- its endings. A job cost the square of its size.
--
-- Now each changed document's jobs are looked up by the document (`OFFSET 0` keeps the
-- subquery a lateral lookup the planner cannot turn around): a claim of five reads five
-- index entries, whatever the size of the job. The functions are otherwise unchanged.

CREATE OR REPLACE FUNCTION autos_shift_counts(p_ids uuid[], p_was text[], p_now text[])
RETURNS SETOF download_jobs LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    WITH changed AS (
        SELECT * FROM UNNEST(p_ids, p_was, p_now) AS m(id, old_status, new_status)
        WHERE m.old_status <> m.new_status),
     shifted AS (
        SELECT jd.job_id,
               (count(*) FILTER (WHERE m.new_status = 'PENDING')
                - count(*) FILTER (WHERE m.old_status = 'PENDING'))::int AS pending,
               (count(*) FILTER (WHERE m.new_status = 'PROCESSING')
                - count(*) FILTER (WHERE m.old_status = 'PROCESSING'))::int AS processing,
               (count(*) FILTER (WHERE m.new_status = 'AVAILABLE')
                - count(*) FILTER (WHERE m.old_status = 'AVAILABLE'))::int AS available,
               (count(*) FILTER (WHERE m.new_status = 'FAILED')
                - count(*) FILTER (WHERE m.old_status = 'FAILED'))::int AS failed,
               bool_or(m.new_status = 'PROCESSING') AS started,
               (array_agg(m.id ORDER BY jd.position DESC))[1] AS last_document
        FROM changed m
        CROSS JOIN LATERAL (SELECT c.job_id, c.position FROM job_documents c
                            WHERE c.document_id = m.id OFFSET 0) jd
        JOIN download_jobs j ON j.id = jd.job_id
        WHERE j.status IN ('QUEUED', 'RUNNING') GROUP BY jd.job_id),
     locked AS (
        SELECT j.id FROM download_jobs j WHERE j.id IN (SELECT s.job_id FROM shifted s)
        ORDER BY j.id FOR NO KEY UPDATE),
     updated AS (
        UPDATE download_jobs j SET pending = j.pending + s.pending,
               processing = j.processing + s.processing,
               available = j.available + s.available, failed = j.failed + s.failed,
               status = CASE WHEN s.started AND j.status = 'QUEUED' THEN 'RUNNING'
                             ELSE j.status END,
               started_at = CASE WHEN s.started THEN coalesce(j.started_at, now())
                                 ELSE j.started_at END,
               updated_at = now()
        FROM shifted s JOIN locked l ON l.id = s.job_id
        WHERE j.id = s.job_id AND j.status IN ('QUEUED', 'RUNNING')
        RETURNING j AS job, s.last_document),
     notified AS (
        SELECT count(pg_notify('autos_progress',
                               (u.job).id::text || ':' || u.last_document::text))
        FROM updated u)
    SELECT (u.job).* FROM updated u, notified n WHERE n.count >= 0;
END;
$$;

CREATE OR REPLACE FUNCTION autos_shift_refresh_counts(p_ids uuid[], p_was text[], p_now text[])
RETURNS SETOF download_jobs LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    WITH changed AS (
        SELECT * FROM UNNEST(p_ids, p_was, p_now) AS m(id, old_status, new_status)
        WHERE m.old_status <> m.new_status),
     shifted AS (
        SELECT rj.job_id,
               (count(*) FILTER (WHERE m.new_status = 'PENDING')
                - count(*) FILTER (WHERE m.old_status = 'PENDING'))::int AS pending,
               (count(*) FILTER (WHERE m.new_status = 'PROCESSING')
                - count(*) FILTER (WHERE m.old_status = 'PROCESSING'))::int AS processing,
               (count(*) FILTER (WHERE m.new_status = 'AVAILABLE')
                - count(*) FILTER (WHERE m.old_status = 'AVAILABLE'))::int AS available,
               bool_or(m.new_status = 'PROCESSING') AS started,
               (array_agg(m.id ORDER BY m.id DESC))[1] AS last_document
        FROM changed m
        CROSS JOIN LATERAL (SELECT r.job_id FROM refresh_jobs r
                            WHERE r.document_id = m.id OFFSET 0) rj
        JOIN download_jobs j ON j.id = rj.job_id
        WHERE j.status IN ('QUEUED', 'RUNNING') GROUP BY rj.job_id),
     locked AS (
        SELECT j.id FROM download_jobs j WHERE j.id IN (SELECT s.job_id FROM shifted s)
        ORDER BY j.id FOR NO KEY UPDATE),
     updated AS (
        UPDATE download_jobs j SET pending = j.pending + s.pending,
               processing = j.processing + s.processing,
               available = j.available + s.available,
               status = CASE WHEN s.started AND j.status = 'QUEUED' THEN 'RUNNING'
                             ELSE j.status END,
               started_at = CASE WHEN s.started THEN coalesce(j.started_at, now())
                                 ELSE j.started_at END,
               updated_at = now()
        FROM shifted s JOIN locked l ON l.id = s.job_id
        WHERE j.id = s.job_id AND j.status IN ('QUEUED', 'RUNNING')
        RETURNING j AS job, s.last_document),
     notified AS (
        SELECT count(pg_notify('autos_progress',
                               (u.job).id::text || ':' || u.last_document::text))
        FROM updated u)
    SELECT (u.job).* FROM updated u, notified n WHERE n.count >= 0;
END;
$$;

-- A page of a job's documents is read from the job's list in its order, `first` entries after
-- the previous page's last: no more than the page, wherever it starts.
CREATE INDEX job_documents_job_position ON job_documents (job_id, position);

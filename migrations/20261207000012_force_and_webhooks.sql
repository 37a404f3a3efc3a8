-- 1. `force` never takes away a stored document.
--
-- A stored (AVAILABLE) document whose content at the source may have changed — another
-- SHA-256 announced, or none announced and the job forced — is no longer put back to PENDING:
-- it stays AVAILABLE, its copy and download link untouched, while a *refresh* fetches it again
-- into the same S3 key (an upload replaces the object atomically, and only once it is whole
-- and verified). A refresh that stores a copy updates the document's stored SHA-256, size and
-- time; one that fails after its attempts leaves the old copy, with `last_error` saying so.
--
-- One refresh per document at a time (one writer per S3 key), shared by every job that awaits
-- it (`refresh_jobs`). Those jobs count the document PENDING or PROCESSING as the refresh is,
-- and AVAILABLE once it ends either way (`autos_shift_refresh_counts`): the document's status
-- never changes, so `autos_shift_counts` never moves them for it. A job's end (and webhook)
-- therefore waits for its refreshes. Writers lock the document, then the refresh, then the
-- jobs, as the transfer path locks documents then jobs.
CREATE TABLE document_refreshes (
    document_id uuid PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'PROCESSING')),
    -- attempts that ended with a result about the document; interruptions (its worker died)
    -- are counted apart
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    interruptions integer NOT NULL DEFAULT 0 CHECK (interruptions >= 0),
    last_error text,
    -- while PENDING: when the next attempt is due, and the queue task that will make it
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    task_id uuid,
    -- while PROCESSING: the worker's claim, renewed by its heartbeats
    claim_token uuid,
    lease_until timestamptz,
    -- a multipart upload under way, for the sweeper to abort should its worker die
    upload_key text,
    upload_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'PROCESSING') = (claim_token IS NOT NULL)),
    CHECK ((status = 'PROCESSING') = (lease_until IS NOT NULL))
);

CREATE TABLE refresh_jobs (
    document_id uuid NOT NULL REFERENCES document_refreshes (document_id) ON DELETE CASCADE,
    job_id uuid NOT NULL REFERENCES download_jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (document_id, job_id)
);

CREATE INDEX refresh_jobs_job ON refresh_jobs (job_id);

-- As `autos_shift_counts` (migration 0010), for refreshes: moves the counts of every active
-- job awaiting the refreshes of `p_ids` from `p_was[i]` to `p_now[i]` (PENDING, PROCESSING,
-- AVAILABLE), sends their progress notifications, returns the jobs as they are afterwards.
-- VOLATILE for the same reason: it sees jobs that joined a refresh while the caller's
-- statement waited for it.
CREATE FUNCTION autos_shift_refresh_counts(p_ids uuid[], p_was text[], p_now text[])
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
        FROM changed m JOIN refresh_jobs rj ON rj.document_id = m.id
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

-- 2. Several webhooks per job.
--
-- A `startDownload` answered with an existing job (`created: false`) that brings a
-- `webhookUrl` adds it to the job, once per URL. `download_jobs.webhook_url` stays the
-- creator's; the others are here, in the order they came.
CREATE TABLE job_webhooks (
    job_id uuid NOT NULL REFERENCES download_jobs (id) ON DELETE CASCADE,
    url text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, url)
);

-- One delivery of a job's ending to one URL, with the queue task that sends it (the task's
-- metadata is the typetag form of `jobs::webhook::DeliverWebhook`). Returns the delivery.
CREATE FUNCTION autos_enqueue_job_delivery(p_job download_jobs, p_url text)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    delivery uuid := gen_random_uuid();
BEGIN
    INSERT INTO webhook_deliveries (id, job_id, tenant_id, url, message_id, event_type)
    VALUES (delivery, p_job.id, p_job.tenant_id, p_url,
            'msg_' || replace(gen_random_uuid()::text, '-', ''),
            CASE p_job.status
                WHEN 'COMPLETED' THEN 'job.completed'
                WHEN 'COMPLETED_WITH_ERRORS' THEN 'job.completed_with_errors'
                WHEN 'FAILED' THEN 'job.failed'
                ELSE 'job.cancelled'
            END);
    INSERT INTO fang_tasks (id, metadata, task_type)
    VALUES (gen_random_uuid(),
            jsonb_build_object('type', 'DeliverWebhook', 'delivery_id', delivery),
            'webhook');
    PERFORM pg_notify('autos_tasks', 'webhook');
    RETURN delivery;
END;
$$;

-- Still in the transaction that ends the job: one delivery per URL of the job, the creator's
-- first. Each statement of the function sees what committed before it ran, so a URL added by
-- a `startDownload` that held the job's row until it committed is seen.
CREATE OR REPLACE FUNCTION autos_enqueue_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM autos_enqueue_job_delivery(NEW, u.url)
    FROM (SELECT NEW.webhook_url AS url, 0 AS ord, NEW.created_at AS added
          WHERE NEW.webhook_url IS NOT NULL
          UNION ALL
          SELECT w.url, 1, w.created_at FROM job_webhooks w WHERE w.job_id = NEW.id
          ORDER BY ord, added, url) AS u;
    RETURN NULL;
END;
$$;

-- A job that ends may have URLs of its callers even without the creator's.
DROP TRIGGER download_jobs_webhook_on_end ON download_jobs;
CREATE TRIGGER download_jobs_webhook_on_end AFTER UPDATE OF status ON download_jobs
    FOR EACH ROW
    WHEN (OLD.status IN ('QUEUED', 'RUNNING')
          AND NEW.status IN ('COMPLETED', 'COMPLETED_WITH_ERRORS', 'FAILED', 'CANCELLED'))
    EXECUTE FUNCTION autos_enqueue_webhook();

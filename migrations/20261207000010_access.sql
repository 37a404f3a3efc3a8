-- Access control: tenants, API keys, the audit log; jobs and webhook deliveries belong to a
-- tenant, and a document is shared by every active job that covers it.

CREATE TABLE tenants (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    -- Standard Webhooks signing secret (`whsec_…`), generated when first needed; after a
    -- rotation the previous one also signs until `previous_valid_until`.
    webhook_secret text,
    previous_webhook_secret text,
    previous_valid_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Everything that existed before tenants belongs to `default`, and keeps its secret.
INSERT INTO tenants (slug, webhook_secret)
SELECT 'default', (SELECT value FROM settings WHERE key = 'webhook_secret');
DELETE FROM settings WHERE key = 'webhook_secret';

-- `autos_{id}_{secret}`: the id in the clear, the secret only as its SHA-256.
CREATE TABLE api_keys (
    id text PRIMARY KEY CHECK (id ~ '^[a-z0-9]{12}$'),
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name text,
    scopes text[] NOT NULL
        CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'write', 'admin']),
    secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
    rate_limit integer CHECK (rate_limit > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz,
    -- written now and then from memory, not on every request
    last_used_at timestamptz
);

CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

-- Every process that authenticates caches keys; a change to one is announced on commit so
-- that a revocation takes effect at once everywhere.
CREATE FUNCTION autos_notify_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('autos_keys', coalesce(NEW.id, OLD.id));
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_changed AFTER INSERT OR DELETE OR UPDATE OF revoked_at, expires_at, scopes, tenant_id, secret_sha256
    ON api_keys FOR EACH ROW EXECUTE FUNCTION autos_notify_key();

-- Jobs are a tenant's; one active job per tenant and process.
ALTER TABLE download_jobs ADD COLUMN tenant_id uuid REFERENCES tenants (id);
UPDATE download_jobs SET tenant_id = (SELECT id FROM tenants WHERE slug = 'default');
ALTER TABLE download_jobs ALTER COLUMN tenant_id SET NOT NULL;

DROP INDEX download_jobs_one_active;
CREATE UNIQUE INDEX download_jobs_one_active ON download_jobs (tenant_id, process_id)
    WHERE status IN ('QUEUED', 'RUNNING');
CREATE INDEX download_jobs_tenant_created ON download_jobs (tenant_id, created_at DESC, id DESC);
CREATE INDEX download_jobs_tenant_process_created
    ON download_jobs (tenant_id, process_id, created_at DESC, id DESC);

-- Deliveries too (those of `sendTestWebhook` have no job to tell).
ALTER TABLE webhook_deliveries ADD COLUMN tenant_id uuid REFERENCES tenants (id);
UPDATE webhook_deliveries w SET tenant_id = coalesce(
    (SELECT j.tenant_id FROM download_jobs j WHERE j.id = w.job_id),
    (SELECT id FROM tenants WHERE slug = 'default'));
ALTER TABLE webhook_deliveries ALTER COLUMN tenant_id SET NOT NULL;

CREATE OR REPLACE FUNCTION autos_enqueue_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delivery uuid := gen_random_uuid();
BEGIN
    INSERT INTO webhook_deliveries (id, job_id, tenant_id, url, message_id, event_type)
    VALUES (delivery, NEW.id, NEW.tenant_id, NEW.webhook_url,
            'msg_' || replace(gen_random_uuid()::text, '-', ''),
            CASE NEW.status
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
    RETURN NULL;
END;
$$;

-- A document is wanted by every active job that covers it (`job_documents`), of whichever
-- tenant: a document two tenants ask for is transferred once, and each job's counts follow
-- it. `documents.job_id` only names the job whose task queued its current or last attempt.
-- Every change of a document's status moves the counts of the active jobs covering it through
-- `autos_shift_counts` (below), which also sends their progress notifications: the trigger
-- that did so per statement of `documents` goes.
DROP TRIGGER documents_progress ON documents;
DROP FUNCTION autos_notify_documents();

-- Who did what: every mutation and key event, per tenant, kept for the retention period.
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    tenant_id uuid REFERENCES tenants (id) ON DELETE CASCADE,
    key_id text,
    action text NOT NULL,
    target text,
    -- `ok`, or the error code the caller got
    outcome text NOT NULL,
    client_addr text,
    details jsonb
);

CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id DESC);
CREATE INDEX audit_log_at ON audit_log (at);

-- Moves the counts of every active job covering documents whose status changed (`p_was[i]` to
-- `p_now[i]` for `p_ids[i]`), sends each of those jobs its progress notification (naming the
-- last of its changed documents, by position), and returns the jobs as they are afterwards. A
-- move to PROCESSING starts a QUEUED job. Locks the jobs' rows in id order, so that concurrent
-- writers cannot deadlock.
--
-- A function, VOLATILE, so that it reads `job_documents` with a snapshot of its own, taken
-- after the caller's statement has locked (and if need be waited for) the documents: a job
-- created by a transaction that held those documents (a `startDownload` planning its job) and
-- committed meanwhile is then seen and counted, where the caller's own snapshot, taken before
-- the wait, would miss it and leave that job's counts behind its documents for good.
CREATE FUNCTION autos_shift_counts(p_ids uuid[], p_was text[], p_now text[])
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
        FROM changed m JOIN job_documents jd ON jd.document_id = m.id
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

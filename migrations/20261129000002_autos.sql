-- Processes, their documents, and the download jobs that transfer them.

CREATE TABLE processes (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    number text NOT NULL UNIQUE,
    court text,
    class text,
    subject text,
    looked_up_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE download_jobs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    process_id uuid NOT NULL REFERENCES processes (id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'QUEUED' CHECK (status IN
        ('QUEUED', 'RUNNING', 'COMPLETED', 'COMPLETED_WITH_ERRORS', 'FAILED', 'CANCELLED')),
    forced boolean NOT NULL DEFAULT false,
    -- Counts of the job's documents by status, kept in the same transaction as every
    -- document transition: progress and "is this the last one?" are one row away.
    total integer NOT NULL CHECK (total >= 0),
    pending integer NOT NULL DEFAULT 0 CHECK (pending >= 0),
    processing integer NOT NULL DEFAULT 0 CHECK (processing >= 0),
    available integer NOT NULL DEFAULT 0 CHECK (available >= 0),
    failed integer NOT NULL DEFAULT 0 CHECK (failed >= 0),
    webhook_url text,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (pending + processing + available + failed = total),
    CHECK ((status IN ('QUEUED', 'RUNNING')) = (completed_at IS NULL))
);

-- At most one active job per process, whatever races.
CREATE UNIQUE INDEX download_jobs_one_active ON download_jobs (process_id)
    WHERE status IN ('QUEUED', 'RUNNING');
-- `jobs` pagination (newest first), optionally by status or process; `latestJob`.
CREATE INDEX download_jobs_created ON download_jobs (created_at DESC, id DESC);
CREATE INDEX download_jobs_status_created ON download_jobs (status, created_at DESC, id DESC);
CREATE INDEX download_jobs_process_created ON download_jobs (process_id, created_at DESC, id DESC);

CREATE TABLE documents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    process_id uuid NOT NULL REFERENCES processes (id) ON DELETE CASCADE,
    source_id text NOT NULL,
    position integer NOT NULL,
    -- false once the source no longer lists it (kept: it may be stored and linked from old jobs)
    listed boolean NOT NULL DEFAULT true,
    name text NOT NULL,
    kind text,
    mime_type text,
    url text NOT NULL,
    size bigint,
    sha256 text,
    status text NOT NULL DEFAULT 'PENDING' CHECK (status IN
        ('PENDING', 'PROCESSING', 'AVAILABLE', 'FAILED')),
    -- the job now responsible for it
    job_id uuid REFERENCES download_jobs (id) ON DELETE SET NULL,
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error text,
    -- while PENDING: when the next attempt is due, and the queue task that will make it
    next_attempt_at timestamptz,
    task_id uuid,
    -- while PROCESSING: the worker renews this; once it passes, the document is re-queued
    lease_until timestamptz,
    claim_token uuid,
    -- what is stored in S3 (kept when the status changes, so an unchanged document is not sent again)
    storage_key text,
    stored_sha256 text,
    stored_size bigint,
    stored_content_type text,
    stored_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (process_id, source_id),
    CHECK ((status = 'AVAILABLE') <= (storage_key IS NOT NULL)),
    CHECK ((status = 'PROCESSING') = (lease_until IS NOT NULL)),
    CHECK ((status = 'PROCESSING') = (claim_token IS NOT NULL))
);

CREATE INDEX documents_process_position ON documents (process_id, position);
CREATE INDEX documents_job_status ON documents (job_id, status);
CREATE INDEX documents_expired_leases ON documents (lease_until) WHERE status = 'PROCESSING';
CREATE INDEX documents_pending_tasks ON documents (task_id) WHERE status = 'PENDING';

-- Which documents each job covered: a job's document list outlives later jobs of its process.
CREATE TABLE job_documents (
    job_id uuid NOT NULL REFERENCES download_jobs (id) ON DELETE CASCADE,
    document_id uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    position integer NOT NULL,
    PRIMARY KEY (job_id, document_id)
);

CREATE INDEX job_documents_document ON job_documents (document_id);

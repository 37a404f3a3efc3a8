-- Webhooks: one delivery per job ending, with every attempt recorded.

CREATE TABLE settings (
    key text PRIMARY KEY,
    value text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- NULL for sendTestWebhook
    job_id uuid REFERENCES download_jobs (id) ON DELETE CASCADE,
    url text NOT NULL,
    -- Standard Webhooks `webhook-id`: the same on every attempt of one message
    message_id text NOT NULL UNIQUE,
    event_type text NOT NULL,
    -- built at the first attempt and sent unchanged on every retry
    payload jsonb,
    status text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED')),
    attempts integer NOT NULL DEFAULT 0,
    last_status_code integer,
    last_error text,
    delivered_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id, created_at DESC);

CREATE TABLE webhook_attempts (
    id bigserial PRIMARY KEY,
    delivery_id uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    status_code integer,
    error text,
    duration_ms integer NOT NULL
);

CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, attempted_at);

-- A job that ends with a webhook URL gets its delivery and the queue task that sends it in
-- the same transaction as the status change, whichever code path made it: a crash cannot
-- lose it. The task's metadata is the typetag form of `jobs::webhook::DeliverWebhook`.
CREATE FUNCTION autos_enqueue_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delivery uuid := gen_random_uuid();
BEGIN
    INSERT INTO webhook_deliveries (id, job_id, url, message_id, event_type)
    VALUES (delivery, NEW.id, NEW.webhook_url, 'msg_' || replace(gen_random_uuid()::text, '-', ''),
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

CREATE TRIGGER download_jobs_webhook_on_insert AFTER INSERT ON download_jobs
    FOR EACH ROW
    WHEN (NEW.webhook_url IS NOT NULL
          AND NEW.status IN ('COMPLETED', 'COMPLETED_WITH_ERRORS', 'FAILED', 'CANCELLED'))
    EXECUTE FUNCTION autos_enqueue_webhook();

CREATE TRIGGER download_jobs_webhook_on_end AFTER UPDATE OF status ON download_jobs
    FOR EACH ROW
    WHEN (NEW.webhook_url IS NOT NULL
          AND OLD.status IN ('QUEUED', 'RUNNING')
          AND NEW.status IN ('COMPLETED', 'COMPLETED_WITH_ERRORS', 'FAILED', 'CANCELLED'))
    EXECUTE FUNCTION autos_enqueue_webhook();

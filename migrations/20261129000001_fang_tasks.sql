-- fang 0.11's PostgreSQL task table, as its own migration creates it, plus the index our
-- fetch query uses. autos runs fang's tasks on its own connection pool (see src/queue), so
-- that a task can be enqueued in the same transaction as the rows it works on.
CREATE TYPE fang_task_state AS ENUM ('new', 'in_progress', 'failed', 'finished', 'retried');

CREATE TABLE fang_tasks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    metadata jsonb NOT NULL,
    error_message text,
    state fang_task_state NOT NULL DEFAULT 'new',
    task_type text NOT NULL DEFAULT 'common',
    uniq_hash text,
    retries integer NOT NULL DEFAULT 0,
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX fang_tasks_state_index ON fang_tasks (state);
CREATE INDEX fang_tasks_type_index ON fang_tasks (task_type);
CREATE INDEX fang_tasks_scheduled_at_index ON fang_tasks (scheduled_at);
-- fang's `uniq` de-duplication is check-then-insert; a unique index makes it hold under races.
CREATE UNIQUE INDEX fang_tasks_uniq_hash_live ON fang_tasks (uniq_hash)
    WHERE uniq_hash IS NOT NULL AND state IN ('new', 'retried', 'in_progress');
-- What a worker looks for: due tasks, and tasks whose worker stopped touching them.
CREATE INDEX fang_tasks_fetch ON fang_tasks (task_type, scheduled_at)
    WHERE state IN ('new', 'retried', 'in_progress');

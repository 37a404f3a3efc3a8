-- A fair queue, and task rows that only their worker may change.
--
-- Rounds. The fetch took the earliest due task, so a job of 10,000 documents held every worker
-- until it ended and a job of 3 enqueued after it waited behind it. Each task that is due when
-- enqueued now gets a round: the i-th batch of a job the i-th round from the one the queue is
-- serving (the lowest round waiting), and a single task the round being served. The fetch
-- takes the lowest round first, so jobs take turns, one batch each per round, whatever their
-- sizes and whenever they started. A task due later (a retry after its backoff) has no round
-- (NULL): it waits apart, in an index by schedule, so that fetches never read past it, and is
-- taken as soon as it is due, before the rounds. Rows written before this migration (and by
-- other writers that set no round) are such tasks, so nothing waiting is lost or reordered.
ALTER TABLE fang_tasks ADD COLUMN round bigint;

-- The claim: set by the fetch that hands a row to a worker (a new one each time, also when a
-- stale row is taken again). Every later write of that worker to the row — heartbeat, failure,
-- retry, deletion when done — names it and changes nothing if the row is no longer its own.
ALTER TABLE fang_tasks ADD COLUMN claim uuid;

DROP INDEX fang_tasks_due;
-- Due tasks in the fetch's order: by round, then schedule. Running rows, delayed ones and
-- failed ones are not in it.
CREATE INDEX fang_tasks_ready ON fang_tasks (round, scheduled_at, created_at)
    WHERE state IN ('new', 'retried') AND round IS NOT NULL;
-- Delayed tasks, by when they are due: a fetch reads the first one only if it is due.
CREATE INDEX fang_tasks_delayed ON fang_tasks (scheduled_at, created_at)
    WHERE state IN ('new', 'retried') AND round IS NULL;
-- fang's index on the task type goes: there are two types, so it narrows nothing, and with no
-- statistics yet (a fresh deployment, whose connections keep the plans they make then) the
-- planner combined it with the others in bitmaps and sorted every due task to take one.
DROP INDEX fang_tasks_type_index;

-- Retention: the sweeper deletes finished webhook deliveries some days after they ended, a few
-- thousand per pass, oldest first. (Failed tasks are few and found through fang's index on
-- state: no index on `updated_at`, which would cost every heartbeat its heap-only update.)
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (updated_at)
    WHERE status IN ('DELIVERED', 'FAILED');

-- A worker's fetch takes the earliest due task. With the index it had (task type, then
-- scheduled_at, covering running rows too), PostgreSQL read every due task and sorted them
-- to return one: a queue of 20,000 tasks (one 100,000-document job) cost ~8 ms per fetch,
-- and a job's fetches grew with the square of its size. Due tasks in the fetch's order, in
-- an index of their own, let it read the first one that is not locked. Running tasks (a
-- handful per worker) are looked up through fang's index on state. fang's index on
-- scheduled_at alone goes: the planner would sometimes walk it instead (reading past running
-- and failed rows), and nothing else needs it but the rare removal of all scheduled tasks.
DROP INDEX fang_tasks_fetch;
DROP INDEX fang_tasks_scheduled_at_index;
CREATE INDEX fang_tasks_due ON fang_tasks (scheduled_at, created_at)
    WHERE state IN ('new', 'retried');

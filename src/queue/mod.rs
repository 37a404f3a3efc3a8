//! The PostgreSQL task queue: fang's task table and `AsyncRunnable` tasks, run on our own pool.
//!
//! fang 0.11's own queue and worker pool have weaknesses that would lose or repeat work here
//! (see the README, "Design"). This module keeps fang's table, task format (typetag JSON in
//! `metadata`) and its [`AsyncQueueable`](fang::AsyncQueueable) interface, and replaces what
//! was unsafe:
//! - a task is fetched and marked `in_progress` by one statement, so two workers can never take
//!   the same row;
//! - the running worker touches its row every few seconds, and a row nobody touched for
//!   [`QueueSettings::stale_after`](crate::queue::QueueSettings::stale_after) is taken again
//!   (its worker died);
//! - a row whose task type cannot be decoded is marked `failed` with the reason, instead of
//!   ending the worker;
//! - finished tasks are deleted and failed ones kept (for
//!   [`AUTOS_FAILED_TASK_RETENTION_DAYS`](crate::config::Config::failed_task_retention_days));
//! - `uniq` tasks rely on a unique index, not check-then-insert;
//! - [`enqueue`](crate::queue::enqueue) takes any executor, so a task is inserted in the
//!   caller's transaction and exists exactly when the rows it works on do. A `NOTIFY` wakes
//!   idle workers on commit.
//!
//! And two things fang never did: jobs take turns (see [`rounds`](crate::queue::rounds)), and a
//! fetch hands its worker a [`TaskClaim`](crate::queue::TaskClaim) that every later write of the worker to the row must
//! name, so a worker that went stale and whose task was taken again changes nothing.

pub mod rounds;
pub mod worker;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fang::{AsyncQueueError, AsyncQueueable, AsyncRunnable, FangTaskState, Task};
use sqlx::{FromRow, PgPool, Row};
use std::time::Duration;
use uuid::Uuid;

pub use rounds::{enqueue, enqueue_many};
pub use worker::{WorkerPool, WorkerSettings};

/// Channel on which an enqueue wakes idle workers.
pub const WAKE_CHANNEL: &str = "autos_tasks";

const COLUMNS: &str = "id, metadata, error_message, state::text, task_type, uniq_hash, retries, \
                       scheduled_at, created_at, updated_at";

/// Timing of the queue itself.
#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    /// An `in_progress` row untouched for this long belongs to a dead worker and is taken again.
    pub stale_after: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            stale_after: Duration::from_secs(60),
        }
    }
}

/// Proof that a worker holds the task row it fetched: the row, and the claim the fetch wrote
/// on it (a new one at every fetch, also when a stale row is taken again). The worker's later
/// writes to the row name it, and change nothing once the row is no longer its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskClaim {
    /// The row.
    pub id: Uuid,
    /// What the fetch that handed the row out wrote on it.
    pub token: Uuid,
}

/// A task a fetch handed to a worker.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The row as the fetch left it (`in_progress`).
    pub task: Task,
    /// What the worker's later writes to the row must name.
    pub claim: TaskClaim,
}

/// fang's queue interface over our pool.
#[derive(Clone)]
pub struct PgQueue {
    pool: PgPool,
    settings: QueueSettings,
}

impl PgQueue {
    /// A queue on `pool`.
    pub fn new(pool: PgPool, settings: QueueSettings) -> Self {
        PgQueue { pool, settings }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Takes the next task of one of `types` (see [`fetch_statement`] for which) and marks it
    /// `in_progress`, claimed by the caller.
    pub async fn fetch(&self, types: &[String]) -> Result<Option<Claimed>, AsyncQueueError> {
        self.finish_and_fetch(&[], types).await
    }

    /// Deletes the finished tasks `finished` (those still held under these claims) and takes
    /// the next task of one of `types`, marking it `in_progress` — one statement, so a
    /// worker's turn from one task to the next costs one round trip and one commit.
    pub async fn finish_and_fetch(
        &self,
        finished: &[TaskClaim],
        types: &[String],
    ) -> Result<Option<Claimed>, AsyncQueueError> {
        static FETCH: std::sync::LazyLock<String> = std::sync::LazyLock::new(fetch_statement);
        let (ids, tokens) = split(finished);
        let Some(row) = sqlx::query(FETCH.as_str())
            .bind(types)
            .bind(self.settings.stale_after.as_secs_f64())
            .bind(ids)
            .bind(tokens)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let task = Task::from_row(&row)?;
        let claim = TaskClaim {
            id: task.id,
            token: row.try_get("claim")?,
        };
        Ok(Some(Claimed { task, claim }))
    }

    /// Deletes finished tasks, those still held under these claims; returns how many.
    pub async fn remove_tasks(&self, finished: &[TaskClaim]) -> Result<u64, AsyncQueueError> {
        let (ids, tokens) = split(finished);
        let done = sqlx::query(
            "DELETE FROM fang_tasks f USING UNNEST($1::uuid[], $2::uuid[]) AS done(id, claim)
             WHERE f.id = done.id AND f.claim = done.claim AND f.state = 'in_progress'",
        )
        .bind(ids)
        .bind(tokens)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Marks a running task as alive; false if the row is no longer the claimant's (it went
    /// stale and another worker took it).
    pub async fn touch(&self, claim: TaskClaim) -> Result<bool, AsyncQueueError> {
        let done = sqlx::query(
            "UPDATE fang_tasks SET updated_at = now()
             WHERE id = $1 AND claim = $2 AND state = 'in_progress'",
        )
        .bind(claim.id)
        .bind(claim.token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Fails a running task for good, keeping it with `error`; false (nothing changed) if the
    /// row is no longer the claimant's.
    pub async fn fail(&self, claim: TaskClaim, error: &str) -> Result<bool, AsyncQueueError> {
        let done = sqlx::query(
            "UPDATE fang_tasks SET state = 'failed', error_message = $3, updated_at = now()
             WHERE id = $1 AND claim = $2 AND state = 'in_progress'",
        )
        .bind(claim.id)
        .bind(claim.token)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Puts a running task back, due `backoff_seconds` from now (waiting apart from the rounds
    /// until then), with `error` and one more retry counted; false (nothing changed) if the
    /// row is no longer the claimant's.
    pub async fn retry(
        &self,
        claim: TaskClaim,
        backoff_seconds: u32,
        error: &str,
    ) -> Result<bool, AsyncQueueError> {
        let done = sqlx::query(
            "UPDATE fang_tasks SET state = 'retried', error_message = $3, retries = retries + 1,
                    scheduled_at = now() + make_interval(secs => $4), round = NULL,
                    updated_at = now()
             WHERE id = $1 AND claim = $2 AND state = 'in_progress'",
        )
        .bind(claim.id)
        .bind(claim.token)
        .bind(error)
        .bind(f64::from(backoff_seconds))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_state(
        &self,
        id: Uuid,
        state: FangTaskState,
        error: Option<&str>,
    ) -> Result<Task, AsyncQueueError> {
        let sql = format!(
            "UPDATE fang_tasks SET state = $2::fang_task_state,
                    error_message = coalesce($3, error_message), updated_at = now()
             WHERE id = $1 RETURNING {COLUMNS}"
        );
        let state: &str = state.into();
        Ok(sqlx::query_as::<_, Task>(&sql)
            .bind(id)
            .bind(state)
            .bind(error)
            .fetch_one(&self.pool)
            .await?)
    }
}

fn split(claims: &[TaskClaim]) -> (Vec<Uuid>, Vec<Uuid>) {
    claims.iter().map(|c| (c.id, c.token)).unzip()
}

/// Vacuums the task table when it holds more than `dead_rows` dead rows (by PostgreSQL's
/// statistics), and says whether it did.
///
/// Every task a worker takes leaves a dead entry in the fetch's indexes (its row leaves the
/// waiting ones' index when taken, and is deleted when done), and each fetch walks the dead
/// entries at the front of the index before the first live one. Autovacuum comes at most once
/// a minute: within a job of 20,000 batches a fetch read some 250 pages, and a job's fetches
/// cost the square of its size. A vacuum of the queue takes milliseconds.
pub async fn vacuum_if_bloated(pool: &PgPool, dead_rows: i64) -> Result<bool, sqlx::Error> {
    let dead: Option<i64> = sqlx::query_scalar(
        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'fang_tasks'::regclass",
    )
    .fetch_optional(pool)
    .await?;
    if dead.unwrap_or(0) <= dead_rows {
        return Ok(false);
    }
    // Not a prepared statement: VACUUM runs outside any transaction block.
    sqlx::raw_sql("VACUUM (SKIP_LOCKED) fang_tasks")
        .execute(pool)
        .await?;
    Ok(true)
}

/// Deletes at most `limit` tasks that failed (for good) before `before`, oldest first;
/// returns how many.
pub async fn purge_failed(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    const DELETE: &str = "DELETE FROM fang_tasks WHERE id IN (
        SELECT id FROM fang_tasks WHERE state = 'failed' AND updated_at < $1
        ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)";
    crate::db::retention::delete_batch(pool, DELETE, before, limit).await
}

/// The statement behind [`PgQueue::finish_and_fetch`], with its parameters: `$1` the task
/// types, `$2` [`QueueSettings::stale_after`] in seconds, `$3` and `$4` the ids and claims of
/// the finished tasks to delete. It returns the task's columns and its new `claim`.
/// Public so that its plan can be checked (`EXPLAIN`) against a large queue.
///
/// Which task: first, the earliest (by schedule) of the first delayed task now due and the
/// first abandoned one (`in_progress`, untouched for `$2`: its worker died) — they have
/// waited already; else the first of the rounds: lowest round, then earliest schedule. Each
/// is looked up on its own, from its own index in its order, so a fetch reads a handful of
/// rows whatever the queue's length (an `OR` of them would read and sort every due task to
/// return one); the rounds are not looked at when the first two found a task. A row looked
/// up and not taken stays locked only until this statement commits.
pub fn fetch_statement() -> String {
    format!(
        "WITH finished AS (
            DELETE FROM fang_tasks f USING UNNEST($3::uuid[], $4::uuid[]) AS done(id, claim)
            WHERE f.id = done.id AND f.claim = done.claim AND f.state = 'in_progress'),
         delayed AS (
            SELECT id, scheduled_at, created_at FROM fang_tasks
            WHERE state IN ('new', 'retried') AND round IS NULL AND scheduled_at <= now()
              AND task_type = ANY($1)
            ORDER BY scheduled_at, created_at
            LIMIT 1 FOR UPDATE SKIP LOCKED),
         abandoned AS (
            SELECT id, scheduled_at, created_at FROM fang_tasks
            WHERE state = 'in_progress' AND updated_at < now() - make_interval(secs => $2)
              AND task_type = ANY($1)
            ORDER BY scheduled_at, created_at
            LIMIT 1 FOR UPDATE SKIP LOCKED),
         ready AS (
            SELECT id FROM fang_tasks
            WHERE state IN ('new', 'retried') AND round IS NOT NULL AND scheduled_at <= now()
              AND task_type = ANY($1)
            ORDER BY round, scheduled_at, created_at
            LIMIT 1 FOR UPDATE SKIP LOCKED),
         next AS (
            (SELECT id FROM (SELECT * FROM delayed UNION ALL SELECT * FROM abandoned) AS late
             ORDER BY scheduled_at, created_at LIMIT 1)
            UNION ALL
            (SELECT id FROM ready)
            LIMIT 1)
         UPDATE fang_tasks SET state = 'in_progress', claim = gen_random_uuid(),
                updated_at = now(),
                retries = CASE WHEN state = 'in_progress' THEN retries + 1 ELSE retries END
         WHERE id = (SELECT id FROM next) AND {relaxed}
         RETURNING {COLUMNS}, claim",
        relaxed = crate::db::relaxed_commit!()
    )
}

/// fang's interface, for code that holds a [`Task`] but no claim (a task given the queue, fang's
/// tooling). Its writes to a row check no claim: autos' workers write to the rows they run
/// through [`PgQueue::touch`], [`PgQueue::fail`], [`PgQueue::retry`] and the deletion in
/// [`PgQueue::finish_and_fetch`], which do.
#[async_trait]
impl AsyncQueueable for PgQueue {
    async fn fetch_and_touch_task(
        &self,
        task_type: Option<String>,
    ) -> Result<Option<Task>, AsyncQueueError> {
        let types = vec![task_type.unwrap_or_else(|| fang::DEFAULT_TASK_TYPE.to_string())];
        Ok(self.fetch(&types).await?.map(|claimed| claimed.task))
    }

    async fn insert_task(&self, task: &dyn AsyncRunnable) -> Result<Task, AsyncQueueError> {
        let id = enqueue(&self.pool, task, None).await?;
        self.find_task_by_id(&id).await
    }

    async fn remove_all_tasks(&self) -> Result<u64, AsyncQueueError> {
        let done = sqlx::query("DELETE FROM fang_tasks")
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn remove_all_scheduled_tasks(&self) -> Result<u64, AsyncQueueError> {
        let done = sqlx::query("DELETE FROM fang_tasks WHERE scheduled_at > now()")
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn remove_task(&self, id: &Uuid) -> Result<u64, AsyncQueueError> {
        let done = sqlx::query("DELETE FROM fang_tasks WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn remove_task_by_metadata(
        &self,
        task: &dyn AsyncRunnable,
    ) -> Result<u64, AsyncQueueError> {
        let metadata = serde_json::to_value(task)?;
        let done = sqlx::query("DELETE FROM fang_tasks WHERE metadata = $1")
            .bind(metadata)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn remove_tasks_type(&self, task_type: &str) -> Result<u64, AsyncQueueError> {
        let done = sqlx::query("DELETE FROM fang_tasks WHERE task_type = $1")
            .bind(task_type)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn find_task_by_id(&self, id: &Uuid) -> Result<Task, AsyncQueueError> {
        let sql = format!("SELECT {COLUMNS} FROM fang_tasks WHERE id = $1");
        Ok(sqlx::query_as::<_, Task>(&sql)
            .bind(id)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn update_task_state(
        &self,
        task: &Task,
        state: FangTaskState,
    ) -> Result<Task, AsyncQueueError> {
        self.set_state(task.id, state, None).await
    }

    async fn fail_task(&self, task: &Task, error_message: &str) -> Result<Task, AsyncQueueError> {
        self.set_state(task.id, FangTaskState::Failed, Some(error_message))
            .await
    }

    async fn schedule_task(&self, task: &dyn AsyncRunnable) -> Result<Task, AsyncQueueError> {
        let at = match task.cron() {
            Some(fang::Scheduled::ScheduleOnce(at)) => Some(at),
            Some(fang::Scheduled::CronPattern(_)) | None => None,
        };
        let id = enqueue(&self.pool, task, at).await?;
        self.find_task_by_id(&id).await
    }

    async fn schedule_retry(
        &self,
        task: &Task,
        backoff_seconds: u32,
        error: &str,
    ) -> Result<Task, AsyncQueueError> {
        let sql = format!(
            "UPDATE fang_tasks SET state = 'retried', error_message = $2, retries = retries + 1,
                    scheduled_at = now() + make_interval(secs => $3), round = NULL,
                    updated_at = now()
             WHERE id = $1 RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as::<_, Task>(&sql)
            .bind(task.id)
            .bind(error)
            .bind(f64::from(backoff_seconds))
            .fetch_one(&self.pool)
            .await?)
    }
}

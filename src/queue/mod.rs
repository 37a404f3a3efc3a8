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
//! - finished tasks are deleted and failed ones kept, for inspection;
//! - `uniq` tasks rely on a unique index, not check-then-insert;
//! - [`enqueue`](crate::queue::enqueue) takes any executor, so a task is inserted in the
//!   caller's transaction and exists exactly when the rows it works on do. A `NOTIFY` wakes
//!   idle workers on commit.

pub mod worker;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fang::{AsyncQueueError, AsyncQueueable, AsyncRunnable, FangTaskState, Task};
use sqlx::{PgExecutor, PgPool};
use std::time::Duration;
use uuid::Uuid;

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

    /// Takes the next due task of one of `types`, or a stale one, and marks it `in_progress`.
    pub async fn fetch(&self, types: &[String]) -> Result<Option<Task>, AsyncQueueError> {
        self.finish_and_fetch(&[], types).await
    }

    /// Deletes the finished tasks `finished` and takes the next due one of `types`, or a
    /// stale one, marking it `in_progress` — one statement, so a worker's turn from one task
    /// to the next costs one round trip and one commit.
    pub async fn finish_and_fetch(
        &self,
        finished: &[Uuid],
        types: &[String],
    ) -> Result<Option<Task>, AsyncQueueError> {
        static FETCH: std::sync::LazyLock<String> = std::sync::LazyLock::new(fetch_statement);
        Ok(sqlx::query_as::<_, Task>(FETCH.as_str())
            .bind(types)
            .bind(self.settings.stale_after.as_secs_f64())
            .bind(finished)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Deletes finished tasks.
    pub async fn remove_tasks(&self, ids: &[Uuid]) -> Result<u64, AsyncQueueError> {
        let done = sqlx::query("DELETE FROM fang_tasks WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Marks a running task as alive.
    pub async fn touch(&self, id: Uuid) -> Result<(), AsyncQueueError> {
        sqlx::query(
            "UPDATE fang_tasks SET updated_at = now() WHERE id = $1 AND state = 'in_progress'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
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

/// The statement behind [`PgQueue::finish_and_fetch`], with its parameters: `$1` the task
/// types, `$2` [`QueueSettings::stale_after`] in seconds, `$3` the finished tasks to delete.
/// Public so that its plan can be checked (`EXPLAIN`) against a large queue.
pub fn fetch_statement() -> String {
    // The earliest of: the first due task, and the first abandoned one. Each is looked
    // up on its own, so that the due one comes straight from the `fang_tasks_due` index in
    // order (an `OR` of the two would read and sort every due task to return one). The
    // row of the two that is not taken stays locked only until this statement commits.
    format!(
        "WITH finished AS (DELETE FROM fang_tasks WHERE id = ANY($3)),
         due AS (
            SELECT id, scheduled_at, created_at FROM fang_tasks
            WHERE state IN ('new', 'retried') AND scheduled_at <= now()
              AND task_type = ANY($1)
            ORDER BY scheduled_at, created_at
            LIMIT 1 FOR UPDATE SKIP LOCKED),
         abandoned AS (
            SELECT id, scheduled_at, created_at FROM fang_tasks
            WHERE state = 'in_progress' AND updated_at < now() - make_interval(secs => $2)
              AND task_type = ANY($1)
            ORDER BY scheduled_at, created_at
            LIMIT 1 FOR UPDATE SKIP LOCKED)
         UPDATE fang_tasks SET state = 'in_progress', updated_at = now(),
                retries = CASE WHEN state = 'in_progress' THEN retries + 1 ELSE retries END
         WHERE id = (SELECT id FROM (SELECT * FROM due UNION ALL SELECT * FROM abandoned) AS c
                     ORDER BY scheduled_at, created_at LIMIT 1)
           AND {relaxed}
         RETURNING {COLUMNS}",
        relaxed = crate::db::relaxed_commit!()
    )
}

/// Inserts `task` to run at `scheduled_at` (now when `None`), on any executor — pass a
/// transaction to make the task part of it. Returns the task id.
pub async fn enqueue(
    db: impl PgExecutor<'_>,
    task: &dyn AsyncRunnable,
    scheduled_at: Option<DateTime<Utc>>,
) -> Result<Uuid, AsyncQueueError> {
    let metadata = serde_json::to_value(task)?;
    let uniq_hash = task.uniq().then(|| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(metadata.to_string().as_bytes()))
    });
    let id: Uuid = sqlx::query_scalar(
        // DO UPDATE (a no-op) rather than DO NOTHING: it waits for a racing insert of the
        // same uniq task and returns that row, where a fallback SELECT could not yet see it.
        "WITH inserted AS (
            INSERT INTO fang_tasks (id, metadata, task_type, uniq_hash, scheduled_at)
            VALUES ($1, $2, $3, $4, coalesce($5, now()))
            ON CONFLICT (uniq_hash) WHERE uniq_hash IS NOT NULL
                AND state IN ('new', 'retried', 'in_progress')
                DO UPDATE SET uniq_hash = EXCLUDED.uniq_hash
            RETURNING id, task_type, xmax = 0 AS fresh)
         SELECT id FROM inserted
         CROSS JOIN LATERAL (SELECT CASE WHEN fresh THEN pg_notify($6, task_type) END) AS n",
    )
    .bind(Uuid::new_v4())
    .bind(&metadata)
    .bind(task.task_type())
    .bind(uniq_hash)
    .bind(scheduled_at)
    .bind(WAKE_CHANNEL)
    .fetch_one(db)
    .await?;
    Ok(id)
}

/// Inserts many (non-`uniq`) tasks in one statement, all due at `scheduled_at`, with the ids
/// `ids` (one per task, chosen by the caller so that rows written before the tasks can name
/// them). Like [`enqueue`], on any executor.
pub async fn enqueue_many(
    db: impl PgExecutor<'_>,
    tasks: &[&dyn AsyncRunnable],
    ids: &[Uuid],
    scheduled_at: Option<DateTime<Utc>>,
) -> Result<(), AsyncQueueError> {
    if tasks.is_empty() {
        return Ok(());
    }
    if ids.len() != tasks.len() {
        let mismatch = format!("{} tasks but {} ids", tasks.len(), ids.len());
        return Err(AsyncQueueError::SerdeError(
            <serde_json::Error as serde::de::Error>::custom(mismatch),
        ));
    }
    let mut metadata = Vec::with_capacity(tasks.len());
    let mut types = Vec::with_capacity(tasks.len());
    for task in tasks {
        if task.uniq() {
            return Err(AsyncQueueError::TaskNotUniqError);
        }
        metadata.push(serde_json::to_value(*task)?);
        types.push(task.task_type());
    }
    sqlx::query(
        "WITH inserted AS (
            INSERT INTO fang_tasks (id, metadata, task_type, scheduled_at)
            SELECT id, metadata, task_type, coalesce($4, now())
            FROM UNNEST($1::uuid[], $2::jsonb[], $3::text[]) AS t(id, metadata, task_type)
            RETURNING task_type)
         SELECT pg_notify($5, task_type) FROM (SELECT DISTINCT task_type FROM inserted) AS t",
    )
    .bind(ids)
    .bind(&metadata)
    .bind(&types)
    .bind(scheduled_at)
    .bind(WAKE_CHANNEL)
    .execute(db)
    .await?;
    Ok(())
}

#[async_trait]
impl AsyncQueueable for PgQueue {
    async fn fetch_and_touch_task(
        &self,
        task_type: Option<String>,
    ) -> Result<Option<Task>, AsyncQueueError> {
        let types = vec![task_type.unwrap_or_else(|| fang::DEFAULT_TASK_TYPE.to_string())];
        self.fetch(&types).await
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
                    scheduled_at = now() + make_interval(secs => $3), updated_at = now()
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

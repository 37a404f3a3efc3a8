//! Putting tasks in the queue, each in its turn.
//!
//! Jobs take turns: a task due when it is enqueued gets a *round*, and fetches take the lowest
//! round first. The tasks of one [`enqueue_many`] (one job's batches) take consecutive rounds
//! starting from the round the queue is serving — the lowest round still waiting — and a
//! single [`enqueue`] takes that round. So a job of 2,000 batches started first and a job of 2
//! started later share the workers one batch each per round, and the small one is done after
//! two rounds; within a round, the older task goes first. Nothing is renumbered or counted: the
//! round being served is read from the first entry of the fetch's own index, so an enqueue
//! costs the same however long the queue is, and concurrent enqueues do not wait for each
//! other.
//!
//! A task due more than a second after its enqueue (a retry after its backoff) gets no round:
//! it waits apart, in an index by schedule that fetches read only from its first due entry,
//! and goes before the rounds once due. (A job's batches are due at the time the application
//! read just before enqueueing them: the second leaves room for its clock to be ahead of the
//! database's. A task of the rounds not due yet is passed over by fetches until it is.)

use chrono::{DateTime, Utc};
use fang::{AsyncQueueError, AsyncRunnable};
use sqlx::PgExecutor;
use uuid::Uuid;

/// The round the queue is serving (0 when nothing waits in a round), and whether a task due
/// at `$at` is due now (within a second), as SQL expressions.
macro_rules! serving_round {
    () => {
        "coalesce((SELECT round FROM fang_tasks
                   WHERE state IN ('new', 'retried') AND round IS NOT NULL
                   ORDER BY round LIMIT 1), 0)"
    };
}
macro_rules! due_now {
    ($at:literal) => {
        concat!($at, " <= statement_timestamp() + interval '1 second'")
    };
}

/// Inserts `task` to run at `scheduled_at` (now when `None`), on any executor — pass a
/// transaction to make the task part of it. Returns the task id. A task due now takes its
/// turn in the round being served; one due later waits apart until it is due.
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
    let id: Uuid = sqlx::query_scalar(concat!(
        // DO UPDATE (a no-op) rather than DO NOTHING: it waits for a racing insert of the
        // same uniq task and returns that row, where a fallback SELECT could not yet see it.
        "WITH inserted AS (
            INSERT INTO fang_tasks (id, metadata, task_type, uniq_hash, scheduled_at, round)
            SELECT $1, $2, $3, $4, t.at, CASE WHEN ",
        due_now!("t.at"),
        " THEN ",
        serving_round!(),
        " END
            FROM (SELECT coalesce($5, now()) AS at) AS t
            ON CONFLICT (uniq_hash) WHERE uniq_hash IS NOT NULL
                AND state IN ('new', 'retried', 'in_progress')
                DO UPDATE SET uniq_hash = EXCLUDED.uniq_hash
            RETURNING id, task_type, xmax = 0 AS fresh)
         SELECT id FROM inserted
         CROSS JOIN LATERAL (SELECT CASE WHEN fresh THEN pg_notify($6, task_type) END) AS n",
    ))
    .bind(Uuid::new_v4())
    .bind(&metadata)
    .bind(task.task_type())
    .bind(uniq_hash)
    .bind(scheduled_at)
    .bind(super::WAKE_CHANNEL)
    .fetch_one(db)
    .await?;
    Ok(id)
}

/// Inserts the tasks of one job (non-`uniq`) in one statement, all due at `scheduled_at`, with
/// the ids `ids` (one per task, chosen by the caller so that rows written before the tasks can
/// name them). Like [`enqueue`], on any executor. Due now, the tasks take consecutive rounds
/// in their order, from the round being served: the job gets one turn per round beside the
/// others. (Tasks of several jobs enqueued together would run one job after the other: one
/// call per job.)
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
    sqlx::query(concat!(
        "WITH due AS (
            SELECT coalesce($4, now()) AS at,
                   CASE WHEN ",
        due_now!("coalesce($4, now())"),
        " THEN ",
        serving_round!(),
        " END AS round),
         inserted AS (
            INSERT INTO fang_tasks (id, metadata, task_type, scheduled_at, round)
            SELECT t.id, t.metadata, t.task_type, due.at, due.round + t.n - 1
            FROM UNNEST($1::uuid[], $2::jsonb[], $3::text[])
                 WITH ORDINALITY AS t(id, metadata, task_type, n), due
            RETURNING task_type)
         SELECT pg_notify($5, task_type) FROM (SELECT DISTINCT task_type FROM inserted) AS t",
    ))
    .bind(ids)
    .bind(&metadata)
    .bind(&types)
    .bind(scheduled_at)
    .bind(super::WAKE_CHANNEL)
    .execute(db)
    .await?;
    Ok(())
}

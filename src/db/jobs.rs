//! Download jobs: creation, counts, terminal transitions, pagination.

use super::DbError;
use crate::domain::status::{DocumentStatus, JobStatus};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A job row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    /// Row id.
    pub id: Uuid,
    /// Its process.
    pub process_id: Uuid,
    /// Status (see [`JobStatus`]).
    pub status: String,
    /// Created by `force: true`.
    pub forced: bool,
    /// Documents covered.
    pub total: i32,
    /// Of which PENDING.
    pub pending: i32,
    /// Of which PROCESSING.
    pub processing: i32,
    /// Of which AVAILABLE.
    pub available: i32,
    /// Of which FAILED.
    pub failed: i32,
    /// Where to report the outcome.
    pub webhook_url: Option<String>,
    /// Why the job failed.
    pub error: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// First document picked up.
    pub started_at: Option<DateTime<Utc>>,
    /// Became terminal.
    pub completed_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Document counts by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobCounts {
    /// PENDING.
    pub pending: i32,
    /// PROCESSING.
    pub processing: i32,
    /// AVAILABLE.
    pub available: i32,
    /// FAILED.
    pub failed: i32,
}

impl JobRow {
    /// The parsed status.
    pub fn status(&self) -> Result<JobStatus, DbError> {
        JobStatus::from_db(&self.status)
            .ok_or_else(|| DbError::Corrupt(format!("job status {}", self.status)))
    }

    /// Counts by document status.
    pub fn counts(&self) -> JobCounts {
        JobCounts {
            pending: self.pending,
            processing: self.processing,
            available: self.available,
            failed: self.failed,
        }
    }

    /// `progress` as the contract defines it.
    pub fn progress(&self) -> i32 {
        let status = self.status().unwrap_or(JobStatus::Running);
        crate::domain::status::progress(
            status,
            self.total.into(),
            self.available.into(),
            self.failed.into(),
        )
    }
}

/// A job by id.
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM download_jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Jobs by id, in any order.
pub async fn find_by_ids(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM download_jobs WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(db)
        .await
}

/// The newest job of each process.
pub async fn latest_by_processes(
    db: impl PgExecutor<'_>,
    process_ids: &[Uuid],
) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT ON (process_id) * FROM download_jobs WHERE process_id = ANY($1)
         ORDER BY process_id, created_at DESC, id DESC",
    )
    .bind(process_ids)
    .fetch_all(db)
    .await
}

/// The newest job of a process, locked with it when the caller holds a transaction.
pub async fn latest_for_process(
    db: impl PgExecutor<'_>,
    process_id: Uuid,
) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM download_jobs WHERE process_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(process_id)
    .fetch_optional(db)
    .await
}

/// What a new job of a process will cover: its listed documents in order, their counts,
/// and those to transfer.
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// The process.
    pub process_id: Uuid,
    /// Every listed document, in source order.
    pub documents: Vec<Uuid>,
    /// Those to transfer (they become PENDING), in order.
    pub to_transfer: Vec<Uuid>,
    /// The job's counts as it starts.
    pub counts: JobCounts,
}

/// Plans a job covering every listed document of the process, locking them until the
/// caller's transaction ends.
///
/// Documents already stored with the same content are counted AVAILABLE and not sent again
/// (without an announced SHA-256, only a forced job re-transfers them); a document still being
/// transferred for an earlier, cancelled job is taken over as it is; every other document
/// is to be transferred, with a fresh attempt budget.
pub async fn plan(
    conn: &mut PgConnection,
    process_id: Uuid,
    forced: bool,
) -> Result<JobPlan, DbError> {
    let documents: Vec<(Uuid, String, bool)> = sqlx::query_as(
        "SELECT id, status,
                status = 'AVAILABLE' AND stored_sha256 IS NOT NULL AND
                (sha256 = stored_sha256 OR (sha256 IS NULL AND NOT $2)) AS unchanged
         FROM documents WHERE process_id = $1 AND listed ORDER BY position FOR UPDATE",
    )
    .bind(process_id)
    .bind(forced)
    .fetch_all(&mut *conn)
    .await?;

    let mut counts = JobCounts::default();
    let mut to_transfer = Vec::new();
    for (id, status, unchanged) in &documents {
        match DocumentStatus::from_db(status) {
            Some(DocumentStatus::Available) if *unchanged => counts.available += 1,
            Some(DocumentStatus::Processing) => counts.processing += 1,
            Some(current) => {
                if current != DocumentStatus::Pending {
                    current.check(DocumentStatus::Pending)?;
                }
                counts.pending += 1;
                to_transfer.push(*id);
            }
            None => return Err(DbError::Corrupt(format!("document status {status}"))),
        }
    }
    Ok(JobPlan {
        process_id,
        documents: documents.into_iter().map(|d| d.0).collect(),
        to_transfer,
        counts,
    })
}

/// Creates the job `plan` describes, with the id `job_id`: the job row, its document list,
/// and, in one pass over the documents, their move to the job — those to transfer becoming
/// PENDING, due at `due`, with the queue task that will transfer each (`tasks`, one per
/// document of `plan.to_transfer`, enqueued by the caller in the same transaction). A job
/// with nothing to transfer completes at once.
pub async fn create(
    conn: &mut PgConnection,
    job_id: Uuid,
    plan: &JobPlan,
    forced: bool,
    webhook_url: Option<&str>,
    tasks: &[Uuid],
    due: DateTime<Utc>,
) -> Result<JobRow, DbError> {
    let counts = plan.counts;
    let settled = counts.pending == 0 && counts.processing == 0;
    let status = if settled {
        JobStatus::settled(counts.available.into(), 0)
    } else {
        JobStatus::Queued
    };
    let job: JobRow = sqlx::query_as(
        "WITH job AS (
            INSERT INTO download_jobs (id, process_id, status, forced, total, pending,
                                       processing, available, webhook_url, completed_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $10 THEN now() END)
            RETURNING *),
         listed AS (
            INSERT INTO job_documents (job_id, document_id, position)
            SELECT $1, id, ord::int - 1 FROM UNNEST($11::uuid[]) WITH ORDINALITY AS t(id, ord))
         SELECT * FROM job",
    )
    .bind(job_id)
    .bind(plan.process_id)
    .bind(status.as_str())
    .bind(forced)
    .bind(plan.documents.len() as i32)
    .bind(counts.pending)
    .bind(counts.processing)
    .bind(counts.available)
    .bind(webhook_url)
    .bind(settled)
    .bind(&plan.documents)
    .fetch_one(&mut *conn)
    .await?;

    // One pass over the rows: every document joins the job, those to transfer start afresh
    // with the task that will transfer them.
    sqlx::query(
        "UPDATE documents d SET job_id = $1, updated_at = now(),
                status = CASE WHEN t.task_id IS NOT NULL THEN 'PENDING' ELSE d.status END,
                attempts = CASE WHEN t.task_id IS NOT NULL THEN 0 ELSE d.attempts END,
                last_error = CASE WHEN t.task_id IS NOT NULL THEN NULL ELSE d.last_error END,
                next_attempt_at = CASE WHEN t.task_id IS NOT NULL THEN $4
                                       ELSE d.next_attempt_at END,
                task_id = CASE WHEN t.task_id IS NOT NULL THEN t.task_id ELSE d.task_id END
         FROM (SELECT u.id, f.task_id
               FROM UNNEST($2::uuid[]) AS u(id)
               LEFT JOIN UNNEST($3::uuid[], $5::uuid[]) AS f(id, task_id) ON f.id = u.id) AS t
         WHERE d.id = t.id",
    )
    .bind(job_id)
    .bind(&plan.documents)
    .bind(&plan.to_transfer)
    .bind(due)
    .bind(tasks)
    .execute(&mut *conn)
    .await?;
    Ok(job)
}

/// Creates the first job of a process inserted by this transaction (see
/// [`super::processes::upsert_process`]), together with its documents: all of them new, all
/// to transfer. In one statement: the job row; the documents, with the ids `ids`, each
/// PENDING in the job, due at `due`, with the queue task `tasks` gives it (enqueued by the
/// caller in the same transaction); and the job's document list. The rows are those that
/// [`super::processes::upsert_documents`], [`plan`] and [`create`] would leave, without
/// writing each document twice. A process with no documents gets a job completed at once.
#[allow(clippy::too_many_arguments)]
pub async fn create_with_new_documents(
    conn: &mut PgConnection,
    job_id: Uuid,
    process_id: Uuid,
    documents: &[super::processes::ListedDocument<'_>],
    ids: &[Uuid],
    forced: bool,
    webhook_url: Option<&str>,
    tasks: &[Uuid],
    due: DateTime<Utc>,
) -> Result<JobRow, DbError> {
    let n = documents.len();
    if ids.len() != n || tasks.len() != n {
        return Err(DbError::Corrupt(format!(
            "{n} documents, {} ids, {} tasks",
            ids.len(),
            tasks.len()
        )));
    }
    let status = if n == 0 {
        JobStatus::settled(0, 0)
    } else {
        JobStatus::Queued
    };
    let columns = super::processes::ListingColumns::of(documents);
    // Foreign keys are checked at the end of the statement, when the job row exists.
    let job: JobRow = super::processes::bind_listing!(
        sqlx::query_as(
            "WITH job AS (
            INSERT INTO download_jobs (id, process_id, status, forced, total, pending,
                                       processing, available, webhook_url, completed_at)
            VALUES ($1, $2, $3, $16, $4, $4, 0, 0, $5, CASE WHEN $4 = 0 THEN now() END)
            RETURNING *),
         listed AS (
            SELECT * FROM UNNEST($6::uuid[], $7::text[], $8::text[], $9::text[], $10::text[],
                                 $11::text[], $12::bigint[], $13::text[], $14::uuid[])
                WITH ORDINALITY AS t(id, source_id, name, kind, mime_type, url, size, sha256,
                                     task_id, ord)),
         documents AS (
            INSERT INTO documents (id, process_id, source_id, position, name, kind, mime_type,
                                   url, size, sha256, status, job_id, attempts,
                                   next_attempt_at, task_id)
            SELECT id, $2, source_id, ord::int - 1, name, kind, mime_type, url, size, sha256,
                   'PENDING', $1, 0, $15, task_id
            FROM listed),
         members AS (
            INSERT INTO job_documents (job_id, document_id, position)
            SELECT $1, id, ord::int - 1 FROM listed)
         SELECT * FROM job",
        )
        .bind(job_id)
        .bind(process_id)
        .bind(status.as_str())
        .bind(n as i32)
        .bind(webhook_url)
        .bind(ids),
        columns
    )
    .bind(tasks)
    .bind(due)
    .bind(forced)
    .fetch_one(&mut *conn)
    .await?;
    Ok(job)
}

/// Makes an active job terminal if none of its documents is open any more; returns the job.
/// The compare-and-set on the active statuses and the counts makes this happen exactly once.
pub async fn finish_if_settled(conn: &mut PgConnection, job_id: Uuid) -> Result<JobRow, DbError> {
    let job: JobRow = sqlx::query_as("SELECT * FROM download_jobs WHERE id = $1")
        .bind(job_id)
        .fetch_one(&mut *conn)
        .await?;
    let status = job.status()?;
    if status.is_terminal() || job.pending > 0 || job.processing > 0 {
        return Ok(job);
    }
    let to = JobStatus::settled(job.available.into(), job.failed.into());
    status.check(to)?;
    let error = (to == JobStatus::Failed).then(|| {
        format!(
            "no document could be stored: all {} failed (see each document's lastError)",
            job.failed
        )
    });
    let finished: Option<JobRow> = sqlx::query_as(concat!(
        "UPDATE download_jobs SET status = $2, error = $3, completed_at = now(), updated_at = now()
         WHERE id = $1 AND status IN ('QUEUED', 'RUNNING') AND pending = 0 AND processing = 0
           AND available = $4 AND failed = $5 AND ",
        super::strict_commit!(),
        "
         RETURNING *",
    ))
    .bind(job_id)
    .bind(to.as_str())
    .bind(error)
    .bind(job.available)
    .bind(job.failed)
    .fetch_optional(&mut *conn)
    .await?;
    match finished {
        Some(job) => Ok(job),
        // Someone else finished it, or it changed under us: report it as it is now.
        None => Ok(sqlx::query_as("SELECT * FROM download_jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&mut *conn)
            .await?),
    }
}

/// Cancels an active job; `None` if it was not active. Queue tasks that have not started are
/// dropped; transfers under way stop when the cancellation is announced on commit (see
/// [`crate::jobs::cancellations`]), or at their next heartbeat.
pub async fn cancel(conn: &mut PgConnection, job_id: Uuid) -> Result<Option<JobRow>, sqlx::Error> {
    let job: Option<JobRow> = sqlx::query_as(
        "UPDATE download_jobs SET status = 'CANCELLED', completed_at = now(), updated_at = now()
         WHERE id = $1 AND status IN ('QUEUED', 'RUNNING') RETURNING *",
    )
    .bind(job_id)
    .fetch_optional(&mut *conn)
    .await?;
    if job.is_some() {
        sqlx::query(
            "DELETE FROM fang_tasks WHERE state IN ('new', 'retried') AND id IN
                (SELECT task_id FROM documents WHERE job_id = $1 AND status = 'PENDING')",
        )
        .bind(job_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(job)
}

/// Re-opens a job that ended with failures: FAILED documents become PENDING with a fresh
/// attempt budget and the job RUNNING again. Returns the job and the re-queued documents.
pub async fn reopen_failed(
    conn: &mut PgConnection,
    job: &JobRow,
) -> Result<(JobRow, Vec<Uuid>), DbError> {
    job.status()?.check(JobStatus::Running)?;
    DocumentStatus::Failed.check(DocumentStatus::Pending)?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE documents SET status = 'PENDING', attempts = 0, last_error = NULL,
                next_attempt_at = now(), task_id = NULL, updated_at = now()
         WHERE job_id = $1 AND status = 'FAILED' RETURNING id",
    )
    .bind(job.id)
    .fetch_all(&mut *conn)
    .await?;
    let reopened: JobRow = sqlx::query_as(
        "UPDATE download_jobs SET status = 'RUNNING', failed = failed - $2, pending = pending + $2,
                error = NULL, completed_at = NULL, updated_at = now()
         WHERE id = $1 AND status = $3 RETURNING *",
    )
    .bind(job.id)
    .bind(ids.len() as i32)
    .bind(&job.status)
    .fetch_one(&mut *conn)
    .await?;
    Ok((reopened, ids))
}

/// Active jobs with no open document left (a safety net: normally the last transition ends them).
pub async fn settled_but_active(db: impl PgExecutor<'_>) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM download_jobs
         WHERE status IN ('QUEUED', 'RUNNING') AND pending = 0 AND processing = 0",
    )
    .fetch_all(db)
    .await
}

/// Filters and cursor for [`page`].
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    /// Only this status.
    pub status: Option<JobStatus>,
    /// Only this process.
    pub process_number: Option<String>,
    /// Strictly after this position (newest first).
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// Page size.
    pub first: i64,
}

/// A page of jobs, newest first, with one extra row fetched to tell whether more follow.
pub async fn page(db: impl PgExecutor<'_>, q: &PageQuery) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT j.* FROM download_jobs j
         WHERE ($1::text IS NULL OR j.status = $1)
           AND ($2::text IS NULL OR j.process_id = (SELECT id FROM processes WHERE number = $2))
           AND ($3::timestamptz IS NULL OR (j.created_at, j.id) < ($3, $4))
         ORDER BY j.created_at DESC, j.id DESC LIMIT $5",
    )
    .bind(q.status.map(JobStatus::as_str))
    .bind(q.process_number.as_deref())
    .bind(q.after.map(|a| a.0))
    .bind(q.after.map(|a| a.1))
    .bind(q.first + 1)
    .fetch_all(db)
    .await
}

//! Download jobs: creation, counts, terminal transitions, pagination.

use super::{DbError, Visibility};
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
    /// The tenant that asked for it.
    pub tenant_id: Uuid,
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

/// The newest visible job of each process.
pub async fn latest_by_processes(
    db: impl PgExecutor<'_>,
    process_ids: &[Uuid],
    visibility: Visibility,
) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT ON (process_id) * FROM download_jobs
         WHERE process_id = ANY($1) AND ($2::uuid IS NULL OR tenant_id = $2)
           AND ($3::uuid IS NULL OR id = $3)
         ORDER BY process_id, created_at DESC, id DESC",
    )
    .bind(process_ids)
    .bind(visibility.tenant)
    .bind(visibility.job)
    .fetch_all(db)
    .await
}

/// The newest job of a process for a tenant.
pub async fn latest_for_process(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    process_id: Uuid,
) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM download_jobs WHERE tenant_id = $1 AND process_id = $2
         ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(tenant_id)
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
    /// The status each of `to_transfer` had until now.
    pub transfer_from: Vec<String>,
    /// Stored documents whose content may have changed: fetched again while they stay
    /// AVAILABLE, with their copy and link (see [`super::refreshes`]); the job counts each
    /// PENDING or PROCESSING, as its refresh is, until the refresh ends. In order.
    pub to_refresh: Vec<Uuid>,
    /// Those of `to_refresh` whose refresh another job opened already (joined, not reopened).
    pub refreshing: Vec<Uuid>,
    /// The job's counts as it starts.
    pub counts: JobCounts,
}

/// Active jobs, as SQL: the condition on `j` that makes a job want its documents.
pub(crate) const ACTIVE: &str = "j.status IN ('QUEUED', 'RUNNING')";

/// Plans a job covering every listed document of the process, locking them until the
/// caller's transaction ends.
///
/// Documents already stored with the same content are counted AVAILABLE and not sent again.
/// A stored document whose content may have changed (another SHA-256 announced; none
/// announced and the job forced) is refreshed, never taken away: it stays AVAILABLE while a
/// new copy is fetched (`to_refresh`). A document another active job (of any tenant) already
/// wants — being transferred, or waiting for its next attempt — is shared as it is: one
/// transfer serves both jobs. Every other document is to be transferred, with a fresh attempt
/// budget.
pub async fn plan(
    conn: &mut PgConnection,
    process_id: Uuid,
    forced: bool,
) -> Result<JobPlan, DbError> {
    let documents: Vec<(Uuid, String, bool, bool)> = sqlx::query_as(&format!(
        "SELECT d.id, d.status,
                d.status = 'AVAILABLE' AND d.stored_sha256 IS NOT NULL AND
                coalesce(d.sha256 = d.stored_sha256, NOT $2) AS unchanged,
                EXISTS (SELECT 1 FROM job_documents jd JOIN download_jobs j ON j.id = jd.job_id
                        WHERE jd.document_id = d.id AND {ACTIVE}) AS wanted
         FROM documents d WHERE d.process_id = $1 AND d.listed ORDER BY d.position FOR UPDATE"
    ))
    .bind(process_id)
    .bind(forced)
    .fetch_all(&mut *conn)
    .await?;

    let stored = DocumentStatus::Available.as_str();
    let to_refresh: Vec<Uuid> = (documents.iter())
        .filter(|(_, status, unchanged, _)| status == stored && !unchanged)
        .map(|d| d.0)
        .collect();
    let refreshing = super::refreshes::lock(conn, &to_refresh).await?;

    let mut counts = JobCounts::default();
    let mut to_transfer = Vec::new();
    let mut transfer_from = Vec::new();
    for (id, status, unchanged, wanted) in &documents {
        match DocumentStatus::from_db(status) {
            Some(DocumentStatus::Available) if *unchanged => counts.available += 1,
            Some(DocumentStatus::Available) => match refreshing.get(id).map(String::as_str) {
                Some("PROCESSING") => counts.processing += 1,
                _ => counts.pending += 1,
            },
            Some(DocumentStatus::Processing) => counts.processing += 1,
            Some(DocumentStatus::Pending) if *wanted => counts.pending += 1,
            Some(current) => {
                if current != DocumentStatus::Pending {
                    current.check(DocumentStatus::Pending)?;
                }
                counts.pending += 1;
                to_transfer.push(*id);
                transfer_from.push(status.clone());
            }
            None => return Err(DbError::Corrupt(format!("document status {status}"))),
        }
    }
    Ok(JobPlan {
        process_id,
        documents: documents.into_iter().map(|d| d.0).collect(),
        to_transfer,
        transfer_from,
        refreshing: (to_refresh.iter())
            .filter(|id| refreshing.contains_key(id))
            .copied()
            .collect(),
        to_refresh,
        counts,
    })
}

/// Creates the job `plan` describes for `tenant_id`, with the id `job_id`: the job row, its
/// document list, and the move of the documents to transfer to PENDING, due at `due`, with
/// the queue task that will transfer each (`tasks`, one per document of `plan.to_transfer`,
/// enqueued by the caller in the same transaction); other active jobs covering one of them
/// see it move too. A job with nothing to transfer completes at once.
#[allow(clippy::too_many_arguments)]
pub async fn create(
    conn: &mut PgConnection,
    tenant_id: Uuid,
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
    // Before the new job exists: the shift is for the others.
    let pending = vec!["PENDING"; plan.to_transfer.len()];
    shift_counts(conn, &plan.to_transfer, &plan.transfer_from, &pending).await?;
    let job: JobRow = sqlx::query_as(
        "WITH job AS (
            INSERT INTO download_jobs (id, process_id, tenant_id, status, forced, total, pending,
                                       processing, available, webhook_url, completed_at)
            VALUES ($1, $2, $12, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $10 THEN now() END)
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
    .bind(tenant_id)
    .fetch_one(&mut *conn)
    .await?;

    // The documents to transfer start afresh, with the task that will transfer them.
    sqlx::query(
        "UPDATE documents d SET job_id = $1, updated_at = now(), status = 'PENDING',
                attempts = 0, interruptions = 0, last_error = NULL, next_attempt_at = $3, task_id = t.task_id
         FROM UNNEST($2::uuid[], $4::uuid[]) AS t(id, task_id)
         WHERE d.id = t.id",
    )
    .bind(job_id)
    .bind(&plan.to_transfer)
    .bind(due)
    .bind(tasks)
    .execute(&mut *conn)
    .await?;
    Ok(job)
}

/// Moves the counts of every active job covering documents whose status changes (`from[i]` to
/// `to[i]` for `ids[i]`), locking the jobs in id order (`autos_shift_counts`, migration 0010).
/// For changes that open documents (to PENDING), which never end a job; statements that
/// settle documents call the function themselves.
pub async fn shift_counts(
    conn: &mut PgConnection,
    ids: &[Uuid],
    from: &[String],
    to: &[&str],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT count(*) FROM autos_shift_counts($1, $2, $3)")
        .bind(ids)
        .bind(from)
        .bind(to)
        .execute(conn)
        .await?;
    Ok(())
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
    tenant_id: Uuid,
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
            INSERT INTO download_jobs (id, process_id, tenant_id, status, forced, total,
                                       pending, processing, available, webhook_url,
                                       completed_at)
            VALUES ($1, $2, $17, $3, $16, $4, $4, 0, 0, $5, CASE WHEN $4 = 0 THEN now() END)
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
    .bind(tenant_id)
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

/// Cancels an active job; `None` if it was not active. Its counts are final: documents being
/// transferred count as pending (given back). The queue tasks of its PENDING
/// documents that no other active job wants are dropped; transfers under way of documents
/// nobody wants any more stop when the cancellation is announced on commit (see
/// [`crate::jobs::cancellations`]), or at their next heartbeat. Documents another active job
/// covers go on for that job.
pub async fn cancel(conn: &mut PgConnection, job_id: Uuid) -> Result<Option<JobRow>, sqlx::Error> {
    // Its counts are final from now on: transfers under way are given back (or go on for
    // another job), so they count as pending.
    let job: Option<JobRow> = sqlx::query_as(
        "UPDATE download_jobs SET status = 'CANCELLED', completed_at = now(), updated_at = now(),
                pending = pending + processing, processing = 0
         WHERE id = $1 AND status IN ('QUEUED', 'RUNNING') RETURNING *",
    )
    .bind(job_id)
    .fetch_optional(&mut *conn)
    .await?;
    if job.is_some() {
        // A task carries documents of the job that created it; it goes only if none of the
        // job's documents it carries is wanted by an active job any more.
        sqlx::query(&format!(
            "DELETE FROM fang_tasks WHERE state IN ('new', 'retried') AND id IN (
                SELECT d.task_id FROM job_documents jd JOIN documents d ON d.id = jd.document_id
                WHERE jd.job_id = $1 AND d.status = 'PENDING' AND d.task_id IS NOT NULL
                GROUP BY d.task_id
                HAVING bool_and(NOT EXISTS (
                    SELECT 1 FROM job_documents o JOIN download_jobs j ON j.id = o.job_id
                    WHERE o.document_id = d.id AND {ACTIVE})))"
        ))
        .bind(job_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(job)
}

/// Re-opens a job that ended with failures: the FAILED documents it covers become PENDING
/// with a fresh attempt budget (other active jobs covering them see them move), and the job
/// RUNNING again, its counts read afresh from its documents (another tenant's job may have
/// stored some of them since). Returns the job and the re-queued documents.
pub async fn reopen_failed(
    conn: &mut PgConnection,
    job: &JobRow,
) -> Result<(JobRow, Vec<Uuid>), DbError> {
    job.status()?.check(JobStatus::Running)?;
    DocumentStatus::Failed.check(DocumentStatus::Pending)?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT d.id FROM job_documents jd JOIN documents d ON d.id = jd.document_id
         WHERE jd.job_id = $1 AND d.status = 'FAILED' ORDER BY jd.position FOR UPDATE OF d",
    )
    .bind(job.id)
    .fetch_all(&mut *conn)
    .await?;
    let failed = vec!["FAILED".to_string(); ids.len()];
    let pending = vec!["PENDING"; ids.len()];
    shift_counts(conn, &ids, &failed, &pending).await?;
    sqlx::query(
        "UPDATE documents SET status = 'PENDING', attempts = 0, interruptions = 0, last_error = NULL,
                next_attempt_at = now(), task_id = NULL, job_id = $2, updated_at = now()
         WHERE id = ANY($1) AND status = 'FAILED'",
    )
    .bind(&ids)
    .bind(job.id)
    .execute(&mut *conn)
    .await?;
    let reopened: JobRow = sqlx::query_as(
        "UPDATE download_jobs j SET status = 'RUNNING', pending = c.pending,
                processing = c.processing, available = c.available, failed = c.failed,
                error = NULL, completed_at = NULL, updated_at = now()
         FROM (SELECT count(*) FILTER (WHERE d.status = 'PENDING')::int AS pending,
                      count(*) FILTER (WHERE d.status = 'PROCESSING')::int AS processing,
                      count(*) FILTER (WHERE d.status = 'AVAILABLE')::int AS available,
                      count(*) FILTER (WHERE d.status = 'FAILED')::int AS failed
               FROM job_documents jd JOIN documents d ON d.id = jd.document_id
               WHERE jd.job_id = $1) AS c
         WHERE j.id = $1 AND j.status = $2 RETURNING j.*",
    )
    .bind(job.id)
    .bind(&job.status)
    .fetch_one(&mut *conn)
    .await?;
    Ok((reopened, ids))
}

/// How many QUEUED or RUNNING jobs a tenant has.
pub async fn count_active(db: impl PgExecutor<'_>, tenant_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM download_jobs
         WHERE tenant_id = $1 AND status IN ('QUEUED', 'RUNNING')",
    )
    .bind(tenant_id)
    .fetch_one(db)
    .await
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
    /// Only what this caller sees.
    pub visibility: Visibility,
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
           AND ($6::uuid IS NULL OR j.tenant_id = $6) AND ($7::uuid IS NULL OR j.id = $7)
         ORDER BY j.created_at DESC, j.id DESC LIMIT $5",
    )
    .bind(q.status.map(JobStatus::as_str))
    .bind(q.process_number.as_deref())
    .bind(q.after.map(|a| a.0))
    .bind(q.after.map(|a| a.1))
    .bind(q.first + 1)
    .bind(q.visibility.tenant)
    .bind(q.visibility.job)
    .fetch_all(db)
    .await
}

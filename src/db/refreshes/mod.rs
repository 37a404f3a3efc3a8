//! Refreshes: a stored document whose content at the source may have changed is fetched again
//! while it stays AVAILABLE, its copy and download link untouched until a new copy is stored
//! (migration 0012).
//!
//! One refresh per document, shared by the jobs that await it (`refresh_jobs`). Each of them
//! counts the document PENDING or PROCESSING as its refresh is, then AVAILABLE once the refresh
//! ends — with a new copy, or with the old one kept — through `autos_shift_refresh_counts`; the
//! job that this leaves with nothing open ends in the same transaction. Writers lock the
//! document, then the refresh, then the jobs: the order of the transfer path (documents, then
//! jobs), so that neither can deadlock the other.

use super::jobs::{self, JobRow};
use super::{DbError, DocumentRow};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// Whether a job awaiting the refresh `r` is active, as SQL.
const AWAITED: &str =
    "EXISTS (SELECT 1 FROM refresh_jobs rj JOIN download_jobs j ON j.id = rj.job_id
                               WHERE rj.document_id = r.document_id
                                 AND j.status IN ('QUEUED', 'RUNNING'))";

/// Locks the open refreshes of `document_ids` until the caller's transaction ends, so that
/// none is claimed or ended while a job joins it; returns each one's status (PENDING or
/// PROCESSING). For a job being planned, whose transaction already holds the documents.
pub async fn lock(
    conn: &mut PgConnection,
    document_ids: &[Uuid],
) -> Result<HashMap<Uuid, String>, sqlx::Error> {
    if document_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT document_id, status FROM document_refreshes WHERE document_id = ANY($1)
         ORDER BY document_id FOR SHARE",
    )
    .bind(document_ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Makes `job_id` await the refreshes of `document_ids`: those not open yet (`new`, each with
/// the queue task in `tasks` that will make it, due at `due`) are opened; the others are
/// joined. In the caller's transaction, which holds the documents and [`lock`]ed their
/// refreshes.
pub async fn open(
    conn: &mut PgConnection,
    job_id: Uuid,
    document_ids: &[Uuid],
    new: &[Uuid],
    tasks: &[Uuid],
    due: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO document_refreshes (document_id, next_attempt_at, task_id)
         SELECT id, $3, task_id FROM UNNEST($1::uuid[], $2::uuid[]) AS t(id, task_id)
         ON CONFLICT (document_id) DO NOTHING",
    )
    .bind(new)
    .bind(tasks)
    .bind(due)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO refresh_jobs (document_id, job_id) SELECT id, $2 FROM UNNEST($1::uuid[]) AS id
         ON CONFLICT DO NOTHING",
    )
    .bind(document_ids)
    .bind(job_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A refresh a worker holds.
#[derive(Debug, Clone)]
pub struct RefreshClaim {
    /// The document, as it was when claimed (AVAILABLE, with its stored copy).
    pub document: DocumentRow,
    /// The process number it belongs to.
    pub process_number: String,
    /// Whose the process is, when sealed: the tenant's id and slug.
    pub process_owner: Option<(Uuid, String)>,
    /// The tenant of the job that last held the document.
    pub job_tenant: Option<Uuid>,
    /// Attempts of this refresh before this one.
    pub attempts: i32,
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    refresh_attempts: i32,
    process_number: String,
    owner_id: Option<Uuid>,
    owner_slug: Option<String>,
    job_tenant: Option<Uuid>,
    #[sqlx(flatten)]
    document: DocumentRow,
}

/// Takes the PENDING, due refreshes of `document_ids` that an active job awaits, under
/// `token` (PENDING → PROCESSING), moving the counts of the jobs awaiting them, in one
/// statement. Refreshes not there to take are left out.
pub async fn claim(
    pool: &PgPool,
    document_ids: &[Uuid],
    token: Uuid,
    lease: Duration,
) -> Result<Vec<RefreshClaim>, sqlx::Error> {
    let rows: Vec<ClaimRow> = sqlx::query_as(&format!(
        "WITH claimed AS (
            UPDATE document_refreshes r SET status = 'PROCESSING', claim_token = $2,
                   lease_until = now() + make_interval(secs => $3), task_id = NULL,
                   updated_at = now()
            WHERE r.document_id = ANY($1) AND r.status = 'PENDING' AND r.next_attempt_at <= now()
              AND {AWAITED}
            RETURNING r.document_id, r.attempts),
         counted AS (
            SELECT count(*) AS jobs FROM autos_shift_refresh_counts(
                (SELECT array_agg(document_id) FROM claimed),
                (SELECT array_agg('PENDING'::text) FROM claimed),
                (SELECT array_agg('PROCESSING'::text) FROM claimed)))
         SELECT c.attempts AS refresh_attempts, p.number AS process_number,
                p.owner_tenant_id AS owner_id,
                (SELECT t.slug FROM tenants t WHERE t.id = p.owner_tenant_id) AS owner_slug,
                (SELECT j.tenant_id FROM download_jobs j WHERE j.id = d.job_id) AS job_tenant, d.*
         FROM claimed c JOIN documents d ON d.id = c.document_id
         JOIN processes p ON p.id = d.process_id, counted
         WHERE counted.jobs >= 0 ORDER BY array_position($1, c.document_id)"
    ))
    .bind(document_ids)
    .bind(token)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| RefreshClaim {
            document: row.document,
            process_number: row.process_number,
            process_owner: row.owner_id.zip(row.owner_slug),
            job_tenant: row.job_tenant,
            attempts: row.refresh_attempts,
        })
        .collect())
}

/// What a heartbeat found: the refreshes still held, and of those the ones no active job
/// awaits any more (their jobs were cancelled).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// Still held.
    pub held: Vec<Uuid>,
    /// Held, awaited by no active job.
    pub unwanted: Vec<Uuid>,
}

/// Extends the lease of the refreshes of `document_ids` held with `token`.
pub async fn heartbeat(
    pool: &PgPool,
    token: Uuid,
    document_ids: &[Uuid],
    lease: Duration,
) -> Result<Heartbeat, sqlx::Error> {
    let rows: Vec<(Uuid, bool)> = sqlx::query_as(&format!(
        "UPDATE document_refreshes r SET lease_until = now() + make_interval(secs => $3)
         WHERE r.document_id = ANY($1) AND r.claim_token = $2 AND r.status = 'PROCESSING'
         RETURNING r.document_id, {AWAITED}"
    ))
    .bind(document_ids)
    .bind(token)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(Heartbeat {
        held: rows.iter().map(|(id, _)| *id).collect(),
        unwanted: rows.iter().filter(|r| !r.1).map(|r| r.0).collect(),
    })
}

/// Records the multipart upload of a held refresh; false if the claim is no longer valid.
pub async fn record_upload(
    pool: &PgPool,
    document_id: Uuid,
    token: Uuid,
    key: &str,
    upload_id: &str,
) -> Result<bool, sqlx::Error> {
    let recorded = sqlx::query(
        "UPDATE document_refreshes SET upload_key = $3, upload_id = $4
         WHERE document_id = $1 AND claim_token = $2 AND status = 'PROCESSING'",
    )
    .bind(document_id)
    .bind(token)
    .bind(key)
    .bind(upload_id)
    .execute(pool)
    .await?;
    Ok(recorded.rows_affected() == 1)
}

/// How a held refresh ends its attempt.
#[derive(Debug, Clone)]
pub enum Ending {
    /// A new copy is stored (under the document's storage key): the document's stored
    /// SHA-256, size, type and time follow it.
    Stored {
        /// Object key.
        key: String,
        /// SHA-256 of what was stored.
        sha256: String,
        /// Bytes stored.
        size: i64,
        /// Content-Type stored.
        content_type: String,
    },
    /// The refresh gives up: the stored copy is kept, `error` goes to the document's
    /// `last_error`.
    Kept {
        /// What the client reads.
        error: String,
    },
    /// Another attempt is due at `at`, by the queue task `task_id` (enqueued in the same
    /// transaction); `attempt` and `interruption` (0 or 1) say what this one counts as.
    RetryAt {
        /// What went wrong.
        error: String,
        /// When.
        at: DateTime<Utc>,
        /// By which task.
        task_id: Uuid,
        /// Counted as an attempt of the refresh.
        attempt: bool,
        /// Counted as an interruption.
        interruption: bool,
    },
    /// Put back untouched and uncounted (nothing awaits it any more, or the batch stopped):
    /// the sweeper drops it, or queues it again if a job still awaits it.
    Released,
}

/// Ends the refresh of `document_id` held with `token`, in the caller's transaction: the
/// document (for an ending that writes it), the refresh, and the counts of the jobs awaiting
/// it; a job left with nothing open is ended. Returns the jobs as they are afterwards, or
/// `None` when the claim is no longer valid (nothing is written).
pub async fn end(
    tx: &mut Transaction<'_, Postgres>,
    document_id: Uuid,
    token: Uuid,
    ending: &Ending,
) -> Result<Option<Vec<JobRow>>, DbError> {
    let settles = matches!(ending, Ending::Stored { .. } | Ending::Kept { .. });
    if settles {
        sqlx::query("SELECT 1 FROM documents WHERE id = $1 FOR NO KEY UPDATE")
            .bind(document_id)
            .execute(&mut **tx)
            .await?;
    }
    let held: Option<Uuid> = sqlx::query_scalar(
        "SELECT document_id FROM document_refreshes
         WHERE document_id = $1 AND claim_token = $2 AND status = 'PROCESSING' FOR UPDATE",
    )
    .bind(document_id)
    .bind(token)
    .fetch_optional(&mut **tx)
    .await?;
    if held.is_none() {
        return Ok(None);
    }
    let to = if settles { "AVAILABLE" } else { "PENDING" };
    let touched: Vec<JobRow> = sqlx::query_as(
        "SELECT * FROM autos_shift_refresh_counts(ARRAY[$1::uuid], ARRAY['PROCESSING'], ARRAY[$2])",
    )
    .bind(document_id)
    .bind(to)
    .fetch_all(&mut **tx)
    .await?;
    match ending {
        Ending::Stored {
            key,
            sha256,
            size,
            content_type,
        } => {
            sqlx::query(
                "UPDATE documents SET storage_key = $2, stored_sha256 = $3, stored_size = $4,
                        stored_content_type = $5, stored_at = now(), last_error = NULL,
                        updated_at = now()
                 WHERE id = $1 AND status = 'AVAILABLE'",
            )
            .bind(document_id)
            .bind(key)
            .bind(sha256)
            .bind(size)
            .bind(content_type)
            .execute(&mut **tx)
            .await?;
        }
        Ending::Kept { error } => {
            sqlx::query(
                "UPDATE documents SET last_error = $2, updated_at = now()
                 WHERE id = $1 AND status = 'AVAILABLE'",
            )
            .bind(document_id)
            .bind(error)
            .execute(&mut **tx)
            .await?;
        }
        Ending::RetryAt { .. } | Ending::Released => {}
    }
    let (error, at, task, attempt, interruption) = match ending {
        Ending::RetryAt {
            error,
            at,
            task_id,
            attempt,
            interruption,
        } => (
            Some(error.as_str()),
            *at,
            Some(*task_id),
            *attempt,
            *interruption,
        ),
        _ => (None, Utc::now(), None, false, false),
    };
    if settles {
        sqlx::query("DELETE FROM document_refreshes WHERE document_id = $1")
            .bind(document_id)
            .execute(&mut **tx)
            .await?;
    } else {
        sqlx::query(
            "UPDATE document_refreshes SET status = 'PENDING', claim_token = NULL,
                    lease_until = NULL, upload_key = NULL, upload_id = NULL,
                    last_error = coalesce($2, last_error), next_attempt_at = $3, task_id = $4,
                    attempts = attempts + $5, interruptions = interruptions + $6,
                    updated_at = now()
             WHERE document_id = $1",
        )
        .bind(document_id)
        .bind(error)
        .bind(at)
        .bind(task)
        .bind(i32::from(attempt))
        .bind(i32::from(interruption))
        .execute(&mut **tx)
        .await?;
    }
    let mut after = Vec::with_capacity(touched.len());
    for job in touched {
        if job.pending == 0 && job.processing == 0 && !job.status()?.is_terminal() {
            after.push(jobs::finish_if_settled(tx, job.id).await?);
        } else {
            after.push(job);
        }
    }
    Ok(Some(after))
}

mod recovery;

pub use recovery::{assign_tasks, drop_unawaited, expired, orphans, Expired};

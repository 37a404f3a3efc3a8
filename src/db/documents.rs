//! Documents: lookups for the API, and the transitions a worker makes.
//!
//! Every transition is one transaction: a compare-and-set on the document (its status, and
//! while it is PROCESSING the claim token of the worker that holds it), the matching change to
//! the counts of every active job covering it (of whichever tenant: a document is shared), and
//! — when that was a job's last open document — the job's move to its terminal status. The job
//! rows are locked by the count update (in id order), so "is this the last one?" has exactly
//! one `yes` per job.

use super::jobs::{self, JobRow};
use super::DbError;
use crate::domain::status::{DocumentStatus, JobStatus};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres, Transaction};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// A document row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DocumentRow {
    /// Row id.
    pub id: Uuid,
    /// Its process.
    pub process_id: Uuid,
    /// Id at the source.
    pub source_id: String,
    /// Order in the source's list.
    pub position: i32,
    /// Whether the source still lists it.
    pub listed: bool,
    /// Original file name.
    pub name: String,
    /// Kind.
    pub kind: Option<String>,
    /// Announced MIME type.
    pub mime_type: Option<String>,
    /// Source URL.
    pub url: String,
    /// Announced size.
    pub size: Option<i64>,
    /// Announced SHA-256.
    pub sha256: Option<String>,
    /// CNJ secrecy level, 0 (public) to 5.
    pub sigilo: i16,
    /// The source id of the document this one is attached to.
    pub parent_source_id: Option<String>,
    /// Status (see [`DocumentStatus`]).
    pub status: String,
    /// Job now responsible for it.
    pub job_id: Option<Uuid>,
    /// Attempts made in the current job.
    pub attempts: i32,
    /// Last failure.
    pub last_error: Option<String>,
    /// When the next attempt is due (PENDING).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Queue task that will transfer it (PENDING).
    pub task_id: Option<Uuid>,
    /// Deadline of the worker holding it (PROCESSING).
    pub lease_until: Option<DateTime<Utc>>,
    /// Token of the worker holding it (PROCESSING).
    pub claim_token: Option<Uuid>,
    /// S3 key of the stored copy.
    pub storage_key: Option<String>,
    /// SHA-256 of the stored copy.
    pub stored_sha256: Option<String>,
    /// Size of the stored copy.
    pub stored_size: Option<i64>,
    /// Content-Type of the stored copy.
    pub stored_content_type: Option<String>,
    /// When it was stored.
    pub stored_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl DocumentRow {
    /// The parsed status.
    pub fn status(&self) -> Result<DocumentStatus, DbError> {
        DocumentStatus::from_db(&self.status)
            .ok_or_else(|| DbError::Corrupt(format!("document status {}", self.status)))
    }
}

/// Documents by id, in any order.
pub async fn find_by_ids(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<DocumentRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM documents WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(db)
        .await
}

/// A page of documents asked for: `first` of its owner's (a job's or a process's) after the
/// document `after`, in their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageKey {
    /// The job or process.
    pub owner: Uuid,
    /// Page size.
    pub first: i32,
    /// The last document of the previous page.
    pub after: Option<Uuid>,
}

/// A page of documents.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Its documents, in order.
    pub rows: Vec<DocumentRow>,
    /// False when `after` is not one of the owner's documents (the page is then empty).
    pub after_found: bool,
}

/// Whose documents a page lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageOf {
    /// A job's documents, in the job's order.
    Job,
    /// A process's documents the source lists, in the source's order.
    Process,
}

/// The pages `keys`, in two statements for all of them (one when none has an `after`): where
/// each starts (the position of its `after`), then each page from its owner's index in order, `first` rows and no more — a page
/// of a job of 100,000 documents reads a hundred of them, wherever it starts.
pub async fn pages(
    pool: &PgPool,
    of: PageOf,
    keys: &[PageKey],
) -> Result<HashMap<PageKey, Page>, sqlx::Error> {
    let owners: Vec<Uuid> = keys.iter().map(|k| k.owner).collect();
    let afters: Vec<Option<Uuid>> = keys.iter().map(|k| k.after).collect();
    let firsts: Vec<i32> = keys.iter().map(|k| k.first).collect();
    let starts_sql = match of {
        PageOf::Job => {
            "SELECT (SELECT a.position FROM job_documents a
                     WHERE a.job_id = k.owner AND a.document_id = k.after_id)
             FROM UNNEST($1::uuid[], $2::uuid[]) WITH ORDINALITY AS k(owner, after_id, i)
             ORDER BY k.i"
        }
        PageOf::Process => {
            "SELECT (SELECT a.position FROM documents a
                     WHERE a.process_id = k.owner AND a.id = k.after_id AND a.listed)
             FROM UNNEST($1::uuid[], $2::uuid[]) WITH ORDINALITY AS k(owner, after_id, i)
             ORDER BY k.i"
        }
    };
    // First pages (the usual) start at the beginning: no statement to find where.
    let starts: Vec<Option<i32>> = if afters.iter().all(Option::is_none) {
        vec![None; keys.len()]
    } else {
        sqlx::query_scalar(starts_sql)
            .bind(&owners)
            .bind(&afters)
            .fetch_all(pool)
            .await?
    };
    // Pages whose `after` is unknown are empty; the others start after their position.
    let positions: Vec<i32> = keys
        .iter()
        .zip(&starts)
        .map(|(k, start)| match (k.after, start) {
            (None, _) => i32::MIN,
            (Some(_), Some(position)) => *position,
            (Some(_), None) => i32::MAX,
        })
        .collect();
    let pages_sql = match of {
        PageOf::Job => {
            "SELECT k.i AS page, d.*
             FROM UNNEST($1::uuid[], $2::int[], $3::int[]) WITH ORDINALITY AS k(owner, after_position, first, i)
             CROSS JOIN LATERAL (
                SELECT jd.position AS page_position, d.*
                FROM job_documents jd JOIN documents d ON d.id = jd.document_id
                WHERE jd.job_id = k.owner AND jd.position > k.after_position
                ORDER BY jd.position LIMIT k.first) d
             ORDER BY k.i, d.page_position"
        }
        PageOf::Process => {
            "SELECT k.i AS page, d.*
             FROM UNNEST($1::uuid[], $2::int[], $3::int[]) WITH ORDINALITY AS k(owner, after_position, first, i)
             CROSS JOIN LATERAL (
                SELECT d.* FROM documents d
                WHERE d.process_id = k.owner AND d.listed AND d.position > k.after_position
                ORDER BY d.position LIMIT k.first) d
             ORDER BY k.i, d.position"
        }
    };
    let rows: Vec<PageRow> = sqlx::query_as(pages_sql)
        .bind(&owners)
        .bind(&positions)
        .bind(&firsts)
        .fetch_all(pool)
        .await?;
    let mut pages: Vec<Page> = keys
        .iter()
        .zip(&starts)
        .map(|(k, start)| Page {
            rows: Vec::new(),
            after_found: k.after.is_none() || start.is_some(),
        })
        .collect();
    for row in rows {
        if let Some(page) = usize::try_from(row.page - 1)
            .ok()
            .and_then(|i| pages.get_mut(i))
        {
            page.rows.push(row.document);
        }
    }
    Ok(keys.iter().copied().zip(pages).collect())
}

#[derive(sqlx::FromRow)]
struct PageRow {
    page: i64,
    #[sqlx(flatten)]
    document: DocumentRow,
}

/// A document a worker holds.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The document, as it was when claimed.
    pub document: DocumentRow,
    /// The process number it belongs to.
    pub process_number: String,
    /// Whose the process is, when sealed: the tenant's id and slug.
    pub process_owner: Option<(Uuid, String)>,
    /// The tenant of the job now responsible for the document.
    pub job_tenant: Option<Uuid>,
    /// Proof of ownership for heartbeats and the final transition.
    pub token: Uuid,
}

/// The documents of one batch a worker holds: one token and one lease for all of them.
#[derive(Debug, Clone)]
pub struct BatchClaim {
    /// Proof of ownership, shared by the batch's documents.
    pub token: Uuid,
    /// The claimed documents, in the batch's order.
    pub claims: Vec<Claim>,
}

/// The statement behind [`claim_batch`], with its parameters: `$1` the documents, `$2` the
/// claim token, `$3` the lease in seconds. Public so that its plan can be checked (`EXPLAIN`).
pub const CLAIM_STATEMENT: &str = concat!(
    "WITH claimed AS (
        UPDATE documents d SET status = 'PROCESSING', task_id = NULL,
               claim_token = $2, lease_until = now() + make_interval(secs => $3),
               updated_at = now()
        WHERE d.id = ANY($1) AND d.status = 'PENDING'
          AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= now())
          AND EXISTS (SELECT 1 FROM job_documents jd JOIN download_jobs j ON j.id = jd.job_id
                      WHERE jd.document_id = d.id AND j.status IN ('QUEUED', 'RUNNING'))
        RETURNING d.*),
     counted AS (
        SELECT count(*) AS jobs FROM autos_shift_counts(
            (SELECT array_agg(id) FROM claimed),
            (SELECT array_agg('PENDING'::text) FROM claimed),
            (SELECT array_agg('PROCESSING'::text) FROM claimed)))
     SELECT c.*, p.number AS process_number, p.owner_tenant_id AS owner_id,
            (SELECT t.slug FROM tenants t WHERE t.id = p.owner_tenant_id) AS owner_slug,
            (SELECT j.tenant_id FROM download_jobs j WHERE j.id = c.job_id) AS job_tenant
     FROM claimed c JOIN processes p ON p.id = c.process_id, counted
     WHERE counted.jobs >= 0 AND ",
    relaxed_commit!(),
    "
     ORDER BY array_position($1, c.id)",
);

/// Takes the PENDING, due documents among `document_ids` that an active job (of any
/// tenant) wants, for this worker (PENDING → PROCESSING; no attempt is counted until a
/// transfer ends with a result about the document), moving the counts of every active job covering them (and a QUEUED job to RUNNING), in one
/// statement (the counts through `autos_shift_counts`, which sees jobs created while the
/// statement waited for the documents: see migration 0010). Documents that are not there to take (another worker has them, they are not
/// due, no active job wants them) are left out.
///
/// The documents are looked up by id alone: the pool's connections keep one generic plan per
/// statement, made with the statistics of the moment, and a plan that started from a job read
/// every document of it at each claim on a table not yet analyzed.
///
/// The caller picks the claim `token`: should the answer be lost after the claim committed,
/// it can still give back what it may hold ([`release`] by that token) instead of leaving
/// the documents to their lease.
pub async fn claim_batch(
    pool: &PgPool,
    document_ids: &[Uuid],
    lease: Duration,
    token: Uuid,
) -> Result<BatchClaim, DbError> {
    DocumentStatus::Pending.check(DocumentStatus::Processing)?;
    JobStatus::Queued.check(JobStatus::Running)?;
    let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM_STATEMENT)
        .bind(document_ids)
        .bind(token)
        .bind(lease.as_secs_f64())
        .fetch_all(pool)
        .await?;
    Ok(BatchClaim {
        token,
        claims: rows
            .into_iter()
            .map(|row| Claim {
                document: row.document,
                process_number: row.process_number,
                process_owner: row.owner_id.zip(row.owner_slug),
                job_tenant: row.job_tenant,
                token,
            })
            .collect(),
    })
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    #[sqlx(flatten)]
    document: DocumentRow,
    process_number: String,
    owner_id: Option<Uuid>,
    owner_slug: Option<String>,
    job_tenant: Option<Uuid>,
}

/// What a heartbeat found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The documents still held (the others' leases ran out and someone else took them).
    pub held: Vec<Uuid>,
    /// Of those, the ones no active job wants any more (their jobs were cancelled): stop
    /// their transfers and give them back.
    pub unwanted: Vec<Uuid>,
}

/// Extends the lease of the documents `document_ids` held with `token`.
pub async fn heartbeat(
    pool: &PgPool,
    token: Uuid,
    document_ids: &[Uuid],
    lease: Duration,
) -> Result<Heartbeat, DbError> {
    let rows: Vec<(Uuid, bool)> = sqlx::query_as(
        "UPDATE documents d SET lease_until = now() + make_interval(secs => $3)
         WHERE d.id = ANY($1) AND d.claim_token = $2 AND d.status = 'PROCESSING'
         RETURNING d.id, EXISTS (
            SELECT 1 FROM job_documents jd JOIN download_jobs j ON j.id = jd.job_id
            WHERE jd.document_id = d.id AND j.status IN ('QUEUED', 'RUNNING'))",
    )
    .bind(document_ids)
    .bind(token)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(Heartbeat {
        held: rows.iter().map(|(id, _)| *id).collect(),
        unwanted: rows
            .iter()
            .filter(|(_, wanted)| !wanted)
            .map(|(id, _)| *id)
            .collect(),
    })
}

/// Records the multipart upload `upload_id` of `key` on a document held with `token`; false if
/// the claim is no longer valid (the upload must then be aborted).
pub async fn record_upload(
    pool: &PgPool,
    document_id: Uuid,
    token: Uuid,
    key: &str,
    upload_id: &str,
) -> Result<bool, DbError> {
    let recorded = sqlx::query(
        "UPDATE documents SET upload_key = $3, upload_id = $4
         WHERE id = $1 AND claim_token = $2 AND status = 'PROCESSING'",
    )
    .bind(document_id)
    .bind(token)
    .bind(key)
    .bind(upload_id)
    .execute(pool)
    .await?;
    Ok(recorded.rows_affected() == 1)
}

/// Multipart uploads recorded on documents whose claim is over without having ended them —
/// their worker died, or its lease ran out: `(document id, key, upload id)`.
pub async fn abandoned_uploads(
    pool: &PgPool,
    limit: i64,
) -> Result<Vec<(Uuid, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, upload_key, upload_id FROM documents
         WHERE upload_id IS NOT NULL AND upload_key IS NOT NULL
           AND (status <> 'PROCESSING' OR lease_until IS NULL OR lease_until < now())
         LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Forgets a recorded upload once it was aborted (unless another has been recorded since).
pub async fn forget_upload(
    pool: &PgPool,
    document_id: Uuid,
    upload_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE documents SET upload_key = NULL, upload_id = NULL
         WHERE id = $1 AND upload_id = $2",
    )
    .bind(document_id)
    .bind(upload_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Puts documents held with `token` back to PENDING untouched (their jobs were cancelled, the
/// batch stopped early, the process is stopping): no attempt is counted. Returns the released
/// documents that an active job still wants (they need a task to take them again).
pub async fn release(
    db: impl PgExecutor<'_>,
    token: Uuid,
    document_ids: &[Uuid],
) -> Result<Vec<Uuid>, DbError> {
    DocumentStatus::Processing.check(DocumentStatus::Pending)?;
    let wanted: Vec<Uuid> = sqlx::query_scalar(
        "WITH released AS (
            UPDATE documents d SET status = 'PENDING', next_attempt_at = now(),
                   lease_until = NULL, claim_token = NULL, upload_key = NULL, upload_id = NULL,
                   updated_at = now()
            WHERE d.id = ANY($1) AND d.claim_token = $2 AND d.status = 'PROCESSING'
            RETURNING d.id),
         counted AS (
            SELECT count(*) AS jobs FROM autos_shift_counts(
                (SELECT array_agg(id) FROM released),
                (SELECT array_agg('PROCESSING'::text) FROM released),
                (SELECT array_agg('PENDING'::text) FROM released)))
         SELECT r.id FROM released r, counted c
         WHERE c.jobs >= 0 AND EXISTS (
            SELECT 1 FROM job_documents jd JOIN download_jobs j ON j.id = jd.job_id
            WHERE jd.document_id = r.id AND j.status IN ('QUEUED', 'RUNNING'))",
    )
    .bind(document_ids)
    .bind(token)
    .fetch_all(db)
    .await?;
    Ok(wanted)
}

/// How a claimed document ends its attempt.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Stored in S3.
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
    /// This attempt failed; another is due at `at`, by the queue task `task_id`.
    RetryAt {
        /// What went wrong.
        error: String,
        /// When the next attempt is due.
        at: DateTime<Utc>,
        /// The task enqueued for it (in the same transaction).
        task_id: Uuid,
    },
    /// Failed for good.
    Failed {
        /// What went wrong.
        error: String,
    },
}

impl Outcome {
    /// The status it moves the document to.
    pub fn status(&self) -> DocumentStatus {
        match self {
            Outcome::Stored { .. } => DocumentStatus::Available,
            Outcome::RetryAt { .. } => DocumentStatus::Pending,
            Outcome::Failed { .. } => DocumentStatus::Failed,
        }
    }
}

/// A claimed document's final transition, to be written.
#[derive(Debug, Clone)]
pub struct Settling {
    /// The claim's token.
    pub token: Uuid,
    /// The document.
    pub document: Uuid,
    /// How its attempt ended.
    pub outcome: Outcome,
    /// What it counts as.
    pub charge: Charge,
}

/// What an ended claim counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// One of the document's attempts: the transfer ended with a result about the document
    /// itself (stored, or a failure of its own: its bytes, its status at the source).
    Attempt,
    /// A transfer cut short by the platform (its worker died or stopped answering).
    Interruption,
    /// Nothing: the transfer did not happen or was not the document's doing (an outage of
    /// S3 or of the court).
    Nothing,
}

/// Ends one claim: see [`settle_many`].
pub async fn settle(
    tx: &mut Transaction<'_, Postgres>,
    settling: Settling,
) -> Result<Option<JobRow>, DbError> {
    Ok(settle_many(tx, &[settling]).await?.pop())
}

/// The statement behind [`settle_many`], with its parameters: one array per field of the
/// ended claims (`$1` tokens, `$2` documents, `$3` statuses, then error, storage key, SHA-256,
/// size, content type, next attempt and its task, and what each counts as: `$11` attempts,
/// `$12` interruptions, 0 or 1). Public so that its plan can be checked (`EXPLAIN`).
pub const SETTLE_STATEMENT: &str = concat!(
    "WITH place AS MATERIALIZED (
        SELECT jsonb_object_agg(t.id, t.n) AS of
        FROM UNNEST($2::uuid[]) WITH ORDINALITY AS t(id, n)),
     settled AS (
        UPDATE documents d SET
            (status, last_error, attempts, interruptions, storage_key, stored_sha256,
             stored_size, stored_content_type, stored_at, next_attempt_at, task_id) = (
            SELECT e.status,
                   coalesce(e.last_error, CASE WHEN e.status = 'AVAILABLE' THEN NULL
                                               ELSE d.last_error END),
                   d.attempts + e.attempt, d.interruptions + e.interruption,
                   coalesce(e.storage_key, d.storage_key), coalesce(e.sha256, d.stored_sha256),
                   coalesce(e.size, d.stored_size),
                   coalesce(e.content_type, d.stored_content_type),
                   CASE WHEN e.storage_key IS NULL THEN d.stored_at ELSE now() END,
                   CASE WHEN e.status = 'PENDING' THEN e.next_attempt_at
                        ELSE d.next_attempt_at END,
                   CASE WHEN e.status = 'PENDING' THEN e.task_id ELSE d.task_id END
            FROM (SELECT ($3::text[])[i] AS status, ($4::text[])[i] AS last_error,
                         ($5::text[])[i] AS storage_key, ($6::text[])[i] AS sha256,
                         ($7::bigint[])[i] AS size, ($8::text[])[i] AS content_type,
                         ($9::timestamptz[])[i] AS next_attempt_at, ($10::uuid[])[i] AS task_id,
                         ($11::int[])[i] AS attempt, ($12::int[])[i] AS interruption
                  FROM (SELECT ((SELECT of FROM place) ->> d.id::text)::int AS i OFFSET 0) AS p)
                 AS e),
            lease_until = NULL, claim_token = NULL, upload_key = NULL, upload_id = NULL,
            updated_at = now()
        WHERE d.id = ANY($2) AND d.status = 'PROCESSING'
          AND d.claim_token = ($1::uuid[])[((SELECT of FROM place) ->> d.id::text)::int]
        RETURNING d.id, d.status)
     SELECT j.* FROM autos_shift_counts(
        (SELECT array_agg(id ORDER BY id) FROM settled),
        (SELECT array_agg('PROCESSING'::text) FROM settled),
        (SELECT array_agg(status ORDER BY id) FROM settled)) AS j
     WHERE ",
    relaxed_commit!(),
    "",
);

/// Ends claims, each with its token and outcome: the documents' compare-and-set and the
/// counts of every active job covering them in one statement; then, for a job that this left
/// with no open document, the job's terminal transition. Returns the jobs as they are
/// afterwards (none if no active job covers a settled document; a claim no longer valid is
/// left as it is).
///
/// It runs in the caller's transaction, so that a job's end commits with its last documents:
/// nobody reads a job RUNNING with every document settled. The statement locks the rows of
/// the jobs it touches in id order.
///
/// The documents are read by their ids (`d.id = ANY($2)`) and each finds its ending by its
/// place in the arrays, from a map of ids to places built once (`place`): there is no join
/// for a plan to get wrong. (Joined to the unpacked endings, generic plans made on young
/// statistics read every PROCESSING document and unpacked the arrays again for each, or read
/// every ending again for each document — the square of the endings written together, 12,000
/// rows for 110 of them.)
pub async fn settle_many(
    tx: &mut Transaction<'_, Postgres>,
    ended: &[Settling],
) -> Result<Vec<JobRow>, DbError> {
    if ended.is_empty() {
        return Ok(Vec::new());
    }
    let n = ended.len();
    let mut tokens = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut errors: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut keys: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut shas: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut sizes: Vec<Option<i64>> = Vec::with_capacity(n);
    let mut content_types: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut due: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut tasks: Vec<Option<Uuid>> = Vec::with_capacity(n);
    let mut attempt: Vec<i32> = Vec::with_capacity(n);
    let mut interruption: Vec<i32> = Vec::with_capacity(n);
    for Settling {
        token,
        document: id,
        outcome,
        charge,
    } in ended
    {
        attempt.push(i32::from(*charge == Charge::Attempt));
        interruption.push(i32::from(*charge == Charge::Interruption));
        let to = outcome.status();
        DocumentStatus::Processing.check(to)?;
        tokens.push(*token);
        ids.push(*id);
        statuses.push(to.as_str());
        let (mut error, mut stored, mut retry) = (None, None, None);
        match outcome {
            Outcome::Stored {
                key,
                sha256,
                size,
                content_type,
            } => stored = Some((key.as_str(), sha256.as_str(), *size, content_type.as_str())),
            Outcome::RetryAt {
                error: e,
                at,
                task_id,
            } => {
                error = Some(e.as_str());
                retry = Some((*at, *task_id));
            }
            Outcome::Failed { error: e } => error = Some(e.as_str()),
        }
        errors.push(error);
        keys.push(stored.map(|s| s.0));
        shas.push(stored.map(|s| s.1));
        sizes.push(stored.map(|s| s.2));
        content_types.push(stored.map(|s| s.3));
        due.push(retry.map(|r| r.0));
        tasks.push(retry.map(|r| r.1));
    }
    let touched: Vec<JobRow> = sqlx::query_as(SETTLE_STATEMENT)
        .bind(&tokens)
        .bind(&ids)
        .bind(&statuses)
        .bind(&errors)
        .bind(&keys)
        .bind(&shas)
        .bind(&sizes)
        .bind(&content_types)
        .bind(&due)
        .bind(&tasks)
        .bind(&attempt)
        .bind(&interruption)
        .fetch_all(&mut **tx)
        .await?;
    if touched.is_empty() {
        tracing::debug!(
            ?ids,
            "settled documents no active job covers (or claims no longer valid)"
        );
    }
    let mut after = Vec::with_capacity(touched.len());
    for job in touched {
        if job.pending == 0 && job.processing == 0 && !job.status()?.is_terminal() {
            after.push(jobs::finish_if_settled(tx, job.id).await?);
        } else {
            after.push(job);
        }
    }
    Ok(after)
}

/// Documents wanted by active jobs whose worker stopped renewing its lease: `(id, claim
/// token)`. (A document held when its jobs ended is recovered once a new job covers it.)
/// One with a multipart upload recorded waits for the upload to be aborted (see
/// [`abandoned_uploads`]), but no longer than `abort_grace` past its lease: a store that keeps
/// refusing the abort must not hold the job back for ever.
pub async fn expired_claims(
    pool: &PgPool,
    limit: i64,
    abort_grace: Duration,
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT DISTINCT d.id, d.claim_token, d.lease_until
         FROM download_jobs j JOIN job_documents jd ON jd.job_id = j.id
         JOIN documents d ON d.id = jd.document_id
         WHERE j.status IN ('QUEUED', 'RUNNING') AND d.status = 'PROCESSING'
           AND d.lease_until < now() AND d.claim_token IS NOT NULL
           AND (d.upload_id IS NULL
                OR d.lease_until < now() - make_interval(secs => $2))
         ORDER BY d.lease_until LIMIT $1",
    )
    .bind(limit)
    .bind(abort_grace.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(id, token, _)| (id, token)).collect())
}

/// PENDING documents wanted by active jobs that no live queue task will pick up:
/// `(job id, document id)`, each document once (with one of the jobs that want it).
pub async fn orphans(pool: &PgPool, limit: i64) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT jd.job_id, d.id FROM download_jobs j
         JOIN job_documents jd ON jd.job_id = j.id
         JOIN documents d ON d.id = jd.document_id
         WHERE d.status = 'PENDING' AND j.status IN ('QUEUED', 'RUNNING')
           AND NOT EXISTS (SELECT 1 FROM fang_tasks t WHERE t.id = d.task_id
                           AND t.state IN ('new', 'retried', 'in_progress'))
         ORDER BY jd.job_id, jd.position LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut seen = std::collections::HashSet::new();
    Ok(rows
        .into_iter()
        .filter(|(_, document)| seen.insert(*document))
        .collect())
}

/// Records, for each PENDING document, the queue task that will transfer it.
pub async fn assign_tasks(
    conn: &mut PgConnection,
    document_ids: &[Uuid],
    task_ids: &[Uuid],
    due: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE documents d SET task_id = t.task_id, next_attempt_at = $3, updated_at = now()
         FROM UNNEST($1::uuid[], $2::uuid[]) AS t(id, task_id)
         WHERE d.id = t.id AND d.status = 'PENDING'",
    )
    .bind(document_ids)
    .bind(task_ids)
    .bind(due)
    .execute(conn)
    .await?;
    Ok(())
}

/// The job that queued a document's attempt, and how many of its transfers were interrupted.
pub async fn interruptions(
    db: impl PgExecutor<'_>,
    document_id: Uuid,
) -> Result<(Option<Uuid>, i32), sqlx::Error> {
    sqlx::query_as("SELECT job_id, interruptions FROM documents WHERE id = $1")
        .bind(document_id)
        .fetch_one(db)
        .await
}

//! What the sweeper needs of refreshes: lapsed claims, refreshes no job awaits, refreshes
//! whose queue task went missing.

use super::AWAITED;
use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// A refresh whose worker stopped renewing its lease.
#[derive(Debug, Clone)]
pub struct Expired {
    /// The document.
    pub document_id: Uuid,
    /// The claim that lapsed.
    pub token: Uuid,
    /// When it lapsed.
    pub lease_until: DateTime<Utc>,
    /// Interruptions so far.
    pub interruptions: i32,
    /// A multipart upload it recorded: `(key, upload id)`.
    pub upload: Option<(String, String)>,
    /// One of the jobs awaiting it.
    pub job_id: Option<Uuid>,
}

type ExpiredRow = (
    Uuid,
    Uuid,
    DateTime<Utc>,
    i32,
    Option<String>,
    Option<String>,
    Option<Uuid>,
);

/// Refreshes whose lease ran out.
pub async fn expired(pool: &PgPool, limit: i64) -> Result<Vec<Expired>, sqlx::Error> {
    let rows: Vec<ExpiredRow> = sqlx::query_as(
        "SELECT r.document_id, r.claim_token, r.lease_until, r.interruptions, r.upload_key,
                r.upload_id,
                (SELECT rj.job_id FROM refresh_jobs rj WHERE rj.document_id = r.document_id
                 LIMIT 1)
         FROM document_refreshes r
         WHERE r.status = 'PROCESSING' AND r.lease_until < now() ORDER BY r.lease_until LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(document_id, token, lease_until, interruptions, key, upload, job_id)| Expired {
                document_id,
                token,
                lease_until,
                interruptions,
                upload: key.zip(upload),
                job_id,
            },
        )
        .collect())
}

/// Drops the PENDING refreshes no active job awaits any more (their jobs were cancelled);
/// returns how many. The refreshes are locked first, and only then is it checked that no job
/// awaits them, so that a job joining one at that moment keeps it.
pub async fn drop_unawaited(pool: &PgPool, limit: i64) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let candidates: Vec<Uuid> = sqlx::query_scalar(&format!(
        "SELECT r.document_id FROM document_refreshes r
         WHERE r.status = 'PENDING' AND NOT {AWAITED}
         ORDER BY r.document_id LIMIT $1 FOR UPDATE SKIP LOCKED"
    ))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let dropped = sqlx::query(&format!(
        "DELETE FROM document_refreshes r
         WHERE r.document_id = ANY($1) AND r.status = 'PENDING' AND NOT {AWAITED}"
    ))
    .bind(&candidates)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(dropped.rows_affected())
}

/// PENDING refreshes an active job awaits that no live queue task will make:
/// `(document, one of the jobs)`.
pub async fn orphans(pool: &PgPool, limit: i64) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT ON (r.document_id) r.document_id, rj.job_id
         FROM document_refreshes r JOIN refresh_jobs rj ON rj.document_id = r.document_id
         JOIN download_jobs j ON j.id = rj.job_id
         WHERE r.status = 'PENDING' AND j.status IN ('QUEUED', 'RUNNING')
           AND NOT EXISTS (SELECT 1 FROM fang_tasks t WHERE t.id = r.task_id
                           AND t.state IN ('new', 'retried', 'in_progress'))
         ORDER BY r.document_id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Records, for each PENDING refresh, the queue task that will make it, due at `due`.
pub async fn assign_tasks(
    db: impl PgExecutor<'_>,
    document_ids: &[Uuid],
    task_ids: &[Uuid],
    due: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE document_refreshes r SET task_id = t.task_id, next_attempt_at = $3,
                updated_at = now()
         FROM UNNEST($1::uuid[], $2::uuid[]) AS t(id, task_id)
         WHERE r.document_id = t.id AND r.status = 'PENDING'",
    )
    .bind(document_ids)
    .bind(task_ids)
    .bind(due)
    .execute(db)
    .await?;
    Ok(())
}

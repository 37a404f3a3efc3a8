//! Outages of the workers' dependencies (S3, the court source) as the workers see them: one
//! row per dependency down, kept fresh while a worker still sees it, so that every process can
//! tell why work waits. Starting and ending one tells the active jobs' subscribers.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::time::Duration;

/// How long an outage row nobody marked as seen still counts: a worker that died mid-outage
/// leaves one behind.
pub const FRESH: Duration = Duration::from_secs(180);

/// An outage as recorded: what is down, since when, and why.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutageRow {
    /// `storage` or `source`.
    pub dependency: String,
    /// Since when.
    pub since: DateTime<Utc>,
    /// What the last failure said (a stable phrase).
    pub reason: String,
    /// When a worker last saw it.
    pub updated_at: DateTime<Utc>,
}

/// Records that `dependency` is down (keeping the `since` of an outage another process
/// recorded and still sees), tells the active jobs' subscribers, and returns when it began.
pub async fn start(
    pool: &PgPool,
    dependency: &str,
    reason: &str,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH recorded AS (
            INSERT INTO outages (dependency, since, reason) VALUES ($1, now(), $2)
            ON CONFLICT (dependency) DO UPDATE SET reason = EXCLUDED.reason,
                since = CASE WHEN outages.updated_at > now() - make_interval(secs => $3)
                             THEN outages.since ELSE EXCLUDED.since END,
                updated_at = now()
            RETURNING since),
         told AS (
            SELECT count(pg_notify('autos_progress', id::text)) AS n FROM download_jobs
            WHERE status IN ('QUEUED', 'RUNNING'))
         SELECT since FROM recorded, told WHERE told.n >= 0",
    )
    .bind(dependency)
    .bind(reason)
    .bind(FRESH.as_secs_f64())
    .fetch_one(pool)
    .await
}

/// Marks `dependency`'s outage as still seen.
pub async fn touch(pool: &PgPool, dependency: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outages SET updated_at = now() WHERE dependency = $1")
        .bind(dependency)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records that `dependency` answers again, and tells the active jobs' subscribers if it was
/// recorded as down.
pub async fn end(pool: &PgPool, dependency: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH ended AS (DELETE FROM outages WHERE dependency = $1 RETURNING 1)
         SELECT count(pg_notify('autos_progress', id::text)) FROM download_jobs
         WHERE status IN ('QUEUED', 'RUNNING') AND EXISTS (SELECT 1 FROM ended)",
    )
    .bind(dependency)
    .execute(pool)
    .await?;
    Ok(())
}

/// The outages being seen now: recorded, and marked as seen within [`FRESH`].
pub async fn current<'e, E>(executor: E) -> Result<Vec<OutageRow>, sqlx::Error>
where
    E: sqlx::PgExecutor<'e>,
{
    sqlx::query_as(
        "SELECT dependency, since, reason, updated_at FROM outages
         WHERE updated_at > now() - make_interval(secs => $1) ORDER BY dependency",
    )
    .bind(FRESH.as_secs_f64())
    .fetch_all(executor)
    .await
}

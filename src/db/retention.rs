//! Rows kept only for a while: each call deletes at most a bounded batch, oldest first, so
//! that no statement deletes millions of rows (or holds their locks) at once; rows a writer
//! holds are skipped until a later call.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Runs `statement` — a `DELETE` of at most `$2` rows older than `$1`, oldest first, skipping
/// rows a writer holds — and returns how many it deleted.
pub async fn delete_batch(
    pool: &PgPool,
    statement: &'static str,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(statement)
        .bind(before)
        .bind(limit)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Deletes at most `limit` webhook deliveries that ended (DELIVERED or FAILED) before
/// `before`, with their attempts; returns how many. PENDING ones stay, however old.
pub async fn finished_deliveries(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    const DELETE: &str = "DELETE FROM webhook_deliveries WHERE id IN (
        SELECT id FROM webhook_deliveries
        WHERE status IN ('DELIVERED', 'FAILED') AND updated_at < $1
        ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)";
    delete_batch(pool, DELETE, before, limit).await
}

/// Deletes at most `limit` audit log entries older than `before`; returns how many.
pub async fn audit_entries(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    const DELETE: &str = "DELETE FROM audit_log WHERE id IN (
        SELECT id FROM audit_log WHERE at < $1
        ORDER BY at LIMIT $2 FOR UPDATE SKIP LOCKED)";
    delete_batch(pool, DELETE, before, limit).await
}

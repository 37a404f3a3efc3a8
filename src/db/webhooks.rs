//! Webhook deliveries, their attempts, and stored settings.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// A delivery: one message to one URL, tried until delivered or given up.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    /// Row id.
    pub id: Uuid,
    /// The job whose end it reports (none for a test message).
    pub job_id: Option<Uuid>,
    /// The tenant whose message it is (signed with its secret).
    pub tenant_id: Uuid,
    /// Target URL.
    pub url: String,
    /// `webhook-id`, the same on every attempt.
    pub message_id: String,
    /// `job.completed`, …
    pub event_type: String,
    /// The body, fixed at the first attempt.
    pub payload: Option<serde_json::Value>,
    /// PENDING, DELIVERED or FAILED.
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// Status code of the last answer.
    pub last_status_code: Option<i32>,
    /// Last failure.
    pub last_error: Option<String>,
    /// When a 2xx answer came.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A delivery by id.
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<DeliveryRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM webhook_deliveries WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The newest delivery of each job.
pub async fn latest_by_jobs(
    db: impl PgExecutor<'_>,
    job_ids: &[Uuid],
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT ON (job_id) * FROM webhook_deliveries WHERE job_id = ANY($1)
         ORDER BY job_id, created_at DESC, id DESC",
    )
    .bind(job_ids)
    .fetch_all(db)
    .await
}

/// Fixes the body of a delivery at its first attempt; returns the body to send (an earlier
/// one if another worker fixed it first).
pub async fn fix_payload(
    db: impl PgExecutor<'_>,
    id: Uuid,
    payload: &serde_json::Value,
) -> Result<serde_json::Value, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE webhook_deliveries SET payload = coalesce(payload, $2), updated_at = now()
         WHERE id = $1 RETURNING payload",
    )
    .bind(id)
    .bind(payload)
    .fetch_one(db)
    .await
}

/// Records one attempt and what it means for the delivery (`DELIVERED`, `FAILED`, or still
/// `PENDING`), in one statement. Only a PENDING delivery changes.
pub async fn record_attempt(
    db: impl PgExecutor<'_>,
    id: Uuid,
    status_code: Option<u16>,
    error: Option<&str>,
    duration: Duration,
    outcome: &str,
) -> Result<Option<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(
        "WITH attempt AS (
            INSERT INTO webhook_attempts (delivery_id, status_code, error, duration_ms)
            SELECT $1, $2, $3, $4 WHERE EXISTS
                (SELECT 1 FROM webhook_deliveries WHERE id = $1 AND status = 'PENDING'))
         UPDATE webhook_deliveries SET attempts = attempts + 1, last_status_code = $2,
                last_error = $3, status = $5,
                delivered_at = CASE WHEN $5 = 'DELIVERED' THEN now() END, updated_at = now()
         WHERE id = $1 AND status = 'PENDING' RETURNING *",
    )
    .bind(id)
    .bind(status_code.map(i32::from))
    .bind(error)
    .bind(duration.as_millis().min(i32::MAX as u128) as i32)
    .bind(outcome)
    .fetch_optional(db)
    .await
}

/// Inserts a delivery of a tenant that is not tied to a job (`sendTestWebhook`).
pub async fn insert_test(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    url: &str,
    message_id: &str,
    payload: &serde_json::Value,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO webhook_deliveries (tenant_id, url, message_id, event_type, payload)
         VALUES ($1, $2, $3, 'webhook.test', $4) RETURNING id",
    )
    .bind(tenant_id)
    .bind(url)
    .bind(message_id)
    .bind(payload)
    .fetch_one(db)
    .await
}

/// The tenant whose message `message_id` is, if autos sent it.
pub async fn tenant_of_message(
    db: impl PgExecutor<'_>,
    message_id: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT tenant_id FROM webhook_deliveries WHERE message_id = $1")
        .bind(message_id)
        .fetch_optional(db)
        .await
}

/// The stored value of a setting, storing `make()` first if there is none (race-free).
pub async fn setting_or_insert(
    pool: &PgPool,
    key: &str,
    make: impl FnOnce() -> String,
) -> Result<(String, bool), sqlx::Error> {
    let candidate = make();
    let inserted: Option<String> = sqlx::query_scalar(
        "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING
         RETURNING value",
    )
    .bind(key)
    .bind(&candidate)
    .fetch_optional(pool)
    .await?;
    if let Some(value) = inserted {
        return Ok((value, true));
    }
    let value = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_one(pool)
        .await?;
    Ok((value, false))
}

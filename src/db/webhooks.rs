//! Webhook deliveries, their attempts, and stored settings.

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgExecutor, PgPool};
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

/// The columns of a [`DeliveryRow`]: all but the body, which a job of 100,000 documents makes
/// tens of megabytes long and which only a sending attempt reads ([`body`]).
const DELIVERY_COLUMNS: &str = "id, job_id, tenant_id, url, message_id, event_type, status, \
                                attempts, last_status_code, last_error, delivered_at";

/// A delivery by id.
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// A URL of a job and its newest delivery, if any (`DownloadJob.webhooks`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobWebhook {
    /// The job.
    pub job_id: Uuid,
    /// The URL.
    pub url: String,
    /// Whether it is the creator's (`download_jobs.webhook_url`).
    pub creator: bool,
    /// PENDING, DELIVERED or FAILED; none before the job ends.
    pub status: Option<String>,
    /// Attempts of the newest delivery.
    pub attempts: Option<i32>,
    /// Status code of its last answer.
    pub last_status_code: Option<i32>,
    /// Its last failure.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Every URL of each job — the creator's first, then the others in the order they came — with
/// its newest delivery, in one statement.
pub async fn by_jobs(
    db: impl PgExecutor<'_>,
    job_ids: &[Uuid],
) -> Result<Vec<JobWebhook>, sqlx::Error> {
    sqlx::query_as(
        "WITH urls AS (
            SELECT j.id AS job_id, j.webhook_url AS url, true AS creator, j.created_at AS added
            FROM download_jobs j WHERE j.id = ANY($1) AND j.webhook_url IS NOT NULL
            UNION ALL
            SELECT w.job_id, w.url, false, w.created_at FROM job_webhooks w
            WHERE w.job_id = ANY($1))
         SELECT u.job_id, u.url, u.creator, d.status, d.attempts, d.last_status_code,
                d.last_error, d.delivered_at
         FROM urls u LEFT JOIN LATERAL (
            SELECT * FROM webhook_deliveries d WHERE d.job_id = u.job_id AND d.url = u.url
            ORDER BY d.created_at DESC, d.id DESC LIMIT 1) d ON true
         ORDER BY u.job_id, u.creator DESC, u.added, u.url",
    )
    .bind(job_ids)
    .fetch_all(db)
    .await
}

/// What [`add_job_url`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The job had this URL already: nothing.
    Known,
    /// Added: called when the job ends.
    Added,
    /// Added to a job that had ended: a delivery of its ending was queued now.
    Delivering,
    /// Not added: the job has [`MAX_URLS_PER_JOB`] URLs already.
    Full,
}

/// Webhook URLs a job may have, its creator's included: each is a delivery (and a request
/// out) when the job ends.
pub const MAX_URLS_PER_JOB: i64 = 20;

/// Adds `url` to the webhooks of the job `job_id`, once per URL; if the job has ended, queues
/// a delivery of its ending to it now. The job's row is held meanwhile, so the transaction
/// that ends the job either sees the URL (its trigger delivers to it) or has committed before
/// (the job is seen ended here). Returns the job as it is and what was done.
pub async fn add_job_url(
    pool: &PgPool,
    job_id: Uuid,
    url: &str,
) -> Result<(super::JobRow, Added), super::DbError> {
    let mut tx = pool.begin().await?;
    // Held against the job's end and against other callers adding URLs (the count below).
    let job: super::JobRow = sqlx::query_as("SELECT * FROM download_jobs WHERE id = $1 FOR UPDATE")
        .bind(job_id)
        .fetch_one(&mut *tx)
        .await?;
    if job.webhook_url.as_deref() == Some(url) {
        return Ok((job, Added::Known));
    }
    let known: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM job_webhooks WHERE job_id = $1 AND url = $2)",
    )
    .bind(job_id)
    .bind(url)
    .fetch_one(&mut *tx)
    .await?;
    if known {
        return Ok((job, Added::Known));
    }
    let others: i64 = sqlx::query_scalar("SELECT count(*) FROM job_webhooks WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(&mut *tx)
        .await?;
    if others + i64::from(job.webhook_url.is_some()) >= MAX_URLS_PER_JOB {
        return Ok((job, Added::Full));
    }
    let inserted = sqlx::query(
        "INSERT INTO job_webhooks (job_id, url) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(job_id)
    .bind(url)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok((job, Added::Known));
    }
    let added = if job.status()?.is_terminal() {
        sqlx::query(
            "SELECT autos_enqueue_job_delivery(j, $2) FROM download_jobs j WHERE j.id = $1",
        )
        .bind(job_id)
        .bind(url)
        .execute(&mut *tx)
        .await?;
        Added::Delivering
    } else {
        Added::Added
    };
    tx.commit().await?;
    Ok((job, added))
}

/// The body of a delivery as every attempt sends it, once fixed (see [`fix_body`]): the text
/// of a job's message, or a test message (and those written before bodies were kept as
/// text) serialized as before.
pub async fn body(pool: &PgPool, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let row: Result<Option<(Option<String>, Option<serde_json::Value>)>, _> =
        sqlx::query_as("SELECT body, payload FROM webhook_deliveries WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await;
    // A job's body can be tens of megabytes: the connection does not keep a buffer its size.
    conn.shrink_buffers();
    Ok(match row? {
        Some((Some(body), _)) => Some(body),
        Some((None, Some(payload))) => Some(payload.to_string()),
        _ => None,
    })
}

/// Fixes the body of a delivery at its first attempt; returns the body to send: `body`, or an
/// earlier one if another worker fixed it first.
pub async fn fix_body(pool: &PgPool, id: Uuid, body: String) -> Result<String, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let fixed = sqlx::query(
        "UPDATE webhook_deliveries SET body = $2, updated_at = now()
         WHERE id = $1 AND body IS NULL AND payload IS NULL",
    )
    .bind(id)
    .bind(&body)
    .execute(&mut *conn)
    .await;
    conn.shrink_buffers();
    drop(conn);
    if fixed?.rows_affected() == 1 {
        return Ok(body);
    }
    self::body(pool, id).await?.ok_or(sqlx::Error::RowNotFound)
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
    sqlx::query_as(&format!(
        "WITH attempt AS (
            INSERT INTO webhook_attempts (delivery_id, status_code, error, duration_ms)
            SELECT $1, $2, $3, $4 WHERE EXISTS
                (SELECT 1 FROM webhook_deliveries WHERE id = $1 AND status = 'PENDING'))
         UPDATE webhook_deliveries SET attempts = attempts + 1, last_status_code = $2,
                last_error = $3, status = $5,
                delivered_at = CASE WHEN $5 = 'DELIVERED' THEN now() END, updated_at = now()
         WHERE id = $1 AND status = 'PENDING' RETURNING {DELIVERY_COLUMNS}"
    ))
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

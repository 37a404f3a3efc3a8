//! The audit log: every mutation and key event, per tenant.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// One entry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    /// Position (newest highest).
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Whose tenant it concerns.
    pub tenant_id: Option<Uuid>,
    /// That tenant's slug.
    pub tenant: Option<String>,
    /// The key that acted (none for the command line).
    pub key_id: Option<String>,
    /// What was done (`startDownload`, `key.create`, …).
    pub action: String,
    /// What it was done to (a job id, a process number, a key id, a URL).
    pub target: Option<String>,
    /// `ok`, or the error code the caller got.
    pub outcome: String,
    /// Where the request came from (`cli` for the command line).
    pub client_addr: Option<String>,
    /// More about it (never a secret).
    pub details: Option<serde_json::Value>,
}

/// What to record.
#[derive(Debug, Clone, Default)]
pub struct NewEntry {
    /// Whose tenant it concerns.
    pub tenant_id: Option<Uuid>,
    /// The key that acted.
    pub key_id: Option<String>,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: Option<String>,
    /// `ok` or an error code.
    pub outcome: String,
    /// Where the request came from.
    pub client_addr: Option<String>,
    /// More about it.
    pub details: Option<serde_json::Value>,
}

/// Records an entry.
pub async fn record(db: impl PgExecutor<'_>, entry: &NewEntry) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, key_id, action, target, outcome, client_addr, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(entry.tenant_id)
    .bind(&entry.key_id)
    .bind(&entry.action)
    .bind(&entry.target)
    .bind(&entry.outcome)
    .bind(&entry.client_addr)
    .bind(&entry.details)
    .execute(db)
    .await?;
    Ok(())
}

/// A page of entries, newest first: of one tenant (or all), before the entry `before`, with
/// one extra row fetched to tell whether more follow.
pub async fn page(
    db: impl PgExecutor<'_>,
    tenant_id: Option<Uuid>,
    before: Option<i64>,
    first: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.*, t.slug AS tenant FROM audit_log a LEFT JOIN tenants t ON t.id = a.tenant_id
         WHERE ($1::uuid IS NULL OR a.tenant_id = $1) AND ($2::bigint IS NULL OR a.id < $2)
         ORDER BY a.id DESC LIMIT $3",
    )
    .bind(tenant_id)
    .bind(before)
    .bind(first + 1)
    .fetch_all(db)
    .await
}

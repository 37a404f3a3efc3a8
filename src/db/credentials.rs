//! Tenants' own credentials at their courts, one per tenant and source. The password is
//! stored sealed (see [`crate::domain::sealing`]); this module never sees it in the clear.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// A stored credential.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CredentialRow {
    /// Whose.
    pub tenant_id: Uuid,
    /// For which source (its name).
    pub source: String,
    /// The court user.
    pub username: String,
    /// Nonce || ciphertext of the password.
    pub sealed: Vec<u8>,
    /// The key that sealed it.
    pub key_id: String,
    /// The subject of its client certificate, when it has one.
    pub certificate_subject: Option<String>,
    /// Stored (or last replaced).
    pub created_at: DateTime<Utc>,
    /// Last presented to the court (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// The last failure the court answered when it was presented.
    pub last_error: Option<String>,
    /// When the court refused it: it is not presented again until replaced.
    pub refused_at: Option<DateTime<Utc>>,
}

/// Stores (or replaces: refusal and errors forgotten) a tenant's credential for a source.
pub async fn put(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    source: &str,
    username: &str,
    sealed: &[u8],
    key_id: &str,
    certificate_subject: Option<&str>,
) -> Result<CredentialRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO source_credentials (tenant_id, source, username, sealed, key_id,
                                         certificate_subject)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id, source) DO UPDATE
            SET username = EXCLUDED.username, sealed = EXCLUDED.sealed, key_id = EXCLUDED.key_id,
                certificate_subject = EXCLUDED.certificate_subject,
                created_at = now(), last_used_at = NULL, last_error = NULL, refused_at = NULL
         RETURNING *",
    )
    .bind(tenant_id)
    .bind(source)
    .bind(username)
    .bind(sealed)
    .bind(key_id)
    .bind(certificate_subject)
    .fetch_one(db)
    .await
}

/// Removes a tenant's credential for a source; whether there was one.
pub async fn remove(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    source: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM source_credentials WHERE tenant_id = $1 AND source = $2")
        .bind(tenant_id)
        .bind(source)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// A tenant's credentials, by source name.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
) -> Result<Vec<CredentialRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM source_credentials WHERE tenant_id = $1 ORDER BY source")
        .bind(tenant_id)
        .fetch_all(db)
        .await
}

/// A tenant's credential for a source.
pub async fn find(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    source: &str,
) -> Result<Option<CredentialRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM source_credentials WHERE tenant_id = $1 AND source = $2")
        .bind(tenant_id)
        .bind(source)
        .fetch_optional(db)
        .await
}

/// Marks the credential sealed as `sealed` refused by the court (only that version: one
/// replaced meanwhile stays good).
pub async fn refused(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    source: &str,
    sealed: &[u8],
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE source_credentials SET refused_at = now(), last_error = $4
         WHERE tenant_id = $1 AND source = $2 AND sealed = $3",
    )
    .bind(tenant_id)
    .bind(source)
    .bind(sealed)
    .bind(error)
    .execute(db)
    .await?;
    Ok(())
}

/// Notes that the credential was presented, at most once a minute.
pub async fn used(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    source: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE source_credentials SET last_used_at = now()
         WHERE tenant_id = $1 AND source = $2
           AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
    )
    .bind(tenant_id)
    .bind(source)
    .execute(db)
    .await?;
    Ok(())
}

/// Every credential sealed with a key other than `key_id` (to seal again after a rotation).
pub async fn sealed_with_other_keys(
    db: impl PgExecutor<'_>,
    key_id: &str,
) -> Result<Vec<CredentialRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM source_credentials WHERE key_id <> $1")
        .bind(key_id)
        .fetch_all(db)
        .await
}

/// Replaces the sealed password of one credential, if it is still the one read.
pub async fn reseal(
    db: impl PgExecutor<'_>,
    row: &CredentialRow,
    sealed: &[u8],
    key_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE source_credentials SET sealed = $4, key_id = $5
         WHERE tenant_id = $1 AND source = $2 AND sealed = $3",
    )
    .bind(row.tenant_id)
    .bind(&row.source)
    .bind(&row.sealed)
    .bind(sealed)
    .bind(key_id)
    .execute(db)
    .await?;
    Ok(())
}

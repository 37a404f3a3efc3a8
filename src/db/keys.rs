//! API keys: the id in the clear, the secret only as its SHA-256 (see [`crate::auth::keys`]).

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// A key row, with its tenant's slug.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    /// Key id (the `{id}` of `autos_{id}_{secret}`).
    pub id: String,
    /// Its tenant.
    pub tenant_id: Uuid,
    /// Its tenant's slug.
    pub tenant: String,
    /// A label for people.
    pub name: Option<String>,
    /// Granted scopes (`read`, `write`, `admin`).
    pub scopes: Vec<String>,
    /// SHA-256 of the secret.
    pub secret_sha256: Vec<u8>,
    /// Points per minute, when not the deployment's default.
    pub rate_limit: Option<i32>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// When it stops working by itself.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last seen in use (kept to within a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl KeyRow {
    /// Whether it works at `now`.
    pub fn usable(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

const SELECT: &str = "SELECT k.id, k.tenant_id, t.slug AS tenant, k.name, k.scopes,
        k.secret_sha256, k.rate_limit, k.created_at, k.expires_at, k.revoked_at, k.last_used_at
    FROM api_keys k JOIN tenants t ON t.id = k.tenant_id";

/// What a new key is.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    /// Key id.
    pub id: &'a str,
    /// Its tenant.
    pub tenant_id: Uuid,
    /// A label.
    pub name: Option<&'a str>,
    /// Granted scopes.
    pub scopes: &'a [&'a str],
    /// SHA-256 of the secret.
    pub secret_sha256: &'a [u8],
    /// Points per minute.
    pub rate_limit: Option<i32>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Inserts a key.
pub async fn insert(db: impl PgExecutor<'_>, key: &NewKey<'_>) -> Result<KeyRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "WITH k AS (
            INSERT INTO api_keys (id, tenant_id, name, scopes, secret_sha256, rate_limit,
                                  expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *)
         {}",
        SELECT.replace("FROM api_keys k", "FROM k")
    ))
    .bind(key.id)
    .bind(key.tenant_id)
    .bind(key.name)
    .bind(key.scopes)
    .bind(key.secret_sha256)
    .bind(key.rate_limit)
    .bind(key.expires_at)
    .fetch_one(db)
    .await
}

/// A key by id.
pub async fn find(db: impl PgExecutor<'_>, id: &str) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT} WHERE k.id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Keys, oldest first: of one tenant, or all.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: Option<Uuid>,
) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE $1::uuid IS NULL OR k.tenant_id = $1 ORDER BY k.created_at, k.id"
    ))
    .bind(tenant_id)
    .fetch_all(db)
    .await
}

/// Revokes a key (at once; a second revocation keeps the first time). `None` if unknown.
pub async fn revoke(db: impl PgExecutor<'_>, id: &str) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "WITH k AS (
            UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
            RETURNING *)
         {}",
        SELECT.replace("FROM api_keys k", "FROM k")
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Whether any key exists at all.
pub async fn any(db: impl PgExecutor<'_>) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys)")
        .fetch_one(db)
        .await
}

/// Records when keys were last used, in one statement (never moving a time backwards).
pub async fn touch(
    pool: &PgPool,
    ids: &[String],
    used_at: &[DateTime<Utc>],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys k SET last_used_at = greatest(k.last_used_at, u.at)
         FROM UNNEST($1::text[], $2::timestamptz[]) AS u(id, at) WHERE k.id = u.id",
    )
    .bind(ids)
    .bind(used_at)
    .execute(pool)
    .await?;
    Ok(())
}

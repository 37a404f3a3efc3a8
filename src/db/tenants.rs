//! Tenants: the client companies one deployment serves, each with its own keys, jobs and
//! webhook signing secret.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// The tenant everything belongs to when access control is off, and the one a fresh
/// deployment's first key is made for.
pub const DEFAULT: &str = "default";

/// A tenant row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    /// Row id.
    pub id: Uuid,
    /// Its name in URLs, keys and the command line (`acme`).
    pub slug: String,
    /// The current webhook signing secret (`whsec_…`), once generated.
    pub webhook_secret: Option<String>,
    /// The secret before the last rotation, still signing until `previous_valid_until`.
    pub previous_webhook_secret: Option<String>,
    /// Until when the previous secret signs too.
    pub previous_valid_until: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// Whether `slug` is a valid tenant name: 1 to 63 of `a-z`, `0-9` and inner `-`.
pub fn valid_slug(slug: &str) -> bool {
    let bytes = slug.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A tenant by slug.
pub async fn find_by_slug(
    db: impl PgExecutor<'_>,
    slug: &str,
) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM tenants WHERE slug = $1")
        .bind(slug)
        .fetch_optional(db)
        .await
}

/// A tenant by id.
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Tenants by id, in any order.
pub async fn find_by_ids(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<TenantRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM tenants WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(db)
        .await
}

/// The tenant `slug`, created (with `secret` as its webhook secret) if new; and whether it was.
pub async fn ensure(
    db: impl PgExecutor<'_>,
    slug: &str,
    secret: &str,
) -> Result<(TenantRow, bool), sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Ensured {
        #[sqlx(flatten)]
        tenant: TenantRow,
        inserted: bool,
    }
    // A no-op update, so that an existing row comes back too (and is locked for the caller).
    let ensured: Ensured = sqlx::query_as(
        "INSERT INTO tenants (slug, webhook_secret) VALUES ($1, $2)
         ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug
         RETURNING *, (xmax = 0) AS inserted",
    )
    .bind(slug)
    .bind(secret)
    .fetch_one(db)
    .await?;
    Ok((ensured.tenant, ensured.inserted))
}

/// Stores `secret` as the tenant's webhook secret if it has none yet; returns the secret the
/// tenant has afterwards (an earlier one, if another process stored it first).
pub async fn secret_or_store(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    secret: &str,
) -> Result<TenantRow, sqlx::Error> {
    sqlx::query_as(
        "UPDATE tenants SET webhook_secret = coalesce(webhook_secret, $2) WHERE id = $1
         RETURNING *",
    )
    .bind(tenant_id)
    .bind(secret)
    .fetch_one(db)
    .await
}

/// Makes `secret` the tenant's webhook secret; the one it replaces keeps signing until
/// `previous_valid_until`.
pub async fn rotate_secret(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    secret: &str,
    previous_valid_until: DateTime<Utc>,
) -> Result<TenantRow, sqlx::Error> {
    sqlx::query_as(
        "UPDATE tenants SET previous_webhook_secret = webhook_secret,
                previous_valid_until = CASE WHEN webhook_secret IS NULL THEN NULL ELSE $3 END,
                webhook_secret = $2
         WHERE id = $1 RETURNING *",
    )
    .bind(tenant_id)
    .bind(secret)
    .bind(previous_valid_until)
    .fetch_one(db)
    .await
}

/// Locks the tenant's row until the caller's transaction ends, so that the decisions that
/// count its jobs (its quota of active ones) are made one at a time. `NO KEY UPDATE`: rows
/// that merely reference the tenant can still be written meanwhile.
pub async fn lock(conn: &mut sqlx::PgConnection, tenant_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE")
        .bind(tenant_id)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::valid_slug;

    #[test]
    fn slugs_are_lowercase_names() {
        for good in ["default", "acme", "a", "tj-sp-2", "x0"] {
            assert!(valid_slug(good), "{good}");
        }
        for bad in ["", "-a", "a-", "Acme", "a_b", "a b", "á", &"a".repeat(64)] {
            assert!(!valid_slug(bad), "{bad}");
        }
    }
}

//! Managing keys: the same operations for the command line (`autos key …`), admin keys over
//! GraphQL, and a deployment's first start. Every change is in the audit log.

use super::audit::{self, Actor};
use super::keys::ApiKey;
use super::Scope;
use crate::db::{self, keys::KeyRow};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;

/// What a new key is to be.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// Its tenant's slug (created if new).
    pub tenant: String,
    /// Granted scopes.
    pub scopes: Vec<Scope>,
    /// A label.
    pub name: Option<String>,
    /// Days until it expires.
    pub expires_in_days: Option<u32>,
    /// Points per minute.
    pub rate_limit: Option<u32>,
}

/// Why a key cannot be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Not a tenant name.
    #[error("invalid tenant `{0}`: use 1 to 63 of a-z, 0-9 and inner -")]
    InvalidTenant(String),
    /// Scopes missing.
    #[error("a key needs at least one scope (read, write or admin)")]
    NoScopes,
    /// A label too long, a limit out of range.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Creates a key (and its tenant, if new), recording it in the audit log as done by `actor`.
/// The returned key is the only time its secret is known.
pub async fn create_key(
    pool: &PgPool,
    spec: &KeySpec,
    actor: &Actor,
) -> Result<(ApiKey, KeyRow), AdminError> {
    let tenant = spec.tenant.trim();
    if !db::tenants::valid_slug(tenant) {
        return Err(AdminError::InvalidTenant(spec.tenant.clone()));
    }
    if spec.scopes.is_empty() {
        return Err(AdminError::NoScopes);
    }
    let name = spec
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.chars().count() > 200 || n.chars().any(char::is_control)) {
        return Err(AdminError::Invalid(
            "a key's name is at most 200 printable characters".into(),
        ));
    }
    let rate_limit = spec
        .rate_limit
        .map(|r| i32::try_from(r).ok().filter(|r| *r > 0))
        .map(|r| r.ok_or_else(|| AdminError::Invalid("the rate limit is out of range".into())))
        .transpose()?;
    let expires_at: Option<DateTime<Utc>> = spec
        .expires_in_days
        .map(|days| Utc::now() + chrono::Duration::days(days.into()));
    let key = ApiKey::generate();
    let scopes: Vec<&str> = spec.scopes.iter().map(|s| s.as_str()).collect();
    let mut tx = pool.begin().await?;
    let secret = crate::webhook::Secret::generate().to_string();
    let (tenant_row, new_tenant) = db::tenants::ensure(&mut *tx, tenant, &secret).await?;
    let row = db::keys::insert(
        &mut *tx,
        &db::keys::NewKey {
            id: key.id(),
            tenant_id: tenant_row.id,
            name,
            scopes: &scopes,
            secret_sha256: &key.secret_hash(),
            rate_limit,
            expires_at,
        },
    )
    .await?;
    let details = json!({
        "tenant": tenant_row.slug, "scopes": scopes, "name": name,
        "expiresAt": expires_at, "rateLimit": rate_limit, "newTenant": new_tenant,
    });
    audit::record(
        &mut *tx,
        &audit::key_entry(actor, audit::KEY_CREATE, key.id(), tenant_row.id, details),
    )
    .await;
    tx.commit().await?;
    tracing::info!(key = key.id(), tenant = %tenant_row.slug, scopes = ?scopes, "API key created");
    Ok((key, row))
}

/// Revokes a key at once (everywhere: see the authenticator), recording it in the audit log.
/// `None` if there is no such key.
pub async fn revoke_key(
    pool: &PgPool,
    id: &str,
    actor: &Actor,
) -> Result<Option<KeyRow>, AdminError> {
    let mut tx = pool.begin().await?;
    let Some(row) = db::keys::revoke(&mut *tx, id.trim()).await? else {
        return Ok(None);
    };
    let details = json!({ "tenant": row.tenant, "revokedAt": row.revoked_at });
    audit::record(
        &mut *tx,
        &audit::key_entry(actor, audit::KEY_REVOKE, &row.id, row.tenant_id, details),
    )
    .await;
    tx.commit().await?;
    tracing::info!(key = %row.id, tenant = %row.tenant, "API key revoked");
    Ok(Some(row))
}

/// On a deployment with no key at all, creates the tenant `default` with an admin key and
/// returns it; `None` when keys exist. Safe when several processes start at once: one of
/// them makes the key.
pub async fn first_key(pool: &PgPool) -> Result<Option<ApiKey>, AdminError> {
    let mut tx = pool.begin().await?;
    // Serializes first starts; readers of the table are not blocked.
    sqlx::query("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    if db::keys::any(&mut *tx).await? {
        return Ok(None);
    }
    let key = ApiKey::generate();
    let secret = crate::webhook::Secret::generate().to_string();
    let (tenant, _) = db::tenants::ensure(&mut *tx, db::tenants::DEFAULT, &secret).await?;
    db::keys::insert(
        &mut *tx,
        &db::keys::NewKey {
            id: key.id(),
            tenant_id: tenant.id,
            name: Some("first start"),
            scopes: &[Scope::Admin.as_str()],
            secret_sha256: &key.secret_hash(),
            rate_limit: None,
            expires_at: None,
        },
    )
    .await?;
    let actor = Actor {
        client_addr: Some("first start".into()),
        ..Actor::default()
    };
    let details = json!({ "tenant": tenant.slug, "scopes": ["admin"], "name": "first start" });
    audit::record(
        &mut *tx,
        &audit::key_entry(&actor, audit::KEY_CREATE, key.id(), tenant.id, details),
    )
    .await;
    tx.commit().await?;
    Ok(Some(key))
}

//! GraphQL types of access control: the caller (`viewer`), API keys, progress tokens, webhook
//! secret rotation, and the audit log.

use super::access::{principal, Access};
use super::errors::{client_error, code, internal};
use crate::auth::policy::Operation;
use crate::auth::Principal;
use crate::db::{audit::AuditRow, keys::KeyRow};
use crate::jobs::Services;
use async_graphql::{Context, InputObject, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};

/// Who is calling.
pub struct Viewer(pub Principal);

#[Object(guard = "Access(Operation::Object(\"Viewer\"))")]
impl Viewer {
    /// The caller's tenant.
    async fn tenant(&self) -> &str {
        &self.0.tenant
    }
    /// The caller's key id (for a progress token, the key that issued it; none when access
    /// control is off).
    async fn key_id(&self) -> Option<&str> {
        self.0.key_id()
    }
    /// The key's scopes, as granted: `read`, `write`, `admin`.
    async fn scopes(&self) -> Vec<&'static str> {
        self.0.scopes.iter().map(|s| s.as_str()).collect()
    }
    /// The tenant's webhook signing secret (`whsec_…`, Standard Webhooks), to verify what
    /// autos sends. Needs the write scope.
    async fn webhook_secret(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        let svc = ctx.data_unchecked::<Services>();
        let secret =
            crate::jobs::webhook::current_secret(&svc.pool, &svc.webhooks, self.0.tenant_id)
                .await
                .map_err(internal)?;
        Ok(Some(secret.to_string()))
    }
}

/// An API key (never its secret).
pub struct ApiKey(pub KeyRow);

#[Object]
impl ApiKey {
    /// Key id: the `{id}` of `autos_{id}_{secret}`.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// Its tenant.
    async fn tenant(&self) -> &str {
        &self.0.tenant
    }
    /// A label.
    async fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }
    /// Granted scopes.
    async fn scopes(&self) -> &[String] {
        &self.0.scopes
    }
    /// Points per minute, when not the deployment's default.
    async fn rate_limit(&self) -> Option<i32> {
        self.0.rate_limit
    }
    /// Created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Last seen in use (to within a minute).
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_used_at
    }
    /// When it stops working by itself.
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at
    }
    /// When it was revoked.
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }
}

/// Input of `createApiKey`.
#[derive(InputObject)]
pub struct CreateApiKeyInput {
    /// The tenant (created if new): 1 to 63 of `a-z`, `0-9` and inner `-`.
    pub tenant: String,
    /// Scopes: `read`, `write`, `admin` (default `write`).
    pub scopes: Option<Vec<String>>,
    /// A label for people.
    pub name: Option<String>,
    /// Days until it stops working by itself.
    pub expires_in_days: Option<i32>,
    /// Points per minute, instead of the deployment's default.
    pub rate_limit: Option<i32>,
}

/// A new key: `key` is its full text, shown this once.
#[derive(SimpleObject)]
pub struct CreatedApiKey {
    /// `autos_{id}_{secret}`: give it to its user now; it cannot be shown again.
    pub key: String,
    /// The key.
    pub api_key: ApiKey,
}

/// A progress token: give it to a browser to show one job.
#[derive(SimpleObject)]
pub struct ProgressToken {
    /// `apt_…`, a bearer token good for `job` and `jobProgress` of that one job.
    pub token: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// The result of `rotateWebhookSecret`.
#[derive(SimpleObject)]
pub struct WebhookSecretRotation {
    /// The new secret (`whsec_…`).
    pub secret: String,
    /// Until when messages are also signed with the previous secret (none if there was none).
    pub previous_valid_until: Option<DateTime<Utc>>,
}

/// One entry of the audit log.
pub struct AuditEntry(pub AuditRow);

#[Object]
impl AuditEntry {
    /// When.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// The tenant it concerns.
    async fn tenant(&self) -> Option<&str> {
        self.0.tenant.as_deref()
    }
    /// The key that acted (none for the command line).
    async fn key_id(&self) -> Option<&str> {
        self.0.key_id.as_deref()
    }
    /// What was done: a mutation's name, or `key.create`, `key.revoke`.
    async fn action(&self) -> &str {
        &self.0.action
    }
    /// What it was done to: a job id, a process number, a key id, a URL.
    async fn target(&self) -> Option<&str> {
        self.0.target.as_deref()
    }
    /// `ok`, or the error code the caller got.
    async fn outcome(&self) -> &str {
        &self.0.outcome
    }
    /// Where the request came from (`cli` for the command line).
    async fn client_address(&self) -> Option<&str> {
        self.0.client_addr.as_deref()
    }
    /// More about it, as JSON (never a secret).
    async fn details(&self) -> Option<String> {
        self.0.details.as_ref().map(|d| d.to_string())
    }
}

/// The tenant a request names (admin keys), or the caller's own.
pub async fn tenant_filter(ctx: &Context<'_>, tenant: Option<&str>) -> Result<Option<uuid::Uuid>> {
    let who = principal(ctx)?;
    match tenant.map(str::trim) {
        None if who.all_tenants() => Ok(None),
        None => Ok(Some(who.tenant_id)),
        Some(slug) if slug == who.tenant => Ok(Some(who.tenant_id)),
        Some(slug) => {
            let svc = ctx.data_unchecked::<Services>();
            let found = crate::db::tenants::find_by_slug(&svc.pool, slug)
                .await
                .map_err(|e| internal(e.into()))?;
            // Only admin keys get this far (see the policy); an unknown tenant has nothing.
            found.map(|t| Some(t.id)).ok_or_else(|| {
                client_error(code::BAD_REQUEST, format!("there is no tenant `{slug}`"))
            })
        }
    }
}

//! Mutations.

use super::access::{principal, Access};
use super::admin::{
    ApiKey, CreateApiKeyInput, CreatedApiKey, ProgressToken, WebhookSecretRotation,
};
use super::credentials::{SetSourceCredentialInput, SourceCredential};
use super::errors::{client_error, code, internal, job_error, load_error};
use super::loaders::Loaders;
use super::types::DownloadJob;
use crate::auth::admin::{self, AdminError, KeySpec};
use crate::auth::audit::Actor;
use crate::auth::policy::Operation;
use crate::auth::{Authenticator, ClientAddr, Scope};
use crate::jobs::{self, Services, StartDownload};
use async_graphql::{Context, InputObject, Object, Result, SimpleObject, ID};
use std::time::Duration;

/// Input of `startDownload`.
#[derive(InputObject)]
pub struct StartDownloadInput {
    /// CNJ number, formatted or 20 digits.
    pub number: String,
    /// Called with presigned links to every document when the job ends.
    pub webhook_url: Option<String>,
    /// Re-read the source and transfer what changed even if a completed job exists.
    #[graphql(default = false)]
    pub force: bool,
}

/// Result of `startDownload`.
#[derive(SimpleObject)]
pub struct StartDownloadPayload {
    /// The job: new, or the existing one that makes a new one unnecessary.
    pub job: DownloadJob,
    /// Whether this call created it.
    pub created: bool,
}

/// Whether a webhook URL would be accepted.
#[derive(SimpleObject)]
pub struct WebhookValidation {
    /// The URL as given.
    pub url: String,
    /// Whether autos would send to it.
    pub valid: bool,
    /// Why not, when it would not.
    pub reason: Option<String>,
}

/// The result of `sendTestWebhook`.
#[derive(SimpleObject)]
pub struct WebhookDelivery {
    /// The URL as given.
    pub url: String,
    /// A 2xx answer came.
    pub delivered: bool,
    /// Status code of the answer.
    pub status_code: Option<i32>,
    /// Attempts made.
    pub attempts: i32,
    /// What went wrong.
    pub error: Option<String>,
}

/// The root mutation.
pub struct Mutation;

fn admin_error(err: AdminError) -> async_graphql::Error {
    match err {
        AdminError::Sql(err) => internal(err.into()),
        other => client_error(code::BAD_REQUEST, other.to_string()),
    }
}

fn actor(ctx: &Context<'_>) -> Result<Actor> {
    let client = ctx.data_opt::<ClientAddr>().map(|c| c.0.clone());
    Ok(Actor::of(principal(ctx)?, client))
}

#[Object(guard = "Access(Operation::Mutation)")]
impl Mutation {
    /// Starts downloading every document of a process. Idempotent: while the process has a
    /// QUEUED or RUNNING job, or a COMPLETED one (unless `force`), that job is returned with
    /// `created: false`.
    async fn start_download(
        &self,
        ctx: &Context<'_>,
        input: StartDownloadInput,
    ) -> Result<StartDownloadPayload> {
        let svc = ctx.data_unchecked::<Services>();
        let tenant = principal(ctx)?.tenant_id;
        let (job, created) = jobs::start_download(
            svc,
            tenant,
            StartDownload {
                number: input.number,
                webhook_url: input.webhook_url,
                force: input.force,
            },
        )
        .await
        .map_err(job_error)?;
        Ok(StartDownloadPayload {
            job: DownloadJob(job),
            created,
        })
    }

    /// Cancels a QUEUED or RUNNING job: no further transfer starts, and transfers under way
    /// stop — except those another tenant's active job also wants, which go on for it.
    async fn cancel_job(&self, ctx: &Context<'_>, id: ID) -> Result<DownloadJob> {
        let svc = ctx.data_unchecked::<Services>();
        let visibility = principal(ctx)?.visibility();
        Ok(DownloadJob(
            jobs::cancel(svc, visibility, &id)
                .await
                .map_err(job_error)?,
        ))
    }

    /// Says whether autos would send webhooks to `url`, and why not: scheme http or https, at
    /// most 2,048 bytes, the host on the allowlist (`AUTOS_WEBHOOK_ALLOWED_HOSTS`), and every
    /// address the host resolves to public unless `AUTOS_WEBHOOK_ALLOW_PRIVATE=true`.
    async fn validate_webhook(&self, ctx: &Context<'_>, url: String) -> WebhookValidation {
        let svc = ctx.data_unchecked::<Services>();
        let reason = svc.check_webhook_target(url.trim()).await.err();
        WebhookValidation {
            valid: reason.is_none(),
            reason: reason.map(|r| r.reason()),
            url,
        }
    }

    /// Sends a signed `webhook.test` event to `url` once, now, and reports what happened.
    async fn send_test_webhook(&self, ctx: &Context<'_>, url: String) -> Result<WebhookDelivery> {
        let svc = ctx.data_unchecked::<Services>();
        let tenant = principal(ctx)?.tenant_id;
        let (attempts, sent) = crate::jobs::webhook::send_test(svc, tenant, url.trim())
            .await
            .map_err(super::errors::internal)?;
        Ok(WebhookDelivery {
            url,
            delivered: sent.delivered(),
            status_code: sent.status.map(i32::from),
            attempts,
            error: sent.error,
        })
    }

    /// Re-queues the failed documents of a job that ended COMPLETED_WITH_ERRORS or FAILED.
    async fn retry_failed_documents(&self, ctx: &Context<'_>, job_id: ID) -> Result<DownloadJob> {
        let svc = ctx.data_unchecked::<Services>();
        let visibility = principal(ctx)?.visibility();
        Ok(DownloadJob(
            jobs::retry_failed(svc, visibility, &job_id)
                .await
                .map_err(job_error)?,
        ))
    }

    /// A short-lived bearer token for a browser, good for `job(id)` and `jobProgress(jobId)`
    /// of this one job only (over HTTP and WebSocket), for `ttlSeconds` (at most 24 hours).
    /// A frontend's backend asks for it with its key and hands it to the browser, which then
    /// never sees the key. It stops working when the key that made it is revoked.
    async fn create_progress_token(
        &self,
        ctx: &Context<'_>,
        job_id: ID,
        #[graphql(desc = "Lifetime in seconds, 1 to 86,400 (default 3,600).")] ttl_seconds: Option<
            i32,
        >,
    ) -> Result<ProgressToken> {
        let ttl_seconds = ttl_seconds.unwrap_or(3600);
        let max = crate::auth::token::MAX_TTL_SECS;
        if !(1..=max).contains(&i64::from(ttl_seconds)) {
            return Err(client_error(
                code::BAD_REQUEST,
                format!("`ttlSeconds` must be between 1 and {max}, got {ttl_seconds}"),
            ));
        }
        let who = principal(ctx)?;
        let not_found = || {
            client_error(
                code::JOB_NOT_FOUND,
                format!("job {} was not found", *job_id),
            )
        };
        let id = uuid::Uuid::parse_str(job_id.trim()).map_err(|_| not_found())?;
        let job = ctx
            .data_unchecked::<Loaders>()
            .job
            .load_one(id)
            .await
            .map_err(load_error)?
            .ok_or_else(not_found)?;
        let issuer = who.key_id().ok_or_else(|| {
            client_error(
                code::BAD_REQUEST,
                "progress tokens are issued by keys; access control is off",
            )
        })?;
        let auth = ctx.data_unchecked::<Authenticator>();
        let ttl = Duration::from_secs(ttl_seconds as u64);
        let (token, expires_at) = auth.issue_token(job.id, job.tenant_id, issuer, ttl);
        Ok(ProgressToken { token, expires_at })
    }

    /// Gives the caller's tenant a new webhook signing secret. For 24 hours messages carry
    /// signatures by both the new and the previous secret, so receivers switch without
    /// losing a message.
    async fn rotate_webhook_secret(&self, ctx: &Context<'_>) -> Result<WebhookSecretRotation> {
        let svc = ctx.data_unchecked::<Services>();
        let tenant = principal(ctx)?.tenant_id;
        let (secret, until) = crate::jobs::webhook::rotate_secret(&svc.pool, &svc.webhooks, tenant)
            .await
            .map_err(|err| match err {
                jobs::webhook::RotationError::Configured => {
                    client_error(code::INVALID_STATE, err.to_string())
                }
                jobs::webhook::RotationError::Internal(err) => internal(err),
            })?;
        Ok(WebhookSecretRotation {
            secret: secret.to_string(),
            previous_valid_until: until,
        })
    }

    /// Creates an API key (admin keys only), and its tenant if new. The key's full text is in
    /// the answer, this once.
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        input: CreateApiKeyInput,
    ) -> Result<CreatedApiKey> {
        let scopes = match &input.scopes {
            Some(names) => Scope::parse_list(&names.join(","))
                .map_err(|e| client_error(code::BAD_REQUEST, e))?,
            None => vec![Scope::Write],
        };
        let positive = |value: Option<i32>, what: &str| {
            value
                .map(|v| {
                    u32::try_from(v).ok().filter(|v| *v > 0).ok_or_else(|| {
                        client_error(code::BAD_REQUEST, format!("`{what}` must be positive"))
                    })
                })
                .transpose()
        };
        let spec = KeySpec {
            tenant: input.tenant,
            scopes,
            name: input.name,
            expires_in_days: positive(input.expires_in_days, "expiresInDays")?,
            rate_limit: positive(input.rate_limit, "rateLimit")?,
        };
        let svc = ctx.data_unchecked::<Services>();
        let (key, row) = admin::create_key(&svc.pool, &spec, &actor(ctx)?)
            .await
            .map_err(admin_error)?;
        Ok(CreatedApiKey {
            key: key.reveal(),
            api_key: ApiKey(row),
        })
    }

    /// Revokes an API key (admin keys only): it stops working at once, on every process, and
    /// its WebSocket connections are closed.
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> Result<ApiKey> {
        let svc = ctx.data_unchecked::<Services>();
        let row = admin::revoke_key(&svc.pool, &id, &actor(ctx)?)
            .await
            .map_err(admin_error)?
            .ok_or_else(|| client_error(code::BAD_REQUEST, format!("there is no key {}", *id)))?;
        // This process need not wait for the announcement to reach it.
        ctx.data_unchecked::<Authenticator>().changed(&row.id).await;
        Ok(ApiKey(row))
    }

    /// Stores (or replaces) the caller's tenant's credential for a court source. The tenant's
    /// jobs present it there instead of the source's configured one; a credential the court
    /// refuses is not presented again until replaced here.
    async fn set_source_credential(
        &self,
        ctx: &Context<'_>,
        input: SetSourceCredentialInput,
    ) -> Result<SourceCredential> {
        let svc = ctx.data_unchecked::<Services>();
        let tenant = principal(ctx)?.tenant_id;
        let row = jobs::credentials::set(
            svc,
            tenant,
            jobs::credentials::NewCredential {
                source: input.source,
                username: input.username,
                password: input.password,
                certificate_pkcs12_base64: input.certificate_pkcs12_base64,
                certificate_password: input.certificate_password,
            },
        )
        .await
        .map_err(job_error)?;
        Ok(SourceCredential(row))
    }

    /// Removes the caller's tenant's credential for a source; whether there was one.
    async fn remove_source_credential(&self, ctx: &Context<'_>, source: String) -> Result<bool> {
        let svc = ctx.data_unchecked::<Services>();
        let tenant = principal(ctx)?.tenant_id;
        jobs::credentials::remove(svc, tenant, &source)
            .await
            .map_err(job_error)
    }
}

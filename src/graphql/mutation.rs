//! Mutations.

use super::errors::job_error;
use super::types::DownloadJob;
use crate::jobs::{self, Services, StartDownload};
use async_graphql::{Context, InputObject, Object, Result, SimpleObject, ID};

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

#[Object]
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
        let (job, created) = jobs::start_download(
            svc,
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

    /// Cancels a QUEUED or RUNNING job: no further transfer starts, and transfers under way stop.
    async fn cancel_job(&self, ctx: &Context<'_>, id: ID) -> Result<DownloadJob> {
        let svc = ctx.data_unchecked::<Services>();
        Ok(DownloadJob(
            jobs::cancel(svc, &id).await.map_err(job_error)?,
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
        let (attempts, sent) = crate::jobs::webhook::send_test(svc, url.trim())
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
        Ok(DownloadJob(
            jobs::retry_failed(svc, &job_id).await.map_err(job_error)?,
        ))
    }
}

//! Webhook delivery: the queue task that sends a job's outcome to its `webhookUrl`.
//!
//! A delivery row and its first task are written by the database in the transaction that
//! makes the job terminal (see the migrations), so no ending is ever lost. Each attempt is
//! recorded; failures are retried with exponential backoff and jitter (or the receiver's
//! `Retry-After`) up to the configured number of attempts; 410 stops at once. A webhook
//! failure never changes the job.

use super::{download::retry_delay, Services};
use crate::db::{self, webhooks::DeliveryRow};
use crate::webhook::{send, Secret};
use async_trait::async_trait;
use chrono::Utc;
use fang::{AsyncQueueable, AsyncRunnable, FangError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// Task type of webhook deliveries.
pub const WEBHOOK_TASK: &str = "webhook";

/// How webhooks are sent.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `AUTOS_WEBHOOK_SECRET`: the secret of the tenant `default`, when set.
    pub default_secret: Option<Secret>,
    /// Attempts in all.
    pub max_attempts: u32,
    /// First retry delay; grows exponentially.
    pub backoff: Duration,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

/// Sends (one attempt of) a delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliverWebhook {
    /// The delivery.
    pub delivery_id: Uuid,
}

#[typetag::serde]
#[async_trait]
impl AsyncRunnable for DeliverWebhook {
    async fn run(&self, _queue: &dyn AsyncQueueable) -> Result<(), FangError> {
        let svc = crate::queue::worker::context::<Services>().ok_or_else(|| FangError {
            description: "webhook task run outside an autos worker".into(),
        })?;
        attempt(&svc, self.delivery_id)
            .await
            .map_err(|err| FangError {
                description: format!("webhook delivery {}: {err:#}", self.delivery_id),
            })
    }

    fn task_type(&self) -> String {
        WEBHOOK_TASK.to_string()
    }

    fn max_retries(&self) -> i32 {
        5
    }
}

/// Adds `url` (checked by the caller) to the webhooks of `job`, an existing job of the
/// caller's tenant answered to a `startDownload` that brought it: the URL gets a delivery of
/// its own (own `webhook-id`, attempts, status) when the job ends — at once if the job has
/// ended already, since there is no later ending to wait for. Once per URL: a URL the job has
/// (the creator's too) is not added, nor delivered to, again. Returns the job as it is now.
pub async fn attach(
    svc: &Services,
    job: db::JobRow,
    url: Option<&str>,
) -> Result<db::JobRow, super::JobError> {
    let Some(url) = url else {
        return Ok(job);
    };
    let (job, added) = db::webhooks::add_job_url(&svc.pool, job.id, url).await?;
    if added == db::webhooks::Added::Full {
        return Err(super::JobError::TooManyWebhooks {
            limit: db::webhooks::MAX_URLS_PER_JOB,
        });
    }
    if added != db::webhooks::Added::Known {
        tracing::info!(job = %job.id, ?added, "webhook URL added to an existing job");
    }
    Ok(job)
}

/// Documents read (and their links signed) at a time while a job's webhook body is written.
const BODY_PAGE: i32 = 1000;

/// One document in a job's webhook (contract §6).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DocumentEntry<'a> {
    id: Uuid,
    source_id: &'a str,
    name: &'a str,
    status: &'a str,
    size: Option<i64>,
    sha256: Option<&'a str>,
    mime_type: Option<&'a str>,
    download_url: Option<String>,
    download_url_expires_at: Option<chrono::DateTime<Utc>>,
    error: Option<&'a str>,
}

/// The body of a job's webhook (contract §6), with fresh download links, as JSON text.
///
/// Written as it is read: a page of the job's documents at a time, each entry serialized into
/// the body at once. A body holds ~850 bytes per document (most of it the signed link); built
/// as a tree of JSON values first, a job of 20,000 documents took 120 MiB of autos' memory for
/// its 16 MiB body.
pub async fn job_payload(svc: &Services, delivery: &DeliveryRow) -> anyhow::Result<String> {
    let job_id = delivery
        .job_id
        .ok_or_else(|| anyhow::anyhow!("delivery without a job"))?;
    let job = db::jobs::find(&svc.pool, job_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("job {job_id} is gone"))?;
    let number: String = sqlx::query_scalar("SELECT number FROM processes WHERE id = $1")
        .bind(job.process_id)
        .fetch_one(&svc.pool)
        .await?;
    let data = json!({
        "jobId": job.id, "processNumber": number, "status": job.status,
        "progress": job.progress(), "total": job.total,
        "counts": {"pending": job.pending, "processing": job.processing,
                   "available": job.available, "failed": job.failed},
        "error": job.error,
    });
    // `{"type":…,"timestamp":…,"data":{…}}`, the documents the last member of `data`.
    let mut body = br#"{"type":"#.to_vec();
    serde_json::to_writer(&mut body, &delivery.event_type)?;
    body.extend_from_slice(br#","timestamp":"#);
    serde_json::to_writer(&mut body, &Utc::now())?;
    body.extend_from_slice(br#","data":"#);
    serde_json::to_writer(&mut body, &data)?;
    // The object's closing brace makes way for the documents.
    body.pop();
    body.extend_from_slice(br#","documents":["#);
    let mut after = None;
    let mut first = true;
    loop {
        let key = db::documents::PageKey {
            owner: job_id,
            first: BODY_PAGE,
            after,
        };
        let page = db::documents::pages(&svc.pool, db::documents::PageOf::Job, &[key])
            .await?
            .remove(&key)
            .unwrap_or_default();
        for doc in &page.rows {
            let link = svc.download_link(doc).await?;
            let (download_url, download_url_expires_at) = match link {
                Some(url) => (Some(url.url), Some(url.expires_at)),
                None => (None, None),
            };
            if !first {
                body.push(b',');
            }
            first = false;
            serde_json::to_writer(
                &mut body,
                &DocumentEntry {
                    id: doc.id,
                    source_id: &doc.source_id,
                    name: &doc.name,
                    status: &doc.status,
                    size: doc.stored_size.or(doc.size),
                    sha256: doc.stored_sha256.as_deref().or(doc.sha256.as_deref()),
                    mime_type: doc
                        .mime_type
                        .as_deref()
                        .or(doc.stored_content_type.as_deref()),
                    download_url,
                    download_url_expires_at,
                    error: if doc.status == "FAILED" {
                        doc.last_error.as_deref()
                    } else {
                        None
                    },
                },
            )?;
        }
        match page.rows.last() {
            Some(last) if page.rows.len() == BODY_PAGE as usize => after = Some(last.id),
            _ => break,
        }
    }
    body.extend_from_slice(b"]}}");
    Ok(String::from_utf8(body)?)
}

/// One attempt of a delivery: checks the target again, sends, records, and schedules the next
/// attempt when there is one to make.
async fn attempt(svc: &Services, delivery_id: Uuid) -> anyhow::Result<()> {
    let Some(delivery) = db::webhooks::find(&svc.pool, delivery_id).await? else {
        return Ok(());
    };
    if delivery.status != "PENDING" {
        return Ok(());
    }
    let body = match db::webhooks::body(&svc.pool, delivery_id).await? {
        Some(body) => body,
        None => {
            let built = job_payload(svc, &delivery).await?;
            db::webhooks::fix_body(&svc.pool, delivery_id, built).await?
        }
    };
    let body = bytes::Bytes::from(body);
    let webhooks = &svc.webhooks;
    let mut refused_for_good = false;
    let result = match svc.check_webhook_target(&delivery.url).await {
        Ok(target) => {
            let secrets = signing_secrets(&svc.pool, webhooks, delivery.tenant_id).await?;
            send::post(
                &target,
                &secrets,
                &delivery.message_id,
                body,
                webhooks.timeout,
            )
            .await
        }
        // The target is checked again at send time; one that turned private is refused,
        // for good (a name that does not resolve now may resolve later).
        Err(refusal) => {
            refused_for_good = !matches!(refusal, crate::webhook::Refusal::Unresolvable { .. });
            send::Attempt {
                status: None,
                error: Some(refusal.reason()),
                retry_after: None,
                duration: Duration::ZERO,
            }
        }
    };
    let attempts = delivery.attempts + 1;
    let give_up = result.gone() || refused_for_good || attempts >= webhooks.max_attempts as i32;
    let outcome = if result.delivered() {
        "DELIVERED"
    } else if give_up {
        "FAILED"
    } else {
        "PENDING"
    };
    let mut tx = svc.pool.begin().await?;
    let recorded = db::webhooks::record_attempt(
        &mut *tx,
        delivery_id,
        result.status,
        result.error.as_deref(),
        result.duration,
        outcome,
    )
    .await?;
    if recorded.is_some() && outcome == "PENDING" {
        let delay = retry_delay(webhooks.backoff, attempts, result.retry_after);
        let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        crate::queue::enqueue(&mut *tx, &DeliverWebhook { delivery_id }, Some(at)).await?;
        tracing::warn!(delivery = %delivery_id, attempt = attempts, error = ?result.error, retry_in_ms = delay.as_millis() as u64, "webhook attempt failed; will retry");
    } else {
        tracing::info!(delivery = %delivery_id, attempts, outcome, status = ?result.status, "webhook delivery ended");
    }
    tx.commit().await?;
    Ok(())
}

/// Sends one signed `webhook.test` event of a tenant to `url` now, recording it like any
/// delivery. Returns the attempts made (none when the target is refused) and the last one.
pub async fn send_test(
    svc: &Services,
    tenant_id: Uuid,
    url: &str,
) -> anyhow::Result<(i32, send::Attempt)> {
    let target = match svc.check_webhook_target(url).await {
        Ok(target) => target,
        Err(refusal) => {
            let refused = send::Attempt {
                status: None,
                error: Some(refusal.reason()),
                retry_after: None,
                duration: Duration::ZERO,
            };
            return Ok((0, refused));
        }
    };
    let message_id = crate::webhook::sign::new_message_id();
    let payload = json!({
        "type": "webhook.test",
        "timestamp": Utc::now(),
        "data": {"message": "a test event from autos: signature and reachability check"},
    });
    let id = db::webhooks::insert_test(&svc.pool, tenant_id, url, &message_id, &payload).await?;
    let body = bytes::Bytes::from(serde_json::to_vec(&payload)?);
    let secrets = signing_secrets(&svc.pool, &svc.webhooks, tenant_id).await?;
    let sent = send::post(&target, &secrets, &message_id, body, svc.webhooks.timeout).await;
    let outcome = if sent.delivered() {
        "DELIVERED"
    } else {
        "FAILED"
    };
    db::webhooks::record_attempt(
        &svc.pool,
        id,
        sent.status,
        sent.error.as_deref(),
        sent.duration,
        outcome,
    )
    .await?;
    Ok((1, sent))
}

/// How long the secret a rotation replaces keeps signing.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// Why a tenant's secret cannot be rotated.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// `AUTOS_WEBHOOK_SECRET` sets it.
    #[error("the default tenant's webhook secret is set by AUTOS_WEBHOOK_SECRET; change it there")]
    Configured,
    /// Anything else.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// A tenant's row, with a webhook secret generated and stored if it had none.
async fn tenant_with_secret(
    pool: &PgPool,
    tenant_id: Uuid,
) -> anyhow::Result<db::tenants::TenantRow> {
    let tenant = db::tenants::find(pool, tenant_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("tenant {tenant_id} does not exist"))?;
    if tenant.webhook_secret.is_some() {
        return Ok(tenant);
    }
    let generated = Secret::generate().to_string();
    Ok(db::tenants::secret_or_store(pool, tenant_id, &generated).await?)
}

fn configured<'a>(
    settings: &'a WebhookSettings,
    tenant: &db::tenants::TenantRow,
) -> Option<&'a Secret> {
    settings
        .default_secret
        .as_ref()
        .filter(|_| tenant.slug == db::tenants::DEFAULT)
}

fn parse_stored(text: &str) -> anyhow::Result<Secret> {
    Secret::parse(text).map_err(|e| anyhow::anyhow!("a stored webhook secret is unusable: {e}"))
}

/// A tenant's current signing secret (`viewer.webhookSecret`, `autos webhook-secret`).
pub async fn current_secret(
    pool: &PgPool,
    settings: &WebhookSettings,
    tenant_id: Uuid,
) -> anyhow::Result<Secret> {
    let tenant = tenant_with_secret(pool, tenant_id).await?;
    if let Some(secret) = configured(settings, &tenant) {
        return Ok(secret.clone());
    }
    parse_stored(tenant.webhook_secret.as_deref().unwrap_or_default())
}

/// The secrets a tenant's messages are signed with now: its current one, and for
/// [`ROTATION_OVERLAP`] after a rotation the one it replaced.
pub async fn signing_secrets(
    pool: &PgPool,
    settings: &WebhookSettings,
    tenant_id: Uuid,
) -> anyhow::Result<Vec<Secret>> {
    let tenant = tenant_with_secret(pool, tenant_id).await?;
    if let Some(secret) = configured(settings, &tenant) {
        return Ok(vec![secret.clone()]);
    }
    let mut secrets = vec![parse_stored(
        tenant.webhook_secret.as_deref().unwrap_or_default(),
    )?];
    if let (Some(previous), Some(until)) =
        (&tenant.previous_webhook_secret, tenant.previous_valid_until)
    {
        if until > Utc::now() {
            secrets.push(parse_stored(previous)?);
        }
    }
    Ok(secrets)
}

/// Gives a tenant a new signing secret; the current one keeps signing beside it for
/// [`ROTATION_OVERLAP`]. Returns the new secret and until when the previous one signs.
pub async fn rotate_secret(
    pool: &PgPool,
    settings: &WebhookSettings,
    tenant_id: Uuid,
) -> Result<(Secret, Option<chrono::DateTime<Utc>>), RotationError> {
    let tenant = tenant_with_secret(pool, tenant_id).await?;
    if configured(settings, &tenant).is_some() {
        return Err(RotationError::Configured);
    }
    let secret = Secret::generate();
    let until = Utc::now() + chrono::Duration::from_std(ROTATION_OVERLAP).unwrap_or_default();
    let rotated = db::tenants::rotate_secret(pool, tenant_id, &secret.to_string(), until)
        .await
        .map_err(anyhow::Error::from)?;
    tracing::info!(tenant = %tenant.slug, "webhook secret rotated");
    Ok((secret, rotated.previous_valid_until))
}

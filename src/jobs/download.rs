//! The batch task: transfers a handful of documents of one job, each streamed from the source
//! to S3 with its length and SHA-256 checked on the way.
//!
//! Running a batch twice is harmless: a document is transferred only by the worker that
//! claimed it (PENDING → PROCESSING, compare-and-set), and that worker keeps the claim alive
//! with heartbeats; a second run finds nothing left to claim.

use super::{Services, DOWNLOAD_TASK};
use crate::db::documents::{self, Claim, Heartbeat, Outcome};
use crate::db::DbError;
use crate::domain::{names, ProcessNumber};
use crate::source::{self, ListedDocument, SourceError};
use crate::storage::UploadError;
use async_trait::async_trait;
use chrono::Utc;
use fang::{AsyncQueueable, AsyncRunnable, FangError};
use futures::StreamExt;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Transfers `document_ids` of `job_id`, one after the other.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DownloadBatch {
    /// The job.
    pub job_id: Uuid,
    /// Its documents in this batch.
    pub document_ids: Vec<Uuid>,
}

#[typetag::serde]
#[async_trait]
impl AsyncRunnable for DownloadBatch {
    async fn run(&self, _queue: &dyn AsyncQueueable) -> Result<(), FangError> {
        let svc = crate::queue::worker::context::<Services>().ok_or_else(|| FangError {
            description: "download task run outside an autos worker".into(),
        })?;
        let failed = |document_id: Uuid| {
            move |err: anyhow::Error| FangError {
                description: format!("document {document_id}: {err:#}"),
            }
        };
        // The database stays off the transfer path: a document's final transition is
        // written while the next one transfers (one in flight at a time, so a batch's
        // transitions keep their order), and the next document is claimed as soon as the
        // current one's last byte has arrived, while its upload completes.
        let mut settling: Option<(Uuid, JoinHandle<anyhow::Result<()>>)> = None;
        let mut ahead: Option<JoinHandle<Result<Option<Claim>, DbError>>> = None;
        for (i, &document_id) in self.document_ids.iter().enumerate() {
            let claim = match ahead.take() {
                Some(handle) => handle
                    .await
                    .map_err(|e| anyhow::anyhow!("claiming task failed: {e}"))
                    .and_then(|claim| Ok(claim?)),
                None => documents::claim(&svc.pool, document_id, self.job_id, svc.settings.lease)
                    .await
                    .map_err(anyhow::Error::from),
            }
            .map_err(failed(document_id))?;
            let next = self.document_ids.get(i + 1).map(|&id| (self.job_id, id));
            let (ended, claimed_ahead) = match claim {
                Some(claim) => attempt(&svc, claim, next).await,
                None => (Ok(None), None),
            };
            ahead = claimed_ahead;
            if let Some((previous, handle)) = settling.take() {
                join(handle).await.map_err(failed(previous))?;
            }
            if let Some((claim, outcome)) = ended.map_err(failed(document_id))? {
                let svc = svc.clone();
                let handle = tokio::spawn(async move { settle(&svc, &claim, outcome).await });
                settling = Some((document_id, handle));
            }
        }
        if let Some((previous, handle)) = settling {
            join(handle).await.map_err(failed(previous))?;
        }
        if let Some(handle) = ahead {
            // Only an error ends a batch early; give back what was claimed for it.
            if let Ok(Ok(Some(claim))) = handle.await {
                settle(&svc, &claim, Outcome::Released)
                    .await
                    .map_err(failed(claim.document.id))?;
            }
        }
        Ok(())
    }

    fn task_type(&self) -> String {
        DOWNLOAD_TASK.to_string()
    }

    // Document failures are handled per document; a task fails only when the database does.
    fn max_retries(&self) -> i32 {
        5
    }

    fn backoff(&self, attempt: u32) -> u32 {
        2u32.saturating_pow(attempt + 1)
    }
}

/// Why one attempt failed.
#[derive(Debug)]
struct AttemptError {
    message: String,
    retryable: bool,
    retry_after: Option<Duration>,
}

impl From<SourceError> for AttemptError {
    fn from(err: SourceError) -> Self {
        AttemptError {
            retryable: err.is_retryable(),
            retry_after: err.retry_after(),
            message: err.to_string(),
        }
    }
}

async fn join(handle: JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    handle
        .await
        .map_err(|e| anyhow::anyhow!("settling task failed: {e}"))?
}

/// A claim taken ahead, for the next document of the batch.
type Ahead = JoinHandle<Result<Option<Claim>, DbError>>;

/// Transfers one claimed document; returns the claim and how it ended, for the caller to
/// settle, or `None` when there is nothing left to settle (released, lost, or a retry already
/// scheduled) — and the claim of `next` if it was taken ahead. Errors are database errors
/// only: everything that can go wrong with the document itself ends in a document status.
async fn attempt(
    svc: &Services,
    claim: Claim,
    next: Option<(Uuid, Uuid)>,
) -> (anyhow::Result<Option<(Claim, Outcome)>>, Option<Ahead>) {
    let ahead: Arc<Mutex<Option<Ahead>>> = Arc::default();
    let claim_next = {
        let (pool, lease, ahead) = (svc.pool.clone(), svc.settings.lease, ahead.clone());
        move || {
            if let Some((job_id, document_id)) = next {
                let handle = tokio::spawn(async move {
                    documents::claim(&pool, document_id, job_id, lease).await
                });
                *ahead.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
            }
        }
    };
    let ended = transfer_claimed(svc, claim, claim_next).await;
    let ahead = ahead.lock().unwrap_or_else(|e| e.into_inner()).take();
    (ended, ahead)
}

async fn transfer_claimed(
    svc: &Services,
    claim: Claim,
    claim_next: impl FnOnce() + Send,
) -> anyhow::Result<Option<(Claim, Outcome)>> {
    let settings = &svc.settings;
    let document_id = claim.document.id;
    let job_id = claim.document.job_id.unwrap_or_default();
    let started = std::time::Instant::now();
    let result = {
        let attempt =
            tokio::time::timeout(settings.download_timeout, transfer(svc, &claim, claim_next));
        tokio::pin!(attempt);
        let mut beat = tokio::time::interval(settings.lease / 4);
        beat.tick().await;
        loop {
            tokio::select! {
                result = &mut attempt => break result.unwrap_or_else(|_| Err(AttemptError {
                    message: format!("transfer timed out after {} s", settings.download_timeout.as_secs()),
                    retryable: true,
                    retry_after: None,
                })),
                _ = beat.tick() => match documents::heartbeat(&svc.pool, &claim, settings.lease).await? {
                    Heartbeat::Renewed => {}
                    Heartbeat::JobCancelled => {
                        tracing::info!(document = %document_id, "job cancelled; transfer stopped");
                        settle(svc, &claim, Outcome::Released).await?;
                        return Ok(None);
                    }
                    Heartbeat::Lost => {
                        tracing::warn!(document = %document_id, "claim lost; transfer stopped");
                        return Ok(None);
                    }
                },
            }
        }
    };

    let attempts = claim.document.attempts;
    let outcome = match result {
        Ok(outcome) => {
            tracing::info!(document = %document_id, job = %job_id, ms = started.elapsed().as_millis() as u64, "document stored");
            outcome
        }
        Err(err) if err.retryable && attempts < settings.max_attempts as i32 => {
            let delay = retry_delay(settings.backoff, attempts, err.retry_after);
            let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            tracing::warn!(document = %document_id, attempt = attempts, error = %err.message, retry_in_ms = delay.as_millis() as u64, "attempt failed; will retry");
            let task = DownloadBatch {
                job_id,
                document_ids: vec![document_id],
            };
            let mut tx = svc.pool.begin().await?;
            let task_id = crate::queue::enqueue(&mut *tx, &task, Some(at)).await?;
            documents::settle(
                &mut tx,
                document_id,
                claim.token,
                &Outcome::RetryAt {
                    error: err.message,
                    at,
                    task_id,
                },
            )
            .await?;
            tx.commit().await?;
            return Ok(None);
        }
        Err(err) => {
            let error = if err.retryable {
                format!("{} (after {attempts} attempts)", err.message)
            } else {
                err.message
            };
            tracing::warn!(document = %document_id, %error, "document failed");
            Outcome::Failed { error }
        }
    };
    Ok(Some((claim, outcome)))
}

async fn settle(svc: &Services, claim: &Claim, outcome: Outcome) -> anyhow::Result<()> {
    let mut conn = svc.pool.acquire().await?;
    let job = documents::settle(&mut conn, claim.document.id, claim.token, &outcome).await?;
    if let Some(job) = job.filter(|j| j.completed_at.is_some()) {
        tracing::info!(job = %job.id, status = %job.status, available = job.available, failed = job.failed, "job finished");
    }
    Ok(())
}

/// `backoff × 2^(attempt-1)` with up to 25 % jitter, or what the source asked for if longer.
pub fn retry_delay(backoff: Duration, attempt: i32, retry_after: Option<Duration>) -> Duration {
    let exp = backoff.saturating_mul(2u32.saturating_pow(attempt.max(1) as u32 - 1));
    let jitter = rand::rng().random_range(0.0..0.25);
    let delay = exp.mul_f64(1.0 + jitter);
    delay
        .max(retry_after.unwrap_or_default())
        .min(Duration::from_secs(3600))
}

/// One attempt: open at the source, stream through the verifier into S3. `body_ended` runs
/// once the whole body has arrived and passed its checks, before the upload completes.
async fn transfer(
    svc: &Services,
    claim: &Claim,
    body_ended: impl FnOnce() + Send,
) -> Result<Outcome, AttemptError> {
    let doc = &claim.document;
    let number = ProcessNumber::parse(&claim.process_number).map_err(|e| AttemptError {
        message: format!("stored process number is invalid: {e}"),
        retryable: false,
        retry_after: None,
    })?;
    let listed = ListedDocument {
        id: doc.source_id.clone(),
        name: doc.name.clone(),
        kind: doc.kind.clone(),
        url: doc.url.clone(),
        size: doc.size,
        sha256: doc.sha256.clone(),
        mime_type: doc.mime_type.clone(),
    };
    let size = doc.size.and_then(|s| u64::try_from(s).ok());
    source::check_announced(size, None, svc.settings.max_document_bytes)?;
    let body = svc.source.open(&number, &listed).await?;
    let content_type = doc
        .mime_type
        .clone()
        .or_else(|| body.content_type.clone())
        .unwrap_or_else(|| "application/octet-stream".to_string());
    let content_length = body.content_length;
    let (verified, digest) = source::verify(
        body,
        size,
        doc.sha256.as_deref(),
        svc.settings.max_document_bytes,
    );
    let mut body_ended = Some(body_ended);
    let verified = verified.chain(futures::stream::poll_fn(move |_| {
        if let Some(ended) = body_ended.take() {
            ended();
        }
        std::task::Poll::Ready(None)
    }));
    let key = names::storage_key(&number, &doc.source_id, &doc.name);
    let stored = svc
        .storage
        .put_stream(
            &key,
            &content_type,
            size.or(content_length),
            verified,
            || digest.digest().map(|(_, sha)| sha),
        )
        .await
        .map_err(|err| match err {
            UploadError::Body(source) => AttemptError::from(source),
            UploadError::Storage(message) => AttemptError {
                message: format!("storage: {message}"),
                retryable: true,
                retry_after: None,
            },
        })?;
    Ok(Outcome::Stored {
        key: stored.key,
        sha256: stored.sha256,
        size: stored.size as i64,
        content_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_with_bounded_jitter() {
        let base = Duration::from_millis(1000);
        for (attempt, expected) in [(1, 1000u64), (2, 2000), (3, 4000)] {
            let d = retry_delay(base, attempt, None).as_millis() as u64;
            assert!(
                d >= expected && d < expected * 5 / 4,
                "attempt {attempt}: {d}"
            );
        }
        let asked = retry_delay(base, 1, Some(Duration::from_secs(7)));
        assert_eq!(asked, Duration::from_secs(7));
        assert_eq!(
            retry_delay(base, 30, None),
            Duration::from_secs(3600),
            "capped"
        );
    }
}

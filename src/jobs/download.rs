//! The batch task: transfers a handful of documents of one job, each streamed from the source
//! to S3 with its length and SHA-256 checked on the way.
//!
//! Running a batch twice is harmless: a document is transferred only by the worker that
//! claimed it (PENDING → PROCESSING, compare-and-set), and that worker keeps the claim alive
//! with heartbeats; a second run finds nothing left to claim.
//!
//! The database stays off the transfer path and is visited as little as it can be: the
//! batch's documents are claimed together (one statement, one token, one lease renewed by
//! one heartbeat), each document's final transition is written while the next one transfers,
//! and the task's deletion rides on the worker's next fetch.

use super::{Services, DOWNLOAD_TASK};
use crate::db::documents::{self, BatchClaim, Claim, Outcome};
use crate::domain::{names, ProcessNumber};
use crate::source::{self, ListedDocument, SourceError};
use crate::storage::UploadError;
use async_trait::async_trait;
use chrono::Utc;
use fang::{AsyncQueueable, AsyncRunnable, FangError};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Interval;
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
        let failed = |err: anyhow::Error| FangError {
            description: format!("batch of job {}: {err:#}", self.job_id),
        };
        let batch = documents::claim_batch(
            &svc.pool,
            self.job_id,
            &self.document_ids,
            svc.settings.lease,
        )
        .await
        .map_err(|e| failed(e.into()))?;
        if batch.claims.is_empty() {
            return Ok(());
        }
        let mut held = Held::new(&svc, &batch);
        let result = run_batch(&svc, batch, &mut held).await;
        // Whatever is still held was not attempted: the job was cancelled, or an error
        // ended the batch early. Give it back so that nothing waits for a lease to run out.
        if !held.ids.is_empty() {
            let released = documents::release(&svc.pool, held.token, &held.ids).await;
            if let Err(err) = &released {
                tracing::warn!(job = %self.job_id, error = %err, "cannot release a batch's documents; their leases will");
            }
            if result.is_ok() {
                released.map_err(|e| failed(e.into()))?;
            }
        }
        result.map_err(failed)
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

/// The documents of a batch still held, and the heartbeat that keeps them.
struct Held {
    token: Uuid,
    ids: Vec<Uuid>,
    beat: Interval,
    cancelled: bool,
}

impl Held {
    fn new(svc: &Services, batch: &BatchClaim) -> Self {
        let mut beat = tokio::time::interval(svc.settings.lease / 4);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.reset();
        Held {
            token: batch.token,
            ids: batch.claims.iter().map(|c| c.document.id).collect(),
            beat,
            cancelled: false,
        }
    }

    fn holds(&self, id: Uuid) -> bool {
        self.ids.contains(&id)
    }

    fn forget(&mut self, id: Uuid) {
        self.ids.retain(|held| *held != id);
    }

    /// Renews the lease of everything still held; notes what was lost and whether the job
    /// was cancelled.
    async fn renew(&mut self, svc: &Services) -> anyhow::Result<()> {
        let beat =
            documents::heartbeat(&svc.pool, self.token, &self.ids, svc.settings.lease).await?;
        self.ids.retain(|id| beat.held.contains(id));
        self.cancelled = !beat.job_active;
        Ok(())
    }
}

/// How one claimed document's attempt ended.
enum Ended {
    /// To be settled with this outcome.
    Settle(Outcome),
    /// Already written (a retry was scheduled in its own transaction).
    Written,
    /// The claim was lost (its lease ran out): nothing to write.
    Lost,
    /// The job was cancelled: stop the batch; what is held is released.
    Cancelled,
}

async fn run_batch(svc: &Services, batch: BatchClaim, held: &mut Held) -> anyhow::Result<()> {
    // One final transition in flight at a time, so a batch's transitions keep their order;
    // it is written while the next document transfers, and tells whether the job is still
    // active, so that a cancellation stops the batch at once.
    let mut settling: Settling = None;
    for claim in batch.claims {
        if held.cancelled {
            break;
        }
        if !held.holds(claim.document.id) {
            continue;
        }
        let ended = attempt(svc, &claim, held, &mut settling).await?;
        if settling.is_some() && !settled(&mut settling).await? {
            held.cancelled = true;
        }
        settling = None;
        match ended {
            Ended::Settle(outcome) => {
                held.forget(claim.document.id);
                let svc = svc.clone();
                settling = Some(tokio::spawn(
                    async move { settle(&svc, &claim, outcome).await },
                ));
            }
            Ended::Written => held.forget(claim.document.id),
            Ended::Lost => held.forget(claim.document.id),
            Ended::Cancelled => break,
        }
    }
    if settling.is_some() {
        settled(&mut settling).await?;
    }
    Ok(())
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

/// The final transition in flight; it says whether the job is still active.
type Settling = Option<JoinHandle<anyhow::Result<bool>>>;

/// Waits for the final transition in flight, if any (forever if there is none).
async fn settled(settling: &mut Settling) -> anyhow::Result<bool> {
    match settling.as_mut() {
        Some(handle) => handle
            .await
            .map_err(|e| anyhow::anyhow!("settling task failed: {e}"))?,
        None => std::future::pending().await,
    }
}

/// Transfers one claimed document, renewing the batch's lease meanwhile and watching the
/// previous document's final transition, and says how it ended. Errors are database errors
/// only: everything that can go wrong with the document itself ends in a document status.
async fn attempt(
    svc: &Services,
    claim: &Claim,
    held: &mut Held,
    settling: &mut Settling,
) -> anyhow::Result<Ended> {
    let settings = &svc.settings;
    let document_id = claim.document.id;
    let job_id = claim.document.job_id.unwrap_or_default();
    let started = std::time::Instant::now();
    let result = {
        let attempt = tokio::time::timeout(settings.download_timeout, transfer(svc, claim));
        tokio::pin!(attempt);
        loop {
            tokio::select! {
                result = &mut attempt => break result.unwrap_or_else(|_| Err(AttemptError {
                    message: format!("transfer timed out after {} s", settings.download_timeout.as_secs()),
                    retryable: true,
                    retry_after: None,
                })),
                active = settled(settling) => {
                    *settling = None;
                    if !active? {
                        held.cancelled = true;
                        tracing::info!(document = %document_id, "job cancelled; transfer stopped");
                        return Ok(Ended::Cancelled);
                    }
                }
                _ = held.beat.tick() => {
                    held.renew(svc).await?;
                    if held.cancelled {
                        tracing::info!(document = %document_id, "job cancelled; transfer stopped");
                        return Ok(Ended::Cancelled);
                    }
                    if !held.holds(document_id) {
                        tracing::warn!(document = %document_id, "claim lost; transfer stopped");
                        return Ok(Ended::Lost);
                    }
                }
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
            return Ok(Ended::Written);
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
    Ok(Ended::Settle(outcome))
}

/// Writes a document's final transition; returns whether its job is still active (false
/// once it was cancelled).
async fn settle(svc: &Services, claim: &Claim, outcome: Outcome) -> anyhow::Result<bool> {
    let mut conn = svc.pool.acquire().await?;
    let job = documents::settle(&mut conn, claim.document.id, claim.token, &outcome).await?;
    let Some(job) = job else {
        return Ok(true);
    };
    if job.completed_at.is_some() {
        tracing::info!(job = %job.id, status = %job.status, available = job.available, failed = job.failed, "job finished");
    }
    Ok(job.completed_at.is_none())
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

/// One attempt: open at the source, stream through the verifier into S3.
async fn transfer(svc: &Services, claim: &Claim) -> Result<Outcome, AttemptError> {
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

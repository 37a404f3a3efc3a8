//! Refreshes of stored documents: `force` (or a new announced SHA-256) never takes away a
//! stored document.
//!
//! A job that finds a document AVAILABLE whose content at the source may have changed does not
//! put it back to PENDING: the document stays AVAILABLE, with its copy and download link, while
//! a refresh fetches it again into the same S3 key (the upload replaces the object only once
//! it is whole and verified). The job counts the document PENDING or PROCESSING until the
//! refresh ends, then AVAILABLE: with the new copy's SHA-256, size and time when one was
//! stored, or with the old copy kept and `lastError` saying so when the refresh failed after
//! its attempts (or was refused). See [`crate::db::refreshes`] for the rows and their locking.
//!
//! A refresh is a queue task of its own ([`RefreshBatch`]) that runs on the download workers
//! and their lanes. It claims its documents' refreshes under one token and lease, renewed by
//! heartbeats while it transfers them one after the other; [`sweep`] recovers refreshes whose
//! worker died, queues those whose task went missing, and drops those no job awaits any more.

use super::download::retry_delay;
use super::{JobError, Services, DOWNLOAD_TASK};
use crate::db::refreshes::{self, Ending, RefreshClaim};
use crate::db::JobRow;
use crate::queue::worker;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fang::{AsyncQueueable, AsyncRunnable, FangError};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use uuid::Uuid;

/// Refreshes the stored documents `document_ids`, one after the other, each holding a lane of
/// the worker pool. `job_id` names the job that opened them (for the logs: every job awaiting
/// a refresh follows it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshBatch {
    /// The job that opened the refreshes.
    pub job_id: Uuid,
    /// The documents.
    pub document_ids: Vec<Uuid>,
}

#[typetag::serde]
#[async_trait]
impl AsyncRunnable for RefreshBatch {
    async fn run(&self, _queue: &dyn AsyncQueueable) -> Result<(), FangError> {
        let svc = worker::context::<Services>().ok_or_else(|| FangError {
            description: "refresh task run outside an autos worker".into(),
        })?;
        let failed = |err: anyhow::Error| FangError {
            description: format!("refresh batch of job {}: {err:#}", self.job_id),
        };
        let token = Uuid::new_v4();
        let claims = refreshes::claim(&svc.pool, &self.document_ids, token, svc.settings.lease)
            .await
            .map_err(|e| failed(e.into()))?;
        if claims.is_empty() {
            return Ok(());
        }
        let mut run = Run {
            held: claims.iter().map(|c| c.document.id).collect(),
            unwanted: Vec::new(),
            job_id: self.job_id,
            renewed: Instant::now(),
            svc,
            token,
        };
        let mut result = Ok(());
        for claim in claims {
            if run.held.contains(&claim.document.id) && !run.unwanted.contains(&claim.document.id) {
                result = run.refresh(claim).await;
                if result.is_err() {
                    break;
                }
            }
        }
        let released = run.release().await;
        result.and(released).map_err(failed)
    }

    // Runs on the download workers, sharing their lanes.
    fn task_type(&self) -> String {
        DOWNLOAD_TASK.to_string()
    }

    // Failures are handled per refresh; a task fails only when the database does.
    fn max_retries(&self) -> i32 {
        5
    }

    fn backoff(&self, attempt: u32) -> u32 {
        2u32.saturating_pow(attempt + 1)
    }
}

/// One run of a batch: the refreshes it still holds under its token.
struct Run {
    svc: Arc<Services>,
    job_id: Uuid,
    token: Uuid,
    /// Claimed and not yet ended.
    held: Vec<Uuid>,
    /// Held, but no active job awaits them any more: given back at the end.
    unwanted: Vec<Uuid>,
    /// When a heartbeat last renewed the claims.
    renewed: Instant,
}

impl Run {
    /// Transfers one claimed document, renewing the batch's claims meanwhile, and writes how
    /// the refresh ended. A transfer whose claim is lost, or that no job awaits any more, is
    /// stopped (the object is replaced only by a whole, verified upload: nothing changes).
    async fn refresh(&mut self, claim: RefreshClaim) -> anyhow::Result<()> {
        let id = claim.document.id;
        let svc = self.svc.clone();
        let lanes = worker::lanes().unwrap_or_else(|| Arc::new(Semaphore::new(1)));
        let timeout = svc.settings.download_timeout;
        let token = self.token;
        let transfer = async {
            let _lane = lanes.acquire_owned().await?;
            let span = tracing::warn_span!("refresh", document = %id);
            let fetching = tracing::Instrument::instrument(fetch(&svc, &claim, token), span);
            Ok::<_, anyhow::Error>(
                tokio::time::timeout(timeout, fetching)
                    .await
                    .unwrap_or_else(|_| Err(Failure::retryable("the transfer timed out"))),
            )
        };
        tokio::pin!(transfer);
        let mut beat = tokio::time::interval(svc.settings.lease / 4);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.reset();
        let result = loop {
            tokio::select! {
                result = &mut transfer => break result?,
                _ = beat.tick() => {
                    if !self.renew().await? {
                        tracing::info!(document = %id, "refresh stopped: its claim was lost, or no job awaits it any more");
                        return Ok(());
                    }
                    if !self.held.contains(&id) || self.unwanted.contains(&id) {
                        tracing::info!(document = %id, "refresh stopped: its claim was lost, or no job awaits it any more");
                        return Ok(());
                    }
                }
            }
        };
        let mut tx = svc.pool.begin().await?;
        let ending = match result {
            Ok(stored) => {
                tracing::info!(document = %id, job = %self.job_id, "stored document refreshed");
                stored
            }
            Err(failure) => self.failed(&mut tx, &claim, failure).await?,
        };
        let ended = refreshes::end(&mut tx, id, self.token, &ending).await?;
        tx.commit().await?;
        if ended.is_none() {
            tracing::warn!(document = %id, "refresh ended after its claim was lost; not recorded");
        }
        self.held.retain(|held| *held != id);
        Ok(())
    }

    /// The ending of a failed attempt: another one after a backoff while attempts are left
    /// (its task enqueued in `conn`'s transaction), else the stored copy is kept.
    async fn failed(
        &self,
        conn: &mut PgConnection,
        claim: &RefreshClaim,
        failure: Failure,
    ) -> anyhow::Result<Ending> {
        let settings = &self.svc.settings;
        let id = claim.document.id;
        let attempts = claim.attempts + 1;
        if failure.retryable && attempts < settings.max_attempts as i32 {
            let delay = retry_delay(settings.backoff, attempts, failure.retry_after);
            let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            tracing::warn!(document = %id, attempt = attempts, error = %failure.message, retry_in_ms = delay.as_millis() as u64, "refresh attempt failed; will retry");
            let task = RefreshBatch {
                job_id: self.job_id,
                document_ids: vec![id],
            };
            let task_id = crate::queue::enqueue(&mut *conn, &task, Some(at)).await?;
            return Ok(Ending::RetryAt {
                error: failure.message,
                at,
                task_id,
                attempt: true,
                interruption: false,
            });
        }
        let reason = if failure.retryable {
            format!("{} (after {attempts} attempts)", failure.message)
        } else {
            failure.message
        };
        tracing::warn!(document = %id, error = %reason, "refresh failed; the stored copy is kept");
        Ok(Ending::Kept {
            error: kept(&reason),
        })
    }

    /// Renews the claims still held; false when the current transfer must stop. A database
    /// blip is tolerated for half a lease.
    async fn renew(&mut self) -> anyhow::Result<bool> {
        let lease = self.svc.settings.lease;
        match refreshes::heartbeat(&self.svc.pool, self.token, &self.held, lease).await {
            Ok(beat) => {
                self.renewed = Instant::now();
                self.held.retain(|id| beat.held.contains(id));
                for id in beat.unwanted {
                    if !self.unwanted.contains(&id) {
                        self.unwanted.push(id);
                    }
                }
                Ok(true)
            }
            Err(err) if self.renewed.elapsed() < lease / 2 => {
                tracing::warn!(error = %err, "refresh heartbeat failed; trying again");
                Ok(true)
            }
            Err(err) => Err(anyhow::anyhow!(
                "refresh heartbeats failed for half a lease: {err}"
            )),
        }
    }

    /// Gives back, uncounted, what is still held (refreshes no job awaits any more, or all
    /// of them when an error ended the batch early); those a job still awaits are queued
    /// again at once.
    async fn release(&mut self) -> anyhow::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let mut tx = self.svc.pool.begin().await?;
        let mut again = Vec::new();
        for id in &self.held {
            let jobs = refreshes::end(&mut tx, *id, self.token, &Ending::Released).await?;
            if jobs.is_some_and(|jobs: Vec<JobRow>| !jobs.is_empty()) {
                again.push(*id);
            }
        }
        queue(
            &mut tx,
            self.job_id,
            &again,
            self.svc.settings.batch_size,
            Utc::now(),
        )
        .await?;
        tx.commit().await?;
        self.held.clear();
        Ok(())
    }
}

/// The `lastError` of a document whose refresh gave up.
fn kept(reason: &str) -> String {
    format!("the refresh failed, the stored copy is kept: {reason}")
}

/// Queues refresh batches of `document_ids` (opened by `job_id`), due at `due`, in the
/// caller's transaction; returns the task of each document, in order.
async fn enqueue(
    conn: &mut PgConnection,
    job_id: Uuid,
    document_ids: &[Uuid],
    batch_size: usize,
    due: DateTime<Utc>,
) -> Result<Vec<Uuid>, fang::AsyncQueueError> {
    let tasks: Vec<RefreshBatch> = document_ids
        .chunks(batch_size.max(1))
        .map(|batch| RefreshBatch {
            job_id,
            document_ids: batch.to_vec(),
        })
        .collect();
    let ids: Vec<Uuid> = tasks.iter().map(|_| Uuid::new_v4()).collect();
    let runnables: Vec<&dyn AsyncRunnable> =
        tasks.iter().map(|t| t as &dyn AsyncRunnable).collect();
    crate::queue::enqueue_many(&mut *conn, &runnables, &ids, Some(due)).await?;
    Ok(tasks
        .iter()
        .zip(&ids)
        .flat_map(|(task, id)| task.document_ids.iter().map(move |_| *id))
        .collect())
}

/// Queues PENDING refreshes again (their task is gone) and records their new tasks.
async fn queue(
    conn: &mut PgConnection,
    job_id: Uuid,
    document_ids: &[Uuid],
    batch_size: usize,
    due: DateTime<Utc>,
) -> anyhow::Result<()> {
    if document_ids.is_empty() {
        return Ok(());
    }
    let tasks = enqueue(conn, job_id, document_ids, batch_size, due).await?;
    refreshes::assign_tasks(&mut *conn, document_ids, &tasks, due).await?;
    Ok(())
}

/// Makes the job `job_id`, being created in the caller's transaction, await the refreshes of
/// `to_refresh` (see [`crate::db::jobs::JobPlan`]): those another job already opened
/// (`open_already`) are joined, the others opened with their batch tasks, due at `due`.
pub async fn open(
    conn: &mut PgConnection,
    job_id: Uuid,
    to_refresh: &[Uuid],
    open_already: &[Uuid],
    batch_size: usize,
    due: DateTime<Utc>,
) -> Result<(), JobError> {
    if to_refresh.is_empty() {
        return Ok(());
    }
    let new: Vec<Uuid> = to_refresh
        .iter()
        .filter(|id| !open_already.contains(id))
        .copied()
        .collect();
    let tasks = enqueue(conn, job_id, &new, batch_size, due).await?;
    refreshes::open(conn, job_id, to_refresh, &new, &tasks, due).await?;
    Ok(())
}

mod fetch;
mod sweep;

use fetch::{fetch, Failure};
pub use sweep::{sweep, MAX_INTERRUPTIONS};

//! The batch task: transfers a handful of documents of one job, each streamed from the source
//! to S3 with its length and SHA-256 checked on the way.
//!
//! Running a batch twice is harmless: a document is transferred only by the worker that
//! claimed it (PENDING → PROCESSING, compare-and-set), and that worker keeps the claim alive
//! with heartbeats; a second run finds nothing left to claim.
//!
//! A batch's transfers wait for lanes of the worker pool (one per worker), in order. While
//! the pool is busy a batch gets about one lane at a time; when lanes are idle — a job smaller
//! than the pool, the last batches of a large one — a batch spreads over them instead of
//! leaving them idle while its documents go one after the other.
//!
//! The database stays off the transfer path and is visited as little as it can be: the
//! batch's documents are claimed together (one statement, one token, one lease renewed by
//! one heartbeat); their final transitions go to the process's
//! [`Settler`](super::settler::Settler), which writes those of all its batches together, in
//! the background; and the task's deletion rides on the worker's next fetch.

use super::cancellations::Signal;
use super::outage::{Dependency, Fault, Verdict, Wait};
use super::transfer::{listed, Failed};
use super::{Services, DOWNLOAD_TASK};
use crate::db::documents::{self, Charge, Claim, Outcome, Settling};
use crate::domain::ProcessNumber;
use crate::queue::worker;
use crate::queue::worker::Phase;
use crate::source::{Blame, SourceError};
use crate::storage::UploadJournal;
use async_trait::async_trait;
use chrono::Utc;
use fang::{AsyncQueueable, AsyncRunnable, FangError};
use futures::future::{abortable, AbortHandle};
use futures::stream::{FuturesUnordered, StreamExt};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Interval;
use tracing::Instrument;
use uuid::Uuid;

/// Transfers `document_ids` of `job_id`, in their order, each holding a lane of the worker
/// pool.
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
        if let Some(wait) = svc.breakers.blocked() {
            // A dependency is down and no probe is due: the documents stay PENDING, unclaimed
            // and uncounted, and the batch comes back when one is — unless the outage has
            // lasted too long: then they are claimed, to fail for it.
            if !wait.outlasted(svc.settings.outage_max) {
                return put_off(&svc, self, wait).await.map_err(failed);
            }
        }
        // Listening before claiming: a cancellation committed after the claim is heard.
        let signals = svc.cancellations.subscribe();
        let token = Uuid::new_v4();
        let lease = svc.settings.lease;
        let batch = match documents::claim_batch(&svc.pool, &self.document_ids, lease, token).await
        {
            Ok(batch) => batch,
            Err(err) => {
                // The claim may have committed and only its answer been lost (or be
                // committing still, its connection gone): whatever it took goes back,
                // uncounted, rather than waiting for its lease — asked now and again a
                // moment later. The task is tried again.
                let (pool, ids) = (&svc.pool, &self.document_ids);
                for pause in [Duration::ZERO, UNANSWERED_CLAIM_SETTLES] {
                    tokio::time::sleep(pause).await;
                    let released = with_retries("give back an unanswered claim", || async move {
                        Ok(documents::release(pool, token, ids).await?)
                    })
                    .await;
                    match released {
                        Ok(given_back) if !given_back.is_empty() => break,
                        Ok(_) => {}
                        Err(release) => {
                            tracing::warn!(error = %format!("{release:#}"), "cannot give back an unanswered claim; its lease will run out");
                            break;
                        }
                    }
                }
                return Err(failed(err.into()));
            }
        };
        if batch.claims.is_empty() {
            return Ok(());
        }
        let mut run = BatchRun::new(svc, self.job_id, batch.token, &batch.claims, signals);
        let transferred = run.transfer(batch.claims).await;
        let released = run.release().await;
        transferred.and(released).map_err(failed)
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

/// Puts a whole batch off until `wait.until`, its documents untouched.
async fn put_off(svc: &Services, batch: &DownloadBatch, wait: Wait) -> anyhow::Result<()> {
    tracing::debug!(job = %batch.job_id, dependency = wait.dependency.as_str(), until = %wait.until, "batch put off: outage");
    crate::queue::enqueue(&svc.pool, batch, Some(wait.until))
        .await
        .map_err(|e| anyhow::anyhow!("cannot put a batch off: {e}"))?;
    Ok(())
}

/// How one claimed document's attempt ended.
enum Ended {
    /// To be settled with this outcome, counting as `Charge`.
    Settle(Outcome, Charge),
    /// Already written (a retry was scheduled in its own transaction).
    Written,
    /// The claim was lost (its lease ran out): nothing to write.
    Lost,
}

/// One run of a batch: the documents it still holds, and the heartbeat that keeps the claims.
struct BatchRun {
    svc: Arc<Services>,
    job_id: Uuid,
    token: Uuid,
    /// Claimed and not yet ended.
    held: Vec<Uuid>,
    /// Held, but no active job wants them any more (cancelled): not to be transferred, and
    /// given back when the batch ends.
    unwanted: Vec<Uuid>,
    beat: Interval,
    /// When a heartbeat last renewed the claims.
    renewed: Instant,
    /// Cancellations announced in this process (see [`super::cancellations`]).
    signals: Option<broadcast::Receiver<Signal>>,
    /// The worker pool stopping: first no new transfer starts, then those under way stop.
    phase: Option<tokio::sync::watch::Receiver<Phase>>,
}

impl BatchRun {
    fn new(
        svc: Arc<Services>,
        job_id: Uuid,
        token: Uuid,
        claims: &[Claim],
        signals: broadcast::Receiver<Signal>,
    ) -> Self {
        let mut beat = tokio::time::interval(svc.settings.lease / 4);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.reset();
        BatchRun {
            job_id,
            token,
            signals: Some(signals),
            held: claims.iter().map(|c| c.document.id).collect(),
            unwanted: Vec::new(),
            beat,
            renewed: Instant::now(),
            phase: worker::phase(),
            svc,
        }
    }

    fn forget(&mut self, id: Uuid) {
        self.held.retain(|held| *held != id);
    }

    /// Transfers the claimed documents in their order, each once a lane of the worker pool is
    /// free: one after the other while the pool is busy, several at once when its other lanes
    /// are idle (a small job, the end of a large one). Goes on until every document has ended
    /// or is no longer wanted (every job covering it was cancelled); meanwhile renews the
    /// claims, and hands each document that ends to the process's
    /// [`Settler`](super::settler::Settler).
    async fn transfer(&mut self, claims: Vec<Claim>) -> anyhow::Result<()> {
        // Outside a worker there is no pool: one transfer at a time.
        let lanes = worker::lanes().unwrap_or_else(|| Arc::new(Semaphore::new(1)));
        let mut waiting: VecDeque<Claim> = claims.into();
        // The wait for the next lane lives across iterations, keeping its place in line.
        let mut next_lane = None;
        let mut in_flight = FuturesUnordered::new();
        let mut stops: Vec<(Uuid, AbortHandle)> = Vec::new();
        // A heartbeat runs beside the transfers, which this loop must keep polling.
        let mut beating: Option<JoinHandle<Result<documents::Heartbeat, crate::db::DbError>>> =
            None;
        loop {
            let phase = self.phase.as_ref().map_or(Phase::Running, |p| *p.borrow());
            if phase != Phase::Running && !waiting.is_empty() {
                // The process is stopping: what has not started is given back now (and taken
                // at once by another worker), uncounted.
                waiting.clear();
                next_lane = None;
            }
            if phase == Phase::Halting && !stops.is_empty() {
                tracing::info!(
                    transfers = stops.len(),
                    "stopping: transfers under way given back"
                );
                for (_, stop) in stops.drain(..) {
                    stop.abort();
                }
                return Ok(());
            }
            waiting.retain(|claim| self.to_transfer(claim.document.id));
            if waiting.is_empty() {
                // Nothing left to start: a lane awaited for it would go unused.
                next_lane = None;
                if in_flight.is_empty() {
                    return Ok(());
                }
            }
            if next_lane.is_none() && !waiting.is_empty() {
                next_lane = Some(Box::pin(lanes.clone().acquire_owned()));
            }
            tokio::select! {
                lane = async { next_lane.as_mut().expect("guarded").await }, if next_lane.is_some() => {
                    next_lane = None;
                    let lane = lane.map_err(|_| anyhow::anyhow!("the worker pool's lanes are closed"))?;
                    let Some(claim) = waiting.pop_front() else {
                        // Given up meanwhile: the lane goes back to the pool.
                        continue;
                    };
                    if !waiting.iter().any(|later| self.to_transfer(later.document.id)) {
                        // The batch's last transfer starts: its worker may take the next task.
                        worker::hand_over();
                    }
                    let id = claim.document.id;
                    let (run, stop) = abortable(attempt(self.svc.clone(), claim, lane));
                    stops.push((id, stop));
                    in_flight.push(async move { (id, run.await.unwrap_or(Ok(Ended::Lost))) });
                }
                Some((id, ended)) = in_flight.next() => {
                    stops.retain(|(running, _)| *running != id);
                    if self.unwanted.contains(&id) {
                        // Stopped: still held, given back at the end.
                        continue;
                    }
                    match ended {
                        Ok(Ended::Settle(outcome, charge)) => {
                            // Nothing else in flight in this process: nothing will come soon
                            // to be written with it.
                            let idle = in_flight.is_empty() && worker::lanes_idle();
                            let settling = Settling { token: self.token, document: id, outcome, charge };
                            self.svc.settler.settle(self.job_id, settling, idle);
                            self.forget(id);
                        }
                        Ok(Ended::Written) => self.forget(id),
                        // Stopped (shutdown), or its claim lost: nothing written; what is
                        // still held is given back at the end.
                        Ok(Ended::Lost) => {}
                        Err(err) => return Err(err),
                    }
                }
                changed = next_phase(&mut self.phase) => {
                    if changed.is_err() {
                        self.phase = None;
                    }
                }
                // A cancelled job may have been the only one wanting some of these documents
                // (of whichever job's batch): the heartbeat, now, tells.
                signal = next_signal(&mut self.signals) => match signal {
                    Ok(Signal::Cancelled(_) | Signal::Missed) | Err(RecvError::Lagged(_)) => {
                        self.beat.reset_immediately()
                    }
                    Err(RecvError::Closed) => self.signals = None,
                },
                _ = self.beat.tick(), if beating.is_none() => {
                    let (svc, token, held) = (self.svc.clone(), self.token, self.held.clone());
                    beating = Some(tokio::spawn(async move {
                        documents::heartbeat(&svc.pool, token, &held, svc.settings.lease).await
                    }));
                }
                beat = async { beating.as_mut().expect("guarded").await }, if beating.is_some() => {
                    beating = None;
                    let beat = match beat.map_err(|e| anyhow::anyhow!("heartbeat task failed: {e}"))? {
                        Ok(beat) => beat,
                        // A database blip: the claims hold until their lease runs out, so
                        // the transfers go on; the next heartbeat comes sooner. Up to three
                        // quarters of a lease since the last renewal (a blip of half a lease
                        // at least, wherever it falls between two heartbeats), leaving a
                        // quarter before another worker may take the documents.
                        Err(err) if self.renewed.elapsed() < self.svc.settings.lease * 3 / 4 => {
                            tracing::warn!(error = %err, "heartbeat failed; trying again");
                            self.beat.reset_after(HEARTBEAT_RETRY);
                            continue;
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "heartbeats failed for three quarters of a lease; transfers stopped");
                            for (_, stop) in stops.drain(..) {
                                stop.abort();
                            }
                            return Err(err.into());
                        }
                    };
                    self.renewed = Instant::now();
                    // What ended meanwhile is no longer held anyway; what the heartbeat did
                    // not find was taken by someone else.
                    self.held.retain(|id| beat.held.contains(id));
                    for id in beat.unwanted {
                        if !self.unwanted.contains(&id) {
                            self.unwanted.push(id);
                        }
                    }
                    for (id, stop) in &stops {
                        if !self.held.contains(id) {
                            tracing::warn!(document = %id, "claim lost; transfer stopped");
                            stop.abort();
                        } else if self.unwanted.contains(id) {
                            tracing::info!(document = %id, "no job wants it any more (cancelled); transfer stopped");
                            stop.abort();
                        }
                    }
                }
            }
        }
    }

    /// Whether a waiting document is still to be transferred by this batch.
    fn to_transfer(&self, id: Uuid) -> bool {
        self.held.contains(&id) && !self.unwanted.contains(&id)
    }

    /// Gives back what is still held — documents no job wants any more, those not started or
    /// stopped when the process stops, or all of them when an error ended the batch early —
    /// uncounted, so that nothing waits for a lease to run out: those an active job still
    /// wants get a task at once, in the same transaction.
    async fn release(&mut self) -> anyhow::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let (svc, token, held, job) = (&self.svc, self.token, &self.held, self.job_id);
        let released = with_retries("give documents back", || async move {
            let mut tx = svc.pool.begin().await?;
            let wanted = documents::release(&mut *tx, token, held).await?;
            let size = svc.settings.batch_size;
            super::enqueue_batches(&mut tx, job, &wanted, size, Utc::now())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            tx.commit().await?;
            Ok(wanted.len())
        })
        .await;
        match released {
            Ok(requeued) => {
                if requeued > 0 {
                    tracing::info!(documents = requeued, "documents given back, queued again");
                }
                self.held.clear();
                Ok(())
            }
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "cannot give a batch's documents back; their leases will run out");
                Err(err)
            }
        }
    }
}

/// How long a claim whose answer was lost may take to commit, at most (it reached the
/// database whole; it reads and writes a batch's rows by id).
const UNANSWERED_CLAIM_SETTLES: Duration = Duration::from_secs(1);

/// How soon a failed heartbeat is tried again.
const HEARTBEAT_RETRY: Duration = Duration::from_secs(1);

/// Tries a write that matters a few times (a database blip must not lose it), for about ten
/// seconds in all.
async fn with_retries<T, F, Fut>(what: &str, mut write: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut wait = Duration::from_millis(200);
    let mut tries = 0;
    loop {
        tries += 1;
        match write().await {
            Ok(done) => return Ok(done),
            Err(err) if tries < 6 => {
                tracing::warn!(error = %format!("{err:#}"), tries, "cannot {what}; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(3));
            }
            Err(err) => return Err(err),
        }
    }
}

/// The next change of the worker pool's phase (never, outside a worker).
async fn next_phase(
    phase: &mut Option<tokio::sync::watch::Receiver<Phase>>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match phase.as_mut() {
        Some(phase) => phase.changed().await,
        None => std::future::pending().await,
    }
}

/// Transfers one claimed document holding `lane`, and says how it ended. Errors are database
/// errors only: everything that can go wrong with the document itself ends in a document
/// status. A transfer counts as an attempt of the document when it ends with a result about
/// the document; one that cannot start, or fails, because S3 or the court is down counts as
/// nothing and waits for them (see [`super::outage`]).
async fn attempt(
    svc: Arc<Services>,
    claim: Claim,
    lane: OwnedSemaphorePermit,
) -> anyhow::Result<Ended> {
    let settings = &svc.settings;
    let document_id = claim.document.id;
    let job_id = claim.document.job_id.unwrap_or_default();
    if let Err(wait) = svc.breakers.admit() {
        drop(lane);
        return wait_for(&svc, &claim, wait).await;
    }
    let started = Instant::now();
    // What the source and the verifier log while this transfer runs names the job and the
    // document; clients see only the stable phrase of a failure.
    let span = tracing::warn_span!("transfer", job = %job_id, document = %document_id);
    let transferring = transfer(&svc, &claim).instrument(span);
    let result = tokio::time::timeout(settings.download_timeout, transferring)
        .await
        .unwrap_or_else(|_| {
            tracing::warn!(
                job = %job_id,
                document = %document_id,
                timeout_secs = settings.download_timeout.as_secs(),
                "transfer timed out (AUTOS_DOWNLOAD_TIMEOUT_SECS)"
            );
            Err(AttemptError::of(
                Dependency::Source,
                Fault::Unclear,
                "the transfer timed out",
            ))
        });
    drop(lane);

    let mut err = match result {
        Ok(outcome) => {
            // Fractional: whole milliseconds undercount a few-millisecond transfer by a tenth.
            let ms = (started.elapsed().as_secs_f64() * 1e4).round() / 10.0;
            tracing::info!(document = %document_id, job = %job_id, ms, "document stored");
            svc.breakers.served(document_id).await;
            return Ok(Ended::Settle(outcome, Charge::Attempt));
        }
        Err(err) => err,
    };
    // Another host the court lists documents on: its failures say nothing of the court's
    // health (nor its answers), and count as the document's.
    let own = ProcessNumber::parse(&claim.process_number).is_ok_and(|number| {
        svc.sources
            .route(&number)
            .source()
            .serves_itself(&listed(&claim.document))
    });
    if !own && matches!(err.fault, Some((Dependency::Source, _))) {
        err.fault = None;
    }
    let Some((dependency, fault)) = err.fault else {
        if own {
            svc.breakers.answered(Dependency::Source).await;
        }
        return charged_failure(&svc, &claim, err).await;
    };
    match svc
        .breakers
        .failed(dependency, document_id, fault, &err.message)
        .await
    {
        Verdict::Charged => charged_failure(&svc, &claim, err).await,
        Verdict::Unconfirmed => {
            // Tried again after the document's own backoff, uncounted: the next failure tells.
            let delay = retry_delay(
                settings.backoff,
                claim.document.attempts + 1,
                err.retry_after,
            );
            let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            tracing::warn!(job = %job_id, document = %document_id, error = %err.message, retry_in_ms = delay.as_millis() as u64, "attempt failed; not counted until it fails again alone");
            retry_at(&svc, &claim, err.message, at, Charge::Nothing).await
        }
        Verdict::Outage { until, since } => {
            let asked = err
                .retry_after
                .and_then(|d| chrono::Duration::from_std(d).ok());
            let until = asked.map_or(until, |asked| until.max(Utc::now() + asked));
            tracing::warn!(job = %job_id, document = %document_id, error = %err.message, dependency = dependency.as_str(), "attempt cut short by an outage; not counted");
            wait_for(
                &svc,
                &claim,
                Wait {
                    dependency,
                    until,
                    since,
                },
            )
            .await
        }
    }
}

/// A failure of the document's own (or of a dependency that serves others): one of its
/// attempts; retried after a backoff while it has attempts left, failed after.
async fn charged_failure(
    svc: &Arc<Services>,
    claim: &Claim,
    err: AttemptError,
) -> anyhow::Result<Ended> {
    let settings = &svc.settings;
    let (document_id, job_id) = (claim.document.id, claim.document.job_id.unwrap_or_default());
    // This transfer is the document's attempt number `attempts`.
    let attempts = claim.document.attempts + 1;
    if !(err.retryable && attempts < settings.max_attempts as i32) {
        let error = if err.retryable {
            format!("{} (after {attempts} attempts)", err.message)
        } else {
            err.message
        };
        tracing::warn!(job = %job_id, document = %document_id, attempt = attempts, %error, "document failed");
        return Ok(Ended::Settle(Outcome::Failed { error }, Charge::Attempt));
    }
    let delay = retry_delay(settings.backoff, attempts, err.retry_after);
    let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
    tracing::warn!(job = %job_id, document = %document_id, attempt = attempts, error = %err.message, retry_in_ms = delay.as_millis() as u64, "attempt failed; will retry");
    retry_at(svc, claim, err.message, at, Charge::Attempt).await
}

/// A document that cannot be transferred now because `wait.dependency` is down: back to
/// PENDING uncounted, due when the dependency may answer again — or failed, once the outage
/// has lasted longer than `AUTOS_OUTAGE_MAX_SECS`.
async fn wait_for(svc: &Arc<Services>, claim: &Claim, wait: Wait) -> anyhow::Result<Ended> {
    if wait.outlasted(svc.settings.outage_max) {
        let error = wait.dependency.gave_up().to_string();
        tracing::warn!(document = %claim.document.id, since = %wait.since, %error, "document failed");
        return Ok(Ended::Settle(Outcome::Failed { error }, Charge::Nothing));
    }
    let error = wait.dependency.waiting().to_string();
    retry_at(svc, claim, error, wait.until, Charge::Nothing).await
}

/// Puts a claimed document back to PENDING, due at `at`, with a task to transfer it then, in
/// one transaction (tried again over a database blip).
async fn retry_at(
    svc: &Arc<Services>,
    claim: &Claim,
    error: String,
    at: chrono::DateTime<Utc>,
    charge: Charge,
) -> anyhow::Result<Ended> {
    let (document_id, token) = (claim.document.id, claim.token);
    let task = DownloadBatch {
        job_id: claim.document.job_id.unwrap_or_default(),
        document_ids: vec![document_id],
    };
    let (task, error) = (&task, &error);
    with_retries("schedule a document's next attempt", || async move {
        let mut tx = svc.pool.begin().await?;
        let task_id = crate::queue::enqueue(&mut *tx, task, Some(at)).await?;
        let outcome = Outcome::RetryAt {
            error: error.clone(),
            at,
            task_id,
        };
        let settling = Settling {
            token,
            document: document_id,
            outcome,
            charge,
        };
        documents::settle(&mut tx, settling).await?;
        tx.commit().await?;
        Ok(())
    })
    .await?;
    Ok(Ended::Written)
}

/// The next cancellation announcement (never, once there are none to wait for).
async fn next_signal(
    signals: &mut Option<broadcast::Receiver<Signal>>,
) -> Result<Signal, RecvError> {
    match signals.as_mut() {
        Some(signals) => signals.recv().await,
        None => std::future::pending().await,
    }
}

/// Why one attempt failed.
#[derive(Debug)]
struct AttemptError {
    /// A stable phrase: the document's `lastError` (details go to the log where it is made).
    message: String,
    retryable: bool,
    retry_after: Option<Duration>,
    /// The dependency whose failure it may be, and how surely (`None`: the document's own).
    fault: Option<(Dependency, Fault)>,
}

impl AttemptError {
    fn of(dependency: Dependency, fault: Fault, message: &str) -> Self {
        AttemptError {
            message: message.to_string(),
            retryable: true,
            retry_after: None,
            fault: Some((dependency, fault)),
        }
    }
}

impl From<SourceError> for AttemptError {
    fn from(err: SourceError) -> Self {
        AttemptError {
            retryable: err.is_retryable(),
            retry_after: err.retry_after(),
            fault: match err.blame() {
                Blame::Document => None,
                Blame::Source => Some((Dependency::Source, Fault::Down)),
                Blame::Unclear => Some((Dependency::Source, Fault::Unclear)),
            },
            message: err.to_string(),
        }
    }
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

/// One attempt: open at the source, stream through the verifier into S3. Runs in the span
/// of its job and document, which the failures logged here and below carry.
async fn transfer(svc: &Services, claim: &Claim) -> Result<Outcome, AttemptError> {
    let doc = &claim.document;
    let number = ProcessNumber::parse(&claim.process_number).map_err(|e| {
        tracing::warn!(error = %e, "stored process number is invalid");
        AttemptError {
            message: "the stored process number is invalid".to_string(),
            retryable: false,
            retry_after: None,
            fault: None,
        }
    })?;
    let (key, on_behalf_of) =
        super::transfer::placement(&number, doc, claim.process_owner.as_ref(), claim.job_tenant);
    let journal = Journal { svc, claim };
    let stored = super::transfer::stream(svc, &number, doc, &key, &journal, on_behalf_of)
        .await
        .map_err(|failed| match failed {
            Failed::Source(err) => AttemptError::from(err),
            Failed::Storage => {
                AttemptError::of(Dependency::Storage, Fault::Down, "storage unavailable")
            }
        })?;
    Ok(Outcome::Stored {
        key: stored.key,
        sha256: stored.sha256,
        size: stored.size,
        content_type: stored.content_type,
    })
}

/// Records a document's multipart upload on its row, under its claim, for the sweeper to
/// abort should this process die before the transfer ends.
struct Journal<'a> {
    svc: &'a Services,
    claim: &'a Claim,
}

#[async_trait]
impl UploadJournal for Journal<'_> {
    async fn started(&self, key: &str, upload_id: &str) -> Result<(), String> {
        let document = self.claim.document.id;
        match documents::record_upload(&self.svc.pool, document, self.claim.token, key, upload_id)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err("the claim on the document was lost".into()),
            Err(err) => Err(err.to_string()),
        }
    }
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

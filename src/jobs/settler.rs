//! The final transitions of the documents transferred in this process, written together.
//!
//! Each batch hands every document that ends (stored, failed for good) to its process's
//! settler. While transfers are running the settler writes what it holds at most once per
//! [`SETTLE_WINDOW`] — one statement per job, whichever batches the documents came from —
//! and at once when nothing else is in flight in the process, so that the end of a job (or a
//! job smaller than the pool) is never held back. A busy process thus makes a few writes per
//! job instead of one or more per batch; live progress still moves at least once per window.
//!
//! Nothing is lost: a write that fails is tried again, and should it keep failing the
//! documents' leases run out and the sweeper gives them to another attempt. On shutdown the
//! settler writes what it holds before it ends; anything handed over after that is written
//! by a task of its own.

use crate::db::documents::{self, Settling};
use crate::db::JobRow;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// The longest a stored (or failed) document waits for its final transition to be written
/// while the process is busy; the transitions that end within this window of each other are
/// written together.
pub const SETTLE_WINDOW: Duration = Duration::from_millis(100);

/// Attempts at one write before the documents are left to their leases.
const WRITE_ATTEMPTS: u32 = 4;

/// What a batch hands over: a document of a job that ended, and whether the process has
/// nothing else in flight (then it is written at once).
struct Handover {
    job_id: Uuid,
    ended: Settling,
    idle: bool,
}

/// Ended documents by job.
type Held = BTreeMap<Uuid, Vec<Settling>>;

fn hold(held: &mut Held, handover: Handover) {
    held.entry(handover.job_id)
        .or_default()
        .push(handover.ended);
}

/// The process's settler; cheap to clone. Its task, and any write it leaves to a task of
/// its own, run on its tracker, which shutdown waits for ([`Settler::closed`]).
#[derive(Clone)]
pub struct Settler {
    sender: mpsc::UnboundedSender<Handover>,
    closing: std::sync::Arc<watch::Sender<bool>>,
    pool: PgPool,
    tracker: TaskTracker,
}

impl Settler {
    /// Starts the settler of a process on `pool`.
    pub fn start(pool: PgPool) -> Settler {
        let (sender, receiver) = mpsc::unbounded_channel();
        let (closing, closed) = watch::channel(false);
        let tracker = TaskTracker::new();
        tracker.spawn(run(pool.clone(), receiver, closed));
        Settler {
            sender,
            closing: std::sync::Arc::new(closing),
            pool,
            tracker,
        }
    }

    /// Hands over a document of `job_id` that ended. `idle`: nothing else is in flight in
    /// this process, so nothing will come soon to write it with: write at once.
    pub fn settle(&self, job_id: Uuid, ended: Settling, idle: bool) {
        let handover = Handover {
            job_id,
            ended,
            idle,
        };
        if let Err(mpsc::error::SendError(handover)) = self.sender.send(handover) {
            // The settler has ended (shutdown): write them here.
            let pool = self.pool.clone();
            let mut held = Held::new();
            hold(&mut held, handover);
            self.tracker.spawn(async move { write(&pool, held).await });
        }
    }

    /// Writes what the settler holds and ends it (shutdown, once no batch runs).
    pub fn close(&self) {
        let _ = self.closing.send(true);
        self.tracker.close();
    }

    /// Waits, once closed, until everything handed over is written (or given up on).
    pub async fn closed(&self) {
        self.tracker.wait().await;
    }
}

async fn run(
    pool: PgPool,
    mut receiver: mpsc::UnboundedReceiver<Handover>,
    mut closing: watch::Receiver<bool>,
) {
    let mut held = Held::new();
    let mut now = false;
    // The first documents after a quiet moment are written at once.
    let mut written_at: Option<Instant> = None;
    loop {
        let due = (!held.is_empty()).then(|| match written_at {
            Some(at) if !now => at + SETTLE_WINDOW,
            _ => Instant::now(),
        });
        tokio::select! {
            biased;
            handed = receiver.recv() => match handed {
                Some(handover) => {
                    now |= handover.idle;
                    hold(&mut held, handover);
                    continue;
                }
                // Every handle is gone: nothing more can come.
                None => break,
            },
            () = async { drop(closing.wait_for(|closed| *closed).await) } => {
                // What was sent before the close is still read; later sends write themselves.
                receiver.close();
                while let Some(handover) = receiver.recv().await {
                    hold(&mut held, handover);
                }
                break;
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {}
        }
        // What arrived meanwhile rides along.
        while let Ok(handover) = receiver.try_recv() {
            hold(&mut held, handover);
        }
        write(&pool, std::mem::take(&mut held)).await;
        written_at = Some(Instant::now());
        now = false;
    }
    write(&pool, held).await;
}

/// Writes what is `held`, one statement per job (each statement locks the rows of the jobs
/// covering its documents in id order, so writers in several processes cannot deadlock),
/// trying again on failure.
async fn write(pool: &PgPool, held: Held) {
    for (job_id, ended) in held {
        let mut attempt = 1;
        loop {
            // After a failed attempt, its statement may have committed unseen: the job's
            // end is then checked for explicitly.
            match write_job(pool, job_id, &ended, attempt > 1).await {
                Ok(()) => break,
                Err(err) if attempt < WRITE_ATTEMPTS => {
                    tracing::warn!(job = %job_id, attempt, error = %format!("{err:#}"), "cannot write final transitions; trying again");
                    tokio::time::sleep(SETTLE_WINDOW * 2u32.pow(attempt)).await;
                    attempt += 1;
                }
                Err(err) => {
                    let ids: Vec<Uuid> = ended.iter().map(|s| s.document).collect();
                    tracing::error!(job = %job_id, documents = ?ids, error = %format!("{err:#}"), "cannot write final transitions; their leases will recover the documents");
                    break;
                }
            }
        }
    }
}

async fn write_job(
    pool: &PgPool,
    job_id: Uuid,
    ended: &[Settling],
    check_end: bool,
) -> anyhow::Result<()> {
    // The endings alone commit without waiting for the disk; a job's end waits.
    let mut tx = pool.begin().await?;
    let mut jobs = documents::settle_many(&mut tx, ended).await?;
    if jobs.is_empty() && check_end {
        jobs.push(crate::db::jobs::finish_if_settled(&mut tx, job_id).await?);
    }
    tx.commit().await?;
    for job in jobs {
        log_finished(&job);
    }
    Ok(())
}

fn log_finished(job: &JobRow) {
    if job.completed_at.is_some() {
        tracing::info!(job = %job.id, status = %job.status, available = job.available, failed = job.failed, "job finished");
    }
}

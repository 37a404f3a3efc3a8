//! The sweeper: every `autos work` process runs one, so that no document and no job is left
//! hanging whatever happened to a worker or a queue row. They take turns: once per interval,
//! the first of them to look makes the pass for the whole cluster (see [`take_turn`]), so N
//! worker processes do not scan the tables N times; should it die, another takes the next
//! turn.
//!
//! Each pass:
//! 0. a multipart upload recorded on a document whose claim is over (its worker died
//!    mid-transfer, or its lease ran out) is aborted, so its parts do not stay in the bucket;
//! 1. a PROCESSING document whose lease ran out (its worker died) is put back to PENDING with
//!    a new task, or FAILED if that was its last attempt;
//! 2. a PENDING document of an active job that no live queue task will pick up (its task was
//!    lost, deleted, or failed for good) gets a new task;
//! 3. an active job with no open document left is made terminal, and the queue's table is
//!    vacuumed when it holds many dead rows (autovacuum's once a minute is too seldom for a
//!    queue);
//! 4. what is kept only for a while goes ([`retention`]): webhook deliveries that ended
//!    `AUTOS_DELIVERY_RETENTION_DAYS` ago, tasks that failed `AUTOS_FAILED_TASK_RETENTION_DAYS`
//!    ago, audit log entries older than `AUTOS_AUDIT_RETENTION_DAYS`, rate-limit windows older
//!    than an hour — in bounded batches.
//!
//! Steps 1 and 2 read every document of the active jobs: a process makes them at most as often
//! as keeps them under 1 % of a core ([`ScanPace`]), at every pass on small tables.
//!
//! Every step is a compare-and-set, so sweepers in several processes may run at once.

use super::{download::DownloadBatch, enqueue_batches, Services};
use crate::db::{
    self,
    documents::{Charge, Outcome, Settling},
};
use chrono::Utc;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

pub mod retention;

/// Interruptions (transfers whose worker died or stopped answering) after which a document
/// fails: far more than any deploy or crash makes, few enough for a document that brings
/// its workers down to end.
pub const MAX_INTERRUPTIONS: i32 = 10;

/// Dead rows of the queue's table above which a pass vacuums it (see
/// [`vacuum_if_bloated`](crate::queue::vacuum_if_bloated)).
pub const QUEUE_DEAD_ROWS: i64 = 1000;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Abandoned multipart uploads aborted.
    pub uploads: usize,
    /// Expired claims recovered.
    pub expired: usize,
    /// Orphaned documents re-queued.
    pub orphans: usize,
    /// Jobs made terminal.
    pub finished: usize,
    /// Rows past their retention deleted.
    pub pruned: retention::Pruned,
}

/// Looks every `interval` whether a pass is due in the cluster, and makes it if so, until
/// `stop` turns true.
pub async fn run(svc: Services, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut pace = ScanPace::default();
    loop {
        match take_turn(&svc.pool, interval).await {
            Ok(true) => match sweep_paced(&svc, &mut pace).await {
                Ok(swept)
                    if Swept {
                        pruned: Default::default(),
                        ..swept
                    } != Swept::default() =>
                {
                    tracing::info!(?swept, "sweeper recovered work")
                }
                Ok(Swept { pruned, .. }) if pruned != Default::default() => {
                    tracing::debug!(?pruned, "sweeper deleted rows past their retention")
                }
                Ok(_) => {}
                Err(err) => tracing::error!(error = %format!("{err:#}"), "sweeper pass failed"),
            },
            Ok(false) => {}
            Err(err) => tracing::error!(error = %err, "cannot take the sweeper's turn"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Takes the sweeper's turn for the whole cluster: true (make a pass now) for the first
/// process to ask once `interval` has passed since the last pass began, anywhere; false for
/// the others. The time of the last pass is a row of `settings`, compared and set in one
/// statement, on the database's clock.
pub async fn take_turn(pool: &sqlx::PgPool, interval: Duration) -> Result<bool, sqlx::Error> {
    let taken: Option<String> = sqlx::query_scalar(
        "INSERT INTO settings (key, value) VALUES ('sweeper_last_pass', now()::text)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value
         WHERE settings.value::timestamptz <= now() - make_interval(secs => $1)
         RETURNING key",
    )
    .bind(interval.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(taken.is_some())
}

/// How often a process's passes make the checks that read every document of the active jobs
/// (steps 1 and 2: expired claims and orphans). Their cost grows with the jobs: 0.2–0.6 s a
/// pass for a job of 100,000 documents, which every 5 s would take a tenth of a core for as
/// long as the job runs — and a job runs as long as it is large, so that its sweeping would
/// cost the square of its size. After checks that took `t`, the next ones wait
/// `(SCAN_SHARE - 1) × t`: they take at most 1/`SCAN_SHARE` of a core, and on small tables
/// (a few milliseconds) they still run at every pass.
#[derive(Debug, Default)]
pub struct ScanPace {
    next: Option<std::time::Instant>,
}

/// The largest share of a core (1 / this) the whole-table checks may take.
pub const SCAN_SHARE: u32 = 100;

impl ScanPace {
    fn due(&self) -> bool {
        self.next
            .is_none_or(|next| std::time::Instant::now() >= next)
    }

    fn took(&mut self, took: Duration) {
        self.next = Some(std::time::Instant::now() + took * (SCAN_SHARE - 1));
    }
}

/// One pass, every step made.
pub async fn sweep(svc: &Services) -> anyhow::Result<Swept> {
    sweep_paced(svc, &mut ScanPace::default()).await
}

/// One pass, with steps 1 and 2 made when `pace` lets them.
pub async fn sweep_paced(svc: &Services, pace: &mut ScanPace) -> anyhow::Result<Swept> {
    let mut swept = Swept::default();

    for (document_id, key, upload_id) in db::documents::abandoned_uploads(&svc.pool, 100).await? {
        // Until it is aborted the upload stays recorded, and the document's expired claim
        // waits for it (an abort that fails is tried again next pass; see abort_grace).
        match svc.storage.abort_upload(&key, &upload_id).await {
            Ok(()) => {
                db::documents::forget_upload(&svc.pool, document_id, &upload_id).await?;
                tracing::info!(document = %document_id, %key, "aborted a multipart upload left by a transfer that did not end");
                swept.uploads += 1;
            }
            Err(err) => {
                tracing::warn!(document = %document_id, %key, error = %err, "cannot abort a multipart upload left behind; trying again next pass (ten leases on, the document is retried anyway and the upload left to the bucket's lifecycle rules)")
            }
        }
    }

    if pace.due() {
        let started = std::time::Instant::now();
        scan(svc, &mut swept).await?;
        if swept.expired + swept.orphans > 0 {
            // Work was found: there may be more than a pass takes (500 claims, 5,000
            // orphans), and it is looked for again at the next pass.
            pace.next = None;
        } else {
            pace.took(started.elapsed());
        }
    }

    // Only a saving: a vacuum that fails (or is refused) does not hold the pass's other steps.
    match crate::queue::vacuum_if_bloated(&svc.pool, QUEUE_DEAD_ROWS).await {
        Ok(true) => tracing::debug!("queue table vacuumed"),
        Ok(false) => {}
        Err(err) => tracing::warn!(error = %err, "cannot vacuum the queue's table"),
    }

    super::refresh::sweep(svc).await?;

    for job_id in db::jobs::settled_but_active(&svc.pool).await? {
        let mut tx = svc.pool.begin().await?;
        let job = db::jobs::finish_if_settled(&mut tx, job_id).await?;
        tx.commit().await?;
        if job.completed_at.is_some() {
            swept.finished += 1;
        }
    }

    swept.pruned = retention::prune(svc).await?;
    Ok(swept)
}

/// Steps 1 and 2 of a pass: expired claims and orphans, read from every document of the
/// active jobs.
async fn scan(svc: &Services, swept: &mut Swept) -> anyhow::Result<()> {
    // An upload the store keeps refusing to abort holds its document back ten leases at most.
    let abort_grace = svc.settings.lease * 10;
    for (document_id, token) in db::documents::expired_claims(&svc.pool, 500, abort_grace).await? {
        let mut tx = svc.pool.begin().await?;
        // A worker that died or stopped answering is the platform's doing, not the
        // document's: no attempt is counted. But a document that keeps bringing its workers
        // down must end some time.
        let (job_id, interruptions) = db::documents::interruptions(&mut *tx, document_id).await?;
        let error = "the transfer was interrupted (its worker stopped)".to_string();
        let outcome = if interruptions + 1 >= MAX_INTERRUPTIONS {
            Outcome::Failed {
                error: format!("{error} {MAX_INTERRUPTIONS} times"),
            }
        } else {
            let task = DownloadBatch {
                job_id: job_id.unwrap_or_default(),
                document_ids: vec![document_id],
            };
            let at = Utc::now();
            let task_id = crate::queue::enqueue(&mut *tx, &task, Some(at)).await?;
            Outcome::RetryAt { error, at, task_id }
        };
        let settling = Settling {
            token,
            document: document_id,
            outcome,
            charge: Charge::Interruption,
        };
        if db::documents::settle(&mut tx, settling).await?.is_some() {
            swept.expired += 1;
        }
        tx.commit().await?;
    }

    let mut by_job: BTreeMap<Uuid, Vec<Uuid>> = BTreeMap::new();
    for (job_id, document_id) in db::documents::orphans(&svc.pool, 5000).await? {
        by_job.entry(job_id).or_default().push(document_id);
    }
    for (job_id, ids) in by_job {
        let mut tx = svc.pool.begin().await?;
        enqueue_batches(&mut tx, job_id, &ids, svc.settings.batch_size, Utc::now())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tx.commit().await?;
        swept.orphans += ids.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_wait_ninety_nine_times_what_they_took() {
        let mut pace = ScanPace::default();
        assert!(pace.due(), "the first pass scans");
        pace.took(Duration::ZERO);
        assert!(pace.due(), "scans that cost nothing run at every pass");
        pace.took(Duration::from_millis(20));
        assert!(!pace.due(), "20 ms of scanning waits 1.98 s");
        let next = pace.next.unwrap();
        let wait = next - std::time::Instant::now();
        assert!(wait > Duration::from_millis(1900) && wait <= Duration::from_millis(1980));
    }
}

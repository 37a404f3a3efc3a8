//! Live progress: PostgreSQL `LISTEN/NOTIFY` → one in-memory fan-out per `serve` process.
//!
//! Status changes notify `autos_progress` from inside their transaction (triggers, see the
//! migrations), whichever process made them. Each process holds one listening connection.
//! For every job somebody watches, one refresher task re-reads the job once per burst of
//! notifications and publishes the snapshot on a `watch` channel: subscribers share that
//! read, and a slow subscriber simply sees the latest snapshot (coalesced, never reordered).
//! When the listening connection drops, it reconnects with backoff and every watched job is
//! re-read, so nothing is missed for good.

use crate::db::{self, DocumentRow, JobRow};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

/// The notification channel.
pub const CHANNEL: &str = "autos_progress";

/// How long a refresher waits after a notification for the rest of its burst.
const COALESCE: Duration = Duration::from_millis(10);

/// A job as one notification burst left it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The job.
    pub job: JobRow,
    /// The document whose change caused this snapshot, if one did.
    pub document: Option<DocumentRow>,
    /// What its remaining documents wait for: the outages seen now (none once it ended).
    pub waiting_for: Vec<db::outages::OutageRow>,
    /// When it was read.
    pub at: DateTime<Utc>,
}

struct Watched {
    changed: Notify,
    /// The last document that changed, for the next snapshot.
    document: Mutex<Option<Uuid>>,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
}

/// The fan-out hub of one process.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    /// Watched jobs; an entry lives as long as its refresher, which leaves with the last
    /// subscriber.
    jobs: Mutex<HashMap<Uuid, Arc<Watched>>>,
    stop: watch::Receiver<bool>,
}

/// A subscription to one job's snapshots (`None` until the first read).
pub type Subscription = watch::Receiver<Option<Arc<Snapshot>>>;

impl Hub {
    /// Starts the listener on `pool` and returns the hub; the listener and the refreshers
    /// stop with `stop`.
    pub fn start(pool: PgPool, stop: watch::Receiver<bool>) -> Hub {
        let hub = Hub {
            inner: Arc::new(Inner {
                pool,
                jobs: Mutex::new(HashMap::new()),
                stop: stop.clone(),
            }),
        };
        tokio::spawn(hub.clone().listen(stop));
        hub
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Watched>>> {
        self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches a job: the receiver's first value is the job as it is now.
    pub fn subscribe(&self, job_id: Uuid) -> Subscription {
        let mut jobs = self.jobs();
        if let Some(watched) = jobs.get(&job_id) {
            // A finished job's refresher only waits for its last subscriber to leave; a job
            // re-opened since needs a refresher of its own.
            let finished = watched
                .snapshots
                .borrow()
                .as_ref()
                .is_some_and(|s| s.job.completed_at.is_some());
            if !finished {
                return watched.snapshots.subscribe();
            }
        }
        let (snapshots, receiver) = watch::channel(None);
        let watched = Arc::new(Watched {
            changed: Notify::new(),
            document: Mutex::new(None),
            snapshots,
        });
        jobs.insert(job_id, watched.clone());
        tokio::spawn(self.clone().refresh(job_id, watched));
        receiver
    }

    /// Jobs currently watched in this process.
    pub fn watched(&self) -> usize {
        self.jobs().len()
    }

    fn notify(&self, payload: &str) {
        let (job, document) = match payload.split_once(':') {
            Some((job, document)) => (job, Uuid::parse_str(document).ok()),
            None => (payload, None),
        };
        let Ok(job_id) = Uuid::parse_str(job) else {
            return;
        };
        let Some(watched) = self.jobs().get(&job_id).cloned() else {
            return;
        };
        if document.is_some() {
            *watched.document.lock().unwrap_or_else(|e| e.into_inner()) = document;
        }
        watched.changed.notify_one();
    }

    /// Every watched job is read again (after the listener missed notifications).
    fn resync(&self) {
        for watched in self.jobs().values() {
            watched.changed.notify_one();
        }
    }

    async fn listen(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut listener = match PgListener::connect_with(&self.inner.pool).await {
                Ok(mut listener) => match listener.listen(CHANNEL).await {
                    Ok(()) => listener,
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot LISTEN for progress; retrying");
                        if sleep_or_stop(backoff, &mut stop).await {
                            return;
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue;
                    }
                },
                Err(err) => {
                    tracing::warn!(error = %err, "cannot connect the progress listener; retrying");
                    if sleep_or_stop(backoff, &mut stop).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            // Anything may have changed while nobody listened.
            self.resync();
            backoff = Duration::from_millis(100);
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    received = listener.try_recv() => match received {
                        Ok(Some(notification)) => self.notify(notification.payload()),
                        Ok(None) => {
                            tracing::warn!("progress listener lost its connection; reconnecting");
                            self.resync();
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "progress listener failed; reconnecting");
                            break;
                        }
                    },
                }
            }
            if sleep_or_stop(backoff, &mut stop).await {
                return;
            }
        }
    }

    /// Reads the job once per burst of notifications, publishes it, and leaves (removing
    /// its entry) when the last subscriber has gone or the process stops. After a terminal
    /// snapshot it only waits for the subscribers to leave.
    async fn refresh(self, job_id: Uuid, watched: Arc<Watched>) {
        let mut stop = self.inner.stop.clone();
        let mut first = true;
        let mut finished = false;
        loop {
            if !first {
                tokio::select! {
                    _ = watched.changed.notified(), if !finished => {
                        // Changes come in bursts (a document settles, then its job ends):
                        // one read, and one message to every subscriber, for the burst.
                        tokio::time::sleep(COALESCE).await;
                    }
                    _ = watched.snapshots.closed() => {
                        let mut jobs = self.jobs();
                        // A subscriber may have joined since `closed` fired.
                        if watched.snapshots.receiver_count() == 0 {
                            if jobs.get(&job_id).is_some_and(|w| Arc::ptr_eq(w, &watched)) {
                                jobs.remove(&job_id);
                            }
                            return;
                        }
                        continue;
                    }
                    _ = stop.changed() => return,
                }
            }
            first = false;
            if finished {
                continue;
            }
            let document_id = watched
                .document
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            match read(&self.inner.pool, job_id, document_id).await {
                Ok(Some(snapshot)) => {
                    finished = snapshot.job.completed_at.is_some();
                    watched.snapshots.send_replace(Some(Arc::new(snapshot)));
                }
                Ok(None) => finished = true,
                Err(err) => {
                    tracing::warn!(job = %job_id, error = %err, "cannot read job progress; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    watched.changed.notify_one();
                }
            }
        }
    }
}

async fn sleep_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stop.changed() => true,
    }
}

async fn read(
    pool: &PgPool,
    job_id: Uuid,
    document_id: Option<Uuid>,
) -> Result<Option<Snapshot>, sqlx::Error> {
    let Some(job) = db::jobs::find(pool, job_id).await? else {
        return Ok(None);
    };
    let document = async {
        match document_id {
            Some(id) => Ok(db::documents::find_by_ids(pool, &[id]).await?.pop()),
            None => Ok(None),
        }
    };
    let waiting_for = async {
        match job.status() {
            Ok(status) if status.is_terminal() => Ok(Vec::new()),
            _ => db::outages::current(pool).await,
        }
    };
    let (document, waiting_for) = tokio::try_join!(document, waiting_for)?;
    Ok(Some(Snapshot {
        job,
        document,
        waiting_for,
        at: Utc::now(),
    }))
}

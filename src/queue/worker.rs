//! Workers that run fang tasks from [`PgQueue`].
//!
//! Each worker runs one task at a time, with one overlap: a task may [`hand_over`] the worker
//! when it starts its last piece of work, and the worker then fetches and starts its next
//! task, whose set-up (database round trips) runs while the first one finishes; a worker
//! never runs more than two tasks. What the worker count limits — a transfer — is done
//! holding a lane of the pool ([`lanes`]): the pool has one lane per worker, shared by all
//! its tasks, so a task may do several pieces of work at once when lanes are free (its peers
//! idle, at the end of a job), and the pool never does more than `workers`. While a task
//! runs, its row is touched every [`WorkerSettings::heartbeat`], so other processes can tell a
//! live task from an abandoned one. Panics and errors are caught and recorded on the row; an
//! undecodable row is failed with its reason; nothing ends a worker but shutdown. Idle workers
//! wait for a `NOTIFY` from [`super::enqueue`], with a poll as fallback, so a new task starts
//! at once.

use super::{Claimed, PgQueue, TaskClaim, WAKE_CHANNEL};
use fang::AsyncRunnable;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use sqlx::postgres::PgListener;
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

tokio::task_local! {
    static CONTEXT: Arc<dyn Any + Send + Sync>;
    static TURN: Arc<Turn>;
}

/// Where the worker pool stands: taking work, or stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Taking and running tasks.
    Running,
    /// Stopping: no task is taken and no new piece of work starts; what runs may finish.
    Draining,
    /// The grace period is over: what still runs stops and gives its work back.
    Halting,
}

/// The phase of the pool running the current task (`None` outside a worker): tasks watch it
/// to stop starting work, then to stop, when the process stops.
pub fn phase() -> Option<watch::Receiver<Phase>> {
    TURN.try_with(|turn| turn.phase.clone()).ok()
}

/// What a running task shares with its worker.
struct Turn {
    /// The pool's phase.
    phase: watch::Receiver<Phase>,
    /// The pool's lanes: one permit per worker, shared by every task of the pool.
    lanes: Arc<Semaphore>,
    /// How many lanes the pool has.
    width: usize,
    /// Notified once the task has handed the worker over.
    handed_over: Notify,
}

/// The lanes of the pool running the current task (`None` outside a worker). Hold a permit
/// ([`Semaphore::acquire_owned`]) while doing what the worker count limits; permits are
/// granted in the order they were asked for.
pub fn lanes() -> Option<Arc<Semaphore>> {
    TURN.try_with(|turn| turn.lanes.clone()).ok()
}

/// Whether no lane of the pool running the current task is taken: nothing the worker count
/// limits is going on in it (true outside a worker).
pub fn lanes_idle() -> bool {
    TURN.try_with(|turn| turn.lanes.available_permits() >= turn.width)
        .unwrap_or(true)
}

/// Lets the worker running the current task fetch and start its next task now, while this
/// one finishes its last piece of work (which it should do holding a lane, see [`lanes`]).
pub fn hand_over() {
    let _ = TURN.try_with(|turn| turn.handed_over.notify_one());
}

/// The context the worker running the current task was given, if it is a `T`.
///
/// fang's `AsyncRunnable::run` receives only the queue; tasks reach the application's parts
/// (pool, storage, source) through this task-local, so several applications can share a process.
pub fn context<T: Any + Send + Sync>() -> Option<Arc<T>> {
    CONTEXT
        .try_with(|ctx| ctx.clone().downcast::<T>().ok())
        .ok()
        .flatten()
}

/// How the workers behave.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Concurrent workers.
    pub workers: u32,
    /// Task types to run.
    pub task_types: Vec<String>,
    /// Longest sleep when idle and no notification arrives.
    pub poll_interval: Duration,
    /// How often a running task's row is touched.
    pub heartbeat: Duration,
    /// How long shutdown waits for running tasks before abandoning them to other workers.
    pub shutdown_grace: Duration,
}

/// A running set of workers.
pub struct WorkerPool {
    phase: watch::Sender<Phase>,
    workers: JoinSet<()>,
    grace: Duration,
}

/// After the grace period, how long tasks get to give their work back before they are
/// abandoned (then their leases return it).
const HALT_GRACE: Duration = Duration::from_secs(10);

impl WorkerPool {
    /// Starts `settings.workers` workers on `queue`, running tasks with `context`.
    pub async fn start(
        queue: PgQueue,
        settings: WorkerSettings,
        context: Arc<dyn Any + Send + Sync>,
    ) -> Result<Self, sqlx::Error> {
        let (phase, watch_rx) = watch::channel(Phase::Running);
        let wake = Arc::new(Notify::new());
        let lanes = Arc::new(Semaphore::new(settings.workers as usize));
        let mut listener = PgListener::connect_with(queue.pool()).await?;
        listener.listen(WAKE_CHANNEL).await?;
        let mut workers = JoinSet::new();
        workers.spawn(relay_wakeups(listener, wake.clone(), watch_rx.clone()));
        for n in 0..settings.workers {
            let worker = Worker {
                n,
                queue: queue.clone(),
                settings: settings.clone(),
                context: context.clone(),
                wake: wake.clone(),
                lanes: lanes.clone(),
                shutdown: watch_rx.clone(),
            };
            workers.spawn(worker.run());
        }
        Ok(WorkerPool {
            phase,
            workers,
            grace: settings.shutdown_grace,
        })
    }

    /// Stops taking tasks at once, and no new transfer starts (what a task has not started
    /// it gives back, uncounted, for other workers to take at once); lets transfers under
    /// way finish within the grace period; then stops them, and their tasks give them back
    /// too. Only what cannot be given back then is left to its lease.
    pub async fn shutdown(mut self) {
        let _ = self.phase.send(Phase::Draining);
        let drained = tokio::time::timeout(self.grace, async {
            while self.workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_ok() {
            return;
        }
        tracing::warn!(grace = ?self.grace, "transfers still under way after the grace period; stopping them");
        let _ = self.phase.send(Phase::Halting);
        let halted = tokio::time::timeout(HALT_GRACE, async {
            while self.workers.join_next().await.is_some() {}
        })
        .await;
        if halted.is_err() {
            tracing::warn!("tasks did not stop in time; abandoning them to their leases");
            self.workers.shutdown().await;
        }
    }
}

async fn relay_wakeups(
    mut listener: PgListener,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<Phase>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            received = listener.recv() => match received {
                Ok(_) => wake.notify_waiters(),
                Err(err) => {
                    // PgListener reconnects by itself; polling covers the gap.
                    tracing::warn!(error = %err, "queue listener interrupted");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
}

struct Worker {
    n: u32,
    queue: PgQueue,
    settings: WorkerSettings,
    context: Arc<dyn Any + Send + Sync>,
    wake: Arc<Notify>,
    lanes: Arc<Semaphore>,
    shutdown: watch::Receiver<Phase>,
}

impl Worker {
    async fn run(self) {
        tracing::debug!(worker = self.n, "worker started");
        let mut stop = self.shutdown.clone();
        // At most two tasks: the newest, and one that handed over and is finishing.
        let mut running = FuturesUnordered::new();
        // The newest task's turn, until it hands over or ends.
        let mut newest: Option<Arc<Turn>> = None;
        // Tasks that ran to completion, deleted by the statement that fetches the next.
        let mut finished: Vec<TaskClaim> = Vec::new();
        loop {
            let stopping = *stop.borrow() != Phase::Running;
            if stopping && running.is_empty() {
                break;
            }
            // Register for wake-ups before looking, so an enqueue between the two is not missed.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let may_fetch = !stopping && newest.is_none() && running.len() < 2;
            if may_fetch {
                // A task that handed over goes on while the fetch waits: it may hold what the
                // fetch waits for (the pool's last connection, a row lock in its transaction),
                // and left unpolled it would hold it until the fetch gave up.
                let mut ended_meanwhile: Vec<TaskClaim> = Vec::new();
                let fetched = {
                    let fetch = self
                        .queue
                        .finish_and_fetch(&finished, &self.settings.task_types);
                    tokio::pin!(fetch);
                    loop {
                        tokio::select! {
                            fetched = &mut fetch => break fetched,
                            Some((id, _)) = running.next() => ended_meanwhile.extend(id),
                        }
                    }
                };
                if fetched.is_ok() {
                    // The fetch deleted those that had finished before it.
                    finished.clear();
                }
                finished.append(&mut ended_meanwhile);
                match fetched {
                    Ok(Some(task)) => {
                        let turn = Arc::new(Turn {
                            phase: self.shutdown.clone(),
                            lanes: self.lanes.clone(),
                            width: self.settings.workers as usize,
                            handed_over: Notify::new(),
                        });
                        newest = Some(turn.clone());
                        running.push(self.execute(task, turn));
                        continue;
                    }
                    Ok(None) => {}
                    Err(err) => {
                        tracing::error!(worker = self.n, error = %err, "cannot fetch a task");
                        tokio::select! {
                            _ = tokio::time::sleep(self.settings.poll_interval) => {}
                            _ = stop.changed() => {}
                            Some((id, _)) = running.next() => finished.extend(id),
                        }
                        continue;
                    }
                }
            }
            let handed_over = async {
                match &newest {
                    Some(turn) => turn.handed_over.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some((id, turn)) = running.next() => {
                    finished.extend(id);
                    if newest.as_ref().is_some_and(|n| Arc::ptr_eq(n, &turn)) {
                        newest = None;
                    }
                }
                _ = handed_over => newest = None,
                // Idle (or the running task handed over and nothing was due): new work.
                _ = notified, if may_fetch => {}
                _ = tokio::time::sleep(self.settings.poll_interval), if may_fetch => {}
                _ = stop.changed() => {}
            }
        }
        if !finished.is_empty() {
            self.record(self.queue.remove_tasks(&finished).await);
        }
        tracing::debug!(worker = self.n, "worker stopped");
    }

    /// Runs `task` and records its outcome; returns its id when it succeeded, for the next
    /// fetch to delete, and its turn.
    async fn execute(&self, task: Claimed, turn: Arc<Turn>) -> (Option<TaskClaim>, Arc<Turn>) {
        let id = self.run_task(task, turn.clone()).await;
        (id, turn)
    }

    async fn run_task(
        &self,
        Claimed { task, claim }: Claimed,
        turn: Arc<Turn>,
    ) -> Option<TaskClaim> {
        let runnable: Box<dyn AsyncRunnable> = match serde_json::from_value(task.metadata.clone()) {
            Ok(runnable) => runnable,
            Err(err) => {
                let reason = format!("cannot decode task: {err}");
                tracing::error!(task = %task.id, task_type = %task.task_type, %reason);
                self.record(self.queue.fail(claim, &reason).await);
                return None;
            }
        };
        if task.retries > runnable.max_retries() {
            let reason = "abandoned by its workers too many times";
            tracing::error!(task = %task.id, reason);
            self.record(self.queue.fail(claim, reason).await);
            return None;
        }

        let run = TURN.scope(
            turn,
            CONTEXT.scope(self.context.clone(), async {
                AssertUnwindSafe(runnable.run(&self.queue))
                    .catch_unwind()
                    .await
            }),
        );
        tokio::pin!(run);
        let mut beat = tokio::time::interval(self.settings.heartbeat);
        beat.tick().await;
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                _ = beat.tick() => {
                    if let Err(err) = self.queue.touch(claim).await {
                        tracing::warn!(task = %task.id, error = %err, "cannot touch a running task");
                    }
                }
            }
        };

        let error = match outcome {
            Ok(Ok(())) => return Some(claim),
            Ok(Err(err)) => err.description,
            Err(panic) => format!("task panicked: {}", panic_message(&*panic)),
        };
        if task.retries < runnable.max_retries() {
            let backoff = runnable.backoff(task.retries.max(0) as u32);
            tracing::warn!(task = %task.id, %error, backoff, "task failed; will retry");
            self.record(self.queue.retry(claim, backoff, &error).await);
        } else {
            tracing::error!(task = %task.id, %error, "task failed for good");
            self.record(self.queue.fail(claim, &error).await);
        }
        None
    }

    fn record<T>(&self, result: Result<T, fang::AsyncQueueError>) {
        if let Err(err) = result {
            // The row stays in_progress and goes stale: another worker will take it again.
            tracing::error!(worker = self.n, error = %err, "cannot record a task's outcome");
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

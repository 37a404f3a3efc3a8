//! The task queue under pressure: many workers in several processes, lost enqueues, dead
//! workers, undecodable rows, retention, `uniq` and exclusive fetches.
//!
//! Each test shows one hazard of fang 0.11's own queue made harmless, by its outcome: GETs at
//! the court per document, statuses, bytes in S3 and rows in `fang_tasks`.

mod common;

use async_trait::async_trait;
use autos::app::{Application, Role};
use autos::queue::{self, PgQueue, QueueSettings, WorkerPool, WorkerSettings};
use common::*;
use fang::{AsyncQueueable, AsyncRunnable, FangError};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `count` small documents `d1..`, sizes between 1 and 4 KiB.
fn small_docs(count: usize) -> Vec<Doc> {
    (1..=count)
        .map(|i| {
            let len = 1024 + (i * 977) % (3 * 1024);
            Doc::new(
                &format!("d{i}"),
                &format!("documento {i}.pdf"),
                bytes(len, i as u8),
            )
        })
        .collect()
}

fn job_id(started: &Value) -> String {
    started["job"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job id in {started:#}"))
        .to_string()
}

/// Polls `check` until it holds, or panics with `what` after `timeout`.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still not true after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Rows of `fang_tasks` that belong to a job, by state.
async fn task_states(pool: &PgPool, job_id: &str) -> HashMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state::text, count(*) FROM fang_tasks
         WHERE metadata->>'job_id' = $1 GROUP BY state",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await
    .expect("task states");
    rows.into_iter().collect()
}

/// Every document of a finished job is AVAILABLE, fetched from the court exactly
/// `expected_gets(source id)` times, and its object in S3 holds the court's bytes.
async fn assert_all_stored(
    app: &TestApp,
    courts: &[&Court],
    number: &str,
    job: &Value,
    docs: &[Doc],
    expected_gets: impl Fn(&str) -> u32,
) {
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    assert_eq!(
        job["counts"]["available"],
        docs.len(),
        "{:#}",
        job["counts"]
    );
    for d in docs {
        let gets: u32 = courts.iter().map(|c| c.gets(number, &d.id)).sum();
        assert_eq!(gets, expected_gets(&d.id), "GETs of document {}", d.id);
        let listed = doc(job, &d.id);
        assert_eq!(listed["status"], "AVAILABLE", "{listed:#}");
    }
    let by_id: HashMap<&str, &Doc> = docs.iter().map(|d| (d.id.as_str(), d)).collect();
    let checks = futures::stream::iter(job["documents"].as_array().unwrap().iter())
        .map(|listed| async {
            let key = listed["storageKey"].as_str().expect("storage key");
            let (stored, _, _) = app
                .object(key)
                .await
                .unwrap_or_else(|| panic!("{key} is not in S3"));
            let source_id = listed["sourceId"].as_str().unwrap();
            assert_eq!(
                stored,
                by_id[source_id].bytes.as_ref(),
                "bytes of {source_id} in S3"
            );
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    assert_eq!(checks.len(), docs.len());
    assert_eq!(
        app.keys().await.len(),
        docs.len(),
        "one object per document"
    );
}

fn worker_options(workers: u32) -> Options {
    Options {
        role: Role::WORK,
        workers,
        ..Options::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Test task types (registered with typetag like the application's own tasks)
// ---------------------------------------------------------------------------------------------

/// A task that is de-duplicated by its content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UniqProbe {
    key: String,
}

#[typetag::serde]
#[async_trait]
impl AsyncRunnable for UniqProbe {
    async fn run(&self, _queue: &dyn AsyncQueueable) -> Result<(), FangError> {
        Ok(())
    }
    fn task_type(&self) -> String {
        "uniq-probe".into()
    }
    fn uniq(&self) -> bool {
        true
    }
}

/// How a [`Probe`] ends.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
enum End {
    Succeed,
    Fail,
    Panic,
}

/// A task of a chosen type that ends as told.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Probe {
    kind: String,
    n: u32,
    end: End,
}

#[typetag::serde]
#[async_trait]
impl AsyncRunnable for Probe {
    async fn run(&self, _queue: &dyn AsyncQueueable) -> Result<(), FangError> {
        match self.end {
            End::Succeed => Ok(()),
            End::Fail => Err(FangError {
                description: format!("probe {} failed on purpose", self.n),
            }),
            End::Panic => panic!("probe {} panicked on purpose", self.n),
        }
    }
    fn task_type(&self) -> String {
        self.kind.clone()
    }
    fn max_retries(&self) -> i32 {
        0
    }
}

/// `workers` workers running the tasks of type `kind`, with no application context.
async fn probe_workers(pool: &PgPool, kind: &str, workers: u32) -> WorkerPool {
    WorkerPool::start(
        PgQueue::new(pool.clone(), QueueSettings::default()),
        WorkerSettings {
            workers,
            task_types: vec![kind.to_string()],
            poll_interval: Duration::from_millis(100),
            heartbeat: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
        },
        Arc::new(()),
    )
    .await
    .unwrap()
}

/// A migrated database of its own, and a pool on it.
async fn queue_db(connections: u32) -> (TestDb, PgPool) {
    let db = TestDb::new().await;
    let pool = autos::db::connect(&db.url, connections)
        .await
        .expect("connect");
    autos::db::migrate(&pool).await.expect("migrate");
    (db, pool)
}

/// Inserts a `kind` probe task in `state`, scheduled `scheduled` and last touched `touched`
/// (SQL intervals before now; a negative one is in the future).
async fn insert_task(
    pool: &PgPool,
    kind: &str,
    state: &str,
    scheduled: &str,
    touched: &str,
) -> Uuid {
    let id = Uuid::new_v4();
    let metadata = serde_json::to_value(&Probe {
        kind: kind.into(),
        n: 0,
        end: End::Succeed,
    } as &dyn AsyncRunnable)
    .unwrap();
    sqlx::query(&format!(
        "INSERT INTO fang_tasks (id, metadata, task_type, state, scheduled_at, updated_at)
         VALUES ($1, $2, $3, '{state}'::fang_task_state, now() - interval '{scheduled}',
                 now() - interval '{touched}')"
    ))
    .bind(id)
    .bind(metadata)
    .bind(kind)
    .execute(pool)
    .await
    .unwrap();
    id
}

// ---------------------------------------------------------------------------------------------
// The cancellation listener
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cancellation_listener_announces_and_ends_with_its_application() {
    use autos::jobs::cancellations::{Cancellations, Signal, CHANNEL};
    let (_db, pool) = queue_db(4).await;
    let cancellations = Cancellations::default();
    let mut signals = cancellations.subscribe();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let listener = tokio::spawn(cancellations.clone().listen(pool.clone(), stopped));
    // Once connected, it says that anything sent before may have been missed.
    let first = tokio::time::timeout(WAIT, signals.recv()).await;
    assert_eq!(first.unwrap().unwrap(), Signal::Missed);

    let job = uuid::Uuid::new_v4();
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(job.to_string())
        .execute(&pool)
        .await
        .unwrap();
    let heard = tokio::time::timeout(WAIT, signals.recv()).await;
    assert_eq!(heard.unwrap().unwrap(), Signal::Cancelled(job));

    // The application goes away without stopping it: the listener ends all the same.
    drop(stop);
    tokio::time::timeout(Duration::from_secs(5), listener)
        .await
        .expect("the listener outlived its application")
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// (a) several workers, several processes: a document is transferred once
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_workers_in_two_processes_transfer_each_of_300_documents_once() {
    let court = Court::start().await;
    let n = number(101);
    let docs = small_docs(300);
    court.add_process(&n, docs.clone());
    let app = TestApp::spawn_with(
        court,
        Options {
            workers: 4,
            batch_size: 1,
            ..Options::default()
        },
    )
    .await;
    let other = app
        .another(Options {
            batch_size: 1,
            ..worker_options(8)
        })
        .await;

    let started = app.start(&n, false).await;
    assert_eq!(started["job"]["total"], 300);
    let id = job_id(&started);
    let pool = app.db.pool().await;
    let job = app.wait_terminal(&id, WAIT).await;

    assert_all_stored(&app, &[&app.court], &n, &job, &docs, |_| 1).await;
    assert_eq!(app.court.total_gets(), 300);
    eventually("every task of the job is gone", WAIT, || async {
        task_states(&pool, &id).await.is_empty()
    })
    .await;
    other.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_worker_processes_share_one_job_and_each_document_is_fetched_once() {
    // Two courts serve the same case: the API and the first worker process read court A, the
    // second worker process court B. GETs at B prove that the second process did work, GETs at
    // both that the two processes never transferred the same document.
    let court_a = Court::start().await;
    let court_b = Court::start().await;
    let n = number(102);
    let docs = small_docs(8);
    for court in [&court_a, &court_b] {
        court.add_process(&n, docs.clone());
        for d in &docs {
            // ~0.4 s per document: one worker cannot take them all before the other starts.
            court.fail_always(
                &n,
                &d.id,
                Fault::Slow {
                    chunk: 512,
                    every: Duration::from_millis(100),
                },
            );
        }
    }
    let api = TestApp::spawn_with(
        court_a,
        Options {
            role: Role::SERVE,
            batch_size: 1,
            ..Options::default()
        },
    )
    .await;
    let one = Options {
        batch_size: 1,
        ..worker_options(1)
    };
    let pool_a = api.another(one.clone()).await;
    let pool_b = Application::start(config(&api.db.url, &api.s3, &court_b.url(), &one), one.role)
        .await
        .expect("start the second worker process");

    let id = job_id(&api.start(&n, false).await);
    let job = api.wait_terminal(&id, WAIT).await;

    assert_all_stored(&api, &[&api.court, &court_b], &n, &job, &docs, |_| 1).await;
    let (a, b) = (api.court.total_gets(), court_b.total_gets());
    assert!(
        a > 0 && b > 0,
        "both worker processes transferred documents: A {a}, B {b}"
    );
    assert_eq!(a + b, 8);
    pool_a.stop().await;
    pool_b.stop().await;
    api.stop().await;
}

// ---------------------------------------------------------------------------------------------
// (f) a lost enqueue is repaired by the sweeper
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn documents_whose_tasks_were_lost_are_requeued_and_fetched_once() {
    let court = Court::start().await;
    let n = number(103);
    let docs = small_docs(12);
    court.add_process(&n, docs.clone());
    let api = TestApp::spawn_with(
        court,
        Options {
            role: Role::SERVE,
            ..Options::default()
        },
    )
    .await;
    let pool = api.db.pool().await;

    let id = job_id(&api.start(&n, false).await);
    // The job's tasks were written with it (12 documents in batches of 5).
    assert_eq!(
        task_states(&pool, &id).await,
        HashMap::from([("new".to_string(), 3)])
    );
    let lost = sqlx::query("DELETE FROM fang_tasks")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(lost.rows_affected(), 3);

    let worker = api.another(worker_options(4)).await;
    let job = api.wait_terminal(&id, WAIT).await;

    assert_all_stored(&api, &[&api.court], &n, &job, &docs, |_| 1).await;
    eventually("the re-queued tasks are gone", WAIT, || async {
        count(&pool, "SELECT count(*) FROM fang_tasks").await == 0
    })
    .await;
    worker.stop().await;
    api.stop().await;
}

// ---------------------------------------------------------------------------------------------
// (b) a dead worker's documents and tasks are taken again
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_workers_documents_and_tasks_are_taken_again() {
    // Two batches, [d1 d2 d3] and [d4 d5 d6], and a worker process of two workers: two lanes.
    // The first GET of every document crawls (1 KiB+ at 64 B/s): the process dies while
    // transferring two of them. Its workers hold both batches (each claimed whole): six
    // documents PROCESSING under leases nobody renews, and two task rows `in_progress` that
    // nobody touches. The sweeper recovers the documents; the queue takes the stale rows
    // again, which find nothing left to claim.
    let court = Court::start().await;
    let n = number(104);
    let docs = small_docs(6);
    court.add_process(&n, docs.clone());
    for doc in &docs {
        court.fail(
            &n,
            &doc.id,
            vec![Fault::Slow {
                chunk: 64,
                every: Duration::from_secs(1),
            }],
        );
    }
    let api = TestApp::spawn_with(
        court,
        Options {
            role: Role::SERVE,
            batch_size: 3,
            ..Options::default()
        },
    )
    .await;
    let pool = api.db.pool().await;
    let short_lease = Options {
        batch_size: 3,
        lease_ms: 1000,
        sweep_ms: 200,
        ..worker_options(2)
    };
    let doomed = api.another(short_lease.clone()).await;

    let id = job_id(&api.start(&n, false).await);
    let started = || docs.iter().filter(|d| api.court.gets(&n, &d.id) == 1);
    eventually(
        "both batches are held, two documents in transfer",
        WAIT,
        || async {
            let job = api.job(&id).await;
            job["counts"] == json!({"pending": 0, "processing": 6, "available": 0, "failed": 0})
                && started().count() == 2
        },
    )
    .await;
    let slow: Vec<String> = started().map(|d| d.id.clone()).collect();
    // The rest will be fetched by the rescuer, at full speed.
    for doc in &docs {
        api.court.heal(&n, &doc.id);
    }

    // The worker process dies: its tasks stop where they are, nothing is cleaned up, no lease
    // and no task row is renewed any more.
    drop(doomed);

    // The state a dead worker leaves, once its lease (1 s) has run out.
    eventually(
        "the dead worker's documents and task rows are abandoned",
        WAIT,
        || async {
            let expired = count(
                &pool,
                "SELECT count(*) FROM documents
                 WHERE status = 'PROCESSING' AND lease_until < now() - interval '100 ms'",
            );
            let stale = count(
                &pool,
                "SELECT count(*) FROM fang_tasks
                 WHERE state = 'in_progress' AND updated_at < now() - interval '1100 ms'",
            );
            expired.await == 6 && stale.await == 2
        },
    )
    .await;
    let job = api.job(&id).await;
    assert_eq!(job["status"], "RUNNING");
    assert_eq!(
        job["counts"],
        json!({"pending": 0, "processing": 6, "available": 0, "failed": 0}),
        "nothing moved while no worker was alive"
    );

    let rescuer = api.another(short_lease).await;
    let job = api.wait_terminal(&id, WAIT).await;

    // The two it was transferring: one GET by the dead worker, one by the rescuer; the
    // others, which the dead worker held but never started, once.
    assert_all_stored(&api, &[&api.court], &n, &job, &docs, |id| {
        if slow.iter().any(|s| s == id) {
            2
        } else {
            1
        }
    })
    .await;
    // A claim that ended with its worker is the platform's doing, not the documents': no
    // attempt is charged for it, only an interruption (a document that keeps bringing its
    // workers down fails after ten). Each document's one attempt is its transfer that worked.
    for d in &docs {
        assert_eq!(doc(&job, &d.id)["attempts"], 1, "{}", d.id);
    }
    let interrupted: Vec<i32> =
        sqlx::query_scalar("SELECT interruptions FROM documents ORDER BY position")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(interrupted, vec![1; docs.len()], "one interruption each");
    // The dead worker's in_progress rows were taken again and finished.
    eventually("no task row is left", WAIT, || async {
        count(&pool, "SELECT count(*) FROM fang_tasks").await == 0
    })
    .await;
    rescuer.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_task_run_three_times_still_transfers_each_document_once() {
    // What fang's racy fetch could do: the same batch handed to several workers. Here every
    // task row exists three times over, and two worker processes run them all.
    let court = Court::start().await;
    let n = number(107);
    let docs = small_docs(40);
    court.add_process(&n, docs.clone());
    let api = TestApp::spawn_with(
        court,
        Options {
            role: Role::SERVE,
            batch_size: 4,
            ..Options::default()
        },
    )
    .await;
    let pool = api.db.pool().await;
    let id = job_id(&api.start(&n, false).await);
    let copied = sqlx::query(
        "INSERT INTO fang_tasks (metadata, task_type, scheduled_at)
         SELECT metadata, task_type, scheduled_at FROM fang_tasks, generate_series(1, 2)",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(copied.rows_affected(), 20);
    assert_eq!(
        task_states(&pool, &id).await,
        HashMap::from([("new".to_string(), 30)])
    );

    let one = api.another(worker_options(4)).await;
    let two = api.another(worker_options(4)).await;
    let job = api.wait_terminal(&id, WAIT).await;

    assert_all_stored(&api, &[&api.court], &n, &job, &docs, |_| 1).await;
    eventually("all 30 task rows ran and are gone", WAIT, || async {
        count(&pool, "SELECT count(*) FROM fang_tasks").await == 0
    })
    .await;
    one.stop().await;
    two.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_in_progress_row_is_fetched_again_and_a_live_one_is_not() {
    let (_db, pool) = queue_db(4).await;
    let kind = "stale-probe";
    let abandoned = insert_task(&pool, kind, "in_progress", "0 seconds", "1 hour").await;
    let _running = insert_task(&pool, kind, "in_progress", "0 seconds", "0 seconds").await;
    let queue = PgQueue::new(
        pool.clone(),
        QueueSettings {
            stale_after: Duration::from_secs(5),
        },
    );
    let types = vec![kind.to_string()];

    let taken = queue.fetch(&types).await.unwrap().expect("the stale row");
    assert_eq!(taken.task.id, abandoned);
    assert_eq!(
        taken.task.retries, 1,
        "taking an abandoned row counts a retry"
    );
    assert!(
        queue.fetch(&types).await.unwrap().is_none(),
        "neither the live row nor the one just taken again is handed out"
    );
}

// ---------------------------------------------------------------------------------------------
// (c) an undecodable row is failed, and the worker goes on
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undecodable_task_is_failed_and_kept_and_the_worker_goes_on() {
    let court = Court::start().await;
    let n = number(105);
    let docs = small_docs(6);
    court.add_process(&n, docs.clone());
    // One worker only: if the bad row ended it, nothing would transfer the job below.
    let app = TestApp::spawn_with(
        court,
        Options {
            workers: 1,
            ..Options::default()
        },
    )
    .await;
    let pool = app.db.pool().await;
    let bad: Uuid = sqlx::query_scalar(
        "INSERT INTO fang_tasks (metadata, task_type, scheduled_at)
         VALUES ('{\"type\":\"NoSuchTask\"}', 'download', now()) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let state = |pool: PgPool| async move {
        sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT state::text, error_message FROM fang_tasks WHERE id = $1",
        )
        .bind(bad)
        .fetch_optional(&pool)
        .await
        .unwrap()
    };
    eventually("the worker took the bad row", WAIT, || async {
        state(pool.clone()).await.is_some_and(|(s, _)| s != "new")
    })
    .await;

    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_all_stored(&app, &[&app.court], &n, &job, &docs, |_| 1).await;

    let (state, error) = state(pool.clone()).await.expect("the failed row is kept");
    assert_eq!(state, "failed");
    let error = error.unwrap_or_default();
    assert!(error.contains("cannot decode task"), "{error}");
    assert!(error.contains("NoSuchTask"), "{error}");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// (d) finished tasks are deleted, failed ones kept
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_completed_jobs_tasks_are_deleted() {
    let court = Court::start().await;
    let n = number(106);
    let docs = small_docs(10);
    court.add_process(&n, docs.clone());
    let api = TestApp::spawn_with(
        court,
        Options {
            role: Role::SERVE,
            batch_size: 2,
            ..Options::default()
        },
    )
    .await;
    let pool = api.db.pool().await;
    let id = job_id(&api.start(&n, false).await);
    assert_eq!(
        task_states(&pool, &id).await,
        HashMap::from([("new".to_string(), 5)])
    );

    let worker = api.another(worker_options(2)).await;
    let job = api.wait_terminal(&id, WAIT).await;
    assert_all_stored(&api, &[&api.court], &n, &job, &docs, |_| 1).await;
    eventually("the job's finished tasks are deleted", WAIT, || async {
        task_states(&pool, &id).await.is_empty()
    })
    .await;
    assert_eq!(count(&pool, "SELECT count(*) FROM fang_tasks").await, 0);
    worker.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_that_fail_or_panic_are_kept_with_their_error_and_successes_deleted() {
    let (_db, pool) = queue_db(8).await;
    let kind = "retention-probe";
    let mut ids = HashMap::new();
    for (n, end) in [
        (1, End::Succeed),
        (2, End::Fail),
        (3, End::Panic),
        (4, End::Succeed),
    ] {
        let task = Probe {
            kind: kind.into(),
            n,
            end,
        };
        ids.insert(end, queue::enqueue(&pool, &task, None).await.unwrap());
    }
    let workers = probe_workers(&pool, kind, 2).await;
    eventually("every probe ran", WAIT, || async {
        count(
            &pool,
            "SELECT count(*) FROM fang_tasks WHERE state IN ('new', 'retried', 'in_progress')",
        )
        .await
            == 0
    })
    .await;
    workers.shutdown().await;

    let rows: Vec<(Uuid, String, Option<String>)> =
        sqlx::query_as("SELECT id, state::text, error_message FROM fang_tasks ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let by_id: HashMap<Uuid, (String, Option<String>)> =
        rows.into_iter().map(|(id, s, e)| (id, (s, e))).collect();
    assert_eq!(by_id.len(), 2, "only the failed tasks are kept: {by_id:?}");
    let (state, error) = &by_id[&ids[&End::Fail]];
    assert_eq!(state, "failed");
    assert!(
        error
            .as_deref()
            .unwrap_or_default()
            .contains("probe 2 failed on purpose"),
        "{error:?}"
    );
    let (state, error) = &by_id[&ids[&End::Panic]];
    assert_eq!(state, "failed");
    assert!(
        error
            .as_deref()
            .unwrap_or_default()
            .contains("probe 3 panicked on purpose"),
        "{error:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Hand-over: a worker's next task starts while its last piece of work finishes, never two
// pieces of work at once
// ---------------------------------------------------------------------------------------------

/// What the relay tasks of one kind saw.
#[derive(Default, Debug)]
struct RelayLog {
    running: u32,
    most_running: u32,
    in_lane: u32,
    most_in_lane: u32,
    done: Vec<u32>,
}

fn relay_logs() -> &'static std::sync::Mutex<HashMap<String, RelayLog>> {
    static LOGS: std::sync::OnceLock<std::sync::Mutex<HashMap<String, RelayLog>>> =
        std::sync::OnceLock::new();
    LOGS.get_or_init(Default::default)
}

fn relay_log<T>(kind: &str, f: impl FnOnce(&mut RelayLog) -> T) -> T {
    let mut logs = relay_logs().lock().unwrap();
    f(logs.entry(kind.to_string()).or_default())
}

/// A task with a set-up (outside the lane) and a piece of work (in the lane), which hands
/// the worker over when its work starts, if told to.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Relay {
    kind: String,
    n: u32,
    hands_over: bool,
}

#[typetag::serde]
#[async_trait]
impl AsyncRunnable for Relay {
    async fn run(&self, _queue: &dyn AsyncQueueable) -> Result<(), FangError> {
        relay_log(&self.kind, |log| {
            log.running += 1;
            log.most_running = log.most_running.max(log.running);
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let lanes = autos::queue::worker::lanes().expect("run by a worker");
        let lane = lanes.acquire_owned().await.expect("lanes open");
        relay_log(&self.kind, |log| {
            log.in_lane += 1;
            log.most_in_lane = log.most_in_lane.max(log.in_lane);
        });
        if self.hands_over {
            autos::queue::worker::hand_over();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        relay_log(&self.kind, |log| log.in_lane -= 1);
        drop(lane);
        relay_log(&self.kind, |log| {
            log.running -= 1;
            log.done.push(self.n);
        });
        Ok(())
    }
    fn task_type(&self) -> String {
        self.kind.clone()
    }
}

async fn run_relays(kind: &str, hands_over: bool) -> RelayLog {
    let (_db, pool) = queue_db(8).await;
    for n in 0..5 {
        let task = Relay {
            kind: kind.into(),
            n,
            hands_over,
        };
        queue::enqueue(&pool, &task, None).await.unwrap();
    }
    let workers = probe_workers(&pool, kind, 1).await;
    eventually("every relay ran", WAIT, || async {
        relay_log(kind, |log| log.done.len()) == 5
    })
    .await;
    workers.shutdown().await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM fang_tasks").await,
        0,
        "finished tasks are deleted, the last one at shutdown"
    );
    relay_logs().lock().unwrap().remove(kind).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_that_hands_over_lets_the_next_one_set_up_while_it_works() {
    let log = run_relays("relay-hand-over", true).await;
    let mut done = log.done.clone();
    done.sort();
    assert_eq!(done, vec![0, 1, 2, 3, 4], "each task ran once: {log:?}");
    assert_eq!(
        log.most_running, 2,
        "the next task started during its predecessor's work, and no third: {log:?}"
    );
    assert_eq!(
        log.most_in_lane, 1,
        "never two pieces of work at once: {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_that_does_not_hand_over_runs_alone() {
    let log = run_relays("relay-alone", false).await;
    assert_eq!(log.done.len(), 5, "{log:?}");
    assert_eq!(log.most_running, 1, "{log:?}");
    assert_eq!(log.most_in_lane, 1, "{log:?}");
}

// ---------------------------------------------------------------------------------------------
// (e) uniq holds under concurrent enqueues
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_uniq_task_enqueued_20_times_at_once_is_one_row() {
    let (_db, pool) = queue_db(24).await;
    // Ten rounds, each a different task enqueued by 20 concurrent calls: a race that one round
    // may miss does not escape ten.
    for round in 0..10 {
        let task = UniqProbe {
            key: format!("round {round}"),
        };
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let pool = pool.clone();
                let task = task.clone();
                tokio::spawn(async move { queue::enqueue(&pool, &task, None).await })
            })
            .collect();
        let mut ids = Vec::new();
        for call in calls {
            ids.push(call.await.unwrap().map_err(|e| format!("{e:?}")));
        }
        let live: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM fang_tasks WHERE metadata->>'key' = $1
               AND state IN ('new', 'retried', 'in_progress')",
        )
        .bind(&task.key)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(live.len(), 1, "round {round}: one live row");
        let failed: Vec<&String> = ids.iter().filter_map(|id| id.as_ref().err()).collect();
        assert!(
            failed.is_empty(),
            "round {round}: {} of 20 enqueues failed: {failed:?}",
            failed.len()
        );
        assert!(
            ids.iter().all(|id| id.as_ref() == Ok(&live[0])),
            "round {round}: every enqueue returns the live row's id: {ids:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_uniq_task_enqueued_while_an_equal_one_is_being_inserted_gets_its_id() {
    // Deterministic form of the race above: the first enqueue happens in a transaction
    // (as `startDownload` does), and the others arrive before it commits.
    let (_db, pool) = queue_db(8).await;
    let task = UniqProbe {
        key: "in-a-transaction".into(),
    };
    let mut tx = pool.begin().await.unwrap();
    let first = queue::enqueue(&mut *tx, &task, None).await.unwrap();
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            let task = task.clone();
            tokio::spawn(async move { queue::enqueue(&pool, &task, None).await })
        })
        .collect();
    // Let them reach the unique index and wait on the open transaction.
    eventually("the other enqueues wait on the first", WAIT, || async {
        count(
            &pool,
            "SELECT count(*) FROM pg_stat_activity
             WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO fang_tasks%'
               AND datname = current_database()",
        )
        .await
            == 3
    })
    .await;
    tx.commit().await.unwrap();
    for call in waiting {
        let id = call.await.unwrap().map_err(|e| format!("{e:?}"));
        assert_eq!(id, Ok(first), "a concurrent enqueue of the same task");
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM fang_tasks").await, 1);
}

// ---------------------------------------------------------------------------------------------
// (a) the fetch itself is exclusive
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_fetchers_take_each_of_200_rows_once() {
    let (_db, pool) = queue_db(12).await;
    let kind = "fetch-probe";
    let mut inserted = HashSet::new();
    for n in 0..200 {
        let task = Probe {
            kind: kind.into(),
            n,
            end: End::Succeed,
        };
        inserted.insert(queue::enqueue(&pool, &task, None).await.unwrap());
    }
    assert_eq!(inserted.len(), 200);

    let queue = PgQueue::new(pool.clone(), QueueSettings::default());
    let fetchers: Vec<_> = (0..8)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let types = vec![kind.to_string()];
                let mut got = Vec::new();
                while let Some(claimed) = queue.fetch(&types).await.expect("fetch") {
                    got.push(claimed.task.id);
                }
                got
            })
        })
        .collect();
    let mut fetched = Vec::new();
    let mut busy = 0;
    for fetcher in fetchers {
        let got = fetcher.await.unwrap();
        busy += usize::from(!got.is_empty());
        fetched.extend(got);
    }
    let unique: HashSet<Uuid> = fetched.iter().copied().collect();
    assert_eq!(fetched.len(), unique.len(), "no row was fetched twice");
    assert_eq!(unique, inserted, "every row was fetched");
    assert!(busy > 1, "the fetchers really ran side by side");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM fang_tasks WHERE state = 'in_progress'"
        )
        .await,
        200
    );
}

// ---------------------------------------------------------------------------------------------
// The fetch's order, and its cost on a long queue
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_and_abandoned_tasks_are_fetched_earliest_first() {
    let (_db, pool) = queue_db(2).await;
    let kind = "order-probe";
    let due_10s = insert_task(&pool, kind, "new", "10 seconds", "10 seconds").await;
    let abandoned_20s = insert_task(&pool, kind, "in_progress", "20 seconds", "1 hour").await;
    let retried_5s = insert_task(&pool, kind, "retried", "5 seconds", "5 seconds").await;
    let abandoned_7s = insert_task(&pool, kind, "in_progress", "7 seconds", "1 hour").await;
    let _future = insert_task(&pool, kind, "new", "-1 hour", "0 seconds").await;
    let _live = insert_task(&pool, kind, "in_progress", "30 seconds", "0 seconds").await;
    let _failed = insert_task(&pool, kind, "failed", "40 seconds", "1 hour").await;
    let _other_type = insert_task(&pool, "other-probe", "new", "50 seconds", "1 hour").await;
    let queue = PgQueue::new(
        pool.clone(),
        QueueSettings {
            stale_after: Duration::from_secs(60),
        },
    );
    let types = vec![kind.to_string()];
    let mut order = Vec::new();
    while let Some(claimed) = queue.fetch(&types).await.unwrap() {
        order.push(claimed.task.id);
    }
    assert_eq!(
        order,
        vec![abandoned_20s, due_10s, abandoned_7s, retried_5s],
        "due and abandoned tasks of the asked type, by schedule; not the future, live, failed \
         or other-typed ones"
    );
}

/// What `EXPLAIN ANALYZE` says the scans of `fang_tasks` read, summed over the plan.
/// Rows (and index entries) that the plan `plan`, run with `EXPLAIN ANALYZE`, read from
/// `table` and its indexes (whose names start with the table's).
fn rows_read(plan: &Value, table: &str) -> f64 {
    let mut total = 0.0;
    let node = plan["Node Type"].as_str().unwrap_or_default();
    let on_table = plan["Relation Name"] == table
        || plan["Index Name"]
            .as_str()
            .is_some_and(|index| index.starts_with(&format!("{table}_")));
    if on_table && node.contains("Scan") {
        total += plan["Actual Rows"].as_f64().unwrap_or(0.0)
            * plan["Actual Loops"].as_f64().unwrap_or(1.0);
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        total += rows_read(child, table);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_from_a_queue_of_5000_tasks_reads_a_handful_of_rows() {
    let (_db, pool) = queue_db(2).await;
    let kind = "long-queue-probe";
    // One job's batches, as `enqueue_many` writes them: one round each.
    insert_rounds(&pool, kind, 5000, 1).await;
    sqlx::query("ANALYZE fang_tasks")
        .execute(&pool)
        .await
        .unwrap();
    let plan = explain_fetch(&pool, kind).await;
    let read = rows_read(&plan[0]["Plan"], "fang_tasks");
    assert!(
        (1.0..=5.0).contains(&read),
        "the fetch read {read} rows of fang_tasks to take one: {plan:#}"
    );
    // And the earliest is the one it takes.
    let queue = PgQueue::new(pool.clone(), QueueSettings::default());
    let first = queue
        .fetch(&[kind.to_string()])
        .await
        .unwrap()
        .expect("a task");
    assert_eq!(first.task.metadata["n"], 1);
}

/// `count` probe tasks of `kind` due a minute ago (the `n`th `n × step_ms` ms later), in rounds
/// 1 to `count`, as `enqueue_many` writes a job's batches.
async fn insert_rounds(pool: &PgPool, kind: &str, count: i32, step_ms: i32) {
    sqlx::query(
        "INSERT INTO fang_tasks (metadata, task_type, scheduled_at, created_at, round)
         SELECT jsonb_build_object('type', 'Probe', 'kind', $1::text, 'n', n, 'end', 'Succeed'),
                $1, now() - interval '1 minute' + n * $3 * interval '1 millisecond', now(), n
         FROM generate_series(1, $2) AS n",
    )
    .bind(kind)
    .bind(count)
    .bind(step_ms)
    .execute(pool)
    .await
    .unwrap();
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of a fetch of tasks of `kind`, rolled back.
async fn explain_fetch(pool: &PgPool, kind: &str) -> Value {
    let mut tx = pool.begin().await.unwrap();
    let plan: Value = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}",
        queue::fetch_statement()
    ))
    .bind(vec![kind.to_string()])
    .bind(60.0f64)
    .bind(Vec::<Uuid>::new())
    .bind(Vec::<Uuid>::new())
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    plan
}

/// Pages a fetch of tasks of `kind` reads.
async fn fetch_pages(pool: &PgPool, kind: &str) -> i64 {
    let plan = explain_fetch(pool, kind).await;
    plan[0]["Plan"]["Shared Hit Blocks"].as_i64().unwrap_or(0)
        + plan[0]["Plan"]["Shared Read Blocks"].as_i64().unwrap_or(0)
}

/// Tasks taken and finished leave dead entries at the front of the fetch's index, which every
/// fetch walks until a vacuum: the sweeper's vacuum of the queue brings a fetch back to a few
/// pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vacuum_of_the_queue_spares_fetches_the_tasks_done() {
    let (_db, pool) = queue_db(2).await;
    let kind = "dead-front-probe";
    insert_rounds(&pool, kind, 3000, 0).await;
    // The first 2,000 taken and done, as workers leave them.
    sqlx::query("UPDATE fang_tasks SET state = 'in_progress' WHERE round <= 2000")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM fang_tasks WHERE round <= 2000")
        .execute(&pool)
        .await
        .unwrap();
    let before = fetch_pages(&pool, kind).await;
    assert!(
        queue::vacuum_if_bloated(&pool, -1).await.unwrap(),
        "vacuumed"
    );
    let after = fetch_pages(&pool, kind).await;
    assert!(
        after * 3 < before,
        "a fetch read {before} pages over 2,000 tasks done, {after} after the vacuum"
    );
    let queue = PgQueue::new(pool.clone(), QueueSettings::default());
    let first = queue
        .fetch(&[kind.to_string()])
        .await
        .unwrap()
        .expect("a task");
    assert_eq!(
        first.task.metadata["n"], 2001,
        "the first task still waiting"
    );
}

// ---------------------------------------------------------------------------------------------
// Plans of the batch transitions on a table not yet analyzed
// ---------------------------------------------------------------------------------------------

/// A fresh database with one job of `n` documents (the first `processing` of them PROCESSING
/// under the claim token returned, the rest PENDING), never analyzed: the state in which the
/// pool's connections make their generic plans after a deployment.
async fn job_of(n: i32, processing: i32) -> (TestDb, PgPool, Uuid, Uuid) {
    let (db, pool) = queue_db(2).await;
    let (process, job, token) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    sqlx::query("INSERT INTO processes (id, number) VALUES ($1, '1500345-31.2017.8.26.0248')")
        .bind(process)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO download_jobs (id, tenant_id, process_id, status, total, pending, processing)
         VALUES ($1, (SELECT id FROM tenants WHERE slug = 'default'), $2, 'RUNNING', $3, $3 - $4,
                 $4)",
    )
    .bind(job)
    .bind(process)
    .bind(n)
    .bind(processing)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO documents (process_id, job_id, source_id, position, name, url, status,
                                claim_token, lease_until)
         SELECT $1, $2, 'd' || i, i, 'Documento ' || i, 'http://court/' || i,
                CASE WHEN i < $4 THEN 'PROCESSING' ELSE 'PENDING' END,
                CASE WHEN i < $4 THEN $5::uuid END,
                CASE WHEN i < $4 THEN now() + interval '1 minute' END
         FROM generate_series(0, $3 - 1) AS i",
    )
    .bind(process)
    .bind(job)
    .bind(n)
    .bind(processing)
    .bind(token)
    .execute(&pool)
    .await
    .unwrap();
    // The job's document list: an active job covering them is what makes documents wanted.
    sqlx::query(
        "INSERT INTO job_documents (job_id, document_id, position)
         SELECT $1, id, position FROM documents WHERE job_id = $1",
    )
    .bind(job)
    .execute(&pool)
    .await
    .unwrap();
    (db, pool, job, token)
}

/// `EXPLAIN ANALYZE` of `statement` run as the pool runs it — prepared, with the generic plan
/// its connections keep — with `arguments` (SQL literals), rolled back.
async fn explain_prepared(pool: &PgPool, statement: &str, types: &str, arguments: &str) -> Value {
    let mut tx = pool.begin().await.unwrap();
    sqlx::raw_sql(&format!("PREPARE probe ({types}) AS {statement}"))
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Value = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE probe ({arguments})"
    ))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    plan
}

/// How many times the plan unpacked arrays (function scans of `unnest`; the counts'
/// function, `autos_shift_counts`, is another function scan, run once, not counted).
fn function_scan_loops(plan: &Value) -> f64 {
    let mut total = 0.0;
    if plan["Node Type"] == "Function Scan" && plan["Function Name"] != "autos_shift_counts" {
        total += plan["Actual Loops"].as_f64().unwrap_or(1.0);
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        total += function_scan_loops(child);
    }
    total
}

/// Rows that went through the nodes of `plan`, every node and loop counted: the work of the
/// plan, whatever it reads.
fn rows_handled(plan: &Value) -> f64 {
    let mut total =
        plan["Actual Rows"].as_f64().unwrap_or(0.0) * plan["Actual Loops"].as_f64().unwrap_or(1.0);
    for child in plan["Plans"].as_array().into_iter().flatten() {
        total += rows_handled(child);
    }
    total
}

fn uuid_array(ids: &[Uuid]) -> String {
    let list: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    format!("'{{{}}}'::uuid[]", list.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_of_five_documents_reads_them_alone_in_a_job_of_5000() {
    let (_db, pool, _job, _) = job_of(5000, 0).await;
    let batch: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM documents WHERE position BETWEEN 2500 AND 2504 ORDER BY position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let plan = explain_prepared(
        &pool,
        autos::db::documents::CLAIM_STATEMENT,
        "uuid[], uuid, float8",
        &format!("{}, gen_random_uuid(), 60", uuid_array(&batch)),
    )
    .await;
    assert_eq!(
        plan[0]["Plan"]["Actual Rows"], 5,
        "all five claimed: {plan:#}"
    );
    let read = rows_read(&plan[0]["Plan"], "documents");
    assert!(
        read <= 20.0,
        "the claim read {read} rows or index entries of documents to take five: {plan:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_30_documents_unpacks_them_once_and_reads_them_alone() {
    // A small table, as after a deployment: its generic plan scans it rather than an index.
    let (_db, pool, job, token) = job_of(200, 100).await;
    let ended: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM documents WHERE position BETWEEN 50 AND 79 ORDER BY position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let each = |value: &str, ty: &str| format!("array_fill({value}::{ty}, ARRAY[{}])", ended.len());
    let arguments = [
        each(&format!("'{token}'"), "uuid"),
        uuid_array(&ended),
        each("'AVAILABLE'", "text"),
        each("NULL", "text"),
        each("'processos/x/documentos/d/Documento.pdf'", "text"),
        each(&format!("'{}'", "0".repeat(64)), "text"),
        each("100", "bigint"),
        each("'application/pdf'", "text"),
        each("NULL", "timestamptz"),
        each("NULL", "uuid"),
        // Each one an attempt, none an interruption.
        each("1", "int"),
        each("0", "int"),
    ]
    .join(", ");
    let plan = explain_prepared(
        &pool,
        autos::db::documents::SETTLE_STATEMENT,
        "uuid[], uuid[], text[], text[], text[], text[], bigint[], text[], timestamptz[], uuid[], \
         int[], int[]",
        &arguments,
    )
    .await;
    let jobs = &plan[0]["Plan"];
    assert_eq!(jobs["Actual Rows"], 1, "the job's counts moved: {plan:#}");
    let unpacked = function_scan_loops(jobs);
    assert_eq!(
        unpacked, 1.0,
        "the endings were unpacked {unpacked} times (once per document in progress?): {plan:#}"
    );
    // Each document finds its ending; no step goes through every ending for each document
    // (the square of the endings written together: 900 rows for 30).
    let handled = rows_handled(jobs);
    assert!(
        handled <= 300.0,
        "settling 30 documents handled {handled} rows: {plan:#}"
    );
    // Each one's index entry and row (a bitmap scan of the key counts both), a few more.
    let read = rows_read(jobs, "documents");
    assert!(
        read <= 70.0,
        "settling 30 documents read {read} rows or index entries of documents: {plan:#}"
    );
    let available: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM documents WHERE job_id = $1 AND status = 'AVAILABLE'",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        available, 0,
        "EXPLAIN ANALYZE ran in a transaction rolled back"
    );
}

/// Rows and index entries of `table` read so far by the transaction `tx` (its own statistics,
/// not yet reported).
async fn read_in_transaction(tx: &mut sqlx::PgConnection, table: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)
         FROM pg_stat_xact_user_tables WHERE relname = $1",
    )
    .bind(table)
    .fetch_one(&mut *tx)
    .await
    .unwrap()
}

/// The counts' function (`autos_shift_counts`, inside every claim and ending) is where a job's
/// statements read all of its documents' entries when its plan started from the active jobs:
/// made on a table of a few rows, at PostgreSQL's default costs, that is the plan a generic
/// one chose. A claim of five in a job of 5,000 reads a few entries of `job_documents`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_of_five_documents_counts_them_alone_in_a_job_of_5000() {
    let (_db, pool, job, _) = job_of(5000, 0).await;
    let batch: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM documents WHERE position BETWEEN 2500 AND 2504 ORDER BY position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut tx = pool.begin().await.unwrap();
    // The worst case: generic plans at the default cost of a random page.
    sqlx::raw_sql("SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL random_page_cost = 4")
        .execute(&mut *tx)
        .await
        .unwrap();
    let before = read_in_transaction(&mut tx, "job_documents").await;
    let claimed = sqlx::query(autos::db::documents::CLAIM_STATEMENT)
        .bind(&batch)
        .bind(Uuid::new_v4())
        .bind(60.0f64)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 5, "all five claimed");
    let read = read_in_transaction(&mut tx, "job_documents").await - before;
    let processing: i32 = sqlx::query_scalar("SELECT processing FROM download_jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(processing, 5, "the job's counts moved");
    assert!(
        read <= 20,
        "a claim of five read {read} entries of job_documents in a job of 5,000"
    );
}

// ---------------------------------------------------------------------------------------------
// The sweeper's turns
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_processes_make_one_sweeper_pass_per_interval_between_them() {
    use autos::jobs::sweeper::take_turn;
    let (_db, pool) = queue_db(4).await;
    let interval = Duration::from_millis(600);
    // Four processes look at once: one of them makes the pass.
    let first: Vec<bool> = futures::future::join_all((0..4).map(|_| take_turn(&pool, interval)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(first.iter().filter(|t| **t).count(), 1, "{first:?}");
    // Until the interval has passed, nobody else.
    assert!(!take_turn(&pool, interval).await.unwrap());
    tokio::time::sleep(interval).await;
    // Then the first to look, once.
    assert!(take_turn(&pool, interval).await.unwrap());
    assert!(!take_turn(&pool, interval).await.unwrap());
    // A process configured with a shorter interval looks on its own schedule.
    assert!(take_turn(&pool, Duration::ZERO).await.unwrap());
}

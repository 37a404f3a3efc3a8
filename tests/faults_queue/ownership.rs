//! A task row belongs to the fetch that handed it out: once a stale worker's task was taken
//! again, whatever that worker writes late — heartbeat, failure, retry, deletion when done —
//! changes nothing, and the worker that has the row now runs and ends it normally.

use super::*;
use autos::queue::{PgQueue, QueueSettings, TaskClaim, WorkerPool, WorkerSettings};
use std::sync::Arc;
use std::time::Instant;

/// The row as the test compares it: state, claim, retries, error, when last touched.
type RowState = (
    String,
    Option<Uuid>,
    i32,
    Option<String>,
    chrono::DateTime<chrono::Utc>,
);

async fn row(pool: &PgPool, id: Uuid) -> Option<RowState> {
    sqlx::query_as(
        "SELECT state::text, claim, retries, error_message, updated_at FROM fang_tasks
         WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// Makes the row of `id` look abandoned (untouched for an hour).
async fn go_stale(pool: &PgPool, id: Uuid) {
    sqlx::query("UPDATE fang_tasks SET updated_at = now() - interval '1 hour' WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
}

/// Every late write a worker can make with `claim`: none may change anything.
async fn late_writes(queue: &PgQueue, claim: TaskClaim, kind: &str) {
    assert!(!queue.touch(claim).await.unwrap(), "a late heartbeat");
    assert!(
        !queue.fail(claim, "late failure").await.unwrap(),
        "a late failure"
    );
    assert!(
        !queue.retry(claim, 0, "late retry").await.unwrap(),
        "a late retry"
    );
    assert_eq!(
        queue.remove_tasks(&[claim]).await.unwrap(),
        0,
        "a late deletion"
    );
    // The deletion that rides on the worker's next fetch (there is nothing else to take).
    assert!(queue
        .finish_and_fetch(&[claim], &[kind.to_string()])
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_workers_late_writes_change_nothing_and_the_new_owner_ends_the_task() {
    let (_db, pool) = queue_db(2).await;
    let kind = "owner-probe";
    let queue = PgQueue::new(
        pool.clone(),
        QueueSettings {
            stale_after: Duration::from_secs(5),
        },
    );
    let id = enqueue_job(&pool, kind, "A", 1).await[0];
    let first = queue.fetch(&[kind.to_string()]).await.unwrap().unwrap();
    assert_eq!(first.claim.id, id);

    // Its worker stops answering; another takes the row again.
    go_stale(&pool, id).await;
    let second = queue.fetch(&[kind.to_string()]).await.unwrap().unwrap();
    assert_eq!(second.claim.id, id);
    assert_ne!(second.claim.token, first.claim.token, "a new claim");
    assert!(queue.touch(second.claim).await.unwrap());
    let held = row(&pool, id).await.expect("the row");
    assert_eq!(
        (held.0.as_str(), held.1, held.2, held.3.as_deref()),
        ("in_progress", Some(second.claim.token), 1, None)
    );

    late_writes(&queue, first.claim, kind).await;
    assert_eq!(
        row(&pool, id).await,
        Some(held),
        "the row is still the second worker's, as it left it"
    );

    // The second worker ends it normally: its deletion rides on its next fetch.
    assert!(queue.touch(second.claim).await.unwrap());
    assert!(queue
        .finish_and_fetch(&[second.claim], &[kind.to_string()])
        .await
        .unwrap()
        .is_none());
    assert_eq!(row(&pool, id).await, None, "finished and deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_worker_cannot_undo_what_the_new_owner_wrote() {
    let (_db, pool) = queue_db(2).await;
    let kind = "owner-retry-probe";
    let queue = PgQueue::new(pool.clone(), QueueSettings::default());
    let id = enqueue_job(&pool, kind, "A", 1).await[0];
    let first = queue.fetch(&[kind.to_string()]).await.unwrap().unwrap();
    go_stale(&pool, id).await;
    let second = queue.fetch(&[kind.to_string()]).await.unwrap().unwrap();

    // The new owner schedules a retry; the stale one, late, can neither run it nor end it.
    assert!(queue
        .retry(second.claim, 3600, "the new owner's error")
        .await
        .unwrap());
    let retried = row(&pool, id).await.expect("the row");
    assert_eq!(
        (retried.0.as_str(), retried.3.as_deref()),
        ("retried", Some("the new owner's error"))
    );
    late_writes(&queue, first.claim, kind).await;
    // The new owner's own claim is spent too: the row is no longer in its hands.
    assert!(!queue.fail(second.claim, "twice").await.unwrap());
    assert_eq!(row(&pool, id).await, Some(retried));

    // And once failed for good, no late write revives or deletes it.
    sqlx::query("UPDATE fang_tasks SET scheduled_at = now() WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let third = queue.fetch(&[kind.to_string()]).await.unwrap().unwrap();
    assert!(queue.fail(third.claim, "for good").await.unwrap());
    let failed = row(&pool, id).await.expect("the row");
    late_writes(&queue, second.claim, kind).await;
    late_writes(&queue, third.claim, kind).await;
    assert_eq!(row(&pool, id).await, Some(failed));
}

/// Workers running `kind` tasks; `stale_after` tells when another worker's row is abandoned,
/// `heartbeat` how often these workers touch their own.
async fn workers(
    pool: &PgPool,
    kind: &str,
    stale_after: Duration,
    heartbeat: Duration,
) -> WorkerPool {
    WorkerPool::start(
        PgQueue::new(pool.clone(), QueueSettings { stale_after }),
        WorkerSettings {
            workers: 1,
            task_types: vec![kind.to_string()],
            poll_interval: Duration::from_millis(100),
            heartbeat,
            shutdown_grace: Duration::from_secs(10),
        },
        Arc::new(()),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_a_task_was_taken_from_leave_it_to_its_new_owner() {
    let (_db, pool) = queue_db(6).await;
    let kind = "owner-workers-probe";
    // A worker whose heartbeats do not come (a paused process, a network split): its row
    // goes stale while its task still runs.
    let stalled = workers(
        &pool,
        kind,
        Duration::from_secs(60),
        Duration::from_secs(3600),
    )
    .await;
    let probe = QueueProbe {
        kind: kind.into(),
        job: "A".into(),
        n: 0,
        sleep_ms: 2500,
    };
    let id = autos::queue::enqueue(&pool, &probe, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while runs_of(kind).0 < 1 {
        assert!(Instant::now() < deadline, "the task does not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another process, which takes rows untouched for a second.
    let rescuer = workers(
        &pool,
        kind,
        Duration::from_secs(1),
        Duration::from_millis(200),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while runs_of(kind).0 < 2 {
        assert!(
            Instant::now() < deadline,
            "the stale row is not taken again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let taken_again = row(&pool, id).await.expect("the row");
    assert_eq!((taken_again.0.as_str(), taken_again.2), ("in_progress", 1));

    // The stalled worker's task ends first, and that worker moves on (fetching, which deletes
    // what it finished): the row stays the rescuer's.
    let deadline = Instant::now() + Duration::from_secs(10);
    while runs_of(kind).1 < 1 {
        assert!(
            Instant::now() < deadline,
            "the stalled worker's task does not end"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stalled.shutdown().await;
    let after = row(&pool, id).await.expect("the row is still there");
    assert_eq!(
        (after.0.as_str(), after.1, after.2),
        ("in_progress", taken_again.1, 1),
        "still the rescuer's, running"
    );
    assert_eq!(runs_of(kind), (2, 1));

    // The rescuer ends it, and its deletion goes through.
    let deadline = Instant::now() + Duration::from_secs(10);
    while row(&pool, id).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the rescuer does not end the task"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(runs_of(kind), (2, 2));
    rescuer.shutdown().await;
}

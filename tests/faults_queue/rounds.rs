//! The queue's order, on the queue's own functions: jobs take turns, one task each per round; a
//! job enqueued later joins at the round being served; a delayed task (a retry) is taken as
//! soon as it is due, ahead of the rounds; and a fetch reads a handful of rows however much
//! waits.

use super::*;
use autos::queue::{self, PgQueue, QueueSettings};
use std::time::Instant;

/// Fetches `n` tasks of `kind`; returns their labels (see [`label`]).
async fn take(queue: &PgQueue, kind: &str, n: usize) -> Vec<String> {
    let mut taken = Vec::new();
    for _ in 0..n {
        let claimed = queue
            .fetch(&[kind.to_string()])
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("a task after {taken:?}"));
        taken.push(label(&claimed.task.metadata));
    }
    taken
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_take_turns_and_a_later_job_joins_the_round_being_served() {
    let (_db, pool) = queue_db(2).await;
    let kind = "rounds-probe";
    let queue = PgQueue::new(pool.clone(), QueueSettings::default());
    enqueue_job(&pool, kind, "A", 50).await;
    enqueue_job(&pool, kind, "B", 3).await;

    // Round 0: A0 then B0 (the older first), round 1: A1, B1, …: B, enqueued after all of A,
    // is done after three rounds instead of fifty.
    assert_eq!(
        take(&queue, kind, 8).await,
        ["A0", "B0", "A1", "B1", "A2", "B2", "A3", "A4"]
    );
    // A job enqueued now starts at the round being served (A's 5th), not at round 0 (ahead
    // of every task waiting) nor after A's last (behind all of them).
    take(&queue, kind, 2).await;
    enqueue_job(&pool, kind, "C", 2).await;
    assert_eq!(take(&queue, kind, 5).await, ["A7", "C0", "A8", "C1", "A9"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_tasks_wait_apart_and_run_as_soon_as_they_are_due() {
    let (_db, pool) = queue_db(2).await;
    let kind = "delay-probe";
    let queue = PgQueue::new(pool.clone(), QueueSettings::default());
    enqueue_job(&pool, kind, "A", 100).await;

    // A retry scheduled by a task (as a document's next attempt is), 3 s from now.
    let retry = QueueProbe {
        kind: kind.into(),
        job: "R".into(),
        n: 0,
        sleep_ms: 0,
    };
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(3000);
    let retry_id = queue::enqueue(&pool, &retry, Some(due)).await.unwrap();
    let round: Option<i64> = scalar(
        &pool,
        &format!("SELECT round FROM fang_tasks WHERE id = '{retry_id}'"),
    )
    .await;
    assert_eq!(round, None, "a task due later waits apart, in no round");

    // And a task that failed, scheduled again by its worker 1 s from now.
    let failed = queue.fetch(&[kind.to_string()]).await.unwrap().unwrap();
    assert_eq!(label(&failed.task.metadata), "A0");
    let retried_at = Instant::now();
    assert!(queue.retry(failed.claim, 1, "boom").await.unwrap());
    let (state, round): (String, Option<i64>) =
        sqlx::query_as("SELECT state::text, round FROM fang_tasks WHERE id = $1")
            .bind(failed.task.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), round), ("retried", None));

    // Until they are due, the rounds go on.
    assert_eq!(take(&queue, kind, 2).await, ["A1", "A2"]);
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(retried_at.elapsed())).await;
    let next = queue.fetch(&[kind.to_string()]).await.unwrap().unwrap();
    assert_eq!(
        (label(&next.task.metadata), next.task.retries),
        ("A0".to_string(), 1),
        "the retried task goes first once due, ahead of 97 tasks in rounds"
    );
    tokio::time::sleep(
        due.signed_duration_since(chrono::Utc::now())
            .to_std()
            .unwrap_or_default(),
    )
    .await;
    assert_eq!(
        take(&queue, kind, 2).await,
        ["R0", "A3"],
        "so does the retry enqueued for later, once due"
    );
}

/// `EXPLAIN ANALYZE` of the fetch of `kind` tasks as the pool runs it — prepared, with the
/// generic plan its connections keep (`plan_cache_mode = force_generic_plan`) — rolled back.
async fn explain_fetch(pool: &PgPool, kind: &str) -> Value {
    let mut tx = pool.begin().await.unwrap();
    sqlx::raw_sql(&format!(
        "PREPARE fetch_probe (text[], float8, uuid[], uuid[]) AS {}",
        queue::fetch_statement()
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    let plan: Value = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE fetch_probe ('{{{kind}}}', 60, '{{}}', '{{}}')"
    ))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    // A prepared statement outlives the transaction, and its connection goes back to the pool.
    sqlx::raw_sql("DEALLOCATE fetch_probe")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    plan[0]["Plan"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_reads_a_handful_of_rows_whatever_waits_in_the_queue() {
    let (_db, pool) = queue_db(2).await;
    let kind = "plan-probe";
    // Ten jobs of 2,000 tasks in rounds (20,000 due tasks), 5,000 retries due in an hour,
    // 1,000 failed tasks, and the 16 rows that 8 busy workers hold.
    sqlx::raw_sql(&format!(
        "INSERT INTO fang_tasks (metadata, task_type, scheduled_at, created_at, round)
         SELECT jsonb_build_object('type', 'QueueProbe', 'kind', '{kind}', 'job', 'J' || j,
                                   'n', n, 'sleep_ms', 0),
                '{kind}', now() - interval '1 minute' + j * interval '1 millisecond', now(), n
         FROM generate_series(0, 9) AS j, generate_series(0, 1999) AS n;
         INSERT INTO fang_tasks (metadata, task_type, state, scheduled_at, updated_at)
         SELECT jsonb_build_object('type', 'QueueProbe', 'kind', '{kind}', 'job', 'R',
                                   'n', n, 'sleep_ms', 0),
                '{kind}', CASE WHEN n <= 5000 THEN 'retried' WHEN n <= 6000 THEN 'failed'
                               ELSE 'in_progress' END::fang_task_state,
                now() + interval '1 hour', now()
         FROM generate_series(1, 6016) AS n;"
    ))
    .execute(&pool)
    .await
    .unwrap();

    for analyzed in [false, true] {
        if analyzed {
            sqlx::query("ANALYZE fang_tasks")
                .execute(&pool)
                .await
                .unwrap();
        }
        let plan = explain_fetch(&pool, kind).await;
        let ready = rows_read(&plan, &|scan| scan == "fang_tasks_ready");
        let delayed = rows_read(&plan, &|scan| scan == "fang_tasks_delayed");
        // Besides: the running rows, looked up (in the index, then the table) to find
        // abandoned ones — as many as the workers hold — and the row taken, by its id.
        let all = rows_read(&plan, &|scan| scan.starts_with("fang_tasks"));
        assert!(
            ready <= 2.0 && delayed <= 1.0 && all <= 40.0,
            "analyzed: {analyzed}: the fetch read {ready} entries of the rounds, {delayed} of \
             the delayed tasks, {all} in all: {plan:#}"
        );
    }

    // A delayed task now due is taken without looking at the rounds at all.
    sqlx::query(
        "UPDATE fang_tasks SET scheduled_at = now() - interval '1 second'
         WHERE id = (SELECT id FROM fang_tasks WHERE state = 'retried' LIMIT 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let plan = explain_fetch(&pool, kind).await;
    assert_eq!(
        rows_read(&plan, &|s| s == "fang_tasks_ready"),
        0.0,
        "{plan:#}"
    );
    assert!(
        rows_read(&plan, &|s| s == "fang_tasks_delayed") <= 2.0,
        "{plan:#}"
    );
    let queue = PgQueue::new(pool.clone(), QueueSettings::default());
    let first = queue.fetch(&[kind.to_string()]).await.unwrap().unwrap();
    assert_eq!(first.task.metadata["job"], "R");
    let second = queue.fetch(&[kind.to_string()]).await.unwrap().unwrap();
    assert_eq!(label(&second.task.metadata), "J00");
}

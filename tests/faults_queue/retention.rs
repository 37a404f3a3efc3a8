//! Retention: one sweeper pass deletes what is past its period — webhook deliveries that ended
//! (with their attempts), tasks that failed for good, audit entries, rate-limit windows — a
//! bounded batch at a time, and keeps what is recent or still pending.

use super::*;
use autos::app::Role;
use autos::jobs::sweeper::sweep;

/// autos without workers (so without a sweeper of its own): only the passes a test makes run.
async fn app() -> (TestApp, PgPool) {
    let options = Options {
        role: Role::SERVE,
        ..Options::default()
    };
    let app = TestApp::spawn_with(Court::start().await, options).await;
    let pool = app.db.pool().await;
    (app, pool)
}

async fn run(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_sweeper_pass_deletes_rows_past_their_retention_and_keeps_the_rest() {
    let (app, pool) = app().await;
    let settings = &app.services().settings;
    assert_eq!(
        (
            settings.delivery_retention.as_secs() / 86_400,
            settings.failed_task_retention.as_secs() / 86_400,
            settings.audit_retention.as_secs() / 86_400,
        ),
        (30, 30, 365),
        "the defaults this test is written for"
    );
    // Deliveries: ended 40 days ago (2), ended yesterday, and pending for 40 days — each with
    // an attempt.
    run(
        &pool,
        "INSERT INTO webhook_deliveries (tenant_id, url, message_id, event_type, status,
                                         attempts, updated_at)
         SELECT (SELECT id FROM tenants WHERE slug = 'acme'), 'https://example.com/hook',
                'msg_' || label, 'webhook.test', status, 1, now() - age
         FROM (VALUES ('old-delivered', 'DELIVERED', interval '40 days'),
                      ('old-failed', 'FAILED', interval '40 days'),
                      ('recent-delivered', 'DELIVERED', interval '1 day'),
                      ('old-pending', 'PENDING', interval '40 days')) AS d(label, status, age);
         INSERT INTO webhook_attempts (delivery_id, status_code, duration_ms)
         SELECT id, 500, 10 FROM webhook_deliveries;
         INSERT INTO fang_tasks (metadata, task_type, state, error_message, updated_at)
         SELECT '{}', 'retention-probe', state::fang_task_state, label, now() - age
         FROM (VALUES ('old-failed', 'failed', interval '40 days'),
                      ('recent-failed', 'failed', interval '1 day'),
                      ('old-new', 'new', interval '40 days')) AS t(label, state, age);
         INSERT INTO audit_log (at, action, target, outcome)
         VALUES (now() - interval '400 days', 'cancelJob', 'old', 'ok'),
                (now() - interval '300 days', 'cancelJob', 'recent', 'ok');
         INSERT INTO rate_usage (key_id, window_start, used)
         VALUES ('k1', date_trunc('minute', now()) - interval '2 hours', 10),
                ('k1', date_trunc('minute', now()) - interval '10 minutes', 10);",
    )
    .await;

    let swept = sweep(app.services()).await.expect("sweep");
    assert_eq!(
        (
            swept.pruned.deliveries,
            swept.pruned.failed_tasks,
            swept.pruned.audit_entries
        ),
        (2, 1, 1)
    );
    let deliveries: Vec<String> =
        sqlx::query_scalar("SELECT message_id FROM webhook_deliveries ORDER BY message_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(deliveries, ["msg_old-pending", "msg_recent-delivered"]);
    let attempts: i64 = scalar(&pool, "SELECT count(*) FROM webhook_attempts").await;
    assert_eq!(
        attempts, 2,
        "the deleted deliveries' attempts went with them"
    );
    let tasks: Vec<String> =
        sqlx::query_scalar("SELECT error_message FROM fang_tasks ORDER BY error_message")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(tasks, ["old-new", "recent-failed"], "only failed tasks go");
    let audit: Vec<String> =
        sqlx::query_scalar("SELECT target FROM audit_log WHERE target IN ('old', 'recent')")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(audit, ["recent"]);
    let windows: i64 = scalar(&pool, "SELECT count(*) FROM rate_usage").await;
    assert_eq!(windows, 1, "rate-limit windows older than an hour go");

    pool.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_goes_in_bounded_batches_over_several_passes() {
    let (app, pool) = app().await;
    // 12,500 tasks that failed 40 days ago: more than one pass deletes.
    run(
        &pool,
        "INSERT INTO fang_tasks (metadata, task_type, state, updated_at)
         SELECT '{}', 'retention-probe', 'failed', now() - interval '40 days' - n * interval '1 second'
         FROM generate_series(1, 12500) AS n",
    )
    .await;
    let first = sweep(app.services()).await.expect("sweep");
    assert_eq!(
        first.pruned.failed_tasks, 10_000,
        "ten batches of 1,000 in a pass"
    );
    let left: i64 = scalar(&pool, "SELECT count(*) FROM fang_tasks").await;
    assert_eq!(left, 2_500);
    // Oldest first: what is left is the most recent of them.
    let oldest_left: f64 = scalar(
        &pool,
        "SELECT extract(epoch FROM now() - min(updated_at))::float8 FROM fang_tasks",
    )
    .await;
    assert!(oldest_left < 40.0 * 86_400.0 + 2_600.0, "{oldest_left}");
    let second = sweep(app.services()).await.expect("sweep");
    assert_eq!(second.pruned.failed_tasks, 2_500);
    let left: i64 = scalar(&pool, "SELECT count(*) FROM fang_tasks").await;
    assert_eq!(left, 0);

    pool.close().await;
    app.stop().await;
}

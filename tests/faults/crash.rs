//! `autos work` killed (SIGKILL: nothing given back) in the middle of its batches, with a
//! single attempt per document: once the dead process's leases run out, another worker
//! takes its documents again. The transfers it cut count as interruptions, not attempts, so
//! no document fails.

use super::*;
use autos::app::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_worker_costs_interruptions_not_attempts() {
    let court = Court::start().await;
    let n = number(1801);
    let docs = slow_case(&court, &n, 10, 64 * 1024, Duration::from_secs(40));
    let app = TestApp::spawn_with(court, serve_only()).await;
    let pool = app.db.pool().await;
    // Leases of 3 s (see pipeline.rs on shorter ones); its own sweeper stays out of the way.
    let mut doomed = work_process(&app)
        .env("AUTOS_DOWNLOAD_MAX_ATTEMPTS", "1")
        .env("AUTOS_LEASE_MS", "3000")
        .env("AUTOS_SWEEP_INTERVAL_MS", "600000")
        .spawn()
        .expect("spawn autos work");
    let id = job_id(&app.start(&n, false).await);
    let under_way = mid_batch(&app, &pool, &id, &n, &docs, Some(&mut doomed)).await;
    doomed.start_kill().expect("SIGKILL");
    doomed.wait().await.expect("the killed process");

    speed_up(&app.court, &n, &docs);
    let second = app
        .another(Options {
            role: Role::WORK,
            max_attempts: 1,
            lease_ms: 3000,
            sweep_ms: 100,
            ..Options::default()
        })
        .await;
    let rows = completed(&app, &id, &n, &docs).await;
    for d in &docs {
        let r = row(&rows, &d.id);
        let gets = app.court.gets(&n, &d.id);
        if under_way.contains(&d.id) {
            assert_eq!(
                (r.interruptions, gets),
                (1, 2),
                "cut once, fetched again: {r:#?}"
            );
        } else {
            assert!(
                r.interruptions <= 1 && gets == 1,
                "held, never started: fetched once ({gets}): {r:#?}"
            );
        }
    }
    second.stop().await;
    pool.close().await;
    app.stop().await;
}

//! `autos work` stopped with SIGTERM, as a deploy stops it: it takes no more work at once,
//! gives back at once (PENDING, uncharged, due now) the documents it held but had not
//! started, lets the transfers under way finish within `AUTOS_SHUTDOWN_GRACE_SECS`, cuts and
//! gives back those still running after it, and exits. Another worker carries on at once:
//! nothing waits for a lease, nothing is charged, even with a single attempt per document.

use super::*;
use autos::app::Role;
use tokio::process::Child;

/// Ten documents: two batches of five, held by one process whose four lanes start four.
const DOCUMENTS: usize = 10;

/// Another worker, in-process, to finish the job.
async fn successor(app: &TestApp) -> autos::app::Application {
    app.another(Options {
        role: Role::WORK,
        ..Options::default()
    })
    .await
}

/// The documents other than `under_way`, as they are now.
fn not_started<'a>(now: &'a [Row], under_way: &[String]) -> Vec<&'a Row> {
    now.iter()
        .filter(|r| !under_way.contains(&r.source_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_transfers_finish_and_gives_the_rest_back_at_once() {
    let court = Court::start().await;
    let n = number(1701);
    let docs = slow_case(&court, &n, DOCUMENTS, 64 * 1024, Duration::from_secs(4));
    let app = TestApp::spawn_with(court, serve_only()).await;
    let pool = app.db.pool().await;
    // The default grace (30 s) and lease (60 s): neither may be what ends this.
    let mut first = work_process(&app).spawn().expect("spawn autos work");
    let id = job_id(&app.start(&n, false).await);
    let under_way = mid_batch(&app, &pool, &id, &n, &docs, Some(&mut first)).await;
    terminate(&first);

    // What it had not started is given back at once, for another worker to take now.
    let deadline = Deadline::after(
        Duration::from_secs(10),
        "the documents not started given back",
    );
    loop {
        let now = rows(&pool, &id).await;
        let waiting = not_started(&now, &under_way);
        if waiting.iter().all(|r| r.status == "PENDING") {
            for r in waiting {
                assert_eq!(
                    (r.attempts, r.interruptions, r.due_now),
                    (0, 0, true),
                    "{r:#?}"
                );
            }
            break;
        }
        deadline.check(now).await;
    }

    // It exits once its transfers have ended, long before the grace would run out.
    let status = exited(&mut first, Duration::from_secs(20)).await;
    assert!(status.success(), "autos work exited with {status}");
    let now = rows(&pool, &id).await;
    for r in &now {
        let expected = if under_way.contains(&r.source_id) {
            ("AVAILABLE", 1)
        } else {
            ("PENDING", 0)
        };
        assert_eq!((r.status.as_str(), r.attempts), expected, "{r:#?}");
        assert_eq!(r.interruptions, 0, "{r:#?}");
    }

    speed_up(&app.court, &n, &docs);
    let second = successor(&app).await;
    let rows = completed(&app, &id, &n, &docs).await;
    assert!(rows.iter().all(|r| r.interruptions == 0), "{rows:#?}");
    assert_eq!(
        gets(&app.court, &n, &docs),
        vec![1; DOCUMENTS],
        "every document fetched once"
    );
    second.stop().await;
    pool.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_after_the_grace_cuts_the_transfers_and_gives_them_back_uncharged() {
    let court = Court::start().await;
    let n = number(1702);
    // Transfers of 40 s, a grace of 1 s.
    let docs = slow_case(&court, &n, DOCUMENTS, 64 * 1024, Duration::from_secs(40));
    let app = TestApp::spawn_with(court, serve_only()).await;
    let pool = app.db.pool().await;
    let mut first = work_process(&app)
        .env("AUTOS_SHUTDOWN_GRACE_SECS", "1")
        .spawn()
        .expect("spawn autos work");
    let id = job_id(&app.start(&n, false).await);
    let under_way = mid_batch(&app, &pool, &id, &n, &docs, Some(&mut first)).await;
    terminate(&first);

    // Within the grace and the few seconds its batches take to give their documents back:
    // far sooner than its transfers would have ended.
    let status = exited(&mut first, Duration::from_secs(15)).await;
    assert!(status.success(), "autos work exited with {status}");
    for r in &rows(&pool, &id).await {
        assert_eq!(
            (r.status.as_str(), r.attempts, r.interruptions, r.due_now),
            ("PENDING", 0, 0, true),
            "given back uncharged, due now: {r:#?}"
        );
    }
    let deadline = Deadline::after(Duration::from_secs(10), "the cut transfers' bodies stopped");
    while app.court.slow_sending_now() > 0 {
        deadline.check(app.court.slow_sending_now()).await;
    }

    speed_up(&app.court, &n, &docs);
    let second = successor(&app).await;
    let rows = completed(&app, &id, &n, &docs).await;
    assert!(rows.iter().all(|r| r.interruptions == 0), "{rows:#?}");
    for d in &docs {
        let expected = if under_way.contains(&d.id) { 2 } else { 1 };
        assert_eq!(
            app.court.gets(&n, &d.id),
            expected,
            "{}: fetched again only if its transfer was cut",
            d.id
        );
    }
    second.stop().await;
    pool.close().await;
    app.stop().await;
}

/// An `autos work` process of a deploy: one attempt per document (any charge would fail
/// one), a grace of a second (shorter than a transfer: each deploy cuts some).
fn deployed(app: &TestApp) -> Child {
    work_process(app)
        .env("AUTOS_DOWNLOAD_MAX_ATTEMPTS", "1")
        .env("AUTOS_SHUTDOWN_GRACE_SECS", "1")
        .spawn()
        .expect("spawn autos work")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_deploys_in_a_row_fail_no_document() {
    const CASE_DOCUMENTS: usize = 24;
    const DEPLOYS: u32 = 3;
    let court = Court::start().await;
    let n = number(1703);
    let docs = slow_case(
        &court,
        &n,
        CASE_DOCUMENTS,
        64 * 1024,
        Duration::from_secs(3),
    );
    let app = TestApp::spawn_with(court, serve_only()).await;
    let pool = app.db.pool().await;
    let mut running = deployed(&app);
    let id = job_id(&app.start(&n, false).await);

    for deploy in 1..=DEPLOYS {
        // The running version has stored a few more documents and is transferring others.
        let deadline = Deadline::after(WAIT, "progress before the deploy");
        loop {
            let stored = counted(&pool, &id, "AVAILABLE").await;
            assert!(
                stored < CASE_DOCUMENTS,
                "the job ended before deploy {deploy}: nothing was deployed mid-job"
            );
            if stored >= 2 * deploy as usize && app.court.slow_sending_now() > 0 {
                break;
            }
            deadline.check(stored).await;
        }
        // The new version starts, the old one is told to stop.
        let next = deployed(&app);
        terminate(&running);
        let status = exited(&mut running, Duration::from_secs(20)).await;
        assert!(
            status.success(),
            "deploy {deploy}: autos work exited with {status}"
        );
        running = next;
    }

    let rows = completed(&app, &id, &n, &docs).await;
    assert!(rows.iter().all(|r| r.interruptions == 0), "{rows:#?}");
    let fetched = gets(&app.court, &n, &docs);
    let again: u32 = fetched.iter().sum::<u32>() - CASE_DOCUMENTS as u32;
    assert!(
        fetched.iter().all(|&g| g <= 1 + DEPLOYS) && again <= 4 * DEPLOYS,
        "each deploy cut four transfers at most: {fetched:?}"
    );
    terminate(&running);
    let status = exited(&mut running, Duration::from_secs(20)).await;
    assert!(status.success(), "autos work exited with {status}");
    pool.close().await;
    app.stop().await;
}

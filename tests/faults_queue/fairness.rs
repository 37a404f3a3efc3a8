//! Fair scheduling, end to end: jobs of any sizes, of one tenant or several, share the workers
//! one batch each per round, so a small job started after a huge one ends within seconds.

use super::*;
use serde_json::json;
use std::time::Instant;

const WAIT: Duration = Duration::from_secs(120);

/// `count` documents `d1..` of 1 KiB.
fn docs(count: usize, seed: u8) -> Vec<Doc> {
    (1..=count)
        .map(|i| {
            Doc::new(
                &format!("d{i}"),
                &format!("peça {i}.pdf"),
                bytes(1024, seed),
            )
        })
        .collect()
}

/// Makes the court send each document of `number` in 256-byte chunks 5 ms apart: about 20 ms
/// a document, so that a job lasts while the test looks at it.
fn slow_down(court: &Court, number: &str, docs: &[Doc]) {
    for doc in docs {
        court.fail_always(
            number,
            &doc.id,
            Fault::Slow {
                chunk: 256,
                every: Duration::from_millis(5),
            },
        );
    }
}

/// The job's status and its documents done (AVAILABLE or FAILED), read together for each job.
async fn progress(pool: &PgPool, jobs: &[Uuid]) -> Vec<(String, i32)> {
    let mut rows: Vec<(Uuid, String, i32)> = sqlx::query_as(
        "SELECT id, status, available + failed FROM download_jobs WHERE id = ANY($1)",
    )
    .bind(jobs)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.sort_by_key(|(id, _, _)| jobs.iter().position(|j| j == id));
    rows.into_iter().map(|(_, s, done)| (s, done)).collect()
}

fn active(status: &str) -> bool {
    matches!(status, "QUEUED" | "RUNNING")
}

fn job_uuid(started: &Value) -> Uuid {
    started["startDownload"]["job"]["id"]
        .as_str()
        .or_else(|| started["job"]["id"].as_str())
        .unwrap_or_else(|| panic!("no job in {started:#}"))
        .parse()
        .unwrap()
}

/// Polls until one of `jobs` is terminal; returns every job's (status, done) at that moment.
async fn until_one_ends(pool: &PgPool, jobs: &[Uuid]) -> Vec<(String, i32)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = progress(pool, jobs).await;
        if now.iter().any(|(status, _)| !active(status)) {
            return now;
        }
        assert!(Instant::now() < deadline, "no job ended: {now:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_100_times_smaller_started_later_ends_while_the_large_one_has_most_to_do() {
    let court = Court::start().await;
    let (large, small) = (number(1301), number(1302));
    let large_docs = docs(1000, 1);
    court.add_process(&large, large_docs.clone());
    slow_down(&court, &large, &large_docs);
    court.add_process(&small, docs(10, 2));
    // One document of the small job fails once: its retry too runs as soon as it is due.
    court.fail(&small, "d3", vec![Fault::Status(500, None)]);
    let app = TestApp::spawn(court).await;
    let pool = app.db.pool().await;
    let other = client_with(&app.key("other-client", &[autos::auth::Scope::Write]).await);

    let large_job = job_uuid(&app.start(&large, false).await);
    // The large job holds every worker before the small one is asked for.
    let deadline = Instant::now() + WAIT;
    while progress(&pool, &[large_job]).await[0].1 < 20 {
        assert!(Instant::now() < deadline, "the large job does not progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = post_gql(
        &other,
        app.addr,
        "mutation($n: String!) { startDownload(input: {number: $n}) { job { id } } }",
        json!({ "n": small }),
    )
    .await;
    let small_job = job_uuid(&started["data"]);

    let at_end = until_one_ends(&pool, &[large_job, small_job]).await;
    let (large_done, small_status) = (at_end[0].1, at_end[1].0.clone());
    assert_eq!(
        small_status, "COMPLETED",
        "the small job ends first, and completely: {at_end:?}"
    );
    assert!(
        large_done < 500,
        "the small job ended when the large one had {large_done} of 1,000 documents done; \
         it should not wait for most of them"
    );
    assert_eq!(
        app.court.gets(&small, "d3"),
        2,
        "the failed document was retried"
    );

    let large_end = app.wait_terminal(&large_job.to_string(), WAIT).await;
    assert_eq!(large_end["status"], "COMPLETED");
    pool.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_equal_jobs_progress_in_turn() {
    let court = Court::start().await;
    let (first, second) = (number(1311), number(1312));
    for (n, seed) in [(&first, 3), (&second, 4)] {
        let docs = docs(150, seed);
        court.add_process(n, docs.clone());
        slow_down(&court, n, &docs);
    }
    let app = TestApp::spawn(court).await;
    let pool = app.db.pool().await;

    // One tenant's two jobs: turns are per job, not only per tenant.
    let a = job_uuid(&app.start(&first, false).await);
    let b = job_uuid(&app.start(&second, false).await);
    let at_end = until_one_ends(&pool, &[a, b]).await;
    for (i, (status, done)) in at_end.iter().enumerate() {
        assert!(
            !active(status) || *done >= 75,
            "job {} had {done} of 150 documents done when the other ended: {at_end:?}",
            ["a", "b"][i]
        );
    }
    for job in [a, b] {
        let end = app.wait_terminal(&job.to_string(), WAIT).await;
        assert_eq!(end["status"], "COMPLETED");
    }
    pool.close().await;
    app.stop().await;
}

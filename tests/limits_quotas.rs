//! Limits and quotas (contract §8): active jobs per tenant, documents per process, and sparing
//! the court (requests at once, unknown numbers remembered, simultaneous lookups shared).
//!
//! Everything is real: a PostgreSQL database per test, the S3-compatible test server, the test
//! court (which counts what it is asked and can be slow or fail), autos in-process.

mod common;

use autos::app::Role;
use autos::auth::Scope;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Jobs of a few small documents end well within this.
const WAIT: Duration = Duration::from_secs(20);

const START: &str = "mutation($n: String!) {
    startDownload(input: {number: $n}) { created job { id status } } }";
const PROCESS: &str = "query($n: String!) { process(number: $n) { number } }";
const CANCEL: &str = "mutation($id: ID!) { cancelJob(id: $id) { id status } }";
const RETRY: &str = "mutation($id: ID!) { retryFailedDocuments(jobId: $id) { id status } }";

fn docs(count: usize, seed: u8) -> Vec<Doc> {
    (0..count)
        .map(|i| {
            let seed = seed.wrapping_add(i as u8);
            Doc::new(&format!("d{i}"), &format!("{i}.pdf"), bytes(1000, seed))
        })
        .collect()
}

/// API only: jobs stay QUEUED, so they count against the quota for as long as the test runs.
fn api_only() -> Options {
    Options {
        role: Role::SERVE,
        ..Options::default()
    }
}

async fn as_(http: &reqwest::Client, app: &TestApp, query: &str, variables: Value) -> Value {
    post_gql(http, app.addr, query, variables).await
}

async fn start_as(http: &reqwest::Client, app: &TestApp, number: &str) -> Value {
    as_(http, app, START, json!({ "n": number })).await
}

/// The payload of a successful startDownload.
fn started(body: &Value) -> &Value {
    assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
    &body["data"]["startDownload"]
}

fn job_id(body: &Value) -> String {
    started(body)["job"]["id"]
        .as_str()
        .expect("job id")
        .to_string()
}

fn message(body: &Value) -> String {
    body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn count(app: &TestApp, sql: &str, number: Option<&str>) -> i64 {
    let pool = app.db.pool().await;
    let n: i64 = match number {
        Some(number) => sqlx::query_scalar(sql).bind(number).fetch_one(&pool).await,
        None => sqlx::query_scalar(sql).fetch_one(&pool).await,
    }
    .expect("count");
    pool.close().await;
    n
}

async fn jobs_of(app: &TestApp, number: &str) -> i64 {
    count(
        app,
        "SELECT count(*) FROM download_jobs j JOIN processes p ON p.id = j.process_id
         WHERE p.number = $1",
        Some(number),
    )
    .await
}

async fn active_jobs(app: &TestApp, tenant: &str) -> i64 {
    count(
        app,
        "SELECT count(*) FROM download_jobs j JOIN tenants t ON t.id = j.tenant_id
         WHERE t.slug = $1 AND j.status IN ('QUEUED', 'RUNNING')",
        Some(tenant),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Quotas
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_has_at_most_its_quota_of_active_jobs() {
    let court = Court::start().await;
    let n: Vec<String> = (0..5).map(|i| number(7101 + i)).collect();
    for (i, n) in n.iter().enumerate() {
        court.add_process(n, docs(2, i as u8 * 10));
    }
    let app = TestApp::spawn_configured(court, api_only(), |c| c.tenant_max_active_jobs = 2).await;

    let first = job_id(&start_as(&app.http, &app, &n[0]).await);
    job_id(&start_as(&app.http, &app, &n[1]).await);
    let lookups = app.court.lookups();

    // One more is refused, saying the limit; nothing is created and the court is not asked.
    let body = start_as(&app.http, &app, &n[2]).await;
    assert_eq!(error_code(&body), "QUOTA_EXCEEDED", "{body:#}");
    assert!(message(&body).contains("2 active"), "{body:#}");
    assert_eq!(app.court.lookups(), lookups, "the court was asked");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM processes WHERE number = $1",
            Some(&n[2])
        )
        .await,
        0
    );
    assert_eq!(active_jobs(&app, TENANT).await, 2);

    // A call answered with an existing job is never refused.
    let again = start_as(&app.http, &app, &n[0]).await;
    assert_eq!(started(&again)["created"], false);
    assert_eq!(job_id(&again), first);

    // Other tenants have quotas of their own.
    let globex = client_with(&app.key("globex", &[Scope::Write]).await);
    for number in [&n[2], &n[3]] {
        assert_eq!(
            started(&start_as(&globex, &app, number).await)["created"],
            true
        );
    }
    let body = start_as(&globex, &app, &n[4]).await;
    assert_eq!(error_code(&body), "QUOTA_EXCEEDED", "{body:#}");

    // A job that ends frees its place.
    let cancelled = as_(&app.http, &app, CANCEL, json!({ "id": first })).await;
    assert_eq!(
        cancelled["data"]["cancelJob"]["status"], "CANCELLED",
        "{cancelled:#}"
    );
    assert_eq!(
        started(&start_as(&app.http, &app, &n[2]).await)["created"],
        true
    );
    let body = start_as(&app.http, &app, &n[3]).await;
    assert_eq!(error_code(&body), "QUOTA_EXCEEDED", "{body:#}");
    assert_eq!(active_jobs(&app, TENANT).await, 2);
    assert_eq!(active_jobs(&app, "globex").await, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_quota_holds_when_calls_race() {
    let court = Court::start().await;
    let n: Vec<String> = (0..12).map(|i| number(7201 + i)).collect();
    for (i, n) in n.iter().enumerate() {
        court.add_process(n, docs(2, i as u8 * 10));
    }
    let app = TestApp::spawn_configured(court, api_only(), |c| c.tenant_max_active_jobs = 3).await;

    // At the limit minus one, two calls for different cases at once: exactly one succeeds.
    for number in &n[..2] {
        assert_eq!(
            started(&start_as(&app.http, &app, number).await)["created"],
            true
        );
    }
    let (a, b) = tokio::join!(
        start_as(&app.http, &app, &n[2]),
        start_as(&app.http, &app, &n[3])
    );
    let succeeded = [&a, &b]
        .iter()
        .filter(|body| body.get("errors").is_none())
        .count();
    assert_eq!(succeeded, 1, "{a:#} {b:#}");
    let refused = if a.get("errors").is_some() { &a } else { &b };
    assert_eq!(error_code(refused), "QUOTA_EXCEEDED", "{refused:#}");
    assert_eq!(active_jobs(&app, TENANT).await, 3);

    // Many at once for a tenant with nothing yet: exactly the quota is created.
    let initech = client_with(&app.key("initech", &[Scope::Write]).await);
    let calls = n[4..].iter().map(|number| start_as(&initech, &app, number));
    let bodies = futures::future::join_all(calls).await;
    let created = bodies.iter().filter(|b| b.get("errors").is_none()).count();
    assert_eq!(created, 3, "{bodies:#?}");
    for body in bodies.iter().filter(|b| b.get("errors").is_some()) {
        assert_eq!(error_code(body), "QUOTA_EXCEEDED", "{body:#}");
    }
    assert_eq!(active_jobs(&app, "initech").await, 3);
    // The refused calls left no work behind: one batch task per job of two documents.
    let jobs = count(&app, "SELECT count(*) FROM download_jobs", None).await;
    assert_eq!(jobs, 6);
    let tasks = count(&app, "SELECT count(*) FROM fang_tasks", None).await;
    assert_eq!(tasks, jobs);
    let in_jobs = count(&app, "SELECT count(*) FROM job_documents", None).await;
    assert_eq!(in_jobs, 2 * jobs);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retrying_failed_documents_obeys_the_quota() {
    let court = Court::start().await;
    let failing = number(7301);
    court.add_process(&failing, docs(2, 1));
    court.fail_always(&failing, "d0", Fault::Status(404, None));
    let slow = Fault::Slow {
        chunk: 1,
        every: Duration::from_secs(1),
    };
    let busy: Vec<String> = (0..2).map(|i| number(7302 + i)).collect();
    for (i, n) in busy.iter().enumerate() {
        court.add_process(n, docs(1, 20 + i as u8));
        court.fail_always(n, "d0", slow.clone());
    }
    let app =
        TestApp::spawn_configured(court, Options::default(), |c| c.tenant_max_active_jobs = 2)
            .await;

    let failed = job_id(&start_as(&app.http, &app, &failing).await);
    let job = app.wait_terminal(&failed, WAIT).await;
    assert_eq!(job["status"], "COMPLETED_WITH_ERRORS", "{job:#}");
    let busy_jobs: Vec<String> = futures::future::join_all(
        busy.iter()
            .map(|n| async { job_id(&start_as(&app.http, &app, n).await) }),
    )
    .await;

    // Retrying would make a third job active.
    let body = as_(&app.http, &app, RETRY, json!({ "id": failed })).await;
    assert_eq!(error_code(&body), "QUOTA_EXCEEDED", "{body:#}");
    let job = app.job(&failed).await;
    assert_eq!(job["status"], "COMPLETED_WITH_ERRORS", "unchanged: {job:#}");
    assert_eq!(doc(&job, "d0")["status"], "FAILED", "unchanged: {job:#}");

    // Once one ends, the retry goes through.
    let cancelled = as_(&app.http, &app, CANCEL, json!({ "id": busy_jobs[0] })).await;
    assert_eq!(
        cancelled["data"]["cancelJob"]["status"], "CANCELLED",
        "{cancelled:#}"
    );
    app.court.heal(&failing, "d0");
    let body = as_(&app.http, &app, RETRY, json!({ "id": failed })).await;
    assert!(body.get("errors").is_none(), "{body:#}");
    let job = app.wait_terminal(&failed, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");

    as_(&app.http, &app, CANCEL, json!({ "id": busy_jobs[1] })).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_with_too_many_documents_are_refused() {
    let court = Court::start().await;
    let big = number(7401);
    let fits = number(7402);
    let grows = number(7403);
    court.add_process(&big, docs(4, 1));
    court.add_process(&fits, docs(3, 2));
    court.add_process(&grows, docs(3, 3));
    let app =
        TestApp::spawn_configured(court, api_only(), |c| c.max_documents_per_process = 3).await;

    let body = start_as(&app.http, &app, &big).await;
    assert_eq!(error_code(&body), "PROCESS_TOO_LARGE", "{body:#}");
    assert!(
        message(&body).contains("4 documents, more than the 3"),
        "{body:#}"
    );
    let body = app.gql(PROCESS, json!({ "n": big })).await;
    assert_eq!(error_code(&body), "PROCESS_TOO_LARGE", "{body:#}");
    for table in [
        "processes",
        "documents",
        "download_jobs",
        "job_documents",
        "fang_tasks",
    ] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(count(&app, &sql, None).await, 0, "{table}");
    }

    // At the limit, it is fine.
    assert_eq!(
        started(&start_as(&app.http, &app, &fits).await)["created"],
        true
    );

    // A known case whose listing grew past the limit: no job, and the listing is not stored.
    let known = app.gql(PROCESS, json!({ "n": grows })).await;
    assert_eq!(
        known["data"]["process"]["number"],
        grows.as_str(),
        "{known:#}"
    );
    app.court.add_process(&grows, docs(4, 3));
    let body = start_as(&app.http, &app, &grows).await;
    assert_eq!(error_code(&body), "PROCESS_TOO_LARGE", "{body:#}");
    assert_eq!(jobs_of(&app, &grows).await, 0);
    let stored = count(
        &app,
        "SELECT count(*) FROM documents d JOIN processes p ON p.id = d.process_id
         WHERE p.number = $1",
        Some(&grows),
    )
    .await;
    assert_eq!(stored, 3);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Sparing the court
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_lookups_of_a_number_are_one_request() {
    let court = Court::start().await;
    // Slow enough that every call below is made while the court is still answering.
    court.delay_lookups(Duration::from_millis(500));
    let n = number(7501);
    let m = number(7502);
    court.add_process(&n, docs(2, 1));
    court.add_process(&m, docs(2, 2));
    let app = TestApp::spawn_with(court, api_only()).await;
    let globex = client_with(&app.key("globex", &[Scope::Write]).await);

    let queries = (0..20).map(|i| {
        let http = if i % 2 == 0 { &app.http } else { &globex };
        as_(http, &app, PROCESS, json!({ "n": n }))
    });
    for body in futures::future::join_all(queries).await {
        assert_eq!(body["data"]["process"]["number"], n.as_str(), "{body:#}");
    }
    assert_eq!(app.court.lookups(), 1, "one lookup for 20 callers");

    // Queries and both tenants' startDownloads at once.
    let queries = futures::future::join_all((0..10).map(|i| {
        let http = if i % 2 == 0 { &app.http } else { &globex };
        as_(http, &app, PROCESS, json!({ "n": m }))
    }));
    let (bodies, acme, other) = tokio::join!(
        queries,
        start_as(&app.http, &app, &m),
        start_as(&globex, &app, &m)
    );
    for body in bodies {
        assert_eq!(body["data"]["process"]["number"], m.as_str(), "{body:#}");
    }
    assert_eq!(started(&acme)["created"], true);
    assert_eq!(started(&other)["created"], true, "each tenant gets its job");
    assert_ne!(job_id(&acme), job_id(&other));
    assert_eq!(app.court.lookups(), 2, "one more lookup for all of them");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_number_is_remembered_for_the_ttl() {
    let court = Court::start().await;
    let unknown = number(7601);
    let app =
        TestApp::spawn_configured(court, api_only(), |c| c.source_not_found_ttl_secs = 1).await;
    let globex = client_with(&app.key("globex", &[Scope::Write]).await);

    let body = app.gql(PROCESS, json!({ "n": unknown })).await;
    assert!(body["data"]["process"].is_null(), "{body:#}");
    // The court learns of it now; autos still believes it unknown until the TTL runs out.
    app.court.add_process(&unknown, docs(1, 1));
    for http in [&app.http, &globex] {
        let body = as_(http, &app, PROCESS, json!({ "n": unknown })).await;
        assert!(body.get("errors").is_none(), "{body:#}");
        assert!(body["data"]["process"].is_null(), "{body:#}");
        let body = start_as(http, &app, &unknown).await;
        assert_eq!(error_code(&body), "PROCESS_NOT_FOUND", "{body:#}");
    }
    assert_eq!(app.court.lookups(), 1, "asked 5 times, the court saw one");
    assert_eq!(jobs_of(&app, &unknown).await, 0);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let body = app.gql(PROCESS, json!({ "n": unknown })).await;
    assert_eq!(
        body["data"]["process"]["number"],
        unknown.as_str(),
        "{body:#}"
    );
    assert_eq!(app.court.lookups(), 2, "asked again after the TTL");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_court_never_sees_more_than_the_source_concurrency() {
    let court = Court::start().await;
    court.delay_lookups(Duration::from_millis(100));
    let n = number(7701);
    let documents = docs(12, 1);
    court.add_process(&n, documents.clone());
    for d in &documents {
        court.fail_always(
            &n,
            &d.id,
            Fault::Slow {
                chunk: 250,
                every: Duration::from_millis(40),
            },
        );
    }
    let others: Vec<String> = (0..6).map(|i| number(7702 + i)).collect();
    for n in &others[..3] {
        court.add_process(n, docs(1, 9));
    }
    let options = Options {
        workers: 4,
        ..Options::default()
    };
    let app = TestApp::spawn_configured(court, options, |c| c.source_concurrency = 2).await;

    let id = job_id(&start_as(&app.http, &app, &n).await);
    // Lookups of other cases while the job's documents stream.
    let queries =
        futures::future::join_all(others.iter().map(|n| app.gql(PROCESS, json!({ "n": n }))));
    let (bodies, job) = tokio::join!(queries, app.wait_terminal(&id, WAIT));
    for (i, body) in bodies.iter().enumerate() {
        assert!(body.get("errors").is_none(), "{body:#}");
        assert_eq!(body["data"]["process"].is_null(), i >= 3, "{body:#}");
    }
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    for d in &documents {
        assert_eq!(app.court.gets(&n, &d.id), 1, "{}", d.id);
    }
    assert_eq!(
        app.court.most_requests_at_once(),
        2,
        "the court saw more (or never two) requests at once"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A failing source
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unavailable_source_is_reported_in_a_stable_phrase() {
    let court = Court::start().await;
    let n = number(7801);
    court.add_process(&n, docs(1, 1));
    court.fail_lookups((0..20).map(|_| Fault::Status(503, None)).collect());
    let app = TestApp::spawn_with(court, api_only()).await;

    let (query, start) = tokio::join!(
        app.gql(PROCESS, json!({ "n": n })),
        start_as(&app.http, &app, &n)
    );
    for body in [&query, &start] {
        assert_eq!(error_code(body), "SOURCE_UNAVAILABLE", "{body:#}");
        let message = message(body);
        assert!(
            message.starts_with("the court source is unavailable"),
            "{body:#}"
        );
        for detail in ["503", "court says no", "attempts", "127.0.0.1"] {
            assert!(!message.contains(detail), "{detail} shown: {body:#}");
        }
    }
    // Both callers waited for one lookup and its retries.
    let lookups = app.court.lookups();
    assert!((2..=4).contains(&lookups), "{lookups}");
    assert_eq!(jobs_of(&app, &n).await, 0);
    app.stop().await;
}

//! GraphQL semantics: idempotency, validation, errors, queries, pagination, HTTP endpoints.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

const START: &str = "mutation($n: String!, $f: Boolean, $w: String) {
    startDownload(input: {number: $n, force: $f, webhookUrl: $w}) {
        created job { id status progress total process { number }
                      counts { pending processing available failed }
                      webhook { url sent attempts } } } }";

const PROCESS: &str = "query($n: String!) { process(number: $n) {
    number court class subject
    documents { id sourceId name kind status attempts storageKey }
    latestJob { id status progress } } }";

const JOBS: &str = "query($first: Int, $after: String, $status: JobStatus, $number: String) {
    jobs(first: $first, after: $after, status: $status, number: $number) {
        edges { cursor node { id status process { number } } }
        pageInfo { hasNextPage endCursor } } }";

async fn start_raw(app: &TestApp, number: &str, force: bool, webhook: Option<&str>) -> Value {
    app.gql(START, json!({ "n": number, "f": force, "w": webhook }))
        .await
}

fn payload(body: &Value) -> &Value {
    assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
    &body["data"]["startDownload"]
}

fn job_id(started: &Value) -> String {
    started["job"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job id in {started:#}"))
        .to_string()
}

fn message(body: &Value) -> String {
    body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn count_jobs(app: &TestApp) -> i64 {
    let pool = app.db.pool().await;
    let count = sqlx::query_scalar("SELECT count(*) FROM download_jobs")
        .fetch_one(&pool)
        .await
        .expect("count jobs");
    pool.close().await;
    count
}

fn small_docs(seed: u8) -> Vec<Doc> {
    vec![
        Doc::new("d1", "a.pdf", bytes(1000, seed)),
        Doc::new("d2", "b.pdf", bytes(1200, seed.wrapping_add(1))),
    ]
}

// ---------------------------------------------------------------------------------------------
// startDownload: idempotency
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_start_downloads_create_exactly_one_job() {
    let court = Court::start().await;
    let n = number(201);
    court.add_process(&n, small_docs(1));
    let app = TestApp::spawn(court).await;

    let calls = (0..30).map(|_| start_raw(&app, &n, false, None));
    let bodies = futures::future::join_all(calls).await;
    let payloads: Vec<&Value> = bodies.iter().map(payload).collect();
    let created = payloads.iter().filter(|p| p["created"] == true).count();
    assert_eq!(created, 1, "exactly one call creates the job");
    let id = job_id(payloads[0]);
    for p in &payloads {
        assert_eq!(job_id(p), id, "every call answers with the same job");
    }

    let pool = app.db.pool().await;
    let jobs: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT j.id FROM download_jobs j JOIN processes p ON p.id = j.process_id
         WHERE p.number = $1",
    )
    .bind(&n)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].to_string(), id);
    // The racing callers shared one look-up at the source.
    assert_eq!(app.court.lookups(), 1);

    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    for source_id in ["d1", "d2"] {
        assert_eq!(app.court.gets(&n, source_id), 1, "{source_id}");
    }

    // Same race for a process that is already known (looked up, no job yet).
    let known = number(221);
    app.court.add_process(&known, small_docs(2));
    let looked_up = app.data(PROCESS, json!({ "n": known })).await;
    assert_eq!(looked_up["process"]["number"], known.as_str());
    let calls = (0..30).map(|_| start_raw(&app, &known, false, None));
    let bodies = futures::future::join_all(calls).await;
    let payloads: Vec<&Value> = bodies.iter().map(payload).collect();
    assert_eq!(payloads.iter().filter(|p| p["created"] == true).count(), 1);
    let known_id = job_id(payloads[0]);
    assert!(payloads.iter().all(|p| job_id(p) == known_id));
    assert_eq!(count_jobs(&app).await, 2);
    app.wait_terminal(&known_id, WAIT).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_download_reuses_active_and_completed_jobs_and_force_transfers_only_changes() {
    let court = Court::start().await;
    let n = number(202);
    let docs = vec![
        Doc::new("d1", "a.pdf", bytes(1000, 1)),
        Doc::new("d2", "b.pdf", bytes(1200, 2)),
        Doc::new("d3", "c.pdf", bytes(1400, 3)),
    ];
    court.add_process(&n, docs.clone());
    // The first GET of d1 is slow, so the job stays active for a while.
    court.fail(
        &n,
        "d1",
        vec![Fault::Slow {
            chunk: 100,
            every: Duration::from_millis(100),
        }],
    );
    let app = TestApp::spawn(court).await;

    let first = app.start(&n, false).await;
    assert_eq!(first["created"], true);
    let id = job_id(&first);
    for force in [false, true] {
        let again = app.start(&n, force).await;
        assert_eq!(again["created"], false, "force={force}: {again:#}");
        assert_eq!(job_id(&again), id);
        let status = again["job"]["status"].as_str().unwrap();
        assert!(matches!(status, "QUEUED" | "RUNNING"), "{again:#}");
    }

    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");

    // Completed: returned as is without force.
    let again = app.start(&n, false).await;
    assert_eq!(again["created"], false);
    assert_eq!(job_id(&again), id);
    assert_eq!(again["job"]["status"], "COMPLETED");
    let gets_before = app.court.total_gets();
    assert_eq!(gets_before, 3);

    // Forced: a new job, but nothing unchanged is transferred again.
    let forced = app.start(&n, true).await;
    assert_eq!(forced["created"], true, "{forced:#}");
    let forced_id = job_id(&forced);
    assert_ne!(forced_id, id);
    let job = app.wait_terminal(&forced_id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    assert_eq!(job["progress"], 100);
    assert_eq!(
        job["counts"],
        json!({"pending": 0, "processing": 0, "available": 3, "failed": 0})
    );
    assert!(job["documents"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["status"] == "AVAILABLE"));
    assert_eq!(app.court.total_gets(), gets_before, "nothing fetched again");

    // One document changes at the court: a forced job fetches that one only.
    let changed = bytes(1300, 99);
    let mut new_docs = docs.clone();
    new_docs[1] = Doc::new("d2", "b.pdf", changed.clone());
    app.court.add_process(&n, new_docs);
    let forced = app.start(&n, true).await;
    assert_eq!(forced["created"], true, "{forced:#}");
    let changed_id = job_id(&forced);
    assert_ne!(changed_id, forced_id);
    let job = app.wait_terminal(&changed_id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    assert_eq!(app.court.gets(&n, "d1"), 1);
    assert_eq!(app.court.gets(&n, "d2"), 2);
    assert_eq!(app.court.gets(&n, "d3"), 1);
    let d2 = doc(&job, "d2");
    let (stored, _, _) = app
        .object(d2["storageKey"].as_str().unwrap())
        .await
        .expect("object");
    assert_eq!(stored, changed, "the new bytes are stored");
    app.stop().await;
}

/// A job as stored: the job row, its documents in order (each with the documents of the
/// queue task that will transfer it), and its document list. Ids, times and the case number
/// left out.
async fn stored_job(pool: &sqlx::PgPool, job_id: &str) -> Value {
    sqlx::query_scalar(
        "SELECT json_build_object(
            'job', (SELECT json_build_object(
                        'status', status, 'forced', forced, 'total', total,
                        'pending', pending, 'processing', processing,
                        'available', available, 'failed', failed,
                        'webhook_url', webhook_url, 'started', started_at IS NOT NULL,
                        'completed', completed_at IS NOT NULL)
                    FROM download_jobs WHERE id = $1),
            'documents', (SELECT json_agg(json_build_object(
                        'source_id', d.source_id, 'position', d.position, 'listed', d.listed,
                        'name', d.name, 'kind', d.kind, 'mime_type', d.mime_type,
                        'url', replace(d.url, (SELECT number FROM processes p
                                               WHERE p.id = d.process_id), '{number}'),
                        'size', d.size, 'sha256', d.sha256, 'status', d.status,
                        'attempts', d.attempts, 'last_error', d.last_error,
                        'due', d.next_attempt_at <= now(),
                        'task', (SELECT json_build_object(
                                    'type', t.task_type, 'state', t.state,
                                    'same_job', t.metadata->>'job_id' = $1::text,
                                    'documents', (SELECT json_agg(o.source_id ORDER BY o.position)
                                                  FROM documents o
                                                  WHERE o.id::text IN (SELECT jsonb_array_elements_text(
                                                                     t.metadata->'document_ids'))))
                                 FROM fang_tasks t WHERE t.id = d.task_id),
                        'lease', d.lease_until IS NOT NULL, 'stored', d.storage_key IS NOT NULL)
                        ORDER BY d.position)
                    FROM documents d WHERE d.job_id = $1),
            'list', (SELECT json_agg(json_build_array(d.source_id, l.position) ORDER BY l.position)
                     FROM job_documents l JOIN documents d ON d.id = l.document_id
                     WHERE l.job_id = $1))::jsonb",
    )
    .bind(uuid::Uuid::parse_str(job_id).unwrap())
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_first_download_and_one_after_a_lookup_store_the_same_job() {
    // A case autos has never seen is stored with its job in one pass; one looked up first
    // (the `process` query) goes through the general path. Both must leave the same rows.
    // No worker runs: the state is the one the job starts from.
    let court = Court::start().await;
    let docs: Vec<Doc> = (1..=7)
        .map(|i| {
            Doc::new(
                &format!("d{i}"),
                &format!("peça {i}.pdf"),
                bytes(500 + i, i as u8),
            )
        })
        .collect();
    let cases = [
        (number(220), number(221), docs.clone()),
        (number(222), number(223), Vec::new()),
    ];
    for (first, looked_up, docs) in &cases {
        court.add_process(first, docs.clone());
        court.add_process(looked_up, docs.clone());
    }
    let options = Options {
        role: autos::app::Role::SERVE,
        batch_size: 3,
        ..Options::default()
    };
    let app = TestApp::spawn_with(court, options).await;
    let pool = app.db.pool().await;
    for (first, looked_up, docs) in &cases {
        let listed = app.data(PROCESS, json!({ "n": looked_up })).await;
        assert_eq!(
            listed["process"]["documents"].as_array().map(Vec::len),
            Some(docs.len())
        );
        let mut stored = Vec::new();
        for n in [first, looked_up] {
            let started = app.gql(START, json!({ "n": n, "f": true })).await;
            assert_eq!(payload(&started)["created"], true, "{started:#}");
            stored.push(stored_job(&pool, &job_id(payload(&started))).await);
        }
        assert_eq!(stored[0], stored[1], "{n}", n = first);
        let job = &stored[0];
        if docs.is_empty() {
            assert_eq!(job["job"]["status"], "COMPLETED", "{job:#}");
            assert_eq!(job["job"]["completed"], true);
            continue;
        }
        assert_eq!(job["job"]["status"], "QUEUED", "{job:#}");
        assert_eq!(job["job"]["forced"], true);
        assert_eq!(job["job"]["pending"], 7);
        let batches: Vec<Value> = job["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["task"]["documents"].clone())
            .collect();
        let (a, b, c) = (
            json!(["d1", "d2", "d3"]),
            json!(["d4", "d5", "d6"]),
            json!(["d7"]),
        );
        assert_eq!(
            batches,
            vec![a.clone(), a.clone(), a, b.clone(), b.clone(), b, c],
            "{job:#}"
        );
        for d in job["documents"].as_array().unwrap() {
            assert_eq!(d["status"], "PENDING", "{d:#}");
            assert_eq!(d["due"], true, "{d:#}");
            assert_eq!(d["task"]["same_job"], true, "{d:#}");
            assert_eq!(d["task"]["state"], "new", "{d:#}");
        }
    }
    pool.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_without_documents_completes_at_once() {
    let court = Court::start().await;
    let n = number(203);
    court.add_process(&n, vec![]);
    let app = TestApp::spawn(court).await;

    let started = app.start(&n, false).await;
    assert_eq!(started["created"], true);
    assert_eq!(started["job"]["status"], "COMPLETED", "{started:#}");
    assert_eq!(started["job"]["progress"], 100);
    assert_eq!(started["job"]["total"], 0);
    let job = app.job(&job_id(&started)).await;
    assert_eq!(job["status"], "COMPLETED");
    assert!(job["completedAt"].is_string());
    assert_eq!(job["documents"], json!([]));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// startDownload and process: errors
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_process_is_not_found() {
    let court = Court::start().await;
    let app = TestApp::spawn(court).await;
    let n = number(204);

    let body = start_raw(&app, &n, false, None).await;
    assert_eq!(error_code(&body), "PROCESS_NOT_FOUND", "{body:#}");
    assert!(message(&body).contains(&n), "{body:#}");
    let process = app.data(PROCESS, json!({ "n": n })).await;
    assert!(process["process"].is_null(), "{process:#}");
    assert_eq!(count_jobs(&app).await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_process_numbers_are_refused_with_the_reason() {
    let court = Court::start().await;
    let n = number(205);
    court.add_process(&n, small_docs(5));
    let app = TestApp::spawn(court).await;

    let cases = [
        ("1500345-32.2017.8.26.0248", "check digits"),
        ("1500345-31.2017.8.26.02A8", "invalid character"),
        ("ABCDEFG-HI.JKLM.N.OP.QRST", "invalid character"),
        ("1500345-31.2017.8.26.024", "19 digits"),
        ("150034531201782602481", "21 digits"),
        ("", "empty"),
        ("   ", "empty"),
    ];
    for (input, why) in cases {
        let body = start_raw(&app, input, false, None).await;
        assert_eq!(
            error_code(&body),
            "INVALID_PROCESS_NUMBER",
            "{input:?}: {body:#}"
        );
        assert!(
            message(&body).contains(why),
            "{input:?}: the message says what is wrong ({why}): {body:#}"
        );
        let body = app.gql(PROCESS, json!({ "n": input })).await;
        assert_eq!(
            error_code(&body),
            "INVALID_PROCESS_NUMBER",
            "{input:?}: {body:#}"
        );
        assert!(message(&body).contains(why), "{input:?}: {body:#}");
    }
    // The wrong check digits message offers the right ones.
    let body = start_raw(&app, "1500345-32.2017.8.26.0248", false, None).await;
    assert!(message(&body).contains("31"), "{body:#}");
    assert_eq!(count_jobs(&app).await, 0);
    assert_eq!(
        app.court.lookups(),
        0,
        "the source is not asked about invalid numbers"
    );

    // 20 digits (with surrounding whitespace) are accepted and answered formatted.
    let digits: String = n.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(digits.len(), 20);
    let body = start_raw(&app, &format!("  {digits}\n"), false, None).await;
    let started = payload(&body);
    assert_eq!(started["created"], true);
    assert_eq!(started["job"]["process"]["number"], n.as_str());
    let process = app.data(PROCESS, json!({ "n": digits })).await;
    assert_eq!(process["process"]["number"], n.as_str());
    app.wait_terminal(&job_id(started), WAIT).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_source_is_reported_unavailable_and_creates_nothing() {
    let court = Court::start().await;
    let n = number(206);
    court.add_process(&n, small_docs(6));
    court.fail_lookups((0..10).map(|_| Fault::Status(503, None)).collect());
    let app = TestApp::spawn(court).await;

    let body = start_raw(&app, &n, false, None).await;
    assert_eq!(error_code(&body), "SOURCE_UNAVAILABLE", "{body:#}");
    let lookups = app.court.lookups();
    assert!(
        lookups > 1 && lookups < 10,
        "retried a few times, then gave up: {lookups}"
    );
    assert_eq!(count_jobs(&app).await, 0);
    let pool = app.db.pool().await;
    let processes: i64 = sqlx::query_scalar("SELECT count(*) FROM processes")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(processes, 0);

    // Once the source answers again, the same call works.
    app.court.fail_lookups(vec![]);
    let body = start_raw(&app, &n, false, None).await;
    assert_eq!(payload(&body)["created"], true);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_urls_are_checked_and_stored() {
    let court = Court::start().await;
    let n = number(207);
    court.add_process(&n, small_docs(7));
    let app = TestApp::spawn(court).await;

    for bad in [
        "ftp://x",
        "not a url",
        "https://user:pw@example.com/hook",
        // refused as a target: loopback, cloud metadata, a name that does not resolve
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest",
        "https://no-such-host.invalid/hook",
    ] {
        let body = start_raw(&app, &n, false, Some(bad)).await;
        assert_eq!(error_code(&body), "INVALID_WEBHOOK_URL", "{bad}: {body:#}");
        assert!(!message(&body).is_empty());
    }
    assert_eq!(count_jobs(&app).await, 0);

    // A public address (an IP literal: the tests have no DNS beyond this machine).
    let url = "https://93.184.215.14/hooks/autos";
    let body = start_raw(&app, &n, false, Some(url)).await;
    let started = payload(&body);
    assert_eq!(started["created"], true);
    let webhook = &started["job"]["webhook"];
    assert_eq!(webhook["url"], url, "{started:#}");
    assert!(webhook["sent"].is_boolean(), "{webhook:#}");
    assert!(webhook["attempts"].is_i64(), "{webhook:#}");

    let id = job_id(started);
    let shown = app
        .data(
            "query($id: ID!) { job(id: $id) { webhook { url sent attempts } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(shown["job"]["webhook"]["url"], url);
    app.wait_terminal(&id, WAIT).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn process_query_lists_documents_in_source_order_and_the_latest_job() {
    let court = Court::start().await;
    let n = number(208);
    court.add_process(
        &n,
        vec![
            Doc::new("z9", "Petição inicial.pdf", bytes(500, 1)),
            Doc::new("a1", "Contestação.pdf", bytes(600, 2)),
            Doc::new("m5", "Sentença.pdf", bytes(700, 3)),
        ],
    );
    let app = TestApp::spawn(court).await;

    let process = app.data(PROCESS, json!({ "n": n })).await["process"].clone();
    assert_eq!(process["number"], n.as_str());
    assert_eq!(process["court"], "TJSP");
    assert_eq!(process["class"], "Procedimento Comum Cível");
    assert_eq!(process["subject"], "Dano Moral");
    let order: Vec<&str> = process["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["sourceId"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["z9", "a1", "m5"], "source order");
    assert_eq!(process["documents"][0]["name"], "Petição inicial.pdf");
    assert_eq!(process["documents"][0]["kind"], "Petição");
    for d in process["documents"].as_array().unwrap() {
        assert_eq!(d["status"], "PENDING", "{d:#}");
        assert_eq!(d["attempts"], 0);
        assert!(d["storageKey"].is_null());
    }
    assert!(process["latestJob"].is_null(), "{process:#}");
    assert_eq!(app.court.total_gets(), 0, "looking up fetches no document");

    let id = job_id(&app.start(&n, false).await);
    app.wait_terminal(&id, WAIT).await;
    let process = app.data(PROCESS, json!({ "n": n })).await["process"].clone();
    assert_eq!(process["latestJob"]["id"], id.as_str());
    assert_eq!(process["latestJob"]["status"], "COMPLETED");
    assert_eq!(process["latestJob"]["progress"], 100);
    for d in process["documents"].as_array().unwrap() {
        assert_eq!(d["status"], "AVAILABLE", "{d:#}");
    }
    // The looked-up process was stored: asking again does not ask the source.
    let lookups = app.court.lookups();
    app.data(PROCESS, json!({ "n": n })).await;
    assert_eq!(app.court.lookups(), lookups);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_are_paginated_newest_first_and_filtered() {
    let court = Court::start().await;
    let numbers: Vec<String> = (0..7).map(|i| number(210 + i)).collect();
    for (i, n) in numbers.iter().enumerate() {
        court.add_process(n, vec![Doc::new("d1", "a.pdf", bytes(300, i as u8))]);
    }
    // The last process's only document fails: its job is FAILED.
    court.fail_always(&numbers[6], "d1", Fault::Status(404, None));
    let app = TestApp::spawn(court).await;

    let mut created = Vec::new();
    for n in &numbers {
        created.push(job_id(&app.start(n, false).await));
    }
    for id in &created {
        app.wait_terminal(id, WAIT).await;
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = app.data(JOBS, json!({ "first": 3, "after": after })).await["jobs"].clone();
        pages += 1;
        let edges = page["edges"].as_array().unwrap();
        let has_next = page["pageInfo"]["hasNextPage"].as_bool().unwrap();
        if pages == 1 {
            assert_eq!(edges.len(), 3);
            assert!(has_next);
        }
        seen.extend(
            edges
                .iter()
                .map(|e| e["node"]["id"].as_str().unwrap().to_string()),
        );
        if !has_next {
            break;
        }
        after = Some(page["pageInfo"]["endCursor"].as_str().unwrap().to_string());
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, newest_first, "all 7 jobs once, newest first");

    let failed = app.data(JOBS, json!({ "status": "FAILED" })).await["jobs"].clone();
    let failed_ids: Vec<&str> = failed["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(failed_ids, [created[6].as_str()]);
    assert_eq!(failed["pageInfo"]["hasNextPage"], false);
    let completed = app.data(JOBS, json!({ "status": "COMPLETED" })).await["jobs"].clone();
    assert_eq!(completed["edges"].as_array().unwrap().len(), 6);
    assert!(completed["edges"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["node"]["status"] == "COMPLETED"));

    // By process number, formatted or as 20 digits.
    let digits: String = numbers[2].chars().filter(char::is_ascii_digit).collect();
    for filter in [numbers[2].clone(), digits] {
        let one = app.data(JOBS, json!({ "number": filter })).await["jobs"].clone();
        let edges = one["edges"].as_array().unwrap();
        assert_eq!(edges.len(), 1, "{one:#}");
        assert_eq!(edges[0]["node"]["id"], created[2].as_str());
        assert_eq!(edges[0]["node"]["process"]["number"], numbers[2].as_str());
    }

    for first in [0, 101, -1] {
        let body = app.gql(JOBS, json!({ "first": first })).await;
        assert_eq!(error_code(&body), "BAD_REQUEST", "first={first}: {body:#}");
    }
    for cursor in ["garbage!!", "bm9wZQ", ""] {
        let body = app.gql(JOBS, json!({ "first": 3, "after": cursor })).await;
        assert_eq!(
            error_code(&body),
            "BAD_REQUEST",
            "after={cursor:?}: {body:#}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_or_malformed_ids_give_null() {
    let court = Court::start().await;
    let n = number(220);
    court.add_process(&n, small_docs(20));
    let app = TestApp::spawn(court).await;
    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    let document_id = doc(&job, "d1")["id"].as_str().unwrap().to_string();

    let query = "query($id: ID!) { job(id: $id) { id } document(id: $id) { id } }";
    let random = uuid::Uuid::new_v4().to_string();
    for unknown in [
        random.as_str(),
        "garbage",
        "",
        "'; DROP TABLE documents; --",
    ] {
        let data = app.data(query, json!({ "id": unknown })).await;
        assert!(data["job"].is_null(), "{unknown:?}: {data:#}");
        assert!(data["document"].is_null(), "{unknown:?}: {data:#}");
    }
    // The real ones are found, each by its own kind only.
    let data = app.data(query, json!({ "id": id })).await;
    assert_eq!(data["job"]["id"], id.as_str());
    assert!(data["document"].is_null());
    let data = app.data(query, json!({ "id": document_id })).await;
    assert!(data["job"].is_null());
    assert_eq!(data["document"]["id"], document_id.as_str());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_readiness_playground_and_progress_page() {
    let court = Court::start().await;
    let app = TestApp::spawn(court).await;

    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "database": true, "storage": true, "outages": [] })
    );

    for path in ["/graphql", "/"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            content_type.starts_with("text/html"),
            "{path}: {content_type}"
        );
        let html = response.text().await.unwrap();
        assert!(html.to_lowercase().contains("<html"), "{path}");
        if path == "/graphql" {
            assert!(html.to_lowercase().contains("graphiql"), "GraphiQL");
        }
    }
    app.stop().await;
}

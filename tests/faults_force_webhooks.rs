//! Faults waste nothing: `force` never takes away a stored document (it is refreshed in place
//! and stays AVAILABLE, with its link, until a changed copy is stored), and every caller's
//! `webhookUrl` of a job is called when it ends, each with its own delivery.
//!
//! Real parts throughout: PostgreSQL (a database per test), the S3 test server, the test court
//! (told to fail, to be slow, to change a document's bytes) and webhook receivers, with
//! signatures checked by an implementation of Standard Webhooks written here.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::receiver::{Received, Receiver, Reply};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

const START: &str = "mutation($n: String!, $f: Boolean, $w: String) {
    startDownload(input: {number: $n, force: $f, webhookUrl: $w}) {
        created job { id status } } }";

const WEBHOOKS: &str = "query($id: ID!) { job(id: $id) { id status
    webhook { url sent attempts status statusCode lastError deliveredAt }
    webhooks { url sent attempts status statusCode lastError deliveredAt } } }";

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// autos with webhooks to loopback receivers allowed and quick retries.
async fn spawn(court: Court) -> TestApp {
    TestApp::spawn_configured(court, Options::default(), |cfg| {
        cfg.webhook_allow_private = true;
        cfg.webhook_backoff_ms = 50;
        cfg.webhook_max_attempts = 3;
        cfg.webhook_timeout_ms = 2_000;
    })
    .await
}

/// startDownload as the holder of `http`; returns `(created, job id, status)`.
async fn start(
    app: &TestApp,
    http: &reqwest::Client,
    number: &str,
    force: bool,
    webhook: Option<&str>,
) -> (bool, String, String) {
    let body = post_gql(
        http,
        app.addr,
        START,
        json!({ "n": number, "f": force, "w": webhook }),
    )
    .await;
    assert!(body.get("errors").is_none(), "startDownload: {body:#}");
    let payload = &body["data"]["startDownload"];
    (
        payload["created"].as_bool().expect("created"),
        payload["job"]["id"].as_str().expect("id").to_string(),
        payload["job"]["status"]
            .as_str()
            .expect("status")
            .to_string(),
    )
}

/// The bytes behind a download link.
async fn fetch(url: &str) -> Vec<u8> {
    let response = reqwest::get(url).await.expect("GET the link");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.bytes().await.expect("body").to_vec()
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// One SQL value of the test's database.
async fn scalar(app: &TestApp, sql: &str) -> i64 {
    let pool = app.db.pool().await;
    let value: i64 = sqlx::query_scalar(sql)
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pool.close().await;
    value
}

/// Polls until `sql` answers true (panics after `WAIT`).
async fn wait_sql(app: &TestApp, sql: &str) {
    let deadline = Instant::now() + WAIT;
    while scalar(app, &format!("SELECT ({sql})::int::bigint")).await == 0 {
        assert!(
            Instant::now() < deadline,
            "still false after {WAIT:?}: {sql}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A completed first job of `n`; returns it.
async fn first_job(app: &TestApp, n: &str) -> Value {
    let (created, id, _) = start(app, &app.http, n, false, None).await;
    assert!(created);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    job
}

/// The signing key of the tenant of the key `http` sends (`viewer.webhookSecret`).
async fn signing_key(app: &TestApp, http: &reqwest::Client) -> Vec<u8> {
    let body = post_gql(http, app.addr, "{ viewer { webhookSecret } }", json!({})).await;
    let secret = body["data"]["viewer"]["webhookSecret"]
        .as_str()
        .unwrap_or_else(|| panic!("no secret: {body:#}"));
    STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret")
}

/// Standard Webhooks verification, independent of autos: HMAC-SHA256 with `key` over
/// `{webhook-id}.{webhook-timestamp}.{body}` against each `v1,` entry of `webhook-signature`.
/// Returns the `webhook-id`.
fn assert_signed(key: &[u8], r: &Received) -> String {
    assert_eq!(r.method, "POST");
    let id = r.header("webhook-id");
    let timestamp = r.header("webhook-timestamp");
    let signatures = r.header("webhook-signature");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&r.body);
    let verified = signatures
        .split_ascii_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|given| mac.clone().verify_slice(&given).is_ok());
    assert!(verified, "signature {signatures} does not verify for {id}");
    id.to_string()
}

async fn webhooks_of(app: &TestApp, http: &reqwest::Client, id: &str) -> Value {
    let body = post_gql(http, app.addr, WEBHOOKS, json!({ "id": id })).await;
    assert!(body.get("errors").is_none(), "{body:#}");
    body["data"]["job"].clone()
}

/// Polls until every webhook of the job is DELIVERED or FAILED; returns the job.
async fn wait_webhooks_done(app: &TestApp, http: &reqwest::Client, id: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let job = webhooks_of(app, http, id).await;
        let all = job["webhooks"].as_array().expect("webhooks");
        if !all.is_empty()
            && all
                .iter()
                .all(|w| matches!(w["status"].as_str(), Some("DELIVERED" | "FAILED")))
        {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "webhooks of {id} not done: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn slow(chunk: usize, every_ms: u64) -> Fault {
    Fault::Slow {
        chunk,
        every: Duration::from_millis(every_ms),
    }
}

// ---------------------------------------------------------------------------------------------
// `force` never takes away a stored document
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forced_job_while_the_court_fails_keeps_every_stored_copy_and_its_link() {
    let court = Court::start().await;
    let n = number(1201);
    // Two without an announced SHA-256 (a forced job fetches them again), one whose bytes
    // change at the court (another SHA-256 announced).
    let docs = vec![
        Doc::new("d1", "a.pdf", bytes(1_500, 1)).no_announcements(),
        Doc::new("d2", "b.pdf", bytes(2_500, 2)).no_announcements(),
        Doc::new("d3", "c.pdf", bytes(3_500, 3)),
    ];
    court.add_process(&n, docs.clone());
    let app = TestApp::spawn(court).await;
    let first = first_job(&app, &n).await;

    let mut changed = docs.clone();
    changed[2] = Doc::new("d3", "c.pdf", bytes(3_600, 33));
    app.court.add_process(&n, changed);
    // The court fails every document: unavailable for two, gone for the third (refused for good).
    app.court.fail_always(&n, "d1", Fault::Status(503, None));
    app.court.fail_always(&n, "d2", Fault::Status(500, None));
    app.court.fail_always(&n, "d3", Fault::Status(404, None));

    let (created, id, _) = start(&app, &app.http, &n, true, None).await;
    assert!(created);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "nothing is lost: {job:#}");
    assert_eq!(
        job["counts"],
        json!({"pending": 0, "processing": 0, "available": 3, "failed": 0})
    );
    for (i, source_id) in ["d1", "d2", "d3"].into_iter().enumerate() {
        let before = doc(&first, source_id);
        let after = doc(&job, source_id);
        assert_eq!(after["status"], "AVAILABLE", "{after:#}");
        assert_eq!(after["storageKey"], before["storageKey"]);
        assert_eq!(after["sha256"], before["sha256"], "the old copy's SHA-256");
        let error = after["lastError"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("the refresh failed, the stored copy is kept: "),
            "{after:#}"
        );
        let link = after["downloadUrl"].as_str().expect("a link");
        assert_eq!(fetch(link).await, docs[i].bytes.to_vec(), "old bytes");
        let old_link = before["downloadUrl"].as_str().expect("the first link");
        assert_eq!(fetch(old_link).await, docs[i].bytes.to_vec());
        assert!(app.court.gets(&n, source_id) >= 2, "{source_id} was tried");
    }
    // 5xx is retried up to the attempts; 404 is refused at once.
    assert_eq!(app.court.gets(&n, "d1"), 1 + 3);
    assert_eq!(app.court.gets(&n, "d3"), 1 + 1);
    assert!(doc(&job, "d1")["lastError"]
        .as_str()
        .unwrap()
        .ends_with("(after 3 attempts)"));
    assert_eq!(
        scalar(&app, "SELECT count(*) FROM document_refreshes").await,
        0
    );

    // Once the court answers again, the next forced job stores the changed copy and clears
    // the error.
    for source_id in ["d1", "d2", "d3"] {
        app.court.heal(&n, source_id);
    }
    let (_, again, _) = start(&app, &app.http, &n, true, None).await;
    let job = app.wait_terminal(&again, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    let d3 = doc(&job, "d3");
    assert_eq!(d3["lastError"], Value::Null);
    assert_eq!(d3["sha256"], sha_hex(&bytes(3_600, 33)));
    let link = d3["downloadUrl"].as_str().unwrap();
    assert_eq!(fetch(link).await, bytes(3_600, 33));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forced_job_stores_changed_bytes_while_the_old_copy_stays_available() {
    let court = Court::start().await;
    let n = number(1202);
    let docs = vec![
        Doc::new("d1", "a.pdf", bytes(2_000, 1)),
        Doc::new("d2", "b.pdf", bytes(1_000, 2)),
    ];
    court.add_process(&n, docs.clone());
    let app = TestApp::spawn(court).await;
    let first = first_job(&app, &n).await;
    let old_link = doc(&first, "d1")["downloadUrl"]
        .as_str()
        .unwrap()
        .to_string();

    // d1 changes at the court and comes slowly (about two seconds); d2 is unchanged.
    let new_bytes = bytes(2_000, 77);
    let mut changed = docs.clone();
    changed[0] = Doc::new("d1", "a.pdf", new_bytes.clone());
    app.court.add_process(&n, changed);
    app.court.fail(&n, "d1", vec![slow(100, 100)]);

    let (created, id, status) = start(&app, &app.http, &n, true, None).await;
    assert!(created);
    assert!(matches!(status.as_str(), "QUEUED" | "RUNNING"), "{status}");

    // While the refresh runs the document reads AVAILABLE, and its link gives the old copy.
    let mut seen_refreshing = false;
    let deadline = Instant::now() + WAIT;
    loop {
        let job = app.job(&id).await;
        if !matches!(job["status"].as_str(), Some("QUEUED" | "RUNNING")) {
            break;
        }
        // Still streaming from the court after this read: the new copy cannot have been
        // stored before it, so everything read is the old copy's.
        let streaming = app.court.slow_sending_now() == 1;
        let d1 = doc(&job, "d1");
        assert_eq!(d1["status"], "AVAILABLE", "{job:#}");
        if streaming {
            assert_eq!(job["counts"]["failed"], 0, "{job:#}");
            assert_eq!(d1["sha256"], sha_hex(&docs[0].bytes), "{job:#}");
            let link = d1["downloadUrl"].as_str().expect("a link while refreshing");
            let got = fetch(link).await;
            if app.court.slow_sending_now() == 1 {
                seen_refreshing = true;
                assert_eq!(got, docs[0].bytes.to_vec(), "the old copy");
            }
        }
        assert!(Instant::now() < deadline, "{job:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen_refreshing, "the job was seen waiting for the refresh");

    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    assert_eq!(
        job["counts"],
        json!({"pending": 0, "processing": 0, "available": 2, "failed": 0})
    );
    let d1 = doc(&job, "d1");
    assert_eq!(
        d1["storageKey"],
        doc(&first, "d1")["storageKey"],
        "same key"
    );
    assert_eq!(d1["sha256"], sha_hex(&new_bytes));
    assert_eq!(d1["size"].as_f64(), Some(2_000.0));
    assert_eq!(d1["lastError"], Value::Null);
    let (stored, meta_sha, _) = app
        .object(d1["storageKey"].as_str().unwrap())
        .await
        .expect("object");
    assert_eq!(stored, new_bytes, "the new bytes are in S3");
    assert_eq!(meta_sha.as_deref(), Some(sha_hex(&new_bytes).as_str()));
    assert_eq!(fetch(d1["downloadUrl"].as_str().unwrap()).await, new_bytes);
    assert_eq!(fetch(&old_link).await, new_bytes, "the same object");
    // Unchanged documents are not fetched again.
    assert_eq!(app.court.gets(&n, "d1"), 2);
    assert_eq!(app.court.gets(&n, "d2"), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_document_larger_than_a_part_is_refreshed_in_parts() {
    let court = Court::start().await;
    let n = number(1207);
    let size = 9 * 1024 * 1024 + 123;
    court.add_process(&n, vec![Doc::new("big", "big.pdf", bytes(size, 1))]);
    let app = TestApp::spawn(court).await;
    let first = first_job(&app, &n).await;

    let new_bytes = bytes(size, 2);
    app.court
        .add_process(&n, vec![Doc::new("big", "big.pdf", new_bytes.clone())]);
    let (_, id, _) = start(&app, &app.http, &n, true, None).await;
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    let big = doc(&job, "big");
    assert_eq!(big["lastError"], Value::Null, "{big:#}");
    assert_eq!(big["storageKey"], doc(&first, "big")["storageKey"]);
    let (stored, meta_sha, _) = app
        .object(big["storageKey"].as_str().unwrap())
        .await
        .expect("object");
    assert!(stored == new_bytes, "the new bytes are stored whole");
    assert_eq!(meta_sha.as_deref(), Some(sha_hex(&new_bytes).as_str()));
    assert_eq!(app.court.gets(&n, "big"), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forcing_a_case_with_a_document_stored_without_an_announced_sha256_answers_a_job() {
    let court = Court::start().await;
    let n = number(1203);
    let docs = vec![
        Doc::new("d1", "a.pdf", bytes(1_000, 1)).no_announcements(),
        Doc::new("d2", "b.pdf", bytes(1_200, 2)),
    ];
    court.add_process(&n, docs.clone());
    let app = TestApp::spawn(court).await;
    first_job(&app, &n).await;

    // The court now serves other bytes for d1, still without announcing them.
    let new_bytes = bytes(900, 99);
    let mut changed = docs.clone();
    changed[0] = Doc::new("d1", "a.pdf", new_bytes.clone()).no_announcements();
    app.court.add_process(&n, changed);

    // Once answered INTERNAL ("unexpected null" while planning the job).
    let body = app
        .gql(START, json!({ "n": n, "f": true, "w": null }))
        .await;
    assert!(body.get("errors").is_none(), "{body:#}");
    assert_eq!(body["data"]["startDownload"]["created"], true, "{body:#}");
    let id = body["data"]["startDownload"]["job"]["id"].as_str().unwrap();
    let job = app.wait_terminal(id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    let d1 = doc(&job, "d1");
    assert_eq!(d1["sha256"], sha_hex(&new_bytes));
    assert_eq!(fetch(d1["downloadUrl"].as_str().unwrap()).await, new_bytes);
    assert_eq!(
        app.court.gets(&n, "d1"),
        2,
        "without a SHA-256, force fetches again"
    );
    assert_eq!(
        app.court.gets(&n, "d2"),
        1,
        "same SHA-256: not fetched again"
    );

    // Without `force`, a document without an announced SHA-256 is taken as it is.
    let (created, _, _) = start(&app, &app.http, &n, false, None).await;
    assert!(!created, "the completed job answers");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_refresh_serves_every_job_that_awaits_it() {
    let court = Court::start().await;
    let n = number(1206);
    court.add_process(&n, vec![Doc::new("d1", "a.pdf", bytes(2_000, 1))]);
    let app = TestApp::spawn(court).await;
    first_job(&app, &n).await;

    let new_bytes = bytes(2_000, 66);
    app.court
        .add_process(&n, vec![Doc::new("d1", "a.pdf", new_bytes.clone())]);
    app.court.fail(&n, "d1", vec![slow(100, 100)]);
    let (_, forced, _) = start(&app, &app.http, &n, true, None).await;
    wait_sql(
        &app,
        "EXISTS (SELECT 1 FROM document_refreshes WHERE status = 'PROCESSING')",
    )
    .await;
    // Another tenant's first job finds the stored copy outdated too: it joins the refresh
    // under way instead of fetching the document a second time.
    let other = client_with(&app.key("globex", &[autos::auth::Scope::Write]).await);
    let (created, joined, _) = start(&app, &other, &n, false, None).await;
    assert!(created);
    let body = post_gql(&other, app.addr, JOB_QUERY, json!({ "id": joined })).await;
    let counts = &body["data"]["job"]["counts"];
    assert_eq!(
        counts,
        &json!({"pending": 0, "processing": 1, "available": 0, "failed": 0}),
        "{body:#}"
    );

    let job = app.wait_terminal(&forced, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    let deadline = Instant::now() + WAIT;
    let joined_job = loop {
        let body = post_gql(&other, app.addr, JOB_QUERY, json!({ "id": joined })).await;
        let job = body["data"]["job"].clone();
        if job["status"] != "RUNNING" && job["status"] != "QUEUED" {
            break job;
        }
        assert!(Instant::now() < deadline, "{job:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(joined_job["status"], "COMPLETED", "{joined_job:#}");
    assert_eq!(joined_job["counts"]["available"], 1);
    let d1 = doc(&joined_job, "d1");
    assert_eq!(fetch(d1["downloadUrl"].as_str().unwrap()).await, new_bytes);
    assert_eq!(app.court.gets(&n, "d1"), 2, "fetched once for both jobs");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_whose_worker_died_is_recovered_by_the_sweep() {
    let court = Court::start().await;
    let n = number(1204);
    let docs = vec![Doc::new("d1", "a.pdf", bytes(1_000, 1))];
    court.add_process(&n, docs.clone());
    let app = TestApp::spawn(court).await;
    first_job(&app, &n).await;

    let new_bytes = bytes(1_100, 55);
    app.court
        .add_process(&n, vec![Doc::new("d1", "a.pdf", new_bytes.clone())]);
    app.court.fail(&n, "d1", vec![Fault::Hang]);
    let (_, id, _) = start(&app, &app.http, &n, true, None).await;
    wait_sql(
        &app,
        "EXISTS (SELECT 1 FROM document_refreshes WHERE status = 'PROCESSING')",
    )
    .await;
    // Its worker is as good as dead: the claim lapses and is no longer the worker's.
    let pool = app.db.pool().await;
    sqlx::query(
        "UPDATE document_refreshes SET claim_token = gen_random_uuid(),
                lease_until = now() - interval '1 second'",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let job = app.job(&id).await;
    assert_eq!(job["status"], "RUNNING");
    assert_eq!(job["counts"]["processing"], 1, "{job:#}");

    // (The sweeper of the running app may make the same pass: either one recovers it.)
    autos::jobs::refresh::sweep(app.services()).await.unwrap();
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    let d1 = doc(&job, "d1");
    assert_eq!(fetch(d1["downloadUrl"].as_str().unwrap()).await, new_bytes);
    assert_eq!(
        app.court.gets(&n, "d1"),
        3,
        "first job, the hung one, the new one"
    );
    assert_eq!(
        scalar(&app, "SELECT count(*) FROM document_refreshes").await,
        0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_forced_job_stops_its_refresh_and_keeps_the_copy() {
    let court = Court::start().await;
    let n = number(1205);
    let docs = vec![Doc::new("d1", "a.pdf", bytes(3_000, 1))];
    court.add_process(&n, docs.clone());
    let app = TestApp::spawn(court).await;
    let first = first_job(&app, &n).await;

    app.court
        .add_process(&n, vec![Doc::new("d1", "a.pdf", bytes(3_000, 2))]);
    app.court.fail(&n, "d1", vec![slow(100, 200)]);
    let (_, id, _) = start(&app, &app.http, &n, true, None).await;
    wait_sql(
        &app,
        "EXISTS (SELECT 1 FROM document_refreshes WHERE status = 'PROCESSING')",
    )
    .await;
    let cancelled = app
        .data(
            "mutation($id: ID!) { cancelJob(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(cancelled["cancelJob"]["status"], "CANCELLED");
    // The transfer stops at its next heartbeat and the refresh is given back; the sweep drops
    // what no job awaits.
    wait_sql(
        &app,
        "NOT EXISTS (SELECT 1 FROM document_refreshes WHERE status = 'PROCESSING')",
    )
    .await;
    autos::jobs::refresh::sweep(app.services()).await.unwrap();
    assert_eq!(
        scalar(&app, "SELECT count(*) FROM document_refreshes").await,
        0
    );
    let job = app.job(&id).await;
    let d1 = doc(&job, "d1");
    assert_eq!(d1["status"], "AVAILABLE");
    assert_eq!(d1["sha256"], doc(&first, "d1")["sha256"]);
    assert_eq!(
        fetch(d1["downloadUrl"].as_str().unwrap()).await,
        docs[0].bytes.to_vec()
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Several webhooks per job
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_caller_of_a_running_job_gets_its_own_signed_delivery() {
    let court = Court::start().await;
    let n = number(1210);
    court.add_process(
        &n,
        vec![
            Doc::new("d1", "a.pdf", bytes(2_000, 1)),
            Doc::new("d2", "b.pdf", bytes(1_000, 2)),
        ],
    );
    // The job runs for about two seconds.
    court.fail(&n, "d1", vec![slow(100, 100)]);
    let app = spawn(court).await;
    let hooks = Receiver::start().await;
    let (url_a, url_b, url_c) = (hooks.url("/a"), hooks.url("/b"), hooks.url("/c"));
    // B's first attempt fails: each delivery has attempts of its own.
    hooks.script("/b", vec![Reply::status(500)]);

    let second_caller = client_with(&app.key(TENANT, &[autos::auth::Scope::Write]).await);
    let (created, id, _) = start(&app, &app.http, &n, false, Some(&url_a)).await;
    assert!(created);
    let (created, same, status) = start(&app, &second_caller, &n, false, Some(&url_b)).await;
    assert!(!created);
    assert_eq!(same, id);
    assert!(matches!(status.as_str(), "QUEUED" | "RUNNING"), "{status}");
    // Once per URL: neither a repeated URL nor the creator's own is added again.
    start(&app, &second_caller, &n, false, Some(&url_b)).await;
    start(&app, &app.http, &n, true, Some(&url_a)).await;

    let running = webhooks_of(&app, &app.http, &id).await;
    assert_eq!(running["webhook"]["url"], url_a.as_str());
    assert_eq!(running["webhook"]["status"], "NOT_SENT");
    let listed: Vec<&str> = (running["webhooks"].as_array().unwrap().iter())
        .map(|w| w["url"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![url_a.as_str(), url_b.as_str()], "{running:#}");
    assert!(running["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w["status"] == "NOT_SENT"));

    // Another tenant's caller gets a job of its own, reported to its own URL only.
    let other = client_with(&app.key("globex", &[autos::auth::Scope::Write]).await);
    let (created, other_id, _) = start(&app, &other, &n, false, Some(&url_c)).await;
    assert!(created, "another tenant's job");
    assert_ne!(other_id, id);

    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED");
    let done = wait_webhooks_done(&app, &app.http, &id).await;
    let a = hooks.wait_for("/a", 1, WAIT).await;
    let b = hooks.wait_for("/b", 2, WAIT).await;
    let c = hooks.wait_for("/c", 1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hooks.requests("/a").len(), 1, "one message to A");
    assert_eq!(
        hooks.requests("/b").len(),
        2,
        "one message to B, tried twice"
    );
    assert_eq!(hooks.requests("/c").len(), 1);

    let key = signing_key(&app, &app.http).await;
    let id_a = assert_signed(&key, &a[0]);
    let id_b = assert_signed(&key, &b[1]);
    assert_eq!(
        assert_signed(&key, &b[0]),
        id_b,
        "a retry keeps its webhook-id"
    );
    assert_ne!(id_a, id_b, "each URL its own message");
    for r in [&a[0], &b[1]] {
        let body = r.json();
        assert_eq!(body["type"], "job.completed");
        assert_eq!(body["data"]["jobId"], id.as_str());
        assert_eq!(body["data"]["status"], "COMPLETED");
    }
    let other_key = signing_key(&app, &other).await;
    assert_signed(&other_key, &c[0]);
    assert_eq!(c[0].json()["data"]["jobId"], other_id.as_str());

    assert_eq!(done["webhook"]["url"], url_a.as_str());
    assert_eq!(done["webhook"]["status"], "DELIVERED");
    let all = done["webhooks"].as_array().unwrap();
    assert_eq!(all.len(), 2, "{done:#}");
    assert_eq!(all[0]["url"], url_a.as_str());
    assert_eq!(
        (&all[0]["status"], &all[0]["attempts"], &all[0]["sent"]),
        (&json!("DELIVERED"), &json!(1), &json!(true))
    );
    assert_eq!(all[1]["url"], url_b.as_str());
    assert_eq!(
        (
            &all[1]["status"],
            &all[1]["attempts"],
            &all[1]["statusCode"]
        ),
        (&json!("DELIVERED"), &json!(2), &json!(200))
    );
    let deliveries = scalar(
        &app,
        &format!("SELECT count(*) FROM webhook_deliveries WHERE job_id = '{id}'"),
    )
    .await;
    assert_eq!(deliveries, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_brought_to_a_completed_job_is_called_at_once_and_once() {
    let court = Court::start().await;
    let n = number(1211);
    court.add_process(&n, vec![Doc::new("d1", "a.pdf", bytes(1_000, 1))]);
    let app = spawn(court).await;
    let hooks = Receiver::start().await;
    let url = hooks.url("/late");
    let first = first_job(&app, &n).await;
    let id = first["id"].as_str().unwrap();

    let (created, same, status) = start(&app, &app.http, &n, false, Some(&url)).await;
    assert!(!created);
    assert_eq!(same, id);
    assert_eq!(status, "COMPLETED");
    let got = hooks.wait_for("/late", 1, WAIT).await;
    let key = signing_key(&app, &app.http).await;
    assert_signed(&key, &got[0]);
    let body = got[0].json();
    assert_eq!(body["type"], "job.completed");
    assert_eq!(body["data"]["jobId"], id);
    let link = body["data"]["documents"][0]["downloadUrl"]
        .as_str()
        .unwrap();
    assert_eq!(fetch(link).await, bytes(1_000, 1));

    let done = wait_webhooks_done(&app, &app.http, id).await;
    assert_eq!(done["webhook"], Value::Null, "the creator brought none");
    assert_eq!(done["webhooks"][0]["url"], url.as_str());
    assert_eq!(done["webhooks"][0]["status"], "DELIVERED");

    // The same URL again: nothing more.
    start(&app, &app.http, &n, false, Some(&url)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hooks.requests("/late").len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_takes_at_most_twenty_webhook_urls() {
    let court = Court::start().await;
    let n = number(1220);
    court.add_process(&n, vec![Doc::new("d1", "a.pdf", bytes(2_000, 1))]);
    // The job runs while the URLs come.
    court.fail(&n, "d1", vec![slow(100, 200)]);
    let app = spawn(court).await;
    let hooks = Receiver::start().await;
    let url = |i: usize| hooks.url(&format!("/h{i}"));

    let (created, id, _) = start(&app, &app.http, &n, false, Some(&url(0))).await;
    assert!(created);
    for i in 1..20 {
        let (created, same, _) = start(&app, &app.http, &n, false, Some(&url(i))).await;
        assert!(!created && same == id, "caller {i}");
    }
    // A URL the job has already is no addition, even at the cap.
    start(&app, &app.http, &n, false, Some(&url(7))).await;
    let refused = post_gql(
        &app.http,
        app.addr,
        START,
        json!({ "n": n, "f": false, "w": url(20) }),
    )
    .await;
    assert_eq!(error_code(&refused), "QUOTA_EXCEEDED", "{refused:#}");
    let listed = webhooks_of(&app, &app.http, &id).await;
    let urls: Vec<String> = (listed["webhooks"].as_array().unwrap().iter())
        .map(|w| w["url"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(urls, (0..20).map(url).collect::<Vec<_>>(), "{listed:#}");
    app.stop().await;
}

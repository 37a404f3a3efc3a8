//! Webhook delivery end to end (contract §6): a job that ends with a `webhookUrl` POSTs one
//! signed message to a real receiver, retried on failure and recorded in `DownloadJob.webhook`;
//! `sendTestWebhook`; targets refused at send time; `autos webhook-secret`.
//!
//! Signatures are checked by an implementation of Standard Webhooks written here, with the
//! `hmac`, `sha2` and `base64` crates, not by autos' own signing code.

mod common;

use autos::app::{Application, Role};
use autos::config::Config;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use common::receiver::{Received, Receiver, Reply};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

const WEBHOOK_QUERY: &str = "query($id: ID!) { job(id: $id) { id status
    webhook { url sent attempts lastError deliveredAt status statusCode } } }";

const SEND_TEST: &str = "mutation($u: String!) {
    sendTestWebhook(url: $u) { url delivered statusCode attempts error } }";

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A fresh Standard Webhooks secret: its `whsec_` text and the key bytes.
fn new_secret() -> (String, Vec<u8>) {
    let key: [u8; 32] = rand::random();
    (format!("whsec_{}", STANDARD.encode(key)), key.to_vec())
}

/// autos (API and workers) with webhooks set up for a receiver on 127.0.0.1: a known secret,
/// private targets allowed, 50 ms backoff, 3 attempts, 2 s timeout; `tweak` changes the rest.
/// Returns the app and the signing key.
///
/// The known secret is `AUTOS_WEBHOOK_SECRET`, which signs the messages of the tenant
/// `default`: the app's key (and so its jobs) is that tenant's.
async fn spawn(
    court: Court,
    options: Options,
    tweak: impl FnOnce(&mut Config),
) -> (TestApp, Vec<u8>) {
    let (secret, signing_key) = new_secret();
    let db = TestDb::new().await;
    let s3 = TestS3::start().await;
    let mut cfg = config(&db.url, &s3, &court.url(), &options);
    cfg.webhook_secret = Some(secret);
    cfg.webhook_allow_private = true;
    cfg.webhook_backoff_ms = 50;
    cfg.webhook_max_attempts = 3;
    cfg.webhook_timeout_ms = 2_000;
    tweak(&mut cfg);
    let app = Application::start(cfg, options.role)
        .await
        .expect("start autos");
    let key = create_key(&db.url, "default", &[autos::auth::Scope::Write]).await;
    let app = TestApp {
        addr: app.addr.expect("serving"),
        app: Some(app),
        http: client_with(&key),
        key,
        db,
        s3,
        court,
    };
    (app, signing_key)
}

/// startDownload with a webhook URL; returns the job id.
async fn start_with_webhook(app: &TestApp, number: &str, url: &str) -> String {
    let data = app
        .data(
            "mutation($n: String!, $w: String) {
                startDownload(input: {number: $n, webhookUrl: $w}) { created job { id status } } }",
            json!({ "n": number, "w": url }),
        )
        .await;
    assert_eq!(data["startDownload"]["created"], true, "{data:#}");
    data["startDownload"]["job"]["id"]
        .as_str()
        .expect("job id")
        .to_string()
}

/// The job's status and webhook.
async fn webhook_of(app: &TestApp, id: &str) -> Value {
    app.data(WEBHOOK_QUERY, json!({ "id": id })).await["job"].clone()
}

/// Polls until the job's webhook is DELIVERED or FAILED; returns the job (status and webhook).
async fn wait_webhook_done(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let job = webhook_of(app, id).await;
        if matches!(
            job["webhook"]["status"].as_str(),
            Some("DELIVERED" | "FAILED")
        ) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "webhook of job {id} not done after {WAIT:?}: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn send_test(app: &TestApp, url: &str) -> Value {
    app.data(SEND_TEST, json!({ "u": url })).await["sendTestWebhook"].clone()
}

/// Standard Webhooks verification, independent of autos: HMAC-SHA256 with `key` over
/// `{webhook-id}.{webhook-timestamp}.{body}`, compared with each `v1,` entry of
/// `webhook-signature`; the timestamp must be within 5 minutes of now.
fn signature_ok(key: &[u8], id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    if (Utc::now().timestamp() - ts).abs() > 5 * 60 {
        return false;
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    header
        .split_ascii_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|given| mac.clone().verify_slice(&given).is_ok())
}

/// Asserts that a request is a signed Standard Webhooks JSON POST; returns its `webhook-id`.
fn assert_signed(key: &[u8], r: &Received) -> String {
    assert_eq!(r.method, "POST");
    let content_type = r.header("content-type");
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type}"
    );
    let id = r.header("webhook-id");
    assert!(id.starts_with("msg_") && id.len() > 4, "webhook-id {id}");
    let ts = r.header("webhook-timestamp");
    let sig = r.header("webhook-signature");
    assert!(sig.contains("v1,"), "webhook-signature {sig}");
    assert!(
        signature_ok(key, id, ts, &r.body, sig),
        "signature {sig} does not verify for id {id}, timestamp {ts}, body {}",
        String::from_utf8_lossy(&r.body)
    );
    // The check above can fail: not with another key, a changed body, id or timestamp.
    let (_, other_key) = new_secret();
    assert!(!signature_ok(&other_key, id, ts, &r.body, sig));
    let mut tampered = r.body.to_vec();
    tampered.push(b' ');
    assert!(!signature_ok(key, id, ts, &tampered, sig));
    assert!(!signature_ok(key, "msg_other", ts, &r.body, sig));
    let shifted = (ts.parse::<i64>().unwrap() + 1).to_string();
    assert!(!signature_ok(key, id, &shifted, &r.body, sig));
    id.to_string()
}

fn rfc3339(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {value}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn lower(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_lowercase()
}

/// The recorded attempts of a job's deliveries (status code, error, duration in ms), in order.
async fn recorded_attempts(app: &TestApp, job_id: &str) -> Vec<(Option<i32>, Option<String>, i32)> {
    let pool = app.db.pool().await;
    let rows = sqlx::query_as(
        "SELECT a.status_code, a.error, a.duration_ms FROM webhook_attempts a
         JOIN webhook_deliveries d ON d.id = a.delivery_id
         WHERE d.job_id = $1::text::uuid ORDER BY a.id",
    )
    .bind(job_id)
    .fetch_all(&pool)
    .await
    .expect("attempts");
    pool.close().await;
    rows
}

fn three_docs(n: &str, court: &Court) -> Vec<Doc> {
    let mut png = Doc::new("d3", "foto da audiência.png", bytes(3_000, 33));
    png.mime = Some("image/png".into());
    let docs = vec![
        Doc::new("d1", "Petição inicial.pdf", bytes(1_500, 11)),
        Doc::new("d2", "Contestação.pdf", bytes(2_500, 22)),
        png,
    ];
    court.add_process(n, docs.clone());
    docs
}

// ---------------------------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_completed_job_posts_one_signed_message_with_working_links() {
    let court = Court::start().await;
    let n = number(1);
    let docs = three_docs(&n, &court);
    let (app, key) = spawn(court, Options::default(), |_| {}).await;
    let hook = Receiver::start().await;

    let id = start_with_webhook(&app, &n, &hook.url("/hooks/autos")).await;
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    let state = wait_webhook_done(&app, &id).await;

    // Exactly one POST, even a while later.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = hook.all();
    assert_eq!(got.len(), 1, "{got:#?}");
    let r = &got[0];
    assert_eq!(r.path, "/hooks/autos");
    assert_signed(&key, r);

    // The contract's body.
    let body = r.json();
    assert_eq!(keys(&body), set(&["type", "timestamp", "data"]), "{body:#}");
    assert_eq!(body["type"], "job.completed");
    let sent_at = rfc3339(&body["timestamp"]);
    assert!(
        (Utc::now() - sent_at).num_seconds().abs() < 60,
        "timestamp {sent_at}"
    );
    let data = &body["data"];
    let contract_data = set(&[
        "jobId",
        "processNumber",
        "status",
        "progress",
        "total",
        "counts",
        "documents",
    ]);
    assert!(
        keys(data).is_superset(&contract_data),
        "data lacks contract fields: {data:#}"
    );
    assert_eq!(data["jobId"], id.as_str());
    assert_eq!(data["processNumber"], n.as_str());
    assert!(n.contains('-') && n.contains('.'), "formatted: {n}");
    assert_eq!(data["status"], "COMPLETED");
    assert_eq!(data["progress"], 100);
    assert_eq!(data["total"], 3);
    assert_eq!(
        data["counts"],
        json!({"pending": 0, "processing": 0, "available": 3, "failed": 0})
    );
    let documents = data["documents"].as_array().expect("documents");
    let source_ids: Vec<&str> = documents
        .iter()
        .map(|d| d["sourceId"].as_str().unwrap())
        .collect();
    assert_eq!(source_ids, ["d1", "d2", "d3"], "the source's order");
    let doc_fields = set(&[
        "id",
        "sourceId",
        "name",
        "status",
        "size",
        "sha256",
        "mimeType",
        "downloadUrl",
        "downloadUrlExpiresAt",
        "error",
    ]);
    for (sent, court_doc) in documents.iter().zip(&docs) {
        assert_eq!(keys(sent), doc_fields, "{sent:#}");
        assert_eq!(sent["id"], doc(&job, &court_doc.id)["id"], "autos' own id");
        assert_eq!(sent["name"], court_doc.name.as_str());
        assert_eq!(sent["status"], "AVAILABLE");
        assert_eq!(sent["size"], json!(court_doc.bytes.len()));
        assert_eq!(sent["sha256"], sha_hex(&court_doc.bytes).as_str());
        assert_eq!(sent["mimeType"], court_doc.mime.as_deref().unwrap());
        assert_eq!(sent["error"], Value::Null);
        let expires = rfc3339(&sent["downloadUrlExpiresAt"]);
        assert!(expires > Utc::now(), "link already expired: {expires}");
        assert!(expires < Utc::now() + chrono::Duration::seconds(3_700));
        // Every link serves the document's bytes.
        let url = sent["downloadUrl"].as_str().expect("downloadUrl");
        let response = reqwest::get(url).await.expect("download");
        assert_eq!(response.status(), 200, "{url}");
        let fetched = response.bytes().await.unwrap();
        assert_eq!(
            fetched.as_ref(),
            court_doc.bytes.as_ref(),
            "{}",
            court_doc.id
        );
    }

    // DownloadJob.webhook shows the delivery.
    let webhook = &state["webhook"];
    assert_eq!(webhook["url"], hook.url("/hooks/autos").as_str());
    assert_eq!(webhook["sent"], true, "{state:#}");
    assert_eq!(webhook["attempts"], 1);
    assert_eq!(webhook["status"], "DELIVERED");
    assert_eq!(webhook["statusCode"], 200);
    assert_eq!(webhook["lastError"], Value::Null);
    let delivered = rfc3339(&webhook["deliveredAt"]);
    assert!((Utc::now() - delivered).num_seconds().abs() < 60);
    assert_eq!(state["status"], "COMPLETED");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_attempts_are_retried_with_the_same_message() {
    let court = Court::start().await;
    let n = number(2);
    court.add_process(&n, vec![Doc::new("d1", "a.pdf", bytes(1_000, 1))]);
    let (app, key) = spawn(court, Options::default(), |_| {}).await;
    let hook = Receiver::start().await;
    hook.script(
        "/flaky",
        vec![Reply::status(500), Reply::status(500), Reply::ok()],
    );

    let id = start_with_webhook(&app, &n, &hook.url("/flaky")).await;
    let state = wait_webhook_done(&app, &id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = hook.all();
    assert_eq!(got.len(), 3, "{got:#?}");
    let ids: Vec<String> = got.iter().map(|r| assert_signed(&key, r)).collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "webhook-id changed: {ids:?}"
    );
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "the body changed between attempts"
    );
    assert_eq!(got[0].json()["type"], "job.completed");
    // Exponential backoff from 50 ms: at least 50 ms, then 100 ms, between attempts.
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps[0] >= Duration::from_millis(45) && gaps[1] >= Duration::from_millis(95),
        "{gaps:?}"
    );

    let webhook = &state["webhook"];
    assert_eq!(webhook["sent"], true, "{state:#}");
    assert_eq!(webhook["attempts"], 3);
    assert_eq!(webhook["status"], "DELIVERED");
    assert_eq!(webhook["statusCode"], 200);
    assert_eq!(webhook["lastError"], Value::Null);
    assert!(webhook["deliveredAt"].is_string());
    // A webhook failure never changes the job.
    assert_eq!(state["status"], "COMPLETED");
    // Every attempt is recorded.
    let codes: Vec<Option<i32>> = recorded_attempts(&app, &id)
        .await
        .into_iter()
        .map(|a| a.0)
        .collect();
    assert_eq!(codes, [Some(500), Some(500), Some(200)]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_that_always_fails_gets_max_attempts_then_nothing() {
    let court = Court::start().await;
    let n = number(3);
    court.add_process(&n, vec![Doc::new("d1", "a.pdf", bytes(1_000, 1))]);
    let (app, key) = spawn(court, Options::default(), |c| c.webhook_max_attempts = 3).await;
    let hook = Receiver::start().await;
    hook.always("/down", Reply::status(500).body("database on fire"));

    let id = start_with_webhook(&app, &n, &hook.url("/down")).await;
    let state = wait_webhook_done(&app, &id).await;
    // Longer than another backoff (200 ms + jitter) and a poll would take.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let got = hook.all();
    assert_eq!(got.len(), 3, "{got:#?}");
    for r in &got {
        assert_signed(&key, r);
    }
    let webhook = &webhook_of(&app, &id).await["webhook"];
    assert_eq!(webhook, &state["webhook"], "changed after it failed");
    assert_eq!(webhook["sent"], false);
    assert_eq!(webhook["attempts"], 3);
    assert_eq!(webhook["status"], "FAILED");
    assert_eq!(webhook["statusCode"], 500);
    assert_eq!(webhook["deliveredAt"], Value::Null);
    let error = lower(&webhook["lastError"]);
    assert!(error.contains("500"), "{webhook:#}");
    assert_eq!(state["status"], "COMPLETED");
    assert_eq!(recorded_attempts(&app, &id).await.len(), 3);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gone_410_stops_at_once() {
    let court = Court::start().await;
    let n = number(4);
    court.add_process(&n, vec![Doc::new("d1", "a.pdf", bytes(1_000, 1))]);
    let (app, key) = spawn(court, Options::default(), |c| c.webhook_max_attempts = 5).await;
    let hook = Receiver::start().await;
    hook.always("/gone", Reply::status(410));

    let id = start_with_webhook(&app, &n, &hook.url("/gone")).await;
    let state = wait_webhook_done(&app, &id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = hook.all();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_signed(&key, &got[0]);
    let webhook = &state["webhook"];
    assert_eq!(webhook["sent"], false);
    assert_eq!(webhook["attempts"], 1);
    assert_eq!(webhook["status"], "FAILED");
    assert_eq!(webhook["statusCode"], 410);
    assert!(lower(&webhook["lastError"]).contains("410"), "{webhook:#}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirects_are_not_followed() {
    let court = Court::start().await;
    let n = number(5);
    court.add_process(&n, vec![Doc::new("d1", "a.pdf", bytes(1_000, 1))]);
    let (app, _key) = spawn(court, Options::default(), |c| c.webhook_max_attempts = 3).await;
    let hook = Receiver::start().await;
    let elsewhere = hook.url("/elsewhere");
    hook.always("/moved", Reply::redirect(&elsewhere));

    let id = start_with_webhook(&app, &n, &hook.url("/moved")).await;
    let state = wait_webhook_done(&app, &id).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(hook.requests("/moved").len(), 3);
    assert!(
        hook.requests("/elsewhere").is_empty(),
        "the redirect was followed"
    );
    assert_eq!(hook.all().len(), 3);
    let webhook = &state["webhook"];
    assert_eq!(webhook["sent"], false);
    assert_eq!(webhook["attempts"], 3);
    assert_eq!(webhook["status"], "FAILED");
    assert_eq!(webhook["statusCode"], 302);
    let error = lower(&webhook["lastError"]);
    assert!(error.contains("redirect"), "{webhook:#}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_that_hangs_times_out_and_is_retried() {
    let court = Court::start().await;
    let n = number(6);
    court.add_process(&n, vec![Doc::new("d1", "a.pdf", bytes(1_000, 1))]);
    let (app, key) = spawn(court, Options::default(), |c| {
        c.webhook_max_attempts = 2;
        c.webhook_timeout_ms = 500;
    })
    .await;
    let hook = Receiver::start().await;
    hook.always("/slow", Reply::hang(Duration::from_secs(20)));

    let id = start_with_webhook(&app, &n, &hook.url("/slow")).await;
    let state = wait_webhook_done(&app, &id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = hook.all();
    assert_eq!(got.len(), 2, "{got:#?}");
    for r in &got {
        assert_signed(&key, r);
    }
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(500),
        "retried before the first attempt timed out"
    );
    let webhook = &state["webhook"];
    assert_eq!(webhook["sent"], false);
    assert_eq!(webhook["attempts"], 2);
    assert_eq!(webhook["status"], "FAILED");
    assert_eq!(webhook["statusCode"], Value::Null);
    let error = lower(&webhook["lastError"]);
    assert!(
        error.contains("in time") || error.contains("timed out") || error.contains("timeout"),
        "{webhook:#}"
    );
    for (code, error, duration_ms) in recorded_attempts(&app, &id).await {
        assert_eq!(code, None);
        assert!(error.is_some());
        assert!(
            (450..5_000).contains(&duration_ms),
            "attempt took {duration_ms} ms with a 500 ms timeout"
        );
    }
    assert_eq!(state["status"], "COMPLETED");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_after_is_honoured() {
    let court = Court::start().await;
    let n = number(7);
    court.add_process(&n, vec![Doc::new("d1", "a.pdf", bytes(1_000, 1))]);
    let (app, key) = spawn(court, Options::default(), |_| {}).await;
    let hook = Receiver::start().await;
    hook.script(
        "/busy",
        vec![Reply::status(429).header("retry-after", "1"), Reply::ok()],
    );

    let id = start_with_webhook(&app, &n, &hook.url("/busy")).await;
    let state = wait_webhook_done(&app, &id).await;
    let got = hook.all();
    assert_eq!(got.len(), 2, "{got:#?}");
    let id0 = assert_signed(&key, &got[0]);
    assert_eq!(assert_signed(&key, &got[1]), id0);
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "second attempt {gap:?} after the first despite Retry-After: 1"
    );
    assert!(gap < Duration::from_secs(5), "{gap:?}");
    let webhook = &state["webhook"];
    assert_eq!(webhook["sent"], true, "{state:#}");
    assert_eq!(webhook["attempts"], 2);
    assert_eq!(webhook["statusCode"], 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_ending_has_its_event_type() {
    let court = Court::start().await;
    // One document the court does not have (404, its own failure): COMPLETED_WITH_ERRORS.
    // (A court answering 500 to everything would be an outage: the jobs would wait.)
    let partial = number(81);
    court.add_process(
        &partial,
        vec![
            Doc::new("ok", "ok.pdf", bytes(1_000, 1)),
            Doc::new("bad", "bad.pdf", bytes(1_000, 2)),
        ],
    );
    court.fail_always(&partial, "bad", Fault::Status(404, None));
    // Its only document fails: FAILED.
    let failed = number(82);
    court.add_process(&failed, vec![Doc::new("bad", "bad.pdf", bytes(1_000, 3))]);
    court.fail_always(&failed, "bad", Fault::Status(404, None));
    // Slow documents, cancelled before they arrive: CANCELLED.
    let cancelled = number(83);
    court.add_process(
        &cancelled,
        (1..=3)
            .map(|i| Doc::new(&format!("s{i}"), "slow.pdf", bytes(2_000, i)))
            .collect(),
    );
    for i in 1..=3 {
        court.fail_always(
            &cancelled,
            &format!("s{i}"),
            Fault::Slow {
                chunk: 200,
                every: Duration::from_millis(200),
            },
        );
    }
    let options = Options {
        max_attempts: 2,
        lease_ms: 1_000,
        ..Options::default()
    };
    let (app, key) = spawn(court, options, |_| {}).await;
    let hook = Receiver::start().await;

    let partial_id = start_with_webhook(&app, &partial, &hook.url("/partial")).await;
    let failed_id = start_with_webhook(&app, &failed, &hook.url("/failed")).await;
    let cancelled_id = start_with_webhook(&app, &cancelled, &hook.url("/cancelled")).await;
    // Nothing is sent while the job runs.
    let running = webhook_of(&app, &cancelled_id).await;
    assert!(
        matches!(running["status"].as_str(), Some("QUEUED" | "RUNNING")),
        "{running:#}"
    );
    assert_eq!(
        running["webhook"],
        json!({"url": hook.url("/cancelled"), "sent": false, "attempts": 0, "lastError": null,
               "deliveredAt": null, "status": "NOT_SENT", "statusCode": null})
    );
    let cancel = app
        .data(
            "mutation($id: ID!) { cancelJob(id: $id) { status } }",
            json!({ "id": cancelled_id }),
        )
        .await;
    assert_eq!(cancel["cancelJob"]["status"], "CANCELLED");

    for (id, path, status, event) in [
        (
            &partial_id,
            "/partial",
            "COMPLETED_WITH_ERRORS",
            "job.completed_with_errors",
        ),
        (&failed_id, "/failed", "FAILED", "job.failed"),
        (&cancelled_id, "/cancelled", "CANCELLED", "job.cancelled"),
    ] {
        let job = app.wait_terminal(id, WAIT).await;
        assert_eq!(job["status"], status, "{job:#}");
        let state = wait_webhook_done(&app, id).await;
        assert_eq!(state["webhook"]["status"], "DELIVERED", "{state:#}");
        let got = hook.requests(path);
        assert_eq!(got.len(), 1, "{path}: {got:#?}");
        assert_signed(&key, &got[0]);
        let body = got[0].json();
        assert_eq!(body["type"], event, "{body:#}");
        assert_eq!(body["data"]["jobId"], id.as_str());
        assert_eq!(body["data"]["status"], status);
        assert_eq!(body["data"]["progress"], 100);
    }

    // The failed document of the partial job: FAILED, no link, an error.
    let body = hook.requests("/partial")[0].json();
    assert_eq!(
        body["data"]["counts"],
        json!({"pending": 0, "processing": 0, "available": 1, "failed": 1})
    );
    let documents = body["data"]["documents"].as_array().unwrap();
    let bad = documents.iter().find(|d| d["sourceId"] == "bad").unwrap();
    assert_eq!(bad["status"], "FAILED");
    assert_eq!(bad["downloadUrl"], Value::Null);
    assert_eq!(bad["downloadUrlExpiresAt"], Value::Null);
    assert!(
        bad["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{bad:#}"
    );
    let ok = documents.iter().find(|d| d["sourceId"] == "ok").unwrap();
    assert_eq!(ok["status"], "AVAILABLE");
    assert!(ok["downloadUrl"].is_string());
    assert_eq!(ok["error"], Value::Null);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_connection_is_retried() {
    let court = Court::start().await;
    let n = number(9);
    court.add_process(&n, vec![Doc::new("d1", "a.pdf", bytes(1_000, 1))]);
    let (app, _key) = spawn(court, Options::default(), |c| c.webhook_max_attempts = 2).await;
    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let id = start_with_webhook(&app, &n, &format!("http://{closed}/hook")).await;
    let state = wait_webhook_done(&app, &id).await;
    let webhook = &state["webhook"];
    assert_eq!(webhook["sent"], false);
    assert_eq!(webhook["status"], "FAILED");
    assert_eq!(webhook["attempts"], 2, "retried: {webhook:#}");
    assert_eq!(webhook["statusCode"], Value::Null);
    assert!(
        lower(&webhook["lastError"]).contains("connect"),
        "{webhook:#}"
    );
    assert_eq!(recorded_attempts(&app, &id).await.len(), 2);
    assert_eq!(state["status"], "COMPLETED");
    app.stop().await;
}

/// `Retry-After` may be an HTTP-date (RFC 9110 §10.2.3); the court client reads both forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_after_as_an_http_date_is_honoured() {
    let court = Court::start().await;
    let n = number(71);
    court.add_process(&n, vec![Doc::new("d1", "a.pdf", bytes(1_000, 1))]);
    let (app, _key) = spawn(court, Options::default(), |_| {}).await;
    let hook = Receiver::start().await;
    // Whole seconds: 3 s from now is at least 2 s away.
    let date = (Utc::now() + chrono::Duration::seconds(3))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    hook.script(
        "/busy",
        vec![Reply::status(503).header("retry-after", &date), Reply::ok()],
    );

    let id = start_with_webhook(&app, &n, &hook.url("/busy")).await;
    let state = wait_webhook_done(&app, &id).await;
    let got = hook.all();
    assert_eq!(got.len(), 2, "{got:#?}");
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(1_500),
        "second attempt {gap:?} after the first despite Retry-After: {date}"
    );
    assert_eq!(state["webhook"]["sent"], true, "{state:#}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_is_complete_from_the_start_reports_too() {
    let court = Court::start().await;
    let n = number(12);
    let docs = vec![Doc::new("d1", "a.pdf", bytes(1_000, 1))];
    court.add_process(&n, docs.clone());
    let empty = number(13);
    court.add_process(&empty, vec![]);
    let (app, key) = spawn(court, Options::default(), |_| {}).await;
    let hook = Receiver::start().await;

    // Forced again with nothing changed: the new job is COMPLETED as it is created.
    let first = app.start(&n, false).await["job"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.wait_terminal(&first, WAIT).await;
    let data = app
        .data(
            "mutation($n: String!, $w: String) {
                startDownload(input: {number: $n, webhookUrl: $w, force: true}) {
                    created job { id status } } }",
            json!({ "n": n, "w": hook.url("/again") }),
        )
        .await;
    assert_eq!(
        data["startDownload"]["job"]["status"], "COMPLETED",
        "{data:#}"
    );
    let again = data["startDownload"]["job"]["id"].as_str().unwrap();
    let state = wait_webhook_done(&app, again).await;
    assert_eq!(state["webhook"]["status"], "DELIVERED", "{state:#}");
    let got = hook.requests("/again");
    assert_eq!(got.len(), 1);
    assert_signed(&key, &got[0]);
    let body = got[0].json();
    assert_eq!(body["type"], "job.completed");
    assert_eq!(body["data"]["jobId"], again);
    let sent = &body["data"]["documents"][0];
    assert_eq!(sent["status"], "AVAILABLE");
    let link = sent["downloadUrl"].as_str().expect("a link");
    let fetched = reqwest::get(link).await.unwrap().bytes().await.unwrap();
    assert_eq!(fetched.as_ref(), docs[0].bytes.as_ref());

    // A process without documents.
    let id = start_with_webhook(&app, &empty, &hook.url("/empty")).await;
    let state = wait_webhook_done(&app, &id).await;
    assert_eq!(state["webhook"]["status"], "DELIVERED", "{state:#}");
    let body = hook.requests("/empty")[0].json();
    assert_eq!(body["data"]["jobId"], id.as_str());
    assert_eq!(body["data"]["total"], 0);
    assert_eq!(body["data"]["documents"], json!([]));
    assert_eq!(body["type"], format!("job.{}", lower(&state["status"])));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retrying_failed_documents_sends_a_second_message() {
    let court = Court::start().await;
    let n = number(14);
    court.add_process(
        &n,
        vec![
            Doc::new("ok", "ok.pdf", bytes(1_000, 1)),
            Doc::new("bad", "bad.pdf", bytes(1_000, 2)),
        ],
    );
    court.fail_always(&n, "bad", Fault::Status(500, None));
    let options = Options {
        max_attempts: 1,
        ..Options::default()
    };
    let (app, key) = spawn(court, options, |_| {}).await;
    let hook = Receiver::start().await;

    let id = start_with_webhook(&app, &n, &hook.url("/hook")).await;
    assert_eq!(
        app.wait_terminal(&id, WAIT).await["status"],
        "COMPLETED_WITH_ERRORS"
    );
    wait_webhook_done(&app, &id).await;
    app.court.heal(&n, "bad");
    let retried = app
        .data(
            "mutation($id: ID!) { retryFailedDocuments(jobId: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(retried["retryFailedDocuments"]["status"], "RUNNING");
    assert_eq!(app.wait_terminal(&id, WAIT).await["status"], "COMPLETED");
    hook.wait_for("/hook", 2, WAIT).await;
    let state = wait_webhook_done(&app, &id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = hook.all();
    assert_eq!(got.len(), 2, "{got:#?}");
    let types: Vec<Value> = got.iter().map(|r| r.json()["type"].clone()).collect();
    assert_eq!(types, ["job.completed_with_errors", "job.completed"]);
    let first = assert_signed(&key, &got[0]);
    let second = assert_signed(&key, &got[1]);
    assert_ne!(first, second, "a new ending is a new message");
    let webhook = &state["webhook"];
    assert_eq!(webhook["status"], "DELIVERED", "{state:#}");
    assert_eq!(webhook["attempts"], 1);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// sendTestWebhook
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_test_webhook_reports_what_happened() {
    let (app, key) = spawn(Court::start().await, Options::default(), |_| {}).await;
    let hook = Receiver::start().await;
    hook.always("/broken", Reply::status(500));

    let url = hook.url("/test");
    let result = send_test(&app, &url).await;
    assert_eq!(
        result,
        json!({"url": url, "delivered": true, "statusCode": 200, "attempts": 1, "error": null})
    );
    let got = hook.requests("/test");
    assert_eq!(got.len(), 1);
    assert_signed(&key, &got[0]);
    let body = got[0].json();
    assert_eq!(body["type"], "webhook.test", "{body:#}");
    rfc3339(&body["timestamp"]);

    // A host name is resolved, checked, and connected to at the checked address.
    let url = format!("http://localhost:{}/by-name", hook.addr.port());
    let result = send_test(&app, &url).await;
    assert_eq!(result["delivered"], true, "{result:#}");
    let got = hook.requests("/by-name");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("host"),
        format!("localhost:{}", hook.addr.port())
    );
    assert_signed(&key, &got[0]);

    let url = hook.url("/broken");
    let result = send_test(&app, &url).await;
    assert_eq!(result["delivered"], false, "{result:#}");
    assert_eq!(result["statusCode"], 500);
    assert_eq!(result["attempts"], 1);
    assert!(lower(&result["error"]).contains("500"), "{result:#}");
    assert_eq!(hook.requests("/broken").len(), 1, "sent once, not retried");
    app.stop().await;

    // By default a loopback target is refused before anything is sent.
    let app = TestApp::spawn(Court::start().await).await;
    let url = hook.url("/refused");
    let result = send_test(&app, &url).await;
    assert_eq!(result["delivered"], false, "{result:#}");
    assert_eq!(result["attempts"], 0);
    assert_eq!(result["statusCode"], Value::Null);
    assert!(lower(&result["error"]).contains("loopback"), "{result:#}");
    assert!(hook.requests("/refused").is_empty());
    assert_eq!(hook.all().len(), 3);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_huge_answer_is_read_only_in_part() {
    let (app, _key) = spawn(Court::start().await, Options::default(), |_| {}).await;
    let hook = Receiver::start().await;
    let huge = vec![b'x'; 1024 * 1024];
    hook.always("/big-ok", Reply::ok().body(huge.clone()));
    hook.always("/big-error", Reply::status(500).body(huge));

    let started = Instant::now();
    let ok = send_test(&app, &hook.url("/big-ok")).await;
    assert_eq!(ok["delivered"], true, "{ok:#}");
    assert_eq!(ok["error"], Value::Null);
    let failed = send_test(&app, &hook.url("/big-error")).await;
    assert_eq!(failed["delivered"], false);
    assert_eq!(failed["statusCode"], 500);
    let error = failed["error"].as_str().expect("error");
    assert!(error.contains("500") && error.len() < 1_024, "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    app.stop().await;
}

/// The receiver's words in `lastError` are cut short (the body to 200 characters); a redirect's
/// `Location` should be too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_huge_location_header_does_not_bloat_the_error() {
    let (app, _key) = spawn(Court::start().await, Options::default(), |_| {}).await;
    let hook = Receiver::start().await;
    let location = format!("{}?{}", hook.url("/elsewhere"), "a".repeat(64 * 1024));
    hook.always("/moved", Reply::redirect(&location));
    let result = send_test(&app, &hook.url("/moved")).await;
    assert_eq!(result["delivered"], false);
    assert_eq!(result["statusCode"], 302);
    let error = result["error"].as_str().expect("error");
    assert!(error.contains("redirect"), "{error:.300}");
    assert!(
        error.len() < 4 * 1024,
        "lastError is {} bytes: the whole Location header",
        error.len()
    );
    assert!(hook.requests("/elsewhere").is_empty());
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Targets refused at send time
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_private_target_is_refused_at_send_time_for_good() {
    let court = Court::start().await;
    let n = number(10);
    court.add_process(&n, vec![Doc::new("d1", "a.pdf", bytes(1_000, 1))]);
    // The API process accepts the loopback receiver (private targets allowed there) ...
    let serve_only = Options {
        role: Role::SERVE,
        ..Options::default()
    };
    let (app, _key) = spawn(court, serve_only, |_| {}).await;
    let hook = Receiver::start().await;
    let id = start_with_webhook(&app, &n, &hook.url("/private")).await;
    // ... but the worker that sends has the default configuration: no private addresses.
    // (The same as a host whose name came to resolve to a private address after the check.)
    let worker = app
        .another(Options {
            role: Role::WORK,
            ..Options::default()
        })
        .await;

    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED");
    let state = wait_webhook_done(&app, &id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hook.all().is_empty(), "a request reached a loopback target");
    let webhook = &webhook_of(&app, &id).await["webhook"];
    assert_eq!(webhook, &state["webhook"]);
    assert_eq!(webhook["sent"], false);
    assert_eq!(webhook["status"], "FAILED");
    assert_eq!(webhook["attempts"], 1, "refused for good: no retries");
    assert_eq!(webhook["statusCode"], Value::Null);
    assert_eq!(webhook["deliveredAt"], Value::Null);
    let error = lower(&webhook["lastError"]);
    assert!(
        error.contains("loopback") || error.contains("private"),
        "{webhook:#}"
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_start_download_refuses_a_private_webhook_url() {
    let court = Court::start().await;
    let n = number(11);
    court.add_process(&n, vec![Doc::new("d1", "a.pdf", bytes(1_000, 1))]);
    let app = TestApp::spawn(court).await;
    let hook = Receiver::start().await;
    let body = app
        .gql(
            "mutation($n: String!, $w: String) {
                startDownload(input: {number: $n, webhookUrl: $w}) { created } }",
            json!({ "n": n, "w": hook.url("/private") }),
        )
        .await;
    assert_eq!(error_code(&body), "INVALID_WEBHOOK_URL", "{body:#}");
    let message = lower(&body["errors"][0]["message"]);
    assert!(message.contains("loopback"), "{body:#}");
    assert!(hook.all().is_empty());
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// `autos webhook-secret`
// ---------------------------------------------------------------------------------------------

async fn webhook_secret_command(db: &TestDb, secret: Option<&str>) -> String {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_autos"));
    cmd.arg("webhook-secret")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("AUTOS_LOG", "error")
        .current_dir(env!("CARGO_TARGET_TMPDIR"));
    if let Some(secret) = secret {
        cmd.env("AUTOS_WEBHOOK_SECRET", secret);
    }
    let out = cmd.output().await.expect("run autos");
    assert!(
        out.status.success(),
        "autos webhook-secret failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_secret_command_prints_one_stable_secret() {
    let db = TestDb::new().await;
    let first = webhook_secret_command(&db, None).await;
    let secret = first.trim();
    assert_eq!(first, format!("{secret}\n"), "one line: {first:?}");
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("standard base64");
    assert!(key.len() >= 24, "{} bytes", key.len());
    assert_eq!(webhook_secret_command(&db, None).await.trim(), secret);

    let (configured, _) = new_secret();
    assert_eq!(
        webhook_secret_command(&db, Some(&configured)).await.trim(),
        configured
    );
    // The configured one does not replace the stored one.
    assert_eq!(webhook_secret_command(&db, None).await.trim(), secret);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_larger_than_a_page_reports_every_document_in_order_on_every_attempt() {
    // The body is written a page of documents (1,000) at a time: a job of 1,005 crosses a page.
    let court = Court::start().await;
    let n = number(40);
    let docs: Vec<Doc> = (0..1_005)
        .map(|i| {
            Doc::new(
                &format!("d{i}"),
                &format!("doc {i}.txt"),
                bytes(16, i as u8),
            )
        })
        .collect();
    court.add_process(&n, docs.clone());
    let (app, key) = spawn(court, Options::default(), |_| {}).await;
    let hook = Receiver::start().await;
    hook.script("/big", vec![Reply::status(500), Reply::ok()]);

    let id = start_with_webhook(&app, &n, &hook.url("/big")).await;
    let job = app.wait_terminal(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    let state = wait_webhook_done(&app, &id).await;
    assert_eq!(state["webhook"]["attempts"], 2, "{state:#}");
    let got = hook.all();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_signed(&key, &got[0]);
    assert_signed(&key, &got[1]);
    assert!(
        got[0].body == got[1].body,
        "the body changed between attempts"
    );
    let body = got[1].json();
    assert_eq!(body["data"]["total"], 1_005);
    let documents = body["data"]["documents"].as_array().expect("documents");
    let source_ids: Vec<&str> = documents
        .iter()
        .map(|d| d["sourceId"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
    assert_eq!(
        source_ids, expected,
        "every document, once, in the job's order"
    );
    for sent in documents {
        assert_eq!(sent["status"], "AVAILABLE", "{sent:#}");
        assert!(sent["downloadUrl"].is_string(), "{sent:#}");
    }
    // The last one's link serves its bytes.
    let last = documents.last().unwrap();
    let fetched = reqwest::get(last["downloadUrl"].as_str().unwrap())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(fetched.as_ref(), docs[1_004].bytes.as_ref() as &[u8]);
    app.stop().await;
}

//! Contract §8 for document fetching and storage: where a document's bytes may come from
//! (the court's own origin, or allowed hosts on checked addresses; redirects checked hop by
//! hop, at most five), distinct source ids never sharing an S3 key, and `lastError` as a
//! stable phrase per kind of failure.

mod common;

use common::elsewhere::Elsewhere;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Starts a download of `n` and waits for its job to end.
async fn run(app: &TestApp, n: &str) -> Value {
    let started = app.start(n, false).await;
    let id = started["job"]["id"].as_str().expect("a job id").to_string();
    app.wait_terminal(&id, WAIT).await
}

fn last_error(job: &Value, source_id: &str) -> String {
    doc(job, source_id)["lastError"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Asserts that `source_id` failed on its first attempt with `phrase`.
fn failed_at_once(job: &Value, source_id: &str, phrase: &str) {
    let d = doc(job, source_id);
    assert_eq!(d["status"], "FAILED", "{d:#}");
    assert_eq!(d["attempts"], 1, "not retried: {d:#}");
    assert_eq!(last_error(job, source_id), phrase, "{d:#}");
    assert!(d["storageKey"].is_null(), "{d:#}");
}

/// Bytes and the objects holding them, by source id, for documents that must be AVAILABLE.
async fn assert_stored(app: &TestApp, job: &Value, expected: &[(&str, &[u8])]) {
    for (source_id, bytes) in expected {
        let d = doc(job, source_id);
        assert_eq!(d["status"], "AVAILABLE", "{d:#}");
        let key = d["storageKey"].as_str().expect("a storage key");
        let (stored, _, _) = app.object(key).await.expect("object in S3");
        assert_eq!(&stored, bytes, "{source_id} at {key}");
        let link = d["downloadUrl"].as_str().expect("a download link");
        let served = reqwest::get(link).await.unwrap().bytes().await.unwrap();
        assert_eq!(
            &served[..],
            *bytes,
            "{source_id}: the link serves its own bytes"
        );
    }
}

/// A court process with one document of its own and two whose bytes are on `elsewhere`:
/// `direct` names it in the listing, `redirected` reaches it through a redirect of the court.
fn court_pointing_elsewhere(court: &Court, elsewhere: &Elsewhere, n: &str) -> [Vec<u8>; 3] {
    let data = [bytes(3000, 1), bytes(4000, 2), bytes(5000, 3)];
    let direct_url = elsewhere.serve("/docs/direct.pdf", data[1].clone());
    let redirected_url = elsewhere.serve("/docs/redirected.pdf", data[2].clone());
    court.redirect("to-elsewhere", &redirected_url);
    let mut direct = Doc::new("direct", "direto.pdf", data[1].clone());
    direct.url = Some(direct_url);
    let mut redirected = Doc::new("redirected", "redirecionado.pdf", data[2].clone());
    redirected.url = Some("redirect/to-elsewhere".into());
    court.add_process(
        n,
        vec![
            Doc::new("own", "proprio.pdf", data[0].clone()),
            direct,
            redirected,
        ],
    );
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn documents_on_hosts_not_allowed_fail_at_once_and_nothing_is_fetched_there() {
    let court = Court::start().await;
    let elsewhere = Elsewhere::start().await;
    let n = number(801);
    let data = court_pointing_elsewhere(&court, &elsewhere, &n);
    let app = TestApp::spawn(court).await;

    let job = run(&app, &n).await;
    assert_eq!(job["status"], "COMPLETED_WITH_ERRORS", "{job:#}");
    assert_stored(&app, &job, &[("own", &data[0])]).await;
    for source_id in ["direct", "redirected"] {
        failed_at_once(&job, source_id, "document URL refused: host not allowed");
    }
    let seen = elsewhere.seen();
    assert!(
        seen.is_empty(),
        "the other host saw no request at all: {seen:?}"
    );
    assert_eq!(app.court.redirected(), 1, "the redirect was asked once");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allowed_hosts_on_private_addresses_are_refused_unless_private_is_allowed() {
    let court = Court::start().await;
    let elsewhere = Elsewhere::start().await;
    let n = number(802);
    court_pointing_elsewhere(&court, &elsewhere, &n);
    let app = TestApp::spawn_configured(court, Options::default(), |c| {
        c.source_allowed_hosts = "127.0.0.1".into();
    })
    .await;

    let job = run(&app, &n).await;
    assert_eq!(job["status"], "COMPLETED_WITH_ERRORS", "{job:#}");
    assert_eq!(
        doc(&job, "own")["status"],
        "AVAILABLE",
        "the court's own origin is private too"
    );
    for source_id in ["direct", "redirected"] {
        failed_at_once(&job, source_id, "document URL refused: private address");
    }
    let seen = elsewhere.seen();
    assert!(
        seen.is_empty(),
        "the other host saw no request at all: {seen:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allowed_hosts_serve_documents_and_never_get_the_token() {
    let court = Court::start().await;
    let elsewhere = Elsewhere::start().await;
    let n = number(803);
    let data = court_pointing_elsewhere(&court, &elsewhere, &n);
    let app = TestApp::spawn_configured(court, Options::default(), |c| {
        c.source_allowed_hosts = "127.0.0.1".into();
        c.source_allow_private = true;
        c.source_token = Some("court-secret-token".into());
    })
    .await;

    let job = run(&app, &n).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    assert_stored(
        &app,
        &job,
        &[
            ("own", &data[0]),
            ("direct", &data[1]),
            ("redirected", &data[2]),
        ],
    )
    .await;
    let mut seen = elsewhere.seen();
    seen.sort_by(|a, b| a.path.cmp(&b.path));
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/docs/direct.pdf", "/docs/redirected.pdf"]);
    assert!(
        seen.iter().all(|s| s.authorization.is_none()),
        "the token stays with the court: {seen:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_redirects_on_the_courts_origin_are_followed_and_a_sixth_is_refused() {
    let court = Court::start().await;
    let n = number(804);
    let (five, six) = (bytes(2500, 5), bytes(2600, 6));
    let mut by_five = Doc::new("five", "cinco.pdf", five.clone());
    by_five.url = Some(Court::hops_url(&n, "five", 5));
    let mut by_six = Doc::new("six", "seis.pdf", six);
    by_six.url = Some(Court::hops_url(&n, "six", 6));
    court.add_process(&n, vec![by_five, by_six]);
    let app = TestApp::spawn(court).await;

    let job = run(&app, &n).await;
    assert_eq!(job["status"], "COMPLETED_WITH_ERRORS", "{job:#}");
    assert_stored(&app, &job, &[("five", &five)]).await;
    failed_at_once(&job, "six", "document URL refused: too many redirects");
    assert_eq!(app.court.gets(&n, "five"), 1);
    assert_eq!(
        app.court.gets(&n, "six"),
        0,
        "the sixth redirect is not followed"
    );
    assert_eq!(app.court.redirected(), 5 + 6);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_not_allowed_fails_before_any_lookup_of_its_name() {
    let court = Court::start().await;
    let n = number(805);
    // Were this name looked up, it would not resolve: a retried "could not be reached".
    let mut cdn = Doc::new("cdn", "cdn.pdf", bytes(1000, 7));
    cdn.url = Some("https://documentos.tjsp.example/2024/cdn.pdf".into());
    let mut allowed = Doc::new("allowed", "permitido.pdf", bytes(1000, 8));
    allowed.url = Some("https://arquivos.tjsp.example/2024/permitido.pdf".into());
    court.add_process(&n, vec![cdn, allowed]);
    let options = Options {
        max_attempts: 2,
        ..Options::default()
    };
    let app = TestApp::spawn_configured(court, options, |c| {
        c.source_allowed_hosts = "*.cdn.tjsp.example, arquivos.tjsp.example".into();
    })
    .await;

    let job = run(&app, &n).await;
    assert_eq!(job["status"], "FAILED", "{job:#}");
    failed_at_once(&job, "cdn", "document URL refused: host not allowed");
    // The allowed name is looked up, and does not resolve: worth another attempt.
    let d = doc(&job, "allowed");
    assert_eq!(d["attempts"], 2, "{d:#}");
    assert_eq!(
        last_error(&job, "allowed"),
        "the source could not be reached (after 2 attempts)"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ids_that_sanitize_alike_get_objects_of_their_own() {
    let court = Court::start().await;
    let n = number(806);
    let (slash, underscore) = (bytes(1500, 11), bytes(1600, 12));
    let mut a_slash_b = Doc::new("a/b", "mesmo.pdf", slash.clone());
    a_slash_b.url = Some(format!("files/{n}/a%2Fb"));
    court.add_process(
        &n,
        vec![a_slash_b, Doc::new("a_b", "mesmo.pdf", underscore.clone())],
    );
    let app = TestApp::spawn(court).await;

    let job = run(&app, &n).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    assert_stored(&app, &job, &[("a/b", &slash), ("a_b", &underscore)]).await;
    let key_of = |id: &str| doc(&job, id)["storageKey"].as_str().unwrap().to_string();
    let prefix = format!("processos/{n}/documentos/");
    assert_eq!(
        key_of("a_b"),
        format!("{prefix}a_b/mesmo.pdf"),
        "an id that sanitizes to itself keeps its key"
    );
    let hashed = key_of("a/b");
    assert!(hashed.starts_with(&format!("{prefix}a_b~")), "{hashed}");
    assert!(hashed.ends_with("/mesmo.pdf"), "{hashed}");
    let mut keys = app.keys().await;
    keys.sort();
    assert_eq!(keys.len(), 2, "{keys:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_error_is_a_stable_phrase_for_each_kind_of_failure() {
    let court = Court::start().await;
    let n = number(807);
    let closed = free_port();
    let mut unreachable = Doc::new("unreachable", "u.pdf", bytes(100, 1));
    unreachable.url = Some(format!("http://{closed}/docs/u.pdf"));
    let wrong_sha = hex::encode([7u8; 32]);
    court.add_process(
        &n,
        vec![
            Doc::new("missing", "m.pdf", bytes(100, 3)),
            Doc::new("broken", "x.pdf", bytes(1500, 4)),
            Doc::new("sha", "s.pdf", bytes(100, 5)).sha(&wrong_sha),
            Doc::new("short", "c.pdf", bytes(100, 6)).size(150),
            Doc::new("huge", "h.pdf", bytes(3000, 7)).no_announcements(),
            unreachable,
        ],
    );
    court.fail_always(&n, "missing", Fault::Status(404, None));
    court.fail_always(&n, "broken", Fault::Break);
    let options = Options {
        max_bytes: 2000,
        ..Options::default()
    };
    let app = TestApp::spawn_configured(court, options, |c| {
        c.source_allowed_hosts = "127.0.0.1".into();
        c.source_allow_private = true;
        c.source_token = Some("court-secret-token".into());
    })
    .await;

    let job = run(&app, &n).await;
    assert_eq!(job["status"], "FAILED", "{job:#}");
    let retried = |phrase: &str| format!("{phrase} (after 3 attempts)");
    let expected = [
        ("missing", "the source answered 404".to_string()),
        (
            "broken",
            retried("the connection broke during the transfer"),
        ),
        (
            "sha",
            retried("the document's SHA-256 differs from the announced one"),
        ),
        (
            "short",
            retried("the document's size differs from the announced size"),
        ),
        (
            "huge",
            "the document is larger than AUTOS_MAX_DOCUMENT_BYTES".to_string(),
        ),
        // Another host than the court's: its failures are the document's.
        ("unreachable", retried("the source could not be reached")),
    ];
    for (source_id, phrase) in &expected {
        assert_eq!(&last_error(&job, source_id), phrase, "{source_id}");
    }
    for d in job["documents"].as_array().unwrap() {
        let error = d["lastError"].as_str().unwrap_or_default();
        for internal in [
            "127.0.0.1",
            "http",
            "reqwest",
            "hyper",
            "token",
            "error sending",
        ] {
            assert!(!error.contains(internal), "{internal} in {error:?}");
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storage_failures_show_a_stable_phrase() {
    let court = Court::start().await;
    let n = number(808);
    court.add_process(&n, vec![Doc::new("d1", "d.pdf", bytes(1000, 1))]);
    let app = TestApp::spawn_configured(court, Options::default(), |c| c.outage_max_secs = 3).await;
    // The store's bucket folder turns into a file: every upload fails, with the store's
    // error only in the log.
    let bucket = app.s3.dir.join("autos-test");
    std::fs::remove_dir_all(&bucket).expect("remove the bucket");
    std::fs::write(&bucket, b"not a folder").expect("a file in its place");

    let job = run(&app, &n).await;
    assert_eq!(job["status"], "FAILED", "{job:#}");
    // An outage of S3 is nobody's attempt: the document waited, then failed for it alone.
    assert_eq!(doc(&job, "d1")["attempts"], 0);
    assert_eq!(
        last_error(&job, "d1"),
        "the storage (S3) was unreachable for too long"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_court_that_keeps_failing_pauses_the_job_then_fails_it_with_a_stable_phrase() {
    let court = Court::start().await;
    let n = number(809);
    court.add_process(
        &n,
        vec![
            Doc::new("busy", "b.pdf", bytes(100, 2)),
            Doc::new("down", "d.pdf", bytes(100, 3)),
        ],
    );
    court.fail_always(&n, "busy", Fault::Status(503, None));
    court.fail_always(&n, "down", Fault::Status(500, None));
    let app = TestApp::spawn_configured(court, Options::default(), |c| c.outage_max_secs = 3).await;

    let started = app.start(&n, false).await;
    let id = started["job"]["id"].as_str().expect("a job id").to_string();
    // Meanwhile the job says what it waits for, and no attempt is spent.
    let waiting = "query($id: ID!) { job(id: $id) { status waitingFor { dependency reason }
        documents { attempts lastError } } }";
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let job = app.data(waiting, json!({ "id": id })).await["job"].clone();
        if job["waitingFor"] != json!([]) {
            assert_eq!(job["status"], "RUNNING", "{job:#}");
            assert_eq!(job["waitingFor"][0]["dependency"], "SOURCE", "{job:#}");
            for d in job["documents"].as_array().unwrap() {
                assert_eq!(d["attempts"], 0, "{job:#}");
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never waiting: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "FAILED", "{job:#}");
    for source_id in ["busy", "down"] {
        assert_eq!(doc(&job, source_id)["attempts"], 0, "{job:#}");
        assert_eq!(
            last_error(&job, source_id),
            "the court source was unreachable for too long"
        );
    }
    app.stop().await;
}

//! The download pipeline end to end: court → queue → workers → S3 → GraphQL.

mod common;

use autos::app::Role;
use common::*;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn happy_path_stores_every_document_and_links_work() {
    let court = Court::start().await;
    let n = number(1);
    let big = bytes(9 * 1024 * 1024 + 123, 1); // multipart
    let small = bytes(2000, 2);
    court.add_process(
        &n,
        vec![
            Doc::new("d1", "Petição inicial.pdf", small.clone()),
            Doc::new("d2", "Laudo pericial com anexos.pdf", big.clone()),
            Doc::new("d3", "foto.png", bytes(300_000, 3)).no_announcements(),
        ],
    );
    let app = TestApp::spawn(court).await;

    let started = app.start(&n, false).await;
    assert_eq!(started["created"], true);
    assert_eq!(started["job"]["total"], 3);
    let id = started["job"]["id"].as_str().unwrap().to_string();

    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    assert_eq!(job["progress"], 100);
    assert_eq!(
        job["counts"],
        json!({"pending": 0, "processing": 0, "available": 3, "failed": 0})
    );
    assert!(job["startedAt"].is_string() && job["completedAt"].is_string());

    let d2 = doc(&job, "d2");
    let key = format!("processos/{n}/documentos/d2/Laudo pericial com anexos.pdf");
    assert_eq!(d2["storageKey"], key.as_str());
    assert_eq!(d2["status"], "AVAILABLE");
    assert_eq!(d2["attempts"], 1);
    let (stored, sha, content_type) = app.object(&key).await.expect("object in S3");
    assert_eq!(stored, big, "bytes in S3 are the court's");
    let expected_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&big));
    assert_eq!(
        sha.as_deref(),
        Some(expected_sha.as_str()),
        "SHA-256 in metadata"
    );
    assert_eq!(content_type.as_deref(), Some("application/pdf"));
    assert_eq!(d2["sha256"], expected_sha.as_str());

    // The presigned link serves the bytes under the original name.
    let url = d2["downloadUrl"].as_str().expect("download url");
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.contains("filename*=UTF-8''Laudo%20pericial%20com%20anexos.pdf"),
        "{disposition}"
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), big.as_slice());

    // A document announced with nothing still gets its SHA-256 stored and a type.
    let d3 = doc(&job, "d3");
    let (_, sha3, _) = app
        .object(d3["storageKey"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(sha3.as_deref(), d3["sha256"].as_str());
    assert_eq!(d3["size"], 300_000.0);

    // Every document was fetched exactly once.
    for id in ["d1", "d2", "d3"] {
        assert_eq!(app.court.gets(&n, id), 1, "{id}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_documents_are_stored_whole_with_their_sha256_however_they_were_announced() {
    // Parts are 8 MiB. Exactly one part goes up in one request; larger bodies in parts, their
    // SHA-256 set when the upload starts if the court announced it (in any case), or after it
    // ends (copied onto the object) if not.
    let court = Court::start().await;
    let n = number(108);
    const MIB: usize = 1024 * 1024;
    let one_part = bytes(8 * MIB, 21);
    let three_parts = bytes(17 * MIB + 5, 22);
    let unannounced = bytes(9 * MIB + 7, 23);
    let upper = bytes(8 * MIB + 1, 24);
    let upper_sha = sha_hex(&upper).to_ascii_uppercase();
    let docs = vec![
        Doc::new("d1", "uma-parte.pdf", one_part),
        Doc::new("d2", "tres-partes.pdf", three_parts),
        Doc::new("d3", "sem-anuncio.pdf", unannounced).no_announcements(),
        Doc::new("d4", "maiusculas.pdf", upper).sha(&upper_sha),
    ];
    court.add_process(&n, docs.clone());
    let app = TestApp::spawn(court).await;

    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    for d in &docs {
        let listed = doc(&job, &d.id);
        let (stored, sha, content_type) = app
            .object(&text(&listed["storageKey"]))
            .await
            .expect("object in S3");
        assert!(stored == d.bytes.to_vec(), "{}: the court's bytes", d.id);
        let expected = sha_hex(&d.bytes);
        assert_eq!(sha.as_deref(), Some(expected.as_str()), "{}", d.id);
        assert_eq!(listed["sha256"], expected.as_str(), "{}", d.id);
        assert_eq!(listed["size"], d.bytes.len() as f64, "{}", d.id);
        let announced = d.mime.as_deref().unwrap_or("application/octet-stream");
        assert_eq!(content_type.as_deref(), Some(announced), "{}", d.id);
        assert_eq!(app.court.gets(&n, &d.id), 1, "{}", d.id);
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn job_id(started: &serde_json::Value) -> String {
    started["job"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job id in {started:#}"))
        .to_string()
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data))
}

fn text(value: &serde_json::Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

/// Keys stored under one document's prefix.
async fn keys_of(app: &TestApp, n: &str, source_segment: &str) -> Vec<String> {
    let prefix = format!("processos/{n}/documentos/{source_segment}/");
    app.keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with(&prefix))
        .collect()
}

async fn cancel(app: &TestApp, id: &str) -> serde_json::Value {
    app.gql(
        "mutation($id: ID!) { cancelJob(id: $id) { id status progress completedAt } }",
        json!({ "id": id }),
    )
    .await
}

async fn retry(app: &TestApp, id: &str) -> serde_json::Value {
    app.gql(
        "mutation($id: ID!) { retryFailedDocuments(jobId: $id) { id status progress error
            counts { pending processing available failed } } }",
        json!({ "id": id }),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Retries and failures
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transient_server_errors_are_retried_until_the_document_is_stored() {
    let court = Court::start().await;
    let n = number(101);
    let data = bytes(4000, 11);
    court.add_process(&n, vec![Doc::new("d1", "Sentença.pdf", data.clone())]);
    court.fail(
        &n,
        "d1",
        vec![Fault::Status(500, None), Fault::Status(503, None)],
    );
    let app = TestApp::spawn(court).await;

    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    let d1 = doc(&job, "d1");
    assert_eq!(d1["status"], "AVAILABLE");
    // A first 500 of a document is not counted until it fails again (with no other document
    // failing): it may be the court's. A 503 is the court's, beyond doubt: never counted.
    assert_eq!(
        d1["attempts"], 1,
        "only the transfer that stored it: {d1:#}"
    );
    assert!(
        d1["lastError"].is_null(),
        "error cleared once stored: {d1:#}"
    );
    assert_eq!(app.court.gets(&n, "d1"), 3);

    let key = format!("processos/{n}/documentos/d1/Sentença.pdf");
    assert_eq!(d1["storageKey"], key.as_str());
    let (stored, sha, _) = app.object(&key).await.expect("object in S3");
    assert_eq!(stored, data);
    assert_eq!(sha.as_deref(), Some(sha_hex(&data).as_str()));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_document_that_always_fails_ends_the_job_with_errors() {
    let court = Court::start().await;
    let n = number(102);
    court.add_process(
        &n,
        vec![
            Doc::new("d1", "a.pdf", bytes(1000, 1)),
            Doc::new("d2", "b.pdf", bytes(1000, 2)),
            Doc::new("d3", "c.pdf", bytes(1000, 3)),
        ],
    );
    court.fail_always(&n, "d2", Fault::Status(500, None));
    let app = TestApp::spawn(court).await;

    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED_WITH_ERRORS", "{job:#}");
    assert_eq!(job["progress"], 100);
    assert_eq!(
        job["counts"],
        json!({"pending": 0, "processing": 0, "available": 2, "failed": 1})
    );
    assert!(job["completedAt"].is_string());

    let d2 = doc(&job, "d2");
    assert_eq!(d2["status"], "FAILED");
    assert_eq!(d2["attempts"], 3, "every attempt used: {d2:#}");
    assert_eq!(
        text(&d2["lastError"]),
        "the source answered 500 (after 3 attempts)",
        "{d2:#}"
    );
    assert!(d2["storageKey"].is_null());
    assert!(d2["downloadUrl"].is_null());
    // The first 500 was not counted (the court might have been down); the fault followed the
    // document while the others were served: the next three were its own.
    assert_eq!(app.court.gets(&n, "d2"), 4);
    assert!(keys_of(&app, &n, "d2").await.is_empty());
    for id in ["d1", "d3"] {
        assert_eq!(doc(&job, id)["status"], "AVAILABLE");
        assert_eq!(keys_of(&app, &n, id).await.len(), 1, "{id}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_batch_with_every_kind_of_ending_writes_each_documents_own() {
    // One worker, one batch of six: the final transitions of documents that end close
    // together are written in one statement, and each must keep its own outcome.
    let court = Court::start().await;
    let n = number(116);
    let data: Vec<Vec<u8>> = (1..=6).map(|i| bytes(700 + 100 * i, i as u8)).collect();
    court.add_process(
        &n,
        vec![
            Doc::new("d1", "um.pdf", data[0].clone()),
            Doc::new("d2", "dois.pdf", data[1].clone()),
            Doc::new("d3", "tres.pdf", data[2].clone()),
            Doc::new("d4", "quatro.pdf", data[3].clone()),
            Doc::new("d5", "cinco.pdf", bytes(5000, 5)),
            Doc::new("d6", "seis.pdf", data[5].clone()),
        ],
    );
    court.fail_always(&n, "d2", Fault::Status(404, None));
    court.fail(&n, "d3", vec![Fault::Status(503, None)]);
    let options = Options {
        workers: 1,
        batch_size: 6,
        max_bytes: 2000,
        ..Options::default()
    };
    let app = TestApp::spawn_with(court, options).await;

    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED_WITH_ERRORS", "{job:#}");
    assert_eq!(
        job["counts"],
        json!({"pending": 0, "processing": 0, "available": 4, "failed": 2}),
        "{job:#}"
    );
    // d3's 503 is the court's (overloaded), not the document's: not an attempt.
    for (source_id, index, attempts) in [("d1", 0, 1), ("d3", 2, 1), ("d4", 3, 1), ("d6", 5, 1)] {
        let d = doc(&job, source_id);
        assert_eq!(d["status"], "AVAILABLE", "{d:#}");
        assert_eq!(d["attempts"], attempts, "{d:#}");
        assert_eq!(d["sha256"], sha_hex(&data[index]).as_str(), "{d:#}");
        assert!(d["lastError"].is_null(), "{d:#}");
        let (stored, sha, _) = app
            .object(d["storageKey"].as_str().expect("a key"))
            .await
            .expect("object in S3");
        assert_eq!(stored, data[index], "{source_id}");
        assert_eq!(sha.as_deref(), Some(sha_hex(&data[index]).as_str()));
    }
    let d2 = doc(&job, "d2");
    assert_eq!(d2["status"], "FAILED", "{d2:#}");
    assert_eq!(d2["attempts"], 1, "a 404 is not retried: {d2:#}");
    assert_eq!(text(&d2["lastError"]), "the source answered 404", "{d2:#}");
    let d5 = doc(&job, "d5");
    assert_eq!(d5["status"], "FAILED", "{d5:#}");
    assert_eq!(
        text(&d5["lastError"]),
        "the document is larger than AUTOS_MAX_DOCUMENT_BYTES",
        "{d5:#}"
    );
    for d in [&d2, &d5] {
        assert!(d["storageKey"].is_null(), "{d:#}");
    }
    assert_eq!(app.keys().await.len(), 4);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_whose_documents_all_fail_is_failed_with_an_error() {
    let court = Court::start().await;
    let n = number(103);
    court.add_process(
        &n,
        vec![
            Doc::new("d1", "a.pdf", bytes(1000, 1)),
            Doc::new("d2", "b.pdf", bytes(1000, 2)),
        ],
    );
    court.fail_always(&n, "d1", Fault::Status(500, None));
    // Another 4xx: retrying cannot help, the document fails at once.
    court.fail_always(&n, "d2", Fault::Status(404, None));
    let app = TestApp::spawn(court).await;

    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "FAILED", "{job:#}");
    assert_eq!(job["progress"], 100);
    assert!(
        !text(&job["error"]).is_empty(),
        "a failed job says why: {job:#}"
    );
    assert_eq!(
        job["counts"],
        json!({"pending": 0, "processing": 0, "available": 0, "failed": 2})
    );
    assert_eq!(doc(&job, "d1")["attempts"], 3);
    assert_eq!(doc(&job, "d2")["attempts"], 1, "404 is not retried");
    assert_eq!(
        text(&doc(&job, "d2")["lastError"]),
        "the source answered 404"
    );
    assert_eq!(
        text(&doc(&job, "d1")["lastError"]),
        "the source answered 500 (after 3 attempts)"
    );
    assert_eq!(app.court.gets(&n, "d2"), 1);
    assert!(app.keys().await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checksum_mismatch_fails_the_document_and_stores_nothing() {
    let court = Court::start().await;
    let n = number(104);
    let wrong = "0123456789abcdef".repeat(4);
    court.add_process(
        &n,
        vec![
            Doc::new("d1", "pequeno.pdf", bytes(3000, 1)).sha(&wrong),
            // Larger than one multipart part: a part is uploaded before the mismatch shows.
            Doc::new("d2", "grande.pdf", bytes(9 * 1024 * 1024 + 7, 2)).sha(&wrong),
        ],
    );
    let app = TestApp::spawn(court).await;

    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "FAILED", "{job:#}");
    for source_id in ["d1", "d2"] {
        let d = doc(&job, source_id);
        assert_eq!(d["status"], "FAILED", "{d:#}");
        assert_eq!(d["attempts"], 3, "{d:#}");
        assert_eq!(
            text(&d["lastError"]),
            "the document's SHA-256 differs from the announced one (after 3 attempts)",
            "{d:#}"
        );
        assert!(d["storageKey"].is_null());
        assert_eq!(app.court.gets(&n, source_id), 3);
    }
    assert!(app
        .object(&format!("processos/{n}/documentos/d1/pequeno.pdf"))
        .await
        .is_none());
    assert!(app
        .object(&format!("processos/{n}/documentos/d2/grande.pdf"))
        .await
        .is_none());
    let keys = app.keys().await;
    assert!(keys.is_empty(), "nothing half-written: {keys:?}");
    assert_eq!(
        unfinished_parts(&app.s3.dir),
        0,
        "the failed multipart uploads were aborted"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_connection_is_retried_and_a_short_body_fails() {
    let court = Court::start().await;
    let n = number(105);
    let broken = bytes(200_000, 1);
    let short = bytes(5000, 2);
    let short_chunked = bytes(5000, 3);
    court.add_process(
        &n,
        vec![
            Doc::new("d1", "quebrado.pdf", broken.clone()),
            // The listing announces more bytes than the court sends (with Content-Length).
            Doc::new("d2", "curto.pdf", short.clone()).size(short.len() as i64 + 100),
            // Same, without Content-Length: only the count at the end can tell.
            Doc::new("d3", "curto-chunked.pdf", short_chunked.clone())
                .size(short_chunked.len() as i64 + 100),
        ],
    );
    court.fail(&n, "d1", vec![Fault::Break]);
    court.fail_always(&n, "d3", Fault::Chunked);
    let app = TestApp::spawn(court).await;

    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED_WITH_ERRORS", "{job:#}");

    let d1 = doc(&job, "d1");
    assert_eq!(d1["status"], "AVAILABLE", "{d1:#}");
    assert_eq!(
        d1["attempts"], 1,
        "a broken connection, once, is not the document's: {d1:#}"
    );
    assert_eq!(app.court.gets(&n, "d1"), 2);
    let (stored, _, _) = app
        .object(&text(&d1["storageKey"]))
        .await
        .expect("stored after the retry");
    assert_eq!(stored, broken);

    for source_id in ["d2", "d3"] {
        let d = doc(&job, source_id);
        assert_eq!(d["status"], "FAILED", "{d:#}");
        assert_eq!(d["attempts"], 3, "a short body is a failed attempt: {d:#}");
        assert_eq!(
            text(&d["lastError"]),
            "the document's size differs from the announced size (after 3 attempts)",
            "the error names the mismatch: {d:#}"
        );
        assert!(d["storageKey"].is_null());
        assert!(keys_of(&app, &n, source_id).await.is_empty(), "{source_id}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn too_many_requests_waits_for_retry_after() {
    let court = Court::start().await;
    let n = number(106);
    let data = bytes(2000, 6);
    court.add_process(&n, vec![Doc::new("d1", "a.pdf", data.clone())]);
    court.fail(&n, "d1", vec![Fault::Status(429, Some("1".into()))]);
    let app = TestApp::spawn(court).await; // backoff 50 ms

    let began = std::time::Instant::now();
    let id = job_id(&app.start(&n, false).await);
    // After the first GET, the court asked for a second's pause: nothing comes before that.
    let deadline = began + Duration::from_secs(10);
    while app.court.gets(&n, "d1") == 0 {
        assert!(std::time::Instant::now() < deadline, "never fetched");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.court.gets(&n, "d1"),
        1,
        "retried before Retry-After passed"
    );

    let job = app.wait_terminal(&id, WAIT).await;
    let elapsed = began.elapsed();
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    let d1 = doc(&job, "d1");
    assert_eq!(d1["status"], "AVAILABLE");
    assert_eq!(
        d1["attempts"], 1,
        "the court's pause is not the document's failure"
    );
    assert_eq!(app.court.gets(&n, "d1"), 2);
    assert!(
        elapsed >= Duration::from_secs(1),
        "the retry honoured Retry-After: {elapsed:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn documents_over_the_size_cap_fail_at_once() {
    let court = Court::start().await;
    let n = number(107);
    let big = bytes(5000, 7);
    court.add_process(
        &n,
        vec![
            // Announced in the listing: refused before any byte is fetched.
            Doc::new("d1", "anunciado.pdf", big.clone()),
            // Not announced; the court's Content-Length gives it away.
            Doc::new("d2", "com-tamanho.pdf", big.clone()).no_announcements(),
            // Not announced and no Content-Length: caught while streaming.
            Doc::new("d3", "sem-tamanho.pdf", big.clone()).no_announcements(),
            Doc::new("d4", "pequeno.pdf", bytes(500, 8)),
        ],
    );
    court.fail_always(&n, "d3", Fault::Chunked);
    let options = Options {
        max_bytes: 1000,
        ..Options::default()
    };
    let app = TestApp::spawn_with(court, options).await;

    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED_WITH_ERRORS", "{job:#}");
    assert_eq!(doc(&job, "d4")["status"], "AVAILABLE");
    for source_id in ["d1", "d2", "d3"] {
        let d = doc(&job, source_id);
        assert_eq!(d["status"], "FAILED", "{d:#}");
        assert_eq!(d["attempts"], 1, "no retry can shrink it: {d:#}");
        assert_eq!(
            text(&d["lastError"]),
            "the document is larger than AUTOS_MAX_DOCUMENT_BYTES",
            "{source_id}"
        );
        assert!(d["storageKey"].is_null());
        assert!(keys_of(&app, &n, source_id).await.is_empty(), "{source_id}");
    }
    assert_eq!(app.court.gets(&n, "d1"), 0, "announced: never fetched");
    assert_eq!(app.court.gets(&n, "d2"), 1);
    assert_eq!(app.court.gets(&n, "d3"), 1);
    app.stop().await;
}

/// Checks a storage key against the contract: prefix, no `..`, no control characters, short
/// segments.
fn assert_safe_key(key: &str, n: &str) {
    let prefix = format!("processos/{n}/documentos/");
    assert!(key.starts_with(&prefix), "{key:?}");
    let rest = &key[prefix.len()..];
    let segments: Vec<&str> = rest.split('/').collect();
    assert_eq!(segments.len(), 2, "id and name, one segment each: {key:?}");
    for segment in key.split('/') {
        assert!(!segment.is_empty(), "{key:?}");
        assert_ne!(segment, "..", "{key:?}");
        assert_ne!(segment, ".", "{key:?}");
        assert!(segment.len() <= 255, "{} bytes: {key:?}", segment.len());
    }
    assert!(!key.chars().any(char::is_control), "{key:?}");
    assert!(!key.contains('\\'), "{key:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn odd_names_and_ids_get_safe_keys_and_keep_their_names() {
    let court = Court::start().await;
    let n = number(108);
    let accented = "Petição inicial – versão 2.pdf";
    let mut slash = Doc::new("a/b", "barra.pdf", bytes(700, 5));
    slash.url = Some(format!("files/{n}/a%2Fb"));
    let mut dots = Doc::new("../up", "pontos.pdf", bytes(800, 6));
    dots.url = Some(format!("files/{n}/..%2Fup"));
    let docs = vec![
        Doc::new("d1", "../../etc/passwd", bytes(300, 1)),
        Doc::new("d2", accented, bytes(400, 2)),
        Doc::new("d3", "tab\there\r\nand\u{7f}more.pdf", bytes(500, 3)),
        slash,
        dots,
    ];
    court.add_process(&n, docs.clone());
    let app = TestApp::spawn(court).await;

    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");

    let mut keys = Vec::new();
    for original in &docs {
        let d = doc(&job, &original.id);
        assert_eq!(d["status"], "AVAILABLE", "{d:#}");
        assert_eq!(
            d["name"],
            original.name.as_str(),
            "the original name is kept"
        );
        let key = text(&d["storageKey"]);
        assert_safe_key(&key, &n);
        let (stored, _, _) = app.object(&key).await.expect("object");
        assert_eq!(stored, original.bytes.as_ref(), "{key}");
        keys.push(key.clone());

        // The link offers the name as a download, printable ASCII only.
        let url = text(&d["downloadUrl"]);
        let response = reqwest::get(&url).await.unwrap();
        assert_eq!(response.status(), 200, "{key}");
        let disposition = response.headers()["content-disposition"]
            .to_str()
            .expect("ASCII header")
            .to_string();
        assert!(disposition.starts_with("attachment"), "{disposition}");
        assert!(disposition.contains("filename*=UTF-8''"), "{disposition}");
        assert!(
            !disposition.chars().any(|c| c.is_control()),
            "{disposition:?}"
        );
        assert_eq!(response.bytes().await.unwrap(), original.bytes);
    }
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        keys.len(),
        "distinct documents, distinct keys"
    );

    // Accents survive, in the key and percent-encoded in the download name.
    let d2 = doc(&job, "d2");
    assert_eq!(
        text(&d2["storageKey"]),
        format!("processos/{n}/documentos/d2/{accented}")
    );
    let response = reqwest::get(text(&d2["downloadUrl"])).await.unwrap();
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    let encoded =
        percent_encoding::utf8_percent_encode(accented, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    // `.` and `-` may stay unencoded (RFC 5987 attr-char): compare decoded.
    let star = disposition
        .split("filename*=UTF-8''")
        .nth(1)
        .expect("filename*")
        .split(';')
        .next()
        .unwrap();
    assert_eq!(
        percent_encoding::percent_decode_str(star)
            .decode_utf8()
            .unwrap(),
        accented,
        "{disposition} (expected the encoding of {encoded})"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_names_are_cut_to_a_segment_and_stored() {
    let court = Court::start().await;
    let n = number(113);
    let long_name = format!("{}.pdf", "x".repeat(296));
    assert_eq!(long_name.len(), 300);
    // A realistic name of about 120 bytes, well under the 255-byte segment limit.
    let realistic = "Petição inicial com pedido de tutela de urgência, procuração, \
                     declaração de hipossuficiência e documentos.pdf";
    assert!(
        realistic.len() > 110 && realistic.len() < 255,
        "{}",
        realistic.len()
    );
    let docs = vec![
        Doc::new("d1", &long_name, bytes(600, 1)),
        Doc::new("d2", realistic, bytes(700, 2)),
    ];
    court.add_process(&n, docs.clone());
    let app = TestApp::spawn(court).await;

    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    let outcomes: Vec<(String, String, String)> = docs
        .iter()
        .map(|original| {
            let d = doc(&job, &original.id);
            (
                original.id.clone(),
                text(&d["status"]),
                text(&d["lastError"]),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("d1".to_string(), "AVAILABLE".to_string(), String::new()),
            ("d2".to_string(), "AVAILABLE".to_string(), String::new()),
        ],
        "(source id, status, lastError)"
    );
    for original in &docs {
        let d = doc(&job, &original.id);
        assert_eq!(d["attempts"], 1, "{d:#}");
        assert_eq!(d["name"], original.name.as_str());
        let key = text(&d["storageKey"]);
        assert_safe_key(&key, &n);
        let (stored, _, _) = app.object(&key).await.expect("object");
        assert_eq!(stored, original.bytes.as_ref(), "{key}");
    }
    // The 300-byte name is cut to one segment, keeping its extension.
    let d1_key = text(&doc(&job, "d1")["storageKey"]);
    assert!(d1_key.ends_with(".pdf"), "{d1_key}");
    assert_eq!(
        text(&doc(&job, "d2")["storageKey"]),
        format!("processos/{n}/documentos/d2/{realistic}")
    );
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nul_byte_in_a_name_does_not_break_the_job() {
    let court = Court::start().await;
    let n = number(118);
    let name = "a\u{0}b\nc.pdf";
    let data = bytes(500, 1);
    court.add_process(&n, vec![Doc::new("d1", name, data.clone())]);
    let app = TestApp::spawn(court).await;

    let body = app
        .gql(
            "mutation($n: String!) { startDownload(input: {number: $n}) { created job { id } } }",
            json!({ "n": n }),
        )
        .await;
    assert!(
        body.get("errors").is_none(),
        "a listing with a control character in a name is still usable: {body:#}"
    );
    let id = job_id(&body["data"]["startDownload"]);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    let d1 = doc(&job, "d1");
    let key = text(&d1["storageKey"]);
    assert_safe_key(&key, &n);
    let (stored, _, _) = app.object(&key).await.expect("object");
    assert_eq!(stored, data);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_without_content_length_are_stored_whole() {
    let court = Court::start().await;
    let n = number(109);
    let small = bytes(150_000, 1);
    let big = bytes(9 * 1024 * 1024 + 99, 2);
    let bare = bytes(70_000, 3);
    court.add_process(
        &n,
        vec![
            Doc::new("d1", "pequeno.pdf", small.clone()),
            Doc::new("d2", "grande.pdf", big.clone()),
            Doc::new("d3", "sem-anuncio.bin", bare.clone()).no_announcements(),
        ],
    );
    for id in ["d1", "d2", "d3"] {
        court.fail(&n, id, vec![Fault::Chunked]);
    }
    let app = TestApp::spawn(court).await;

    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    for (source_id, data) in [("d1", &small), ("d2", &big), ("d3", &bare)] {
        let d = doc(&job, source_id);
        assert_eq!(d["status"], "AVAILABLE", "{d:#}");
        assert_eq!(d["attempts"], 1);
        assert_eq!(d["sha256"], sha_hex(data).as_str());
        assert_eq!(d["size"], data.len() as f64);
        let (stored, sha, _) = app.object(&text(&d["storageKey"])).await.expect("object");
        assert_eq!(&stored, data, "{source_id}");
        assert_eq!(sha.as_deref(), Some(sha_hex(data).as_str()));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_transfer_times_out_and_is_retried() {
    let court = Court::start().await;
    let n = number(110);
    let data = bytes(3000, 1);
    court.add_process(
        &n,
        vec![
            Doc::new("d1", "volta.pdf", data.clone()),
            Doc::new("d2", "nunca.pdf", bytes(3000, 2)),
        ],
    );
    court.fail(&n, "d1", vec![Fault::Hang]);
    court.fail_always(&n, "d2", Fault::Hang);
    let options = Options {
        timeout_secs: 1,
        ..Options::default()
    };
    let app = TestApp::spawn_with(court, options).await;

    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED_WITH_ERRORS", "{job:#}");

    let d1 = doc(&job, "d1");
    assert_eq!(d1["status"], "AVAILABLE", "{d1:#}");
    // Both timed out together: the first to be told is not counted until it fails again, the
    // second is taken for the court's (two documents failing in a row). d1 then came through.
    assert_eq!(d1["attempts"], 1, "{d1:#}");
    assert!(d1["lastError"].is_null(), "cleared once stored: {d1:#}");
    let (stored, _, _) = app.object(&text(&d1["storageKey"])).await.unwrap();
    assert_eq!(stored, data);

    let d2 = doc(&job, "d2");
    assert_eq!(d2["status"], "FAILED", "{d2:#}");
    assert_eq!(d2["attempts"], 3);
    assert_eq!(
        text(&d2["lastError"]),
        "the transfer timed out (after 3 attempts)",
        "{d2:#}"
    );
    // Its first timeout was not counted, and neither was a second one if it came while d1's
    // was still the last thing seen: 4 or 5 transfers for 3 attempts.
    let gets = app.court.gets(&n, "d2");
    assert!((4..=5).contains(&gets), "{gets} transfers");
    assert!(keys_of(&app, &n, "d2").await.is_empty());
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// How many transfers at once
// ---------------------------------------------------------------------------------------------

/// Each of `docs` of case `n` was fetched once and is in S3, whole, under its key.
async fn assert_stored_once(app: &TestApp, n: &str, docs: &[Doc]) {
    for doc in docs {
        assert_eq!(app.court.gets(n, &doc.id), 1, "{}", doc.id);
        let (stored, _, _) = app
            .object(&format!("processos/{n}/documentos/{}/{}", doc.id, doc.name))
            .await
            .expect("object in S3");
        assert_eq!(stored, doc.bytes.to_vec());
    }
}

/// Lists `count` documents `d1`, `d2`, … of `size` bytes for case `n`, each served slowly:
/// 100 bytes every `every`.
fn add_slow_documents(
    court: &Court,
    n: &str,
    count: usize,
    size: usize,
    every: Duration,
) -> Vec<Doc> {
    let docs: Vec<Doc> = (1..=count)
        .map(|i| {
            Doc::new(
                &format!("d{i}"),
                &format!("doc{i}.pdf"),
                bytes(size, i as u8),
            )
        })
        .collect();
    court.add_process(n, docs.clone());
    for doc in &docs {
        court.fail_always(n, &doc.id, Fault::Slow { chunk: 100, every });
    }
    docs
}

/// Runs a job of `count` slow documents (about 0.6 s each) with `workers` workers and batches
/// of `batch_size`; returns the most documents the court was sending at once.
async fn slow_documents_at_once(process: u32, count: usize, workers: u32, batch_size: u32) -> u32 {
    let court = Court::start().await;
    let n = number(process);
    let docs = add_slow_documents(&court, &n, count, 600, Duration::from_millis(100));
    let options = Options {
        workers,
        batch_size,
        ..Options::default()
    };
    let app = TestApp::spawn_with(court, options).await;
    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    assert_stored_once(&app, &n, &docs).await;
    let most = app.court.most_slow_at_once();
    app.stop().await;
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_of_one_batch_spreads_over_the_idle_workers() {
    // Four documents, one batch, four workers: the batch's documents do not wait for each
    // other while the other workers have nothing to do.
    assert_eq!(slow_documents_at_once(121, 4, 4, 5).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_never_transfers_more_documents_at_once_than_it_has_workers() {
    // Twelve documents in batches of three, two workers: batches spread over free lanes, and
    // never beyond the two.
    assert_eq!(slow_documents_at_once(122, 12, 2, 3).await, 2);
}

// ---------------------------------------------------------------------------------------------
// Final transitions, written together
// ---------------------------------------------------------------------------------------------

/// How many statements wrote the final transitions of `job`'s documents: one statement
/// gives every row it writes the same `stored_at` (its transaction's time).
async fn settling_writes(app: &TestApp, job: &str) -> i64 {
    sqlx::query_scalar("SELECT count(DISTINCT stored_at) FROM documents WHERE job_id = $1")
        .bind(uuid::Uuid::parse_str(job).unwrap())
        .fetch_one(&app.services().pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn documents_of_several_batches_ending_close_together_are_written_together() {
    // Four batches of one document on four workers, each document sent slowly, ending about
    // 40 ms apart (200, 240, 280 and 320 ms): while the process is busy their final
    // transitions wait for the settle window and go together, instead of one write per batch
    // (or per document).
    let court = Court::start().await;
    let n = number(123);
    let docs: Vec<Doc> = (0..4)
        .map(|i| {
            Doc::new(
                &format!("d{i}"),
                &format!("doc{i}.pdf"),
                bytes(1000 + 200 * i, i as u8),
            )
        })
        .collect();
    court.add_process(&n, docs.clone());
    for doc in &docs {
        let every = Duration::from_millis(20);
        court.fail_always(&n, &doc.id, Fault::Slow { chunk: 100, every });
    }
    let options = Options {
        workers: 4,
        batch_size: 1,
        ..Options::default()
    };
    let app = TestApp::spawn_with(court, options).await;
    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    assert_eq!(job["counts"]["available"], 4, "{job:#}");
    assert_stored_once(&app, &n, &docs).await;
    let writes = settling_writes(&app, &id).await;
    assert!(
        writes < docs.len() as i64,
        "4 documents of 4 batches ending 40 ms apart took {writes} writes"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_jobs_ending_together_in_one_process_each_end_right() {
    // Two cases, two slow documents each, all four transferred at once in one process: the
    // writes that gather them keep each job's counts and ending its own.
    let court = Court::start().await;
    let (a, b) = (number(125), number(126));
    let docs_a = add_slow_documents(&court, &a, 2, 300, Duration::from_millis(100));
    let docs_b = add_slow_documents(&court, &b, 2, 300, Duration::from_millis(100));
    let options = Options {
        workers: 4,
        batch_size: 1,
        // Each job must end by the writes of its documents, not by a sweeper pass.
        sweep_ms: 600_000,
        ..Options::default()
    };
    let app = TestApp::spawn_with(court, options).await;
    let (id_a, id_b) = tokio::join!(app.start(&a, false), app.start(&b, false));
    for (id, n, docs) in [(job_id(&id_a), &a, &docs_a), (job_id(&id_b), &b, &docs_b)] {
        let job = app.wait_terminal(&id, WAIT).await;
        assert_eq!(job["status"], "COMPLETED", "{job:#}");
        assert_eq!(job["counts"]["available"], 2, "{job:#}");
        assert_eq!(job["counts"]["processing"], 0, "{job:#}");
        for d in docs {
            assert_eq!(doc(&job, &d.id)["status"], "AVAILABLE", "{job:#}");
        }
        assert_stored_once(&app, n, docs).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_settler_writes_what_it_holds_when_closed_and_what_comes_after() {
    use autos::db::documents::{self, Charge, Outcome, Settling};
    use autos::jobs::settler::Settler;
    // No workers: this test claims the documents and hands their endings to a settler itself.
    let court = Court::start().await;
    let n = number(124);
    court.add_process(
        &n,
        (1..=4)
            .map(|i| Doc::new(&format!("d{i}"), &format!("d{i}.pdf"), bytes(100, i)))
            .collect(),
    );
    let options = Options {
        role: Role::SERVE,
        ..Options::default()
    };
    let app = TestApp::spawn_with(court, options).await;
    let id = job_id(&app.start(&n, false).await);
    let job = uuid::Uuid::parse_str(&id).unwrap();
    let pool = app.services().pool.clone();
    let ids: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM documents WHERE job_id = $1 ORDER BY position")
            .bind(job)
            .fetch_all(&pool)
            .await
            .unwrap();
    let batch = documents::claim_batch(&pool, &ids, Duration::from_secs(60), uuid::Uuid::new_v4())
        .await
        .unwrap();
    assert_eq!(batch.claims.len(), 4);
    let stored = |document: uuid::Uuid| Settling {
        token: batch.token,
        document,
        outcome: Outcome::Stored {
            key: format!("k/{document}"),
            sha256: "0".repeat(64),
            size: 100,
            content_type: "application/pdf".into(),
        },
        charge: Charge::Attempt,
    };
    let settler = Settler::start(pool.clone());
    // The first ending after a quiet moment is written at once; the next ones, handed over
    // while the process is busy, wait for the window — and the settler is closed meanwhile.
    settler.settle(job, stored(ids[0]), false);
    settler.settle(job, stored(ids[1]), false);
    settler.settle(job, stored(ids[2]), false);
    settler.close();
    settler.closed().await;
    let available = |ids: Vec<uuid::Uuid>| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM documents WHERE id = ANY($1) AND status = 'AVAILABLE'",
            )
            .bind(ids)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(available(ids[..3].to_vec()).await, 3, "held when closed");
    assert_eq!(app.job(&id).await["status"], "RUNNING");
    // Handed over after the settler ended (a batch finishing late in a shutdown): still written.
    settler.settle(job, stored(ids[3]), false);
    settler.closed().await;
    assert_eq!(available(ids.clone()).await, 4);
    let ended = app.job(&id).await;
    assert_eq!(ended["status"], "COMPLETED", "{ended:#}");
    assert_eq!(ended["counts"]["available"], 4, "{ended:#}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_ends_in_the_transaction_that_settles_its_last_document() {
    // Whoever reads a job after a commit (a progress subscriber, a `job` query) must never
    // find it QUEUED or RUNNING with every document settled: its end commits with its last
    // document. A deferred trigger records, as each transaction that changes documents
    // commits, the state of their job.
    let court = Court::start().await;
    let n = number(128);
    court.add_process(
        &n,
        (1..=12)
            .map(|i| Doc::new(&format!("d{i}"), &format!("d{i}.pdf"), bytes(200, i)))
            .collect(),
    );
    let app = TestApp::spawn(court).await;
    let pool = app.services().pool.clone();
    sqlx::raw_sql(
        "CREATE TABLE committed_job_states (job_id uuid, status text, open integer);
         CREATE FUNCTION record_committed_job_state() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO committed_job_states
             SELECT id, status, pending + processing FROM download_jobs WHERE id = NEW.job_id;
             RETURN NULL;
         END;
         $$;
         CREATE CONSTRAINT TRIGGER record_committed_job_state AFTER UPDATE ON documents
             DEFERRABLE INITIALLY DEFERRED
             FOR EACH ROW EXECUTE FUNCTION record_committed_job_state();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    let states: Vec<(String, i32)> =
        sqlx::query_as("SELECT status, open FROM committed_job_states WHERE job_id = $1::uuid")
            .bind(&id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        states.contains(&("COMPLETED".to_string(), 0)),
        "the transaction settling the last document recorded: {states:?}"
    );
    let stuck: Vec<_> = states
        .iter()
        .filter(|(status, open)| matches!(status.as_str(), "QUEUED" | "RUNNING") && *open == 0)
        .collect();
    assert!(
        stuck.is_empty(),
        "committed with nothing open and still active: {stuck:?} (all: {states:?})"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Cancel and retry
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_job_stops_further_transfers() {
    cancel_stops_further_transfers(111, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_job_gives_back_the_rest_of_each_batch() {
    // The worker holds a batch of four when the job is cancelled: the one in transfer stops,
    // the three not started go back to PENDING untouched (no attempt counted).
    cancel_stops_further_transfers(115, 4).await;
}

async fn cancel_stops_further_transfers(process: u32, batch_size: u32) {
    let court = Court::start().await;
    let n = number(process);
    add_slow_documents(&court, &n, 12, 2000, Duration::from_millis(100));
    let options = Options {
        workers: 1,
        batch_size,
        lease_ms: 1000,
        ..Options::default()
    };
    let app = TestApp::spawn_with(court, options).await;

    let id = job_id(&app.start(&n, false).await);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let job = app.job(&id).await;
        let busy = job["documents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["status"] == "PROCESSING" || d["status"] == "AVAILABLE");
        if busy {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing started: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let cancelled = cancel(&app, &id).await;
    assert!(cancelled.get("errors").is_none(), "{cancelled:#}");
    let returned = &cancelled["data"]["cancelJob"];
    assert_eq!(returned["status"], "CANCELLED");
    assert_eq!(returned["progress"], 100);
    assert!(returned["completedAt"].is_string());
    assert_eq!(app.job(&id).await["status"], "CANCELLED");

    // The transfer under way is stopped at its next heartbeat; nothing new starts.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after_cancel = app.court.total_gets();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        app.court.total_gets(),
        after_cancel,
        "documents were fetched after the job was cancelled"
    );
    assert!(
        after_cancel <= 2,
        "{after_cancel} GETs for 12 slow documents"
    );
    let job = app.job(&id).await;
    assert_eq!(job["status"], "CANCELLED");
    assert_eq!(job["progress"], 100);
    let pending = job["documents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"] == "PENDING")
        .count();
    assert!(pending >= 10, "most documents stay PENDING: {job:#}");
    assert!(
        job["documents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] != "PROCESSING"),
        "no document is left PROCESSING: {job:#}"
    );
    assert_eq!(job["counts"]["processing"], 0, "{job:#}");
    assert_eq!(job["counts"]["pending"], pending, "{job:#}");
    for d in job["documents"].as_array().unwrap() {
        if d["status"] == "PENDING" {
            assert_eq!(
                d["attempts"], 0,
                "a document given back is not an attempt: {d:#}"
            );
        }
    }

    let again = cancel(&app, &id).await;
    assert_eq!(error_code(&again), "INVALID_STATE", "{again:#}");
    let unknown = cancel(&app, &uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(error_code(&unknown), "JOB_NOT_FOUND", "{unknown:#}");
    let garbage = cancel(&app, "not-a-job").await;
    assert_eq!(error_code(&garbage), "JOB_NOT_FOUND", "{garbage:#}");

    // A new download after the cancellation picks every document up again.
    for i in 1..=12 {
        app.court.heal(&n, &format!("d{i}"));
    }
    let restarted = app.start(&n, false).await;
    assert_eq!(restarted["created"], true, "{restarted:#}");
    let new_id = job_id(&restarted);
    assert_ne!(new_id, id);
    let job = app.wait_terminal(&new_id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    assert_eq!(job["counts"]["available"], 12);
    assert_eq!(app.keys().await.len(), 12);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancellation_stops_transfers_in_another_process_at_once() {
    // The API and the worker are separate processes, and the lease is a minute (a heartbeat
    // every 15 s): only the announcement of the cancellation can stop the worker's two
    // transfers within seconds.
    cancel_in_another_process(116, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancellation_sent_while_the_listener_reconnects_still_stops_transfers_at_once() {
    // The worker's cancellation listener loses its connection just before the cancellation:
    // either its new connection hears it, or the batches, told that announcements may have
    // been missed, look at their job at once.
    cancel_in_another_process(117, true).await;
}

async fn cancel_in_another_process(process: u32, kill_listener: bool) {
    let court = Court::start().await;
    let n = number(process);
    add_slow_documents(&court, &n, 4, 2000, Duration::from_millis(500));
    let minute_lease = Options {
        lease_ms: 60_000,
        workers: 2,
        batch_size: 4,
        ..Options::default()
    };
    let api = TestApp::spawn_with(
        court,
        Options {
            role: Role::SERVE,
            ..minute_lease.clone()
        },
    )
    .await;
    let worker = api
        .another(Options {
            role: Role::WORK,
            ..minute_lease
        })
        .await;

    let id = job_id(&api.start(&n, false).await);
    let deadline = std::time::Instant::now() + WAIT;
    while api.court.slow_sending_now() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "transfers never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if kill_listener {
        // The worker's one cancellation listener (it connects in the background at start).
        let pool = api.db.pool().await;
        loop {
            let killed: Vec<bool> = sqlx::query_scalar(
                r#"SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                   WHERE datname = current_database() AND query = 'LISTEN "autos_cancelled"'"#,
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            assert!(
                killed.len() <= 1,
                "one listener per work process: {killed:?}"
            );
            if killed == vec![true] {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no cancellation listener"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pool.close().await;
    }
    let cancelled = cancel(&api, &id).await;
    assert_eq!(
        cancelled["data"]["cancelJob"]["status"], "CANCELLED",
        "{cancelled:#}"
    );
    let asked = std::time::Instant::now();

    // Stopped and given back within seconds, not at the next heartbeat. (A cancelled job's
    // counts are final at once, with what was under way counted pending: the documents tell
    // when their transfers have been given back.)
    loop {
        let job = api.job(&id).await;
        let under_way = job["documents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["status"] == "PROCESSING");
        if api.court.slow_sending_now() == 0 && !under_way {
            assert_eq!(
                job["counts"],
                json!({"pending": 4, "processing": 0, "available": 0, "failed": 0}),
                "{job:#}"
            );
            for d in job["documents"].as_array().unwrap() {
                assert_eq!(d["status"], "PENDING", "{d:#}");
                assert_eq!(d["attempts"], 0, "given back, not an attempt: {d:#}");
            }
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "transfers still running {:?} after the cancellation: {job:#}",
            asked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        api.court.total_gets(),
        2,
        "nothing was fetched after the cancellation"
    );
    assert!(api.keys().await.is_empty(), "nothing was stored");
    worker.stop().await;
    api.stop().await;
}

/// Parts of multipart uploads neither completed nor aborted, in the store's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_left_by_a_worker_that_died_is_aborted_and_the_document_stored() {
    // A separate `autos work` process streams a 20 MiB document slowly (1 MiB every 200 ms);
    // once the first 8 MiB part of its multipart upload is in the store, the process is
    // killed (no shutdown, no drop guard). A worker in another process sweeps: it aborts the
    // upload the dead one recorded, and once the claim's lease has run out the document is
    // fetched again and stored whole; no part stays behind.
    let court = Court::start().await;
    let n = number(127);
    let big = Doc::new("d1", "grande.pdf", bytes(20 * 1024 * 1024, 13));
    court.add_process(&n, vec![big.clone()]);
    let slow = Fault::Slow {
        chunk: 1024 * 1024,
        every: Duration::from_millis(200),
    };
    court.fail(&n, "d1", vec![slow]);
    let options = Options {
        role: Role::SERVE,
        ..Options::default()
    };
    let app = TestApp::spawn_with(court, options).await;
    // Leases of 3 s, not less: on a loaded machine a heartbeat (every quarter lease) can come
    // late enough for a shorter one to run out under a live worker, which then fetches its
    // document again; and the doomed process's own sweeper stays out of the way.
    let mut doomed = autos_process("work", &app.db, &app.s3, &app.court, free_port())
        .env("AUTOS_LEASE_MS", "3000")
        .env("AUTOS_SWEEP_INTERVAL_MS", "600000")
        .spawn()
        .expect("spawn autos work");
    let id = job_id(&app.start(&n, false).await);
    let deadline = std::time::Instant::now() + WAIT;
    while unfinished_parts(&app.s3.dir) == 0 {
        assert!(std::time::Instant::now() < deadline, "no part was uploaded");
        if let Some(status) = doomed.try_wait().unwrap() {
            panic!("autos work exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.start_kill().unwrap();
    doomed.wait().await.unwrap();
    assert!(
        unfinished_parts(&app.s3.dir) > 0,
        "the dead worker's part is there"
    );

    let sweeper = app
        .another(Options {
            role: Role::WORK,
            lease_ms: 3000,
            sweep_ms: 100,
            ..Options::default()
        })
        .await;
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    assert_eq!(app.court.gets(&n, "d1"), 2, "fetched again after the death");
    let key = format!("processos/{n}/documentos/d1/grande.pdf");
    let (stored, _, _) = app.object(&key).await.expect("object in S3");
    assert!(stored == big.bytes.to_vec(), "stored whole");
    assert_eq!(unfinished_parts(&app.s3.dir), 0, "parts left behind");
    sweeper.stop().await;
    app.stop().await;
}

fn unfinished_parts(dir: &std::path::Path) -> usize {
    let mut found = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".upload_id-")
            {
                found += 1;
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transfer_stopped_mid_upload_leaves_no_parts_behind() {
    // A 20 MiB document streams slowly (1 MiB every 200 ms): once its first 8 MiB part is in
    // the store, the job is cancelled. The transfer is dropped where it stands, and its
    // multipart upload is aborted: no part stays in the bucket, no object appears.
    let court = Court::start().await;
    let n = number(119);
    let big = Doc::new("d1", "grande.pdf", bytes(20 * 1024 * 1024, 9));
    court.add_process(&n, vec![big]);
    court.fail_always(
        &n,
        "d1",
        Fault::Slow {
            chunk: 1024 * 1024,
            every: Duration::from_millis(200),
        },
    );
    let app = TestApp::spawn(court).await;
    let id = job_id(&app.start(&n, false).await);
    let deadline = std::time::Instant::now() + WAIT;
    while unfinished_parts(&app.s3.dir) == 0 {
        assert!(std::time::Instant::now() < deadline, "no part was uploaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancelled = cancel(&app, &id).await;
    assert_eq!(
        cancelled["data"]["cancelJob"]["status"], "CANCELLED",
        "{cancelled:#}"
    );
    let at = std::time::Instant::now();
    while unfinished_parts(&app.s3.dir) > 0 {
        assert!(
            at.elapsed() < Duration::from_secs(5),
            "parts left behind {:?} after the cancellation",
            at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(app.keys().await.is_empty(), "nothing was stored");
    // The upload's abort and the document's release run side by side: wait for the release.
    let at = std::time::Instant::now();
    loop {
        let job = app.job(&id).await;
        if doc(&job, "d1")["status"] == "PENDING" {
            break;
        }
        assert!(
            at.elapsed() < Duration::from_secs(5),
            "not released: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_that_lost_its_claim_stops_the_transfer_and_writes_nothing() {
    // While a slow document (4 s) is in transfer, its claim passes to someone else, as when
    // a worker stalls past its lease and the document is taken again. At its next heartbeat
    // (every 250 ms) the worker stops the transfer and leaves the document alone; the other
    // claim's lease runs out in turn, and the document is fetched again and stored.
    let court = Court::start().await;
    let n = number(118);
    let docs = add_slow_documents(&court, &n, 1, 2000, Duration::from_millis(200));
    let options = Options {
        lease_ms: 1000,
        sweep_ms: 200,
        ..Options::default()
    };
    let app = TestApp::spawn_with(court, options).await;
    let id = job_id(&app.start(&n, false).await);
    let deadline = std::time::Instant::now() + WAIT;
    while app.court.slow_sending_now() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the transfer never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let pool = app.db.pool().await;
    let taken = sqlx::query(
        "UPDATE documents SET claim_token = gen_random_uuid()
         WHERE job_id = $1 AND status = 'PROCESSING'",
    )
    .bind(uuid::Uuid::parse_str(&id).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(taken.rows_affected(), 1);
    let at = std::time::Instant::now();
    while app.court.slow_sending_now() > 0 {
        assert!(
            at.elapsed() < Duration::from_secs(2),
            "the transfer went on after its claim was lost"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.court.heal(&n, "d1");

    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    let d1 = doc(&job, "d1");
    assert_eq!(d1["status"], "AVAILABLE", "{d1:#}");
    assert_eq!(
        d1["attempts"], 1,
        "the lost claim is not the document's failure: {d1:#}"
    );
    assert_eq!(app.court.gets(&n, "d1"), 2);
    let interruptions: i32 =
        sqlx::query_scalar("SELECT interruptions FROM documents WHERE id = $1")
            .bind(uuid::Uuid::parse_str(&text(&d1["id"])).unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(interruptions, 1, "counted as an interruption");
    let (stored, _, _) = app
        .object(&text(&d1["storageKey"]))
        .await
        .expect("object in S3");
    assert!(stored == docs[0].bytes.to_vec(), "the court's bytes");
    pool.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_failed_documents_fetches_them_again() {
    let court = Court::start().await;
    let n = number(112);
    let data = bytes(2500, 9);
    court.add_process(
        &n,
        vec![
            Doc::new("d1", "ok.pdf", bytes(1000, 1)),
            Doc::new("d2", "volta.pdf", data.clone()),
        ],
    );
    court.fail_always(&n, "d2", Fault::Status(500, None));
    let app = TestApp::spawn(court).await;

    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED_WITH_ERRORS", "{job:#}");
    assert_eq!(doc(&job, "d2")["attempts"], 3);

    app.court.heal(&n, "d2");
    let retried = retry(&app, &id).await;
    assert!(retried.get("errors").is_none(), "{retried:#}");
    let reopened = &retried["data"]["retryFailedDocuments"];
    assert_eq!(reopened["id"], id.as_str());
    assert_eq!(reopened["status"], "RUNNING");
    assert!(reopened["progress"].as_i64().unwrap() < 100);
    assert!(reopened["error"].is_null());
    assert_eq!(reopened["counts"]["failed"], 0);

    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    assert_eq!(job["progress"], 100);
    assert_eq!(
        job["counts"],
        json!({"pending": 0, "processing": 0, "available": 2, "failed": 0})
    );
    let d2 = doc(&job, "d2");
    assert_eq!(d2["status"], "AVAILABLE");
    assert_eq!(d2["attempts"], 1, "a fresh attempt budget");
    assert!(d2["lastError"].is_null());
    assert_eq!(
        app.court.gets(&n, "d2"),
        5,
        "one uncounted and three failed, then stored"
    );
    assert_eq!(
        app.court.gets(&n, "d1"),
        1,
        "the stored one is not fetched again"
    );
    let (stored, _, _) = app.object(&text(&d2["storageKey"])).await.unwrap();
    assert_eq!(stored, data);

    let completed = retry(&app, &id).await;
    assert_eq!(error_code(&completed), "INVALID_STATE", "{completed:#}");
    let unknown = retry(&app, &uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(error_code(&unknown), "JOB_NOT_FOUND", "{unknown:#}");
    app.stop().await;
}

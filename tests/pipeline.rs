//! The download pipeline end to end: court → queue → workers → S3 → GraphQL.

mod common;

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

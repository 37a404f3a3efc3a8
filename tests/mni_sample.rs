//! The embedded defaults' sample court speaks MNI too: the sample cases come over SOAP from an
//! in-process endpoint (source `sample`), and the sealed sample case only with the sample
//! credential, to the tenant that presented it.

mod common;

use autos::auth::Scope;
use common::{client_with, doc, error_code, post_gql, Court, Options, TestApp};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const PUBLIC: &str = "0000832-35.2018.4.01.3202";
const SEALED: &str = "0004321-35.2024.8.26.0100";

async fn gql(http: &reqwest::Client, app: &TestApp, query: &str, variables: Value) -> Value {
    post_gql(http, app.addr, query, variables).await
}

async fn start(http: &reqwest::Client, app: &TestApp, n: &str) -> Value {
    gql(
        http,
        app,
        "mutation($n: String!) { startDownload(input: {number: $n}) { job { id } } }",
        json!({ "n": n }),
    )
    .await
}

fn sample_file(case: &str, dir: &str, url: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(dir)
            .join(case)
            .join(url),
    )
    .expect("a sample file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sample_cases_come_over_mni_and_the_sealed_one_only_with_the_sample_credential() {
    // No AUTOS_SOURCE_URL and no AUTOS_SOURCES_FILE: the embedded sample MNI court.
    let app = TestApp::spawn_configured(Court::start().await, Options::default(), |c| {
        c.source_url = None;
    })
    .await;

    // The first look at a case already says where it came from.
    let first = app
        .data(
            "query { process(number: \"1000123-63.2023.5.02.0011\") { source sigilo documents { sourceId } } }",
            json!({}),
        )
        .await;
    assert_eq!(first["process"]["source"], "sample", "{first:#}");
    assert_eq!(first["process"]["sigilo"], 0);

    // A public sample case, as the file court lists it, but read over MNI.
    let started = app.start(PUBLIC, false).await;
    let id = started["job"]["id"].as_str().unwrap().to_string();
    let job = app.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    let listing: Value = serde_json::from_slice(&sample_file(
        PUBLIC,
        "playground/sample-court",
        "process.json",
    ))
    .unwrap();
    for listed in listing["documents"].as_array().unwrap() {
        let d = doc(&job, listed["id"].as_str().unwrap());
        assert_eq!(d["name"], listed["name"], "{d:#}");
        let (stored, _, _) = app.object(d["storageKey"].as_str().unwrap()).await.unwrap();
        let file = sample_file(
            PUBLIC,
            "playground/sample-court",
            listed["url"].as_str().unwrap(),
        );
        assert_eq!(stored, file, "bytes of {}", listed["id"]);
    }
    let source = app
        .data(
            "query($n: String!) { process(number: $n) { source } }",
            json!({ "n": PUBLIC }),
        )
        .await;
    assert_eq!(source["process"]["source"], "sample");

    // The sealed case: refused without the sample credential, read with it, the reader's alone.
    let body = start(&app.http, &app, SEALED).await;
    assert_eq!(error_code(&body), "SOURCE_ACCESS_DENIED", "{body:#}");
    let set = app
        .gql(
            "mutation { setSourceCredential(input: {source: \"sample\", username: \"demo\", password: \"demo-sigilo\"}) { source } }",
            json!({}),
        )
        .await;
    assert!(set.get("errors").is_none(), "{set:#}");
    let started = app.start(SEALED, false).await;
    let id = started["job"]["id"].as_str().unwrap().to_string();
    let job = app.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    for d in job["documents"].as_array().unwrap() {
        let key = d["storageKey"].as_str().unwrap();
        assert!(key.starts_with("tenants/acme/"), "{key}");
    }
    let d1 = doc(&job, "d1");
    let (stored, _, _) = app
        .object(d1["storageKey"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        stored,
        sample_file(SEALED, "playground/sample-court-sealed", "files/d1.txt")
    );

    let beta = client_with(&app.key("beta", &[Scope::Write]).await);
    let body = start(&beta, &app, SEALED).await;
    assert_eq!(error_code(&body), "SOURCE_ACCESS_DENIED", "{body:#}");
    let body = gql(
        &beta,
        &app,
        "query($n: String!) { process(number: $n) { number } }",
        json!({ "n": SEALED }),
    )
    .await;
    assert_eq!(error_code(&body), "SOURCE_ACCESS_DENIED", "{body:#}");
    app.stop().await;
}

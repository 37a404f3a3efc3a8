//! Reading real courts over MNI 2.2.2: sources by court, the two-phase `consultarProcesso`,
//! inline and MTOM contents streamed into S3, attached documents, the court's failures, and a
//! refused credential that is never presented again. The court is `common::mni::MniCourt`, a
//! SOAP server built from the published WSDL/XSD.

mod common;

use common::mni::{pattern_bytes, Encoding, MniCourt, MniDoc, MniFault, MniProcess};
use common::{doc, error_code, number, Court, Doc, Options, TestApp};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A number of TJRJ (8.19), which the sources file leaves to the default source.
fn elsewhere(n: u32) -> String {
    autos::domain::ProcessNumber::from_parts(&format!("{n:07}"), "2024", "8", "19", "0001")
        .expect("valid")
        .to_string()
}

/// Writes a sources file sending TJSP (8.26) to `mni`, with `password` for user `autos`.
fn sources_file(mni: &MniCourt, password: Option<&str>) -> PathBuf {
    let dir = common::temp_dir("sources");
    let path = dir.join("sources.toml");
    let credential = password
        .map(|p| format!("username = \"autos\"\npassword = \"{p}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            "[[source]]\nname = \"tjsp\"\ncourts = [\"8.26\"]\nurl = \"{}\"\n{credential}rate_per_minute = 100000\n",
            mni.url()
        ),
    )
    .expect("write the sources file");
    path
}

async fn app_with(court: Court, mni: &MniCourt, password: Option<&str>) -> TestApp {
    let path = sources_file(mni, password);
    TestApp::spawn_configured(court, Options::default(), move |c| {
        c.sources_file = Some(path);
    })
    .await
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

const PROCESS_QUERY: &str = "query($id: ID!) { job(id: $id) {
    status error process { number source sigilo }
    documents { sourceId parentSourceId name kind mimeType size sha256 status attempts lastError storageKey } } }";

async fn start(app: &TestApp, n: &str) -> Value {
    app.gql(
        "mutation($n: String!) { startDownload(input: {number: $n}) { created job { id status } } }",
        json!({ "n": n }),
    )
    .await
}

async fn finished(app: &TestApp, n: &str) -> Value {
    let started = start(app, n).await;
    let id = started["data"]["startDownload"]["job"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a job: {started:#}"))
        .to_string();
    app.wait_terminal(&id, WAIT).await;
    app.data(PROCESS_QUERY, json!({ "id": id })).await["job"].clone()
}

/// A case with attached documents (`documentoVinculado`, two levels deep).
fn case() -> (MniProcess, Vec<(&'static str, Vec<u8>)>) {
    let bytes = vec![
        ("101", common::bytes(3_000, 1)),
        ("102", common::bytes(10_000, 2)),
        ("103", common::bytes(1, 3)),
        ("104", common::bytes(70_001, 4)),
    ];
    let d = |i: usize, description: &str| MniDoc::new(bytes[i].0, description, bytes[i].1.clone());
    let process = MniProcess::new(vec![
        d(0, "Petição Inicial").child(d(1, "Procuração").child(d(2, "Substabelecimento"))),
        d(3, "Sentença"),
    ]);
    (process, bytes)
}

async fn assert_stored(app: &TestApp, job: &Value, expected: &[(&str, Vec<u8>)]) {
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    assert_eq!(job["documents"].as_array().unwrap().len(), expected.len());
    for (id, bytes) in expected {
        let d = doc(job, id);
        assert_eq!(d["status"], "AVAILABLE", "{d:#}");
        assert_eq!(d["sha256"], sha_hex(bytes), "{d:#}");
        let (stored, _, _) = app
            .object(d["storageKey"].as_str().unwrap())
            .await
            .expect("the object is in S3");
        assert_eq!(&stored, bytes, "bytes of {id} in S3");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_public_case_is_read_in_two_phases_and_stored_with_its_attached_documents() {
    let mni = MniCourt::start().await;
    mni.add_user("autos", "s3cret");
    let n = number(4101);
    let (process, bytes) = case();
    mni.add_process(&n, process);
    let app = app_with(Court::start().await, &mni, Some("s3cret")).await;

    let job = finished(&app, &n).await;
    assert_stored(&app, &job, &bytes).await;
    assert_eq!(job["process"]["source"], "tjsp");
    assert_eq!(job["process"]["sigilo"], 0);
    // Attached documents keep their parent; names come from the description and media type.
    assert_eq!(doc(&job, "101")["parentSourceId"], Value::Null);
    assert_eq!(doc(&job, "102")["parentSourceId"], "101");
    assert_eq!(doc(&job, "103")["parentSourceId"], "102");
    assert_eq!(doc(&job, "101")["name"], "Petição Inicial.pdf");
    assert_eq!(doc(&job, "101")["mimeType"], "application/pdf");

    // One listing call, then one content call per document, all `consultarProcesso` with the
    // configured credential and the number's 20 digits.
    let calls = mni.calls();
    assert_eq!(calls.len(), 1 + bytes.len(), "{calls:?}");
    assert!(
        calls[0].include_documents && calls[0].include_header,
        "{:?}",
        calls[0]
    );
    assert!(calls[0].documents.is_empty());
    let digits: String = n.chars().filter(char::is_ascii_digit).collect();
    for call in &calls {
        assert_eq!(call.operation, "consultarProcesso");
        assert_eq!(call.user.as_deref(), Some("autos"));
        assert_eq!(call.number.as_deref(), Some(digits.as_str()));
    }
    for (id, _) in &bytes {
        assert_eq!(mni.content_calls(&n, id), 1, "content of {id} asked once");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contents_sent_as_mtom_or_unwrapped_base64_are_stored_alike() {
    let mni = MniCourt::start().await;
    let n = number(4102);
    let (process, mut bytes) = case();
    let mut process = process;
    // A document of a few parts' worth, generated by the court as it sends it.
    process
        .documents
        .push(MniDoc::large("105", 12 * 1024 * 1024 + 5, 9));
    bytes.push(("105", pattern_bytes(12 * 1024 * 1024 + 5, 9)));
    mni.add_process(&n, process);
    mni.set_encoding(Encoding::Mtom);
    let app = app_with(Court::start().await, &mni, None).await;
    let job = finished(&app, &n).await;
    assert_stored(&app, &job, &bytes).await;

    // The same case again, forced, as inline base64 on one line: unchanged bytes, same objects.
    let n2 = number(4103);
    let (process, bytes2) = case();
    mni.add_process(&n2, process);
    mni.set_encoding(Encoding::Inline);
    mni.set_base64_line(None);
    let job = finished(&app, &n2).await;
    assert_stored(&app, &job, &bytes2).await;
    assert!(mni.operations().iter().all(|op| op == "consultarProcesso"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn numbers_of_other_courts_go_to_the_default_source() {
    let mni = MniCourt::start().await;
    let court = Court::start().await;
    let n = elsewhere(4104);
    court.add_process(&n, vec![Doc::new("d1", "a.pdf", common::bytes(500, 5))]);
    let app = app_with(court, &mni, None).await;
    let job = finished(&app, &n).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    assert_eq!(job["process"]["source"], "default");
    assert!(mni.calls().is_empty(), "the MNI court was not asked");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_credential_is_never_presented_again() {
    let mni = MniCourt::start().await;
    mni.add_user("autos", "right");
    let n = number(4105);
    mni.add_process(&n, case().0);
    let app = app_with(Court::start().await, &mni, Some("wrong")).await;

    let body = start(&app, &n).await;
    assert_eq!(error_code(&body), "SOURCE_ACCESS_DENIED", "{body:#}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("tjsp"), "names the source: {message}");
    assert!(!message.contains("wrong"), "never the secret: {message}");
    assert_eq!(mni.calls().len(), 1, "one call, not retried");

    // Another number, same source: refused without asking the court.
    let other = number(4106);
    mni.add_process(&other, case().0);
    let body = start(&app, &other).await;
    assert_eq!(error_code(&body), "SOURCE_ACCESS_DENIED", "{body:#}");
    assert_eq!(
        mni.calls().len(),
        1,
        "the refused credential was not presented again"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_courts_failures_answer_stable_codes_with_its_message() {
    let mni = MniCourt::start().await;
    let app = app_with(Court::start().await, &mni, None).await;

    // Unknown to the court.
    let body = start(&app, &number(4107)).await;
    assert_eq!(error_code(&body), "PROCESS_NOT_FOUND", "{body:#}");

    // `sucesso=false` for another reason, on every attempt: the court's words reach the client.
    let n = number(4108);
    mni.add_process(&n, case().0);
    let down = || MniFault::NotSuccess("Sistema temporariamente indisponível".into());
    mni.fail_next(vec![down(), down(), down(), down()]);
    let body = start(&app, &n).await;
    assert_eq!(error_code(&body), "SOURCE_UNAVAILABLE", "{body:#}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("Sistema temporariamente indisponível"),
        "{message}"
    );

    // A SOAP fault, likewise.
    let fault = || MniFault::SoapFault("java.lang.NullPointerException".into());
    mni.fail_next(vec![fault(), fault(), fault(), fault()]);
    let body = start(&app, &n).await;
    assert_eq!(error_code(&body), "SOURCE_UNAVAILABLE", "{body:#}");

    // A fault then a good answer: the lookup's retry gets the case.
    mni.fail_next(vec![MniFault::Status(503)]);
    let job = finished(&app, &n).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_and_slow_contents_are_fetched_again() {
    let mni = MniCourt::start().await;
    let n = number(4109);
    let (process, bytes) = case();
    mni.add_process(&n, process);
    let app = app_with(Court::start().await, &mni, None).await;
    // The listing answers; the first content answer is cut, the second slow.
    mni.fail_next(vec![
        MniFault::Slow(Duration::from_millis(10)),
        MniFault::Truncated,
        MniFault::Slow(Duration::from_millis(500)),
    ]);
    let job = finished(&app, &n).await;
    assert_stored(&app, &job, &bytes).await;
    let retried: usize = bytes.iter().map(|(id, _)| mni.content_calls(&n, id)).sum();
    assert!(retried > bytes.len(), "the cut document was asked again");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sealed_case_is_read_with_a_credential_the_court_lets_see_it() {
    let mni = MniCourt::start().await;
    mni.add_user("autos", "s3cret");
    mni.add_user("other", "pw");
    let n = number(4110);
    let (process, bytes) = case();
    mni.add_process(&n, process.sealed(3, &["autos"]));
    let app = app_with(Court::start().await, &mni, Some("s3cret")).await;
    let job = finished(&app, &n).await;
    assert_stored(&app, &job, &bytes).await;
    assert_eq!(job["process"]["sigilo"], 3);
    app.stop().await;

    // The court refuses the case to a credential it does not let see it.
    let app = app_with(Court::start().await, &mni, Some("pw")).await;
    let body = start(&app, &n).await;
    assert_eq!(error_code(&body), "SOURCE_ACCESS_DENIED", "{body:#}");
    app.stop().await;
}

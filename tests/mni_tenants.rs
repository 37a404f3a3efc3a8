//! Court credentials per tenant and secrecy: a tenant's own credential is sealed at rest and
//! presented for its work; what it reads of a sealed case is its alone (its own rows, its own
//! objects under `tenants/{tenant}/…`, audited reads), whatever the other tenants' credentials;
//! a refused credential is marked and not presented again until replaced. Public documents are
//! still transferred once for everyone.

mod common;

use autos::auth::Scope;
use common::mni::{MniCourt, MniDoc, MniProcess};
use common::{client_with, doc, error_code, number, post_gql, Court, Options, TestApp};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Sends TJSP (8.26) to `mni`, with no configured credential.
fn sources_file(mni: &MniCourt) -> PathBuf {
    let path = common::temp_dir("sources").join("sources.toml");
    std::fs::write(
        &path,
        format!(
            "[[source]]\nname = \"tjsp\"\ncourts = [\"8.26\"]\nurl = \"{}\"\nrate_per_minute = 100000\n",
            mni.url()
        ),
    )
    .expect("write the sources file");
    path
}

async fn app(mni: &MniCourt) -> TestApp {
    let path = sources_file(mni);
    TestApp::spawn_configured(Court::start().await, Options::default(), move |c| {
        c.sources_file = Some(path);
    })
    .await
}

/// A tenant's client: its own write key.
struct Tenant {
    http: reqwest::Client,
    addr: std::net::SocketAddr,
}

impl Tenant {
    async fn of(app: &TestApp, slug: &str) -> Tenant {
        Tenant {
            http: client_with(&app.key(slug, &[Scope::Write]).await),
            addr: app.addr,
        }
    }

    async fn gql(&self, query: &str, variables: Value) -> Value {
        post_gql(&self.http, self.addr, query, variables).await
    }

    async fn data(&self, query: &str, variables: Value) -> Value {
        let body = self.gql(query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
        body["data"].clone()
    }

    async fn set_credential(&self, user: &str, password: &str) -> Value {
        self.gql(
            "mutation($u: String!, $p: String!) { setSourceCredential(input: {source: \"tjsp\", username: $u, password: $p}) { source username refused lastError } }",
            json!({ "u": user, "p": password }),
        )
        .await
    }

    async fn start(&self, n: &str) -> Value {
        self.gql(
            "mutation($n: String!) { startDownload(input: {number: $n}) { job { id } } }",
            json!({ "n": n }),
        )
        .await
    }

    /// Starts a job for `n` and waits for its end; the job with its documents.
    async fn finished(&self, n: &str) -> Value {
        let body = self.start(n).await;
        let id = body["data"]["startDownload"]["job"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("a job: {body:#}"))
            .to_string();
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let job = self
                .data(
                    "query($id: ID!) { job(id: $id) { status process { source sigilo }
                       documents { id sourceId sigilo status storageKey sha256 downloadUrl } } }",
                    json!({ "id": id }),
                )
                .await["job"]
                .clone();
            if !matches!(job["status"].as_str(), Some("QUEUED" | "RUNNING")) {
                return job;
            }
            assert!(std::time::Instant::now() < deadline, "{job:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A sealed case (level 3) the court shows to `a` and `c`, with one document sealed on its
/// own (level 5) inside a public attachment tree.
fn sealed_case() -> (MniProcess, Vec<(&'static str, Vec<u8>)>) {
    let bytes = vec![
        ("s1", common::bytes(4_000, 11)),
        ("s2", common::bytes(2_000, 12)),
        ("s3", common::bytes(900, 13)),
    ];
    let d = |i: usize| MniDoc::new(bytes[i].0, &format!("Peça {i}"), bytes[i].1.clone());
    let process = MniProcess::new(vec![d(0).child(d(1).sealed(5)), d(2)]).sealed(3, &["a", "c"]);
    (process, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sealed_case_is_the_fetching_tenants_alone_whatever_the_others_credentials() {
    let mni = MniCourt::start().await;
    mni.add_user("a", "pa");
    mni.add_user("c", "pc");
    mni.add_user("b", "pb");
    let n = number(4201);
    let (process, bytes) = sealed_case();
    mni.add_process(&n, process);
    let app = app(&mni).await;
    let acme = Tenant::of(&app, "acme").await;
    let beta = Tenant::of(&app, "beta").await;
    let gamma = Tenant::of(&app, "gamma").await;

    // acme reads it with its own credential: its objects, under its prefix.
    let set = acme.set_credential("a", "pa").await;
    assert_eq!(
        set["data"]["setSourceCredential"]["refused"], false,
        "{set:#}"
    );
    let job = acme.finished(&n).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    assert_eq!(job["process"]["sigilo"], 3);
    for (id, expected) in &bytes {
        let d = doc(&job, id);
        let key = d["storageKey"].as_str().unwrap();
        assert!(key.starts_with("tenants/acme/processos/"), "{key}");
        let (stored, _, _) = app.object(key).await.expect("in S3");
        assert_eq!(&stored, expected);
    }
    assert_eq!(doc(&job, "s2")["sigilo"], 5);
    assert!(mni.calls().iter().all(|c| c.user.as_deref() == Some("a")));

    // beta, without a credential of its own: the court refuses it, and nothing of acme's shows.
    let body = beta.start(&n).await;
    assert_eq!(error_code(&body), "SOURCE_ACCESS_DENIED", "{body:#}");
    let body = beta
        .gql(
            "query($n: String!) { process(number: $n) { number documents { id } } }",
            json!({ "n": n }),
        )
        .await;
    assert_eq!(error_code(&body), "SOURCE_ACCESS_DENIED", "{body:#}");
    for d in job["documents"].as_array().unwrap() {
        let seen = beta
            .data(
                "query($id: ID!) { document(id: $id) { id } }",
                json!({ "id": d["id"] }),
            )
            .await;
        assert_eq!(
            seen["document"],
            Value::Null,
            "beta cannot read acme's document"
        );
    }
    // With a credential the court refuses this case to, still nothing.
    beta.set_credential("b", "pb").await;
    let body = beta.start(&n).await;
    assert_eq!(error_code(&body), "SOURCE_ACCESS_DENIED", "{body:#}");

    // gamma may see the case at the court: it gets its own copy, never acme's.
    gamma.set_credential("c", "pc").await;
    let before: usize = bytes.iter().map(|(id, _)| mni.content_calls(&n, id)).sum();
    let theirs = gamma.finished(&n).await;
    assert_eq!(theirs["status"], "COMPLETED", "{theirs:#}");
    for (id, expected) in &bytes {
        let d = doc(&theirs, id);
        assert!(
            d["storageKey"]
                .as_str()
                .unwrap()
                .starts_with("tenants/gamma/"),
            "{d:#}"
        );
        assert_ne!(d["id"], doc(&job, id)["id"], "a row of gamma's own");
        let (stored, _, _) = app.object(d["storageKey"].as_str().unwrap()).await.unwrap();
        assert_eq!(&stored, expected);
    }
    let after: usize = bytes.iter().map(|(id, _)| mni.content_calls(&n, id)).sum();
    assert_eq!(
        after - before,
        bytes.len(),
        "gamma's copy was fetched with gamma's credential"
    );

    // Every read of the sealed case is in the reader's audit log: the listings and the links.
    let log = acme
        .data(
            "{ auditLog(first: 100) { nodes { action target } } }",
            json!({}),
        )
        .await;
    let actions: Vec<&str> = log["auditLog"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"readSealedDocuments"), "{actions:?}");
    assert!(actions.contains(&"linkSealedDocument"), "{actions:?}");
    let beta_log = beta
        .data(
            "{ auditLog(first: 100) { nodes { action target } } }",
            json!({}),
        )
        .await;
    assert!(
        !beta_log.to_string().contains("readSealedDocuments"),
        "beta read nothing sealed: {beta_log:#}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn public_documents_are_still_transferred_once_for_every_tenant() {
    let mni = MniCourt::start().await;
    mni.add_user("a", "pa");
    mni.add_user("b", "pb");
    let n = number(4202);
    mni.add_process(
        &n,
        MniProcess::new(vec![MniDoc::new(
            "p1",
            "Sentença",
            common::bytes(3_000, 21),
        )]),
    );
    let app = app(&mni).await;
    let acme = Tenant::of(&app, "acme").await;
    let beta = Tenant::of(&app, "beta").await;
    acme.set_credential("a", "pa").await;
    beta.set_credential("b", "pb").await;
    let first = acme.finished(&n).await;
    let second = beta.finished(&n).await;
    assert_eq!(first["status"], "COMPLETED", "{first:#}");
    assert_eq!(second["status"], "COMPLETED", "{second:#}");
    assert_eq!(
        doc(&first, "p1")["id"],
        doc(&second, "p1")["id"],
        "one shared row"
    );
    let key = doc(&first, "p1")["storageKey"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(key.starts_with("processos/"), "{key}");
    assert_eq!(mni.content_calls(&n, "p1"), 1, "transferred once");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_credential_is_marked_and_not_presented_until_replaced() {
    let mni = MniCourt::start().await;
    mni.add_user("a", "pa");
    let n = number(4203);
    let (process, _) = sealed_case();
    mni.add_process(&n, process);
    let app = app(&mni).await;
    let acme = Tenant::of(&app, "acme").await;
    acme.set_credential("a", "wrong").await;

    let body = acme.start(&n).await;
    assert_eq!(error_code(&body), "SOURCE_ACCESS_DENIED", "{body:#}");
    assert_eq!(mni.calls().len(), 1);
    let listed = acme
        .data(
            "{ sourceCredentials { source username refused lastError lastUsedAt } }",
            json!({}),
        )
        .await;
    let credential = &listed["sourceCredentials"][0];
    assert_eq!(credential["source"], "tjsp");
    assert_eq!(credential["username"], "a");
    assert_eq!(credential["refused"], true, "{listed:#}");
    assert!(credential["lastError"].as_str().is_some(), "{listed:#}");
    assert!(!listed.to_string().contains("wrong"), "never the secret");

    // Asked again: refused here, without a call to the court (it would lock the account).
    let body = acme.start(&n).await;
    assert_eq!(error_code(&body), "SOURCE_ACCESS_DENIED", "{body:#}");
    assert_eq!(
        mni.calls().len(),
        1,
        "the refused credential was not presented again"
    );

    // Replaced: presented again, and the case is read.
    acme.set_credential("a", "pa").await;
    let job = acme.finished(&n).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    let listed = acme
        .data(
            "{ sourceCredentials { refused lastError lastUsedAt } }",
            json!({}),
        )
        .await;
    let credential = &listed["sourceCredentials"][0];
    assert_eq!(credential["refused"], false, "{listed:#}");
    assert!(
        credential["lastUsedAt"].is_string(),
        "its use is noted: {listed:#}"
    );
    let removed = acme
        .data(
            "mutation { removeSourceCredential(source: \"tjsp\") }",
            json!({}),
        )
        .await;
    assert_eq!(removed["removeSourceCredential"], true);
    let bad = acme.gql(
        "mutation { setSourceCredential(input: {source: \"nowhere\", username: \"a\", password: \"p\"}) { source } }",
        json!({}),
    ).await;
    assert_eq!(error_code(&bad), "BAD_REQUEST", "{bad:#}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_password_reaches_the_database_or_the_audit_log_in_the_clear() {
    let mni = MniCourt::start().await;
    let secret = "Pa55-unique-7f3c9e";
    mni.add_user("a", secret);
    let n = number(4204);
    mni.add_process(&n, sealed_case().0);
    let app = app(&mni).await;
    let acme = Tenant::of(&app, "acme").await;
    let set = acme.set_credential("a", secret).await;
    assert!(set.get("errors").is_none(), "{set:#}");
    let job = acme.finished(&n).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}",);

    // A full dump of the database (data and all): the password appears nowhere, in any form.
    let dump = std::process::Command::new("pg_dump")
        .arg("--data-only")
        .arg(&app.db.url)
        .output()
        .expect("run pg_dump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        text.contains("source_credentials"),
        "the dump has the credentials table"
    );
    use base64::Engine;
    for form in [
        secret.to_string(),
        base64::engine::general_purpose::STANDARD.encode(secret),
        hex::encode(secret),
    ] {
        assert!(
            !text.contains(&form),
            "the password is in the dump as {form}"
        );
    }
    app.stop().await;
}

/// Gives `tenant` an A1 certificate (and no password) for source `tjsp`.
async fn set_certificate(tenant: &Tenant, p12: &[u8], password: &str) -> Value {
    use base64::Engine;
    tenant
        .gql(
            "mutation($c: String!, $p: String!) { setSourceCredential(input: {source: \"tjsp\", username: \"a\", certificatePkcs12Base64: $c, certificatePassword: $p}) { source certificateSubject } }",
            json!({ "c": base64::engine::general_purpose::STANDARD.encode(p12), "p": password }),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_court_that_demands_a_client_certificate_gets_the_tenants_a1() {
    use base64::Engine;
    let (mni, tls) = MniCourt::start_tls().await;
    let n = number(4205);
    let (process, bytes) = sealed_case();
    mni.add_process(&n, process);
    // The court's authority is trusted for this source only (`ca_file`).
    let dir = common::temp_dir("sources");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let path = dir.join("sources.toml");
    std::fs::write(
        &path,
        format!(
            "[[source]]\nname = \"tjsp\"\ncourts = [\"8.26\"]\nurl = \"{}\"\nca_file = \"{}\"\nrate_per_minute = 100000\n",
            mni.url(),
            ca.display()
        ),
    )
    .unwrap();
    let app = TestApp::spawn_configured(Court::start().await, Options::default(), move |c| {
        c.sources_file = Some(path);
    })
    .await;
    let acme = Tenant::of(&app, "acme").await;
    let beta = Tenant::of(&app, "beta").await;
    let b64 = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der);

    // Without a certificate the TLS handshake fails: no call reaches the court.
    let body = acme.start(&n).await;
    assert_eq!(error_code(&body), "SOURCE_UNAVAILABLE", "{body:#}");
    assert!(mni.calls().is_empty());

    // A certificate that does not open with its password is refused when given.
    let wrong = set_certificate(&acme, &tls.client_p12, "not-its-password").await;
    assert_eq!(error_code(&wrong), "BAD_REQUEST", "{wrong:#}");

    // acme's A1, with no password at all: the case is read over mutual TLS.
    let ok = set_certificate(&acme, &tls.client_p12, "senha-do-certificado").await;
    assert!(ok.get("errors").is_none(), "{ok:#}");
    let subject = ok["data"]["setSourceCredential"]["certificateSubject"]
        .as_str()
        .unwrap_or_default();
    assert!(subject.contains("ADVOGADO DE TESTE"), "{ok:#}");
    let job = acme.finished(&n).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    for (id, expected) in &bytes {
        let (stored, _, _) = app
            .object(doc(&job, id)["storageKey"].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(&stored, expected);
    }
    assert!(mni.calls().iter().all(|c| c.password.is_none()));

    // A certificate of another authority: the court's TLS refuses it.
    let stranger = set_certificate(&beta, &tls.stranger_p12, "senha-do-certificado").await;
    assert!(stranger.get("errors").is_none(), "{stranger:#}");
    let calls = mni.calls().len();
    let body = beta.start(&n).await;
    assert_eq!(error_code(&body), "SOURCE_UNAVAILABLE", "{body:#}");
    assert_eq!(
        mni.calls().len(),
        calls,
        "the handshake failed before any call"
    );

    // Neither the certificate nor its password is in the database in the clear.
    let dump = std::process::Command::new("pg_dump")
        .arg("--data-only")
        .arg(&app.db.url)
        .output()
        .expect("run pg_dump");
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains("source_credentials"));
    assert!(!text.contains("senha-do-certificado"));
    assert!(!text.contains(&b64(&tls.client_p12)[..64]));
    app.stop().await;
}

//! Authentication over HTTP (401 and what it does not run) and scopes per field.

use super::*;

/// A client sending `Authorization: {value}` verbatim (or nothing).
fn client_sending(value: Option<&str>) -> reqwest::Client {
    let mut headers = header::HeaderMap::new();
    if let Some(value) = value {
        headers.insert(header::AUTHORIZATION, value.parse().expect("header value"));
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_without_valid_credentials_get_401_and_run_nothing() {
    let court = Court::start().await;
    let n = number(103);
    court.add_process(&n, docs(3));
    let app = TestApp::spawn(court).await;
    let revoked = app.key(TENANT, &[Scope::Write]).await;
    revoke(&app, &revoked).await;
    let expired = app.key(TENANT, &[Scope::Write]).await;
    execute(
        &app.db,
        &format!(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = '{}'",
            key_id(&expired)
        ),
    )
    .await;
    let wrong_secret = format!("autos_{}_{}", key_id(&app.key), "A".repeat(43));
    let unknown = format!("autos_zzzzzzzzzzzz_{}", key_secret(&app.key));

    let cases = [
        ("missing", None),
        ("empty", Some("Bearer ".to_string())),
        ("malformed", Some("Bearer not-a-key".to_string())),
        (
            "another scheme",
            Some("Basic dXNlcjpwYXNzd29yZA==".to_string()),
        ),
        ("unknown", Some(format!("Bearer {unknown}"))),
        ("wrong secret", Some(format!("Bearer {wrong_secret}"))),
        ("revoked", Some(format!("Bearer {revoked}"))),
        ("expired", Some(format!("Bearer {expired}"))),
    ];
    for (case, authorization) in &cases {
        let client = client_sending(authorization.as_deref());
        let got = start_as(&client, &app, &n).await;
        assert_unauthenticated(&got, case);
    }
    assert_eq!(jobs_in_db(&app).await, 0);
    assert_eq!(app.court.lookups(), 0, "the court was asked");
    let audited = count(
        &app.db,
        "SELECT count(*) FROM audit_log WHERE action = 'startDownload'",
    )
    .await;
    assert_eq!(audited, 0, "nothing ran, so nothing was recorded");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_key_cannot_start_a_download_and_nothing_happens() {
    let court = Court::start().await;
    let n = number(104);
    court.add_process(&n, docs(4));
    let app = TestApp::spawn(court).await;
    let reader = client_with(&app.key(TENANT, &[Scope::Read]).await);

    let got = start_as(&reader, &app, &n).await;
    assert_forbidden_at(&got, &["startDownload"], "read key");
    assert_eq!(jobs_in_db(&app).await, 0);
    assert_eq!(app.court.lookups(), 0);
    assert_eq!(app.court.total_gets(), 0);
    assert_eq!(app.keys().await, Vec::<String>::new());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forbidden_field_fails_alone_and_its_allowed_siblings_answer() {
    let app = TestApp::spawn(Court::start().await).await;
    let secret = data(
        &app.http,
        app.addr,
        "{ viewer { webhookSecret } }",
        json!({}),
    )
    .await;
    let secret = secret["viewer"]["webhookSecret"]
        .as_str()
        .expect("secret")
        .to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let reader = client_with(&app.key(TENANT, &[Scope::Read]).await);

    let got = post(
        &reader,
        app.addr,
        "{ viewer { tenant webhookSecret } }",
        json!({}),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.code_at(&["viewer", "webhookSecret"]).as_deref(),
        Some("FORBIDDEN"),
        "{:#}",
        got.body
    );
    assert!(!got.body.to_string().contains(&secret), "{:#}", got.body);
    assert_eq!(
        got.body["data"]["viewer"]["tenant"], TENANT,
        "{:#}",
        got.body
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_key_asking_for_jobs_and_api_keys_gets_the_jobs() {
    let court = Court::start().await;
    let n = number(105);
    court.add_process(&n, docs(5));
    let app = TestApp::spawn(court).await;
    let (id, _) = started(&app.http, &app, &n).await;

    let got = post(
        &app.http,
        app.addr,
        "{ jobs { edges { node { id } } } apiKeys { id } }",
        json!({}),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.code_at(&["apiKeys"]).as_deref(),
        Some("FORBIDDEN"),
        "{:#}",
        got.body
    );
    assert_eq!(
        job_ids(&got.body["data"]),
        vec![id.clone()],
        "{:#}",
        got.body
    );
    app.wait_terminal(&id, WAIT).await;
    app.stop().await;
}

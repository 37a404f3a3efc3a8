//! Browser safety on `POST /graphql`: JSON only, allowed origins, CORS answers.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn posts_that_are_not_json_get_415_and_run_nothing() {
    let court = Court::start().await;
    let n = number(119);
    court.add_process(&n, docs(19));
    let app = TestApp::spawn(court).await;
    let body = json!({ "query": START, "variables": { "n": n } }).to_string();

    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = app.http.post(app.url("/graphql")).body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let response = request.send().await.expect("request");
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
    }
    assert_eq!(jobs_in_db(&app).await, 0);
    assert_eq!(app.court.lookups(), 0);

    // The same body as JSON runs.
    let response = app
        .http
        .post(app.url("/graphql"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let got = answer(response).await;
    assert_eq!(
        got.body["data"]["startDownload"]["created"], true,
        "{:#}",
        got.body
    );
    let id = got.body["data"]["startDownload"]["job"]["id"]
        .as_str()
        .expect("id");
    app.wait_terminal(id, WAIT).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn posts_from_a_foreign_origin_are_refused_and_the_public_origin_is_served() {
    let court = Court::start().await;
    let n = number(120);
    court.add_process(&n, docs(20));
    let app = TestApp::spawn(court).await;
    let query = json!({ "query": START, "variables": { "n": n } });

    let send = |origin: String| {
        let request = app
            .http
            .post(app.url("/graphql"))
            .header(header::ORIGIN, origin);
        let request = request.json(&query);
        async move { answer(request.send().await.expect("request")).await }
    };
    let got = send("https://evil.example".into()).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN, "{:#}", got.body);
    assert_eq!(got.code(), "FORBIDDEN");
    assert_eq!(jobs_in_db(&app).await, 0);
    assert_eq!(app.court.lookups(), 0);

    let got = send(format!("http://{}", app.addr)).await;
    assert_eq!(got.status, StatusCode::OK, "{:#}", got.body);
    assert_eq!(
        got.body["data"]["startDownload"]["created"], true,
        "{:#}",
        got.body
    );
    assert_eq!(jobs_in_db(&app).await, 1);
    let id = got.body["data"]["startDownload"]["job"]["id"]
        .as_str()
        .expect("id");
    app.wait_terminal(id, WAIT).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cors_answers_the_configured_origin_and_no_other() {
    const ALLOWED: &str = "https://app.example.com";
    let court = Court::start().await;
    let n = number(121);
    court.add_process(&n, docs(21));
    let app = spawn_configured(court, |c| c.cors_origins = ALLOWED.into()).await;
    let allow_origin = |r: &reqwest::Response| {
        r.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.to_str().unwrap_or_default().to_string())
    };
    let preflight = |origin: &'static str| {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type",
            )
            .send()
    };

    let allowed = preflight(ALLOWED).await.expect("preflight");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(allow_origin(&allowed).as_deref(), Some(ALLOWED));
    let headers = allowed
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_HEADERS)
        .map(|v| v.to_str().unwrap_or_default().to_ascii_lowercase())
        .unwrap_or_default();
    assert!(
        headers.contains("authorization"),
        "allowed headers: {headers:?}"
    );
    let evil = preflight("https://evil.example").await.expect("preflight");
    assert_eq!(allow_origin(&evil), None);

    let response = app
        .http
        .post(app.url("/graphql"))
        .header(header::ORIGIN, ALLOWED)
        .json(&json!({ "query": START, "variables": { "n": n } }))
        .send()
        .await
        .expect("request");
    assert_eq!(allow_origin(&response).as_deref(), Some(ALLOWED));
    let got = answer(response).await;
    assert_eq!(
        got.body["data"]["startDownload"]["created"], true,
        "{:#}",
        got.body
    );
    let id = got.body["data"]["startDownload"]["job"]["id"]
        .as_str()
        .expect("id");
    assert_eq!(job_tenant(&app.db, id).await, TENANT);
    app.wait_terminal(id, WAIT).await;
    app.stop().await;
}

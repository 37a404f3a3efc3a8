//! GraphQL over HTTP: queries by GET (and nothing else), and the media type of answers
//! following `Accept`.

use super::*;

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// `/graphql?{params}`.
fn with_query(app: &TestApp, params: &[(&str, &str)]) -> url::Url {
    url::Url::parse_with_params(&app.url("/graphql"), params).expect("url")
}

/// GET /graphql with `params` in the query string, as `client`.
async fn get(client: &reqwest::Client, app: &TestApp, params: &[(&str, &str)]) -> Reply {
    let response = client
        .get(with_query(app, params))
        .send()
        .await
        .expect("request");
    Reply::of(response).await
}

/// POST /graphql as `app`'s key with `Accept: {accept}`.
async fn post_accepting(app: &TestApp, accept: &str, query: &str) -> Reply {
    let response = app
        .http
        .post(app.url("/graphql"))
        .header(header::ACCEPT, accept)
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("request");
    Reply::of(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_runs_queries_from_the_query_string() {
    let court = Court::start().await;
    let n = number(601);
    court.add_process(&n, docs(2, 61));
    let app = TestApp::spawn(court).await;

    let got = get(&app.http, &app, &[("query", "{viewer{tenant}}")]).await;
    assert_charged(&got, 1, "GET viewer");
    assert_eq!(got.body["data"]["viewer"]["tenant"], TENANT, "{}", got.text);
    assert_eq!(got.media_type(), "application/json");

    // Variables and the operation's name, as the query string carries them.
    let two =
        "query P($n: String!) { process(number: $n) { number } } query V { viewer { tenant } }";
    let variables = json!({ "n": n }).to_string();
    let named = get(
        &app.http,
        &app,
        &[
            ("query", two),
            ("variables", &variables),
            ("operationName", "P"),
        ],
    )
    .await;
    assert_charged(&named, 100 + 1, "GET process");
    assert_eq!(named.body["data"]["process"]["number"], n, "{}", named.text);
    assert!(named.body["data"].get("viewer").is_none(), "{}", named.text);

    // The key is needed, as for POST.
    let anonymous = get(
        &reqwest::Client::new(),
        &app,
        &[("query", "{viewer{tenant}}")],
    )
    .await;
    assert_eq!(
        anonymous.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        anonymous.text
    );
    assert_eq!(anonymous.code(), "UNAUTHENTICATED");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_refuses_mutations_and_subscriptions_with_405_and_runs_nothing() {
    let court = Court::start().await;
    let n = number(602);
    court.add_process(&n, docs(2, 62));
    let app = TestApp::spawn(court).await;
    let mutation =
        format!("mutation {{ startDownload(input: {{number: \"{n}\"}}) {{ created }} }}");
    let subscription =
        "subscription { jobProgress(jobId: \"00000000-0000-0000-0000-000000000000\") { status } }";
    let two = format!("query V {{ viewer {{ tenant }} }} {mutation}").replacen(
        "mutation {",
        "mutation M {",
        1,
    );
    let cases: [(&str, Vec<(&str, &str)>); 3] = [
        ("mutation", vec![("query", mutation.as_str())]),
        ("subscription", vec![("query", subscription)]),
        (
            "named mutation",
            vec![("query", two.as_str()), ("operationName", "M")],
        ),
    ];
    for (case, params) in &cases {
        let got = get(&app.http, &app, params).await;
        assert_eq!(
            got.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{case}: {}",
            got.text
        );
        assert_eq!(got.header("allow"), Some("POST"), "{case}");
    }
    assert_eq!(jobs_in_db(&app).await, 0, "a job was created");
    assert_eq!(app.court.lookups(), 0, "the court was asked");
    let audited = count(
        &app.db,
        "SELECT count(*) FROM audit_log WHERE action = 'startDownload'",
    )
    .await;
    assert_eq!(audited, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_take_the_media_type_the_client_accepts() {
    let app = TestApp::spawn(Court::start().await).await;
    let fine = "{ viewer { tenant } }";
    let invalid = "{ viewer { tenant noSuchField } }";
    let costly = "{ a: jobs(first: 100) { nodes { documents { id } } } }";

    // (Accept, query, status, media type)
    let cases = [
        ("application/json", fine, 200, "application/json"),
        (GRAPHQL_RESPONSE, fine, 200, GRAPHQL_RESPONSE),
        ("application/json", invalid, 200, "application/json"),
        (GRAPHQL_RESPONSE, invalid, 400, GRAPHQL_RESPONSE),
        ("application/json", costly, 200, "application/json"),
        (GRAPHQL_RESPONSE, costly, 400, GRAPHQL_RESPONSE),
        (
            "application/json;q=0.5, application/graphql-response+json",
            fine,
            200,
            GRAPHQL_RESPONSE,
        ),
        (
            "application/graphql-response+json;q=0.1, */*",
            fine,
            200,
            "application/json",
        ),
    ];
    for (accept, query, status, media) in cases {
        let got = post_accepting(&app, accept, query).await;
        let case = format!("Accept {accept}, {query}");
        assert_eq!(got.status.as_u16(), status, "{case}: {}", got.text);
        assert_eq!(got.media_type(), media, "{case}");
        if query == fine {
            assert_eq!(
                got.body["data"]["viewer"]["tenant"], TENANT,
                "{case}: {}",
                got.text
            );
        } else {
            assert!(got.body["data"].is_null(), "{case}: {}", got.text);
            let code = got.body["errors"][0]["extensions"]["code"].clone();
            if query == costly {
                assert_eq!(code, "QUERY_TOO_COMPLEX", "{case}: {}", got.text);
            }
        }
    }

    // GET follows Accept too.
    let response = app
        .http
        .get(with_query(&app, &[("query", invalid)]))
        .header(header::ACCEPT, GRAPHQL_RESPONSE)
        .send()
        .await
        .expect("request");
    let got = Reply::of(response).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST, "{}", got.text);
    assert_eq!(got.media_type(), GRAPHQL_RESPONSE);

    // Nothing acceptable: 406.
    let html = post_accepting(&app, "text/html", fine).await;
    assert_eq!(html.status, StatusCode::NOT_ACCEPTABLE, "{}", html.text);

    // No Accept at all (reqwest would send `*/*`): application/json.
    let body = json!({ "query": fine }).to_string();
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        app.addr,
        app.key,
        body.len()
    );
    let raw = raw_exchange(app.addr, request.as_bytes()).await;
    assert_eq!(raw.status, 200, "{raw:?}");
    assert_eq!(
        media_type(raw.header("content-type")),
        "application/json",
        "{raw:?}"
    );
    assert_eq!(raw.json()["data"]["viewer"]["tenant"], TENANT);
    app.stop().await;
}

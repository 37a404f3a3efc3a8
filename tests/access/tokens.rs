//! Progress tokens over HTTP: one job, read only, until expiry or the issuing key's revocation.

use super::*;

/// A progress token for `job`, issued by `client`'s key.
async fn token_for(client: &reqwest::Client, app: &TestApp, job: &str, ttl: Option<i32>) -> String {
    let got = match ttl {
        Some(ttl) => {
            data(
                client,
                app.addr,
                TOKEN_TTL,
                json!({ "id": job, "ttl": ttl }),
            )
            .await
        }
        None => data(client, app.addr, TOKEN, json!({ "id": job })).await,
    };
    let token = got["createProgressToken"]["token"].as_str().expect("token");
    assert!(token.starts_with("apt_"), "{token}");
    token.to_string()
}

/// Whether `token` reads its job now.
async fn reads_its_job(token: &str, app: &TestApp, job: &str) -> bool {
    let got = post(&client_with(token), app.addr, JOB, json!({ "id": job })).await;
    got.status == StatusCode::OK && got.body["data"]["job"]["id"] == job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_progress_token_reads_its_own_job_and_nothing_else() {
    let court = Court::start().await;
    let (n1, n2, n3) = (number(111), number(112), number(113));
    court.add_process(&n1, docs(11));
    slow_case(&court, &n2, 12);
    court.add_process(&n3, docs(13));
    let app = TestApp::spawn(court).await;
    let (shown, _) = started(&app.http, &app, &n1).await;
    app.wait_terminal(&shown, WAIT).await;
    let (other, _) = started(&app.http, &app, &n2).await;
    let lookups = app.court.lookups();

    let token = client_with(&token_for(&app.http, &app, &shown, None).await);
    let job = data(&token, app.addr, JOB_QUERY, json!({ "id": shown })).await["job"].clone();
    assert_eq!(job["id"], shown.as_str());
    assert_eq!(job["status"], "COMPLETED");
    let documents = job["documents"].as_array().expect("documents");
    assert_eq!(documents.len(), 3);
    assert!(
        documents.iter().all(|d| d["downloadUrl"].is_string()),
        "{job:#}"
    );
    let document = documents[0]["id"].as_str().expect("document id");

    for (query, variables, field) in [
        (JOB, json!({ "id": other }), "job"),
        (JOBS, json!({}), "jobs"),
        ("{ viewer { tenant } }", json!({}), "viewer"),
        (
            "query($id: ID!) { document(id: $id) { id } }",
            json!({ "id": document }),
            "document",
        ),
        (AUDIT, json!({}), "auditLog"),
        (START, json!({ "n": n3 }), "startDownload"),
        (CANCEL, json!({ "id": other }), "cancelJob"),
        (CANCEL, json!({ "id": shown }), "cancelJob"),
        (TOKEN, json!({ "id": shown }), "createProgressToken"),
    ] {
        let got = post(&token, app.addr, query, variables).await;
        assert_forbidden_at(&got, &[field], &format!("token asking for {field}"));
    }
    // The tenant's webhook URLs are not the browser's to read.
    for field in ["webhook", "webhooks"] {
        let query = format!("query($id: ID!) {{ job(id: $id) {{ {field} {{ url }} }} }}");
        let got = post(&token, app.addr, &query, json!({ "id": shown })).await;
        assert_forbidden_at(&got, &["job", field], &format!("token asking for {field}"));
        let got = post(&app.http, app.addr, &query, json!({ "id": shown })).await;
        assert!(
            got.body.get("errors").is_none(),
            "a key reads {field}: {:#}",
            got.body
        );
    }
    assert_eq!(jobs_in_db(&app).await, 2, "no job was started");
    assert_eq!(app.court.lookups(), lookups, "the court was not asked");
    let job = app.wait_terminal(&other, WAIT).await;
    assert_eq!(
        job["status"], "COMPLETED",
        "the other job was not cancelled: {job:#}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_progress_token_is_unauthenticated_after_its_expiry() {
    let court = Court::start().await;
    let n = number(114);
    court.add_process(&n, docs(14));
    let app = TestApp::spawn(court).await;
    let (job, _) = started(&app.http, &app, &n).await;
    let short = token_for(&app.http, &app, &job, Some(1)).await;
    let long = token_for(&app.http, &app, &job, Some(60)).await;

    // A token's life is counted in whole seconds: 2 s is past a 1-second one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = post(&client_with(&short), app.addr, JOB, json!({ "id": job })).await;
    assert_unauthenticated(&got, "expired progress token");
    assert!(
        reads_its_job(&long, &app, &job).await,
        "the 60-second token still works"
    );
    app.wait_terminal(&job, WAIT).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_progress_token_dies_with_the_key_that_issued_it() {
    let court = Court::start().await;
    let n = number(115);
    court.add_process(&n, docs(15));
    let app = TestApp::spawn(court).await;
    let (job, _) = started(&app.http, &app, &n).await;
    let issuer = app.key(TENANT, &[Scope::Write]).await;
    let token = token_for(&client_with(&issuer), &app, &job, None).await;
    let sibling = token_for(&app.http, &app, &job, None).await;
    assert!(reads_its_job(&token, &app, &job).await);

    revoke(&app, &issuer).await;
    let got = refused_soon(
        &client_with(&token),
        &app,
        "the token of a revoked key is refused",
    )
    .await;
    assert_unauthenticated(&got, "token of a revoked key");
    let got = post(&client_with(&token), app.addr, JOB, json!({ "id": job })).await;
    assert_unauthenticated(&got, "token of a revoked key, reading its job");
    assert!(
        reads_its_job(&sibling, &app, &job).await,
        "another key's token still works"
    );
    app.wait_terminal(&job, WAIT).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_altered_progress_token_is_refused() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let court = Court::start().await;
    let (n1, n2) = (number(116), number(117));
    court.add_process(&n1, docs(16));
    court.add_process(&n2, docs(17));
    let app = TestApp::spawn(court).await;
    let (job, _) = started(&app.http, &app, &n1).await;
    let (other, _) = started(&app.http, &app, &n2).await;
    let token = token_for(&app.http, &app, &job, None).await;
    assert!(reads_its_job(&token, &app, &job).await);
    let (payload, signature) = token["apt_".len()..]
        .split_once('.')
        .expect("payload.signature");

    // One character of the payload changed.
    let mut chars: Vec<char> = payload.chars().collect();
    let middle = chars.len() / 2;
    chars[middle] = if chars[middle] == 'A' { 'B' } else { 'A' };
    let flipped: String = chars.into_iter().collect();
    // The payload rewritten to name another job, the signature kept.
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json");
    assert_eq!(claims["job"], job.as_str(), "{claims}");
    claims["job"] = json!(other);
    let forged = URL_SAFE_NO_PAD.encode(claims.to_string());

    for (case, altered, id) in [
        (
            "a character changed",
            format!("apt_{flipped}.{signature}"),
            &job,
        ),
        ("another job", format!("apt_{forged}.{signature}"), &other),
    ] {
        let got = post(&client_with(&altered), app.addr, JOB, json!({ "id": id })).await;
        assert_unauthenticated(&got, case);
    }
    app.wait_terminal(&job, WAIT).await;
    app.wait_terminal(&other, WAIT).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_tokens_live_between_one_second_and_a_day() {
    let court = Court::start().await;
    let n = number(118);
    court.add_process(&n, docs(18));
    let app = TestApp::spawn(court).await;
    let (job, _) = started(&app.http, &app, &n).await;

    for ttl in [0, -5, 86_401] {
        let got = post(
            &app.http,
            app.addr,
            TOKEN_TTL,
            json!({ "id": job, "ttl": ttl }),
        )
        .await;
        assert_eq!(
            got.code_at(&["createProgressToken"]).as_deref(),
            Some("BAD_REQUEST"),
            "ttlSeconds {ttl}: {:#}",
            got.body
        );
    }
    let day = data(
        &app.http,
        app.addr,
        TOKEN_TTL,
        json!({ "id": job, "ttl": 86_400 }),
    )
    .await;
    assert_lifetime(&day, 86_400);
    app.wait_terminal(&job, WAIT).await;
    app.stop().await;
}

/// Asserts that a `createProgressToken` answer expires `seconds` from now (give or take 10 s).
fn assert_lifetime(answer: &Value, seconds: i64) {
    let expires = answer["createProgressToken"]["expiresAt"]
        .as_str()
        .expect("expiresAt");
    let expires = chrono::DateTime::parse_from_rfc3339(expires).expect("a date");
    let left = expires
        .signed_duration_since(chrono::Utc::now())
        .num_seconds();
    assert!(
        (seconds - 10..=seconds).contains(&left),
        "expires in {left} s, not {seconds}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_progress_token_lasts_an_hour_when_no_ttl_is_given() {
    let court = Court::start().await;
    let n = number(125);
    court.add_process(&n, docs(25));
    let app = TestApp::spawn(court).await;
    let (job, _) = started(&app.http, &app, &n).await;

    let left_out = data(&app.http, app.addr, TOKEN, json!({ "id": job })).await;
    assert_lifetime(&left_out, 3_600);
    // The contract's `ttlSeconds: Int = 3600`: a client's optional variable, not given, is
    // the default too.
    let optional = "mutation($id: ID!, $ttl: Int) {
        createProgressToken(jobId: $id, ttlSeconds: $ttl) { token expiresAt } }";
    let not_given = data(&app.http, app.addr, optional, json!({ "id": job })).await;
    assert_lifetime(&not_given, 3_600);
    app.wait_terminal(&job, WAIT).await;
    app.stop().await;
}

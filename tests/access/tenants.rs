//! Tenants: another tenant's jobs are unknown, `jobs` per tenant, idempotency per tenant with
//! shared transfers, and cancelling one tenant's job.

use super::*;

const RETRY: &str = "mutation($id: ID!) { retryFailedDocuments(jobId: $id) { id status } }";

/// The message of the first error with the id in it replaced, for comparing shapes.
fn message_shape(got: &Answer, id: &str) -> String {
    got.body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .replace(id, "{id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenants_job_is_answered_exactly_as_an_unknown_one() {
    let court = Court::start().await;
    let n = number(106);
    slow_case(&court, &n, 6);
    let app = TestApp::spawn(court).await;
    let other = client_with(&app.key("globex", &[Scope::Write]).await);
    let (theirs, _) = started(&app.http, &app, &n).await;
    let unknown = uuid::Uuid::new_v4().to_string();

    for id in [&theirs, &unknown] {
        let got = post(&other, app.addr, JOB, json!({ "id": id })).await;
        // The same answer, save what the caller's budget has left (which every answer tells).
        let mut body = got.body.clone();
        let cost = body["extensions"]
            .as_object_mut()
            .and_then(|e| e.remove("cost"));
        assert_eq!(
            cost.map(|c| c["requested"].clone()),
            Some(json!(1)),
            "job {id}"
        );
        assert_eq!(
            body,
            json!({ "data": { "job": null }, "extensions": {} }),
            "job {id}"
        );
    }
    for (mutation, field) in [
        (CANCEL, "cancelJob"),
        (RETRY, "retryFailedDocuments"),
        (TOKEN, "createProgressToken"),
    ] {
        let on_theirs = post(&other, app.addr, mutation, json!({ "id": theirs })).await;
        let on_unknown = post(&other, app.addr, mutation, json!({ "id": unknown })).await;
        assert_eq!(
            on_theirs.code_at(&[field]).as_deref(),
            Some("JOB_NOT_FOUND"),
            "{:#}",
            on_theirs.body
        );
        assert_eq!(
            on_unknown.code_at(&[field]).as_deref(),
            Some("JOB_NOT_FOUND"),
            "{:#}",
            on_unknown.body
        );
        assert_eq!(on_theirs.status, on_unknown.status, "{field}");
        assert_eq!(on_theirs.body["data"], on_unknown.body["data"], "{field}");
        assert_eq!(
            message_shape(&on_theirs, &theirs),
            message_shape(&on_unknown, &unknown),
            "{field}"
        );
    }
    // The other tenant's attempts changed nothing.
    let job = app.wait_terminal(&theirs, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_lists_the_callers_tenant_only_and_admins_see_and_filter_every_tenant() {
    let court = Court::start().await;
    let (n1, n2) = (number(107), number(108));
    court.add_process(&n1, docs(7));
    court.add_process(&n2, docs(8));
    let app = TestApp::spawn(court).await;
    let globex = client_with(&app.key("globex", &[Scope::Write]).await);
    let admin = client_with(&app.key("ops", &[Scope::Admin]).await);
    let (mine, _) = started(&app.http, &app, &n1).await;
    let (theirs, _) = started(&globex, &app, &n2).await;

    let list = |client: &reqwest::Client, tenant: Option<&str>| {
        let (client, vars) = (client.clone(), json!({ "t": tenant }));
        async move { job_ids(&data(&client, app.addr, JOBS, vars).await) }
    };
    assert_eq!(list(&app.http, None).await, vec![mine.clone()]);
    assert_eq!(list(&globex, None).await, vec![theirs.clone()]);
    assert_eq!(list(&app.http, Some(TENANT)).await, vec![mine.clone()]);
    let mut every = list(&admin, None).await;
    every.sort();
    let mut both = vec![mine.clone(), theirs.clone()];
    both.sort();
    assert_eq!(every, both);
    assert_eq!(list(&admin, Some("globex")).await, vec![theirs.clone()]);
    assert_eq!(list(&admin, Some(TENANT)).await, vec![mine.clone()]);

    let got = post(&app.http, app.addr, JOBS, json!({ "t": "globex" })).await;
    assert_forbidden_at(&got, &["jobs"], "a write key naming another tenant");
    assert!(!got.body.to_string().contains(&theirs), "{:#}", got.body);

    wait_terminal_as(&globex, app.addr, &theirs, WAIT).await;
    app.wait_terminal(&mine, WAIT).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_tenants_asking_for_one_case_get_a_job_each_and_the_court_serves_it_once() {
    let court = Court::start().await;
    let n = number(109);
    let served = docs(9);
    court.add_process(&n, served.clone());
    let app = TestApp::spawn(court).await;
    let globex = client_with(&app.key("globex", &[Scope::Write]).await);

    let (a, b) = tokio::join!(started(&app.http, &app, &n), started(&globex, &app, &n));
    assert!(
        a.1 && b.1,
        "each tenant's first call creates its job: {a:?} {b:?}"
    );
    assert_ne!(a.0, b.0);
    assert_eq!(started(&app.http, &app, &n).await, (a.0.clone(), false));
    assert_eq!(started(&globex, &app, &n).await, (b.0.clone(), false));
    assert_eq!(job_tenant(&app.db, &a.0).await, TENANT);
    assert_eq!(job_tenant(&app.db, &b.0).await, "globex");

    let fetch = reqwest::Client::new();
    for (client, id) in [(&app.http, &a.0), (&globex, &b.0)] {
        let job = wait_terminal_as(client, app.addr, id, WAIT).await;
        assert_eq!(job["status"], "COMPLETED", "{job:#}");
        for doc in &served {
            let got = common::doc(&job, &doc.id);
            assert_eq!(got["status"], "AVAILABLE", "{got:#}");
            let url = got["downloadUrl"].as_str().expect("download link");
            let body = fetch.get(url).send().await.expect("download");
            assert_eq!(body.status(), StatusCode::OK);
            assert_eq!(body.bytes().await.expect("bytes"), doc.bytes, "{}", doc.id);
        }
    }
    for doc in &served {
        assert_eq!(
            app.court.gets(&n, &doc.id),
            1,
            "{} served more than once",
            doc.id
        );
    }
    let mut stored = app.keys().await;
    stored.sort();
    let expected: Vec<String> = served
        .iter()
        .map(|d| format!("processos/{n}/documentos/{}/{}", d.id, d.name))
        .collect();
    assert_eq!(stored, expected, "one object per document");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_one_tenants_job_leaves_anothers_on_the_same_case_running() {
    let court = Court::start().await;
    let n = number(110);
    let served = slow_case(&court, &n, 10);
    let app = TestApp::spawn(court).await;
    let globex = client_with(&app.key("globex", &[Scope::Write]).await);
    let (a, _) = started(&app.http, &app, &n).await;
    let (b, _) = started(&globex, &app, &n).await;
    let court = &app.court;
    eventually(WAIT, "a transfer is under way", move || async move {
        court.slow_sending_now() > 0
    })
    .await;

    let cancelled = data(&app.http, app.addr, CANCEL, json!({ "id": a })).await;
    assert_eq!(cancelled["cancelJob"]["status"], "CANCELLED");
    let job = wait_terminal_as(&globex, app.addr, &b, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    for doc in &served {
        let got = common::doc(&job, &doc.id);
        assert_eq!(got["status"], "AVAILABLE", "{got:#}");
        assert!(got["downloadUrl"].is_string(), "{got:#}");
    }
    assert_eq!(app.job(&a).await["status"], "CANCELLED");
    for doc in &served {
        assert_eq!(
            app.court.gets(&n, &doc.id),
            1,
            "{}: the cancel interrupted a transfer the other tenant's job needed",
            doc.id
        );
    }
    app.stop().await;
}

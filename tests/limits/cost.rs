//! What an operation may cost, priced before it runs: refused when too costly or too deep,
//! documents paged, and every executed answer telling its price.

use super::*;

/// `aliases` copies of `job(id) { documents { downloadUrl } }`: each may return the job and a
/// thousand documents, each with a freshly signed URL.
fn amplification(job_id: &str, aliases: usize) -> String {
    let mut query = String::from("{");
    for i in 0..aliases {
        query.push_str(&format!(
            " a{i}: job(id: \"{job_id}\") {{ documents {{ downloadUrl }} }}"
        ));
    }
    query.push_str(" }");
    query
}

/// `job(id: $id)` nested `depth` fields deep: `process`, `latestJob`, `process`, … below it
/// and a scalar at the bottom. It may return `depth - 1` objects.
fn nested(depth: usize) -> String {
    assert!(depth >= 2);
    let mut query = String::from("query($id: ID!) { job(id: $id) {");
    let mut on_job = true;
    for _ in 2..depth {
        query.push_str(if on_job { " process {" } else { " latestJob {" });
        on_job = !on_job;
    }
    query.push_str(if on_job { " id" } else { " number" });
    query.push_str(&" }".repeat(depth));
    query
}

/// The remaining points of the key after a one-point request.
async fn remaining_now(app: &TestApp) -> u64 {
    let got = gql(app, ONE_POINT, json!({})).await;
    assert_charged(&got, 1, "viewer")["remaining"]
        .as_u64()
        .expect("remaining")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_amplification_query_is_refused_before_it_runs_with_a_small_answer() {
    let app = TestApp::spawn(Court::start().await).await;
    let job = finished_job(&app, &number(201), 3).await;
    let query = amplification(&job, 5_000);
    println!("amplification query: {} bytes", query.len());

    fresh_window(Duration::from_secs(15)).await;
    let before = remaining_now(&app).await;
    let started = Instant::now();
    let got = gql(&app, &query, json!({})).await;
    let took = started.elapsed();
    println!(
        "refused in {took:?}; answer of {} bytes: {}",
        got.text.len(),
        got.text
    );

    assert_eq!(got.status, StatusCode::OK, "application/json: {}", got.text);
    assert_eq!(got.code(), "QUERY_TOO_COMPLEX");
    let extensions = &got.body["errors"][0]["extensions"];
    assert_eq!(extensions["cost"]["requested"], 5_005_000, "{}", got.text);
    assert_eq!(extensions["cost"]["limit"], MAX_COST, "{}", got.text);
    assert!(got.body["data"].is_null(), "{}", got.text);
    assert!(got.text.len() < 1024, "{} bytes", got.text.len());
    // Nothing ran, so nothing was charged: the next request finds the budget as it was.
    let after = remaining_now(&app).await;
    assert_eq!(after, before - 1, "the refused query was charged");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_aliased_start_downloads_are_refused_and_nothing_is_asked() {
    let court = Court::start().await;
    let n = number(202);
    court.add_process(&n, docs(3, 2));
    let app = TestApp::spawn(court).await;
    let mut mutation = String::from("mutation {");
    for i in 0..200 {
        mutation.push_str(&format!(
            " s{i}: startDownload(input: {{number: \"{n}\"}}) {{ created job {{ id }} }}"
        ));
    }
    mutation.push_str(" }");

    let got = gql(&app, &mutation, json!({})).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    assert_eq!(got.code(), "QUERY_TOO_COMPLEX", "{}", got.text);
    // Each: the payload and its job, the mutation's 10, the court's 100.
    let cost = &got.body["errors"][0]["extensions"]["cost"];
    assert_eq!(cost["requested"], 200 * (2 + 10 + 100), "{}", got.text);
    assert_eq!(cost["limit"], MAX_COST);
    assert!(got.body["data"].is_null(), "{}", got.text);
    assert_eq!(jobs_in_db(&app).await, 0, "a job was created");
    assert_eq!(app.court.lookups(), 0, "the court was asked");
    let audited = count(
        &app.db,
        "SELECT count(*) FROM audit_log WHERE action = 'startDownload'",
    )
    .await;
    assert_eq!(audited, 0, "nothing ran, so nothing was recorded");

    // One of them alone is within the limit, and runs.
    let one = gql(&app, START, json!({ "n": n })).await;
    assert_charged(&one, 2 + 10 + 100, "one startDownload");
    assert_eq!(one.body["data"]["startDownload"]["created"], true);
    assert_eq!(jobs_in_db(&app).await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_levels_are_refused_and_fifteen_run() {
    let app = TestApp::spawn(Court::start().await).await;
    let job = finished_job(&app, &number(203), 1).await;

    let too_deep = gql(&app, &nested(16), json!({ "id": job })).await;
    assert_eq!(too_deep.status, StatusCode::OK, "{}", too_deep.text);
    assert_eq!(too_deep.code(), "QUERY_TOO_COMPLEX", "{}", too_deep.text);
    let depth = &too_deep.body["errors"][0]["extensions"]["depth"];
    assert_eq!(depth["requested"], 16, "{}", too_deep.text);
    assert_eq!(depth["limit"], 15, "{}", too_deep.text);
    assert!(too_deep.body["data"].is_null(), "{}", too_deep.text);

    let deepest = gql(&app, &nested(15), json!({ "id": job })).await;
    assert_charged(&deepest, 14, "fifteen levels");
    // It ran all the way down: job → process → latestJob → … → process { number }.
    let mut value = &deepest.body["data"]["job"];
    let mut on_job = true;
    for _ in 2..15 {
        value = &value[if on_job { "process" } else { "latestJob" }];
        on_job = !on_job;
    }
    assert_eq!(value["number"], number(203), "{}", deepest.text);
    app.stop().await;
}

/// The `sourceId`s of a page of documents.
fn source_ids(page: &Value) -> Vec<String> {
    page.as_array()
        .unwrap_or_else(|| panic!("not a list: {page}"))
        .iter()
        .map(|d| d["sourceId"].as_str().expect("sourceId").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn documents_come_in_pages_of_first_after_a_document() {
    let app = TestApp::spawn(Court::start().await).await;
    let n = number(204);
    let job = finished_job(&app, &n, 5).await;
    let on_job = "query($id: ID!, $first: Int, $after: String) {
        job(id: $id) { documents(first: $first, after: $after) { id sourceId } } }";
    let on_process = "query($n: String!, $first: Int, $after: String) {
        process(number: $n) { documents(first: $first, after: $after) { id sourceId } } }";
    let cases = [
        ("job", on_job, json!({ "id": job }), 0),
        ("process", on_process, json!({ "n": n }), 100),
    ];
    for (root, query, variables, court) in cases {
        let ask = |first: i64, after: Option<String>| {
            let mut variables = variables.clone();
            variables["first"] = json!(first);
            variables["after"] = json!(after);
            let app = &app;
            async move { gql(app, query, variables).await }
        };
        let mut seen = Vec::new();
        let mut after = None;
        let mut pages = Vec::new();
        loop {
            let got = ask(2, after.clone()).await;
            // The root object, its page of two, and the court's 100 for `process`.
            assert_charged(&got, court + 1 + 2, root);
            let page = &got.body["data"][root]["documents"];
            let ids = source_ids(page);
            if ids.is_empty() {
                break;
            }
            assert!(ids.len() <= 2, "{root}: {page}");
            pages.push(ids.len());
            seen.extend(ids);
            after = page
                .as_array()
                .and_then(|docs| docs.last())
                .and_then(|d| d["id"].as_str())
                .map(str::to_string);
            assert!(pages.len() <= 5, "{root}: paging does not end");
        }
        assert_eq!(pages, vec![2, 2, 1], "{root}");
        assert_eq!(seen, ["d0", "d1", "d2", "d3", "d4"], "{root}");

        for first in [0, 1001] {
            let got = ask(first, None).await;
            assert_eq!(
                got.status,
                StatusCode::OK,
                "{root} first {first}: {}",
                got.text
            );
            let error = got.body["errors"]
                .as_array()
                .and_then(|errors| errors.first())
                .unwrap_or_else(|| panic!("{root} first {first}: no error in {}", got.text));
            assert_eq!(error["extensions"]["code"], "BAD_REQUEST", "{}", got.text);
            assert_eq!(error["path"], json!([root, "documents"]), "{}", got.text);
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_executed_answer_tells_its_cost_and_the_budget_left() {
    let court = Court::start().await;
    let app = TestApp::spawn(court).await;
    let n = number(205);
    let job = finished_job(&app, &n, 3).await;
    let fresh = number(206);
    app.court.add_process(&fresh, docs(2, 6));

    // (what, query, variables, price by the contract's formula)
    let cases: Vec<(&str, &str, Value, u64)> = vec![
        ("viewer", ONE_POINT, json!({}), 1),
        ("a page of nine jobs", TEN_POINTS, json!({}), 1 + 9),
        (
            "jobs at the default page of 20, edges and nodes",
            "{ jobs { edges { node { id process { number } } } } }",
            json!({}),
            1 + 20 + 20 + 20,
        ),
        (
            "a job and its documents at the default 1,000",
            "query($id: ID!) { job(id: $id) { status counts { available } documents { id } } }",
            json!({ "id": job }),
            1 + 1 + 1000,
        ),
        (
            "a page set by a variable, through a fragment",
            "query($id: ID!, $f: Int) { job(id: $id) { ...J } }
             fragment J on DownloadJob { documents(first: $f) { id } }",
            json!({ "id": job, "f": 7 }),
            1 + 7,
        ),
        (
            "a process: the court's 100, itself, its page and its latest job",
            "query($n: String!) { process(number: $n) {
                number documents(first: 3) { id } latestJob { id } } }",
            json!({ "n": n }),
            100 + 1 + 3 + 1,
        ),
        (
            "the audit log, five entries",
            "{ auditLog(first: 5) { nodes { action } } }",
            json!({}),
            1 + 5,
        ),
        (
            "introspection is free (at least one point a request)",
            "{ __schema { types { name } } }",
            json!({}),
            1,
        ),
        (
            "startDownload: 10 for the mutation, 100 for the court, its objects",
            "mutation($n: String!) { startDownload(input: {number: $n}) {
                created job { id documents(first: 5) { id } } } }",
            json!({ "n": fresh }),
            10 + 100 + 1 + 1 + 5,
        ),
    ];
    fresh_window(Duration::from_secs(15)).await;
    let mut last: Option<(u64, DateTime<Utc>)> = None;
    for (what, query, variables, price) in cases {
        let got = gql(&app, query, variables).await;
        let cost = assert_charged(&got, price, what);
        assert_eq!(cost["limit"], DEFAULT_BUDGET, "{what}: {cost}");
        let remaining = cost["remaining"].as_u64().expect("remaining");
        let reset = reset_at(&cost);
        if let Some((before, previous_reset)) = last {
            if previous_reset == reset {
                assert_eq!(remaining, before - price, "{what}: {cost}");
            }
        }
        last = Some((remaining, reset));
    }

    // An executed operation that fails still tells what it cost: cancelling a finished job.
    let cancel = gql(
        &app,
        "mutation($id: ID!) { cancelJob(id: $id) { id } }",
        json!({ "id": job }),
    )
    .await;
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.text);
    assert_eq!(cancel.code(), "INVALID_STATE", "{}", cancel.text);
    assert_cost(&cancel, 1 + 10, "cancelJob");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lower_max_query_cost_is_obeyed() {
    let court = Court::start().await;
    let n = number(207);
    court.add_process(&n, docs(2, 7));
    let app = spawn_configured(court, |c| c.max_query_cost = 50).await;

    let at_the_limit = gql(&app, "{ jobs(first: 49) { nodes { id } } }", json!({})).await;
    assert_charged(&at_the_limit, 50, "jobs(first: 49)");

    let over = gql(&app, "{ jobs(first: 50) { nodes { id } } }", json!({})).await;
    assert_eq!(over.code(), "QUERY_TOO_COMPLEX", "{}", over.text);
    let cost = &over.body["errors"][0]["extensions"]["cost"];
    assert_eq!(cost["requested"], 51, "{}", over.text);
    assert_eq!(cost["limit"], 50, "{}", over.text);

    let start = gql(&app, START, json!({ "n": n })).await;
    assert_eq!(start.code(), "QUERY_TOO_COMPLEX", "{}", start.text);
    assert_eq!(
        start.body["errors"][0]["extensions"]["cost"]["requested"],
        2 + 10 + 100
    );
    assert_eq!(jobs_in_db(&app).await, 0);
    assert_eq!(app.court.lookups(), 0);
    app.stop().await;
}

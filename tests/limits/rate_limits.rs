//! Rate limits: a key's budget of points per minute, shared by every `serve` process of a
//! deployment, refused with 429 over HTTP and an `error` message over WebSocket.

use super::*;
use autos::app::Role;
use common::ws::{Event, Protocol, WsClient, PATIENCE};

/// What spending a key's budget on several processes found.
struct Spent {
    /// Points taken before the first 429.
    before_first_refusal: u64,
    /// Points taken in all, until every process refused.
    in_all: u64,
    /// Requests answered, per process.
    answered: Vec<u32>,
    /// The first 429.
    refusal: Reply,
    /// Every `resetAt` seen (one window: all equal).
    resets: Vec<DateTime<Utc>>,
}

/// Spends `client`'s budget with ten-point queries, taking turns on `addrs`, until every
/// process has refused one.
async fn spend_until_refused(client: &reqwest::Client, addrs: &[SocketAddr]) -> Spent {
    let mut refused = vec![false; addrs.len()];
    let mut answered = vec![0u32; addrs.len()];
    let mut in_all = 0;
    let mut first: Option<(u64, Reply)> = None;
    let mut resets = Vec::new();
    for turn in 0..1_000 {
        if refused.iter().all(|r| *r) {
            break;
        }
        let at = turn % addrs.len();
        if refused[at] {
            continue;
        }
        let got = post_to(client, addrs[at], TEN_POINTS, json!({})).await;
        match got.status {
            StatusCode::OK => {
                let cost = assert_charged(&got, 10, "ten points");
                resets.push(reset_at(&cost));
                answered[at] += 1;
                in_all += 10;
            }
            StatusCode::TOO_MANY_REQUESTS => {
                resets.push(reset_at(&got.body["errors"][0]["extensions"]["cost"]));
                refused[at] = true;
                if first.is_none() {
                    first = Some((in_all, got));
                }
            }
            other => panic!("unexpected {other}: {}", got.text),
        }
    }
    let (before_first_refusal, refusal) = first.expect("never refused");
    Spent {
        before_first_refusal,
        in_all,
        answered,
        refusal,
        resets,
    }
}

/// Asserts a 429 of a `limit`-point budget for a `requested`-point operation: headers, code,
/// `retryAfter` and the cost. Returns `extensions`.
fn assert_rate_limited(got: &Reply, limit: u64, requested: u64) -> Value {
    assert_eq!(got.status, StatusCode::TOO_MANY_REQUESTS, "{}", got.text);
    assert_eq!(got.code(), "RATE_LIMITED", "{}", got.text);
    assert!(got.body["data"].is_null(), "{}", got.text);
    let extensions = got.body["errors"][0]["extensions"].clone();
    let retry_after = extensions["retryAfter"]
        .as_u64()
        .unwrap_or_else(|| panic!("retryAfter in {}", got.text));
    assert!((1..=60).contains(&retry_after), "retryAfter {retry_after}");
    let header: u64 = got
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After in seconds: {:?}", got.headers));
    assert!(
        header.abs_diff(retry_after) <= 1,
        "{header} vs {retry_after}"
    );
    let cost = &extensions["cost"];
    assert_eq!(cost["requested"].as_u64(), Some(requested), "{}", got.text);
    assert_eq!(cost["limit"].as_u64(), Some(limit), "{}", got.text);
    let remaining = cost["remaining"].as_u64().expect("remaining");
    assert!(
        remaining < requested,
        "refused with {remaining} left: {}",
        got.text
    );
    let reset = reset_at(cost);
    let until = (reset - Utc::now()).num_seconds();
    assert!(
        until.abs_diff(retry_after as i64) <= 2,
        "resetAt {reset}, retryAfter {retry_after}"
    );
    assert_eq!(
        got.header("ratelimit-policy"),
        Some(format!("\"default\";q={limit};w=60").as_str())
    );
    let (r, t) = rate_limit_header(got, "429");
    assert_eq!(r, remaining);
    assert!(
        t.abs_diff(retry_after) <= 1,
        "RateLimit t={t}, retryAfter {retry_after}"
    );
    extensions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_budget_holds_within_ten_percent_across_two_serve_processes() {
    let court = Court::start().await;
    let n = number(301);
    court.add_process(&n, docs(2, 1));
    let app = TestApp::spawn(court).await;
    let other = app
        .another(Options {
            role: Role::SERVE,
            ..Options::default()
        })
        .await;
    let addrs = [app.addr, other.addr.expect("serving")];

    // A budget must be spent within one window of a minute; should the minute turn
    // mid-way anyway (a very slow machine), a new key tries again.
    let mut attempt = 0;
    let (key, spent) = loop {
        attempt += 1;
        let key = key_with_budget(&app.db.url, TENANT, 300).await;
        fresh_window(Duration::from_secs(30)).await;
        let started = Instant::now();
        let spent = spend_until_refused(&client_with(&key), &addrs).await;
        println!(
            "attempt {attempt}: {} points before the first 429, {} in all, answered {:?}, in {:?}",
            spent.before_first_refusal,
            spent.in_all,
            spent.answered,
            started.elapsed()
        );
        if spent.resets.windows(2).all(|w| w[0] == w[1]) || attempt == 3 {
            break (key, spent);
        }
    };
    assert!(
        spent.resets.windows(2).all(|w| w[0] == w[1]),
        "every attempt straddled two windows"
    );
    assert!(
        (270..=330).contains(&spent.before_first_refusal),
        "{} points taken before the first 429 of a 300-point budget",
        spent.before_first_refusal
    );
    assert!(
        spent.in_all <= 330,
        "{} points taken in all of a 300-point budget",
        spent.in_all
    );
    assert!(
        spent.answered.iter().all(|n| *n > 0),
        "both processes answered: {:?}",
        spent.answered
    );
    assert_rate_limited(&spent.refusal, 300, 10);

    // Refused means not run: a startDownload by the spent key creates nothing.
    let spent_client = client_with(&key);
    for addr in addrs {
        let start = post_to(&spent_client, addr, START, json!({ "n": n })).await;
        assert_rate_limited(&start, 300, 2 + 10 + 100);
    }
    assert_eq!(jobs_in_db(&app).await, 0);
    assert_eq!(app.court.lookups(), 0);

    // Another key of the same tenant has its own budget.
    for addr in addrs {
        let got = post_to(&app.http, addr, TEN_POINTS, json!({})).await;
        let cost = assert_charged(&got, 10, "another key");
        assert_eq!(cost["limit"], DEFAULT_BUDGET);
        assert!(
            cost["remaining"].as_u64() >= Some(DEFAULT_BUDGET - 20),
            "{cost}"
        );
    }
    let sibling = post_to(&app.http, addrs[1], START, json!({ "n": n })).await;
    assert_charged(&sibling, 2 + 10 + 100, "another key's startDownload");
    other.stop().await;
    app.stop().await;
}

/// The `error` payload's first error, in either protocol's shape.
fn ws_error(protocol: Protocol, payload: &Value) -> Value {
    match protocol {
        Protocol::TransportWs => {
            let errors = payload
                .as_array()
                .unwrap_or_else(|| panic!("graphql-transport-ws: a list of errors: {payload}"));
            errors.first().cloned().expect("an error")
        }
        Protocol::Legacy => {
            assert!(
                payload.is_object(),
                "graphql-ws: one error object: {payload}"
            );
            payload.clone()
        }
    }
}

/// Subscribes `id` and expects it refused for the rate limit; returns the error's extensions.
async fn refused_subscribe(ws: &mut WsClient, id: &str, job: &str) -> Value {
    ws.subscribe(id, PROGRESS, json!({ "id": job })).await;
    match ws.event().await {
        Event::Error { id: got, payload } => {
            assert_eq!(got, id);
            let error = ws_error(ws.protocol, &payload);
            let extensions = error["extensions"].clone();
            assert_eq!(extensions["code"], "RATE_LIMITED", "{payload}");
            let retry_after = extensions["retryAfter"].as_u64().expect("retryAfter");
            assert!((1..=60).contains(&retry_after), "{payload}");
            assert_eq!(extensions["cost"]["limit"], 300, "{payload}");
            assert_eq!(extensions["cost"]["requested"], 1, "{payload}");
            extensions
        }
        other => panic!(
            "{:?}: expected a RATE_LIMITED error, got {other:?}",
            ws.protocol
        ),
    }
}

/// The budget of a minute is whole again when the window turns: this test waits for that,
/// up to about a minute (the budget's window is a fixed, whole minute by design; the wait is
/// computed from `resetAt`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spent_key_gets_errors_on_subscribe_and_everything_back_after_the_reset() {
    let court = Court::start().await;
    let n = number(302);
    let app = TestApp::spawn(court).await;
    let job = finished_job(&app, &n, 2).await;
    let key = key_with_budget(&app.db.url, TENANT, 300).await;
    let client = client_with(&key);
    let mut transport = WsClient::connect(app.addr, Protocol::TransportWs, &key).await;
    let mut legacy = WsClient::connect(app.addr, Protocol::Legacy, &key).await;

    // Spending it all and the refusals below take a second or two: all in one window.
    fresh_window(Duration::from_secs(10)).await;
    // Spend it all: ten points at a time, then one.
    for query in [TEN_POINTS, ONE_POINT] {
        loop {
            let got = post_to(&client, app.addr, query, json!({})).await;
            if got.status == StatusCode::TOO_MANY_REQUESTS {
                break;
            }
            assert_eq!(got.status, StatusCode::OK, "{}", got.text);
        }
    }
    let spent = post_to(&client, app.addr, ONE_POINT, json!({})).await;
    let extensions = assert_rate_limited(&spent, 300, 1);
    let reset = reset_at(&extensions["cost"]);

    for ws in [&mut transport, &mut legacy] {
        refused_subscribe(ws, "1", &job).await;
        // The connection stays open and keeps answering.
        refused_subscribe(ws, "2", &job).await;
    }
    // The refused operations hold no place: nothing else arrives.
    transport.assert_silent(Duration::from_millis(300)).await;
    legacy.assert_silent(Duration::from_millis(300)).await;

    let wait = (reset - Utc::now())
        .to_std()
        .unwrap_or_default()
        .min(Duration::from_secs(61))
        + Duration::from_millis(500);
    println!("waiting {wait:?} for the window to turn at {reset}");
    tokio::time::sleep(wait).await;

    let again = post_to(&client, app.addr, TEN_POINTS, json!({})).await;
    let cost = assert_charged(&again, 10, "after the reset");
    assert_eq!(cost["remaining"], 290, "a whole budget again: {cost}");
    assert!(reset_at(&cost) > reset, "{cost}");
    // The same connections serve the same key's subscriptions again.
    for ws in [&mut transport, &mut legacy] {
        ws.subscribe("3", PROGRESS, json!({ "id": job })).await;
        let outcome = ws.outcome("3", PATIENCE).await;
        assert_eq!(outcome.end, common::ws::End::Complete, "{:?}", ws.protocol);
        assert_eq!(outcome.payloads.len(), 1, "{:?}", outcome.payloads);
        assert_eq!(
            outcome.payloads[0]["data"]["jobProgress"]["status"], "COMPLETED",
            "{:?}",
            outcome.payloads
        );
    }
    transport.close().await;
    legacy.close().await;
    app.stop().await;
}

//! Limits and safety (contract §8): what an operation may cost and how fast a key may spend,
//! connections (bodies, slow clients, long requests, WebSockets), GraphQL over HTTP (GET,
//! media types), and the built-in webhook test receiver.
//!
//! Everything is real: a PostgreSQL database per test, the S3-compatible test server, the test
//! court, autos in-process (two `serve` processes of one database where the budget is shared),
//! the `autos` binary where its defaults are concerned, and real HTTP, TCP and WebSocket
//! clients.

mod common;
#[path = "limits/connections.rs"]
mod connections;
#[path = "limits/cost.rs"]
mod cost;
#[path = "limits/graphql_over_http.rs"]
mod graphql_over_http;
#[path = "limits/rate_limits.rs"]
mod rate_limits;
#[path = "limits/test_receiver.rs"]
mod test_receiver;
#[path = "limits/websockets.rs"]
mod websockets;

use autos::auth::Scope;
use chrono::{DateTime, Utc};
use common::access::*;
use common::*;
use reqwest::header;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Jobs of a few small documents end well within this.
const WAIT: Duration = Duration::from_secs(20);
/// `AUTOS_MAX_QUERY_COST` by default.
const MAX_COST: u64 = 10_000;
/// `AUTOS_RATE_LIMIT` by default.
const DEFAULT_BUDGET: u64 = 100_000;

/// Ten points: the connection, and a page of nine jobs.
const TEN_POINTS: &str = "{ jobs(first: 9) { nodes { id } } }";
/// One point: the viewer.
const ONE_POINT: &str = "{ viewer { tenant } }";
const START: &str = "mutation($n: String!) {
    startDownload(input: {number: $n}) { created job { id status } } }";
const PROGRESS: &str = "subscription($id: ID!) { jobProgress(jobId: $id) { status progress } }";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `count` small documents `d0`, `d1`, ….
fn docs(count: u8, seed: u8) -> Vec<Doc> {
    (0..count)
        .map(|i| {
            Doc::new(
                &format!("d{i}"),
                &format!("Peça {i}.pdf"),
                bytes(500 + usize::from(i), seed.wrapping_add(i)),
            )
        })
        .collect()
}

/// A case of `count` documents at the court, downloaded by `app`'s key to the end; its job id.
async fn finished_job(app: &TestApp, number: &str, count: u8) -> String {
    app.court.add_process(number, docs(count, count));
    let started = app.start(number, false).await;
    let id = started["job"]["id"].as_str().expect("job id").to_string();
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    id
}

/// A `write` key of `tenant` with its own budget of `points` per minute, made as
/// `autos key create --rate-limit` makes one.
async fn key_with_budget(db_url: &str, tenant: &str, points: u32) -> String {
    let pool = sqlx::PgPool::connect(db_url).await.expect("connect");
    let spec = autos::auth::admin::KeySpec {
        tenant: tenant.to_string(),
        scopes: vec![Scope::Write],
        name: Some(format!("{points} points a minute")),
        expires_in_days: None,
        rate_limit: Some(points),
    };
    let (key, _) = autos::auth::admin::create_key(&pool, &spec, &autos::auth::audit::Actor::cli())
        .await
        .expect("create a key");
    pool.close().await;
    key.reveal()
}

/// An HTTP answer as it came: status, headers, the body's text and its JSON (`Null` when it
/// is not JSON).
struct Reply {
    status: StatusCode,
    headers: header::HeaderMap,
    text: String,
    body: Value,
}

impl Reply {
    async fn of(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The first error's code.
    fn code(&self) -> String {
        error_code(&self.body)
    }

    /// The media type of `Content-Type`, without parameters.
    fn media_type(&self) -> String {
        media_type(self.header("content-type"))
    }

    /// `extensions.cost` of the answer.
    fn cost(&self) -> &Value {
        &self.body["extensions"]["cost"]
    }
}

fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// POST /graphql with `client` to the autos at `addr`.
async fn post_to(
    client: &reqwest::Client,
    addr: SocketAddr,
    query: &str,
    variables: Value,
) -> Reply {
    let response = client
        .post(format!("http://{addr}/graphql"))
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("graphql request");
    Reply::of(response).await
}

/// POST /graphql as `app`'s key.
async fn gql(app: &TestApp, query: &str, variables: Value) -> Reply {
    post_to(&app.http, app.addr, query, variables).await
}

/// Asserts an executed answer: 200, no errors, and `extensions.cost` of `requested` points,
/// agreeing with the `RateLimit` headers. Returns the cost extension.
fn assert_charged(reply: &Reply, requested: u64, case: &str) -> Value {
    assert_eq!(reply.status, StatusCode::OK, "{case}: {}", reply.text);
    assert!(reply.body.get("errors").is_none(), "{case}: {}", reply.text);
    assert_cost(reply, requested, case)
}

/// Asserts `extensions.cost { requested remaining limit resetAt }` with `requested` points,
/// and the `RateLimit-Policy` and `RateLimit` headers saying the same. Returns the extension.
fn assert_cost(reply: &Reply, requested: u64, case: &str) -> Value {
    let cost = reply.cost().clone();
    assert_eq!(
        cost["requested"].as_u64(),
        Some(requested),
        "{case}: requested points in {}",
        reply.text
    );
    let limit = cost["limit"]
        .as_u64()
        .unwrap_or_else(|| panic!("{case}: limit in {cost}"));
    let remaining = cost["remaining"]
        .as_u64()
        .unwrap_or_else(|| panic!("{case}: remaining in {cost}"));
    assert!(remaining <= limit, "{case}: {cost}");
    let reset_at = reset_at(&cost);
    let left = reset_at - Utc::now();
    assert!(
        left <= chrono::Duration::seconds(61) && left >= chrono::Duration::seconds(-2),
        "{case}: resetAt {reset_at} is not within the minute"
    );
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some(format!("\"default\";q={limit};w=60").as_str()),
        "{case}: RateLimit-Policy"
    );
    let (r, t) = rate_limit_header(reply, case);
    assert_eq!(r, remaining, "{case}: RateLimit r= against {cost}");
    assert!((1..=60).contains(&t), "{case}: RateLimit t={t}");
    cost
}

/// `r` and `t` of a `RateLimit: "default";r=…;t=…` header.
fn rate_limit_header(reply: &Reply, case: &str) -> (u64, u64) {
    let value = reply
        .header("ratelimit")
        .unwrap_or_else(|| panic!("{case}: no RateLimit header"));
    let mut parts = value.split(';');
    assert_eq!(
        parts.next(),
        Some("\"default\""),
        "{case}: RateLimit {value}"
    );
    let mut r = None;
    let mut t = None;
    for part in parts {
        match part.trim().split_once('=') {
            Some(("r", v)) => r = v.parse().ok(),
            Some(("t", v)) => t = v.parse().ok(),
            _ => {}
        }
    }
    (
        r.unwrap_or_else(|| panic!("{case}: no r in RateLimit {value}")),
        t.unwrap_or_else(|| panic!("{case}: no t in RateLimit {value}")),
    )
}

/// `resetAt` of a cost extension.
fn reset_at(cost: &Value) -> DateTime<Utc> {
    cost["resetAt"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("no resetAt in {cost}"))
        .with_timezone(&Utc)
}

/// Budgets are whole-minute windows: when less than `room` is left of this one, waits for the
/// next, so that a test's spending falls in one window.
async fn fresh_window(room: Duration) {
    let now = Utc::now();
    let into =
        (now.timestamp().rem_euclid(60) as u64) * 1000 + u64::from(now.timestamp_subsec_millis());
    let left = Duration::from_millis(60_000 - into);
    if left < room {
        tokio::time::sleep(left + Duration::from_millis(200)).await;
    }
}

/// How many jobs exist, of every tenant.
async fn jobs_in_db(app: &TestApp) -> i64 {
    count(&app.db, "SELECT count(*) FROM download_jobs").await
}

/// An HTTP/1.1 answer read off a raw TCP connection.
#[derive(Debug)]
struct RawReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Reads one HTTP/1.1 answer (head, and a body of Content-Length bytes) from `tcp`, panicking
/// if it has not arrived by `deadline`.
async fn read_reply(tcp: &mut TcpStream, deadline: Instant) -> RawReply {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, tcp.read(&mut chunk))
            .await
            .expect("no answer in time")
            .expect("read");
        assert!(n > 0, "the connection closed before an answer: {buffer:?}");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, tcp.read(&mut chunk))
            .await
            .expect("the body did not arrive in time")
            .expect("read");
        assert!(n > 0, "the connection closed in the body");
        body.extend_from_slice(&chunk[..n]);
    }
    RawReply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    }
}

/// Sends `request` as it is over a new connection and reads the answer (at most 10 s).
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawReply {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("send");
    read_reply(&mut tcp, Instant::now() + Duration::from_secs(10)).await
}

/// Waits until the server closes `tcp` (end of stream or reset), reading and dropping anything
/// it sends; how long that took, or `None` if it stayed open until `deadline`.
async fn closed_within(
    tcp: &mut TcpStream,
    started: Instant,
    deadline: Instant,
) -> Option<Duration> {
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

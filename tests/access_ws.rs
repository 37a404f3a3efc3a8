//! Access control where it meets live connections and other processes (contract §7): keys and
//! progress tokens on the WebSocket (both subprotocols), browser origins, a revocation made
//! elsewhere closing another process's connections, identical subscriptions never shared across
//! rights, per-tenant webhook secrets and their rotation, and the first start's admin key.
//!
//! Everything is real: a PostgreSQL database per test, an S3-compatible server, the test court,
//! autos in-process and as child processes of the `autos` binary, and a WebSocket client.

mod common;

use autos::app::Application;
use autos::auth::Scope;
use autos::webhook::sign::{verify, Secret, DEFAULT_TOLERANCE_SECS};
use common::receiver::{Received, Receiver};
use common::ws::{Credentials, End, Event, Outcome, Protocol, WsClient};
use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(30);

/// The contract's bound on how long a revoked key's connection may stay open.
const REVOCATION_BOUND: Duration = Duration::from_secs(60);

/// The close code of a refused credential on `graphql-transport-ws`.
const FORBIDDEN_CLOSE: u16 = 4403;

const PROGRESS: &str = "subscription($id: ID!) { jobProgress(jobId: $id) {
    jobId status progress total at counts { pending processing available failed } } }";

const VIEWER: &str = "{ viewer { tenant keyId scopes webhookSecret } }";

const START: &str = "mutation($n: String!, $w: String) {
    startDownload(input: {number: $n, webhookUrl: $w}) { created job { id } } }";

const TOKEN: &str = "mutation($id: ID!, $ttl: Int) {
    createProgressToken(jobId: $id, ttlSeconds: $ttl) { token expiresAt } }";

const SEND_TEST: &str = "mutation($u: String!) {
    sendTestWebhook(url: $u) { delivered statusCode error } }";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Eight small documents served slowly, each at its own pace: a job of about 1–2 s whose
/// progress moves in steps.
fn slow_job(court: &Court, n: &str) {
    let docs: Vec<Doc> = (0..8u8)
        .map(|i| Doc::new(&format!("d{i}"), &format!("Peça {i}.pdf"), bytes(1_000, i)))
        .collect();
    for (i, doc) in docs.iter().enumerate() {
        let every = Duration::from_millis(50).mul_f64(0.6 + 0.3 * i as f64);
        court.fail_always(n, &doc.id, Fault::Slow { chunk: 200, every });
    }
    court.add_process(n, docs);
}

/// One document, served at once.
fn quick_job(court: &Court, n: &str) {
    court.add_process(n, vec![Doc::new("d0", "Única.pdf", bytes(500, 9))]);
}

/// POST /graphql at `addr` as `credential`; the `data`, failing the test on errors.
async fn data_as(credential: &str, addr: SocketAddr, query: &str, variables: Value) -> Value {
    let body = post_gql(&client_with(credential), addr, query, variables).await;
    assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
    body["data"].clone()
}

/// startDownload as `credential` (a new job is expected); its id.
async fn start_job(credential: &str, addr: SocketAddr, n: &str, webhook: Option<&str>) -> String {
    let data = data_as(credential, addr, START, json!({ "n": n, "w": webhook })).await;
    assert_eq!(data["startDownload"]["created"], true, "{data:#}");
    data["startDownload"]["job"]["id"]
        .as_str()
        .expect("job id")
        .to_string()
}

/// A progress token for `job`, made with `key`.
async fn progress_token(key: &str, addr: SocketAddr, job: &str, ttl: i64) -> String {
    let data = data_as(key, addr, TOKEN, json!({ "id": job, "ttl": ttl })).await;
    let token = data["createProgressToken"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    assert!(token.starts_with("apt_"), "{data:#}");
    token
}

/// The id of a key (`autos_{id}_{secret}`).
fn key_id(key: &str) -> String {
    autos::auth::keys::ApiKey::parse(key)
        .unwrap_or_else(|_| panic!("not a key: {key}"))
        .id()
        .to_string()
}

/// Revokes a key as `autos key revoke` does, with the same code, on the database.
async fn revoke_in_database(db_url: &str, key: &str) {
    let pool = sqlx::PgPool::connect(db_url).await.expect("connect");
    let revoked =
        autos::auth::admin::revoke_key(&pool, &key_id(key), &autos::auth::audit::Actor::cli())
            .await
            .expect("revoke");
    assert!(revoked.is_some(), "no such key to revoke");
    pool.close().await;
}

/// Whether `POST /graphql` at `addr` takes `key` (200) or refuses it (401).
async fn http_takes(http: &reqwest::Client, addr: SocketAddr, key: &str) -> bool {
    let answer = http
        .post(format!("http://{addr}/graphql"))
        .bearer_auth(key)
        .json(&json!({ "query": "{ viewer { tenant } }" }))
        .send()
        .await
        .expect("request");
    match answer.status().as_u16() {
        200 => true,
        401 => false,
        other => panic!("neither taken nor refused: {other}"),
    }
}

/// Polls until `addr` refuses `key` over HTTP; how long that took (panics after `bound`).
async fn refused_within(addr: SocketAddr, key: &str, bound: Duration) -> Duration {
    let http = reqwest::Client::new();
    let start = Instant::now();
    while http_takes(&http, addr, key).await {
        assert!(
            start.elapsed() < bound,
            "the key still works after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

/// The `jobProgress` messages of a stream that completed, checked: all about `job`, no
/// errors, progress never decreasing, only the last one terminal (with progress 100).
fn followed(outcome: &Outcome, job: &str) -> Vec<Value> {
    assert_eq!(
        outcome.end,
        End::Complete,
        "the stream must complete: {outcome:#?}"
    );
    assert!(!outcome.payloads.is_empty(), "no message: {outcome:#?}");
    let messages: Vec<Value> = outcome
        .payloads
        .iter()
        .map(|payload| {
            assert!(payload.get("errors").is_none(), "errors in {payload:#}");
            payload["data"]["jobProgress"].clone()
        })
        .collect();
    let last = messages.len() - 1;
    let mut progress = 0;
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m["jobId"], job, "message {i} of {messages:#?}");
        let now = m["progress"].as_i64().expect("progress");
        assert!(now >= progress, "progress went down: {messages:#?}");
        progress = now;
        let terminal = !matches!(m["status"].as_str(), Some("QUEUED" | "RUNNING"));
        assert_eq!(
            terminal,
            i == last,
            "only the last is terminal: {messages:#?}"
        );
    }
    assert_eq!(messages[last]["progress"], 100, "{messages:#?}");
    messages
}

/// [`followed`], to COMPLETED with all eight documents, after at least one earlier state.
fn followed_to_completion(outcome: &Outcome, job: &str) -> Vec<Value> {
    let messages = followed(outcome, job);
    let last = messages.last().unwrap();
    assert_eq!(last["status"], "COMPLETED", "{messages:#?}");
    assert_eq!(last["counts"]["available"], 8, "{messages:#?}");
    assert!(
        messages.len() >= 2,
        "the job was followed, not just its end: {messages:#?}"
    );
    messages
}

/// The one GraphQL error an operation ended with, and nothing else: no data, no other
/// message. (graphql-transport-ws and graphql-ws deliver execution errors as a `next`/`data`
/// with `errors` and null data followed by `complete`; request errors as `error`.)
fn the_one_error(outcome: &Outcome) -> Value {
    let errors = match &outcome.end {
        End::Complete => {
            assert_eq!(outcome.payloads.len(), 1, "one message only: {outcome:#?}");
            let payload = &outcome.payloads[0];
            assert!(
                payload["data"].is_null() || payload["data"]["jobProgress"].is_null(),
                "no data with the error: {payload:#}"
            );
            payload["errors"].as_array().expect("errors").clone()
        }
        End::Error(payload) => {
            assert!(outcome.payloads.is_empty(), "{outcome:#?}");
            match payload {
                Value::Array(errors) => errors.clone(),
                error => vec![error.clone()],
            }
        }
    };
    assert_eq!(errors.len(), 1, "exactly one error: {outcome:#?}");
    errors[0].clone()
}

fn code(error: &Value) -> &str {
    error["extensions"]["code"].as_str().unwrap_or_default()
}

/// The next `next`/`data` message of operation `op`; panics on anything else.
async fn next_message(client: &mut WsClient, op: &str) -> Value {
    match client.event().await {
        Event::Next { id, payload } if id == op => payload["data"]["jobProgress"].clone(),
        other => panic!("expected a message of {op}, got {other:?}"),
    }
}

/// Runs one query or mutation over the connection; the data it answered, failing on errors.
async fn ws_data(client: &mut WsClient, op: &str, query: &str, variables: Value) -> Value {
    client.subscribe(op, query, variables).await;
    let outcome = client.outcome(op, WAIT).await;
    assert_eq!(outcome.end, End::Complete, "{op}: {outcome:#?}");
    assert_eq!(outcome.payloads.len(), 1, "{op}: {outcome:#?}");
    let payload = &outcome.payloads[0];
    assert!(payload.get("errors").is_none(), "{op}: {payload:#}");
    payload["data"].clone()
}

/// Runs one operation over the connection, which must end with exactly one error; its code.
async fn ws_error_code(client: &mut WsClient, op: &str, query: &str, variables: Value) -> String {
    client.subscribe(op, query, variables).await;
    code(&the_one_error(&client.outcome(op, WAIT).await)).to_string()
}

/// Spawns an autos child that serves at `addr` and waits until it is ready.
async fn ready(mut command: Command, addr: SocketAddr) -> Child {
    let mut child = command.spawn().expect("spawn autos");
    wait_ready(&mut child, addr).await;
    child
}

/// The HTTP status a WebSocket upgrade (with a valid key) gets when it says it comes from a
/// page at `origin`; 101 when the upgrade is accepted.
async fn upgrade_status(addr: SocketAddr, protocol: Protocol, origin: &str, key: &str) -> u16 {
    let mut request = format!("ws://{addr}/graphql")
        .into_client_request()
        .expect("request");
    let headers = request.headers_mut();
    headers.insert("Sec-WebSocket-Protocol", protocol.name().parse().unwrap());
    headers.insert("Origin", origin.parse().unwrap());
    headers.insert("Authorization", format!("Bearer {key}").parse().unwrap());
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("the upgrade timed out")
    {
        Ok((_, response)) => response.status().as_u16(),
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(err) => panic!("the upgrade failed: {err}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Authentication of WebSocket connections
// ---------------------------------------------------------------------------------------------

/// A key in `connection_init` or in the upgrade's `Authorization` header follows a job to its
/// end; no key, an unknown or malformed one, or a revoked one is refused the way the
/// subprotocol refuses (4403 / `connection_error` then close) before anything runs.
async fn websocket_authentication(protocol: Protocol) {
    let court = Court::start().await;
    let n = number(101);
    slow_job(&court, &n);
    let app = TestApp::spawn(court).await;
    let id = start_job(&app.key, app.addr, &n, None).await;

    let mut in_payload = WsClient::connect(app.addr, protocol, &app.key).await;
    let header_key = app.key(TENANT, &[Scope::Read]).await;
    let by_header = Credentials {
        payload: json!({}),
        headers: vec![("Authorization", format!("Bearer {header_key}"))],
    };
    let Ok(mut in_header) = WsClient::try_connect(app.addr, protocol, by_header).await else {
        panic!("{protocol:?}: a key in the upgrade request's Authorization header was refused");
    };
    in_payload
        .subscribe("1", PROGRESS, json!({ "id": id }))
        .await;
    in_header
        .subscribe("1", PROGRESS, json!({ "id": id }))
        .await;
    let (by_payload, by_header) =
        tokio::join!(in_payload.outcome("1", WAIT), in_header.outcome("1", WAIT));
    followed_to_completion(&by_payload, &id);
    followed_to_completion(&by_header, &id);
    // Each connection acts as its own key: the write key's, and the read key's (which may
    // not start anything: FORBIDDEN, and the court is never asked).
    let viewer = "{ viewer { tenant keyId scopes } }";
    let by_payload = ws_data(&mut in_payload, "v", viewer, json!({})).await;
    assert_eq!(
        by_payload["viewer"],
        json!({ "tenant": TENANT, "keyId": key_id(&app.key), "scopes": ["write"] })
    );
    let by_header = ws_data(&mut in_header, "v", viewer, json!({})).await;
    assert_eq!(
        by_header["viewer"],
        json!({ "tenant": TENANT, "keyId": key_id(&header_key), "scopes": ["read"] })
    );
    let lookups = app.court.lookups();
    let refused = ws_error_code(&mut in_header, "m", START, json!({ "n": number(102) })).await;
    assert_eq!(refused, "FORBIDDEN");
    assert_eq!(
        app.court.lookups(),
        lookups,
        "a refused mutation had an effect"
    );
    in_payload.close().await;
    in_header.close().await;

    let revoked = app.key(TENANT, &[Scope::Write]).await;
    revoke_in_database(&app.db.url, &revoked).await;
    let expired = app.key(TENANT, &[Scope::Write]).await;
    let pool = app.db.pool().await;
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = $1")
        .bind(key_id(&expired))
        .execute(&pool)
        .await
        .expect("expire a key");
    pool.close().await;
    // The WebSocket's refusal is what is checked here, not how fast the news travels (below).
    refused_within(app.addr, &revoked, Duration::from_secs(5)).await;
    refused_within(app.addr, &expired, Duration::from_secs(5)).await;
    let never_issued = autos::auth::keys::ApiKey::generate().reveal();
    let header = |key: &str| Credentials {
        payload: json!({}),
        headers: vec![("Authorization", format!("Bearer {key}"))],
    };
    let refusals = [
        ("no key", Credentials::default()),
        (
            "an empty payload",
            Credentials {
                payload: json!({}),
                headers: Vec::new(),
            },
        ),
        ("a key never issued", Credentials::bearer(&never_issued)),
        ("not a key", Credentials::bearer("autos_nope")),
        ("the right key id with a wrong secret", {
            let id = key_id(&app.key);
            Credentials::bearer(&format!("autos_{id}_{}", "x".repeat(43)))
        }),
        ("a revoked key", Credentials::bearer(&revoked)),
        ("a revoked key in the header", header(&revoked)),
        ("an expired key", Credentials::bearer(&expired)),
    ];
    for (case, credentials) in refusals {
        let refused = match WsClient::try_connect(app.addr, protocol, credentials).await {
            Ok(_) => panic!("{protocol:?}: {case} was acknowledged"),
            Err(refused) => refused,
        };
        match protocol {
            Protocol::TransportWs => {
                assert_eq!(refused.connection_error, None, "{case}: {refused:?}");
                assert_eq!(
                    refused.close_code,
                    Some(FORBIDDEN_CLOSE),
                    "{case}: {refused:?}"
                );
            }
            // The connection closed (try_connect saw the end) after a `connection_error`.
            Protocol::Legacy => assert!(
                refused.connection_error.is_some(),
                "{case}: no connection_error before the close: {refused:?}"
            ),
        }
    }

    // Browsers: the public URL's origin may open a connection; any other page may not.
    let from_own_page = Credentials {
        headers: vec![("Origin", format!("http://{}", app.addr))],
        ..Credentials::bearer(&app.key)
    };
    let Ok(mut own_page) = WsClient::try_connect(app.addr, protocol, from_own_page).await else {
        panic!("{protocol:?}: the public URL's origin was refused");
    };
    own_page.subscribe("1", PROGRESS, json!({ "id": id })).await;
    let finished = followed(&own_page.outcome("1", WAIT).await, &id);
    assert_eq!(
        finished.len(),
        1,
        "a finished job is one message: {finished:#?}"
    );
    assert_eq!(finished[0]["status"], "COMPLETED");
    own_page.close().await;
    assert_eq!(
        upgrade_status(app.addr, protocol, "https://evil.example", &app.key).await,
        403,
        "{protocol:?}: an upgrade from another web page is refused"
    );
    let port = app.addr.port();
    for origin in [
        "null".to_string(),
        format!("https://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{}", port + 1),
        format!("http://127.0.0.1:{port}.evil.example"),
    ] {
        assert_eq!(
            upgrade_status(app.addr, protocol, &origin, &app.key).await,
            403,
            "{protocol:?}: an upgrade from {origin} is refused"
        );
    }
    for origin in [
        format!("http://{}", app.addr),
        format!("http://localhost:{port}"),
    ] {
        assert_eq!(
            upgrade_status(app.addr, protocol, &origin, &app.key).await,
            101,
            "{protocol:?}: the same upgrade from {origin} is accepted"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graphql_transport_ws_authenticates_connections() {
    websocket_authentication(Protocol::TransportWs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legacy_graphql_ws_authenticates_connections() {
    websocket_authentication(Protocol::Legacy).await;
}

/// As deployed behind a public URL (not a loopback one) and with `AUTOS_CORS_ORIGINS`, the
/// `serve` binary accepts WebSocket upgrades from the public origin, the CORS origins and
/// programs (no `Origin`), and refuses every other page with 403, the bind address included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_origins_are_the_public_url_and_the_cors_origins() {
    let court = Court::start().await;
    let db = TestDb::new().await;
    let s3 = TestS3::start().await;
    let addr = free_port();
    let mut command = autos_process("serve", &db, &s3, &court, addr);
    command
        .env("AUTOS_PUBLIC_URL", "https://autos.example.com/")
        .env(
            "AUTOS_CORS_ORIGINS",
            "https://app.example.org,https://other.example.net:8443",
        );
    let mut serve = ready(command, addr).await;
    let key = create_key(&db.url, TENANT, &[Scope::Read]).await;
    for protocol in [Protocol::TransportWs, Protocol::Legacy] {
        for origin in [
            "https://autos.example.com",
            "https://app.example.org",
            "https://other.example.net:8443",
        ] {
            assert_eq!(
                upgrade_status(addr, protocol, origin, &key).await,
                101,
                "{protocol:?}: {origin} is allowed"
            );
        }
        for origin in [
            "https://evil.example".to_string(),
            "http://autos.example.com".to_string(),
            "https://app.example.org.evil.example".to_string(),
            "https://other.example.net".to_string(),
            format!("http://{addr}"),
            format!("http://localhost:{}", addr.port()),
            "null".to_string(),
        ] {
            assert_eq!(
                upgrade_status(addr, protocol, &origin, &key).await,
                403,
                "{protocol:?}: {origin} is refused"
            );
        }
        // A program (no Origin) is not affected.
        let mut program = WsClient::connect(addr, protocol, &key).await;
        let viewer = ws_data(&mut program, "v", "{ viewer { tenant } }", json!({})).await;
        assert_eq!(viewer["viewer"]["tenant"], TENANT);
        program.close().await;
    }
    serve.kill().await.expect("kill serve");
}

// ---------------------------------------------------------------------------------------------
// 2. Revocation across processes
// ---------------------------------------------------------------------------------------------

/// Waits until `client` is closed and checks it was with 4403 within the contract's bound;
/// how long it took after the revocation was committed.
async fn closed_after_revocation(
    client: &mut WsClient,
    revoked_at: Instant,
    how: &str,
) -> Duration {
    let code = client.closed_by(revoked_at + REVOCATION_BOUND).await;
    let took = revoked_at.elapsed();
    assert_eq!(code, Some(FORBIDDEN_CLOSE), "{how}: closed with {code:?}");
    assert!(took < REVOCATION_BOUND, "{how}: closed after {took:?}");
    eprintln!("{how}: the connection was closed {took:?} after the revocation");
    took
}

/// A `serve` child and a `work` child share one database, store and court. Keys revoked from
/// elsewhere — by the `autos key revoke` binary, and by the same code on the database — close
/// their WebSocket connections on `serve` with 4403 (and nothing more reaches them), while a
/// connection of another key of the same tenant stays and follows its jobs to the end,
/// including the job it shared with a revoked connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_revoked_elsewhere_closes_its_connections_on_a_serve_process() {
    let court = Court::start().await;
    let (shared, own, other) = (number(201), number(202), number(203));
    for n in [&shared, &own, &other] {
        slow_job(&court, n);
    }
    let db = TestDb::new().await;
    let s3 = TestS3::start().await;
    let addr = free_port();
    let mut serve = ready(autos_process("serve", &db, &s3, &court, addr), addr).await;
    let by_cli = create_key(&db.url, TENANT, &[Scope::Write]).await;
    let by_code = create_key(&db.url, TENANT, &[Scope::Write]).await;
    let kept = create_key(&db.url, TENANT, &[Scope::Write]).await;

    // No worker runs yet: every job waits QUEUED, and every subscriber has its first message.
    let shared_job = start_job(&by_cli, addr, &shared, None).await;
    let other_job = start_job(&by_code, addr, &other, None).await;
    let own_job = start_job(&kept, addr, &own, None).await;
    // A progress token dies with the key that issued it.
    let token = progress_token(&by_cli, addr, &shared_job, 3600).await;
    let mut clients = Vec::new();
    for (key, protocol, job) in [
        (&by_cli, Protocol::TransportWs, &shared_job),
        (&token, Protocol::Legacy, &shared_job),
        (&by_code, Protocol::Legacy, &other_job),
        (&kept, Protocol::TransportWs, &shared_job),
        (&kept, Protocol::Legacy, &own_job),
    ] {
        let mut client = WsClient::connect(addr, protocol, key).await;
        client.subscribe("1", PROGRESS, json!({ "id": job })).await;
        let first = next_message(&mut client, "1").await;
        assert_eq!(first["status"], "QUEUED", "{first:#}");
        clients.push(client);
    }
    let [mut cli_client, mut token_client, mut code_client, mut kept_shared, mut kept_own] =
        <[WsClient; 5]>::try_from(clients).ok().unwrap();

    let asked = Instant::now();
    let revoke = autos_process("key", &db, &s3, &court, free_port())
        .args(["revoke", &key_id(&by_cli)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .expect("run autos key revoke");
    assert!(
        revoke.status.success(),
        "autos key revoke failed: {}",
        String::from_utf8_lossy(&revoke.stderr)
    );
    eprintln!("(autos key revoke ran {:?})", asked.elapsed());
    closed_after_revocation(&mut cli_client, asked, "autos key revoke").await;
    closed_after_revocation(&mut token_client, asked, "autos key revoke, its token").await;

    let asked = Instant::now();
    revoke_in_database(&db.url, &by_code).await;
    closed_after_revocation(&mut code_client, asked, "revoke_key on the database").await;

    // Revoked keys are refused from now on; the kept key's connections are untouched.
    for key in [&by_cli, &by_code, &token] {
        let refused = WsClient::try_connect(addr, Protocol::TransportWs, Credentials::bearer(key))
            .await
            .err()
            .expect("a revoked key is refused");
        assert_eq!(refused.close_code, Some(FORBIDDEN_CLOSE), "{refused:?}");
        let answer = client_with(key)
            .post(format!("http://{addr}/graphql"))
            .json(&json!({ "query": "{ viewer { tenant } }" }))
            .send()
            .await
            .expect("request");
        assert_eq!(answer.status(), 401);
    }
    kept_shared.assert_silent(Duration::from_millis(200)).await;
    kept_own.assert_silent(Duration::from_millis(200)).await;

    let mut work = autos_process("work", &db, &s3, &court, free_port())
        .spawn()
        .expect("spawn autos work");
    let (shared_outcome, own_outcome) =
        tokio::join!(kept_shared.outcome("1", WAIT), kept_own.outcome("1", WAIT));
    for (outcome, job) in [(&shared_outcome, &shared_job), (&own_outcome, &own_job)] {
        let messages = followed(outcome, job);
        let last = messages.last().unwrap();
        assert_eq!(last["status"], "COMPLETED", "{messages:#?}");
        assert_eq!(last["counts"]["available"], 8, "{messages:#?}");
    }
    if let Some(status) = work.try_wait().expect("work status") {
        panic!("autos work exited: {status}");
    }
    work.kill().await.expect("kill work");
    serve.kill().await.expect("kill serve");
}

/// How quickly a revocation reaches a `serve` process: a key in use there (cached), revoked on
/// the database, is refused over HTTP, and its open connection closed with 4403, within
/// moments (one LISTEN/NOTIFY round trip; well under a second), round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_reaches_a_serve_process_within_moments() {
    let court = Court::start().await;
    let db = TestDb::new().await;
    let s3 = TestS3::start().await;
    let addr = free_port();
    let mut serve = ready(autos_process("serve", &db, &s3, &court, addr), addr).await;
    let pool = db.pool().await;
    let http = reqwest::Client::new();
    let mut slowest = (Duration::ZERO, Duration::ZERO);
    for _ in 0..10 {
        let key = create_key(&db.url, TENANT, &[Scope::Write]).await;
        assert!(http_takes(&http, addr, &key).await);
        let mut open = WsClient::connect(addr, Protocol::TransportWs, &key).await;
        autos::auth::admin::revoke_key(&pool, &key_id(&key), &autos::auth::audit::Actor::cli())
            .await
            .expect("revoke")
            .expect("a key to revoke");
        let committed = Instant::now();
        let refused = refused_within(addr, &key, Duration::from_secs(1)).await;
        let code = open.closed_by(committed + Duration::from_secs(1)).await;
        assert_eq!(code, Some(FORBIDDEN_CLOSE));
        let closed = committed.elapsed();
        slowest = (slowest.0.max(refused), slowest.1.max(closed));
        let again = WsClient::try_connect(addr, Protocol::TransportWs, Credentials::bearer(&key));
        assert_eq!(
            again.await.err().map(|r| r.close_code),
            Some(Some(FORBIDDEN_CLOSE))
        );
    }
    eprintln!(
        "revocation: HTTP refused at most {:?}, connection closed at most {:?} after the commit",
        slowest.0, slowest.1
    );
    pool.close().await;
    serve.kill().await.expect("kill serve");
}

/// A key revoked with `revokeApiKey` is refused by the very next request to the process that
/// revoked it, over HTTP and on a new WebSocket: that process does not wait for the
/// revocation's announcement to reach it. (Other processes drop their copy when the
/// announcement arrives: see `a_revocation_reaches_a_serve_process_within_moments`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_revoked_over_graphql_is_refused_by_the_very_next_request() {
    let app = TestApp::spawn(Court::start().await).await;
    let admin = client_with(&app.key("default", &[Scope::Admin]).await);
    for _ in 0..20 {
        let key = app.key(TENANT, &[Scope::Write]).await;
        let http = client_with(&key);
        // In use, so cached.
        assert!(http_takes(&http, app.addr, &key).await);
        WsClient::connect(app.addr, Protocol::TransportWs, &key)
            .await
            .close()
            .await;
        let revoked = post_gql(
            &admin,
            app.addr,
            "mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }",
            json!({ "id": key_id(&key) }),
        )
        .await;
        assert!(
            revoked["data"]["revokeApiKey"]["revokedAt"].is_string(),
            "{revoked:#}"
        );
        assert!(
            !http_takes(&http, app.addr, &key).await,
            "the revoked key still worked over HTTP"
        );
        let again =
            WsClient::try_connect(app.addr, Protocol::TransportWs, Credentials::bearer(&key))
                .await
                .err()
                .unwrap_or_else(|| panic!("the revoked key opened a WebSocket"));
        assert_eq!(again.close_code, Some(FORBIDDEN_CLOSE));
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Progress tokens over WebSocket
// ---------------------------------------------------------------------------------------------

/// A progress token in `connection_init` follows its own job to the end; subscribing to
/// another job (of the same tenant) is FORBIDDEN without ending the connection; a token past
/// its expiry is refused at `connection_init`.
async fn progress_tokens(protocol: Protocol) {
    let court = Court::start().await;
    let (n, other) = (number(301), number(302));
    slow_job(&court, &n);
    quick_job(&court, &other);
    let app = TestApp::spawn(court).await;
    let other_job = start_job(&app.key, app.addr, &other, None).await;
    app.wait_terminal(&other_job, WAIT).await;
    let job = start_job(&app.key, app.addr, &n, None).await;
    let token = progress_token(&app.key, app.addr, &job, 3600).await;

    let mut client = WsClient::connect(app.addr, protocol, &token).await;
    client
        .subscribe("other", PROGRESS, json!({ "id": other_job }))
        .await;
    let error = the_one_error(&client.outcome("other", WAIT).await);
    assert_eq!(code(&error), "FORBIDDEN", "{error:#}");
    // The token reads its job and nothing else, and changes nothing.
    let own = ws_data(
        &mut client,
        "job",
        "query($id: ID!) { job(id: $id) { id } }",
        json!({ "id": job }),
    )
    .await;
    assert_eq!(own["job"]["id"], job);
    for (op, query) in [
        ("viewer", "{ viewer { tenant } }"),
        ("jobs", "{ jobs { edges { node { id } } } }"),
        ("other job", "query($id: ID!) { job(id: $id) { id } }"),
        (
            "cancel",
            "mutation($id: ID!) { cancelJob(id: $id) { status } }",
        ),
    ] {
        let vars = json!({ "id": if op == "other job" { &other_job } else { &job } });
        assert_eq!(
            ws_error_code(&mut client, op, query, vars).await,
            "FORBIDDEN",
            "{op}"
        );
    }
    client
        .subscribe("mine", PROGRESS, json!({ "id": job }))
        .await;
    followed_to_completion(&client.outcome("mine", WAIT).await, &job);
    client.assert_silent(Duration::from_millis(200)).await;
    client.close().await;

    let short = progress_token(&app.key, app.addr, &job, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused = match WsClient::try_connect(app.addr, protocol, Credentials::bearer(&short)).await
    {
        Ok(_) => panic!("{protocol:?}: an expired token was acknowledged"),
        Err(refused) => refused,
    };
    match protocol {
        Protocol::TransportWs => {
            assert_eq!(refused.close_code, Some(FORBIDDEN_CLOSE), "{refused:?}")
        }
        Protocol::Legacy => assert!(refused.connection_error.is_some(), "{refused:?}"),
    }
    app.stop().await;
}

/// A connection opened with a progress token is closed (4403) once the token expires, within
/// the bound that holds for revoked keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_is_closed_when_its_progress_token_expires() {
    let court = Court::start().await;
    let n = number(311);
    quick_job(&court, &n);
    let app = TestApp::spawn(court).await;
    let job = start_job(&app.key, app.addr, &n, None).await;
    app.wait_terminal(&job, WAIT).await;
    let token = progress_token(&app.key, app.addr, &job, 2).await;
    let issued = Instant::now();
    let mut client = WsClient::connect(app.addr, Protocol::TransportWs, &token).await;
    client.subscribe("1", PROGRESS, json!({ "id": job })).await;
    let finished = followed(&client.outcome("1", WAIT).await, &job);
    assert_eq!(finished.len(), 1, "{finished:#?}");
    let code = client.closed_by(issued + REVOCATION_BOUND).await;
    assert_eq!(code, Some(FORBIDDEN_CLOSE), "closed with {code:?}");
    eprintln!(
        "a token valid for 2 s: its connection was closed {:?} after it was issued",
        issued.elapsed()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graphql_transport_ws_takes_progress_tokens_for_their_job_only() {
    progress_tokens(Protocol::TransportWs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legacy_graphql_ws_takes_progress_tokens_for_their_job_only() {
    progress_tokens(Protocol::Legacy).await;
}

// ---------------------------------------------------------------------------------------------
// 4. Identical subscriptions are shared only between callers with the same rights
// ---------------------------------------------------------------------------------------------

/// Tenant A (owner of the jobs) and tenant B send the same `jobProgress` document with the
/// same variables to the autos at `addr`: whoever comes first, B gets one JOB_NOT_FOUND and
/// nothing else, and A the whole story. A progress token of the job and A's key both follow
/// it; a token of another job is FORBIDDEN.
async fn rights_are_never_shared(addr: SocketAddr, db_url: &str, court: &Court, base: u32) {
    let a = create_key(db_url, TENANT, &[Scope::Write]).await;
    let b = create_key(db_url, "globex", &[Scope::Write]).await;
    let b_reader = create_key(db_url, "globex", &[Scope::Read]).await;
    let numbers: Vec<String> = (0..4).map(|i| number(base + i)).collect();
    for n in &numbers {
        slow_job(court, n);
    }
    let not_found = |outcome: &Outcome, who: &str| {
        let error = the_one_error(outcome);
        assert_eq!(code(&error), "JOB_NOT_FOUND", "{who}: {error:#}");
    };

    // A first, B once A has the job's first message.
    let first_job = start_job(&a, addr, &numbers[0], None).await;
    let job = first_job.clone();
    let mut owner = WsClient::connect(addr, Protocol::TransportWs, &a).await;
    owner.subscribe("1", PROGRESS, json!({ "id": job })).await;
    let first = next_message(&mut owner, "1").await;
    let mut stranger = WsClient::connect(addr, Protocol::TransportWs, &b).await;
    stranger
        .subscribe("1", PROGRESS, json!({ "id": job }))
        .await;
    not_found(&stranger.outcome("1", WAIT).await, "B after A");
    let seen = ws_data(
        &mut stranger,
        "q",
        "query($id: ID!) { job(id: $id) { id } }",
        json!({ "id": job }),
    )
    .await;
    assert_eq!(seen, json!({ "job": null }), "B does not see A's job");
    let mut rest = owner.outcome("1", WAIT).await;
    rest.payloads
        .insert(0, json!({ "data": { "jobProgress": first } }));
    followed_to_completion(&rest, &job);
    stranger.assert_silent(Duration::from_millis(300)).await;

    // B first, A right behind, before either has an answer.
    let job = start_job(&a, addr, &numbers[1], None).await;
    let mut stranger = WsClient::connect(addr, Protocol::Legacy, &b).await;
    let mut reader = WsClient::connect(addr, Protocol::TransportWs, &b_reader).await;
    let mut owner = WsClient::connect(addr, Protocol::TransportWs, &a).await;
    stranger
        .subscribe("1", PROGRESS, json!({ "id": job }))
        .await;
    reader.subscribe("1", PROGRESS, json!({ "id": job })).await;
    owner.subscribe("1", PROGRESS, json!({ "id": job })).await;
    let (b_outcome, reader_outcome, a_outcome) = tokio::join!(
        stranger.outcome("1", WAIT),
        reader.outcome("1", WAIT),
        owner.outcome("1", WAIT)
    );
    not_found(&b_outcome, "B before A");
    not_found(&reader_outcome, "B's read key before A");
    followed_to_completion(&a_outcome, &job);
    stranger.assert_silent(Duration::from_millis(200)).await;
    reader.assert_silent(Duration::from_millis(200)).await;

    // B while A's job is running and A's subscription is live.
    let job = start_job(&a, addr, &numbers[2], None).await;
    let mut owner = WsClient::connect(addr, Protocol::Legacy, &a).await;
    owner.subscribe("1", PROGRESS, json!({ "id": job })).await;
    let mut seen = Vec::new();
    while seen.last().is_none_or(|m: &Value| m["status"] != "RUNNING") {
        seen.push(next_message(&mut owner, "1").await);
    }
    assert_eq!(seen.last().unwrap()["status"], "RUNNING", "{seen:#?}");
    for (key, protocol) in [(&b, Protocol::TransportWs), (&b, Protocol::Legacy)] {
        let mut stranger = WsClient::connect(addr, protocol, key).await;
        stranger
            .subscribe("1", PROGRESS, json!({ "id": job }))
            .await;
        not_found(&stranger.outcome("1", WAIT).await, "B while A's job runs");
        stranger.assert_silent(Duration::from_millis(300)).await;
    }
    let mut rest = owner.outcome("1", WAIT).await;
    for m in seen.into_iter().rev() {
        rest.payloads
            .insert(0, json!({ "data": { "jobProgress": m } }));
    }
    let messages = followed_to_completion(&rest, &job);
    assert!(messages.len() >= 3, "{messages:#?}");

    // A's key and a token of the job see the same story; a token of another job sees nothing.
    let job = start_job(&a, addr, &numbers[3], None).await;
    let token = progress_token(&a, addr, &job, 600).await;
    let other_token = progress_token(&a, addr, &first_job, 600).await;
    let mut wrong = WsClient::connect(addr, Protocol::TransportWs, &other_token).await;
    let mut owner = WsClient::connect(addr, Protocol::TransportWs, &a).await;
    let mut page = WsClient::connect(addr, Protocol::Legacy, &token).await;
    wrong.subscribe("1", PROGRESS, json!({ "id": job })).await;
    owner.subscribe("1", PROGRESS, json!({ "id": job })).await;
    page.subscribe("1", PROGRESS, json!({ "id": job })).await;
    let (wrong_outcome, owner_outcome, page_outcome) = tokio::join!(
        wrong.outcome("1", WAIT),
        owner.outcome("1", WAIT),
        page.outcome("1", WAIT)
    );
    let error = the_one_error(&wrong_outcome);
    assert_eq!(
        code(&error),
        "FORBIDDEN",
        "a token of another job: {error:#}"
    );
    let by_key = followed_to_completion(&owner_outcome, &job);
    let by_token = followed_to_completion(&page_outcome, &job);
    assert_eq!(by_key.last(), by_token.last(), "both saw the same end");
    wrong.assert_silent(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_process_never_shares_a_subscription_across_rights() {
    let court = Court::start().await;
    let app = TestApp::spawn(court.clone()).await;
    rights_are_never_shared(app.addr, &app.db.url, &court, 401).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_serve_and_work_pair_never_shares_a_subscription_across_rights() {
    let court = Court::start().await;
    let db = TestDb::new().await;
    let s3 = TestS3::start().await;
    let addr = free_port();
    let mut serve = ready(autos_process("serve", &db, &s3, &court, addr), addr).await;
    let mut work = autos_process("work", &db, &s3, &court, free_port())
        .spawn()
        .expect("spawn autos work");
    rights_are_never_shared(addr, &db.url, &court, 411).await;
    if let Some(status) = work.try_wait().expect("work status") {
        panic!("autos work exited: {status}");
    }
    work.kill().await.expect("kill work");
    serve.kill().await.expect("kill serve");
}

// ---------------------------------------------------------------------------------------------
// 5. Per-tenant webhook secrets
// ---------------------------------------------------------------------------------------------

/// autos (API and workers) that may send webhooks to a receiver on 127.0.0.1, with
/// `AUTOS_WEBHOOK_SECRET` set to `default_secret` (the tenant `default`'s).
async fn spawn_for_webhooks(court: Court, default_secret: &str) -> TestApp {
    let db = TestDb::new().await;
    let s3 = TestS3::start().await;
    let options = Options::default();
    let mut cfg = config(&db.url, &s3, &court.url(), &options);
    cfg.webhook_secret = Some(default_secret.to_string());
    cfg.webhook_allow_private = true;
    cfg.webhook_backoff_ms = 50;
    cfg.webhook_timeout_ms = 5_000;
    let app = Application::start(cfg, options.role)
        .await
        .expect("start autos");
    let key = create_key(&db.url, TENANT, &[Scope::Write]).await;
    TestApp {
        addr: app.addr.expect("serving"),
        app: Some(app),
        http: client_with(&key),
        key,
        db,
        s3,
        court,
    }
}

/// The caller's tenant's `viewer.webhookSecret`.
async fn webhook_secret(key: &str, addr: SocketAddr) -> String {
    let data = data_as(key, addr, VIEWER, json!({})).await;
    data["viewer"]["webhookSecret"]
        .as_str()
        .unwrap_or_else(|| panic!("no webhookSecret: {data:#}"))
        .to_string()
}

/// Whether `signature` (a `webhook-signature` value) of `message` verifies with `secret`.
fn verifies_with(message: &Received, signature: &str, secret: &str) -> bool {
    let secret = Secret::parse(secret).expect("a whsec_ secret");
    let timestamp = message
        .header("webhook-timestamp")
        .parse()
        .expect("webhook-timestamp in Unix seconds");
    verify(
        &secret,
        message.header("webhook-id"),
        timestamp,
        &message.body,
        signature,
        chrono::Utc::now().timestamp(),
        DEFAULT_TOLERANCE_SECS,
    )
}

/// Whether the message verifies with `secret` (one of its signatures does).
fn verifies(message: &Received, secret: &str) -> bool {
    verifies_with(message, message.header("webhook-signature"), secret)
}

/// The space-separated signatures of a message.
fn signatures(message: &Received) -> Vec<&str> {
    message
        .header("webhook-signature")
        .split_ascii_whitespace()
        .collect()
}

/// `sendTestWebhook` to `url` as `key`, which must be delivered.
async fn send_test(key: &str, addr: SocketAddr, url: &str) {
    let data = data_as(key, addr, SEND_TEST, json!({ "u": url })).await;
    let sent = &data["sendTestWebhook"];
    assert_eq!(sent["delivered"], true, "{data:#}");
    assert_eq!(sent["statusCode"], 200, "{data:#}");
}

/// Two tenants' messages each verify with their own tenant's secret only; a rotation signs
/// the next message with both the new and the previous secret for 24 hours; the tenant
/// `default` signs with `AUTOS_WEBHOOK_SECRET`, which cannot be rotated from GraphQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_tenant_signs_its_webhooks_with_its_own_secret() {
    let court = Court::start().await;
    let (n_a, n_b, n_rotated, n_same) = (number(501), number(502), number(503), number(504));
    for n in [&n_a, &n_b, &n_rotated, &n_same] {
        quick_job(&court, n);
    }
    let configured = Secret::generate().to_string();
    let app = spawn_for_webhooks(court, &configured).await;
    let receiver = Receiver::start().await;
    let (a, addr) = (app.key.clone(), app.addr);
    let b = app.key("globex", &[Scope::Write]).await;
    let secret_a = webhook_secret(&a, addr).await;
    let secret_b = webhook_secret(&b, addr).await;
    for secret in [&secret_a, &secret_b] {
        assert!(
            Secret::parse(secret).is_ok(),
            "not a whsec_ secret: {secret}"
        );
    }
    assert_ne!(secret_a, secret_b);
    assert_ne!(secret_a, configured);
    assert_ne!(secret_b, configured);

    let job_a = start_job(&a, addr, &n_a, Some(&receiver.url("/a"))).await;
    let job_b = start_job(&b, addr, &n_b, Some(&receiver.url("/b"))).await;
    let to_a = receiver.wait_for("/a", 1, WAIT).await.remove(0);
    let to_b = receiver.wait_for("/b", 1, WAIT).await.remove(0);
    assert_eq!(to_a.json()["data"]["jobId"], job_a);
    assert_eq!(to_b.json()["data"]["jobId"], job_b);
    assert_eq!(signatures(&to_a).len(), 1, "{:?}", to_a.headers);
    assert_eq!(signatures(&to_b).len(), 1, "{:?}", to_b.headers);
    assert!(verifies(&to_a, &secret_a), "A's message with A's secret");
    assert!(
        !verifies(&to_a, &secret_b),
        "A's message verified with B's secret"
    );
    assert!(
        !verifies(&to_a, &configured),
        "A's message verified with the default secret"
    );
    assert!(verifies(&to_b, &secret_b), "B's message with B's secret");
    assert!(
        !verifies(&to_b, &secret_a),
        "B's message verified with A's secret"
    );

    // Both tenants asking for one case: a job each, and a message each, signed each its own way.
    let same_a = start_job(&a, addr, &n_same, Some(&receiver.url("/a-same"))).await;
    let same_b = start_job(&b, addr, &n_same, Some(&receiver.url("/b-same"))).await;
    assert_ne!(same_a, same_b);
    let to_a = receiver.wait_for("/a-same", 1, WAIT).await.remove(0);
    let to_b = receiver.wait_for("/b-same", 1, WAIT).await.remove(0);
    assert_eq!(to_a.json()["data"]["jobId"], same_a);
    assert_eq!(to_b.json()["data"]["jobId"], same_b);
    assert!(verifies(&to_a, &secret_a) && !verifies(&to_a, &secret_b));
    assert!(verifies(&to_b, &secret_b) && !verifies(&to_b, &secret_a));

    let rotated = data_as(
        &a,
        addr,
        "mutation { rotateWebhookSecret { secret previousValidUntil } }",
        json!({}),
    )
    .await["rotateWebhookSecret"]
        .clone();
    let new_a = rotated["secret"].as_str().expect("secret").to_string();
    assert!(Secret::parse(&new_a).is_ok(), "{rotated:#}");
    assert_ne!(new_a, secret_a);
    let until = chrono::DateTime::parse_from_rfc3339(
        rotated["previousValidUntil"]
            .as_str()
            .expect("previousValidUntil"),
    )
    .expect("a date");
    let ahead = until.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        (ahead - chrono::Duration::hours(24)).num_seconds().abs() < 120,
        "the previous secret signs for about 24 h, not {ahead}: {rotated:#}"
    );
    assert_eq!(webhook_secret(&a, addr).await, new_a);
    assert_eq!(
        webhook_secret(&b, addr).await,
        secret_b,
        "B's secret is B's alone"
    );

    start_job(&a, addr, &n_rotated, Some(&receiver.url("/a-rotated"))).await;
    let after = receiver.wait_for("/a-rotated", 1, WAIT).await.remove(0);
    let both = signatures(&after);
    assert_eq!(
        both.len(),
        2,
        "two signatures during a rotation: {:?}",
        after.headers
    );
    let by = |secret: &str| -> Vec<bool> {
        both.iter()
            .map(|signature| verifies_with(&after, signature, secret))
            .collect()
    };
    let (by_new, by_old) = (by(&new_a), by(&secret_a));
    assert_eq!(by_new.iter().filter(|v| **v).count(), 1, "{by_new:?}");
    assert_eq!(by_old.iter().filter(|v| **v).count(), 1, "{by_old:?}");
    assert_ne!(by_new, by_old, "one signature per secret");
    assert!(
        !verifies(&after, &secret_b),
        "A's message verified with B's secret"
    );

    // B's messages are not touched by A's rotation.
    send_test(&b, addr, &receiver.url("/b-after")).await;
    let b_after = receiver.wait_for("/b-after", 1, WAIT).await.remove(0);
    assert_eq!(signatures(&b_after).len(), 1, "{:?}", b_after.headers);
    assert!(verifies(&b_after, &secret_b));
    assert!(!verifies(&b_after, &new_a) && !verifies(&b_after, &secret_a));

    // The tenant `default` signs with the configured secret, and only there can it change.
    let d = app.key("default", &[Scope::Write]).await;
    assert_eq!(webhook_secret(&d, addr).await, configured);
    let refused = post_gql(
        &client_with(&d),
        addr,
        "mutation { rotateWebhookSecret { secret previousValidUntil } }",
        json!({}),
    )
    .await;
    assert_eq!(error_code(&refused), "INVALID_STATE", "{refused:#}");
    assert_eq!(webhook_secret(&d, addr).await, configured);
    send_test(&d, addr, &receiver.url("/default")).await;
    let to_default = receiver.wait_for("/default", 1, WAIT).await.remove(0);
    assert_eq!(signatures(&to_default).len(), 1, "{:?}", to_default.headers);
    assert!(verifies(&to_default, &configured));
    assert!(!verifies(&to_default, &new_a) && !verifies(&to_default, &secret_b));
    app.stop().await;
}

/// The built-in test receiver (`/webhooks/test-receiver` on autos itself) verifies each
/// tenant's messages with that tenant's secret and shows each tenant only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_built_in_test_receiver_shows_each_tenant_its_own_deliveries() {
    let court = Court::start().await;
    let n = number(601);
    quick_job(&court, &n);
    let app = TestApp::spawn(court).await;
    let addr = app.addr;
    let a = app.key.clone();
    let a_reader = app.key(TENANT, &[Scope::Read]).await;
    let b = app.key("globex", &[Scope::Write]).await;
    let c = app.key("initech", &[Scope::Write]).await;
    let target = app.url("/webhooks/test-receiver");
    // The receiver answers 401 to a signature it cannot verify: delivered means verified.
    for key in [&a, &a, &b] {
        send_test(key, addr, &target).await;
    }
    let deliveries = |key: String| async move {
        let data = data_as(
            &key,
            addr,
            "{ testWebhookDeliveries(last: 50) { messageId eventType signatureValid body } }",
            json!({}),
        )
        .await;
        data["testWebhookDeliveries"]
            .as_array()
            .expect("deliveries")
            .clone()
    };
    let seen_a = deliveries(a.clone()).await;
    let seen_b = deliveries(b.clone()).await;
    assert_eq!(seen_a.len(), 2, "{seen_a:#?}");
    assert_eq!(seen_b.len(), 1, "{seen_b:#?}");
    for message in seen_a.iter().chain(&seen_b) {
        assert_eq!(message["eventType"], "webhook.test", "{message:#}");
        assert_eq!(message["signatureValid"], true, "{message:#}");
    }
    let ids = |seen: &[Value]| -> Vec<String> {
        seen.iter()
            .map(|m| m["messageId"].as_str().expect("messageId").to_string())
            .collect()
    };
    let (ids_a, ids_b) = (ids(&seen_a), ids(&seen_b));
    assert!(
        ids_a.iter().all(|id| !ids_b.contains(id)),
        "{ids_a:?} {ids_b:?}"
    );
    assert_eq!(
        ids(&deliveries(a_reader).await),
        ids_a,
        "A's read key sees A's"
    );
    assert!(
        deliveries(c.clone()).await.is_empty(),
        "a third tenant sees nothing"
    );

    // A job's message to the built-in receiver is its tenant's too.
    let job = start_job(&b, addr, &n, Some(&target)).await;
    let deadline = Instant::now() + WAIT;
    let seen_b = loop {
        let seen = deliveries(b.clone()).await;
        if seen.len() == 2 {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "B's job message never came: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(seen_b[0]["eventType"], "job.completed", "{seen_b:#?}");
    assert_eq!(seen_b[0]["signatureValid"], true, "{seen_b:#?}");
    let body: Value =
        serde_json::from_str(seen_b[0]["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(body["data"]["jobId"], job);
    assert_eq!(
        ids(&deliveries(a).await),
        ids_a,
        "A does not see B's job message"
    );
    assert!(deliveries(c).await.is_empty(), "nor does a third tenant");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. First start
// ---------------------------------------------------------------------------------------------

/// Spawns `command` with its log (stderr) collected line by line.
fn spawn_logging(
    mut command: Command,
) -> (Child, Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    command.stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("spawn autos");
    let stderr = child.stderr.take().expect("stderr");
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let reader = tokio::spawn({
        let lines = lines.clone();
        async move {
            let mut stderr = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = stderr.next_line().await {
                lines.lock().unwrap().push(line);
            }
        }
    });
    (child, lines, reader)
}

/// Waits until `child` is ready at `addr`.
async fn wait_ready(child: &mut Child, addr: SocketAddr) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            panic!("autos exited before it was ready: {status}");
        }
        let answer = http.get(format!("http://{addr}/readyz")).send().await;
        if answer.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "autos at {addr} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 10 s) until a line of `log` contains `text`.
async fn logged(log: &Mutex<Vec<String>>, text: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if log.lock().unwrap().iter().any(|line| line.contains(text)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// `autos serve` on a fresh database, with `AUTOS_AUTH` unset and `AUTOS_LOG=info`, logs
/// `{public}/#key=autos_…` once; that key is an admin key of the tenant `default`; the next
/// start on that database logs no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_start_logs_one_admin_key_url_and_the_next_none() {
    let court = Court::start().await;
    let db = TestDb::new().await;
    let s3 = TestS3::start().await;

    let addr = free_port();
    // The URL is built on AUTOS_PUBLIC_URL (here another spelling of the bind address).
    let public = format!("http://localhost:{}", addr.port());
    let mut command = autos_process("serve", &db, &s3, &court, addr);
    command
        .env("AUTOS_LOG", "info")
        .env("AUTOS_PUBLIC_URL", format!("{public}/"));
    let (mut first, log, reader) = spawn_logging(command);
    wait_ready(&mut first, addr).await;
    assert!(
        logged(&log, "#key=").await,
        "no key URL: {:#?}",
        log.lock().unwrap()
    );
    let text = log.lock().unwrap().join("\n");
    let marker = format!("{public}/#key=");
    assert_eq!(text.matches(&marker).count(), 1, "{text}");
    assert_eq!(text.matches("#key=").count(), 1, "{text}");
    let at = text.find(&marker).unwrap() + marker.len();
    let key: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    assert!(key.starts_with("autos_"), "{text}");
    assert!(
        autos::auth::keys::ApiKey::parse(&key).is_ok(),
        "not a key: {key}"
    );
    assert_eq!(
        text.matches(&key).count(),
        1,
        "the key is shown once: {text}"
    );
    let viewer = data_as(&key, addr, VIEWER, json!({})).await["viewer"].clone();
    assert_eq!(viewer["tenant"], "default", "{viewer:#}");
    assert_eq!(viewer["keyId"], key_id(&key), "{viewer:#}");
    assert_eq!(viewer["scopes"], json!(["admin"]), "{viewer:#}");
    // Admin rights in deed: the key list is for admin keys only.
    let keys = data_as(&key, addr, "{ apiKeys { id tenant scopes } }", json!({})).await;
    assert_eq!(
        keys["apiKeys"],
        json!([{ "id": key_id(&key), "tenant": "default", "scopes": ["admin"] }]),
        "{keys:#}"
    );
    first.kill().await.expect("kill the first autos");
    reader.await.expect("log reader");

    let addr = free_port();
    let mut command = autos_process("serve", &db, &s3, &court, addr);
    command.env("AUTOS_LOG", "info");
    let (mut second, log, reader) = spawn_logging(command);
    wait_ready(&mut second, addr).await;
    assert!(
        logged(&log, "listening").await,
        "{:#?}",
        log.lock().unwrap()
    );
    // The key URL would follow the `listening` line at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let viewer = data_as(&key, addr, VIEWER, json!({})).await["viewer"].clone();
    assert_eq!(
        viewer["tenant"], "default",
        "the first key still works: {viewer:#}"
    );
    second.kill().await.expect("kill the second autos");
    reader.await.expect("log reader");
    let text = log.lock().unwrap().join("\n");
    assert!(!text.contains("#key="), "a key was logged again: {text}");
    assert!(!text.contains(&key), "{text}");
}

/// Two processes starting at once on a fresh database make one first key between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_first_starts_at_once_log_one_key_between_them() {
    let court = Court::start().await;
    let db = TestDb::new().await;
    let s3 = TestS3::start().await;
    let mut started = Vec::new();
    for _ in 0..2 {
        let addr = free_port();
        let mut command = autos_process("serve", &db, &s3, &court, addr);
        command.env("AUTOS_LOG", "info");
        started.push((addr, spawn_logging(command)));
    }
    for (addr, (child, log, _)) in &mut started {
        wait_ready(child, *addr).await;
        assert!(logged(log, "listening").await, "{:#?}", log.lock().unwrap());
    }
    // Whichever made the key logged it right after its `listening` line.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut keys = Vec::new();
    for (_, (mut child, log, reader)) in started {
        child.kill().await.expect("kill autos");
        reader.await.expect("log reader");
        let text = log.lock().unwrap().join("\n");
        keys.extend(
            text.match_indices("#key=")
                .map(|(at, _)| text[at..].to_string()),
        );
    }
    assert_eq!(keys.len(), 1, "{keys:#?}");
    let pool = db.pool().await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(&pool)
        .await
        .expect("count keys");
    assert_eq!(count, 1, "one key in the database");
    pool.close().await;
}

//! Live progress: the `jobProgress` subscription over WebSocket (`graphql-transport-ws` and the
//! legacy `graphql-ws`), fed by PostgreSQL LISTEN/NOTIFY across processes (contract §5).

mod common;

use autos::app::Role;
use common::ws::{End, Outcome, Protocol, WsClient};
use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

const PROGRESS: &str = "subscription($id: ID!) { jobProgress(jobId: $id) {
    jobId status progress total at
    counts { pending processing available failed }
    document { id sourceId status } } }";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `count` documents of `size` bytes, each served in chunks of `size / 5` every `every`
/// (so one transfer lasts about 5 × `every`), or at once when `every` is `None`.
/// `count` documents of `size` bytes; with `every`, served slowly in five chunks, document
/// `i` waiting `every × (0.6 + 0.3 i)` between chunks: their transfers end at different
/// times even when the worker pool runs them all at once, so progress moves in steps.
fn add_docs(court: &Court, n: &str, count: usize, size: usize, every: Option<Duration>) {
    let docs: Vec<Doc> = (0..count)
        .map(|i| {
            Doc::new(
                &format!("d{i}"),
                &format!("Peça {i}.pdf"),
                bytes(size, i as u8),
            )
        })
        .collect();
    if let Some(every) = every {
        for (i, doc) in docs.iter().enumerate() {
            court.fail_always(
                n,
                &doc.id,
                Fault::Slow {
                    chunk: size / 5,
                    every: every.mul_f64(0.6 + 0.3 * i as f64),
                },
            );
        }
    }
    court.add_process(n, docs);
}

/// Eight small documents served slowly: a job of about 1–2 s.
fn slow_job(court: &Court, n: &str) {
    add_docs(court, n, 8, 1_000, Some(Duration::from_millis(50)));
}

fn job_id(started: &Value) -> String {
    started["job"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job id in {started:#}"))
        .to_string()
}

fn rank(status: &str) -> u8 {
    match status {
        "QUEUED" => 0,
        "RUNNING" => 1,
        "COMPLETED" | "COMPLETED_WITH_ERRORS" | "FAILED" | "CANCELLED" => 2,
        other => panic!("not a job status: {other}"),
    }
}

fn int(value: &Value) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("not an integer: {value}"))
}

/// The `jobProgress` messages of a stream that ended with `complete`, checked against the
/// contract: every message is about `job`, its counts add up to `total`, `progress` follows
/// the counts and never decreases, statuses never go back, only the last message is terminal
/// (with progress 100), and a message's document (if any) is one of the job's.
fn checked(outcome: &Outcome, job: &str, total: i64, documents: &HashSet<String>) -> Vec<Value> {
    assert_eq!(outcome.end, End::Complete, "the stream must complete");
    assert!(!outcome.payloads.is_empty(), "no message before complete");
    let messages: Vec<Value> = outcome
        .payloads
        .iter()
        .map(|payload| {
            assert!(payload.get("errors").is_none(), "errors in {payload:#}");
            payload["data"]["jobProgress"].clone()
        })
        .collect();
    let last = messages.len() - 1;
    let mut previous: Option<&Value> = None;
    for (i, m) in messages.iter().enumerate() {
        let all = || format!("message {i} of {messages:#?}");
        assert_eq!(m["jobId"], job, "{}", all());
        assert_eq!(int(&m["total"]), total, "{}", all());
        let c = &m["counts"];
        let (pending, processing, available, failed) = (
            int(&c["pending"]),
            int(&c["processing"]),
            int(&c["available"]),
            int(&c["failed"]),
        );
        assert!(pending >= 0 && processing >= 0 && available >= 0 && failed >= 0);
        assert_eq!(
            pending + processing + available + failed,
            total,
            "counts add up to total: {}",
            all()
        );
        let status = m["status"].as_str().expect("status");
        let progress = int(&m["progress"]);
        let terminal = rank(status) == 2;
        assert_eq!(
            terminal,
            i == last,
            "only the last message is terminal: {}",
            all()
        );
        if terminal {
            assert_eq!(progress, 100, "{}", all());
        } else {
            // 100 is reserved for terminal statuses.
            let expected = if total == 0 {
                0
            } else {
                (100 * (available + failed) / total).min(99)
            };
            assert_eq!(progress, expected, "progress follows the counts: {}", all());
            assert!(progress < 100, "{}", all());
        }
        chrono::DateTime::parse_from_rfc3339(m["at"].as_str().expect("at")).expect("at");
        if let Some(p) = previous {
            assert!(
                progress >= int(&p["progress"]),
                "progress went down: {}",
                all()
            );
            assert!(
                rank(status) >= rank(p["status"].as_str().unwrap()),
                "status went back: {}",
                all()
            );
            let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v["at"].as_str().unwrap());
            assert!(at(m).unwrap() >= at(p).unwrap(), "reordered: {}", all());
        }
        if !m["document"].is_null() {
            let d = &m["document"];
            let id = d["id"].as_str().expect("document id");
            assert!(
                documents.contains(id),
                "document {id} is not the job's: {}",
                all()
            );
            assert!(d["sourceId"].is_string(), "{}", all());
            assert!(
                matches!(
                    d["status"].as_str(),
                    Some("PENDING" | "PROCESSING" | "AVAILABLE" | "FAILED")
                ),
                "{}",
                all()
            );
        }
        previous = Some(m);
    }
    messages
}

fn document_ids(job: &Value) -> HashSet<String> {
    job["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

/// The GraphQL errors a failed operation delivered, whichever way it was delivered: a
/// `next`/`data` message with `errors` followed by `complete`, or an `error` message.
fn operation_errors(outcome: &Outcome) -> Vec<Value> {
    match &outcome.end {
        End::Complete => {
            assert_eq!(outcome.payloads.len(), 1, "{outcome:#?}");
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
    }
}

async fn start_job(http: &reqwest::Client, addr: SocketAddr, n: &str) -> String {
    let body = post_gql(
        http,
        addr,
        "mutation($n: String!) { startDownload(input: {number: $n}) { created job { id } } }",
        json!({ "n": n }),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body:#}");
    assert_eq!(body["data"]["startDownload"]["created"], true, "{body:#}");
    job_id(&body["data"]["startDownload"])
}

/// A new connection with operation "1" subscribed to `job`.
async fn subscribe(app: &TestApp, protocol: Protocol, query: &str, job: &str) -> WsClient {
    let mut client = WsClient::connect(app.addr, protocol, &app.key).await;
    client.subscribe("1", query, json!({ "id": job })).await;
    client
}

// ---------------------------------------------------------------------------------------------
// A job followed to its end
// ---------------------------------------------------------------------------------------------

async fn follows_a_job_to_its_end(protocol: Protocol) {
    let court = Court::start().await;
    let n = number(1);
    slow_job(&court, &n);
    let app = TestApp::spawn(court).await;

    let id = job_id(&app.start(&n, false).await);
    let started = Instant::now();
    let mut client = subscribe(&app, protocol, PROGRESS, &id).await;
    let outcome = client.outcome("1", WAIT).await;
    let job = app.job(&id).await;
    let messages = checked(&outcome, &id, 8, &document_ids(&job));

    let first = &messages[0];
    assert!(
        matches!(first["status"].as_str(), Some("QUEUED" | "RUNNING")),
        "the first message is the current state: {first:#}"
    );
    assert!(int(&first["progress"]) < 100, "{first:#}");
    let last = messages.last().unwrap();
    assert_eq!(last["status"], "COMPLETED", "{messages:#?}");
    assert_eq!(last["progress"], 100);
    assert_eq!(
        last["counts"],
        json!({"pending": 0, "processing": 0, "available": 8, "failed": 0})
    );
    assert_eq!(
        last["counts"], job["counts"],
        "the stream ends as the job did"
    );
    // Progress was followed, not just reported at the end.
    let intermediate = messages.len() - 1;
    let steps: HashSet<i64> = messages.iter().map(|m| int(&m["progress"])).collect();
    assert!(
        intermediate >= 4 && steps.len() >= 4,
        "too few intermediate messages: {messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m["document"]["status"] == "AVAILABLE"),
        "document changes are reported: {messages:#?}"
    );
    assert!(
        started.elapsed() > Duration::from_millis(500),
        "the job was meant to take a while"
    );
    // `complete` was the end: nothing follows.
    client.assert_silent(Duration::from_millis(300)).await;
    client.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graphql_transport_ws_follows_a_job_to_its_end() {
    follows_a_job_to_its_end(Protocol::TransportWs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legacy_graphql_ws_follows_a_job_to_its_end() {
    follows_a_job_to_its_end(Protocol::Legacy).await;
}

// ---------------------------------------------------------------------------------------------
// Finished and unknown jobs
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_job_gives_one_terminal_message_then_completes() {
    let court = Court::start().await;
    let n = number(2);
    let empty = number(3);
    add_docs(&court, &n, 3, 1_000, None);
    court.add_process(&empty, vec![]);
    let app = TestApp::spawn(court).await;

    let id = job_id(&app.start(&n, false).await);
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    // A job with no documents is over as soon as it exists.
    let empty_id = job_id(&app.start(&empty, false).await);

    for protocol in [Protocol::TransportWs, Protocol::Legacy] {
        let mut client = WsClient::connect(app.addr, protocol, &app.key).await;
        for (op, job_id, total) in [("a", &id, 3), ("b", &empty_id, 0)] {
            client
                .subscribe(op, PROGRESS, json!({ "id": job_id }))
                .await;
            let outcome = client.outcome(op, WAIT).await;
            let messages = checked(&outcome, job_id, total, &document_ids(&job));
            assert_eq!(messages.len(), 1, "{protocol:?}: {messages:#?}");
            assert_eq!(messages[0]["status"], "COMPLETED");
            assert_eq!(messages[0]["progress"], 100);
            client.assert_silent(Duration::from_millis(200)).await;
        }
        // The connection stays usable after its operations completed.
        client.subscribe("c", PROGRESS, json!({ "id": id })).await;
        let again = client.outcome("c", WAIT).await;
        assert_eq!(checked(&again, &id, 3, &document_ids(&job)).len(), 1);
        client.close().await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_job_is_job_not_found_in_both_protocols() {
    let court = Court::start().await;
    let app = TestApp::spawn(court).await;
    let unknown = uuid::Uuid::new_v4().to_string();

    for protocol in [Protocol::TransportWs, Protocol::Legacy] {
        let mut client = WsClient::connect(app.addr, protocol, &app.key).await;
        for (op, id) in [("1", unknown.as_str()), ("2", "not-a-job"), ("3", "")] {
            client.subscribe(op, PROGRESS, json!({ "id": id })).await;
            let outcome = client.outcome(op, WAIT).await;
            let errors = operation_errors(&outcome);
            assert_eq!(errors.len(), 1, "{protocol:?} {id:?}: {outcome:#?}");
            assert_eq!(
                errors[0]["extensions"]["code"], "JOB_NOT_FOUND",
                "{protocol:?} {id:?}: {outcome:#?}"
            );
            if protocol == Protocol::TransportWs {
                // graphql-transport-ws reports execution errors as `next` then `complete`.
                assert_eq!(outcome.end, End::Complete, "{outcome:#?}");
            }
        }
        client.assert_silent(Duration::from_millis(200)).await;
        client.close().await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_job_ends_the_stream_with_cancelled() {
    let court = Court::start().await;
    let n = number(4);
    slow_job(&court, &n);
    let app = TestApp::spawn(court).await;

    let id = job_id(&app.start(&n, false).await);
    let mut client = subscribe(&app, Protocol::TransportWs, PROGRESS, &id).await;
    let first = client.event().await;
    let body = app
        .gql(
            "mutation($id: ID!) { cancelJob(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(body["data"]["cancelJob"]["status"], "CANCELLED", "{body:#}");
    let mut outcome = client.outcome("1", WAIT).await;
    match first {
        common::ws::Event::Next { payload, .. } => {
            outcome.payloads.insert(0, payload);
            outcome.arrived.insert(0, Instant::now());
        }
        other => panic!("expected the current state, got {other:?}"),
    }
    let job = app.job(&id).await;
    let messages = checked(&outcome, &id, 8, &document_ids(&job));
    let last = messages.last().unwrap();
    assert_eq!(last["status"], "CANCELLED", "{messages:#?}");
    assert_eq!(last["progress"], 100);
    client.assert_silent(Duration::from_millis(200)).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// serve and work as separate processes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_from_a_work_process_reach_subscribers_of_a_serve_process() {
    let court = Court::start().await;
    let n = number(5);
    slow_job(&court, &n);
    let db = TestDb::new().await;
    let s3 = TestS3::start().await;
    let addr = free_port();

    let mut serve = autos_process("serve", &db, &s3, &court, addr)
        .spawn()
        .expect("spawn autos serve");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = serve.try_wait().expect("serve process") {
            panic!("autos serve exited: {status}");
        }
        let ready = reqwest::get(format!("http://{addr}/readyz")).await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "autos serve never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A key made as `autos key create` makes one, in the database the process uses.
    let key = create_key(&db.url, TENANT, &[autos::auth::Scope::Write]).await;
    let http = client_with(&key);

    // No worker runs yet: the job waits, and both subscribers see it queued.
    let id = start_job(&http, addr, &n).await;
    let mut subscribers = Vec::new();
    for protocol in [Protocol::TransportWs, Protocol::Legacy] {
        let mut client = WsClient::connect(addr, protocol, &key).await;
        client.subscribe("1", PROGRESS, json!({ "id": id })).await;
        subscribers.push(client);
    }
    let mut firsts = Vec::new();
    for client in &mut subscribers {
        let first = client.event().await;
        let common::ws::Event::Next { payload, .. } = first else {
            panic!("expected the current state, got {first:?}");
        };
        assert_eq!(
            payload["data"]["jobProgress"]["status"], "QUEUED",
            "{payload:#}"
        );
        assert_eq!(payload["data"]["jobProgress"]["progress"], 0, "{payload:#}");
        firsts.push(payload);
    }

    // Everything after this comes from another process, through PostgreSQL.
    let mut work = autos_process("work", &db, &s3, &court, free_port())
        .spawn()
        .expect("spawn autos work");
    let readers: Vec<_> = subscribers
        .into_iter()
        .zip(firsts)
        .map(|(mut client, first)| {
            tokio::spawn(async move {
                let mut outcome = client.outcome("1", WAIT).await;
                outcome.payloads.insert(0, first);
                outcome.arrived.insert(0, Instant::now());
                client.assert_silent(Duration::from_millis(200)).await;
                (client.protocol, outcome)
            })
        })
        .collect();
    let body = post_gql(&http, addr, JOB_QUERY, json!({ "id": id })).await;
    let documents = document_ids(&body["data"]["job"]);
    for reader in readers {
        let (protocol, outcome) = reader.await.expect("reader");
        let messages = checked(&outcome, &id, 8, &documents);
        let last = messages.last().unwrap();
        assert_eq!(last["status"], "COMPLETED", "{protocol:?}: {messages:#?}");
        assert_eq!(last["progress"], 100);
        assert!(
            messages.iter().any(|m| m["status"] == "RUNNING"),
            "{protocol:?}: the run itself was followed: {messages:#?}"
        );
    }
    if let Some(status) = work.try_wait().expect("work process") {
        panic!("autos work exited: {status}");
    }
    // One progress listener, in the serve process (beside its key changes' one); the work
    // process listens for tasks and cancellations only.
    let pool = db.pool().await;
    let listening: Vec<String> = listeners(&pool).await.into_iter().map(|l| l.1).collect();
    assert_eq!(listening.len(), 4, "{listening:?}");
    assert!(
        listening[0].starts_with(r#"LISTEN "autos_cancelled""#),
        "{listening:?}"
    );
    assert!(
        listening[1].starts_with(r#"LISTEN "autos_keys""#),
        "{listening:?}"
    );
    assert!(
        listening[2].starts_with(r#"LISTEN "autos_progress""#),
        "{listening:?}"
    );
    assert!(
        listening[3].starts_with(r#"LISTEN "autos_tasks""#),
        "{listening:?}"
    );
    pool.close().await;
    work.kill().await.expect("kill work");
    serve.kill().await.expect("kill serve");
}

// ---------------------------------------------------------------------------------------------
// Slow subscribers
// ---------------------------------------------------------------------------------------------

/// Bytes the kernel may buffer between a server that writes and a client that has stopped
/// reading: the server's send buffer grows up to `tcp_wmem`'s maximum (4 MiB by default),
/// plus the client's small receive buffer and a message in flight.
fn socket_buffering() -> usize {
    let wmem_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse::<usize>().ok())
        .unwrap_or(4 << 20);
    wmem_max + (1 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_subscriber_gets_coalesced_messages_and_the_end() {
    const DOCS: usize = 16;
    const NAME_BYTES: usize = 64 * 1024;
    let court = Court::start().await;
    let n = number(6);
    // Long names make the slow subscriber's messages big, so that what the sockets can
    // buffer is a handful of messages and the server must hold the rest back.
    let docs: Vec<Doc> = (0..DOCS)
        .map(|i| {
            let name = format!("{i:02} {}.pdf", "x".repeat(NAME_BYTES));
            Doc::new(&format!("d{i}"), &name, bytes(1_000, i as u8))
        })
        .collect();
    for doc in &docs {
        // Quick documents (about 50 ms each), but each change still its own event.
        court.fail_always(
            &n,
            &doc.id,
            Fault::Slow {
                chunk: 200,
                every: Duration::from_millis(10),
            },
        );
    }
    court.add_process(&n, docs);
    let app = TestApp::spawn_with(
        court,
        Options {
            role: Role::SERVE,
            ..Options::default()
        },
    )
    .await;
    // Every big message holds at least a sixth of what the sockets can buffer.
    let copies = socket_buffering().div_ceil(6 * NAME_BYTES);
    let mut big = String::from(
        "subscription($id: ID!) { jobProgress(jobId: $id) {
            jobId status progress total at
            counts { pending processing available failed }
            document { id sourceId status }",
    );
    for i in 0..copies {
        write!(big, " n{i}: document {{ name }}").unwrap();
    }
    big.push_str(" } }");

    // The job waits for a worker while both subscribe.
    let id = job_id(&app.start(&n, false).await);
    let mut slow_client =
        WsClient::connect_small_buffer(app.addr, Protocol::TransportWs, &app.key).await;
    slow_client.subscribe("1", &big, json!({ "id": id })).await;
    let subscribed = Instant::now();
    let mut fast = WsClient::connect(app.addr, Protocol::TransportWs, &app.key).await;
    fast.subscribe("1", PROGRESS, json!({ "id": id })).await;
    let fast_reader = tokio::spawn(async move { fast.outcome("1", WAIT).await });

    let worker = app
        .another(Options {
            role: Role::WORK,
            workers: 2,
            batch_size: 8,
            ..Options::default()
        })
        .await;
    let job = app.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    let documents = document_ids(&job);
    let fast_outcome = fast_reader.await.expect("fast reader");
    let fast = checked(&fast_outcome, &id, DOCS as i64, &documents);
    // The slow subscriber has not read anything for a while; now it does.
    tokio::time::sleep(Duration::from_millis(1_500).saturating_sub(subscribed.elapsed())).await;
    let slow_outcome = slow_client.outcome("1", WAIT).await;
    let slow = checked(&slow_outcome, &id, DOCS as i64, &documents);

    for (who, messages) in [("slow", &slow), ("fast", &fast)] {
        let last = messages.last().unwrap();
        assert_eq!(last["status"], "COMPLETED", "{who}");
        assert_eq!(last["progress"], 100, "{who}");
    }
    let big_ones = slow
        .iter()
        .filter(|m| {
            m["n0"]["name"]
                .as_str()
                .is_some_and(|s| s.len() > NAME_BYTES)
        })
        .count();
    assert!(
        big_ones > 0,
        "the slow subscriber's messages are the big ones"
    );
    // Every document changed twice (PENDING → PROCESSING → AVAILABLE).
    assert!(
        slow.len() < 2 * DOCS,
        "the slow subscriber got every change: {}",
        slow.len()
    );
    assert!(
        slow.len() < fast.len(),
        "the slow subscriber got {} messages, the fast one {}",
        slow.len(),
        fast.len()
    );
    slow_client.assert_silent(Duration::from_millis(200)).await;
    worker.stop().await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The listening connection dies
// ---------------------------------------------------------------------------------------------

/// Backends of the test database whose last statement was a LISTEN, as (pid, query).
/// The four listening connections of an `all` process (cancellations, key changes, progress,
/// the queue's wake-ups), ordered by channel, once all four are there (some connect in the
/// background after start, or reconnect after a loss).
async fn listeners(pool: &sqlx::PgPool) -> Vec<(i32, String)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let listening: Vec<(i32, String)> = sqlx::query_as(
            "SELECT pid, query FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%' ORDER BY query",
        )
        .fetch_all(pool)
        .await
        .expect("pg_stat_activity");
        if listening.len() == 4 || Instant::now() > deadline {
            return listening;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_survive_the_loss_of_the_listening_connection() {
    let court = Court::start().await;
    let n = number(7);
    add_docs(&court, &n, 10, 1_000, Some(Duration::from_millis(50)));
    let app = TestApp::spawn(court).await;
    let pool = app.db.pool().await;

    // Four listeners: cancellations, key changes, progress (this test's target) and the
    // queue's wake-ups.
    let before = listeners(&pool).await;
    assert_eq!(before.len(), 4, "{before:?}");
    assert!(
        before[0].1.starts_with(r#"LISTEN "autos_cancelled""#),
        "{before:?}"
    );
    assert!(
        before[1].1.starts_with(r#"LISTEN "autos_keys""#),
        "{before:?}"
    );
    assert!(
        before[2].1.starts_with(r#"LISTEN "autos_progress""#),
        "{before:?}"
    );
    assert!(
        before[3].1.starts_with(r#"LISTEN "autos_tasks""#),
        "{before:?}"
    );
    let (progress_pid, tasks_pid) = (before[2].0, before[3].0);

    let id = job_id(&app.start(&n, false).await);
    let mut readers = Vec::new();
    for protocol in [Protocol::TransportWs, Protocol::Legacy] {
        let mut client = subscribe(&app, protocol, PROGRESS, &id).await;
        readers.push(tokio::spawn(async move { client.outcome("1", WAIT).await }));
    }

    // Mid-job: some documents are stored, most are not.
    let deadline = Instant::now() + WAIT;
    loop {
        let job = app.job(&id).await;
        if int(&job["counts"]["available"]) >= 2 {
            assert!(int(&job["counts"]["available"]) < 8, "too late: {job:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job does not progress: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed: Vec<bool> = sqlx::query_scalar(
        r#"SELECT pg_terminate_backend(pid) FROM pg_stat_activity
           WHERE datname = current_database() AND query LIKE 'LISTEN "autos_progress"%'"#,
    )
    .fetch_all(&pool)
    .await
    .expect("terminate the listener");
    assert_eq!(
        killed,
        vec![true],
        "exactly the progress listener was killed"
    );
    let killed_at = Instant::now();

    for reader in readers {
        let outcome = reader.await.expect("reader");
        let job = app.job(&id).await;
        let messages = checked(&outcome, &id, 10, &document_ids(&job));
        let last = messages.last().unwrap();
        assert_eq!(last["status"], "COMPLETED", "{messages:#?}");
        assert_eq!(last["progress"], 100);
        let after = outcome.arrived.iter().filter(|t| **t > killed_at).count();
        assert!(
            after >= 2,
            "progress kept coming after the kill ({after} messages): {messages:#?}"
        );
    }
    // A new progress listener took over; the queue's own was left alone.
    let after = listeners(&pool).await;
    assert_eq!(after.len(), 4, "{after:?}");
    assert!(
        after[2].1.starts_with(r#"LISTEN "autos_progress""#),
        "{after:?}"
    );
    assert_ne!(after[2].0, progress_pid, "{after:?}");
    assert_eq!(after[3].0, tasks_pid, "{after:?}");
    pool.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_survive_a_listener_that_keeps_dying() {
    let court = Court::start().await;
    let n = number(8);
    add_docs(&court, &n, 10, 1_000, Some(Duration::from_millis(50)));
    let app = TestApp::spawn(court).await;
    let pool = app.db.pool().await;
    let tasks_pid = listeners(&pool).await[3].0;

    let id = job_id(&app.start(&n, false).await);
    let mut readers = Vec::new();
    for protocol in [Protocol::TransportWs, Protocol::Legacy] {
        let mut client = subscribe(&app, protocol, PROGRESS, &id).await;
        readers.push(tokio::spawn(async move { client.outcome("1", WAIT).await }));
    }
    // Kill the progress listener again and again until the job is over: notifications are
    // lost each time, and only re-reading after each reconnection can make up for them.
    let mut kills = 0;
    let deadline = Instant::now() + WAIT;
    loop {
        let killed: Vec<bool> = sqlx::query_scalar(
            r#"SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE datname = current_database() AND query LIKE 'LISTEN "autos_progress"%'"#,
        )
        .fetch_all(&pool)
        .await
        .expect("terminate the listener");
        kills += killed.iter().filter(|k| **k).count();
        let job = app.job(&id).await;
        if !matches!(job["status"].as_str(), Some("QUEUED" | "RUNNING")) {
            break;
        }
        assert!(Instant::now() < deadline, "the job does not end: {job:#}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(kills >= 5, "only {kills} kills");

    let job = app.job(&id).await;
    for reader in readers {
        let outcome = reader.await.expect("reader");
        let messages = checked(&outcome, &id, 10, &document_ids(&job));
        let last = messages.last().unwrap();
        assert_eq!(last["status"], "COMPLETED", "{messages:#?}");
    }
    let after = listeners(&pool).await;
    assert_eq!(after[3].0, tasks_pid, "the queue's listener was left alone");
    pool.close().await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Unsubscribing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unsubscribed_operation_stops_and_a_new_one_starts_from_the_current_state() {
    let court = Court::start().await;
    let n = number(9);
    slow_job(&court, &n);
    let app = TestApp::spawn(court).await;
    let id = job_id(&app.start(&n, false).await);
    let job = app.job(&id).await;
    let documents = document_ids(&job);

    let mut tasks = Vec::new();
    for protocol in [Protocol::TransportWs, Protocol::Legacy] {
        let mut client = WsClient::connect(app.addr, protocol, &app.key).await;
        let (id, documents) = (id.clone(), documents.clone());
        tasks.push(tokio::spawn(async move {
            client.subscribe("1", PROGRESS, json!({ "id": id })).await;
            let first = client.event().await;
            assert!(matches!(first, common::ws::Event::Next { .. }), "{first:?}");
            client.unsubscribe("1").await;
            // What was already in flight may still arrive (and the server may confirm with
            // `complete`); then nothing, although the job goes on.
            let settle = Instant::now() + Duration::from_millis(200);
            while let Some(event) = client
                .event_within(settle.saturating_duration_since(Instant::now()))
                .await
            {
                assert_eq!(event.id(), "1", "{event:?}");
            }
            client.assert_silent(Duration::from_millis(400)).await;

            client.subscribe("2", PROGRESS, json!({ "id": id })).await;
            let outcome = client.outcome("2", WAIT).await;
            let messages = checked(&outcome, &id, 8, &documents);
            assert_eq!(
                messages[0]["status"], "RUNNING",
                "{protocol:?}: the current state: {messages:#?}"
            );
            assert!(int(&messages[0]["progress"]) > 0, "{messages:#?}");
            assert_eq!(messages.last().unwrap()["status"], "COMPLETED");
            client.close().await;
        }));
    }
    for task in tasks {
        task.await.expect("subscriber");
    }
    app.stop().await;
}

/// An id given again on one connection replaces its operation (as the protocol does for
/// operations it runs itself): the first job's messages stop, the second's follow under the
/// same id to its end, in either protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_id_given_again_replaces_its_subscription() {
    let court = Court::start().await;
    let cases = [(number(33), number(34)), (number(35), number(36))];
    for (first, second) in &cases {
        // The first job runs on while the second is asked for.
        add_docs(&court, first, 8, 1_000, Some(Duration::from_millis(400)));
        add_docs(&court, second, 3, 1_000, Some(Duration::from_millis(50)));
    }
    let app = TestApp::spawn(court).await;
    for (protocol, (first, second)) in [Protocol::TransportWs, Protocol::Legacy]
        .into_iter()
        .zip(&cases)
    {
        let first_id = job_id(&app.start(first, false).await);
        let second_id = job_id(&app.start(second, false).await);
        let documents = document_ids(&app.job(&second_id).await);
        let mut client = WsClient::connect(app.addr, protocol, &app.key).await;
        client
            .subscribe("1", PROGRESS, json!({ "id": first_id }))
            .await;
        let seen = client.event().await;
        assert!(matches!(seen, common::ws::Event::Next { .. }), "{seen:?}");
        client
            .subscribe("1", PROGRESS, json!({ "id": second_id }))
            .await;
        let outcome = client.outcome("1", WAIT).await;
        // Messages of the first job already in flight may come first; from the first of the
        // second job on, only the second's, to its end.
        let from = outcome
            .payloads
            .iter()
            .position(|p| p["data"]["jobProgress"]["jobId"] == second_id.as_str())
            .unwrap_or_else(|| {
                panic!(
                    "{protocol:?}: no message of the second job: {:#?}",
                    outcome.payloads
                )
            });
        let rest = Outcome {
            payloads: outcome.payloads[from..].to_vec(),
            arrived: outcome.arrived[from..].to_vec(),
            end: outcome.end.clone(),
        };
        let messages = checked(&rest, &second_id, 3, &documents);
        assert_eq!(
            messages.last().unwrap()["status"],
            "COMPLETED",
            "{messages:#?}"
        );
        client.assert_silent(Duration::from_millis(300)).await;
        client.close().await;
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The serve process loses its database while the job ends
// ---------------------------------------------------------------------------------------------

/// A TCP relay to PostgreSQL that can be cut: cutting drops every relayed connection and
/// turns new ones away until it is restored.
struct Cuttable {
    addr: SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Cuttable {
    async fn start(upstream_url: &str) -> Cuttable {
        let url = url::Url::parse(upstream_url).expect("db url");
        let upstream = format!(
            "{}:{}",
            url.host_str().unwrap_or("127.0.0.1"),
            url.port().unwrap_or(5432)
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = tokio::sync::watch::channel(false);
        let watch = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = watch.subscribe();
                if *cut.borrow_and_update() {
                    continue; // dropped: the client sees the connection close
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Cuttable { addr, cut }
    }

    fn url(&self, upstream_url: &str) -> String {
        let mut url = url::Url::parse(upstream_url).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.addr.port())).unwrap();
        url.to_string()
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

async fn job_row(pool: &sqlx::PgPool, id: &str) -> (String, i32) {
    sqlx::query_as("SELECT status, available FROM download_jobs WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("job row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_ends_while_serve_has_no_database_still_reaches_its_subscribers() {
    let court = Court::start().await;
    let n = number(10);
    add_docs(&court, &n, 10, 1_000, Some(Duration::from_millis(50)));
    let db = TestDb::new().await;
    let s3 = TestS3::start().await;
    let relay = Cuttable::start(&db.url).await;
    let serve_options = Options {
        role: Role::SERVE,
        ..Options::default()
    };
    let serve = autos::app::Application::start(
        config(&relay.url(&db.url), &s3, &court.url(), &serve_options),
        Role::SERVE,
    )
    .await
    .expect("start serve");
    let addr = serve.addr.expect("serving");
    let work_options = Options {
        role: Role::WORK,
        ..Options::default()
    };
    let work = autos::app::Application::start(
        config(&db.url, &s3, &court.url(), &work_options),
        Role::WORK,
    )
    .await
    .expect("start work");
    let pool = db.pool().await;
    let key = create_key(&db.url, TENANT, &[autos::auth::Scope::Write]).await;
    let http = client_with(&key);

    let id = start_job(&http, addr, &n).await;
    let mut readers = Vec::new();
    for protocol in [Protocol::TransportWs, Protocol::Legacy] {
        let mut client = WsClient::connect(addr, protocol, &key).await;
        client.subscribe("1", PROGRESS, json!({ "id": id })).await;
        readers.push(tokio::spawn(async move { client.outcome("1", WAIT).await }));
    }

    // Late in the job, the serve process loses every database connection, its listener's
    // included; the job ends while it cannot hear about it.
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, available) = job_row(&pool, &id).await;
        assert_eq!(
            status,
            "RUNNING".to_string().min(status.clone()),
            "{status}"
        );
        if available >= 5 {
            assert!(available < 10, "too late");
            break;
        }
        assert!(Instant::now() < deadline, "the job does not progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.set_cut(true);
    loop {
        let (status, _) = job_row(&pool, &id).await;
        if status == "COMPLETED" {
            break;
        }
        assert!(Instant::now() < deadline, "the job does not end: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    relay.set_cut(false);
    let restored = Instant::now();

    let documents: HashSet<String> =
        sqlx::query_scalar("SELECT id::text FROM documents WHERE job_id = $1::uuid")
            .bind(&id)
            .fetch_all(&pool)
            .await
            .expect("documents")
            .into_iter()
            .collect();
    for reader in readers {
        let outcome = reader.await.expect("reader");
        let messages = checked(&outcome, &id, 10, &documents);
        let last = messages.last().unwrap();
        assert_eq!(last["status"], "COMPLETED", "{messages:#?}");
        assert!(
            *outcome.arrived.last().unwrap() > restored,
            "the end was only knowable after the database came back"
        );
    }
    pool.close().await;
    work.stop().await;
    serve.stop().await;
}

/// A job's watch (its refresher and its entry) ends with its last subscriber, running or
/// finished, so a long-lived serve process does not accumulate one per job ever watched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_end_with_their_last_subscriber() {
    let court = Court::start().await;
    let n = number(4242);
    court.add_process(&n, vec![Doc::new("d1", "a.pdf", bytes(1000, 1))]);
    court.fail(
        &n,
        "d1",
        vec![Fault::Slow {
            chunk: 100,
            every: std::time::Duration::from_millis(100),
        }],
    );
    let app = TestApp::spawn(court).await;
    let job_id: uuid::Uuid = app.start(&n, false).await["job"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let hub = autos::progress::Hub::start(app.db.pool().await, stop);

    let wait_for = |expected: usize| {
        let hub = hub.clone();
        async move {
            for _ in 0..100 {
                if hub.watched() == expected {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            panic!("{} watched jobs, expected {expected}", hub.watched());
        }
    };
    // Running job: two subscribers share one watch; it ends when both leave.
    let first = hub.subscribe(job_id);
    let second = hub.subscribe(job_id);
    assert_eq!(hub.watched(), 1);
    drop(first);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(hub.watched(), 1, "one subscriber is still there");
    drop(second);
    wait_for(0).await;

    // Finished job: the watch stays while its subscriber does, then goes.
    let job = app
        .wait_terminal(&job_id.to_string(), std::time::Duration::from_secs(30))
        .await;
    assert_eq!(job["status"], "COMPLETED");
    let mut late = hub.subscribe(job_id);
    let snapshot = late
        .wait_for(|s| s.is_some())
        .await
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(snapshot.job.status, "COMPLETED");
    assert_eq!(hub.watched(), 1);
    drop(late);
    wait_for(0).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Identical subscriptions share one execution
// ---------------------------------------------------------------------------------------------

/// Identical subscriptions (same document and variables) share one execution in the serve
/// process; each subscriber must still see its own whole, ordered story: a late one starts
/// from the latest state, one leaving ends nothing for the others, and once the shared
/// execution has ended a new identical subscription starts afresh (here: on a job re-opened
/// by `retryFailedDocuments`, which a stale shared execution would report as still ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_subscriptions_share_an_execution_each_with_its_whole_story() {
    let court = Court::start().await;
    let n = number(31);
    add_docs(&court, &n, 8, 1_000, Some(Duration::from_millis(50)));
    // One document fails for good (404) on the first run.
    court.fail_always(&n, "d7", Fault::Status(404, None));
    let app = TestApp::spawn(court.clone()).await;
    let id = job_id(&app.start(&n, false).await);
    let documents = document_ids(&app.job(&id).await);

    let mut early = subscribe(&app, Protocol::TransportWs, PROGRESS, &id).await;
    let mut leaving = subscribe(&app, Protocol::Legacy, PROGRESS, &id).await;
    // The early subscriber sees the job move before the late one arrives.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match early.event().await {
            common::ws::Event::Next { payload, .. } => seen.push(payload),
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut late = subscribe(&app, Protocol::Legacy, PROGRESS, &id).await;
    // The leaving subscriber goes away mid-job without a word.
    assert!(matches!(
        leaving.event().await,
        common::ws::Event::Next { .. }
    ));
    drop(leaving);

    let late = late.outcome("1", WAIT).await;
    let late_messages = checked(&late, &id, 8, &documents);
    let seen_progress = int(&seen.last().unwrap()["data"]["jobProgress"]["progress"]);
    assert!(
        int(&late_messages[0]["progress"]) >= seen_progress,
        "a late subscriber starts from the latest state: {late_messages:#?} after {seen:#?}"
    );
    assert_eq!(
        late_messages.last().unwrap()["status"],
        "COMPLETED_WITH_ERRORS"
    );

    let mut rest = early.outcome("1", WAIT).await;
    rest.payloads.splice(0..0, seen);
    let early_messages = checked(&rest, &id, 8, &documents);
    assert_eq!(
        early_messages.last(),
        late_messages.last(),
        "both saw the same end"
    );
    assert!(
        early_messages.len() >= 4,
        "the early subscriber followed the job: {early_messages:#?}"
    );

    // Re-open the job with the document healed: an identical subscription now follows the
    // new run to COMPLETED, not the shared execution that ended with the first run.
    court.heal(&n, "d7");
    let reopened = app
        .data(
            "mutation($id: ID!) { retryFailedDocuments(jobId: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert!(
        matches!(
            reopened["retryFailedDocuments"]["status"].as_str(),
            Some("QUEUED" | "RUNNING")
        ),
        "{reopened:#}"
    );
    let mut again = subscribe(&app, Protocol::TransportWs, PROGRESS, &id).await;
    let outcome = again.outcome("1", WAIT).await;
    let messages = checked(&outcome, &id, 8, &documents);
    assert_eq!(
        messages.last().unwrap()["status"],
        "COMPLETED",
        "{messages:#?}"
    );
    assert_eq!(messages.last().unwrap()["counts"]["available"], 8);
    again.close().await;
    app.stop().await;
}

/// Only subscriptions are shared: the same mutation sent twice over one WebSocket runs
/// twice (the second `startDownload` finds the job the first created).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_mutations_over_a_websocket_each_run() {
    let court = Court::start().await;
    let n = number(32);
    slow_job(&court, &n);
    let app = TestApp::spawn(court).await;
    let mut client = WsClient::connect(app.addr, Protocol::TransportWs, &app.key).await;
    let start =
        "mutation($n: String!) { startDownload(input: {number: $n}) { created job { id } } }";
    client.subscribe("1", start, json!({ "n": n })).await;
    let first = client.outcome("1", WAIT).await;
    client.subscribe("2", start, json!({ "n": n })).await;
    let second = client.outcome("2", WAIT).await;
    let created = |outcome: &Outcome| {
        assert_eq!(outcome.end, End::Complete, "{outcome:?}");
        assert_eq!(outcome.payloads.len(), 1, "{outcome:?}");
        let started = &outcome.payloads[0]["data"]["startDownload"];
        (started["created"].clone(), job_id(started))
    };
    let (first_created, first_job) = created(&first);
    let (second_created, second_job) = created(&second);
    assert_eq!(first_created, true);
    assert_eq!(
        second_created, false,
        "the second call ran, and found the job"
    );
    assert_eq!(first_job, second_job);
    client.close().await;
    app.stop().await;
}

//! N concurrent `jobProgress` subscribers (graphql-transport-ws) on one job, all on one
//! `autos serve` process, while a separate `autos work` process runs the job.
//!
//! The subscribers are held by client processes of their own (this bench binary again, mode
//! `subscriber-clients`, `BENCH_CLIENT_PROCESSES` of them, default 2), each on one thread
//! (tokio's current-thread runtime, tokio-tungstenite), whose CPU is reported: a client that
//! shares the server's runtime, or that takes cores from it, makes the server look faster or
//! slower than it is.
//!
//! The court holds the job's documents (`BENCH_FANOUT_DOCS`, default 30) until every
//! subscriber has its first message; then it answers one document every
//! `BENCH_FANOUT_DOC_MS` (default 300 ms, one worker): a job of about ten seconds, each
//! document's change a progress message to every subscriber. Each subscriber's receipt of the
//! terminal message is timed against the job's `completedAt` (set in the worker's committing
//! transaction; same machine, same clock). Reports the latency percentiles, the messages
//! received, the serve process's memory per subscriber and CPU, and the clients' CPU.

use super::{
    authorization, authorize, autos_binary, cpu_seconds_of, drop_database, free_port,
    fresh_database, gql, profile_pause, spawn_autos, start_job, wait_ready, KEY, SECRET,
};
use autos::embedded::s3::EmbeddedS3;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const NUMBER: &str = "1000123-63.2023.5.02.0011";

/// A court whose `docs` documents are held until the gate opens, then answered one every
/// `every` (each after `every` more than the one before).
async fn gated_court(gate: watch::Receiver<bool>, docs: usize, every: Duration) -> String {
    let body = Arc::new(vec![7u8; 16 * 1024]);
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body.as_slice()));
    let documents: Vec<Value> = (0..docs)
        .map(|i| {
            json!({"id": format!("d{i}"), "name": format!("Peca{i}.pdf"),
                        "url": format!("files/{i}"), "size": body.len(), "sha256": sha})
        })
        .collect();
    let listing = json!({"number": NUMBER, "court": "TRT2", "documents": documents});
    let app = Router::new()
        .route(
            "/processes/{number}",
            get(move |Path(n): Path<String>| {
                let listing = listing.clone();
                async move {
                    if n == NUMBER {
                        Json(listing).into_response()
                    } else {
                        axum::http::StatusCode::NOT_FOUND.into_response()
                    }
                }
            }),
        )
        .route("/files/{i}", get(file))
        .with_state((gate, body, every));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn file(
    State((mut gate, body, every)): State<(watch::Receiver<bool>, Arc<Vec<u8>>, Duration)>,
) -> Response {
    let _ = gate.wait_for(|open| *open).await;
    tokio::time::sleep(every).await;
    body.as_ref().clone().into_response()
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects, subscribes, and waits for the first message. `distinct` makes this subscriber's
/// document unlike any other's (an alias of its own), so that it gets an execution of its own.
async fn subscribe(addr: &str, auth: &str, job_id: &str, distinct: Option<usize>) -> Socket {
    let mut request = format!("ws://{addr}/graphql")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    // Small buffers, as the server has: tungstenite zero-fills its 128 KiB default read buffer
    // on every read, which made the clients' memset a sixth of the machine's CPU during the
    // fan-out — CPU the server under test would then not have.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .unwrap();
    ws.send(Message::text(
        json!({"type": "connection_init", "payload": {"authorization": auth}}).to_string(),
    ))
    .await
    .unwrap();
    next_of(&mut ws, "connection_ack").await;
    let alias = distinct.map(|i| format!("p{i}: ")).unwrap_or_default();
    let query = format!(
        "subscription($id: ID!) {{ {alias}jobProgress(jobId: $id) {{ status progress at }} }}"
    );
    ws.send(Message::text(
        json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": {"id": job_id}}})
            .to_string(),
    ))
    .await
    .unwrap();
    next_of(&mut ws, "next").await;
    ws
}

async fn next_of(ws: &mut Socket, kind: &str) -> Value {
    loop {
        let message = ws.next().await.expect("socket closed").unwrap();
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == kind {
                return value;
            }
            assert_ne!(value["type"], "error", "{value}");
        }
    }
}

/// Reads until the terminal message; returns when it arrived, how many messages came, and the
/// socket, still open. (A substring test, not a JSON parse: the client shares the machine
/// with the server, and its own CPU would otherwise be part of what is measured. For the
/// same reason no socket is closed before every subscriber has its terminal message: 10,000
/// closing handshakes would load the same two cores while the others are still being served.)
async fn until_terminal(mut ws: Socket) -> (SystemTime, usize, Socket) {
    let mut messages = 1;
    loop {
        let message = ws.next().await.expect("socket closed").unwrap();
        let Message::Text(text) = message else {
            continue;
        };
        if !text.contains("\"type\":\"next\"") {
            assert!(!text.contains("\"type\":\"error\""), "{text}");
            continue;
        }
        messages += 1;
        if !(text.contains("\"status\":\"QUEUED\"") || text.contains("\"status\":\"RUNNING\"")) {
            return (SystemTime::now(), messages, ws);
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Mode `subscriber-clients` (run by [`run`], on a current-thread runtime): opens
/// `BENCH_SUB_COUNT` subscriptions to `BENCH_SUB_JOB` on `BENCH_SUB_ADDR`, prints `ready`
/// once each has its first message, then reads until every one has its terminal message and
/// prints `cpu <seconds since ready> messages <n>` and each receipt time (ns since the epoch),
/// one per line, keeping its sockets open until then.
pub async fn clients_child() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let (addr, auth, job) = (
        var("BENCH_SUB_ADDR"),
        var("BENCH_SUB_AUTH"),
        var("BENCH_SUB_JOB"),
    );
    let count: usize = var("BENCH_SUB_COUNT").parse().unwrap();
    let distinct: Option<usize> = std::env::var("BENCH_SUB_DISTINCT_FROM")
        .ok()
        .and_then(|v| v.parse().ok());
    let sockets: Vec<Socket> = futures::stream::iter(0..count)
        .map(|i| subscribe(&addr, &auth, &job, distinct.map(|from| from + i)))
        .buffer_unordered(128)
        .collect()
        .await;
    let mut out = std::io::stdout();
    out.write_all(b"ready\n").unwrap();
    out.flush().unwrap();
    let cpu = cpu_seconds_of("self");
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(until_terminal(ws)))
        .collect();
    let mut receipts = Vec::with_capacity(count);
    let mut messages = 0;
    let mut open = Vec::with_capacity(count);
    for reader in readers {
        let (at, n, ws) = reader.await.unwrap();
        receipts.push(at);
        messages += n;
        open.push(ws);
    }
    let cpu = cpu_seconds_of("self") - cpu;
    let mut report = format!("cpu {cpu:.3} messages {messages}\n");
    for at in receipts {
        let ns = at.duration_since(UNIX_EPOCH).unwrap().as_nanos();
        report.push_str(&format!("{ns}\n"));
    }
    out.write_all(report.as_bytes()).unwrap();
    out.flush().unwrap();
    drop(open);
}

/// A client process of [`clients_child`], started, with its output's lines.
struct Clients {
    child: tokio::process::Child,
    count: usize,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Clients {
    fn spawn(addr: &str, job_id: &str, count: usize, distinct_from: Option<usize>) -> Clients {
        let exe = std::env::current_exe().expect("the bench's own executable");
        let mut command = tokio::process::Command::new(exe);
        command
            .arg("subscriber-clients")
            .env("BENCH_SUB_ADDR", addr)
            .env("BENCH_SUB_AUTH", authorization())
            .env("BENCH_SUB_JOB", job_id)
            .env("BENCH_SUB_COUNT", count.to_string())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(from) = distinct_from {
            command.env("BENCH_SUB_DISTINCT_FROM", from.to_string());
        }
        let mut child = command.spawn().expect("start a subscriber client process");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Clients {
            child,
            count,
            lines,
        }
    }

    async fn line(&mut self) -> String {
        self.lines
            .next_line()
            .await
            .unwrap()
            .expect("a subscriber client process ended early")
    }
}

/// Runs the benchmark with `count` subscribers.
pub async fn run(admin: &str, count: usize) {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    // BENCH_DISTINCT=1: every subscriber with a document of its own (no shared execution).
    let distinct = std::env::var_os("BENCH_DISTINCT").is_some();
    let processes = env("BENCH_CLIENT_PROCESSES", 2).max(1);
    let docs = env("BENCH_FANOUT_DOCS", 30).max(1);
    let every = Duration::from_millis(env("BENCH_FANOUT_DOC_MS", 300) as u64);
    let (open, gate) = watch::channel(false);
    let court = gated_court(gate, docs, every).await;
    let dir =
        std::env::temp_dir().join(format!("autos-bench-s3-{}", uuid::Uuid::new_v4().simple()));
    let s3 = EmbeddedS3::start(&dir, "127.0.0.1:0".parse().unwrap(), KEY, SECRET)
        .await
        .unwrap();
    let db = fresh_database(admin).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut serve = spawn_autos(
        &autos_binary(),
        "serve",
        &db,
        s3.endpoint(),
        &court,
        &[("AUTOS_BIND", addr.clone())],
    );
    wait_ready(&addr).await;
    authorize(&db).await;
    let mut work = spawn_autos(
        &autos_binary(),
        "work",
        &db,
        s3.endpoint(),
        &court,
        &[("AUTOS_WORKERS", "1".into())],
    );

    let job_id = start_job(&addr, NUMBER, None).await;

    let pid = serve.id().unwrap();
    let rss_before = rss_kib(pid);
    let started = Instant::now();
    let share = count.div_ceil(processes);
    let mut clients: Vec<Clients> = (0..processes)
        .map(|p| {
            let n = share.min(count - (p * share).min(count));
            Clients::spawn(&addr, &job_id, n, distinct.then_some(p * share))
        })
        .collect();
    for client in &mut clients {
        assert_eq!(client.line().await, "ready");
    }
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kib(pid);
    let cpu_before = cpu_seconds_of(&pid.to_string());

    profile_pause(&format!(
        "serve pid {pid}, work pid {:?}: the fan-out",
        work.id()
    ))
    .await;
    let _ = open.send(true);
    let mut receipts = Vec::with_capacity(count);
    let mut messages = 0;
    let mut client_cpu = Vec::new();
    for client in &mut clients {
        let summary = client.line().await;
        let words: Vec<&str> = summary.split_whitespace().collect();
        client_cpu.push(words[1].parse::<f64>().unwrap());
        messages += words[3].parse::<usize>().unwrap();
        for _ in 0..client.count {
            let ns: u64 = client.line().await.parse().unwrap();
            receipts.push(UNIX_EPOCH + Duration::from_nanos(ns));
        }
    }
    let cpu = cpu_seconds_of(&pid.to_string()) - cpu_before;
    for client in &mut clients {
        let _ = client.child.wait().await;
    }
    assert_eq!(receipts.len(), count, "every subscriber's terminal message");

    let job = gql(
        &addr,
        "query($id: ID!) { job(id: $id) { status completedAt startedAt } }",
        json!({"id": job_id}),
    )
    .await;
    let completed: chrono::DateTime<chrono::Utc> = job["data"]["job"]["completedAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let completed: SystemTime = completed.into();
    let mut latencies: Vec<f64> = receipts
        .iter()
        .map(|r| {
            r.duration_since(completed)
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "subscribers: {count} on one serve process{}, held by {processes} client processes of one thread each; \
         a job of {docs} documents; all got the terminal message ({messages} messages in all, {:.1} per subscriber); \
         connected in {:.1} s",
        if distinct {
            ", each with a subscription document of its own"
        } else {
            ", identical subscriptions"
        },
        messages as f64 / count as f64,
        connect_time.as_secs_f64()
    );
    println!(
        "commit-to-receipt latency of the terminal message: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "serve process: RSS {:.1} MiB before, {:.1} MiB with the subscribers ({:.1} KiB per subscriber); \
         CPU from the gate's opening to the last receipt: {:.2} s",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        (rss_after.saturating_sub(rss_before)) as f64 / count as f64,
        cpu
    );
    println!(
        "client processes' CPU over the same span: {:.2} s in all ({})",
        client_cpu.iter().sum::<f64>(),
        client_cpu
            .iter()
            .map(|c| format!("{c:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = serve.kill().await;
    let _ = work.kill().await;
    drop_database(admin, &db).await;
    s3.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

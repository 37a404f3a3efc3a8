//! N concurrent `jobProgress` subscribers (graphql-transport-ws) on one job, all on one
//! `autos serve` process, while a separate `autos work` process runs the job.
//!
//! The court holds the job's document until every subscriber has its first message; then the
//! document completes, and each subscriber's receipt of the terminal message is timed against
//! the job's `completedAt` (set in the worker's committing transaction; same machine, same
//! clock). Reports the latency percentiles, the serve process's memory per subscriber and the
//! CPU its fan-out used.

use super::{
    authorization, authorize, autos_binary, cpu_seconds_of, drop_database, free_port,
    fresh_database, gql, profile_pause, spawn_autos, wait_ready, KEY, SECRET,
};
use autos::embedded::s3::EmbeddedS3;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const NUMBER: &str = "1000123-63.2023.5.02.0011";

/// A court whose only document is held until the gate opens.
async fn gated_court(gate: watch::Receiver<bool>) -> String {
    let body = Arc::new(vec![7u8; 64 * 1024]);
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body.as_slice()));
    let listing = json!({"number": NUMBER, "court": "TRT2", "documents": [
        {"id": "d0", "name": "Ata.pdf", "url": "files/d0", "size": body.len(), "sha256": sha}]});
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
        .route("/files/d0", get(file))
        .with_state((gate, body));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn file(State((mut gate, body)): State<(watch::Receiver<bool>, Arc<Vec<u8>>)>) -> Response {
    let _ = gate.wait_for(|open| *open).await;
    body.as_ref().clone().into_response()
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects, subscribes, and waits for the first message. `distinct` makes this subscriber's
/// document unlike any other's (an alias of its own), so that it gets an execution of its own.
async fn subscribe(addr: &str, job_id: &str, distinct: Option<usize>) -> Socket {
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
        json!({"type": "connection_init", "payload": {"authorization": authorization()}})
            .to_string(),
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

/// Runs the benchmark with `count` subscribers.
pub async fn run(admin: &str, count: usize) {
    // BENCH_DISTINCT=1: every subscriber with a document of its own (no shared execution).
    let distinct = std::env::var_os("BENCH_DISTINCT").is_some();
    let (open, gate) = watch::channel(false);
    let court = gated_court(gate).await;
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

    let body = gql(
        &addr,
        "mutation($n: String!) { startDownload(input: {number: $n}) { job { id } } }",
        json!({"n": NUMBER}),
    )
    .await;
    let job_id = body["data"]["startDownload"]["job"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_string();

    let pid = serve.id().unwrap();
    let rss_before = rss_kib(pid);
    let started = Instant::now();
    let sockets: Vec<Socket> = futures::stream::iter(0..count)
        .map(|i| subscribe(&addr, &job_id, distinct.then_some(i)))
        .buffer_unordered(256)
        .collect()
        .await;
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kib(pid);
    let cpu_before = cpu_seconds_of(&pid.to_string());

    profile_pause(&format!(
        "serve pid {pid}, work pid {:?}: the fan-out",
        work.id()
    ))
    .await;
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(until_terminal(ws)))
        .collect();
    let _ = open.send(true);
    let mut receipts = Vec::with_capacity(count);
    let mut messages = 0;
    let mut open_sockets = Vec::with_capacity(count);
    for reader in readers {
        let (at, n, ws) = reader.await.unwrap();
        receipts.push(at);
        messages += n;
        open_sockets.push(ws);
    }
    let cpu = cpu_seconds_of(&pid.to_string()) - cpu_before;
    drop(open_sockets);

    let job = gql(
        &addr,
        "query($id: ID!) { job(id: $id) { status completedAt } }",
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
        "subscribers: {count} on one serve process{}; all got the terminal message ({} messages in all); \
         connected in {:.1} s",
        if distinct {
            ", each with a subscription document of its own"
        } else {
            ", identical subscriptions"
        },
        messages,
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
         CPU for the fan-out to the end: {:.2} s",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        (rss_after.saturating_sub(rss_before)) as f64 / count as f64,
        cpu
    );
    let _ = serve.kill().await;
    let _ = work.kill().await;
    drop_database(admin, &db).await;
    s3.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

//! Requests per second of a small authenticated query on one `autos serve`, with rate
//! limiting on and off (the rounds alternate), and what an idle WebSocket connection costs
//! the serve process.
//!
//! The load comes from this process: `BENCH_CONNECTIONS` (32) keep-alive connections, each
//! sending `{ viewer { tenant } }` (1 point) one after the other for `BENCH_SECONDS` (5). Its
//! own CPU is reported beside the server's: on two cores the client is part of the load.

use super::{
    authorization, authorize, autos_binary, cpu_seconds_of, drop_database, free_port,
    fresh_database, spawn_autos, wait_ready, KEY, SECRET,
};
use autos::embedded::s3::EmbeddedS3;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const QUERY: &str = r#"{"query":"{ viewer { tenant } }"}"#;

/// One measured stretch of load: answers per second, and CPU seconds of the server and of
/// this process.
async fn load(addr: &str, connections: usize, seconds: u64, pid: u32) -> (f64, f64, f64) {
    let url = format!("http://{addr}/graphql");
    let auth = authorization();
    // Warm up: connections open, caches filled.
    let warm = reqwest::Client::new();
    for _ in 0..50 {
        warm.post(&url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(QUERY)
            .send()
            .await
            .unwrap();
    }
    let server_before = cpu_seconds_of(&pid.to_string());
    let client_before = cpu_seconds_of("self");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (url, auth) = (url.clone(), auth.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap();
                let mut answered = 0u64;
                while Instant::now() < deadline {
                    let response = client
                        .post(&url)
                        .header("authorization", &auth)
                        .header("content-type", "application/json")
                        .body(QUERY)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200, "{:?}", response.text().await);
                    response.bytes().await.unwrap();
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let mut answered = 0;
    for worker in workers {
        answered += worker.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    (
        answered as f64 / elapsed,
        cpu_seconds_of(&pid.to_string()) - server_before,
        cpu_seconds_of("self") - client_before,
    )
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Opens `count` WebSocket connections past `connection_init`, no operation on them.
async fn idle_sockets(
    addr: &str,
    count: usize,
) -> Vec<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>>
{
    futures::stream::iter(0..count)
        .map(|_| async move {
            let mut request = format!("ws://{addr}/graphql")
                .into_client_request()
                .unwrap();
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                "graphql-transport-ws".parse().unwrap(),
            );
            let config = WebSocketConfig::default()
                .read_buffer_size(4 * 1024)
                .write_buffer_size(4 * 1024);
            let (mut ws, _) =
                tokio_tungstenite::connect_async_with_config(request, Some(config), true)
                    .await
                    .unwrap();
            ws.send(Message::text(
                json!({"type": "connection_init", "payload": {"authorization": authorization()}})
                    .to_string(),
            ))
            .await
            .unwrap();
            while let Some(message) = ws.next().await {
                if let Message::Text(text) = message.unwrap() {
                    assert!(text.contains("connection_ack"), "{text}");
                    break;
                }
            }
            ws
        })
        .buffer_unordered(256)
        .collect()
        .await
}

/// Runs the benchmark: `rounds` of each setting, alternating, then the idle connections.
pub async fn run(admin: &str, rounds: usize, connections: usize, seconds: u64, sockets: usize) {
    let dir =
        std::env::temp_dir().join(format!("autos-bench-s3-{}", uuid::Uuid::new_v4().simple()));
    let s3 = EmbeddedS3::start(&dir, "127.0.0.1:0".parse().unwrap(), KEY, SECRET)
        .await
        .unwrap();
    // Nothing here asks the court.
    let court = "http://127.0.0.1:9/";
    println!(
        "requests: `{{ viewer {{ tenant }} }}` with a key, {connections} connections, {seconds} s per round, {rounds} rounds of each"
    );
    println!("| round | rate limiting | answers/s | serve CPU (s) | client CPU (s) |");
    println!("|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let mut rates = [0.0f64; 2];
        // Alternate who goes first, so that neither always meets the warmer machine.
        let order: [bool; 2] = if round % 2 == 1 {
            [true, false]
        } else {
            [false, true]
        };
        for on in order {
            let db = fresh_database(admin).await;
            let addr = format!("127.0.0.1:{}", free_port());
            // On: a budget never reached, so that every request is counted and none refused.
            let limit = if on { "1000000000000" } else { "0" };
            let mut serve = spawn_autos(
                &autos_binary(),
                "serve",
                &db,
                s3.endpoint(),
                court,
                &[
                    ("AUTOS_BIND", addr.clone()),
                    ("AUTOS_RATE_LIMIT", limit.to_string()),
                ],
            );
            wait_ready(&addr).await;
            authorize(&db).await;
            let pid = serve.id().unwrap();
            let (rate, server_cpu, client_cpu) = load(&addr, connections, seconds, pid).await;
            println!(
                "| {round} | {} | {rate:.0} | {server_cpu:.2} | {client_cpu:.2} |",
                if on { "on" } else { "off" }
            );
            rates[usize::from(on)] = rate;
            let _ = serve.kill().await;
            drop_database(admin, &db).await;
        }
        ratios.push(rates[1] / rates[0]);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median answers/s with rate limiting on / off: {:.3}",
        ratios[ratios.len() / 2]
    );

    let db = fresh_database(admin).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut serve = spawn_autos(
        &autos_binary(),
        "serve",
        &db,
        s3.endpoint(),
        court,
        &[("AUTOS_BIND", addr.clone())],
    );
    wait_ready(&addr).await;
    authorize(&db).await;
    let pid = serve.id().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let open = idle_sockets(&addr, sockets).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    println!(
        "idle WebSocket connections: {sockets} past connection_init; serve RSS {:.1} MiB before, {:.1} MiB with them ({:.1} KiB each)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 / sockets as f64
    );
    drop(open);
    let _ = serve.kill().await;
    drop_database(admin, &db).await;
    s3.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

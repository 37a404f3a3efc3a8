//! Start-up and stop as an operator sees them: a database that lacks migrations is refused
//! with `AUTOS_MIGRATE=false` (nothing served, nothing written), and a stopping `serve` tells
//! its WebSocket subscribers to reconnect (close 1001) instead of ending their subscriptions
//! as if their jobs were over, and stops taking connections.

mod common;

use common::ws::{Protocol, WsClient};
use common::*;
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// Whether the table `name` exists in the database of `db`.
async fn has_table(db: &TestDb, name: &str) -> bool {
    let pool = db.pool().await;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(name)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    exists
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmigrated_database_is_refused_until_autos_migrate_runs() {
    let court = Court::start().await;
    let s3 = TestS3::start().await;
    let db = TestDb::new().await;

    for role in ["serve", "work", "all"] {
        let mut serve = autos_process(role, &db, &s3, &court, free_port());
        serve.env("AUTOS_MIGRATE", "false").stderr(Stdio::piped());
        let out = tokio::time::timeout(WAIT, serve.output())
            .await
            .expect("start-up ends by itself")
            .expect("run autos");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{role} started: {stderr}");
        assert!(
            stderr.contains("run `autos migrate`") && stderr.contains("AUTOS_MIGRATE=false"),
            "{role}: the message says what to do: {stderr}"
        );
    }
    assert!(
        !has_table(&db, "download_jobs").await,
        "nothing was created in the database"
    );

    let migrate = autos_process("migrate", &db, &s3, &court, free_port())
        .output()
        .await
        .expect("run autos migrate");
    assert!(migrate.status.success(), "autos migrate failed");

    // Migrated: the same command starts and serves.
    let bind = free_port();
    let mut serve = autos_process("serve", &db, &s3, &court, bind);
    serve.env("AUTOS_MIGRATE", "false");
    let mut child = serve.spawn().expect("start autos serve");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(answer) = http.get(format!("http://{bind}/readyz")).send().await {
            assert_eq!(answer.status(), 200);
            let body: serde_json::Value = answer.json().await.unwrap();
            assert_eq!(
                body,
                json!({"database": true, "storage": true, "outages": []})
            );
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "autos serve exited");
        assert!(Instant::now() < deadline, "autos serve never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_tells_websocket_subscribers_to_reconnect_and_takes_no_new_connection() {
    let court = Court::start().await;
    let n = number(4101);
    court.add_process(&n, vec![Doc::new("d1", "a.pdf", bytes(1000, 1))]);
    // API only: the job waits, and its subscribers with it.
    let options = Options {
        role: autos::app::Role::SERVE,
        ..Options::default()
    };
    let mut test = TestApp::spawn_with(court, options).await;
    let started = test.start(&n, false).await;
    let job = started["job"]["id"].as_str().expect("a job").to_string();

    let mut clients = Vec::new();
    for protocol in [Protocol::TransportWs, Protocol::Legacy] {
        let mut ws = WsClient::connect(test.addr, protocol, &test.key).await;
        ws.subscribe(
            "p",
            "subscription($id: ID!) { jobProgress(jobId: $id) { status waitingFor { dependency } } }",
            json!({ "id": job }),
        )
        .await;
        let first = ws.event().await;
        assert!(
            matches!(&first, common::ws::Event::Next { payload, .. }
                if payload["data"]["jobProgress"]["status"] == "QUEUED"
                    && payload["data"]["jobProgress"]["waitingFor"] == json!([])),
            "{first:?}"
        );
        clients.push(ws);
    }

    let app = test.app.take().expect("running");
    let stopping = tokio::spawn(app.stop());
    for mut ws in clients {
        let (messages, code) = ws
            .messages_until_closed(Instant::now() + Duration::from_secs(20))
            .await;
        assert_eq!(code, Some(1001), "going away, not an error: {messages:?}");
        assert!(
            messages.iter().all(|m| m["type"] != "complete"),
            "a subscription must not look finished because the server stops: {messages:?}"
        );
    }
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("the stop ends")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(test.addr).await.is_err(),
        "a stopped server takes no connection"
    );
    test.stop().await;
}

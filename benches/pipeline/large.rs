//! One job of `BENCH_LARGE_DOCS` (default 100,000) tiny documents (`BENCH_LARGE_DOC_BYTES`,
//! default 256) through `autos all` at its defaults (4 workers, batches of 5), with the
//! documents-per-process quota raised to fit: the time from `startDownload` to the first
//! transfer and to the end, the memory of every process, the CPU of autos and PostgreSQL,
//! the sweeper's statements on the full tables, the query times of `job { counts }` and of a
//! page of `documents` (first and deep), how a second, small job (10 documents, another
//! case) fares meanwhile, and the job's webhook (every document with its link): how long
//! after the end it arrives, its size, and autos' memory once it is sent.

use super::{
    authorize, autos_binary, autos_database_url, cpu_seconds_of, drop_database, free_port,
    fresh_database, gql, peak_rss_kib, postgres_cpu, postgres_cpu_since, spawn_autos, start_court,
    start_job, throughput_store_root, wait_ready, KEY, SECRET, WARM_UP,
};
use autos::embedded::s3::EmbeddedS3;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NUMBER: &str = "1500345-31.2017.8.26.0248";

/// Times `query` once, in milliseconds, with its answer.
async fn timed(addr: &str, query: &str, variables: Value) -> (f64, Value) {
    let started = Instant::now();
    let answer = gql(addr, query, variables).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    (started.elapsed().as_secs_f64() * 1000.0, answer)
}

/// Times a read of the database, in milliseconds.
async fn timed_db<T, F: std::future::Future<Output = Result<T, sqlx::Error>>>(read: F) -> (f64, T) {
    let started = Instant::now();
    let value = read.await.expect("a sweeper read");
    (started.elapsed().as_secs_f64() * 1000.0, value)
}

fn spread(values: &mut [f64]) -> String {
    if values.is_empty() {
        return "no samples".into();
    }
    values.sort_by(f64::total_cmp);
    format!(
        "median {:.1} ms, max {:.1} ms ({} samples)",
        values[values.len() / 2],
        values[values.len() - 1],
        values.len()
    )
}

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// What the harness's webhook receiver got: when, and how many bytes.
type Received = Arc<Mutex<Vec<(chrono::DateTime<chrono::Utc>, usize)>>>;

/// A receiver of the job's webhook on a loopback port: its URL and what it got.
async fn webhook_receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(|State(got): State<Received>, body: Bytes| async move {
                got.lock().unwrap().push((chrono::Utc::now(), body.len()));
                axum::http::StatusCode::NO_CONTENT
            }),
        )
        .layer(DefaultBodyLimit::disable())
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// Runs the benchmark.
pub async fn run(admin: &str, count: usize, size: usize) {
    let (court, _) = start_court(NUMBER, count, size).await;
    let (hook, received) = webhook_receiver().await;
    let dir =
        throughput_store_root().join(format!("autos-bench-s3-{}", uuid::Uuid::new_v4().simple()));
    let s3 = EmbeddedS3::start(&dir, "127.0.0.1:0".parse().unwrap(), KEY, SECRET)
        .await
        .unwrap();
    let db = fresh_database(admin).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = spawn_autos(
        &autos_binary(),
        "all",
        &autos_database_url(&db),
        s3.endpoint(),
        &court,
        &[
            ("AUTOS_BIND", addr.clone()),
            ("AUTOS_S3_BUCKET", "large".into()),
            ("AUTOS_MAX_DOCUMENTS_PER_PROCESS", count.to_string()),
            // The harness's receiver is on loopback.
            ("AUTOS_WEBHOOK_ALLOW_PRIVATE", "true".into()),
        ],
    );
    wait_ready(&addr).await;
    authorize(&db).await;
    // As autos connects (generic plans, its costs): the sweeper's reads are timed as it runs them.
    let pool = autos::db::connect(&db, 2).await.unwrap();
    let pid = child.id().unwrap().to_string();
    let autos_cpu = cpu_seconds_of(&pid);
    let pg_before = postgres_cpu();

    let asked = Instant::now();
    let id = start_job(&addr, NUMBER, Some(&hook)).await;
    let answered = asked.elapsed();

    let counts_query = "query($id: ID!) { job(id: $id) { status startedAt completedAt createdAt \
                        counts { pending processing available failed } } }";
    let page_query = "query($id: ID!, $after: String) { job(id: $id) { \
                      documents(first: 100, after: $after) { id status downloadUrl } } }";
    let deep: uuid::Uuid = sqlx::query_scalar(
        "SELECT d.id FROM job_documents jd JOIN documents d ON d.id = jd.document_id
         WHERE jd.job_id = $1 ORDER BY jd.position OFFSET $2 LIMIT 1",
    )
    .bind(uuid::Uuid::parse_str(&id).unwrap())
    .bind((count / 2) as i64)
    .fetch_one(&pool)
    .await
    .unwrap();

    let (mut counts_ms, mut first_page_ms, mut deep_page_ms) = (vec![], vec![], vec![]);
    let mut sweeper: Vec<(&str, f64, usize)> = Vec::new();
    let mut small: Option<(Instant, String)> = None;
    let mut small_took: Option<(Duration, Value)> = None;
    let job = loop {
        let (ms, answer) = timed(&addr, counts_query, json!({"id": id})).await;
        counts_ms.push(ms);
        let job = answer["data"]["job"].clone();
        let done = job["counts"]["available"].as_u64().unwrap_or(0)
            + job["counts"]["failed"].as_u64().unwrap_or(0);
        let (ms, _) = timed(&addr, page_query, json!({"id": id, "after": null})).await;
        first_page_ms.push(ms);
        let (ms, _) = timed(
            &addr,
            page_query,
            json!({"id": id, "after": deep.to_string()}),
        )
        .await;
        deep_page_ms.push(ms);
        // A fifth of the way: a second, small job, and the sweeper's reads on full tables.
        if small.is_none() && done as usize >= count / 5 {
            let small_id = start_job(&addr, WARM_UP, None).await;
            small = Some((Instant::now(), small_id));
            let (ms, n) = timed_db(autos::db::documents::orphans(&pool, 5000)).await;
            sweeper.push(("orphaned PENDING documents (limit 5,000)", ms, n.len()));
            let (ms, n) = timed_db(autos::db::documents::expired_claims(
                &pool,
                500,
                Duration::from_secs(600),
            ))
            .await;
            sweeper.push(("expired claims (limit 500)", ms, n.len()));
            let (ms, n) = timed_db(autos::db::documents::abandoned_uploads(&pool, 100)).await;
            sweeper.push(("abandoned uploads (limit 100)", ms, n.len()));
            let (ms, n) = timed_db(autos::db::jobs::settled_but_active(&pool)).await;
            sweeper.push(("settled but active jobs", ms, n.len()));
        }
        if let (Some((since, small_id)), None) = (&small, &small_took) {
            let answer = gql(&addr, counts_query, json!({"id": small_id})).await;
            let small_job = answer["data"]["job"].clone();
            if !matches!(small_job["status"].as_str(), Some("QUEUED" | "RUNNING")) {
                small_took = Some((since.elapsed(), small_job));
            }
        }
        if !matches!(job["status"].as_str(), Some("QUEUED" | "RUNNING")) {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let autos_cpu = cpu_seconds_of(&pid) - autos_cpu;
    let (pg_cpu, pg_kinds) = postgres_cpu_since(&pg_before);
    let autos_peak = peak_rss_kib(child.id().unwrap()).unwrap_or(0);
    let harness_peak = rss_kib("self");
    let backends_peak = postgres_backends_peak_kib(&db);
    let at = |name: &str| -> chrono::DateTime<chrono::Utc> {
        job[name]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no {name}: {job}"))
    };
    let (created, first, completed) = (at("createdAt"), at("startedAt"), at("completedAt"));
    let span = (completed - created).to_std().unwrap_or_default();
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(job["counts"]["available"].as_u64(), Some(count as u64));

    // The webhook: every document with its link, in one body.
    let waited = Instant::now();
    let delivery = loop {
        if let Some(first) = received.lock().unwrap().first().copied() {
            break Some(first);
        }
        if waited.elapsed() > Duration::from_secs(600) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let autos_peak_after_webhook = peak_rss_kib(child.id().unwrap()).unwrap_or(0);
    let (webhook_query_ms, _) = timed(
        &addr,
        "query($id: ID!) { job(id: $id) { webhook { url sent attempts lastError } } }",
        json!({"id": id}),
    )
    .await;
    // What the deliveries take in the database, their TOAST included.
    let stored: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('webhook_deliveries')")
        .fetch_one(&pool)
        .await
        .unwrap();

    println!(
        "one job of {count} documents of {size} bytes, `autos all` at its defaults; it ended {}",
        job["status"]
    );
    println!(
        "startDownload answered in {:.0} ms; created → first transfer claimed {:.0} ms; created → completed {:.1} s ({:.0} documents/s)",
        answered.as_secs_f64() * 1000.0,
        (first - created).num_microseconds().unwrap_or(0) as f64 / 1000.0,
        span.as_secs_f64(),
        count as f64 / span.as_secs_f64()
    );
    println!(
        "CPU: autos {autos_cpu:.1} s, PostgreSQL {pg_cpu:.1} s ({:.3} ms per document together) ({pg_kinds:?})",
        (autos_cpu + pg_cpu) * 1000.0 / count as f64
    );
    println!(
        "peak RSS: autos {:.1} MiB, the harness (court and store) {:.1} MiB, largest PostgreSQL backend of the run {:.1} MiB",
        autos_peak as f64 / 1024.0,
        harness_peak as f64 / 1024.0,
        backends_peak as f64 / 1024.0
    );
    println!("`job {{ counts }}`: {}", spread(&mut counts_ms));
    println!(
        "`documents(first: 100)`, first page: {}",
        spread(&mut first_page_ms)
    );
    println!(
        "`documents(first: 100, after: the {}th)`: {}",
        count / 2,
        spread(&mut deep_page_ms)
    );
    for (what, ms, n) in sweeper {
        println!("sweeper read, {what}: {ms:.1} ms ({n} found)");
    }
    match delivery {
        Some((at, bytes)) => println!(
            "webhook: received {:.1} s after completedAt, {:.1} MiB ({} bytes per document); \
             stored {:.1} MiB; autos' peak RSS after it {:.1} MiB; \
             `job {{ webhook }}` answered in {webhook_query_ms:.1} ms",
            (at - completed).num_milliseconds() as f64 / 1000.0,
            bytes as f64 / 1048576.0,
            bytes / count.max(1),
            stored as f64 / 1048576.0,
            autos_peak_after_webhook as f64 / 1024.0
        ),
        None => println!("webhook: not received within ten minutes of the job's end"),
    }
    match small_took {
        Some((took, small_job)) => println!(
            "a second job of 10 documents, started a fifth of the way: {} after {:.2} s",
            small_job["status"],
            took.as_secs_f64()
        ),
        None => println!("the second job did not end before the large one"),
    }
    pool.close().await;
    let _ = child.kill().await;
    drop_database(admin, &db).await;
    s3.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The peak RSS (KiB) of the largest PostgreSQL backend connected to `db`'s database.
fn postgres_backends_peak_kib(db: &str) -> u64 {
    let name = db.rsplit('/').next().unwrap_or_default();
    let name = name.split('?').next().unwrap_or_default();
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("cmdline"))
                        .is_ok_and(|c| c.replace('\0', " ").contains(name))
                })
                .map(|e| rss_kib(&e.file_name().to_string_lossy()))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

//! `restarts`: what deploys cost. One job of N documents from a court that takes its time over
//! each (as real courts do), through one `autos work` process, timed twice in each round: left
//! alone, and with the process stopped (SIGTERM, or SIGKILL with `BENCH_RESTART_SIGNAL=KILL`)
//! and started again every `BENCH_RESTART_EVERY_SECS` (10). Reports both times, their ratio,
//! and what the restarts wasted: documents the court sent more than once (beside the transfers
//! a stop cut short, `documents.interruptions`) and attempts charged beyond one per document.
//!
//! The API runs in this process (`Role::SERVE`); the court counts the GETs of each document.

use super::{
    authorize, autos_binary, body_stream, drop_database, fresh_database, listed, run_job, sha_of,
    spawn_autos, CHUNK, KEY, SECRET,
};
use autos::app::{Application, Role};
use autos::embedded::s3::EmbeddedS3;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NUMBER: &str = "0001234-71.2024.8.26.0100";

/// A court that sends each document over `per_document`, and counts its GETs.
struct SlowCourt {
    count: usize,
    size: usize,
    shas: Vec<String>,
    per_document: Duration,
    gets: Vec<AtomicU32>,
}

impl SlowCourt {
    fn reset(&self) {
        for gets in &self.gets {
            gets.store(0, Ordering::SeqCst);
        }
    }

    /// Documents sent more than once, and the GETs beyond the first.
    fn repeated(&self) -> (usize, u32) {
        let counts: Vec<u32> = self.gets.iter().map(|g| g.load(Ordering::SeqCst)).collect();
        let twice = counts.iter().filter(|&&n| n > 1).count();
        let extra = counts.iter().map(|&n| n.saturating_sub(1)).sum();
        (twice, extra)
    }
}

async fn listing(State(s): State<Arc<SlowCourt>>, Path(number): Path<String>) -> Response {
    if number != NUMBER {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    }
    Json(listed(&number, s.count, s.size, &s.shas)).into_response()
}

async fn file(State(s): State<Arc<SlowCourt>>, Path(id): Path<usize>) -> Response {
    s.gets[id].fetch_add(1, Ordering::SeqCst);
    let chunks = s.size.div_ceil(CHUNK).max(1) as u32;
    let pause = s.per_document / chunks;
    let body = body_stream(id as u64, s.size).then(move |chunk| async move {
        tokio::time::sleep(pause).await;
        chunk
    });
    Response::builder()
        .header("content-length", s.size)
        .body(Body::from_stream(body))
        .unwrap()
}

async fn start_court(court: Arc<SlowCourt>) -> String {
    let app = Router::new()
        .route("/processes/{number}", get(listing))
        .route("/files/{id}", get(file))
        .with_state(court);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// What one timed job showed.
struct Run {
    took: Duration,
    restarts: u32,
    /// Longest time from the stop signal to the process's exit.
    longest_stop: Duration,
    /// Documents the court sent more than once, and GETs beyond one per document.
    twice: usize,
    extra_gets: u32,
    /// Transfers cut short by a stop (`documents.interruptions`), and attempts beyond one
    /// per document.
    interruptions: i64,
    extra_attempts: i64,
}

fn work_process(db: &str, s3: &str, court: &str, workers: usize) -> tokio::process::Child {
    spawn_autos(
        &autos_binary(),
        "work",
        db,
        s3,
        court,
        &[
            ("AUTOS_WORKERS", workers.to_string()),
            ("AUTOS_LEASE_MS", "10000".into()),
            ("AUTOS_SWEEP_INTERVAL_MS", "1000".into()),
        ],
    )
}

async fn timed(
    admin: &str,
    s3: &str,
    court: &Arc<SlowCourt>,
    court_url: &str,
    workers: usize,
    restart_every: Option<Duration>,
    signal: &str,
) -> Run {
    court.reset();
    let db = fresh_database(admin).await;
    let mut config = autos::config::Config::defaults();
    config.database_url = Some(db.clone());
    config.bind = "127.0.0.1:0".parse().unwrap();
    config.s3_endpoint = Some(s3.parse().unwrap());
    config.s3_bucket = "bench".into();
    config.aws_access_key_id = Some(KEY.into());
    config.aws_secret_access_key = Some(SECRET.into());
    config.source_url = Some(court_url.into());
    config.log = "warn".into();
    let api = Application::start(config, Role::SERVE).await.unwrap();
    let addr = api.addr.unwrap().to_string();
    authorize(&db).await;

    let mut child = work_process(&db, s3, court_url, workers);
    let job = run_job(&addr, NUMBER);
    tokio::pin!(job);
    let (mut restarts, mut longest_stop) = (0, Duration::ZERO);
    let (took, job) = loop {
        let next = match restart_every {
            Some(every) => every,
            None => Duration::from_secs(86_400),
        };
        tokio::select! {
            ended = &mut job => break ended,
            _ = tokio::time::sleep(next) => {
                let pid = child.id().expect("running").to_string();
                let stopping = Instant::now();
                let sent = std::process::Command::new("kill")
                    .args([&format!("-{signal}"), &pid])
                    .status()
                    .expect("kill");
                assert!(sent.success());
                child.wait().await.expect("the work process ends");
                longest_stop = longest_stop.max(stopping.elapsed());
                restarts += 1;
                child = work_process(&db, s3, court_url, workers);
            }
        }
    };
    assert_eq!(job["status"], "COMPLETED", "{job}");
    let _ = child.kill().await;
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let (interruptions, extra_attempts): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(interruptions), 0)::bigint,
                coalesce(sum(greatest(attempts - 1, 0)), 0)::bigint FROM documents",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    api.stop().await;
    drop_database(admin, &db).await;
    let (twice, extra_gets) = court.repeated();
    Run {
        took,
        restarts,
        longest_stop,
        twice,
        extra_gets,
        interruptions,
        extra_attempts,
    }
}

pub(crate) async fn run(admin: &str, count: usize, size: usize, rounds: usize) {
    let per_document = Duration::from_millis(
        std::env::var("BENCH_DOC_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(400),
    );
    let every = Duration::from_secs(
        std::env::var("BENCH_RESTART_EVERY_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10),
    );
    let signal = std::env::var("BENCH_RESTART_SIGNAL").unwrap_or_else(|_| "TERM".into());
    let workers = 4;
    let court = Arc::new(SlowCourt {
        count,
        size,
        shas: (0..count).map(|i| sha_of(i as u64, size)).collect(),
        per_document,
        gets: (0..count).map(|_| AtomicU32::new(0)).collect(),
    });
    let court_url = start_court(court.clone()).await;
    let s3_dir =
        std::env::temp_dir().join(format!("autos-bench-s3-{}", uuid::Uuid::new_v4().simple()));
    let s3 = EmbeddedS3::start(&s3_dir, "127.0.0.1:0".parse().unwrap(), KEY, SECRET)
        .await
        .unwrap();
    println!(
        "restarts: {count} documents of {size} bytes, {} ms each at the court, one `autos work` \
         ({workers} workers) left alone vs stopped (SIG{signal}) and started again every {} s",
        per_document.as_millis(),
        every.as_secs()
    );
    let mut ratios = Vec::new();
    for round in 0..rounds {
        // Alternate which goes first: the machine's slower phases hit both alike.
        let mut runs = Vec::new();
        for restarted in [round % 2 == 1, round % 2 == 0] {
            let restart = restarted.then_some(every);
            runs.push((
                restarted,
                timed(
                    admin,
                    s3.endpoint(),
                    &court,
                    &court_url,
                    workers,
                    restart,
                    &signal,
                )
                .await,
            ));
        }
        runs.sort_by_key(|(restarted, _)| *restarted);
        let (alone, restarted) = (&runs[0].1, &runs[1].1);
        let ratio = restarted.took.as_secs_f64() / alone.took.as_secs_f64();
        ratios.push(ratio);
        println!(
            "round {}: alone {:.1} s (sent twice {}, interrupted {}); restarted {} times {:.1} s \
             (longest stop {:.1} s; documents sent twice {}, extra GETs {}; transfers \
             interrupted {}; attempts beyond one {}): {ratio:.3}×",
            round + 1,
            alone.took.as_secs_f64(),
            alone.twice,
            alone.interruptions,
            restarted.restarts,
            restarted.took.as_secs_f64(),
            restarted.longest_stop.as_secs_f64(),
            restarted.twice,
            restarted.extra_gets,
            restarted.interruptions,
            restarted.extra_attempts,
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "restarts: restarted / alone, median of {} rounds: {:.3}×",
        ratios.len(),
        ratios[ratios.len() / 2]
    );
    s3.shutdown();
    let _ = std::fs::remove_dir_all(&s3_dir);
}

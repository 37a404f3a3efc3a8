//! Benchmarks of the download pipeline, run with `scripts/bench` (see BENCHMARKS.md).
//!
//! - `throughput`: N documents of S bytes from a local HTTP court to a local S3-compatible
//!   server, through autos (API + workers in this process), against a plain loop doing the
//!   same GETs and PUTs with the same concurrency, measured in the same run.
//! - `memory`: one large document through a separate `autos work` process; reports that
//!   process's peak RSS (VmHWM). `memory-mni`: the same, from an MNI court as inline base64.
//! - `throughput-mni`: as `throughput`, from an MNI court (see `mni_throughput.rs`).
//! - `subscribers`: N `jobProgress` WebSocket subscribers on one job, on one `autos serve`
//!   process, while a separate `autos work` process runs the job (see `subscribers.rs`).
//! - `restarts`: one job through an `autos work` process left alone, and restarted every 10 s
//!   (see `restarts.rs`).
//!
//! Everything runs on loopback: a court served here, an s3s-fs store served here, and the
//! PostgreSQL of `AUTOS_BENCH_DATABASE_URL` (default: 127.0.0.1:5432).

use autos::app::{Application, Role};
use autos::config::Config;
use autos::embedded::s3::EmbeddedS3;
use autos::storage::{Storage, StorageConfig, DEFAULT_PART_SIZE};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const KEY: &str = "bench-key";
pub(crate) const SECRET: &str = "bench-secret-0123456789";
const CHUNK: usize = 64 * 1024;

/// Deterministic bytes of document `seed`, generated as they are sent.
fn chunk(seed: u64, index: usize, len: usize) -> Bytes {
    let mut state = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index as u64)
        | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn body_stream(
    seed: u64,
    size: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let chunks = size.div_ceil(CHUNK);
    futures::stream::iter(0..chunks).map(move |i| {
        let len = CHUNK.min(size - i * CHUNK);
        Ok(chunk(seed, i, len))
    })
}

fn sha_of(seed: u64, size: usize) -> String {
    let mut hasher = Sha256::new();
    for i in 0..size.div_ceil(CHUNK) {
        hasher.update(chunk(seed, i, CHUNK.min(size - i * CHUNK)));
    }
    hex::encode(hasher.finalize())
}

struct CourtState {
    number: String,
    count: usize,
    size: usize,
    shas: Vec<String>,
}

async fn start_court(number: &str, count: usize, size: usize) -> (String, Vec<String>) {
    let shas: Vec<String> = (0..count).map(|i| sha_of(i as u64, size)).collect();
    let state = Arc::new(CourtState {
        number: number.to_string(),
        count,
        size,
        shas: shas.clone(),
    });
    let app = Router::new()
        .route("/processes/{number}", get(listing))
        .route("/files/{id}", get(file))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, shas)
}

/// A second case of the court: the first ten documents of the first, for a warm-up job.
const WARM_UP: &str = "0000832-35.2018.4.01.3202";

async fn listing(State(s): State<Arc<CourtState>>, Path(number): Path<String>) -> Response {
    let count = if number == s.number {
        s.count
    } else if number == WARM_UP {
        s.count.min(10)
    } else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    Json(listed(&number, count, s.size, &s.shas)).into_response()
}

/// The court's listing of `number`: its first `count` documents `d0…`, of `size` bytes each,
/// at `files/{i}`.
fn listed(number: &str, count: usize, size: usize, shas: &[String]) -> Value {
    let documents: Vec<Value> = (0..count)
        .map(|i| {
            json!({"id": format!("d{i}"), "name": format!("Documento {i}.pdf"),
                   "url": format!("files/{i}"), "size": size, "sha256": shas[i],
                   "mimeType": "application/pdf"})
        })
        .collect();
    json!({"number": number, "court": "TJSP", "documents": documents})
}

async fn file(State(s): State<Arc<CourtState>>, Path(id): Path<usize>) -> Response {
    Response::builder()
        .header("content-length", s.size)
        .body(Body::from_stream(body_stream(id as u64, s.size)))
        .unwrap()
}

pub(crate) async fn drop_database(admin: &str, url: &str) {
    let name = url::Url::parse(url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_string();
    // BENCH_KEEP_DATABASE=1 leaves it for inspection (table statistics, plans).
    if std::env::var_os("BENCH_KEEP_DATABASE").is_some() {
        eprintln!("database kept: {name}");
        return;
    }
    if let Ok(pool) = sqlx::PgPool::connect(admin).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&pool)
            .await;
    }
}

pub(crate) async fn fresh_database(admin: &str) -> String {
    let name = format!("autos_bench_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(admin)
        .await
        .expect("PostgreSQL for the benchmark");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    if std::env::var_os("BENCH_EXPLAIN").is_some() {
        for set in [
            "session_preload_libraries = 'auto_explain'",
            "auto_explain.log_min_duration = 0",
            "auto_explain.log_analyze = on",
            "auto_explain.log_nested_statements = on",
            "auto_explain.log_timing = on",
        ] {
            sqlx::query(&format!("ALTER DATABASE {name} SET {set}"))
                .execute(&pool)
                .await
                .unwrap();
        }
    }
    let mut url = url::Url::parse(admin).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Makes the key the benchmark's requests send, as `autos key create` makes one, once autos
/// has set up the database `db` (a build without keys, compared with `AUTOS_BIN_B`, has no
/// table for them: its requests then send a key it ignores).
pub(crate) async fn authorize(db: &str) {
    let pool = sqlx::PgPool::connect(db).await.unwrap();
    let spec = autos::auth::admin::KeySpec {
        tenant: "bench".into(),
        scopes: vec![autos::auth::Scope::Write],
        name: Some("benchmark".into()),
        expires_in_days: None,
        rate_limit: None,
    };
    let created =
        autos::auth::admin::create_key(&pool, &spec, &autos::auth::audit::Actor::cli()).await;
    pool.close().await;
    *CREDENTIAL.lock().unwrap() = match created {
        Ok((key, _)) => key.reveal(),
        Err(_) => "no-keys-in-this-build".into(),
    };
}

/// The key of the benchmark's current database, sent with every request.
static CREDENTIAL: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// `Bearer {key}` for the current database.
pub(crate) fn authorization() -> String {
    format!("Bearer {}", CREDENTIAL.lock().unwrap())
}

/// BENCH_PROFILE_WAIT=N: N seconds to attach a profiler (`perf record -p PID`) before what
/// `starts` names begins.
pub(crate) async fn profile_pause(starts: &str) {
    if let Some(wait) = std::env::var("BENCH_PROFILE_WAIT")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        eprintln!("{starts} starts in {wait} s");
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

/// The database URL autos is given: `db`, with `synchronous_commit=off` for its connections
/// when BENCH_ASYNC_COMMIT is set.
fn autos_database_url(db: &str) -> String {
    if std::env::var_os("BENCH_ASYNC_COMMIT").is_none() {
        return db.into();
    }
    let separator = if db.contains('?') { '&' } else { '?' };
    format!("{db}{separator}options=-c%20synchronous_commit%3Doff")
}

fn config(db: &str, s3: &str, court: &str, workers: u32) -> Config {
    let mut c = Config::defaults();
    c.database_url = Some(autos_database_url(db));
    c.bind = "127.0.0.1:0".parse().unwrap();
    c.s3_endpoint = Some(s3.parse().unwrap());
    c.s3_bucket = "bench".into();
    c.aws_access_key_id = Some(KEY.into());
    c.aws_secret_access_key = Some(SECRET.into());
    c.source_url = Some(court.into());
    c.workers = workers;
    c.log = "warn".into();
    c
}

/// Starts a download of `number` (with `webhook` as its `webhookUrl`, if any); returns the
/// job's id.
pub(crate) async fn start_job(addr: &str, number: &str, webhook: Option<&str>) -> String {
    let body = gql(
        addr,
        "mutation($n: String!, $hook: String) { \
         startDownload(input: {number: $n, webhookUrl: $hook}) { job { id } } }",
        json!({"n": number, "hook": webhook}),
    )
    .await;
    body["data"]["startDownload"]["job"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_string()
}

pub(crate) async fn gql(addr: &str, query: &str, variables: Value) -> Value {
    // One client for the whole run: building one loads the system's root certificates.
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(reqwest::Client::new)
        .post(format!("http://{addr}/graphql"))
        .header("authorization", authorization())
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn run_job(addr: &str, number: &str) -> (Duration, Value) {
    let started = Instant::now();
    let started_wall = chrono::Utc::now();
    let id = start_job(addr, number, None).await;
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!("startDownload answered in {:?}", started.elapsed());
    }
    loop {
        let job = gql(
            addr,
            "query($id: ID!) { job(id: $id) { status createdAt startedAt completedAt counts { available failed } } }",
            json!({"id": id}),
        )
        .await["data"]["job"]
            .clone();
        if !matches!(job["status"].as_str(), Some("QUEUED" | "RUNNING")) {
            if std::env::var_os("BENCH_VERBOSE").is_some() {
                eprintln!(
                    "job: created {} started {} completed {}",
                    job["createdAt"], job["startedAt"], job["completedAt"]
                );
            }
            // The job ended at its completedAt (same machine, same clock): polling adds nothing.
            let completed: chrono::DateTime<chrono::Utc> = job["completedAt"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(chrono::Utc::now);
            let took = (completed - started_wall)
                .to_std()
                .unwrap_or_else(|_| started.elapsed());
            return (took, job);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The plain loop: GET each body from the court, PUT it to S3 under the same key, with the
/// same Content-Type and SHA-256 metadata (the court's announced one), `workers` at a time,
/// into `bucket` (created here, before the clock starts).
async fn plain_loop(
    court: &str,
    number: &str,
    shas: &[String],
    storage: &Storage,
    workers: usize,
    bucket: &str,
) -> Duration {
    storage
        .client()
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("plain loop's bucket");
    let http = reqwest::Client::new();
    let started = Instant::now();
    let busy: Vec<Duration> = futures::stream::iter(0..shas.len())
        .map(|i| {
            let http = http.clone();
            async move {
                let began = Instant::now();
                let response = http.get(format!("{court}/files/{i}")).send().await.unwrap();
                let body = response.bytes().await.unwrap();
                storage
                    .client()
                    .put_object()
                    .bucket(bucket)
                    .key(format!(
                        "processos/{number}/documentos/d{i}/Documento {i}.pdf"
                    ))
                    .content_type("application/pdf")
                    .metadata("sha256", &shas[i])
                    .body(body.into())
                    .send()
                    .await
                    .expect("plain upload");
                began.elapsed()
            }
        })
        .buffer_unordered(workers)
        .collect()
        .await;
    let took = started.elapsed();
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        let total: Duration = busy.iter().sum();
        eprintln!(
            "plain loop: {:.1} ms per document (GET + PUT), lanes busy {:.0} %",
            total.as_secs_f64() * 1000.0 / busy.len().max(1) as f64,
            100.0 * total.as_secs_f64() / (took.as_secs_f64() * workers as f64)
        );
    }
    took
}

/// The plain loop in a process of its own, as autos runs in one: this bench binary again, in
/// mode `plain-loop`, with the same client code and configuration ([`plain_loop_child`]).
/// In the harness, the loop shares a runtime with the court and the store, so a request and
/// its answer often pass between tasks of one thread; a client of its own (autos, or a
/// script doing the plain loop) wakes them across processes. Returns the loop's time, as the
/// child measured it (after its start-up), and the child's CPU seconds.
async fn plain_loop_process(
    court: &str,
    number: &str,
    shas: &[String],
    s3: &str,
    workers: usize,
    bucket: &str,
) -> (Duration, f64) {
    let exe = std::env::current_exe().expect("the bench's own executable");
    let output = tokio::process::Command::new(exe)
        .arg("plain-loop")
        .env("BENCH_PLAIN_COURT", court)
        .env("BENCH_PLAIN_NUMBER", number)
        .env("BENCH_PLAIN_SHAS", shas.join(","))
        .env("BENCH_PLAIN_S3", s3)
        .env("BENCH_PLAIN_WORKERS", workers.to_string())
        .env("BENCH_PLAIN_BUCKET", bucket)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the plain loop's process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "plain loop process failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |name: &str| -> f64 {
        stdout
            .split_whitespace()
            .skip_while(|w| *w != name)
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the plain loop's output: {stdout}"))
    };
    (Duration::from_secs_f64(field("took")), field("cpu"))
}

/// The plain loop's S3 client for the store at `endpoint`: autos' own storage code, as autos
/// configures it by default.
async fn plain_storage(endpoint: &str) -> Storage {
    Storage::connect(&StorageConfig {
        endpoint: Some(endpoint.into()),
        bucket: "bench".into(),
        region: "us-east-1".into(),
        credentials: Some((KEY.into(), SECRET.into())),
        part_size: DEFAULT_PART_SIZE,
    })
    .await
}

/// Mode `plain-loop` (run by [`plain_loop_process`]): the plain loop, here, against the court
/// and the store of the parent's run, after an untimed warm-up; prints
/// `took <seconds> cpu <seconds>` (the timed loop's).
async fn plain_loop_child() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let shas: Vec<String> = var("BENCH_PLAIN_SHAS")
        .split(',')
        .map(String::from)
        .collect();
    let storage = plain_storage(&var("BENCH_PLAIN_S3")).await;
    let (court, number, bucket) = (
        var("BENCH_PLAIN_COURT"),
        var("BENCH_PLAIN_NUMBER"),
        var("BENCH_PLAIN_BUCKET"),
    );
    let workers = var("BENCH_PLAIN_WORKERS").parse().unwrap();
    // Warmed up as autos is (its untimed job of ten documents): the first ten, untimed, into
    // a bucket of their own.
    let warm = &shas[..shas.len().min(10)];
    plain_loop(
        &court,
        &number,
        warm,
        &storage,
        workers,
        &format!("{bucket}-warm"),
    )
    .await;
    let cpu = cpu_seconds();
    let took = plain_loop(&court, &number, &shas, &storage, workers, &bucket).await;
    println!("took {} cpu {}", took.as_secs_f64(), cpu_seconds() - cpu);
}

/// Where the throughput run's store keeps its files: `BENCH_STORE_DIR`, else `/dev/shm` where
/// there is one, else the system's temporary directory.
///
/// The store is harness, not autos, and on ext4 its file churn costs more CPU than anything
/// else in the run: each run creates 200 files in directories where the previous run's were
/// just deleted, and ext4's inode allocation (`recently_deleted`, `find_inode_bit`) took half
/// of the harness's CPU in a profile, by an amount that changes from minute to minute. Both
/// sides pay it, so it does not favour either, but it buries autos' own cost under noise.
fn throughput_store_root() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("BENCH_STORE_DIR") {
        return dir.into();
    }
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

async fn throughput(admin: &str, count: usize, size: usize, rounds: usize) {
    let workers = 4;
    let number = "1500345-31.2017.8.26.0248";
    let s3_dir =
        throughput_store_root().join(format!("autos-bench-s3-{}", uuid::Uuid::new_v4().simple()));
    let s3 = EmbeddedS3::start(&s3_dir, "127.0.0.1:0".parse().unwrap(), KEY, SECRET)
        .await
        .unwrap();
    let (court, shas) = start_court(number, count, size).await;
    let storage = plain_storage(s3.endpoint()).await;
    storage.ensure_bucket().await.unwrap();
    // Each run writes into a bucket of its own, empty, and the store's files of a run are
    // deleted once it is over, outside the clock: no side overwrites objects (replacing files,
    // with the file system's deletion work) while the other does not.
    let fresh_bucket = |round: usize, side: &str| format!("r{round}-{side}");
    let clear_bucket = |bucket: &str| {
        let _ = std::fs::remove_dir_all(s3_dir.join(bucket));
    };

    // AUTOS_BIN_B=path measures a second build in the same rounds, next to the first: the
    // two alternate who goes first, and each round gives the ratio of B's time to A's.
    let builds: Vec<String> = std::iter::once(autos_binary())
        .chain(std::env::var("AUTOS_BIN_B").ok())
        .collect();
    let compare = builds.len() == 2;
    println!(
        "throughput: {count} documents of {size} bytes, {workers} workers, {rounds} rounds, store in {}",
        s3_dir.display()
    );
    println!(
        "plain loop: in this process (sharing the court's and the store's runtime); \
         own process: the same loop as a process of its own, as autos is"
    );
    if compare {
        println!("A = {}, B = {}", builds[0], builds[1]);
        println!(
            "| round | plain loop (s) | own process (s) | autos A (s) | autos B (s) | ratio A | ratio B | A to own process | B to own process | B / A |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
    } else {
        println!("| round | plain loop (s) | own process (s) | autos (s) | ratio | ratio to own process |");
        println!("|---|---|---|---|---|---|");
    }
    let verbose = std::env::var_os("BENCH_VERBOSE").is_some();
    // BENCH_SIDE=plain|autos runs one side only (for profiling one side with perf).
    let side = std::env::var("BENCH_SIDE").unwrap_or_default();
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); builds.len()];
    let mut own_ratios: Vec<Vec<f64>> = vec![Vec::new(); builds.len()];
    let mut b_over_a = Vec::new();
    for round in 1..=rounds {
        // Both plain loops, one after the other (alternating which goes first); before the
        // autos runs in odd rounds, after them in even ones, so that neither side always
        // meets the other's leftovers (page cache, freed memory) in the store.
        let plain_loops = || async {
            let (mut plain, mut own) = (Duration::ZERO, Duration::ZERO);
            for which in if round % 4 < 2 { [0, 1] } else { [1, 0] } {
                let bucket = fresh_bucket(round, ["plain", "own"][which]);
                let cpu = cpu_seconds();
                if which == 0 {
                    plain = plain_loop(&court, number, &shas, &storage, workers, &bucket).await;
                    if verbose {
                        eprintln!(
                            "CPU seconds: harness (court, store, client) plain {:.2}",
                            cpu_seconds() - cpu
                        );
                    }
                } else {
                    let child_cpu;
                    (own, child_cpu) =
                        plain_loop_process(&court, number, &shas, s3.endpoint(), workers, &bucket)
                            .await;
                    clear_bucket(&format!("{bucket}-warm"));
                    if verbose {
                        eprintln!(
                            "CPU seconds: harness (court, store) {:.2}, plain loop's own process {child_cpu:.2}",
                            cpu_seconds() - cpu
                        );
                    }
                }
                clear_bucket(&bucket);
            }
            (plain, own)
        };
        let plain_first = round % 2 == 1;
        let mut plain = (Duration::ZERO, Duration::ZERO);
        if (plain_first || side == "plain") && side != "autos" {
            plain = plain_loops().await;
        }
        if side == "plain" {
            println!(
                "| {round} | {:.3} | {:.3} | - | - | - |",
                plain.0.as_secs_f64(),
                plain.1.as_secs_f64()
            );
            continue;
        }
        let mut order: Vec<usize> = (0..builds.len()).collect();
        if round % 4 >= 2 {
            order.reverse();
        }
        let mut took = vec![Duration::ZERO; builds.len()];
        for &b in &order {
            let bucket = fresh_bucket(round, ["a", "b"][b]);
            let (binary, s3) = (&builds[b], s3.endpoint());
            took[b] = timed_autos_job(admin, binary, s3, &bucket, &court, number, workers).await;
            clear_bucket(&bucket);
        }
        if !plain_first && side != "autos" {
            plain = plain_loops().await;
        }
        let secs: Vec<f64> = took.iter().map(Duration::as_secs_f64).collect();
        if side == "autos" {
            let times: Vec<String> = secs.iter().map(|t| format!("{t:.3}")).collect();
            println!("| {round} | - | - | {} | - | - |", times.join(" | "));
            continue;
        }
        let (plain, own) = (plain.0.as_secs_f64(), plain.1.as_secs_f64());
        let round_ratios: Vec<f64> = secs.iter().map(|t| t / plain).collect();
        let round_own: Vec<f64> = secs.iter().map(|t| t / own).collect();
        for b in 0..builds.len() {
            ratios[b].push(round_ratios[b]);
            own_ratios[b].push(round_own[b]);
        }
        if compare {
            b_over_a.push(secs[1] / secs[0]);
            println!(
                "| {round} | {plain:.3} | {own:.3} | {:.3} | {:.3} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} |",
                secs[0],
                secs[1],
                round_ratios[0],
                round_ratios[1],
                round_own[0],
                round_own[1],
                secs[1] / secs[0]
            );
        } else {
            println!(
                "| {round} | {plain:.3} | {own:.3} | {:.3} | {:.2} | {:.2} |",
                secs[0], round_ratios[0], round_own[0]
            );
        }
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied()
    };
    let names = if compare { vec!["A ", "B "] } else { vec![""] };
    for (b, name) in names.iter().enumerate() {
        if let (Some(plain), Some(own)) = (median(&mut ratios[b]), median(&mut own_ratios[b])) {
            println!(
                "median ratio {name}autos / plain loop: {plain:.2}; autos / plain loop in its own process: {own:.2}"
            );
        }
    }
    if let Some(ba) = median(&mut b_over_a) {
        println!("median B / A per round: {ba:.3}");
    }
    s3.shutdown();
    let _ = std::fs::remove_dir_all(&s3_dir);
}

/// CPU seconds (user + system) used so far by this process.
fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// CPU seconds used so far by each PostgreSQL process of this machine (those alive now), by
/// pid, with its command line (which names the backend's role and client).
fn postgres_cpu() -> std::collections::HashMap<String, (String, f64)> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|comm| comm.trim() == "postgres")
                })
                .map(|e| {
                    let pid = e.file_name().to_string_lossy().to_string();
                    let cmdline = std::fs::read_to_string(e.path().join("cmdline"))
                        .unwrap_or_default()
                        .replace('\0', " ");
                    let cpu = cpu_seconds_of(&pid);
                    (pid, (cmdline.trim().to_string(), cpu))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// PostgreSQL's CPU seconds between two `postgres_cpu` readings, in all and by process kind.
fn postgres_cpu_since(
    before: &std::collections::HashMap<String, (String, f64)>,
) -> (f64, Vec<(String, f64)>) {
    let mut by_kind: std::collections::BTreeMap<String, f64> = Default::default();
    for (pid, (cmdline, cpu)) in postgres_cpu() {
        let used = cpu - before.get(&pid).map_or(0.0, |(_, c)| *c);
        // "postgres: 15/main: postgres bench_x 127.0.0.1(1234) idle" -> "postgres bench_x"
        let kind = cmdline
            .split(": ")
            .nth(2)
            .map(|rest| rest.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .unwrap_or(cmdline);
        *by_kind.entry(kind).or_default() += used;
    }
    let total = by_kind.values().sum();
    (
        total,
        by_kind.into_iter().filter(|(_, c)| *c > 0.0).collect(),
    )
}

/// CPU seconds (user + system) used so far by process `pid` ("self" for this one).
pub(crate) fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// One timed job of autos as deployed: its own process (`autos all`, `binary`) on a fresh
/// database, warmed up with a small job first (unless `BENCH_COLD`), timed from the
/// `startDownload` request to the job's `completedAt`.
async fn timed_autos_job(
    admin: &str,
    binary: &str,
    s3: &str,
    bucket: &str,
    court: &str,
    number: &str,
    workers: usize,
) -> Duration {
    let db = fresh_database(admin).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let db_url = autos_database_url(&db);
    let mut child = spawn_autos(
        binary,
        "all",
        &db_url,
        s3,
        court,
        &[
            ("AUTOS_BIND", addr.clone()),
            ("AUTOS_S3_BUCKET", bucket.to_string()),
            ("AUTOS_WORKERS", workers.to_string()),
            (
                "AUTOS_BATCH_SIZE",
                std::env::var("BENCH_BATCH_SIZE").unwrap_or_else(|_| "5".into()),
            ),
        ],
    );
    wait_ready(&addr).await;
    authorize(&db).await;
    // A service that has been up for more than a moment has its database connections open
    // and their caches warm: one small job first, on another case, untimed. (BENCH_COLD=1
    // times the first job of a fresh process instead.)
    if std::env::var_os("BENCH_COLD").is_none() {
        run_job(&addr, WARM_UP).await;
    }
    let pid = child.id().unwrap_or_default().to_string();
    profile_pause(&format!("autos pid {pid}: the timed job")).await;
    let cpu = cpu_seconds();
    let child_cpu = cpu_seconds_of(&pid);
    let pg_before = postgres_cpu();
    let (took, job) = run_job(&addr, number).await;
    let autos_cpu = cpu_seconds() - cpu;
    let child_cpu = cpu_seconds_of(&pid) - child_cpu;
    let (pg_cpu, pg_kinds) = postgres_cpu_since(&pg_before);
    assert_eq!(job["status"], "COMPLETED", "{job}");
    let _ = child.kill().await;
    drop_database(admin, &db).await;
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!("CPU seconds while {binary} ran: harness (court, store) {autos_cpu:.2}; the autos process {child_cpu:.2}; PostgreSQL {pg_cpu:.2} ({pg_kinds:?})");
    }
    took
}

/// The `autos` binary to measure: `AUTOS_BIN`, default `target/release/autos`.
pub(crate) fn autos_binary() -> String {
    std::env::var("AUTOS_BIN").unwrap_or_else(|_| "target/release/autos".into())
}

/// Runs the `autos` binary `binary` (usually [`autos_binary`]) with `command`, pointed at
/// this harness's database, store and court.
pub(crate) fn spawn_autos(
    binary: &str,
    command: &str,
    db: &str,
    s3: &str,
    court: &str,
    extra: &[(&str, String)],
) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg(command)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db)
        .env("AUTOS_S3_ENDPOINT", s3)
        .env("AUTOS_S3_BUCKET", "bench")
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AUTOS_SOURCE_URL", court)
        // BENCH_AUTOS_LOG=info shows each document's transfer time (`ms`) in autos' log.
        .env(
            "AUTOS_LOG",
            std::env::var("BENCH_AUTOS_LOG").unwrap_or_else(|_| "warn".into()),
        )
        // BENCH_AUTH=off measures autos without authentication (requests still send a key).
        .env(
            "AUTOS_AUTH",
            std::env::var("BENCH_AUTH").unwrap_or_else(|_| "keys".into()),
        )
        .kill_on_drop(true);
    for (name, value) in extra {
        cmd.env(name, value);
    }
    cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run {binary}: {e} (build it with cargo build --release)")
    })
}

/// A free loopback port for a child's HTTP server.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the child's API answers /readyz.
pub(crate) async fn wait_ready(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("http://{addr}/readyz")).await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("autos at {addr} did not become ready");
}

async fn memory(admin: &str, size: usize) {
    let number = "0000832-35.2018.4.01.3202";
    let (court, _) = start_court(number, 1, size).await;
    let (took, peak, idle) = one_big_job(admin, &court, None, number, size).await;
    println!(
        "memory: one document of {size} bytes through `autos work`: {:.1} s ({:.0} MiB/s); peak RSS {:.1} MiB (after start, before the job: {:.1} MiB)",
        took.as_secs_f64(),
        size as f64 / 1048576.0 / took.as_secs_f64(),
        peak as f64 / 1024.0,
        idle as f64 / 1024.0
    );
}

/// `memory-mni`: one large document from an MNI court, its content inline base64 in the SOAP
/// answer, through a separate `autos work` process; that process's peak RSS.
async fn memory_mni(admin: &str, size: usize) {
    let number = "0000832-35.2018.4.01.3202";
    let mni = mni::MniCourt::start().await;
    mni.add_process(
        number,
        mni::MniProcess::new(vec![mni::MniDoc::large("big", size as u64, 7)]),
    );
    let sources = std::env::temp_dir().join(format!(
        "autos-bench-sources-{}.toml",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(
        &sources,
        format!(
            "[[source]]\nname = \"trf1\"\ncourts = [\"4.01\"]\nurl = \"{}\"\nrate_per_minute = 1000\n",
            mni.url()
        ),
    )
    .unwrap();
    // The default source is never asked: every number of this run is the MNI court's.
    let (court, _) = start_court("0000001-00.2024.8.26.0100", 0, 1).await;
    let (took, peak, idle) = one_big_job(admin, &court, Some(&sources), number, size).await;
    let _ = std::fs::remove_file(&sources);
    println!(
        "memory-mni: one document of {size} bytes as inline base64 over MNI through `autos work`: {:.1} s ({:.0} MiB/s); peak RSS {:.1} MiB (after start, before the job: {:.1} MiB)",
        took.as_secs_f64(),
        size as f64 / 1048576.0 / took.as_secs_f64(),
        peak as f64 / 1024.0,
        idle as f64 / 1024.0
    );
}

/// One job of `number` (one document of `size` bytes) with the API in this process and the
/// work in a separate `autos work` process; its time, and that process's peak RSS at the end
/// and before the job (KiB).
async fn one_big_job(
    admin: &str,
    court: &str,
    sources: Option<&std::path::Path>,
    number: &str,
    size: usize,
) -> (Duration, u64, u64) {
    let s3_dir =
        std::env::temp_dir().join(format!("autos-bench-s3-{}", uuid::Uuid::new_v4().simple()));
    let s3 = EmbeddedS3::start(&s3_dir, "127.0.0.1:0".parse().unwrap(), KEY, SECRET)
        .await
        .unwrap();
    let db = fresh_database(admin).await;
    let mut cfg = config(&db, s3.endpoint(), court, 1);
    cfg.sources_file = sources.map(std::path::Path::to_path_buf);
    let app = Application::start(cfg, Role::SERVE).await.unwrap();
    let addr = app.addr.unwrap().to_string();
    authorize(&db).await;
    let mut env = vec![
        ("AUTOS_WORKERS", "1".to_string()),
        ("AUTOS_MAX_DOCUMENT_BYTES", (size as u64 * 2).to_string()),
    ];
    if let Some(sources) = sources {
        env.push(("AUTOS_SOURCES_FILE", sources.display().to_string()));
    }
    let mut child = spawn_autos(&autos_binary(), "work", &db, s3.endpoint(), court, &env);
    let pid = child.id().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = peak_rss_kib(pid).unwrap_or(0);
    let (took, job) = run_job(&addr, number).await;
    let peak = peak_rss_kib(pid).unwrap_or(0);
    assert_eq!(job["status"], "COMPLETED", "{job}");
    let _ = child.kill().await;
    app.stop().await;
    drop_database(admin, &db).await;
    s3.shutdown();
    let _ = std::fs::remove_dir_all(&s3_dir);
    (took, peak, idle)
}

mod large;
#[allow(dead_code)]
#[path = "../../tests/common/mni.rs"]
mod mni;
mod mni_throughput;
mod requests;
mod restarts;
mod subscribers;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let admin = std::env::var("AUTOS_BENCH_DATABASE_URL")
        // Loopback: TLS would only add work to both ends of every statement.
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into());
    let which = args.first().map(String::as_str).unwrap_or("all");
    let env_usize = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    if which == "subscriber-clients" {
        // One thread per client process, as a light client would run.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        return rt.block_on(subscribers::clients_child());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if which == "plain-loop" {
            return plain_loop_child().await;
        }
        if matches!(which, "all" | "throughput") {
            throughput(
                &admin,
                env_usize("BENCH_DOCS", 200),
                env_usize("BENCH_DOC_BYTES", 512 * 1024),
                env_usize("BENCH_ROUNDS", 3),
            )
            .await;
        }
        if matches!(which, "all" | "subscribers") {
            subscribers::run(&admin, env_usize("BENCH_SUBSCRIBERS", 10_000)).await;
        }
        if matches!(which, "all" | "large") {
            large::run(
                &admin,
                env_usize("BENCH_LARGE_DOCS", 100_000),
                env_usize("BENCH_LARGE_DOC_BYTES", 256),
            )
            .await;
        }
        if matches!(which, "all" | "memory") {
            memory(&admin, env_usize("BENCH_BIG_BYTES", 1 << 30)).await;
        }
        if matches!(which, "all" | "throughput-mni") {
            mni_throughput::run(
                &admin,
                env_usize("BENCH_DOCS", 200),
                env_usize("BENCH_DOC_BYTES", 512 * 1024),
                env_usize("BENCH_ROUNDS", 3),
            )
            .await;
        }
        if matches!(which, "all" | "memory-mni") {
            memory_mni(&admin, env_usize("BENCH_BIG_BYTES", 1 << 30)).await;
        }
        if matches!(which, "all" | "restarts") {
            restarts::run(
                &admin,
                env_usize("BENCH_RESTART_DOCS", 400),
                env_usize("BENCH_RESTART_DOC_BYTES", 256 * 1024),
                env_usize("BENCH_ROUNDS", 3),
            )
            .await;
        }
        if matches!(which, "all" | "requests") {
            requests::run(
                &admin,
                env_usize("BENCH_ROUNDS", 3),
                env_usize("BENCH_CONNECTIONS", 32),
                env_usize("BENCH_SECONDS", 5) as u64,
                env_usize("BENCH_SOCKETS", 5000),
            )
            .await;
        }
    });
}

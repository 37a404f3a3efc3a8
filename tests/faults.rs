//! Faults waste nothing: whatever breaks under a running job — PostgreSQL for a moment, S3 or
//! the court for seconds or minutes, a worker process stopped by a deploy or killed — the job
//! still ends COMPLETED, with every document's bytes in S3, no attempt charged to a document
//! for what was not its fault, and no document fetched from the court again unless a fault
//! cut its transfer.
//!
//! Everything is real: a PostgreSQL database per test, the S3-compatible test server, the test
//! court (its bodies slowed down so that transfers are under way when the fault strikes), TCP
//! proxies that refuse and cut connections ([`common::proxy`]), and autos in-process or as the
//! `autos` binary, stopped with real signals.

mod common;
#[path = "faults/crash.rs"]
mod crash;
#[path = "faults/database.rs"]
mod database;
#[path = "faults/deploys.rs"]
mod deploys;
#[path = "faults/outages.rs"]
mod outages;

use common::*;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The longest any job of this suite may take once its fault is over.
const WAIT: Duration = Duration::from_secs(120);

/// Shows what autos running in this process logs when `AUTOS_TEST_LOG` sets a filter
/// (`AUTOS_TEST_LOG=autos=info`): the story behind a failure.
fn log() {
    if let Ok(filter) = std::env::var("AUTOS_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .try_init();
    }
}

/// `count` documents `d1..` of `size` bytes, added to the court as the case `number`, each
/// sent in 16 chunks spread over `transfer`. (Every test starts here: so does its log.)
fn slow_case(
    court: &Court,
    number: &str,
    count: usize,
    size: usize,
    transfer: Duration,
) -> Vec<Doc> {
    log();
    let docs: Vec<Doc> = (1..=count)
        .map(|i| {
            Doc::new(
                &format!("d{i}"),
                &format!("peça {i}.pdf"),
                bytes(size, i as u8),
            )
        })
        .collect();
    court.add_process(number, docs.clone());
    for doc in &docs {
        court.fail_always(
            number,
            &doc.id,
            Fault::Slow {
                chunk: size / 16,
                every: transfer / 16,
            },
        );
    }
    docs
}

/// The court sends every document of `number` at full speed again.
fn speed_up(court: &Court, number: &str, docs: &[Doc]) {
    for doc in docs {
        court.heal(number, &doc.id);
    }
}

fn job_id(started: &Value) -> String {
    started["job"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job in {started:#}"))
        .to_string()
}

/// A poll's deadline: `check` panics, saying what never happened, once it has passed.
struct Deadline {
    at: Instant,
    what: &'static str,
    pause: Duration,
}

impl Deadline {
    fn after(within: Duration, what: &'static str) -> Deadline {
        Deadline {
            at: Instant::now() + within,
            what,
            pause: Duration::from_millis(50),
        }
    }

    /// Looks every `pause` (polls through the API spend the key's rate limit).
    fn every(self, pause: Duration) -> Deadline {
        Deadline { pause, ..self }
    }

    /// Waits a little before the next look, or fails the test with `state`.
    async fn check(&self, state: impl std::fmt::Debug) {
        assert!(
            Instant::now() < self.at,
            "{} did not happen in time; last seen: {state:#?}",
            self.what
        );
        tokio::time::sleep(self.pause).await;
    }
}

/// A document as the database holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Row {
    source_id: String,
    status: String,
    attempts: i32,
    interruptions: i32,
    last_error: Option<String>,
    /// Due now (or earlier), with a live queue task due too.
    due_now: bool,
}

/// The documents of `job`, by source id.
async fn rows(pool: &PgPool, job: &str) -> Vec<Row> {
    let job: Uuid = job.parse().expect("job id");
    let mut rows: Vec<Row> = sqlx::query_as(
        "SELECT d.source_id, d.status, d.attempts, d.interruptions, d.last_error,
                coalesce(d.next_attempt_at <= now() AND EXISTS (
                    SELECT 1 FROM fang_tasks t WHERE t.id = d.task_id
                      AND t.state IN ('new', 'retried') AND t.scheduled_at <= now()), false)
                    AS due_now
         FROM documents d JOIN job_documents jd ON jd.document_id = d.id
         WHERE jd.job_id = $1",
    )
    .bind(job)
    .fetch_all(pool)
    .await
    .expect("documents of the job");
    rows.sort_by_key(|r| r.source_id[1..].parse::<u32>().unwrap_or(u32::MAX));
    rows
}

/// How many documents of `job` are in `status` now.
async fn counted(pool: &PgPool, job: &str, status: &str) -> usize {
    rows(pool, job)
        .await
        .iter()
        .filter(|r| r.status == status)
        .count()
}

fn row<'a>(rows: &'a [Row], source_id: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.source_id == source_id)
        .unwrap_or_else(|| panic!("no document {source_id} in {rows:#?}"))
}

/// Court GETs of each document of `number` so far.
fn gets(court: &Court, number: &str, docs: &[Doc]) -> Vec<u32> {
    docs.iter().map(|d| court.gets(number, &d.id)).collect()
}

/// Waits for the job to end and checks what every fault test promises: COMPLETED, every
/// document AVAILABLE with one attempt (its one successful transfer) and the court's bytes
/// in S3. Returns the documents' rows for the test's own checks.
async fn completed(app: &TestApp, id: &str, number: &str, docs: &[Doc]) -> Vec<Row> {
    let job = app.wait_terminal(id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    assert_eq!(
        job["counts"],
        json!({"pending": 0, "processing": 0, "available": docs.len(), "failed": 0}),
        "{job:#}"
    );
    for expected in docs {
        let got = doc(&job, &expected.id);
        assert_eq!(got["status"], "AVAILABLE", "{got:#}");
        assert_eq!(
            got["attempts"], 1,
            "only its successful transfer counts: {got:#}"
        );
        let key = got["storageKey"].as_str().expect("storage key");
        let (stored, _, _) = app.object(key).await.expect("object in S3");
        assert!(
            stored == expected.bytes.to_vec(),
            "{number} {}: the bytes in S3 are the court's",
            expected.id
        );
    }
    let rows = rows(&app.db.pool().await, id).await;
    assert_eq!(rows.len(), docs.len());
    rows
}

/// `GET /readyz` of the autos at `addr`: its status and body.
async fn readyz(addr: std::net::SocketAddr) -> (u16, Value) {
    let response = reqwest::get(format!("http://{addr}/readyz"))
        .await
        .expect("readyz");
    let status = response.status().as_u16();
    (status, response.json().await.expect("readyz json"))
}

/// The dependencies `/readyz` reports an outage of.
fn outages_of(ready: &Value) -> Vec<String> {
    ready["outages"]
        .as_array()
        .unwrap_or_else(|| panic!("no outages in /readyz: {ready:#}"))
        .iter()
        .map(|o| o["dependency"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `DownloadJob.waitingFor` of the job: the dependencies it waits for.
async fn waiting_for(app: &TestApp, id: &str) -> Vec<String> {
    let data = app
        .data(
            "query($id: ID!) { job(id: $id) { waitingFor { dependency since reason } } }",
            json!({ "id": id }),
        )
        .await;
    data["job"]["waitingFor"]
        .as_array()
        .expect("waitingFor")
        .iter()
        .map(|o| {
            assert!(o["since"].is_string() && o["reason"].is_string(), "{o:#}");
            o["dependency"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

/// An `autos work` process for this test's database, store and court, taking new tasks
/// promptly.
fn work_process(app: &TestApp) -> tokio::process::Command {
    let mut command = autos_process("work", &app.db, &app.s3, &app.court, free_port());
    command.env("AUTOS_POLL_INTERVAL_MS", "200");
    command
}

/// Sends SIGTERM (what a deploy or `docker stop` sends) to a child process.
fn terminate(child: &tokio::process::Child) {
    let pid = child.id().expect("the process runs");
    let sent = std::process::Command::new("kill")
        .args(["-s", "TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success(), "SIGTERM to {pid}");
}

/// Waits for a child to exit, failing the test after `within`.
async fn exited(child: &mut tokio::process::Child, within: Duration) -> std::process::ExitStatus {
    match tokio::time::timeout(within, child.wait()).await {
        Ok(status) => status.expect("wait for the process"),
        Err(_) => panic!("the process did not exit within {within:?}"),
    }
}

/// autos serving the API only: the workers of the test are processes of their own.
fn serve_only() -> Options {
    Options {
        role: autos::app::Role::SERVE,
        ..Options::default()
    }
}

/// Waits until the workers hold every document of the job (`docs` of the case `number`)
/// and four of their transfers are under way — failing the test should the `autos work`
/// process `child`, if any, exit meanwhile; returns those four.
async fn mid_batch(
    app: &TestApp,
    pool: &PgPool,
    id: &str,
    number: &str,
    docs: &[Doc],
    mut child: Option<&mut tokio::process::Child>,
) -> Vec<String> {
    let deadline = Deadline::after(WAIT, "every document claimed and four transfers under way");
    loop {
        if let Some(child) = child.as_mut() {
            if let Some(status) = child.try_wait().expect("the work process") {
                panic!("autos work exited: {status}");
            }
        }
        let held = counted(pool, id, "PROCESSING").await;
        if held == docs.len() && app.court.slow_sending_now() == 4 {
            break;
        }
        deadline.check((held, app.court.slow_sending_now())).await;
    }
    let under_way: Vec<String> = docs
        .iter()
        .filter(|d| app.court.gets(number, &d.id) == 1)
        .map(|d| d.id.clone())
        .collect();
    assert_eq!(under_way.len(), 4, "{:?}", gets(&app.court, number, docs));
    under_way
}

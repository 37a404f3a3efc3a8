//! The queue's faults, made harmless: a large job no longer holds every worker while a small one
//! waits (rounds), a stale worker's late writes no longer change a row another worker runs
//! (claims), and nothing the queue and the webhooks leave behind grows without bound
//! (retention).
//!
//! Everything is real: a PostgreSQL database per test, the S3-compatible test server, the test
//! court (slowed down where a job must last), and autos in-process — or, for the queue's own
//! rules, the queue's functions on a database of their own.

mod common;
#[path = "faults_queue/fairness.rs"]
mod fairness;
#[path = "faults_queue/ownership.rs"]
mod ownership;
#[path = "faults_queue/retention.rs"]
mod retention;
#[path = "faults_queue/rounds.rs"]
mod rounds;

use async_trait::async_trait;
use fang::{AsyncQueueable, AsyncRunnable, FangError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use uuid::Uuid;

use common::*;

/// A migrated database of its own, and a pool on it (the application's pool settings: its
/// generic plans included).
async fn queue_db(connections: u32) -> (TestDb, PgPool) {
    let db = TestDb::new().await;
    let pool = autos::db::connect(&db.url, connections)
        .await
        .expect("connect");
    autos::db::migrate(&pool).await.expect("migrate");
    (db, pool)
}

/// A task of type `kind`, the `n`-th of the job `job`, that takes `sleep_ms` to run and records
/// its runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct QueueProbe {
    kind: String,
    job: String,
    n: u32,
    sleep_ms: u64,
}

/// Runs started and ended, per kind.
fn runs() -> &'static Mutex<HashMap<String, (u32, u32)>> {
    static RUNS: std::sync::OnceLock<Mutex<HashMap<String, (u32, u32)>>> =
        std::sync::OnceLock::new();
    RUNS.get_or_init(Default::default)
}

/// (started, ended) runs of probes of `kind`.
fn runs_of(kind: &str) -> (u32, u32) {
    runs()
        .lock()
        .unwrap()
        .get(kind)
        .copied()
        .unwrap_or_default()
}

#[typetag::serde]
#[async_trait]
impl AsyncRunnable for QueueProbe {
    async fn run(&self, _queue: &dyn AsyncQueueable) -> Result<(), FangError> {
        runs()
            .lock()
            .unwrap()
            .entry(self.kind.clone())
            .or_default()
            .0 += 1;
        tokio::time::sleep(Duration::from_millis(self.sleep_ms)).await;
        runs()
            .lock()
            .unwrap()
            .entry(self.kind.clone())
            .or_default()
            .1 += 1;
        Ok(())
    }
    fn task_type(&self) -> String {
        self.kind.clone()
    }
}

/// Enqueues `n` probes of `kind` as one job `job` (as a job's batches are), due now; returns
/// their ids in order.
async fn enqueue_job(pool: &PgPool, kind: &str, job: &str, n: u32) -> Vec<Uuid> {
    let probes: Vec<QueueProbe> = (0..n)
        .map(|n| QueueProbe {
            kind: kind.into(),
            job: job.into(),
            n,
            sleep_ms: 0,
        })
        .collect();
    let tasks: Vec<&dyn AsyncRunnable> = probes.iter().map(|p| p as &dyn AsyncRunnable).collect();
    let ids: Vec<Uuid> = probes.iter().map(|_| Uuid::new_v4()).collect();
    autos::queue::enqueue_many(pool, &tasks, &ids, None)
        .await
        .expect("enqueue a job's tasks");
    ids
}

/// `job` and `n` of a probe task's metadata: `"A3"`.
fn label(metadata: &Value) -> String {
    format!(
        "{}{}",
        metadata["job"].as_str().unwrap_or("?"),
        metadata["n"].as_u64().unwrap_or(u64::MAX)
    )
}

/// One value of a query on `pool`.
async fn scalar<T>(pool: &PgPool, sql: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Rows and index entries that the plan `plan` (of `EXPLAIN ANALYZE`) read through the scans
/// `scan` picks by their index or table name: those they returned and those their filters
/// removed, every loop counted.
fn rows_read(plan: &Value, scan: &dyn Fn(&str) -> bool) -> f64 {
    let mut total = 0.0;
    let node = plan["Node Type"].as_str().unwrap_or_default();
    let name = plan["Index Name"]
        .as_str()
        .or_else(|| plan["Relation Name"].as_str())
        .unwrap_or_default();
    if scan(name) && node.contains("Scan") {
        let loops = plan["Actual Loops"].as_f64().unwrap_or(1.0);
        let returned = plan["Actual Rows"].as_f64().unwrap_or(0.0);
        let removed = plan["Rows Removed by Filter"].as_f64().unwrap_or(0.0)
            + plan["Rows Removed by Index Recheck"]
                .as_f64()
                .unwrap_or(0.0);
        total += (returned + removed) * loops;
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        total += rows_read(child, scan);
    }
    total
}

//! What is kept only for a while goes: webhook deliveries that ended, tasks that failed for
//! good and audit log entries, each after its configured period, and rate-limit windows an
//! hour after they closed. A pass deletes a bounded number of each, a bounded batch per
//! statement; a backlog (a retention just shortened, a first pass over years of rows) goes
//! over the following passes.

use super::Services;
use crate::db;
use chrono::{DateTime, Utc};
use std::future::Future;
use std::time::Duration;

/// Rows per statement.
const BATCH: i64 = 1_000;
/// Statements per kind of row and pass: at most 10,000 rows of each per pass.
const BATCHES_PER_PASS: u32 = 10;
/// Rate-limit windows are kept this long after they begin (a window lasts a minute).
const RATE_WINDOWS: Duration = Duration::from_secs(3600);

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Webhook deliveries that ended (with their attempts).
    pub deliveries: usize,
    /// Tasks that failed for good.
    pub failed_tasks: usize,
    /// Audit log entries.
    pub audit_entries: usize,
}

/// One pass of deletions.
pub async fn prune(svc: &Services) -> anyhow::Result<Pruned> {
    let settings = &svc.settings;
    let pool = &svc.pool;
    let mut pruned = Pruned::default();
    if let Some(before) = ago(settings.delivery_retention) {
        pruned.deliveries =
            batches(|| db::retention::finished_deliveries(pool, before, BATCH)).await?;
    }
    if let Some(before) = ago(settings.failed_task_retention) {
        pruned.failed_tasks = batches(|| crate::queue::purge_failed(pool, before, BATCH)).await?;
    }
    if let Some(before) = ago(settings.audit_retention) {
        pruned.audit_entries =
            batches(|| db::retention::audit_entries(pool, before, BATCH)).await?;
    }
    if let Some(before) = ago(RATE_WINDOWS) {
        // A row per key and minute, pruned every pass: a few rows, one statement.
        crate::limits::rate::purge(pool, before).await?;
    }
    Ok(pruned)
}

/// `period` before now (`None` if that is before any representable time).
fn ago(period: Duration) -> Option<DateTime<Utc>> {
    let period = chrono::Duration::from_std(period).ok()?;
    Utc::now().checked_sub_signed(period)
}

/// Runs `delete` (one batch) until a batch comes back short or the pass's share is spent;
/// returns the rows deleted.
async fn batches<F, Fut>(mut delete: F) -> Result<usize, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, sqlx::Error>>,
{
    let mut total = 0;
    for _ in 0..BATCHES_PER_PASS {
        let deleted = delete().await?;
        total += deleted as usize;
        if deleted < BATCH as u64 {
            break;
        }
    }
    Ok(total)
}

//! Rate limits: each key has a budget of points per minute, charged by the cost of what it
//! asks, shared by all of its requests on every `serve` process of a deployment.
//!
//! Every process counts locally and adds what it spent to one row per key and minute in
//! PostgreSQL (`rate_usage`): whenever it has spent a twentieth of the key's budget since it
//! last did, and at least once a second while it spends. The total it reads back is the
//! deployment's; between two such additions a process can only overspend by what it alone
//! spent, so a key's budget holds across processes to within a twentieth of it per process
//! (10 % with two). Requests themselves never wait for the database, save the one in twenty
//! that adds.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The window of a budget.
pub const WINDOW_SECS: i64 = 60;
/// How often spending is added to the deployment's total while it goes on.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// The share of a budget a process may spend between two additions.
const SHARE: u64 = 20;

/// What a charge found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request may go on (its points were charged).
    pub allowed: bool,
    /// The points it asked for.
    pub requested: u64,
    /// The budget per window.
    pub limit: u64,
    /// Points left in this window, after this request.
    pub remaining: u64,
    /// When the window ends and the budget is whole again.
    pub reset_at: DateTime<Utc>,
}

impl Verdict {
    /// Seconds until the budget is whole again (at least 1).
    pub fn retry_after_secs(&self, now: DateTime<Utc>) -> u64 {
        (self.reset_at - now).num_seconds().max(1) as u64
    }
}

#[derive(Debug)]
struct Bucket {
    /// Start of the window (Unix seconds).
    window: i64,
    /// The deployment's spending in the window, as last read (ours included).
    known: u64,
    /// Ours since then.
    pending: u64,
    /// When `known` was read.
    synced: Option<Instant>,
}

struct Inner {
    pool: PgPool,
    default_limit: u64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// The process's rate limiter; cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

fn window_of(now: DateTime<Utc>) -> i64 {
    let t = now.timestamp();
    t - t.rem_euclid(WINDOW_SECS)
}

impl RateLimiter {
    /// A limiter on `pool` giving each key `default_limit` points per window unless the key
    /// has its own; until `stop`, what was spent is added to the deployment's total each second.
    pub fn start(pool: PgPool, default_limit: u64, stop: watch::Receiver<bool>) -> RateLimiter {
        let limiter = RateLimiter {
            inner: Arc::new(Inner {
                pool,
                default_limit,
                buckets: Mutex::default(),
            }),
        };
        tokio::spawn(limiter.clone().sync_periodically(stop));
        limiter
    }

    /// The deployment's default budget.
    pub fn default_limit(&self) -> u64 {
        self.inner.default_limit
    }

    fn buckets(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bucket>> {
        self.inner.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Charges `points` to `bucket` (a key id), whose budget is `limit` (or the default): the
    /// points are taken if they fit in what is left of the window.
    pub async fn charge(&self, bucket: &str, limit: Option<u64>, points: u64) -> Verdict {
        let now = Utc::now();
        let window = window_of(now);
        let limit = limit.unwrap_or(self.inner.default_limit).max(1);
        let reset_at = DateTime::from_timestamp(window + WINDOW_SECS, 0).unwrap_or(now);
        let (verdict, sync) = {
            let mut buckets = self.buckets();
            if !buckets.contains_key(bucket) {
                buckets.insert(
                    bucket.to_string(),
                    Bucket {
                        window,
                        known: 0,
                        pending: 0,
                        synced: None,
                    },
                );
            }
            let b = buckets.get_mut(bucket).expect("just inserted");
            if b.window != window {
                *b = Bucket {
                    window,
                    known: 0,
                    pending: 0,
                    synced: None,
                };
            }
            let used = b.known.saturating_add(b.pending);
            let allowed = used.saturating_add(points) <= limit;
            if allowed {
                b.pending = b.pending.saturating_add(points);
            }
            let spent = if allowed { used + points } else { used };
            let verdict = Verdict {
                allowed,
                requested: points,
                limit,
                remaining: limit.saturating_sub(spent),
                reset_at,
            };
            let due = b.synced.is_none_or(|at| at.elapsed() >= SYNC_EVERY);
            let sync = b.pending > 0 && (b.pending >= (limit / SHARE).max(1) || due);
            (verdict, sync)
        };
        if sync {
            self.sync(bucket).await;
        }
        verdict
    }

    /// Adds this process's spending on `bucket` to the deployment's total, and reads it.
    async fn sync(&self, bucket: &str) {
        let (window, delta) = {
            let mut buckets = self.buckets();
            let Some(b) = buckets.get_mut(bucket) else {
                return;
            };
            let delta = std::mem::take(&mut b.pending);
            // Until the total comes back, what this process knows includes what it sends.
            b.known = b.known.saturating_add(delta);
            b.synced = Some(Instant::now());
            (b.window, delta)
        };
        let total: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "INSERT INTO rate_usage (key_id, window_start, used)
             VALUES ($1, to_timestamp($2), $3)
             ON CONFLICT (key_id, window_start)
             DO UPDATE SET used = rate_usage.used + EXCLUDED.used RETURNING used",
        )
        .bind(bucket)
        .bind(window as f64)
        .bind(delta as i64)
        .fetch_one(&self.inner.pool)
        .await;
        let mut buckets = self.buckets();
        let Some(b) = buckets.get_mut(bucket).filter(|b| b.window == window) else {
            return;
        };
        match total {
            Ok(total) => b.known = b.known.max(total.max(0) as u64),
            Err(err) => {
                // Counted again next time: nothing spent is forgotten.
                b.known = b.known.saturating_sub(delta);
                b.pending = b.pending.saturating_add(delta);
                tracing::warn!(error = %err, "cannot add to the rate limits' totals; trying again");
            }
        }
    }

    async fn sync_periodically(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SYNC_EVERY) => {}
                _ = stop.changed() => return,
            }
            let now = window_of(Utc::now());
            let due: Vec<String> = {
                let mut buckets = self.buckets();
                // Past windows are over: nothing of them matters any more.
                buckets.retain(|_, b| b.window == now);
                buckets
                    .iter()
                    .filter(|(_, b)| b.pending > 0)
                    .map(|(k, _)| k.clone())
                    .collect()
            };
            for bucket in due {
                self.sync(&bucket).await;
            }
        }
    }
}

/// Deletes totals of windows that ended before `before` (the sweeper's chore).
pub async fn purge(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM rate_usage WHERE window_start < $1")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_whole_minutes() {
        let start = 1_799_999_940; // a multiple of 60
        let last_second = DateTime::from_timestamp(start + 59, 0).unwrap();
        assert_eq!(window_of(last_second), start);
        let next = DateTime::from_timestamp(start + 60, 0).unwrap();
        assert_eq!(window_of(next), start + 60);
    }
}

//! Calls per credential: at most `rate` in any 60 seconds, in this process. Courts lock
//! accounts that hammer them (a known client keeps itself to 5 calls a minute); a caller over
//! the rate waits for its turn rather than failing.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(60);

pub(super) struct Pace {
    rate: usize,
    window: Duration,
    calls: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Pace {
    pub(super) fn new(rate_per_minute: u32) -> Self {
        Self::per(rate_per_minute, WINDOW)
    }

    fn per(rate: u32, window: Duration) -> Self {
        Self {
            rate: usize::try_from(rate.max(1)).unwrap_or(usize::MAX),
            window,
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until `key` may make one more call, and counts it.
    pub(super) async fn turn(&self, key: &str) {
        loop {
            let wait = {
                let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let recent = calls.entry(key.to_string()).or_default();
                while recent
                    .front()
                    .is_some_and(|&t| now.duration_since(t) >= self.window)
                {
                    recent.pop_front();
                }
                if recent.len() < self.rate {
                    recent.push_back(now);
                    return;
                }
                // Full: the oldest call leaves the window first.
                recent.front().map_or(Duration::ZERO, |&t| {
                    self.window.saturating_sub(now.duration_since(t))
                })
            };
            tracing::debug!(credential = %key, wait_ms = wait.as_millis() as u64, "waiting for the court's call rate");
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_credential_over_its_rate_waits_for_the_window_and_others_do_not() {
        let window = Duration::from_millis(300);
        let pace = Pace::per(2, window);
        let start = Instant::now();
        pace.turn("a").await;
        pace.turn("a").await;
        pace.turn("b").await;
        assert!(start.elapsed() < window / 2);
        pace.turn("a").await;
        assert!(start.elapsed() >= window);
    }
}

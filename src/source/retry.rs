//! Retrying lookups: exponential backoff with jitter, and `Retry-After`.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use rand::Rng;

use super::SourceError;

/// Longest we sleep between two lookup attempts, whatever the source asks: a lookup has
/// someone waiting on it, and the caller can always try again later.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(30);

/// Runs `attempt` up to `attempts` times while it fails with a retryable error.
pub(super) async fn with_retries<T, F, Fut>(
    what: &str,
    attempts: u32,
    backoff: Duration,
    mut attempt: F,
) -> Result<T, SourceError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SourceError>>,
{
    let attempts = attempts.max(1);
    let mut made = 0;
    loop {
        made += 1;
        match attempt().await {
            Err(err) if err.is_retryable() && made < attempts => {
                let wait = match err.retry_after() {
                    Some(asked) => asked.min(MAX_WAIT),
                    None => jittered_backoff(backoff, made),
                };
                tracing::warn!(
                    error = %err,
                    attempt = made,
                    of = attempts,
                    wait_ms = wait.as_millis() as u64,
                    "looking up {what} failed; retrying"
                );
                tokio::time::sleep(wait).await;
            }
            Err(SourceError::Retryable {
                message,
                retry_after,
            }) if made > 1 => {
                return Err(SourceError::Retryable {
                    message: format!("{message} (gave up after {made} attempts)"),
                    retry_after,
                })
            }
            other => return other,
        }
    }
}

/// `base · 2^(attempt-1)`, capped at [`MAX_WAIT`], then drawn uniformly from its upper half so
/// that many workers failing together do not retry in lockstep.
pub(super) fn jittered_backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    let full = base.saturating_mul(factor).min(MAX_WAIT);
    let half = full / 2;
    let spread_ms = (full - half).as_millis() as u64;
    half + Duration::from_millis(rand::rng().random_range(0..=spread_ms))
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date (IMF-fixdate, or the obsolete
/// RFC 850 and asctime forms that RFC 9110 still asks recipients to accept).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .map(|d| d.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(value, "%A, %d-%b-%y %H:%M:%S GMT").map(|n| n.and_utc())
        })
        .or_else(|_| {
            NaiveDateTime::parse_from_str(value, "%a %b %e %H:%M:%S %Y").map(|n| n.and_utc())
        })
        .ok()?;
    // A date in the past means "now", not "never".
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = Utc.with_ymd_and_hms(2024, 11, 6, 8, 49, 30).unwrap();
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        let imf = parse_retry_after("Wed, 06 Nov 2024 08:49:37 GMT", now);
        assert_eq!(imf, Some(Duration::from_secs(7)));
        let rfc850 = parse_retry_after("Wednesday, 06-Nov-24 08:49:40 GMT", now);
        assert_eq!(rfc850, Some(Duration::from_secs(10)));
        let asctime = parse_retry_after("Wed Nov  6 08:49:35 2024", now);
        assert_eq!(asctime, Some(Duration::from_secs(5)));
        let past = parse_retry_after("Wed, 06 Nov 2024 08:00:00 GMT", now);
        assert_eq!(past, Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        for attempt in 1..=3 {
            let full = base * 2u32.pow(attempt - 1);
            let wait = jittered_backoff(base, attempt);
            assert!(
                wait >= full / 2 && wait <= full,
                "{wait:?} for attempt {attempt}"
            );
        }
        assert!(jittered_backoff(base, 40) <= MAX_WAIT);
        assert_eq!(jittered_backoff(Duration::ZERO, 3), Duration::ZERO);
    }

    #[tokio::test]
    async fn stops_on_permanent_and_after_the_last_attempt() {
        let mut calls = 0;
        let err = with_retries("x", 3, Duration::ZERO, || {
            calls += 1;
            async { Err::<(), _>(SourceError::permanent("no")) }
        })
        .await
        .unwrap_err();
        assert_eq!((calls, err.is_retryable()), (1, false));

        let mut calls = 0;
        let err = with_retries("x", 3, Duration::ZERO, || {
            calls += 1;
            async { Err::<(), _>(SourceError::retryable("busy")) }
        })
        .await
        .unwrap_err();
        assert_eq!(calls, 3);
        assert_eq!(err.to_string(), "busy (gave up after 3 attempts)");
    }
}

//! Sparing the court: courts block addresses that hammer them, and a blocked address fails
//! every tenant at once.
//!
//! Per process, around everything [`Source`](super::Source) asks:
//!
//! - at most `concurrency` requests at once, lookups and document transfers alike; a
//!   transfer holds its slot until its body has been read to the end (or dropped), and a
//!   lookup holds one per attempt, not while it waits to retry;
//! - a number the source does not know is remembered for `not_found_ttl` and answered as
//!   unknown meanwhile, without asking;
//! - lookups of one number made while one is already under way wait for its answer instead
//!   of asking again, whoever makes them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

use super::{DocumentBody, ProcessListing, SourceError};

/// What a lookup answers.
type Answer = Result<Option<ProcessListing>, SourceError>;

/// Entries of the not-found memory kept before expired ones are swept out.
const SWEEP_AT_LEAST: usize = 1024;

/// The limits of one source in this process.
pub(super) struct Spare {
    slots: Arc<Semaphore>,
    not_found_ttl: Duration,
    not_found: Mutex<NotFound>,
    /// The lookup under way for each number; entries die with their last waiter.
    in_flight: Mutex<HashMap<String, Weak<OnceCell<Answer>>>>,
}

/// Numbers the source said it does not know, until when that is believed.
struct NotFound {
    /// `None`: for as long as this process runs (a TTL past what an `Instant` holds).
    until: HashMap<String, Option<Instant>>,
    /// Size at which expired entries are swept out next; doubles with what stays.
    sweep_at: usize,
}

impl Spare {
    /// `concurrency` requests at once (0 is taken as 1); unknown numbers remembered for
    /// `not_found_ttl` (zero: not remembered).
    pub(super) fn new(concurrency: u32, not_found_ttl: Duration) -> Self {
        let permits = usize::try_from(concurrency.max(1)).unwrap_or(usize::MAX);
        Self {
            slots: Arc::new(Semaphore::new(permits.min(Semaphore::MAX_PERMITS))),
            not_found_ttl,
            not_found: Mutex::new(NotFound {
                until: HashMap::new(),
                sweep_at: SWEEP_AT_LEAST,
            }),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for one of the source's request slots; it is free again when dropped.
    pub(super) async fn slot(&self) -> OwnedSemaphorePermit {
        match self.slots.clone().acquire_owned().await {
            Ok(slot) => slot,
            // The semaphore is never closed.
            Err(_) => unreachable!("the source's request slots are never closed"),
        }
    }

    /// Looks `number` up with `ask` (which takes a [`slot`](Spare::slot) per request it
    /// makes), unless the source said it does not know it within the TTL, or a lookup of it
    /// is already under way: then that lookup's answer is this one's too.
    pub(super) async fn lookup<F, Fut>(&self, key: &str, ask: F) -> Answer
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Answer>,
    {
        if self.known_missing(key) {
            tracing::debug!(lookup = %key, "not asking the source: it did not know this number a moment ago");
            return Ok(None);
        }
        let shared = self.under_way(key);
        // Should the caller running `ask` go away, the next waiter runs its own.
        let answer = shared
            .get_or_init(|| async {
                // The lookup that just ended may have found the number unknown.
                if self.known_missing(key) {
                    return Ok(None);
                }
                let answer = ask().await;
                if matches!(answer, Ok(None)) {
                    self.remember_missing(key);
                }
                answer
            })
            .await
            .clone();
        let mut in_flight = lock(&self.in_flight);
        if in_flight
            .get(key)
            .is_some_and(|entry| Weak::ptr_eq(entry, &Arc::downgrade(&shared)))
        {
            in_flight.remove(key);
        }
        answer
    }

    /// Opens a document with `open` once a slot is free; the slot stays taken until the
    /// body has been read to its end or dropped.
    pub(super) async fn open<F, Fut>(&self, open: F) -> Result<DocumentBody, SourceError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<DocumentBody, SourceError>>,
    {
        let slot = self.slot().await;
        let body = open().await?;
        Ok(DocumentBody {
            stream: Holding {
                stream: body.stream,
                slot: Some(slot),
            }
            .boxed(),
            ..body
        })
    }

    /// The shared lookup of `key`: the one under way, or a new one.
    fn under_way(&self, key: &str) -> Arc<OnceCell<Answer>> {
        let mut in_flight = lock(&self.in_flight);
        if let Some(shared) = in_flight.get(key).and_then(Weak::upgrade) {
            return shared;
        }
        in_flight.retain(|_, entry| entry.strong_count() > 0);
        let shared = Arc::new(OnceCell::new());
        in_flight.insert(key.to_string(), Arc::downgrade(&shared));
        shared
    }

    fn known_missing(&self, key: &str) -> bool {
        match lock(&self.not_found).until.get(key) {
            Some(Some(until)) => Instant::now() < *until,
            Some(None) => true,
            None => false,
        }
    }

    fn remember_missing(&self, key: &str) {
        if self.not_found_ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut not_found = lock(&self.not_found);
        if not_found.until.len() >= not_found.sweep_at {
            not_found
                .until
                .retain(|_, until| until.is_none_or(|until| until > now));
            not_found.sweep_at = (not_found.until.len() * 2).max(SWEEP_AT_LEAST);
        }
        not_found
            .until
            .insert(key.to_string(), now.checked_add(self.not_found_ttl));
    }
}

/// The maps stay consistent whatever panicked while holding them.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A document body that keeps its request slot until its last byte (or its error).
struct Holding {
    stream: BoxStream<'static, Result<bytes::Bytes, SourceError>>,
    slot: Option<OwnedSemaphorePermit>,
}

impl Stream for Holding {
    type Item = Result<bytes::Bytes, SourceError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = futures::ready!(self.stream.poll_next_unpin(cx));
        if !matches!(item, Some(Ok(_))) {
            self.slot = None;
        }
        Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ProcessNumber;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn number() -> ProcessNumber {
        ProcessNumber::parse("1500345-31.2017.8.26.0248").expect("a valid number")
    }

    fn listing() -> ProcessListing {
        ProcessListing {
            number: number().to_string(),
            court: None,
            class: None,
            subject: None,
            documents: Vec::new(),
            sigilo: 0,
        }
    }

    #[tokio::test]
    async fn lookups_under_way_are_shared_and_unknown_numbers_remembered() {
        let spare = Spare::new(4, Duration::from_millis(200));
        let asked = AtomicU32::new(0);
        let ask = |found: bool| {
            let asked = &asked;
            move || async move {
                asked.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(found.then(listing))
            }
        };
        let n = number();
        let answers =
            futures::future::join_all((0..10).map(|_| spare.lookup(n.as_str(), ask(true)))).await;
        assert!(answers.iter().all(|a| a == &Ok(Some(listing()))));
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert!(lock(&spare.in_flight).is_empty(), "nothing left behind");

        // Found numbers are not remembered: the next lookup asks again.
        spare.lookup(n.as_str(), ask(true)).await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 2);

        for _ in 0..5 {
            assert_eq!(spare.lookup(n.as_str(), ask(false)).await, Ok(None));
        }
        assert_eq!(asked.load(Ordering::SeqCst), 3, "unknown: asked once");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            spare.lookup(n.as_str(), ask(true)).await,
            Ok(Some(listing()))
        );
        assert_eq!(asked.load(Ordering::SeqCst), 4, "asked again after the TTL");
    }

    #[tokio::test]
    async fn a_failed_lookup_is_shared_but_not_remembered() {
        let spare = Spare::new(4, Duration::from_secs(60));
        let asked = AtomicU32::new(0);
        let n = number();
        let fail = || async {
            asked.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(SourceError::retryable("court down"))
        };
        let answers =
            futures::future::join_all((0..3).map(|_| spare.lookup(n.as_str(), fail))).await;
        assert!(answers.iter().all(Result::is_err));
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert!(spare.lookup(n.as_str(), fail).await.is_err());
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_leaves_the_lookup_to_the_next() {
        let spare = Spare::new(4, Duration::ZERO);
        let n = number();
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(None)
        };
        let abandoned =
            tokio::time::timeout(Duration::from_millis(20), spare.lookup(n.as_str(), slow));
        let waiting = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            spare
                .lookup(n.as_str(), || async { Ok(Some(listing())) })
                .await
        };
        let (abandoned, answer) = tokio::join!(abandoned, waiting);
        assert!(abandoned.is_err(), "the first caller gave up");
        assert_eq!(answer, Ok(Some(listing())));
        assert!(
            lock(&spare.not_found).until.is_empty(),
            "TTL 0: nothing remembered"
        );
    }

    #[tokio::test]
    async fn a_body_holds_its_slot_until_its_end() {
        let spare = Spare::new(1, Duration::ZERO);
        let body = || async {
            Ok(DocumentBody {
                content_length: Some(2),
                content_type: None,
                stream: futures::stream::iter([Ok(bytes::Bytes::from_static(b"ab"))]).boxed(),
            })
        };
        let mut first = spare.open(body).await.unwrap();
        assert_eq!(
            spare.slots.available_permits(),
            0,
            "held while the body is unread"
        );
        assert!(first.stream.next().await.is_some());
        assert_eq!(spare.slots.available_permits(), 0, "held until the end");
        assert!(first.stream.next().await.is_none());
        assert_eq!(spare.slots.available_permits(), 1, "free at the end");

        let second = spare.open(body).await.unwrap();
        drop(second);
        assert_eq!(spare.slots.available_permits(), 1, "free when dropped");

        let _slot = spare.slot().await;
        let refused = spare.open(|| async { Err(SourceError::permanent("404")) });
        let refused = tokio::time::timeout(Duration::from_millis(50), refused).await;
        assert!(refused.is_err(), "waits for the slot");
    }
}

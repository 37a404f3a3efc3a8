//! Outages of what the workers depend on — S3 and the court source — told apart from a
//! document's own failures, so that they pause work instead of failing it.
//!
//! A failed transfer is one of three kinds (see [`Fault`]):
//! - the document's own: a 4xx about it, bytes that differ from what was announced, over the
//!   size cap. It counts as an attempt of the document, and shows the dependency answers;
//! - the dependency's, beyond doubt ([`Fault::Down`]): S3 failing in any way, the court
//!   refusing connections or not resolving, answering 429, 502, 503 or 504. It counts
//!   against nothing — unless it follows one document while the dependency answers about
//!   others (a URL that always answers 503), which would otherwise be tried for ever;
//! - unclear ([`Fault::Unclear`]): the court answering another 5xx, timing out, breaking the
//!   connection — a court down, or one document it cannot serve. It counts against the
//!   document only once the fault follows the document: at the document's second failure in a
//!   row while no other document is failing; the first is retried after the document's backoff,
//!   uncounted. Failures of several documents in a row, nothing served between, are the
//!   dependency's: uncounted.
//!
//! Each worker process keeps a breaker per dependency. It opens after [`OPEN_AFTER`] failures
//! in a row with nothing served between, when they hit more than one document or were all
//! beyond doubt. While it is open no transfer starts — batches are put off whole, unclaimed —
//! until a probe is due (after 1 s, doubling to a minute): one transfer goes through, and if it
//! succeeds the breaker closes and work resumes at once. Only after `AUTOS_OUTAGE_MAX_SECS` of
//! continuous outage do the documents waiting for it fail.
//!
//! Open breakers are recorded in the `outages` table ([`crate::db::outages`]) (earliest `since` of all processes, kept
//! fresh while it lasts), so that every process — `/readyz`, a job's `waitingFor` — can tell
//! why work waits, and the active jobs' subscribers are told when an outage starts and ends.

use crate::db::outages;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failures in a row, nothing served in between, that open a breaker.
pub const OPEN_AFTER: u32 = 3;
/// First wait of an open breaker before it lets a probe through; doubles to [`MAX_WAIT`].
pub const FIRST_WAIT: Duration = Duration::from_secs(1);
/// Longest wait between two probes.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// What the workers depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// The S3 bucket.
    Storage,
    /// The court source.
    Source,
}

impl Dependency {
    /// Its name in the `outages` table and in answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Dependency::Storage => "storage",
            Dependency::Source => "source",
        }
    }

    /// A stable phrase for a document waiting for it.
    pub fn waiting(self) -> &'static str {
        match self {
            Dependency::Storage => "waiting: the storage (S3) is unreachable",
            Dependency::Source => "waiting: the court source is unreachable",
        }
    }

    /// A stable phrase for a document that waited too long for it.
    pub fn gave_up(self) -> &'static str {
        match self {
            Dependency::Storage => "the storage (S3) was unreachable for too long",
            Dependency::Source => "the court source was unreachable for too long",
        }
    }
}

/// How sure it is that a failure is the dependency's rather than the document's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The dependency's beyond doubt (unreachable, overloaded, S3 failing).
    Down,
    /// The dependency's or the document's: the pattern across documents tells.
    Unclear,
}

/// Documents remembered as failing unclearly before being confirmed; past this, forgotten.
const MAX_SUSPECTS: usize = 10_000;
/// How often an open breaker's outage row is marked as still seen.
const TOUCH_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct State {
    /// Failures of its kind since it last served anything.
    failures: u32,
    /// The distinct documents those failures hit (a few are enough to tell).
    streak: Vec<uuid::Uuid>,
    /// Whether every one of those failures was beyond doubt.
    all_down: bool,
    /// Documents whose last failure was not counted, with the number of answers given until
    /// then: their next unclear failure, if no other document fails meanwhile, is theirs; so
    /// is their next failure beyond doubt once the dependency answered about others between
    /// the two (it serves everything but them).
    suspects: std::collections::HashMap<uuid::Uuid, u64>,
    /// Answers given so far (documents served or answered about).
    answers: u64,
    open: Option<Open>,
}

impl Default for State {
    fn default() -> Self {
        State {
            failures: 0,
            streak: Vec::new(),
            all_down: true,
            suspects: Default::default(),
            answers: 0,
            open: None,
        }
    }
}

impl State {
    /// It answered (served a document, or answered about one): failures in a row start over.
    fn answered(&mut self) {
        self.answers += 1;
        self.failures = 0;
        self.streak.clear();
        self.all_down = true;
    }
}

#[derive(Debug, Clone)]
struct Open {
    /// When the outage began (as recorded for every process).
    since: DateTime<Utc>,
    /// When a probe may go through.
    probe_at: Instant,
    /// The wait after the next failed probe.
    wait: Duration,
    /// A probe is under way.
    probing: bool,
    /// When the outage row was last marked as still seen.
    touched: Instant,
}

/// Why a transfer must not start now.
#[derive(Debug, Clone)]
pub struct Wait {
    /// What is down.
    pub dependency: Dependency,
    /// When to try again.
    pub until: DateTime<Utc>,
    /// Since when it is down.
    pub since: DateTime<Utc>,
}

impl Wait {
    /// Whether the outage has lasted longer than `max` (`AUTOS_OUTAGE_MAX_SECS`).
    pub fn outlasted(&self, max: Duration) -> bool {
        (Utc::now() - self.since).to_std().unwrap_or_default() > max
    }
}

/// What a failure of a dependency's kind means for the document it hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The document's own failure: an attempt.
    Charged,
    /// Perhaps the document's: not counted, tried again after the document's backoff; if it
    /// fails again the same way, with no other document failing, it counts.
    Unconfirmed,
    /// The dependency seems down: nothing is counted; try again at `until`.
    Outage {
        /// When to try again.
        until: DateTime<Utc>,
        /// Since when it is down.
        since: DateTime<Utc>,
    },
}

struct Breaker {
    dependency: Dependency,
    state: Mutex<State>,
}

fn wall(at: Instant) -> DateTime<Utc> {
    let ahead = at.saturating_duration_since(Instant::now());
    Utc::now() + chrono::Duration::from_std(ahead).unwrap_or_default()
}

impl Breaker {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The breakers of a worker process; cheap to clone.
#[derive(Clone)]
pub struct Breakers {
    inner: Arc<[Breaker; 2]>,
    pool: PgPool,
}

impl Breakers {
    /// Closed breakers, recording outages on `pool`.
    pub fn new(pool: PgPool) -> Breakers {
        let breaker = |dependency| Breaker {
            dependency,
            state: Mutex::default(),
        };
        Breakers {
            inner: Arc::new([breaker(Dependency::Storage), breaker(Dependency::Source)]),
            pool,
        }
    }

    fn of(&self, dependency: Dependency) -> &Breaker {
        match dependency {
            Dependency::Storage => &self.inner[0],
            Dependency::Source => &self.inner[1],
        }
    }

    /// Whether a transfer may start now: `Err` while a dependency is down and no probe is due
    /// (or one is already under way). A transfer let through while a breaker is open is that
    /// breaker's probe.
    pub fn admit(&self) -> Result<(), Wait> {
        let now = Instant::now();
        for breaker in self.inner.iter() {
            let mut state = breaker.state();
            if let Some(open) = state.open.as_mut() {
                if open.probing || now < open.probe_at {
                    let until = if open.probing {
                        now + FIRST_WAIT
                    } else {
                        open.probe_at
                    };
                    return Err(Wait {
                        dependency: breaker.dependency,
                        until: wall(until),
                        since: open.since,
                    });
                }
                open.probing = true;
            }
        }
        Ok(())
    }

    /// Whether transfers are put off now, without taking a probe's turn: a batch that finds
    /// a breaker open and no probe due leaves its documents unclaimed until then.
    pub fn blocked(&self) -> Option<Wait> {
        let now = Instant::now();
        self.inner.iter().find_map(|breaker| {
            let state = breaker.state();
            let open = state.open.as_ref()?;
            (open.probing || now < open.probe_at).then(|| Wait {
                dependency: breaker.dependency,
                until: wall(open.probe_at.max(now + FIRST_WAIT / 2)),
                since: open.since,
            })
        })
    }

    /// `document` was stored: both dependencies served it.
    pub async fn served(&self, document: uuid::Uuid) {
        for breaker in self.inner.iter() {
            let reopened = {
                let mut state = breaker.state();
                state.answered();
                state.suspects.remove(&document);
                state.open.take().is_some()
            };
            if reopened {
                tracing::info!(
                    dependency = breaker.dependency.as_str(),
                    "outage over: work resumes"
                );
                self.record_end(breaker.dependency).await;
            }
        }
    }

    /// `dependency` answered about a document, with a failure of the document's own (a 4xx, its
    /// bytes): it is up, whatever failed before.
    pub async fn answered(&self, dependency: Dependency) {
        let breaker = self.of(dependency);
        let reopened = {
            let mut state = breaker.state();
            state.answered();
            state.open.take().is_some()
        };
        if reopened {
            tracing::info!(
                dependency = dependency.as_str(),
                "outage over: work resumes"
            );
            self.record_end(dependency).await;
        }
    }

    /// A failure of `dependency`'s kind (`reason`, a stable phrase) hit `document`.
    pub async fn failed(
        &self,
        dependency: Dependency,
        document: uuid::Uuid,
        fault: Fault,
        reason: &str,
    ) -> Verdict {
        let breaker = self.of(dependency);
        let (verdict, opened, touch) = {
            let mut state = breaker.state();
            state.failures += 1;
            if !state.streak.contains(&document) && state.streak.len() < 8 {
                state.streak.push(document);
            }
            state.all_down &= fault == Fault::Down;
            let now = Instant::now();
            let several = state.streak.len() >= 2;
            if let Some(open) = state.open.as_mut() {
                // A failed probe (or a transfer that was under way): wait longer.
                if open.probing {
                    open.probing = false;
                    open.probe_at = now + open.wait;
                    open.wait = (open.wait * 2).min(MAX_WAIT);
                }
                let touch = open.touched.elapsed() >= TOUCH_EVERY;
                if touch {
                    open.touched = now;
                }
                let verdict = Verdict::Outage {
                    until: wall(open.probe_at),
                    since: open.since,
                };
                (verdict, false, touch)
            } else if state.failures >= OPEN_AFTER && (several || state.all_down) {
                let since = Utc::now();
                state.open = Some(Open {
                    since,
                    probe_at: now + FIRST_WAIT,
                    wait: FIRST_WAIT * 2,
                    probing: false,
                    touched: now,
                });
                let verdict = Verdict::Outage {
                    until: wall(now + FIRST_WAIT),
                    since,
                };
                (verdict, true, false)
            } else if fault == Fault::Down
                && !several
                && state
                    .suspects
                    .get(&document)
                    .is_some_and(|answers| *answers < state.answers)
            {
                // It answers about other documents and keeps failing this one (a URL that
                // always answers 503): the document's, or it would be tried for ever.
                (Verdict::Charged, false, false)
            } else if fault == Fault::Down || several {
                if state.suspects.len() >= MAX_SUSPECTS {
                    state.suspects.clear();
                }
                let answers = state.answers;
                state.suspects.insert(document, answers);
                let verdict = Verdict::Outage {
                    until: wall(now + FIRST_WAIT),
                    since: Utc::now(),
                };
                (verdict, false, false)
            } else if state.suspects.contains_key(&document) {
                // It failed before, and nothing else is failing: the fault is the document's.
                (Verdict::Charged, false, false)
            } else {
                if state.suspects.len() >= MAX_SUSPECTS {
                    state.suspects.clear();
                }
                let answers = state.answers;
                state.suspects.insert(document, answers);
                (Verdict::Unconfirmed, false, false)
            }
        };
        if touch {
            self.touch(dependency).await;
        }
        if opened {
            tracing::warn!(
                dependency = dependency.as_str(),
                reason,
                "outage: no transfer starts until it answers again"
            );
            if let Some(since) = self.record_start(dependency, reason).await {
                // Several processes may have seen it: the earliest is when it began.
                if let Some(open) = breaker.state().open.as_mut() {
                    open.since = since.min(open.since);
                }
                if let Verdict::Outage { until, .. } = verdict {
                    return Verdict::Outage { until, since };
                }
            }
        }
        verdict
    }

    /// Marks an outage this process still sees as seen.
    async fn touch(&self, dependency: Dependency) {
        if let Err(err) = outages::touch(&self.pool, dependency.as_str()).await {
            tracing::warn!(error = %err, "cannot record that an outage goes on");
        }
    }

    /// Records an outage's start and returns when it began (earlier, if another process saw
    /// it first).
    async fn record_start(&self, dependency: Dependency, reason: &str) -> Option<DateTime<Utc>> {
        match outages::start(&self.pool, dependency.as_str(), reason).await {
            Ok(since) => Some(since),
            Err(err) => {
                tracing::warn!(error = %err, "cannot record an outage");
                None
            }
        }
    }

    async fn record_end(&self, dependency: Dependency) {
        if let Err(err) = outages::end(&self.pool, dependency.as_str()).await {
            tracing::warn!(error = %err, "cannot record the end of an outage");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers() -> Breakers {
        // Never connected: recording an outage fails and is logged, which the tests allow.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(10))
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        Breakers::new(pool)
    }

    fn doc(n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(n)
    }

    #[tokio::test]
    async fn an_unclear_failure_counts_once_it_follows_the_document() {
        let b = breakers();
        let (bad, good) = (doc(1), doc(2));
        let failed = || b.failed(Dependency::Source, bad, Fault::Unclear, "x");
        assert_eq!(failed().await, Verdict::Unconfirmed);
        b.served(good).await;
        // Others are served, this one keeps failing: each failure is its own from now on.
        for _ in 0..OPEN_AFTER + 1 {
            assert_eq!(failed().await, Verdict::Charged);
        }
        assert!(b.admit().is_ok(), "one document failing opens nothing");
        b.served(bad).await;
        assert_eq!(failed().await, Verdict::Unconfirmed, "stored: forgiven");
    }

    #[tokio::test]
    async fn unclear_failures_across_documents_count_against_none_and_open_the_breaker() {
        let b = breakers();
        let verdicts = [
            b.failed(Dependency::Source, doc(1), Fault::Unclear, "x")
                .await,
            b.failed(Dependency::Source, doc(2), Fault::Unclear, "x")
                .await,
            b.failed(Dependency::Source, doc(1), Fault::Unclear, "x")
                .await,
        ];
        assert_eq!(verdicts[0], Verdict::Unconfirmed);
        assert!(matches!(verdicts[1], Verdict::Outage { .. }));
        assert!(matches!(verdicts[2], Verdict::Outage { .. }));
        assert_eq!(b.admit().unwrap_err().dependency, Dependency::Source);
        assert!(b.blocked().is_some());
    }

    #[tokio::test]
    async fn a_dependency_down_beyond_doubt_opens_on_one_document() {
        let b = breakers();
        for _ in 0..OPEN_AFTER {
            assert!(matches!(
                b.failed(Dependency::Storage, doc(1), Fault::Down, "x")
                    .await,
                Verdict::Outage { .. }
            ));
        }
        let wait = b.admit().unwrap_err();
        assert_eq!(wait.dependency, Dependency::Storage);
        tokio::time::sleep(FIRST_WAIT + Duration::from_millis(50)).await;
        // One probe goes through; the others wait for it.
        assert!(b.blocked().is_none(), "a probe is due");
        assert!(b.admit().is_ok());
        assert!(b.admit().is_err());
        assert!(b.blocked().is_some(), "the probe is under way");
        b.served(doc(1)).await;
        assert!(b.admit().is_ok());
        assert!(b.admit().is_ok());
    }

    #[tokio::test]
    async fn an_answer_about_a_document_ends_the_streak() {
        let b = breakers();
        b.failed(Dependency::Source, doc(1), Fault::Down, "x").await;
        b.failed(Dependency::Source, doc(2), Fault::Down, "x").await;
        b.answered(Dependency::Source).await;
        b.failed(Dependency::Source, doc(3), Fault::Down, "x").await;
        assert!(
            b.admit().is_ok(),
            "two in a row, then an answer, then one: still closed"
        );
    }

    #[tokio::test]
    async fn a_document_that_alone_keeps_failing_beyond_doubt_is_charged_at_last() {
        let b = breakers();
        let outage = |v: Verdict| matches!(v, Verdict::Outage { .. });
        assert!(outage(
            b.failed(Dependency::Source, doc(1), Fault::Down, "503")
                .await
        ));
        // Nothing answered since: still the court's (a court down tried one document at a
        // time).
        assert!(outage(
            b.failed(Dependency::Source, doc(1), Fault::Down, "503")
                .await
        ));
        b.served(doc(2)).await;
        assert_eq!(
            b.failed(Dependency::Source, doc(1), Fault::Down, "503")
                .await,
            Verdict::Charged,
            "others are served, this one keeps failing: its own"
        );
    }

    #[tokio::test]
    async fn a_failed_probe_waits_longer() {
        let b = breakers();
        for n in 0..OPEN_AFTER {
            b.failed(Dependency::Source, doc(n.into()), Fault::Unclear, "x")
                .await;
        }
        tokio::time::sleep(FIRST_WAIT + Duration::from_millis(50)).await;
        assert!(b.admit().is_ok());
        let Verdict::Outage { until, .. } = b
            .failed(Dependency::Source, doc(9), Fault::Unclear, "x")
            .await
        else {
            panic!("a failed probe is an outage");
        };
        let wait = (until - Utc::now()).num_milliseconds();
        assert!((1500..=2100).contains(&wait), "{wait} ms");
    }
}

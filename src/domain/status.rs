//! Job and document statuses, and the transitions allowed between them.
//!
//! The database applies every change as a compare-and-set (`UPDATE … WHERE status = $from`);
//! these tables decide which `(from, to)` pairs may be attempted at all, so that a bug in a
//! caller is refused and logged instead of written.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Status of a download job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Created; no document has been picked up yet.
    Queued,
    /// At least one document has been picked up.
    Running,
    /// Every document is available.
    Completed,
    /// Every document settled and some failed after all their attempts.
    CompletedWithErrors,
    /// The job could not proceed: no document could be stored.
    Failed,
    /// Cancelled by a client; no further transfers start.
    Cancelled,
}

/// Status of one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DocumentStatus {
    /// Waiting for a worker (possibly until its next retry is due).
    Pending,
    /// A worker is transferring it.
    Processing,
    /// Stored in S3.
    Available,
    /// Failed after all attempts, or at once for a permanent error.
    Failed,
}

/// A refused status change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} cannot go from {from} to {to}")]
pub struct InvalidTransition {
    /// `job` or `document`.
    pub what: &'static str,
    /// Current status.
    pub from: &'static str,
    /// Requested status.
    pub to: &'static str,
}

impl JobStatus {
    /// All statuses, in lifecycle order.
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::CompletedWithErrors,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The value stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "QUEUED",
            JobStatus::Running => "RUNNING",
            JobStatus::Completed => "COMPLETED",
            JobStatus::CompletedWithErrors => "COMPLETED_WITH_ERRORS",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelled => "CANCELLED",
        }
    }

    /// Parses the database value.
    pub fn from_db(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Whether the job has ended.
    pub const fn is_terminal(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }

    /// Whether `self → to` is allowed.
    pub const fn can_become(self, to: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, to),
            (Queued, Running)
                | (Queued | Running, Completed | CompletedWithErrors | Failed | Cancelled)
                // retryFailedDocuments re-opens a job that ended with failures
                | (CompletedWithErrors | Failed, Running)
        )
    }

    /// `Ok` when `self → to` is allowed.
    pub fn check(self, to: JobStatus) -> Result<(), InvalidTransition> {
        if self.can_become(to) {
            Ok(())
        } else {
            Err(InvalidTransition {
                what: "job",
                from: self.as_str(),
                to: to.as_str(),
            })
        }
    }

    /// The terminal status of a job whose documents have all settled.
    pub fn settled(available: i64, failed: i64) -> JobStatus {
        match (available, failed) {
            (_, 0) => JobStatus::Completed,
            (0, _) => JobStatus::Failed,
            _ => JobStatus::CompletedWithErrors,
        }
    }
}

impl DocumentStatus {
    /// All statuses.
    pub const ALL: [DocumentStatus; 4] = [
        DocumentStatus::Pending,
        DocumentStatus::Processing,
        DocumentStatus::Available,
        DocumentStatus::Failed,
    ];

    /// The value stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            DocumentStatus::Pending => "PENDING",
            DocumentStatus::Processing => "PROCESSING",
            DocumentStatus::Available => "AVAILABLE",
            DocumentStatus::Failed => "FAILED",
        }
    }

    /// Parses the database value.
    pub fn from_db(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Whether the document has settled for its job.
    pub const fn is_settled(self) -> bool {
        matches!(self, DocumentStatus::Available | DocumentStatus::Failed)
    }

    /// Whether `self → to` is allowed.
    pub const fn can_become(self, to: DocumentStatus) -> bool {
        use DocumentStatus::*;
        matches!(
            (self, to),
            (Pending, Processing)
                | (Processing, Available | Failed)
                // a retry is due later, the job was cancelled mid-transfer, or the worker died
                | (Processing, Pending)
                // retryFailedDocuments, or a new job for the process
                | (Failed, Pending)
        )
    }

    /// `Ok` when `self → to` is allowed.
    pub fn check(self, to: DocumentStatus) -> Result<(), InvalidTransition> {
        if self.can_become(to) {
            Ok(())
        } else {
            Err(InvalidTransition {
                what: "document",
                from: self.as_str(),
                to: to.as_str(),
            })
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for DocumentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `floor(100 × (available + failed) / total)`, and exactly 100 once the job is terminal.
pub fn progress(status: JobStatus, total: i64, available: i64, failed: i64) -> i32 {
    if status.is_terminal() || total <= 0 {
        return if status.is_terminal() { 100 } else { 0 };
    }
    let done = (available + failed).clamp(0, total);
    // A running job is never shown as finished: 100 is reserved for terminal statuses.
    ((100 * done / total) as i32).min(99)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_lifecycle() {
        use JobStatus::*;
        assert!(Queued.can_become(Running));
        assert!(Running.can_become(Completed));
        assert!(
            Queued.can_become(Completed),
            "a job with nothing to transfer"
        );
        assert!(Running.can_become(Cancelled));
        assert!(CompletedWithErrors.can_become(Running));
        assert!(Failed.can_become(Running));
        for terminal in [Completed, CompletedWithErrors, Failed, Cancelled] {
            assert!(terminal.is_terminal());
            assert!(!terminal.can_become(Queued));
            assert!(!terminal.can_become(Cancelled));
            assert!(!terminal.can_become(Completed));
        }
        assert!(!Completed.can_become(Running));
        assert!(!Cancelled.can_become(Running));
        assert!(!Running.can_become(Queued));
        assert!(!Running.can_become(Running));
        let err = Completed.check(Running).unwrap_err();
        assert_eq!(err.to_string(), "job cannot go from COMPLETED to RUNNING");
    }

    #[test]
    fn document_lifecycle() {
        use DocumentStatus::*;
        assert!(Pending.can_become(Processing));
        assert!(Processing.can_become(Available));
        assert!(Processing.can_become(Failed));
        assert!(Processing.can_become(Pending));
        assert!(Failed.can_become(Pending));
        assert!(
            !Available.can_become(Pending),
            "a stored document is refreshed in place, never taken away"
        );
        assert!(
            !Pending.can_become(Available),
            "nothing is stored without a transfer"
        );
        assert!(!Pending.can_become(Failed));
        assert!(!Available.can_become(Failed));
        assert!(!Available.can_become(Processing));
        assert!(!Failed.can_become(Available));
        assert!(Pending.check(Available).is_err());
    }

    #[test]
    fn db_values_round_trip() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::from_db(s.as_str()), Some(s));
        }
        for s in DocumentStatus::ALL {
            assert_eq!(DocumentStatus::from_db(s.as_str()), Some(s));
        }
        assert_eq!(JobStatus::from_db("done"), None);
    }

    #[test]
    fn settled_status() {
        assert_eq!(JobStatus::settled(3, 0), JobStatus::Completed);
        assert_eq!(JobStatus::settled(0, 0), JobStatus::Completed);
        assert_eq!(JobStatus::settled(2, 1), JobStatus::CompletedWithErrors);
        assert_eq!(JobStatus::settled(0, 2), JobStatus::Failed);
    }

    #[test]
    fn progress_rules() {
        use JobStatus::*;
        assert_eq!(progress(Running, 3, 1, 0), 33);
        assert_eq!(progress(Running, 3, 1, 1), 66);
        assert_eq!(progress(Running, 3, 3, 0), 99);
        assert_eq!(progress(Completed, 3, 3, 0), 100);
        assert_eq!(progress(Completed, 0, 0, 0), 100);
        assert_eq!(progress(Cancelled, 10, 1, 0), 100);
        assert_eq!(progress(Queued, 0, 0, 0), 0);
        assert_eq!(progress(Queued, 200, 0, 0), 0);
        assert_eq!(progress(Running, 200, 199, 0), 99);
    }
}

//! One attempt of a refresh: the same checks as a first transfer, into the document's own
//! storage key.

use crate::db::refreshes::{self, Ending, RefreshClaim};
use crate::domain::ProcessNumber;
use crate::jobs::transfer::{self, Failed};
use crate::jobs::Services;
use crate::source::SourceError;
use crate::storage::UploadJournal;
use async_trait::async_trait;
use std::time::Duration;
use uuid::Uuid;

/// Why one attempt failed.
#[derive(Debug)]
pub(super) struct Failure {
    /// A stable phrase (details are logged where the failure is made).
    pub(super) message: String,
    pub(super) retryable: bool,
    pub(super) retry_after: Option<Duration>,
}

impl Failure {
    pub(super) fn retryable(message: &str) -> Self {
        Failure {
            message: message.to_string(),
            retryable: true,
            retry_after: None,
        }
    }
}

impl From<SourceError> for Failure {
    fn from(err: SourceError) -> Self {
        Failure {
            retryable: err.is_retryable(),
            retry_after: err.retry_after(),
            message: err.to_string(),
        }
    }
}

/// One attempt: open at the source, stream through the verifier into the document's storage
/// key. The same checks as a first transfer (size cap, announced length and SHA-256).
pub(super) async fn fetch(
    svc: &Services,
    claim: &RefreshClaim,
    token: Uuid,
) -> Result<Ending, Failure> {
    let doc = &claim.document;
    let number = ProcessNumber::parse(&claim.process_number).map_err(|e| {
        tracing::warn!(error = %e, "stored process number is invalid");
        Failure {
            message: "the stored process number is invalid".into(),
            retryable: false,
            retry_after: None,
        }
    })?;
    // The same object: links handed out keep working, and show the new copy once stored.
    let (placed, on_behalf_of) =
        transfer::placement(&number, doc, claim.process_owner.as_ref(), claim.job_tenant);
    let key = doc.storage_key.clone().unwrap_or(placed);
    let journal = Journal {
        svc,
        document: doc.id,
        token,
    };
    let stored = transfer::stream(svc, &number, doc, &key, &journal, on_behalf_of)
        .await
        .map_err(|failed| match failed {
            Failed::Source(err) => Failure::from(err),
            Failed::Storage => Failure::retryable("storage unavailable"),
        })?;
    Ok(Ending::Stored {
        key: stored.key,
        sha256: stored.sha256,
        size: stored.size,
        content_type: stored.content_type,
    })
}

/// Records a refresh's multipart upload on its row, under its claim, for [`sweep`] to abort
/// should this process die before the transfer ends.
struct Journal<'a> {
    svc: &'a Services,
    document: Uuid,
    token: Uuid,
}

#[async_trait]
impl UploadJournal for Journal<'_> {
    async fn started(&self, key: &str, upload_id: &str) -> Result<(), String> {
        let pool = &self.svc.pool;
        match refreshes::record_upload(pool, self.document, self.token, key, upload_id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err("the claim on the refresh was lost".into()),
            Err(err) => Err(err.to_string()),
        }
    }
}

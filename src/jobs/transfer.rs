//! One document from the source into S3, as a first transfer and a refresh both do it: opened
//! at the source, streamed through the verifier (size cap, announced length and SHA-256) into
//! its storage key, with the multipart upload recorded by the caller's journal.

use super::Services;
use crate::db::DocumentRow;
use crate::domain::{names, ProcessNumber};
use crate::source::{self, ListedDocument, SourceError};
use crate::storage::{UploadError, UploadJournal, UploadOptions};
use uuid::Uuid;

/// A copy stored.
pub(crate) struct Stored {
    pub key: String,
    pub sha256: String,
    pub size: i64,
    pub content_type: String,
}

/// Why a transfer failed.
pub(crate) enum Failed {
    /// The source, or the bytes it sent.
    Source(SourceError),
    /// The storage (its error is logged here).
    Storage,
}

/// The document as the source listed it.
pub(crate) fn listed(doc: &DocumentRow) -> ListedDocument {
    ListedDocument {
        id: doc.source_id.clone(),
        name: doc.name.clone(),
        kind: doc.kind.clone(),
        url: doc.url.clone(),
        size: doc.size,
        sha256: doc.sha256.clone(),
        mime_type: doc.mime_type.clone(),
        sigilo: u8::try_from(doc.sigilo).unwrap_or(0),
        parent: doc.parent_source_id.clone(),
    }
}

/// Where a document of `number` is stored, and on whose behalf it is fetched: a sealed
/// process's documents under their owner's prefix, with the owner's credential; the others at
/// the shared key, with the credential of the tenant whose job wants them.
pub(crate) fn placement(
    number: &ProcessNumber,
    doc: &DocumentRow,
    owner: Option<&(Uuid, String)>,
    job_tenant: Option<Uuid>,
) -> (String, Option<Uuid>) {
    match owner {
        Some((id, slug)) => (
            names::tenant_storage_key(slug, number, &doc.source_id, &doc.name),
            Some(*id),
        ),
        None => (
            names::storage_key(number, &doc.source_id, &doc.name),
            job_tenant,
        ),
    }
}

/// Streams `doc` of `number` from the source into `key`, presenting the credential of
/// `on_behalf_of` (the process's owner, else the tenant of the job that wants it).
pub(crate) async fn stream(
    svc: &Services,
    number: &ProcessNumber,
    doc: &DocumentRow,
    key: &str,
    journal: &dyn UploadJournal,
    on_behalf_of: Option<Uuid>,
) -> Result<Stored, Failed> {
    let max = svc.settings.max_document_bytes;
    let size = doc.size.and_then(|s| u64::try_from(s).ok());
    source::check_announced(size, None, max).map_err(Failed::Source)?;
    let route = svc.sources.route(number);
    let presented = super::credentials::presented(svc, on_behalf_of, route)
        .await
        .map_err(Failed::Source)?;
    let opened = route
        .source()
        .open_as(number, &listed(doc), presented.credential())
        .await;
    super::credentials::answered(svc, route, &presented, opened.as_ref().map(|_| ())).await;
    let body = opened.map_err(Failed::Source)?;
    let content_type = doc
        .mime_type
        .clone()
        .or_else(|| body.content_type.clone())
        .unwrap_or_else(|| "application/octet-stream".to_string());
    let content_length = body.content_length;
    let (verified, digest) = source::verify(body, size, doc.sha256.as_deref(), max);
    let options = UploadOptions {
        size_hint: size.or(content_length),
        announced_sha256: doc.sha256.as_deref(),
        journal: Some(journal),
    };
    let stored = svc
        .storage
        .put_stream(key, &content_type, options, verified, || {
            digest.digest().map(|(_, sha)| sha)
        })
        .await
        .map_err(|err| match err {
            UploadError::Body(source) => Failed::Source(source),
            UploadError::Storage(message) => {
                tracing::warn!(key = %key, error = %message, "storage failed");
                Failed::Storage
            }
        })?;
    Ok(Stored {
        key: stored.key,
        sha256: stored.sha256,
        size: stored.size as i64,
        content_type,
    })
}

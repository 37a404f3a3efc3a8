//! GraphQL object types, resolved from database rows through the request's loaders.

use super::access::Access;
use super::errors::{client_error, code, internal, load_error};
use super::loaders::Loaders;
use crate::auth::policy::Operation;
use crate::db::documents::{Page, PageKey};
use crate::db::outages::OutageRow;
use crate::db::{DocumentRow, JobRow, ProcessRow};
use crate::domain::status::{DocumentStatus, JobStatus};
use crate::jobs::Services;
use async_graphql::{Context, Enum, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A court case, as the source lists it.
pub struct Process(pub ProcessRow);

#[Object]
impl Process {
    /// CNJ number, formatted.
    async fn number(&self) -> &str {
        &self.0.number
    }
    /// Court (e.g. TJSP).
    async fn court(&self) -> Option<&str> {
        self.0.court.as_deref()
    }
    /// Procedural class.
    async fn class(&self) -> Option<&str> {
        self.0.class.as_deref()
    }
    /// Subject.
    async fn subject(&self) -> Option<&str> {
        self.0.subject.as_deref()
    }
    /// The name of the source the process was read from (`AUTOS_SOURCES_FILE`; `default`:
    /// `AUTOS_SOURCE_URL`).
    async fn source(&self) -> &str {
        &self.0.source
    }
    /// CNJ secrecy level: 0 public, 1 to 5 sealed (`nivelSigilo`).
    async fn sigilo(&self) -> i32 {
        i32::from(self.0.sigilo)
    }
    /// Documents the source lists, in its order, each with its current status: a page of
    /// `first` (at most 1,000) after the document `after`.
    async fn documents(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 1000, desc = "Page size, 1 to 1,000.")] first: Option<i32>,
        #[graphql(desc = "Id of the last document of the previous page.")] after: Option<String>,
    ) -> Result<Vec<Document>> {
        let key = page_key(self.0.id, first, after.as_deref())?;
        let found = ctx
            .data_unchecked::<Loaders>()
            .process_documents
            .load_one(key)
            .await
            .map_err(load_error)?;
        let documents = page(found, after.as_deref())?;
        if self.0.owner_tenant_id.is_some() {
            let details = serde_json::json!({ "documents": documents.len() });
            super::audit::sealed_read(
                ctx,
                "readSealedDocuments",
                self.0.number.clone(),
                Some(details),
            )
            .await;
        }
        Ok(documents)
    }
    /// The newest download job of this process.
    async fn latest_job(&self, ctx: &Context<'_>) -> Result<Option<DownloadJob>> {
        let row = ctx
            .data_unchecked::<Loaders>()
            .latest_job
            .load_one(self.0.id)
            .await
            .map_err(load_error)?;
        Ok(row.map(DownloadJob))
    }
    /// When the source was last read for this process.
    async fn looked_up_at(&self) -> DateTime<Utc> {
        self.0.looked_up_at
    }
}

/// Counts of a job's documents by status.
#[derive(SimpleObject, Clone, Copy, Debug, PartialEq, Eq)]
pub struct DocumentCounts {
    /// Waiting for a worker.
    pub pending: i32,
    /// Being transferred.
    pub processing: i32,
    /// Stored.
    pub available: i32,
    /// Failed after all attempts.
    pub failed: i32,
}

/// What the workers depend on.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dependency {
    /// The S3 bucket.
    Storage,
    /// The court source.
    Source,
}

/// An outage the workers see now: no transfer starts until it answers again, and the
/// documents waiting for it are not charged an attempt.
#[derive(SimpleObject, Clone, Debug)]
pub struct Outage {
    /// What is down.
    pub dependency: Dependency,
    /// Since when (the earliest any worker saw it).
    pub since: DateTime<Utc>,
    /// What its last failure said.
    pub reason: String,
}

impl Outage {
    /// The outages of `rows` that the workers know of.
    pub fn from_rows(rows: &[OutageRow]) -> Vec<Outage> {
        rows.iter()
            .filter_map(|row| {
                let dependency = match row.dependency.as_str() {
                    "storage" => Dependency::Storage,
                    "source" => Dependency::Source,
                    _ => return None,
                };
                Some(Outage {
                    dependency,
                    since: row.since,
                    reason: row.reason.clone(),
                })
            })
            .collect()
    }
}

/// Webhook delivery of a job.
#[derive(SimpleObject, Clone, Debug)]
pub struct WebhookStatus {
    /// Target URL.
    pub url: String,
    /// Delivered with a 2xx answer.
    pub sent: bool,
    /// Delivery attempts so far.
    pub attempts: i32,
    /// Last failure.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// `NOT_SENT` (the job has not ended), `PENDING` (being tried), `DELIVERED` or `FAILED`.
    pub status: String,
    /// Status code of the last answer.
    pub status_code: Option<i32>,
}

/// A download job: one pass over every document of a process.
pub struct DownloadJob(pub JobRow);

impl DownloadJob {
    fn status_value(&self) -> Result<JobStatus> {
        self.0.status().map_err(|e| internal(e.into()))
    }

    /// Each webhook URL's status, with whether it is the creator's.
    async fn webhook_statuses(&self, ctx: &Context<'_>) -> Result<Vec<(bool, WebhookStatus)>> {
        let rows = ctx
            .data_unchecked::<Loaders>()
            .webhooks
            .load_one(self.0.id)
            .await
            .map_err(load_error)?;
        Ok(rows
            .unwrap_or_default()
            .into_iter()
            .map(|w| {
                let status = w.status.unwrap_or_else(|| "NOT_SENT".into());
                (
                    w.creator,
                    WebhookStatus {
                        url: w.url,
                        sent: status == "DELIVERED",
                        attempts: w.attempts.unwrap_or(0),
                        last_error: w.last_error,
                        delivered_at: w.delivered_at,
                        status,
                        status_code: w.last_status_code,
                    },
                )
            })
            .collect())
    }
}

#[Object]
impl DownloadJob {
    /// Job id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The process.
    async fn process(&self, ctx: &Context<'_>) -> Result<Process> {
        let row = ctx
            .data_unchecked::<Loaders>()
            .process
            .load_one(self.0.process_id)
            .await
            .map_err(load_error)?
            .ok_or_else(|| internal(anyhow::anyhow!("job {} has no process", self.0.id)))?;
        Ok(Process(row))
    }
    /// Status.
    async fn status(&self) -> Result<JobStatus> {
        self.status_value()
    }
    /// floor(100 × (available + failed) / total); 100 exactly when the job is terminal.
    async fn progress(&self) -> i32 {
        self.0.progress()
    }
    /// Documents covered.
    async fn total(&self) -> i32 {
        self.0.total
    }
    /// Counts by document status.
    async fn counts(&self) -> DocumentCounts {
        counts(&self.0)
    }
    /// The documents, in the source's order: a page of `first` (at most 1,000) after the
    /// document `after`.
    async fn documents(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 1000, desc = "Page size, 1 to 1,000.")] first: Option<i32>,
        #[graphql(desc = "Id of the last document of the previous page.")] after: Option<String>,
    ) -> Result<Vec<Document>> {
        let key = page_key(self.0.id, first, after.as_deref())?;
        let found = ctx
            .data_unchecked::<Loaders>()
            .job_documents
            .load_one(key)
            .await
            .map_err(load_error)?;
        let documents = page(found, after.as_deref())?;
        // Documents of a sealed process carry at least its level: no statement more to know.
        let sealed = documents.iter().filter(|d| d.0.sigilo > 0).count();
        if sealed > 0 {
            let details = serde_json::json!({ "documents": documents.len(), "sealed": sealed });
            super::audit::sealed_read(
                ctx,
                "readSealedDocuments",
                format!("job {}", self.0.id),
                Some(details),
            )
            .await;
        }
        Ok(documents)
    }
    /// Created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// First document picked up.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    /// Became terminal.
    async fn completed_at(&self) -> Option<DateTime<Utc>> {
        self.0.completed_at
    }
    /// Why the job failed.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// Webhook delivery to the creator's `webhookUrl`, when it gave one: nothing sent yet
    /// while the job runs, then the outcome of the message reporting its end.
    #[graphql(guard = "Access(Operation::Object(\"DownloadJob\"))")]
    async fn webhook(&self, ctx: &Context<'_>) -> Result<Option<WebhookStatus>> {
        Ok(self
            .webhook_statuses(ctx)
            .await?
            .into_iter()
            .find(|w| w.0)
            .map(|w| w.1))
    }
    /// Every webhook of the job: the creator's, then those of later callers that brought a
    /// `webhookUrl` to this job (`created: false`), in the order they came; each with the
    /// outcome of its own delivery.
    #[graphql(guard = "Access(Operation::Object(\"DownloadJob\"))")]
    async fn webhooks(&self, ctx: &Context<'_>) -> Result<Vec<WebhookStatus>> {
        Ok(self
            .webhook_statuses(ctx)
            .await?
            .into_iter()
            .map(|w| w.1)
            .collect())
    }
    /// Whether this job was started with `force: true`.
    async fn forced(&self) -> bool {
        self.0.forced
    }
    /// Why its remaining documents wait, if they do: the outages of S3 or of the court the
    /// workers see now (work resumes by itself when they answer again). Empty once the job
    /// ended.
    async fn waiting_for(&self, ctx: &Context<'_>) -> Result<Vec<Outage>> {
        if self.status_value()?.is_terminal() {
            return Ok(Vec::new());
        }
        let rows = ctx
            .data_unchecked::<Loaders>()
            .outages
            .load_one(())
            .await
            .map_err(load_error)?
            .unwrap_or_default();
        Ok(Outage::from_rows(&rows))
    }
}

/// Largest page of `documents`.
pub const MAX_DOCUMENTS_PAGE: i32 = 1000;

/// The page `first` (default and at most [`MAX_DOCUMENTS_PAGE`]) of `owner`'s documents after
/// the one with id `after`, as its loader asks for it.
pub(crate) fn page_key(owner: Uuid, first: Option<i32>, after: Option<&str>) -> Result<PageKey> {
    let first = first.unwrap_or(MAX_DOCUMENTS_PAGE);
    if !(1..=MAX_DOCUMENTS_PAGE).contains(&first) {
        return Err(client_error(
            code::BAD_REQUEST,
            format!("`first` must be between 1 and {MAX_DOCUMENTS_PAGE}, got {first}"),
        ));
    }
    let after = match after {
        None => None,
        Some(after) => Some(Uuid::parse_str(after.trim()).map_err(|_| not_one_of(after))?),
    };
    Ok(PageKey {
        owner,
        first,
        after,
    })
}

fn not_one_of(after: &str) -> async_graphql::Error {
    client_error(
        code::BAD_REQUEST,
        format!("`after` is not one of these documents: {after}"),
    )
}

/// The documents of a page its loader found, or the error of an `after` that is not one of
/// them.
fn page(found: Option<Page>, after: Option<&str>) -> Result<Vec<Document>> {
    let found = found.unwrap_or_default();
    if let (false, Some(after)) = (found.after_found, after) {
        return Err(not_one_of(after));
    }
    Ok(found.rows.into_iter().map(Document).collect())
}

/// Counts of a job row.
pub fn counts(job: &JobRow) -> DocumentCounts {
    let c = job.counts();
    DocumentCounts {
        pending: c.pending,
        processing: c.processing,
        available: c.available,
        failed: c.failed,
    }
}

/// One document of a process.
pub struct Document(pub DocumentRow);

impl Document {
    async fn presigned(&self, ctx: &Context<'_>) -> Result<Option<crate::storage::PresignedUrl>> {
        ctx.data_unchecked::<Services>()
            .download_link(&self.0)
            .await
            .map_err(|e| internal(e.into()))
    }
}

#[Object]
impl Document {
    /// Document id (autos' own).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Id at the source.
    async fn source_id(&self) -> &str {
        &self.0.source_id
    }
    /// The source id of the document this one is attached to (an MNI `documentoVinculado`).
    async fn parent_source_id(&self) -> Option<&str> {
        self.0.parent_source_id.as_deref()
    }
    /// CNJ secrecy level: 0 public, 1 to 5 sealed (`nivelSigilo`).
    async fn sigilo(&self) -> i32 {
        i32::from(self.0.sigilo)
    }
    /// Original file name; offered as the download name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Kind (e.g. "Petição Inicial").
    async fn kind(&self) -> Option<&str> {
        self.0.kind.as_deref()
    }
    /// MIME type.
    async fn mime_type(&self) -> Option<&str> {
        self.0
            .mime_type
            .as_deref()
            .or(self.0.stored_content_type.as_deref())
    }
    /// Size in bytes: as stored, else as announced.
    async fn size(&self) -> Option<f64> {
        self.0.stored_size.or(self.0.size).map(|s| s as f64)
    }
    /// SHA-256 (hex): as stored, else as announced.
    async fn sha256(&self) -> Option<&str> {
        self.0
            .stored_sha256
            .as_deref()
            .filter(|_| self.0.status == "AVAILABLE")
            .or(self.0.sha256.as_deref())
    }
    /// Status.
    async fn status(&self) -> Result<DocumentStatus> {
        self.0.status().map_err(|e| internal(e.into()))
    }
    /// Attempts made in the current job.
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }
    /// Last failure.
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    /// S3 key of the stored copy.
    async fn storage_key(&self) -> Option<&str> {
        self.0.storage_key.as_deref()
    }
    /// Presigned download URL while AVAILABLE; renewed before it expires.
    async fn download_url(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        let link = self.presigned(ctx).await?.map(|p| p.url);
        if link.is_some() && self.0.sigilo > 0 {
            let details = serde_json::json!({ "sourceId": self.0.source_id });
            super::audit::sealed_read(
                ctx,
                "linkSealedDocument",
                self.0.id.to_string(),
                Some(details),
            )
            .await;
        }
        Ok(link)
    }
    /// When `downloadUrl` stops working.
    async fn download_url_expires_at(&self, ctx: &Context<'_>) -> Result<Option<DateTime<Utc>>> {
        Ok(self.presigned(ctx).await?.map(|p| p.expires_at))
    }
    /// When the next attempt is due, while PENDING after a failed attempt.
    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        (self.0.status == "PENDING" && self.0.attempts > 0)
            .then_some(self.0.next_attempt_at)
            .flatten()
    }
}

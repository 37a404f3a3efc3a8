//! Download jobs: what the API asks for (look a process up, start, cancel, retry) and the
//! queue task that transfers documents.
//!
//! A job and the queue tasks that carry it out are written in one transaction: there is no
//! moment at which a job exists and its work does not.

pub mod cancellations;
pub mod credentials;
pub mod download;
pub mod outage;
mod quota;
pub mod refresh;
pub mod settler;
pub mod sweeper;
mod transfer;
pub mod webhook;

use crate::db::{self, DbError, JobRow, ProcessRow, Visibility};
use crate::domain::cnj::CnjError;
use crate::domain::status::JobStatus;
use crate::domain::ProcessNumber;
use crate::source::{ProcessListing, Route, SourceError, Sources};
use crate::storage::Storage;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use uuid::Uuid;

pub use download::DownloadBatch;

/// Task type of document transfers.
pub const DOWNLOAD_TASK: &str = "download";

/// How jobs run.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Documents per batch task.
    pub batch_size: usize,
    /// Attempts per document.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt, with jitter.
    pub backoff: Duration,
    /// Whole-transfer timeout per document.
    pub download_timeout: Duration,
    /// Larger documents fail.
    pub max_document_bytes: u64,
    /// How long a worker's claim on a document lasts without a heartbeat.
    pub lease: Duration,
    /// Lifetime of presigned download URLs.
    pub presign_ttl: Duration,
    /// How long the audit log keeps an entry.
    pub audit_retention: Duration,
    /// How long finished webhook deliveries (and their attempts) are kept.
    pub delivery_retention: Duration,
    /// How long failed queue tasks are kept.
    pub failed_task_retention: Duration,
    /// How long an outage of a dependency may last before the documents waiting for it fail.
    pub outage_max: Duration,
    /// QUEUED or RUNNING jobs a tenant may have at once.
    pub tenant_max_active_jobs: u32,
    /// Documents a process may list and still get a job.
    pub max_documents_per_process: u32,
}

/// Everything jobs need, shared by the API and the workers.
#[derive(Clone)]
pub struct Services {
    /// Database pool.
    pub pool: PgPool,
    /// Upstream court sources, by court.
    pub sources: Sources,
    /// Tenants' court credentials.
    pub vault: Arc<credentials::Vault>,
    /// S3 bucket.
    pub storage: Storage,
    /// Settings.
    pub settings: JobSettings,
    /// Which webhook targets are accepted.
    pub webhook_policy: crate::webhook::TargetPolicy,
    /// How webhooks are signed and sent.
    pub webhooks: webhook::WebhookSettings,
    /// The base URL clients reach (`AUTOS_PUBLIC_URL`).
    pub public_url: String,
    /// Whether this deployment runs the built-in webhook test receiver.
    pub test_receiver: bool,
    /// One `startDownload` at a time per tenant and process number in this process, so that
    /// a tenant's callers racing for a case find the job the first one made instead of asking
    /// the source again (across processes, the case's row lock and unique index still
    /// decide; different tenants' lookups at the same time are shared by the source).
    pub starting: Starting,
    /// Writes the final transitions of the documents transferred in this process.
    pub settler: settler::Settler,
    /// Cancelled jobs, announced to the batches running here.
    pub cancellations: cancellations::Cancellations,
    /// Outages of S3 and the court, as this process sees them.
    pub breakers: outage::Breakers,
}

/// Per-tenant-and-number locks for [`start_download`]; entries go away with their last holder.
#[derive(Clone, Default)]
pub struct Starting(Arc<std::sync::Mutex<StartLocks>>);

type StartLock = tokio::sync::Mutex<()>;
type StartLocks = HashMap<(Uuid, String), Weak<StartLock>>;

impl Starting {
    fn lock_for(&self, tenant_id: Uuid, number: &str) -> Arc<StartLock> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, weak| weak.strong_count() > 0);
        let key = (tenant_id, number.to_string());
        if let Some(lock) = map.get(&key).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(StartLock::new(()));
        map.insert(key, Arc::downgrade(&lock));
        lock
    }
}

impl Services {
    /// A fresh download link for a stored document, named as at the source; `None` unless the
    /// document is AVAILABLE. The same link for every caller within a signing window.
    pub async fn download_link(
        &self,
        document: &db::DocumentRow,
    ) -> Result<Option<crate::storage::PresignedUrl>, crate::storage::StorageError> {
        let (Some(key), Ok(crate::domain::status::DocumentStatus::Available)) =
            (&document.storage_key, document.status())
        else {
            return Ok(None);
        };
        let url = self
            .storage
            .presign_get(
                key,
                &document.name,
                document.stored_content_type.as_deref(),
                self.settings.presign_ttl,
                std::time::SystemTime::now(),
            )
            .await?;
        Ok(Some(url))
    }

    /// The URL of this deployment's built-in test receiver.
    pub fn test_receiver_url(&self) -> String {
        format!("{}/webhooks/test-receiver", self.public_url)
    }

    /// Checks a webhook target. The built-in test receiver, where it runs, is always allowed:
    /// it is this service itself, at a fixed path, even where private addresses are not.
    pub async fn check_webhook_target(
        &self,
        url: &str,
    ) -> Result<crate::webhook::Target, crate::webhook::Refusal> {
        if self.test_receiver && url == self.test_receiver_url() {
            let own = crate::webhook::TargetPolicy {
                allow_private: true,
                allowed_hosts: Vec::new(),
            };
            return own.check(url).await;
        }
        self.webhook_policy.check(url).await
    }
}

/// Why a request about jobs was refused.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Not a valid CNJ number.
    #[error("invalid process number: {0}")]
    InvalidNumber(#[from] CnjError),
    /// The source does not know this process.
    #[error("process {0} was not found at the source")]
    ProcessNotFound(String),
    /// No job with this id.
    #[error("job {0} was not found")]
    JobNotFound(String),
    /// The webhook URL is refused.
    #[error("invalid webhook URL: {0}")]
    InvalidWebhookUrl(String),
    /// The source failed or answered something unusable (the details are logged, not shown;
    /// a court's own message is).
    #[error("the court source is unavailable; try again later{}", .0.as_ref().map(|m| format!(" (the court said: {m})")).unwrap_or_default())]
    SourceUnavailable(Option<String>),
    /// The court refused the credential presented (or this case to it).
    #[error("the court source `{name}` refused access: {reason}")]
    SourceAccessDenied {
        /// The source's name.
        name: String,
        /// The stable phrase of the refusal.
        reason: String,
    },
    /// The tenant has as many QUEUED or RUNNING jobs as it may.
    #[error("quota exceeded: the tenant already has {limit} active (QUEUED or RUNNING) jobs, the most it may have; wait for one to end or cancel one")]
    QuotaExceeded {
        /// `AUTOS_TENANT_MAX_ACTIVE_JOBS`.
        limit: u32,
    },
    /// The job has as many webhook URLs as it may.
    #[error("quota exceeded: the job already has {limit} webhook URLs, the most it may have")]
    TooManyWebhooks {
        /// [`crate::db::webhooks::MAX_URLS_PER_JOB`].
        limit: i64,
    },
    /// The process lists more documents than a job may cover.
    #[error("process {number} has {documents} documents, more than the {limit} a job may cover")]
    ProcessTooLarge {
        /// The formatted number.
        number: String,
        /// Documents the source lists.
        documents: usize,
        /// `AUTOS_MAX_DOCUMENTS_PER_PROCESS`.
        limit: u32,
    },
    /// The job is not in a state that allows this.
    #[error("{0}")]
    InvalidState(String),
    /// The request's input is refused (the message says why).
    #[error("{0}")]
    InvalidInput(String),
    /// Anything else; details are logged, not shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<DbError> for JobError {
    fn from(err: DbError) -> Self {
        JobError::Internal(err.into())
    }
}

impl From<sqlx::Error> for JobError {
    fn from(err: sqlx::Error) -> Self {
        JobError::Internal(err.into())
    }
}

impl From<fang::AsyncQueueError> for JobError {
    fn from(err: fang::AsyncQueueError) -> Self {
        JobError::Internal(anyhow::anyhow!("queue: {err}"))
    }
}

/// Clients get a stable phrase (and the court's own words, when it said some); what the
/// source did goes to the log.
fn unavailable(number: &ProcessNumber, route: &Route, err: SourceError) -> JobError {
    if let SourceError::Denied { message } = &err {
        tracing::warn!(process = %number, source = %route.name(), error = %err, "the court refused access");
        return JobError::SourceAccessDenied {
            name: route.name().to_string(),
            reason: message.clone(),
        };
    }
    tracing::warn!(process = %number, source = %route.name(), error = %err, "the court source is unavailable");
    JobError::SourceUnavailable(err.court_message().map(str::to_owned))
}

/// Looks `number` up at the source of its court, with the credential `tenant` presents there.
async fn look_up<'a>(
    svc: &'a Services,
    number: &ProcessNumber,
    tenant: Uuid,
) -> Result<(Option<ProcessListing>, &'a Route), JobError> {
    let route = svc.sources.route(number);
    let answer = match credentials::presented(svc, Some(tenant), route).await {
        Ok(presented) => {
            let answer = route
                .source()
                .lookup_as(number, presented.credential())
                .await;
            credentials::answered(svc, route, &presented, answer.as_ref().map(|_| ())).await;
            answer
        }
        Err(refused) => Err(refused),
    };
    match answer {
        Ok(listing) => Ok((listing, route)),
        Err(err) => Err(unavailable(number, route, err)),
    }
}

/// A listing's process, as the database keeps it.
fn header<'a>(source: &'a str, listing: &'a ProcessListing) -> db::processes::Header<'a> {
    db::processes::Header {
        source,
        sigilo: i16::from(listing.sigilo),
        court: listing.court.as_deref(),
        class: listing.class.as_deref(),
        subject: listing.subject.as_deref(),
    }
}

/// Whose a listing is: the caller's alone when anything in it is sealed (it was read with a
/// credential the court let see it), else everyone's.
fn owner_of(listing: &ProcessListing, tenant: Uuid) -> Option<Uuid> {
    let sealed = listing.sigilo > 0 || listing.documents.iter().any(|d| d.sigilo > 0);
    sealed.then_some(tenant)
}

/// Records what only some listings carry: documents' secrecy levels and parents.
async fn store_lineage(
    conn: &mut PgConnection,
    process_id: Uuid,
    listing: &ProcessListing,
) -> Result<(), sqlx::Error> {
    let docs = &listing.documents;
    if listing.sigilo > 0 || docs.iter().any(|d| d.sigilo > 0 || d.parent.is_some()) {
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        // A document of a sealed process is sealed at least as much as its process.
        let sigilos: Vec<i16> = docs
            .iter()
            .map(|d| i16::from(d.sigilo.max(listing.sigilo)))
            .collect();
        let parents: Vec<Option<&str>> = docs.iter().map(|d| d.parent.as_deref()).collect();
        db::processes::set_lineage(conn, process_id, &ids, &sigilos, &parents).await?;
    }
    Ok(())
}

/// Parses an id given by a client.
pub fn parse_job_id(raw: &str) -> Result<Uuid, JobError> {
    Uuid::parse_str(raw.trim()).map_err(|_| JobError::JobNotFound(raw.to_string()))
}

/// A process by number: from the database, else looked up at the source and stored.
/// `None` if the source has no such case.
pub async fn lookup_process(
    svc: &Services,
    tenant: Uuid,
    raw: &str,
) -> Result<Option<ProcessRow>, JobError> {
    let number = ProcessNumber::parse(raw)?;
    if let Some(process) = db::processes::find_by_number(&svc.pool, number.as_str(), tenant).await?
    {
        return Ok(Some(process));
    }
    let (Some(listing), route) = look_up(svc, &number, tenant).await? else {
        return Ok(None);
    };
    quota::check_size(&number, &listing, &svc.settings)?;
    let mut tx = svc.pool.begin().await?;
    let owner = owner_of(&listing, tenant);
    let process = store_listing(&mut tx, &number, &listing, owner, route.name()).await?;
    store_lineage(&mut tx, process.id, &listing).await?;
    tx.commit().await?;
    Ok(Some(process))
}

async fn store_listing(
    conn: &mut PgConnection,
    number: &ProcessNumber,
    listing: &ProcessListing,
    owner: Option<Uuid>,
    source: &str,
) -> Result<ProcessRow, sqlx::Error> {
    db::processes::upsert_listing(
        conn,
        number.as_str(),
        owner,
        header(source, listing),
        &listed_documents(listing),
    )
    .await
}

/// The source's document list, as the database layer takes it.
fn listed_documents(listing: &ProcessListing) -> Vec<db::processes::ListedDocument<'_>> {
    listing
        .documents
        .iter()
        .map(|d| db::processes::ListedDocument {
            source_id: &d.id,
            name: &d.name,
            kind: d.kind.as_deref(),
            mime_type: d.mime_type.as_deref(),
            url: &d.url,
            size: d.size,
            sha256: d.sha256.as_deref(),
        })
        .collect()
}

/// What a client asks `startDownload` for.
#[derive(Debug, Clone)]
pub struct StartDownload {
    /// Process number, formatted or 20 digits.
    pub number: String,
    /// Where to report the outcome.
    pub webhook_url: Option<String>,
    /// Re-read the source and transfer what changed even if a completed job exists.
    pub force: bool,
}

/// Starts a download job for a tenant, or returns the one that makes it unnecessary
/// (`created: false`): the tenant's QUEUED or RUNNING job of the process, or its COMPLETED job
/// unless `force`. Each tenant gets a job of its own; documents another tenant's active job is
/// already transferring are shared, not transferred twice. A `webhookUrl` brought to an
/// existing job is added to it (see [`webhook::attach`]).
///
/// Race-proof: the process row is locked while the decision is made and the job created, and
/// a unique index allows one active job per tenant and process whatever happens.
pub async fn start_download(
    svc: &Services,
    tenant_id: Uuid,
    request: StartDownload,
) -> Result<(JobRow, bool), JobError> {
    let number = ProcessNumber::parse(&request.number)?;
    // The full target check (allowlist, resolved addresses) now, and again before sending.
    let webhook_url = match request.webhook_url.as_deref().map(str::trim) {
        Some(url) if !url.is_empty() => Some(
            svc.check_webhook_target(url)
                .await
                .map_err(|refusal| JobError::InvalidWebhookUrl(refusal.reason()))?
                .url
                .to_string(),
        ),
        _ => None,
    };

    let lock = svc.starting.lock_for(tenant_id, number.as_str());
    let _serialized = lock.lock().await;
    // Most repeated calls end here, without asking the source anything (and an existing job
    // is never refused by the quota).
    if let Some(process) =
        db::processes::find_by_number(&svc.pool, number.as_str(), tenant_id).await?
    {
        if let Some(job) = reusable(&svc.pool, tenant_id, process.id, request.force).await? {
            return Ok((
                webhook::attach(svc, job, webhook_url.as_deref()).await?,
                false,
            ));
        }
    }
    quota::precheck(&svc.pool, tenant_id, &svc.settings).await?;

    let (listing, route) = look_up(svc, &number, tenant_id).await?;
    let listing = listing.ok_or_else(|| JobError::ProcessNotFound(number.to_string()))?;
    quota::check_size(&number, &listing, &svc.settings)?;

    let mut tx = svc.pool.begin().await?;
    let (process, new) = db::processes::upsert_process(
        &mut tx,
        number.as_str(),
        owner_of(&listing, tenant_id),
        header(route.name(), &listing),
    )
    .await?;
    let documents = listed_documents(&listing);
    // The job's id is chosen here, so that its batch tasks can be enqueued first and every
    // document joins the job with its task in one pass.
    let job_id = Uuid::new_v4();
    let due = Utc::now();
    let (job, to_transfer) = if new {
        // A case seen for the first time: every document is new and to transfer, and goes
        // into the job as it is inserted.
        quota::decide(&mut tx, tenant_id, &svc.settings).await?;
        let ids: Vec<Uuid> = documents.iter().map(|_| Uuid::new_v4()).collect();
        let batches = Batches::of(job_id, &ids, svc.settings.batch_size);
        batches.enqueue(&mut tx, due).await?;
        let job = db::jobs::create_with_new_documents(
            &mut tx,
            tenant_id,
            job_id,
            process.id,
            &documents,
            &ids,
            request.force,
            webhook_url.as_deref(),
            &batches.task_of_document,
            due,
        )
        .await?;
        store_lineage(&mut tx, process.id, &listing).await?;
        (job, ids.len())
    } else {
        db::processes::upsert_documents(&mut tx, process.id, &documents).await?;
        store_lineage(&mut tx, process.id, &listing).await?;
        if let Some(job) = reusable(&mut *tx, tenant_id, process.id, request.force).await? {
            tx.commit().await?;
            return Ok((
                webhook::attach(svc, job, webhook_url.as_deref()).await?,
                false,
            ));
        }
        quota::decide(&mut tx, tenant_id, &svc.settings).await?;
        let plan = db::jobs::plan(&mut tx, process.id, request.force).await?;
        let batches = Batches::of(job_id, &plan.to_transfer, svc.settings.batch_size);
        batches.enqueue(&mut tx, due).await?;
        let job = db::jobs::create(
            &mut tx,
            tenant_id,
            job_id,
            &plan,
            request.force,
            webhook_url.as_deref(),
            &batches.task_of_document,
            due,
        )
        .await?;
        let size = svc.settings.batch_size;
        refresh::open(
            &mut tx,
            job_id,
            &plan.to_refresh,
            &plan.refreshing,
            size,
            due,
        )
        .await?;
        (job, plan.to_transfer.len())
    };
    tx.commit().await?;
    tracing::info!(job = %job.id, tenant = %tenant_id, process = %number, documents = job.total, to_transfer, status = %job.status, "download job created");
    Ok((job, true))
}

/// The existing job of the tenant that answers a `startDownload`, if any.
async fn reusable(
    db: impl sqlx::PgExecutor<'_>,
    tenant_id: Uuid,
    process_id: Uuid,
    force: bool,
) -> Result<Option<JobRow>, JobError> {
    let Some(latest) = db::jobs::latest_for_process(db, tenant_id, process_id).await? else {
        return Ok(None);
    };
    Ok(match latest.status()? {
        JobStatus::Queued | JobStatus::Running => Some(latest),
        JobStatus::Completed if !force => Some(latest),
        _ => None,
    })
}

/// A job's documents split into batch tasks of `batch_size`, with the ids the tasks will have.
pub struct Batches {
    tasks: Vec<DownloadBatch>,
    task_ids: Vec<Uuid>,
    /// The task of each document, in the order the documents were given.
    pub task_of_document: Vec<Uuid>,
}

impl Batches {
    /// Splits `document_ids` of `job_id` into batches.
    pub fn of(job_id: Uuid, document_ids: &[Uuid], batch_size: usize) -> Batches {
        let tasks: Vec<DownloadBatch> = document_ids
            .chunks(batch_size.max(1))
            .map(|batch| DownloadBatch {
                job_id,
                document_ids: batch.to_vec(),
            })
            .collect();
        let task_ids: Vec<Uuid> = tasks.iter().map(|_| Uuid::new_v4()).collect();
        let task_of_document = tasks
            .iter()
            .zip(&task_ids)
            .flat_map(|(task, id)| task.document_ids.iter().map(move |_| *id))
            .collect();
        Batches {
            tasks,
            task_ids,
            task_of_document,
        }
    }

    /// Enqueues the tasks, due at `due`, in the caller's transaction.
    pub async fn enqueue(
        &self,
        conn: &mut PgConnection,
        due: DateTime<Utc>,
    ) -> Result<(), JobError> {
        let runnables: Vec<&dyn fang::AsyncRunnable> = self
            .tasks
            .iter()
            .map(|t| t as &dyn fang::AsyncRunnable)
            .collect();
        crate::queue::enqueue_many(&mut *conn, &runnables, &self.task_ids, Some(due)).await?;
        Ok(())
    }
}

/// Splits documents of a job into batch tasks, enqueued in the caller's transaction, and
/// records which task will transfer each document.
pub async fn enqueue_batches(
    conn: &mut PgConnection,
    job_id: Uuid,
    document_ids: &[Uuid],
    batch_size: usize,
    due: DateTime<Utc>,
) -> Result<(), JobError> {
    let batches = Batches::of(job_id, document_ids, batch_size);
    batches.enqueue(conn, due).await?;
    db::documents::assign_tasks(conn, document_ids, &batches.task_of_document, due).await?;
    Ok(())
}

/// A job the caller sees, by the id it gave; another tenant's is not found, like an unknown one.
async fn visible_job(
    db: impl sqlx::PgExecutor<'_>,
    visibility: Visibility,
    raw_id: &str,
) -> Result<JobRow, JobError> {
    let id = parse_job_id(raw_id)?;
    db::jobs::find(db, id)
        .await?
        .filter(|job| visibility.sees(job.tenant_id, job.id))
        .ok_or_else(|| JobError::JobNotFound(raw_id.to_string()))
}

/// Cancels a QUEUED or RUNNING job. Documents another active job covers go on for that job.
pub async fn cancel(
    svc: &Services,
    visibility: Visibility,
    raw_id: &str,
) -> Result<JobRow, JobError> {
    let mut tx = svc.pool.begin().await?;
    let job = visible_job(&mut *tx, visibility, raw_id).await?;
    let id = job.id;
    match db::jobs::cancel(&mut tx, id).await? {
        Some(cancelled) => {
            tx.commit().await?;
            tracing::info!(job = %id, "job cancelled");
            Ok(cancelled)
        }
        None => Err(JobError::InvalidState(format!(
            "job {id} is already {} and cannot be cancelled",
            job.status
        ))),
    }
}

/// Re-queues the FAILED documents of a job that ended COMPLETED_WITH_ERRORS or FAILED.
pub async fn retry_failed(
    svc: &Services,
    visibility: Visibility,
    raw_id: &str,
) -> Result<JobRow, JobError> {
    let mut tx = svc.pool.begin().await?;
    let job = visible_job(&mut *tx, visibility, raw_id).await?;
    let id = job.id;
    // Serialize with startDownload for the same process.
    sqlx::query("SELECT 1 FROM processes WHERE id = $1 FOR UPDATE")
        .bind(job.process_id)
        .execute(&mut *tx)
        .await?;
    let job = db::jobs::find(&mut *tx, id)
        .await?
        .ok_or_else(|| JobError::JobNotFound(raw_id.to_string()))?;
    let status = job.status()?;
    if !matches!(status, JobStatus::CompletedWithErrors | JobStatus::Failed) {
        return Err(JobError::InvalidState(format!(
            "job {id} is {status}: only a job that ended COMPLETED_WITH_ERRORS or FAILED has failed documents to retry"
        )));
    }
    let latest = db::jobs::latest_for_process(&mut *tx, job.tenant_id, job.process_id).await?;
    if latest.as_ref().map(|l| l.id) != Some(job.id) {
        return Err(JobError::InvalidState(format!(
            "job {id} is not the latest job of its process; retry the latest one or start a new download"
        )));
    }
    // The job would be active again: only if the tenant has room for one more.
    quota::decide(&mut tx, job.tenant_id, &svc.settings).await?;
    let (reopened, ids) = db::jobs::reopen_failed(&mut tx, &job).await?;
    if ids.is_empty() {
        return Err(JobError::InvalidState(format!(
            "job {id} has no failed documents"
        )));
    }
    enqueue_batches(&mut tx, id, &ids, svc.settings.batch_size, Utc::now()).await?;
    tx.commit().await?;
    tracing::info!(job = %id, documents = ids.len(), "failed documents re-queued");
    Ok(reopened)
}

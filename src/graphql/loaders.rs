//! DataLoaders: every list or nested field is answered by one batched statement per request,
//! however many parents ask for it. Loaders of jobs read only what the caller may see: they
//! are made with the caller's [`Visibility`], so no resolver can forget it.

use crate::db::documents::{Page, PageKey, PageOf};
use crate::db::{self, DocumentRow, JobRow, ProcessRow, Visibility};
use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Loader error: the database failed (shown to clients as INTERNAL).
pub type LoadError = Arc<sqlx::Error>;

macro_rules! loader {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name(pub PgPool);
    };
}

loader!(
    /// Processes by id.
    ProcessById
);
/// Jobs by id, of those the caller sees.
pub struct JobById(pub PgPool, pub Visibility);
/// The newest job of each process the caller sees, by process id.
pub struct LatestJobByProcess(pub PgPool, pub Visibility);
loader!(
    /// Pages of the documents each process lists.
    DocumentsByProcess
);
loader!(
    /// Pages of the documents each job covers.
    DocumentsByJob
);
loader!(
    /// Documents by id.
    DocumentById
);
loader!(
    /// Every webhook URL of each job with its newest delivery, by job id.
    WebhooksByJob
);
loader!(
    /// The outages the workers see now (one read per request, whatever the jobs asking).
    OutagesNow
);

impl Loader<Uuid> for ProcessById {
    type Value = ProcessRow;
    type Error = LoadError;
    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, ProcessRow>, LoadError> {
        let rows = db::processes::find_by_ids(&self.0, keys).await?;
        Ok(rows.into_iter().map(|r| (r.id, r)).collect())
    }
}

impl Loader<Uuid> for JobById {
    type Value = JobRow;
    type Error = LoadError;
    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, JobRow>, LoadError> {
        let rows = db::jobs::find_by_ids(&self.0, keys).await?;
        Ok(rows
            .into_iter()
            .filter(|r| self.1.sees(r.tenant_id, r.id))
            .map(|r| (r.id, r))
            .collect())
    }
}

impl Loader<Uuid> for LatestJobByProcess {
    type Value = JobRow;
    type Error = LoadError;
    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, JobRow>, LoadError> {
        let rows = db::jobs::latest_by_processes(&self.0, keys, self.1).await?;
        Ok(rows.into_iter().map(|r| (r.process_id, r)).collect())
    }
}

impl Loader<PageKey> for DocumentsByProcess {
    type Value = Page;
    type Error = LoadError;
    async fn load(&self, keys: &[PageKey]) -> Result<HashMap<PageKey, Page>, LoadError> {
        Ok(db::documents::pages(&self.0, PageOf::Process, keys).await?)
    }
}

impl Loader<PageKey> for DocumentsByJob {
    type Value = Page;
    type Error = LoadError;
    async fn load(&self, keys: &[PageKey]) -> Result<HashMap<PageKey, Page>, LoadError> {
        Ok(db::documents::pages(&self.0, PageOf::Job, keys).await?)
    }
}

impl Loader<Uuid> for DocumentById {
    type Value = DocumentRow;
    type Error = LoadError;
    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, DocumentRow>, LoadError> {
        let rows = db::documents::find_by_ids(&self.0, keys).await?;
        Ok(rows.into_iter().map(|r| (r.id, r)).collect())
    }
}

impl Loader<Uuid> for WebhooksByJob {
    type Value = Vec<db::webhooks::JobWebhook>;
    type Error = LoadError;
    async fn load(
        &self,
        keys: &[Uuid],
    ) -> Result<HashMap<Uuid, Vec<db::webhooks::JobWebhook>>, LoadError> {
        let mut grouped: HashMap<Uuid, Vec<db::webhooks::JobWebhook>> =
            keys.iter().map(|k| (*k, Vec::new())).collect();
        for row in db::webhooks::by_jobs(&self.0, keys).await? {
            grouped.entry(row.job_id).or_default().push(row);
        }
        Ok(grouped)
    }
}

impl Loader<()> for OutagesNow {
    type Value = Vec<db::outages::OutageRow>;
    type Error = LoadError;
    async fn load(&self, _: &[()]) -> Result<HashMap<(), Vec<db::outages::OutageRow>>, LoadError> {
        Ok(HashMap::from([((), db::outages::current(&self.0).await?)]))
    }
}

/// A loader with a per-request cache: what a list resolver prefetched, its children find.
pub type Cached<T> = DataLoader<T, HashMapCache>;

/// The loaders of one request.
pub struct Loaders {
    /// Processes by id.
    pub process: Cached<ProcessById>,
    /// Jobs by id.
    pub job: Cached<JobById>,
    /// Latest job by process id.
    pub latest_job: Cached<LatestJobByProcess>,
    /// Pages of the documents a process lists, by process id and page.
    pub process_documents: Cached<DocumentsByProcess>,
    /// Pages of the documents a job covers, by job id and page.
    pub job_documents: Cached<DocumentsByJob>,
    /// Documents by id.
    pub document: Cached<DocumentById>,
    /// Webhook URLs with their newest deliveries by job id.
    pub webhooks: Cached<WebhooksByJob>,
    /// Outages seen now.
    pub outages: Cached<OutagesNow>,
}

impl Loaders {
    /// Turns caching off (for a WebSocket connection, which outlives any one read).
    pub fn disable_caches(&self) {
        self.process.enable_all_cache(false);
        self.job.enable_all_cache(false);
        self.latest_job.enable_all_cache(false);
        self.process_documents.enable_all_cache(false);
        self.job_documents.enable_all_cache(false);
        self.document.enable_all_cache(false);
        self.webhooks.enable_all_cache(false);
        self.outages.enable_all_cache(false);
    }

    /// Fresh loaders for a caller who sees `visibility` (their caches live as long as one
    /// request).
    pub fn new(pool: &PgPool, visibility: Visibility) -> Self {
        fn make<T: Send + Sync + 'static>(loader: T) -> Cached<T> {
            DataLoader::with_cache(loader, tokio::spawn, HashMapCache::default())
                .max_batch_size(10_000)
        }
        Loaders {
            process: make(ProcessById(pool.clone())),
            job: make(JobById(pool.clone(), visibility)),
            latest_job: make(LatestJobByProcess(pool.clone(), visibility)),
            process_documents: make(DocumentsByProcess(pool.clone())),
            job_documents: make(DocumentsByJob(pool.clone())),
            document: make(DocumentById(pool.clone())),
            webhooks: make(WebhooksByJob(pool.clone())),
            outages: make(OutagesNow(pool.clone())),
        }
    }
}

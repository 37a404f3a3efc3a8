//! Subscriptions: live job progress.

use super::access::{principal, Access};
use super::errors::{client_error, code, internal};
use super::types::{counts, Document, DocumentCounts, Outage};
use crate::auth::policy::Operation;
use crate::domain::status::JobStatus;
use crate::jobs::Services;
use crate::progress::{Hub, Snapshot};
use async_graphql::{Context, Result, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::Stream;
use std::sync::Arc;
use uuid::Uuid;

/// One state of a job, as `jobProgress` sends it.
#[derive(SimpleObject)]
pub struct JobProgress {
    /// The job.
    pub job_id: ID,
    /// Its status.
    pub status: JobStatus,
    /// floor(100 × (available + failed) / total); 100 exactly when terminal. Never decreases.
    pub progress: i32,
    /// Documents covered.
    pub total: i32,
    /// Counts by document status.
    pub counts: DocumentCounts,
    /// The document whose change this message reports, if one did.
    pub document: Option<Document>,
    /// Why its remaining documents wait, if they do: the outages of S3 or of the court the
    /// workers see now. A message is sent when one starts and when it ends.
    pub waiting_for: Vec<Outage>,
    /// When this state was read.
    pub at: DateTime<Utc>,
}

/// The root subscription.
pub struct SubscriptionRoot;

#[Subscription(name = "Subscription", guard = "Access(Operation::Subscription)")]
impl SubscriptionRoot {
    /// A job's progress: the first message is its current state, then one for every document
    /// status change (coalesced when the subscriber is slow, never reordered; `progress` never
    /// decreases), and the last carries the terminal status, after which the stream completes.
    async fn job_progress(
        &self,
        ctx: &Context<'_>,
        job_id: ID,
    ) -> Result<impl Stream<Item = JobProgress>> {
        let not_found = || {
            client_error(
                code::JOB_NOT_FOUND,
                format!("job {} was not found", *job_id),
            )
        };
        let id = Uuid::parse_str(job_id.trim()).map_err(|_| not_found())?;
        let svc = ctx.data_unchecked::<Services>();
        let visibility = principal(ctx)?.visibility();
        // Another tenant's job is answered as an unknown one.
        crate::db::jobs::find(&svc.pool, id)
            .await
            .map_err(|e| internal(e.into()))?
            .filter(|job| visibility.sees(job.tenant_id, job.id))
            .ok_or_else(not_found)?;
        let subscription = ctx.data_unchecked::<Hub>().subscribe(id);
        // Every subscriber of a job gets each snapshot: copy its document only for those who
        // asked for it.
        let with_document = ctx.look_ahead().field("document").exists();
        let state = (subscription, 0i32, false, false);
        Ok(futures::stream::unfold(
            state,
            move |(mut sub, floor, started, done)| async move {
                if done {
                    return None;
                }
                if started || sub.borrow().is_none() {
                    sub.changed().await.ok()?;
                }
                loop {
                    let snapshot = sub.borrow_and_update().clone();
                    if let Some(snapshot) = snapshot {
                        let message = message(&snapshot, floor, with_document);
                        let terminal = message.status.is_terminal();
                        let floor = message.progress;
                        return Some((message, (sub, floor, true, terminal)));
                    }
                    sub.changed().await.ok()?;
                }
            },
        ))
    }
}

fn message(snapshot: &Arc<Snapshot>, floor: i32, with_document: bool) -> JobProgress {
    let job = &snapshot.job;
    let status = job.status().unwrap_or(JobStatus::Running);
    JobProgress {
        job_id: ID(job.id.to_string()),
        status,
        progress: job.progress().max(floor),
        total: job.total,
        counts: counts(job),
        document: with_document
            .then(|| snapshot.document.clone().map(Document))
            .flatten(),
        waiting_for: Outage::from_rows(&snapshot.waiting_for),
        at: snapshot.at,
    }
}

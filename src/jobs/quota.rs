//! What one request may make active (contract §8): at most `AUTOS_TENANT_MAX_ACTIVE_JOBS`
//! QUEUED or RUNNING jobs per tenant, and no job for a process that lists more than
//! `AUTOS_MAX_DOCUMENTS_PER_PROCESS` documents.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::{JobError, JobSettings};
use crate::db;
use crate::domain::ProcessNumber;
use crate::source::ProcessListing;

/// Refuses a tenant already at its quota before the court is asked for a case it could not
/// start anyway. Only a shortcut: [`decide`] is what holds under races.
pub(super) async fn precheck(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    settings: &JobSettings,
) -> Result<(), JobError> {
    refuse_at(
        db::jobs::count_active(db, tenant_id).await?,
        settings.tenant_max_active_jobs,
    )
}

/// Decides whether the tenant may have one more active job, in the transaction that would
/// make it active: the tenant's row stays locked until that transaction ends, so concurrent
/// requests of one tenant count one after the other, each seeing the jobs the previous made.
///
/// Call it after the case's own row is locked (processes, then tenants: one order for every
/// transaction that takes both).
pub(super) async fn decide(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    settings: &JobSettings,
) -> Result<(), JobError> {
    db::tenants::lock(&mut *conn, tenant_id).await?;
    // A statement of its own, after the lock: its snapshot includes what the previous
    // holder committed.
    let active = db::jobs::count_active(&mut *conn, tenant_id).await?;
    refuse_at(active, settings.tenant_max_active_jobs)
}

fn refuse_at(active: i64, limit: u32) -> Result<(), JobError> {
    if active >= i64::from(limit) {
        return Err(JobError::QuotaExceeded { limit });
    }
    Ok(())
}

/// Refuses a listing with more documents than one job may cover.
pub(super) fn check_size(
    number: &ProcessNumber,
    listing: &ProcessListing,
    settings: &JobSettings,
) -> Result<(), JobError> {
    let limit = settings.max_documents_per_process;
    let documents = listing.documents.len();
    if documents > usize::try_from(limit).unwrap_or(usize::MAX) {
        tracing::info!(process = %number, documents, limit, "process refused: too many documents");
        return Err(JobError::ProcessTooLarge {
            number: number.to_string(),
            documents,
            limit,
        });
    }
    Ok(())
}

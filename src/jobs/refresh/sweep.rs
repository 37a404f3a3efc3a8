//! The sweeper's part for refreshes.

use super::{kept, queue, RefreshBatch};
use crate::db::refreshes::{self, Ending};
use crate::jobs::Services;
use chrono::Utc;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Interruptions (its worker died) after which a refresh gives up, keeping the stored copy.
pub const MAX_INTERRUPTIONS: i32 = 10;

/// The sweeper's part for refreshes (every step a compare-and-set, safe in several processes
/// at once): a refresh whose worker died (its lease ran out) has its multipart upload aborted
/// and goes back to PENDING with a new task, uncounted (or gives up, keeping the stored copy,
/// after [`MAX_INTERRUPTIONS`]); refreshes no active job awaits are dropped; PENDING ones a
/// job awaits that no live task will make get a new task. Returns how many it recovered,
/// dropped or queued.
pub async fn sweep(svc: &Services) -> anyhow::Result<usize> {
    let mut swept = 0;
    let abort_grace = svc.settings.lease * 10;
    for expired in refreshes::expired(&svc.pool, 500).await? {
        let (id, token) = (expired.document_id, expired.token);
        if let Some((key, upload_id)) = &expired.upload {
            if let Err(err) = svc.storage.abort_upload(key, upload_id).await {
                let overdue = (Utc::now() - expired.lease_until)
                    .to_std()
                    .unwrap_or_default();
                if overdue < abort_grace {
                    tracing::warn!(document = %id, %key, error = %err, "cannot abort a refresh's multipart upload; trying again next pass");
                    continue;
                }
                tracing::warn!(document = %id, %key, error = %err, "cannot abort a refresh's multipart upload; left to the bucket's lifecycle rules");
            }
        }
        let mut tx = svc.pool.begin().await?;
        let error = "the refresh was interrupted (its worker stopped)";
        let ending = if expired.interruptions + 1 >= MAX_INTERRUPTIONS {
            Ending::Kept {
                error: kept(&format!("{error} {MAX_INTERRUPTIONS} times")),
            }
        } else {
            let at = Utc::now();
            let task = RefreshBatch {
                job_id: expired.job_id.unwrap_or_default(),
                document_ids: vec![id],
            };
            let task_id = crate::queue::enqueue(&mut *tx, &task, Some(at)).await?;
            Ending::RetryAt {
                error: error.to_string(),
                at,
                task_id,
                attempt: false,
                interruption: true,
            }
        };
        if refreshes::end(&mut tx, id, token, &ending).await?.is_some() {
            swept += 1;
        }
        tx.commit().await?;
    }

    swept += refreshes::drop_unawaited(&svc.pool, 1000).await? as usize;

    let mut by_job: BTreeMap<Uuid, Vec<Uuid>> = BTreeMap::new();
    for (document, job) in refreshes::orphans(&svc.pool, 5000).await? {
        by_job.entry(job).or_default().push(document);
    }
    for (job, ids) in by_job {
        let mut tx = svc.pool.begin().await?;
        queue(&mut tx, job, &ids, svc.settings.batch_size, Utc::now()).await?;
        tx.commit().await?;
        swept += ids.len();
    }
    if swept > 0 {
        tracing::info!(refreshes = swept, "sweeper recovered refreshes");
    }
    Ok(swept)
}

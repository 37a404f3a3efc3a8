//! Queries.

use super::access::{principal, Access};
use super::admin::{tenant_filter, ApiKey, AuditEntry, Viewer};
use super::credentials::SourceCredential;
use super::errors::{client_error, code, internal, job_error, load_error};
use super::loaders::Loaders;
use super::types::{page_key, Document, DownloadJob, Process};
use crate::auth::policy::Operation;
use crate::auth::Scope;
use crate::db;
use crate::domain::status::JobStatus;
use crate::jobs::{self, Services};
use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Object, Result, ID};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A message the built-in test receiver got.
#[derive(async_graphql::SimpleObject)]
pub struct ReceivedWebhook {
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// `webhook-id`.
    pub message_id: Option<String>,
    /// `webhook-timestamp` (Unix seconds).
    pub timestamp: Option<f64>,
    /// The event's `type`.
    pub event_type: Option<String>,
    /// Whether the signature verified with the sending tenant's secrets.
    pub signature_valid: bool,
    /// The body, as sent.
    pub body: String,
}

/// Largest page of `jobs`.
pub const MAX_PAGE: i32 = 100;

/// Largest page of `auditLog`.
pub const MAX_AUDIT_PAGE: i32 = 100;

/// The root query.
pub struct Query;

#[Object(guard = "Access(Operation::Query)")]
impl Query {
    /// Who is calling: tenant, key, scopes, and the tenant's webhook secret.
    async fn viewer(&self, ctx: &Context<'_>) -> Result<Viewer> {
        Ok(Viewer(principal(ctx)?.clone()))
    }

    /// A process by CNJ number (formatted or 20 digits), looked up at the source if not known
    /// yet; null if the source has no such case.
    async fn process(&self, ctx: &Context<'_>, number: String) -> Result<Option<Process>> {
        let svc = ctx.data_unchecked::<Services>();
        let tenant = principal(ctx)?.tenant_id;
        Ok(jobs::lookup_process(svc, tenant, &number)
            .await
            .map_err(job_error)?
            .map(Process))
    }

    /// The caller's tenant's court credentials (never their secrets).
    async fn source_credentials(&self, ctx: &Context<'_>) -> Result<Vec<SourceCredential>> {
        let svc = ctx.data_unchecked::<Services>();
        let tenant = principal(ctx)?.tenant_id;
        Ok(jobs::credentials::list(svc, tenant)
            .await
            .map_err(job_error)?
            .into_iter()
            .map(SourceCredential)
            .collect())
    }

    /// A download job by id.
    async fn job(&self, ctx: &Context<'_>, id: ID) -> Result<Option<DownloadJob>> {
        let Ok(id) = Uuid::parse_str(id.trim()) else {
            return Ok(None);
        };
        let row = ctx
            .data_unchecked::<Loaders>()
            .job
            .load_one(id)
            .await
            .map_err(load_error)?;
        Ok(row.map(DownloadJob))
    }

    /// The caller's tenant's download jobs (admin keys: every tenant's, or those of
    /// `tenant`), newest first, optionally of one status or one process.
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 1 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last job of the previous page.")] after: Option<String>,
        status: Option<JobStatus>,
        #[graphql(desc = "CNJ number, formatted or 20 digits.")] number: Option<String>,
        #[graphql(desc = "Only this tenant's jobs (admin keys).")] tenant: Option<String>,
    ) -> Result<Connection<String, DownloadJob>> {
        let first = first.unwrap_or(20);
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(client_error(
                code::BAD_REQUEST,
                format!("`first` must be between 1 and {MAX_PAGE}, got {first}"),
            ));
        }
        let after = after.as_deref().map(decode_cursor).transpose()?;
        let process_number = number
            .as_deref()
            .map(|n| crate::domain::ProcessNumber::parse(n).map(|p| p.to_string()))
            .transpose()
            .map_err(|e| job_error(e.into()))?;
        let svc = ctx.data_unchecked::<Services>();
        let mut visibility = principal(ctx)?.visibility();
        visibility.tenant = tenant_filter(ctx, tenant.as_deref()).await?;
        let query = db::jobs::PageQuery {
            visibility,
            status,
            process_number,
            after,
            first: first.into(),
        };
        let mut rows = db::jobs::page(&svc.pool, &query)
            .await
            .map_err(|e| super::errors::internal(e.into()))?;
        let has_next = rows.len() > first as usize;
        rows.truncate(first as usize);
        prefetch(ctx, &rows).await?;
        let mut connection = Connection::new(after.is_some(), has_next);
        connection.edges.extend(
            rows.into_iter()
                .map(|row| Edge::new(encode_cursor(row.created_at, row.id), DownloadJob(row))),
        );
        Ok(connection)
    }

    /// What the built-in test receiver (`POST /webhooks/test-receiver` on this process) got
    /// lately of the caller's tenant (admin keys: of all), newest first, with whether each
    /// signature verified.
    async fn test_webhook_deliveries(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] last: i32,
    ) -> Result<Vec<ReceivedWebhook>> {
        let receiver =
            ctx.data_unchecked::<std::sync::Arc<crate::webhook::receiver::TestReceiver>>();
        let tenant = principal(ctx)?.visibility().tenant;
        Ok(receiver
            .last(
                tenant,
                last.clamp(0, crate::webhook::receiver::KEPT as i32) as usize,
            )
            .into_iter()
            .map(|r| ReceivedWebhook {
                received_at: r.received_at,
                message_id: r.message_id,
                timestamp: r.timestamp.map(|t| t as f64),
                event_type: r.event_type,
                signature_valid: r.signature_valid,
                body: r.body,
            })
            .collect())
    }

    /// Every mutation and key event of the caller's tenant (admin keys: of every tenant, or
    /// of `tenant`), newest first.
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 1 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last entry of the previous page.")] after: Option<String>,
        #[graphql(desc = "Only this tenant's entries (admin keys).")] tenant: Option<String>,
    ) -> Result<Connection<String, AuditEntry>> {
        let first = first.unwrap_or(20);
        if !(1..=MAX_AUDIT_PAGE).contains(&first) {
            return Err(client_error(
                code::BAD_REQUEST,
                format!("`first` must be between 1 and {MAX_AUDIT_PAGE}, got {first}"),
            ));
        }
        let before = after
            .as_deref()
            .map(|a| {
                a.parse::<i64>().map_err(|_| {
                    client_error(
                        code::BAD_REQUEST,
                        format!("`after` is not a valid cursor: {a}"),
                    )
                })
            })
            .transpose()?;
        let tenant = tenant_filter(ctx, tenant.as_deref()).await?;
        let svc = ctx.data_unchecked::<Services>();
        let mut rows = db::audit::page(&svc.pool, tenant, before, first.into())
            .await
            .map_err(|e| internal(e.into()))?;
        let has_next = rows.len() > first as usize;
        rows.truncate(first as usize);
        let mut connection = Connection::new(before.is_some(), has_next);
        connection.edges.extend(
            rows.into_iter()
                .map(|row| Edge::new(row.id.to_string(), AuditEntry(row))),
        );
        Ok(connection)
    }

    /// API keys (admin keys only): of every tenant, or of `tenant`. Never their secrets.
    async fn api_keys(&self, ctx: &Context<'_>, tenant: Option<String>) -> Result<Vec<ApiKey>> {
        let tenant = tenant_filter(ctx, tenant.as_deref()).await?;
        let svc = ctx.data_unchecked::<Services>();
        let rows = db::keys::list(&svc.pool, tenant)
            .await
            .map_err(|e| internal(e.into()))?;
        Ok(rows.into_iter().map(ApiKey).collect())
    }

    /// A document by id.
    async fn document(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Document>> {
        let Ok(id) = Uuid::parse_str(id.trim()) else {
            return Ok(None);
        };
        let loaders = ctx.data_unchecked::<Loaders>();
        let Some(row) = loaders.document.load_one(id).await.map_err(load_error)? else {
            return Ok(None);
        };
        // A document of a tenant's sealed process answers like an unknown one to the others.
        let principal = principal(ctx)?;
        let process = loaders
            .process
            .load_one(row.process_id)
            .await
            .map_err(load_error)?;
        let owner = process.and_then(|p| p.owner_tenant_id);
        if owner.is_some_and(|o| o != principal.tenant_id && !principal.allows(Scope::Admin)) {
            return Ok(None);
        }
        Ok(Some(Document(row)))
    }
}

/// Loads, in one batch each, what the page's nodes will ask for, so that the statement count
/// of a page does not depend on how the executor happens to interleave its children.
async fn prefetch(ctx: &Context<'_>, rows: &[db::JobRow]) -> Result<()> {
    let look = ctx.look_ahead();
    let wants = |path: &[&str]| at_nodes(&look, path).is_some();
    let loaders = ctx.data_unchecked::<Loaders>();
    let job_ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let process_ids: Vec<Uuid> = rows.iter().map(|r| r.process_id).collect();
    if wants(&["process"]) {
        loaders
            .process
            .load_many(process_ids.iter().copied())
            .await
            .map_err(load_error)?;
    }
    if wants(&["process", "latestJob"]) {
        loaders
            .latest_job
            .load_many(process_ids.iter().copied())
            .await
            .map_err(load_error)?;
    }
    // The pages the nodes' `documents` fields ask for (an invalid page is left to the field
    // to report).
    if let Some(keys) = page_keys(&look, &["process", "documents"], &process_ids) {
        loaders
            .process_documents
            .load_many(keys)
            .await
            .map_err(load_error)?;
    }
    if let Some(keys) = page_keys(&look, &["documents"], &job_ids) {
        loaders
            .job_documents
            .load_many(keys)
            .await
            .map_err(load_error)?;
    }
    Ok(())
}

/// The field at `path` under a page's nodes (`nodes { … }` or `edges { node { … } }`), if
/// the page asks for it.
fn at_nodes<'a>(
    look: &async_graphql::Lookahead<'a>,
    path: &[&str],
) -> Option<async_graphql::Lookahead<'a>> {
    [look.field("nodes"), look.field("edges").field("node")]
        .into_iter()
        .map(|node| path.iter().fold(node, |l, f| l.field(f)))
        .find(|l| l.exists())
}

/// The pages of `owners`' documents that the `documents` field at `path` under the page's
/// nodes asks for, if it is asked for with valid arguments.
fn page_keys(
    look: &async_graphql::Lookahead<'_>,
    path: &[&str],
    owners: &[Uuid],
) -> Option<Vec<db::documents::PageKey>> {
    let (first, after) = page_arguments(look, path)?;
    owners
        .iter()
        .map(|id| page_key(*id, first, after.as_deref()).ok())
        .collect()
}

/// The arguments (`first`, `after`) of the `documents` field at `path` under the page's nodes,
/// if the page asks for it.
fn page_arguments(
    look: &async_graphql::Lookahead<'_>,
    path: &[&str],
) -> Option<(Option<i32>, Option<String>)> {
    let field = at_nodes(look, path)?;
    let selection = field.selection_fields().into_iter().next()?;
    let (mut first, mut after) = (None, None);
    for (name, value) in selection.arguments().ok()? {
        match (name.as_str(), value) {
            ("first", async_graphql::Value::Number(n)) => {
                first = Some(i32::try_from(n.as_i64()?).ok()?)
            }
            ("after", async_graphql::Value::String(a)) => after = Some(a),
            (_, async_graphql::Value::Null) => {}
            _ => return None,
        }
    }
    Some((first, after))
}

fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}:{id}", at.timestamp_micros()))
}

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid)> {
    let bad = || {
        client_error(
            code::BAD_REQUEST,
            format!("`after` is not a valid cursor: {cursor}"),
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (micros, id) = raw.split_once(':').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    Ok((at, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let at = DateTime::from_timestamp_micros(1_764_417_600_123_456).unwrap();
        let id = Uuid::new_v4();
        assert_eq!(decode_cursor(&encode_cursor(at, id)).unwrap(), (at, id));
        assert!(decode_cursor("nope").is_err());
        assert!(decode_cursor("").is_err());
    }
}

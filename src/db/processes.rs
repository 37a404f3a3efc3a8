//! Processes and the document lists read from the source.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A process row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProcessRow {
    /// Row id.
    pub id: Uuid,
    /// Formatted CNJ number.
    pub number: String,
    /// Court, as the source names it.
    pub court: Option<String>,
    /// Procedural class.
    pub class: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// Last time the source was read.
    pub looked_up_at: DateTime<Utc>,
    /// First seen.
    pub created_at: DateTime<Utc>,
    /// The name of the source it was read from (`default`: `AUTOS_SOURCE_URL`).
    pub source: String,
    /// CNJ secrecy level, 0 (public) to 5.
    pub sigilo: i16,
    /// The tenant whose alone the process is (read with a credential that saw sealed things);
    /// none for a public process, shared by every tenant.
    pub owner_tenant_id: Option<Uuid>,
}

/// A process as a source describes it: where it was read, its secrecy level there, and its
/// header.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    /// The source's name (`default`: `AUTOS_SOURCE_URL`).
    pub source: &'a str,
    /// CNJ secrecy level, 0 to 5.
    pub sigilo: i16,
    /// Court, as the source names it.
    pub court: Option<&'a str>,
    /// Procedural class.
    pub class: Option<&'a str>,
    /// Subject.
    pub subject: Option<&'a str>,
}

/// A document as the source lists it, ready to store.
#[derive(Debug, Clone)]
pub struct ListedDocument<'a> {
    /// Source document id.
    pub source_id: &'a str,
    /// Original file name.
    pub name: &'a str,
    /// Kind (e.g. "Petição Inicial").
    pub kind: Option<&'a str>,
    /// MIME type.
    pub mime_type: Option<&'a str>,
    /// Download URL, as listed.
    pub url: &'a str,
    /// Announced size.
    pub size: Option<i64>,
    /// Announced SHA-256 (lowercase hex).
    pub sha256: Option<&'a str>,
}

/// A listing as column arrays, for `UNNEST`, in the listing's order.
pub(crate) struct ListingColumns<'a> {
    pub(crate) source_ids: Vec<&'a str>,
    pub(crate) names: Vec<&'a str>,
    pub(crate) kinds: Vec<Option<&'a str>>,
    pub(crate) mime_types: Vec<Option<&'a str>>,
    pub(crate) urls: Vec<&'a str>,
    pub(crate) sizes: Vec<Option<i64>>,
    pub(crate) sha256s: Vec<Option<&'a str>>,
}

impl<'a> ListingColumns<'a> {
    pub(crate) fn of(documents: &[ListedDocument<'a>]) -> Self {
        ListingColumns {
            source_ids: documents.iter().map(|d| d.source_id).collect(),
            names: documents.iter().map(|d| d.name).collect(),
            kinds: documents.iter().map(|d| d.kind).collect(),
            mime_types: documents.iter().map(|d| d.mime_type).collect(),
            urls: documents.iter().map(|d| d.url).collect(),
            sizes: documents.iter().map(|d| d.size).collect(),
            sha256s: documents.iter().map(|d| d.sha256).collect(),
        }
    }
}

/// Binds a [`ListingColumns`] to the next seven parameters of a query: source ids, names,
/// kinds, MIME types, URLs, sizes, SHA-256s (`text[]` but `bigint[]` for sizes).
macro_rules! bind_listing {
    ($query:expr, $columns:expr) => {
        $query
            .bind(&$columns.source_ids)
            .bind(&$columns.names)
            .bind(&$columns.kinds)
            .bind(&$columns.mime_types)
            .bind(&$columns.urls)
            .bind(&$columns.sizes)
            .bind(&$columns.sha256s)
    };
}
pub(crate) use bind_listing;

/// The process with this number that `tenant` may see: its own sealed copy if it has one,
/// else the public one, if known.
pub async fn find_by_number(
    db: impl PgExecutor<'_>,
    number: &str,
    tenant: Uuid,
) -> Result<Option<ProcessRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM processes
         WHERE number = $1 AND (owner_tenant_id IS NULL OR owner_tenant_id = $2)
         ORDER BY owner_tenant_id IS NULL LIMIT 1",
    )
    .bind(number)
    .bind(tenant)
    .fetch_optional(db)
    .await
}

/// Processes by id, in any order.
pub async fn find_by_ids(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<ProcessRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM processes WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(db)
        .await
}

/// Inserts or refreshes a process and its document list, in one transaction of the caller's.
///
/// The process row stays locked until the caller's transaction ends, which serializes
/// everything that creates jobs for one process. Documents the source no longer lists are
/// kept, marked `listed = false`.
pub async fn upsert_listing(
    conn: &mut PgConnection,
    number: &str,
    owner: Option<Uuid>,
    header: Header<'_>,
    documents: &[ListedDocument<'_>],
) -> Result<ProcessRow, sqlx::Error> {
    let (process, _) = upsert_process(&mut *conn, number, owner, header).await?;
    upsert_documents(conn, process.id, documents).await?;
    Ok(process)
}

#[derive(sqlx::FromRow)]
struct UpsertedProcess {
    #[sqlx(flatten)]
    process: ProcessRow,
    inserted: bool,
}

/// Inserts or refreshes a process row (not its documents); says whether it was inserted
/// now. The row stays locked until the caller's transaction ends; a process inserted by it
/// is seen by no one else before it commits, so it has no documents and no jobs but the
/// caller's.
pub async fn upsert_process(
    conn: &mut PgConnection,
    number: &str,
    owner: Option<Uuid>,
    header: Header<'_>,
) -> Result<(ProcessRow, bool), sqlx::Error> {
    // A public process and each tenant's sealed copy are rows of their own.
    let statement = if owner.is_some() {
        "INSERT INTO processes (number, court, class, subject, owner_tenant_id, source, sigilo)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (number, owner_tenant_id) WHERE owner_tenant_id IS NOT NULL DO UPDATE
            SET court = EXCLUDED.court, class = EXCLUDED.class, subject = EXCLUDED.subject,
                source = EXCLUDED.source, sigilo = EXCLUDED.sigilo,
                looked_up_at = now(), updated_at = now()
         RETURNING *, (xmax = 0) AS inserted"
    } else {
        "INSERT INTO processes (number, court, class, subject, owner_tenant_id, source, sigilo)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (number) WHERE owner_tenant_id IS NULL DO UPDATE
            SET court = EXCLUDED.court, class = EXCLUDED.class, subject = EXCLUDED.subject,
                source = EXCLUDED.source, sigilo = EXCLUDED.sigilo,
                looked_up_at = now(), updated_at = now()
         RETURNING *, (xmax = 0) AS inserted"
    };
    let upserted: UpsertedProcess = sqlx::query_as(statement)
        .bind(number)
        .bind(header.court)
        .bind(header.class)
        .bind(header.subject)
        .bind(owner)
        .bind(header.source)
        .bind(header.sigilo)
        .fetch_one(&mut *conn)
        .await?;
    Ok((upserted.process, upserted.inserted))
}

/// Records the secrecy level and parent of a process's documents (MNI listings carry them;
/// a listing without either leaves the defaults alone).
pub async fn set_lineage(
    conn: &mut PgConnection,
    process_id: Uuid,
    source_ids: &[&str],
    sigilos: &[i16],
    parents: &[Option<&str>],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE documents d SET sigilo = t.sigilo, parent_source_id = t.parent
         FROM UNNEST($2::text[], $3::smallint[], $4::text[]) AS t(source_id, sigilo, parent)
         WHERE d.process_id = $1 AND d.source_id = t.source_id
           AND (d.sigilo, d.parent_source_id) IS DISTINCT FROM (t.sigilo, t.parent)",
    )
    .bind(process_id)
    .bind(source_ids)
    .bind(sigilos)
    .bind(parents)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts or refreshes the documents the source lists for a process (in their order), and
/// marks those it no longer lists.
pub async fn upsert_documents(
    conn: &mut PgConnection,
    process_id: Uuid,
    documents: &[ListedDocument<'_>],
) -> Result<(), sqlx::Error> {
    let columns = ListingColumns::of(documents);
    bind_listing!(
        sqlx::query(
            "INSERT INTO documents (process_id, source_id, name, kind, mime_type, url, size,
                                   sha256, position)
             SELECT $1, source_id, name, kind, mime_type, url, size, sha256, ord::int - 1
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::bigint[], $8::text[])
                 WITH ORDINALITY AS t(source_id, name, kind, mime_type, url, size, sha256, ord)
             ON CONFLICT (process_id, source_id) DO UPDATE
                SET position = EXCLUDED.position, name = EXCLUDED.name, kind = EXCLUDED.kind,
                    mime_type = EXCLUDED.mime_type, url = EXCLUDED.url, size = EXCLUDED.size,
                    sha256 = EXCLUDED.sha256, listed = true, updated_at = now()",
        )
        .bind(process_id),
        columns
    )
    .execute(&mut *conn)
    .await?;

    sqlx::query(
        "UPDATE documents SET listed = false, updated_at = now()
         WHERE process_id = $1 AND listed AND NOT (source_id = ANY($2))",
    )
    .bind(process_id)
    .bind(&columns.source_ids)
    .execute(&mut *conn)
    .await?;

    Ok(())
}

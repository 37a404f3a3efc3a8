//! The database layer: every SQL statement autos runs, on one sqlx pool.
//!
//! Status changes are compare-and-set (`UPDATE … WHERE status = $from`), checked first against
//! the state machine in [`crate::domain::status`], so two workers can never both move the same
//! document and no caller can write a transition the state machine forbids.

/// A condition, always true, that lets the statement it is part of commit without waiting
/// for its write-ahead log to reach the disk (`synchronous_commit = off` for the statement's
/// own transaction). Only for transitions whose loss in a crash of PostgreSQL itself — the
/// last few hundred milliseconds of them, never a torn or reordered state — autos recovers on
/// its own: claims, task fetches and document endings come back through leases, stale tasks
/// and the sweeper. A job's end, cancellations and everything a client asked for keep
/// synchronous commits (and flush these with them).
macro_rules! relaxed_commit {
    () => {
        "(SELECT set_config('synchronous_commit', 'off', true)) = 'off'"
    };
}
pub(crate) use relaxed_commit;

/// The opposite of [`relaxed_commit!`]: the statement's transaction commits synchronously
/// even if a relaxed statement ran in it before (a job's end, whatever led to it).
macro_rules! strict_commit {
    () => {
        "(SELECT set_config('synchronous_commit', 'on', true)) = 'on'"
    };
}
pub(crate) use strict_commit;

pub mod audit;
pub mod credentials;
pub mod documents;
pub mod jobs;
pub mod keys;
pub mod outages;
pub mod processes;
pub mod refreshes;
pub mod retention;
pub mod tenants;
pub mod webhooks;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

pub use documents::DocumentRow;
pub use jobs::{JobCounts, JobRow};
pub use processes::ProcessRow;

/// What a caller may read: one tenant's rows (or every tenant's, `tenant: None`), and for a
/// progress token one job only. Every read of tenant data takes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Visibility {
    /// Only this tenant's rows; `None`: every tenant's.
    pub tenant: Option<uuid::Uuid>,
    /// Only this job.
    pub job: Option<uuid::Uuid>,
}

impl Visibility {
    /// Every tenant's rows (the workers' and the command line's view).
    pub const ALL: Visibility = Visibility {
        tenant: None,
        job: None,
    };

    /// Whether a job of `tenant_id` with id `job_id` is visible.
    pub fn sees(&self, tenant_id: uuid::Uuid, job_id: uuid::Uuid) -> bool {
        self.tenant.is_none_or(|t| t == tenant_id) && self.job.is_none_or(|j| j == job_id)
    }
}

/// Migrations embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database failed or refused a statement.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// A status change the state machine forbids was asked for and refused.
    #[error(transparent)]
    Transition(#[from] crate::domain::status::InvalidTransition),
    /// A row holds a value the code does not know (e.g. a status written by a newer version).
    #[error("unexpected value in the database: {0}")]
    Corrupt(String),
}

/// Opens a pool. `max` is the number of connections this process may hold.
pub async fn connect(url: &str, max: u32) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?
        .application_name("autos")
        // Statements are prepared once per connection and executed on whichever connection
        // the pool hands out, so each connection runs a given statement only now and then:
        // PostgreSQL's default would plan it afresh on each of its first five executions per
        // connection (a millisecond or more for the transitions' CTEs). Every statement here
        // is indexed OLTP whose plan does not depend on the parameter values.
        //
        // Those generic plans are made with the statistics of the moment, which on a young
        // database (every deployment's first minutes, every bench run) describe tables of a
        // few rows; and at PostgreSQL's default cost of a random page (4, for spinning disks)
        // a whole scan of a few thousand narrow rows looks cheaper than a handful of index
        // lookups. The claims, endings and counts then read every row of their job's
        // documents each time: a job costs the square of its size. At 1.1 (pages in memory or
        // on SSD, as the hot tables are) the lookups by id win at any size.
        .options([
            ("plan_cache_mode", "force_generic_plan"),
            ("random_page_cost", "1.1"),
        ]);
    PgPoolOptions::new()
        .max_connections(max)
        // sqlx would ping every connection before handing it out: a second round trip for
        // each statement. A dead connection fails its statement instead, and every caller
        // is retried (queue tasks) or reports the error (API).
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// The migrations of this build not applied to the database yet (`version description`), in
/// order: all of them on an empty database.
pub async fn pending_migrations(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let applied: Vec<i64> =
        if sqlx::query_scalar::<_, bool>("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?
        {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(pool)
                .await?
        } else {
            Vec::new()
        };
    Ok(MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect())
}

/// Applies pending migrations when `migrate`; else refuses a database that lacks any of them
/// (an operator who migrates apart must have done it before starting autos).
pub async fn prepare(pool: &PgPool, migrate: bool) -> anyhow::Result<()> {
    if migrate {
        self::migrate(pool)
            .await
            .map_err(|e| anyhow::anyhow!("cannot apply migrations: {e}"))?;
        return Ok(());
    }
    let pending = pending_migrations(pool)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the database's migrations: {e}"))?;
    if let Some(first) = pending.first() {
        anyhow::bail!(
            "the database is not migrated ({} migration(s) of this build not applied, the first \
             `{first}`) and AUTOS_MIGRATE=false: run `autos migrate` first, then start again",
            pending.len()
        );
    }
    Ok(())
}

/// Whether the database answers.
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}

/// True when `err` is a unique violation of the named constraint or index.
pub fn is_unique_violation(err: &sqlx::Error, constraint: &str) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.is_unique_violation() && db.constraint() == Some(constraint)
        }
        _ => false,
    }
}

//! The composition root: builds every part from the configuration, runs the API server and/or
//! the workers, and stops them in order.

use crate::auth::origins::OriginPolicy;
use crate::auth::{AuthMode, Authenticator};
use crate::config::{Auth, Config, KeyCommand};
use crate::embedded::{postgres::EmbeddedPostgres, s3::EmbeddedS3};
use crate::graphql;
use crate::http::{self, HttpState};
use crate::jobs::{self, JobSettings, Services};
use crate::queue::{PgQueue, QueueSettings, WorkerPool, WorkerSettings};
use crate::source::{Source, SourceConfig, Sources};
use crate::storage::{Storage, StorageConfig, DEFAULT_PART_SIZE};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    /// The API server.
    pub serve: bool,
    /// The queue workers and the sweeper.
    pub work: bool,
}

impl Role {
    /// API server and worker.
    pub const ALL: Role = Role {
        serve: true,
        work: true,
    };
    /// API server only.
    pub const SERVE: Role = Role {
        serve: true,
        work: false,
    };
    /// Worker only.
    pub const WORK: Role = Role {
        serve: false,
        work: true,
    };
}

/// Embedded services started because nothing else was configured.
#[derive(Default)]
struct Embedded {
    postgres: Option<EmbeddedPostgres>,
    s3: Option<EmbeddedS3>,
}

/// A running autos.
pub struct Application {
    /// Where the API listens, when serving.
    pub addr: Option<SocketAddr>,
    /// The parts, for tests and tools.
    pub services: Services,
    /// Who is calling, when serving.
    pub auth: Option<Authenticator>,
    shutdown: watch::Sender<bool>,
    /// Stops the HTTP server and closes its WebSockets, before anything else stops.
    closing: watch::Sender<bool>,
    sockets: tokio_util::task::TaskTracker,
    server: Option<JoinHandle<()>>,
    sweeper: Option<JoinHandle<()>>,
    cancellations: Option<JoinHandle<()>>,
    workers: Option<WorkerPool>,
    embedded: Embedded,
}

/// The database URL to use, starting the embedded cluster when none is configured.
async fn database(config: &Config, embedded: &mut Embedded) -> anyhow::Result<String> {
    if let Some(url) = &config.database_url {
        return Ok(url.clone());
    }
    let dir = config.home.join("postgres");
    let pg = EmbeddedPostgres::start(&dir).await.with_context(|| {
        format!(
            "no DATABASE_URL is set, and the embedded PostgreSQL under {} could not start",
            dir.display()
        )
    })?;
    tracing::info!(dir = %dir.display(), "DATABASE_URL not set: using the embedded PostgreSQL");
    let url = pg.url().to_string();
    embedded.postgres = Some(pg);
    Ok(url)
}

/// Connects and migrates (when asked); used by `migrate` too.
pub async fn connect_database(
    config: &Config,
    max: u32,
) -> anyhow::Result<(sqlx::PgPool, Option<EmbeddedPostgres>)> {
    let mut embedded = Embedded::default();
    let url = database(config, &mut embedded).await?;
    let pool = crate::db::connect(&url, max)
        .await
        .context("cannot connect to PostgreSQL (DATABASE_URL)")?;
    Ok((pool, embedded.postgres))
}

/// How webhooks are signed and sent, from the configuration.
fn webhook_settings(config: &Config) -> anyhow::Result<jobs::webhook::WebhookSettings> {
    let default_secret = config
        .webhook_secret
        .as_deref()
        .map(crate::webhook::Secret::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("AUTOS_WEBHOOK_SECRET: {e}"))?;
    Ok(jobs::webhook::WebhookSettings {
        default_secret,
        max_attempts: config.webhook_max_attempts,
        backoff: Duration::from_millis(config.webhook_backoff_ms),
        timeout: Duration::from_millis(config.webhook_timeout_ms),
    })
}

/// A tenant's webhook signing secret (`autos webhook-secret`): `AUTOS_WEBHOOK_SECRET` for the
/// tenant `default` when set, else the stored one, generated at first need.
pub async fn webhook_secret(
    config: &Config,
    pool: &sqlx::PgPool,
    tenant: &str,
) -> anyhow::Result<crate::webhook::Secret> {
    let settings = webhook_settings(config)?;
    let row = crate::db::tenants::find_by_slug(pool, tenant)
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "there is no tenant `{tenant}` (a tenant is made with its first key: `autos key create --tenant {tenant}`)"
            )
        })?;
    jobs::webhook::current_secret(pool, &settings, row.id).await
}

/// `autos key create|list|revoke`.
pub async fn key_command(pool: &sqlx::PgPool, command: KeyCommand) -> anyhow::Result<()> {
    use crate::auth::admin::{self, KeySpec};
    use crate::auth::audit::Actor;
    match command {
        KeyCommand::Create {
            tenant,
            scopes,
            name,
            expires_in_days,
            rate_limit,
        } => {
            let scopes = crate::auth::Scope::parse_list(&scopes)
                .map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
            let spec = KeySpec {
                tenant,
                scopes,
                name,
                expires_in_days,
                rate_limit,
            };
            let (key, row) = admin::create_key(pool, &spec, &Actor::cli()).await?;
            println!("tenant:  {}", row.tenant);
            println!("key id:  {}", row.id);
            println!("scopes:  {}", row.scopes.join(","));
            println!(
                "expires: {}",
                row.expires_at
                    .map_or("never".to_string(), |at| at.to_rfc3339())
            );
            println!("The key follows; it is shown this once. Keep it secret.");
            println!("{}", key.reveal());
        }
        KeyCommand::List { tenant } => {
            let tenant_id = match tenant {
                Some(slug) => Some(
                    crate::db::tenants::find_by_slug(pool, &slug)
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("there is no tenant `{slug}`"))?
                        .id,
                ),
                None => None,
            };
            let rows = crate::db::keys::list(pool, tenant_id).await?;
            let time = |at: Option<chrono::DateTime<chrono::Utc>>, none: &str| {
                at.map_or(none.to_string(), |at| {
                    at.format("%Y-%m-%d %H:%M").to_string()
                })
            };
            println!(
                "{:<12}  {:<16}  {:<20}  {:<16}  {:<16}  {:<16}  {:<16}  {:<16}",
                "ID", "TENANT", "NAME", "SCOPES", "CREATED", "LAST USED", "EXPIRES", "REVOKED"
            );
            for row in rows {
                println!(
                    "{:<12}  {:<16}  {:<20}  {:<16}  {:<16}  {:<16}  {:<16}  {:<16}",
                    row.id,
                    row.tenant,
                    row.name.as_deref().unwrap_or("-"),
                    row.scopes.join(","),
                    time(Some(row.created_at), "-"),
                    time(row.last_used_at, "never"),
                    time(row.expires_at, "never"),
                    time(row.revoked_at, "-"),
                );
            }
        }
        KeyCommand::Revoke { key_id } => {
            let row = admin::revoke_key(pool, &key_id, &Actor::cli())
                .await?
                .ok_or_else(|| anyhow::anyhow!("there is no key `{key_id}`"))?;
            println!("revoked {} (tenant {})", row.id, row.tenant);
        }
    }
    Ok(())
}

/// The sample court: `./playground/sample-court`, else the one beside the sources.
fn sample_court() -> PathBuf {
    sample_dir("playground/sample-court")
}

/// `dir` of the working directory, else the one beside the sources.
fn sample_dir(dir: &str) -> PathBuf {
    let local = Path::new(dir);
    if local.is_dir() {
        return local.canonicalize().unwrap_or_else(|_| local.to_path_buf());
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)
}

impl Application {
    /// Builds every part and starts what `role` asks for.
    pub async fn start(config: Config, role: Role) -> anyhow::Result<Application> {
        if role.serve && config.auth == Auth::Off && !config.bind.ip().is_loopback() {
            anyhow::bail!(
                "AUTOS_AUTH=off is refused on {} (AUTOS_BIND): without authentication autos may \
                 only listen on a loopback address",
                config.bind
            );
        }
        let cors_origins = config.cors_origins().map_err(|e| anyhow::anyhow!(e))?;
        if role.serve && config.bind.ip().is_unspecified() && config.public_url.is_none() {
            tracing::warn!(
                bind = %config.bind,
                "AUTOS_PUBLIC_URL is not set: browsers (the progress page, GraphiQL) are refused \
                 unless their origin is in AUTOS_CORS_ORIGINS; set it to the address they use"
            );
        }
        let mut embedded = Embedded::default();
        let url = database(&config, &mut embedded).await?;
        let connections = config.workers * 2 + 10;
        let pool = crate::db::connect(&url, connections)
            .await
            .context("cannot connect to PostgreSQL (DATABASE_URL)")?;
        crate::db::prepare(&pool, config.migrate).await?;

        let credentials = config
            .aws_access_key_id
            .clone()
            .zip(config.aws_secret_access_key.clone());
        let storage_config = match &config.s3_endpoint {
            Some(endpoint) => StorageConfig {
                endpoint: Some(endpoint.to_string()),
                bucket: config.s3_bucket.clone(),
                region: config.s3_region.clone(),
                credentials,
                part_size: DEFAULT_PART_SIZE,
            },
            None => {
                let root = config.home.join("s3");
                let s3 = EmbeddedS3::start_persistent(&root, credentials)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot start the embedded S3 store under {}",
                            root.display()
                        )
                    })?;
                tracing::info!(dir = %root.display(), endpoint = s3.endpoint(), "AUTOS_S3_ENDPOINT not set: using the embedded S3-compatible store");
                let config = StorageConfig {
                    endpoint: Some(s3.endpoint().to_string()),
                    bucket: config.s3_bucket.clone(),
                    region: config.s3_region.clone(),
                    credentials: Some((s3.access_key().to_string(), s3.secret_key().to_string())),
                    part_size: DEFAULT_PART_SIZE,
                };
                embedded.s3 = Some(s3);
                config
            }
        };
        let storage = Storage::connect(&storage_config).await;
        storage
            .ensure_bucket()
            .await
            .with_context(|| format!("S3 bucket {} is not reachable", config.s3_bucket))?;

        let source_url = match &config.source_url {
            Some(url) => url.clone(),
            None => {
                let dir = sample_court();
                let url = url::Url::from_directory_path(&dir).map_err(|_| {
                    anyhow::anyhow!("sample court path {} is not absolute", dir.display())
                })?;
                tracing::info!(dir = %dir.display(), "AUTOS_SOURCE_URL not set: reading the sample court");
                url.to_string()
            }
        };
        let source_config = SourceConfig {
            token: config.source_token.clone(),
            allowed_hosts: crate::net::HostPattern::parse_list(&config.source_allowed_hosts)
                .map_err(|e| anyhow::anyhow!("AUTOS_SOURCE_ALLOWED_HOSTS: {e}"))?,
            allow_private: config.source_allow_private,
            concurrency: config.source_concurrency,
            not_found_ttl: Duration::from_secs(config.source_not_found_ttl_secs),
            ..SourceConfig::new(source_url)
        };
        let source = Source::new(source_config.clone())
            .map_err(|e| anyhow::anyhow!("AUTOS_SOURCE_URL: {e}"))?;
        let sources = match (&config.sources_file, &config.source_url) {
            (Some(path), _) => Sources::from_file(path, &source_config, source)
                .map_err(|e| anyhow::anyhow!("AUTOS_SOURCES_FILE: {e}"))?,
            (None, Some(_)) => Sources::single(source),
            // The embedded defaults: the sample cases over MNI, as a real court serves them.
            (None, None) => {
                let mni = crate::embedded::mni::EmbeddedMni::start(
                    &sample_court(),
                    &sample_dir("playground/sample-court-sealed"),
                )
                .await?;
                tracing::info!(url = %mni.url(), "AUTOS_SOURCES_FILE not set: the sample court also speaks MNI, as source `sample` (sealed case for user `demo`)");
                let sample = Source::new(SourceConfig {
                    token: None,
                    // Loopback, in this process: nothing to spare.
                    rate_per_minute: 100_000,
                    ..source_config.clone().with_url(mni.url())
                })
                .map_err(|e| anyhow::anyhow!("the embedded MNI court: {e}"))?;
                Sources::everything_to("sample", sample, source)
            }
        };
        tracing::info!(sources = %sources.describe(), "court sources");
        let sealer = config
            .sealer()
            .map_err(|e| anyhow::anyhow!("AUTOS_ENCRYPTION_KEY: {e}"))?;
        if let Some(sealer) = &sealer {
            if role.serve || role.work {
                jobs::credentials::reseal_all(&pool, sealer).await?;
            }
        }

        let webhook_policy = crate::webhook::TargetPolicy::from_config(
            config.webhook_allow_private,
            &config.webhook_allowed_hosts,
        )
        .map_err(|e| anyhow::anyhow!("AUTOS_WEBHOOK_ALLOWED_HOSTS: {e}"))?;
        let webhooks = webhook_settings(&config)?;
        let services = Services {
            starting: jobs::Starting::default(),
            settler: jobs::settler::Settler::start(pool.clone()),
            cancellations: jobs::cancellations::Cancellations::default(),
            breakers: jobs::outage::Breakers::new(pool.clone()),
            public_url: String::new(),
            test_receiver: config.test_receiver(),
            webhooks,
            webhook_policy,
            pool: pool.clone(),
            sources,
            vault: Arc::new(jobs::credentials::Vault::new(sealer)),
            storage,
            settings: JobSettings {
                batch_size: config.batch_size as usize,
                max_attempts: config.download_max_attempts,
                backoff: config.download_backoff(),
                download_timeout: config.download_timeout(),
                max_document_bytes: config.max_document_bytes,
                lease: Duration::from_millis(config.lease_ms),
                presign_ttl: config.presign_ttl(),
                audit_retention: Duration::from_secs(
                    u64::from(config.audit_retention_days) * 24 * 3600,
                ),
                delivery_retention: Duration::from_secs(
                    u64::from(config.delivery_retention_days) * 24 * 3600,
                ),
                failed_task_retention: Duration::from_secs(
                    u64::from(config.failed_task_retention_days) * 24 * 3600,
                ),
                outage_max: Duration::from_secs(config.outage_max_secs),
                tenant_max_active_jobs: config.tenant_max_active_jobs,
                max_documents_per_process: config.max_documents_per_process,
            },
        };
        let (shutdown, stop) = watch::channel(false);
        let (closing, closing_rx) = watch::channel(false);
        let sockets = tokio_util::task::TaskTracker::new();
        // The HTTP listener decides the address (port 0 in tests) before anything is served.
        let listener = if role.serve {
            Some(
                tokio::net::TcpListener::bind(config.bind)
                    .await
                    .with_context(|| format!("cannot listen on {} (AUTOS_BIND)", config.bind))?,
            )
        } else {
            None
        };
        let mut services = services;
        services.public_url = match (&config.public_url, &listener) {
            (Some(_), _) => config.public_url(),
            (None, Some(listener)) => format!("http://{}", listener.local_addr()?),
            (None, None) => config.public_url(),
        };

        let (workers, sweeper, cancellations) = if role.work {
            let queue = PgQueue::new(
                pool.clone(),
                QueueSettings {
                    stale_after: Duration::from_millis(config.lease_ms),
                },
            );
            let settings = WorkerSettings {
                workers: config.workers,
                task_types: vec![
                    jobs::DOWNLOAD_TASK.to_string(),
                    jobs::webhook::WEBHOOK_TASK.to_string(),
                ],
                poll_interval: Duration::from_millis(config.poll_interval_ms),
                heartbeat: Duration::from_millis(config.lease_ms / 4),
                shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
            };
            let cancellations = tokio::spawn(
                services
                    .cancellations
                    .clone()
                    .listen(pool.clone(), stop.clone()),
            );
            let context: Arc<dyn std::any::Any + Send + Sync> = Arc::new(services.clone());
            let workers = WorkerPool::start(queue, settings, context).await?;
            let sweeper = tokio::spawn(jobs::sweeper::run(
                services.clone(),
                Duration::from_millis(config.sweep_interval_ms),
                stop.clone(),
            ));
            tracing::info!(
                workers = config.workers,
                batch_size = config.batch_size,
                "worker started"
            );
            (Some(workers), Some(sweeper), Some(cancellations))
        } else {
            (None, None, None)
        };

        let (addr, server, auth, first_key) = if let Some(listener) = listener {
            let addr = listener.local_addr()?;
            let mode = match config.auth {
                Auth::Keys => AuthMode::Keys,
                Auth::Off => AuthMode::Off,
            };
            let auth = Authenticator::start(pool.clone(), mode, stop.clone()).await?;
            let first_key = match mode {
                AuthMode::Keys => crate::auth::admin::first_key(&pool)
                    .await
                    .context("cannot create the first API key")?,
                AuthMode::Off => None,
            };
            let hub = crate::progress::Hub::start(pool.clone(), stop.clone());
            let receiver = Arc::new(crate::webhook::receiver::TestReceiver::new());
            let schema = graphql::schema(Some(graphql::Parts {
                services: services.clone(),
                hub,
                receiver: receiver.clone(),
                auth: auth.clone(),
            }));
            let rate =
                crate::limits::RateLimiter::start(pool.clone(), config.rate_limit, stop.clone());
            let limits = crate::limits::Limits::new(&schema.sdl(), config.max_query_cost, rate);
            let state = HttpState {
                subscriptions: graphql::multiplex::Multiplexed::new(schema.clone()),
                schema,
                limits,
                max_body_bytes: config.max_body_bytes,
                request_timeout: Duration::from_secs(config.request_timeout_secs),
                ws_max_subscriptions: config.ws_max_subscriptions as usize,
                ws_ping: Duration::from_secs(config.ws_ping_secs),
                services: services.clone(),
                receiver,
                auth: auth.clone(),
                origins: OriginPolicy::new(&services.public_url, cors_origins.clone()),
                trust_forwarded: config.trust_forwarded,
                closing: closing_rx.clone(),
                sockets: sockets.clone(),
            };
            let app = http::router(state);
            let server = tokio::spawn(http::serve::serve(listener, app, closing_rx.clone()));
            let public = &services.public_url;
            tracing::info!(%addr, "listening: progress page {public}/ , GraphiQL {public}/graphql");
            if mode == AuthMode::Off {
                tracing::warn!(
                    "AUTOS_AUTH=off: no authentication; everything belongs to the tenant `default`"
                );
            }
            (Some(addr), Some(server), Some(auth), first_key)
        } else {
            (None, None, None, None)
        };
        if let Some(key) = first_key {
            // The one time a secret is logged: nobody could use this deployment otherwise.
            tracing::info!(
                "first start: created the tenant `default` and an admin key. Open {}/#key={} \
                 (the progress page and GraphiQL keep the key in the browser). \
                 `autos key create --tenant NAME` makes more; this URL is not shown again.",
                services.public_url,
                key.reveal()
            );
        }

        Ok(Application {
            addr,
            services,
            auth,
            shutdown,
            closing,
            sockets,
            server,
            sweeper,
            cancellations,
            workers,
            embedded,
        })
    }

    /// Stops: no new connection or task is taken, WebSocket clients are told to reconnect
    /// (close 1001) while their subscriptions still run, requests under way end (within
    /// [`http::serve::STOP_GRACE`]) while transfers under way finish (within
    /// `AUTOS_SHUTDOWN_GRACE_SECS`; unstarted ones are given back at once); then the rest
    /// stops, embedded services last.
    pub async fn stop(self) {
        let _ = self.closing.send(true);
        let (server, sockets) = (self.server, self.sockets);
        let http = async move {
            if let Some(server) = server {
                let _ = server.await;
            }
            sockets.close();
            if tokio::time::timeout(http::serve::STOP_GRACE, sockets.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    sockets = sockets.len(),
                    "WebSockets still open; stopping anyway"
                );
            }
        };
        let workers = async move {
            if let Some(workers) = self.workers {
                workers.shutdown().await;
            }
        };
        tokio::join!(http, workers);
        let _ = self.shutdown.send(true);
        if let Some(auth) = &self.auth {
            auth.flush().await;
        }
        // The last final transitions of the batches that ran (abandoned ones are left to
        // their leases).
        self.services.settler.close();
        if tokio::time::timeout(Duration::from_secs(10), self.services.settler.closed())
            .await
            .is_err()
        {
            tracing::warn!(
                "final transitions still being written after 10 s; their leases will recover them"
            );
        }
        if let Some(sweeper) = self.sweeper {
            let _ = sweeper.await;
        }
        if let Some(cancellations) = self.cancellations {
            let _ = cancellations.await;
        }
        self.services.pool.close().await;
        if let Some(s3) = self.embedded.s3 {
            s3.shutdown();
        }
        if let Some(pg) = self.embedded.postgres {
            if let Err(err) = pg.stop().await {
                tracing::warn!(error = %format!("{err:#}"), "embedded PostgreSQL did not stop cleanly");
            }
        }
    }
}

//! The composition root: builds every part from the configuration, runs the API server and/or
//! the workers, and stops them in order.

use crate::config::Config;
use crate::embedded::{postgres::EmbeddedPostgres, s3::EmbeddedS3};
use crate::graphql;
use crate::http::{self, HttpState};
use crate::jobs::{self, JobSettings, Services};
use crate::queue::{PgQueue, QueueSettings, WorkerPool, WorkerSettings};
use crate::source::{Source, SourceConfig};
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
    shutdown: watch::Sender<bool>,
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

/// The webhook signing secret: `AUTOS_WEBHOOK_SECRET`, else the one stored in the database,
/// generated (and logged, once) at the first start.
pub async fn webhook_secret(
    config: &Config,
    pool: &sqlx::PgPool,
) -> anyhow::Result<crate::webhook::Secret> {
    if let Some(raw) = &config.webhook_secret {
        return crate::webhook::Secret::parse(raw)
            .map_err(|e| anyhow::anyhow!("AUTOS_WEBHOOK_SECRET: {e}"));
    }
    let (stored, generated) =
        crate::db::webhooks::setting_or_insert(pool, "webhook_secret", || {
            crate::webhook::Secret::generate().to_string()
        })
        .await
        .context("cannot read the stored webhook secret")?;
    let secret = crate::webhook::Secret::parse(&stored)
        .map_err(|e| anyhow::anyhow!("the stored webhook secret is unusable: {e}"))?;
    if generated {
        tracing::info!(secret = %secret, "generated the webhook signing secret (Standard Webhooks); `autos webhook-secret` prints it again");
    }
    Ok(secret)
}

/// The sample court: `./playground/sample-court`, else the one beside the sources.
fn sample_court() -> PathBuf {
    let local = Path::new("playground/sample-court");
    if local.is_dir() {
        return local.canonicalize().unwrap_or_else(|_| local.to_path_buf());
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("playground/sample-court")
}

impl Application {
    /// Builds every part and starts what `role` asks for.
    pub async fn start(config: Config, role: Role) -> anyhow::Result<Application> {
        let mut embedded = Embedded::default();
        let url = database(&config, &mut embedded).await?;
        let connections = config.workers * 2 + 10;
        let pool = crate::db::connect(&url, connections)
            .await
            .context("cannot connect to PostgreSQL (DATABASE_URL)")?;
        if config.migrate {
            crate::db::migrate(&pool)
                .await
                .context("cannot apply migrations")?;
        }

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
        let source = Source::new(SourceConfig {
            token: config.source_token.clone(),
            ..SourceConfig::new(source_url)
        })
        .map_err(|e| anyhow::anyhow!("AUTOS_SOURCE_URL: {e}"))?;
        tracing::info!(source = %source.describe(), "court source");

        let webhook_policy = crate::webhook::TargetPolicy::from_config(
            config.webhook_allow_private,
            &config.webhook_allowed_hosts,
        )
        .map_err(|e| anyhow::anyhow!("AUTOS_WEBHOOK_ALLOWED_HOSTS: {e}"))?;
        let secret = webhook_secret(&config, &pool).await?;
        let services = Services {
            starting: jobs::Starting::default(),
            settler: jobs::settler::Settler::start(pool.clone()),
            cancellations: jobs::cancellations::Cancellations::default(),
            public_url: String::new(),
            webhooks: jobs::webhook::WebhookSettings {
                secret,
                max_attempts: config.webhook_max_attempts,
                backoff: Duration::from_millis(config.webhook_backoff_ms),
                timeout: Duration::from_millis(config.webhook_timeout_ms),
            },
            webhook_policy,
            pool: pool.clone(),
            source,
            storage,
            settings: JobSettings {
                batch_size: config.batch_size as usize,
                max_attempts: config.download_max_attempts,
                backoff: config.download_backoff(),
                download_timeout: config.download_timeout(),
                max_document_bytes: config.max_document_bytes,
                lease: Duration::from_millis(config.lease_ms),
                presign_ttl: config.presign_ttl(),
            },
        };
        let (shutdown, stop) = watch::channel(false);
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
                shutdown_grace: Duration::from_secs(10),
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

        let (addr, server) = if let Some(listener) = listener {
            let addr = listener.local_addr()?;
            let hub = crate::progress::Hub::start(pool.clone(), stop.clone());
            let receiver = Arc::new(crate::webhook::receiver::TestReceiver::new(
                services.webhooks.secret.clone(),
            ));
            let schema = graphql::schema(Some((services.clone(), hub, receiver.clone())));
            let state = HttpState {
                subscriptions: graphql::multiplex::Multiplexed::new(schema.clone()),
                schema,
                services: services.clone(),
                receiver,
            };
            let app = http::router(state);
            let mut stop = stop.clone();
            let server = tokio::spawn(async move {
                use axum::serve::ListenerExt;
                // Small messages (GraphQL over WebSocket) go out at once, not after Nagle's wait.
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                });
                if let Err(err) = serving.await {
                    tracing::error!(error = %err, "HTTP server failed");
                }
            });
            let public = &services.public_url;
            tracing::info!(%addr, "listening: progress page {public}/ , GraphiQL {public}/graphql");
            (Some(addr), Some(server))
        } else {
            (None, None)
        };

        Ok(Application {
            addr,
            services,
            shutdown,
            server,
            sweeper,
            cancellations,
            workers,
            embedded,
        })
    }

    /// Stops serving, lets workers finish (within their grace period), then stops embedded services.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        if let Some(server) = self.server {
            let _ = server.await;
        }
        if let Some(workers) = self.workers {
            workers.shutdown().await;
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

//! Every setting, from the environment (a `.env` file is read first) and `--kebab-case` flags.
//!
//! clap refuses malformed values at start with a message naming the variable, so nothing
//! later has to cope with a half-valid configuration.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// autos: fetches the complete case files of Brazilian court cases into S3.
#[derive(Debug, Parser)]
#[command(name = "autos", version, about, long_about = None)]
pub struct Cli {
    /// What to run; `all` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub config: Config,
}

/// The subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// API server and worker in one process (the default).
    All,
    /// API server only: GraphQL over HTTP and WebSocket, playground, health.
    Serve,
    /// Worker only: runs the task queue.
    Work,
    /// Applies pending migrations and exits.
    Migrate,
    /// Prints the GraphQL SDL.
    Schema,
    /// Prints a tenant's webhook signing secret (`whsec_…`), generating and storing it if needed.
    WebhookSecret {
        /// The tenant.
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Manages API keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

/// `autos key …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum KeyCommand {
    /// Creates a key (and its tenant, if new); the key is the last line printed, shown this once.
    Create {
        /// The tenant (`a-z`, `0-9`, `-`).
        #[arg(long)]
        tenant: String,
        /// Comma-separated scopes: read, write, admin.
        #[arg(long, default_value = "write")]
        scopes: String,
        /// A label for people.
        #[arg(long)]
        name: Option<String>,
        /// Days until it stops working by itself.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        expires_in_days: Option<u32>,
        /// Points per minute for this key, instead of AUTOS_RATE_LIMIT.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000_000))]
        rate_limit: Option<u32>,
    },
    /// Lists keys: id, tenant, name, scopes, created, last used, expiry, revoked.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revokes a key: it stops working at once, on every process.
    Revoke {
        /// The key id (the `{id}` of `autos_{id}_{secret}`).
        key_id: String,
    },
}

/// `AUTOS_AUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Auth {
    /// API keys and progress tokens.
    Keys,
    /// No authentication (loopback binds only): everything belongs to the tenant `default`.
    Off,
}

/// Every setting. Each field reads the environment variable named in its `env` attribute.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// PostgreSQL connection string. Without it, a private cluster runs under `./.autos/postgres`.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Apply pending migrations at start (`serve`, `work`, `all`).
    #[arg(long, env = "AUTOS_MIGRATE", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub migrate: bool,

    /// Where embedded services keep their data when nothing else is configured.
    #[arg(long, env = "AUTOS_HOME", default_value = ".autos", global = true)]
    pub home: PathBuf,

    /// HTTP listen address.
    #[arg(
        long,
        env = "AUTOS_BIND",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub bind: SocketAddr,

    /// Base URL that clients reach; `http://{AUTOS_BIND}` when unset.
    #[arg(long, env = "AUTOS_PUBLIC_URL", global = true)]
    pub public_url: Option<url::Url>,

    /// S3 endpoint URL (path-style addressing). Without it, an S3-compatible store is served from `./.autos/s3`.
    #[arg(long, env = "AUTOS_S3_ENDPOINT", global = true)]
    pub s3_endpoint: Option<url::Url>,

    /// S3 bucket; created at start if missing.
    #[arg(long, env = "AUTOS_S3_BUCKET", default_value = "autos", global = true)]
    pub s3_bucket: String,

    /// S3 region.
    #[arg(
        long,
        env = "AUTOS_S3_REGION",
        default_value = "us-east-1",
        global = true
    )]
    pub s3_region: String,

    /// S3 access key id (else the AWS SDK's default chain).
    #[arg(long, env = "AWS_ACCESS_KEY_ID", global = true, hide_env_values = true)]
    pub aws_access_key_id: Option<String>,

    /// S3 secret access key (else the AWS SDK's default chain).
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        global = true,
        hide_env_values = true
    )]
    pub aws_secret_access_key: Option<String>,

    /// The upstream court source: `http(s)://` or `file://`. Defaults to the sample court.
    #[arg(long, env = "AUTOS_SOURCE_URL", global = true)]
    pub source_url: Option<String>,

    /// A TOML file of sources by court (`[[source]]` with `name`, `courts`, `url`, optional
    /// `username`/`password`, `rate_per_minute`): numbers of those courts go there, the rest to
    /// AUTOS_SOURCE_URL.
    #[arg(long, env = "AUTOS_SOURCES_FILE", global = true)]
    pub sources_file: Option<std::path::PathBuf>,

    /// Key sealing tenants' court credentials at rest: 32 bytes, base64. With the embedded
    /// database and none set, one is generated and kept under AUTOS_HOME.
    #[arg(
        long,
        env = "AUTOS_ENCRYPTION_KEY",
        global = true,
        hide_env_values = true
    )]
    pub encryption_key: Option<String>,

    /// Keys that sealed credentials before the current one (comma-separated base64): they
    /// still open, and are sealed again with AUTOS_ENCRYPTION_KEY at start.
    #[arg(
        long,
        env = "AUTOS_ENCRYPTION_KEYS_PREVIOUS",
        default_value = "",
        global = true,
        hide_env_values = true
    )]
    pub encryption_keys_previous: String,

    /// Sent as `Authorization: Bearer …` to the source.
    #[arg(
        long,
        env = "AUTOS_SOURCE_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub source_token: Option<String>,

    /// Concurrent queue workers in this process.
    #[arg(long, env = "AUTOS_WORKERS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256), global = true)]
    pub workers: u32,

    /// Documents per batch task.
    #[arg(long, env = "AUTOS_BATCH_SIZE", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000), global = true)]
    pub batch_size: u32,

    /// Attempts per document.
    #[arg(long, env = "AUTOS_DOWNLOAD_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100), global = true)]
    pub download_max_attempts: u32,

    /// First retry delay in milliseconds; doubles each attempt, with jitter.
    #[arg(
        long,
        env = "AUTOS_DOWNLOAD_BACKOFF_MS",
        default_value_t = 1000,
        global = true
    )]
    pub download_backoff_ms: u64,

    /// Per-document transfer timeout in seconds.
    #[arg(long, env = "AUTOS_DOWNLOAD_TIMEOUT_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub download_timeout_secs: u64,

    /// Larger documents fail with a clear error.
    #[arg(long, env = "AUTOS_MAX_DOCUMENT_BYTES", default_value_t = 2_147_483_648, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub max_document_bytes: u64,

    /// Lifetime of document download URLs, in seconds (S3 allows at most 7 days).
    #[arg(long, env = "AUTOS_PRESIGN_TTL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(60..=604_800), global = true)]
    pub presign_ttl_secs: u64,

    /// `whsec_…` webhook signing secret; generated and stored at first start when unset.
    #[arg(
        long,
        env = "AUTOS_WEBHOOK_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,

    /// Webhook delivery attempts.
    #[arg(long, env = "AUTOS_WEBHOOK_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100), global = true)]
    pub webhook_max_attempts: u32,

    /// First webhook retry delay in milliseconds; grows exponentially.
    #[arg(
        long,
        env = "AUTOS_WEBHOOK_BACKOFF_MS",
        default_value_t = 1000,
        global = true
    )]
    pub webhook_backoff_ms: u64,

    /// Per-attempt webhook timeout in milliseconds.
    #[arg(
        long,
        env = "AUTOS_WEBHOOK_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub webhook_timeout_ms: u64,

    /// Allow webhook targets on private, loopback and link-local addresses.
    #[arg(long, env = "AUTOS_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub webhook_allow_private: bool,

    /// Comma-separated webhook host allowlist; `*.example.com` wildcards. Empty: any public host.
    #[arg(
        long,
        env = "AUTOS_WEBHOOK_ALLOWED_HOSTS",
        default_value = "",
        global = true
    )]
    pub webhook_allowed_hosts: String,

    /// How long a worker's claim on a document (and a running task's row) lasts without a
    /// heartbeat, in milliseconds; after that the work is taken again by another worker.
    #[arg(long, env = "AUTOS_LEASE_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1000..), global = true)]
    pub lease_ms: u64,

    /// How often the worker processes look for lost work (expired claims, orphaned documents), in
    /// milliseconds: one pass per interval in the whole cluster, by whichever process looks first.
    #[arg(long, env = "AUTOS_SWEEP_INTERVAL_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..), global = true)]
    pub sweep_interval_ms: u64,

    /// Longest idle wait of a worker between two looks at the queue, in milliseconds
    /// (enqueues wake workers at once through NOTIFY; this is the fallback).
    #[arg(long, env = "AUTOS_POLL_INTERVAL_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(10..), global = true)]
    pub poll_interval_ms: u64,

    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "AUTOS_LOG", default_value = "info", global = true)]
    pub log: String,

    /// Log format.
    #[arg(long, env = "AUTOS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    pub log_format: String,

    /// Authentication: `keys` (API keys and progress tokens) or `off` (loopback binds only).
    #[arg(long, env = "AUTOS_AUTH", value_enum, default_value_t = Auth::Keys, global = true)]
    pub auth: Auth,

    /// Comma-separated browser origins allowed to call the API (CORS) and open WebSockets,
    /// besides the origin of AUTOS_PUBLIC_URL.
    #[arg(long, env = "AUTOS_CORS_ORIGINS", default_value = "", global = true)]
    pub cors_origins: String,

    /// Days the audit log keeps an entry.
    #[arg(long, env = "AUTOS_AUDIT_RETENTION_DAYS", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500), global = true)]
    pub audit_retention_days: u32,

    /// Take the client address for the audit log from `X-Forwarded-For` (its last entry, the
    /// one the trusted proxy in front of autos added). Only behind such a proxy.
    #[arg(long, env = "AUTOS_TRUST_FORWARDED", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub trust_forwarded: bool,

    /// Largest request body accepted (413 beyond, the rest not read).
    #[arg(long, env = "AUTOS_MAX_BODY_BYTES", default_value_t = 1_048_576, value_parser = clap::value_parser!(u64).range(1024..), global = true)]
    pub max_body_bytes: u64,

    /// Highest cost of one GraphQL operation (QUERY_TOO_COMPLEX beyond, nothing run).
    #[arg(long, env = "AUTOS_MAX_QUERY_COST", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub max_query_cost: u64,

    /// Points per minute each key may spend (a key's own `--rate-limit` wins); 0 turns rate
    /// limiting off. (The one setting that is not a flag of the subcommands: `autos key
    /// create` has a `--rate-limit` of its own; give this one before the subcommand.)
    #[arg(long, env = "AUTOS_RATE_LIMIT", default_value_t = 100_000)]
    pub rate_limit: u64,

    /// QUEUED or RUNNING jobs a tenant may have at once (QUOTA_EXCEEDED beyond).
    #[arg(long, env = "AUTOS_TENANT_MAX_ACTIVE_JOBS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub tenant_max_active_jobs: u32,

    /// Documents a process may have (PROCESS_TOO_LARGE beyond, no job created).
    #[arg(long, env = "AUTOS_MAX_DOCUMENTS_PER_PROCESS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub max_documents_per_process: u32,

    /// Requests to the court source at once, per process.
    #[arg(long, env = "AUTOS_SOURCE_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024), global = true)]
    pub source_concurrency: u32,

    /// How long a number the source does not know is remembered (not asked again meanwhile).
    #[arg(
        long,
        env = "AUTOS_SOURCE_NOT_FOUND_TTL_SECS",
        default_value_t = 300,
        global = true
    )]
    pub source_not_found_ttl_secs: u64,

    /// Hosts other than the source's own that documents may come from (comma-separated,
    /// `*.example.com` covers subdomains).
    #[arg(
        long,
        env = "AUTOS_SOURCE_ALLOWED_HOSTS",
        default_value = "",
        global = true
    )]
    pub source_allowed_hosts: String,

    /// Allow documents from hosts (other than the source's own) on private, loopback and
    /// link-local addresses.
    #[arg(long, env = "AUTOS_SOURCE_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub source_allow_private: bool,

    /// Longest a request may run (then it is answered with an error).
    #[arg(long, env = "AUTOS_REQUEST_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    pub request_timeout_secs: u64,

    /// Operations at once on one WebSocket connection.
    #[arg(long, env = "AUTOS_WS_MAX_SUBSCRIPTIONS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000), global = true)]
    pub ws_max_subscriptions: u32,

    /// On SIGTERM, how long transfers under way may take to finish before they are given back
    /// (and taken at once by another worker).
    #[arg(long, env = "AUTOS_SHUTDOWN_GRACE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600), global = true)]
    pub shutdown_grace_secs: u64,

    /// How long an outage of S3 or of the court may last before the documents waiting for it
    /// fail (until then, work waits and resumes by itself).
    #[arg(long, env = "AUTOS_OUTAGE_MAX_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub outage_max_secs: u64,

    /// Days finished webhook deliveries (and their attempts) are kept.
    #[arg(long, env = "AUTOS_DELIVERY_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=36_500), global = true)]
    pub delivery_retention_days: u32,

    /// Days failed queue tasks are kept for inspection.
    #[arg(long, env = "AUTOS_FAILED_TASK_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=36_500), global = true)]
    pub failed_task_retention_days: u32,

    /// Seconds between pings to an idle WebSocket connection (one silent for three of them
    /// is closed).
    #[arg(long, env = "AUTOS_WS_PING_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    pub ws_ping_secs: u64,

    /// Serve the built-in webhook test receiver (`POST /webhooks/test-receiver`). Default: on
    /// only while the embedded defaults are in use (no DATABASE_URL, AUTOS_S3_ENDPOINT,
    /// AUTOS_SOURCE_URL).
    #[arg(long, env = "AUTOS_TEST_RECEIVER", action = clap::ArgAction::Set, global = true)]
    pub test_receiver: Option<bool>,
}

impl Config {
    /// Settings with every default, as a fresh machine would have them (for tests and tools).
    pub fn defaults() -> Self {
        Cli::parse_from(["autos"]).config
    }

    /// The base URL clients reach.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_string(),
            None => format!("http://{}", self.bind),
        }
    }

    /// First retry delay for document transfers.
    pub fn download_backoff(&self) -> Duration {
        Duration::from_millis(self.download_backoff_ms)
    }

    /// Per-document transfer timeout.
    pub fn download_timeout(&self) -> Duration {
        Duration::from_secs(self.download_timeout_secs)
    }

    /// Lifetime of presigned download URLs.
    pub fn presign_ttl(&self) -> Duration {
        Duration::from_secs(self.presign_ttl_secs)
    }

    /// Whether the built-in webhook test receiver runs: as set, else only while the
    /// embedded defaults are in use.
    pub fn test_receiver(&self) -> bool {
        self.test_receiver.unwrap_or(
            self.database_url.is_none() && self.s3_endpoint.is_none() && self.source_url.is_none(),
        )
    }

    /// The sealer of credentials at rest: AUTOS_ENCRYPTION_KEY (and the previous keys), else
    /// with the embedded database a key kept in `{AUTOS_HOME}/encryption.key` (made on first
    /// use), else none (credentials cannot be stored).
    pub fn sealer(&self) -> Result<Option<crate::domain::sealing::Sealer>, String> {
        use crate::domain::sealing::{Sealer, SealingKey};
        let current = match &self.encryption_key {
            Some(text) => text.clone(),
            None if self.database_url.is_none() => {
                let path = self.home.join("encryption.key");
                match std::fs::read_to_string(&path) {
                    Ok(text) => text,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let text = SealingKey::generate();
                        std::fs::create_dir_all(&self.home)
                            .and_then(|()| write_private(&path, &text))
                            .map_err(|e| format!("cannot keep a key in {}: {e}", path.display()))?;
                        text
                    }
                    Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
                }
            }
            None => return Ok(None),
        };
        let current = SealingKey::from_base64(&current)
            .map_err(|e| format!("AUTOS_ENCRYPTION_KEY {e}: it must be 32 bytes in base64"))?;
        let previous = self
            .encryption_keys_previous
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| {
                SealingKey::from_base64(k).map_err(|e| {
                    format!("AUTOS_ENCRYPTION_KEYS_PREVIOUS: a key {e}: each must be 32 bytes in base64")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Sealer::new(current, previous)))
    }

    /// The browser origins allowed besides the public URL's, normalized
    /// (`scheme://host[:port]`), refusing anything that is not an origin.
    pub fn cors_origins(&self) -> Result<Vec<String>, String> {
        self.cors_origins
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|o| {
                let url = url::Url::parse(o)
                    .map_err(|e| format!("AUTOS_CORS_ORIGINS: `{o}` is not an origin: {e}"))?;
                let origin = url.origin();
                let plain = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
                if !origin.is_tuple() || !plain || !matches!(url.scheme(), "http" | "https") {
                    return Err(format!(
                        "AUTOS_CORS_ORIGINS: `{o}` is not an origin (scheme://host[:port])"
                    ));
                }
                Ok(origin.ascii_serialization())
            })
            .collect()
    }
}

/// Writes a file only its owner may read.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_defaults() {
        let cli = Cli::try_parse_from(["autos"]).unwrap();
        assert_eq!(cli.command, None);
        let c = cli.config;
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");
        assert_eq!(c.s3_bucket, "autos");
        assert_eq!(c.s3_region, "us-east-1");
        assert_eq!(c.workers, 4);
        assert_eq!(c.batch_size, 5);
        assert_eq!(c.download_max_attempts, 3);
        assert_eq!(c.download_backoff_ms, 1000);
        assert_eq!(c.download_timeout_secs, 300);
        assert_eq!(c.max_document_bytes, 2_147_483_648);
        assert_eq!(c.presign_ttl_secs, 3600);
        assert_eq!(c.webhook_max_attempts, 3);
        assert!(!c.webhook_allow_private);
        assert!(c.migrate);
    }

    #[test]
    fn malformed_values_name_the_setting() {
        let err = Cli::try_parse_from(["autos", "--workers", "many"]).unwrap_err();
        assert!(err.to_string().contains("--workers"), "{err}");
        let err = Cli::try_parse_from(["autos", "--bind", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("--bind"), "{err}");
        let err = Cli::try_parse_from(["autos", "--migrate", "maybe"]).unwrap_err();
        assert!(err.to_string().contains("--migrate"), "{err}");
    }

    #[test]
    fn subcommands_take_flags_anywhere() {
        let cli = Cli::try_parse_from(["autos", "work", "--workers", "8"]).unwrap();
        assert_eq!(cli.command, Some(Command::Work));
        assert_eq!(cli.config.workers, 8);
    }
}

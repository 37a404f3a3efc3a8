//! Test harness: real PostgreSQL (a fresh database per test), a real S3-compatible server over
//! HTTP, a real HTTP court source and a real MNI (SOAP) court that can be told to fail, and autos
//! itself on port 0.

#![allow(dead_code)]

pub mod configured;
pub mod court;
pub mod elsewhere;
pub mod mni;
pub mod pgproxy;
pub mod proxy;
pub mod receiver;
pub mod ws;

use autos::app::{Application, Role};
use autos::config::Config;
use autos::embedded::s3::EmbeddedS3;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use court::{Court, Doc, Fault};

/// Admin connection for creating test databases.
pub fn admin_url() -> String {
    std::env::var("AUTOS_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database of its own for one test, dropped at the end.
pub struct TestDb {
    pub url: String,
    name: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let admin = admin_url();
        let name = format!("autos_test_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin}: {e}. Set AUTOS_TEST_DATABASE_URL or run ./scripts/test"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .expect("create test database");
        pool.close().await;
        let mut url = url::Url::parse(&admin).expect("admin url");
        url.set_path(&format!("/{name}"));
        TestDb {
            url: url.to_string(),
            name,
        }
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url).await.expect("connect")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = admin_url();
        // Drop runs outside async; a short-lived runtime on its own thread does the cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&pool)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A fresh temporary directory under `target/`.
pub fn temp_dir(label: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{label}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// An S3-compatible server over HTTP (s3s-fs) with its own directory.
pub struct TestS3 {
    pub server: EmbeddedS3,
    pub dir: PathBuf,
}

pub const S3_KEY: &str = "autos-test-key";
pub const S3_SECRET: &str = "autos-test-secret-0123456789";

impl TestS3 {
    pub async fn start() -> TestS3 {
        let dir = temp_dir("s3");
        let server = EmbeddedS3::start(&dir, "127.0.0.1:0".parse().unwrap(), S3_KEY, S3_SECRET)
            .await
            .expect("start s3");
        TestS3 { server, dir }
    }

    pub fn endpoint(&self) -> &str {
        self.server.endpoint()
    }
}

/// Settings of a test application.
#[derive(Clone)]
pub struct Options {
    pub role: Role,
    pub workers: u32,
    pub batch_size: u32,
    pub max_attempts: u32,
    pub backoff_ms: u64,
    pub timeout_secs: u64,
    pub max_bytes: u64,
    pub lease_ms: u64,
    pub sweep_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            role: Role::ALL,
            workers: 4,
            batch_size: 5,
            max_attempts: 3,
            backoff_ms: 50,
            timeout_secs: 30,
            max_bytes: 64 * 1024 * 1024,
            lease_ms: 5_000,
            sweep_ms: 500,
        }
    }
}

/// A configuration pointing at the given database, S3 server and source.
pub fn config(db_url: &str, s3: &TestS3, source_url: &str, o: &Options) -> Config {
    let mut c = Config::defaults();
    c.database_url = Some(db_url.to_string());
    c.bind = "127.0.0.1:0".parse().unwrap();
    c.s3_endpoint = Some(s3.endpoint().parse().unwrap());
    c.s3_bucket = "autos-test".into();
    c.aws_access_key_id = Some(S3_KEY.into());
    c.aws_secret_access_key = Some(S3_SECRET.into());
    c.source_url = Some(source_url.to_string());
    c.workers = o.workers;
    c.batch_size = o.batch_size;
    c.download_max_attempts = o.max_attempts;
    c.download_backoff_ms = o.backoff_ms;
    c.download_timeout_secs = o.timeout_secs;
    c.max_document_bytes = o.max_bytes;
    c.lease_ms = o.lease_ms;
    c.sweep_interval_ms = o.sweep_ms;
    c.poll_interval_ms = 200;
    c.log = "warn".into();
    // The tests use the built-in webhook test receiver (off by default outside the embedded
    // defaults).
    c.test_receiver = Some(true);
    // Tenants' court credentials are sealed with a key of the test's own.
    c.encryption_key = Some(autos::domain::sealing::SealingKey::generate());
    c
}

/// The tenant of the key every `TestApp` starts with.
pub const TENANT: &str = "acme";

/// Creates an API key as `autos key create` does (same code, on the test's database) and
/// returns its full text.
pub async fn create_key(db_url: &str, tenant: &str, scopes: &[autos::auth::Scope]) -> String {
    let pool = sqlx::PgPool::connect(db_url).await.expect("connect");
    let spec = autos::auth::admin::KeySpec {
        tenant: tenant.to_string(),
        scopes: scopes.to_vec(),
        name: Some(format!("test key of {tenant}")),
        expires_in_days: None,
        rate_limit: None,
    };
    let (key, _) = autos::auth::admin::create_key(&pool, &spec, &autos::auth::audit::Actor::cli())
        .await
        .expect("create a key");
    pool.close().await;
    key.reveal()
}

/// An HTTP client that sends `credential` (a key or progress token) with every request.
pub fn client_with(credential: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {credential}"))
        .expect("header value");
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// autos with everything it talks to.
pub struct TestApp {
    pub app: Option<Application>,
    pub addr: SocketAddr,
    /// A `write` key of the tenant [`TENANT`]; `http` sends it.
    pub key: String,
    pub http: reqwest::Client,
    pub db: TestDb,
    pub s3: TestS3,
    pub court: Court,
}

impl TestApp {
    /// Starts a court, an S3 server, a database and autos (API and workers).
    pub async fn spawn(court: Court) -> TestApp {
        Self::spawn_with(court, Options::default()).await
    }

    pub async fn spawn_with(court: Court, options: Options) -> TestApp {
        Self::spawn_configured(court, options, |_| {}).await
    }

    /// Another autos process-alike (its own pools, workers) on the same database, S3 and court.
    pub async fn another(&self, options: Options) -> Application {
        let cfg = config(&self.db.url, &self.s3, &self.court.url(), &options);
        Application::start(cfg, options.role)
            .await
            .expect("start another autos")
    }

    pub fn services(&self) -> &autos::jobs::Services {
        &self.app.as_ref().expect("running").services
    }

    /// A new key of `tenant` with `scopes`, made as `autos key create` makes one.
    pub async fn key(&self, tenant: &str, scopes: &[autos::auth::Scope]) -> String {
        create_key(&self.db.url, tenant, scopes).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POST /graphql; returns the whole response body.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        post_gql(&self.http, self.addr, query, variables).await
    }

    /// POST /graphql and return `data`, failing the test on errors.
    pub async fn data(&self, query: &str, variables: Value) -> Value {
        let body = self.gql(query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
        body["data"].clone()
    }

    /// startDownload; returns the payload.
    pub async fn start(&self, number: &str, force: bool) -> Value {
        self.data(
            "mutation($n: String!, $f: Boolean) { startDownload(input: {number: $n, force: $f}) {
                created job { id status total progress } } }",
            json!({ "n": number, "f": force }),
        )
        .await["startDownload"]
            .clone()
    }

    /// The job with its documents.
    pub async fn job(&self, id: &str) -> Value {
        self.data(JOB_QUERY, json!({ "id": id })).await["job"].clone()
    }

    /// Polls until the job is terminal (or panics after `timeout`).
    pub async fn wait_terminal(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            // Polled with its status alone (a cheap operation: polls of the whole job, with
            // its documents, would spend the key's rate limit in a few seconds).
            let polled = self
                .data(
                    "query($id: ID!) { job(id: $id) { status } }",
                    json!({ "id": id }),
                )
                .await;
            let status = polled["job"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !matches!(status.as_str(), "QUEUED" | "RUNNING") {
                return self.job(id).await;
            }
            if Instant::now() >= deadline {
                let job = self.job(id).await;
                panic!("job {id} still {status} after {timeout:?}: {job:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An object's bytes and metadata, read back with the S3 API.
    pub async fn object(&self, key: &str) -> Option<(Vec<u8>, Option<String>, Option<String>)> {
        let storage = &self.services().storage;
        let got = storage
            .client()
            .get_object()
            .bucket(storage.bucket())
            .key(key)
            .send()
            .await
            .ok()?;
        let sha = got.metadata().and_then(|m| m.get("sha256").cloned());
        let content_type = got.content_type().map(str::to_string);
        let bytes = got.body.collect().await.ok()?.into_bytes().to_vec();
        Some((bytes, sha, content_type))
    }

    /// Every object key in the bucket.
    pub async fn keys(&self) -> Vec<String> {
        let storage = &self.services().storage;
        let listed = storage
            .client()
            .list_objects_v2()
            .bucket(storage.bucket())
            .send()
            .await
            .expect("list objects");
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }
}

/// POST /graphql to the autos at `addr` (any process); returns the whole response body.
pub async fn post_gql(
    http: &reqwest::Client,
    addr: SocketAddr,
    query: &str,
    variables: Value,
) -> Value {
    http.post(format!("http://{addr}/graphql"))
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("graphql request")
        .json()
        .await
        .expect("graphql json")
}

pub const JOB_QUERY: &str = "query($id: ID!) { job(id: $id) {
    id status progress total error createdAt startedAt completedAt
    counts { pending processing available failed }
    process { number court }
    documents { id sourceId name kind mimeType size sha256 status attempts lastError
                storageKey downloadUrl downloadUrlExpiresAt } } }";

/// The error code of the first error of a response.
pub fn error_code(body: &Value) -> String {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body:#}"))
        .to_string()
}

/// A document of a job response by source id.
pub fn doc<'a>(job: &'a Value, source_id: &str) -> &'a Value {
    job["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .find(|d| d["sourceId"] == source_id)
        .unwrap_or_else(|| panic!("no document {source_id} in {job:#}"))
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut state = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Valid CNJ numbers for tests: `n`-th number of a fictional court.
pub fn number(n: u32) -> String {
    autos::domain::ProcessNumber::from_parts(&format!("{n:07}"), "2024", "8", "26", "0100")
        .expect("valid")
        .to_string()
}

/// The `autos` binary as a separate process with `role`, pointed at this test's database,
/// store and court, with nothing from the caller's environment.
pub fn autos_process(
    role: &str,
    db: &TestDb,
    s3: &TestS3,
    court: &Court,
    bind: SocketAddr,
) -> tokio::process::Command {
    let home = temp_dir("autos-home");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_autos"));
    // Nothing from the caller's environment or a .env file may change the outcome.
    cmd.arg(role)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("AUTOS_HOME", &home)
        .env("DATABASE_URL", &db.url)
        .env("AUTOS_BIND", bind.to_string())
        .env("AUTOS_S3_ENDPOINT", s3.endpoint())
        .env("AWS_ACCESS_KEY_ID", S3_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        .env("AUTOS_S3_BUCKET", "autos-test")
        .env("AUTOS_SOURCE_URL", court.url())
        .env("AUTOS_LOG", "warn")
        .env("AUTOS_DOWNLOAD_BACKOFF_MS", "50")
        .current_dir(&home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    cmd
}

/// A free loopback address for a child's HTTP server.
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}
pub mod access;
pub mod browser;
pub mod mute_ws;

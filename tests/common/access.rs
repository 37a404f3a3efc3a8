//! Helpers for access-control tests: the `autos key …` command line on a test's database,
//! autos started with a changed configuration, raw GraphQL requests (status and headers),
//! and a few SQL probes.

use super::{config, create_key, Court, Options, TestApp, TestDb, TestS3, TENANT};
use autos::app::Application;
use autos::config::Config;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, Instant};

/// The `autos` binary pointed at `db_url`, with nothing from the caller's environment.
pub fn autos_command(db_url: &str) -> tokio::process::Command {
    let home = super::temp_dir("autos-cli");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_autos"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("AUTOS_HOME", &home)
        .env("DATABASE_URL", db_url)
        .env("AUTOS_LOG", "warn")
        .current_dir(&home)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs `autos {args}` on `db_url` to its end (at most a minute).
pub async fn autos_cli(db_url: &str, args: &[&str]) -> Output {
    let run = autos_command(db_url).args(args).output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("`autos {}` did not end within a minute", args.join(" ")))
        .expect("run autos")
}

/// Runs `autos {args}`, failing the test unless it succeeds; returns its stdout.
pub async fn autos_cli_ok(db_url: &str, args: &[&str]) -> String {
    let out = autos_cli(db_url, args).await;
    assert!(
        out.status.success(),
        "`autos {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// A key made by `autos key create`.
pub struct CliKey {
    /// The full key: the last line of stdout.
    pub key: String,
    /// Everything it printed.
    pub stdout: String,
}

impl CliKey {
    pub fn id(&self) -> &str {
        key_id(&self.key)
    }
}

/// `autos key create {args}`; the key is the last line of stdout.
pub async fn cli_create_key(db_url: &str, args: &[&str]) -> CliKey {
    let mut all = vec!["key", "create"];
    all.extend_from_slice(args);
    let stdout = autos_cli_ok(db_url, &all).await;
    let key = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("no output from `autos key create`: {stdout:?}"))
        .trim()
        .to_string();
    // Checks the shape too: `autos_{12 chars}_{secret}`.
    let _ = key_secret(&key);
    CliKey { key, stdout }
}

/// The id of `autos_{id}_{secret}`.
pub fn key_id(key: &str) -> &str {
    split_key(key).0
}

/// The secret of `autos_{id}_{secret}`.
pub fn key_secret(key: &str) -> &str {
    split_key(key).1
}

fn split_key(key: &str) -> (&str, &str) {
    let rest = key
        .strip_prefix("autos_")
        .unwrap_or_else(|| panic!("not an API key: {key:?}"));
    let (id, secret) = rest
        .split_once('_')
        .unwrap_or_else(|| panic!("not an API key: {key:?}"));
    assert!(
        id.len() == 12
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "key id {id:?} of {key:?}"
    );
    assert!(secret.len() >= 32, "short secret in {key:?}");
    (id, secret)
}

/// autos started from the usual test configuration after `change` (CORS origins, auth mode,
/// retention…), with a write key of [`TENANT`] as `key`.
pub async fn spawn_configured(court: Court, change: impl FnOnce(&mut Config)) -> TestApp {
    let options = Options::default();
    let db = TestDb::new().await;
    let s3 = TestS3::start().await;
    let mut cfg = config(&db.url, &s3, &court.url(), &options);
    change(&mut cfg);
    let app = Application::start(cfg, options.role)
        .await
        .expect("start autos");
    let addr = app.addr.expect("serving");
    let key = create_key(&db.url, TENANT, &[autos::auth::Scope::Write]).await;
    TestApp {
        app: Some(app),
        addr,
        http: super::client_with(&key),
        key,
        db,
        s3,
        court,
    }
}

/// A GraphQL answer with its HTTP status and headers.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The first error's code.
    pub fn code(&self) -> String {
        super::error_code(&self.body)
    }

    /// The code of the error on the field at `path` (its first segment, for root fields).
    pub fn code_at(&self, path: &[&str]) -> Option<String> {
        self.body["errors"]
            .as_array()?
            .iter()
            .find(|e| {
                e["path"].as_array().is_some_and(|p| {
                    p.iter()
                        .map(|s| s.as_str())
                        .eq(path.iter().map(|s| Some(*s)))
                })
            })
            .and_then(|e| e["extensions"]["code"].as_str().map(str::to_string))
    }
}

/// POST /graphql with `client` (and whatever credential it sends).
pub async fn post(
    client: &reqwest::Client,
    addr: SocketAddr,
    query: &str,
    variables: Value,
) -> Answer {
    let response = client
        .post(format!("http://{addr}/graphql"))
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("graphql request");
    answer(response).await
}

/// Reads a response as a GraphQL answer.
pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({status}): {e}: {text:?}"));
    Answer {
        status,
        headers,
        body,
    }
}

/// POST /graphql and return `data`, failing the test on errors.
pub async fn data(
    client: &reqwest::Client,
    addr: SocketAddr,
    query: &str,
    variables: Value,
) -> Value {
    let got = post(client, addr, query, variables).await;
    assert_eq!(got.status, StatusCode::OK, "{:#}", got.body);
    assert!(
        got.body.get("errors").is_none(),
        "unexpected errors: {:#}",
        got.body
    );
    got.body["data"].clone()
}

/// Polls the job as `client` sees it until it is terminal (or panics after `timeout`).
pub async fn wait_terminal_as(
    client: &reqwest::Client,
    addr: SocketAddr,
    id: &str,
    timeout: Duration,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let job = data(client, addr, super::JOB_QUERY, json!({ "id": id })).await["job"].clone();
        let status = job["status"].as_str().unwrap_or_default().to_string();
        if !matches!(status.as_str(), "QUEUED" | "RUNNING") {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still {status} after {timeout:?}: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` until it returns true, or panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A single number from SQL (`SELECT count(*) …`) on `db`.
pub async fn count(db: &TestDb, sql: &str) -> i64 {
    let pool = db.pool().await;
    let n = sqlx::query_scalar(sql)
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pool.close().await;
    n
}

/// Runs SQL statements on `db`.
pub async fn execute(db: &TestDb, sql: &str) {
    let pool = db.pool().await;
    sqlx::raw_sql(sql)
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pool.close().await;
}

/// The slug of the tenant a job belongs to, read from the database.
pub async fn job_tenant(db: &TestDb, job_id: &str) -> String {
    let pool = db.pool().await;
    let slug = sqlx::query_scalar(
        "SELECT t.slug FROM download_jobs j JOIN tenants t ON t.id = j.tenant_id
         WHERE j.id = $1::uuid",
    )
    .bind(job_id)
    .fetch_one(&pool)
    .await
    .expect("job's tenant");
    pool.close().await;
    slug
}

/// `pg_dump` of the database at `url`, as SQL text (schema and data).
pub fn pg_dump(url: &str) -> String {
    let program = pg_dump_program();
    let out = std::process::Command::new(&program)
        .arg("--no-owner")
        .arg(format!("--dbname={url}"))
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 dump")
}

/// `pg_dump` on PATH, else the newest one of the machine's PostgreSQL installations.
fn pg_dump_program() -> String {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("pg_dump").is_file()));
    if on_path {
        return "pg_dump".into();
    }
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|version| version.path().join("bin/pg_dump"))
        .filter(|p| p.is_file())
        .collect();
    found.sort_by_key(|p| {
        p.components()
            .nth(4)
            .and_then(|c| c.as_os_str().to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .map(|p| p.to_string_lossy().into_owned())
        .expect("pg_dump is neither on PATH nor under /usr/lib/postgresql/*/bin")
}

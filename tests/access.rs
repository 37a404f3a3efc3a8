//! Access control over HTTP (contract §7): API keys from the command line and admin GraphQL,
//! `AUTOS_AUTH=off`, authentication and per-field scopes, tenants, progress tokens, browser
//! safety, the audit log, and secrets at rest.
//!
//! Everything is real: a PostgreSQL database per test, the S3-compatible test server, the test
//! court, autos in-process, and the `autos` binary wherever a command is concerned.

#[path = "access/audit.rs"]
mod audit;
#[path = "access/authentication.rs"]
mod authentication;
#[path = "access/browsers.rs"]
mod browsers;
mod common;
#[path = "access/keys.rs"]
mod keys;
#[path = "access/tenants.rs"]
mod tenants;
#[path = "access/tokens.rs"]
mod tokens;

use autos::auth::Scope;
use common::access::*;
use common::*;
use reqwest::header;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// Jobs of a few small documents end well within this.
const WAIT: Duration = Duration::from_secs(10);
/// A revocation reaches a running autos within a round trip; this leaves room for a busy
/// machine, and is far below the 30 s a cached key would otherwise live.
const AT_ONCE: Duration = Duration::from_secs(2);

const START: &str = "mutation($n: String!) {
    startDownload(input: {number: $n}) { created job { id status } } }";
const VIEWER: &str = "{ viewer { tenant keyId scopes } }";
const JOB: &str = "query($id: ID!) { job(id: $id) { id status } }";
const JOBS: &str = "query($t: String) { jobs(first: 100, tenant: $t) { edges { node { id } } } }";
const CANCEL: &str = "mutation($id: ID!) { cancelJob(id: $id) { id status } }";
const TOKEN: &str = "mutation($id: ID!) { createProgressToken(jobId: $id) { token expiresAt } }";
const TOKEN_TTL: &str = "mutation($id: ID!, $ttl: Int!) {
    createProgressToken(jobId: $id, ttlSeconds: $ttl) { token expiresAt } }";
const CREATE_KEY: &str = "mutation($t: String!, $s: [String!], $name: String) {
    createApiKey(input: {tenant: $t, scopes: $s, name: $name}) {
        key apiKey { id tenant name scopes revokedAt } } }";
const REVOKE_KEY: &str = "mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }";
const API_KEYS: &str =
    "query($t: String) { apiKeys(tenant: $t) { id tenant name scopes revokedAt } }";
const AUDIT: &str = "query($t: String) { auditLog(first: 100, tenant: $t) {
    edges { node { at tenant keyId action target outcome clientAddress } } } }";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Three small documents.
fn docs(seed: u8) -> Vec<Doc> {
    (0..3u8)
        .map(|i| {
            let seed = seed.wrapping_mul(3).wrapping_add(i);
            Doc::new(
                &format!("d{i}"),
                &format!("Peça {i}.pdf"),
                bytes(1_000 + usize::from(i), seed),
            )
        })
        .collect()
}

/// A court holding `number` with [`docs`], each document's first GET taking about a second.
fn slow_case(court: &Court, number: &str, seed: u8) -> Vec<Doc> {
    let docs = docs(seed);
    court.add_process(number, docs.clone());
    for doc in &docs {
        let slow = Fault::Slow {
            chunk: 100,
            every: Duration::from_millis(100),
        };
        court.fail(number, &doc.id, vec![slow]);
    }
    docs
}

/// startDownload as `client`; the whole answer.
async fn start_as(client: &reqwest::Client, app: &TestApp, number: &str) -> Answer {
    post(client, app.addr, START, json!({ "n": number })).await
}

/// startDownload as `client`, which must succeed; returns (job id, created).
async fn started(client: &reqwest::Client, app: &TestApp, number: &str) -> (String, bool) {
    let got = data(client, app.addr, START, json!({ "n": number })).await;
    let payload = &got["startDownload"];
    let id = payload["job"]["id"].as_str().expect("job id").to_string();
    (id, payload["created"] == true)
}

/// The job ids of a `jobs` answer.
fn job_ids(data: &Value) -> Vec<String> {
    data["jobs"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["id"].as_str().expect("id").to_string())
        .collect()
}

/// How many jobs exist, of every tenant.
async fn jobs_in_db(app: &TestApp) -> i64 {
    count(&app.db, "SELECT count(*) FROM download_jobs").await
}

/// Asserts a refused credential: 401, a Bearer challenge, UNAUTHENTICATED, nothing else.
fn assert_unauthenticated(got: &Answer, case: &str) {
    assert_eq!(
        got.status,
        StatusCode::UNAUTHORIZED,
        "{case}: {:#}",
        got.body
    );
    let challenge = got.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "{case}: WWW-Authenticate {challenge:?}"
    );
    assert_eq!(got.code(), "UNAUTHENTICATED", "{case}: {:#}", got.body);
    assert!(got.body["data"].is_null(), "{case}: {:#}", got.body);
}

/// Asserts FORBIDDEN on the field at `path`, with no value for it.
fn assert_forbidden_at(got: &Answer, path: &[&str], case: &str) {
    assert_eq!(got.status, StatusCode::OK, "{case}: {:#}", got.body);
    assert_eq!(
        got.code_at(path).as_deref(),
        Some("FORBIDDEN"),
        "{case}: {:#}",
        got.body
    );
    let value = path.iter().fold(&got.body["data"], |v, name| &v[*name]);
    assert!(value.is_null(), "{case}: {:#}", got.body);
}

/// Revokes a key as `autos key revoke` does (same code, on the test's database).
async fn revoke(app: &TestApp, key: &str) {
    let pool = app.db.pool().await;
    autos::auth::admin::revoke_key(&pool, key_id(key), &autos::auth::audit::Actor::cli())
        .await
        .expect("revoke")
        .expect("the key exists");
    pool.close().await;
}

/// Polls until `client`'s credential is refused with 401 (revocations apply at once).
async fn refused_soon(client: &reqwest::Client, app: &TestApp, what: &str) -> Answer {
    eventually(AT_ONCE, what, move || async move {
        post(client, app.addr, VIEWER, json!({})).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    post(client, app.addr, VIEWER, json!({})).await
}

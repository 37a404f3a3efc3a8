//! GraphQL over HTTP conformance (contract §5, §8): the server audit of the `graphql-http` npm
//! package (`serverAudits`, https://github.com/graphql/graphql-http), run by Node against a
//! real autos with a real API key.
//!
//! Every MUST passes. Every SHOULD passes, save those in [`ALLOWED_WARNINGS`], where the
//! contract asks for something else. The MAYs autos does on purpose (GET queries, refusing
//! mutations over GET, 400s for malformed requests) are held too ([`REQUIRED_MAYS`]).
//!
//! Needs `node` and the packages of `tests/graphql-http` (`npm ci` there); `scripts/test`
//! installs both.

mod common;

use autos::auth::Scope;
use common::*;
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// SHOULD audits that autos fails on purpose, each with the part of the contract that wins.
/// Keep it short: an entry needs a contract rule that the audit's expectation would break.
///
/// Empty with graphql-http 1.23.1: the contract and the audit agree. Where they could have
/// met, they do not clash: §8's 415 for a POST that is not `application/json` is the 4xx that
/// 9ABE asks for (and the audit sends no form-encoded or `application/graphql` POSTs); §7's
/// key requirement is met by the key the script sends; §8's GET-runs-queries-only is 9C48.
const ALLOWED_WARNINGS: &[(&str, &str)] = &[];

/// MAY audits that autos passes because the contract or its design asks for that behaviour.
const REQUIRED_MAYS: &[(&str, &str)] = &[
    ("5A70", "§8: GET /graphql?query=… runs queries"),
    ("9C48", "§8: mutations over GET are refused (405)"),
    ("A5BF", "a POST without a body is a bad request"),
    ("D6D5", "§8: GET takes JSON `variables`"),
    ("6A70", "§8: GET takes JSON `variables`"),
    ("B6DC", "a body that is not JSON is answered (400)"),
    ("423L", "a request without `query` is a bad request (400)"),
    ("3E3A", "a request without `query` is a bad request (400)"),
];

/// Running every audit takes well under a second; this leaves room for a busy machine.
const AUDIT_TIMEOUT: Duration = Duration::from_secs(120);

fn audit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graphql-http")
}

/// The version `tests/graphql-http/package.json` pins for `package`, and the one installed.
fn versions(dir: &Path, package: &str) -> (String, Option<String>) {
    let read = |path: PathBuf| -> Option<Value> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    };
    let pinned = read(dir.join("package.json")).expect("tests/graphql-http/package.json")
        ["dependencies"][package]
        .as_str()
        .unwrap_or_else(|| panic!("package.json pins no {package}"))
        .to_string();
    let installed = read(dir.join("node_modules").join(package).join("package.json"))
        .and_then(|p| p["version"].as_str().map(str::to_string));
    (pinned, installed)
}

/// Fails with what to do when Node or the audit's packages are missing.
fn require_node_and_packages(dir: &Path) {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "this test runs the graphql-http audit with Node, and `node` does not run here ({node:?}); \
         run scripts/test, which installs Node and the audit's npm packages \
         (or: apt-get install nodejs npm && (cd tests/graphql-http && npm ci))"
    );
    for package in ["graphql-http", "graphql"] {
        let (pinned, installed) = versions(dir, package);
        assert_eq!(
            installed.as_deref(),
            Some(pinned.as_str()),
            "npm package {package} {pinned} is not installed in tests/graphql-http/node_modules; \
             run scripts/test, which installs it (or: cd tests/graphql-http && npm ci)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graphql_http_audit_passes() {
    let dir = audit_dir();
    require_node_and_packages(&dir);

    let app = TestApp::spawn(Court::start().await).await;
    // The audit sends queries only (its one mutation goes over GET, where it must be refused).
    let key = app.key(TENANT, &[Scope::Read]).await;
    let run = tokio::process::Command::new("node")
        .arg("audit.mjs")
        .arg(app.url("/graphql"))
        .arg(&key)
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(AUDIT_TIMEOUT, run)
        .await
        .expect("the audit ends in time")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the audit script failed ({}):\n{stderr}\n{stdout}",
        output.status
    );

    let results: Vec<Value> = stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect();
    let field = |r: &Value, name: &str| r[name].as_str().unwrap_or_default().to_string();
    println!(
        "graphql-http audit of {} ({} audits):",
        app.url("/graphql"),
        results.len()
    );
    for r in &results {
        let reason = r.get("reason").map(|_| {
            format!(
                " — {}; got {}",
                field(r, "reason"),
                r.get("response").unwrap_or(&Value::Null)
            )
        });
        println!(
            "  {:6} {} {}{}",
            field(r, "status"),
            field(r, "id"),
            field(r, "name"),
            reason.unwrap_or_default()
        );
    }

    // The whole audit ran: graphql-http 1.23.1 has 61 server audits (13 MUST, 23 SHOULD, 25
    // MAY), among them these MUSTs.
    assert!(results.len() >= 61, "too few audits ran: {stdout}");
    let ids: HashSet<String> = results.iter().map(|r| field(r, "id")).collect();
    assert_eq!(ids.len(), results.len(), "an audit id twice: {stdout}");
    for id in [
        "4655", "82A3", "BF61", "78D5", "2C94", "03D4", "13EE", "B8B3", "28B9", "1B7A",
    ] {
        assert!(ids.contains(id), "audit {id} did not run");
    }

    let failed = |status: &str| -> Vec<&Value> {
        results
            .iter()
            .filter(|r| r["status"] == status)
            .collect::<Vec<_>>()
    };
    let errors = failed("error");
    assert!(errors.is_empty(), "MUST audits fail: {errors:#?}");

    let allowed: HashSet<&str> = ALLOWED_WARNINGS.iter().map(|(id, _)| *id).collect();
    let unexpected: Vec<&Value> = failed("warn")
        .into_iter()
        .filter(|r| !allowed.contains(r["id"].as_str().unwrap_or_default()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "SHOULD audits fail that the contract does not excuse: {unexpected:#?}"
    );
    // An excused warning that passes now is no longer excused: take it off the list.
    for (id, why) in ALLOWED_WARNINGS {
        let result = results.iter().find(|r| r["id"] == *id);
        assert!(
            result.is_some_and(|r| r["status"] == "warn"),
            "allow-listed audit {id} ({why}) does not warn now: {result:?}; remove it from ALLOWED_WARNINGS"
        );
    }

    for (id, why) in REQUIRED_MAYS {
        let result = results.iter().find(|r| r["id"] == *id);
        assert!(
            result.is_some_and(|r| r["status"] == "ok"),
            "audit {id} must pass ({why}): {result:?}"
        );
    }

    // The audit's "validation failure" document does not even parse; a real validation
    // failure (an unknown field) is answered as D586/5E5B ask: no `data` entry, 400 in
    // application/graphql-response+json, 200 in application/json.
    for (accept, status) in [
        ("application/graphql-response+json", 400),
        ("application/json", 200),
    ] {
        let response = client_with(&key)
            .post(app.url("/graphql"))
            .header(reqwest::header::ACCEPT, accept)
            .json(&serde_json::json!({ "query": "{ viewer { noSuchField } }" }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), status, "{accept}");
        let content_type = response.headers()[reqwest::header::CONTENT_TYPE].clone();
        assert!(
            content_type.to_str().unwrap().starts_with(accept),
            "{accept}: {content_type:?}"
        );
        let body: Value = response.json().await.expect("JSON");
        assert!(body.get("data").is_none(), "{accept}: {body}");
        assert!(body["errors"][0]["message"].is_string(), "{accept}: {body}");
    }
    app.stop().await;
}

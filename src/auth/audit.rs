//! The audit log: what each mutation and key event did, by whom, from where.
//!
//! Entries keep the action's target and a few named arguments, never whole inputs: an input
//! may hold a secret (a password, a certificate), and the log must not.

use super::Principal;
use crate::db::{self, audit::NewEntry};
use serde_json::{Map, Value};
use sqlx::PgExecutor;

/// Key created (command line, first start, or `createApiKey`).
pub const KEY_CREATE: &str = "key.create";
/// Key revoked (command line or `revokeApiKey`).
pub const KEY_REVOKE: &str = "key.revoke";

/// The arguments of each mutation worth keeping, by path: the first one is its target.
fn kept(action: &str) -> &'static [&'static str] {
    match action {
        "startDownload" => &["input.number", "input.webhookUrl", "input.force"],
        "cancelJob" => &["id"],
        "retryFailedDocuments" => &["jobId"],
        "createProgressToken" => &["jobId", "ttlSeconds"],
        "validateWebhook" | "sendTestWebhook" => &["url"],
        // Never the password or the certificate.
        "setSourceCredential" => &["input.source", "input.username"],
        "removeSourceCredential" => &["source"],
        _ => &[],
    }
}

fn at<'a>(arguments: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(arguments, |value, name| value.get(name))
        .filter(|v| !v.is_null())
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Who acted and from where.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// The caller's tenant.
    pub tenant_id: Option<uuid::Uuid>,
    /// The caller's key.
    pub key_id: Option<String>,
    /// The client's address (`cli` for the command line).
    pub client_addr: Option<String>,
}

impl Actor {
    /// A caller over the API.
    pub fn of(principal: &Principal, client_addr: Option<String>) -> Actor {
        Actor {
            tenant_id: Some(principal.tenant_id),
            key_id: principal.key_id().map(str::to_string),
            client_addr,
        }
    }

    /// The command line.
    pub fn cli() -> Actor {
        Actor {
            client_addr: Some("cli".into()),
            ..Actor::default()
        }
    }
}

/// The entry of a mutation `action` called with `arguments` (a JSON object) that ended with
/// `outcome` (`ok` or an error code).
pub fn mutation_entry(actor: &Actor, action: &str, arguments: &Value, outcome: &str) -> NewEntry {
    let paths = kept(action);
    let target = paths.first().and_then(|p| at(arguments, p)).map(text);
    let mut details = Map::new();
    for path in paths.iter().skip(1) {
        if let Some(value) = at(arguments, path) {
            let name = path.rsplit('.').next().unwrap_or(path);
            details.insert(name.to_string(), value.clone());
        }
    }
    NewEntry {
        tenant_id: actor.tenant_id,
        key_id: actor.key_id.clone(),
        action: action.to_string(),
        target,
        outcome: outcome.to_string(),
        client_addr: actor.client_addr.clone(),
        details: (!details.is_empty()).then_some(Value::Object(details)),
    }
}

/// The entry of a key event about `key` (of `key_tenant`), with `details`.
pub fn key_entry(
    actor: &Actor,
    action: &str,
    key: &str,
    key_tenant: uuid::Uuid,
    details: Value,
) -> NewEntry {
    NewEntry {
        // The tenant whose key it is sees the event, whoever made it.
        tenant_id: Some(key_tenant),
        key_id: actor.key_id.clone(),
        action: action.to_string(),
        target: Some(key.to_string()),
        outcome: "ok".into(),
        client_addr: actor.client_addr.clone(),
        details: Some(details),
    }
}

/// Records an entry; a failure is logged (the action itself has happened).
pub async fn record(db: impl PgExecutor<'_>, entry: &NewEntry) {
    if let Err(err) = db::audit::record(db, entry).await {
        tracing::error!(error = %err, action = %entry.action, target = ?entry.target, "cannot write the audit log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_keep_the_target_and_named_arguments_only() {
        let actor = Actor {
            key_id: Some("abc".into()),
            client_addr: Some("10.0.0.1".into()),
            ..Actor::default()
        };
        let args = json!({"input": {"number": "0000001-00.2024.8.26.0100", "force": true,
                                    "webhookUrl": null, "password": "hunter2"}});
        let entry = mutation_entry(&actor, "startDownload", &args, "ok");
        assert_eq!(entry.target.as_deref(), Some("0000001-00.2024.8.26.0100"));
        assert_eq!(entry.details, Some(json!({"force": true})));
        assert!(!format!("{entry:?}").contains("hunter2"));
        let unknown = mutation_entry(&actor, "setSomething", &json!({"secret": "x"}), "FORBIDDEN");
        assert_eq!(unknown.target, None);
        assert_eq!(unknown.details, None);
        assert_eq!(unknown.outcome, "FORBIDDEN");
    }
}

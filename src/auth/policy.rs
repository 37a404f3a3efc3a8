//! Which scope each GraphQL field needs, and what a progress token may reach. The GraphQL
//! layer asks [`check`] before every root field (and the few guarded inner fields) runs:
//! a refusal is an error on that field, and nothing of it runs.
//!
//! Deny by default: a field missing from [`rule`] is refused to everyone (a test checks that
//! every field of the schema's roots has a rule).

use super::{Principal, Scope};
use uuid::Uuid;

/// Where a field sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A field of `Query`.
    Query,
    /// A field of `Mutation`.
    Mutation,
    /// A field of `Subscription`.
    Subscription,
    /// A field of the named object type.
    Object(&'static str),
}

/// What a field requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A key with this scope.
    Scope(Scope),
    /// A key with this scope, or a progress token for the job named by this argument.
    ScopeOrTokenJob(Scope, &'static str),
}

/// The rule of a field; `None` for fields nobody may use.
pub fn rule(operation: Operation, field: &str) -> Option<Rule> {
    use super::Scope::{Admin, Read, Write};
    use Operation::*;
    use Rule::{Scope, ScopeOrTokenJob};
    Some(match (operation, field) {
        (Query, "process" | "jobs" | "document" | "testWebhookDeliveries" | "viewer") => {
            Scope(Read)
        }
        (Query, "job") => ScopeOrTokenJob(Read, "id"),
        (Query, "auditLog" | "sourceCredentials") => Scope(Write),
        (Query, "apiKeys") => Scope(Admin),
        (
            Mutation,
            "startDownload"
            | "cancelJob"
            | "retryFailedDocuments"
            | "validateWebhook"
            | "sendTestWebhook"
            | "createProgressToken"
            | "rotateWebhookSecret"
            | "setSourceCredential"
            | "removeSourceCredential",
        ) => Scope(Write),
        (Mutation, "createApiKey" | "revokeApiKey") => Scope(Admin),
        (Subscription, "jobProgress") => ScopeOrTokenJob(Read, "jobId"),
        (Object("Viewer"), "tenant" | "keyId" | "scopes") => Scope(Read),
        (Object("Viewer"), "webhookSecret") => Scope(Write),
        // Webhook URLs are the tenant's integration (they often carry a secret of the
        // receiver's): keys only, never a progress token handed to a browser.
        (Object("DownloadJob"), "webhook" | "webhooks") => Scope(Read),
        _ => return None,
    })
}

/// Why a field is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// Whether `principal` may use `field` of `operation`. `argument` gives the value of an
/// argument of the field by name (as text), for rules that look at one.
///
/// Besides the field's rule, a `tenant` argument naming another tenant is for admin keys only.
pub fn check(
    principal: &Principal,
    operation: Operation,
    field: &str,
    argument: impl Fn(&str) -> Option<String>,
) -> Result<(), Denied> {
    let Some(rule) = rule(operation, field) else {
        return Err(Denied(format!("`{field}` is not available")));
    };
    if let Some(job) = principal.token_job() {
        return match rule {
            Rule::ScopeOrTokenJob(_, name)
                if argument(name)
                    .and_then(|id| Uuid::parse_str(id.trim()).ok())
                    .is_some_and(|id| id == job) =>
            {
                Ok(())
            }
            Rule::ScopeOrTokenJob(..) => Err(Denied(format!(
                "a progress token allows `{field}` of its own job only"
            ))),
            _ => Err(Denied(format!(
                "a progress token allows only `job` and `jobProgress` of its own job, not `{field}`"
            ))),
        };
    }
    let needed = match rule {
        Rule::Scope(scope) | Rule::ScopeOrTokenJob(scope, _) => scope,
    };
    if !principal.allows(needed) {
        return Err(Denied(format!(
            "`{field}` needs a key with the {needed} scope"
        )));
    }
    if let Some(tenant) = argument("tenant") {
        if tenant != principal.tenant && !principal.all_tenants() {
            return Err(Denied(
                "only admin keys may name another tenant".to_string(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Credential;

    fn key(scopes: &[Scope]) -> Principal {
        Principal {
            tenant_id: Uuid::from_u128(1),
            tenant: "acme".into(),
            scopes: scopes.to_vec(),
            credential: Credential::Key { id: "k".into() },
            expires_at: None,
            rate_limit: None,
        }
    }

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn scopes_decide_fields() {
        let read = key(&[Scope::Read]);
        assert!(check(&read, Operation::Query, "jobs", none).is_ok());
        assert!(check(&read, Operation::Mutation, "startDownload", none).is_err());
        assert!(check(&read, Operation::Object("Viewer"), "webhookSecret", none).is_err());
        let write = key(&[Scope::Write]);
        assert!(check(&write, Operation::Mutation, "startDownload", none).is_ok());
        assert!(check(&write, Operation::Mutation, "createApiKey", none).is_err());
        assert!(check(&write, Operation::Query, "apiKeys", none).is_err());
        let admin = key(&[Scope::Admin]);
        assert!(check(&admin, Operation::Mutation, "createApiKey", none).is_ok());
        assert!(check(&admin, Operation::Query, "nosuchfield", none).is_err());
    }

    #[test]
    fn naming_another_tenant_is_for_admins() {
        let other = |name: &str| (name == "tenant").then(|| "globex".to_string());
        let own = |name: &str| (name == "tenant").then(|| "acme".to_string());
        assert!(check(&key(&[Scope::Write]), Operation::Query, "jobs", other).is_err());
        assert!(check(&key(&[Scope::Write]), Operation::Query, "jobs", own).is_ok());
        assert!(check(&key(&[Scope::Admin]), Operation::Query, "jobs", other).is_ok());
    }

    #[test]
    fn a_token_reaches_its_own_job_only() {
        let job = Uuid::from_u128(5);
        let token = Principal {
            scopes: vec![Scope::Read],
            credential: Credential::Token {
                job,
                issuer: "k".into(),
            },
            ..key(&[Scope::Read])
        };
        let own = |name: &str| (name == "id" || name == "jobId").then(|| job.to_string());
        let other =
            |name: &str| (name == "id" || name == "jobId").then(|| Uuid::from_u128(6).to_string());
        assert!(check(&token, Operation::Query, "job", own).is_ok());
        assert!(check(&token, Operation::Subscription, "jobProgress", own).is_ok());
        assert!(check(&token, Operation::Query, "job", other).is_err());
        assert!(check(&token, Operation::Query, "jobs", own).is_err());
        assert!(check(&token, Operation::Query, "viewer", own).is_err());
        assert!(check(&token, Operation::Mutation, "cancelJob", own).is_err());
    }
}

//! Records every mutation in the audit log: who (key, tenant), from where, what, on what, and
//! how it ended — refused ones included. Key events are recorded by the key operations
//! themselves (see [`crate::auth::admin`]), with the key they made or revoked.

use crate::auth::audit::{self, Actor};
use crate::auth::{ClientAddr, Principal};
use crate::jobs::Services;
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextResolve, ResolveInfo,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ServerResult, Value, Variables};
use std::sync::{Arc, Mutex};

/// The audit extension's factory.
pub struct AuditLog;

impl ExtensionFactory for AuditLog {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Recorder::default())
    }
}

/// One request's recorder.
#[derive(Default)]
struct Recorder {
    variables: Mutex<Variables>,
}

/// Mutations that record their own, richer, entry.
fn records_itself(field: &str) -> bool {
    matches!(field, "createApiKey" | "revokeApiKey")
}

#[async_trait::async_trait]
impl Extension for Recorder {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        *self.variables.lock().unwrap_or_else(|e| e.into_inner()) = variables.clone();
        next.run(ctx, query, variables).await
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let root_mutation = info.parent_type == "Mutation" && info.path_node.parent.is_none();
        if !root_mutation || records_itself(info.name) {
            return next.run(ctx, info).await;
        }
        let action = info.name.to_string();
        let arguments = self.arguments(info.field);
        let result = next.run(ctx, info).await;
        let outcome = match &result {
            Ok(_) => "ok".to_string(),
            Err(err) => err
                .extensions
                .as_ref()
                .and_then(|ext| ext.get("code"))
                .and_then(|code| match code {
                    Value::String(code) => Some(code.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "ERROR".to_string()),
        };
        if let (Some(principal), Some(svc)) =
            (ctx.data_opt::<Principal>(), ctx.data_opt::<Services>())
        {
            let client = ctx.data_opt::<ClientAddr>().map(|c| c.0.clone());
            let actor = Actor::of(principal, client);
            let entry = audit::mutation_entry(&actor, &action, &arguments, &outcome);
            audit::record(&svc.pool, &entry).await;
        }
        result
    }
}

impl Recorder {
    /// The field's arguments, variables filled in, as JSON.
    fn arguments(&self, field: &async_graphql::parser::types::Field) -> serde_json::Value {
        let variables = self.variables.lock().unwrap_or_else(|e| e.into_inner());
        let mut object = serde_json::Map::new();
        for (name, value) in &field.arguments {
            let value = value
                .node
                .clone()
                .into_const_with(|var| variables.get(&var).cloned().ok_or(()))
                .ok()
                .and_then(|v| v.into_json().ok())
                .unwrap_or(serde_json::Value::Null);
            object.insert(name.node.to_string(), value);
        }
        serde_json::Value::Object(object)
    }
}

/// Records a read of something sealed (a sealed process's documents, a link to a sealed
/// document) in the audit log of the caller's tenant: secrecy asks to know who read what.
pub async fn sealed_read(
    ctx: &async_graphql::Context<'_>,
    action: &str,
    target: String,
    details: Option<serde_json::Value>,
) {
    let (Some(principal), Some(svc)) = (ctx.data_opt::<Principal>(), ctx.data_opt::<Services>())
    else {
        return;
    };
    let client = ctx.data_opt::<ClientAddr>().map(|c| c.0.clone());
    let actor = Actor::of(principal, client);
    let entry = crate::db::audit::NewEntry {
        tenant_id: actor.tenant_id,
        key_id: actor.key_id,
        action: action.to_string(),
        target: Some(target),
        outcome: "ok".into(),
        client_addr: actor.client_addr,
        details,
    };
    audit::record(&svc.pool, &entry).await;
}

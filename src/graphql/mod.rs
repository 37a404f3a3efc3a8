//! The GraphQL API (contract §5).

pub mod access;
pub mod admin;
pub mod audit;
pub mod credentials;
pub mod errors;
pub mod loaders;
pub mod multiplex;
pub mod mutation;
pub mod query;
pub mod subscription;
pub mod types;

use crate::jobs::Services;
use crate::progress::Hub;
use async_graphql::Schema;

pub use loaders::Loaders;

/// The schema type.
pub type AutosSchema = Schema<query::Query, mutation::Mutation, subscription::SubscriptionRoot>;

/// What the schema's resolvers use, shared by every request.
pub struct Parts {
    /// Pool, storage, source, settings.
    pub services: Services,
    /// Live progress.
    pub hub: Hub,
    /// The built-in webhook test receiver.
    pub receiver: std::sync::Arc<crate::webhook::receiver::TestReceiver>,
    /// Issues progress tokens.
    pub auth: crate::auth::Authenticator,
}

/// Builds the schema. Per-request data (the caller's [`crate::auth::Principal`] and
/// [`Loaders`]) is added by the HTTP layer.
pub fn schema(parts: Option<Parts>) -> AutosSchema {
    let builder = Schema::build(
        query::Query,
        mutation::Mutation,
        subscription::SubscriptionRoot,
    )
    .extension(audit::AuditLog)
    // Operations are priced and refused before they reach the schema (`crate::limits`): this
    // only backs that up, introspection included, well past what the limits let through.
    .limit_depth(32);
    match parts {
        Some(parts) => builder
            .data(parts.services)
            .data(parts.hub)
            .data(parts.receiver)
            .data(parts.auth)
            .finish(),
        None => builder.finish(),
    }
}

/// The SDL, as checked in at `schema.graphql`.
pub fn sdl() -> String {
    schema(None).sdl()
}

#[cfg(test)]
mod tests {
    use crate::auth::policy::{rule, Operation};
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};

    /// Deny by default holds only if no field is forgotten: every field of the roots (and of
    /// `Viewer`) has a rule.
    #[test]
    fn every_root_field_has_an_access_rule() {
        let sdl = super::sdl();
        let document = async_graphql::parser::parse_schema(&sdl).expect("the SDL parses");
        let mut checked = 0;
        for definition in &document.definitions {
            let TypeSystemDefinition::Type(ty) = definition else {
                continue;
            };
            let operation = match ty.node.name.node.as_str() {
                "Query" => Operation::Query,
                "Mutation" => Operation::Mutation,
                "Subscription" => Operation::Subscription,
                "Viewer" => Operation::Object("Viewer"),
                _ => continue,
            };
            let TypeKind::Object(object) = &ty.node.kind else {
                panic!("{} is not an object", ty.node.name.node);
            };
            for field in &object.fields {
                let name = field.node.name.node.as_str();
                assert!(
                    rule(operation, name).is_some(),
                    "{operation:?}.{name} has no access rule: nobody could use it"
                );
                checked += 1;
            }
        }
        assert!(checked > 20, "only {checked} fields found");
    }
}

//! The GraphQL API (contract §5).

pub mod errors;
pub mod loaders;
pub mod mutation;
pub mod query;
pub mod types;

use crate::jobs::Services;
use async_graphql::{EmptySubscription, Schema};

pub use loaders::Loaders;

/// The schema type.
pub type AutosSchema = Schema<query::Query, mutation::Mutation, EmptySubscription>;

/// Builds the schema. Per-request data ([`Loaders`]) is added by the HTTP layer.
pub fn schema(services: Option<Services>) -> AutosSchema {
    let builder = Schema::build(query::Query, mutation::Mutation, EmptySubscription)
        .limit_depth(12)
        .limit_complexity(20_000);
    match services {
        Some(services) => builder.data(services).finish(),
        None => builder.finish(),
    }
}

/// The SDL, as checked in at `schema.graphql`.
pub fn sdl() -> String {
    schema(None).sdl()
}

//! The GraphQL API (contract §5).

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

/// Builds the schema. Per-request data ([`Loaders`]) is added by the HTTP layer.
pub fn schema(
    parts: Option<(
        Services,
        Hub,
        std::sync::Arc<crate::webhook::receiver::TestReceiver>,
    )>,
) -> AutosSchema {
    let builder = Schema::build(
        query::Query,
        mutation::Mutation,
        subscription::SubscriptionRoot,
    )
    .limit_depth(12)
    .limit_complexity(20_000);
    match parts {
        Some((services, hub, receiver)) => builder.data(services).data(hub).data(receiver).finish(),
        None => builder.finish(),
    }
}

/// The SDL, as checked in at `schema.graphql`.
pub fn sdl() -> String {
    schema(None).sdl()
}

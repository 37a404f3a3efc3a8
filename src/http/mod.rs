//! The HTTP surface: `/graphql` (POST queries, GET GraphiQL), `/` (progress page), health.

use crate::graphql::{AutosSchema, Loaders};
use crate::jobs::Services;
use async_graphql::http::{GraphiQLSource, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// The progress page, built into the binary so that autos runs from any directory.
const INDEX_HTML: &str = include_str!("../../playground/index.html");

/// Shared state of the router.
#[derive(Clone)]
pub struct HttpState {
    /// The schema.
    pub schema: AutosSchema,
    /// Pool, storage, source.
    pub services: Services,
    /// The built-in webhook test receiver.
    pub receiver: std::sync::Arc<crate::webhook::receiver::TestReceiver>,
}

/// The router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/graphql", get(graphql_get).post(graphql))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/webhooks/test-receiver",
            axum::routing::post(test_receiver),
        )
        .with_state(state)
}

async fn graphql(State(state): State<HttpState>, request: GraphQLRequest) -> GraphQLResponse {
    let request = request
        .into_inner()
        .data(Loaders::new(&state.services.pool));
    state.schema.execute(request).await.into()
}

/// `GET /graphql`: a WebSocket upgrade (`graphql-transport-ws` or the legacy `graphql-ws`)
/// for subscriptions, GraphiQL otherwise.
async fn graphql_get(
    State(state): State<HttpState>,
    protocol: Result<GraphQLProtocol, StatusCode>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let (Ok(protocol), Ok(upgrade)) = (protocol, upgrade) else {
        return graphiql().into_response();
    };
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        // GraphQL messages are small; tungstenite's 128 KiB default read buffer per connection
        // would make 10,000 subscribers cost over a gigabyte.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(256 * 1024)
        .on_upgrade(move |socket| {
            // A connection lives long: its loaders must not serve yesterday's rows.
            let loaders = Loaders::new(&state.services.pool);
            loaders.disable_caches();
            let mut data = async_graphql::Data::default();
            data.insert(loaders);
            GraphQLWebSocket::new(socket, state.schema.clone(), protocol)
                .with_data(data)
                .serve()
        })
        .into_response()
}

fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql")
            .title("autos — GraphiQL")
            .finish(),
    )
}

async fn index() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX_HTML)).into_response()
}

/// The built-in test receiver: verifies the signature, keeps the message, answers 200 with
/// the verdict (401 when the signature does not verify, as a real receiver should).
async fn test_receiver(
    State(state): State<HttpState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let valid = state.receiver.receive(
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
    );
    let status = if valid {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    (status, Json(json!({ "signatureValid": valid }))).into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let (database, storage) = tokio::join!(
        crate::db::ping(&state.services.pool),
        state.services.storage.ping()
    );
    let status = if database && storage {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "database": database, "storage": storage })),
    )
        .into_response()
}

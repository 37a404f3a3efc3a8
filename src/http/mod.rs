//! The HTTP surface: `/graphql` (POST queries, GET GraphiQL), `/` (progress page), health.

use crate::graphql::multiplex::Multiplexed;
use crate::graphql::{AutosSchema, Loaders};
use crate::jobs::Services;
use async_graphql::http::{GraphiQLSource, WebSocketProtocols, WsMessage, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::str::FromStr;

/// The progress page, built into the binary so that autos runs from any directory.
const INDEX_HTML: &str = include_str!("../../playground/index.html");

/// Shared state of the router.
#[derive(Clone)]
pub struct HttpState {
    /// The schema.
    pub schema: AutosSchema,
    /// The schema, with identical subscriptions sharing one execution (WebSockets).
    pub subscriptions: Multiplexed,
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
    headers: axum::http::HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    // As async-graphql-axum's `GraphQLProtocol` extractor reads it (its value is private).
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| value.to_str().ok())
        .and_then(|offered| {
            offered
                .split(',')
                .find_map(|p| WebSocketProtocols::from_str(p.trim()).ok())
        });
    let (Some(protocol), Ok(upgrade)) = (protocol, upgrade) else {
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
            serve_socket(socket, state.subscriptions.clone(), protocol, data)
        })
        .into_response()
}

/// Runs one GraphQL WebSocket connection. Unlike a plain `send` per message, every message
/// that is ready at once goes out in one write: a subscription's terminal `next` and its
/// `complete` cost one system call, not two, which counts with thousands of subscribers.
async fn serve_socket(
    socket: WebSocket,
    schema: Multiplexed,
    protocol: WebSocketProtocols,
    data: async_graphql::Data,
) {
    let (mut sink, stream) = socket.split();
    let input = stream
        .take_while(|received| futures::future::ready(received.is_ok()))
        .filter_map(|received| {
            futures::future::ready(match received {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => Some(message.into_data()),
                _ => None,
            })
        });
    let messages = async_graphql::http::WebSocket::new(schema, input, protocol)
        .connection_data(data)
        .map(|message| match message {
            WsMessage::Text(text) => Message::Text(text.into()),
            WsMessage::Close(code, reason) => Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })),
        });
    // Each item: every message that was ready at once.
    let mut batches = messages.ready_chunks(64);
    while let Some(batch) = batches.next().await {
        for message in batch {
            if sink.feed(message).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
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

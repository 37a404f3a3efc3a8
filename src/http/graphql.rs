//! `/graphql`: GraphQL over HTTP (`POST`), GraphiQL (`GET`), and GraphQL over WebSocket
//! (`GET` with an upgrade; `graphql-transport-ws` or the legacy `graphql-ws`).

use super::HttpState;
use crate::auth::ClientAddr;
use crate::auth::{AuthError, Principal};
use crate::graphql::errors::code;
use crate::graphql::multiplex::Multiplexed;
use crate::graphql::Loaders;
use async_graphql::http::{WebSocketProtocols, WsMessage, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql_axum::GraphQLResponse;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// GraphiQL, reading the key from the URL fragment (`/graphql#key=…`) or the browser's storage.
const GRAPHIQL_HTML: &str = include_str!("../../playground/graphiql.html");

/// Close code for a refused credential (graphql-transport-ws's "Forbidden").
pub const CLOSE_FORBIDDEN: u16 = 4403;

/// How often a WebSocket connection checks that its credential still holds (besides at once
/// when keys change), so that a revoked or expired one is closed within a minute.
const RECHECK: Duration = Duration::from_secs(30);

/// How long a WebSocket may stay open without a `connection_init` (then: close 4408).
const INIT_DEADLINE: Duration = Duration::from_secs(10);

/// Close code for a connection that did not initialise in time (graphql-transport-ws).
pub const CLOSE_INIT_TIMEOUT: u16 = 4408;

/// A GraphQL-over-HTTP error response with one error and its code.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, axum::Json(body)).into_response()
}

/// The answer to a credential that is missing or refused: 401, `WWW-Authenticate: Bearer`.
fn unauthenticated(err: &AuthError) -> Response {
    if let AuthError::Unavailable(cause) = err {
        tracing::error!(error = %cause, "cannot check credentials");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            code::INTERNAL,
            "cannot check credentials now; try again",
        );
    }
    let challenge = match err {
        AuthError::Missing => "Bearer",
        _ => "Bearer error=\"invalid_token\"",
    };
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        code::UNAUTHENTICATED,
        &err.to_string(),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static(challenge),
    );
    response
}

fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

fn refused_origin() -> Response {
    error(
        StatusCode::FORBIDDEN,
        code::FORBIDDEN,
        "this web page's origin may not use autos (AUTOS_CORS_ORIGINS)",
    )
}

/// `Content-Type: application/json` (with parameters, such as a charset).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// `POST /graphql`: checks where it comes from, that it is JSON (a page on the web can send
/// other types without the browser asking first) and who sends it, then runs it.
pub async fn post(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !state.origins.allows(origin(&headers)) {
        return refused_origin();
    }
    if !is_json(&headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::BAD_REQUEST,
            "POST /graphql takes a JSON body with Content-Type: application/json",
        );
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match state.auth.authenticate(authorization).await {
        Ok(principal) => principal,
        Err(err) => return unauthenticated(&err),
    };
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                code::BAD_REQUEST,
                &format!("the body is not a GraphQL request: {err}"),
            )
        }
    };
    let client = ClientAddr::of(peer, &headers, state.trust_forwarded);
    let request = request
        .data(Loaders::new(&state.services.pool, principal.visibility()))
        .data(principal)
        .data(client);
    GraphQLResponse::from(state.schema.execute(request).await).into_response()
}

/// `GET /graphql`: a WebSocket upgrade (`graphql-transport-ws` or the legacy `graphql-ws`)
/// for subscriptions, GraphiQL otherwise.
pub async fn get_or_upgrade(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
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
        return ([(header::CACHE_CONTROL, "no-cache")], Html(GRAPHIQL_HTML)).into_response();
    };
    if !state.origins.allows(origin(&headers)) {
        return (
            StatusCode::FORBIDDEN,
            "this web page's origin may not open a WebSocket to autos",
        )
            .into_response();
    }
    let connection = Connection {
        header_credential: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        client: ClientAddr::of(peer, &headers, state.trust_forwarded),
        protocol,
    };
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        // GraphQL messages are small; tungstenite's 128 KiB default read buffer per connection
        // would make 10,000 subscribers cost over a gigabyte.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(256 * 1024)
        .on_upgrade(move |socket| serve_socket(socket, state, connection))
}

/// What the upgrade request told about a connection.
struct Connection {
    /// An `Authorization` header on the upgrade request, used when `connection_init` carries
    /// no credential.
    header_credential: Option<String>,
    client: ClientAddr,
    protocol: WebSocketProtocols,
}

/// The credential of a `connection_init` payload: `{"authorization": "Bearer …"}`.
fn payload_credential(payload: &serde_json::Value) -> Option<String> {
    ["authorization", "Authorization"]
        .iter()
        .find_map(|name| payload.get(name)?.as_str().map(str::to_string))
}

/// Runs one GraphQL WebSocket connection: authenticates its `connection_init`, closes it when
/// its credential stops holding, and writes every message that is ready at once in one write
/// (a subscription's terminal `next` and its `complete` cost one system call, not two, which
/// counts with thousands of subscribers).
async fn serve_socket(socket: WebSocket, state: HttpState, connection: Connection) {
    let principal: Arc<OnceLock<Principal>> = Arc::default();
    let refused = Arc::new(AtomicBool::new(false));
    let init = {
        let (auth, pool) = (state.auth.clone(), state.services.pool.clone());
        let (principal, refused) = (principal.clone(), refused.clone());
        let (header_credential, client) = (connection.header_credential, connection.client);
        move |payload: serde_json::Value| async move {
            let credential = payload_credential(&payload).or(header_credential);
            match auth.authenticate(credential.as_deref()).await {
                Ok(who) => {
                    // A connection lives long: its loaders must not serve yesterday's rows.
                    let loaders = Loaders::new(&pool, who.visibility());
                    loaders.disable_caches();
                    let mut data = async_graphql::Data::default();
                    data.insert(loaders);
                    data.insert(client);
                    data.insert(who.clone());
                    let _ = principal.set(who);
                    Ok(data)
                }
                Err(err) => {
                    if let AuthError::Unavailable(cause) = &err {
                        tracing::error!(error = %cause, "cannot check a WebSocket's credentials");
                    }
                    refused.store(true, Ordering::SeqCst);
                    Err(async_graphql::Error::new(format!("Forbidden: {err}")))
                }
            }
        }
    };
    let (mut sink, stream) = socket.split();
    let input = stream
        .take_while(|received| futures::future::ready(received.is_ok()))
        .filter_map(|received| {
            futures::future::ready(match received {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => Some(message.into_data()),
                _ => None,
            })
        });
    let schema: Multiplexed = state.subscriptions.clone();
    let protocol = connection.protocol;
    let refused_now = refused.clone();
    let messages = async_graphql::http::WebSocket::new(schema, input, protocol)
        .on_connection_init(init)
        .map(move |message| match message {
            // graphql-transport-ws ends a refused `connection_init` with 4403 Forbidden.
            WsMessage::Close(_, reason) if refused_now.load(Ordering::SeqCst) => {
                close(CLOSE_FORBIDDEN, &reason)
            }
            WsMessage::Text(text) => Message::Text(text.into()),
            WsMessage::Close(code, reason) => close(code, &reason),
        });
    let mut batches = messages.ready_chunks(64);
    let mut changes = state.auth.changes();
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.reset();
    let init_deadline = tokio::time::sleep(INIT_DEADLINE);
    tokio::pin!(init_deadline);
    loop {
        tokio::select! {
            // A connection that never says who it is holds resources for nothing.
            _ = &mut init_deadline, if principal.get().is_none() => {
                let _ = sink.send(close(CLOSE_INIT_TIMEOUT, "Connection initialisation timeout")).await;
                return;
            }
            batch = batches.next() => {
                let Some(batch) = batch else {
                    // The legacy protocol's `connection_error` is followed by a close here.
                    if refused.load(Ordering::SeqCst) {
                        let _ = sink.send(close(CLOSE_FORBIDDEN, "Forbidden")).await;
                    }
                    return;
                };
                for message in batch {
                    if sink.feed(message).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    changes = state.auth.changes();
                    continue;
                }
                if !holds(&state, &principal).await {
                    let _ = sink.send(close(CLOSE_FORBIDDEN, "Forbidden: credentials revoked or expired")).await;
                    return;
                }
            }
            _ = recheck.tick() => {
                if !holds(&state, &principal).await {
                    let _ = sink.send(close(CLOSE_FORBIDDEN, "Forbidden: credentials revoked or expired")).await;
                    return;
                }
            }
        }
    }
}

/// Whether the connection's credential (once it has one) still holds.
async fn holds(state: &HttpState, principal: &OnceLock<Principal>) -> bool {
    match principal.get() {
        Some(principal) => state.auth.still_valid(principal).await,
        None => true,
    }
}

fn close(code: u16, reason: &str) -> Message {
    // A close frame's reason is at most 123 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: reason[..end].into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_bodies_are_taken() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!with("multipart/form-data; boundary=x"));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn the_credential_comes_from_the_init_payload() {
        assert_eq!(
            payload_credential(&json!({"authorization": "Bearer k"})).as_deref(),
            Some("Bearer k")
        );
        assert_eq!(payload_credential(&json!({})), None);
        assert_eq!(payload_credential(&serde_json::Value::Null), None);
    }
}

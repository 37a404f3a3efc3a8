//! GraphQL over WebSocket on `GET /graphql` (`graphql-transport-ws` and the legacy
//! `graphql-ws`): each connection is authenticated by its `connection_init` (10 s to send
//! it), every operation it starts is priced and charged to the caller's budget before it runs,
//! at most `AUTOS_WS_MAX_SUBSCRIPTIONS` run at once, messages are at most 64 KiB, idle
//! connections are pinged (every `AUTOS_WS_PING_SECS`; one silent for three pings is closed),
//! and a connection whose credential stops holding is closed.

use super::HttpState;
use crate::auth::{AuthError, ClientAddr, Principal};
use crate::graphql::errors::code;
use crate::graphql::multiplex::Payload;
use crate::graphql::Loaders;
use async_graphql::http::{WebSocketProtocols, WsMessage, ALL_WEBSOCKET_PROTOCOLS};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures::stream::{AbortHandle, Abortable, BoxStream, SelectAll};
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Close code for a refused credential (graphql-transport-ws's "Forbidden").
pub const CLOSE_FORBIDDEN: u16 = 4403;
/// Close code for a server going away (it stops; the client reconnects).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for a connection that did not initialise in time.
pub const CLOSE_INIT_TIMEOUT: u16 = 4408;
/// Largest message a client may send.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// How often a WebSocket connection checks that its credential still holds (besides at once
/// when keys change), so that a revoked or expired one is closed within a minute.
const RECHECK: Duration = Duration::from_secs(30);
/// How long a connection may stay open without a `connection_init`.
const INIT_DEADLINE: Duration = Duration::from_secs(10);
/// A connection that has sent nothing (not even a pong) for this many ping intervals is
/// closed.
const SILENT_PINGS: u32 = 3;

/// What the upgrade request told about a connection.
pub struct Connection {
    /// An `Authorization` header on the upgrade request, used when `connection_init` carries
    /// no credential.
    pub header_credential: Option<String>,
    /// Where it comes from.
    pub client: ClientAddr,
    /// Its subprotocol.
    pub protocol: WebSocketProtocols,
}

/// Accepts the upgrade and serves the connection.
pub fn upgrade(state: HttpState, upgrade: WebSocketUpgrade, connection: Connection) -> Response {
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        // GraphQL messages are small; tungstenite's 128 KiB default read buffer per connection
        // would make 10,000 subscribers cost over a gigabyte.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            let sockets = state.sockets.clone();
            sockets.track_future(serve(socket, state, connection))
        })
}

/// The credential of a `connection_init` payload: `{"authorization": "Bearer …"}`.
fn payload_credential(payload: &Value) -> Option<String> {
    ["authorization", "Authorization"]
        .iter()
        .find_map(|name| payload.get(name)?.as_str().map(str::to_string))
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

/// The `complete` message of operation `id` (as the GraphQL protocol writes it).
fn complete_text(id: &str) -> String {
    format!(
        r#"{{"type":"complete","id":{}}}"#,
        Value::String(id.to_string())
    )
}

/// An `error` message for operation `id`, in the connection's protocol.
fn operation_error(
    protocol: WebSocketProtocols,
    id: &str,
    code: &str,
    message: &str,
    more: Value,
) -> Message {
    let mut extensions = json!({ "code": code });
    if let (Some(extensions), Value::Object(more)) = (extensions.as_object_mut(), more) {
        extensions.extend(more);
    }
    let error = json!({ "message": message, "extensions": extensions });
    let payload = match protocol {
        WebSocketProtocols::GraphQLWS => json!([error]),
        WebSocketProtocols::SubscriptionsTransportWS => error,
    };
    Message::Text(
        json!({ "id": id, "type": "error", "payload": payload })
            .to_string()
            .into(),
    )
}

/// What a connection's GraphQL context is made of.
struct Context {
    pool: sqlx::PgPool,
    client: ClientAddr,
    who: Principal,
}

impl Context {
    fn data(&self) -> async_graphql::Data {
        // A connection lives long: its loaders must not serve yesterday's rows.
        let loaders = Loaders::new(&self.pool, self.who.visibility());
        loaders.disable_caches();
        let mut data = async_graphql::Data::default();
        data.insert(loaders);
        data.insert(self.client.clone());
        data.insert(self.who.clone());
        data
    }
}

/// What the connection's own checks decided about one client message.
enum Inbound {
    /// Hand it to the GraphQL protocol.
    Forward(Vec<u8>),
    /// Answer it ourselves (a refused operation, or the end of a shared subscription).
    Answer(Message),
    /// A shared subscription starts: its messages, to be written as they come.
    Share(Shared),
}

/// What a shared subscription yields: each response of its group, already in its message
/// (the group's serialized response inside this operation's envelope), then its end.
enum Frame {
    Next(String),
    End(String),
}

type Shared = BoxStream<'static, Frame>;

/// One connection's state between messages.
struct Session {
    state: HttpState,
    protocol: WebSocketProtocols,
    principal: Arc<OnceLock<Principal>>,
    /// What the connection's GraphQL context is made of, once `connection_init` is accepted.
    context: Arc<OnceLock<Context>>,
    /// Operations running (ids), for the per-connection cap.
    running: HashSet<String>,
    /// The subscriptions this connection runs as a member of a shared execution
    /// ([`Multiplexed::shared`](crate::graphql::multiplex::Multiplexed::shared)): their
    /// messages are written here, from the group's serialized responses, instead of through
    /// the GraphQL protocol's per-connection serialization. By id, to stop them.
    shared_ids: HashMap<String, AbortHandle>,
}

impl Session {
    /// Checks a client message: an operation it starts is priced and charged first.
    async fn inbound(&mut self, bytes: Vec<u8>) -> Inbound {
        let Ok(message) = serde_json::from_slice::<Value>(&bytes) else {
            // The protocol itself answers malformed messages.
            return Inbound::Forward(bytes);
        };
        let kind = message["type"].as_str().unwrap_or_default();
        let id = message["id"].as_str().unwrap_or_default().to_string();
        match kind {
            "subscribe" | "start" => {}
            "complete" | "stop" => {
                self.running.remove(&id);
                if let Some(stop) = self.shared_ids.remove(&id) {
                    // As the protocol answers a stop of its own operations.
                    stop.abort();
                    return Inbound::Answer(Message::Text(complete_text(&id).into()));
                }
                return Inbound::Forward(bytes);
            }
            _ => return Inbound::Forward(bytes),
        }
        // Before `connection_init` has been answered the protocol refuses it.
        let Some(principal) = self.principal.get() else {
            return Inbound::Forward(bytes);
        };
        let max = self.state.ws_max_subscriptions;
        if !self.running.contains(&id) && self.running.len() >= max {
            return Inbound::Answer(operation_error(
                self.protocol,
                &id,
                code::BAD_REQUEST,
                &format!("at most {max} operations may run at once on one connection"),
                Value::Null,
            ));
        }
        let payload = &message["payload"];
        let query = payload["query"].as_str().unwrap_or_default();
        let operation = payload["operationName"].as_str();
        let variables = async_graphql::Variables::from_json(payload["variables"].clone());
        match self
            .state
            .limits
            .admit(principal, query, operation, &variables)
            .await
        {
            Ok(_) => {
                // An id the protocol runs stays the protocol's, to be replaced there.
                let protocols_own =
                    self.running.contains(&id) && !self.shared_ids.contains_key(&id);
                self.running.insert(id.clone());
                if protocols_own {
                    return Inbound::Forward(bytes);
                }
                self.share(id, &message["payload"], bytes)
            }
            Err(refused) => {
                let more = refused.extensions(chrono::Utc::now());
                Inbound::Answer(operation_error(
                    self.protocol,
                    &id,
                    refused.code(),
                    &refused.message(),
                    more,
                ))
            }
        }
    }

    /// Starts an admitted operation as a member of its shared execution when it has one (a
    /// subscription; the same id given again replaces the operation, as the protocol does),
    /// else hands it to the protocol.
    fn share(&mut self, id: String, payload: &Value, bytes: Vec<u8>) -> Inbound {
        if let Some(stop) = self.shared_ids.remove(&id) {
            stop.abort();
        }
        let (Some(context), Some(who)) = (self.context.get(), self.principal.get()) else {
            return Inbound::Forward(bytes);
        };
        let Ok(request) = serde_json::from_value::<async_graphql::Request>(payload.clone()) else {
            return Inbound::Forward(bytes);
        };
        let data = || Arc::new(context.data());
        let Some(payloads) = self.state.subscriptions.shared(request, who, data) else {
            return Inbound::Forward(bytes);
        };
        let (stop, registration) = AbortHandle::new_pair();
        // The envelope is made once per operation; each message only appends the payload.
        let kind = match self.protocol {
            WebSocketProtocols::GraphQLWS => "next",
            WebSocketProtocols::SubscriptionsTransportWS => "data",
        };
        let head = format!(
            r#"{{"type":"{kind}","id":{},"payload":"#,
            Value::String(id.clone())
        );
        let messages =
            payloads.map(move |payload: Payload| Frame::Next(format!("{head}{payload}}}")));
        let end = futures::stream::once(futures::future::ready(Frame::End(id.clone())));
        self.shared_ids.insert(id, stop);
        Inbound::Share(Abortable::new(messages.chain(end), registration).boxed())
    }

    /// The message of a shared subscription's frame; at its end, the operation is over.
    fn shared_message(&mut self, frame: Frame) -> Message {
        let text = match frame {
            Frame::Next(text) => text,
            Frame::End(id) => {
                self.shared_ids.remove(&id);
                self.running.remove(&id);
                complete_text(&id)
            }
        };
        Message::Text(text.into())
    }

    /// Notes an operation the protocol ended (its `complete`).
    fn outbound(&mut self, text: &str) {
        if text.starts_with(r#"{"type":"complete""#) {
            if let Ok(message) = serde_json::from_str::<Value>(text) {
                if let Some(id) = message["id"].as_str() {
                    self.running.remove(id);
                }
            }
        }
    }

    /// Whether the connection's credential (once it has one) still holds.
    async fn holds(&self) -> bool {
        match self.principal.get() {
            Some(principal) => self.state.auth.still_valid(principal).await,
            None => true,
        }
    }
}

/// Runs one connection: authenticates its `connection_init`, checks every operation before it
/// starts, closes it when its credential stops holding or it stays silent, and writes every
/// message that is ready at once in one write (a subscription's terminal `next` and its
/// `complete` cost one system call, not two, which counts with thousands of subscribers).
async fn serve(socket: WebSocket, state: HttpState, connection: Connection) {
    let principal: Arc<OnceLock<Principal>> = Arc::default();
    let context: Arc<OnceLock<Context>> = Arc::default();
    let refused = Arc::new(AtomicBool::new(false));
    let init = {
        let (auth, pool) = (state.auth.clone(), state.services.pool.clone());
        let (principal, refused) = (principal.clone(), refused.clone());
        let shared_context = context.clone();
        let (header_credential, client) = (connection.header_credential, connection.client);
        move |payload: Value| async move {
            let credential = payload_credential(&payload).or(header_credential);
            match auth.authenticate(credential.as_deref()).await {
                Ok(who) => {
                    let context = Context {
                        pool,
                        client,
                        who: who.clone(),
                    };
                    let data = context.data();
                    // For the subscriptions the connection starts as a group's first member.
                    let _ = shared_context.set(context);
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
    let protocol = connection.protocol;
    let (mut sink, mut stream) = socket.split();
    let (to_protocol, input) = futures::channel::mpsc::unbounded::<Vec<u8>>();
    let refused_now = refused.clone();
    let messages =
        async_graphql::http::WebSocket::new(state.subscriptions.clone(), input, protocol)
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
    let mut session = Session {
        state: state.clone(),
        protocol,
        principal: principal.clone(),
        context,
        running: HashSet::new(),
        shared_ids: HashMap::new(),
    };
    let mut shared: SelectAll<Shared> = SelectAll::new();
    let mut changes = state.auth.changes();
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.reset();
    let mut ping = tokio::time::interval(state.ws_ping);
    ping.reset();
    let silence = state.ws_ping * SILENT_PINGS;
    let init_deadline = tokio::time::sleep(INIT_DEADLINE);
    tokio::pin!(init_deadline);
    let mut heard = Instant::now();
    let mut closing = state.closing.clone();
    loop {
        tokio::select! {
            // The process stops: the client is told to reconnect (to another process, or
            // to this one once it is back), before its subscriptions stop.
            _ = async { closing.wait_for(|closing| *closing).await.is_ok() } => {
                let _ = sink.send(close(CLOSE_GOING_AWAY, "autos is restarting: reconnect")).await;
                return;
            }
            received = stream.next() => {
                heard = Instant::now();
                let bytes = match received {
                    Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => message.into_data().to_vec(),
                    // Pings are answered by the WebSocket layer; pongs only show life.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => return,
                    Some(Err(err)) => {
                        // Most often a message over the limit (the WebSocket layer refuses it).
                        let text = err.to_string();
                        let too_big = text.contains("too long") || text.contains("Space limit");
                        let (code, reason) = if too_big {
                            (1009, "message too big (at most 64 KiB)")
                        } else {
                            (1002, "protocol error")
                        };
                        let _ = sink.send(close(code, reason)).await;
                        return;
                    }
                };
                match session.inbound(bytes).await {
                    Inbound::Forward(bytes) => {
                        if to_protocol.unbounded_send(bytes).is_err() {
                            return;
                        }
                    }
                    Inbound::Answer(message) => {
                        if sink.send(message).await.is_err() {
                            return;
                        }
                    }
                    Inbound::Share(messages) => shared.push(messages),
                }
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
                    if let Message::Text(text) = &message {
                        session.outbound(text.as_str());
                    }
                    if sink.feed(message).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            // Shared subscriptions: every message ready now in one write.
            Some(frame) = shared.next(), if !shared.is_empty() => {
                let mut message = session.shared_message(frame);
                loop {
                    if sink.feed(message).await.is_err() {
                        return;
                    }
                    match shared.next().now_or_never() {
                        Some(Some(frame)) => message = session.shared_message(frame),
                        _ => break,
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            // A connection that never says who it is holds resources for nothing.
            _ = &mut init_deadline, if principal.get().is_none() => {
                let _ = sink.send(close(CLOSE_INIT_TIMEOUT, "Connection initialisation timeout")).await;
                return;
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    changes = state.auth.changes();
                    continue;
                }
                if !session.holds().await {
                    let _ = sink.send(close(CLOSE_FORBIDDEN, "Forbidden: credentials revoked or expired")).await;
                    return;
                }
            }
            _ = recheck.tick() => {
                if !session.holds().await {
                    let _ = sink.send(close(CLOSE_FORBIDDEN, "Forbidden: credentials revoked or expired")).await;
                    return;
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() >= silence {
                    let _ = sink.send(close(1001, "no answer to pings")).await;
                    return;
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_comes_from_the_init_payload() {
        assert_eq!(
            payload_credential(&json!({"authorization": "Bearer k"})).as_deref(),
            Some("Bearer k")
        );
        assert_eq!(payload_credential(&json!({})), None);
        assert_eq!(payload_credential(&Value::Null), None);
    }

    #[test]
    fn refused_operations_get_an_error_message_of_their_protocol() {
        let Message::Text(text) = operation_error(
            WebSocketProtocols::GraphQLWS,
            "7",
            "RATE_LIMITED",
            "slow down",
            json!({"retryAfter": 3}),
        ) else {
            panic!("not text");
        };
        let message: Value = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(message["type"], "error");
        assert_eq!(message["id"], "7");
        assert_eq!(message["payload"][0]["extensions"]["code"], "RATE_LIMITED");
        assert_eq!(message["payload"][0]["extensions"]["retryAfter"], 3);
        let Message::Text(text) = operation_error(
            WebSocketProtocols::SubscriptionsTransportWS,
            "7",
            "RATE_LIMITED",
            "slow down",
            Value::Null,
        ) else {
            panic!("not text");
        };
        let message: Value = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(message["payload"]["extensions"]["code"], "RATE_LIMITED");
    }
}

//! A small GraphQL-over-WebSocket client for `GET /graphql`, speaking both subprotocols the
//! server offers: `graphql-transport-ws` and the legacy `graphql-ws` (subscriptions-transport-ws).
//!
//! It checks the protocol as it goes: the server must pick the requested subprotocol, answer
//! `connection_init` with `connection_ack`, and use only the message types of that protocol
//! (`next` vs `data`); pings are answered, keep-alives ignored.

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long any single expected message may take to arrive.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The WebSocket subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `graphql-transport-ws` (the graphql-ws library's protocol).
    TransportWs,
    /// The legacy `graphql-ws` (Apollo's subscriptions-transport-ws).
    Legacy,
}

impl Protocol {
    /// The `Sec-WebSocket-Protocol` name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::TransportWs => "graphql-transport-ws",
            Protocol::Legacy => "graphql-ws",
        }
    }
}

/// A message about one operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `next` (graphql-transport-ws) or `data` (graphql-ws): an execution result,
    /// `{data}` and/or `{errors}`.
    Next { id: String, payload: Value },
    /// `error`: the operation failed and is over (no `complete` follows). The payload is a
    /// list of GraphQL errors in graphql-transport-ws, an error object in graphql-ws.
    Error { id: String, payload: Value },
    /// `complete`: the server ended the operation.
    Complete { id: String },
}

impl Event {
    pub fn id(&self) -> &str {
        match self {
            Event::Next { id, .. } | Event::Error { id, .. } | Event::Complete { id } => id,
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// `complete`.
    Complete,
    /// `error`, with its payload.
    Error(Value),
}

/// Everything one operation received, in order, and how it ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The payloads of `next` / `data` messages.
    pub payloads: Vec<Value>,
    /// When each payload arrived.
    pub arrived: Vec<Instant>,
    pub end: End,
}

/// One WebSocket connection, past `connection_ack`.
pub struct WsClient {
    ws: WebSocketStream<TcpStream>,
    pub protocol: Protocol,
    /// `ping` messages received (and answered).
    pub pings: u32,
    /// `ka` keep-alives received (graphql-ws).
    pub keep_alives: u32,
}

/// How a server refused a connection's `connection_init`.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// `connection_error` payload (legacy graphql-ws), if one came.
    pub connection_error: Option<Value>,
    /// The close frame's code, if one came.
    pub close_code: Option<u16>,
}

/// What a connection presents: its `connection_init` payload and upgrade request headers.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// `connection_init` payload.
    pub payload: Value,
    /// Extra headers of the upgrade request (`Authorization`, `Origin`).
    pub headers: Vec<(&'static str, String)>,
}

impl Credentials {
    /// A key or token in the `connection_init` payload, as the contract says.
    pub fn bearer(credential: &str) -> Credentials {
        Credentials {
            payload: json!({ "authorization": format!("Bearer {credential}") }),
            headers: Vec::new(),
        }
    }
}

impl WsClient {
    /// Connects to `ws://{addr}/graphql` with a key (or progress token) and completes the
    /// `connection_init` handshake.
    pub async fn connect(addr: SocketAddr, protocol: Protocol, key: &str) -> WsClient {
        Self::try_connect(addr, protocol, Credentials::bearer(key))
            .await
            .unwrap_or_else(|refused| panic!("connection refused: {refused:?}"))
    }

    /// Like `connect`, with a small socket receive buffer: a client that stops reading makes
    /// the server's writes block after a few messages instead of after megabytes.
    pub async fn connect_small_buffer(addr: SocketAddr, protocol: Protocol, key: &str) -> WsClient {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connect");
        Self::handshake(addr, stream, protocol, Credentials::bearer(key))
            .await
            .unwrap_or_else(|refused| panic!("connection refused: {refused:?}"))
    }

    /// Connects presenting `credentials`; the refusal, if the server refuses them.
    pub async fn try_connect(
        addr: SocketAddr,
        protocol: Protocol,
        credentials: Credentials,
    ) -> Result<WsClient, Refused> {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self::handshake(addr, stream, protocol, credentials).await
    }

    async fn handshake(
        addr: SocketAddr,
        stream: TcpStream,
        protocol: Protocol,
        credentials: Credentials,
    ) -> Result<WsClient, Refused> {
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let mut request = format!("ws://{addr}/graphql")
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(protocol.name()),
        );
        for (name, value) in &credentials.headers {
            request
                .headers_mut()
                .insert(*name, HeaderValue::from_str(value).expect("header value"));
        }
        let (ws, response) =
            tokio::time::timeout(PATIENCE, tokio_tungstenite::client_async(request, stream))
                .await
                .expect("WebSocket handshake timed out")
                .expect("WebSocket handshake");
        let chosen = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert_eq!(
            chosen,
            protocol.name(),
            "the server picked another subprotocol"
        );
        let mut client = WsClient {
            ws,
            protocol,
            pings: 0,
            keep_alives: 0,
        };
        client
            .send(json!({ "type": "connection_init", "payload": credentials.payload }))
            .await;
        let deadline = Instant::now() + PATIENCE;
        let mut connection_error = None;
        loop {
            let message = match client.receive_or_close(deadline).await {
                Ok(message) => message,
                Err(close_code) => {
                    return Err(Refused {
                        connection_error,
                        close_code,
                    })
                }
            };
            match message["type"].as_str() {
                Some("connection_ack") => return Ok(client),
                Some("ka") if protocol == Protocol::Legacy => client.keep_alives += 1,
                Some("connection_error") if protocol == Protocol::Legacy => {
                    connection_error = Some(message["payload"].clone())
                }
                _ => panic!("expected connection_ack, got {message}"),
            }
        }
    }

    /// The next protocol message, or the close code (if any) when the server closes.
    async fn receive_or_close(&mut self, deadline: Instant) -> Result<Value, Option<u16>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("nothing arrived over the WebSocket in time"));
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return Ok(serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}")));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Binary(data))) => panic!("unexpected binary frame: {data:?}"),
                Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    /// Waits until the server closes the connection (answering pings meanwhile); its close
    /// code, if it sent one. Panics if operation messages arrive or nothing ends by `deadline`.
    pub async fn closed_by(&mut self, deadline: Instant) -> Option<u16> {
        loop {
            match self.receive_or_close(deadline).await {
                Err(code) => return code,
                Ok(message) if message["type"] == "ping" => {
                    self.send(json!({ "type": "pong" })).await
                }
                Ok(message) if message["type"] == "ka" => {}
                Ok(message) => panic!("expected the connection to close, got {message}"),
            }
        }
    }

    /// Reads until the server closes the connection (answering pings meanwhile): the
    /// operation messages that came before the close, and its code if it sent one. Panics if
    /// nothing ends by `deadline`.
    pub async fn messages_until_closed(&mut self, deadline: Instant) -> (Vec<Value>, Option<u16>) {
        let mut messages = Vec::new();
        loop {
            match self.receive_or_close(deadline).await {
                Err(code) => return (messages, code),
                Ok(message) if message["type"] == "ping" => {
                    self.send(json!({ "type": "pong" })).await
                }
                Ok(message) if message["type"] == "ka" || message["type"] == "pong" => {}
                Ok(message) => messages.push(message),
            }
        }
    }

    async fn send(&mut self, message: Value) {
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .expect("send over the WebSocket");
    }

    /// The next protocol message (JSON), or a panic at `deadline` or when the socket closes.
    async fn receive(&mut self, deadline: Instant) -> Value {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("nothing arrived over the WebSocket in time"));
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
                }
                // Pongs to WebSocket pings are queued by tungstenite itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Binary(data))) => panic!("unexpected binary frame: {data:?}"),
                Some(Ok(Message::Close(frame))) => panic!("the server closed: {frame:?}"),
                Some(Err(err)) => panic!("WebSocket failed: {err}"),
                None => panic!("the WebSocket ended"),
            }
        }
    }

    /// Starts an operation (`subscribe` / `start`).
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = match self.protocol {
            Protocol::TransportWs => "subscribe",
            Protocol::Legacy => "start",
        };
        self.send(json!({
            "id": id,
            "type": kind,
            "payload": { "query": query, "variables": variables },
        }))
        .await;
    }

    /// Stops an operation (`complete` / `stop`).
    pub async fn unsubscribe(&mut self, id: &str) {
        let kind = match self.protocol {
            Protocol::TransportWs => "complete",
            Protocol::Legacy => "stop",
        };
        self.send(json!({ "id": id, "type": kind })).await;
    }

    /// The next event about any operation, answering pings and skipping keep-alives; panics
    /// if none arrives before `deadline`.
    pub async fn event_by(&mut self, deadline: Instant) -> Event {
        loop {
            let message = self.receive(deadline).await;
            let id = || {
                message["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no id in {message}"))
                    .to_string()
            };
            let kind = message["type"].as_str().unwrap_or_default();
            match (self.protocol, kind) {
                (Protocol::TransportWs, "ping") => {
                    self.pings += 1;
                    self.send(json!({ "type": "pong" })).await;
                }
                (Protocol::TransportWs, "pong") => {}
                (Protocol::Legacy, "ka") => self.keep_alives += 1,
                (Protocol::TransportWs, "next") | (Protocol::Legacy, "data") => {
                    return Event::Next {
                        id: id(),
                        payload: message["payload"].clone(),
                    }
                }
                (_, "error") => {
                    return Event::Error {
                        id: id(),
                        payload: message["payload"].clone(),
                    }
                }
                (_, "complete") => return Event::Complete { id: id() },
                _ => panic!("unexpected {} message: {message}", self.protocol.name()),
            }
        }
    }

    /// The next event, waiting at most `PATIENCE`.
    pub async fn event(&mut self) -> Event {
        self.event_by(Instant::now() + PATIENCE).await
    }

    /// The next event if one arrives within `window`.
    pub async fn event_within(&mut self, window: Duration) -> Option<Event> {
        tokio::time::timeout(window, self.event()).await.ok()
    }

    /// Reads operation `id` to its end (`complete` or `error`), at most `timeout` in all.
    /// Events of other operations on this connection are not expected.
    pub async fn outcome(&mut self, id: &str, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        let mut payloads = Vec::new();
        let mut arrived = Vec::new();
        loop {
            let event = self.event_by(deadline).await;
            assert_eq!(event.id(), id, "event of another operation: {event:?}");
            let end = match event {
                Event::Next { payload, .. } => {
                    payloads.push(payload);
                    arrived.push(Instant::now());
                    continue;
                }
                Event::Error { payload, .. } => End::Error(payload),
                Event::Complete { .. } => End::Complete,
            };
            return Outcome {
                payloads,
                arrived,
                end,
            };
        }
    }

    /// Asserts that nothing but pings and keep-alives arrives for `window`.
    pub async fn assert_silent(&mut self, window: Duration) {
        if let Some(event) = self.event_within(window).await {
            panic!("expected silence, got {event:?}");
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        if self.protocol == Protocol::Legacy {
            self.send(json!({ "type": "connection_terminate" })).await;
        }
        let _ = self.ws.close(None).await;
    }
}

//! WebSocket connections: `connection_init` within 10 s, a cap on operations at once, a
//! message size limit, and pings to idle connections.

use super::*;
use common::mute_ws::MuteWs;
use common::ws::{Event, Protocol, WsClient, PATIENCE};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A bare WebSocket on `/graphql`, speaking `protocol`, before any GraphQL message.
type Raw = WebSocketStream<TcpStream>;

async fn raw_ws(addr: SocketAddr, protocol: Protocol) -> Raw {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("ws://{addr}/graphql")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(protocol.name()),
    );
    let (ws, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("WebSocket handshake");
    ws
}

/// The next text message as JSON; panics on anything else but pings and pongs.
async fn next_text(ws: &mut Raw, deadline: Instant) -> Value {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, ws.next())
            .await
            .expect("nothing arrived in time");
        match frame {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str()).expect("JSON message")
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// `connection_init` with `key`, then `connection_ack`.
async fn raw_init(ws: &mut Raw, key: &str) {
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {key}") } });
    ws.send(Message::text(init.to_string()))
        .await
        .expect("send");
    let ack = next_text(ws, Instant::now() + PATIENCE).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
}

/// How the server ended a connection: its close code (if it sent a close frame) and when.
#[derive(Debug)]
struct Ended {
    code: Option<u16>,
    after: Duration,
}

/// Reads (answering pings) until the server ends the connection, or panics at `deadline`.
async fn ended(ws: &mut Raw, started: Instant, deadline: Instant) -> Ended {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, ws.next())
            .await
            .unwrap_or_else(|_| panic!("still open after {:?}", started.elapsed()));
        let code = match frame {
            Some(Ok(Message::Close(frame))) => frame.map(|f| u16::from(f.code)),
            Some(Err(_)) | None => None,
            Some(Ok(_)) => continue,
        };
        return Ended {
            code,
            after: started.elapsed(),
        };
    }
}

/// A subscribe message for the progress of `job`, padded with blanks to about `size` bytes.
fn padded_subscribe(id: &str, job: &str, size: usize) -> String {
    let query = format!(
        "{PROGRESS}{}",
        " ".repeat(size.saturating_sub(PROGRESS.len() + 120))
    );
    json!({ "id": id, "type": "subscribe",
            "payload": { "query": query, "variables": { "id": job } } })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_without_connection_init_is_closed_with_4408() {
    let app = TestApp::spawn(Court::start().await).await;
    let silent = |protocol| async move {
        let mut ws = raw_ws(app.addr, protocol).await;
        let started = Instant::now();
        let end = ended(&mut ws, started, started + Duration::from_secs(15)).await;
        println!(
            "{protocol:?}: closed with {:?} after {:?}",
            end.code, end.after
        );
        end
    };
    let (transport, legacy) = tokio::join!(silent(Protocol::TransportWs), silent(Protocol::Legacy));
    assert_eq!(
        transport.code,
        Some(4408),
        "graphql-transport-ws: {transport:?}"
    );
    assert_eq!(legacy.code, Some(4408), "graphql-ws: {legacy:?}");
    app.stop().await;
}

/// Events of several operations on one connection, taken in each operation's order.
struct Events<'a> {
    ws: &'a mut WsClient,
    /// Arrived, not taken yet.
    waiting: Vec<Event>,
}

impl Events<'_> {
    /// The next event of operation `id`.
    async fn of(&mut self, id: &str) -> Event {
        if let Some(at) = self.waiting.iter().position(|e| e.id() == id) {
            return self.waiting.remove(at);
        }
        loop {
            let event = self.ws.event().await;
            if event.id() == id {
                return event;
            }
            self.waiting.push(event);
        }
    }

    /// Takes `id`'s events up to its `complete`.
    async fn completed(&mut self, id: &str) {
        loop {
            match self.of(id).await {
                Event::Complete { .. } => return,
                Event::Next { .. } => {}
                Event::Error { payload, .. } => panic!("{id} failed: {payload}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_most_ws_max_subscriptions_run_at_once_on_a_connection() {
    let court = Court::start().await;
    let n = number(401);
    let documents: Vec<Doc> = (0..3u8)
        .map(|i| Doc::new(&format!("d{i}"), &format!("Peça {i}.pdf"), bytes(1_500, i)))
        .collect();
    court.add_process(&n, documents.clone());
    // The court sends the documents slowly, one slower than the other (about 2, 4 and 7 s):
    // the job runs for a while, and changes on the way.
    for (i, doc) in (1u32..).zip(&documents) {
        let slow = Fault::Slow {
            chunk: 100,
            every: Duration::from_millis(150) * i,
        };
        court.fail(&n, &doc.id, vec![slow]);
    }
    let app = spawn_configured(court, |c| c.ws_max_subscriptions = 2).await;
    let started = app.start(&n, false).await;
    let job = started["job"]["id"].as_str().expect("job id").to_string();
    let mut ws = WsClient::connect(app.addr, Protocol::TransportWs, &app.key).await;
    let mut events = Events {
        ws: &mut ws,
        waiting: Vec::new(),
    };
    let vars = json!({ "id": job });

    for id in ["a", "b"] {
        events.ws.subscribe(id, PROGRESS, vars.clone()).await;
        let first = events.of(id).await;
        assert!(matches!(first, Event::Next { .. }), "{id}: {first:?}");
    }
    events.ws.subscribe("c", PROGRESS, vars.clone()).await;
    match events.of("c").await {
        Event::Error { payload, .. } => {
            assert_eq!(payload[0]["extensions"]["code"], "BAD_REQUEST", "{payload}");
        }
        other => panic!("a third operation at once was let through: {other:?}"),
    }
    // The two keep working: each hears of the job's next change.
    events.waiting.clear();
    for id in ["a", "b"] {
        let next = events.of(id).await;
        assert!(matches!(next, Event::Next { .. }), "{id}: {next:?}");
    }
    let status = app.job(&job).await["status"].clone();
    assert_eq!(status, "RUNNING", "the job ended too soon for this test");

    // One ends (the client stops it): a new one takes its place.
    events.ws.unsubscribe("a").await;
    events.ws.subscribe("d", PROGRESS, vars.clone()).await;
    let first = events.of("d").await;
    assert!(matches!(first, Event::Next { .. }), "d: {first:?}");

    // Both end with the job (the server completes them): two new ones are taken.
    events.completed("b").await;
    events.completed("d").await;
    for id in ["e", "f"] {
        events.ws.subscribe(id, PROGRESS, vars.clone()).await;
    }
    for id in ["e", "f"] {
        match events.of(id).await {
            Event::Next { payload, .. } => {
                assert_eq!(
                    payload["data"]["jobProgress"]["status"], "COMPLETED",
                    "{payload}"
                )
            }
            other => panic!("{id}: {other:?}"),
        }
        events.completed(id).await;
    }
    assert!(
        events.waiting.iter().all(|e| e.id() == "a"),
        "left over: {:?}",
        events.waiting
    );
    ws.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_over_64_kib_closes_the_connection() {
    let app = TestApp::spawn(Court::start().await).await;
    let job = finished_job(&app, &number(402), 1).await;

    // Just under the limit: an operation like any other.
    let mut ws = raw_ws(app.addr, Protocol::TransportWs).await;
    raw_init(&mut ws, &app.key).await;
    let under = padded_subscribe("1", &job, 63 * 1024);
    assert!(under.len() < 64 * 1024);
    ws.send(Message::text(under)).await.expect("send");
    let next = next_text(&mut ws, Instant::now() + PATIENCE).await;
    assert_eq!(next["type"], "next", "{next}");
    assert_eq!(
        next["payload"]["data"]["jobProgress"]["status"],
        "COMPLETED"
    );
    let complete = next_text(&mut ws, Instant::now() + PATIENCE).await;
    assert_eq!(complete["type"], "complete", "{complete}");

    // Over it, in one frame: the connection is closed.
    let over = padded_subscribe("2", &job, 70 * 1024);
    let started = Instant::now();
    // The server may close before all of it is written.
    let _ = ws.send(Message::text(over)).await;
    let end = ended(&mut ws, started, started + Duration::from_secs(10)).await;
    println!("a 70 KiB message: {end:?}");

    // Over it in fragments of 30 KiB each: closed as well.
    let mut ws = raw_ws(app.addr, Protocol::TransportWs).await;
    raw_init(&mut ws, &app.key).await;
    let over = padded_subscribe("3", &job, 90 * 1024).into_bytes();
    let parts: Vec<&[u8]> = over.chunks(30 * 1024).collect();
    let started = Instant::now();
    for (i, part) in parts.iter().enumerate() {
        let opcode = if i == 0 { Data::Text } else { Data::Continue };
        let last = i + 1 == parts.len();
        let frame = Frame::message(part.to_vec(), OpCode::Data(opcode), last);
        if ws.send(Message::Frame(frame)).await.is_err() {
            break;
        }
    }
    let fragmented = ended(&mut ws, started, started + Duration::from_secs(10)).await;
    println!("a 90 KiB message in three frames: {fragmented:?}");

    // The server is fine: a new connection works.
    let mut fine = WsClient::connect(app.addr, Protocol::TransportWs, &app.key).await;
    fine.subscribe("4", PROGRESS, json!({ "id": job })).await;
    let outcome = fine.outcome("4", PATIENCE).await;
    assert_eq!(outcome.end, common::ws::End::Complete);
    fine.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_are_pinged_every_ws_ping_secs_and_pongs_keep_them_open() {
    let app = spawn_configured(Court::start().await, |c| c.ws_ping_secs = 1).await;
    let job = finished_job(&app, &number(403), 1).await;
    let mut ws = raw_ws(app.addr, Protocol::TransportWs).await;
    raw_init(&mut ws, &app.key).await;

    // Reading (tungstenite answers each Ping with a Pong as it reads) for 4.5 s: past the
    // three silent intervals after which a connection is closed.
    let started = Instant::now();
    let until = started + Duration::from_millis(4_500);
    let mut pings = Vec::new();
    while let Ok(frame) =
        tokio::time::timeout(until.saturating_duration_since(Instant::now()), ws.next()).await
    {
        match frame {
            Some(Ok(Message::Ping(_))) => pings.push(started.elapsed()),
            other => panic!("expected only pings, got {other:?}"),
        }
    }
    println!("pings at {pings:?}");
    assert!(
        (3..=6).contains(&pings.len()),
        "{} pings in 4.5 s at one a second: {pings:?}",
        pings.len()
    );
    // Still open and working.
    ws.send(Message::text(padded_subscribe("1", &job, 0)))
        .await
        .expect("send");
    let next = next_text(&mut ws, Instant::now() + PATIENCE).await;
    assert_eq!(next["type"], "next", "{next}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_answers_no_pings_is_closed_with_1001_after_three_intervals() {
    let app = spawn_configured(Court::start().await, |c| c.ws_ping_secs = 1).await;
    let mut mute = MuteWs::connect(app.addr, &app.key).await;
    let started = Instant::now();

    let mut pings = Vec::new();
    let closed = loop {
        match mute.frame(started + Duration::from_secs(10)).await {
            Some((0x9, _)) => pings.push(started.elapsed()),
            Some((0x8, payload)) => {
                break payload
                    .get(..2)
                    .map(|code| (u16::from_be_bytes([code[0], code[1]]), started.elapsed()))
            }
            Some((opcode, payload)) => panic!("unexpected frame {opcode}: {payload:?}"),
            None => break None,
        }
    };
    println!("pings at {pings:?}; closed: {closed:?}");
    let (code, after) = closed.expect("the connection ended without a close frame");
    assert_eq!(code, 1001);
    assert!(!pings.is_empty(), "closed without a ping");
    assert!(
        after < Duration::from_secs(6),
        "closed only after {after:?}"
    );
    assert!(
        after >= Duration::from_secs(2),
        "closed after only {after:?}"
    );
    app.stop().await;
}

//! A real HTTP court source (axum on 127.0.0.1:0) speaking the source contract, that can be
//! told to fail in every way the contract names — or go down entirely and come back — and
//! counts what it served.

use super::proxy::Gate;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A document the court holds.
#[derive(Clone, Debug)]
pub struct Doc {
    pub id: String,
    pub name: String,
    pub kind: Option<String>,
    pub mime: Option<String>,
    pub bytes: Bytes,
    /// What the listing announces (None: field absent).
    pub size: Option<i64>,
    pub sha256: Option<String>,
    /// Listing url; default `files/{number}/{id}`.
    pub url: Option<String>,
}

impl Doc {
    pub fn new(id: &str, name: &str, bytes: Vec<u8>) -> Doc {
        let sha = hex::encode(Sha256::digest(&bytes));
        Doc {
            id: id.into(),
            name: name.into(),
            kind: Some("Petição".into()),
            mime: Some("application/pdf".into()),
            size: Some(bytes.len() as i64),
            sha256: Some(sha),
            bytes: Bytes::from(bytes),
            url: None,
        }
    }
    pub fn no_announcements(mut self) -> Doc {
        self.size = None;
        self.sha256 = None;
        self.kind = None;
        self.mime = None;
        self
    }
    pub fn sha(mut self, sha: &str) -> Doc {
        self.sha256 = Some(sha.into());
        self
    }
    pub fn size(mut self, size: i64) -> Doc {
        self.size = Some(size);
        self
    }
}

/// How one GET of a document (or a lookup) misbehaves.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this status (with `Retry-After` if given) instead of the bytes.
    Status(u16, Option<String>),
    /// Send half the body, then break the connection.
    Break,
    /// Send the body without Content-Length, in small chunks.
    Chunked,
    /// Send the body slowly: one chunk of `chunk` bytes every `every`.
    Slow { chunk: usize, every: Duration },
    /// Never answer.
    Hang,
}

#[derive(Default)]
struct State_ {
    processes: HashMap<String, (Value, Vec<Doc>)>,
    /// Faults per (number, doc id), consumed one per GET; `always` faults repeat.
    faults: HashMap<(String, String), VecDeque<Fault>>,
    always: HashMap<(String, String), Fault>,
    lookup_faults: VecDeque<Fault>,
    gets: HashMap<(String, String), u32>,
    lookups: u32,
    /// Slow bodies being sent now, and the most sent at once.
    slow_now: u32,
    slow_most: u32,
    /// Requests (lookups and documents) being answered now, and the most at once.
    requests_now: u32,
    requests_most: u32,
    /// How long every lookup takes to answer.
    lookup_delay: Duration,
    /// Where each `/redirect/{name}` sends its client.
    redirects: HashMap<String, String>,
    /// Redirect answers given so far (`/redirect/…` and `/hops/…`).
    redirected: u32,
}

/// Counts a request as being answered until it is dropped: when its handler returns, or for a
/// slow body once that body is sent (or the client went away).
struct Answering(Shared);

impl Answering {
    fn start(state: &Shared) -> Answering {
        let mut s = state.lock().unwrap();
        s.requests_now += 1;
        s.requests_most = s.requests_most.max(s.requests_now);
        Answering(state.clone())
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.lock().unwrap().requests_now -= 1;
    }
}

/// Counts a slow body as being sent until it is dropped (sent whole, or the client went away).
struct Sending(Shared);

impl Sending {
    fn start(state: &Shared) -> Sending {
        let mut s = state.lock().unwrap();
        s.slow_now += 1;
        s.slow_most = s.slow_most.max(s.slow_now);
        Sending(state.clone())
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.lock().unwrap().slow_now -= 1;
    }
}

/// The court.
#[derive(Clone)]
pub struct Court {
    pub addr: SocketAddr,
    state: Arc<Mutex<State_>>,
    /// Its port, which can refuse connections and cut those open.
    gate: Gate,
}

impl Court {
    pub async fn start() -> Court {
        let state = Arc::new(Mutex::new(State_::default()));
        let app = Router::new()
            .route("/processes/{number}", get(lookup))
            .route("/files/{number}/{id}", get(file))
            .route("/redirect/{name}", get(redirect))
            .route("/hops/{n}/{number}/{id}", get(hops))
            .with_state(state.clone());
        let (gate, accepted) = Gate::open().await;
        tokio::spawn(async move {
            let _ = axum::serve(accepted, app).await;
        });
        Court {
            addr: gate.addr,
            state,
            gate,
        }
    }

    /// The court goes down entirely: connections to its port are refused, and those open
    /// (bodies being sent among them) break. Returns how many were open.
    pub async fn go_down(&self) -> usize {
        self.gate.down().await
    }

    /// The court answers again, on the same port.
    pub async fn come_back(&self) {
        self.gate.restore().await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add_process(&self, number: &str, docs: Vec<Doc>) {
        let meta = json!({ "court": "TJSP", "class": "Procedimento Comum Cível", "subject": "Dano Moral" });
        self.state
            .lock()
            .unwrap()
            .processes
            .insert(number.to_string(), (meta, docs));
    }

    /// Faults for the next GETs of one document, in order.
    pub fn fail(&self, number: &str, id: &str, faults: Vec<Fault>) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert((number.into(), id.into()), faults.into());
    }

    /// A fault for every GET of one document.
    pub fn fail_always(&self, number: &str, id: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .always
            .insert((number.into(), id.into()), fault);
    }

    pub fn heal(&self, number: &str, id: &str) {
        let mut s = self.state.lock().unwrap();
        s.always.remove(&(number.into(), id.into()));
        s.faults.remove(&(number.into(), id.into()));
    }

    pub fn fail_lookups(&self, faults: Vec<Fault>) {
        self.state.lock().unwrap().lookup_faults = faults.into();
    }

    /// GETs of one document so far.
    pub fn gets(&self, number: &str, id: &str) -> u32 {
        *self
            .state
            .lock()
            .unwrap()
            .gets
            .get(&(number.into(), id.into()))
            .unwrap_or(&0)
    }

    pub fn total_gets(&self) -> u32 {
        self.state.lock().unwrap().gets.values().sum()
    }

    pub fn lookups(&self) -> u32 {
        self.state.lock().unwrap().lookups
    }

    /// Makes `GET /redirect/{name}` answer 302 with `Location: {location}`.
    pub fn redirect(&self, name: &str, location: &str) {
        self.state
            .lock()
            .unwrap()
            .redirects
            .insert(name.into(), location.into());
    }

    /// A listing url that reaches the document `id` of `number` after exactly `hops`
    /// redirects on the court's own origin (`hops` ≥ 1).
    pub fn hops_url(number: &str, id: &str, hops: u32) -> String {
        format!("hops/{hops}/{number}/{id}")
    }

    /// Redirect answers given so far.
    pub fn redirected(&self) -> u32 {
        self.state.lock().unwrap().redirected
    }

    /// Every lookup waits `delay` before it answers (a slow court).
    pub fn delay_lookups(&self, delay: Duration) {
        self.state.lock().unwrap().lookup_delay = delay;
    }

    /// Requests (lookups and documents; slow bodies until sent) being answered now.
    pub fn requests_now(&self) -> u32 {
        self.state.lock().unwrap().requests_now
    }

    /// The most requests (lookups and documents) that were being answered at once.
    pub fn most_requests_at_once(&self) -> u32 {
        self.state.lock().unwrap().requests_most
    }

    /// Slow bodies ([`Fault::Slow`]) being sent now.
    pub fn slow_sending_now(&self) -> u32 {
        self.state.lock().unwrap().slow_now
    }

    /// The most slow bodies ([`Fault::Slow`]) that were being sent at once.
    pub fn most_slow_at_once(&self) -> u32 {
        self.state.lock().unwrap().slow_most
    }
}

type Shared = Arc<Mutex<State_>>;

async fn lookup(State(state): State<Shared>, Path(number): Path<String>) -> Response {
    let _answering = Answering::start(&state);
    let delay = state.lock().unwrap().lookup_delay;
    tokio::time::sleep(delay).await;
    let (fault, listing) = {
        let mut s = state.lock().unwrap();
        s.lookups += 1;
        let fault = s.lookup_faults.pop_front();
        let listing = s.processes.get(&number).map(|(meta, docs)| {
            let documents: Vec<Value> = docs
                .iter()
                .map(|d| {
                    json!({
                        "id": d.id, "name": d.name, "kind": d.kind, "mimeType": d.mime,
                        "size": d.size, "sha256": d.sha256,
                        "url": d.url.clone().unwrap_or_else(|| format!("files/{number}/{}", d.id)),
                    })
                })
                .collect();
            json!({ "number": number, "court": meta["court"], "class": meta["class"],
                    "subject": meta["subject"], "documents": documents })
        });
        (fault, listing)
    };
    if let Some(fault) = fault {
        if let Some(response) = status_fault(&fault).await {
            return response;
        }
    }
    match listing {
        Some(listing) => Json(listing).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn status_fault(fault: &Fault) -> Option<Response> {
    match fault {
        Fault::Status(code, retry_after) => {
            let mut headers = HeaderMap::new();
            if let Some(value) = retry_after {
                headers.insert(header::RETRY_AFTER, value.parse().unwrap());
            }
            Some(
                (
                    StatusCode::from_u16(*code).unwrap(),
                    headers,
                    "court says no",
                )
                    .into_response(),
            )
        }
        Fault::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Some(StatusCode::GATEWAY_TIMEOUT.into_response())
        }
        _ => None,
    }
}

async fn redirect(State(state): State<Shared>, Path(name): Path<String>) -> Response {
    let mut s = state.lock().unwrap();
    let Some(location) = s.redirects.get(&name).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    s.redirected += 1;
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// `/hops/{n}/…` redirects to `/hops/{n-1}/…`, and `/hops/1/…` to the document itself.
async fn hops(
    State(state): State<Shared>,
    Path((n, number, id)): Path<(u32, String, String)>,
) -> Response {
    state.lock().unwrap().redirected += 1;
    let location = match n {
        0 | 1 => format!("/files/{number}/{id}"),
        n => format!("/{}", Court::hops_url(&number, &id, n - 1)),
    };
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, location)],
    )
        .into_response()
}

async fn file(State(state): State<Shared>, Path((number, id)): Path<(String, String)>) -> Response {
    let answering = Answering::start(&state);
    let (fault, doc) = {
        let mut s = state.lock().unwrap();
        let key = (number.clone(), id.clone());
        *s.gets.entry(key.clone()).or_default() += 1;
        let fault = s
            .faults
            .get_mut(&key)
            .and_then(VecDeque::pop_front)
            .or_else(|| s.always.get(&key).cloned());
        let doc = s
            .processes
            .get(&number)
            .and_then(|(_, docs)| docs.iter().find(|d| d.id == id).cloned());
        (fault, doc)
    };
    let Some(doc) = doc else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let bytes = doc.bytes.clone();
    match fault {
        None => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Some(fault @ (Fault::Status(..) | Fault::Hang)) => status_fault(&fault).await.unwrap(),
        Some(Fault::Break) => {
            let half = bytes.slice(..bytes.len() / 2);
            let stream = futures::stream::iter(vec![
                Ok::<Bytes, std::io::Error>(half),
                Err(std::io::Error::other("connection reset by court")),
            ]);
            Response::builder()
                .header(header::CONTENT_LENGTH, bytes.len())
                .body(Body::from_stream(stream))
                .unwrap()
        }
        Some(Fault::Chunked) => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
                .chunks(64 * 1024)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            Response::new(Body::from_stream(futures::stream::iter(chunks)))
        }
        Some(Fault::Slow { chunk, every }) => {
            let chunks: Vec<Bytes> = bytes
                .chunks(chunk.max(1))
                .map(Bytes::copy_from_slice)
                .collect();
            let sending = (Sending::start(&state), answering);
            let stream = futures::stream::unfold(
                (chunks.into_iter(), sending),
                move |(mut it, sending)| async move {
                    let next = it.next()?;
                    tokio::time::sleep(every).await;
                    Some((Ok::<Bytes, std::io::Error>(next), (it, sending)))
                },
            );
            Response::builder()
                .header(header::CONTENT_LENGTH, bytes.len())
                .body(Body::from_stream(stream))
                .unwrap()
        }
    }
}

//! A second, plain HTTP server (axum on 127.0.0.1, a port of its own): a host other than the
//! court's origin that listings or redirects may point documents at. It serves the bytes it was
//! given at their paths and records every request it gets, with its Authorization header.

use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One request the server got.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Bytes>,
    seen: Vec<Seen>,
}

/// The other host.
#[derive(Clone)]
pub struct Elsewhere {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Elsewhere {
    pub async fn start() -> Elsewhere {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let shared = shared.clone();
            async move { answer(&shared, &uri, &headers) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Elsewhere { addr, state }
    }

    /// Serves `bytes` at `path` (which begins with `/`); gives its absolute URL.
    pub fn serve(&self, path: &str, bytes: impl Into<Bytes>) -> String {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(path.to_string(), bytes.into());
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

fn answer(state: &Mutex<State>, uri: &Uri, headers: &HeaderMap) -> Response {
    let mut s = state.lock().unwrap();
    s.seen.push(Seen {
        path: uri.path().to_string(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or("<not text>").to_string()),
    });
    match s.files.get(uri.path()) {
        Some(bytes) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            bytes.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

//! Headless Chromium driven over the DevTools protocol, for tests of the progress page: one
//! browser per test, each with a fresh profile (no storage, no cookies, no cache).

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Chromium, as Debian installs it (scripts/test installs it when missing).
pub fn chromium() -> String {
    std::env::var("AUTOS_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Installed before any script of every page: records what goes over the page's WebSockets, to
/// tell a live page from a polling one and to see what it sends.
/// `window.__progress`: the `progress` of every `jobProgress` event received, in order;
/// `window.__sockets`: `{ url, sent: [frame text…] }` of every socket the page opened.
pub const WEBSOCKET_PROBE: &str = "
    window.__progress = [];
    window.__sockets = [];
    const Native = window.WebSocket;
    window.WebSocket = function (url, protocols) {
        const socket = new Native(url, protocols);
        const seen = { url: String(url), sent: [] };
        window.__sockets.push(seen);
        const send = socket.send.bind(socket);
        socket.send = (data) => { seen.sent.push(String(data)); return send(data); };
        socket.addEventListener('message', (e) => {
            const m = JSON.parse(e.data);
            if (m.type === 'next' && m.payload && m.payload.data && m.payload.data.jobProgress) {
                window.__progress.push(m.payload.data.jobProgress.progress);
            }
        });
        return socket;
    };
    window.WebSocket.prototype = Native.prototype;";

type DevTools =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Browser {
    pub child: tokio::process::Child,
    ws: DevTools,
    next_id: u64,
    profile: PathBuf,
    /// DevTools events (`{method, params}`) received so far, oldest first.
    events: Vec<Value>,
}

impl Browser {
    /// Starts Chromium with a new, empty profile and connects to its first tab.
    pub async fn launch() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let profile = super::temp_dir("chromium");
        let child = tokio::process::Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                &format!("--user-data-dir={}", profile.display()),
                &format!("--remote-debugging-port={port}"),
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {}: {e} (scripts/test installs it)", chromium())
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        let target = loop {
            let listed = async {
                reqwest::get(format!("http://127.0.0.1:{port}/json"))
                    .await
                    .ok()?
                    .json::<Vec<Value>>()
                    .await
                    .ok()
            };
            if let Some(targets) = listed.await {
                if let Some(page) = targets.into_iter().find(|t| t["type"] == "page") {
                    break page;
                }
            }
            assert!(Instant::now() < deadline, "Chromium did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let url = target["webSocketDebuggerUrl"].as_str().unwrap().to_string();
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut browser = Browser {
            child,
            ws,
            next_id: 0,
            profile,
            events: Vec::new(),
        };
        browser.call("Page.enable", json!({})).await;
        browser
    }

    /// Starts Chromium with [`WEBSOCKET_PROBE`] in every page and the network observed
    /// ([`Browser::requested_urls`]).
    pub async fn launch_observed() -> Browser {
        let mut browser = Browser::launch().await;
        browser
            .call(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": WEBSOCKET_PROBE }),
            )
            .await;
        browser.call("Network.enable", json!({})).await;
        browser
    }

    /// One DevTools command; returns the whole reply. Events that arrive meanwhile are kept.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(Message::text(request)).await.unwrap();
        loop {
            let message = self.ws.next().await.expect("devtools closed").unwrap();
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["id"] == id {
                    assert!(
                        value.get("error").is_none(),
                        "DevTools {method} failed: {value}"
                    );
                    return value;
                }
                if value.get("method").is_some() {
                    self.events.push(value);
                }
            }
        }
    }

    /// The value of a JavaScript expression in the page (promises awaited); a thrown exception
    /// fails the test.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let reply = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(exception) = reply["result"].get("exceptionDetails") {
            panic!("`{expression}` threw: {exception:#}");
        }
        reply["result"]["result"]["value"].clone()
    }

    /// The text of a JavaScript expression ("" for null).
    pub async fn text(&mut self, expression: &str) -> String {
        match self.eval(expression).await {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    /// Polls `expression` until it is truthy (not null, false, 0 or ""); returns its value.
    pub async fn wait_for(&mut self, expression: &str, timeout: Duration, what: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.eval(expression).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not so after {timeout:?} (`{expression}` is {value})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens `url` in the tab and waits until its document has loaded.
    pub async fn open(&mut self, url: &str) {
        self.eval("window.__left = true").await;
        self.call("Page.navigate", json!({ "url": url })).await;
        self.wait_for(
            "window.__left === undefined && document.readyState === 'complete'",
            Duration::from_secs(20),
            &format!("{url} loaded"),
        )
        .await;
    }

    /// Reloads the page and waits until the new document has loaded.
    pub async fn reload(&mut self) {
        self.eval("window.__left = true").await;
        self.call("Page.reload", json!({ "ignoreCache": true }))
            .await;
        self.wait_for(
            "window.__left === undefined && document.readyState === 'complete'",
            Duration::from_secs(20),
            "the page reloaded",
        )
        .await;
    }

    /// Whether the element `selector` exists and is rendered (not hidden, nor inside something
    /// hidden).
    pub async fn visible(&mut self, selector: &str) -> bool {
        self.eval(&format!(
            "(e => !!e && e.getClientRects().length > 0)(document.querySelector({}))",
            json!(selector)
        ))
        .await
            == true
    }

    /// Every URL the page asked for so far over HTTP or WebSocket (with [`Browser::launch_observed`]).
    pub async fn requested_urls(&mut self) -> Vec<String> {
        // A command's reply comes after every event sent before it.
        self.eval("0").await;
        self.events
            .iter()
            .filter_map(|e| match e["method"].as_str() {
                Some("Network.requestWillBeSent") => e["params"]["request"]["url"].as_str(),
                Some("Network.webSocketCreated") => e["params"]["url"].as_str(),
                _ => None,
            })
            .map(str::to_string)
            .collect()
    }

    /// The request headers of every request the page sent to a URL ending in `path`.
    pub async fn request_headers(&mut self, path: &str) -> Vec<Value> {
        self.eval("0").await;
        self.events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .filter(|e| {
                e["params"]["request"]["url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with(path))
            })
            .map(|e| e["params"]["request"]["headers"].clone())
            .collect()
    }

    /// Saves a PNG of the page at `path` (for looking at a failure).
    pub async fn screenshot(&mut self, path: &std::path::Path) {
        use base64::Engine as _;
        let reply = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(reply["result"]["data"].as_str().expect("screenshot data"))
            .expect("base64 screenshot");
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Ends Chromium and removes its profile.
    pub async fn close(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

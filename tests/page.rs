//! The progress page, driven in headless Chromium over the DevTools protocol: from the start
//! button to 100 % and a working download link, with updates arriving over the WebSocket
//! subscription.

mod common;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Chromium, as Debian installs it (scripts/test installs it when missing).
fn chromium() -> String {
    std::env::var("AUTOS_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

struct Browser {
    child: tokio::process::Child,
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Browser {
    async fn launch() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let profile = temp_dir("chromium");
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
        Browser {
            child,
            ws,
            next_id: 0,
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(Message::text(request)).await.unwrap();
        loop {
            let message = self.ws.next().await.expect("devtools closed").unwrap();
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["id"] == id {
                    return value;
                }
            }
        }
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let reply = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        reply["result"]["result"]["value"].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_progress_page_follows_a_download_to_the_end() {
    let court = Court::start().await;
    let n = number(77);
    // Slow enough that the page watches the job run, not just its end.
    let docs: Vec<Doc> = (0..6)
        .map(|i| {
            Doc::new(
                &format!("d{i}"),
                &format!("Peça {i}.pdf"),
                bytes(40_000, i as u8),
            )
        })
        .collect();
    for doc in &docs {
        court.fail(
            &n,
            &doc.id,
            vec![Fault::Slow {
                chunk: 8_000,
                every: Duration::from_millis(60),
            }],
        );
    }
    court.add_process(&n, docs);
    let app = TestApp::spawn_with(
        court,
        Options {
            workers: 2,
            batch_size: 1,
            ..Options::default()
        },
    )
    .await;

    let mut browser = Browser::launch().await;
    browser.call("Page.enable", json!({})).await;
    // Count what arrives over the page's WebSocket, to tell a live page from a polling one.
    browser
        .call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": "
                window.__progress = [];
                const Native = window.WebSocket;
                window.WebSocket = function (url, protocols) {
                    const socket = new Native(url, protocols);
                    socket.addEventListener('message', (e) => {
                        const m = JSON.parse(e.data);
                        if (m.type === 'next') window.__progress.push(m.payload.data.jobProgress.progress);
                    });
                    return socket;
                };
                window.WebSocket.prototype = Native.prototype;" }),
        )
        .await;
    let page = app.url(&format!("/?number={n}"));
    browser.call("Page.navigate", json!({ "url": page })).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    while browser.eval("!!document.getElementById('start')").await != true {
        assert!(Instant::now() < deadline, "page did not load");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        browser
            .eval("document.getElementById('number').value")
            .await,
        n.as_str()
    );
    browser
        .eval("document.getElementById('start').click()")
        .await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = browser
            .eval("document.getElementById('status').getAttribute('data-status') || document.getElementById('status').textContent")
            .await;
        let text = status.as_str().unwrap_or_default().to_string();
        if text.contains("COMPLETED") || text.contains("FAILED") || text.contains("CANCELLED") {
            break text;
        }
        assert!(Instant::now() < deadline, "page still shows {text:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.contains("COMPLETED"), "{status}");
    assert_eq!(
        browser
            .eval("document.getElementById('progress').value")
            .await,
        100
    );
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#documents tr[data-status=AVAILABLE]').length")
            .await,
        6
    );

    // Updates came over the subscription, in order, up to 100.
    let progress: Vec<i64> =
        serde_json::from_value(browser.eval("window.__progress").await).unwrap();
    assert!(progress.len() >= 3, "few live updates: {progress:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(progress.last(), Some(&100));

    // The page's download link serves the document.
    let href = browser
        .eval("document.querySelector('#documents a.download').href")
        .await;
    let response = reqwest::get(href.as_str().unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), 40_000);

    // The built-in webhook test receiver, from the page: a signed test event that verifies.
    browser
        .eval("document.getElementById('hooks-send').click()")
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let verified = browser
            .eval("document.querySelectorAll('#hooks li[data-valid=true]').length")
            .await;
        if verified.as_i64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the test event never showed as verified"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let result = browser
        .eval("document.getElementById('hooks-result').textContent")
        .await;
    assert!(
        result.as_str().unwrap_or_default().contains("200"),
        "{result}"
    );

    let _ = browser.child.kill().await;
    app.stop().await;
}

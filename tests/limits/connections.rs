//! HTTP connections: bodies over the limit, clients that are slow to send their request, and
//! requests that run too long.

use super::*;

/// startDownload of `number`, with blanks in the query so that the body is `size` bytes.
fn padded_start(number: &str, size: usize) -> String {
    let bare = json!({ "query": START, "variables": { "n": number } }).to_string();
    let query = format!("{START}{}", " ".repeat(size.saturating_sub(bare.len())));
    let body = json!({ "query": query, "variables": { "n": number } }).to_string();
    assert_eq!(body.len(), size.max(bare.len()));
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_over_max_body_bytes_gets_413_and_nothing_runs() {
    let court = Court::start().await;
    let n = number(501);
    court.add_process(&n, docs(2, 51));
    let app = spawn_configured(court, |c| c.max_body_bytes = 4096).await;
    let url = app.url("/graphql");

    // Announced by Content-Length.
    let over = app
        .http
        .post(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(padded_start(&n, 8 * 1024))
        .send()
        .await
        .expect("request");
    let over = Reply::of(over).await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", over.text);

    // Sent in chunks, with no length announced: refused once past the limit.
    let body = padded_start(&n, 16 * 1024).into_bytes();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(1024).map(|c| Ok(c.to_vec())).collect();
    let chunked = app
        .http
        .post(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    match chunked {
        Ok(chunked) => {
            let chunked = Reply::of(chunked).await;
            assert_eq!(
                chunked.status,
                StatusCode::PAYLOAD_TOO_LARGE,
                "{}",
                chunked.text
            );
        }
        // The server answered 413 and closed the connection before the client had written
        // the rest: refused as well (on a busy machine the client may not read the answer).
        Err(err) => {
            let seen = format!("{err:?}");
            assert!(
                seen.contains("BrokenPipe") || seen.contains("ConnectionReset"),
                "{seen}"
            );
        }
    }

    assert_eq!(jobs_in_db(&app).await, 0, "a job was created");
    assert_eq!(app.court.lookups(), 0, "the court was asked");

    // Within the limit, the same operation runs.
    let within = app
        .http
        .post(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(padded_start(&n, 4000))
        .send()
        .await
        .expect("request");
    let within = Reply::of(within).await;
    assert_charged(&within, 2 + 10 + 100, "a body within the limit");
    assert_eq!(jobs_in_db(&app).await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_announced_as_100_mb_gets_413_without_waiting_for_it() {
    let app = TestApp::spawn(Court::start().await).await;
    let mut tcp = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n{{\"query\": \"",
        app.addr, app.key
    );
    let started = Instant::now();
    tcp.write_all(head.as_bytes()).await.expect("send");
    // The rest never comes: the answer must not wait for it.
    let reply = read_reply(&mut tcp, started + Duration::from_secs(5)).await;
    println!("413 after {:?}: {}", started.elapsed(), reply.body);
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(jobs_in_db(&app).await, 0);
    app.stop().await;
}

/// Sends `bytes` and waits (at most 15 s) for the server to close the connection; how long it
/// took, or `None` if it did not.
async fn dropped_after(addr: SocketAddr, bytes: &'static [u8]) -> Option<Duration> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    tcp.write_all(bytes).await.expect("send");
    closed_within(&mut tcp, started, started + Duration::from_secs(15)).await
}

/// Sends `bytes` one a second, and waits (at most 15 s) for the server to close the
/// connection; how long it took, or `None` if it did not.
async fn dropped_while_trickling(addr: SocketAddr, bytes: &'static [u8]) -> Option<Duration> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(15);
    for byte in bytes {
        if tcp.write_all(&[*byte]).await.is_err() {
            return Some(started.elapsed());
        }
        let next = Instant::now() + Duration::from_secs(1);
        if let Some(after) = closed_within(&mut tcp, started, next.min(deadline)).await {
            return Some(after);
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
    closed_within(&mut tcp, started, deadline).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_slow_to_send_its_request_headers_is_dropped_after_about_10_s() {
    let app = TestApp::spawn(Court::start().await).await;
    let stopped = dropped_after(
        app.addr,
        b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl",
    );
    // A slow-loris client: a byte a second, never done.
    let trickling = dropped_while_trickling(
        app.addr,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaa\r\n",
    );
    let (stopped, trickling) = tokio::join!(stopped, trickling);
    println!("stopped mid-headers: closed after {stopped:?}; trickling: after {trickling:?}");
    for (case, after) in [("stopped", stopped), ("trickling", trickling)] {
        let after = after.unwrap_or_else(|| panic!("{case}: still open after 15 s"));
        // Not a refusal of the request itself: the client was given its time.
        assert!(
            after >= Duration::from_secs(5),
            "{case}: closed after only {after:?}"
        );
    }
    let health = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_sends_no_request_at_all_is_dropped_too() {
    let app = TestApp::spawn(Court::start().await).await;
    // Connected, and nothing sent; and the start of the HTTP/2 preface, then nothing.
    let silent = dropped_after(app.addr, b"");
    let preface = dropped_after(app.addr, b"PRI * HTTP/2.0\r\n");
    let (silent, preface) = tokio::join!(silent, preface);
    println!("silent: closed after {silent:?}; part of the HTTP/2 preface: after {preface:?}");
    assert!(
        silent.is_some() && preface.is_some(),
        "request headers are due within 10 s, yet after 15 s: silent connection {}, \
         part of an HTTP/2 preface {}",
        silent.map_or("open".to_string(), |d| format!("closed after {d:?}")),
        preface.map_or("open".to_string(), |d| format!("closed after {d:?}")),
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_running_longer_than_request_timeout_secs_gets_503_timeout() {
    let court = Court::start().await;
    let n = number(502);
    court.add_process(&n, docs(2, 52));
    // The court does not answer the first lookup at all.
    court.fail_lookups(vec![Fault::Hang]);
    let app = spawn_configured(court, |c| c.request_timeout_secs = 1).await;
    let lookup = "query($n: String!) { process(number: $n) { number documents { sourceId } } }";

    let started = Instant::now();
    let got = gql(&app, lookup, json!({ "n": n })).await;
    let took = started.elapsed();
    println!("answered after {took:?}: {} {}", got.status, got.text);
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE, "{}", got.text);
    assert_eq!(got.code(), "TIMEOUT", "{}", got.text);
    assert!(
        took < Duration::from_secs(10),
        "answered only after {took:?}"
    );
    // It ran, so it was charged, and says so.
    rate_limit_header(&got, "503");
    assert!(
        got.header("ratelimit-policy").is_some(),
        "{:?}",
        got.headers
    );
    assert_eq!(app.court.lookups(), 1);

    // The court answers again: so does autos, at once.
    let again = gql(&app, lookup, json!({ "n": n })).await;
    assert_charged(&again, 100 + 1 + 1000, "the lookup again");
    assert_eq!(again.body["data"]["process"]["number"], n);
    app.stop().await;
}

//! The HTTP server: HTTP/1.1 with upgrades (WebSockets) and HTTP/2, request headers within
//! [`HEADER_TIMEOUT`], no Nagle delay on small messages, and a graceful stop.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

/// A client must send its request's headers within this (slow-loris clients are dropped).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// On stop, requests under way get this long to end.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a new connection starts a request within [`HEADER_TIMEOUT`]: its first bytes, or
/// the whole HTTP/2 preface when they begin one.
async fn opens_in_time(tcp: &tokio::net::TcpStream) -> bool {
    let started = async {
        let mut first = [0u8; 24];
        loop {
            match tcp.peek(&mut first).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n >= H2_PREFACE.len() || !H2_PREFACE.starts_with(&first[..n]) => {
                    return true
                }
                // Part of an HTTP/2 preface: wait for the rest.
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    tokio::time::timeout(HEADER_TIMEOUT, started)
        .await
        .unwrap_or(false)
}

/// Serves `app` on `listener` until `stop` changes.
pub async fn serve(listener: TcpListener, app: Router, mut stop: watch::Receiver<bool>) {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(HEADER_TIMEOUT);
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        // Small messages (GraphQL over WebSocket) go out at once, not after Nagle's wait.
        let _ = tcp.set_nodelay(true);
        let service =
            app.clone()
                .map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(ConnectInfo::<SocketAddr>(peer));
                    request
                });
        let http = http.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // hyper's header timeout starts once it knows the protocol; a client that sends
            // nothing (or half an HTTP/2 preface) would hold the connection until then.
            if !opens_in_time(&tcp).await {
                return;
            }
            let connection = http.serve_connection_with_upgrades(
                TokioIo::new(tcp),
                TowerToHyperService::new(service),
            );
            if let Err(err) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(error = %err, %peer, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(STOP_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still under way after {STOP_GRACE:?}; stopping anyway");
    }
}

//! Tests against real HTTP servers on 127.0.0.1 and real folders.

mod file;
mod lookup;
mod open;
mod verify;

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{DocumentBody, ListedDocument, Source, SourceConfig, SourceError};
use crate::domain::ProcessNumber;

pub(super) const NUMBER: &str = "1500345-31.2017.8.26.0248";

pub(super) fn number() -> ProcessNumber {
    ProcessNumber::parse(NUMBER).expect("a valid process number")
}

/// Short timeouts and backoff, so that retry tests stay fast.
pub(super) fn config(url: &str) -> SourceConfig {
    SourceConfig {
        url: url.to_owned(),
        token: None,
        request_timeout: Duration::from_secs(5),
        lookup_attempts: 3,
        lookup_backoff: Duration::from_millis(10),
        concurrency: 8,
        // Every lookup reaches the test server, unknown numbers included.
        not_found_ttl: Duration::ZERO,
        allowed_hosts: Vec::new(),
        allow_private: false,
        rate_per_minute: 1000,
        ca_certificates: Vec::new(),
    }
}

pub(super) fn source(url: &str) -> Source {
    Source::new(config(url)).expect("a valid source")
}

/// Serves `router` on an ephemeral port; gives its base URL (no trailing slash).
pub(super) async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// Answers every connection with exactly `response`, then closes it: for answers no
/// well-behaved server would give, such as a body shorter than its Content-Length.
pub(super) async fn serve_raw(response: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket.write_all(&response).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

pub(super) fn doc(id: &str, url: &str) -> ListedDocument {
    ListedDocument {
        id: id.to_owned(),
        name: format!("{id}.pdf"),
        kind: None,
        url: url.to_owned(),
        size: None,
        sha256: None,
        mime_type: None,
        sigilo: 0,
        parent: None,
    }
}

pub(super) fn listing_json(documents: Value) -> Value {
    json!({"number": NUMBER, "court": "TJSP", "class": "Procedimento Comum Cível",
           "subject": "Indenização", "documents": documents})
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Reads a body to its end; the first error item wins.
pub(super) async fn read_all(
    mut stream: impl futures::Stream<Item = Result<bytes::Bytes, SourceError>> + Unpin,
) -> Result<Vec<u8>, SourceError> {
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        out.extend_from_slice(&item?);
    }
    Ok(out)
}

pub(super) async fn read_body(body: DocumentBody) -> Result<Vec<u8>, SourceError> {
    read_all(body.stream).await
}

/// A folder under the system's temp dir, removed when dropped.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new() -> Self {
        let name = format!(
            "autos-source-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }

    pub(super) fn url(&self) -> String {
        url::Url::from_directory_path(&self.0)
            .expect("absolute path")
            .to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn new_accepts_only_known_schemes_and_existing_folders() {
    let invalid = |url: &str| match Source::new(config(url)) {
        Err(SourceError::Invalid { message }) => message,
        other => panic!(
            "{url}: expected Invalid, got {:?}",
            other.map(|s| s.describe())
        ),
    };
    assert!(invalid("ftp://example.com/x").contains("ftp://example.com/x"));
    assert!(invalid("not a url").contains("not a url"));
    assert!(invalid("file:///definitely/not/here/autos").contains("/definitely/not/here"));
    assert!(invalid("http://h/api?key=1").contains("query"));
    let message = invalid("ftp://user:secret@example.com/");
    assert!(!message.contains("secret"), "{message}");
}

#[test]
fn describe_hides_credentials_and_token() {
    let mut cfg = config("https://user:pw@court.example/api");
    cfg.token = Some("s3cr3t".into());
    let described = Source::new(cfg.clone()).unwrap().describe();
    assert_eq!(described, "https://court.example/api/ (with token)");
    assert!(!format!("{cfg:?}").contains("s3cr3t"));
    let dir = TempDir::new();
    assert!(source(&dir.url()).describe().starts_with("file:///"));
}

#[test]
fn a_token_unfit_for_a_header_is_refused_without_echoing_it() {
    let mut cfg = config("http://h/");
    cfg.token = Some("bad\ntoken".into());
    let message = Source::new(cfg).unwrap_err().to_string();
    assert!(!message.contains("bad"), "{message}");
}

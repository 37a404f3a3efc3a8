//! `Source::open` over HTTP.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

use super::{config, doc, number, read_body, serve, serve_raw, source};
use crate::source::{Source, SourceError};

const PDF: &[u8] = b"%PDF-1.7 not really";

type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Serves `/api/files/{name}` (and any other path: 404), logging each path and its
/// Authorization header.
async fn files_server() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let router = Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
        let auth = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned());
        log.lock().unwrap().push((uri.path().to_owned(), auth));
        async move {
            match uri.path() {
                "/api/files/d1" | "/elsewhere/d1" => {
                    ([(header::CONTENT_TYPE, "application/pdf")], PDF).into_response()
                }
                "/api/files/boom" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                "/api/files/busy" => {
                    (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "7")]).into_response()
                }
                "/api/files/gone" => StatusCode::GONE.into_response(),
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    (serve(router).await, seen)
}

#[tokio::test]
async fn relative_urls_are_fetched_under_the_base() {
    let (server, seen) = files_server().await;
    let source = source(&format!("{server}/api"));
    for url in ["/files/d1", "files/d1"] {
        let body = source.open(&number(), &doc("d1", url)).await.unwrap();
        assert_eq!(body.content_length, Some(PDF.len() as u64));
        assert_eq!(body.content_type.as_deref(), Some("application/pdf"));
        assert_eq!(read_body(body).await.unwrap(), PDF);
    }
    let paths: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(paths, ["/api/files/d1", "/api/files/d1"]);
}

#[tokio::test]
async fn absolute_urls_are_fetched_as_they_are() {
    let (server, seen) = files_server().await;
    let source = source(&format!("{server}/api"));
    let body = source
        .open(&number(), &doc("d1", &format!("{server}/elsewhere/d1")))
        .await;
    assert_eq!(read_body(body.unwrap()).await.unwrap(), PDF);
    assert_eq!(seen.lock().unwrap()[0].0, "/elsewhere/d1");
}

#[tokio::test]
async fn token_goes_to_the_source_origin_only() {
    let (own, own_seen) = files_server().await;
    let (foreign, foreign_seen) = files_server().await;
    let mut cfg = config(&format!("{own}/api"));
    cfg.token = Some("tok-123".into());
    let source = Source::new(cfg).unwrap();
    for url in ["/files/d1".to_owned(), format!("{own}/elsewhere/d1")] {
        let body = source.open(&number(), &doc("d1", &url)).await.unwrap();
        read_body(body).await.unwrap();
    }
    let body = source
        .open(&number(), &doc("d1", &format!("{foreign}/elsewhere/d1")))
        .await;
    read_body(body.unwrap()).await.unwrap();
    let bearer = Some("Bearer tok-123".to_owned());
    assert!(own_seen
        .lock()
        .unwrap()
        .iter()
        .all(|(_, auth)| *auth == bearer));
    assert_eq!(
        foreign_seen.lock().unwrap().as_slice(),
        [("/elsewhere/d1".into(), None)]
    );
}

#[tokio::test]
async fn answers_are_classified() {
    let (server, _) = files_server().await;
    let source = source(&format!("{server}/api"));
    let fail = |url: &'static str| {
        let source = source.clone();
        async move { source.open(&number(), &doc("d3", url)).await.unwrap_err() }
    };

    let missing = fail("files/missing").await;
    assert!(
        matches!(&missing, SourceError::Permanent { .. }),
        "{missing:?}"
    );
    assert_eq!(
        missing.to_string(),
        "source answered 404 Not Found for document d3"
    );
    let gone = fail("files/gone").await;
    assert!(matches!(gone, SourceError::Permanent { .. }), "{gone:?}");
    let boom = fail("files/boom").await;
    assert!(
        boom.is_retryable() && boom.to_string().contains("500"),
        "{boom:?}"
    );
    let busy = fail("files/busy").await;
    assert_eq!(busy.retry_after(), Some(std::time::Duration::from_secs(7)));
}

#[tokio::test]
async fn escaping_urls_are_refused_before_any_request() {
    let (server, seen) = files_server().await;
    let source = source(&format!("{server}/api"));
    for url in [
        "../secret",
        "files/../../secret",
        "%2e%2e/secret",
        "file:///etc/passwd",
    ] {
        let err = source.open(&number(), &doc("d1", url)).await.unwrap_err();
        assert!(
            matches!(err, SourceError::Permanent { .. }),
            "{url}: {err:?}"
        );
    }
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn chunked_bodies_have_no_length() {
    let router = Router::new().route(
        "/files/d1",
        get(|| async {
            let chunks =
                ["first ", "second ", "third"].map(|c| Ok::<_, Infallible>(Bytes::from(c)));
            Body::from_stream(futures::stream::iter(chunks))
        }),
    );
    let source = source(&serve(router).await);
    let body = source
        .open(&number(), &doc("d1", "files/d1"))
        .await
        .unwrap();
    assert_eq!(body.content_length, None);
    assert_eq!(read_body(body).await.unwrap(), b"first second third");
}

#[tokio::test]
async fn a_connection_closed_early_is_retryable() {
    let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
    response.extend_from_slice(&[7u8; 40]);
    let source = source(&serve_raw(response).await);
    let body = source
        .open(&number(), &doc("d1", "files/d1"))
        .await
        .unwrap();
    assert_eq!(body.content_length, Some(100));
    let err = read_body(body).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("after 40 of 100 bytes"), "{err}");
}

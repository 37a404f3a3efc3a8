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
use crate::net::HostPattern;
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
    // The foreign server is on 127.0.0.1 too, another port: allowed by name and address.
    cfg.allowed_hosts = HostPattern::parse_list("127.0.0.1").unwrap();
    cfg.allow_private = true;
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
    assert_eq!(missing, SourceError::permanent("the source answered 404"));
    let gone = fail("files/gone").await;
    assert_eq!(gone, SourceError::permanent("the source answered 410"));
    let boom = fail("files/boom").await;
    assert_eq!(boom, SourceError::retryable("the source answered 500"));
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
    assert_eq!(
        err,
        SourceError::retryable("the connection broke during the transfer")
    );
}

/// Serves `/hop/{n}`: a redirect to `/hop/{n-1}`, and from `/hop/1` to `target`; serves
/// `/api/files/d1` itself. Logs each path and its Authorization header, as `files_server`.
async fn hops_server(target: &str) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let target = target.to_owned();
    let router = Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
        let auth = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned());
        log.lock().unwrap().push((uri.path().to_owned(), auth));
        let target = target.clone();
        async move {
            let hop = uri
                .path()
                .strip_prefix("/hop/")
                .and_then(|n| n.parse::<u32>().ok());
            match hop {
                Some(1) => (StatusCode::FOUND, [(header::LOCATION, target)]).into_response(),
                Some(n) => {
                    let next = format!("/hop/{}", n - 1);
                    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, next)]).into_response()
                }
                None if uri.path() == "/api/files/d1" => PDF.into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    (serve(router).await, seen)
}

fn paths(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.clone())
        .collect()
}

#[tokio::test]
async fn redirects_on_the_own_origin_are_followed_with_the_token_up_to_five() {
    let (server, seen) = hops_server("/api/files/d1").await;
    let mut cfg = config(&format!("{server}/api"));
    cfg.token = Some("tok-123".into());
    let source = Source::new(cfg).unwrap();
    let body = source
        .open(&number(), &doc("d1", &format!("{server}/hop/5")))
        .await
        .unwrap();
    assert_eq!(read_body(body).await.unwrap(), PDF);
    assert_eq!(
        paths(&seen),
        [
            "/hop/5",
            "/hop/4",
            "/hop/3",
            "/hop/2",
            "/hop/1",
            "/api/files/d1"
        ]
    );
    let bearer = Some("Bearer tok-123".to_owned());
    assert!(seen.lock().unwrap().iter().all(|(_, auth)| *auth == bearer));

    seen.lock().unwrap().clear();
    let err = source
        .open(&number(), &doc("d1", &format!("{server}/hop/6")))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SourceError::permanent("document URL refused: too many redirects")
    );
    assert_eq!(
        paths(&seen),
        ["/hop/6", "/hop/5", "/hop/4", "/hop/3", "/hop/2", "/hop/1"],
        "the sixth redirect is not followed"
    );
}

#[tokio::test]
async fn a_redirect_elsewhere_is_checked_before_it_is_followed() {
    let (foreign, foreign_seen) = files_server().await;
    let (own, own_seen) = hops_server(&format!("{foreign}/elsewhere/d1")).await;
    let open = |allowed: &str, allow_private: bool| {
        let mut cfg = config(&format!("{own}/api"));
        cfg.token = Some("tok-123".into());
        cfg.allowed_hosts = HostPattern::parse_list(allowed).unwrap();
        cfg.allow_private = allow_private;
        let source = Source::new(cfg).unwrap();
        let url = format!("{own}/hop/1");
        async move { source.open(&number(), &doc("d1", &url)).await }
    };
    let refused = |what: &str| SourceError::permanent(format!("document URL refused: {what}"));

    let err = open("", false).await.unwrap_err();
    assert_eq!(err, refused("host not allowed"));
    let err = open("*.example.com, localhost", true).await.unwrap_err();
    assert_eq!(err, refused("host not allowed"));
    let err = open("127.0.0.1", false).await.unwrap_err();
    assert_eq!(err, refused("private address"));
    assert!(foreign_seen.lock().unwrap().is_empty(), "nothing fetched");
    assert_eq!(own_seen.lock().unwrap().len(), 3);

    let body = open("127.0.0.1", true).await.unwrap();
    assert_eq!(read_body(body).await.unwrap(), PDF);
    assert_eq!(
        foreign_seen.lock().unwrap().as_slice(),
        [("/elsewhere/d1".into(), None)],
        "an allowed host gets no token"
    );
}

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn failures_are_logged_in_detail_without_secrets() {
    let (server, _) = files_server().await;
    let (elsewhere, _) = files_server().await;
    let with_credentials = server.replace("http://", "http://user:pa55word@");
    let mut cfg = config(&format!("{with_credentials}/api"));
    cfg.token = Some("tok-s3cr3t".into());
    let source = Source::new(cfg).unwrap();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    for url in [
        "files/missing".to_owned(),
        "files/boom".to_owned(),
        format!("{elsewhere}/elsewhere/d1"),
    ] {
        let err = source.open(&number(), &doc("d1", &url)).await.unwrap_err();
        assert!(!err.to_string().contains("127.0.0.1"), "{err}");
    }
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for detail in [
        "404 Not Found",
        "500 Internal Server Error",
        "/api/files/missing",
    ] {
        assert!(log.contains(detail), "{detail} not in {log}");
    }
    assert!(log.contains("AUTOS_SOURCE_ALLOWED_HOSTS"), "{log}");
    for secret in ["pa55word", "tok-s3cr3t"] {
        assert!(!log.contains(secret), "{secret} in {log}");
    }
}

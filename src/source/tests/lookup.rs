//! `Source::lookup` over HTTP.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::{config, listing_json, number, serve, serve_raw, source, NUMBER};
use crate::source::{Source, SourceError};

/// A server whose n-th lookup (from 0) is answered by `answer(n)`; gives its URL and a counter.
async fn scripted(
    answer: impl Fn(usize) -> Response + Clone + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let router = Router::new().route(
        "/api/processes/{number}",
        get(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            async move { answer(n) }
        }),
    );
    (format!("{}/api", serve(router).await), calls)
}

fn ok_listing() -> Response {
    let docs = json!([{"id": "d1", "name": "Petição inicial.pdf", "kind": "Petição Inicial",
                       "url": "/files/d1", "size": 3, "sha256": "AA".repeat(32),
                       "mimeType": "application/pdf"},
                      {"id": "d2", "name": "Sentença.pdf", "url": "files/d2"}]);
    Json(listing_json(docs)).into_response()
}

#[tokio::test]
async fn found_process_is_listed_and_normalized() {
    let (url, calls) = scripted(|_| ok_listing()).await;
    let listing = source(&url).lookup(&number()).await.unwrap().unwrap();
    assert_eq!(listing.number, NUMBER);
    assert_eq!(listing.court.as_deref(), Some("TJSP"));
    assert_eq!(listing.documents.len(), 2);
    let d1 = &listing.documents[0];
    assert_eq!(d1.sha256, Some("aa".repeat(32)));
    assert_eq!(
        (d1.size, d1.mime_type.as_deref()),
        (Some(3), Some("application/pdf"))
    );
    let d2 = &listing.documents[1];
    assert_eq!(
        (d2.kind.as_ref(), d2.size, d2.sha256.as_ref()),
        (None, None, None)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_number_is_sent_formatted_under_the_base_path() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let router = Router::new().route(
        "/api/processes/{number}",
        get(move |Path(n): Path<String>| {
            log.lock().unwrap().push(n);
            async { StatusCode::NOT_FOUND }
        }),
    );
    let url = format!("{}/api/", serve(router).await);
    assert_eq!(source(&url).lookup(&number()).await, Ok(None));
    assert_eq!(*seen.lock().unwrap(), [NUMBER]);
}

#[tokio::test]
async fn unknown_process_is_none_without_retrying() {
    let (url, calls) = scripted(|_| StatusCode::NOT_FOUND.into_response()).await;
    assert_eq!(source(&url).lookup(&number()).await, Ok(None));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn server_errors_are_retried() {
    let (url, calls) = scripted(|n| match n {
        0 => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        _ => ok_listing(),
    })
    .await;
    assert!(source(&url).lookup(&number()).await.unwrap().is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after() {
    let (url, calls) = scripted(|n| match n {
        0 => (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")]).into_response(),
        _ => ok_listing(),
    })
    .await;
    let started = Instant::now();
    assert!(source(&url).lookup(&number()).await.unwrap().is_some());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn gives_up_after_the_configured_attempts() {
    let (url, calls) = scripted(|_| StatusCode::BAD_GATEWAY.into_response()).await;
    let err = source(&url).lookup(&number()).await.unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().contains("502"), "{err}");
    assert!(err.to_string().contains("3 attempts"), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn client_errors_fail_at_once() {
    let (url, calls) = scripted(|_| StatusCode::FORBIDDEN.into_response()).await;
    let err = source(&url).lookup(&number()).await.unwrap_err();
    assert!(matches!(err, SourceError::Permanent { .. }), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn invalid_json_is_invalid_and_not_retried() {
    let (url, calls) = scripted(|_| "{\"number\": ".into_response()).await;
    let err = source(&url).lookup(&number()).await.unwrap_err();
    assert!(matches!(err, SourceError::Invalid { .. }), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn duplicate_document_ids_are_invalid() {
    let docs = json!([{"id": "d1", "name": "a.pdf", "url": "a"},
                      {"id": "d1", "name": "b.pdf", "url": "b"}]);
    let (url, _) = scripted(move |_| Json(listing_json(docs.clone())).into_response()).await;
    let err = source(&url).lookup(&number()).await.unwrap_err();
    assert!(
        matches!(&err, SourceError::Invalid { message } if message.contains("d1")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_retryable() {
    let url = serve_raw(Vec::new()).await;
    let err = source(&url).lookup(&number()).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("3 attempts"), "{err}");
}

#[tokio::test]
async fn slow_source_times_out_as_retryable() {
    let router = Router::new().route(
        "/processes/{number}",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::NOT_FOUND
        }),
    );
    let mut cfg = config(&serve(router).await);
    cfg.request_timeout = Duration::from_millis(200);
    cfg.lookup_attempts = 2;
    let err = Source::new(cfg)
        .unwrap()
        .lookup(&number())
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn bearer_token_goes_to_the_source() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let router = Router::new().route(
        "/processes/{number}",
        get(move |headers: HeaderMap| {
            let auth = headers
                .get(header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_owned());
            log.lock().unwrap().push(auth);
            async { StatusCode::NOT_FOUND }
        }),
    );
    let mut cfg = config(&serve(router).await);
    cfg.token = Some("tok-123".into());
    Source::new(cfg).unwrap().lookup(&number()).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [Some("Bearer tok-123".to_owned())]);
}

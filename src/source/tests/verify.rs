//! `verify` and `check_announced`, in memory and over HTTP.

use bytes::Bytes;
use futures::StreamExt;

use super::{doc, number, read_all, serve_raw, sha256_hex, source};
use crate::source::{check_announced, verify, DocumentBody, SourceError};

const MAX: u64 = 1024;

// The phrases clients see as `lastError`: stable, whatever the numbers.
const TOO_LARGE: &str = "the document is larger than AUTOS_MAX_DOCUMENT_BYTES";
const SIZE_DIFFERS: &str = "the document's size differs from the announced size";
const SHA256_DIFFERS: &str = "the document's SHA-256 differs from the announced one";

fn body(chunks: &[&'static [u8]], content_length: Option<u64>) -> DocumentBody {
    let chunks: Vec<_> = chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
    DocumentBody {
        content_length,
        content_type: None,
        stream: futures::stream::iter(chunks).boxed(),
    }
}

/// Verifies a body and reads it all: gives the read result, every item that came through
/// (to check the error is the last one before the end), and the digest.
async fn run(
    body: DocumentBody,
    size: Option<u64>,
    sha: Option<&str>,
    max: u64,
) -> (Result<Vec<u8>, SourceError>, Option<(u64, String)>) {
    let (mut stream, digest) = verify(body, size, sha, max);
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item);
    }
    let errors = items.iter().filter(|i| i.is_err()).count();
    assert!(errors <= 1, "at most one error item");
    if errors == 1 {
        assert!(items.last().unwrap().is_err(), "the error is the last item");
    }
    let result = read_all(futures::stream::iter(items)).await;
    (result, digest.digest())
}

#[tokio::test]
async fn an_exact_match_passes_with_its_digest() {
    let sha = sha256_hex(b"hello world");
    let upper = sha.to_ascii_uppercase();
    let (read, digest) = run(
        body(&[b"hello ", b"world"], None),
        Some(11),
        Some(&upper),
        MAX,
    )
    .await;
    assert_eq!(read.unwrap(), b"hello world");
    assert_eq!(digest, Some((11, sha)));
}

#[tokio::test]
async fn nothing_announced_still_gives_a_digest() {
    let (read, digest) = run(body(&[b"abc"], None), None, None, MAX).await;
    assert_eq!(read.unwrap(), b"abc");
    assert_eq!(digest, Some((3, sha256_hex(b"abc"))));
}

#[tokio::test]
async fn a_sha_mismatch_fails_the_attempt() {
    let wrong = sha256_hex(b"something else");
    let (read, digest) = run(body(&[b"hello"], Some(5)), Some(5), Some(&wrong), MAX).await;
    let err = read.unwrap_err();
    assert_eq!(err, SourceError::retryable(SHA256_DIFFERS));
    assert_eq!(digest, None);
}

#[tokio::test]
async fn a_body_shorter_than_announced_is_truncated() {
    let (read, digest) = run(body(&[b"hel"], None), Some(5), None, MAX).await;
    let err = read.unwrap_err();
    assert_eq!(err, SourceError::retryable(SIZE_DIFFERS));
    assert_eq!(digest, None);
    // Content-Length alone is an announcement too.
    let (read, _) = run(body(&[b"hel"], Some(5)), None, None, MAX).await;
    assert_eq!(read.unwrap_err(), SourceError::retryable(SIZE_DIFFERS));
}

#[tokio::test]
async fn a_body_longer_than_announced_fails_as_soon_as_it_overflows() {
    let (read, digest) = run(body(&[b"hello", b" world", b"!"], None), Some(5), None, MAX).await;
    let err = read.unwrap_err();
    assert_eq!(err, SourceError::retryable(SIZE_DIFFERS));
    assert_eq!(digest, None);
}

#[tokio::test]
async fn a_body_over_the_cap_is_permanent() {
    let (read, _) = run(body(&[b"0123456789"], None), None, None, 4).await;
    let err = read.unwrap_err();
    assert_eq!(err, SourceError::permanent(TOO_LARGE));
    // Announced over the cap: refused before a single byte is passed on.
    let (mut stream, _) = verify(body(&[b"01"], None), Some(5), None, 4);
    let first = stream.next().await.unwrap().unwrap_err();
    assert_eq!(first, SourceError::permanent(TOO_LARGE));
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn stream_errors_pass_through_as_the_last_item() {
    let chunks = vec![
        Ok(Bytes::from_static(b"ab")),
        Err(SourceError::retryable("broken")),
    ];
    let body = DocumentBody {
        content_length: None,
        content_type: None,
        stream: futures::stream::iter(chunks).boxed(),
    };
    let (read, digest) = run(body, None, None, MAX).await;
    assert_eq!(read.unwrap_err().to_string(), "broken");
    assert_eq!(digest, None);
}

#[test]
fn announcements_are_checked_before_reading() {
    assert_eq!(check_announced(None, None, MAX), Ok(()));
    assert_eq!(check_announced(Some(10), Some(10), MAX), Ok(()));
    let over = check_announced(None, Some(MAX + 1), MAX).unwrap_err();
    assert_eq!(over, SourceError::permanent(TOO_LARGE));
    assert_eq!(
        check_announced(Some(MAX + 1), None, MAX),
        Err(SourceError::permanent(TOO_LARGE))
    );
    assert_eq!(
        check_announced(Some(10), Some(11), MAX),
        Err(SourceError::retryable(SIZE_DIFFERS))
    );
}

#[tokio::test]
async fn over_http_a_promised_length_cut_short_fails() {
    let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n".to_vec();
    response.extend_from_slice(b"12345");
    let source = source(&serve_raw(response).await);
    let opened = source.open(&number(), &doc("d1", "d1")).await.unwrap();
    let (read, digest) = run(opened, Some(10), None, MAX).await;
    let err = read.unwrap_err();
    assert_eq!(
        err,
        SourceError::retryable("the connection broke during the transfer")
    );
    assert_eq!(digest, None);
}

#[tokio::test]
async fn over_http_an_exact_body_verifies() {
    let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec();
    response.extend_from_slice(b"12345");
    let source = source(&serve_raw(response).await);
    let opened = source.open(&number(), &doc("d1", "d1")).await.unwrap();
    let sha = sha256_hex(b"12345");
    let (read, digest) = run(opened, Some(5), Some(&sha), MAX).await;
    assert_eq!(read.unwrap(), b"12345");
    assert_eq!(digest, Some((5, sha)));
}

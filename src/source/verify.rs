//! Length, SHA-256 and size cap, checked while the bytes stream past.
//!
//! Every failure is delivered as the stream's last item, before its end: a consumer that
//! uploads as it reads sees the error and never completes a bad upload. Its message is a
//! stable phrase (a document's `lastError`); the numbers are logged as it is made.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::{BoxStream, FusedStream, Stream, StreamExt};
use sha2::{Digest as _, Sha256};

use super::{DocumentBody, SourceError};

/// Over `AUTOS_MAX_DOCUMENT_BYTES`, announced or arrived.
const TOO_LARGE: &str = "the document is larger than AUTOS_MAX_DOCUMENT_BYTES";
/// Fewer or more bytes than announced (by the listing or by `Content-Length`).
const SIZE_DIFFERS: &str = "the document's size differs from the announced size";
/// All the bytes arrived, but not the announced ones.
const SHA256_DIFFERS: &str = "the document's SHA-256 differs from the announced one";

/// Whether a failure's phrase is about the document's own bytes (their size or SHA-256), as
/// opposed to reaching the source.
pub(crate) fn is_about_the_bytes(phrase: &str) -> bool {
    phrase == SIZE_DIFFERS || phrase == SHA256_DIFFERS
}

/// `error`, once `detail` is logged beside it (in the caller's span: job and document).
fn failed(error: SourceError, detail: impl std::fmt::Display) -> SourceError {
    tracing::warn!(error = %error, %detail, "document failed its checks");
    error
}

/// Refuses, before any byte is read, a document that is announced (by the listing or by
/// `Content-Length`) as larger than `max_bytes` (`Permanent`: retrying cannot shrink it), or
/// whose `Content-Length` contradicts its announced size (`Retryable`: a bad attempt).
pub fn check_announced(
    size: Option<u64>,
    content_length: Option<u64>,
    max_bytes: u64,
) -> Result<(), SourceError> {
    if let Some(n) = size
        .into_iter()
        .chain(content_length)
        .find(|&n| n > max_bytes)
    {
        return Err(failed(
            SourceError::permanent(TOO_LARGE),
            format_args!("announced as {n} bytes; the limit is {max_bytes}"),
        ));
    }
    match (size, content_length) {
        (Some(size), Some(length)) if size != length => Err(failed(
            SourceError::retryable(SIZE_DIFFERS),
            format_args!("Content-Length {length} for a document announced as {size} bytes"),
        )),
        _ => Ok(()),
    }
}

/// Wraps a body so that it is counted and hashed on the way; see
/// [`verify()`](crate::source::verify()).
pub fn verify(
    body: DocumentBody,
    expected_size: Option<u64>,
    expected_sha256: Option<&str>,
    max_bytes: u64,
) -> (Verified, VerifiedDigest) {
    let digest = VerifiedDigest::default();
    let pending = check_announced(expected_size, body.content_length, max_bytes).err();
    let verified = Verified {
        inner: body.stream,
        hasher: Sha256::new(),
        received: 0,
        // Content-Length is an announcement too: it catches truncation when the listing is silent.
        expected_size: expected_size.or(body.content_length),
        expected_sha256: expected_sha256.map(str::to_ascii_lowercase),
        max_bytes,
        pending,
        done: false,
        digest: digest.clone(),
    };
    (verified, digest)
}

/// A body stream that counts and hashes its bytes and fails (as its last item) as soon as
/// more than `max_bytes` or more than the announced size arrive, or at the end when fewer
/// bytes than announced arrived or the SHA-256 differs from the announced one.
///
/// Over the cap is `Permanent`; every other mismatch is `Retryable` (a failed attempt).
pub struct Verified {
    inner: BoxStream<'static, Result<Bytes, SourceError>>,
    hasher: Sha256,
    received: u64,
    expected_size: Option<u64>,
    expected_sha256: Option<String>,
    max_bytes: u64,
    pending: Option<SourceError>,
    done: bool,
    digest: VerifiedDigest,
}

/// Readable once the [`Verified`] stream has ended successfully; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct VerifiedDigest(Arc<OnceLock<(u64, String)>>);

impl VerifiedDigest {
    /// `(length, lowercase hex SHA-256)` of a fully and successfully verified body; `None`
    /// while it is still being read, or if it failed.
    pub fn digest(&self) -> Option<(u64, String)> {
        self.0.get().cloned()
    }
}

impl Verified {
    /// Same as [`VerifiedDigest::digest`], for a consumer that kept the stream.
    pub fn digest(&self) -> Option<(u64, String)> {
        self.digest.digest()
    }

    /// Bytes passed on so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    fn fail(&mut self, error: SourceError) -> Poll<Option<Result<Bytes, SourceError>>> {
        self.done = true;
        // Drop the body now, so its connection is released instead of idling until we are.
        self.inner = futures::stream::empty().boxed();
        Poll::Ready(Some(Err(error)))
    }

    fn finish(&mut self) -> Poll<Option<Result<Bytes, SourceError>>> {
        if let Some(expected) = self.expected_size {
            if self.received < expected {
                let detail = format_args!(
                    "the body ended after {} of {expected} announced bytes",
                    self.received
                );
                return self.fail(failed(SourceError::retryable(SIZE_DIFFERS), detail));
            }
        }
        let actual = hex::encode(self.hasher.finalize_reset());
        if let Some(expected) = &self.expected_sha256 {
            if *expected != actual {
                let detail = format_args!(
                    "the SHA-256 of the {} bytes received is {actual}, not the announced {expected}",
                    self.received
                );
                return self.fail(failed(SourceError::retryable(SHA256_DIFFERS), detail));
            }
        }
        self.done = true;
        let _ = self.digest.0.set((self.received, actual));
        Poll::Ready(None)
    }
}

impl Stream for Verified {
    type Item = Result<Bytes, SourceError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(error) = this.pending.take() {
            return this.fail(error);
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(error))) => this.fail(error),
            Poll::Ready(Some(Ok(chunk))) => {
                let received = this.received + chunk.len() as u64;
                if received > this.max_bytes {
                    let detail =
                        format_args!("{received} bytes arrived; the limit is {}", this.max_bytes);
                    return this.fail(failed(SourceError::permanent(TOO_LARGE), detail));
                }
                if let Some(expected) = this.expected_size.filter(|&e| received > e) {
                    let detail =
                        format_args!("the body is longer than the announced {expected} bytes");
                    return this.fail(failed(SourceError::retryable(SIZE_DIFFERS), detail));
                }
                this.received = received;
                this.hasher.update(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
        }
    }
}

impl FusedStream for Verified {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

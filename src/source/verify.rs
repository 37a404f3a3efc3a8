//! Length, SHA-256 and size cap, checked while the bytes stream past.
//!
//! Every failure is delivered as the stream's last item, before its end: a consumer that
//! uploads as it reads sees the error and never completes a bad upload.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::{BoxStream, FusedStream, Stream, StreamExt};
use sha2::{Digest as _, Sha256};

use super::{DocumentBody, SourceError};

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
        return Err(SourceError::permanent(format!(
            "document is {n} bytes, larger than the limit of {max_bytes} bytes"
        )));
    }
    match (size, content_length) {
        (Some(size), Some(length)) if size != length => Err(SourceError::retryable(format!(
            "source sent Content-Length {length} for a document announced as {size} bytes"
        ))),
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
                return self.fail(SourceError::retryable(format!(
                    "body ended after {} of {expected} announced bytes",
                    self.received
                )));
            }
        }
        let actual = hex::encode(self.hasher.finalize_reset());
        if let Some(expected) = &self.expected_sha256 {
            if *expected != actual {
                let message = format!(
                    "SHA-256 of the {} bytes received is {actual}, not the announced {expected}",
                    self.received
                );
                return self.fail(SourceError::retryable(message));
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
                    return this.fail(SourceError::permanent(format!(
                        "document is larger than the limit of {} bytes ({received} bytes arrived)",
                        this.max_bytes
                    )));
                }
                if let Some(expected) = this.expected_size.filter(|&e| received > e) {
                    return this.fail(SourceError::retryable(format!(
                        "body is longer than the announced {expected} bytes"
                    )));
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

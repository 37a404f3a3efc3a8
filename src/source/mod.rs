//! The upstream court source: where process listings and document bytes come from.
//!
//! Two kinds of source share one contract:
//!
//! - `http(s)://BASE`: `GET BASE/processes/{number}` answers the listing as JSON (404 for an
//!   unknown process), and each document's `url` is fetched as is when absolute, or as a path
//!   **under** `BASE` when relative. `BASE` is treated as a directory: with
//!   `http://host/api`, both `/files/d1` and `files/d1` mean `http://host/api/files/d1`. This
//!   is deliberately not RFC 3986 root-relative resolution, so that a source mounted under a
//!   path prefix works with listings written for a source at the root.
//! - `file://DIR`: `DIR/{number}/process.json` holds the same listing, and relative document
//!   urls name files in that process folder.
//!
//! [`Source::lookup`](crate::source::Source::lookup) retries transient failures itself;
//! [`Source::open`](crate::source::Source::open) makes exactly one attempt, because the task
//! queue above retries documents. [`verify()`](crate::source::verify()) checks length, SHA-256
//! and the size cap while the bytes stream past. Both spare the court (`spare.rs`): a few
//! requests at once, unknown numbers remembered a while, one request for simultaneous lookups.

mod credential;
mod file;
mod http;
mod mni;
mod path;
mod retry;
pub mod routes;
mod spare;
mod validate;
pub mod verify;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::domain::ProcessNumber;

pub use credential::{ClientCertificate, Credential};
pub(crate) use mni::CREDENTIAL_REFUSED;
pub use retry::parse_retry_after;
pub use routes::{Route, Sources};
pub use verify::{check_announced, verify, Verified, VerifiedDigest};

/// A process as the source lists it: its metadata and every document in its case file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessListing {
    /// The formatted process number (normalized to the number that was looked up).
    pub number: String,
    /// The court, e.g. `TJSP`.
    pub court: Option<String>,
    /// The procedural class.
    #[serde(rename = "class")]
    pub class: Option<String>,
    /// The subject matter.
    pub subject: Option<String>,
    /// The documents, in the source's order.
    pub documents: Vec<ListedDocument>,
    /// CNJ secrecy level, 0 (public) to 5.
    #[serde(default)]
    pub sigilo: u8,
}

/// One document of a process, as listed by the source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListedDocument {
    /// Stable, unique within the process.
    pub id: String,
    /// File name as shown to people, e.g. `Petição inicial.pdf`.
    pub name: String,
    /// Kind of filing, e.g. `Petição Inicial`.
    pub kind: Option<String>,
    /// Absolute `http(s)://` url, or relative to the source (or to the process folder).
    pub url: String,
    /// Announced size in bytes.
    pub size: Option<i64>,
    /// Announced SHA-256, lowercase hex after validation.
    pub sha256: Option<String>,
    /// Announced media type.
    #[serde(rename = "mimeType")]
    pub mime_type: Option<String>,
    /// CNJ secrecy level, 0 (public) to 5.
    #[serde(default)]
    pub sigilo: u8,
    /// The id of the document this one is attached to (an MNI `documentoVinculado`).
    #[serde(default)]
    pub parent: Option<String>,
}

/// How to reach the source and how hard to try when looking processes up.
#[derive(Clone)]
pub struct SourceConfig {
    /// `http://…`, `https://…` or `file://…`.
    pub url: String,
    /// Sent as `Authorization: Bearer …`, only to the source's own origin.
    pub token: Option<String>,
    /// Whole-request timeout for lookups; also the wait for a document's response headers
    /// and the longest pause allowed between two reads of a document body.
    pub request_timeout: Duration,
    /// Attempts per lookup, the first included (0 is taken as 1).
    pub lookup_attempts: u32,
    /// Wait before the second attempt; doubles for each later one, with jitter.
    pub lookup_backoff: Duration,
    /// Requests to the source at once in this process, lookups and transfers alike.
    pub concurrency: u32,
    /// How long a number the source does not know is answered as unknown without asking.
    pub not_found_ttl: Duration,
    /// Hosts besides the source's own origin that documents (and redirects) may come from
    /// (`AUTOS_SOURCE_ALLOWED_HOSTS`); none by default.
    pub allowed_hosts: Vec<crate::net::HostPattern>,
    /// Whether those hosts may be on private, loopback or link-local addresses
    /// (`AUTOS_SOURCE_ALLOW_PRIVATE`). The source's own origin is allowed whatever its address.
    pub allow_private: bool,
    /// Calls per minute per credential (MNI sources): courts lock accounts that hammer them.
    pub rate_per_minute: u32,
    /// Certificate authorities trusted for the source besides the usual roots (MNI sources;
    /// many courts chain to ICP-Brasil, which is not among them).
    pub ca_certificates: Vec<reqwest::Certificate>,
}

impl SourceConfig {
    /// A configuration for `url` with defaults suited to a public court source.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            request_timeout: Duration::from_secs(30),
            lookup_attempts: 4,
            lookup_backoff: Duration::from_millis(500),
            concurrency: 8,
            not_found_ttl: Duration::from_secs(300),
            allowed_hosts: Vec::new(),
            allow_private: false,
            rate_per_minute: routes::DEFAULT_RATE_PER_MINUTE,
            ca_certificates: Vec::new(),
        }
    }
}

impl SourceConfig {
    /// The same settings for another URL.
    pub fn with_url(self, url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..self
        }
    }
}

impl fmt::Debug for SourceConfig {
    // Hand-written so that the token never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.request_timeout)
            .field("lookup_attempts", &self.lookup_attempts)
            .field("lookup_backoff", &self.lookup_backoff)
            .field("concurrency", &self.concurrency)
            .field("not_found_ttl", &self.not_found_ttl)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("allow_private", &self.allow_private)
            .field("rate_per_minute", &self.rate_per_minute)
            .field("ca_certificates", &self.ca_certificates.len())
            .finish()
    }
}

/// The upstream source. Cheap to clone: every clone shares one HTTP client.
#[derive(Clone)]
pub struct Source {
    inner: Arc<Inner>,
}

struct Inner {
    kind: Kind,
    http: http::Http,
    lookup_attempts: u32,
    lookup_backoff: Duration,
    spare: spare::Spare,
}

enum Kind {
    Http {
        base: Url,
    },
    File {
        root: PathBuf,
    },
    /// An MNI 2.2.2 endpoint (`mni+http(s)://` with the prefix taken off), and its client.
    Mni(mni::Mni),
}

/// An opened document body, not yet read.
pub struct DocumentBody {
    /// `Content-Length` (or the file's size), when known.
    pub content_length: Option<u64>,
    /// `Content-Type` from the source, or the listed media type for files.
    pub content_type: Option<String>,
    /// The bytes; an error item means the attempt failed and nothing after it can be trusted.
    pub stream: BoxStream<'static, Result<bytes::Bytes, SourceError>>,
}

impl fmt::Debug for DocumentBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DocumentBody")
            .field("content_length", &self.content_length)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// Whose a failed transfer is (see [`SourceError::blame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The document's own.
    Document,
    /// The source's as a whole.
    Source,
    /// Either.
    Unclear,
}

/// What went wrong talking to the source, classified by what the caller should do next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    /// Worth another attempt later (5xx, 429, timeouts, broken connections, bad bytes).
    #[error("{message}")]
    Retryable {
        /// What happened, for people.
        message: String,
        /// How long the source asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (404, other 4xx, over the size cap, unsafe url).
    #[error("{message}")]
    Permanent {
        /// What happened, for people.
        message: String,
    },
    /// The source (or its configuration) does not follow the contract.
    #[error("{message}")]
    Invalid {
        /// What happened, for people.
        message: String,
    },
    /// The court refused the credential (or refused it this case): asking again with the same
    /// credential cannot help and may lock the account.
    #[error("{message}")]
    Denied {
        /// What happened, for people: never the secret.
        message: String,
    },
    /// The court answered with a failure of its own (a SOAP fault, `sucesso=false`): worth
    /// another attempt later; its `mensagem` is what clients see.
    #[error("the court answered: {mensagem}")]
    Court {
        /// The court's own words.
        mensagem: String,
    },
}

impl SourceError {
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SourceError::Retryable { .. } | SourceError::Court { .. }
        )
    }

    /// The court's own message, when it answered one.
    pub fn court_message(&self) -> Option<&str> {
        match self {
            SourceError::Court { mensagem } => Some(mensagem),
            _ => None,
        }
    }

    /// Whose failure it is: the document's own (its bytes, a 4xx about it, a refusal), the
    /// source's as a whole beyond doubt (unreachable; 429, 502, 503, 504: busy or down), or
    /// unclear (another 5xx, a timeout, a broken connection: a court down, or one document it
    /// cannot serve).
    pub fn blame(&self) -> Blame {
        let message = match self {
            SourceError::Retryable { message, .. } => message,
            SourceError::Court { .. } => return Blame::Unclear,
            _ => return Blame::Document,
        };
        const DOWN: [&str; 5] = [
            http::UNREACHABLE,
            "the source answered 429",
            "the source answered 502",
            "the source answered 503",
            "the source answered 504",
        ];
        if verify::is_about_the_bytes(message) {
            Blame::Document
        } else if DOWN.contains(&message.as_str()) {
            Blame::Source
        } else {
            Blame::Unclear
        }
    }

    /// The wait the source asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SourceError::Retryable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn retryable(message: impl Into<String>) -> Self {
        SourceError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn permanent(message: impl Into<String>) -> Self {
        SourceError::Permanent {
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        SourceError::Invalid {
            message: message.into(),
        }
    }

    pub(crate) fn denied(message: impl Into<String>) -> Self {
        SourceError::Denied {
            message: message.into(),
        }
    }

    /// Whether the court refused the credential itself (not just one case): it must not be
    /// used again until it is replaced, or the court may lock the account.
    pub fn refuses_credential(&self) -> bool {
        matches!(self, SourceError::Denied { message } if message == mni::CREDENTIAL_REFUSED)
    }
}

impl Source {
    /// Builds a source from its configuration. Accepts `http://`, `https://` and `file://`
    /// (an existing directory); anything else is an [`SourceError::Invalid`] naming the URL.
    pub fn new(cfg: SourceConfig) -> Result<Self, SourceError> {
        let raw = cfg.url.trim();
        // `mni+https://host/path` is the MNI endpoint `https://host/path`.
        let (mni, raw) = match raw.get(..4) {
            Some(prefix) if prefix.eq_ignore_ascii_case("mni+") => (true, &raw[4..]),
            _ => (false, raw),
        };
        let url = Url::parse(raw).map_err(|e| {
            SourceError::invalid(format!("source URL `{}` is not a valid URL: {e}", cfg.url))
        })?;
        let shown = redacted(&url);
        let kind = match url.scheme() {
            "http" | "https" if mni => Kind::Mni(mni::Mni::new(url, &cfg)?),
            "http" | "https" => Kind::Http {
                base: http::base_directory(url, &shown)?,
            },
            "file" if !mni => Kind::File {
                root: file::root_directory(&url, &shown)?,
            },
            other => {
                return Err(SourceError::invalid(format!(
                    "source URL `{shown}` has unsupported scheme `{}{other}`: \
                     expected mni+https://, https://, http:// or file://",
                    if mni { "mni+" } else { "" }
                )))
            }
        };
        let http = http::Http::new(&cfg, &kind)?;
        Ok(Self {
            inner: Arc::new(Inner {
                kind,
                http,
                lookup_attempts: cfg.lookup_attempts.max(1),
                lookup_backoff: cfg.lookup_backoff,
                spare: spare::Spare::new(cfg.concurrency, cfg.not_found_ttl),
            }),
        })
    }

    /// Whether this source takes credentials (MNI): others ignore them.
    pub fn takes_credentials(&self) -> bool {
        matches!(self.inner.kind, Kind::Mni(_))
    }

    /// The source for logs: its URL without credentials, and whether a token is configured.
    pub fn describe(&self) -> String {
        match &self.inner.kind {
            Kind::Http { base } => {
                let token = if self.inner.http.has_token() {
                    "with token"
                } else {
                    "without token"
                };
                format!("{} ({token})", redacted(base))
            }
            Kind::File { root } => format!("file://{}", root.display()),
            Kind::Mni(mni) => format!("mni+{}", redacted(mni.endpoint())),
        }
    }

    /// Looks a process up. `Ok(None)` when the source does not know it. Retryable failures
    /// are retried up to `lookup_attempts` times with exponential backoff and jitter, honouring
    /// `Retry-After` (capped); the listing is validated and normalized before it is returned.
    pub async fn lookup(
        &self,
        number: &ProcessNumber,
    ) -> Result<Option<ProcessListing>, SourceError> {
        self.lookup_as(number, None).await
    }

    /// [`Source::lookup`] presenting `credential` (MNI sources; others ignore it). Lookups
    /// are shared, and unknown numbers remembered, per credential: what a court shows depends
    /// on who asks.
    pub async fn lookup_as(
        &self,
        number: &ProcessNumber,
        credential: Option<&Credential>,
    ) -> Result<Option<ProcessListing>, SourceError> {
        let credential = credential.filter(|_| self.takes_credentials());
        let key = match credential {
            Some(c) => format!("{number} {}", c.key),
            None => number.as_str().to_string(),
        };
        self.inner
            .spare
            .lookup(&key, || self.lookup_now(number, credential))
            .await
    }

    /// [`Source::lookup`] asking the source, each attempt once a request slot is free.
    async fn lookup_now(
        &self,
        number: &ProcessNumber,
        credential: Option<&Credential>,
    ) -> Result<Option<ProcessListing>, SourceError> {
        let inner = &self.inner;
        let what = format!("process {number}");
        retry::with_retries(
            &what,
            inner.lookup_attempts,
            inner.lookup_backoff,
            || async {
                let _slot = inner.spare.slot().await;
                match &inner.kind {
                    Kind::Http { base } => inner.http.lookup(base, number).await,
                    Kind::File { root } => file::lookup(root, number).await,
                    Kind::Mni(mni) => mni.lookup(number, credential).await,
                }
            },
        )
        .await
    }

    /// Makes one attempt to open a document's body (the caller's queue does the retrying).
    ///
    /// The bearer token goes only to the source's own origin, never to a third-party host.
    /// A relative url that climbs out of the source base (or the process folder) is refused
    /// as [`SourceError::Permanent`].
    pub async fn open(
        &self,
        number: &ProcessNumber,
        doc: &ListedDocument,
    ) -> Result<DocumentBody, SourceError> {
        self.open_as(number, doc, None).await
    }

    /// [`Source::open`] presenting `credential` (MNI sources; others ignore it).
    pub async fn open_as(
        &self,
        number: &ProcessNumber,
        doc: &ListedDocument,
        credential: Option<&Credential>,
    ) -> Result<DocumentBody, SourceError> {
        self.inner
            .spare
            .open(|| self.open_now(number, doc, credential))
            .await
    }

    /// Whether `doc` is served by the source itself (its own origin, or its folder), rather
    /// than by another host it lists documents on: only failures of the source's own are a
    /// sign that the source is down.
    pub fn serves_itself(&self, doc: &ListedDocument) -> bool {
        match &self.inner.kind {
            Kind::Http { base } => {
                http::resolve(base, doc).is_ok_and(|url| url.origin() == base.origin())
            }
            Kind::File { .. } => matches!(http::absolute_http(doc), Ok(None)),
            Kind::Mni(_) => true,
        }
    }

    /// [`Source::open`] once its request slot is taken.
    async fn open_now(
        &self,
        number: &ProcessNumber,
        doc: &ListedDocument,
        credential: Option<&Credential>,
    ) -> Result<DocumentBody, SourceError> {
        let inner = &self.inner;
        match &inner.kind {
            Kind::Http { base } => {
                let url = http::resolve(base, doc)?;
                inner.http.open(url, doc).await
            }
            Kind::File { root } => match http::absolute_http(doc)? {
                // No origin of a folder can match a web host, so such urls never get the token.
                Some(url) => inner.http.open(url, doc).await,
                None => file::open(root, number, doc).await,
            },
            Kind::Mni(mni) => mni.open(number, doc, credential).await,
        }
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Source").field(&self.describe()).finish()
    }
}

/// The URL with any user name and password removed, fit for logs and messages.
fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    // Both calls only fail for URLs that cannot carry credentials in the first place.
    let _ = url.set_password(None);
    let _ = url.set_username("");
    url.to_string()
}

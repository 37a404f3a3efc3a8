//! The `http(s)://` source, and fetching any absolute `http(s)://` document url.

use std::error::Error as StdError;
use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use url::Url;

use super::path::decoded_contained_segments;
use super::retry::parse_retry_after;
use super::validate::{listing_from_json, MAX_LISTING_BYTES};
use super::{DocumentBody, ListedDocument, ProcessListing, SourceError};
use crate::domain::ProcessNumber;

/// The one HTTP client of a [`super::Source`], with the token ready to send.
pub(super) struct Http {
    client: reqwest::Client,
    auth: Option<HeaderValue>,
    request_timeout: Duration,
}

impl Http {
    pub(super) fn new(token: Option<&str>, request_timeout: Duration) -> Result<Self, SourceError> {
        let auth = match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(token) => {
                // Never echo the token: the error only says what is wrong with it.
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                        SourceError::invalid(
                            "the source token has characters an HTTP header cannot carry",
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let client = reqwest::Client::builder()
            .user_agent(concat!("autos/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(request_timeout)
            // Document bodies have no total deadline (they may be large), but a body that
            // stops moving for this long is a broken attempt rather than a slow one.
            .read_timeout(request_timeout)
            .build()
            .map_err(|e| SourceError::invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            client,
            auth,
            request_timeout,
        })
    }

    pub(super) fn has_token(&self) -> bool {
        self.auth.is_some()
    }

    fn get(&self, url: Url, send_token: bool) -> reqwest::RequestBuilder {
        let request = self.client.get(url);
        // reqwest drops Authorization itself when a redirect leaves the origin.
        match (&self.auth, send_token) {
            (Some(auth), true) => request.header(AUTHORIZATION, auth.clone()),
            _ => request,
        }
    }

    /// One lookup attempt: `GET {base}processes/{number}`.
    pub(super) async fn lookup(
        &self,
        base: &Url,
        number: &ProcessNumber,
    ) -> Result<Option<ProcessListing>, SourceError> {
        let what = format!("process {number}");
        let mut url = base.clone();
        url.path_segments_mut()
            .map_err(|_| SourceError::invalid(format!("source URL `{base}` cannot take a path")))?
            .pop_if_empty()
            .extend(["processes", number.as_str()]);
        let response = self
            .get(url, true)
            .header(ACCEPT, "application/json")
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| transport_error(&what, e))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(status_error(&what, status, response.headers()));
        }
        let body = read_capped(response, MAX_LISTING_BYTES, &what).await?;
        listing_from_json(&body, number).map(Some)
    }

    /// One attempt to open a document at an already resolved url.
    pub(super) async fn open(
        &self,
        url: Url,
        send_token: bool,
        doc: &ListedDocument,
    ) -> Result<DocumentBody, SourceError> {
        let what = format!("document {}", doc.id);
        let sent = tokio::time::timeout(self.request_timeout, self.get(url, send_token).send());
        let response = match sent.await {
            Ok(response) => response.map_err(|e| transport_error(&what, e))?,
            Err(_) => {
                return Err(SourceError::retryable(format!(
                    "source did not answer within {:?} for {what}",
                    self.request_timeout
                )))
            }
        };
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(&what, status, response.headers()));
        }
        let content_length = response.content_length();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let id = doc.id.clone();
        let mut received = 0u64;
        let stream = response
            .bytes_stream()
            .map(move |item| match item {
                Ok(chunk) => {
                    received += chunk.len() as u64;
                    Ok(chunk)
                }
                Err(e) => Err(broken_body(&id, received, content_length, e)),
            })
            .boxed();
        Ok(DocumentBody {
            content_length,
            content_type,
            stream,
        })
    }
}

/// The source URL as a directory: with a trailing slash, so relative urls land under it.
pub(super) fn base_directory(mut url: Url, shown: &str) -> Result<Url, SourceError> {
    if url.query().is_some() || url.fragment().is_some() {
        return Err(SourceError::invalid(format!(
            "source URL `{shown}` must not have a query or a fragment"
        )));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// The document's url when it is absolute: `http(s)` only, anything else is refused.
pub(super) fn absolute_http(doc: &ListedDocument) -> Result<Option<Url>, SourceError> {
    match Url::parse(doc.url.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(Some(url)),
        Ok(url) => Err(SourceError::permanent(format!(
            "document {} has a `{}:` url; only http(s) urls or relative paths can be fetched",
            doc.id,
            url.scheme()
        ))),
        Err(url::ParseError::RelativeUrlWithoutBase) => Ok(None),
        Err(e) => Err(SourceError::permanent(format!(
            "document {} has an unusable url: {e}",
            doc.id
        ))),
    }
}

/// Where to fetch a document of an `http(s)` source, and whether that is the source's own
/// origin (the only place the token may go).
pub(super) fn resolve(base: &Url, doc: &ListedDocument) -> Result<(Url, bool), SourceError> {
    if let Some(url) = absolute_http(doc)? {
        let same_origin = url.origin() == base.origin();
        return Ok((url, same_origin));
    }
    // A leading slash still means "under the base" (see the module docs of `source`); this
    // also turns a scheme-relative `//host/x` into a harmless path instead of another host.
    let relative = doc.url.trim().trim_start_matches(['/', '\\']);
    let path = relative.split(['?', '#']).next().unwrap_or_default();
    decoded_contained_segments(path, &doc.id)?;
    let mut url = base.join(relative).map_err(|e| {
        SourceError::permanent(format!("document {} has an unusable url: {e}", doc.id))
    })?;
    url.set_fragment(None);
    // Belt and braces: whatever the parser made of it must still sit under the base.
    if url.origin() != base.origin() || !url.path().starts_with(base.path()) {
        return Err(SourceError::permanent(format!(
            "document {} has url `{}`, which leaves the source's base",
            doc.id, doc.url
        )));
    }
    Ok((url, true))
}

async fn read_capped(mut response: Response, cap: u64, what: &str) -> Result<Vec<u8>, SourceError> {
    let too_big = || SourceError::invalid(format!("source sent more than {cap} bytes for {what}"));
    if response.content_length().is_some_and(|n| n > cap) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(what, e))?
    {
        if (body.len() + chunk.len()) as u64 > cap {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Classifies a non-2xx answer: 5xx, 408 and 429 are worth retrying, the rest are final.
fn status_error(what: &str, status: StatusCode, headers: &HeaderMap) -> SourceError {
    let message = format!("source answered {status} for {what}");
    let retryable = status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    if retryable {
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        SourceError::Retryable {
            message,
            retry_after,
        }
    } else {
        SourceError::permanent(message)
    }
}

fn transport_error(what: &str, error: reqwest::Error) -> SourceError {
    // The URL could carry credentials from SOURCE_URL; the message does not need it.
    let error = error.without_url();
    if error.is_builder() || error.is_redirect() {
        return SourceError::permanent(format!("cannot fetch {what}: {}", chain(&error)));
    }
    if error.is_timeout() {
        return SourceError::retryable(format!("source timed out for {what}"));
    }
    SourceError::retryable(format!(
        "could not reach the source for {what}: {}",
        chain(&error)
    ))
}

fn broken_body(id: &str, received: u64, total: Option<u64>, error: reqwest::Error) -> SourceError {
    let error = error.without_url();
    let of = total.map_or_else(String::new, |total| format!(" of {total}"));
    let what = if error.is_timeout() {
        "stalled"
    } else {
        "connection closed"
    };
    SourceError::retryable(format!(
        "document {id}: {what} after {received}{of} bytes ({})",
        chain(&error)
    ))
}

/// An error and its causes on one line: reqwest's own message alone ("error sending
/// request") does not say whether DNS, TCP or TLS failed.
fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let next = inner.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(url: &str) -> ListedDocument {
        ListedDocument {
            id: "d1".into(),
            name: "a.pdf".into(),
            kind: None,
            url: url.into(),
            size: None,
            sha256: None,
            mime_type: None,
        }
    }

    #[test]
    fn relative_urls_land_under_the_base_directory() {
        let base = base_directory(Url::parse("http://h:8/api").unwrap(), "").unwrap();
        for raw in ["/files/d1", "files/d1", "./files/d1", "//files/d1"] {
            let (url, same) = resolve(&base, &doc(raw)).unwrap();
            assert_eq!(
                (url.as_str(), same),
                ("http://h:8/api/files/d1", true),
                "{raw}"
            );
        }
        let (url, _) = resolve(&base, &doc("files/a b.pdf?v=2#p1")).unwrap();
        assert_eq!(url.as_str(), "http://h:8/api/files/a%20b.pdf?v=2");
    }

    #[test]
    fn absolute_urls_are_kept_and_only_same_origin_gets_the_token() {
        let base = base_directory(Url::parse("https://h/api/").unwrap(), "").unwrap();
        let (url, same) = resolve(&base, &doc("https://h/other/x")).unwrap();
        assert_eq!((url.as_str(), same), ("https://h/other/x", true));
        for foreign in ["https://cdn.example/x", "http://h/x", "https://h:8443/x"] {
            let (_, same) = resolve(&base, &doc(foreign)).unwrap();
            assert!(!same, "{foreign}");
        }
    }

    #[test]
    fn unsafe_urls_are_permanent_failures() {
        let base = base_directory(Url::parse("http://h/api").unwrap(), "").unwrap();
        for raw in [
            "../secret",
            "files/../../x",
            "%2e%2e/x",
            "file:///etc/passwd",
            "ftp://h/x",
        ] {
            let err = resolve(&base, &doc(raw)).unwrap_err();
            assert!(
                matches!(err, SourceError::Permanent { .. }),
                "{raw}: {err:?}"
            );
        }
    }

    #[test]
    fn base_directory_refuses_queries() {
        let url = Url::parse("http://h/api?key=1").unwrap();
        assert!(base_directory(url, "x").is_err());
    }
}

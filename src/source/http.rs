//! The `http(s)://` source, and fetching any absolute `http(s)://` document url.
//!
//! Every request goes only where [`hops`] allows, and redirects are followed by hand (at most
//! [`MAX_REDIRECTS`](hops::MAX_REDIRECTS)), each hop checked before it is requested; the token
//! goes only to the source's own origin.
//!
//! A [`SourceError`] made here says what failed in a stable phrase; the details go to the log
//! as it is made ([`failures`]).

pub(super) mod failures;
pub(super) use failures::UNREACHABLE;
mod hops;

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{Response, StatusCode};
use url::Url;

use super::path::decoded_contained_segments;
use super::validate::{listing_from_json, MAX_LISTING_BYTES};
use super::{
    redacted, DocumentBody, Kind, ListedDocument, ProcessListing, SourceConfig, SourceError,
};
use crate::domain::ProcessNumber;
pub(super) use failures::DOCUMENT_REFUSED;
use failures::{
    broken_body, logged, refusal, status_error, timed_out, transport_error, REDIRECT_REFUSED,
};
use hops::{Hop, MAX_REDIRECTS};

/// The one HTTP client of a [`super::Source`], with the token ready to send, and the rules of
/// where documents may come from.
pub(super) struct Http {
    client: reqwest::Client,
    auth: Option<HeaderValue>,
    request_timeout: Duration,
    hops: hops::Hops,
}

impl Http {
    pub(super) fn new(cfg: &SourceConfig, kind: &Kind) -> Result<Self, SourceError> {
        let auth = match cfg
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
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
        let client = hops::client_builder(cfg.request_timeout)
            .build()
            .map_err(|e| SourceError::invalid(format!("cannot build the HTTP client: {e}")))?;
        let own = match kind {
            Kind::Http { base } => Some(base.origin()),
            Kind::Mni(mni) => Some(mni.endpoint().origin()),
            Kind::File { .. } => None,
        };
        let hops = hops::Hops::new(
            own,
            cfg.allowed_hosts.clone(),
            cfg.allow_private,
            cfg.request_timeout,
        );
        Ok(Self {
            client,
            auth,
            request_timeout: cfg.request_timeout,
            hops,
        })
    }

    pub(super) fn has_token(&self) -> bool {
        self.auth.is_some()
    }

    /// GETs `url`, following redirects: each hop is checked, then requested (with the token
    /// on the source's own origin only). A refusal's phrase begins with `refused`.
    async fn get(
        &self,
        mut url: Url,
        what: &str,
        refused: &str,
        accept: Option<&'static str>,
    ) -> Result<Response, SourceError> {
        let mut redirects = 0;
        loop {
            let hop = self
                .hops
                .check(&url)
                .await
                .map_err(|r| refusal(r, what, refused, &url))?;
            let request = match (hop, &self.auth) {
                (Hop::Own, Some(auth)) => self
                    .client
                    .get(url.clone())
                    .header(AUTHORIZATION, auth.clone()),
                (Hop::Own, None) => self.client.get(url.clone()),
                (Hop::Foreign(client), _) => client.get(url.clone()),
            };
            let request = match accept {
                Some(accept) => request.header(ACCEPT, accept),
                None => request,
            };
            let response = request
                .send()
                .await
                .map_err(|e| transport_error(what, &url, e))?;
            let Some(next) = redirect_target(&response, &url) else {
                return Ok(response);
            };
            if redirects == MAX_REDIRECTS {
                let error = SourceError::permanent(format!("{refused}: too many redirects"));
                let detail = format_args!(
                    "{} redirected once more, to {}, after {MAX_REDIRECTS} redirects",
                    redacted(&url),
                    redacted(&next)
                );
                return Err(logged(error, what, detail));
            }
            redirects += 1;
            url = next;
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
            .map_err(|_| {
                SourceError::invalid(format!(
                    "source URL `{}` cannot take a path",
                    redacted(base)
                ))
            })?
            .pop_if_empty()
            .extend(["processes", number.as_str()]);
        let attempt = async {
            let response = self
                .get(url, &what, REDIRECT_REFUSED, Some("application/json"))
                .await?;
            let status = response.status();
            if status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(status_error(&what, &response));
            }
            let body = read_capped(response, MAX_LISTING_BYTES, &what).await?;
            listing_from_json(&body, number).map(Some)
        };
        match tokio::time::timeout(self.request_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(&what, self.request_timeout)),
        }
    }

    /// One attempt to open a document at an already resolved url.
    pub(super) async fn open(
        &self,
        url: Url,
        doc: &ListedDocument,
    ) -> Result<DocumentBody, SourceError> {
        let what = format!("document {:?}", doc.id);
        let sent = tokio::time::timeout(
            self.request_timeout,
            self.get(url, &what, DOCUMENT_REFUSED, None),
        );
        let response = match sent.await {
            Ok(response) => response?,
            Err(_) => return Err(timed_out(&what, self.request_timeout)),
        };
        if !response.status().is_success() {
            return Err(status_error(&what, &response));
        }
        let content_length = response.content_length();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut received = 0u64;
        let stream = response
            .bytes_stream()
            .map(move |item| match item {
                Ok(chunk) => {
                    received += chunk.len() as u64;
                    Ok(chunk)
                }
                Err(e) => Err(broken_body(&what, received, content_length, e)),
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
    let what = format!("document {:?}", doc.id);
    match Url::parse(doc.url.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(Some(url)),
        Ok(url) => Err(logged(
            SourceError::permanent(format!("{DOCUMENT_REFUSED}: scheme not allowed")),
            &what,
            format_args!("its url has scheme `{}:`", url.scheme()),
        )),
        Err(url::ParseError::RelativeUrlWithoutBase) => Ok(None),
        Err(e) => Err(logged(
            SourceError::permanent(format!("{DOCUMENT_REFUSED}: not a valid URL")),
            &what,
            format_args!("its url does not parse: {e}"),
        )),
    }
}

/// Where to fetch a document of an `http(s)` source: its absolute url, or its relative url
/// under the source's base.
pub(super) fn resolve(base: &Url, doc: &ListedDocument) -> Result<Url, SourceError> {
    if let Some(url) = absolute_http(doc)? {
        return Ok(url);
    }
    // A leading slash still means "under the base" (see the module docs of `source`); this
    // also turns a scheme-relative `//host/x` into a harmless path instead of another host.
    let relative = doc.url.trim().trim_start_matches(['/', '\\']);
    let path = relative.split(['?', '#']).next().unwrap_or_default();
    decoded_contained_segments(path, &doc.id)?;
    let what = format!("document {:?}", doc.id);
    let mut url = base.join(relative).map_err(|e| {
        logged(
            SourceError::permanent(format!("{DOCUMENT_REFUSED}: not a valid URL")),
            &what,
            format_args!("its url {:?} does not join the base: {e}", doc.url),
        )
    })?;
    url.set_fragment(None);
    // Belt and braces: whatever the parser made of it must still sit under the base.
    if url.origin() != base.origin() || !url.path().starts_with(base.path()) {
        return Err(logged(
            SourceError::permanent(format!("{DOCUMENT_REFUSED}: outside the source's base")),
            &what,
            format_args!("its url {:?} leaves the source's base", doc.url),
        ));
    }
    Ok(url)
}

/// Where a redirect answer sends the request next, if it is one and says where.
fn redirect_target(response: &Response, from: &Url) -> Option<Url> {
    let redirect = matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308);
    if !redirect {
        return None;
    }
    let location = response.headers().get(LOCATION)?.to_str().ok()?;
    let mut next = from.join(location.trim()).ok()?;
    next.set_fragment(None);
    Some(next)
}

async fn read_capped(mut response: Response, cap: u64, what: &str) -> Result<Vec<u8>, SourceError> {
    let url = response.url().clone();
    let too_big = || {
        logged(
            SourceError::invalid("the source's answer is too large"),
            what,
            format_args!("{} sent more than {cap} bytes", redacted(&url)),
        )
    };
    if response.content_length().is_some_and(|n| n > cap) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(what, &url, e))?
    {
        if (body.len() + chunk.len()) as u64 > cap {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
            sigilo: 0,
            parent: None,
        }
    }

    #[test]
    fn relative_urls_land_under_the_base_directory() {
        let base = base_directory(Url::parse("http://h:8/api").unwrap(), "").unwrap();
        for raw in ["/files/d1", "files/d1", "./files/d1", "//files/d1"] {
            let url = resolve(&base, &doc(raw)).unwrap();
            assert_eq!(url.as_str(), "http://h:8/api/files/d1", "{raw}");
        }
        let url = resolve(&base, &doc("files/a b.pdf?v=2#p1")).unwrap();
        assert_eq!(url.as_str(), "http://h:8/api/files/a%20b.pdf?v=2");
    }

    #[test]
    fn absolute_urls_are_kept_as_they_are() {
        let base = base_directory(Url::parse("https://h/api/").unwrap(), "").unwrap();
        for absolute in [
            "https://h/other/x",
            "https://cdn.example/x",
            "http://h:8443/x",
        ] {
            let url = resolve(&base, &doc(absolute)).unwrap();
            assert_eq!(url.as_str(), absolute);
        }
    }

    #[test]
    fn unsafe_urls_are_permanent_failures() {
        let base = base_directory(Url::parse("http://h/api").unwrap(), "").unwrap();
        for (raw, phrase) in [
            ("../secret", "outside the source's base"),
            ("files/../../x", "outside the source's base"),
            ("%2e%2e/x", "outside the source's base"),
            ("/", "names no file"),
            ("file:///etc/passwd", "scheme not allowed"),
            ("ftp://h/x", "scheme not allowed"),
            ("http://[::1/x", "not a valid URL"),
        ] {
            let err = resolve(&base, &doc(raw)).unwrap_err();
            assert_eq!(
                err,
                SourceError::permanent(format!("document URL refused: {phrase}")),
                "{raw}"
            );
        }
    }

    #[test]
    fn base_directory_refuses_queries() {
        let url = Url::parse("http://h/api?key=1").unwrap();
        assert!(base_directory(url, "x").is_err());
    }
}

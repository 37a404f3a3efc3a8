//! Failures of requests to the source: each is a [`SourceError`] whose message is a stable
//! phrase, the one clients see (a document's `lastError`, a `SOURCE_UNAVAILABLE` message),
//! while the details (status line, transport error, host, url without credentials) are logged
//! as it is made, at warn level, within the caller's span (a transfer's names its job and
//! document).

use std::error::Error as StdError;
use std::fmt::Display;
use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use reqwest::{Response, StatusCode};
use url::Url;

use super::hops::Refused;
use crate::source::retry::parse_retry_after;
use crate::source::{redacted, SourceError};

/// How a refused document's `lastError` begins; what was refused follows.
pub(in crate::source) const DOCUMENT_REFUSED: &str = "document URL refused";
/// The same, for a redirect the source answered a lookup with.
pub(super) const REDIRECT_REFUSED: &str = "source redirect refused";
/// No connection (DNS, TCP, TLS) could be made.
pub(in crate::source) const UNREACHABLE: &str = "the source could not be reached";
/// Connected, but the exchange broke off before the body's end.
pub(in crate::source) const BROKE: &str = "the connection broke during the transfer";
/// No answer (its headers) within the request timeout.
const TIMED_OUT: &str = "the source timed out";

/// `error`, once `detail` (hosts, statuses, causes: never credentials) is logged beside it.
/// Clients see the error's stable phrase; operators find the rest here.
pub(in crate::source) fn logged(
    error: SourceError,
    what: &str,
    detail: impl Display,
) -> SourceError {
    tracing::warn!(what, error = %error, %detail, "source request failed");
    error
}

/// Classifies a non-2xx answer: 5xx, 408 and 429 are worth retrying, the rest are final.
pub(in crate::source) fn status_error(what: &str, response: &Response) -> SourceError {
    let status = response.status();
    let message = format!("the source answered {}", status.as_u16());
    let retryable = status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    let error = if retryable {
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        SourceError::Retryable {
            message,
            retry_after,
        }
    } else {
        SourceError::permanent(message)
    };
    let detail = format_args!("{} answered {status}", redacted(response.url()));
    logged(error, what, detail)
}

pub(in crate::source) fn transport_error(
    what: &str,
    url: &Url,
    error: reqwest::Error,
) -> SourceError {
    // The URL could carry credentials from SOURCE_URL; the detail names it redacted.
    let error = error.without_url();
    let phrase = if error.is_builder() {
        SourceError::permanent("the request to the source could not be made")
    } else if error.is_timeout() {
        SourceError::retryable(TIMED_OUT)
    } else if error.is_connect() {
        SourceError::retryable(UNREACHABLE)
    } else {
        // Connected, then the exchange broke off (a reset, a malformed or missing answer).
        SourceError::retryable(BROKE)
    };
    let detail = format_args!("{}: {}", redacted(url), chain(&error));
    logged(phrase, what, detail)
}

pub(in crate::source) fn timed_out(what: &str, timeout: Duration) -> SourceError {
    let detail = format_args!("no answer within {timeout:?}");
    logged(SourceError::retryable(TIMED_OUT), what, detail)
}

pub(in crate::source) fn broken_body(
    what: &str,
    received: u64,
    total: Option<u64>,
    error: reqwest::Error,
) -> SourceError {
    let error = error.without_url();
    let of = total.map_or_else(String::new, |total| format!(" of {total}"));
    let (phrase, how) = if error.is_timeout() {
        ("the transfer timed out", "stalled")
    } else {
        (BROKE, "connection closed")
    };
    let detail = format_args!("{how} after {received}{of} bytes ({})", chain(&error));
    logged(SourceError::retryable(phrase), what, detail)
}

/// Why a hop was refused, as a stable phrase (a refusal, or "could not be reached" for a host
/// that does not resolve, which may be worth another attempt).
pub(super) fn refusal(refused: Refused, what: &str, prefix: &str, url: &Url) -> SourceError {
    let url = redacted(url);
    match refused {
        Refused::Scheme(scheme) => logged(
            SourceError::permanent(format!("{prefix}: scheme not allowed")),
            what,
            format_args!("{url}: scheme `{scheme}:`"),
        ),
        Refused::Host(host) => logged(
            SourceError::permanent(format!("{prefix}: host not allowed")),
            what,
            format_args!(
                "{url}: {host:?} is neither the source's own origin \
                 nor in AUTOS_SOURCE_ALLOWED_HOSTS"
            ),
        ),
        Refused::Private { host, addr, kind } => logged(
            SourceError::permanent(format!("{prefix}: private address")),
            what,
            format_args!(
                "{url}: {host:?} resolves to {addr}, {} {kind} address, \
                 and AUTOS_SOURCE_ALLOW_PRIVATE is off",
                crate::net::article(kind)
            ),
        ),
        Refused::Unresolvable { host, detail } => logged(
            SourceError::retryable(UNREACHABLE),
            what,
            format_args!("{url}: {host:?} could not be resolved: {detail}"),
        ),
    }
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

//! One signed POST to a checked target: connects only to the addresses that were checked, never
//! follows redirects, never goes through a proxy, and reads at most a few KiB of the answer.

use super::sign::{headers, Secret};
use super::target::Target;
use futures::StreamExt;
use std::time::{Duration, Instant};

/// How much of a response body is kept (for the error message).
const BODY_CAP: usize = 4 * 1024;

/// What one attempt did.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// HTTP status, when an answer came.
    pub status: Option<u16>,
    /// What went wrong, when something did (a non-2xx answer included).
    pub error: Option<String>,
    /// `Retry-After`, when the answer had one.
    pub retry_after: Option<Duration>,
    /// How long it took.
    pub duration: Duration,
}

impl Attempt {
    /// A 2xx answer.
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// 410 Gone: the receiver wants no more of these.
    pub fn gone(&self) -> bool {
        self.status == Some(410)
    }
}

/// POSTs `body` (JSON) to `target`, signed with each of `secrets` under `message_id`.
pub async fn post(
    target: &Target,
    secrets: &[Secret],
    message_id: &str,
    body: bytes::Bytes,
    timeout: Duration,
) -> Attempt {
    let started = Instant::now();
    let outcome = async {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the host again, past the address check.
            .no_proxy()
            .timeout(timeout)
            .user_agent(concat!("autos-webhooks/", env!("CARGO_PKG_VERSION")));
        if let Some(host) = target.url.host_str() {
            // Connect to exactly the addresses that were checked: no second DNS answer.
            builder = builder.resolve_to_addrs(host.trim_matches(['[', ']']), &target.addrs);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let timestamp = chrono::Utc::now().timestamp();
        let mut request = client
            .post(target.url.clone())
            .header("content-type", "application/json");
        for (name, value) in headers(secrets, message_id, timestamp, &body) {
            request = request.header(name, value);
        }
        let response = request
            // Shared, not copied: a job's body can be tens of megabytes.
            .body(body)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        Ok::<_, String>(response)
    }
    .await;
    let response = match outcome {
        Ok(response) => response,
        Err(error) => {
            return Attempt {
                status: None,
                error: Some(error),
                retry_after: None,
                duration: started.elapsed(),
            }
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::source::parse_retry_after(v, chrono::Utc::now()));
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        // A receiver controls this text: keep what is stored and shown short.
        .map(|l| l.chars().take(200).collect::<String>());
    let excerpt = read_capped(response).await;
    let error = (!(200..300).contains(&status)).then(|| {
        let mut message = format!("the receiver answered {status}");
        if let Some(location) = location.filter(|_| (300..400).contains(&status)) {
            message.push_str(&format!(" (a redirect to {location}, not followed)"));
        } else if !excerpt.is_empty() {
            message.push_str(&format!(": {excerpt}"));
        }
        message
    });
    Attempt {
        status: Some(status),
        error,
        retry_after,
        duration: started.elapsed(),
    }
}

async fn read_capped(response: reqwest::Response) -> String {
    let mut kept = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = BODY_CAP - kept.len();
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if kept.len() >= BODY_CAP {
            break;
        }
    }
    String::from_utf8_lossy(&kept)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "the receiver did not answer in time".to_string()
    } else if err.is_connect() {
        "cannot connect to the receiver".to_string()
    } else {
        let mut message = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(inner) = source {
            message.push_str(": ");
            message.push_str(&inner.to_string());
            source = inner.source();
        }
        message
    }
}

//! Webhooks: what a client may give as `webhookUrl` ([`target`](crate::webhook::target))
//! and how messages are signed ([`sign`](crate::webhook::sign), Standard Webhooks).

mod address;
mod hmac;
pub mod send;
pub mod sign;
pub mod target;

pub use sign::{Secret, SecretError};
pub use target::{classify, HostPattern, Refusal, Target, TargetPolicy, MAX_URL_BYTES};

/// Checks the form of a webhook URL: `http` or `https`, a host, no credentials, at most
/// [`MAX_URL_BYTES`]. Returns the URL as it will be stored, or why it is refused.
///
/// Only the form: the allowlist and the addresses are checked by [`TargetPolicy::resolve`]
/// before sending.
pub fn check_url(raw: &str) -> Result<String, String> {
    TargetPolicy::default()
        .check_syntax(raw)
        .map(String::from)
        .map_err(|refusal| refusal.reason())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_and_https() {
        assert_eq!(
            check_url("https://hooks.example.com/autos").unwrap(),
            "https://hooks.example.com/autos"
        );
        assert!(check_url("http://example.com").is_ok());
    }

    #[test]
    fn refuses_other_forms() {
        for bad in [
            "ftp://example.com/x",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "not a url",
            "https://user:pw@example.com/",
            "",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert!(check_url(&long).unwrap_err().contains("2048"));
    }
}

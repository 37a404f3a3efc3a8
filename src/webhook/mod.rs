//! Webhook targets: what a client may give as `webhookUrl`.

/// Longest URL accepted.
pub const MAX_URL_BYTES: usize = 2048;

/// Checks the form of a webhook URL: `http` or `https`, a host, no credentials, at most
/// [`MAX_URL_BYTES`]. Returns the URL as it will be stored, or why it is refused.
pub fn check_url(raw: &str) -> Result<String, String> {
    if raw.len() > MAX_URL_BYTES {
        return Err(format!(
            "the URL is {} bytes long; at most {MAX_URL_BYTES} are accepted",
            raw.len()
        ));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("`{raw}` is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme `{}` is not allowed: use http or https",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not allowed".into());
    }
    Ok(url.to_string())
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

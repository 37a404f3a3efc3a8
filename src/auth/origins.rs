//! Which web pages may use autos through a visitor's browser.
//!
//! Browsers say where a request comes from (`Origin`) on every WebSocket upgrade and every
//! `POST`; programs do not. A browser request is allowed from the origin of
//! `AUTOS_PUBLIC_URL` (the progress page and GraphiQL are served there), from the origins in
//! `AUTOS_CORS_ORIGINS`, and — when the public URL is a loopback address — from the other
//! spellings of that loopback address on the same port (`localhost`, `127.0.0.1`, `[::1]`).
//! Anything else is refused before it runs: no page on the web can drive autos through a
//! visitor's browser, nor reach it by pointing its own host name at a loopback address
//! (DNS rebinding), whether or not keys are required.

/// The allowed browser origins.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Origins allowed cross-origin requests (CORS): `AUTOS_CORS_ORIGINS`.
    pub cors: Vec<String>,
    /// Every allowed origin: the public one and its loopback spellings, and `cors`.
    allowed: Vec<String>,
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

impl OriginPolicy {
    /// The policy for a deployment reached at `public_url`, with `cors` origins allowed too
    /// (each already `scheme://host[:port]`).
    pub fn new(public_url: &str, cors: Vec<String>) -> OriginPolicy {
        let mut allowed = cors.clone();
        if let Ok(url) = url::Url::parse(public_url) {
            allowed.push(url.origin().ascii_serialization());
            if url.host().as_ref().is_some_and(is_loopback) {
                let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
                for host in ["localhost", "127.0.0.1", "[::1]"] {
                    allowed.push(format!("{}://{host}{port}", url.scheme()));
                }
            }
        }
        allowed.sort();
        allowed.dedup();
        OriginPolicy { cors, allowed }
    }

    /// Whether a request with this `Origin` header may go on. Requests without one come from
    /// programs, which are not affected.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(origin) => {
                let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
                self.allowed.contains(&origin)
            }
        }
    }

    /// Whether `origin` gets CORS answers.
    pub fn cors_allows(&self, origin: &str) -> bool {
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        self.cors.contains(&origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_origin_and_configured_ones_are_allowed() {
        let policy = OriginPolicy::new(
            "https://autos.example.com/",
            vec!["https://app.example.com".into()],
        );
        assert!(policy.allows(None));
        assert!(policy.allows(Some("https://autos.example.com")));
        assert!(policy.allows(Some("https://app.example.com")));
        assert!(policy.cors_allows("https://app.example.com"));
        assert!(!policy.cors_allows("https://autos.example.com"));
        for refused in [
            "https://evil.example",
            "http://autos.example.com",
            "https://autos.example.com:8443",
            "null",
            "http://localhost",
        ] {
            assert!(!policy.allows(Some(refused)), "{refused}");
        }
    }

    #[test]
    fn a_loopback_public_url_allows_its_spellings_on_its_port_only() {
        let policy = OriginPolicy::new("http://127.0.0.1:8080", Vec::new());
        for allowed in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            assert!(policy.allows(Some(allowed)), "{allowed}");
        }
        for refused in [
            "http://localhost:3000",
            "http://evil.example:8080",
            "https://127.0.0.1:8080",
        ] {
            assert!(!policy.allows(Some(refused)), "{refused}");
        }
    }
}

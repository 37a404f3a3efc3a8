//! Host allowlists: `example.com`, `*.example.com`, IP addresses.

use std::fmt;
use std::net::IpAddr;

use url::Host;

/// One entry of a host allowlist (`AUTOS_WEBHOOK_ALLOWED_HOSTS`, `AUTOS_SOURCE_ALLOWED_HOSTS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// This host only (a lowercase ASCII name, or an IP address).
    Exact(String),
    /// `*.suffix`: any subdomain of `suffix`, at any depth, but not `suffix` itself.
    Subdomains(String),
}

impl HostPattern {
    /// Parses `host`, an IP address, or `*.domain` (case-insensitive, surrounding whitespace
    /// and one trailing dot ignored, international names in Unicode or punycode).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let text = raw.trim().to_lowercase();
        let bad = |why: &str| Err(format!("host pattern `{}` {why}", raw.trim()));
        if text.is_empty() {
            return bad("is empty");
        }
        let (wildcard, rest) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        if rest.contains('*') {
            return bad("is malformed: `*` may only begin a pattern, as in `*.example.com`");
        }
        if let Ok(ip) = rest
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            if wildcard {
                return bad("puts a wildcard on an IP address");
            }
            return Ok(HostPattern::Exact(ip.to_string()));
        }
        let rest = rest.strip_suffix('.').unwrap_or(rest);
        if rest.split('.').any(str::is_empty) {
            return bad("has an empty label");
        }
        let name = match Host::parse(rest) {
            Ok(Host::Domain(name)) => name,
            Ok(Host::Ipv4(ip)) if !wildcard => return Ok(HostPattern::Exact(ip.to_string())),
            Ok(_) => return bad("puts a wildcard on an IP address"),
            Err(e) => return bad(&format!("is not a valid host name: {e}")),
        };
        let label_ok = |l: &str| {
            l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        };
        if name.len() > 253 || !name.split('.').all(label_ok) {
            return bad("is not a valid host name");
        }
        Ok(if wildcard {
            HostPattern::Subdomains(name)
        } else {
            HostPattern::Exact(name)
        })
    }

    /// Parses a comma-separated list of patterns; empty entries are ignored.
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, String> {
        raw.split(',')
            .filter(|entry| !entry.trim().is_empty())
            .map(HostPattern::parse)
            .collect()
    }

    /// Whether `host` (as [`host_key`] gives it) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Subdomains(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// A URL's host as allowlist patterns see it: a lowercase ASCII name without its trailing
/// dot, or an IP address without brackets.
pub fn host_key(host: &Host<&str>) -> String {
    match host {
        Host::Domain(name) => name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => ip.to_string(),
    }
}

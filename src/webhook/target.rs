//! Webhook target safety (anti-SSRF): the URL's form, the host allowlist, and the addresses
//! the host resolves to.
//!
//! [`TargetPolicy::resolve`] returns the addresses it checked; the sender must connect to
//! exactly those (e.g. `reqwest::ClientBuilder::resolve_to_addrs(host, &addrs)`, with
//! redirects and proxies off), so that no second DNS answer can point elsewhere.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use url::{Host, Url};

use super::address::article;
pub use super::address::classify;

/// Longest URL accepted.
pub const MAX_URL_BYTES: usize = 2048;

/// How long a host name may take to resolve.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a webhook target is refused. [`Refusal::reason`] (the same as `Display`) is meant for
/// the person who gave the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a URL at all.
    #[error("`{input}` is not a valid URL: {detail}")]
    Invalid {
        /// What was given.
        input: String,
        /// What the URL parser said.
        detail: String,
    },
    /// A scheme other than http or https.
    #[error("scheme `{0}` is not allowed: use http or https")]
    BadScheme(String),
    /// Longer than [`MAX_URL_BYTES`].
    #[error("the URL is {0} bytes long; at most {MAX_URL_BYTES} are accepted")]
    TooLong(usize),
    /// No host.
    #[error("the URL has no host")]
    NoHost,
    /// A user name or password in the URL.
    #[error("credentials in the URL are not allowed")]
    Credentials,
    /// The host is not in the allowlist.
    #[error("the host `{0}` is not among the allowed webhook hosts")]
    NotAllowedHost(String),
    /// The host name does not resolve.
    #[error("the host `{host}` could not be resolved: {detail}")]
    Unresolvable {
        /// The host name.
        host: String,
        /// What the resolver said.
        detail: String,
    },
    /// The host is, or resolves to, an address that is not public.
    #[error(
        "the host resolves to {addr}, {art} {kind} address; private addresses are not allowed",
        art = article(.kind)
    )]
    PrivateAddress {
        /// The offending address.
        addr: IpAddr,
        /// Its kind, from [`classify`].
        kind: &'static str,
    },
}

impl Refusal {
    /// A sentence saying why the target is refused.
    pub fn reason(&self) -> String {
        self.to_string()
    }
}

/// One entry of `AUTOS_WEBHOOK_ALLOWED_HOSTS`.
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

/// A checked target: the URL and the addresses to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL, normalised.
    pub url: Url,
    /// Every address the host resolved to, with the URL's port; all were checked.
    pub addrs: Vec<SocketAddr>,
}

/// What webhook targets are allowed (`AUTOS_WEBHOOK_ALLOW_PRIVATE`,
/// `AUTOS_WEBHOOK_ALLOWED_HOSTS`). The default allows any public host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// Allow private, loopback, link-local and other non-public addresses.
    pub allow_private: bool,
    /// Allowed hosts; empty allows any host.
    pub allowed_hosts: Vec<HostPattern>,
}

impl TargetPolicy {
    /// Builds the policy from the settings. `allowed_hosts` is comma-separated
    /// [`HostPattern`]s; empty entries are ignored, and no entries at all allow any host.
    pub fn from_config(allow_private: bool, allowed_hosts: &str) -> Result<Self, String> {
        let allowed_hosts = allowed_hosts
            .split(',')
            .filter(|entry| !entry.trim().is_empty())
            .map(HostPattern::parse)
            .collect::<Result<_, _>>()?;
        Ok(TargetPolicy {
            allow_private,
            allowed_hosts,
        })
    }

    /// Checks the URL's form: at most [`MAX_URL_BYTES`], `http` or `https`, a host, no
    /// credentials (any port). Returns the parsed URL. Neither the allowlist nor DNS is consulted.
    pub fn check_syntax(&self, raw: &str) -> Result<Url, Refusal> {
        if raw.len() > MAX_URL_BYTES {
            return Err(Refusal::TooLong(raw.len()));
        }
        let url = Url::parse(raw).map_err(|e| Refusal::Invalid {
            input: raw.to_owned(),
            detail: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::BadScheme(url.scheme().to_owned()));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Refusal::NoHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::Credentials);
        }
        if url.as_str().len() > MAX_URL_BYTES {
            return Err(Refusal::TooLong(url.as_str().len()));
        }
        Ok(url)
    }

    /// Checks the URL's host against the allowlist.
    pub fn check_host(&self, url: &Url) -> Result<(), Refusal> {
        let host = url.host().ok_or(Refusal::NoHost)?;
        let key = host_key(&host);
        if self.allowed_hosts.is_empty() || self.allowed_hosts.iter().any(|p| p.matches(&key)) {
            Ok(())
        } else {
            Err(Refusal::NotAllowedHost(key))
        }
    }

    /// Checks the host against the allowlist, resolves it (an IP literal is its own address;
    /// `localhost` and `*.localhost` are loopback, RFC 6761) and, unless `allow_private`,
    /// refuses it if any address is not public. Returns the addresses, with the URL's port,
    /// for the sender to connect to.
    pub async fn resolve(&self, url: &Url) -> Result<Vec<SocketAddr>, Refusal> {
        self.check_host(url)?;
        let host = url.host().ok_or(Refusal::NoHost)?;
        let port = url.port_or_known_default().ok_or(Refusal::NoHost)?;
        let ips = match host {
            Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
            Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
            Host::Domain(name) => lookup(name, port).await?,
        };
        if !self.allow_private {
            for &ip in &ips {
                if let Some(kind) = classify(ip) {
                    return Err(Refusal::PrivateAddress { addr: ip, kind });
                }
            }
        }
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// [`check_syntax`](Self::check_syntax) then [`resolve`](Self::resolve).
    pub async fn check(&self, raw: &str) -> Result<Target, Refusal> {
        let url = self.check_syntax(raw)?;
        let addrs = self.resolve(&url).await?;
        Ok(Target { url, addrs })
    }
}

/// The distinct addresses `name` resolves to, in the resolver's order.
async fn lookup(name: &str, port: u16) -> Result<Vec<IpAddr>, Refusal> {
    let key = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if key == "localhost" || key.ends_with(".localhost") {
        return Ok(vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]);
    }
    let unresolvable = |detail: String| Refusal::Unresolvable {
        host: name.to_owned(),
        detail,
    };
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)))
        .await
        .map_err(|_| unresolvable(format!("no answer within {RESOLVE_TIMEOUT:?}")))?
        .map_err(|e| unresolvable(e.to_string()))?;
    let mut ips: Vec<IpAddr> = Vec::new();
    for addr in found {
        if !ips.contains(&addr.ip()) {
            ips.push(addr.ip());
        }
    }
    if ips.is_empty() {
        return Err(unresolvable("it has no addresses".into()));
    }
    Ok(ips)
}

#[cfg(test)]
#[path = "target_tests.rs"]
mod tests;

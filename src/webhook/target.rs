//! Webhook target safety (anti-SSRF): the URL's form, the host allowlist, and the addresses
//! the host resolves to.
//!
//! [`TargetPolicy::resolve`] returns the addresses it checked; the sender must connect to
//! exactly those (e.g. `reqwest::ClientBuilder::resolve_to_addrs(host, &addrs)`, with
//! redirects and proxies off), so that no second DNS answer can point elsewhere.

use std::net::{IpAddr, SocketAddr};

use url::Url;

use crate::net::{article, AddressRefusal};
pub use crate::net::{classify, host_key, HostPattern, RESOLVE_TIMEOUT};

/// Longest URL accepted.
pub const MAX_URL_BYTES: usize = 2048;

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
        let allowed_hosts = HostPattern::parse_list(allowed_hosts)?;
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
        crate::net::resolve(&host, port, self.allow_private)
            .await
            .map_err(|refusal| match refusal {
                AddressRefusal::Unresolvable { host, detail } => {
                    Refusal::Unresolvable { host, detail }
                }
                AddressRefusal::NotPublic { addr, kind } => Refusal::PrivateAddress { addr, kind },
            })
    }

    /// [`check_syntax`](Self::check_syntax) then [`resolve`](Self::resolve).
    pub async fn check(&self, raw: &str) -> Result<Target, Refusal> {
        let url = self.check_syntax(raw)?;
        let addrs = self.resolve(&url).await?;
        Ok(Target { url, addrs })
    }
}

#[cfg(test)]
#[path = "target_tests.rs"]
mod tests;

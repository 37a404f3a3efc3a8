//! Resolving a host to addresses, every one of them checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use url::Host;

use super::address::{article, classify};

/// How long a host name may take to resolve.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why [`resolve`] gave no addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressRefusal {
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
    NotPublic {
        /// The offending address.
        addr: IpAddr,
        /// Its kind, from [`classify`].
        kind: &'static str,
    },
}

/// The addresses of `host` with `port`: an IP literal is its own address, `localhost` and
/// `*.localhost` are loopback (RFC 6761), other names are asked of the system's resolver
/// (within [`RESOLVE_TIMEOUT`]). Unless `allow_private`, refused if any address is not public:
/// one private answer among public ones is enough for a rebinding attack.
pub async fn resolve(
    host: &Host<&str>,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, AddressRefusal> {
    let ips = match host {
        Host::Ipv4(ip) => vec![IpAddr::V4(*ip)],
        Host::Ipv6(ip) => vec![IpAddr::V6(*ip)],
        Host::Domain(name) => lookup(name, port).await?,
    };
    if !allow_private {
        for &ip in &ips {
            if let Some(kind) = classify(ip) {
                return Err(AddressRefusal::NotPublic { addr: ip, kind });
            }
        }
    }
    Ok(ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// The distinct addresses `name` resolves to, in the resolver's order.
async fn lookup(name: &str, port: u16) -> Result<Vec<IpAddr>, AddressRefusal> {
    let key = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if key == "localhost" || key.ends_with(".localhost") {
        return Ok(vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]);
    }
    let unresolvable = |detail: String| AddressRefusal::Unresolvable {
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
mod tests {
    use super::*;

    async fn refused(raw: &str) -> AddressRefusal {
        let url = url::Url::parse(&format!("http://{raw}/")).unwrap();
        resolve(&url.host().unwrap(), 80, false).await.unwrap_err()
    }

    #[tokio::test]
    async fn literals_are_their_own_addresses() {
        let addrs = resolve(&Host::Ipv4(Ipv4Addr::new(93, 184, 215, 14)), 443, false)
            .await
            .unwrap();
        assert_eq!(addrs, vec!["93.184.215.14:443".parse().unwrap()]);
        let addrs = resolve(&Host::Ipv4(Ipv4Addr::LOCALHOST), 8080, true)
            .await
            .unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:8080".parse().unwrap()]);
    }

    #[tokio::test]
    async fn non_public_answers_are_refused_unless_allowed() {
        assert!(matches!(
            refused("10.1.2.3").await,
            AddressRefusal::NotPublic {
                kind: "private",
                ..
            }
        ));
        assert!(matches!(
            refused("localhost").await,
            AddressRefusal::NotPublic {
                kind: "loopback",
                ..
            }
        ));
        let addrs = resolve(&Host::Domain("a.localhost"), 9, true)
            .await
            .unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 9));
    }

    #[tokio::test]
    async fn unknown_names_are_unresolvable() {
        let err = resolve(&Host::Domain("no-such-host.invalid"), 80, true)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AddressRefusal::Unresolvable { host, .. } if host == "no-such-host.invalid"),
            "{err:?}"
        );
    }
}

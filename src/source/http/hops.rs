//! Where a request to the source may go (contract §8, document fetching): the source's own
//! origin (scheme, host and port of `AUTOS_SOURCE_URL`), whatever its address, or a host in
//! `AUTOS_SOURCE_ALLOWED_HOSTS` whose every address is public (unless
//! `AUTOS_SOURCE_ALLOW_PRIVATE`). A foreign host is reached through a client that connects to
//! exactly the addresses that were checked, through no proxy: no second DNS answer can send
//! the request elsewhere. Each hop of a redirect chain is checked here before it is requested.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use url::{Host, Origin, Url};

use crate::net::{host_key, AddressRefusal, HostPattern};

/// Redirects followed for one request; the next one is refused.
pub(in crate::source) const MAX_REDIRECTS: usize = 5;

/// Pinned clients kept for reuse (with their pooled connections), most recent first.
const PINNED_KEPT: usize = 16;

/// Why a hop is not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refused {
    /// Not `http:` or `https:`.
    Scheme(String),
    /// Neither the source's own origin nor an allowed host.
    Host(String),
    /// An allowed host on an address that is not public.
    Private {
        host: String,
        addr: IpAddr,
        kind: &'static str,
    },
    /// An allowed host that does not resolve (worth another attempt later).
    Unresolvable { host: String, detail: String },
}

/// How to make the request of a checked hop.
pub(super) enum Hop {
    /// The source's own origin: its usual client, with the token.
    Own,
    /// An allowed foreign host: a client bound to the checked addresses, without the token.
    Foreign(reqwest::Client),
}

/// The rules of one source, and the clients made for the foreign hosts it reached lately.
pub(super) struct Hops {
    own: Option<Origin>,
    allowed_hosts: Vec<HostPattern>,
    allow_private: bool,
    timeout: Duration,
    pinned: Mutex<VecDeque<Pinned>>,
}

struct Pinned {
    host: String,
    addrs: Vec<SocketAddr>,
    client: reqwest::Client,
}

impl Hops {
    /// `own`: the source's origin (`None` for a folder, which no web host can match).
    pub(super) fn new(
        own: Option<Origin>,
        allowed_hosts: Vec<HostPattern>,
        allow_private: bool,
        timeout: Duration,
    ) -> Self {
        Self {
            own,
            allowed_hosts,
            allow_private,
            timeout,
            pinned: Mutex::new(VecDeque::new()),
        }
    }

    /// Checks `url` (scheme, then origin or allowlist, and only then DNS and addresses).
    pub(super) async fn check(&self, url: &Url) -> Result<Hop, Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused::Scheme(url.scheme().to_owned()));
        }
        if self.own.as_ref() == Some(&url.origin()) {
            return Ok(Hop::Own);
        }
        let host = url.host().ok_or_else(|| Refused::Host(String::new()))?;
        let key = host_key(&host);
        if !self.allowed_hosts.iter().any(|p| p.matches(&key)) {
            return Err(Refused::Host(key));
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| Refused::Host(key.clone()))?;
        let addrs = crate::net::resolve(&host, port, self.allow_private)
            .await
            .map_err(|refusal| match refusal {
                AddressRefusal::NotPublic { addr, kind } => Refused::Private {
                    host: key.clone(),
                    addr,
                    kind,
                },
                AddressRefusal::Unresolvable { host, detail } => {
                    Refused::Unresolvable { host, detail }
                }
            })?;
        let domain = match host {
            Host::Domain(name) => Some(name),
            Host::Ipv4(_) | Host::Ipv6(_) => None,
        };
        self.pinned(domain, &key, addrs).map(Hop::Foreign)
    }

    /// A client that reaches `host` only at `addrs`: one made before for the same answer, or
    /// a new one.
    fn pinned(
        &self,
        domain: Option<&str>,
        key: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<reqwest::Client, Refused> {
        let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = pinned
            .iter()
            .position(|p| p.host == key && p.addrs == addrs)
        {
            let hit = pinned.remove(at).expect("found");
            let client = hit.client.clone();
            pinned.push_front(hit);
            return Ok(client);
        }
        let mut builder = client_builder(self.timeout).no_proxy();
        if let Some(domain) = domain {
            // An IP literal is connected to as it is; a name only at the checked addresses.
            builder = builder.resolve_to_addrs(domain, &addrs);
        }
        let client = builder.build().map_err(|e| Refused::Unresolvable {
            host: key.to_owned(),
            detail: format!("cannot build an HTTP client: {e}"),
        })?;
        pinned.push_front(Pinned {
            host: key.to_owned(),
            addrs,
            client: client.clone(),
        });
        pinned.truncate(PINNED_KEPT);
        Ok(client)
    }
}

/// What every client of the source shares: redirects are followed by hand, hop by hop.
pub(super) fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("autos/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        // Document bodies have no total deadline (they may be large), but a body that
        // stops moving for this long is a broken attempt rather than a slow one.
        .read_timeout(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hops(own: &str, allowed: &str, allow_private: bool) -> Hops {
        let own = Url::parse(own).unwrap().origin();
        let allowed = HostPattern::parse_list(allowed).unwrap();
        Hops::new(Some(own), allowed, allow_private, Duration::from_secs(5))
    }

    async fn refused(hops: &Hops, url: &str) -> Refused {
        match hops.check(&Url::parse(url).unwrap()).await {
            Ok(Hop::Own) => panic!("{url}: taken as the source's own"),
            Ok(Hop::Foreign(_)) => panic!("{url}: taken as an allowed host"),
            Err(refused) => refused,
        }
    }

    #[tokio::test]
    async fn the_own_origin_is_allowed_whatever_its_address() {
        let hops = hops("http://127.0.0.1:8080/api/", "", false);
        for url in ["http://127.0.0.1:8080/files/x", "http://127.0.0.1:8080/"] {
            let hop = hops.check(&Url::parse(url).unwrap()).await.unwrap();
            assert!(matches!(hop, Hop::Own), "{url}");
        }
        // Another port, scheme or spelling of the host is another origin.
        for url in [
            "http://127.0.0.1:8081/x",
            "https://127.0.0.1:8080/x",
            "http://localhost:8080/x",
        ] {
            assert!(
                matches!(refused(&hops, url).await, Refused::Host(_)),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn hosts_not_allowed_are_refused_before_any_lookup() {
        // `.invalid` never resolves: a lookup would have made it Unresolvable.
        let hops = hops("http://court.example/", "*.cdn.invalid", true);
        assert_eq!(
            refused(&hops, "https://docs.court.invalid/d1").await,
            Refused::Host("docs.court.invalid".into())
        );
        assert!(matches!(
            refused(&hops, "https://a.cdn.invalid/d1").await,
            Refused::Unresolvable { .. }
        ));
        assert_eq!(
            refused(&hops, "ftp://a.cdn.invalid/d1").await,
            Refused::Scheme("ftp".into())
        );
    }

    #[tokio::test]
    async fn allowed_hosts_must_be_public_unless_private_is_allowed() {
        let strict = hops("http://court.example/", "127.0.0.1, *.localhost", false);
        for url in ["http://127.0.0.1:9/x", "http://files.localhost/x"] {
            assert!(
                matches!(
                    refused(&strict, url).await,
                    Refused::Private {
                        kind: "loopback",
                        ..
                    }
                ),
                "{url}"
            );
        }
        let open = hops("http://court.example/", "127.0.0.1, *.localhost", true);
        for url in ["http://127.0.0.1:9/x", "http://files.localhost/x"] {
            let hop = open.check(&Url::parse(url).unwrap()).await.unwrap();
            assert!(matches!(hop, Hop::Foreign(_)), "{url}");
        }
        assert_eq!(open.pinned.lock().unwrap().len(), 2);
        open.check(&Url::parse("http://127.0.0.1:9/y").unwrap())
            .await
            .unwrap();
        assert_eq!(open.pinned.lock().unwrap().len(), 2, "reused");
    }

    #[tokio::test]
    async fn a_folder_source_has_no_own_origin() {
        let hops = Hops::new(None, Vec::new(), false, Duration::from_secs(5));
        assert!(matches!(
            refused(&hops, "http://127.0.0.1/x").await,
            Refused::Host(_)
        ));
    }
}

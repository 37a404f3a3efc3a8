//! Access control: who is calling (API keys, progress tokens), what they may do (scopes, checked
//! per GraphQL field by [`crate::auth::policy`]), and which tenant's data they see
//! ([`crate::auth::Principal::visibility`]).
//!
//! The HTTP layer turns a credential into a [`crate::auth::Principal`] once per request or
//! WebSocket connection ([`crate::auth::Authenticator`]); the GraphQL layer asks
//! [`crate::auth::policy::check`] before every root field runs, and reads data through the
//! principal's visibility. Nothing else decides access.

pub mod admin;
pub mod audit;
mod authenticator;
pub mod keys;
pub mod origins;
pub mod policy;
pub mod token;

pub use authenticator::{principal_of, AuthError, AuthMode, Authenticator};

use crate::db::Visibility;
use chrono::{DateTime, Utc};
use std::fmt;
use uuid::Uuid;

/// What a key may do. Each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Queries and subscriptions.
    Read,
    /// Read, plus every mutation on the tenant's own jobs and webhooks.
    Write,
    /// Write, plus keys and every tenant's data.
    Admin,
}

impl Scope {
    /// Every scope, weakest first.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    /// The name used on the command line, in the database and in `viewer.scopes`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// Reads a scope name.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name.trim())
    }

    /// Reads a comma-separated list (`read,write`), refusing unknown names and empty lists.
    pub fn parse_list(list: &str) -> Result<Vec<Scope>, String> {
        let mut scopes = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let scope = Scope::parse(name).ok_or_else(|| {
                format!("unknown scope `{name}` (scopes are read, write and admin)")
            })?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        if scopes.is_empty() {
            return Err("at least one scope is required (read, write or admin)".into());
        }
        scopes.sort();
        Ok(scopes)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An API key.
    Key {
        /// Its id.
        id: String,
    },
    /// A progress token for one job, issued by a key.
    Token {
        /// The job it shows.
        job: Uuid,
        /// The key that issued it (the token dies with it).
        issuer: String,
    },
    /// `AUTOS_AUTH=off`: nobody had to.
    Open,
}

/// Who is calling, as the HTTP layer established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant's id.
    pub tenant_id: Uuid,
    /// The tenant's slug.
    pub tenant: String,
    /// Scopes as granted.
    pub scopes: Vec<Scope>,
    /// Key, token, or none.
    pub credential: Credential,
    /// When the credential stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// Points per minute of the key (or of the key that issued a token), when not the
    /// deployment's default.
    pub rate_limit: Option<u64>,
}

impl Principal {
    /// Whether the scopes include `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|granted| *granted >= scope)
    }

    /// The key id, for keys (and the issuing key of a token).
    pub fn key_id(&self) -> Option<&str> {
        match &self.credential {
            Credential::Key { id } => Some(id),
            Credential::Token { issuer, .. } => Some(issuer),
            Credential::Open => None,
        }
    }

    /// The one job a progress token shows.
    pub fn token_job(&self) -> Option<Uuid> {
        match &self.credential {
            Credential::Token { job, .. } => Some(*job),
            _ => None,
        }
    }

    /// Whether this caller sees every tenant's data.
    pub fn all_tenants(&self) -> bool {
        self.token_job().is_none() && self.allows(Scope::Admin)
    }

    /// The data this caller may read: its tenant's (every tenant's for admin keys), and for
    /// a progress token its one job.
    pub fn visibility(&self) -> Visibility {
        Visibility {
            tenant: (!self.all_tenants()).then_some(self.tenant_id),
            job: self.token_job(),
        }
    }

    /// The rate limit budget this caller spends: its key's; a progress token has one of its
    /// own (so that browsers cannot spend their backend's); without access control, one for
    /// everybody.
    pub fn budget(&self) -> std::borrow::Cow<'_, str> {
        match &self.credential {
            Credential::Key { id } => std::borrow::Cow::Borrowed(id),
            Credential::Token { job, issuer } => format!("{issuer}:token:{job}").into(),
            Credential::Open => std::borrow::Cow::Borrowed("open"),
        }
    }

    /// Callers with the same value see the same data and may do the same things: what may be
    /// shared between them (one execution of identical subscriptions).
    pub fn sharing_key(&self) -> String {
        let scopes: Vec<&str> = self.scopes.iter().map(|s| s.as_str()).collect();
        match self.token_job() {
            Some(job) => format!("{}|token:{job}", self.tenant_id),
            None => format!("{}|{}", self.tenant_id, scopes.join(",")),
        }
    }
}

/// Where a request came from, for the audit log.
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

impl ClientAddr {
    /// The peer's address, or the one the trusted proxy in front saw (the last entry of
    /// `X-Forwarded-For`, the only one a client cannot forge) when `trust_forwarded`.
    pub fn of(
        peer: std::net::SocketAddr,
        headers: &http::HeaderMap,
        trust_forwarded: bool,
    ) -> ClientAddr {
        let forwarded = trust_forwarded
            .then(|| headers.get("x-forwarded-for")?.to_str().ok())
            .flatten()
            .and_then(|list| list.rsplit(',').next())
            .map(str::trim)
            .filter(|addr| !addr.is_empty());
        ClientAddr(forwarded.map_or_else(|| peer.ip().to_string(), str::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_is_the_peer_unless_a_trusted_proxy_says_otherwise() {
        let peer: std::net::SocketAddr = "10.0.0.9:5555".parse().unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            http::HeaderValue::from_static("6.6.6.6, 203.0.113.7"),
        );
        assert_eq!(ClientAddr::of(peer, &headers, false).0, "10.0.0.9");
        assert_eq!(ClientAddr::of(peer, &headers, true).0, "203.0.113.7");
        assert_eq!(
            ClientAddr::of(peer, &http::HeaderMap::new(), true).0,
            "10.0.0.9"
        );
    }

    fn principal(scopes: &[Scope], credential: Credential) -> Principal {
        Principal {
            tenant_id: Uuid::from_u128(7),
            tenant: "acme".into(),
            scopes: scopes.to_vec(),
            credential,
            expires_at: None,
            rate_limit: None,
        }
    }

    #[test]
    fn scopes_include_the_weaker_ones() {
        let key = || Credential::Key { id: "k".into() };
        let write = principal(&[Scope::Write], key());
        assert!(write.allows(Scope::Read) && write.allows(Scope::Write));
        assert!(!write.allows(Scope::Admin));
        let read = principal(&[Scope::Read], key());
        assert!(!read.allows(Scope::Write));
        assert!(principal(&[Scope::Admin], key()).allows(Scope::Write));
    }

    #[test]
    fn visibility_is_the_tenant_and_for_tokens_the_job() {
        let write = principal(&[Scope::Write], Credential::Key { id: "k".into() });
        assert_eq!(write.visibility().tenant, Some(Uuid::from_u128(7)));
        assert_eq!(write.visibility().job, None);
        let admin = principal(&[Scope::Admin], Credential::Key { id: "k".into() });
        assert_eq!(admin.visibility().tenant, None);
        let job = Uuid::from_u128(9);
        let token = principal(
            &[Scope::Admin],
            Credential::Token {
                job,
                issuer: "k".into(),
            },
        );
        assert_eq!(token.visibility().tenant, Some(Uuid::from_u128(7)));
        assert_eq!(token.visibility().job, Some(job));
        assert_ne!(token.sharing_key(), admin.sharing_key());
        assert_ne!(write.sharing_key(), admin.sharing_key());
    }

    #[test]
    fn scope_lists_parse_strictly() {
        assert_eq!(
            Scope::parse_list("write, read").unwrap(),
            vec![Scope::Read, Scope::Write]
        );
        assert!(Scope::parse_list("").is_err());
        assert!(Scope::parse_list("read,root").is_err());
    }
}

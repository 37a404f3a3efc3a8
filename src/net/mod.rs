//! Outbound connections to hosts named by others (webhook targets, document URLs): which
//! hosts an allowlist admits ([`HostPattern`](crate::net::HostPattern)), which addresses are
//! public ([`classify`](crate::net::classify())), and resolving a host to addresses that were
//! all checked ([`resolve`](crate::net::resolve())), for the caller to connect to exactly those.

mod address;
mod host;
mod resolve;

pub use address::{article, classify};
pub use host::{host_key, HostPattern};
pub use resolve::{resolve, AddressRefusal, RESOLVE_TIMEOUT};

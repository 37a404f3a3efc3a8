//! Webhooks: which targets are allowed ([`target`](crate::webhook::target)), how messages
//! are signed ([`sign`](crate::webhook::sign), Standard Webhooks) and sent
//! ([`send`](crate::webhook::send)), and the built-in test receiver
//! ([`receiver`](crate::webhook::receiver)).

mod hmac;
pub mod receiver;
pub mod send;
pub mod sign;
pub mod target;

pub use sign::{Secret, SecretError};
pub use target::{classify, HostPattern, Refusal, Target, TargetPolicy, MAX_URL_BYTES};

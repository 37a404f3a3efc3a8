//! autos: fetches the complete case files ("autos") of Brazilian court cases.
//!
//! Data flows one way: `graphql` → `jobs` / `db` → `queue` → worker → `source` / `storage` → `db`.
//! Nothing below imports anything above.

/// Composition root: builds every part from the configuration and runs them.
pub mod app;
/// Access control: API keys, progress tokens, scopes, tenants' visibility, the audit log.
pub mod auth;
/// Every setting, from the environment and command-line flags.
pub mod config;
/// SQL: processes, documents, jobs; compare-and-set status updates.
pub mod db;
/// Pure domain: process numbers, statuses and their transitions, storage names.
pub mod domain;
/// Private PostgreSQL and S3-compatible store for a machine with nothing configured.
pub mod embedded;
/// The GraphQL schema: queries, mutations, types and data loaders.
pub mod graphql;
/// The axum router: `/graphql` (HTTP and WebSocket), `/`, health.
pub mod http;
/// Download jobs: starting, cancelling, retrying, and the batch task that transfers documents.
pub mod jobs;
/// Limits: what one operation may cost, and how fast a key may spend.
pub mod limits;
/// Outbound connections to hosts named by others: allowlists, public addresses, resolving.
pub mod net;
/// Live progress: LISTEN/NOTIFY fanned out to subscribers.
pub mod progress;
/// The PostgreSQL task queue (fang's tasks on our pool) and its workers.
pub mod queue;
/// The upstream court source: `http(s)://` and `file://`.
pub mod source;
/// S3: streaming uploads and presigned download URLs.
pub mod storage;
/// Webhook targets and delivery.
pub mod webhook;

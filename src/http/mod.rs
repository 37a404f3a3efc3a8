//! The HTTP surface: `/graphql` (POST operations, GET queries, GraphiQL or a WebSocket), `/`
//! (progress page), health, and the built-in webhook test receiver.
//!
//! Every request to `/graphql` passes the browser checks
//! ([`crate::auth::origins::OriginPolicy`]) and is authenticated
//! ([`crate::auth::Authenticator`]) here, once, before anything of it runs; what the caller may
//! then do is decided per field by the GraphQL layer.

mod graphql;
mod respond;
pub mod serve;
mod socket;

use crate::auth::origins::OriginPolicy;
use crate::auth::Authenticator;
use crate::graphql::multiplex::Multiplexed;
use crate::graphql::AutosSchema;
use crate::jobs::Services;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

/// The progress page, built into the binary so that autos runs from any directory.
const INDEX_HTML: &str = include_str!("../../playground/index.html");

/// Shared state of the router.
#[derive(Clone)]
pub struct HttpState {
    /// The schema.
    pub schema: AutosSchema,
    /// The schema, with identical subscriptions sharing one execution (WebSockets).
    pub subscriptions: Multiplexed,
    /// Pool, storage, source.
    pub services: Services,
    /// The built-in webhook test receiver.
    pub receiver: std::sync::Arc<crate::webhook::receiver::TestReceiver>,
    /// Who is calling.
    pub auth: Authenticator,
    /// Which browser origins may call.
    pub origins: OriginPolicy,
    /// Whether `X-Forwarded-For` names the client (behind a trusted proxy).
    pub trust_forwarded: bool,
    /// What operations may cost, and the keys' budgets.
    pub limits: crate::limits::Limits,
    /// Largest request body (`AUTOS_MAX_BODY_BYTES`).
    pub max_body_bytes: u64,
    /// Longest a request may run (`AUTOS_REQUEST_TIMEOUT_SECS`).
    pub request_timeout: std::time::Duration,
    /// Operations at once on one WebSocket (`AUTOS_WS_MAX_SUBSCRIPTIONS`).
    pub ws_max_subscriptions: usize,
    /// How often an idle WebSocket is pinged (`AUTOS_WS_PING_SECS`).
    pub ws_ping: std::time::Duration,
    /// Turns true when the process stops: WebSockets are closed with 1001 (going away).
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// The WebSocket connections being served (hyper no longer tracks them once upgraded).
    pub sockets: tokio_util::task::TaskTracker,
}

/// The router.
pub fn router(state: HttpState) -> Router {
    let cors = cors_layer(&state.origins);
    let graphql = Router::new()
        .route("/graphql", get(graphql::get).post(graphql::post))
        .layer(cors);
    let mut router = Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if state.services.test_receiver {
        router = router.route(
            "/webhooks/test-receiver",
            axum::routing::post(test_receiver),
        );
    }
    router.merge(graphql).with_state(state)
}

/// CORS answers on `/graphql` for the origins of `AUTOS_CORS_ORIGINS`, and only those.
fn cors_layer(origins: &OriginPolicy) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allowed: Vec<HeaderValue> = origins
        .cors
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([header::WWW_AUTHENTICATE, header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}

async fn index() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX_HTML)).into_response()
}

/// The built-in test receiver: verifies the signature with the secrets of the tenant that
/// sent the message (known by its `webhook-id`), keeps the message for that tenant, answers
/// 200 with the verdict (401 when the signature does not verify, as a real receiver should).
async fn test_receiver(
    State(state): State<HttpState>,
    ConnectInfo(_peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let svc = &state.services;
    let tenant = match header("webhook-id") {
        Some(id) => crate::db::webhooks::tenant_of_message(&svc.pool, id)
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(error = %err, "test receiver: cannot look the message up");
                None
            }),
        None => None,
    };
    let secrets = match tenant {
        Some(tenant) => crate::jobs::webhook::signing_secrets(&svc.pool, &svc.webhooks, tenant)
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(error = %format!("{err:#}"), "test receiver: cannot read the tenant's secrets");
                Vec::new()
            }),
        None => Vec::new(),
    };
    let valid = state.receiver.receive(
        tenant,
        &secrets,
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
    );
    let status = if valid {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    (status, Json(json!({ "signatureValid": valid }))).into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let pool = &state.services.pool;
    let (database, storage, outages) = tokio::join!(
        crate::db::ping(pool),
        state.services.storage.ping(),
        crate::db::outages::current(pool)
    );
    let status = if database && storage {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // What the workers see down (S3 or the court): work waits for it, nothing fails.
    let outages: Vec<Value> = outages
        .unwrap_or_default()
        .into_iter()
        .map(|o| json!({ "dependency": o.dependency, "since": o.since, "reason": o.reason }))
        .collect();
    (
        status,
        Json(json!({ "database": database, "storage": storage, "outages": outages })),
    )
        .into_response()
}

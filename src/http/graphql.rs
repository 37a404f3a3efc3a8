//! `/graphql` over HTTP: `POST` runs any operation, `GET` runs queries (from its query string),
//! serves GraphiQL, or upgrades to a WebSocket (see [`super::socket`]).
//!
//! Every request passes, in this order and before anything of it runs: the browser checks
//! (its `Origin`), the media type (`POST` takes `application/json` only), authentication, the
//! price of its operation (cost and depth) and the caller's rate limit.

use super::respond::{self, Media};
use super::socket::{self, Connection};
use super::HttpState;
use crate::auth::{AuthError, ClientAddr, Principal};
use crate::graphql::errors::code;
use crate::graphql::Loaders;
use async_graphql::http::WebSocketProtocols;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;

/// GraphiQL, reading the key from the URL fragment (`/graphql#key=…`) or the browser's storage.
const GRAPHIQL_HTML: &str = include_str!("../../playground/graphiql.html");

/// The answer to a credential that is missing or refused: 401, `WWW-Authenticate: Bearer`.
fn unauthenticated(err: &AuthError, media: Media) -> Response {
    if let AuthError::Unavailable(cause) = err {
        tracing::error!(error = %cause, "cannot check credentials");
        return respond::error_as(
            StatusCode::SERVICE_UNAVAILABLE,
            code::INTERNAL,
            "cannot check credentials now; try again",
            media,
        );
    }
    let challenge = match err {
        AuthError::Missing => "Bearer",
        _ => "Bearer error=\"invalid_token\"",
    };
    let mut response = respond::error_as(
        StatusCode::UNAUTHORIZED,
        code::UNAUTHENTICATED,
        &err.to_string(),
        media,
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

fn refused_origin() -> Response {
    respond::error(
        StatusCode::FORBIDDEN,
        code::FORBIDDEN,
        "this web page's origin may not use autos (AUTOS_CORS_ORIGINS)",
    )
}

fn not_acceptable() -> Response {
    respond::error(
        StatusCode::NOT_ACCEPTABLE,
        code::BAD_REQUEST,
        "answers are application/json or application/graphql-response+json",
    )
}

/// `Content-Type: application/json` (with parameters, such as a charset).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

async fn authenticate(
    state: &HttpState,
    headers: &HeaderMap,
    media: Media,
) -> Result<Principal, Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state
        .auth
        .authenticate(authorization)
        .await
        .map_err(|err| unauthenticated(&err, media))
}

/// Prices, charges and runs one operation for `principal`, within the request timeout.
async fn run(
    state: &HttpState,
    principal: Principal,
    client: ClientAddr,
    request: async_graphql::Request,
    media: Media,
) -> Response {
    let admitted = match state
        .limits
        .admit(
            &principal,
            &request.query,
            request.operation_name.as_deref(),
            &request.variables,
        )
        .await
    {
        Ok(admitted) => admitted,
        Err(refused) => return respond::refusal(&refused, media),
    };
    let request = request
        .data(Loaders::new(&state.services.pool, principal.visibility()))
        .data(principal)
        .data(client);
    match tokio::time::timeout(state.request_timeout, state.schema.execute(request)).await {
        Ok(response) => respond::executed(response, media, Some(&admitted)),
        Err(_) => {
            tracing::warn!(timeout = ?state.request_timeout, "a request ran out of time");
            let extensions = serde_json::json!({
                "code": code::TIMEOUT,
                "cost": respond::cost_extension(&admitted),
            });
            let mut response = respond::error_with(
                StatusCode::SERVICE_UNAVAILABLE,
                extensions,
                &format!(
                    "the request took longer than {} s (AUTOS_REQUEST_TIMEOUT_SECS)",
                    state.request_timeout.as_secs()
                ),
                media,
            );
            if let Some(verdict) = &admitted.verdict {
                respond::rate_headers(&mut response, verdict);
            }
            response
        }
    }
}

/// `POST /graphql`: checks where it comes from, that it is JSON (a page on the web can send
/// other types without the browser asking first), its size, who sends it and what it costs,
/// then runs it.
pub async fn post(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if !state.origins.allows(origin(&headers)) {
        return refused_origin();
    }
    if !is_json(&headers) {
        return respond::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::BAD_REQUEST,
            "POST /graphql takes a JSON body with Content-Type: application/json",
        );
    }
    let Some(media) = respond::negotiate(&headers) else {
        return not_acceptable();
    };
    let principal = match authenticate(&state, &headers, media).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let body = match read_body(&headers, body, state.max_body_bytes, media).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let request = match serde_json::from_slice(&body)
        .map_err(|err| format!("the body is not JSON: {err}"))
        .and_then(request_of)
    {
        Ok(request) => request,
        Err(message) => return bad_request(&message, media),
    };
    let client = ClientAddr::of(peer, &headers, state.trust_forwarded);
    run(&state, principal, client, request, media).await
}

/// The body, at most `max` bytes: a larger one is refused with 413 from its announced length
/// alone, or as soon as it passes the limit, without reading the rest.
async fn read_body(
    headers: &HeaderMap,
    body: axum::body::Body,
    max: u64,
    media: Media,
) -> Result<axum::body::Bytes, Response> {
    let too_large = || {
        respond::error_as(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::BAD_REQUEST,
            &format!("the body is larger than {max} bytes (AUTOS_MAX_BODY_BYTES)"),
            media,
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, max as usize)
        .await
        .map_err(|_| too_large())
}

/// 400: the request is not a well-formed GraphQL-over-HTTP request; nothing ran.
fn bad_request(message: &str, media: Media) -> Response {
    respond::error_as(StatusCode::BAD_REQUEST, code::BAD_REQUEST, message, media)
}

/// The request that GraphQL-over-HTTP parameters (a POST body, or a GET query string made
/// into JSON) describe, or why they describe none: `query` a string, `operationName` a
/// string or null, `variables` and `extensions` maps or null. Other parameters are ignored.
fn request_of(params: serde_json::Value) -> Result<async_graphql::Request, String> {
    use serde_json::Value;
    let Value::Object(mut params) = params else {
        return Err("a GraphQL request is a JSON object (batches are not taken)".into());
    };
    match params.get("query") {
        Some(Value::String(_)) => {}
        Some(_) => return Err("`query` must be a string".into()),
        None => return Err("`query` is missing".into()),
    }
    if !matches!(
        params.get("operationName"),
        None | Some(Value::Null | Value::String(_))
    ) {
        return Err("`operationName` must be a string or null".into());
    }
    for name in ["variables", "extensions"] {
        match params.get(name) {
            None | Some(Value::Object(_)) => {}
            Some(Value::Null) => {
                params.remove(name);
            }
            Some(_) => return Err(format!("`{name}` must be a map (a JSON object) or null")),
        }
    }
    serde_json::from_value(Value::Object(params))
        .map_err(|err| format!("not a GraphQL request: {err}"))
}

/// The parameters of a GET's query string, as [`request_of`] takes them: `variables` and
/// `extensions` are JSON text there; empty ones count as absent.
fn params_of_query_string(params: &HashMap<String, String>) -> Result<serde_json::Value, String> {
    let mut json = serde_json::Map::new();
    for (name, value) in params {
        match name.as_str() {
            "query" => {
                json.insert(name.clone(), value.clone().into());
            }
            "operationName" if !value.is_empty() => {
                json.insert(name.clone(), value.clone().into());
            }
            "variables" | "extensions" if !value.is_empty() => {
                let parsed = serde_json::from_str(value)
                    .map_err(|err| format!("`{name}` is not JSON: {err}"))?;
                json.insert(name.clone(), parsed);
            }
            _ => {}
        }
    }
    Ok(serde_json::Value::Object(json))
}

/// The operation a request would run: its type, when it can be told.
fn operation_type(request: &async_graphql::Request) -> Option<OperationType> {
    let document = async_graphql::parser::parse_query(&request.query).ok()?;
    let operation = match (&document.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        _ => None,
    }?;
    Some(operation.node.ty)
}

/// `GET /graphql`: a WebSocket upgrade (`graphql-transport-ws` or the legacy `graphql-ws`)
/// for subscriptions; a query from the query string (`query`, `variables`, `operationName`);
/// GraphiQL otherwise.
pub async fn get(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    // As async-graphql-axum's `GraphQLProtocol` extractor reads it (its value is private).
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| value.to_str().ok())
        .and_then(|offered| {
            offered
                .split(',')
                .find_map(|p| WebSocketProtocols::from_str(p.trim()).ok())
        });
    if let (Some(protocol), Ok(upgrade)) = (protocol, upgrade) {
        if !state.origins.allows(origin(&headers)) {
            return (
                StatusCode::FORBIDDEN,
                "this web page's origin may not open a WebSocket to autos",
            )
                .into_response();
        }
        let connection = Connection {
            header_credential: headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            client: ClientAddr::of(peer, &headers, state.trust_forwarded),
            protocol,
        };
        return socket::upgrade(state, upgrade, connection);
    }
    if !params.contains_key("query") {
        return ([(header::CACHE_CONTROL, "no-cache")], Html(GRAPHIQL_HTML)).into_response();
    }
    if !state.origins.allows(origin(&headers)) {
        return refused_origin();
    }
    let Some(media) = respond::negotiate(&headers) else {
        return not_acceptable();
    };
    let request = match params_of_query_string(&params).and_then(request_of) {
        Ok(request) => request,
        Err(message) => return bad_request(&message, media),
    };
    // GET must not change anything (a link, a prefetch, a crawler could send it).
    if matches!(
        operation_type(&request),
        Some(OperationType::Mutation | OperationType::Subscription)
    ) {
        let mut response = respond::error_as(
            StatusCode::METHOD_NOT_ALLOWED,
            code::BAD_REQUEST,
            "GET /graphql runs queries only: send mutations with POST, subscriptions over a WebSocket",
            media,
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let principal = match authenticate(&state, &headers, media).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let client = ClientAddr::of(peer, &headers, state.trust_forwarded);
    run(&state, principal, client, request, media).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_json_bodies_are_taken() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!with("multipart/form-data; boundary=x"));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn well_formed_parameters_make_a_request() {
        let request = request_of(json!({
            "query": "query Q($n: String!) { process(number: $n) { number } }",
            "operationName": "Q",
            "variables": { "n": "1" },
            "extensions": { "some": "value" },
        }))
        .expect("well formed");
        assert_eq!(request.operation_name.as_deref(), Some("Q"));
        assert_eq!(
            serde_json::to_value(&request.variables).unwrap(),
            json!({ "n": "1" })
        );
        // null stands for absent; unknown parameters are ignored.
        for absent in ["operationName", "variables", "extensions"] {
            let params = json!({ "query": "{ __typename }", absent: null, "other": 1 });
            let request = request_of(params).unwrap_or_else(|e| panic!("null {absent}: {e}"));
            assert_eq!(request.query, "{ __typename }");
            assert_eq!(request.operation_name, None);
        }
    }

    #[test]
    fn malformed_parameters_are_refused_with_the_reason() {
        let refused = |params: serde_json::Value| request_of(params).expect_err("malformed");
        assert_eq!(refused(json!({ "qeury": "{ x }" })), "`query` is missing");
        assert_eq!(refused(json!({})), "`query` is missing");
        assert_eq!(
            refused(json!({ "query": null })),
            "`query` must be a string"
        );
        for wrong in [
            json!({ "obj": "ect" }),
            json!(0),
            json!(false),
            json!(["array"]),
        ] {
            assert_eq!(
                refused(json!({ "query": wrong })),
                "`query` must be a string",
                "{wrong}"
            );
            assert_eq!(
                refused(json!({ "query": "{ x }", "operationName": wrong })),
                "`operationName` must be a string or null",
                "{wrong}"
            );
        }
        for name in ["variables", "extensions"] {
            for wrong in [json!("string"), json!(0), json!(false), json!(["array"])] {
                assert_eq!(
                    refused(json!({ "query": "{ x }", name: wrong })),
                    format!("`{name}` must be a map (a JSON object) or null"),
                );
            }
        }
        assert!(refused(json!([{ "query": "{ x }" }])).contains("batches are not taken"));
        assert!(refused(json!("{ x }")).contains("a JSON object"));
    }

    #[test]
    fn a_query_string_carries_json_variables_and_extensions() {
        let params = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let got = params_of_query_string(&params(&[
            ("query", "{ x }"),
            ("variables", r#"{"n":"1"}"#),
            ("extensions", r#"{"some":"value"}"#),
            ("operationName", ""),
            ("other", "ignored"),
        ]))
        .expect("well formed");
        assert_eq!(
            got,
            json!({ "query": "{ x }", "variables": { "n": "1" }, "extensions": { "some": "value" } })
        );
        let empty = params_of_query_string(&params(&[("query", "{ x }"), ("variables", "")]));
        assert_eq!(empty.expect("empty variables"), json!({ "query": "{ x }" }));
        let not_json = params_of_query_string(&params(&[("query", "{ x }"), ("variables", "{")]));
        assert!(not_json
            .expect_err("not JSON")
            .starts_with("`variables` is not JSON"));
        // A query string's variables must be a map too.
        let list = params_of_query_string(&params(&[("query", "{ x }"), ("variables", "[1]")]));
        assert!(request_of(list.expect("JSON")).is_err());
    }

    #[test]
    fn the_operation_type_is_read_from_the_request() {
        let request = |q: &str, name: Option<&str>| {
            let mut r = async_graphql::Request::new(q);
            r.operation_name = name.map(str::to_string);
            operation_type(&r)
        };
        assert_eq!(
            request("{ viewer { tenant } }", None),
            Some(OperationType::Query)
        );
        assert_eq!(
            request("mutation { cancelJob(id: \"x\") { id } }", None),
            Some(OperationType::Mutation)
        );
        let two = "query A { viewer { tenant } } mutation B { cancelJob(id: \"x\") { id } }";
        assert_eq!(request(two, Some("B")), Some(OperationType::Mutation));
        assert_eq!(request(two, None), None);
        assert_eq!(request("not graphql", None), None);
    }
}

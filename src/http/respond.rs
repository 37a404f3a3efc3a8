//! GraphQL over HTTP answers: the media type the client asked for, status codes that follow
//! it, errors with a stable code, and what every answer says of the caller's rate limit.

use crate::limits::{self, Admitted, Refusal, Verdict};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// `application/graphql-response+json`.
pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// The media type of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// `application/json`: every GraphQL answer is a 200.
    Json,
    /// `application/graphql-response+json`: an operation that could not run is a 400.
    GraphqlResponse,
}

impl Media {
    fn content_type(self) -> &'static str {
        match self {
            Media::Json => "application/json; charset=utf-8",
            Media::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
        }
    }
}

/// The media type the client accepts (its `Accept`, in its order of preference); `None` when
/// it accepts neither. No `Accept` at all is taken as `application/json`.
pub fn negotiate(headers: &HeaderMap) -> Option<Media> {
    let Some(accept) = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
    else {
        return Some(Media::Json);
    };
    let mut offers: Vec<(f32, usize, Media)> = Vec::new();
    for (position, item) in accept.split(',').enumerate() {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let mut q = 1.0f32;
        for parameter in parts {
            if let Some((name, value)) = parameter.split_once('=') {
                if name.trim().eq_ignore_ascii_case("q") {
                    q = value.trim().parse().unwrap_or(0.0);
                }
            }
        }
        if q <= 0.0 {
            continue;
        }
        let chosen = match media.as_str() {
            GRAPHQL_RESPONSE_JSON => Media::GraphqlResponse,
            "application/json" | "application/*" | "*/*" => Media::Json,
            _ => continue,
        };
        offers.push((q, position, chosen));
    }
    offers.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    offers.first().map(|o| o.2)
}

/// An answer with one error and its code, at `status`, as `application/json` (for answers
/// given before the media type is known: a refused origin or media type, 406).
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    error_as(status, code, message, Media::Json)
}

/// An answer with one error and its code, at `status`, as `media`.
pub fn error_as(status: StatusCode, code: &str, message: &str, media: Media) -> Response {
    error_with(status, json!({ "code": code }), message, media)
}

/// An answer with one error carrying `extensions`, at `status`, as `media`.
pub fn error_with(status: StatusCode, extensions: Value, message: &str, media: Media) -> Response {
    let body = json!({ "errors": [{ "message": message, "extensions": extensions }] });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media.content_type()),
    );
    response
}

/// The rate limit headers of a verdict, added to `response`.
pub fn rate_headers(response: &mut Response, verdict: &Verdict) {
    let now = chrono::Utc::now();
    for (name, value) in limits::headers(verdict, now) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
}

/// `extensions.cost` of an answer (only what it costs, when rate limiting is off).
pub fn cost_extension(admitted: &Admitted) -> Value {
    match &admitted.verdict {
        Some(verdict) => json!({
            "requested": admitted.cost.points,
            "remaining": verdict.remaining,
            "limit": verdict.limit,
            "resetAt": verdict.reset_at,
        }),
        None => json!({ "requested": admitted.cost.points }),
    }
}

/// `extensions.cost`, built as the GraphQL value it is sent as (on every answer: no detour
/// through JSON).
fn cost_value(admitted: &Admitted) -> async_graphql::Value {
    use async_graphql::{Name, Number, Value as V};
    let mut cost = async_graphql::indexmap::IndexMap::with_capacity(4);
    cost.insert(
        Name::new("requested"),
        V::Number(Number::from(admitted.cost.points)),
    );
    if let Some(verdict) = &admitted.verdict {
        cost.insert(
            Name::new("remaining"),
            V::Number(Number::from(verdict.remaining)),
        );
        cost.insert(Name::new("limit"), V::Number(Number::from(verdict.limit)));
        cost.insert(
            Name::new("resetAt"),
            V::String(
                verdict
                    .reset_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
        );
    }
    V::Object(cost)
}

/// The answer to an operation refused before it ran.
pub fn refusal(refused: &Refusal, media: Media) -> Response {
    let now = chrono::Utc::now();
    let mut extensions = refused.extensions(now);
    if let Some(map) = extensions.as_object_mut() {
        map.insert("code".into(), json!(refused.code()));
    }
    match refused {
        Refusal::RateLimited(verdict) => {
            let mut response = error_with(
                StatusCode::TOO_MANY_REQUESTS,
                extensions,
                &refused.message(),
                media,
            );
            rate_headers(&mut response, verdict);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(verdict.retry_after_secs(now)),
            );
            response
        }
        _ => error_with(
            status_of_request_error(media),
            extensions,
            &refused.message(),
            media,
        ),
    }
}

/// An operation that could not run at all (it does not parse, does not validate, or is
/// refused before it runs): 400 in `application/graphql-response+json`, 200 in plain JSON.
pub fn status_of_request_error(media: Media) -> StatusCode {
    match media {
        Media::Json => StatusCode::OK,
        Media::GraphqlResponse => StatusCode::BAD_REQUEST,
    }
}

/// The HTTP answer of an executed operation, as `media`, with its cost.
pub fn executed(
    mut response: async_graphql::Response,
    media: Media,
    admitted: Option<&Admitted>,
) -> Response {
    if let Some(admitted) = admitted {
        response
            .extensions
            .insert("cost".to_string(), cost_value(admitted));
    }
    // Nothing ran (syntax or validation errors: no data, errors without a path).
    let request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let status = if request_error {
        status_of_request_error(media)
    } else {
        StatusCode::OK
    };
    let http_headers = response.http_headers.clone();
    let body = body_of(&response, request_error);
    let mut answer = (status, body).into_response();
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media.content_type()),
    );
    answer.headers_mut().extend(http_headers);
    if let Some(verdict) = admitted.and_then(|a| a.verdict.as_ref()) {
        rate_headers(&mut answer, verdict);
    }
    answer
}

/// The JSON of `response`. An operation that did not run has no `data` entry at all (GraphQL
/// spec, "Response": an error raised before execution leaves `data` out; GraphQL over HTTP
/// asks the same of `application/graphql-response+json`), rather than `"data": null`, which
/// would say that it ran and failed.
fn body_of(response: &async_graphql::Response, request_error: bool) -> String {
    if !request_error {
        return serde_json::to_string(response).unwrap_or_else(|_| "{}".into());
    }
    match serde_json::to_value(response) {
        Ok(Value::Object(mut fields)) => {
            fields.remove("data");
            Value::Object(fields).to_string()
        }
        _ => "{}".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(response: Response) -> (StatusCode, String, Value) {
        let status = response.status();
        let media = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, media, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn an_operation_that_did_not_run_has_no_data_entry() {
        let unparsable = || {
            async_graphql::Response::from_errors(vec![async_graphql::ServerError::new(
                "expected selection",
                None,
            )])
        };
        for (media, status) in [
            (Media::Json, StatusCode::OK),
            (Media::GraphqlResponse, StatusCode::BAD_REQUEST),
        ] {
            let (got, content_type, body) = answer(executed(unparsable(), media, None)).await;
            assert_eq!(got, status, "{media:?}");
            assert!(
                content_type.starts_with(media.content_type()),
                "{content_type}"
            );
            assert!(body.get("data").is_none(), "{media:?}: {body}");
            assert_eq!(body["errors"][0]["message"], "expected selection");
        }
    }

    #[tokio::test]
    async fn an_operation_that_ran_keeps_its_data_even_when_null() {
        let ran = async_graphql::Response::new(
            async_graphql::Value::from_json(json!({ "viewer": { "tenant": "acme" } })).unwrap(),
        );
        let (status, _, body) = answer(executed(ran, Media::GraphqlResponse, None)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"]["viewer"]["tenant"], "acme");

        // A field error that nulled the whole answer: it ran, `data` is there (null).
        let mut failed = async_graphql::ServerError::new("boom", None);
        failed.path = vec![async_graphql::PathSegment::Field("job".into())];
        let nulled = async_graphql::Response::from_errors(vec![failed]);
        let (status, _, body) = answer(executed(nulled, Media::GraphqlResponse, None)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.get("data"), Some(&Value::Null), "{body}");
    }

    #[tokio::test]
    async fn errors_take_the_media_type_asked_for() {
        let response = error_as(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "no",
            Media::GraphqlResponse,
        );
        let (status, content_type, body) = answer(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            content_type,
            "application/graphql-response+json; charset=utf-8"
        );
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");
        let (_, content_type, _) = answer(error(StatusCode::FORBIDDEN, "FORBIDDEN", "no")).await;
        assert_eq!(content_type, "application/json; charset=utf-8");
    }

    fn accept(value: &str) -> Option<Media> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, value.parse().unwrap());
        negotiate(&headers)
    }

    #[test]
    fn the_media_type_follows_accept() {
        assert_eq!(negotiate(&HeaderMap::new()), Some(Media::Json));
        assert_eq!(accept("application/json"), Some(Media::Json));
        assert_eq!(accept(GRAPHQL_RESPONSE_JSON), Some(Media::GraphqlResponse));
        assert_eq!(
            accept("application/graphql-response+json, application/json"),
            Some(Media::GraphqlResponse)
        );
        assert_eq!(
            accept("application/json, application/graphql-response+json"),
            Some(Media::Json)
        );
        assert_eq!(
            accept("application/json;q=0.5, application/graphql-response+json"),
            Some(Media::GraphqlResponse)
        );
        assert_eq!(accept("*/*"), Some(Media::Json));
        assert_eq!(accept("text/html"), None);
        assert_eq!(accept("application/json;q=0"), None);
    }
}

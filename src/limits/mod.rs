//! Limits: what one operation may cost (priced before it runs, [`crate::limits::cost`]), and
//! how fast a key may spend ([`crate::limits::rate`]). The HTTP layer asks
//! [`crate::limits::Limits::admit`] once per request and once per WebSocket operation, before
//! anything of it runs.

pub mod cost;
pub mod rate;

use crate::auth::Principal;
use chrono::{DateTime, Utc};
pub use cost::{Cost, SchemaShape};
pub use rate::{RateLimiter, Verdict};

/// Why an operation is refused before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It would cost more than any one operation may (`QUERY_TOO_COMPLEX`).
    TooComplex {
        /// What it would cost.
        cost: Cost,
        /// The most an operation may cost.
        max_cost: u64,
    },
    /// It selects more fields than allowed (`QUERY_TOO_COMPLEX`).
    TooLarge {
        /// What it would cost.
        cost: Cost,
        /// The most an operation may cost.
        max_cost: u64,
    },
    /// It nests deeper than allowed (`QUERY_TOO_COMPLEX`).
    TooDeep {
        /// What it would cost.
        cost: Cost,
        /// The most an operation may cost.
        max_cost: u64,
    },
    /// The key's budget for this window is spent (`RATE_LIMITED`).
    RateLimited(Verdict),
}

impl Refusal {
    /// The error code clients see.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::RateLimited(_) => "RATE_LIMITED",
            _ => "QUERY_TOO_COMPLEX",
        }
    }

    /// A stable phrase for clients.
    pub fn message(&self) -> String {
        match self {
            Refusal::TooComplex { cost, max_cost } => format!(
                "the operation would cost {} points; at most {max_cost} are allowed \
                 (ask for smaller pages with `first`, or fewer fields)",
                cost.points
            ),
            Refusal::TooLarge { cost, .. } => format!(
                "the operation selects {} fields; at most {} are allowed (split it)",
                cost.selections,
                cost::MAX_SELECTIONS
            ),
            Refusal::TooDeep { cost, .. } => format!(
                "the operation nests {} levels deep; at most {} are allowed",
                cost.depth,
                cost::MAX_DEPTH
            ),
            Refusal::RateLimited(v) => format!(
                "rate limit exceeded: {} points asked, {} left of {} until {}",
                v.requested,
                v.remaining,
                v.limit,
                v.reset_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        }
    }

    /// What a client is told about its operation, besides the code: `cost { requested limit }`,
    /// and what made it too large or too deep; for a rate limit, what is left and when.
    pub fn extensions(&self, now: DateTime<Utc>) -> serde_json::Value {
        use serde_json::json;
        match self {
            Refusal::TooComplex { cost, max_cost } => json!({
                "cost": { "requested": cost.points, "limit": max_cost },
            }),
            Refusal::TooLarge { cost, max_cost } => json!({
                "cost": { "requested": cost.points, "limit": max_cost },
                "selections": { "requested": cost.selections, "limit": cost::MAX_SELECTIONS },
            }),
            Refusal::TooDeep { cost, max_cost } => json!({
                "cost": { "requested": cost.points, "limit": max_cost },
                "depth": { "requested": cost.depth, "limit": cost::MAX_DEPTH },
            }),
            Refusal::RateLimited(verdict) => json!({
                "retryAfter": verdict.retry_after_secs(now),
                "cost": { "requested": verdict.requested, "remaining": verdict.remaining,
                          "limit": verdict.limit, "resetAt": verdict.reset_at },
            }),
        }
    }
}

/// An operation let through: its cost and what is left of the caller's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// What it costs.
    pub cost: Cost,
    /// The caller's budget after it; none when rate limiting is off.
    pub verdict: Option<Verdict>,
}

/// The limits of a process.
#[derive(Clone)]
pub struct Limits {
    shape: std::sync::Arc<SchemaShape>,
    /// The most one operation may cost (`AUTOS_MAX_QUERY_COST`).
    pub max_cost: u64,
    /// The keys' budgets.
    pub rate: RateLimiter,
}

impl Limits {
    /// Limits for the schema whose SDL is `sdl`.
    pub fn new(sdl: &str, max_cost: u64, rate: RateLimiter) -> Limits {
        Limits {
            shape: std::sync::Arc::new(SchemaShape::of_sdl(sdl)),
            max_cost,
            rate,
        }
    }

    /// What `query` (operation `operation_name`, with `variables`) costs: its text is read,
    /// nothing runs. A text that does not parse costs one point (the schema answers with
    /// the syntax error).
    pub fn price(
        &self,
        query: &str,
        operation_name: Option<&str>,
        variables: &async_graphql::Variables,
    ) -> Cost {
        match async_graphql::parser::parse_query(query) {
            Ok(document) => {
                let cost = cost::cost(&self.shape, &document, operation_name, variables);
                Cost {
                    points: cost.points.max(1),
                    ..cost
                }
            }
            Err(_) => Cost {
                points: 1,
                depth: 0,
                selections: 0,
            },
        }
    }

    /// Prices an operation of `principal` and charges it to the caller's budget; refused when
    /// too complex, too deep, or over the budget (then nothing is charged).
    pub async fn admit(
        &self,
        principal: &Principal,
        query: &str,
        operation_name: Option<&str>,
        variables: &async_graphql::Variables,
    ) -> Result<Admitted, Refusal> {
        let cost = self.price(query, operation_name, variables);
        let max_cost = self.max_cost;
        if cost.points > max_cost {
            return Err(Refusal::TooComplex { cost, max_cost });
        }
        if cost.selections > cost::MAX_SELECTIONS {
            return Err(Refusal::TooLarge { cost, max_cost });
        }
        if cost.depth > cost::MAX_DEPTH {
            return Err(Refusal::TooDeep { cost, max_cost });
        }
        // `AUTOS_RATE_LIMIT=0` turns rate limiting off (a key's own limit still holds).
        if principal.rate_limit.is_none() && self.rate.default_limit() == 0 {
            return Ok(Admitted {
                cost,
                verdict: None,
            });
        }
        let verdict = self
            .rate
            .charge(&principal.budget(), principal.rate_limit, cost.points)
            .await;
        if !verdict.allowed {
            return Err(Refusal::RateLimited(verdict));
        }
        Ok(Admitted {
            cost,
            verdict: Some(verdict),
        })
    }
}

/// The IETF `RateLimit-Policy` and `RateLimit` header values (draft-ietf-httpapi-ratelimit-
/// headers-10) for a verdict at `now`.
pub fn headers(verdict: &Verdict, now: DateTime<Utc>) -> [(&'static str, String); 2] {
    [
        (
            "ratelimit-policy",
            format!("\"default\";q={};w={}", verdict.limit, rate::WINDOW_SECS),
        ),
        (
            "ratelimit",
            format!(
                "\"default\";r={};t={}",
                verdict.remaining,
                verdict.retry_after_secs(now)
            ),
        ),
    ]
}

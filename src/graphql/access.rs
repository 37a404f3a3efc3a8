//! The GraphQL side of access control: one guard on each root type (and on `Viewer` and a
//! job's webhooks) asks
//! [`crate::auth::policy`] whether the caller may use the field about to run.

use super::errors::{client_error, code};
use crate::auth::policy::{self, Operation};
use crate::auth::Principal;
use async_graphql::{Context, Guard, Result, Value};

/// Guards every field of one type.
pub struct Access(pub Operation);

/// The caller, as the HTTP layer established it. A request that did not come through it (there
/// is no such path in autos) has no rights.
pub fn principal<'a>(ctx: &Context<'a>) -> Result<&'a Principal> {
    ctx.data_opt::<Principal>()
        .ok_or_else(|| client_error(code::UNAUTHENTICATED, "authentication required"))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Enum(name) => Some(name.to_string()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl Guard for Access {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        let principal = principal(ctx)?;
        let field = ctx.item.node.name.node.as_str();
        let arguments = ctx.field().arguments()?;
        let argument = |name: &str| {
            arguments
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .and_then(|(_, value)| text(value))
        };
        policy::check(principal, self.0, field, argument)
            .map_err(|denied| client_error(code::FORBIDDEN, denied.0))
    }
}

//! One mapping from errors to GraphQL errors with a stable `extensions.code`.

use crate::jobs::JobError;
use async_graphql::{Error, ErrorExtensions};
use std::sync::Arc;

/// Stable error codes (contract §5).
pub mod code {
    /// Not a valid CNJ number.
    pub const INVALID_PROCESS_NUMBER: &str = "INVALID_PROCESS_NUMBER";
    /// The source does not know the process.
    pub const PROCESS_NOT_FOUND: &str = "PROCESS_NOT_FOUND";
    /// No such job.
    pub const JOB_NOT_FOUND: &str = "JOB_NOT_FOUND";
    /// Webhook URL refused.
    pub const INVALID_WEBHOOK_URL: &str = "INVALID_WEBHOOK_URL";
    /// The source failed.
    pub const SOURCE_UNAVAILABLE: &str = "SOURCE_UNAVAILABLE";
    /// The court refused the credential presented, or this case to it.
    pub const SOURCE_ACCESS_DENIED: &str = "SOURCE_ACCESS_DENIED";
    /// Not allowed in the current state.
    pub const INVALID_STATE: &str = "INVALID_STATE";
    /// No valid credential.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// The credential does not allow this field.
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// Over the key's rate limit.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// The operation costs more than one request may.
    pub const QUERY_TOO_COMPLEX: &str = "QUERY_TOO_COMPLEX";
    /// The tenant has as many active jobs as it may.
    pub const QUOTA_EXCEEDED: &str = "QUOTA_EXCEEDED";
    /// The process has more documents than a job may cover.
    pub const PROCESS_TOO_LARGE: &str = "PROCESS_TOO_LARGE";
    /// The request ran longer than allowed.
    pub const TIMEOUT: &str = "TIMEOUT";
    /// Malformed request.
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    /// Anything else.
    pub const INTERNAL: &str = "INTERNAL";
}

/// A client error with a code.
pub fn client_error(code: &'static str, message: impl Into<String>) -> Error {
    Error::new(message).extend_with(|_, ext| ext.set("code", code))
}

/// An internal error: logged with its details, shown without them.
pub fn internal(err: anyhow::Error) -> Error {
    tracing::error!(error = %format!("{err:#}"), "internal error");
    client_error(code::INTERNAL, "internal error")
}

/// A loader's database error.
pub fn load_error(err: Arc<sqlx::Error>) -> Error {
    internal(anyhow::anyhow!("loader: {err}"))
}

/// A jobs error as a GraphQL error with its code.
pub fn job_error(err: JobError) -> Error {
    {
        let code = match &err {
            JobError::InvalidNumber(_) => code::INVALID_PROCESS_NUMBER,
            JobError::ProcessNotFound(_) => code::PROCESS_NOT_FOUND,
            JobError::JobNotFound(_) => code::JOB_NOT_FOUND,
            JobError::InvalidWebhookUrl(_) => code::INVALID_WEBHOOK_URL,
            JobError::SourceUnavailable(_) => code::SOURCE_UNAVAILABLE,
            JobError::SourceAccessDenied { .. } => code::SOURCE_ACCESS_DENIED,
            JobError::InvalidInput(_) => code::BAD_REQUEST,
            JobError::QuotaExceeded { .. } | JobError::TooManyWebhooks { .. } => {
                code::QUOTA_EXCEEDED
            }
            JobError::ProcessTooLarge { .. } => code::PROCESS_TOO_LARGE,
            JobError::InvalidState(_) => code::INVALID_STATE,
            JobError::Internal(_) => code::INTERNAL,
        };
        match err {
            JobError::Internal(inner) => internal(inner),
            other => client_error(code, other.to_string()),
        }
    }
}

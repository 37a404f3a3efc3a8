//! Tenants' court credentials over GraphQL: write-only secrets, readable metadata.

use crate::db::credentials::CredentialRow;
use async_graphql::{InputObject, Object};
use chrono::{DateTime, Utc};

/// Input of `setSourceCredential`: a court user and password for one source (an MNI source of
/// `AUTOS_SOURCES_FILE`). The secrets are stored sealed and never shown again.
#[derive(InputObject)]
pub struct SetSourceCredentialInput {
    /// The source's name (`Process.source`).
    pub source: String,
    /// The court user (`idConsultante`), usually a CPF.
    pub username: String,
    /// Its password (`senhaConsultante`).
    pub password: Option<String>,
    /// An A1 certificate for mutual TLS (the `.pfx`/`.p12` file, base64), presented in the
    /// TLS handshake with the court. Checked now: one that does not open is refused.
    pub certificate_pkcs12_base64: Option<String>,
    /// The certificate's password.
    pub certificate_password: Option<String>,
}

/// A tenant's credential for a source, without its secrets.
pub struct SourceCredential(pub CredentialRow);

#[Object]
impl SourceCredential {
    /// The source's name.
    async fn source(&self) -> &str {
        &self.0.source
    }
    /// The court user.
    async fn username(&self) -> &str {
        &self.0.username
    }
    /// When it was stored (or last replaced).
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it was last presented to the court (to the minute).
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_used_at
    }
    /// What the court last answered against it; set when it refused it.
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    /// The subject of its client certificate (`CN=…`), when it has one.
    async fn certificate_subject(&self) -> Option<&str> {
        self.0.certificate_subject.as_deref()
    }
    /// Whether the court refused it: it is not presented again until replaced.
    async fn refused(&self) -> bool {
        self.0.refused_at.is_some()
    }
}

//! Who autos is at a court: a user id and password (MNI `idConsultante`/`senhaConsultante`).

use std::fmt;

/// A credential to present to a source. Its secret never reaches a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// Whose it is, for the source's per-credential limits and memories: `config:{source}`
    /// for the deployment's configured one, `tenant:{id}:{source}` for a tenant's own.
    pub key: String,
    /// The court user (`idConsultante`).
    pub username: String,
    /// The password (`senhaConsultante`); none when a client certificate stands for it.
    pub password: Option<String>,
}

impl Credential {
    /// The credential a deployment configured for `source` in `AUTOS_SOURCES_FILE`.
    pub fn configured(source: &str, username: String, password: Option<String>) -> Self {
        Self {
            key: format!("config:{source}"),
            username,
            password,
        }
    }

    /// A tenant's own credential for `source`.
    pub fn of_tenant(
        tenant: uuid::Uuid,
        source: &str,
        username: String,
        password: Option<String>,
    ) -> Self {
        Self {
            key: format!("tenant:{tenant}:{source}"),
            username,
            password,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("key", &self.key)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

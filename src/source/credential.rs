//! Who autos is at a court: a user id and password (MNI `idConsultante`/`senhaConsultante`),
//! and an A1 certificate (PKCS#12) for mutual TLS, where the court asks for one.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use sha2::{Digest, Sha256};

/// A credential to present to a source. Its secrets never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// Whose it is, for the source's per-credential limits and memories: `config:{source}`
    /// for the deployment's configured one, `tenant:{id}:{source}` for a tenant's own.
    pub key: String,
    /// The court user (`idConsultante`).
    pub username: String,
    /// The password (`senhaConsultante`); none when a client certificate stands for it.
    pub password: Option<String>,
    /// A client certificate for mutual TLS.
    pub certificate: Option<ClientCertificate>,
}

/// An A1 certificate with its private key, ready for TLS.
#[derive(Clone)]
pub struct ClientCertificate {
    /// The key (PKCS#8) and the chain, as PEM.
    pem: Arc<Vec<u8>>,
    /// Names this certificate (the start of the SHA-256 of its chain): one TLS client each.
    fingerprint: String,
    /// The subject of the certificate, for people.
    subject: String,
}

impl ClientCertificate {
    /// Opens a PKCS#12 (`.pfx`/`.p12`) file with its password. The error says what is wrong,
    /// never the password.
    pub fn from_pkcs12(der: &[u8], password: &str) -> Result<Self, String> {
        use p12_keystore::{KeyStore, Pkcs12ImportPolicy};
        let store = KeyStore::from_pkcs12(der, password, Pkcs12ImportPolicy::Strict)
            .map_err(|_| "the certificate is not PKCS#12, or does not open with its password")?;
        let (_, chain) = store
            .private_key_chain()
            .ok_or("the certificate file holds no private key")?;
        let mut pem = String::new();
        block(&mut pem, "PRIVATE KEY", chain.key().as_der());
        let mut digest = Sha256::new();
        for cert in chain.certs() {
            block(&mut pem, "CERTIFICATE", cert.as_der());
            digest.update(cert.as_der());
        }
        let subject = chain
            .certs()
            .first()
            .map(|c| c.subject().to_string())
            .ok_or("the certificate file holds a key without its certificate")?;
        reqwest::Identity::from_pem(pem.as_bytes())
            .map_err(|_| "the certificate's key cannot be used for TLS")?;
        Ok(Self {
            pem: Arc::new(pem.into_bytes()),
            fingerprint: hex::encode(&digest.finalize()[..8]),
            subject,
        })
    }

    /// The identity to present in the TLS handshake.
    pub(crate) fn identity(&self) -> Result<reqwest::Identity, String> {
        reqwest::Identity::from_pem(&self.pem).map_err(|e| e.to_string())
    }

    /// What names this certificate.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Its subject (`CN=…`).
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

fn block(pem: &mut String, label: &str, der: &[u8]) {
    pem.push_str(&format!("-----BEGIN {label}-----\n"));
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    for line in text.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
}

impl PartialEq for ClientCertificate {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for ClientCertificate {}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("subject", &self.subject)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// The credential a deployment configured for `source` in `AUTOS_SOURCES_FILE`.
    pub fn configured(
        source: &str,
        username: String,
        password: Option<String>,
        certificate: Option<ClientCertificate>,
    ) -> Self {
        Self {
            key: format!("config:{source}"),
            username,
            password,
            certificate,
        }
    }

    /// A tenant's own credential for `source`.
    pub fn of_tenant(
        tenant: uuid::Uuid,
        source: &str,
        username: String,
        password: Option<String>,
        certificate: Option<ClientCertificate>,
    ) -> Self {
        Self {
            key: format!("tenant:{tenant}:{source}"),
            username,
            password,
            certificate,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("key", &self.key)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("certificate", &self.certificate)
            .finish()
    }
}

//! Which credential a tenant's work presents at a court, and what the court said of it.
//!
//! A tenant's own credential for a source (`setSourceCredential`) comes first; else the
//! source's configured one (`AUTOS_SOURCES_FILE`); else none. Passwords are sealed at rest
//! ([`Sealer`]) and opened only here, when presented. A credential the court refuses is
//! marked and never presented again until its tenant replaces it: courts lock accounts after a
//! few failed logins.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{JobError, Services};
use crate::db;
use crate::db::credentials::CredentialRow;
use crate::domain::sealing::Sealer;
use crate::source::{ClientCertificate, Credential, Route, SourceError};
use base64::Engine;

/// How long a tenant's credential, once read, is used without reading it again. A credential
/// replaced or refused in another process is seen here within this time.
const FRESH_FOR: Duration = Duration::from_secs(10);

/// How precisely `last_used_at` is kept.
const USE_NOTED_EVERY: Duration = Duration::from_secs(60);

/// A tenant's credential for a source (or that it has none), and when it was read.
type Held = HashMap<(Uuid, String), (Instant, Option<CredentialRow>)>;

/// Tenants' credentials as this process holds them.
pub struct Vault {
    sealer: Option<Sealer>,
    held: Mutex<Held>,
    /// Credentials opened, by their sealed value.
    opened: Mutex<HashMap<Vec<u8>, Credential>>,
    /// When this process last wrote a credential's `last_used_at`: once a minute at most,
    /// not a write per court call.
    noted: Mutex<HashMap<(Uuid, String), Instant>>,
}

/// The credential presented for one request, and whose it is.
pub(crate) enum Presented<'a> {
    /// A tenant's own (with what identifies this version of it, to mark it if refused).
    Own {
        credential: Credential,
        tenant: Uuid,
        sealed: Vec<u8>,
    },
    /// The source's configured one, or none.
    Configured(Option<&'a Credential>),
}

impl Presented<'_> {
    /// The credential to present.
    pub(crate) fn credential(&self) -> Option<&Credential> {
        match self {
            Presented::Own { credential, .. } => Some(credential),
            Presented::Configured(credential) => *credential,
        }
    }
}

/// What a client gave `setSourceCredential`.
pub struct NewCredential {
    /// The source's name.
    pub source: String,
    /// The court user.
    pub username: String,
    /// Its password.
    pub password: Option<String>,
    /// An A1 certificate (PKCS#12, base64).
    pub certificate_pkcs12_base64: Option<String>,
    /// Its password.
    pub certificate_password: Option<String>,
}

impl Vault {
    /// A vault sealing with `sealer` (none: credentials cannot be stored).
    pub fn new(sealer: Option<Sealer>) -> Self {
        Self {
            sealer,
            held: Mutex::new(HashMap::new()),
            opened: Mutex::new(HashMap::new()),
            noted: Mutex::new(HashMap::new()),
        }
    }

    fn forget(&self, tenant: Uuid, source: &str) {
        let key = (tenant, source.to_string());
        self.lock().remove(&key);
        // A replaced credential has not been used yet: its first use is noted at once.
        self.noted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    /// Whether `last_used_at` of this credential is due a write now (and counts it as made).
    fn use_to_note(&self, tenant: Uuid, source: &str) -> bool {
        let mut noted = self.noted.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tenant, source.to_string());
        if noted
            .get(&key)
            .is_some_and(|at| at.elapsed() < USE_NOTED_EVERY)
        {
            return false;
        }
        noted.insert(key, Instant::now());
        true
    }

    fn opened_lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Credential>> {
        self.opened.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The secrets of a credential, sealed together.
#[derive(serde::Serialize, serde::Deserialize)]
struct Secrets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    /// The PKCS#12 file, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pkcs12: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate_password: Option<String>,
}

impl Secrets {
    fn certificate(&self) -> Result<Option<ClientCertificate>, String> {
        let Some(pkcs12) = &self.pkcs12 else {
            return Ok(None);
        };
        let der = base64::engine::general_purpose::STANDARD
            .decode(pkcs12.trim())
            .map_err(|_| "certificatePkcs12Base64 is not base64".to_string())?;
        ClientCertificate::from_pkcs12(
            &der,
            self.certificate_password.as_deref().unwrap_or_default(),
        )
        .map(Some)
    }
}

/// What binds a sealed password to its row: it opens nowhere else.
fn bound_to(tenant: Uuid, source: &str, username: &str) -> Vec<u8> {
    format!("{tenant}\n{source}\n{username}").into_bytes()
}

/// Stores (or replaces) `tenant`'s credential for a source.
pub async fn set(
    svc: &Services,
    tenant: Uuid,
    input: NewCredential,
) -> Result<CredentialRow, JobError> {
    let source = input.source.trim();
    let Some(route) = svc.sources.named(source) else {
        return Err(JobError::InvalidInput(format!(
            "there is no source `{source}`: sources are named in AUTOS_SOURCES_FILE"
        )));
    };
    if !route.source().takes_credentials() {
        return Err(JobError::InvalidInput(format!(
            "source `{source}` does not take credentials (only MNI sources do)"
        )));
    }
    let username = input.username.trim();
    if username.is_empty() || username.len() > 200 {
        return Err(JobError::InvalidInput(
            "username must be 1 to 200 characters".into(),
        ));
    }
    let secrets = Secrets {
        password: input.password.filter(|p| !p.is_empty()),
        pkcs12: input
            .certificate_pkcs12_base64
            .filter(|c| !c.trim().is_empty()),
        certificate_password: input.certificate_password,
    };
    if secrets.password.is_none() && secrets.pkcs12.is_none() {
        return Err(JobError::InvalidInput(
            "give a password, a certificate (certificatePkcs12Base64), or both".into(),
        ));
    }
    if secrets.password.as_ref().is_some_and(|p| p.len() > 1000)
        || secrets.pkcs12.as_ref().is_some_and(|c| c.len() > 64 * 1024)
    {
        return Err(JobError::InvalidInput(
            "the password (1,000 characters) or the certificate (64 KiB) is too long".into(),
        ));
    }
    // A certificate that does not open is refused now, not at the court.
    let certificate = secrets.certificate().map_err(JobError::InvalidInput)?;
    let Some(sealer) = &svc.vault.sealer else {
        return Err(JobError::InvalidState(
            "credentials cannot be stored: AUTOS_ENCRYPTION_KEY is not set".into(),
        ));
    };
    let plain = serde_json::to_vec(&secrets).map_err(|e| JobError::Internal(e.into()))?;
    let sealed = sealer.seal(&plain, &bound_to(tenant, source, username));
    let row = db::credentials::put(
        &svc.pool,
        tenant,
        source,
        username,
        &sealed,
        sealer.current_id(),
        certificate.as_ref().map(ClientCertificate::subject),
    )
    .await?;
    svc.vault.forget(tenant, source);
    Ok(row)
}

/// Removes `tenant`'s credential for a source; whether there was one.
pub async fn remove(svc: &Services, tenant: Uuid, source: &str) -> Result<bool, JobError> {
    let removed = db::credentials::remove(&svc.pool, tenant, source.trim()).await?;
    svc.vault.forget(tenant, source.trim());
    Ok(removed)
}

/// `tenant`'s credentials (never their secrets).
pub async fn list(svc: &Services, tenant: Uuid) -> Result<Vec<CredentialRow>, JobError> {
    Ok(db::credentials::list(&svc.pool, tenant).await?)
}

/// What to present at `route`'s court on `tenant`'s behalf.
pub(crate) async fn presented<'a>(
    svc: &Services,
    tenant: Option<Uuid>,
    route: &'a Route,
) -> Result<Presented<'a>, SourceError> {
    if !route.source().takes_credentials() {
        return Ok(Presented::Configured(None));
    }
    if let Some(tenant) = tenant {
        if let Some(row) = own(svc, tenant, route.name()).await? {
            if row.refused_at.is_some() {
                return Err(SourceError::denied(crate::source::CREDENTIAL_REFUSED));
            }
            let Some(sealer) = &svc.vault.sealer else {
                return Err(SourceError::invalid(
                    "the tenant's credential cannot be opened: AUTOS_ENCRYPTION_KEY is not set",
                ));
            };
            let credential = opened(svc, sealer, tenant, route.name(), &row)?;
            return Ok(Presented::Own {
                credential,
                tenant,
                sealed: row.sealed,
            });
        }
    }
    route.credential().map(Presented::Configured)
}

/// The credential a stored row holds, opened (once per sealed value: opening a certificate
/// is slow on purpose).
fn opened(
    svc: &Services,
    sealer: &Sealer,
    tenant: Uuid,
    source: &str,
    row: &CredentialRow,
) -> Result<Credential, SourceError> {
    if let Some(credential) = svc.vault.opened_lock().get(&row.sealed) {
        return Ok(credential.clone());
    }
    let unusable = |e: &dyn std::fmt::Display| {
        tracing::error!(tenant = %tenant, source = %row.source, error = %e, "a stored credential does not open");
        SourceError::invalid("the tenant's credential for this source cannot be opened")
    };
    let plain = sealer
        .open(
            &row.key_id,
            &row.sealed,
            &bound_to(tenant, &row.source, &row.username),
        )
        .map_err(|e| unusable(&e))?;
    let secrets: Secrets = serde_json::from_slice(&plain).map_err(|e| unusable(&e))?;
    let certificate = secrets.certificate().map_err(|e| unusable(&e))?;
    let credential = Credential::of_tenant(
        tenant,
        source,
        row.username.clone(),
        secrets.password,
        certificate,
    );
    let mut opened = svc.vault.opened_lock();
    if opened.len() >= 1024 {
        opened.clear();
    }
    opened.insert(row.sealed.clone(), credential.clone());
    Ok(credential)
}

/// The tenant's stored credential for `source`, read at most every [`FRESH_FOR`].
async fn own(
    svc: &Services,
    tenant: Uuid,
    source: &str,
) -> Result<Option<CredentialRow>, SourceError> {
    let key = (tenant, source.to_string());
    if let Some((at, row)) = svc.vault.lock().get(&key) {
        if at.elapsed() < FRESH_FOR {
            return Ok(row.clone());
        }
    }
    let row = db::credentials::find(&svc.pool, tenant, source)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "reading a credential failed");
            SourceError::retryable("the credential could not be read")
        })?;
    svc.vault.lock().insert(key, (Instant::now(), row.clone()));
    Ok(row)
}

/// Takes note of how the court answered a request made with `presented`.
pub(crate) async fn answered(
    svc: &Services,
    route: &Route,
    presented: &Presented<'_>,
    outcome: Result<(), &SourceError>,
) {
    match presented {
        Presented::Configured(credential) => {
            if let Err(err) = outcome {
                route.noted(*credential, err);
            }
        }
        Presented::Own { tenant, sealed, .. } => {
            let result = match outcome {
                Err(err) if err.refuses_credential() => {
                    tracing::warn!(tenant = %tenant, source = %route.name(), "the court refused a tenant's credential; it is not presented again until replaced");
                    svc.vault.forget(*tenant, route.name());
                    db::credentials::refused(
                        &svc.pool,
                        *tenant,
                        route.name(),
                        sealed,
                        &err.to_string(),
                    )
                    .await
                }
                _ if svc.vault.use_to_note(*tenant, route.name()) => {
                    db::credentials::used(&svc.pool, *tenant, route.name()).await
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "recording a credential's use failed");
            }
        }
    }
}

/// Seals again, with the current key, every credential sealed with another (after a key
/// rotation); those whose key is gone are left as they are and logged.
pub async fn reseal_all(pool: &sqlx::PgPool, sealer: &Sealer) -> anyhow::Result<usize> {
    let rows = db::credentials::sealed_with_other_keys(pool, sealer.current_id()).await?;
    let mut done = 0;
    for row in rows {
        let bound = bound_to(row.tenant_id, &row.source, &row.username);
        match sealer.open(&row.key_id, &row.sealed, &bound) {
            Ok(secret) => {
                let sealed = sealer.seal(&secret, &bound);
                db::credentials::reseal(pool, &row, &sealed, sealer.current_id()).await?;
                done += 1;
            }
            Err(e) => {
                tracing::error!(tenant = %row.tenant_id, source = %row.source, error = %e, "a credential could not be sealed again");
            }
        }
    }
    if done > 0 {
        tracing::info!(credentials = done, key = %sealer.current_id(), "credentials sealed again with the current key");
    }
    Ok(done)
}

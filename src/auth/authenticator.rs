//! Turns a credential (`Authorization: Bearer …`) into a [`Principal`], fast.
//!
//! Keys are read from the database once and cached; every change to a key (revocation,
//! expiry, deletion) is announced on the channel `autos_keys` as it commits (a trigger), and
//! every process drops its cached copy at once, so a revocation takes effect everywhere within
//! a round trip. Should the listening connection drop, the whole cache is dropped when it is
//! back; a cached copy never lives longer than [`CACHE_TTL`] anyway. When a key was last used
//! is kept in memory and written for all keys together every [`USED_FLUSH`], not per request.

use super::keys::ApiKey;
use super::token::{self, Claims, TokenError};
use super::{Credential, Principal, Scope};
use crate::db::{self, keys::KeyRow};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use uuid::Uuid;

/// The notification channel of migration 0010's trigger on `api_keys`.
pub const CHANNEL: &str = "autos_keys";
/// The longest a cached key (or the knowledge that there is no such key) is trusted.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// How often last-use times are written.
pub const USED_FLUSH: Duration = Duration::from_secs(30);
/// Keys cached at most; beyond, the cache starts afresh.
const MAX_CACHED: usize = 10_000;

/// `AUTOS_AUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// API keys and progress tokens (the default).
    Keys,
    /// No authentication: everything belongs to the tenant `default` (loopback binds only).
    Off,
}

/// Why a credential is refused. Callers see one code (`UNAUTHENTICATED`) whatever the
/// reason, except when the database could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential.
    #[error("authentication required: send `Authorization: Bearer <API key>`")]
    Missing,
    /// Not a key or token of this deployment, or its secret is wrong.
    #[error("invalid credentials")]
    Invalid,
    /// Past its expiry.
    #[error("credentials expired")]
    Expired,
    /// Revoked.
    #[error("credentials revoked")]
    Revoked,
    /// The keys could not be read.
    #[error("cannot check credentials now: {0}")]
    Unavailable(#[from] sqlx::Error),
}

#[derive(Clone)]
struct Cached {
    key: Option<Arc<KeyRow>>,
    at: Instant,
}

struct Inner {
    pool: PgPool,
    mode: AuthMode,
    /// The principal of every request when access control is off.
    open: Option<Principal>,
    token_key: Vec<u8>,
    cache: Mutex<HashMap<String, Cached>>,
    tenants: Mutex<HashMap<Uuid, String>>,
    used: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Counts announced changes, so that a read that raced with one is not cached.
    generation: std::sync::atomic::AtomicU64,
    /// Bumped once a changed key has been read again: connections re-check their credential.
    changes: watch::Sender<u64>,
}

/// The process's authenticator; cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The key used to sign progress tokens: one per deployment, made at its first start.
async fn token_key(pool: &PgPool) -> anyhow::Result<Vec<u8>> {
    let engine = base64::engine::general_purpose::STANDARD;
    let (stored, _) = db::webhooks::setting_or_insert(pool, "progress_token_key", || {
        engine.encode(rand::random::<[u8; 32]>())
    })
    .await?;
    Ok(engine.decode(stored.trim())?)
}

impl Authenticator {
    /// Prepares authentication on `pool` and, until `stop`, listens for key changes and
    /// writes last-use times.
    pub async fn start(
        pool: PgPool,
        mode: AuthMode,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Authenticator> {
        let open = match mode {
            AuthMode::Keys => None,
            AuthMode::Off => {
                let secret = crate::webhook::Secret::generate().to_string();
                let (tenant, _) = db::tenants::ensure(&pool, db::tenants::DEFAULT, &secret).await?;
                Some(Principal {
                    tenant_id: tenant.id,
                    tenant: tenant.slug,
                    scopes: vec![Scope::Admin],
                    credential: Credential::Open,
                    expires_at: None,
                    rate_limit: None,
                })
            }
        };
        let authenticator = Authenticator {
            inner: Arc::new(Inner {
                token_key: token_key(&pool).await?,
                pool,
                mode,
                open,
                cache: Mutex::default(),
                tenants: Mutex::default(),
                used: Mutex::default(),
                generation: Default::default(),
                changes: watch::channel(0).0,
            }),
        };
        if mode == AuthMode::Keys {
            tokio::spawn(authenticator.clone().listen(stop.clone()));
            tokio::spawn(authenticator.clone().flush_periodically(stop));
        }
        Ok(authenticator)
    }

    /// The mode it runs in.
    pub fn mode(&self) -> AuthMode {
        self.inner.mode
    }

    /// Who sends `authorization` (an `Authorization` header's value, `Bearer …`).
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        if let Some(open) = &self.inner.open {
            return Ok(open.clone());
        }
        let credential = authorization
            .map(bearer)
            .filter(|c| !c.is_empty())
            .ok_or(AuthError::Missing)?;
        let now = Utc::now();
        if token::is_token(credential) {
            let claims = token::verify(&self.inner.token_key, credential, now.timestamp())
                .map_err(|e| match e {
                    TokenError::Expired => AuthError::Expired,
                    _ => AuthError::Invalid,
                })?;
            return self.token_principal(claims, now).await;
        }
        let key = ApiKey::parse(credential).map_err(|_| AuthError::Invalid)?;
        let row = self.key(key.id()).await?.ok_or(AuthError::Invalid)?;
        if !key.matches(&row.secret_sha256) {
            return Err(AuthError::Invalid);
        }
        usable(&row, now)?;
        lock(&self.inner.used).insert(row.id.clone(), now);
        Ok(principal_of(&row))
    }

    async fn token_principal(
        &self,
        claims: Claims,
        now: DateTime<Utc>,
    ) -> Result<Principal, AuthError> {
        // A token dies with the key that issued it.
        let issuer = self.key(&claims.key).await?.ok_or(AuthError::Revoked)?;
        usable(&issuer, now)?;
        let tenant = self.tenant_slug(claims.tenant).await?;
        Ok(Principal {
            tenant_id: claims.tenant,
            tenant,
            scopes: vec![Scope::Read],
            credential: Credential::Token {
                job: claims.job,
                issuer: claims.key,
            },
            expires_at: DateTime::from_timestamp(claims.exp, 0),
            rate_limit: issuer.rate_limit.and_then(|r| u64::try_from(r).ok()),
        })
    }

    /// Whether a principal established earlier still holds (its key not revoked, nothing
    /// expired). A database that cannot be asked leaves it standing.
    pub async fn still_valid(&self, principal: &Principal) -> bool {
        let now = Utc::now();
        if principal.expires_at.is_some_and(|at| at <= now) {
            return false;
        }
        let id = match &principal.credential {
            Credential::Open => return true,
            Credential::Key { id } => id,
            Credential::Token { issuer, .. } => issuer,
        };
        match self.key(id).await {
            Ok(Some(row)) => usable(&row, now).is_ok(),
            Ok(None) => false,
            Err(err) => {
                tracing::warn!(error = %err, "cannot re-check a connection's key; keeping it");
                true
            }
        }
    }

    /// Changes whenever keys may have changed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// A progress token for `job` of `tenant`, issued by the key `issuer`, valid `ttl`.
    pub fn issue_token(
        &self,
        job: Uuid,
        tenant: Uuid,
        issuer: &str,
        ttl: Duration,
    ) -> (String, DateTime<Utc>) {
        let ttl = (ttl.as_secs() as i64).clamp(1, token::MAX_TTL_SECS);
        // Whole seconds, rounded up (a token lives at least what was asked), within the most
        // a token may live.
        let now = Utc::now();
        let exp = (now.timestamp() + i64::from(now.timestamp_subsec_nanos() > 0) + ttl)
            .min(now.timestamp() + token::MAX_TTL_SECS);
        let claims = Claims {
            job,
            tenant,
            key: issuer.to_string(),
            exp,
        };
        let expires_at = DateTime::from_timestamp(exp, 0).unwrap_or_else(Utc::now);
        (token::issue(&self.inner.token_key, &claims), expires_at)
    }

    /// Writes the last-use times gathered so far.
    pub async fn flush(&self) {
        let used: Vec<(String, DateTime<Utc>)> = lock(&self.inner.used).drain().collect();
        if used.is_empty() {
            return;
        }
        let (ids, ats): (Vec<String>, Vec<DateTime<Utc>>) = used.into_iter().unzip();
        if let Err(err) = db::keys::touch(&self.inner.pool, &ids, &ats).await {
            tracing::warn!(error = %err, keys = ids.len(), "cannot record when keys were last used");
        }
    }

    async fn key(&self, id: &str) -> Result<Option<Arc<KeyRow>>, sqlx::Error> {
        if let Some(cached) = lock(&self.inner.cache).get(id) {
            if cached.at.elapsed() < CACHE_TTL {
                return Ok(cached.key.clone());
            }
        }
        let generation = self.generation();
        let key = db::keys::find(&self.inner.pool, id).await?.map(Arc::new);
        let mut cache = lock(&self.inner.cache);
        // A change announced while we read may not be in what we read: do not keep it.
        if self.generation() == generation {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(
                id.to_string(),
                Cached {
                    key: key.clone(),
                    at: Instant::now(),
                },
            );
        }
        Ok(key)
    }

    async fn tenant_slug(&self, id: Uuid) -> Result<String, AuthError> {
        if let Some(slug) = lock(&self.inner.tenants).get(&id) {
            return Ok(slug.clone());
        }
        let tenant = db::tenants::find(&self.inner.pool, id)
            .await?
            .ok_or(AuthError::Invalid)?;
        lock(&self.inner.tenants).insert(id, tenant.slug.clone());
        Ok(tenant.slug)
    }

    /// Drops every cached key (after notifications may have been missed). Connections are
    /// not woken: each re-checks on its own schedule, so that they do not all read at once.
    fn forget_all(&self) {
        let mut cache = lock(&self.inner.cache);
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        cache.clear();
    }

    fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// A key changed (as announced, or by this process itself): read it once, here, and wake
    /// the connections, which re-check against the fresh copy.
    pub async fn changed(&self, id: &str) {
        {
            let mut cache = lock(&self.inner.cache);
            self.inner.generation.fetch_add(1, Ordering::SeqCst);
            cache.remove(id);
        }
        if let Err(err) = self.key(id).await {
            tracing::warn!(error = %err, key = id, "cannot re-read a changed key");
        }
        self.inner.changes.send_modify(|g| *g += 1);
    }

    async fn listen(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let connected = async {
                let mut listener = PgListener::connect_with(&self.inner.pool).await?;
                listener.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = tokio::select! {
                connected = connected => match connected {
                    Ok(listener) => listener,
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot listen for key changes; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.changed() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue;
                    }
                },
                _ = stop.changed() => return,
            };
            backoff = Duration::from_millis(100);
            // Whatever changed while nobody listened is unknown: start afresh.
            self.forget_all();
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    received = listener.try_recv() => match received {
                        Ok(Some(notification)) => self.changed(notification.payload()).await,
                        Ok(None) => {
                            tracing::warn!("key listener lost its connection; reconnecting");
                            self.forget_all();
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "key listener failed; reconnecting");
                            break;
                        }
                    },
                }
            }
        }
    }

    async fn flush_periodically(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(USED_FLUSH) => self.flush().await,
                _ = stop.changed() => {
                    self.flush().await;
                    return;
                }
            }
        }
    }
}

/// The credential in `Bearer …` (the scheme in any case), or the value itself.
fn bearer(value: &str) -> &str {
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    }
}

fn usable(row: &KeyRow, now: DateTime<Utc>) -> Result<(), AuthError> {
    if row.revoked_at.is_some() {
        return Err(AuthError::Revoked);
    }
    if row.expires_at.is_some_and(|at| at <= now) {
        return Err(AuthError::Expired);
    }
    Ok(())
}

/// The principal of a key.
pub fn principal_of(row: &KeyRow) -> Principal {
    Principal {
        tenant_id: row.tenant_id,
        tenant: row.tenant.clone(),
        scopes: row.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        credential: Credential::Key { id: row.id.clone() },
        expires_at: row.expires_at,
        rate_limit: row.rate_limit.and_then(|r| u64::try_from(r).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_takes_the_credential_in_any_case_of_the_scheme() {
        assert_eq!(bearer("Bearer abc"), "abc");
        assert_eq!(bearer("bearer   abc "), "abc");
        assert_eq!(bearer("abc"), "abc");
        assert_eq!(bearer("Basic abc"), "Basic abc");
    }
}

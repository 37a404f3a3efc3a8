//! Progress tokens: short-lived bearer tokens a frontend's backend asks for with its key
//! (`createProgressToken`) and hands to a browser, good for one job's `job` and `jobProgress`.
//!
//! `apt_{payload}.{signature}`: the payload is base64url JSON (`job`, `tenant`, `key`, `exp`),
//! readable by the page that shows the job; the signature is base64url HMAC-SHA256 of the
//! payload's text under the deployment's token key (kept in the database, shared by every
//! process). Nothing is stored per token; a token dies with its expiry or its issuing key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

/// Prefix of every token.
pub const PREFIX: &str = "apt_";
/// The longest a token may live.
pub const MAX_TTL_SECS: i64 = 24 * 3600;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The job it shows.
    pub job: Uuid,
    /// That job's tenant.
    pub tenant: Uuid,
    /// The key that issued it.
    pub key: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of ours at all.
    #[error("malformed progress token")]
    Malformed,
    /// Forged or altered.
    #[error("progress token signature does not verify")]
    BadSignature,
    /// Past its expiry.
    #[error("progress token expired")]
    Expired,
}

/// Whether `text` looks like a progress token (as opposed to an API key).
pub fn is_token(text: &str) -> bool {
    text.trim().starts_with(PREFIX)
}

fn mac(key: &[u8], payload: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(payload.as_bytes());
    mac
}

/// Issues a token for `claims`, signed with `key`.
pub fn issue(key: &[u8], claims: &Claims) -> String {
    let json = serde_json::to_vec(claims).expect("claims serialize");
    let payload = URL_SAFE_NO_PAD.encode(json);
    let signature = URL_SAFE_NO_PAD.encode(mac(key, &payload).finalize().into_bytes());
    format!("{PREFIX}{payload}.{signature}")
}

/// Checks a token's signature (in constant time) and expiry against `now` (Unix seconds).
pub fn verify(key: &[u8], text: &str, now: i64) -> Result<Claims, TokenError> {
    let rest = text
        .trim()
        .strip_prefix(PREFIX)
        .ok_or(TokenError::Malformed)?;
    let (payload, signature) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    mac(key, payload)
        .verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            job: Uuid::from_u128(1),
            tenant: Uuid::from_u128(2),
            key: "abcdefghijkl".into(),
            exp,
        }
    }

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let key = [7u8; 32];
        let token = issue(&key, &claims(1_000));
        assert!(is_token(&token));
        assert_eq!(verify(&key, &token, 999), Ok(claims(1_000)));
        assert_eq!(verify(&key, &token, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn forged_and_altered_tokens_are_refused() {
        let key = [7u8; 32];
        let token = issue(&key, &claims(1_000));
        assert_eq!(verify(&[8u8; 32], &token, 0), Err(TokenError::BadSignature));
        // Another job in the payload, the signature kept.
        let (payload, signature) = token[PREFIX.len()..].split_once('.').unwrap();
        let mut other = claims(1_000);
        other.job = Uuid::from_u128(99);
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
        assert_ne!(forged_payload, payload);
        let forged = format!("{PREFIX}{forged_payload}.{signature}");
        assert_eq!(verify(&key, &forged, 0), Err(TokenError::BadSignature));
        for bad in ["", "apt_", "apt_x", "apt_x.y", "autos_abc_def"] {
            assert!(verify(&key, bad, 0).is_err(), "{bad}");
        }
    }
}

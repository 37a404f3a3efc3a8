//! API keys: `autos_{id}_{secret}`. The id is stored in the clear (lookup, display); the
//! secret, 256 random bits, only as its SHA-256. A hash is enough for a secret of that
//! strength (nothing to guess), and cheap enough to check on every request.

use rand::distr::{Alphanumeric, SampleString as _};
use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use std::fmt;

/// Prefix of every key.
pub const PREFIX: &str = "autos_";
/// Length of a key id.
pub const ID_LEN: usize = 12;
/// Length of a key secret: 43 base62 characters, 256 bits.
pub const SECRET_LEN: usize = 43;

const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A key's text form, parsed. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    id: String,
    secret: String,
}

/// Why a text is not a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an autos API key (autos_{{id}}_{{secret}})")]
pub struct NotAKey;

impl ApiKey {
    /// A fresh key.
    pub fn generate() -> ApiKey {
        let mut rng = rand::rng();
        let id = (0..ID_LEN)
            .map(|_| ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char)
            .collect();
        let secret = Alphanumeric.sample_string(&mut rng, SECRET_LEN);
        ApiKey { id, secret }
    }

    /// Reads `autos_{id}_{secret}` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<ApiKey, NotAKey> {
        let rest = text.trim().strip_prefix(PREFIX).ok_or(NotAKey)?;
        let (id, secret) = rest.split_once('_').ok_or(NotAKey)?;
        let id_ok = id.len() == ID_LEN && id.bytes().all(|b| ID_ALPHABET.contains(&b));
        let secret_ok =
            secret.len() == SECRET_LEN && secret.bytes().all(|b| b.is_ascii_alphanumeric());
        if !(id_ok && secret_ok) {
            return Err(NotAKey);
        }
        Ok(ApiKey {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the database keeps of the secret.
    pub fn secret_hash(&self) -> [u8; 32] {
        hash_secret(&self.secret)
    }

    /// Whether the secret is the one `stored` is the hash of (in constant time).
    pub fn matches(&self, stored: &[u8]) -> bool {
        constant_time_eq(&self.secret_hash(), stored)
    }

    /// The full text, to be shown to its owner once.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}{}_{}", self.id, self.secret)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({PREFIX}{}_<redacted>)", self.id)
    }
}

/// SHA-256 of a key secret.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Equality that takes the same time wherever the inputs differ (lengths are not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back_and_match_their_hash_only() {
        let key = ApiKey::generate();
        let text = key.reveal();
        assert!(text.starts_with("autos_"));
        assert_eq!(text.len(), PREFIX.len() + ID_LEN + 1 + SECRET_LEN);
        let parsed = ApiKey::parse(&format!("  {text}\n")).unwrap();
        assert_eq!(parsed, key);
        assert!(parsed.matches(&key.secret_hash()));
        let other = ApiKey::generate();
        assert_ne!(other.id(), key.id());
        assert!(!other.matches(&key.secret_hash()));
        // 256 bits of secret: 43 base62 characters.
        assert!(SECRET_LEN as f64 * 62f64.log2() >= 190.0);
    }

    #[test]
    fn anything_else_is_not_a_key() {
        let good = ApiKey::generate().reveal();
        for bad in [
            "",
            "autos_",
            "Bearer x",
            &good.replace("autos_", "autoz_"),
            &good[..good.len() - 1],
            &format!("{good}x"),
            &good.replacen('_', "-", 2),
            "autos_ABCDEFGHIJKL_0123456789012345678901234567890123456789012",
            "autos_abcdefghijkl_01234567890123456789012345678901234567890!2",
        ] {
            assert_eq!(ApiKey::parse(bad), Err(NotAKey), "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = ApiKey::generate();
        let shown = format!("{key:?}");
        assert!(shown.contains(key.id()));
        assert!(!shown.contains(&key.reveal()[PREFIX.len() + ID_LEN + 1..]));
    }
}

//! Secrets at rest (tenants' court passwords): ChaCha20-Poly1305, authenticated encryption
//! with a random 96-bit nonce per secret, bound to what it belongs to (associated data), so a
//! sealed value copied onto another row does not open.
//!
//! Keys rotate: new secrets are sealed with the current key; older ones open with any key
//! still listed as previous, and are sealed again with the current one.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};

const NONCE: usize = 12;

/// One 32-byte key and its id (the first 8 hex digits of its SHA-256: names it, reveals nothing).
#[derive(Clone)]
pub struct SealingKey {
    id: String,
    cipher: ChaCha20Poly1305,
}

impl SealingKey {
    /// A key from its base64 text (32 bytes).
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "is not base64".to_string())?;
        if bytes.len() != 32 {
            return Err(format!("is {} bytes, not 32", bytes.len()));
        }
        let id = hex::encode(&Sha256::digest(&bytes)[..4]);
        Ok(Self {
            id,
            cipher: ChaCha20Poly1305::new(Key::from_slice(&bytes)),
        })
    }

    /// A new random key, as base64 text.
    pub fn generate() -> String {
        let bytes: [u8; 32] = rand::random();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey").field("id", &self.id).finish()
    }
}

/// The current key and the previous ones still accepted for opening.
#[derive(Clone, Debug)]
pub struct Sealer {
    current: SealingKey,
    previous: Vec<SealingKey>,
}

/// Why a sealed value did not open.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SealError {
    /// Sealed with a key that is neither current nor previous.
    #[error("sealed with key {0}, which is not configured (AUTOS_ENCRYPTION_KEY, AUTOS_ENCRYPTION_KEYS_PREVIOUS)")]
    UnknownKey(String),
    /// Altered, or bound to something else.
    #[error("the sealed value does not open: altered, or not this row's")]
    Corrupt,
}

impl Sealer {
    /// With `current` for sealing and opening, `previous` for opening only.
    pub fn new(current: SealingKey, previous: Vec<SealingKey>) -> Self {
        Self { current, previous }
    }

    /// The id of the key new secrets are sealed with.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// `secret` sealed with the current key, bound to `bound_to`: nonce || ciphertext.
    pub fn seal(&self, secret: &[u8], bound_to: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE] = rand::random();
        let sealed = self
            .current
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: bound_to,
                },
            )
            .expect("ChaCha20-Poly1305 seals any message under 256 GiB");
        [nonce.as_slice(), &sealed].concat()
    }

    /// Opens what [`Sealer::seal`] made with the key `key_id`, bound to `bound_to`.
    pub fn open(&self, key_id: &str, sealed: &[u8], bound_to: &[u8]) -> Result<Vec<u8>, SealError> {
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == key_id)
            .ok_or_else(|| SealError::UnknownKey(key_id.to_string()))?;
        if sealed.len() < NONCE {
            return Err(SealError::Corrupt);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE);
        key.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: bound_to,
                },
            )
            .map_err(|_| SealError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SealingKey {
        SealingKey::from_base64(&SealingKey::generate()).unwrap()
    }

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_binding() {
        let (a, b) = (key(), key());
        let sealer = Sealer::new(a.clone(), vec![]);
        let sealed = sealer.seal(b"hunter2", b"tenant|tjsp|user");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            sealer.open(a.id(), &sealed, b"tenant|tjsp|user").unwrap(),
            b"hunter2"
        );
        assert_eq!(
            sealer.open(a.id(), &sealed, b"other|tjsp|user"),
            Err(SealError::Corrupt)
        );
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(
            sealer.open(a.id(), &altered, b"tenant|tjsp|user"),
            Err(SealError::Corrupt)
        );
        // After a rotation the old key still opens what it sealed; without it, nothing does.
        let rotated = Sealer::new(b.clone(), vec![a.clone()]);
        assert_eq!(
            rotated.open(a.id(), &sealed, b"tenant|tjsp|user").unwrap(),
            b"hunter2"
        );
        assert_eq!(rotated.current_id(), b.id());
        let forgotten = Sealer::new(b, vec![]);
        assert!(matches!(
            forgotten.open(a.id(), &sealed, b"tenant|tjsp|user"),
            Err(SealError::UnknownKey(_))
        ));
        assert!(SealingKey::from_base64("c2hvcnQ=").is_err());
    }
}

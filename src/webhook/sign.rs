//! Standard Webhooks signatures: `whsec_` secrets, `v1,` HMAC-SHA256 signatures over
//! `{id}.{timestamp}.{body}`, and the three `webhook-*` headers.

use std::fmt;

pub use super::hmac::hmac_sha256;
use super::hmac::HmacSha256;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// Prefix of a secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";

/// Shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 24;

/// Length of a key made by [`Secret::generate`], in bytes.
pub const GENERATED_KEY_BYTES: usize = 32;

/// How far a timestamp may be from the receiver's clock, as Standard Webhooks recommends.
pub const DEFAULT_TOLERANCE_SECS: i64 = 5 * 60;

/// Standard base64 that does not insist on `=` padding when decoding.
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A webhook signing key. Its text form is `whsec_` + standard base64 of the key bytes;
/// `Debug` never shows the key.
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
}

/// Why a secret's text form is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The text does not start with `whsec_`.
    #[error("a webhook secret must start with `whsec_` followed by base64")]
    MissingPrefix,
    /// Nothing follows `whsec_`.
    #[error("the webhook secret is empty after `whsec_`")]
    Empty,
    /// What follows `whsec_` is not standard base64.
    #[error("the webhook secret is not valid base64 after `whsec_`: {0}")]
    BadBase64(String),
    /// The key is too short to be safe.
    #[error("the webhook secret's key is {len} bytes long; at least {MIN_KEY_BYTES} are required")]
    TooShort {
        /// Length of the decoded key.
        len: usize,
    },
}

impl Secret {
    /// Parses `whsec_<standard base64>` (surrounding whitespace ignored, `=` padding optional).
    /// The key is the decoded bytes and must be at least [`MIN_KEY_BYTES`] long.
    pub fn parse(s: &str) -> Result<Secret, SecretError> {
        let encoded = s
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        if encoded.is_empty() {
            return Err(SecretError::Empty);
        }
        let key = LENIENT_STANDARD
            .decode(encoded)
            .map_err(|e| SecretError::BadBase64(e.to_string()))?;
        if key.len() < MIN_KEY_BYTES {
            return Err(SecretError::TooShort { len: key.len() });
        }
        Ok(Secret { key })
    }

    /// A fresh secret of [`GENERATED_KEY_BYTES`] random bytes.
    pub fn generate() -> Secret {
        let key: [u8; GENERATED_KEY_BYTES] = rand::random();
        Secret { key: key.to_vec() }
    }

    /// The key bytes.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

impl fmt::Display for Secret {
    /// The `whsec_…` text form, which [`Secret::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.key.len())
    }
}

impl PartialEq for Secret {
    /// Constant-time for keys of equal length.
    fn eq(&self, other: &Secret) -> bool {
        constant_time_eq(&self.key, &other.key)
    }
}

impl Eq for Secret {}

/// A fresh message id for `webhook-id`: `msg_` + 32 hex digits. Keep it for every retry of
/// the same message.
pub fn new_message_id() -> String {
    let bytes: [u8; 16] = rand::random();
    format!("msg_{}", hex::encode(bytes))
}

/// The `webhook-signature` value: `v1,` + base64 HMAC-SHA256 over `{msg_id}.{timestamp}.{body}`.
pub fn sign(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1,{}",
        STANDARD.encode(mac(secret, msg_id, timestamp, body))
    )
}

/// Checks a `webhook-signature` header, which may hold several space-separated signatures
/// (`v1,…`; other versions are ignored): true when one of them is right and `timestamp` is
/// within `tolerance_secs` of `now` (both Unix seconds). Signatures are compared in constant time.
pub fn verify(
    secret: &Secret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    signature_header: &str,
    now: i64,
    tolerance_secs: i64,
) -> bool {
    if timestamp.abs_diff(now) > tolerance_secs.max(0).unsigned_abs() {
        return false;
    }
    let expected = mac(secret, msg_id, timestamp, body);
    let mut found = false;
    for candidate in signature_header.split_ascii_whitespace() {
        let Some(("v1", encoded)) = candidate.split_once(',') else {
            continue;
        };
        if let Ok(given) = LENIENT_STANDARD.decode(encoded) {
            found |= constant_time_eq(&given, &expected);
        }
    }
    found
}

/// The three Standard Webhooks headers for one message: `webhook-id`, `webhook-timestamp`
/// (Unix seconds) and `webhook-signature`, which holds one signature per secret,
/// space-separated (while a secret is being rotated, receivers holding either one verify).
pub fn headers(
    secrets: &[Secret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let signatures: Vec<String> = secrets
        .iter()
        .map(|secret| sign(secret, msg_id, timestamp, body))
        .collect();
    [
        ("webhook-id", msg_id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signatures.join(" ")),
    ]
}

fn mac(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
    let mut hmac = HmacSha256::new(&secret.key);
    hmac.update(msg_id.as_bytes());
    hmac.update(b".");
    hmac.update(timestamp.to_string().as_bytes());
    hmac.update(b".");
    hmac.update(body);
    hmac.finalize()
}

/// Equality that takes the same time wherever the inputs differ (lengths are not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret() -> Secret {
        Secret::parse(SECRET).unwrap()
    }

    fn check(header: &str, id: &str, ts: i64, body: &[u8]) -> bool {
        verify(&secret(), id, ts, body, header, TS, DEFAULT_TOLERANCE_SECS)
    }

    #[test]
    fn standard_webhooks_vector() {
        assert_eq!(sign(&secret(), MSG_ID, TS, BODY), SIGNATURE);
        assert!(check(SIGNATURE, MSG_ID, TS, BODY));
    }

    #[test]
    fn tampering_fails() {
        assert!(!check(SIGNATURE, MSG_ID, TS, br#"{"test": 2432232315}"#));
        assert!(!check(SIGNATURE, "msg_p5jXN8AQM9LWM0D4loKWxJel", TS, BODY));
        assert!(!check(SIGNATURE, MSG_ID, TS + 1, BODY));
        let other = Secret::generate();
        assert!(!verify(&other, MSG_ID, TS, BODY, SIGNATURE, TS, 300));
        assert!(!check("v1,", MSG_ID, TS, BODY));
        assert!(!check("", MSG_ID, TS, BODY));
        assert!(!check("v1,not base64!", MSG_ID, TS, BODY));
        // The right bytes under another version are not accepted.
        assert!(!check(&SIGNATURE.replacen("v1", "v2", 1), MSG_ID, TS, BODY));
    }

    #[test]
    fn header_with_several_signatures() {
        let wrong = sign(&Secret::generate(), MSG_ID, TS, BODY);
        let header = format!("v1a,abc {wrong}  {SIGNATURE} v2,xyz");
        assert!(check(&header, MSG_ID, TS, BODY));
        assert!(!check(&format!("{wrong} v1a,abc"), MSG_ID, TS, BODY));
        // Unpadded base64 is read too.
        assert!(check(SIGNATURE.trim_end_matches('='), MSG_ID, TS, BODY));
    }

    #[test]
    fn timestamp_tolerance() {
        let s = secret();
        assert!(verify(&s, MSG_ID, TS, BODY, SIGNATURE, TS + 300, 300));
        assert!(verify(&s, MSG_ID, TS, BODY, SIGNATURE, TS - 300, 300));
        assert!(!verify(&s, MSG_ID, TS, BODY, SIGNATURE, TS + 301, 300));
        assert!(!verify(&s, MSG_ID, TS, BODY, SIGNATURE, TS - 301, 300));
        assert!(!verify(&s, MSG_ID, TS, BODY, SIGNATURE, TS + 1, -5));
        assert!(!verify(&s, MSG_ID, TS, BODY, SIGNATURE, i64::MIN, i64::MAX));
    }

    #[test]
    fn headers_carry_id_timestamp_signature() {
        let [id, ts, sig] = headers(&[secret()], MSG_ID, TS, BODY);
        assert_eq!(id, ("webhook-id", MSG_ID.to_owned()));
        assert_eq!(ts, ("webhook-timestamp", "1614265330".to_owned()));
        assert_eq!(sig, ("webhook-signature", SIGNATURE.to_owned()));
    }

    #[test]
    fn during_a_rotation_either_secret_verifies() {
        let next = Secret::generate();
        let [_, _, (_, both)] = headers(&[next.clone(), secret()], MSG_ID, TS, BODY);
        assert_eq!(both.split(' ').count(), 2);
        assert!(verify(&secret(), MSG_ID, TS, BODY, &both, TS, 300));
        assert!(verify(&next, MSG_ID, TS, BODY, &both, TS, 300));
        assert!(!verify(
            &Secret::generate(),
            MSG_ID,
            TS,
            BODY,
            &both,
            TS,
            300
        ));
    }

    #[test]
    fn secret_round_trips() {
        assert_eq!(secret().to_string(), SECRET);
        assert_eq!(secret().key().len(), 24);
        let generated = Secret::generate();
        assert_eq!(generated.key().len(), GENERATED_KEY_BYTES);
        assert!(generated.to_string().starts_with("whsec_"));
        assert_eq!(Secret::parse(&generated.to_string()).unwrap(), generated);
        assert_ne!(generated, Secret::generate());
        assert_eq!(Secret::parse(&format!("  {SECRET}\n")).unwrap(), secret());
        assert_eq!(
            Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAA")
                .unwrap()
                .key()
                .len(),
            25
        );
    }

    #[test]
    fn secret_parse_errors() {
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SecretError::MissingPrefix)
        );
        assert_eq!(Secret::parse(""), Err(SecretError::MissingPrefix));
        assert_eq!(Secret::parse("whsec_"), Err(SecretError::Empty));
        assert!(matches!(
            Secret::parse("whsec_not*base64"),
            Err(SecretError::BadBase64(_))
        ));
        assert_eq!(
            Secret::parse("whsec_c2hvcnQ="),
            Err(SecretError::TooShort { len: 5 })
        );
        let msg = Secret::parse("whsec_c2hvcnQ=").unwrap_err().to_string();
        assert!(msg.contains("5 bytes") && msg.contains("24"), "{msg}");
        let msg = Secret::parse("whsec_%%%").unwrap_err().to_string();
        assert!(msg.contains("base64"), "{msg}");
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let s = secret();
        let shown = format!("{s:?} {:?}", Some(&s));
        assert!(
            !shown.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "{shown}"
        );
        assert!(!shown.contains("49, 242"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn message_ids_are_fresh() {
        let a = new_message_id();
        assert!(a.starts_with("msg_") && a.len() == 36, "{a}");
        assert_ne!(a, new_message_id());
    }
}

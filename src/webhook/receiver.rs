//! The built-in test receiver (`POST /webhooks/test-receiver`): verifies each message's
//! signature with the secrets of the tenant that sent it and keeps the last few per tenant, so
//! an integrator can see what autos sends — and whether it verifies — before writing a
//! receiver of their own. Each tenant sees only its own messages.

use super::sign::{verify, Secret, DEFAULT_TOLERANCE_SECS};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use uuid::Uuid;

/// How many messages are kept per tenant.
pub const KEPT: usize = 50;

/// One message the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The tenant whose message it is (none: not a message autos sent).
    pub tenant_id: Option<Uuid>,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// `webhook-id`.
    pub message_id: Option<String>,
    /// `webhook-timestamp`.
    pub timestamp: Option<i64>,
    /// The event's `type`.
    pub event_type: Option<String>,
    /// Whether `webhook-signature` verified with the secret (and the timestamp is recent).
    pub signature_valid: bool,
    /// The body, as sent.
    pub body: String,
}

/// The receiver's memory (per process), by tenant.
#[derive(Debug, Default)]
pub struct TestReceiver {
    kept: Mutex<HashMap<Option<Uuid>, VecDeque<Received>>>,
}

impl TestReceiver {
    /// An empty receiver.
    pub fn new() -> Self {
        TestReceiver::default()
    }

    /// Verifies one message of `tenant_id` with its `secrets` (any of them), and keeps it;
    /// returns whether its signature verified.
    pub fn receive(
        &self,
        tenant_id: Option<Uuid>,
        secrets: &[Secret],
        message_id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> bool {
        let timestamp = timestamp.and_then(|t| t.trim().parse::<i64>().ok());
        let valid = match (message_id, timestamp, signature) {
            (Some(id), Some(ts), Some(sig)) => secrets.iter().any(|secret| {
                verify(
                    secret,
                    id,
                    ts,
                    body,
                    sig,
                    Utc::now().timestamp(),
                    DEFAULT_TOLERANCE_SECS,
                )
            }),
            _ => false,
        };
        let event_type = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["type"].as_str().map(str::to_string));
        let received = Received {
            tenant_id,
            received_at: Utc::now(),
            message_id: message_id.map(str::to_string),
            timestamp,
            event_type,
            signature_valid: valid,
            body: String::from_utf8_lossy(body).into_owned(),
        };
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let kept = kept.entry(tenant_id).or_default();
        if kept.len() == KEPT {
            kept.pop_back();
        }
        kept.push_front(received);
        valid
    }

    /// The last `n` messages of a tenant (of all, and those of no tenant, for `None`), newest
    /// first.
    pub fn last(&self, tenant_id: Option<Uuid>, n: usize) -> Vec<Received> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let mut messages: Vec<Received> = match tenant_id {
            Some(tenant) => kept
                .get(&Some(tenant))
                .map(|k| k.iter().cloned().collect())
                .unwrap_or_default(),
            None => kept.values().flatten().cloned().collect(),
        };
        messages.sort_by_key(|m| std::cmp::Reverse(m.received_at));
        messages.truncate(n);
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::sign::sign;

    #[test]
    fn verifies_and_keeps_the_newest_first() {
        let secret = Secret::generate();
        let secrets = [secret.clone()];
        let tenant = Some(Uuid::from_u128(1));
        let receiver = TestReceiver::new();
        let body = br#"{"type":"webhook.test"}"#;
        let now = Utc::now().timestamp();
        let signature = sign(&secret, "msg_1", now, body);
        assert!(receiver.receive(
            tenant,
            &secrets,
            Some("msg_1"),
            Some(&now.to_string()),
            Some(&signature),
            body
        ));
        assert!(!receiver.receive(
            tenant,
            &secrets,
            Some("msg_2"),
            Some(&now.to_string()),
            Some(&signature),
            body
        ));
        assert!(!receiver.receive(tenant, &secrets, None, None, None, b"not json"));
        let last = receiver.last(tenant, 10);
        assert_eq!(last.len(), 3);
        assert_eq!(last[2].event_type.as_deref(), Some("webhook.test"));
        assert!(last[2].signature_valid);
        assert!(!last[1].signature_valid);
        for i in 0..(KEPT + 5) {
            receiver.receive(tenant, &secrets, Some(&format!("m{i}")), None, None, b"{}");
        }
        assert_eq!(receiver.last(tenant, 1000).len(), KEPT);
        // Another tenant's, and strangers', are kept apart.
        receiver.receive(None, &[], Some("x"), None, None, b"{}");
        assert!(receiver.last(Some(Uuid::from_u128(2)), 10).is_empty());
        assert_eq!(receiver.last(tenant, 1000).len(), KEPT);
        assert_eq!(receiver.last(None, 1000).len(), KEPT + 1);
    }
}

//! The built-in test receiver (`POST /webhooks/test-receiver`): verifies each message's
//! signature with autos' own secret and keeps the last few, so an integrator can see what
//! autos sends — and whether it verifies — before writing a receiver of their own.

use super::sign::{verify, Secret, DEFAULT_TOLERANCE_SECS};
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::sync::Mutex;

/// How many messages are kept.
pub const KEPT: usize = 50;

/// One message the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
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

/// The receiver's memory (per process).
#[derive(Debug)]
pub struct TestReceiver {
    secret: Secret,
    kept: Mutex<VecDeque<Received>>,
}

impl TestReceiver {
    /// A receiver verifying with `secret`.
    pub fn new(secret: Secret) -> Self {
        TestReceiver {
            secret,
            kept: Mutex::new(VecDeque::with_capacity(KEPT)),
        }
    }

    /// Verifies and keeps one message; returns whether its signature verified.
    pub fn receive(
        &self,
        message_id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> bool {
        let timestamp = timestamp.and_then(|t| t.trim().parse::<i64>().ok());
        let valid = match (message_id, timestamp, signature) {
            (Some(id), Some(ts), Some(sig)) => verify(
                &self.secret,
                id,
                ts,
                body,
                sig,
                Utc::now().timestamp(),
                DEFAULT_TOLERANCE_SECS,
            ),
            _ => false,
        };
        let event_type = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["type"].as_str().map(str::to_string));
        let received = Received {
            received_at: Utc::now(),
            message_id: message_id.map(str::to_string),
            timestamp,
            event_type,
            signature_valid: valid,
            body: String::from_utf8_lossy(body).into_owned(),
        };
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == KEPT {
            kept.pop_back();
        }
        kept.push_front(received);
        valid
    }

    /// The last `n` messages, newest first.
    pub fn last(&self, n: usize) -> Vec<Received> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().take(n).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::sign::sign;

    #[test]
    fn verifies_and_keeps_the_newest_first() {
        let secret = Secret::generate();
        let receiver = TestReceiver::new(secret.clone());
        let body = br#"{"type":"webhook.test"}"#;
        let now = Utc::now().timestamp();
        let signature = sign(&secret, "msg_1", now, body);
        assert!(receiver.receive(
            Some("msg_1"),
            Some(&now.to_string()),
            Some(&signature),
            body
        ));
        assert!(!receiver.receive(
            Some("msg_2"),
            Some(&now.to_string()),
            Some(&signature),
            body
        ));
        assert!(!receiver.receive(None, None, None, b"not json"));
        let last = receiver.last(10);
        assert_eq!(last.len(), 3);
        assert_eq!(last[2].event_type.as_deref(), Some("webhook.test"));
        assert!(last[2].signature_valid);
        assert!(!last[1].signature_valid);
        for i in 0..(KEPT + 5) {
            receiver.receive(Some(&format!("m{i}")), None, None, b"{}");
        }
        assert_eq!(receiver.last(1000).len(), KEPT);
    }
}

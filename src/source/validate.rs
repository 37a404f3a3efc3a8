//! Checking a listing against the contract before anything downstream trusts it.

use std::collections::HashSet;

use super::{ProcessListing, SourceError};
use crate::domain::ProcessNumber;

/// The most a listing body may weigh; a bigger one is a misbehaving source, not a big process.
pub(super) const MAX_LISTING_BYTES: u64 = 32 * 1024 * 1024;

/// The highest CNJ secrecy level (Resolução CNJ 121/2010: 0 public … 5).
const MAX_SIGILO: u8 = 5;

/// Parses and validates a listing for `number`, normalizing it: `number` formatted as looked
/// up, SHA-256 in lowercase, and empty optional strings turned into absent ones (sources write
/// `""` for "unknown", and downstream code should only have to check one way).
pub(super) fn listing_from_json(
    body: &[u8],
    number: &ProcessNumber,
) -> Result<ProcessListing, SourceError> {
    let invalid = |why: String| {
        SourceError::invalid(format!("the source's listing for process {number} {why}"))
    };
    let listing: ProcessListing = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("is not the expected JSON: {e}")))?;
    checked(listing, number)
}

/// Validates and normalizes a listing however it was read (JSON, MNI).
pub(super) fn checked(
    mut listing: ProcessListing,
    number: &ProcessNumber,
) -> Result<ProcessListing, SourceError> {
    let invalid = |why: String| {
        SourceError::invalid(format!("the source's listing for process {number} {why}"))
    };
    if listing.sigilo > MAX_SIGILO {
        return Err(invalid(format!("gives a sigilo of {}", listing.sigilo)));
    }
    match ProcessNumber::parse(&listing.number) {
        Ok(listed) if listed.as_str() == number.as_str() => {
            listing.number = number.as_str().to_owned();
        }
        _ => return Err(invalid(format!("is for process `{}`", listing.number))),
    }
    for field in [&mut listing.court, &mut listing.class, &mut listing.subject] {
        blank_to_none(field);
        if let Some(text) = field {
            replace_nul(text);
        }
    }

    let mut ids = HashSet::new();
    for (index, doc) in listing.documents.iter_mut().enumerate() {
        let position = index + 1;
        if doc.id.trim().is_empty() {
            return Err(invalid(format!("has document #{position} without an id")));
        }
        if !ids.insert(doc.id.clone()) {
            return Err(invalid(format!("lists document id `{}` twice", doc.id)));
        }
        if doc.id.contains('\0') || doc.url.contains('\0') {
            return Err(invalid(format!(
                "gives document #{position} an id or url with a NUL character"
            )));
        }
        // PostgreSQL text cannot hold NUL; in a display string it can only be noise.
        replace_nul(&mut doc.name);
        for text in [&mut doc.kind, &mut doc.mime_type].into_iter().flatten() {
            replace_nul(text);
        }
        let id = &doc.id;
        if doc.sigilo > MAX_SIGILO {
            return Err(invalid(format!(
                "gives document {id} a sigilo of {}",
                doc.sigilo
            )));
        }
        if doc.name.trim().is_empty() {
            return Err(invalid(format!("has document {id} without a name")));
        }
        if doc.url.trim().is_empty() {
            return Err(invalid(format!("has document {id} without a url")));
        }
        if let Some(size) = doc.size {
            if size < 0 {
                return Err(invalid(format!("gives document {id} a size of {size}")));
            }
        }
        blank_to_none(&mut doc.kind);
        blank_to_none(&mut doc.mime_type);
        blank_to_none(&mut doc.sha256);
        if let Some(sha) = &mut doc.sha256 {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!(
                    "gives document {id} a sha256 that is not 64 hex digits: `{sha}`"
                )));
            }
            sha.make_ascii_lowercase();
        }
    }
    Ok(listing)
}

fn replace_nul(text: &mut String) {
    if text.contains('\0') {
        *text = text.replace('\0', "\u{FFFD}");
    }
}

fn blank_to_none(field: &mut Option<String>) {
    if field.as_deref().is_some_and(|s| s.trim().is_empty()) {
        *field = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NUMBER: &str = "1500345-31.2017.8.26.0248";

    fn check(body: serde_json::Value) -> Result<ProcessListing, SourceError> {
        let number = ProcessNumber::parse(NUMBER).unwrap();
        listing_from_json(body.to_string().as_bytes(), &number)
    }

    fn doc(id: &str) -> serde_json::Value {
        json!({"id": id, "name": "a.pdf", "url": "/files/a"})
    }

    fn invalid(body: serde_json::Value) -> String {
        match check(body) {
            Err(SourceError::Invalid { message }) => message,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn nul_characters_never_reach_the_database() {
        let listing = check(json!({"number": NUMBER, "subject": "a\u{0}b",
            "documents": [{"id": "d1", "name": "a\u{0}b.pdf", "kind": "x\u{0}", "url": "x"}]}))
        .unwrap();
        assert_eq!(listing.documents[0].name, "a\u{FFFD}b.pdf");
        assert_eq!(listing.documents[0].kind.as_deref(), Some("x\u{FFFD}"));
        assert_eq!(listing.subject.as_deref(), Some("a\u{FFFD}b"));
        let message = invalid(json!({"number": NUMBER,
            "documents": [{"id": "d\u{0}", "name": "a.pdf", "url": "x"}]}));
        assert!(message.contains("NUL"), "{message}");
    }

    #[test]
    fn normalizes_a_minimal_listing() {
        let sha = "AB".repeat(32);
        let listing = check(json!({"number": "15003453120178260248", "court": "",
            "documents": [{"id": "d1", "name": "a.pdf", "url": "x", "sha256": sha,
                           "size": 0, "mimeType": null}]}))
        .unwrap();
        assert_eq!(listing.number, NUMBER);
        assert_eq!(listing.court, None);
        assert_eq!(listing.documents[0].sha256, Some("ab".repeat(32)));
        assert_eq!(listing.documents[0].size, Some(0));
    }

    #[test]
    fn refuses_what_breaks_the_contract() {
        assert!(invalid(json!({"number": NUMBER})).contains("expected JSON"));
        let other = "0000001-00.2020.8.26.0001";
        assert!(invalid(json!({"number": other, "documents": []})).contains(other));
        let dup = invalid(json!({"number": NUMBER, "documents": [doc("d1"), doc("d1")]}));
        assert!(dup.contains("`d1` twice"), "{dup}");
        assert!(invalid(json!({"number": NUMBER, "documents": [doc(" ")]})).contains("id"));
        let cases = [
            json!({"id": "d", "name": "", "url": "x"}),
            json!({"id": "d", "name": "n", "url": ""}),
            json!({"id": "d", "name": "n", "url": "x", "size": -1}),
            json!({"id": "d", "name": "n", "url": "x", "sha256": "abc"}),
            json!({"id": "d", "name": "n", "url": "x", "sha256": "g".repeat(64)}),
        ];
        for case in cases {
            invalid(json!({"number": NUMBER, "documents": [case]}));
        }
    }
}

//! Storage names: S3 keys and download file names built from untrusted upstream ids and names.
//!
//! Keys are laid out as `processos/{number}/documentos/{source document id}/{file name}`; an id
//! that sanitizing changes gets a short hash of itself in its segment, so ids never share a key.

use std::borrow::Cow;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest as _, Sha256};

use super::cnj::ProcessNumber;

/// The most bytes a sanitized segment may have: the usual file-system limit for one name,
/// so a downloaded key can also be written to disk as is.
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Returned instead of a segment that would otherwise be empty, `.` or `..`.
pub const FALLBACK_SEGMENT: &str = "_";

/// Hex digits of SHA-256 added to an id segment that sanitizing changed (64 bits).
pub const ID_HASH_HEX: usize = 16;

/// Extensions longer than this (dot included) are treated as part of the name when
/// truncating; otherwise a name like `Ata da audiência. Juiz ...` would keep a 200-byte
/// "extension" and lose its start.
const MAX_EXTENSION_BYTES: usize = 16;

/// RFC 5987 `attr-char`: everything else in `filename*` is percent-encoded.
const ATTR_CHAR_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Makes an untrusted id or file name safe to use as one segment of an S3 key.
///
/// The result is never empty, `.` or `..` (those become [`FALLBACK_SEGMENT`]); holds no
/// `/`, `\`, control characters (C0, DEL, C1) or bidirectional overrides (each replaced by
/// `_`); has no leading or trailing whitespace; and is at most [`MAX_SEGMENT_BYTES`] bytes,
/// cut on a character boundary and keeping a short extension. Accents, spaces and other
/// printable Unicode are kept.
pub fn sanitize_segment(raw: &str) -> String {
    let replaced: String = raw
        .trim()
        .chars()
        .map(|c| if is_forbidden(c) { '_' } else { c })
        .collect();
    let truncated = truncate_keeping_extension(&replaced, MAX_SEGMENT_BYTES);
    let cleaned = truncated.trim();
    // Not only `.` and `..`: Windows strips trailing dots, so `...` saved to disk is empty.
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        FALLBACK_SEGMENT.to_owned()
    } else {
        cleaned.to_owned()
    }
}

/// The S3 key of a document's file: `processos/{number}/documentos/{id segment}/{name}`,
/// with the id passed through [`id_segment`] and the name through [`sanitize_segment`].
///
/// Distinct ids never share a key (within a process; the number keeps processes apart).
pub fn storage_key(number: &ProcessNumber, source_id: &str, name: &str) -> String {
    format!(
        "processos/{}/documentos/{}/{}",
        number.as_str(),
        id_segment(source_id),
        sanitize_segment(name)
    )
}

/// The S3 key of a document of a sealed process kept for one tenant:
/// `tenants/{tenant}/` followed by [`storage_key`]'s key. `tenant` is a slug (letters, digits
/// and `-`), which needs no cleaning.
pub fn tenant_storage_key(
    tenant: &str,
    number: &ProcessNumber,
    source_id: &str,
    name: &str,
) -> String {
    format!(
        "tenants/{}/{}",
        sanitize_segment(tenant),
        storage_key(number, source_id, name)
    )
}

/// The key segment of a source document id: the id itself when [`sanitize_segment`] leaves it
/// as it is, else the sanitized id (cut shorter if need be) followed by `~` and
/// [`ID_HASH_HEX`] hex digits of the original id's SHA-256, so that ids which sanitize alike
/// (`a/b` and `a_b`, `..` and `.`, ids sharing their first 255 bytes) keep apart.
///
/// An id that is already clean but ends the way a hashed segment does (`~` and that many
/// lowercase hex digits) is hashed too: otherwise a court could name a document after another
/// one's segment. Every other clean id keeps the segment it always had, and so its stored key.
pub fn id_segment(raw: &str) -> String {
    let clean = sanitize_segment(raw);
    if clean == raw && !looks_hashed(raw) {
        return clean;
    }
    let digest = Sha256::digest(raw.as_bytes());
    let hash = &hex::encode(digest)[..ID_HASH_HEX];
    let room = MAX_SEGMENT_BYTES - ID_HASH_HEX - 1;
    let stem = clean[..clean.floor_char_boundary(room)].trim_end();
    format!("{stem}~{hash}")
}

/// Whether `segment` ends as a hashed id segment does: `~` and [`ID_HASH_HEX`] lowercase hex
/// digits.
fn looks_hashed(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    bytes.len() > ID_HASH_HEX
        && bytes[bytes.len() - ID_HASH_HEX - 1] == b'~'
        && bytes[bytes.len() - ID_HASH_HEX..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// A `Content-Disposition` header value offering `name` as a download.
///
/// The name is first passed through [`sanitize_segment`] so no path or control character
/// reaches the browser. It is then given twice, as RFC 6266 recommends: `filename` with an
/// ASCII-only fallback (Portuguese accents transliterated, other non-ASCII replaced by `_`,
/// `"` replaced by `'`) for old clients, and `filename*` with the exact UTF-8 name
/// percent-encoded per RFC 5987. The result is printable ASCII only, whatever the input.
pub fn content_disposition(name: &str) -> String {
    let name = sanitize_segment(name);
    let fallback: String = name.chars().filter_map(ascii_fallback).collect();
    let fallback = if fallback.trim().is_empty() {
        FALLBACK_SEGMENT.to_owned()
    } else {
        fallback
    };
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        utf8_percent_encode(&name, ATTR_CHAR_ESCAPES)
    )
}

/// Characters that cannot appear in a sanitized segment.
fn is_forbidden(c: char) -> bool {
    // Bidirectional overrides and isolates let a name display a different extension from
    // the real one (`fatura\u{202E}fdp.exe` shows as `fatura exe.pdf`).
    const BIDI: [char; 9] = [
        '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
        '\u{2068}', '\u{2069}',
    ];
    c == '/' || c == '\\' || c.is_control() || BIDI.contains(&c)
}

/// Cuts `s` to at most `max` bytes on a character boundary, keeping its extension (the last
/// `.` and what follows) when it is short enough and not the whole name.
fn truncate_keeping_extension(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let extension = match s.rfind('.') {
        Some(dot) if dot > 0 && s.len() - dot <= MAX_EXTENSION_BYTES => &s[dot..],
        _ => "",
    };
    let stem = &s[..s.len() - extension.len()];
    let stem = stem[..stem.floor_char_boundary(max - extension.len())].trim_end();
    if extension.is_empty() {
        Cow::Borrowed(stem)
    } else {
        Cow::Owned(format!("{stem}{extension}"))
    }
}

/// The ASCII stand-in for `c` in a quoted `filename` parameter, or `None` to drop it.
fn ascii_fallback(c: char) -> Option<char> {
    let mapped = match c {
        'á' | 'à' | 'â' | 'ã' | 'ä' | 'ª' => 'a',
        'Á' | 'À' | 'Â' | 'Ã' | 'Ä' => 'A',
        'é' | 'è' | 'ê' | 'ë' => 'e',
        'É' | 'È' | 'Ê' | 'Ë' => 'E',
        'í' | 'ì' | 'î' | 'ï' => 'i',
        'Í' | 'Ì' | 'Î' | 'Ï' => 'I',
        'ó' | 'ò' | 'ô' | 'õ' | 'ö' | 'º' | '°' => 'o',
        'Ó' | 'Ò' | 'Ô' | 'Õ' | 'Ö' => 'O',
        'ú' | 'ù' | 'û' | 'ü' => 'u',
        'Ú' | 'Ù' | 'Û' | 'Ü' => 'U',
        'ç' => 'c',
        'Ç' => 'C',
        'ñ' => 'n',
        'Ñ' => 'N',
        '–' | '—' => '-',
        '‘' | '’' | '“' | '”' => '\'',
        // Decomposed accents (NFD input): the base letter is already there.
        '\u{0300}'..='\u{036F}' => return None,
        // A quoted-string cannot hold a bare `"`, and some clients treat `\` as an escape or
        // a path separator and `%` as the start of an encoding.
        '"' => '\'',
        '\\' | '%' => '_',
        c if c.is_ascii_graphic() || c == ' ' => c,
        _ => '_',
    };
    Some(mapped)
}

#[cfg(test)]
#[path = "names_tests.rs"]
mod tests;

//! Storage names: S3 keys and download file names built from untrusted upstream ids and names.
//!
//! Keys are laid out as `processos/{number}/documentos/{source document id}/{file name}`.

use std::borrow::Cow;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::cnj::ProcessNumber;

/// The most bytes a sanitized segment may have: the usual file-system limit for one name,
/// so a downloaded key can also be written to disk as is.
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Returned instead of a segment that would otherwise be empty, `.` or `..`.
pub const FALLBACK_SEGMENT: &str = "_";

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

/// The S3 key of a document's file: `processos/{number}/documentos/{source_id}/{name}`,
/// with `source_id` and `name` passed through [`sanitize_segment`].
///
/// Different raw ids can sanitize to the same segment (`a/b` and `a_b`); callers that must
/// keep them apart should make ids unique before calling.
pub fn storage_key(number: &ProcessNumber, source_id: &str, name: &str) -> String {
    format!(
        "processos/{}/documentos/{}/{}",
        number.as_str(),
        sanitize_segment(source_id),
        sanitize_segment(name)
    )
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
mod tests {
    use super::*;

    fn number() -> ProcessNumber {
        ProcessNumber::parse("1500345-31.2017.8.26.0248").unwrap()
    }

    fn assert_safe_segment(s: &str) {
        assert!(!s.is_empty());
        assert!(s.len() <= MAX_SEGMENT_BYTES, "{} bytes", s.len());
        assert!(!s.contains('/') && !s.contains('\\'), "{s:?}");
        assert!(!s.chars().any(char::is_control), "{s:?}");
        assert!(s != "." && s != "..", "{s:?}");
        assert_eq!(s, s.trim(), "{s:?}");
    }

    fn assert_header_safe(header: &str) {
        assert!(
            header.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
            "{header:?}"
        );
    }

    /// The value of the quoted `filename` parameter.
    fn fallback_of(header: &str) -> &str {
        let start = header.find("filename=\"").unwrap() + "filename=\"".len();
        let end = header.find("\"; filename*=").unwrap();
        &header[start..end]
    }

    #[test]
    fn path_traversal_is_neutralised() {
        let s = sanitize_segment("../../etc/passwd");
        assert_eq!(s, ".._.._etc_passwd");
        assert_safe_segment(&s);
        assert_eq!(sanitize_segment(".."), FALLBACK_SEGMENT);
        assert_eq!(sanitize_segment("."), FALLBACK_SEGMENT);
        assert_eq!(sanitize_segment("..."), FALLBACK_SEGMENT);
        assert_eq!(sanitize_segment(" .. "), FALLBACK_SEGMENT);
    }

    #[test]
    fn slashes_and_backslashes_are_replaced() {
        assert_eq!(sanitize_segment("a/b/c.pdf"), "a_b_c.pdf");
        assert_eq!(
            sanitize_segment("..\\..\\windows\\win.ini"),
            ".._.._windows_win.ini"
        );
        assert_eq!(sanitize_segment("/"), "_");
        assert_eq!(sanitize_segment("/leading"), "_leading");
    }

    #[test]
    fn accents_and_spaces_are_kept() {
        assert_eq!(
            sanitize_segment("Petição inicial.pdf"),
            "Petição inicial.pdf"
        );
        assert_eq!(
            sanitize_segment("Decisão  –  nº 2 (cópia).pdf"),
            "Decisão  –  nº 2 (cópia).pdf"
        );
        assert_eq!(sanitize_segment(".hidden"), ".hidden");
    }

    #[test]
    fn control_characters_are_replaced() {
        assert_eq!(sanitize_segment("a\u{0}b\nc.pdf"), "a_b_c.pdf");
        assert_eq!(sanitize_segment("a\u{7F}b\u{85}c\u{9F}d"), "a_b_c_d");
        assert_eq!(sanitize_segment("a\rb\tc"), "a_b_c");
        assert_eq!(sanitize_segment("fatura\u{202E}fdp.exe"), "fatura_fdp.exe");
        assert_safe_segment(&sanitize_segment("\u{1}\u{2}\u{3}"));
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        assert_eq!(
            sanitize_segment("  Petição inicial.pdf \n"),
            "Petição inicial.pdf"
        );
        assert_eq!(sanitize_segment("\u{A0}doc\u{3000}"), "doc");
    }

    #[test]
    fn empty_and_blank_become_the_fallback() {
        for raw in ["", " ", "\t\n\r ", "\u{A0}"] {
            assert_eq!(sanitize_segment(raw), FALLBACK_SEGMENT, "{raw:?}");
        }
    }

    #[test]
    fn long_ascii_name_is_truncated_keeping_extension() {
        let raw = format!("{}.pdf", "a".repeat(296));
        assert_eq!(raw.len(), 300);
        let s = sanitize_segment(&raw);
        assert_eq!(s.len(), MAX_SEGMENT_BYTES);
        assert!(s.ends_with(".pdf"), "{s}");
        assert!(s.starts_with("aaaa"));
        assert_safe_segment(&s);
    }

    #[test]
    fn long_multibyte_name_is_truncated_on_a_char_boundary() {
        // 'ç' is 2 bytes and '€' 3, so 255 falls inside a character for both.
        for (unit, extension) in [("ç", ".pdf"), ("€", ".html"), ("ção", "")] {
            let mut raw = unit.repeat(300);
            raw.push_str(extension);
            assert!(raw.len() >= 300);
            let s = sanitize_segment(&raw);
            assert!(s.len() <= MAX_SEGMENT_BYTES);
            assert!(s.len() > MAX_SEGMENT_BYTES - 4, "{} bytes", s.len());
            assert!(s.ends_with(extension), "{s}");
            assert!(s.starts_with(unit));
            assert_safe_segment(&s);
        }
    }

    #[test]
    fn long_extension_is_not_kept() {
        let raw = format!("nome.{}", "x".repeat(300));
        let s = sanitize_segment(&raw);
        assert_eq!(s.len(), MAX_SEGMENT_BYTES);
        assert!(s.starts_with("nome."));
    }

    #[test]
    fn truncation_does_not_leave_trailing_whitespace() {
        let raw = format!("{} {}.pdf", "a".repeat(250), "b".repeat(50));
        let s = sanitize_segment(&raw);
        assert_eq!(s, format!("{}.pdf", "a".repeat(250)));
        assert_safe_segment(&s);
    }

    #[test]
    fn storage_key_uses_the_layout() {
        assert_eq!(
            storage_key(&number(), "doc-42", "Petição inicial.pdf"),
            "processos/1500345-31.2017.8.26.0248/documentos/doc-42/Petição inicial.pdf"
        );
    }

    #[test]
    fn storage_key_keeps_hostile_input_in_its_segments() {
        let key = storage_key(&number(), "../..", "../../etc/passwd");
        assert_eq!(
            key,
            "processos/1500345-31.2017.8.26.0248/documentos/.._../.._.._etc_passwd"
        );
        let segments: Vec<&str> = key.split('/').collect();
        assert_eq!(segments.len(), 5);
        assert!(segments
            .iter()
            .all(|s| !s.is_empty() && *s != "." && *s != ".."));

        let key = storage_key(&number(), "..", " \n");
        assert!(key.ends_with("/documentos/_/_"), "{key}");
    }

    #[test]
    fn content_disposition_for_plain_ascii() {
        assert_eq!(
            content_disposition("decisao.pdf"),
            "attachment; filename=\"decisao.pdf\"; filename*=UTF-8''decisao.pdf"
        );
    }

    #[test]
    fn content_disposition_transliterates_accents_and_encodes_utf8() {
        let header = content_disposition("Petição inicial.pdf");
        assert_eq!(
            header,
            "attachment; filename=\"Peticao inicial.pdf\"; \
             filename*=UTF-8''Peti%C3%A7%C3%A3o%20inicial.pdf"
        );
        assert_header_safe(&header);
        assert_eq!(
            fallback_of(&content_disposition("AÇÃO Nº 1 – Réu.pdf")),
            "ACAO No 1 - Reu.pdf"
        );
        // Decomposed form: base letters plus combining marks.
        assert_eq!(
            fallback_of(&content_disposition("Petic\u{327}a\u{303}o.pdf")),
            "Peticao.pdf"
        );
        assert_eq!(fallback_of(&content_disposition("契約.pdf")), "__.pdf");
    }

    #[test]
    fn content_disposition_escapes_quotes_and_backslashes() {
        let header = content_disposition("a \"quoted\" name\\x.pdf");
        assert_header_safe(&header);
        assert_eq!(fallback_of(&header), "a 'quoted' name_x.pdf");
        assert!(header.ends_with("filename*=UTF-8''a%20%22quoted%22%20name_x.pdf"));
        assert_eq!(fallback_of(&content_disposition("100%.pdf")), "100_.pdf");
    }

    #[test]
    fn content_disposition_never_carries_line_breaks_or_controls() {
        for name in [
            "a\r\nSet-Cookie: x=y.pdf",
            "\n",
            "a\u{0}b\u{7F}c\u{85}d",
            "",
            "  ",
            "..",
            "\"",
            "\u{202E}",
        ] {
            let header = content_disposition(name);
            assert_header_safe(&header);
            assert!(header.starts_with("attachment; filename=\""), "{header}");
            assert!(!fallback_of(&header).is_empty(), "{header}");
            assert!(!fallback_of(&header).contains('"'), "{header}");
        }
        assert_eq!(
            fallback_of(&content_disposition("a\r\nSet-Cookie: x=y.pdf")),
            "a__Set-Cookie: x=y.pdf"
        );
    }

    #[test]
    fn content_disposition_filename_star_round_trips() {
        let name = "Decisão; “final” (1) 100%.pdf";
        let header = content_disposition(name);
        assert_header_safe(&header);
        let encoded = header.split("filename*=UTF-8''").nth(1).unwrap();
        let decoded = percent_encoding::percent_decode_str(encoded)
            .decode_utf8()
            .unwrap();
        assert_eq!(decoded, name);
    }
}

//! Tests for `names`, in a file of their own so that `names.rs` stays short.

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
    let hash = &hex::encode(Sha256::digest(b"../.."))[..ID_HASH_HEX];
    assert_eq!(
        key,
        format!("processos/1500345-31.2017.8.26.0248/documentos/.._..~{hash}/.._.._etc_passwd")
    );
    let segments: Vec<&str> = key.split('/').collect();
    assert_eq!(segments.len(), 5);
    assert!(segments
        .iter()
        .all(|s| !s.is_empty() && *s != "." && *s != ".."));

    let key = storage_key(&number(), "..", " \n");
    assert!(key.contains("/documentos/_~"), "{key}");
    assert!(key.ends_with("/_"), "{key}");
}

/// The id segments of `ids`, checked safe and pairwise distinct.
fn distinct_segments(ids: &[&str]) -> Vec<String> {
    let segments: Vec<String> = ids.iter().map(|id| id_segment(id)).collect();
    for (i, a) in segments.iter().enumerate() {
        assert_safe_segment(a);
        for (j, b) in segments.iter().enumerate().skip(i + 1) {
            assert_ne!(a, b, "{:?} and {:?} share a segment", ids[i], ids[j]);
        }
    }
    segments
}

#[test]
fn ids_that_sanitize_to_themselves_keep_their_segment() {
    for id in [
        "d1",
        "doc-42",
        "Petição 1",
        ".hidden",
        "a_b",
        "a~b",
        "x~0123",
    ] {
        assert_eq!(id_segment(id), id);
    }
    assert_eq!(
        storage_key(&number(), "a_b", "x.pdf"),
        "processos/1500345-31.2017.8.26.0248/documentos/a_b/x.pdf"
    );
}

#[test]
fn ids_that_sanitize_alike_get_distinct_segments() {
    let segments = distinct_segments(&["a/b", "a_b", "a\\b", "a\nb", "a\u{202E}b"]);
    assert_eq!(segments[1], "a_b");
    for s in [&segments[0], &segments[2], &segments[3], &segments[4]] {
        assert!(s.starts_with("a_b~"), "{s}");
        assert_eq!(s.len(), "a_b~".len() + ID_HASH_HEX, "{s}");
    }
    // The same id always gets the same segment.
    assert_eq!(id_segment("a/b"), segments[0]);
}

#[test]
fn dot_ids_get_distinct_segments() {
    let segments = distinct_segments(&["..", ".", "...", "_", " .. ", "../..", ".._.."]);
    assert_eq!(segments[3], "_");
    assert_eq!(segments[6], ".._..");
}

#[test]
fn ids_differing_in_control_characters_or_whitespace_get_distinct_segments() {
    distinct_segments(&[
        "a\u{0}b", "a\u{1}b", "a\u{7F}b", "a\tb", "a b", "ab", " ab", "ab ",
    ]);
}

#[test]
fn long_ids_sharing_their_first_255_bytes_get_distinct_segments() {
    let prefix = "x".repeat(255);
    let (a, b) = (
        format!("{prefix}{}", "a".repeat(45)),
        format!("{prefix}{}", "b".repeat(45)),
    );
    assert_eq!((a.len(), b.len()), (300, 300));
    let segments = distinct_segments(&[&a, &b, &prefix]);
    assert_eq!(segments[2], prefix, "exactly 255 bytes: clean, kept");
    for s in &segments[..2] {
        assert_eq!(s.len(), MAX_SEGMENT_BYTES, "{s}");
    }
    // Multibyte characters are not cut in half.
    let wide = "ç".repeat(200);
    let s = id_segment(&wide);
    assert!(s.len() <= MAX_SEGMENT_BYTES);
    assert!(s.starts_with('ç'));
    assert_safe_segment(&s);
}

#[test]
fn a_clean_id_cannot_take_a_hashed_segment() {
    let hashed = id_segment("a/b");
    assert!(looks_hashed(&hashed));
    let segments = distinct_segments(&["a/b", &hashed]);
    assert_ne!(segments[1], hashed);
    assert!(
        !looks_hashed("a~0123456789abcdeF"),
        "uppercase hex is not ours"
    );
    assert!(!looks_hashed("0123456789abcdef"), "no separator");
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

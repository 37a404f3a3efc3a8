//! Just enough XML for court answers, lenient where courts deviate: element names are matched
//! on their local part whatever the prefix, attributes in any order and quoting, text with
//! entities, comments, processing instructions and CDATA. It works on a buffer that may end
//! mid-token (the streaming reader of `conteudo` feeds it as bytes arrive): an incomplete
//! token answers `None` and is read again once more bytes are there.

/// One piece of markup.
#[derive(Debug, PartialEq)]
pub(super) enum Token<'a> {
    /// `<p:name attrs>` or `<p:name attrs/>` (`empty`); `name` is the local part.
    Open {
        name: &'a [u8],
        attrs: &'a [u8],
        empty: bool,
    },
    /// `</p:name>`.
    Close { name: &'a [u8] },
    /// Character data up to the next `<`, still escaped.
    Text(&'a [u8]),
    /// `<![CDATA[…]]>`, verbatim.
    CData(&'a [u8]),
    /// A declaration, comment, processing instruction or doctype.
    Other,
}

/// The token at `pos` and the position after it, or `None` if `buf` ends before it does.
/// Text is a token only once the `<` after it has arrived.
pub(super) fn next(buf: &[u8], pos: usize) -> Option<(Token<'_>, usize)> {
    let rest = buf.get(pos..)?;
    if rest.is_empty() {
        return None;
    }
    if rest[0] != b'<' {
        let end = memchr(b'<', rest)?;
        return Some((Token::Text(&rest[..end]), pos + end));
    }
    if rest.starts_with(b"<!--") {
        let end = find(rest, b"-->")?;
        return Some((Token::Other, pos + end + 3));
    }
    if rest.starts_with(b"<![CDATA[") {
        let end = find(rest, b"]]>")?;
        return Some((Token::CData(&rest[9..end]), pos + end + 3));
    }
    if rest.len() < 2 {
        return None;
    }
    if rest[1] == b'?' || rest[1] == b'!' {
        let end = memchr(b'>', rest)?;
        return Some((Token::Other, pos + end + 1));
    }
    let end = tag_end(rest)?;
    let inner = &rest[1..end];
    if let Some(name) = inner.strip_prefix(b"/") {
        let name = local(trim(name));
        return Some((Token::Close { name }, pos + end + 1));
    }
    let (inner, empty) = match inner.strip_suffix(b"/") {
        Some(inner) => (inner, true),
        None => (inner, false),
    };
    let split = inner
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(inner.len());
    let name = local(&inner[..split]);
    let attrs = &inner[split..];
    Some((Token::Open { name, attrs, empty }, pos + end + 1))
}

/// The value of attribute `want` (local name) in `attrs`, unescaped.
pub(super) fn attr(attrs: &[u8], want: &str) -> Option<String> {
    let mut i = 0;
    while i < attrs.len() {
        while i < attrs.len() && attrs[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < attrs.len() && attrs[i] != b'=' && !attrs[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &attrs[start..i];
        while i < attrs.len() && (attrs[i].is_ascii_whitespace() || attrs[i] == b'=') {
            i += 1;
        }
        let quote = *attrs.get(i)?;
        if quote != b'"' && quote != b'\'' {
            return None;
        }
        let value_start = i + 1;
        let len = memchr(quote, &attrs[value_start..])?;
        let value = &attrs[value_start..value_start + len];
        i = value_start + len + 1;
        if local(key) == want.as_bytes() {
            return Some(unescape(value));
        }
    }
    None
}

/// Text with the five named entities and numeric character references resolved; anything
/// else is kept as written. Bytes that are not UTF-8 become U+FFFD.
pub(super) fn unescape(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    if !text.contains('&') {
        return text.into_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = &*text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let Some(semi) = after.find(';').filter(|&s| s <= 10) else {
            out.push('&');
            rest = after;
            continue;
        };
        let entity = &after[..semi];
        let resolved = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match resolved {
            Some(c) => out.push(c),
            None => {
                out.push('&');
                out.push_str(entity);
                out.push(';');
            }
        }
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    out
}

/// The part of a qualified name after its prefix.
fn local(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b':') {
        Some(colon) => &name[colon + 1..],
        None => name,
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// The `>` closing the tag at the start of `rest`, skipping `>` inside quoted values.
fn tag_end(rest: &[u8]) -> Option<usize> {
    let mut quote = None;
    for (i, &b) in rest.iter().enumerate().skip(1) {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), b) if b == q => quote = None,
            (None, b'>') => return Some(i),
            _ => {}
        }
    }
    None
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(xml: &str) -> Vec<Token<'_>> {
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some((token, next_pos)) = next(xml.as_bytes(), pos) {
            out.push(token);
            pos = next_pos;
        }
        out
    }

    #[test]
    fn names_are_local_whatever_the_prefix_and_attributes_any_quoting() {
        let xml = r#"<?xml version="1.0"?><!-- c --><ns4:documento idDocumento='7' descricao="a &gt; b"><x/></ns4:documento >"#;
        let t = tokens(xml);
        assert_eq!(t[0], Token::Other);
        assert_eq!(t[1], Token::Other);
        let Token::Open { name, attrs, empty } = &t[2] else {
            panic!("{t:?}")
        };
        assert_eq!(*name, b"documento");
        assert!(!empty);
        assert_eq!(attr(attrs, "idDocumento").as_deref(), Some("7"));
        assert_eq!(attr(attrs, "descricao").as_deref(), Some("a > b"));
        assert_eq!(attr(attrs, "hash"), None);
        assert!(matches!(t[3], Token::Open { empty: true, .. }));
        assert_eq!(t[4], Token::Close { name: b"documento" });
    }

    #[test]
    fn an_incomplete_token_waits_for_more_bytes() {
        assert_eq!(next(b"<a b=\"x>", 0), None);
        assert_eq!(next(b"text without end", 0), None);
        assert_eq!(next(b"<a b=\"x>y\">", 0).map(|t| t.1), Some(11));
        assert_eq!(
            next(b"<![CDATA[ <x> ]]>", 0).map(|t| t.0),
            Some(Token::CData(b" <x> "))
        );
    }

    #[test]
    fn entities_resolve_and_unknown_ones_stay() {
        assert_eq!(
            unescape(b"Usu&#225;rio &amp; &#xE9; &nbsp; &"),
            "Usuário & é &nbsp; &"
        );
    }
}

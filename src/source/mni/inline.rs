//! Reading a document's `conteudo` sent inline as base64, as a stream: the answer is scanned
//! as it arrives until the wanted document's `conteudo` opens, then its text is decoded in
//! 4-character groups (whitespace, line breaks and character references skipped) and handed
//! on chunk by chunk. Memory stays flat whatever the document's size.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};

use super::xml::{attr, next, Token};
use crate::source::http::failures::BROKE;
use crate::source::SourceError;

/// What the scan found.
pub(super) enum Found {
    /// The wanted content: its decoded bytes, as they arrive.
    Content(BoxStream<'static, Result<Bytes, SourceError>>),
    /// The answer ended without it; its beginning, to read the failure from.
    Answer(Vec<u8>),
}

/// Markup kept at most before the content starts (the case header, other elements).
const MAX_HEAD: usize = 16 * 1024 * 1024;
/// Of the answer, what is kept to read a failure from.
const MAX_KEPT: usize = 1024 * 1024;

/// Standard alphabet; padding optional, as courts differ.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The phrase of content that is not base64.
pub(super) const NOT_BASE64: &str = "the court sent content that is not valid base64";

/// Scans `body` for the `conteudo` of document `wanted`.
pub(super) async fn find(
    mut body: BoxStream<'static, Result<Bytes, SourceError>>,
    wanted: &str,
) -> Result<Found, SourceError> {
    let mut kept = Vec::new();
    let mut pending = BytesMut::new();
    let mut docs: Vec<String> = Vec::new();
    let mut failed = false;
    let mut last_open = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if kept.len() < MAX_KEPT {
            kept.extend_from_slice(&chunk[..chunk.len().min(MAX_KEPT - kept.len())]);
        }
        if failed {
            continue;
        }
        pending.extend_from_slice(&chunk);
        let mut pos = 0;
        while let Some((token, after)) = next(&pending, pos) {
            match token {
                Token::Open { name, attrs, empty } => {
                    match name {
                        b"documento" | b"documentoVinculado" if !empty => {
                            docs.push(attr(attrs, "idDocumento").unwrap_or_default());
                        }
                        b"conteudo" if !empty && docs.last().is_some_and(|d| d == wanted) => {
                            let rest = pending.split_off(after).freeze();
                            return Ok(Found::Content(decode(rest, body)));
                        }
                        _ => {}
                    }
                    last_open = name.to_vec();
                }
                Token::Text(text) if last_open == b"sucesso" => {
                    // `sucesso=false`: there is no content to wait for; keep what explains why.
                    failed |= text.trim_ascii().eq_ignore_ascii_case(b"false");
                }
                Token::Close { name } => {
                    if matches!(name, b"documento" | b"documentoVinculado") {
                        docs.pop();
                    }
                    last_open.clear();
                }
                _ => {}
            }
            pos = after;
        }
        let _ = pending.split_to(pos);
        if pending.len() > MAX_HEAD {
            return Err(SourceError::invalid(
                "the court's answer has too much before the document's content",
            ));
        }
    }
    Ok(Found::Answer(kept))
}

/// Decodes base64 text from `first` then `rest` up to the `<` that closes `conteudo`.
fn decode(
    first: Bytes,
    rest: BoxStream<'static, Result<Bytes, SourceError>>,
) -> BoxStream<'static, Result<Bytes, SourceError>> {
    let state = Decoder {
        first: Some(first),
        rest,
        quad: Vec::with_capacity(4),
        entity: None,
        done: false,
    };
    stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            let chunk = match s.first.take() {
                Some(first) => first,
                None => match s.rest.next().await {
                    Some(Ok(chunk)) => chunk,
                    Some(Err(e)) => {
                        s.done = true;
                        return Some((Err(e), s));
                    }
                    None => {
                        s.done = true;
                        tracing::warn!("the court's answer ended inside the document's content");
                        return Some((Err(SourceError::retryable(BROKE)), s));
                    }
                },
            };
            match s.feed(&chunk) {
                Ok(out) if out.is_empty() => continue,
                Ok(out) => return Some((Ok(out), s)),
                Err(e) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
            }
        }
    })
    .boxed()
}

struct Decoder {
    first: Option<Bytes>,
    rest: BoxStream<'static, Result<Bytes, SourceError>>,
    /// Base64 characters not yet decoded (fewer than four between chunks).
    quad: Vec<u8>,
    /// A character reference being read (`&#13;`, split across chunks).
    entity: Option<Vec<u8>>,
    done: bool,
}

impl Decoder {
    /// Decodes what `chunk` adds; at the closing `<`, the rest and marks the end.
    fn feed(&mut self, chunk: &[u8]) -> Result<Bytes, SourceError> {
        let mut text = std::mem::take(&mut self.quad);
        text.reserve(chunk.len());
        for &b in chunk {
            if let Some(entity) = &mut self.entity {
                if b == b';' {
                    let reference = String::from_utf8_lossy(entity).into_owned();
                    self.entity = None;
                    let c = super::xml::unescape(format!("&{reference};").as_bytes());
                    text.extend(c.bytes().filter(|b| !b.is_ascii_whitespace()));
                } else if entity.len() > 8 {
                    return Err(not_base64());
                } else {
                    entity.push(b);
                }
                continue;
            }
            match b {
                b'<' => {
                    self.done = true;
                    break;
                }
                b'&' => self.entity = Some(Vec::new()),
                b if b.is_ascii_whitespace() => {}
                b => text.push(b),
            }
        }
        let whole = if self.done {
            text.len()
        } else {
            text.len() / 4 * 4
        };
        self.quad = text.split_off(whole);
        if text.is_empty() {
            return Ok(Bytes::new());
        }
        BASE64
            .decode(&text)
            .map(Bytes::from)
            .map_err(|_| not_base64())
    }
}

/// Decodes base64 already in memory (whitespace removed).
pub(super) fn decode_all(text: &[u8]) -> Option<Vec<u8>> {
    BASE64.decode(text).ok()
}

fn not_base64() -> SourceError {
    tracing::warn!("the court's content is not valid base64");
    SourceError::retryable(NOT_BASE64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(text: &str, size: usize) -> BoxStream<'static, Result<Bytes, SourceError>> {
        let pieces: Vec<_> = text
            .as_bytes()
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        stream::iter(pieces).boxed()
    }

    async fn content(answer: &str, size: usize, wanted: &str) -> Result<Vec<u8>, SourceError> {
        match find(chunks(answer, size), wanted).await? {
            Found::Content(mut s) => {
                let mut out = Vec::new();
                while let Some(c) = s.next().await {
                    out.extend_from_slice(&c?);
                }
                Ok(out)
            }
            Found::Answer(a) => Err(SourceError::invalid(String::from_utf8_lossy(&a))),
        }
    }

    #[tokio::test]
    async fn wrapped_base64_decodes_whatever_the_chunking() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut encoded = BASE64.encode(&bytes);
        // Lines of 76 with CRLF written as a reference on some lines, like some serializers.
        let mut wrapped = String::new();
        while !encoded.is_empty() {
            let rest = encoded.split_off(encoded.len().min(76));
            wrapped.push_str(&encoded);
            wrapped.push_str(if rest.len().is_multiple_of(3) {
                "&#13;\n"
            } else {
                "\r\n  "
            });
            encoded = rest;
        }
        let answer = format!(
            r#"<s:Envelope><s:Body><r><sucesso>true</sucesso><processo><ns2:documento idDocumento="1"><ns2:conteudo>QUJD</ns2:conteudo></ns2:documento><ns2:documento idDocumento="2"><ns2:conteudo>{wrapped}</ns2:conteudo></ns2:documento></processo></r></s:Body></s:Envelope>"#
        );
        for size in [1, 3, 7, 64, 100_000] {
            assert_eq!(
                content(&answer, size, "2").await.unwrap(),
                bytes,
                "chunks of {size}"
            );
        }
        assert_eq!(content(&answer, 5, "1").await.unwrap(), b"ABC");
    }

    #[tokio::test]
    async fn a_failure_or_a_cut_answer_is_not_content() {
        let refused =
            "<r><sucesso>false</sucesso><mensagem>Documento n\u{e3}o encontrado.</mensagem></r>";
        match find(chunks(refused, 4), "2").await.unwrap() {
            Found::Answer(a) => assert_eq!(a, refused.as_bytes()),
            Found::Content(_) => panic!("no content"),
        }
        let cut = r#"<r><sucesso>true</sucesso><documento idDocumento="2"><conteudo>QUJDREVG"#;
        assert_eq!(
            content(cut, 8, "2").await.unwrap_err(),
            SourceError::retryable(BROKE)
        );
        let bad = r#"<documento idDocumento="2"><conteudo>QU*D</conteudo></documento>"#;
        assert_eq!(
            content(bad, 8, "2").await.unwrap_err().to_string(),
            NOT_BASE64
        );
    }
}

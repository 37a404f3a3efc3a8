//! Reading MTOM answers (`multipart/related; type="application/xop+xml"`): the root part is
//! the SOAP answer, whose `conteudo` holds `<xop:Include href="cid:…"/>`; the bytes are in the
//! part with that `Content-ID`. Apache CXF percent-encodes the cid in the `href` (noted in
//! `webmedula/lexflow`, `src/infrastructure/adapters/mni/mtom.ts`), so both are compared
//! decoded. Courts send errors as MTOM too: the root part is then the whole story.

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use percent_encoding::percent_decode_str;

use super::answer::{self, Answer, Conteudo};
use super::inline::NOT_BASE64;
use crate::source::http::failures::BROKE;
use crate::source::SourceError;

/// The root part is read whole; a bigger one is a misbehaving court.
const MAX_ROOT: usize = 32 * 1024 * 1024;

/// Whether a `Content-Type` is an MTOM (multipart) answer; its boundary if so.
pub(super) fn boundary(content_type: Option<&str>) -> Option<String> {
    let content_type = content_type?;
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/")
    {
        return None;
    }
    // By hand: the `mime` parser behind `multer::parse_boundary` refuses CXF's parameters.
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// What an MTOM answer holds.
pub(super) enum Parts {
    /// The wanted document's bytes, as they arrive.
    Content(BoxStream<'static, Result<Bytes, SourceError>>),
    /// The root part, read (there was no content for the document, or none was asked).
    Answer(Answer),
}

/// Reads the root part of `body`; with `wanted`, then streams that document's attachment.
pub(super) async fn read(
    body: BoxStream<'static, Result<Bytes, SourceError>>,
    boundary: String,
    wanted: Option<&str>,
) -> Result<Parts, SourceError> {
    let mut multipart = multer::Multipart::new(body, boundary);
    let mut root = multipart
        .next_field()
        .await
        .map_err(broken)?
        .ok_or_else(|| SourceError::invalid("the court's MTOM answer has no parts"))?;
    let mut xml = Vec::new();
    while let Some(chunk) = root.chunk().await.map_err(broken)? {
        if xml.len() + chunk.len() > MAX_ROOT {
            return Err(SourceError::invalid("the court's answer is too large"));
        }
        xml.extend_from_slice(&chunk);
    }
    drop(root);
    let answer = answer::read(&xml);
    let Some(wanted) = wanted else {
        return Ok(Parts::Answer(answer));
    };
    let conteudo = answer
        .contents
        .iter()
        .find(|(id, _)| id == wanted)
        .map(|(_, c)| c);
    let cid = match conteudo {
        None => return Ok(Parts::Answer(answer)),
        Some(Conteudo::Inline(text)) => {
            // Inline base64 inside an MTOM answer: already in memory with the root part.
            let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
            let bytes = super::inline::decode_all(&compact).ok_or_else(|| {
                tracing::warn!("the court's content is not valid base64");
                SourceError::retryable(NOT_BASE64)
            })?;
            return Ok(Parts::Content(
                stream::iter([Ok(Bytes::from(bytes))]).boxed(),
            ));
        }
        Some(Conteudo::Include(href)) => content_id(href),
    };
    while let Some(field) = multipart.next_field().await.map_err(broken)? {
        let id = field
            .headers()
            .get("content-id")
            .and_then(|v| v.to_str().ok())
            .map(content_id);
        if id.as_deref() != Some(cid.as_str()) {
            continue;
        }
        // The multipart reader must live as long as the part's bytes are read.
        let parts = stream::unfold(Some((multipart, field)), |state| async move {
            let (multipart, mut field) = state?;
            match field.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some((multipart, field)))),
                Ok(None) => None,
                Err(e) => Some((Err(broken(e)), None)),
            }
        });
        return Ok(Parts::Content(parts.boxed()));
    }
    tracing::warn!(cid = %cid, "the court's MTOM answer has no part for the document's content");
    Err(SourceError::retryable(BROKE))
}

/// A cid as both sides write it: `<` `>` and `cid:` taken off, percent-decoded.
fn content_id(raw: &str) -> String {
    let raw = raw.trim();
    let raw = raw.strip_prefix("cid:").unwrap_or(raw);
    let raw = raw.trim_start_matches('<').trim_end_matches('>');
    percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

fn broken(e: multer::Error) -> SourceError {
    tracing::warn!(error = %e, "the court's MTOM answer broke off");
    SourceError::retryable(BROKE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &[u8]) -> BoxStream<'static, Result<Bytes, SourceError>> {
        let pieces: Vec<_> = text
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        stream::iter(pieces).boxed()
    }

    // Shaped like the CXF answer in `webmedula/lexflow`,
    // `tests/fixtures/mni-tjgo-credencial-invalida-real.txt`.
    fn mtom(root: &str, attachment: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"\r\n--uuid:b1\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"text/xml\"\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <root.message@cxf.apache.org>\r\n\r\n");
        out.extend_from_slice(root.as_bytes());
        out.extend_from_slice(b"\r\n--uuid:b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <1a-2b@cxf.apache.org>\r\n\r\n");
        out.extend_from_slice(attachment);
        out.extend_from_slice(b"\r\n--uuid:b1--\r\n");
        out
    }

    #[tokio::test]
    async fn the_attachment_named_by_a_percent_encoded_cid_is_streamed() {
        let root = r#"<soap:Envelope><soap:Body><ns4:r><ns3:sucesso>true</ns3:sucesso><ns3:processo><ns2:documento idDocumento="7"><ns2:conteudo><xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:1a-2b%40cxf.apache.org"/></ns2:conteudo></ns2:documento></ns3:processo></ns4:r></soap:Body></soap:Envelope>"#;
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let ctype = r#"multipart/related; type="application/xop+xml"; boundary="uuid:b1"; start="<root.message@cxf.apache.org>"; start-info="text/xml""#;
        let boundary = boundary(Some(ctype)).unwrap();
        let Parts::Content(mut s) = read(body(&mtom(root, &bytes)), boundary, Some("7"))
            .await
            .unwrap()
        else {
            panic!("content expected")
        };
        let mut got = Vec::new();
        while let Some(c) = s.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, bytes);
        assert_eq!(boundary_of("text/xml; charset=UTF-8"), None);
    }

    fn boundary_of(ctype: &str) -> Option<String> {
        boundary(Some(ctype))
    }

    #[tokio::test]
    async fn an_error_sent_as_mtom_is_read_from_its_root_part() {
        let root = "<soap:Envelope><soap:Body><ns4:consultarProcessoResposta><ns3:sucesso>false</ns3:sucesso><ns3:mensagem>Usu\u{e1}rio ou Senha inv\u{e1}lida.</ns3:mensagem></ns4:consultarProcessoResposta></soap:Body></soap:Envelope>";
        let Parts::Answer(a) = read(body(&mtom(root, b"")), "uuid:b1".into(), Some("7"))
            .await
            .unwrap()
        else {
            panic!("an answer expected")
        };
        assert_eq!(a.sucesso, Some(false));
        assert_eq!(a.mensagem.as_deref(), Some("Usuário ou Senha inválida."));
    }
}

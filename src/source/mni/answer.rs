//! Reading a whole (small) answer: `sucesso`, `mensagem`, a SOAP fault, the case header and
//! its documents, and where each document's `conteudo` is (inline, or an MTOM attachment).
//!
//! Element names follow the `intercomunicacao-2.2.2` schema (`tipoCabecalhoProcesso`,
//! `tipoDocumento`) as inlined in `mwfilho/MachineLearningToolkit-TJ2`,
//! `attached_assets/intercomunicacao.xml`.

use super::xml::{attr, next, unescape, Token};
use crate::source::ListedDocument;

/// Where a document's content is in an answer.
#[derive(Debug, PartialEq)]
pub(super) enum Conteudo {
    /// Base64 text in the element itself.
    Inline(String),
    /// An MTOM attachment: the `href` of its `xop:Include`, as written.
    Include(String),
}

/// What an answer says.
#[derive(Debug, Default)]
pub(super) struct Answer {
    pub sucesso: Option<bool>,
    pub mensagem: Option<String>,
    /// A SOAP fault's `faultstring`.
    pub fault: Option<String>,
    /// Whether a `processo` was in it.
    pub has_process: bool,
    /// `dadosBasicos/@numero`.
    pub numero: Option<String>,
    /// `dadosBasicos/@nivelSigilo`.
    pub sigilo: u8,
    /// `dadosBasicos/@classeProcessual`.
    pub class: Option<String>,
    /// The first `assunto`'s national code or description.
    pub subject: Option<String>,
    /// `orgaoJulgador/@nomeOrgao`.
    pub organ: Option<String>,
    /// Every document, `documentoVinculado` flattened after its parent.
    pub documents: Vec<ListedDocument>,
    /// Contents by document id.
    pub contents: Vec<(String, Conteudo)>,
}

/// Reads `body` (the XML of an answer, or the root part of an MTOM one).
pub(super) fn read(body: &[u8]) -> Answer {
    let mut answer = Answer::default();
    // Local names of the open elements, and the ids of the open documents.
    let mut open: Vec<Vec<u8>> = Vec::new();
    let mut docs: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut in_subject = false;
    let mut pos = 0;
    while let Some((token, after)) = next(body, pos) {
        pos = after;
        match token {
            Token::Open { name, attrs, empty } => {
                text.clear();
                match name {
                    b"dadosBasicos" => {
                        answer.has_process = true;
                        answer.numero = attr(attrs, "numero");
                        answer.sigilo = sigilo(attrs);
                        answer.class = attr(attrs, "classeProcessual");
                    }
                    b"processo" => answer.has_process = true,
                    b"orgaoJulgador" if answer.organ.is_none() => {
                        answer.organ = attr(attrs, "nomeOrgao");
                    }
                    b"assunto" if answer.subject.is_none() => in_subject = true,
                    b"assuntoLocal" if in_subject => {
                        answer.subject = attr(attrs, "descricao").filter(|d| !d.trim().is_empty());
                    }
                    b"documento" | b"documentoVinculado" if within(&open, b"processo") => {
                        let id = attr(attrs, "idDocumento").unwrap_or_default();
                        answer.documents.push(document(attrs, &id, docs.last()));
                        if !empty {
                            docs.push(id);
                        }
                    }
                    b"Include" if open.last().is_some_and(|n| n == b"conteudo") => {
                        if let (Some(id), Some(href)) = (docs.last(), attr(attrs, "href")) {
                            answer.contents.push((id.clone(), Conteudo::Include(href)));
                        }
                    }
                    _ => {}
                }
                if !empty {
                    open.push(name.to_vec());
                }
            }
            Token::Text(raw) => text.push_str(&unescape(raw)),
            Token::CData(raw) => text.push_str(&String::from_utf8_lossy(raw)),
            Token::Close { name } => {
                let value = text.trim();
                match name {
                    b"sucesso" => answer.sucesso = Some(value.eq_ignore_ascii_case("true")),
                    b"mensagem" if answer.mensagem.is_none() && !value.is_empty() => {
                        answer.mensagem = Some(value.to_string());
                    }
                    b"faultstring" | b"Text" if answer.fault.is_none() => {
                        answer.fault = Some(value.to_string());
                    }
                    b"codigoNacional" | b"descricao" if in_subject && !value.is_empty() => {
                        answer.subject = Some(value.to_string());
                    }
                    b"assunto" => in_subject = false,
                    b"conteudo" if !value.is_empty() => {
                        if let Some(id) = docs.last() {
                            answer
                                .contents
                                .push((id.clone(), Conteudo::Inline(value.to_string())));
                        }
                    }
                    b"documento" | b"documentoVinculado" => {
                        docs.pop();
                    }
                    _ => {}
                }
                // Lenient about mismatched tags: close up to the matching name, if open.
                if let Some(at) = open.iter().rposition(|n| n == name) {
                    open.truncate(at);
                }
                text.clear();
            }
            Token::Other => {}
        }
    }
    answer
}

fn within(open: &[Vec<u8>], name: &[u8]) -> bool {
    open.iter().any(|n| n == name)
}

fn sigilo(attrs: &[u8]) -> u8 {
    attr(attrs, "nivelSigilo")
        .and_then(|v| v.trim().parse::<u8>().ok())
        .unwrap_or(0)
}

/// A listed document from a `tipoDocumento`'s attributes.
fn document(attrs: &[u8], id: &str, parent: Option<&String>) -> ListedDocument {
    let mime = attr(attrs, "mimetype").filter(|m| !m.trim().is_empty());
    let description = attr(attrs, "descricao").filter(|d| !d.trim().is_empty());
    let kind = attr(attrs, "tipoDocumento").filter(|k| !k.trim().is_empty());
    // Courts announce MD5 (32 hex digits) or, rarely, SHA-256: only the latter is checked.
    let sha256 = attr(attrs, "hash")
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    ListedDocument {
        id: id.to_string(),
        name: file_name(description.as_deref(), id, mime.as_deref()),
        // Courts write a code of their document table (`58`); a name is the better kind.
        kind: kind
            .filter(|k| !k.bytes().all(|b| b.is_ascii_digit()))
            .or(description),
        url: format!("mni:{id}"),
        size: None,
        sha256,
        mime_type: mime,
        sigilo: sigilo(attrs),
        parent: parent.cloned(),
    }
}

/// A file name for people: the description (else the id) with the media type's extension.
pub(super) fn file_name(description: Option<&str>, id: &str, mime: Option<&str>) -> String {
    let base = description.map(str::trim).unwrap_or(id);
    let ext = match mime.map(|m| m.split(';').next().unwrap_or(m).trim().to_ascii_lowercase()) {
        Some(m) => match m.as_str() {
            "application/pdf" => "pdf",
            "text/html" => "html",
            "text/plain" => "txt",
            "text/xml" | "application/xml" => "xml",
            "image/jpeg" => "jpg",
            "image/png" => "png",
            "image/tiff" => "tif",
            "audio/mpeg" => "mp3",
            "video/mp4" => "mp4",
            "application/msword" => "doc",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
            "application/vnd.oasis.opendocument.text" => "odt",
            _ => "",
        },
        None => "",
    };
    if ext.is_empty() || base.to_ascii_lowercase().ends_with(&format!(".{ext}")) {
        base.to_string()
    } else {
        format!("{base}.{ext}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like the pasted PJe answer in `mwfilho/MachineLearningToolkit-TJ2`
    // (`attached_assets/`): CXF prefixes, a nested `documentoVinculado`, an MD5 `hash`.
    const LISTING: &str = r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>
<ns4:consultarProcessoResposta xmlns:ns2="http://www.cnj.jus.br/intercomunicacao-2.2.2" xmlns:ns4="http://www.cnj.jus.br/servico-intercomunicacao-2.2.2/" xmlns:ns3="http://www.cnj.jus.br/tipos-servico-intercomunicacao-2.2.2">
<ns3:sucesso>true</ns3:sucesso><ns3:mensagem>Processo consultado com sucesso</ns3:mensagem>
<ns3:processo><ns2:dadosBasicos numero="00012026620248260100" classeProcessual="7" codigoLocalidade="1" nivelSigilo="0">
<ns2:polo polo="AT"><ns2:parte><ns2:pessoa nome="A"/></ns2:parte></ns2:polo>
<ns2:assunto><ns2:codigoNacional>10433</ns2:codigoNacional></ns2:assunto>
<ns2:orgaoJulgador codigoOrgao="1" nomeOrgao="1ª Vara Cível" instancia="ORIG"/></ns2:dadosBasicos>
<ns2:documento idDocumento="101" tipoDocumento="58" dataHora="20240102101010" mimetype="application/pdf" nivelSigilo="0" hash="0cc175b9c0f1b6a831c399e269772661" descricao="Petição Inicial">
  <ns2:documentoVinculado idDocumento="102" tipoDocumento="4050" mimetype="application/pdf" descricao="Procuração"/>
  <ns2:documentoVinculado idDocumento="103" tipoDocumento="4050" mimetype="text/html" nivelSigilo="5" descricao="Laudo"><ns2:outroParametro nome="x" valor="y"/></ns2:documentoVinculado>
</ns2:documento>
<ns2:documento idDocumento="104" mimetype="application/pdf" descricao="Sentença.pdf"/>
</ns3:processo></ns4:consultarProcessoResposta></soap:Body></soap:Envelope>"#;

    #[test]
    fn a_listing_flattens_attached_documents_after_their_parent() {
        let a = read(LISTING.as_bytes());
        assert_eq!(a.sucesso, Some(true));
        assert_eq!(a.numero.as_deref(), Some("00012026620248260100"));
        assert_eq!(a.class.as_deref(), Some("7"));
        assert_eq!(a.subject.as_deref(), Some("10433"));
        assert_eq!(a.organ.as_deref(), Some("1ª Vara Cível"));
        let ids: Vec<_> = a.documents.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["101", "102", "103", "104"]);
        let parents: Vec<_> = a.documents.iter().map(|d| d.parent.as_deref()).collect();
        assert_eq!(parents, [None, Some("101"), Some("101"), None]);
        assert_eq!(a.documents[0].name, "Petição Inicial.pdf");
        assert_eq!(a.documents[0].sha256, None, "MD5 is not taken for SHA-256");
        assert_eq!(a.documents[2].name, "Laudo.html");
        assert_eq!(a.documents[2].sigilo, 5);
        assert_eq!(a.documents[3].name, "Sentença.pdf");
        assert!(a.contents.is_empty());
    }

    #[test]
    fn failures_and_contents_are_read() {
        let fault = r#"<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body><S:Fault><faultcode>S:Server</faultcode><faultstring>Erro interno</faultstring></S:Fault></S:Body></S:Envelope>"#;
        assert_eq!(
            read(fault.as_bytes()).fault.as_deref(),
            Some("Erro interno")
        );
        let refused = r#"<a:consultarProcessoResposta xmlns:a="x"><a:sucesso>false</a:sucesso><a:mensagem>Usu&#225;rio ou Senha inv&#225;lida.</a:mensagem></a:consultarProcessoResposta>"#;
        let a = read(refused.as_bytes());
        assert_eq!(a.sucesso, Some(false));
        assert_eq!(a.mensagem.as_deref(), Some("Usuário ou Senha inválida."));
        let content = r#"<r><sucesso>true</sucesso><processo><documento idDocumento="9"><conteudo>
 QUJD
 REVG </conteudo></documento><documento idDocumento="8"><conteudo><xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:a%40b"/></conteudo></documento></processo></r>"#;
        let a = read(content.as_bytes());
        assert_eq!(
            a.contents,
            vec![
                ("9".to_string(), Conteudo::Inline("QUJD\n REVG".to_string())),
                ("8".to_string(), Conteudo::Include("cid:a%40b".to_string()))
            ]
        );
    }
}

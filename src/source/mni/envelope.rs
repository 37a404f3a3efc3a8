//! The one request autos sends a court: `consultarProcesso`, as SOAP 1.1 document/literal.
//!
//! Shapes follow the published WSDL `servico-intercomunicacao-2.2.2.wsdl` (repository
//! `danilopbh/soap-api`) and the `tipos-servico-intercomunicacao-2.2.2` schema inlined in a
//! court's WSDL (`mwfilho/MachineLearningToolkit-TJ2`, `attached_assets/intercomunicacao.xml`).
//! No other operation is ever built here: `consultarTeorComunicacao` gives notice and starts
//! legal deadlines, and the rest send things to the court.

use crate::source::Credential;

/// Namespace of the operation wrappers (the trailing slash is part of it).
pub(super) const SERVICE_NS: &str = "http://www.cnj.jus.br/servico-intercomunicacao-2.2.2/";
/// Namespace of the operation parameters (qualified elements).
pub(super) const TYPES_NS: &str = "http://www.cnj.jus.br/tipos-servico-intercomunicacao-2.2.2";
/// The `SOAPAction` of `consultarProcesso`.
pub(super) const SOAP_ACTION: &str =
    "\"http://www.cnj.jus.br/servico-intercomunicacao-2.2.2/consultarProcesso\"";

/// What a `consultarProcesso` asks for.
pub(super) enum Ask<'a> {
    /// The case's header and its document list, without contents.
    Listing,
    /// One document's content.
    Content(&'a str),
}

/// The envelope of one `consultarProcesso` for the 20 digits of a number.
pub(super) fn consultar_processo(
    digits: &str,
    credential: Option<&Credential>,
    ask: Ask<'_>,
) -> String {
    let mut body = String::with_capacity(1024);
    body.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    body.push_str(r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/""#);
    body.push_str(&format!(
        r#" xmlns:ser="{SERVICE_NS}" xmlns:tip="{TYPES_NS}">"#
    ));
    body.push_str("<soapenv:Header/><soapenv:Body><ser:consultarProcesso>");
    if let Some(credential) = credential {
        element(&mut body, "idConsultante", &credential.username);
        if let Some(password) = &credential.password {
            element(&mut body, "senhaConsultante", password);
        }
    }
    element(&mut body, "numeroProcesso", digits);
    element(&mut body, "movimentos", "false");
    match ask {
        Ask::Listing => {
            element(&mut body, "incluirCabecalho", "true");
            element(&mut body, "incluirDocumentos", "true");
        }
        Ask::Content(id) => element(&mut body, "documento", id),
    }
    body.push_str("</ser:consultarProcesso></soapenv:Body></soapenv:Envelope>");
    body
}

fn element(body: &mut String, name: &str, text: &str) {
    body.push_str("<tip:");
    body.push_str(name);
    body.push('>');
    for c in text.chars() {
        match c {
            '&' => body.push_str("&amp;"),
            '<' => body.push_str("&lt;"),
            '>' => body.push_str("&gt;"),
            '"' => body.push_str("&quot;"),
            '\'' => body.push_str("&apos;"),
            c => body.push(c),
        }
    }
    body.push_str("</tip:");
    body.push_str(name);
    body.push('>');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_and_content_requests_carry_what_the_schema_asks() {
        let cred = Credential::configured("x", "user&1".into(), Some("p<w>".into()), None);
        let listing = consultar_processo("00012026620248260100", Some(&cred), Ask::Listing);
        assert!(listing.contains("<ser:consultarProcesso>"));
        assert!(listing.contains("<tip:idConsultante>user&amp;1</tip:idConsultante>"));
        assert!(listing.contains("<tip:senhaConsultante>p&lt;w&gt;</tip:senhaConsultante>"));
        assert!(listing.contains("<tip:numeroProcesso>00012026620248260100</tip:numeroProcesso>"));
        assert!(listing.contains("<tip:incluirDocumentos>true</tip:incluirDocumentos>"));
        assert!(!listing.contains("<tip:documento>"));
        let content = consultar_processo("00012026620248260100", None, Ask::Content("d&1"));
        assert!(content.contains("<tip:documento>d&amp;1</tip:documento>"));
        assert!(!content.contains("idConsultante"));
        assert!(!content.contains("incluirDocumentos"));
    }
}

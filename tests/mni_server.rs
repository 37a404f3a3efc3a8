//! The MNI test court ([`common::mni`]) speaks the wire format of real MNI 2.2.2 courts: checked
//! here with raw HTTP and envelopes shaped like a published capture (SoapUI's `soapenv:`/`ser:`/
//! `tip:` prefixes), so that the client tests built on it rest on the real protocol rather than
//! on the client's own reading of it.

mod common;

use base64::Engine as _;
use common::mni::*;
use common::{bytes, number};
use md5::{Digest, Md5};
use std::time::{Duration, Instant};

/// A `consultarProcesso` request as SoapUI writes it from the WSDL (the published capture).
fn envelope(
    credentials: Option<(&str, &str)>,
    number: &str,
    include_documents: bool,
    documents: &[&str],
) -> String {
    let (id, password) = credentials.unwrap_or_default();
    let mut xml = format!(
        "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:ser=\"http://www.cnj.jus.br/servico-intercomunicacao-2.2.2/\" \
         xmlns:tip=\"http://www.cnj.jus.br/tipos-servico-intercomunicacao-2.2.2\">\n\
         \x20  <soapenv:Header/>\n\
         \x20  <soapenv:Body>\n\
         \x20     <ser:consultarProcesso>\n\
         \x20        <tip:idConsultante>{id}</tip:idConsultante>\n\
         \x20        <tip:senhaConsultante>{password}</tip:senhaConsultante>\n\
         \x20        <tip:numeroProcesso>{number}</tip:numeroProcesso>\n\
         \x20        <!--Optional:-->\n\
         \x20        <tip:movimentos>false</tip:movimentos>\n\
         \x20        <tip:incluirCabecalho>true</tip:incluirCabecalho>\n\
         \x20        <tip:incluirDocumentos>{include_documents}</tip:incluirDocumentos>\n"
    );
    for d in documents {
        xml.push_str(&format!("         <tip:documento>{d}</tip:documento>\n"));
    }
    xml.push_str("      </ser:consultarProcesso>\n   </soapenv:Body>\n</soapenv:Envelope>\n");
    xml
}

async fn post(court: &MniCourt, action: &str, xml: String) -> reqwest::Response {
    reqwest::Client::new()
        .post(court.endpoint())
        .header("Content-Type", "text/xml;charset=UTF-8")
        .header("SOAPAction", format!("\"{action}\""))
        .body(xml)
        .send()
        .await
        .expect("request to the MNI court")
}

fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let to = s[from..].find(end)? + from;
    Some(&s[from..to])
}

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// The parts of a multipart body: (headers, bytes).
fn multipart(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delimiter = format!("--{boundary}");
    let next = format!("\r\n--{boundary}");
    assert!(body.starts_with(delimiter.as_bytes()), "no first boundary");
    let mut at = delimiter.len();
    let mut parts = Vec::new();
    while !body[at..].starts_with(b"--") {
        assert!(body[at..].starts_with(b"\r\n"), "boundary line not ended");
        let start = at + 2;
        let end = find(body, next.as_bytes(), start).expect("next boundary");
        let part = &body[start..end];
        let split = find(part, b"\r\n\r\n", 0).expect("part headers");
        parts.push((
            String::from_utf8(part[..split].to_vec()).expect("headers"),
            part[split + 4..].to_vec(),
        ));
        at = end + next.len();
    }
    parts
}

fn param<'a>(content_type: &'a str, name: &str) -> &'a str {
    between(content_type, &format!("{name}=\""), "\"").unwrap_or_else(|| panic!("no {name}"))
}

/// Base64 inline of `conteudo`, its lines, decoded.
fn inline_content(xml: &str) -> (Vec<String>, Vec<u8>) {
    let text = between(xml, "<ns3:conteudo>", "</ns3:conteudo>").expect("conteudo");
    let lines = text.split("\r\n").map(str::to_string).collect();
    let compact: String = text.split_whitespace().collect();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .expect("base64");
    (lines, decoded)
}

#[tokio::test]
async fn the_listing_nests_linked_documents_without_contents() {
    let court = MniCourt::start().await;
    let n = number(1);
    let petition = bytes(3_000, 1);
    court.add_process(
        &n,
        MniProcess::new(vec![
            MniDoc::new("140722096", "Petição", petition.clone()).child(
                MniDoc::new("140722098", "Procuração", bytes(500, 2)).child(MniDoc::new(
                    "140722099",
                    "Substabelecimento",
                    bytes(10, 3),
                )),
            ),
            MniDoc::new("140690432", "Decisão", bytes(700, 4)),
        ]),
    );

    let resp = post(&court, SOAP_ACTION, envelope(None, &digits(&n), true, &[])).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/xml; charset=UTF-8");
    let xml = resp.text().await.unwrap();

    assert!(xml.starts_with(
        "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>\
         <ns5:consultarProcessoResposta"
    ));
    assert!(xml.contains("<ns2:sucesso>true</ns2:sucesso>"), "{xml}");
    assert!(xml.contains(&format!("<ns3:dadosBasicos numero=\"{}\"", digits(&n))));
    assert!(xml.contains("nomeOrgao=\"Vara Única da Comarca de Teste\""));
    assert!(
        !xml.contains("conteudo"),
        "a listing carries no contents: {xml}"
    );
    // The attachment of the petition, and its own attachment, nested under their parents.
    let petition_xml = between(
        &xml,
        "<ns3:documento idDocumento=\"140722096\"",
        "</ns3:documento>",
    )
    .expect("the petition");
    let linked = between(
        petition_xml,
        "<ns3:documentoVinculado idDocumento=\"140722098\" idDocumentoVinculado=\"140722096\"",
        "</ns3:documentoVinculado>",
    )
    .expect("its linked document, nested");
    assert!(linked.contains(
        "<ns3:documentoVinculado idDocumento=\"140722099\" idDocumentoVinculado=\"140722098\""
    ));
    assert!(petition_xml.contains(&format!("hash=\"{}\"", md5_hex(&petition))));
    assert!(petition_xml.contains("descricao=\"Petição\""));
    assert!(xml.contains("<ns3:documento idDocumento=\"140690432\""));
    assert!(xml
        .ends_with("</ns2:processo></ns5:consultarProcessoResposta></soap:Body></soap:Envelope>"));

    let calls = court.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].operation, "consultarProcesso");
    assert_eq!(calls[0].soap_action.as_deref(), Some(SOAP_ACTION));
    assert_eq!(calls[0].number.as_deref(), Some(digits(&n).as_str()));
    assert!(calls[0].include_documents && calls[0].include_header);
    assert!(calls[0].documents.is_empty());
    assert_eq!(court.operations(), ["consultarProcesso"]);
    assert_eq!(court.content_calls(&n, "140722096"), 0);
}

#[tokio::test]
async fn contents_inline_are_base64_in_wrapped_lines() {
    let court = MniCourt::start().await;
    let n = number(2);
    let deep = bytes(1_000, 5);
    court.add_process(
        &n,
        MniProcess::new(vec![MniDoc::new("1", "Petição", bytes(10, 1))
            .child(MniDoc::new("2", "Anexo", deep.clone()))]),
    );

    // A linked document is found at any depth; default lines of 76 characters.
    let resp = post(
        &court,
        SOAP_ACTION,
        envelope(None, &digits(&n), false, &["2"]),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-length").is_none(), "streamed");
    let xml = resp.text().await.unwrap();
    assert!(xml.contains("<ns3:documento idDocumento=\"2\" idDocumentoVinculado=\"1\""));
    let (lines, decoded) = inline_content(&xml);
    assert_eq!(decoded, deep);
    assert!(lines.len() > 1);
    assert!(
        lines[..lines.len() - 1].iter().all(|l| l.len() == 76),
        "{lines:?}"
    );
    assert!(!lines.last().unwrap().is_empty());
    assert_eq!(court.content_calls(&n, "2"), 1);
    assert_eq!(court.calls()[0].documents, ["2"]);

    court.set_base64_line(None);
    let xml = post(
        &court,
        SOAP_ACTION,
        envelope(None, &digits(&n), false, &["2"]),
    )
    .await
    .text()
    .await
    .unwrap();
    let (lines, decoded) = inline_content(&xml);
    assert_eq!((lines.len(), decoded), (1, deep));
    assert_eq!(court.content_calls(&n, "2"), 2);

    let xml = post(
        &court,
        SOAP_ACTION,
        envelope(None, &digits(&n), false, &["9"]),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(xml.contains("<ns2:sucesso>false</ns2:sucesso>"));
    assert!(xml.contains(&format!(
        "<ns2:mensagem>{DOCUMENT_NOT_FOUND}</ns2:mensagem>"
    )));
}

#[tokio::test]
async fn mtom_sends_contents_as_binary_parts_with_percent_encoded_hrefs() {
    let court = MniCourt::start().await;
    let n = number(3);
    let first = bytes(200_000, 6);
    let second = b"\r\n--uuid:not-a-boundary\r\n".repeat(10);
    court.add_process(
        &n,
        MniProcess::new(vec![
            MniDoc::new("10", "Petição", first.clone()),
            MniDoc::new("11", "Sentença", second.clone()),
        ]),
    );
    court.set_encoding(Encoding::Mtom);

    let resp = post(
        &court,
        SOAP_ACTION,
        envelope(None, &digits(&n), false, &["10", "11"]),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("multipart/related; type=\"application/xop+xml\";"));
    assert_eq!(
        param(&content_type, "start"),
        "<root.message@cxf.apache.org>"
    );
    assert_eq!(param(&content_type, "start-info"), "text/xml");
    let boundary = param(&content_type, "boundary").to_string();
    assert!(boundary.starts_with("uuid:"));
    let body = resp.bytes().await.unwrap();
    assert!(body.ends_with(format!("\r\n--{boundary}--\r\n").as_bytes()));

    let parts = multipart(&body, &boundary);
    assert_eq!(parts.len(), 3);
    let (root_headers, root) = &parts[0];
    assert!(root_headers
        .contains("Content-Type: application/xop+xml; charset=UTF-8; type=\"text/xml\""));
    assert!(root_headers.contains("Content-ID: <root.message@cxf.apache.org>"));
    let root = String::from_utf8(root.clone()).unwrap();
    assert!(root.contains("<ns2:sucesso>true</ns2:sucesso>"));
    for (i, expected) in [(1, &first), (2, &second)] {
        let (headers, bytes) = &parts[i];
        let cid = between(headers, "Content-ID: <", ">").expect("content id");
        assert!(cid.contains('@'), "{cid}");
        assert!(headers.contains("Content-Transfer-Encoding: binary"));
        let href = format!("cid:{}", cid.replace('@', "%40"));
        assert!(
            root.contains(&format!(
                "<ns3:conteudo><xop:Include xmlns:xop=\"http://www.w3.org/2004/08/xop/include\" \
                 href=\"{href}\"/></ns3:conteudo>"
            )),
            "{root}"
        );
        assert_eq!(bytes, expected);
    }
    assert_eq!(court.content_calls(&n, "10"), 1);
    assert_eq!(court.content_calls(&n, "11"), 1);

    // Every answer is multipart, a listing too (no attachments: a bounded body).
    let resp = post(&court, SOAP_ACTION, envelope(None, &digits(&n), true, &[])).await;
    assert!(resp.headers().get("content-length").is_some());
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    let body = resp.bytes().await.unwrap();
    let parts = multipart(&body, param(&content_type, "boundary"));
    assert_eq!(parts.len(), 1);
    assert!(!String::from_utf8_lossy(&parts[0].1).contains("conteudo"));
}

#[tokio::test]
async fn wrong_credentials_are_refused_like_tjgo() {
    let court = MniCourt::start().await;
    let n = number(4);
    court.add_process(
        &n,
        MniProcess::new(vec![MniDoc::new("1", "Petição", bytes(10, 1))]),
    );

    // No user added: public access, with or without credentials.
    let xml = post(&court, SOAP_ACTION, envelope(None, &digits(&n), true, &[]))
        .await
        .text()
        .await
        .unwrap();
    assert!(xml.contains("<ns2:sucesso>true</ns2:sucesso>"));
    assert_eq!(court.calls()[0].user, None);

    court.add_user("03909823343", "s3cret");
    let resp = post(
        &court,
        SOAP_ACTION,
        envelope(Some(("03909823343", "wrong")), &digits(&n), true, &[]),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let xml = resp.text().await.unwrap();
    assert!(xml.contains(
        "<ns2:sucesso>false</ns2:sucesso><ns2:mensagem>Usuário ou Senha inválida.</ns2:mensagem>\
         </ns5:consultarProcessoResposta>"
    ));
    assert!(!xml.contains("processo>"));
    let call = court.calls().pop().unwrap();
    assert_eq!(call.user.as_deref(), Some("03909823343"));
    assert_eq!(call.password.as_deref(), Some("wrong"));

    // With MTOM, the refusal comes as the TJGO capture: a multipart of its root part alone.
    court.set_encoding(Encoding::Mtom);
    let resp = post(&court, SOAP_ACTION, envelope(None, &digits(&n), true, &[])).await;
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    let body = resp.bytes().await.unwrap();
    let parts = multipart(&body, param(&content_type, "boundary"));
    assert_eq!(parts.len(), 1);
    assert!(String::from_utf8_lossy(&parts[0].1).contains(BAD_CREDENTIALS));

    court.set_encoding(Encoding::Inline);
    let xml = post(
        &court,
        SOAP_ACTION,
        envelope(Some(("03909823343", "s3cret")), &digits(&n), true, &[]),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(xml.contains("<ns2:sucesso>true</ns2:sucesso>"));

    // A formatted number is not what the WSDL asks for.
    let xml = post(
        &court,
        SOAP_ACTION,
        envelope(Some(("03909823343", "s3cret")), &n, true, &[]),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(xml.contains("<ns2:sucesso>false</ns2:sucesso>"));
    let xml = post(
        &court,
        SOAP_ACTION,
        envelope(
            Some(("03909823343", "s3cret")),
            &digits(&number(99)),
            true,
            &[],
        ),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(xml.contains(PROCESS_NOT_FOUND));
}

#[tokio::test]
async fn sealed_processes_and_documents_are_for_their_readers() {
    let court = MniCourt::start().await;
    court.add_user("judge", "a");
    court.add_user("lawyer", "b");
    let sealed = number(5);
    let public = number(6);
    court.add_process(
        &sealed,
        MniProcess::new(vec![MniDoc::new("1", "Petição", bytes(10, 1))]).sealed(5, &["judge"]),
    );
    court.add_process(
        &public,
        MniProcess {
            readers: vec!["judge".into()],
            ..MniProcess::new(vec![
                MniDoc::new("1", "Petição", bytes(10, 1))
                    .child(MniDoc::new("2", "Laudo", bytes(10, 2)).sealed(3)),
                MniDoc::new("3", "Exame", bytes(10, 3)).sealed(1),
            ])
        },
    );
    let ask = |user: &'static str, password: &'static str, n: &str, docs: &[&str]| {
        envelope(Some((user, password)), &digits(n), true, docs)
    };

    let xml = post(&court, SOAP_ACTION, ask("judge", "a", &sealed, &[]))
        .await
        .text()
        .await
        .unwrap();
    assert!(xml.contains("nivelSigilo=\"5\""), "{xml}");
    let xml = post(&court, SOAP_ACTION, ask("lawyer", "b", &sealed, &[]))
        .await
        .text()
        .await
        .unwrap();
    assert!(xml.contains(&format!(
        "<ns2:sucesso>false</ns2:sucesso><ns2:mensagem>{PROCESS_SEALED}</ns2:mensagem>"
    )));

    let xml = post(&court, SOAP_ACTION, ask("judge", "a", &public, &[]))
        .await
        .text()
        .await
        .unwrap();
    assert!(xml.contains("idDocumento=\"2\"") && xml.contains("idDocumento=\"3\""));
    let xml = post(&court, SOAP_ACTION, ask("lawyer", "b", &public, &[]))
        .await
        .text()
        .await
        .unwrap();
    assert!(xml.contains("idDocumento=\"1\""));
    assert!(!xml.contains("idDocumento=\"2\"") && !xml.contains("idDocumento=\"3\""));
    let xml = post(&court, SOAP_ACTION, ask("lawyer", "b", &public, &["2"]))
        .await
        .text()
        .await
        .unwrap();
    assert!(xml.contains(DOCUMENT_NOT_FOUND));
    assert_eq!(court.content_calls(&public, "2"), 0);
    let xml = post(&court, SOAP_ACTION, ask("judge", "a", &public, &["2"]))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(inline_content(&xml).1, bytes(10, 2));
}

#[tokio::test]
async fn other_operations_are_recorded_and_refused() {
    let court = MniCourt::start().await;
    let teor = "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
        xmlns:ser=\"http://www.cnj.jus.br/servico-intercomunicacao-2.2.2/\" \
        xmlns:tip=\"http://www.cnj.jus.br/tipos-servico-intercomunicacao-2.2.2\">\
        <soapenv:Header/><soapenv:Body><ser:consultarTeorComunicacao>\
        <tip:idConsultante>x</tip:idConsultante><tip:senhaConsultante>y</tip:senhaConsultante>\
        <tip:identificadorAviso>123</tip:identificadorAviso>\
        </ser:consultarTeorComunicacao></soapenv:Body></soapenv:Envelope>";
    let resp = post(
        &court,
        "http://www.cnj.jus.br/servico-intercomunicacao-2.2.2/consultarTeorComunicacao",
        teor.to_string(),
    )
    .await;
    assert_eq!(resp.status(), 500);
    let xml = resp.text().await.unwrap();
    assert!(xml.contains("<soap:Fault><faultcode>soap:Server</faultcode><faultstring>"));
    assert_eq!(court.operations(), ["consultarTeorComunicacao"]);
    assert_eq!(court.calls()[0].user.as_deref(), Some("x"));
}

#[tokio::test]
async fn injected_faults_come_one_per_request() {
    let court = MniCourt::start().await;
    let n = number(7);
    let content = bytes(300_000, 8);
    court.add_process(
        &n,
        MniProcess::new(vec![MniDoc::new("1", "Petição", content.clone())]),
    );
    court.fail_next(vec![
        MniFault::Status(503),
        MniFault::SoapFault("java.lang.NullPointerException".into()),
        MniFault::NotSuccess("Sistema indisponível.".into()),
        MniFault::Truncated,
        MniFault::Slow(Duration::from_millis(300)),
    ]);
    let ask = || envelope(None, &digits(&n), false, &["1"]);

    let resp = post(&court, SOAP_ACTION, ask()).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.bytes().await.unwrap().is_empty());

    let resp = post(&court, SOAP_ACTION, ask()).await;
    assert_eq!(resp.status(), 500);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("<faultstring>java.lang.NullPointerException</faultstring>"));

    let resp = post(&court, SOAP_ACTION, ask()).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains(
        "<ns2:sucesso>false</ns2:sucesso><ns2:mensagem>Sistema indisponível.</ns2:mensagem>"
    ));
    assert_eq!(court.content_calls(&n, "1"), 0);

    let resp = post(&court, SOAP_ACTION, ask()).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err(), "a truncated body breaks");

    let started = Instant::now();
    let xml = post(&court, SOAP_ACTION, ask()).await.text().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(inline_content(&xml).1, content);

    assert_eq!(court.calls().len(), 5);
    assert_eq!(court.content_calls(&n, "1"), 2);
}

#[tokio::test]
async fn generated_contents_stream_whole() {
    let court = MniCourt::start().await;
    let n = number(8);
    let len = 5 * 1024 * 1024 + 7;
    court.add_process(&n, MniProcess::new(vec![MniDoc::large("big", len, 9)]));
    let expected = pattern_bytes(len, 9);
    assert_eq!(&expected[..3], &[9, 40, 71]);

    let resp = post(
        &court,
        SOAP_ACTION,
        envelope(None, &digits(&n), false, &["big"]),
    )
    .await;
    assert!(resp.headers().get("content-length").is_none());
    let xml = resp.text().await.unwrap();
    let (lines, decoded) = inline_content(&xml);
    assert!(lines[..lines.len() - 1].iter().all(|l| l.len() == 76));
    assert!(decoded == expected, "inline bytes differ");

    court.set_encoding(Encoding::Mtom);
    let resp = post(
        &court,
        SOAP_ACTION,
        envelope(None, &digits(&n), false, &["big"]),
    )
    .await;
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(resp.headers().get("content-length").is_none());
    let body = resp.bytes().await.unwrap();
    let parts = multipart(&body, param(&content_type, "boundary"));
    assert!(parts[1].1 == expected, "attachment bytes differ");
    assert_eq!(court.content_calls(&n, "big"), 2);

    // Announcing the MD5 of a generated document hashes the bytes it would send.
    let mut doc = MniDoc::large("big", 100_000, 3);
    doc.md5 = true;
    court.add_process(&n, MniProcess::new(vec![doc]));
    court.set_encoding(Encoding::Inline);
    let xml = post(&court, SOAP_ACTION, envelope(None, &digits(&n), true, &[]))
        .await
        .text()
        .await
        .unwrap();
    assert!(xml.contains(&format!("hash=\"{}\"", md5_hex(&pattern_bytes(100_000, 3)))));
}

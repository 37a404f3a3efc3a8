//! A real MNI 2.2.2 court (SOAP 1.1 document/literal over HTTP, axum on 127.0.0.1:0): it answers
//! `consultarProcesso` the way PJe and Projudi courts do — the listing of a case file, and the
//! contents of documents either inline in base64 or as MTOM/XOP attachments shaped like Apache
//! CXF's — can be told to fail in the ways real courts fail, and records what it was asked.
//!
//! Written from the published interface and from real captures (public repositories):
//! - danilopbh/soap-api `servico-intercomunicacao-2.2.2.wsdl`: operations, soapAction values,
//!   SOAP 1.1 document/literal binding.
//! - mwfilho/MachineLearningToolkit-TJ2 `attached_assets/intercomunicacao.xml`: a court's WSDL
//!   with the XSD inlined (tipoConsultarProcesso, tipoProcessoJudicial, tipoCabecalhoProcesso,
//!   tipoDocumento: `conteudo` first, `documentoVinculado` last, qualified elements).
//! - mwfilho/MachineLearningToolkit-TJ2 `attached_assets/Pasted-Consulta-soapenv-Envelope-xmlns-soapenv-http-schemas-xmlsoap-org-soap-envelope-xmlns-ser--1742725683783.txt`:
//!   a real request (`ser:`/`tip:` prefixes) and its answer (dadosBasicos, polo, assunto,
//!   orgaoJulgador, numero as 20 digits).
//! - mwfilho/MachineLearningToolkit-TJ2 `attached_assets/Pasted--soap-Envelope-xmlns-soap-http-schemas-xmlsoap-org-soap-envelope-soap-Body-ns4-c-1744381168896.txt`:
//!   nested `documentoVinculado` (with `idDocumentoVinculado`) and the MD5 `hash`.
//! - webmedula/lexflow `tests/fixtures/mni-tjgo-credencial-invalida-real.txt`: a real CXF MTOM
//!   answer (TJGO) with `sucesso=false`, "Usuário ou Senha inválida.", and its prefixes
//!   (`ns2` types, `ns3` case model, `ns4` cda, `ns5` service).
//! - webmedula/lexflow `src/infrastructure/adapters/mni/mtom.ts`: CXF percent-encodes the cid in
//!   `xop:Include href` but not in the part's `Content-ID`.
//!
//! What it answers to `consultarProcesso`, in order of precedence: a queued [`MniFault`]; once
//! users are added, unknown credentials get [`BAD_CREDENTIALS`]; a `numeroProcesso` that is not
//! 20 digits gets `sucesso=false`; then [`PROCESS_NOT_FOUND`], and [`PROCESS_SEALED`] for whoever
//! is not a reader of a sealed process. With `documento` ids, `processo` holds `dadosBasicos` and
//! those documents (found at any depth, listed flat, each with `conteudo`), or
//! [`DOCUMENT_NOT_FOUND`] if any is unknown or sealed from the user; with `incluirDocumentos`,
//! `dadosBasicos` and every visible document with its `documentoVinculado` nested, without
//! `conteudo`; otherwise `dadosBasicos` alone. Any other operation gets a `soap:Fault`.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use md5::{Digest, Md5};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The soapAction of `consultarProcesso` (WSDL binding).
pub const SOAP_ACTION: &str =
    "http://www.cnj.jus.br/servico-intercomunicacao-2.2.2/consultarProcesso";
/// SOAP 1.1 envelope.
pub const NS_SOAP: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// Operation wrappers (note the trailing slash).
pub const NS_SERVICE: &str = "http://www.cnj.jus.br/servico-intercomunicacao-2.2.2/";
/// Operation parameters (`idConsultante`, `sucesso`, `processo`…).
pub const NS_TYPES: &str = "http://www.cnj.jus.br/tipos-servico-intercomunicacao-2.2.2";
/// The case model (`dadosBasicos`, `documento`…).
pub const NS_MODEL: &str = "http://www.cnj.jus.br/intercomunicacao-2.2.2";
const NS_CDA: &str = "http://www.cnj.jus.br/mni/cda";
const NS_XOP: &str = "http://www.w3.org/2004/08/xop/include";

/// The mensagem of a refused login, verbatim from the TJGO capture.
pub const BAD_CREDENTIALS: &str = "Usuário ou Senha inválida.";
pub const PROCESS_NOT_FOUND: &str = "Processo não encontrado.";
pub const PROCESS_SEALED: &str = "Acesso negado: processo em segredo de justiça.";
pub const DOCUMENT_NOT_FOUND: &str = "Documento não encontrado.";

/// CXF's root part id.
const ROOT_CID: &str = "root.message@cxf.apache.org";
/// Raw bytes per base64 chunk: a multiple of 3, so only the last chunk is padded.
const BASE64_RAW_CHUNK: usize = 3 * 16 * 1024;
/// Raw bytes per MTOM attachment chunk.
const RAW_CHUNK: usize = 64 * 1024;
/// What `java.net.URLEncoder` (which CXF uses for the href) leaves alone.
const URL_ENCODER: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'*');

/// How answers carrying contents are sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    /// `conteudo` holds the base64 text (plain `text/xml` answers).
    #[default]
    Inline,
    /// Every answer is `multipart/related` (XOP), contents as binary parts, like CXF courts.
    Mtom,
}

/// How one request misbehaves (queued with [`MniCourt::fail_next`]).
#[derive(Clone, Debug)]
pub enum MniFault {
    /// HTTP 500 with a `soap:Fault` (faultcode `soap:Server`) carrying this faultstring.
    SoapFault(String),
    /// HTTP 200, `sucesso=false` with this mensagem.
    NotSuccess(String),
    /// Waits this long, then answers normally.
    Slow(Duration),
    /// Answers normally but the body breaks in the middle (chunked, connection dropped).
    Truncated,
    /// This bare HTTP status with an empty body.
    Status(u16),
}

/// A request as the court understood it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MniCall {
    /// Local name of the first element in `soap:Body` (empty if there was none).
    pub operation: String,
    /// The `SOAPAction` header, without its quotes.
    pub soap_action: Option<String>,
    /// `idConsultante` / `senhaConsultante` (None when absent or empty).
    pub user: Option<String>,
    pub password: Option<String>,
    /// `numeroProcesso` as sent.
    pub number: Option<String>,
    /// The `documento` ids asked for, in order.
    pub documents: Vec<String>,
    pub include_documents: bool,
    pub include_header: bool,
}

/// A document's bytes.
#[derive(Clone, Debug)]
pub enum Content {
    Bytes(Bytes),
    /// `len` bytes, byte `i` = `(i as u8).wrapping_mul(31).wrapping_add(seed)`, generated as
    /// they are sent: a GiB-sized document costs no memory.
    Pattern {
        len: u64,
        seed: u8,
    },
}

impl Content {
    /// Its length in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Pattern { len, .. } => *len,
        }
    }

    /// `len` bytes from `offset` (within bounds).
    fn chunk(&self, offset: u64, len: usize) -> Bytes {
        match self {
            Content::Bytes(b) => b.slice(offset as usize..offset as usize + len),
            Content::Pattern { seed, .. } => {
                Bytes::from(pattern_range(offset, offset + len as u64, *seed))
            }
        }
    }
}

/// The bytes of `Content::Pattern { len, seed }`, materialized (for small checks).
pub fn pattern_bytes(len: u64, seed: u8) -> Vec<u8> {
    pattern_range(0, len, seed)
}

/// Bytes `from..to` of the pattern, copied from its 256-byte period (a byte-by-byte map is
/// several times slower in the unoptimized test build, which streams GiBs of it).
fn pattern_range(from: u64, to: u64, seed: u8) -> Vec<u8> {
    let period: [u8; 256] = std::array::from_fn(|i| (i as u8).wrapping_mul(31).wrapping_add(seed));
    let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
    let mut i = from;
    while i < to {
        let start = (i % 256) as usize;
        let n = ((to - i).min(256 - start as u64)) as usize;
        out.extend_from_slice(&period[start..start + n]);
        i += n as u64;
    }
    out
}

/// A document (tipoDocumento) of a case file.
#[derive(Clone, Debug)]
pub struct MniDoc {
    pub id: String,
    /// `tipoDocumento` code, e.g. "57".
    pub kind: String,
    /// `descricao`, e.g. "Petição inicial".
    pub description: Option<String>,
    pub mime: Option<String>,
    /// `nivelSigilo`; above 0 only the process's readers see it.
    pub sigilo: u8,
    pub content: Content,
    /// Announce `hash` = MD5 hex of the bytes, as real courts do.
    pub md5: bool,
    /// `documentoVinculado` (attachments of this document), nested in the listing.
    pub children: Vec<MniDoc>,
}

impl MniDoc {
    /// A public PDF of kind 57 with its MD5 announced.
    pub fn new(id: &str, description: &str, bytes: Vec<u8>) -> Self {
        MniDoc {
            id: id.into(),
            kind: "57".into(),
            description: Some(description.into()),
            mime: Some("application/pdf".into()),
            sigilo: 0,
            content: Content::Bytes(Bytes::from(bytes)),
            md5: true,
            children: Vec::new(),
        }
    }

    /// A `documentoVinculado` of this document.
    pub fn child(mut self, c: MniDoc) -> Self {
        self.children.push(c);
        self
    }

    pub fn sealed(mut self, level: u8) -> Self {
        self.sigilo = level;
        self
    }

    /// `len` generated bytes ([`Content::Pattern`]). No MD5 announced: hashing a GiB in a debug
    /// test build takes long (set `md5` to have it; it is computed once, when first listed).
    pub fn large(id: &str, len: u64, seed: u8) -> Self {
        MniDoc {
            content: Content::Pattern { len, seed },
            md5: false,
            ..MniDoc::new(id, &format!("Documento {id}"), Vec::new())
        }
    }
}

/// A case file (tipoProcessoJudicial).
#[derive(Clone, Debug)]
pub struct MniProcess {
    /// `classeProcessual` (a code in real courts; attribute left out when None).
    pub class: Option<String>,
    /// `assunto`: digits go in `codigoNacional`, text in `assuntoLocal/@descricao`.
    pub subject: Option<String>,
    /// `orgaoJulgador/@nomeOrgao`.
    pub court: Option<String>,
    /// `dadosBasicos/@nivelSigilo`.
    pub sigilo: u8,
    /// Users who may see the process when it is sealed, and its sealed documents.
    pub readers: Vec<String>,
    pub documents: Vec<MniDoc>,
}

impl MniProcess {
    pub fn new(documents: Vec<MniDoc>) -> Self {
        MniProcess {
            class: Some("7".into()),
            subject: Some("11806".into()),
            court: Some("Vara Única da Comarca de Teste".into()),
            sigilo: 0,
            readers: Vec::new(),
            documents,
        }
    }

    /// Under secrecy `level`, visible to `readers` only.
    pub fn sealed(mut self, level: u8, readers: &[&str]) -> Self {
        self.sigilo = level;
        self.readers = readers.iter().map(|r| r.to_string()).collect();
        self
    }

    fn can_see(&self, user: Option<&str>) -> bool {
        user.is_some_and(|u| self.readers.iter().any(|r| r == u))
    }
}

struct MniState {
    /// Accepted credentials; empty: public access.
    users: HashMap<String, String>,
    /// By the number's 20 digits.
    processes: HashMap<String, MniProcess>,
    encoding: Encoding,
    base64_line: Option<usize>,
    faults: VecDeque<MniFault>,
    calls: Vec<MniCall>,
    /// Contents answered, per (20 digits, document id).
    served: HashMap<(String, String), usize>,
    /// MD5 hex per (20 digits, document id), computed once.
    md5s: HashMap<(String, String), String>,
    /// Attachment counter, as CXF numbers its content ids.
    cids: u64,
}

type Shared = Arc<Mutex<MniState>>;

/// The court.
#[derive(Clone)]
pub struct MniCourt {
    pub addr: SocketAddr,
    state: Shared,
    /// Served over TLS, demanding a client certificate.
    tls: bool,
}

/// What a TLS court and its clients need: the authority that signed the court's certificate
/// and the client certificates it accepts, and an A1 certificate (PKCS#12) it accepts, like
/// the ones ICP-Brasil authorities issue to lawyers.
pub struct MniTls {
    /// The authority's certificate, PEM: what autos must trust (`ca_file`).
    pub ca_pem: String,
    /// A client certificate the court accepts, as a PKCS#12 file.
    pub client_p12: Vec<u8>,
    /// Its password.
    pub p12_password: String,
    /// A client certificate from another authority, which the court refuses.
    pub stranger_p12: Vec<u8>,
}

/// A certificate authority, a server certificate for `localhost` and a client certificate by
/// it, and a client certificate of another authority.
fn tls_material() -> (MniTls, rustls::ServerConfig) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let authority = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let ca = authority("AC Teste do autos");
    let other = authority("AC Desconhecida");
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let password = "senha-do-certificado";
    let client = |issuer: &CertifiedIssuer<'static, KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "ADVOGADO DE TESTE:12345678900");
        let cert = params.signed_by(&key, issuer).unwrap();
        let chain = p12_keystore::PrivateKeyChain::new(
            "autos",
            p12_keystore::PrivateKey::from_der(&key.serialize_der()).unwrap(),
            [
                p12_keystore::Certificate::from_der(cert.der()).unwrap(),
                p12_keystore::Certificate::from_der(issuer.der()).unwrap(),
            ],
        );
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("autos", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        store.writer(password).write().unwrap()
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server.der().clone(), ca.der().clone()], key)
        .unwrap();
    let tls = MniTls {
        ca_pem: ca.pem(),
        client_p12: client(&ca),
        p12_password: password.to_string(),
        stranger_p12: client(&other),
    };
    (tls, config)
}

impl MniCourt {
    pub async fn start() -> MniCourt {
        let state = Arc::new(Mutex::new(MniState {
            users: HashMap::new(),
            processes: HashMap::new(),
            encoding: Encoding::Inline,
            base64_line: Some(76),
            faults: VecDeque::new(),
            calls: Vec::new(),
            served: HashMap::new(),
            md5s: HashMap::new(),
            cids: 0,
        }));
        let app = Router::new()
            .route("/intercomunicacao", post(answer))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the MNI court");
        let addr = listener.local_addr().expect("MNI court address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MniCourt {
            addr,
            state,
            tls: false,
        }
    }

    /// The same court over HTTPS (`https://localhost:{port}`), accepting only TLS clients
    /// that present a certificate of its authority, as courts that ask for an A1 do.
    pub async fn start_tls() -> (MniCourt, MniTls) {
        let plain = MniCourt::start().await;
        let (tls, config) = tls_material();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the MNI court");
        let addr = listener.local_addr().expect("MNI court address");
        // TLS in front of the plain court, on loopback: each connection's bytes go through.
        let inner = plain.addr;
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(inner).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        });
        let court = MniCourt {
            addr,
            state: plain.state.clone(),
            tls: true,
        };
        (court, tls)
    }

    /// The source URL autos is configured with.
    pub fn url(&self) -> String {
        format!("mni+{}", self.endpoint())
    }

    /// The SOAP endpoint itself.
    pub fn endpoint(&self) -> String {
        if self.tls {
            format!("https://localhost:{}/intercomunicacao", self.addr.port())
        } else {
            format!("http://{}/intercomunicacao", self.addr)
        }
    }

    /// Accepts these credentials. Until a user is added, any (or none) is accepted.
    pub fn add_user(&self, id: &str, password: &str) {
        self.lock().users.insert(id.into(), password.into());
    }

    /// Holds `p` under `number` (CNJ formatted or bare digits; stored by its 20 digits).
    pub fn add_process(&self, number: &str, p: MniProcess) {
        let digits = digits_of(number);
        assert_eq!(digits.len(), 20, "not a CNJ number: {number}");
        let mut s = self.lock();
        s.md5s.retain(|(n, _), _| *n != digits);
        s.processes.insert(digits, p);
    }

    pub fn set_encoding(&self, e: Encoding) {
        self.lock().encoding = e;
    }

    /// Inline base64 in lines of `width` chars joined by "\r\n" (None: one line).
    pub fn set_base64_line(&self, width: Option<usize>) {
        self.lock().base64_line = width.filter(|w| *w > 0);
    }

    /// Faults for the next requests (whatever their operation), one per request, in order.
    pub fn fail_next(&self, faults: Vec<MniFault>) {
        self.lock().faults.extend(faults);
    }

    /// Every request received, in order.
    pub fn calls(&self) -> Vec<MniCall> {
        self.lock().calls.clone()
    }

    /// The operation of every request, in order.
    pub fn operations(&self) -> Vec<String> {
        self.lock()
            .calls
            .iter()
            .map(|c| c.operation.clone())
            .collect()
    }

    /// How many answers carried the content of document `id` of `number` (a truncated answer
    /// counts; failures injected before answering do not).
    pub fn content_calls(&self, number: &str, id: &str) -> usize {
        let key = (digits_of(number), id.to_string());
        self.lock().served.get(&key).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MniState> {
        self.state.lock().unwrap()
    }
}

fn digits_of(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

/// One piece of an answer's XML: text, or a document's bytes (base64 inline, or an attachment).
enum Xml {
    Text(String),
    Content(Content),
}

/// An answer before it is encoded.
struct Answer {
    status: StatusCode,
    xml: Vec<Xml>,
}

impl Answer {
    fn new(status: StatusCode) -> Self {
        Answer {
            status,
            xml: Vec::new(),
        }
    }

    fn text(&mut self) -> &mut String {
        if !matches!(self.xml.last(), Some(Xml::Text(_))) {
            self.xml.push(Xml::Text(String::new()));
        }
        match self.xml.last_mut() {
            Some(Xml::Text(s)) => s,
            _ => unreachable!(),
        }
    }

    fn push(&mut self, s: &str) {
        self.text().push_str(s);
    }

    fn fault(message: &str) -> Self {
        let mut a = Answer::new(StatusCode::INTERNAL_SERVER_ERROR);
        let _ = write!(
            a.text(),
            "<soap:Envelope xmlns:soap=\"{NS_SOAP}\"><soap:Body><soap:Fault>\
             <faultcode>soap:Server</faultcode><faultstring>{}</faultstring>\
             </soap:Fault></soap:Body></soap:Envelope>",
            escape(message)
        );
        a
    }

    /// `consultarProcessoResposta` with `sucesso` and `mensagem`; the caller adds `processo`
    /// and calls [`Answer::close`].
    fn open(success: bool, message: &str) -> Self {
        let mut a = Answer::new(StatusCode::OK);
        let _ = write!(
            a.text(),
            "<soap:Envelope xmlns:soap=\"{NS_SOAP}\"><soap:Body>\
             <ns5:consultarProcessoResposta xmlns:ns2=\"{NS_TYPES}\" xmlns:ns3=\"{NS_MODEL}\" \
             xmlns:ns4=\"{NS_CDA}\" xmlns:ns5=\"{NS_SERVICE}\">\
             <ns2:sucesso>{success}</ns2:sucesso><ns2:mensagem>{}</ns2:mensagem>",
            escape(message)
        );
        a
    }

    fn close(mut self) -> Self {
        self.push("</ns5:consultarProcessoResposta></soap:Body></soap:Envelope>");
        self
    }

    fn refused(message: &str) -> Self {
        Answer::open(false, message).close()
    }
}

async fn answer(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut call = parse_request(&String::from_utf8_lossy(&body));
    call.soap_action = headers
        .get("soapaction")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_string());
    let (fault, encoding, width) = {
        let mut s = state.lock().unwrap();
        s.calls.push(call.clone());
        (s.faults.pop_front(), s.encoding, s.base64_line)
    };
    let mut truncated = false;
    match fault {
        Some(MniFault::Status(code)) => {
            return StatusCode::from_u16(code)
                .expect("an HTTP status")
                .into_response()
        }
        Some(MniFault::SoapFault(message)) => {
            return encode(&state, Answer::fault(&message), encoding, width, false)
        }
        Some(MniFault::NotSuccess(message)) => {
            return encode(&state, Answer::refused(&message), encoding, width, false)
        }
        Some(MniFault::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(MniFault::Truncated) => truncated = true,
        None => {}
    }
    let answer = consult(&state, &call);
    encode(&state, answer, encoding, width, truncated)
}

/// What a court answers to `call`.
fn consult(state: &Shared, call: &MniCall) -> Answer {
    if call.operation != "consultarProcesso" {
        return Answer::fault(&format!(
            "Operação não suportada por este tribunal: {}",
            if call.operation.is_empty() {
                "(nenhuma)"
            } else {
                &call.operation
            }
        ));
    }
    let user = call.user.as_deref();
    let (process, digits) = {
        let s = state.lock().unwrap();
        if !s.users.is_empty() {
            let known = user
                .and_then(|u| s.users.get(u))
                .is_some_and(|p| Some(p.as_str()) == call.password.as_deref());
            if !known {
                return Answer::refused(BAD_CREDENTIALS);
            }
        }
        let sent = call.number.as_deref().unwrap_or_default();
        if sent.len() != 20 || !sent.bytes().all(|b| b.is_ascii_digit()) {
            return Answer::refused(&format!("Número de processo inválido: {sent}."));
        }
        match s.processes.get(sent) {
            Some(p) => (p.clone(), sent.to_string()),
            None => return Answer::refused(PROCESS_NOT_FOUND),
        }
    };
    if process.sigilo > 0 && !process.can_see(user) {
        return Answer::refused(PROCESS_SEALED);
    }
    let can_see = |d: &MniDoc| d.sigilo == 0 || process.can_see(user);

    if !call.documents.is_empty() {
        let mut found = Vec::new();
        for id in &call.documents {
            match find(&process.documents, id, None, &can_see) {
                Some(hit) => found.push(hit),
                None => return Answer::refused(DOCUMENT_NOT_FOUND),
            }
        }
        let mut a = Answer::open(true, "Processo consultado com sucesso");
        a.push("<ns2:processo>");
        basic_data(&mut a, &digits, &process);
        for (doc, parent) in found {
            let hash = hash_of(state, &digits, doc);
            open_doc(&mut a, "documento", doc, parent, hash.as_deref());
            a.push("><ns3:conteudo>");
            a.xml.push(Xml::Content(doc.content.clone()));
            a.push("</ns3:conteudo></ns3:documento>");
            *state
                .lock()
                .unwrap()
                .served
                .entry((digits.clone(), doc.id.clone()))
                .or_default() += 1;
        }
        a.push("</ns2:processo>");
        return a.close();
    }

    let mut a = Answer::open(true, "Processo consultado com sucesso");
    a.push("<ns2:processo>");
    basic_data(&mut a, &digits, &process);
    if call.include_documents {
        for doc in &process.documents {
            list_doc(&mut a, state, &digits, "documento", doc, None, &can_see);
        }
    }
    a.push("</ns2:processo>");
    a.close()
}

/// `id` at any depth, with its parent's id, if it and every ancestor may be seen.
fn find<'a>(
    docs: &'a [MniDoc],
    id: &str,
    parent: Option<&'a str>,
    can_see: &dyn Fn(&MniDoc) -> bool,
) -> Option<(&'a MniDoc, Option<&'a str>)> {
    docs.iter().filter(|d| can_see(d)).find_map(|d| {
        if d.id == id {
            Some((d, parent))
        } else {
            find(&d.children, id, Some(&d.id), can_see)
        }
    })
}

/// `dadosBasicos` with what tipoCabecalhoProcesso requires (polo, assunto, orgaoJulgador).
fn basic_data(a: &mut Answer, digits: &str, p: &MniProcess) {
    let locality = digits[16..].trim_start_matches('0');
    let t = a.text();
    let _ = write!(t, "<ns3:dadosBasicos numero=\"{digits}\"");
    if let Some(class) = &p.class {
        let _ = write!(t, " classeProcessual=\"{}\"", escape(class));
    }
    let _ = write!(
        t,
        " codigoLocalidade=\"{}\" nivelSigilo=\"{}\" dataAjuizamento=\"20240312162616\">",
        if locality.is_empty() { "0" } else { locality },
        p.sigilo
    );
    t.push_str(
        "<ns3:polo polo=\"AT\"><ns3:parte assistenciaJudiciaria=\"false\" intimacaoPendente=\"0\">\
         <ns3:pessoa nome=\"MARIA DE TESTE\" sexo=\"F\" numeroDocumentoPrincipal=\"00000000191\" \
         tipoPessoa=\"fisica\"/></ns3:parte></ns3:polo>\
         <ns3:polo polo=\"PA\"><ns3:parte assistenciaJudiciaria=\"false\" intimacaoPendente=\"0\">\
         <ns3:pessoa nome=\"BANCO DE TESTE S/A\" sexo=\"D\" \
         numeroDocumentoPrincipal=\"00000000000191\" tipoPessoa=\"juridica\"/></ns3:parte>\
         </ns3:polo>",
    );
    match &p.subject {
        Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            let _ = write!(
                t,
                "<ns3:assunto principal=\"true\"><ns3:codigoNacional>{s}</ns3:codigoNacional>\
                 </ns3:assunto>"
            );
        }
        Some(s) => {
            let _ = write!(
                t,
                "<ns3:assunto principal=\"true\"><ns3:assuntoLocal codigoAssunto=\"1\" \
                 codigoPaiNacional=\"0\" descricao=\"{}\"/></ns3:assunto>",
                escape(s)
            );
        }
        None => {}
    }
    t.push_str("<ns3:valorCausa>1000.0</ns3:valorCausa>");
    if let Some(court) = &p.court {
        let _ = write!(
            t,
            "<ns3:orgaoJulgador codigoOrgao=\"63\" nomeOrgao=\"{}\" instancia=\"ORI\" \
             codigoMunicipioIBGE=\"2309458\"/>",
            escape(court)
        );
    }
    t.push_str("</ns3:dadosBasicos>");
}

/// A document of the listing, its visible `documentoVinculado` nested, without `conteudo`.
fn list_doc(
    a: &mut Answer,
    state: &Shared,
    digits: &str,
    tag: &str,
    doc: &MniDoc,
    parent: Option<&str>,
    can_see: &dyn Fn(&MniDoc) -> bool,
) {
    if !can_see(doc) {
        return;
    }
    let hash = hash_of(state, digits, doc);
    open_doc(a, tag, doc, parent, hash.as_deref());
    let children: Vec<&MniDoc> = doc.children.iter().filter(|c| can_see(c)).collect();
    if children.is_empty() {
        a.push("/>");
        return;
    }
    a.push(">");
    for child in children {
        list_doc(
            a,
            state,
            digits,
            "documentoVinculado",
            child,
            Some(&doc.id),
            can_see,
        );
    }
    let _ = write!(a.text(), "</ns3:{tag}>");
}

/// The start tag of a tipoDocumento, left open (no `>`).
fn open_doc(a: &mut Answer, tag: &str, doc: &MniDoc, parent: Option<&str>, hash: Option<&str>) {
    let t = a.text();
    let _ = write!(t, "<ns3:{tag} idDocumento=\"{}\"", escape(&doc.id));
    if let Some(parent) = parent {
        let _ = write!(t, " idDocumentoVinculado=\"{}\"", escape(parent));
    }
    let _ = write!(
        t,
        " tipoDocumento=\"{}\" dataHora=\"20240318115603\"",
        escape(&doc.kind)
    );
    if let Some(mime) = &doc.mime {
        let _ = write!(t, " mimetype=\"{}\"", escape(mime));
    }
    let _ = write!(t, " nivelSigilo=\"{}\"", doc.sigilo);
    if let Some(hash) = hash {
        let _ = write!(t, " hash=\"{hash}\"");
    }
    if let Some(description) = &doc.description {
        let _ = write!(t, " descricao=\"{}\"", escape(description));
    }
}

/// The MD5 hex a court announces for `doc`, if it announces one (computed once per document).
fn hash_of(state: &Shared, digits: &str, doc: &MniDoc) -> Option<String> {
    if !doc.md5 {
        return None;
    }
    let key = (digits.to_string(), doc.id.clone());
    if let Some(hash) = state.lock().unwrap().md5s.get(&key) {
        return Some(hash.clone());
    }
    // Outside the lock: a generated document may be large.
    let mut md5 = Md5::new();
    let size = doc.content.size();
    let mut offset = 0;
    while offset < size {
        let n = (size - offset).min(RAW_CHUNK as u64) as usize;
        md5.update(doc.content.chunk(offset, n));
        offset += n as u64;
    }
    let hash = hex::encode(md5.finalize());
    state.lock().unwrap().md5s.insert(key, hash.clone());
    Some(hash)
}

/// Sends `answer` as `encoding` asks: plain XML with base64 contents, or CXF-style MTOM.
/// Answers with contents (and truncated ones) are streamed, without Content-Length.
fn encode(
    state: &Shared,
    answer: Answer,
    encoding: Encoding,
    width: Option<usize>,
    truncated: bool,
) -> Response {
    let (content_type, pieces) = match encoding {
        Encoding::Inline => {
            let pieces = answer
                .xml
                .into_iter()
                .map(|x| match x {
                    Xml::Text(s) => Piece::Text(Bytes::from(s)),
                    Xml::Content(content) => Piece::Base64 { content, width },
                })
                .collect();
            ("text/xml; charset=UTF-8".to_string(), pieces)
        }
        Encoding::Mtom => {
            let boundary = format!("uuid:{}", uuid::Uuid::new_v4());
            let mut root = format!(
                "--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; \
                 type=\"text/xml\"\r\nContent-Transfer-Encoding: binary\r\n\
                 Content-ID: <{ROOT_CID}>\r\n\r\n"
            );
            let mut attachments = Vec::new();
            for x in answer.xml {
                match x {
                    Xml::Text(s) => root.push_str(&s),
                    Xml::Content(content) => {
                        let cid = next_cid(state);
                        let _ = write!(
                            root,
                            "<xop:Include xmlns:xop=\"{NS_XOP}\" href=\"cid:{}\"/>",
                            utf8_percent_encode(&cid, URL_ENCODER)
                        );
                        attachments.push((cid, content));
                    }
                }
            }
            let mut pieces = vec![Piece::Text(Bytes::from(root))];
            for (cid, content) in attachments {
                pieces.push(Piece::Text(Bytes::from(format!(
                    "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\
                     Content-Transfer-Encoding: binary\r\nContent-ID: <{cid}>\r\n\r\n"
                ))));
                pieces.push(Piece::Raw(content));
            }
            pieces.push(Piece::Text(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
            let content_type = format!(
                "multipart/related; type=\"application/xop+xml\"; boundary=\"{boundary}\"; \
                 start=\"<{ROOT_CID}>\"; start-info=\"text/xml\""
            );
            (content_type, pieces)
        }
    };
    let streamed = truncated || pieces.iter().any(|p| !matches!(p, Piece::Text(_)));
    let body = if streamed {
        let cut = truncated.then(|| (pieces.iter().map(Piece::len).sum::<u64>() / 2).max(1));
        stream(pieces, cut)
    } else {
        let mut all = Vec::new();
        for p in pieces {
            if let Piece::Text(b) = p {
                all.extend_from_slice(&b);
            }
        }
        Body::from(all)
    };
    Response::builder()
        .status(answer.status)
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .expect("an answer")
}

/// A CXF-like attachment id: `{uuid}-{n}@{host of the element's namespace}`.
fn next_cid(state: &Shared) -> String {
    let n = {
        let mut s = state.lock().unwrap();
        s.cids += 1;
        s.cids
    };
    format!("{}-{n}@www.cnj.jus.br", uuid::Uuid::new_v4())
}

/// A stretch of the body on the wire.
enum Piece {
    Text(Bytes),
    /// Base64 of the content, in lines of `width` joined by CRLF.
    Base64 {
        content: Content,
        width: Option<usize>,
    },
    /// The content's bytes as they are.
    Raw(Content),
}

impl Piece {
    /// Bytes on the wire.
    fn len(&self) -> u64 {
        match self {
            Piece::Text(b) => b.len() as u64,
            Piece::Raw(c) => c.size(),
            Piece::Base64 { content, width } => {
                let chars = content.size().div_ceil(3) * 4;
                match width {
                    Some(w) if chars > 0 => chars + 2 * ((chars - 1) / *w as u64),
                    _ => chars,
                }
            }
        }
    }

    /// Its bytes, produced lazily chunk by chunk.
    fn chunks(self) -> Box<dyn Iterator<Item = Bytes> + Send> {
        match self {
            Piece::Text(b) => Box::new(std::iter::once(b)),
            Piece::Raw(content) => {
                let size = content.size();
                Box::new((0..size.div_ceil(RAW_CHUNK as u64)).map(move |i| {
                    let offset = i * RAW_CHUNK as u64;
                    content.chunk(offset, (size - offset).min(RAW_CHUNK as u64) as usize)
                }))
            }
            Piece::Base64 { content, width } => Box::new(Base64Chunks {
                content,
                offset: 0,
                width,
                column: 0,
            }),
        }
    }
}

/// Base64 of a content, 48 KiB of raw bytes at a time, wrapped across chunk borders.
struct Base64Chunks {
    content: Content,
    offset: u64,
    width: Option<usize>,
    /// Characters on the current line so far.
    column: usize,
}

impl Iterator for Base64Chunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        let size = self.content.size();
        if self.offset >= size {
            return None;
        }
        let n = (size - self.offset).min(BASE64_RAW_CHUNK as u64) as usize;
        let raw = self.content.chunk(self.offset, n);
        self.offset += n as u64;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&raw);
        let Some(width) = self.width else {
            return Some(Bytes::from(encoded));
        };
        let mut out = Vec::with_capacity(encoded.len() + 2 * (encoded.len() / width + 1));
        let mut rest = encoded.as_bytes();
        while !rest.is_empty() {
            if self.column == width {
                out.extend_from_slice(b"\r\n");
                self.column = 0;
            }
            let take = (width - self.column).min(rest.len());
            out.extend_from_slice(&rest[..take]);
            self.column += take;
            rest = &rest[take..];
        }
        Some(Bytes::from(out))
    }
}

/// The pieces as a streamed body; with `cut`, the body breaks after that many bytes: the
/// bytes before it are flushed, then the connection is dropped without the last chunk.
fn stream(pieces: Vec<Piece>, cut: Option<u64>) -> Body {
    let chunks = pieces.into_iter().flat_map(Piece::chunks);
    let Some(cut) = cut else {
        return Body::from_stream(futures::stream::iter(chunks.map(Ok::<_, std::io::Error>)));
    };
    Body::from_stream(futures::stream::unfold(
        (chunks, 0u64, false),
        move |(mut chunks, sent, broken)| async move {
            if broken {
                return None;
            }
            if sent >= cut {
                // Lets what was sent reach the client before the connection breaks.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let error = std::io::Error::other("the court cut its answer");
                return Some((Err(error), (chunks, sent, true)));
            }
            let mut chunk = chunks.next()?;
            let room = cut - sent;
            if chunk.len() as u64 > room {
                chunk = chunk.slice(..room as usize);
            }
            let sent = sent + chunk.len() as u64;
            Some((Ok(chunk), (chunks, sent, false)))
        },
    ))
}

/// An element of a request: local name, depth, and its own text.
struct Node {
    name: String,
    depth: usize,
    text: String,
}

/// Reads a request leniently: elements by local name (any prefix), ignoring comments,
/// declarations and whatever surrounds the envelope (e.g. a multipart request).
fn parse_request(xml: &str) -> MniCall {
    let nodes = scan(xml);
    let mut call = MniCall::default();
    let Some(body) = nodes.iter().position(|n| n.name == "Body") else {
        return call;
    };
    let body_depth = nodes[body].depth;
    let Some(op) = nodes.get(body + 1).filter(|n| n.depth > body_depth) else {
        return call;
    };
    call.operation = op.name.clone();
    let children = nodes[body + 2..]
        .iter()
        .take_while(|n| n.depth > op.depth)
        .filter(|n| n.depth == op.depth + 1);
    for n in children {
        let text = n.text.trim();
        let value = (!text.is_empty()).then(|| text.to_string());
        let yes = matches!(text, "true" | "1");
        match n.name.as_str() {
            "idConsultante" => call.user = value,
            "senhaConsultante" => call.password = value,
            "numeroProcesso" => call.number = value,
            "incluirDocumentos" => call.include_documents = yes,
            "incluirCabecalho" => call.include_header = yes,
            "documento" => call.documents.extend(value),
            _ => {}
        }
    }
    call
}

fn scan(xml: &str) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    let mut rest = xml;
    while let Some(lt) = rest.find('<') {
        if let Some(&top) = open.last() {
            nodes[top].text.push_str(&unescape(&rest[..lt]));
        }
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after.find("]]>").unwrap_or(after.len());
            if let Some(&top) = open.last() {
                nodes[top].text.push_str(&after[..end]);
            }
            rest = after.get(end + 3..).unwrap_or("");
            continue;
        }
        let closer = if rest.starts_with("<!--") {
            "-->"
        } else if rest.starts_with("<?") {
            "?>"
        } else if rest.starts_with("<!") {
            ">"
        } else {
            ""
        };
        if !closer.is_empty() {
            rest = rest.find(closer).map_or("", |i| &rest[i + closer.len()..]);
            continue;
        }
        // The tag ends at the first '>' outside quotes.
        let mut quote = None;
        let Some(gt) = rest.char_indices().find_map(|(i, c)| match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                None
            }
            (Some(q), c) if c == q => {
                quote = None;
                None
            }
            (None, '>') => Some(i),
            _ => None,
        }) else {
            break;
        };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if tag.starts_with('/') {
            open.pop();
            continue;
        }
        let name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or_default();
        nodes.push(Node {
            name: name.rsplit(':').next().unwrap_or(name).to_string(),
            depth: open.len(),
            text: String::new(),
        });
        if !tag.ends_with('/') {
            open.push(nodes.len() - 1);
        }
    }
    nodes
}

fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let c = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

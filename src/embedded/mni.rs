//! The sample court over MNI 2.2.2: with the embedded defaults, autos serves the sample cases
//! (`playground/sample-court/`, and the sealed one in `playground/sample-court-sealed/`) from
//! an in-process SOAP endpoint on loopback, so a new user can try the whole flow of a real
//! court: the two-phase `consultarProcesso`, credentials, a sealed case and tenant isolation.
//!
//! It answers `consultarProcesso` only, in the shapes of the published interface
//! (`servico-intercomunicacao-2.2.2.wsdl`, repository `danilopbh/soap-api`; the types of
//! `intercomunicacao-2.2.2` as inlined in `mwfilho/MachineLearningToolkit-TJ2`,
//! `attached_assets/intercomunicacao.xml`), with the prefixes a CXF court uses. Public cases
//! are shown to anyone; sealed ones only to [`SAMPLE_USER`] with [`SAMPLE_PASSWORD`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use serde_json::Value;

/// The sample court user that may see the sealed sample case.
pub const SAMPLE_USER: &str = "demo";
/// Its password.
pub const SAMPLE_PASSWORD: &str = "demo-sigilo";
/// The path of the endpoint.
const PATH: &str = "/intercomunicacao";
/// A request larger than this is not a `consultarProcesso`.
const MAX_REQUEST: usize = 64 * 1024;

/// The running endpoint; it stops with the process.
pub struct EmbeddedMni {
    addr: SocketAddr,
}

struct Court {
    /// Folders of cases and whether they are sealed.
    folders: Vec<(PathBuf, bool)>,
}

impl EmbeddedMni {
    /// Serves the cases of `public` and `sealed` (folders in the sample court's format).
    pub async fn start(public: &Path, sealed: &Path) -> anyhow::Result<Self> {
        let court = Arc::new(Court {
            folders: vec![(public.to_path_buf(), false), (sealed.to_path_buf(), true)],
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the embedded MNI court")?;
        let addr = listener.local_addr()?;
        let app = Router::new().route(PATH, post(answer)).with_state(court);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the embedded MNI court stopped");
            }
        });
        Ok(Self { addr })
    }

    /// Its address as a source URL: `mni+http://127.0.0.1:{port}/intercomunicacao`.
    pub fn url(&self) -> String {
        format!("mni+http://{}{PATH}", self.addr)
    }
}

async fn answer(State(court): State<Arc<Court>>, body: Bytes) -> Response {
    if body.len() > MAX_REQUEST {
        return fault("Requisição grande demais.");
    }
    let request = String::from_utf8_lossy(&body);
    let operation = operation(&request);
    if operation.as_deref() != Some("consultarProcesso") {
        return fault(&format!(
            "Operação não suportada: {}",
            operation.unwrap_or_default()
        ));
    }
    let user = first(&request, "idConsultante");
    let password = first(&request, "senhaConsultante");
    let number: String = first(&request, "numeroProcesso")
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let wanted = all(&request, "documento");
    let known_user = match user.as_deref().filter(|u| !u.is_empty()) {
        None => false,
        Some(u) if u == SAMPLE_USER && password.as_deref() == Some(SAMPLE_PASSWORD) => true,
        Some(_) => return failure("Usuário ou Senha inválida."),
    };
    let court = court.clone();
    let found = tokio::task::spawn_blocking(move || court.case(&number)).await;
    let Ok(Some((folder, case, sealed))) = found else {
        return failure("Processo não encontrado.");
    };
    if sealed && !known_user {
        return failure("Acesso negado: processo em segredo de justiça.");
    }
    let documents = case["documents"].as_array().cloned().unwrap_or_default();
    let mut xml = String::from(OPEN);
    xml.push_str(&header_of(&case, sealed));
    if wanted.is_empty() {
        for doc in &documents {
            xml.push_str(&document(doc, None));
            xml.push_str("</ns3:documento>");
        }
    } else {
        for id in &wanted {
            let Some(doc) = documents.iter().find(|d| d["id"].as_str() == Some(id)) else {
                return failure("Documento não encontrado.");
            };
            let file = folder.join(doc["url"].as_str().unwrap_or_default());
            // Only files inside the case's folder.
            let inside = file
                .canonicalize()
                .ok()
                .zip(folder.canonicalize().ok())
                .is_some_and(|(f, d)| f.starts_with(d));
            let bytes = match tokio::fs::read(&file).await {
                Ok(bytes) if inside => bytes,
                _ => return failure("Documento não encontrado."),
            };
            xml.push_str(&document(doc, Some(&bytes)));
            xml.push_str("</ns3:documento>");
        }
    }
    xml.push_str(CLOSE);
    ok(xml)
}

impl Court {
    /// The case of `digits`: its folder, `process.json`, and whether it is sealed.
    fn case(&self, digits: &str) -> Option<(PathBuf, Value, bool)> {
        for (root, sealed) in &self.folders {
            let Ok(entries) = std::fs::read_dir(root) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let own: String = name.chars().filter(char::is_ascii_digit).collect();
                if own.len() != 20 || own != digits {
                    continue;
                }
                let folder = entry.path();
                let text = std::fs::read_to_string(folder.join("process.json")).ok()?;
                let case: Value = serde_json::from_str(&text).ok()?;
                let sealed = *sealed || case["sigilo"].as_u64().unwrap_or(0) > 0;
                return Some((folder, case, sealed));
            }
        }
        None
    }
}

const OPEN: &str = r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><ns5:consultarProcessoResposta xmlns:ns2="http://www.cnj.jus.br/tipos-servico-intercomunicacao-2.2.2" xmlns:ns3="http://www.cnj.jus.br/intercomunicacao-2.2.2" xmlns:ns5="http://www.cnj.jus.br/servico-intercomunicacao-2.2.2/"><ns2:sucesso>true</ns2:sucesso><ns2:mensagem>Processo consultado com sucesso</ns2:mensagem><ns2:processo>"#;
const CLOSE: &str = "</ns2:processo></ns5:consultarProcessoResposta></soap:Body></soap:Envelope>";

fn header_of(case: &Value, sealed: bool) -> String {
    let text = |field: &str| case[field].as_str().map(escape).unwrap_or_default();
    let digits: String = text("number")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let level = case["sigilo"]
        .as_u64()
        .unwrap_or(if sealed { 3 } else { 0 });
    format!(
        r#"<ns3:dadosBasicos numero="{digits}" classeProcessual="{}" codigoLocalidade="1" nivelSigilo="{level}"><ns3:assunto principal="true"><ns3:assuntoLocal codigoAssunto="0" descricao="{}"/></ns3:assunto><ns3:orgaoJulgador codigoOrgao="1" nomeOrgao="{}" instancia="ORIG"/></ns3:dadosBasicos>"#,
        text("class"),
        text("subject"),
        text("court"),
    )
}

/// A `documento` element, left open (its `conteudo` inside when `bytes` are given).
fn document(doc: &Value, bytes: Option<&[u8]>) -> String {
    let text = |field: &str| doc[field].as_str().map(escape).unwrap_or_default();
    let level = doc["sigilo"].as_u64().unwrap_or(0);
    let hash = doc["sha256"]
        .as_str()
        .map(|h| format!(r#" hash="{}""#, escape(h)))
        .unwrap_or_default();
    let mut xml = format!(
        r#"<ns3:documento idDocumento="{}" tipoDocumento="{}" dataHora="20240101120000" mimetype="{}" nivelSigilo="{level}"{hash} descricao="{}">"#,
        text("id"),
        text("kind"),
        text("mimeType"),
        text("name"),
    );
    if let Some(bytes) = bytes {
        xml.push_str("<ns3:conteudo>");
        xml.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
        xml.push_str("</ns3:conteudo>");
    }
    xml
}

fn ok(xml: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml; charset=UTF-8")], xml).into_response()
}

fn failure(mensagem: &str) -> Response {
    ok(format!(
        "{}<ns2:sucesso>false</ns2:sucesso><ns2:mensagem>{}</ns2:mensagem></ns5:consultarProcessoResposta></soap:Body></soap:Envelope>",
        &OPEN[..OPEN.find("<ns2:sucesso>").unwrap_or(OPEN.len())],
        escape(mensagem)
    ))
}

fn fault(text: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/xml; charset=UTF-8")],
        format!(
            r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault><faultcode>soap:Server</faultcode><faultstring>{}</faultstring></soap:Fault></soap:Body></soap:Envelope>"#,
            escape(text)
        ),
    )
        .into_response()
}

/// The local name of the first element inside the SOAP `Body`.
fn operation(xml: &str) -> Option<String> {
    let body = xml.find(":Body").or_else(|| xml.find("<Body"))?;
    let after = &xml[body..];
    let start = after.find('>')? + 1;
    let rest = after[start..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let name: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '>' && *c != '/')
        .collect();
    Some(name.rsplit(':').next().unwrap_or(&name).to_string())
}

/// The text of every element with local name `name`.
fn all(xml: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let Some(end) = rest.find('>') else { break };
        let tag = &rest[..end];
        let local = tag.split_whitespace().next().unwrap_or_default();
        let local = local.rsplit(':').next().unwrap_or(local);
        if local == name && !tag.starts_with('/') && !tag.ends_with('/') {
            let text = &rest[end + 1..];
            let close = text.find('<').unwrap_or(text.len());
            out.push(unescape(text[..close].trim()));
        }
        rest = &rest[end + 1..];
    }
    out
}

fn first(xml: &str, name: &str) -> Option<String> {
    all(xml, name).into_iter().next()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

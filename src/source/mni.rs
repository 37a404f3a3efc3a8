//! The MNI 2.2.2 source (`mni+https://…`): Brazilian courts' SOAP interface
//! (`servico-intercomunicacao-2.2.2`, CNJ Resolution 185/2013).
//!
//! A case is read in two phases, as courts' own clients do (`trf2-jus-br/balcaovirtual`,
//! `SoapMNI.java`): `consultarProcesso` with `incluirCabecalho` and `incluirDocumentos` lists the
//! case and its documents without contents; then `consultarProcesso` with one `documento` id
//! per call brings that document's `conteudo`, inline base64 or MTOM, decoded as a stream.
//! `consultarProcesso` is the only operation ever called ([`envelope`]).
//!
//! Courts answer failures as `sucesso=false` with a `mensagem` in Portuguese (or as SOAP
//! faults); [`classify`] tells a refused credential, a refused case and an unknown case from
//! the court's other failures by their words.

mod answer;
mod envelope;
mod inline;
mod mtom;
mod pace;
mod xml;

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::Response;
use url::Url;

use super::http::failures::{broken_body, logged, timed_out, transport_error};
use super::validate::{checked, MAX_LISTING_BYTES};
use super::{Credential, DocumentBody, ListedDocument, ProcessListing, SourceConfig, SourceError};
use crate::domain::ProcessNumber;
use envelope::{consultar_processo, Ask, SOAP_ACTION};

/// The phrase of a credential the court refused.
pub(crate) const CREDENTIAL_REFUSED: &str = "the court refused the credential";
/// The phrase of a case (or document) the court would not show this credential.
pub(crate) const CASE_REFUSED: &str = "the court refused access to this case";
/// The phrase of a document the court does not have.
const NO_DOCUMENT: &str = "the court does not have this document";

/// One MNI endpoint, its HTTP clients and its call rate per credential.
pub(super) struct Mni {
    /// The client without a certificate of its own.
    client: reqwest::Client,
    /// A client per client certificate (mutual TLS), by fingerprint.
    with_identity: std::sync::Mutex<std::collections::HashMap<String, reqwest::Client>>,
    roots: Vec<reqwest::Certificate>,
    endpoint: Url,
    request_timeout: Duration,
    pace: pace::Pace,
}

fn builder(request_timeout: Duration, roots: &[reqwest::Certificate]) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("autos/", env!("CARGO_PKG_VERSION")))
        // A SOAP POST is never replayed elsewhere: a redirect is the court's misconfiguration.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(request_timeout)
        .read_timeout(request_timeout)
        .tls_certs_merge(roots.iter().cloned())
}

impl Mni {
    pub(super) fn new(endpoint: Url, cfg: &SourceConfig) -> Result<Self, SourceError> {
        let client = builder(cfg.request_timeout, &cfg.ca_certificates)
            .build()
            .map_err(|e| SourceError::invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            client,
            with_identity: std::sync::Mutex::new(std::collections::HashMap::new()),
            roots: cfg.ca_certificates.clone(),
            endpoint,
            request_timeout: cfg.request_timeout,
            pace: pace::Pace::new(cfg.rate_per_minute),
        })
    }

    /// POSTs one `consultarProcesso` once the credential's turn comes; the answer's headers
    /// within the request timeout.
    async fn call(
        &self,
        envelope: String,
        credential: Option<&Credential>,
        what: &str,
    ) -> Result<Response, SourceError> {
        self.pace
            .turn(credential.map_or("public", |c| c.key.as_str()))
            .await;
        let client = self.client_for(credential)?;
        let request = client
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "text/xml; charset=UTF-8")
            .header("SOAPAction", HeaderValue::from_static(SOAP_ACTION))
            .body(envelope);
        match tokio::time::timeout(self.request_timeout, request.send()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(transport_error(what, &self.endpoint, e)),
            Err(_) => Err(timed_out(what, self.request_timeout)),
        }
    }

    /// The endpoint's address.
    pub(super) fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// The client presenting `credential`'s certificate, if it has one (built once each).
    fn client_for(&self, credential: Option<&Credential>) -> Result<reqwest::Client, SourceError> {
        let Some(certificate) = credential.and_then(|c| c.certificate.as_ref()) else {
            return Ok(self.client.clone());
        };
        let mut clients = self.with_identity.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(certificate.fingerprint()) {
            return Ok(client.clone());
        }
        let identity = certificate.identity().map_err(|e| {
            tracing::warn!(certificate = %certificate.subject(), error = %e, "a client certificate cannot be used");
            SourceError::denied("the client certificate cannot be used for TLS")
        })?;
        let client = builder(self.request_timeout, &self.roots)
            .identity(identity)
            .build()
            .map_err(|e| SourceError::invalid(format!("cannot build the HTTP client: {e}")))?;
        clients.insert(certificate.fingerprint().to_string(), client.clone());
        Ok(client)
    }

    /// Phase one: the case and its documents. `Ok(None)` when the court does not have it.
    pub(super) async fn lookup(
        &self,
        number: &ProcessNumber,
        credential: Option<&Credential>,
    ) -> Result<Option<ProcessListing>, SourceError> {
        let what = format!("process {number}");
        let attempt = async {
            let envelope = consultar_processo(&number.digits(), credential, Ask::Listing);
            let response = self.call(envelope, credential, &what).await?;
            let status = response.status();
            let content_type = content_type(&response);
            let body = body_stream(response, &what);
            let answer = match mtom::boundary(content_type.as_deref()) {
                Some(boundary) => match mtom::read(body, boundary, None).await? {
                    mtom::Parts::Answer(answer) => answer,
                    mtom::Parts::Content(_) => unreachable!("no content is asked for"),
                },
                None => answer::read(&read_capped(body, MAX_LISTING_BYTES).await?),
            };
            match failure(&answer, &what) {
                Some(Failure::NotFound) => return Ok(None),
                Some(Failure::Error(e)) => return Err(e),
                None => {}
            }
            if !status.is_success() {
                return Err(status_only(&what, status, &self.endpoint));
            }
            if !answer.has_process {
                return Err(logged(
                    SourceError::invalid("the court's answer has no process"),
                    &what,
                    "sucesso without a processo element",
                ));
            }
            if answer.numero.as_deref().is_some_and(|n| {
                n.chars().filter(char::is_ascii_digit).collect::<String>() != number.digits()
            }) {
                return Err(SourceError::invalid(format!(
                    "the court answered for another process than {number}"
                )));
            }
            let listing = ProcessListing {
                number: number.as_str().to_string(),
                court: answer.organ,
                class: answer.class,
                subject: answer.subject,
                documents: answer.documents,
                sigilo: answer.sigilo,
            };
            checked(listing, number).map(Some)
        };
        match tokio::time::timeout(self.request_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(&what, self.request_timeout)),
        }
    }

    /// Phase two: one document's content, as a stream.
    pub(super) async fn open(
        &self,
        number: &ProcessNumber,
        doc: &ListedDocument,
        credential: Option<&Credential>,
    ) -> Result<DocumentBody, SourceError> {
        let what = format!("document {:?}", doc.id);
        let envelope = consultar_processo(&number.digits(), credential, Ask::Content(&doc.id));
        let response = self.call(envelope, credential, &what).await?;
        let status = response.status();
        let content_type = content_type(&response);
        let body = body_stream(response, &what);
        let answer = match mtom::boundary(content_type.as_deref()) {
            Some(boundary) => match mtom::read(body, boundary, Some(&doc.id)).await? {
                mtom::Parts::Content(stream) => return Ok(opened(stream, doc)),
                mtom::Parts::Answer(answer) => answer,
            },
            None => match inline::find(body, &doc.id).await? {
                inline::Found::Content(stream) if status.is_success() => {
                    return Ok(opened(stream, doc))
                }
                inline::Found::Content(_) => answer::Answer::default(),
                inline::Found::Answer(bytes) => answer::read(&bytes),
            },
        };
        match failure(&answer, &what) {
            Some(Failure::NotFound) => Err(logged(
                SourceError::permanent(NO_DOCUMENT),
                &what,
                "the court answered that it has no such document",
            )),
            Some(Failure::Error(e)) => Err(e),
            None if !status.is_success() => Err(status_only(&what, status, &self.endpoint)),
            None => Err(logged(
                SourceError::retryable(super::http::failures::BROKE),
                &what,
                "the court's answer has no content for the document",
            )),
        }
    }
}

fn opened(
    stream: futures::stream::BoxStream<'static, Result<bytes::Bytes, SourceError>>,
    doc: &ListedDocument,
) -> DocumentBody {
    DocumentBody {
        content_length: None,
        content_type: doc.mime_type.clone(),
        stream,
    }
}

fn content_type(response: &Response) -> Option<String> {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The answer's body; a break is a retryable failure, logged with how far it got.
fn body_stream(
    response: Response,
    what: &str,
) -> futures::stream::BoxStream<'static, Result<bytes::Bytes, SourceError>> {
    let what = what.to_string();
    let mut received = 0u64;
    response
        .bytes_stream()
        .map(move |item| match item {
            Ok(chunk) => {
                received += chunk.len() as u64;
                Ok(chunk)
            }
            Err(e) => Err(broken_body(&what, received, None, e)),
        })
        .boxed()
}

async fn read_capped(
    mut body: futures::stream::BoxStream<'static, Result<bytes::Bytes, SourceError>>,
    cap: u64,
) -> Result<Vec<u8>, SourceError> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if (out.len() + chunk.len()) as u64 > cap {
            return Err(SourceError::invalid("the source's answer is too large"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A non-2xx answer that said nothing the court's way.
fn status_only(what: &str, status: reqwest::StatusCode, endpoint: &Url) -> SourceError {
    let message = format!("the source answered {}", status.as_u16());
    let error = if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        SourceError::retryable(message)
    } else {
        SourceError::permanent(message)
    };
    logged(
        error,
        what,
        format_args!("{} answered {status}", super::redacted(endpoint)),
    )
}

enum Failure {
    NotFound,
    Error(SourceError),
}

/// What a `sucesso=false` answer or a SOAP fault means.
fn failure(answer: &answer::Answer, what: &str) -> Option<Failure> {
    let said = match (&answer.fault, answer.sucesso) {
        (Some(fault), _) => fault.clone(),
        (None, Some(false)) => answer
            .mensagem
            .clone()
            .unwrap_or_else(|| "sucesso=false, without a message".to_string()),
        _ => return None,
    };
    let failure = match classify(&said) {
        Said::CredentialRefused => Failure::Error(SourceError::denied(CREDENTIAL_REFUSED)),
        Said::CaseRefused => Failure::Error(SourceError::denied(CASE_REFUSED)),
        Said::NotFound => Failure::NotFound,
        Said::Other => Failure::Error(SourceError::Court {
            mensagem: said.clone(),
        }),
    };
    tracing::warn!(what, mensagem = %said, "the court answered a failure");
    Some(failure)
}

/// What the court's words say.
#[derive(Debug, PartialEq)]
enum Said {
    CredentialRefused,
    CaseRefused,
    NotFound,
    Other,
}

/// Reads a court's message (Portuguese, accents and case as they come).
fn classify(message: &str) -> Said {
    let text: String = message
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'á' | 'à' | 'â' | 'ã' => 'a',
            'é' | 'ê' => 'e',
            'í' => 'i',
            'ó' | 'ô' | 'õ' => 'o',
            'ú' | 'ü' => 'u',
            'ç' => 'c',
            c => c,
        })
        .collect();
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    let about_login = has(&["senha", "usuario", "credencia", "login", "consultante"]);
    let refused = has(&[
        "invalid",
        "incorret",
        "nao confere",
        "expirad",
        "bloquead",
        "nao autenticad",
    ]);
    if (about_login && refused) || has(&["falha na autenticacao", "nao autenticado"]) {
        Said::CredentialRefused
    } else if has(&[
        "acesso negado",
        "sem permissao",
        "nao possui permissao",
        "nao autorizad",
        "segredo de justica",
        "sigilo",
        "restrito",
    ]) {
        Said::CaseRefused
    } else if has(&[
        "nao encontrad",
        "nao localizad",
        "inexistente",
        "nao existe",
        "nenhum processo",
    ]) {
        Said::NotFound
    } else {
        Said::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn courts_words_are_told_apart() {
        // The first is the real TJGO answer (`webmedula/lexflow`).
        assert_eq!(
            classify("Usuário ou Senha inválida."),
            Said::CredentialRefused
        );
        assert_eq!(
            classify("Senha incorreta para o consultante"),
            Said::CredentialRefused
        );
        assert_eq!(
            classify("Acesso negado: processo em segredo de justiça."),
            Said::CaseRefused
        );
        assert_eq!(classify("Processo não encontrado."), Said::NotFound);
        assert_eq!(classify("Processo inexistente na base"), Said::NotFound);
        assert_eq!(classify("Erro ao consultar o banco de dados"), Said::Other);
    }
}

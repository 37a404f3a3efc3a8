//! Sources by court: `AUTOS_SOURCES_FILE` sends each CNJ number to the source that serves its
//! court, by the number's `J.TR` segment; `AUTOS_SOURCE_URL` serves every other number.
//!
//! ```toml
//! [[source]]
//! name = "tjsp"
//! courts = ["8.26"]              # J.TR segments, or ["*"]
//! url = "mni+https://esaj.tjsp.jus.br/mniws/servico-intercomunicacao-2.2.2/intercomunicacao"
//! username = "12345678900"        # optional configured credential
//! password = "…"
//! rate_per_minute = 30            # calls per credential (default 30)
//! ```

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Deserialize;

use super::{ClientCertificate, Credential, Source, SourceConfig, SourceError};
use crate::domain::ProcessNumber;

/// The name the default source (`AUTOS_SOURCE_URL`) goes by.
pub const DEFAULT_SOURCE: &str = "default";

/// Calls per minute per credential when a source does not say.
pub const DEFAULT_RATE_PER_MINUTE: u32 = 30;

/// Every source of a deployment, and which numbers each serves. Cheap to clone.
#[derive(Clone)]
pub struct Sources {
    inner: Arc<Routes>,
}

struct Routes {
    routes: Vec<Route>,
    fallback: Route,
}

/// One source and the courts it serves.
pub struct Route {
    name: String,
    courts: Vec<Courts>,
    source: Source,
    /// The credential configured for the source (the TOML's `username`/`password`).
    configured: Option<Credential>,
    /// Set once the court refused `configured`: it is not presented again by this process.
    refused: AtomicBool,
}

impl Route {
    /// `source`, called `name`, for every court, without a configured credential.
    fn every_court(name: &str, source: Source) -> Self {
        Route {
            name: name.to_string(),
            courts: vec![Courts::All],
            source,
            configured: None,
            refused: AtomicBool::new(false),
        }
    }

    /// The source's name, as `Process.source` and credentials name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The source itself.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The credential the deployment configured for this source, if any.
    pub fn configured(&self) -> Option<&Credential> {
        self.configured.as_ref()
    }

    /// The configured credential to present, or the refusal that stands for it: a credential
    /// the court refused is never presented again (courts lock accounts after a few).
    pub fn credential(&self) -> Result<Option<&Credential>, SourceError> {
        if self.refused.load(Ordering::Relaxed) {
            return Err(SourceError::denied(super::mni::CREDENTIAL_REFUSED));
        }
        Ok(self.configured.as_ref())
    }

    /// Takes note of what the court answered when `credential` was presented.
    pub fn noted(&self, credential: Option<&Credential>, err: &SourceError) {
        if !err.refuses_credential() {
            return;
        }
        if let (Some(used), Some(configured)) = (credential, &self.configured) {
            if used == configured && !self.refused.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    source = %self.name,
                    username = %configured.username,
                    "the court refused the source's configured credential; it is not presented \
                     again: replace it in AUTOS_SOURCES_FILE and restart"
                );
            }
        }
    }

    fn serves(&self, number: &ProcessNumber) -> bool {
        self.courts.iter().any(|c| c.matches(number))
    }
}

/// A `courts` entry: `*`, or a `J.TR` pair.
#[derive(Debug, Clone, PartialEq)]
enum Courts {
    All,
    Court { segment: String, court: String },
}

impl Courts {
    fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw == "*" {
            return Ok(Courts::All);
        }
        let (segment, court) = raw.split_once('.').ok_or_else(|| {
            format!("`{raw}` is not a court: expected `J.TR` (e.g. `8.26`) or `*`")
        })?;
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(segment, 1) || !digits(court, 2) {
            return Err(format!(
                "`{raw}` is not a court: expected `J.TR`, one digit, a dot, two digits (e.g. `8.26`)"
            ));
        }
        Ok(Courts::Court {
            segment: segment.to_string(),
            court: court.to_string(),
        })
    }

    fn matches(&self, number: &ProcessNumber) -> bool {
        match self {
            Courts::All => true,
            Courts::Court { segment, court } => {
                number.segment() == segment && number.court() == court
            }
        }
    }
}

/// The file's shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourcesFile {
    #[serde(default)]
    source: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    courts: Vec<String>,
    url: String,
    username: Option<String>,
    password: Option<String>,
    token: Option<String>,
    rate_per_minute: Option<u32>,
    concurrency: Option<u32>,
    /// An A1 certificate (PKCS#12 file) for mutual TLS, and its password.
    certificate: Option<std::path::PathBuf>,
    certificate_password: Option<String>,
    /// PEM file of certificate authorities to trust for this source.
    ca_file: Option<std::path::PathBuf>,
}

impl Sources {
    /// Only the default source, serving every number.
    pub fn single(source: Source) -> Self {
        Self {
            inner: Arc::new(Routes {
                routes: Vec::new(),
                fallback: Route::every_court(DEFAULT_SOURCE, source),
            }),
        }
    }

    /// Every number to `source` (called `name`), e.g. the embedded sample MNI court; `fallback`
    /// stays the `default` source by name.
    pub fn everything_to(name: &str, source: Source, fallback: Source) -> Self {
        Self {
            inner: Arc::new(Routes {
                routes: vec![Route::every_court(name, source)],
                fallback: Route::every_court(DEFAULT_SOURCE, fallback),
            }),
        }
    }

    /// Reads `AUTOS_SOURCES_FILE`: each `[[source]]` is built on `base` (timeouts, address
    /// rules) with its own url, token and limits; `fallback` serves every number no source
    /// claims. Errors name the file, the source and what is wrong, never a secret.
    pub fn from_file(path: &Path, base: &SourceConfig, fallback: Source) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_toml(&text, base, fallback).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// [`Sources::from_file`] on the file's text.
    pub fn from_toml(text: &str, base: &SourceConfig, fallback: Source) -> Result<Self, String> {
        let file: SourcesFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let mut names = HashSet::from([DEFAULT_SOURCE.to_string()]);
        let mut routes = Vec::with_capacity(file.source.len());
        for entry in file.source {
            let name = entry.name.trim().to_string();
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(format!(
                    "source name `{name}` must be 1 to 64 letters, digits, `-` or `_`"
                ));
            }
            if !names.insert(name.clone()) {
                return Err(format!(
                    "source `{name}` is named twice (`{DEFAULT_SOURCE}` is AUTOS_SOURCE_URL's)"
                ));
            }
            if entry.courts.is_empty() {
                return Err(format!("source `{name}`: `courts` is empty"));
            }
            let courts = entry
                .courts
                .iter()
                .map(|c| Courts::parse(c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("source `{name}`: {e}"))?;
            let certificate = match &entry.certificate {
                None => None,
                Some(path) => {
                    let der = std::fs::read(path).map_err(|e| {
                        format!(
                            "source `{name}`: cannot read certificate {}: {e}",
                            path.display()
                        )
                    })?;
                    let password = entry.certificate_password.as_deref().unwrap_or_default();
                    Some(
                        ClientCertificate::from_pkcs12(&der, password)
                            .map_err(|e| format!("source `{name}`: {e}"))?,
                    )
                }
            };
            let configured = match (entry.username, entry.password, certificate) {
                (None, None, None) => None,
                (Some(username), password, certificate) => Some(Credential::configured(
                    &name,
                    username,
                    password,
                    certificate,
                )),
                (None, _, _) => {
                    return Err(format!(
                        "source `{name}`: a `password` or `certificate` needs a `username`"
                    ))
                }
            };
            let ca_certificates = match &entry.ca_file {
                None => Vec::new(),
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| {
                        format!(
                            "source `{name}`: cannot read ca_file {}: {e}",
                            path.display()
                        )
                    })?;
                    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
                        format!(
                            "source `{name}`: ca_file {} is not PEM certificates",
                            path.display()
                        )
                    })?;
                    if certs.is_empty() {
                        return Err(format!(
                            "source `{name}`: ca_file {} holds no certificate",
                            path.display()
                        ));
                    }
                    certs
                }
            };
            let rate = entry.rate_per_minute.unwrap_or(DEFAULT_RATE_PER_MINUTE);
            if rate == 0 {
                return Err(format!(
                    "source `{name}`: `rate_per_minute` must be at least 1"
                ));
            }
            let cfg = SourceConfig {
                url: entry.url,
                token: entry.token.or_else(|| base.token.clone()),
                concurrency: entry.concurrency.unwrap_or(base.concurrency),
                rate_per_minute: rate,
                ca_certificates,
                ..base.clone()
            };
            let source =
                Source::new(cfg).map_err(|e: SourceError| format!("source `{name}`: {e}"))?;
            routes.push(Route {
                name,
                courts,
                source,
                configured,
                refused: AtomicBool::new(false),
            });
        }
        Ok(Self {
            inner: Arc::new(Routes {
                routes,
                fallback: Route::every_court(DEFAULT_SOURCE, fallback),
            }),
        })
    }

    /// The route of `number`: the first source whose courts match, else the default.
    pub fn route(&self, number: &ProcessNumber) -> &Route {
        self.inner
            .routes
            .iter()
            .find(|r| r.serves(number))
            .unwrap_or(&self.inner.fallback)
    }

    /// The source called `name`.
    pub fn named(&self, name: &str) -> Option<&Route> {
        self.routes().find(|r| r.name == name)
    }

    /// Every source, the default last.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.inner
            .routes
            .iter()
            .chain(std::iter::once(&self.inner.fallback))
    }

    /// The sources for logs: names, courts and urls without credentials.
    pub fn describe(&self) -> String {
        self.routes()
            .map(|r| format!("{} → {}", r.name, r.source.describe()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(toml: &str) -> Result<Sources, String> {
        let dir = std::env::temp_dir();
        let url = url::Url::from_directory_path(&dir).unwrap().to_string();
        let fallback = Source::new(SourceConfig::new(url.clone())).unwrap();
        Sources::from_toml(toml, &SourceConfig::new(url), fallback)
    }

    /// A valid number of court `j.tr` (check digits computed).
    fn number(raw: &str) -> ProcessNumber {
        match ProcessNumber::parse(raw) {
            Ok(n) => n,
            Err(crate::domain::cnj::CnjError::WrongCheckDigits { corrected, .. }) => {
                ProcessNumber::parse(&corrected).unwrap()
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn numbers_go_to_the_first_source_of_their_court_else_to_the_default() {
        let s = sources(
            r#"
            [[source]]
            name = "tjsp"
            courts = ["8.26"]
            url = "mni+https://esaj.example/mni"
            username = "user"
            password = "secret"

            [[source]]
            name = "federal"
            courts = ["4.03", "8.26"]
            url = "https://trf3.example/api"

            [[source]]
            name = "labour"
            courts = ["5.02"]
            url = "https://trt2.example/api"
            "#,
        )
        .unwrap();
        // J.TR = 8.26
        assert_eq!(s.route(&number("0000001-00.2024.8.26.0100")).name(), "tjsp");
        assert!(s
            .route(&number("0000001-00.2024.8.26.0100"))
            .configured()
            .is_some());
        assert_eq!(
            s.route(&number("0000001-00.2024.4.03.6100")).name(),
            "federal"
        );
        assert_eq!(
            s.route(&number("0000001-00.2024.5.02.0001")).name(),
            "labour"
        );
        assert_eq!(
            s.route(&number("0000001-00.2024.8.19.0001")).name(),
            "default"
        );
        assert!(s.named("federal").is_some_and(|r| r.configured().is_none()));
        assert!(!s.describe().contains("secret"));
    }

    /// A PKCS#12 file with a self-signed certificate and its key, under `password`.
    fn pkcs12(password: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let chain = p12_keystore::PrivateKeyChain::new(
            "a1",
            p12_keystore::PrivateKey::from_der(&key.serialize_der()).unwrap(),
            [p12_keystore::Certificate::from_der(cert.der()).unwrap()],
        );
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("a1", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        store.writer(password).write().unwrap()
    }

    #[test]
    fn a_configured_certificate_is_opened_at_start_and_its_password_never_shown() {
        let dir = std::env::temp_dir().join(format!("autos-a1-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a1.pfx");
        std::fs::write(&file, pkcs12("cert-pw")).unwrap();
        let toml = |password: &str| {
            format!(
                "[[source]]\nname = \"tjsp\"\ncourts = [\"8.26\"]\nurl = \"mni+https://esaj.example/mni\"\nusername = \"u\"\ncertificate = \"{}\"\ncertificate_password = \"{password}\"\n",
                file.display()
            )
        };
        let s = sources(&toml("cert-pw")).unwrap();
        let route = s.named("tjsp").unwrap();
        let credential = route.configured().unwrap();
        assert!(credential.certificate.is_some());
        assert_eq!(credential.password, None);
        let err = sources(&toml("wrong-pw")).err().unwrap();
        assert!(
            err.contains("source `tjsp`") && err.contains("does not open"),
            "{err}"
        );
        assert!(!err.contains("wrong-pw"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_playground_example_is_valid() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/playground/sources.example.toml"
        );
        let s = sources(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(s.route(&number("0000001-00.2024.8.26.0100")).name(), "tjsp");
        assert_eq!(
            s.route(&number("0000001-00.2024.5.15.0001")).name(),
            "adapter"
        );
    }

    #[test]
    fn mistakes_are_named_without_secrets() {
        let err = |toml: &str| sources(toml).err().unwrap_or_default();
        assert!(
            err("[[source]]\nname = \"x\"\ncourts = [\"826\"]\nurl = \"https://a.example\"")
                .contains("`826` is not a court")
        );
        assert!(err(
            "[[source]]\nname = \"default\"\ncourts = [\"*\"]\nurl = \"https://a.example\""
        )
        .contains("named twice"));
        assert!(
            err("[[source]]\nname = \"x\"\ncourts = [\"*\"]\nurl = \"ftp://a.example\"")
                .contains("source `x`")
        );
        assert!(err("[[source]]\nname = \"x\"\ncourts = [\"*\"]\nurl = \"https://a.example\"\npasword = \"s3cr3t\"")
            .contains("pasword"));
        let e = err("[[source]]\nname = \"x\"\ncourts = []\nurl = \"https://a.example\"\npassword = \"s3cr3t\"");
        assert!(!e.contains("s3cr3t"), "{e}");
        assert!(sources("").is_ok_and(|s| s.routes().count() == 1));
    }
}

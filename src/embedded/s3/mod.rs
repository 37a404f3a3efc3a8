//! An S3-compatible object store served in-process by s3s/s3s-fs over loopback HTTP.
//!
//! Clients use path-style addressing (`http://127.0.0.1:PORT/bucket/key`), so no virtual-host
//! parser is installed: without one, s3s treats every request as path-style.
//!
//! Keys too long for the file names s3s-fs derives from them are stored under a hash of the key
//! (see the private `keys` module), so that the store takes every key S3 does.

mod keys;

use std::fs;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use rand::distr::{Alphanumeric, SampleString as _};
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long in-flight requests may run on after `shutdown` before their connections are dropped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A running S3-compatible server (s3s-fs: one directory per bucket, one file per object, keys
/// of up to 1024 bytes).
///
/// Every request must be signed with SigV4 (header or presigned query) using the configured
/// credentials; unsigned requests get `403 AccessDenied`.
///
/// Dropping the value does not stop the server (it then lives as long as the Tokio runtime);
/// call [`EmbeddedS3::shutdown`] to stop it.
pub struct EmbeddedS3 {
    endpoint: String,
    access_key: String,
    secret_key: String,
    stop: watch::Sender<bool>,
}

impl EmbeddedS3 {
    /// Serves an S3-compatible store over HTTP on `bind` (port 0 = any free port), objects kept
    /// under `data_dir` (created if missing), requests authenticated with SigV4 using the given
    /// credentials (presigned URLs too, with expiry checked).
    pub async fn start(
        data_dir: &Path,
        bind: SocketAddr,
        access_key: &str,
        secret_key: &str,
    ) -> Result<Self> {
        let listener = TcpListener::bind(bind).await;
        let listener = listener.with_context(|| format!("binding the S3 server to {bind}"))?;
        Self::serve(listener, data_dir, access_key, secret_key)
    }

    /// Like [`EmbeddedS3::start`], for the embedded default, on 127.0.0.1: data in `root/data`;
    /// credentials loaded from `root/credentials` (created once with random values, mode 0600)
    /// unless `creds` is `Some((access_key, secret_key))`; the port recorded in `root/port` is
    /// reused when free (so presigned URLs survive a restart), else a free one is picked and
    /// recorded.
    pub async fn start_persistent(root: &Path, creds: Option<(String, String)>) -> Result<Self> {
        fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let (access_key, secret_key) = match creds {
            Some(creds) => creds,
            None => credentials(&root.join("credentials"))?,
        };
        let port_file = root.join("port");
        let recorded = fs::read_to_string(&port_file).map(|s| s.trim().parse());
        let recorded: Option<u16> = recorded.ok().and_then(Result::ok);
        let mut listener = None;
        if let Some(port) = recorded.filter(|port| *port != 0) {
            match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
                Ok(bound) => listener = Some(bound),
                // Presigned URLs handed out before the restart are lost.
                Err(e) => tracing::warn!(port, error = %e, "the recorded S3 port is taken"),
            }
        }
        let listener = match listener {
            Some(listener) => listener,
            None => TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?,
        };
        let port = listener.local_addr()?.port();
        if recorded != Some(port) {
            let written = fs::write(&port_file, format!("{port}\n"));
            written.with_context(|| format!("writing {}", port_file.display()))?;
        }
        Self::serve(listener, &root.join("data"), &access_key, &secret_key)
    }

    fn serve(listener: TcpListener, dir: &Path, access_key: &str, secret: &str) -> Result<Self> {
        let shown = dir.display();
        fs::create_dir_all(dir).with_context(|| format!("creating {shown}"))?;
        let store = s3s_fs::FileSystem::new(dir);
        // s3s_fs::Error implements Debug only.
        let store = store.map_err(|e| anyhow!("opening the S3 store in {shown}: {e:?}"))?;
        // The directory as s3s-fs resolves it.
        let root = fs::canonicalize(dir).with_context(|| format!("resolving {shown}"))?;
        let store = keys::LongKeys::new(store, root);
        let mut builder = S3ServiceBuilder::new(store);
        builder.set_auth(SimpleAuth::from_single(access_key, secret));
        let service = builder.build();

        let mut addr = listener.local_addr()?;
        // A client cannot connect to a wildcard address: advertise loopback instead.
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
            IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
            _ => {}
        }
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(accept_loop(listener, service, stop_rx));
        tracing::info!(%addr, data_dir = %shown, "embedded S3 server listening");
        let endpoint = format!("http://{addr}");
        let (access_key, secret_key) = (access_key.to_owned(), secret.to_owned());
        Ok(Self {
            endpoint,
            access_key,
            secret_key,
            stop,
        })
    }

    /// The base URL clients use with path-style addressing, e.g. `http://127.0.0.1:9000`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The access key id requests must be signed with.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key requests must be signed with.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Stops accepting connections and lets in-flight requests finish (for at most a few
    /// seconds). Returns at once: the port is released shortly after.
    pub fn shutdown(self) {
        self.stop.send_replace(true);
    }
}

/// Leaves out the secret key.
impl std::fmt::Debug for EmbeddedS3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("EmbeddedS3");
        debug
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key);
        debug.finish_non_exhaustive()
    }
}

/// Resolves once shutdown is requested; never if the handle was dropped without a shutdown.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn accept_loop(listener: TcpListener, service: S3Service, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Typically EMFILE: back off rather than spin until descriptors free up.
                tracing::warn!(error = %e, "embedded S3 server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = service.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let builder = Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "embedded S3 server: connection failed");
                    }
                }
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
                }
            }
        });
    }
    tracing::info!("embedded S3 server stopped");
}

/// Reads the `access_key=` and `secret_key=` lines of `path`, first creating it with random
/// values (readable by the owner only) if missing.
fn credentials(path: &Path) -> Result<(String, String)> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => create_credentials(path)?,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let field = |name: &str| {
        let mut lines = text.lines().filter_map(|line| line.split_once('='));
        let value = lines
            .find(|(key, _)| key.trim() == name)
            .map(|(_, v)| v.trim());
        let value = value.filter(|v| !v.is_empty()).map(str::to_owned);
        let path = path.display();
        value.with_context(|| format!("no `{name}=` in {path}; delete it to start afresh"))
    };
    Ok((field("access_key")?, field("secret_key")?))
}

/// Publishes the file with a hard link, which fails rather than replace a file that a
/// concurrently starting process created first: both then use the same credentials.
fn create_credentials(path: &Path) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt as _;

    let mut rng = rand::rng();
    let access_key = Alphanumeric.sample_string(&mut rng, 15).to_uppercase();
    let secret_key = Alphanumeric.sample_string(&mut rng, 40);
    let text = format!("access_key=AUTOS{access_key}\nsecret_key={secret_key}\n");
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true).mode(0o600);
    std::io::Write::write_all(&mut options.open(&tmp)?, text.as_bytes())?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(text),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(fs::read_to_string(path)?),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_s3::presigning::PresigningConfig;
    use aws_sdk_s3::types::{CompletedMultipartUpload as Upload, CompletedPart};
    use aws_sdk_s3::Client;

    const B: &str = "autos";

    fn temp_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("autos-s3-{}", uuid::Uuid::new_v4()))
    }

    async fn start(dir: &Path) -> EmbeddedS3 {
        let any_port = "127.0.0.1:0".parse().unwrap();
        EmbeddedS3::start(dir, any_port, "AK", "SK").await.unwrap()
    }

    fn client(s3: &EmbeddedS3) -> Client {
        let creds = Credentials::new(s3.access_key(), s3.secret_key(), None, None, "test");
        let conf = aws_sdk_s3::Config::builder().behavior_version(BehaviorVersion::latest());
        let conf = conf.endpoint_url(s3.endpoint()).force_path_style(true);
        let conf = conf.region(Region::new("us-east-1"));
        Client::from_conf(conf.credentials_provider(creds).build())
    }

    async fn sha256_of(c: &Client, key: &str) -> Option<String> {
        let head = c.head_object().bucket(B).key(key).send().await;
        head.unwrap().metadata()?.get("sha256").cloned()
    }

    fn presigning(secs: u64) -> PresigningConfig {
        PresigningConfig::expires_in(Duration::from_secs(secs)).unwrap()
    }

    #[tokio::test]
    async fn refuses_unsigned_requests() {
        let dir = temp_dir();
        let s3 = start(&dir).await;
        assert!(s3.endpoint().starts_with("http://127.0.0.1:"));
        let http = reqwest::Client::new();
        let list = http.get(format!("{}/", s3.endpoint())).send().await;
        assert_eq!(list.unwrap().status(), 403);
        let create = http.put(format!("{}/{B}", s3.endpoint())).send().await;
        assert_eq!(create.unwrap().status(), 403);
        s3.shutdown();
        let _ = fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn serves_what_autos_uses() {
        let dir = temp_dir();
        let s3 = start(&dir).await;
        let c = client(&s3);
        c.create_bucket().bucket(B).send().await.unwrap();

        let body = b"%PDF-1.4 hello".to_vec();
        let put = c
            .put_object()
            .bucket(B)
            .key("doc")
            .metadata("sha256", "abc");
        put.body(body.clone().into()).send().await.unwrap();
        assert_eq!(sha256_of(&c, "doc").await.as_deref(), Some("abc"));

        let copy = c
            .copy_object()
            .bucket(B)
            .key("copy")
            .copy_source("autos/doc");
        copy.send().await.unwrap();
        assert_eq!(sha256_of(&c, "copy").await.as_deref(), Some("abc"));

        // A non-ASCII name travels in the RFC 6266 `filename*` form, with an ASCII fallback.
        let disposition =
            "attachment; filename=\"Peticao.pdf\"; filename*=UTF-8''Peti%C3%A7%C3%A3o.pdf";
        let get = c.get_object().bucket(B).key("doc");
        let get = get.response_content_disposition(disposition);
        let url = get.presigned(presigning(60)).await.unwrap();
        let resp = reqwest::get(url.uri()).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-disposition"], disposition);
        assert_eq!(resp.bytes().await.unwrap(), body);

        let get = c.get_object().bucket(B).key("doc");
        let expiring = get.presigned(presigning(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(reqwest::get(expiring.uri()).await.unwrap().status(), 403);

        let create = c.create_multipart_upload().bucket(B).key("big");
        let upload = create.metadata("sha256", "def").send().await.unwrap();
        let id = upload.upload_id().unwrap();
        let bodies = [vec![b'a'; 5 * 1024 * 1024], b"tail".to_vec()];
        let mut parts = Vec::new();
        for (n, data) in (1..).zip(&bodies) {
            let part = c.upload_part().bucket(B).key("big").upload_id(id);
            let out = part.part_number(n).body(data.clone().into()).send().await;
            let e_tag = out.unwrap().e_tag().unwrap().to_owned();
            parts.push(CompletedPart::builder().part_number(n).e_tag(e_tag).build());
        }
        let done = Upload::builder().set_parts(Some(parts)).build();
        let complete = c.complete_multipart_upload().bucket(B).key("big");
        complete
            .upload_id(id)
            .multipart_upload(done)
            .send()
            .await
            .unwrap();
        assert_eq!(sha256_of(&c, "big").await.as_deref(), Some("def"));
        let got = c.get_object().bucket(B).key("big").send().await.unwrap();
        let got = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(got, bodies.concat());

        s3.shutdown();
        let _ = fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn persistent_store_keeps_port_and_credentials() {
        let root = temp_dir();
        let first = EmbeddedS3::start_persistent(&root, None).await.unwrap();
        let endpoint = first.endpoint().to_owned();
        let access_key = first.access_key().to_owned();
        assert_eq!(first.secret_key().len(), 40);
        client(&first)
            .create_bucket()
            .bucket(B)
            .send()
            .await
            .unwrap();
        first.shutdown();

        // The listener is released asynchronously after `shutdown`.
        let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
        for _ in 0..50 {
            if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let second = EmbeddedS3::start_persistent(&root, None).await.unwrap();
        assert_eq!(second.endpoint(), endpoint);
        assert_eq!(second.access_key(), access_key);
        client(&second)
            .head_bucket()
            .bucket(B)
            .send()
            .await
            .unwrap();
        second.shutdown();
        let _ = fs::remove_dir_all(root);
    }

    /// A key of exactly 600 bytes with accents and spaces, as autos builds for a document with a
    /// long source id and name.
    fn long_key(number: &str) -> String {
        let source = "fonte ação ".repeat(19);
        let mut key = format!("processos/{number}/documentos/{source}/");
        let name = "Petição inicial ";
        while key.len() + name.len() <= 596 {
            key.push_str(name);
        }
        while key.len() < 596 {
            key.push('x');
        }
        key.push_str(".pdf");
        assert_eq!(key.len(), 600);
        key
    }

    /// `x-amz-copy-source` for `key` in `B`, encoded as autos' storage does.
    fn copy_source(key: &str) -> String {
        format!("{B}/{}", crate::storage::encode_key(key))
    }

    fn hashed_path(dir: &Path, key: &str) -> std::path::PathBuf {
        use sha2::Digest as _;
        let hash = hex::encode(sha2::Sha256::digest(key));
        dir.join(B).join(".long").join(hash)
    }

    async fn put(c: &Client, key: &str, body: &[u8], sha256: &str) {
        let put = c
            .put_object()
            .bucket(B)
            .key(key)
            .content_type("application/pdf");
        let put = put.metadata("sha256", sha256).body(body.to_vec().into());
        put.send().await.unwrap();
    }

    async fn get(c: &Client, key: &str) -> Vec<u8> {
        let got = c.get_object().bucket(B).key(key).send().await.unwrap();
        got.body.collect().await.unwrap().into_bytes().to_vec()
    }

    async fn list(c: &Client, prefix: &str) -> Vec<String> {
        let listed = c.list_objects_v2().bucket(B).prefix(prefix).send().await;
        let listed = listed.unwrap();
        let keys = listed.contents().iter().filter_map(|o| o.key());
        keys.map(str::to_owned).collect()
    }

    /// Uploads `bodies` as the parts of `key`; returns the key CompleteMultipartUpload answers.
    async fn multipart(c: &Client, key: &str, bodies: &[Vec<u8>]) -> Option<String> {
        let create = c.create_multipart_upload().bucket(B).key(key);
        let upload = create.content_type("application/pdf").send().await.unwrap();
        assert_eq!(upload.key(), Some(key));
        let id = upload.upload_id().unwrap();
        let mut parts = Vec::new();
        for (n, data) in (1..).zip(bodies) {
            let part = c.upload_part().bucket(B).key(key).upload_id(id);
            let out = part.part_number(n).body(data.clone().into()).send().await;
            let e_tag = out.unwrap().e_tag().unwrap().to_owned();
            parts.push(CompletedPart::builder().part_number(n).e_tag(e_tag).build());
        }
        let done = Upload::builder().set_parts(Some(parts)).build();
        let complete = c
            .complete_multipart_upload()
            .bucket(B)
            .key(key)
            .upload_id(id);
        let completed = complete.multipart_upload(done).send().await.unwrap();
        completed.key().map(str::to_owned)
    }

    #[tokio::test]
    async fn serves_long_keys() {
        let dir = temp_dir();
        let s3 = start(&dir).await;
        let c = client(&s3);
        c.create_bucket().bucket(B).send().await.unwrap();
        let key = long_key("0001234-56.2024.8.26.0100");
        let other = long_key("0009999-00.2024.8.26.0100");
        let body = b"%PDF-1.4 long".to_vec();
        put(&c, &key, &body, "abc").await;
        put(&c, &other, b"other", "def").await;

        let only_sha256 = std::collections::HashMap::from([("sha256".into(), "abc".into())]);
        let got = c.get_object().bucket(B).key(&key).send().await.unwrap();
        assert_eq!(got.content_type(), Some("application/pdf"));
        assert_eq!(got.metadata(), Some(&only_sha256));
        assert_eq!(got.body.collect().await.unwrap().into_bytes(), body);
        let head = c.head_object().bucket(B).key(&key).send().await.unwrap();
        assert_eq!(head.content_length(), Some(body.len() as i64));
        assert_eq!(head.content_type(), Some("application/pdf"));
        assert_eq!(head.metadata(), Some(&only_sha256));

        // Stored under the hash of the key, the key beside it.
        let hashed = hashed_path(&dir, &key);
        assert_eq!(fs::read(&hashed).unwrap(), body);
        let index = fs::read_to_string(hashed.with_extension("key")).unwrap();
        assert_eq!(index, key);
        assert!(!dir.join(B).join("processos").exists());

        // The signature covers the key the client signed, not the storage key.
        let disposition =
            "attachment; filename=\"Peticao.pdf\"; filename*=UTF-8''Peti%C3%A7%C3%A3o.pdf";
        let get = c.get_object().bucket(B).key(&key);
        let get = get.response_content_disposition(disposition);
        let url = get.presigned(presigning(60)).await.unwrap();
        let resp = reqwest::get(url.uri()).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-disposition"], disposition);
        assert_eq!(resp.bytes().await.unwrap(), body);
        let forged = url.uri().replace("0001234-56", "0009999-00");
        assert_eq!(reqwest::get(forged).await.unwrap().status(), 403);

        // Listings show the keys, filtered on them.
        assert_eq!(list(&c, "").await, [key.clone(), other.clone()]);
        assert_eq!(
            list(&c, "processos/0001234-56.2024.8.26.0100/").await,
            [key.as_str()]
        );
        assert_eq!(list(&c, &key[..590]).await, [key.as_str()]);
        assert_eq!(list(&c, &key).await, [key.as_str()]);
        assert!(list(&c, &format!("{key}x")).await.is_empty());
        let grouped = c
            .list_objects_v2()
            .bucket(B)
            .prefix("processos/")
            .delimiter("/");
        let grouped = grouped.send().await.unwrap();
        let prefixes: Vec<_> = grouped
            .common_prefixes()
            .iter()
            .map(|p| p.prefix())
            .collect();
        let expected = [
            "processos/0001234-56.2024.8.26.0100/",
            "processos/0009999-00.2024.8.26.0100/",
        ];
        assert_eq!(prefixes, expected.map(Some));
        assert!(grouped.contents().is_empty());
        let first = c
            .list_objects_v2()
            .bucket(B)
            .max_keys(1)
            .send()
            .await
            .unwrap();
        assert_eq!(first.contents()[0].key(), Some(key.as_str()));
        assert_eq!(first.is_truncated(), Some(true));
        let token = first.next_continuation_token().unwrap();
        let next = c.list_objects_v2().bucket(B).continuation_token(token);
        let next = next.send().await.unwrap();
        assert_eq!(next.contents()[0].key(), Some(other.as_str()));
        assert_eq!(next.is_truncated(), Some(false));
        let v1 = c
            .list_objects()
            .bucket(B)
            .prefix("processos/0009")
            .send()
            .await
            .unwrap();
        assert_eq!(v1.contents()[0].key(), Some(other.as_str()));

        c.delete_object().bucket(B).key(&key).send().await.unwrap();
        assert!(c.head_object().bucket(B).key(&key).send().await.is_err());
        assert!(!hashed.exists());
        assert_eq!(list(&c, "").await, [other.as_str()]);

        s3.shutdown();
        let _ = fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn multipart_uploads_and_copies_long_keys() {
        let dir = temp_dir();
        let s3 = start(&dir).await;
        let c = client(&s3);
        c.create_bucket().bucket(B).send().await.unwrap();
        let key = long_key("0001234-56.2024.8.26.0100");

        let bodies = [vec![b'a'; 5 * 1024 * 1024], b"tail".to_vec()];
        assert_eq!(multipart(&c, &key, &bodies).await, Some(key.clone()));
        // As autos sets the checksum once the upload is complete.
        let copy = c
            .copy_object()
            .bucket(B)
            .key(&key)
            .copy_source(copy_source(&key));
        let copy = copy.metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace);
        let copy = copy
            .content_type("application/pdf")
            .metadata("sha256", "def");
        copy.send().await.unwrap();
        let head = c.head_object().bucket(B).key(&key).send().await.unwrap();
        assert_eq!(head.content_type(), Some("application/pdf"));
        assert_eq!(sha256_of(&c, &key).await.as_deref(), Some("def"));
        assert_eq!(get(&c, &key).await, bodies.concat());
        assert_eq!(list(&c, "processos/").await, [key.as_str()]);

        // Copies from and to long keys, metadata copied.
        let copied = long_key("0009999-00.2024.8.26.0100");
        let copy = c
            .copy_object()
            .bucket(B)
            .key(&copied)
            .copy_source(copy_source(&key));
        copy.send().await.unwrap();
        assert_eq!(sha256_of(&c, &copied).await.as_deref(), Some("def"));
        assert_eq!(get(&c, &copied).await, bodies.concat());
        let copy = c
            .copy_object()
            .bucket(B)
            .key("short")
            .copy_source(copy_source(&key));
        copy.send().await.unwrap();
        assert_eq!(sha256_of(&c, "short").await.as_deref(), Some("def"));

        // An aborted upload leaves nothing behind.
        let aborted = long_key("0005555-00.2024.8.26.0100");
        let create = c.create_multipart_upload().bucket(B).key(&aborted);
        let upload = create.send().await.unwrap();
        let id = upload.upload_id().unwrap();
        let part = c
            .upload_part()
            .bucket(B)
            .key(&aborted)
            .upload_id(id)
            .part_number(1);
        part.body(b"part".to_vec().into()).send().await.unwrap();
        let abort = c
            .abort_multipart_upload()
            .bucket(B)
            .key(&aborted)
            .upload_id(id);
        abort.send().await.unwrap();
        let leftovers = fs::read_dir(&dir).unwrap().filter_map(Result::ok);
        let leftovers: Vec<_> = leftovers
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(&id.to_string()))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert!(c
            .head_object()
            .bucket(B)
            .key(&aborted)
            .send()
            .await
            .is_err());
        assert_eq!(
            list(&c, "processos/").await,
            [key.as_str(), copied.as_str()]
        );

        s3.shutdown();
        let _ = fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn short_keys_keep_their_layout() {
        use base64::engine::{general_purpose::URL_SAFE_NO_PAD, Engine as _};

        let dir = temp_dir();
        let s3 = start(&dir).await;
        let c = client(&s3);
        c.create_bucket().bucket(B).send().await.unwrap();
        // The longest key whose multipart side files fit s3s-fs's file names for bucket `autos`.
        let longest = format!("processos/1/documentos/{}x", "ç".repeat(53));
        assert_eq!(longest.len(), 130);
        put(&c, "doc", b"short", "abc").await;
        let bodies = [vec![b'b'; 5 * 1024 * 1024], b"end".to_vec()];
        assert_eq!(
            multipart(&c, &longest, &bodies).await,
            Some(longest.clone())
        );

        for (key, body) in [("doc", b"short".to_vec()), (&longest, bodies.concat())] {
            assert_eq!(fs::read(dir.join(B).join(key)).unwrap(), body);
            let (bucket, object) = (URL_SAFE_NO_PAD.encode(B), URL_SAFE_NO_PAD.encode(key));
            let side = dir.join(format!(".bucket-{bucket}.object-{object}.metadata.json"));
            assert!(side.is_file(), "{}", side.display());
            assert_eq!(get(&c, key).await, body);
        }
        assert!(!dir.join(B).join(".long").exists());
        assert_eq!(list(&c, "").await, ["doc", longest.as_str()]);

        // One byte more is stored under its hash.
        let hashed = format!("{longest}x");
        put(&c, &hashed, b"hashed", "abc").await;
        assert!(hashed_path(&dir, &hashed).is_file());
        assert_eq!(
            list(&c, "processos/").await,
            [longest.as_str(), hashed.as_str()]
        );

        s3.shutdown();
        let _ = fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn reads_then_moves_keys_an_older_store_kept_under_themselves() {
        let dir = temp_dir();
        let s3 = start(&dir).await;
        let c = client(&s3);
        c.create_bucket().bucket(B).send().await.unwrap();
        // Short enough for s3s-fs's PutObject (163 bytes), too long for its multipart uploads.
        let key = format!("processos/1/documentos/d1/{}.pdf", "n".repeat(120));
        assert_eq!(key.len(), 150);
        let old = dir.join(B).join(&key);
        fs::create_dir_all(old.parent().unwrap()).unwrap();
        fs::write(&old, b"old").unwrap();

        assert_eq!(get(&c, &key).await, b"old");
        assert_eq!(list(&c, "processos/").await, [key.as_str()]);
        put(&c, &key, b"new", "abc").await;
        assert!(!old.exists());
        assert!(hashed_path(&dir, &key).is_file());
        assert_eq!(get(&c, &key).await, b"new");
        assert_eq!(list(&c, "processos/").await, [key.as_str()]);

        s3.shutdown();
        let _ = fs::remove_dir_all(dir);
    }
}

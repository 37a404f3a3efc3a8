//! S3: streaming uploads and presigned download URLs.
//!
//! One code path for real S3 and the embedded store: aws-sdk-s3 with a configurable endpoint
//! and path-style addressing. Bodies stream through a buffer of one part: a document smaller
//! than a part is sent with one `PutObject`, a larger one as a multipart upload, so memory stays
//! the same whatever the document's size.

use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Object metadata key holding the document's SHA-256 (`x-amz-meta-sha256`).
pub const SHA256_METADATA: &str = "sha256";

/// Size of one multipart part, and the threshold above which uploads are multipart.
/// S3 needs at least 5 MiB per part (but the last).
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;

/// Where and how to reach the bucket.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Endpoint URL; `None` for AWS itself.
    pub endpoint: Option<String>,
    /// Bucket name.
    pub bucket: String,
    /// Region.
    pub region: String,
    /// Static credentials; `None` for the AWS SDK's default chain.
    pub credentials: Option<(String, String)>,
    /// Multipart part size (and single-upload threshold).
    pub part_size: usize,
}

/// The bucket, through aws-sdk-s3.
#[derive(Clone)]
pub struct Storage {
    client: aws_sdk_s3::Client,
    bucket: String,
    part_size: usize,
}

/// What an upload stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Object key.
    pub key: String,
    /// Bytes stored.
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes stored.
    pub sha256: String,
}

/// A presigned GET URL and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedUrl {
    /// The URL.
    pub url: String,
    /// Its expiry.
    pub expires_at: DateTime<Utc>,
}

/// Why an upload did not complete. Nothing is left behind in either case.
#[derive(Debug, thiserror::Error)]
pub enum UploadError<E> {
    /// The body stream failed (source error, length or checksum mismatch).
    #[error("{0}")]
    Body(E),
    /// S3 refused or failed.
    #[error("storage: {0}")]
    Storage(String),
}

/// Told when a multipart upload starts, so that one left behind by a process that dies
/// mid-transfer can be found and aborted later (see [`Storage::abort_upload`]).
#[async_trait::async_trait]
pub trait UploadJournal: Send + Sync {
    /// A multipart upload of `key` started as `upload_id`; called before its first part goes
    /// up. An error aborts the upload and fails it.
    async fn started(&self, key: &str, upload_id: &str) -> Result<(), String>;
}

/// How to upload a body, besides its key and type.
#[derive(Default, Clone, Copy)]
pub struct UploadOptions<'a> {
    /// The body's size, when known beforehand (the buffer is sized to it).
    pub size_hint: Option<u64>,
    /// The SHA-256 the source announced, if any.
    pub announced_sha256: Option<&'a str>,
    /// Where multipart uploads are recorded while they run.
    pub journal: Option<&'a dyn UploadJournal>,
}

/// A storage failure outside uploads.
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(pub String);

fn describe<E: std::error::Error>(err: E) -> String {
    // aws-sdk errors print "service error" at the top; the source chain says what happened.
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}

impl Storage {
    /// Builds the client. Credentials come from the config or the AWS SDK's default chain.
    pub async fn connect(config: &StorageConfig) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(config.region.clone()));
        if let Some((key, secret)) = &config.credentials {
            loader =
                loader.credentials_provider(Credentials::new(key, secret, None, None, "autos"));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            // Checksums in trailers (aws-chunked) are not spoken by every S3-compatible server;
            // autos verifies SHA-256 itself and stores it in metadata.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint.trim_end_matches('/'));
        }
        Storage {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            part_size: config.part_size.max(5 * 1024 * 1024),
        }
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The underlying client (for tests and tools).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// Creates the bucket unless it exists.
    pub async fn ensure_bucket(&self) -> Result<(), StorageError> {
        if self.ping().await {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => {
                let owned = err
                    .as_service_error()
                    .map(|e| e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists())
                    .unwrap_or(false);
                if owned {
                    Ok(())
                } else {
                    Err(StorageError(format!(
                        "cannot create bucket {}: {}",
                        self.bucket,
                        describe(err)
                    )))
                }
            }
        }
    }

    /// Whether the bucket answers.
    pub async fn ping(&self) -> bool {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
    }

    /// Streams `body` into `key`, storing the SHA-256 that `sha256` gives once the body has
    /// ended (the body's verifier computed it on the way) in the object's metadata.
    ///
    /// An error from the stream aborts the upload: a body that fails its length or checksum
    /// check never becomes an object. A single-request upload is signed with that same
    /// SHA-256 as its payload hash, so the bytes are hashed once, not twice. A body larger
    /// than a part goes up in parts; its SHA-256 is set when the upload starts if the
    /// source announced it (`announced_sha256`: the verifier fails the body, and so the
    /// upload, should it differ), or else by copying the object onto itself at the end. A
    /// multipart upload is told to `options.journal` before its first part goes up.
    pub async fn put_stream<S, E>(
        &self,
        key: &str,
        content_type: &str,
        options: UploadOptions<'_>,
        body: S,
        sha256: impl FnOnce() -> Option<String>,
    ) -> Result<StoredObject, UploadError<E>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let UploadOptions {
            size_hint,
            announced_sha256,
            journal,
        } = options;
        let mut body = body;
        let mut size = 0u64;
        // A small document should not cost a part-sized allocation.
        let capacity = size_hint.map_or(256 * 1024, |hint| hint as usize);
        // Room for a part and the chunk that shows there is more than a part.
        let mut buffer = BytesMut::with_capacity(capacity.min(self.part_size + 64 * 1024));
        let mut multipart: Option<Multipart> = None;
        let announced = announced_sha256
            .map(str::to_ascii_lowercase)
            .filter(|sha| sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()));

        let result = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(UploadError::Body)?;
                size += chunk.len() as u64;
                buffer.extend_from_slice(&chunk);
                // A part goes up once more than a part is buffered: a body of exactly one
                // part is still a single PutObject.
                while buffer.len() > self.part_size {
                    let part = buffer.split_to(self.part_size).freeze();
                    if multipart.is_none() {
                        let upload = multipart.insert(
                            self.start_multipart(key, content_type, announced.as_deref())
                                .await?,
                        );
                        if let Some(journal) = journal {
                            journal.started(key, &upload.id).await.map_err(|e| {
                                UploadError::Storage(format!("cannot record the upload: {e}"))
                            })?;
                        }
                    }
                    if let Some(upload) = multipart.as_mut() {
                        self.upload_part(key, upload, part).await?;
                    }
                }
            }
            let sha256 = sha256().ok_or_else(|| {
                UploadError::Storage("the body ended without a verified SHA-256".into())
            })?;
            match multipart.as_mut() {
                None => {
                    self.client
                        .put_object()
                        .bucket(&self.bucket)
                        .key(key)
                        .content_type(content_type)
                        .content_length(buffer.len() as i64)
                        .metadata(SHA256_METADATA, &sha256)
                        .body(ByteStream::from(buffer.split().freeze()))
                        .customize()
                        .interceptor(PrecomputedPayloadHash(sha256.clone()))
                        .send()
                        .await
                        .map_err(|e| UploadError::Storage(describe(e)))?;
                }
                Some(upload) => {
                    if !buffer.is_empty() {
                        let last = buffer.split().freeze();
                        self.upload_part(key, upload, last).await?;
                    }
                    self.complete_multipart(key, upload).await?;
                    if announced.as_deref() == Some(sha256.as_str()) {
                        // Set when the upload started.
                        return Ok(StoredObject {
                            key: key.to_string(),
                            size,
                            sha256,
                        });
                    }
                    // The checksum is known only now: set it by copying the object onto itself.
                    self.client
                        .copy_object()
                        .bucket(&self.bucket)
                        .key(key)
                        .copy_source(format!("{}/{}", self.bucket, encode_key(key)))
                        .metadata_directive(MetadataDirective::Replace)
                        .content_type(content_type)
                        .metadata(SHA256_METADATA, &sha256)
                        .send()
                        .await
                        .map_err(|e| UploadError::Storage(describe(e)))?;
                }
            }
            Ok(StoredObject {
                key: key.to_string(),
                size,
                sha256,
            })
        }
        .await;

        if result.is_err() {
            if let Some(upload) = multipart.as_mut() {
                if !upload.completed {
                    self.abort_multipart(upload, key).await;
                }
            }
        }
        result
    }

    async fn start_multipart<E>(
        &self,
        key: &str,
        content_type: &str,
        sha256: Option<&str>,
    ) -> Result<Multipart, UploadError<E>> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .set_metadata(sha256.map(|sha| [(SHA256_METADATA.to_string(), sha.to_string())].into()))
            .send()
            .await
            .map_err(|e| UploadError::Storage(describe(e)))?;
        let id = created
            .upload_id()
            .ok_or_else(|| UploadError::Storage("no upload id in CreateMultipartUpload".into()))?;
        Ok(Multipart {
            id: id.to_string(),
            parts: Vec::new(),
            completed: false,
            unfinished: Unfinished(Some((
                self.client.clone(),
                self.bucket.clone(),
                key.to_string(),
                id.to_string(),
            ))),
        })
    }

    async fn upload_part<E>(
        &self,
        key: &str,
        upload: &mut Multipart,
        part: Bytes,
    ) -> Result<(), UploadError<E>> {
        let number = upload.parts.len() as i32 + 1;
        let done = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.id)
            .part_number(number)
            .content_length(part.len() as i64)
            .body(ByteStream::from(part))
            .send()
            .await
            .map_err(|e| UploadError::Storage(describe(e)))?;
        upload.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(done.e_tag().map(str::to_string))
                .build(),
        );
        Ok(())
    }

    async fn complete_multipart<E>(
        &self,
        key: &str,
        upload: &mut Multipart,
    ) -> Result<(), UploadError<E>> {
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(upload.parts.clone()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| UploadError::Storage(describe(e)))?;
        upload.completed = true;
        upload.unfinished.settled();
        Ok(())
    }

    /// Aborts the multipart upload `upload_id` of `key`, left by a transfer that did not end
    /// (its process died). An upload that no longer exists (completed, or aborted already)
    /// counts as aborted.
    pub async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), StorageError> {
        abort_upload(&self.client, &self.bucket, key, upload_id).await
    }

    async fn abort_multipart(&self, upload: &mut Multipart, key: &str) {
        abort_or_warn(&self.client, &self.bucket, key, &upload.id).await;
        upload.unfinished.settled();
    }

    /// A presigned GET URL for `key`, offering `file_name` as the download name.
    ///
    /// The signing time is rounded down to a window of a tenth of `ttl` (at most an hour), so
    /// every caller within one window gets the same URL, and a URL handed out always has at least
    /// nine tenths of its lifetime left: a fresh one is issued before the previous one runs out.
    pub async fn presign_get(
        &self,
        key: &str,
        file_name: &str,
        content_type: Option<&str>,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<PresignedUrl, StorageError> {
        let start = signing_window_start(now, ttl);
        let config = PresigningConfig::builder()
            .start_time(start)
            .expires_in(ttl)
            .build()
            .map_err(|e| StorageError(describe(e)))?;
        let mut request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_disposition(crate::domain::names::content_disposition(file_name));
        if let Some(content_type) = content_type {
            request = request.response_content_type(content_type);
        }
        let presigned = request
            .presigned(config)
            .await
            .map_err(|e| StorageError(describe(e)))?;
        let expires_at: DateTime<Utc> = (start + ttl).into();
        Ok(PresignedUrl {
            url: presigned.uri().to_string(),
            expires_at,
        })
    }
}

/// Signs a request with a payload hash computed beforehand, instead of hashing the body again.
#[derive(Debug)]
struct PrecomputedPayloadHash(String);

impl aws_sdk_s3::config::Intercept for PrecomputedPayloadHash {
    fn name(&self) -> &'static str {
        "PrecomputedPayloadHash"
    }

    fn modify_before_signing(
        &self,
        _context: &mut aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        cfg.interceptor_state()
            .store_put(aws_runtime::auth::PayloadSigningOverride::Precomputed(
                self.0.clone(),
            ));
        Ok(())
    }
}

struct Multipart {
    id: String,
    parts: Vec<CompletedPart>,
    completed: bool,
    /// Aborts the upload if it is dropped unfinished.
    unfinished: Unfinished,
}

/// An upload that is neither completed nor aborted. Dropping it — the transfer's future was
/// dropped mid-way, because its job was cancelled or its claim lost — aborts the upload in
/// the background, as an error would have, so that its parts do not linger in the bucket.
struct Unfinished(Option<(aws_sdk_s3::Client, String, String, String)>);

impl Unfinished {
    /// The upload was completed or aborted: nothing to do on drop.
    fn settled(&mut self) {
        self.0 = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        let Some((client, bucket, key, id)) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { abort_or_warn(&client, &bucket, &key, &id).await });
            }
            Err(_) => {
                tracing::warn!(%key, "multipart upload left unfinished (no runtime to abort it)")
            }
        }
    }
}

/// Aborts a multipart upload; one that no longer exists (completed, or aborted already)
/// counts as aborted.
async fn abort_upload(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(), StorageError> {
    let aborted = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
    match aborted {
        Ok(_) => Ok(()),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_no_such_upload()) =>
        {
            Ok(())
        }
        Err(err) => Err(StorageError(describe(err))),
    }
}

/// [`abort_upload`] where nobody waits for the outcome: a failure is only logged.
async fn abort_or_warn(client: &aws_sdk_s3::Client, bucket: &str, key: &str, upload_id: &str) {
    if let Err(err) = abort_upload(client, bucket, key, upload_id).await {
        tracing::warn!(key, error = %err, "could not abort a multipart upload");
    }
}

/// Start of the signing window that contains `now`.
pub fn signing_window_start(now: SystemTime, ttl: Duration) -> SystemTime {
    let window = (ttl.as_secs() / 10).clamp(1, 3600);
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs(secs - secs % window)
}

/// Percent-encodes a key for `x-amz-copy-source`, keeping `/` as the separator.
pub fn encode_key(key: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(key, KEEP).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_windows_keep_most_of_the_lifetime() {
        let ttl = Duration::from_secs(3600);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let start = signing_window_start(t0, ttl);
        assert!(start <= t0);
        assert!(t0.duration_since(start).unwrap() < Duration::from_secs(360));
        // same window, same start: the URL stays stable between close calls
        assert_eq!(
            start,
            signing_window_start(t0 + Duration::from_secs(1), ttl)
        );
        let later = t0 + Duration::from_secs(400);
        assert!(signing_window_start(later, ttl) > start);
    }

    #[test]
    fn copy_source_keys_are_encoded() {
        assert_eq!(
            encode_key("processos/1/documentos/d1/Petição inicial.pdf"),
            "processos/1/documentos/d1/Peti%C3%A7%C3%A3o%20inicial.pdf"
        );
    }
}

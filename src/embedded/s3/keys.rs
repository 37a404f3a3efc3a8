//! Object keys of any length on s3s-fs.
//!
//! Next to each object, s3s-fs keeps side files named after the base64 of the bucket and of the
//! key (`.bucket-<b64>.object-<b64>[.upload-<uuid>].metadata.json`, `….internal.json`), and a
//! file name holds at most 255 bytes: in bucket `autos`, keys over 163 bytes failed on PutObject
//! and keys over 130 bytes on CreateMultipartUpload, whereas S3 allows 1024.
//!
//! [`LongKeys`] wraps the store and hands it a storage key that fits:
//! - a key whose side files fit, multipart included, is stored under itself, as before;
//! - any other key is stored as `.long/<sha256 of the key, hex>` (whose side files fit whatever
//!   the bucket name), and the key itself is written to `.long/<sha256>.key` in the bucket's
//!   directory, so that listings show it. That file is written before the object and never
//!   removed (its content depends only on its name): an object always has it.
//!
//! Keys that fitted single uploads but not multipart ones were stored under themselves before
//! this layer existed: they are read there while their `.long` form is missing, and moved to it
//! when written again.
//!
//! s3s authenticates a request (signature, presigned URL) on its original path before calling
//! the store, so the mapping is invisible to clients.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::ErrorKind;
use std::ops::Bound;
use std::path::{Component, Path, PathBuf};

use s3s::dto::*;
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result, S3};
use s3s_fs::FileSystem;
use sha2::{Digest as _, Sha256};

/// The longest file name (ext4, xfs, btrfs, tmpfs…).
const NAME_MAX: usize = 255;

/// The directory, in each bucket, of objects stored under a hash of their key.
const LONG_DIR: &str = ".long";

/// Length of the name of the longest side file s3s-fs derives from `bucket` and `key`.
fn side_file_len(bucket: &str, key: &str, multipart: bool) -> usize {
    let base64 = |bytes: usize| (bytes * 4).div_ceil(3);
    let upload = if multipart { ".upload-".len() + 36 } else { 0 };
    let len = ".bucket-".len() + base64(bucket.len()) + ".object-".len() + base64(key.len());
    len + upload + ".metadata.json".len()
}

/// Keys in the `.long` namespace are always hashed, so that they cannot collide with it.
fn reserved(key: &str) -> bool {
    let rest = key.strip_prefix(LONG_DIR);
    rest.is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The key s3s-fs stores `key` of `bucket` under: the key itself when all its side files fit,
/// else `.long/<sha256>`.
pub(super) fn storage_key<'k>(bucket: &str, key: &'k str) -> Cow<'k, str> {
    if !reserved(key) && side_file_len(bucket, key, true) <= NAME_MAX {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(format!("{LONG_DIR}/{}", hex::encode(Sha256::digest(key))))
    }
}

/// Whether an older store may hold `key` under itself: it fitted single uploads.
fn maybe_legacy(bucket: &str, key: &str) -> bool {
    let plain = (Path::new(key).components()).all(|c| matches!(c, Component::Normal(_)));
    plain && !reserved(key) && side_file_len(bucket, key, false) <= NAME_MAX
}

fn is_hash(name: &str) -> bool {
    let hex_digit = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    name.len() == 64 && name.bytes().all(hex_digit)
}

async fn is_file(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_file())
}

/// Writes `key` to `path` unless already there, atomically.
async fn write_index(path: &Path, key: &str) -> std::io::Result<()> {
    let current = tokio::fs::read(path).await;
    if current.is_ok_and(|text| text == key.as_bytes()) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4()));
    let mut written = tokio::fs::write(&tmp, key).await;
    if written.is_ok() {
        written = tokio::fs::rename(&tmp, path).await;
    }
    if written.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    written
}

/// An s3s-fs store that takes object keys of any length (see the module documentation).
pub(super) struct LongKeys {
    inner: FileSystem,
    /// The directory the store keeps its buckets in (canonical, as s3s-fs keeps it).
    root: PathBuf,
}

impl LongKeys {
    pub(super) fn new(inner: FileSystem, root: PathBuf) -> Self {
        Self { inner, root }
    }

    fn bucket_dir(&self, bucket: &str) -> S3Result<PathBuf> {
        if !s3s::path::check_bucket_name(bucket) {
            return Err(s3_error!(InvalidBucketName));
        }
        Ok(self.root.join(bucket))
    }

    /// The storage key to read `key` from: see [`storage_key`], except that a key an older
    /// store kept under itself is read there until its `.long` form exists.
    async fn read_key(&self, bucket: &str, key: &str) -> S3Result<String> {
        let stored = storage_key(bucket, key);
        if matches!(stored, Cow::Owned(_)) && maybe_legacy(bucket, key) {
            let dir = self.bucket_dir(bucket)?;
            if !is_file(&dir.join(&*stored)).await && is_file(&dir.join(key)).await {
                return Ok(key.to_owned());
            }
        }
        Ok(stored.into_owned())
    }

    /// The storage key to write `key` to, its index written first if it is hashed.
    async fn write_key(&self, bucket: &str, key: &str) -> S3Result<String> {
        let stored = storage_key(bucket, key);
        if let Cow::Owned(stored) = &stored {
            let dir = self.bucket_dir(bucket)?;
            if !tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
                return Err(s3_error!(NoSuchBucket));
            }
            let index = dir.join(format!("{stored}.key"));
            let written = write_index(&index, key).await;
            written.map_err(S3Error::internal_error)?;
        }
        Ok(stored.into_owned())
    }

    /// Once `key` is written or deleted under its `.long` form, removes the copy an older store
    /// may have kept under the key itself.
    async fn drop_legacy(&self, bucket: &str, key: &str) {
        if matches!(storage_key(bucket, key), Cow::Borrowed(_)) || !maybe_legacy(bucket, key) {
            return;
        }
        let Ok(dir) = self.bucket_dir(bucket) else {
            return;
        };
        match tokio::fs::remove_file(dir.join(key)).await {
            Ok(()) => tracing::info!(bucket, key, "moved an object to the .long directory"),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(bucket, key, error = %e, "cannot remove an old object copy"),
        }
    }

    /// The objects stored under a hash whose key starts with `prefix`, with their keys.
    async fn long_objects(&self, bucket: &str, prefix: &str) -> S3Result<Vec<Object>> {
        let dir = self.bucket_dir(bucket)?.join(LONG_DIR);
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(S3Error::internal_error(e)),
        };
        let mut objects = Vec::new();
        let internal = S3Error::internal_error;
        while let Some(entry) = entries.next_entry().await.map_err(internal)? {
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|name| is_hash(name)) else {
                continue;
            };
            let meta = entry.metadata().await.map_err(S3Error::internal_error)?;
            if !meta.is_file() {
                continue;
            }
            let index = dir.join(format!("{name}.key"));
            let key = match tokio::fs::read_to_string(&index).await {
                Ok(key) if hex::encode(Sha256::digest(&key)) == name => key,
                Ok(_) => {
                    tracing::warn!(index = %index.display(), "a key index does not match its name");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(index = %index.display(), error = %e, "unreadable key index");
                    continue;
                }
            };
            if !key.starts_with(prefix) {
                continue;
            }
            let modified = meta.modified().map_err(S3Error::internal_error)?;
            objects.push(Object {
                key: Some(key),
                last_modified: Some(Timestamp::from(modified)),
                size: Some(i64::try_from(meta.len()).map_err(S3Error::internal_error)?),
                ..Default::default()
            });
        }
        Ok(objects)
    }
}

/// Every operation s3s-fs implements, on storage keys; listings and outputs show the keys.
#[async_trait::async_trait]
impl S3 for LongKeys {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.inner.create_bucket(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.inner.delete_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.inner.head_bucket(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.inner.get_bucket_location(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.inner.list_buckets(req).await
    }

    async fn put_object(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        req.input.key = self.write_key(&bucket, &key).await?;
        let resp = self.inner.put_object(req).await?;
        self.drop_legacy(&bucket, &key).await;
        Ok(resp)
    }

    async fn get_object(
        &self,
        mut req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        req.input.key = self.read_key(&req.input.bucket, &req.input.key).await?;
        self.inner.get_object(req).await
    }

    async fn head_object(
        &self,
        mut req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        req.input.key = self.read_key(&req.input.bucket, &req.input.key).await?;
        self.inner.head_object(req).await
    }

    async fn copy_object(
        &self,
        mut req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        if let CopySource::Bucket { bucket, key, .. } = &mut req.input.copy_source {
            *key = self.read_key(bucket, key).await?.into();
        }
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        req.input.key = self.write_key(&bucket, &key).await?;
        let resp = self.inner.copy_object(req).await?;
        self.drop_legacy(&bucket, &key).await;
        Ok(resp)
    }

    async fn delete_object(
        &self,
        mut req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        req.input.key = storage_key(&bucket, &key).into_owned();
        let resp = self.inner.delete_object(req).await?;
        self.drop_legacy(&bucket, &key).await;
        Ok(resp)
    }

    async fn delete_objects(
        &self,
        mut req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let bucket = req.input.bucket.clone();
        let mut keys = HashMap::new();
        for object in &mut req.input.delete.objects {
            if let Cow::Owned(stored) = storage_key(&bucket, &object.key) {
                let key = std::mem::replace(&mut object.key, stored.clone());
                keys.insert(stored, key);
            }
        }
        let mut resp = self.inner.delete_objects(req).await?;
        for deleted in resp.output.deleted.iter_mut().flatten() {
            let key = deleted.key.as_ref().and_then(|stored| keys.get(stored));
            if let Some(key) = key {
                self.drop_legacy(&bucket, key).await;
                deleted.key = Some(key.clone());
            }
        }
        Ok(resp)
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let v2 = self.list_objects_v2(req.map_input(Into::into)).await?;
        // As s3s-fs does.
        Ok(v2.map_output(|v2| ListObjectsOutput {
            contents: v2.contents,
            common_prefixes: v2.common_prefixes,
            delimiter: v2.delimiter,
            encoding_type: v2.encoding_type,
            name: v2.name,
            prefix: v2.prefix,
            max_keys: v2.max_keys,
            is_truncated: v2.is_truncated,
            next_marker: v2.next_continuation_token,
            ..Default::default()
        }))
    }

    /// Lists every object under the prefix from s3s-fs and from the `.long` directory, then
    /// groups and pages them on their keys as s3s-fs does.
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input.clone();
        // As s3s-fs does.
        let prefix = input.prefix.as_deref().unwrap_or_default();
        let prefix = prefix.trim_start_matches('/');
        let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());
        let everything = ListObjectsV2Input {
            bucket: input.bucket.clone(),
            prefix: Some(prefix.to_owned()),
            max_keys: Some(i32::MAX),
            ..Default::default()
        };
        let listed = self
            .inner
            .list_objects_v2(req.map_input(|_| everything))
            .await?;
        let stored = listed.output.contents.into_iter().flatten();
        let stored = stored.filter(|o| o.key.as_deref().is_some_and(|key| !reserved(key)));
        let long = self.long_objects(&input.bucket, prefix).await?;

        // Object keys and common prefixes (`None`), in order; a `.long` copy wins over one an
        // older store left under the key itself.
        let mut entries: BTreeMap<String, Option<Object>> = BTreeMap::new();
        for object in stored.chain(long) {
            let Some(key) = object.key.as_deref().filter(|key| key.starts_with(prefix)) else {
                continue;
            };
            let rest = &key[prefix.len()..];
            let end = delimiter.and_then(|d| rest.find(d).map(|at| prefix.len() + at + d.len()));
            match end {
                Some(end) => entries.insert(key[..end].to_owned(), None),
                None => entries.insert(key.to_owned(), Some(object)),
            };
        }

        let after = match (
            input.continuation_token.as_deref(),
            input.start_after.as_deref(),
        ) {
            (Some(token), Some(start)) => Some(token.max(start)),
            (token, start) => token.or(start),
        };
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut remaining = entries.range::<str, _>((from, Bound::Unbounded)).peekable();
        let max_keys = input.max_keys.unwrap_or(1000);
        let limit = usize::try_from(max_keys).unwrap_or(1000);
        let (mut contents, mut common_prefixes, mut last) = (Vec::new(), Vec::new(), None);
        for (key, object) in remaining.by_ref().take(limit) {
            match object {
                Some(object) => contents.push(object.clone()),
                None => common_prefixes.push(CommonPrefix {
                    prefix: Some(key.clone()),
                }),
            }
            last = Some(key.clone());
        }
        let is_truncated = limit > 0 && remaining.peek().is_some();
        let key_count = contents.len() + common_prefixes.len();

        let output = ListObjectsV2Output {
            key_count: Some(i32::try_from(key_count).map_err(S3Error::internal_error)?),
            max_keys: Some(max_keys),
            is_truncated: Some(is_truncated),
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!common_prefixes.is_empty()).then_some(common_prefixes),
            continuation_token: input.continuation_token,
            next_continuation_token: last.filter(|_| is_truncated),
            delimiter: input.delimiter,
            encoding_type: input.encoding_type,
            name: Some(input.bucket),
            prefix: input.prefix,
            start_after: input.start_after,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn create_multipart_upload(
        &self,
        mut req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let key = req.input.key.clone();
        req.input.key = self.write_key(&req.input.bucket, &key).await?;
        let mut resp = self.inner.create_multipart_upload(req).await?;
        if resp.output.key.is_some() {
            resp.output.key = Some(key);
        }
        Ok(resp)
    }

    async fn upload_part(
        &self,
        mut req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        req.input.key = storage_key(&req.input.bucket, &req.input.key).into_owned();
        self.inner.upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        mut req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        if let CopySource::Bucket { bucket, key, .. } = &mut req.input.copy_source {
            *key = self.read_key(bucket, key).await?.into();
        }
        req.input.key = storage_key(&req.input.bucket, &req.input.key).into_owned();
        self.inner.upload_part_copy(req).await
    }

    async fn list_parts(
        &self,
        mut req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let key = req.input.key.clone();
        req.input.key = storage_key(&req.input.bucket, &key).into_owned();
        let mut resp = self.inner.list_parts(req).await?;
        if resp.output.key.is_some() {
            resp.output.key = Some(key);
        }
        Ok(resp)
    }

    async fn complete_multipart_upload(
        &self,
        mut req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        req.input.key = self.write_key(&bucket, &key).await?;
        let mut resp = self.inner.complete_multipart_upload(req).await?;
        self.drop_legacy(&bucket, &key).await;
        if resp.output.key.is_some() {
            resp.output.key = Some(key.clone());
        }
        // s3s-fs answers with a future that resolves to the output, key included.
        if let Some(future) = resp.output.future.take() {
            resp.output.future = Some(Box::pin(async move {
                let mut output = future.await?;
                if output.key.is_some() {
                    output.key = Some(key);
                }
                Ok(output)
            }));
        }
        Ok(resp)
    }

    async fn abort_multipart_upload(
        &self,
        mut req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        req.input.key = storage_key(&req.input.bucket, &req.input.key).into_owned();
        self.inner.abort_multipart_upload(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashed(bucket: &str, key: &str) -> bool {
        matches!(storage_key(bucket, key), Cow::Owned(_))
    }

    #[test]
    fn side_file_lengths_match_the_measured_limits() {
        // Measured on s3s-fs for bucket `autos`: PutObject failed past 163 bytes,
        // CreateMultipartUpload past 130.
        let key = |len: usize| "k".repeat(len);
        assert_eq!(side_file_len("autos", &key(163), false), NAME_MAX);
        assert!(side_file_len("autos", &key(164), false) > NAME_MAX);
        assert_eq!(side_file_len("autos", &key(130), true), NAME_MAX);
        assert!(side_file_len("autos", &key(131), true) > NAME_MAX);
    }

    #[test]
    fn short_keys_are_stored_under_themselves() {
        let short = "k".repeat(130);
        assert!(!hashed("autos", &short));
        assert!(!hashed("autos", "doc"));
        assert!(!hashed("autos", ".longer/x"));
        assert!(!hashed("autos", "a/.long/x"));
    }

    #[test]
    fn other_keys_are_hashed_and_fit_any_bucket() {
        let long = "k".repeat(131);
        let stored = storage_key("autos", &long);
        let hash = hex::encode(Sha256::digest(&long));
        assert_eq!(stored, format!(".long/{hash}"));
        // The `.long` namespace is kept for hashed keys.
        assert!(hashed("autos", ".long"));
        assert!(hashed("autos", ".long/x"));

        let widest = "b".repeat(63);
        let key = "ç".repeat(512);
        let stored = storage_key(&widest, &key);
        assert!(side_file_len(&widest, &stored, true) <= NAME_MAX);
        assert!(side_file_len(&widest, &stored, false) <= NAME_MAX);
        // A short key in a long bucket name may be hashed too.
        assert!(!hashed(&widest, "k"));
        assert!(hashed(&widest, &"k".repeat(73)));
    }

    #[test]
    fn legacy_copies_are_looked_for_only_where_they_could_be() {
        assert!(maybe_legacy("autos", &"k".repeat(163)));
        assert!(!maybe_legacy("autos", &"k".repeat(164)));
        assert!(!maybe_legacy("autos", &format!("../{}", "k".repeat(140))));
        let reserved = format!(".long/{}", "k".repeat(140));
        assert!(!maybe_legacy("autos", &reserved));
    }
}

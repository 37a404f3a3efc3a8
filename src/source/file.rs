//! The `file://` source: `ROOT/{number}/process.json` plus the document files beside it.
//!
//! Relative document urls name files inside the process folder; they may be percent-encoded
//! (`Peti%C3%A7%C3%A3o.pdf`) or written plainly (`Petição.pdf`): the plain name is tried
//! first, so a file whose real name contains `%` still works. Symbolic links are followed:
//! whoever writes the folder is trusted, the check only stops urls from climbing out of it.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use percent_encoding::percent_decode_str;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;
use url::Url;

use super::path::{contained_segments, decoded_contained_segments};
use super::validate::{listing_from_json, MAX_LISTING_BYTES};
use super::{DocumentBody, ListedDocument, ProcessListing, SourceError};
use crate::domain::ProcessNumber;

const LISTING_FILE: &str = "process.json";
const READ_CHUNK: usize = 64 * 1024;

/// The folder a `file://` source URL names; it must exist.
pub(super) fn root_directory(url: &Url, shown: &str) -> Result<PathBuf, SourceError> {
    let path = url.to_file_path().map_err(|_| {
        SourceError::invalid(format!("source URL `{shown}` does not name a local folder"))
    })?;
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => Ok(path),
        Ok(_) => Err(SourceError::invalid(format!(
            "source URL `{shown}` names a file, not a folder"
        ))),
        Err(e) => Err(SourceError::invalid(format!(
            "source folder of `{shown}` cannot be opened: {e}"
        ))),
    }
}

/// Reads and validates `ROOT/{number}/process.json`; no process folder means an unknown process.
pub(super) async fn lookup(
    root: &Path,
    number: &ProcessNumber,
) -> Result<Option<ProcessListing>, SourceError> {
    // The formatted number holds only digits, '-' and '.', never a path separator or "..".
    let folder = root.join(number.as_str());
    let path = folder.join(LISTING_FILE);
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return if tokio::fs::metadata(&folder).await.is_ok() {
                Err(SourceError::invalid(format!(
                    "the source's folder for process {number} has no {LISTING_FILE}"
                )))
            } else {
                Ok(None)
            };
        }
        Err(e) => return Err(io_error(&format!("process {number}"), 0, &e)),
    };
    let mut body = Vec::new();
    // Reading one byte past the cap tells "too big" apart from "exactly at the cap".
    file.take(MAX_LISTING_BYTES + 1)
        .read_to_end(&mut body)
        .await
        .map_err(|e| io_error(&format!("process {number}"), 0, &e))?;
    if body.len() as u64 > MAX_LISTING_BYTES {
        return Err(SourceError::invalid(format!(
            "the source's {LISTING_FILE} for process {number} \
             is larger than {MAX_LISTING_BYTES} bytes"
        )));
    }
    listing_from_json(&body, number).map(Some)
}

/// Opens a document file from the process folder.
pub(super) async fn open(
    root: &Path,
    number: &ProcessNumber,
    doc: &ListedDocument,
) -> Result<DocumentBody, SourceError> {
    let folder = root.join(number.as_str());
    let path = document_path(&folder, doc).await?;
    let what = format!("document {:?}", doc.id);
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let detail = format!("{}: {e}", path.display());
            return Err(missing(&what, &detail));
        }
        Err(e) => return Err(io_error(&what, 0, &e)),
    };
    let meta = file.metadata().await.map_err(|e| io_error(&what, 0, &e))?;
    if !meta.is_file() {
        let detail = format!("{} is not a regular file", path.display());
        return Err(missing(&what, &detail));
    }
    let mut received = 0u64;
    let stream = ReaderStream::with_capacity(file, READ_CHUNK)
        .map(move |item| match item {
            Ok(chunk) => {
                received += chunk.len() as u64;
                Ok(chunk)
            }
            Err(e) => Err(io_error(&what, received, &e)),
        })
        .boxed();
    Ok(DocumentBody {
        content_length: Some(meta.len()),
        content_type: doc.mime_type.clone(),
        stream,
    })
}

/// The file a relative url names inside `folder`, refusing any way out of it.
async fn document_path(folder: &Path, doc: &ListedDocument) -> Result<PathBuf, SourceError> {
    let raw = doc.url.trim().trim_start_matches(['/', '\\']);
    // Checked on the decoded form too, so that `%2e%2e` cannot sneak past as a plain name.
    let decoded: PathBuf = decoded_contained_segments(raw, &doc.id)?.iter().collect();
    let literal: PathBuf = contained_segments(raw, &doc.id)?.iter().collect();
    let literal = folder.join(literal);
    let use_decoded = percent_decode_str(raw).decode_utf8_lossy() != raw
        && !tokio::fs::try_exists(&literal).await.unwrap_or(false);
    Ok(if use_decoded {
        folder.join(decoded)
    } else {
        literal
    })
}

/// The document's file is not there (or is no file): retrying cannot help.
fn missing(what: &str, detail: &str) -> SourceError {
    let error = SourceError::permanent("the document's file is not in the source folder");
    tracing::warn!(what, error = %error, detail, "source folder read failed");
    error
}

fn io_error(what: &str, received: u64, error: &std::io::Error) -> SourceError {
    let phrase = SourceError::retryable("the source folder could not be read");
    tracing::warn!(what, error = %phrase, detail = %error, received, "source folder read failed");
    phrase
}

//! The `file://` source against a folder made for each test.

use serde_json::json;

use super::{doc, listing_json, number, read_body, source, TempDir, NUMBER};
use crate::source::{verify, SourceError};

const PDF: &[u8] = b"%PDF-1.7 sample";

/// A source folder with one process: `process.json`, `d1.pdf` and `docs/Petição inicial.pdf`.
fn sample() -> TempDir {
    let dir = TempDir::new();
    let folder = dir.path().join(NUMBER);
    std::fs::create_dir_all(folder.join("docs")).unwrap();
    std::fs::write(folder.join("d1.pdf"), PDF).unwrap();
    std::fs::write(folder.join("docs").join("Petição inicial.pdf"), PDF).unwrap();
    std::fs::write(dir.path().join("outside.txt"), b"not for you").unwrap();
    let docs = json!([{"id": "d1", "name": "d1.pdf", "url": "d1.pdf",
                       "size": PDF.len(), "sha256": super::sha256_hex(PDF)},
                      {"id": "d2", "name": "Petição inicial.pdf",
                       "url": "docs/Peti%C3%A7%C3%A3o%20inicial.pdf",
                       "mimeType": "application/pdf"},
                      {"id": "d3", "name": "Petição inicial.pdf",
                       "url": "/docs/Petição inicial.pdf"}]);
    let listing = serde_json::to_vec(&listing_json(docs)).unwrap();
    std::fs::write(folder.join("process.json"), listing).unwrap();
    dir
}

#[tokio::test]
async fn lookup_and_open_from_a_folder() {
    let dir = sample();
    let source = source(&dir.url());
    let listing = source.lookup(&number()).await.unwrap().unwrap();
    assert_eq!(listing.documents.len(), 3);
    for listed in &listing.documents {
        let body = source.open(&number(), listed).await.unwrap();
        assert_eq!(body.content_length, Some(PDF.len() as u64), "{}", listed.id);
        assert_eq!(body.content_type, listed.mime_type);
        assert_eq!(read_body(body).await.unwrap(), PDF, "{}", listed.id);
    }
    let d1 = &listing.documents[0];
    let body = source.open(&number(), d1).await.unwrap();
    let (stream, digest) = verify(body, Some(PDF.len() as u64), d1.sha256.as_deref(), 1 << 20);
    super::read_all(stream).await.unwrap();
    assert_eq!(digest.digest().map(|(len, _)| len), Some(PDF.len() as u64));
}

#[tokio::test]
async fn missing_process_is_none() {
    let dir = TempDir::new();
    assert_eq!(source(&dir.url()).lookup(&number()).await, Ok(None));
}

#[tokio::test]
async fn a_process_folder_without_its_listing_is_invalid() {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path().join(NUMBER)).unwrap();
    let err = source(&dir.url()).lookup(&number()).await.unwrap_err();
    assert!(matches!(err, SourceError::Invalid { .. }), "{err:?}");
}

#[tokio::test]
async fn a_broken_listing_is_invalid() {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path().join(NUMBER)).unwrap();
    std::fs::write(dir.path().join(NUMBER).join("process.json"), b"[").unwrap();
    let err = source(&dir.url()).lookup(&number()).await.unwrap_err();
    assert!(matches!(err, SourceError::Invalid { .. }), "{err:?}");
}

#[tokio::test]
async fn escapes_from_the_process_folder_are_refused() {
    let dir = sample();
    let source = source(&dir.url());
    for url in [
        "../outside.txt",
        "docs/../../outside.txt",
        "%2e%2e/outside.txt",
        "..",
    ] {
        let err = source.open(&number(), &doc("d9", url)).await.unwrap_err();
        assert!(
            matches!(err, SourceError::Permanent { .. }),
            "{url}: {err:?}"
        );
    }
    let absolute = format!("{}outside.txt", dir.url());
    let err = source
        .open(&number(), &doc("d9", &absolute))
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Permanent { .. }), "{err:?}");
}

#[tokio::test]
async fn missing_files_and_folders_are_permanent() {
    let dir = sample();
    let source = source(&dir.url());
    for url in ["nope.pdf", "docs"] {
        let err = source.open(&number(), &doc("d9", url)).await.unwrap_err();
        assert!(
            matches!(err, SourceError::Permanent { .. }),
            "{url}: {err:?}"
        );
    }
}

/// Every document of the shared sample court opens and verifies against its listing.
#[tokio::test]
async fn the_sample_court_verifies() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("playground/sample-court");
    let url = url::Url::from_directory_path(&root).unwrap().to_string();
    let source = source(&url);
    let mut processes = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Ok(number) = crate::domain::ProcessNumber::parse(&name) else {
            continue; // README.md, generate.py, check.py
        };
        processes += 1;
        let listing = source.lookup(&number).await.unwrap().unwrap();
        for listed in &listing.documents {
            let size = listed.size.map(|s| s as u64);
            let body = source.open(&number, listed).await.unwrap();
            let (stream, digest) = verify(body, size, listed.sha256.as_deref(), 64 << 20);
            super::read_all(stream).await.unwrap();
            let (len, sha) = digest.digest().unwrap();
            assert!(size.is_none_or(|s| s == len), "{name} {}", listed.id);
            assert!(
                listed.sha256.as_ref().is_none_or(|s| *s == sha),
                "{name} {}",
                listed.id
            );
        }
    }
    assert!(processes > 0, "no process folders in {}", root.display());
}

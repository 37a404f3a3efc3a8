//! Relative document urls, checked so that they cannot climb out of their base.

use percent_encoding::percent_decode_str;

use super::http::DOCUMENT_REFUSED;
use super::SourceError;

/// The normalized segments of a relative path (`.` and empty segments dropped, `..` applied),
/// or `Permanent` if the path climbs above its base or names nothing.
///
/// Both `/` and `\` separate segments, because WHATWG URL parsing and Windows-minded servers
/// treat a backslash as a slash; a check that ignored it could be walked around.
pub(super) fn contained_segments(path: &str, doc_id: &str) -> Result<Vec<String>, SourceError> {
    let refused = |refusal: &str, detail: &str| {
        let error = SourceError::permanent(format!("{DOCUMENT_REFUSED}: {refusal}"));
        tracing::warn!(
            what = %format_args!("document {doc_id:?}"),
            error = %error,
            detail = %format_args!("its url {path:?}: {detail}"),
            "document url refused"
        );
        error
    };
    if path.contains('\0') {
        return Err(refused("not a valid URL", "it has a NUL byte"));
    }
    let mut segments: Vec<String> = Vec::new();
    for segment in path.split(['/', '\\']) {
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(refused(
                        "outside the source's base",
                        "it climbs out of the source's base",
                    ));
                }
            }
            other => segments.push(other.to_owned()),
        }
    }
    if segments.is_empty() {
        return Err(refused("names no file", "it names no file"));
    }
    Ok(segments)
}

/// Like [`contained_segments`], on the percent-decoded path: servers decode `%2e%2e` and `%2f`
/// before they look at the file system, so the escape check must see what they will see.
pub(super) fn decoded_contained_segments(
    path: &str,
    doc_id: &str,
) -> Result<Vec<String>, SourceError> {
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    contained_segments(&decoded, doc_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> Vec<String> {
        decoded_contained_segments(path, "d").unwrap()
    }

    fn refused(path: &str) -> bool {
        matches!(
            decoded_contained_segments(path, "d"),
            Err(SourceError::Permanent { .. })
        )
    }

    #[test]
    fn normalizes_inside_paths() {
        assert_eq!(ok("/files/d1"), ["files", "d1"]);
        assert_eq!(ok("files/./a/../d1"), ["files", "d1"]);
        assert_eq!(ok("a%20b.pdf"), ["a b.pdf"]);
    }

    #[test]
    fn refuses_escapes_and_empty_paths() {
        assert!(refused("../secret"));
        assert!(refused("files/../../secret"));
        assert!(refused("%2e%2e/secret"));
        assert!(refused("files%2f..%2f..%2fsecret"));
        assert!(refused("..\\secret"));
        assert!(refused("/"));
        assert!(refused("./"));
        assert!(refused("a\0b"));
    }
}

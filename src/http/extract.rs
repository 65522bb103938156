//! Typed readers of the request, shared by every protocol: strict parsers for the headers of
//! API.md (bad values become 400s with their code), the upload id, and the body. Media types
//! are read in `media.rs`.

use std::future::Future;

use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, HttpRequest};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::StreamExt;
use tracing::Instrument;

use crate::config::MAX_REPRESENTABLE_SIZE;
use crate::error::ApiError;
use crate::upload::{Algorithm, ChunkChecksum, UploadId};

pub use super::media::{content_type, is_media_type, is_multipart, require_content_type};

pub fn parse_id(path: &str) -> Result<UploadId, ApiError> {
    path.parse().map_err(|e: crate::upload::model::InvalidId| {
        ApiError::bad_request("invalid_id", e.to_string())
    })
}

/// The client's address, which the engine's per-client caps count by.
pub fn client(req: &HttpRequest) -> Option<std::net::IpAddr> {
    req.peer_addr().map(|addr| addr.ip())
}

/// The whole body, refused once it passes `limit` bytes.
pub async fn read_limited(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::BodyTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Runs an engine call that owns the request body on this worker, detached from the handler.
/// If the client vanishes actix may drop the handler; the detached task still commits, and
/// logs in the request's span.
pub async fn detached<T: 'static>(
    work: impl Future<Output = Result<T, ApiError>> + 'static,
) -> Result<T, ApiError> {
    // The task carries the request along, for the hook events the engine raises in it.
    let work = crate::hooks::with_current_request(work.in_current_span());
    actix_web::rt::spawn(work)
        .await
        .map_err(|e| ApiError::Internal(format!("append task failed: {e}")))?
}

/// The draft's `Upload-Complete: ?1 / ?0` (a structured-field boolean).
pub fn upload_complete(headers: &HeaderMap) -> Result<Option<bool>, ApiError> {
    match headers
        .get("Upload-Complete")
        .map(|v| v.to_str().unwrap_or_default().trim())
    {
        None => Ok(None),
        Some("?1") => Ok(Some(true)),
        Some("?0") => Ok(Some(false)),
        Some(_) => Err(ApiError::bad_request(
            "invalid_upload_complete",
            "Upload-Complete is ?1 or ?0",
        )),
    }
}

/// A byte count: decimal digits only, no sign, spaces or exponent, at most 2^63 - 1.
pub fn parse_count(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>()
        .ok()
        .filter(|n| *n <= MAX_REPRESENTABLE_SIZE)
}

/// An optional byte-count header; present but malformed is `code`.
pub fn optional_count(
    headers: &HeaderMap,
    name: &str,
    code: &'static str,
) -> Result<Option<u64>, ApiError> {
    let mut values = headers.get_all(name);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    // Two different values leave the request ambiguous; neither is taken.
    if values.any(|other| other != value) {
        return Err(ApiError::bad_request(
            code,
            format!("{name} is given twice, with different values"),
        ));
    }
    value
        .to_str()
        .ok()
        .and_then(parse_count)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                code,
                format!("{name} must be a non-negative decimal integer"),
            )
        })
}

pub fn required_count(
    headers: &HeaderMap,
    name: &str,
    code: &'static str,
) -> Result<u64, ApiError> {
    optional_count(headers, name, code)?
        .ok_or_else(|| ApiError::bad_request(code, format!("the {name} header is required")))
}

/// The per-chunk checksum, from tus `Upload-Checksum` or RFC 9530 `Content-Digest`.
pub fn chunk_checksum(headers: &HeaderMap) -> Result<Option<ChunkChecksum>, ApiError> {
    if let Some(value) = headers.get("Upload-Checksum") {
        let text = value.to_str().unwrap_or_default();
        return upload_checksum(text).map(Some);
    }
    if let Some(value) = headers.get("Content-Digest") {
        let text = value.to_str().unwrap_or_default();
        return content_digest(text).map(Some);
    }
    Ok(None)
}

fn invalid_checksum(message: &str) -> ApiError {
    ApiError::bad_request("invalid_checksum", message)
}

/// `Upload-Checksum: <algorithm> <base64 digest>`.
fn upload_checksum(text: &str) -> Result<ChunkChecksum, ApiError> {
    let (name, encoded) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| invalid_checksum("Upload-Checksum is `<algorithm> <base64 digest>`"))?;
    let algorithm = Algorithm::from_tus_name(name).ok_or_else(|| {
        ApiError::bad_request(
            "unsupported_checksum_algorithm",
            format!("checksum algorithm `{name}` is not supported; use sha1 or sha256"),
        )
    })?;
    let digest = STANDARD
        .decode(encoded.trim())
        .map_err(|_| invalid_checksum("the Upload-Checksum digest is not valid base64"))?;
    checked_digest("Upload-Checksum", name, algorithm, digest)
}

/// A digest of a known algorithm: one of the wrong length can match no chunk, so it is a
/// mismatch (460) rather than a malformed header; an empty one is malformed.
fn checked_digest(
    header: &str,
    name: &str,
    algorithm: Algorithm,
    digest: Vec<u8>,
) -> Result<ChunkChecksum, ApiError> {
    if digest.is_empty() {
        return Err(invalid_checksum(&format!("the {header} digest is empty")));
    }
    let len = digest.len();
    ChunkChecksum::new(algorithm, digest).ok_or_else(|| {
        ApiError::DigestLength(format!(
            "the {header} digest has the wrong length for {name} ({len} bytes): it can match \
             no chunk, so the chunk was discarded"
        ))
    })
}

/// `Content-Digest: sha-256=:<base64>:` (RFC 9530); other algorithms listed beside it are
/// ignored, as the RFC allows, but one we can check must be there.
fn content_digest(text: &str) -> Result<ChunkChecksum, ApiError> {
    for member in text.split(',') {
        let Some((key, value)) = member.trim().split_once('=') else {
            return Err(invalid_checksum(
                "Content-Digest is a dictionary such as sha-256=:<base64>:",
            ));
        };
        if !key.trim().eq_ignore_ascii_case("sha-256") {
            continue;
        }
        let encoded = value
            .trim()
            .strip_prefix(':')
            .and_then(|v| v.strip_suffix(':'))
            .ok_or_else(|| {
                invalid_checksum("the Content-Digest value is a byte sequence, :<base64>:")
            })?;
        let digest = STANDARD
            .decode(encoded)
            .map_err(|_| invalid_checksum("the Content-Digest digest is not valid base64"))?;
        return checked_digest("Content-Digest", "sha-256", Algorithm::Sha256, digest);
    }
    Err(ApiError::bad_request(
        "unsupported_checksum_algorithm",
        "Content-Digest names no algorithm this server checks; send sha-256",
    ))
}

/// Whether a request carries a body: a `Content-Length` above 0, or a chunked one.
pub fn has_body(headers: &HeaderMap, content_length: Option<u64>) -> bool {
    content_length.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING)
}

/// A header map for tests.
#[cfg(test)]
pub(super) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    use actix_web::http::header::{HeaderName, HeaderValue};
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::ResponseError as _;

    #[test]
    fn counts_are_strict_decimals() {
        assert_eq!(parse_count("0"), Some(0));
        assert_eq!(parse_count("1234"), Some(1234));
        assert_eq!(parse_count("9223372036854775807"), Some(i64::MAX as u64));
        for bad in [
            "",
            "-1",
            "+1",
            "1e3",
            " 5",
            "5 ",
            "0x10",
            "1.0",
            "18446744073709551616",
            "9223372036854775808",
        ] {
            assert_eq!(parse_count(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn offset_header_is_required_and_strict() {
        let missing = required_count(&headers(&[]), "upload-offset", "invalid_offset");
        assert_eq!(missing.unwrap_err().code(), "invalid_offset");
        let bad = required_count(
            &headers(&[("upload-offset", "-1")]),
            "upload-offset",
            "invalid_offset",
        );
        assert_eq!(bad.unwrap_err().code(), "invalid_offset");
        let good = required_count(
            &headers(&[("upload-offset", "42")]),
            "upload-offset",
            "invalid_offset",
        );
        assert_eq!(good.unwrap(), 42);
    }

    #[test]
    fn checksums_parse_from_both_headers() {
        let sha256_of_abc = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=";
        let tus = chunk_checksum(&headers(&[(
            "upload-checksum",
            &format!("sha256 {sha256_of_abc}"),
        )]));
        assert_eq!(tus.unwrap().unwrap().algorithm, Algorithm::Sha256);
        let rfc = chunk_checksum(&headers(&[(
            "content-digest",
            &format!("md5=:abc=:, sha-256=:{sha256_of_abc}:"),
        )]));
        assert_eq!(rfc.unwrap().unwrap().expected.len(), 32);
        let unknown = chunk_checksum(&headers(&[("upload-checksum", "md5 AAAA")]));
        assert_eq!(
            unknown.unwrap_err().code(),
            "unsupported_checksum_algorithm"
        );
        let garbage = chunk_checksum(&headers(&[("upload-checksum", "sha256 !!!")]));
        assert_eq!(garbage.unwrap_err().code(), "invalid_checksum");
        // A known algorithm with a digest of the wrong length is a mismatch (460).
        let short = chunk_checksum(&headers(&[("content-digest", "sha-256=:AAAA:")]));
        assert_eq!(short.unwrap_err().code(), "checksum_mismatch");
        let sha1_as_sha256 = format!("sha256 {}", STANDARD.encode([0u8; 20]));
        let short = chunk_checksum(&headers(&[("upload-checksum", &sha1_as_sha256)]));
        let short = short.unwrap_err();
        assert_eq!(
            (short.code(), short.status_code().as_u16()),
            ("checksum_mismatch", 460)
        );
        let empty = chunk_checksum(&headers(&[("content-digest", "sha-256=::")]));
        assert_eq!(empty.unwrap_err().code(), "invalid_checksum");
        assert!(chunk_checksum(&headers(&[])).unwrap().is_none());
    }
}

/// Property tests: the parsers take any input without panicking, and accept exactly what they
/// should.
#[cfg(test)]
mod properties {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn counts_round_trip_and_reject_the_rest(n in any::<u64>(), junk in ".*") {
            let parsed = parse_count(&n.to_string());
            prop_assert_eq!(parsed, (n <= MAX_REPRESENTABLE_SIZE).then_some(n));
            if let Some(value) = parse_count(&junk) {
                prop_assert!(junk.bytes().all(|b| b.is_ascii_digit()));
                prop_assert_eq!(junk.parse::<u64>().ok(), Some(value));
            }
        }

        #[test]
        fn checksum_headers_never_panic(value in "[ -~]{0,120}", which in 0..2usize) {
            let mut headers = HeaderMap::new();
            let name = ["upload-checksum", "content-digest"][which];
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
                let _ = chunk_checksum(&headers);
            }
        }

        #[test]
        fn valid_checksums_are_accepted(digest in proptest::collection::vec(any::<u8>(), 32)) {
            let mut headers = HeaderMap::new();
            let value = format!("sha-256=:{}:", STANDARD.encode(&digest));
            headers.insert(HeaderName::from_static("content-digest"), HeaderValue::from_str(&value).unwrap());
            let parsed = chunk_checksum(&headers).unwrap().unwrap();
            prop_assert_eq!(parsed.expected, digest);
        }

        #[test]
        fn upload_complete_is_a_strict_boolean(value in "[ -~]{0,6}") {
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static("upload-complete"), v);
                let parsed = upload_complete(&headers);
                match value.trim() {
                    "?1" => prop_assert_eq!(parsed.ok(), Some(Some(true))),
                    "?0" => prop_assert_eq!(parsed.ok(), Some(Some(false))),
                    _ => prop_assert!(parsed.is_err()),
                }
            }
        }
    }
}

//! tus 1.0.0 and the IETF "Resumable Uploads for HTTP" draft on the same resource.
//!
//! A request speaks tus when it carries `Tus-Resumable`, the draft when it carries
//! `Upload-Draft-Interop-Version`; otherwise it is the native API. All three share the
//! engine, so the status, the progress channels and the page see every upload alike.

use std::time::SystemTime;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue, HttpDate};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::headers::{chunk_checksum, optional_count};
use super::native::{detached, is_media_type, location, parse_id};
use super::Ctx;
use crate::error::ApiError;
use crate::upload::input::{validate_name, without_bidi};
use crate::upload::{AppendRequest, Engine, NewUpload, State, Status};

pub const TUS_VERSION: &str = "1.0.0";
const EXTENSIONS: &str =
    "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum";
const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
/// Interop versions of the draft served: 6 is draft-05, what tus-js-client's
/// `ietf-draft-05` protocol speaks; 8 is the newest (drafts -09 on), which adds `Upload-Limit`,
/// `Accept-Patch` in OPTIONS, and requires `application/partial-upload` on appends.
const DRAFT_INTEROP_VERSIONS: &[u32] = &[6, 8];
const PARTIAL_UPLOAD: &str = "application/partial-upload";
const TUS_CONTENT_TYPE: &str = "application/offset+octet-stream";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Native,
    Tus,
    Draft(u32),
}

pub fn protocol_of(headers: &HeaderMap) -> Protocol {
    if headers.contains_key("Tus-Resumable") {
        return Protocol::Tus;
    }
    match headers
        .get("Upload-Draft-Interop-Version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
    {
        Some(version) => Protocol::Draft(version),
        None if headers.contains_key("Upload-Draft-Interop-Version") => Protocol::Draft(0),
        None => Protocol::Native,
    }
}

/// Method override, protocol version checks, and `Tus-Resumable` on every tus answer.
pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    // Clients behind proxies that drop PATCH or DELETE send POST with the real method.
    if req.method() == Method::POST {
        let wanted = req
            .headers()
            .get("X-HTTP-Method-Override")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Method::from_bytes(v.trim().to_ascii_uppercase().as_bytes()).ok());
        if let Some(method) = wanted {
            req.head_mut().method = method;
        }
    }
    let protocol = protocol_of(req.headers());
    let is_options = req.method() == Method::OPTIONS;
    if protocol == Protocol::Tus && !is_options {
        let version = req
            .headers()
            .get("Tus-Resumable")
            .and_then(|v| v.to_str().ok());
        if version.map(str::trim) != Some(TUS_VERSION) {
            let mut response = req.error_response(ApiError::UnsupportedTusVersion(TUS_VERSION));
            response.headers_mut().insert(
                header::HeaderName::from_static("tus-resumable"),
                HeaderValue::from_static(TUS_VERSION),
            );
            return Ok(response.map_into_right_body());
        }
    }
    if let Protocol::Draft(version) = protocol {
        if !DRAFT_INTEROP_VERSIONS.contains(&version) {
            let error = ApiError::bad_request(
                "unsupported_draft_version",
                format!(
                    "supported Upload-Draft-Interop-Version values: {DRAFT_INTEROP_VERSIONS:?}"
                ),
            );
            return Ok(req.error_response(error).map_into_right_body());
        }
    }
    let mut response = next.call(req).await?;
    if protocol == Protocol::Draft(8) && response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        // The draft wants the limits on a 413 that they caused.
        let max = response
            .request()
            .app_data::<web::Data<Engine>>()
            .and_then(|engine| engine.settings().max_upload_size);
        if let Some(value) = max.and_then(|m| HeaderValue::from_str(&format!("max-size={m}")).ok())
        {
            response
                .headers_mut()
                .insert(header::HeaderName::from_static("upload-limit"), value);
        }
    }
    if protocol == Protocol::Tus || is_options {
        response.headers_mut().insert(
            header::HeaderName::from_static("tus-resumable"),
            HeaderValue::from_static(TUS_VERSION),
        );
    }
    Ok(response.map_into_left_body())
}

/// `OPTIONS /uploads`: what this server speaks.
pub async fn options(engine: web::Data<Engine>) -> HttpResponse {
    let mut response = HttpResponse::NoContent();
    response
        .insert_header(("Tus-Version", TUS_VERSION))
        .insert_header(("Tus-Extension", EXTENSIONS))
        .insert_header(("Tus-Checksum-Algorithm", CHECKSUM_ALGORITHMS));
    // The draft's discovery: appends take application/partial-upload, within these limits.
    response.insert_header(("Accept-Patch", PARTIAL_UPLOAD));
    if let Some(max) = engine.settings().max_upload_size {
        response.insert_header(("Tus-Max-Size", max.to_string()));
        response.insert_header(("Upload-Limit", format!("max-size={max}")));
    }
    response.finish()
}

/// `POST /uploads` for tus and the draft: creation, with or without data.
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    engine: web::Data<Engine>,
    ctx: web::Data<Ctx>,
    protocol: Protocol,
) -> Result<HttpResponse, ApiError> {
    let payload = super::gated_body(&req, payload);
    let headers = req.headers();
    let complete = upload_complete(headers)?;
    let content_length = optional_count(headers, "Content-Length", "invalid_content_length")?;
    let size = declared_size(headers, protocol)?;
    let raw_metadata = headers
        .get("Upload-Metadata")
        .map(|v| {
            v.to_str().map(str::to_owned).map_err(|_| {
                ApiError::bad_request("invalid_metadata", "Upload-Metadata must be ASCII")
            })
        })
        .transpose()?;
    let metadata = raw_metadata
        .as_deref()
        .map(parse_metadata)
        .transpose()?
        .unwrap_or_default();
    let new = NewUpload {
        name: name_from(&metadata),
        size,
        content_type: text_of(&metadata, &["filetype", "type"]).filter(|t| is_media_type(t)),
        expected_sha256: None,
        metadata: raw_metadata,
    };
    let max_size = engine.settings().max_upload_size;
    let has_body =
        content_length.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING);
    // Checked before creating, so a refused request leaves no upload behind.
    if headers.contains_key("Upload-Concat") {
        return Err(ApiError::bad_request(
            "concatenation_unsupported",
            "this server does not offer the tus concatenation extension; upload the file as one \
             upload (tus-js-client: leave parallelUploads unset)",
        ));
    }
    let checksum = chunk_checksum(headers)?;
    if has_body && protocol == Protocol::Tus {
        require_tus_content_type(headers)?;
    }
    let mut status = engine.create(new).await?;
    let location = location(&ctx, &status.id);
    // The draft's `Upload-Complete: ?1` finishes the upload with this body, even an empty one.
    if has_body || complete == Some(true) {
        let id = parse_id(&status.id)?;
        let request = AppendRequest {
            offset: 0,
            length: None,
            content_length,
            checksum,
            complete: complete == Some(true),
            client: req.peer_addr().map(|addr| addr.ip()),
        };
        let engine = engine.into_inner();
        status = detached(async move { Ok(engine.append(id, request, payload).await?) })
            .await
            // The upload exists: the client needs its URL to resume or to look at it.
            .map_err(|e| e.after_create(location.clone()))?;
    }
    let mut response = HttpResponse::Created();
    response
        .insert_header((header::LOCATION, location))
        .insert_header(("Upload-Offset", status.received.to_string()));
    progress_headers(&mut response, &status, protocol, max_size);
    Ok(response.finish())
}

/// The draft's `Upload-Complete: ?1 / ?0` (a structured-field boolean).
fn upload_complete(headers: &HeaderMap) -> Result<Option<bool>, ApiError> {
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

/// The size a creation declares: tus needs `Upload-Length` or `Upload-Defer-Length: 1`;
/// the draft takes `Upload-Length`, and otherwise learns the size when its last piece ends
/// normally (never from a `Content-Length` that a cut body may not reach).
fn declared_size(headers: &HeaderMap, protocol: Protocol) -> Result<Option<u64>, ApiError> {
    let length = optional_count(headers, "Upload-Length", "invalid_length")?;
    if protocol != Protocol::Tus {
        return Ok(length);
    }
    let defer = headers
        .get("Upload-Defer-Length")
        .map(|v| v.as_bytes() == b"1");
    match (length, defer) {
        (Some(length), None) => Ok(Some(length)),
        (None, Some(true)) => Ok(None),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "invalid_length",
            "send Upload-Length or Upload-Defer-Length, not both",
        )),
        (None, Some(false)) => Err(ApiError::bad_request(
            "invalid_length",
            "Upload-Defer-Length must be 1",
        )),
        (None, None) => Err(ApiError::bad_request(
            "invalid_length",
            "Upload-Length or Upload-Defer-Length: 1 is required",
        )),
    }
}

fn require_tus_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    require_content_type(headers, TUS_CONTENT_TYPE)
}

fn require_content_type(headers: &HeaderMap, wanted: &str) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // Media types are case-insensitive (RFC 9110, section 8.3.1).
    if content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .eq_ignore_ascii_case(wanted)
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "this append carries Content-Type: {wanted}"
        )))
    }
}

/// Decoded `Upload-Metadata`: each key with its value, if it has one.
type Metadata = Vec<(String, Option<Vec<u8>>)>;

/// tus `Upload-Metadata`: comma-separated `key base64value` pairs (the value may be absent).
pub fn parse_metadata(text: &str) -> Result<Metadata, ApiError> {
    let invalid = |message: &str| ApiError::bad_request("invalid_metadata", message.to_owned());
    let mut pairs: Metadata = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut parts = pair.split(' ');
        let key = parts.next().unwrap_or_default();
        let value = parts.next();
        if parts.next().is_some() || key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "Upload-Metadata pairs are `key base64value`, separated by commas",
            ));
        }
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(invalid("Upload-Metadata keys must be unique"));
        }
        let value = value
            .map(|v| {
                STANDARD
                    .decode(v)
                    .map_err(|_| invalid("an Upload-Metadata value is not base64"))
            })
            .transpose()?;
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

fn text_of(metadata: &[(String, Option<Vec<u8>>)], keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|key| {
        metadata
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_ref())
            .and_then(|v| String::from_utf8(v.clone()).ok())
    })
}

/// The file name a tus client gave, as a valid base name; "upload" when there is none.
fn name_from(metadata: &[(String, Option<Vec<u8>>)]) -> String {
    text_of(metadata, &["filename", "name"])
        .and_then(|name| {
            let base = without_bidi(name.rsplit(['/', '\\']).next().unwrap_or_default());
            validate_name(&base).is_ok().then_some(base)
        })
        .unwrap_or_else(|| "upload".to_owned())
}

/// `Upload-Expires` (tus expiration); `Upload-Complete` and, from interop version 8,
/// `Upload-Limit` (the draft).
pub fn progress_headers(
    response: &mut HttpResponseBuilder,
    status: &Status,
    protocol: Protocol,
    max_size: Option<u64>,
) {
    match protocol {
        Protocol::Tus => {
            if let Some(expires) = status.expires_at {
                let expires = HttpDate::from(expires).to_string();
                response.insert_header(("Upload-Expires", expires));
            }
        }
        Protocol::Draft(_) => {
            let complete = if status.state == State::Uploading {
                "?0"
            } else {
                "?1"
            };
            response.insert_header(("Upload-Complete", complete));
            if protocol == Protocol::Draft(8) {
                if let Some(limit) = upload_limit(status, max_size) {
                    response.insert_header(("Upload-Limit", limit));
                }
            }
        }
        Protocol::Native => {}
    }
}

/// The draft's `Upload-Limit` dictionary: the largest size, and the seconds an incomplete
/// upload has left before it expires.
fn upload_limit(status: &Status, max_size: Option<u64>) -> Option<String> {
    let mut members = Vec::new();
    if let Some(max) = max_size {
        members.push(format!("max-size={max}"));
    }
    let left = status
        .expires_at
        .and_then(|at| at.duration_since(SystemTime::now()).ok());
    if let Some(left) = left {
        members.push(format!("max-age={}", left.as_secs()));
    }
    (!members.is_empty()).then(|| members.join(", "))
}

/// The request's append parameters beyond the native ones: the draft's `Upload-Complete: ?1`
/// makes this body the last piece, which the engine settles once the body has ended.
pub fn adjust_append(
    req: &HttpRequest,
    protocol: Protocol,
    request: &mut AppendRequest,
) -> Result<(), ApiError> {
    match protocol {
        Protocol::Native => Ok(()),
        Protocol::Tus => require_tus_content_type(req.headers()),
        Protocol::Draft(version) => {
            if version >= 8 {
                require_content_type(req.headers(), PARTIAL_UPLOAD)?;
            }
            request.complete = upload_complete(req.headers())? == Some(true);
            Ok(())
        }
    }
}

/// The answer to a successful tus or draft PATCH: 204 with the new offset.
pub fn append_response(status: &Status, protocol: Protocol, max_size: Option<u64>) -> HttpResponse {
    let mut response = HttpResponse::NoContent();
    response
        .insert_header(("Upload-Offset", status.received.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    progress_headers(&mut response, status, protocol, max_size);
    response.finish()
}

/// Extra HEAD headers: the metadata as given, a deferred length, and the draft's completion.
pub fn head_headers(
    response: &mut HttpResponseBuilder,
    status: &Status,
    protocol: Protocol,
    max_size: Option<u64>,
) {
    if let Some(metadata) = &status.metadata {
        response.insert_header(("Upload-Metadata", metadata.clone()));
    }
    if status.size.is_none() {
        response.insert_header(("Upload-Defer-Length", "1"));
    }
    if let Protocol::Draft(_) = protocol {
        response.status(StatusCode::NO_CONTENT);
        progress_headers(response, status, protocol, max_size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_parses_and_names_are_made_safe() {
        let pairs = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
            .unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(name_from(&pairs), "world_domination_plan.pdf");
        assert_eq!(pairs[1], ("is_confidential".to_owned(), None));
        let path =
            parse_metadata(&format!("filename {}", STANDARD.encode("C:\\docs\\a.txt"))).unwrap();
        assert_eq!(name_from(&path), "a.txt");
        assert_eq!(name_from(&[]), "upload");
        let bidi = parse_metadata(&format!("filename {}", STANDARD.encode("\u{202E}"))).unwrap();
        assert_eq!(name_from(&bidi), "upload", "removed, not refused");
        assert!(parse_metadata("a b c").is_err());
        assert!(parse_metadata("a !!!").is_err());
        assert!(parse_metadata("a YQ==,a YQ==").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn metadata_parsing_never_panics(text in "[ -~]{0,200}") {
            if let Ok(pairs) = parse_metadata(&text) {
                let name = name_from(&pairs);
                prop_assert!(validate_name(&name).is_ok());
            }
        }

        #[test]
        fn metadata_round_trips(values in proptest::collection::btree_map("[a-z]{1,8}", proptest::collection::vec(any::<u8>(), 0..40), 0..6)) {
            let text = values
                .iter()
                .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
                .collect::<Vec<_>>()
                .join(",");
            let parsed = parse_metadata(&text).unwrap();
            prop_assert_eq!(parsed.len(), values.len());
            for (key, value) in parsed {
                let decoded = value.unwrap_or_default();
                prop_assert_eq!(Some(&decoded), values.get(&key));
            }
        }

        #[test]
        fn upload_complete_is_a_strict_boolean(value in "[ -~]{0,6}") {
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::HeaderName::from_static("upload-complete"), v);
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

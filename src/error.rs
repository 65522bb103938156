//! The one place where errors become HTTP: a status, a stable `error` code and a JSON body.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::{Serialize, Serializer};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

use crate::meta::MetaError;
use crate::upload::{Status, UploadError};

/// Every `error` code an answer can carry: what `ApiError::code` and its `UploadError` codes
/// give, and the codes handlers pass to `ApiError::bad_request`. The OpenAPI document
/// (`GET /openapi.json`) lists these; a test holds the list to exactly the codes the source
/// produces.
pub const ERROR_CODES: &[&str] = &[
    // 400
    "invalid_id",
    "invalid_json",
    "invalid_body",
    "invalid_name",
    "invalid_size",
    "invalid_content_type",
    "invalid_sha256",
    "invalid_form",
    "missing_file",
    "incomplete_body",
    "invalid_offset",
    "invalid_length",
    "invalid_content_length",
    "invalid_checksum",
    "unsupported_checksum_algorithm",
    "checksum_incomplete",
    "checksum_trailer_unsupported",
    "invalid_metadata",
    "invalid_concat",
    "not_partial",
    "invalid_upload_complete",
    "unsupported_draft_version",
    "invalid_query",
    "invalid_received",
    "invalid_timeout",
    "invalid_websocket",
    "invalid_file_id",
    "invalid_start_byte",
    // 401, 403, 421
    "unauthorized",
    "forbidden_origin",
    "forbidden",
    "final_upload",
    "misdirected_request",
    // 404, 405, 408
    "not_found",
    "method_not_allowed",
    "idle_timeout",
    "body_too_slow",
    // 409, 410
    "offset_mismatch",
    "not_uploading",
    "length_mismatch",
    "not_complete",
    "partial_upload",
    "partial_taken",
    "superseded",
    "gone",
    // 412, 413, 415, 416, 422, 429, 431, 460
    "unsupported_version",
    "too_large",
    "body_too_large",
    "unsupported_media_type",
    "range_not_satisfiable",
    "sha256_mismatch",
    "too_many_watchers",
    "rate_limited",
    "headers_too_large",
    "checksum_mismatch",
    // a hook's refusal, with the status it chose
    "rejected",
    // 5xx, 507
    "internal_error",
    "storage_error",
    "database_error",
    "parts_unreadable",
    "too_many_appends",
    "shutting_down",
    "storage_unavailable",
    "hook_unavailable",
    "unhealthy",
    "insufficient_storage",
];

/// The JSON body of every error answer (API.md, "Errors").
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The stable machine-readable code.
    pub error: ErrorCode,
    /// For humans; its wording may change.
    pub message: String,
    /// The bytes the upload has received, where that helps the client resume; the same
    /// number is then in `Upload-Offset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<u64>,
    /// `sha256_mismatch` only: the upload's status, now `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// An error code: one of `ERROR_CODES`, serialized as the string itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ERROR_CODES.iter().copied()))
            .description(Some(
                "The stable machine-readable code of API.md's error table.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {}

/// Everything a handler can fail with: the engine's errors and the HTTP layer's own.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// A missing or malformed header, field or query value.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// A chunk checksum whose digest has the wrong length for its algorithm: it can match no
    /// chunk, so it is answered as a mismatch (460), before a byte is stored.
    #[error("{0}")]
    DigestLength(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("the range is outside the {len}-byte file")]
    RangeNotSatisfiable { len: u64 },
    #[error("this needs a valid bearer token (Authorization: Bearer …)")]
    Unauthorized,
    #[error("the request's headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("no such resource")]
    RouteNotFound,
    #[error("metrics are served to loopback only (or set --metrics-token)")]
    MetricsLoopbackOnly,
    #[error("too many uploads created from this address; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("origin {0} may not use this service from a browser (see --allowed-origin)")]
    ForbiddenOrigin(String),
    #[error("this service does not answer for host {0:?} (see --allowed-host)")]
    MisdirectedRequest(String),
    #[error("too many watchers are open (limit {limit})")]
    TooManyWatchers { per_upload: bool, limit: usize },
    /// With the methods the path takes, for `Allow` (RFC 9110 requires it on a 405).
    #[error("this method is not allowed here")]
    MethodNotAllowed { allow: &'static str },
    #[error("unhealthy: {0}")]
    Unhealthy(String),
    #[error("this server speaks tus {0}")]
    UnsupportedTusVersion(&'static str),
    /// A request that created an upload and then failed: the answer still names the upload.
    #[error("{error}")]
    AfterCreate {
        location: String,
        error: Box<ApiError>,
    },
    /// An error a protocol answers with another status than the native API (tus: a length
    /// change is 400, not 409); its code, body and headers stay the same.
    #[error("{error}")]
    WithStatus {
        status: StatusCode,
        error: Box<ApiError>,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// This error, answered with `Location` naming the upload the request created.
    pub fn after_create(self, location: String) -> ApiError {
        ApiError::AfterCreate {
            location,
            error: Box::new(self),
        }
    }

    /// This error, answered with `status` instead of its own.
    pub fn with_status(self, status: StatusCode) -> ApiError {
        ApiError::WithStatus {
            status,
            error: Box::new(self),
        }
    }

    /// The stable machine-readable code of API.md.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Upload(e) => upload_code(e),
            ApiError::BadRequest { code, .. } => code,
            ApiError::DigestLength(_) => "checksum_mismatch",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::BodyTooLarge(_) => "body_too_large",
            ApiError::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            ApiError::Unauthorized => "unauthorized",
            ApiError::HeadersTooLarge(_) => "headers_too_large",
            ApiError::RouteNotFound => "not_found",
            ApiError::ForbiddenOrigin(_) => "forbidden_origin",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::MetricsLoopbackOnly => "forbidden",
            ApiError::MisdirectedRequest(_) => "misdirected_request",
            ApiError::TooManyWatchers { .. } => "too_many_watchers",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Unhealthy(_) => "unhealthy",
            ApiError::UnsupportedTusVersion(_) => "unsupported_version",
            ApiError::AfterCreate { error, .. } | ApiError::WithStatus { error, .. } => {
                error.code()
            }
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// What the client is told. Server-side failures say what happened, not where: their
    /// details (paths, SQL) go to the log only.
    fn client_message(&self) -> String {
        match self {
            ApiError::Upload(UploadError::Storage(e)) if e.is_out_of_space() => {
                "the server's disk is full; what was stored is kept, retry later".into()
            }
            ApiError::Upload(e) if e.is_unavailable() => {
                "the server cannot reach its storage; what was stored is kept, retry later".into()
            }
            ApiError::Upload(UploadError::Storage(_)) => {
                "the server could not store or read the bytes".into()
            }
            // Its detail (the hook's address, its error) is the operator's business: logged.
            ApiError::Upload(UploadError::Hook(_)) => {
                "the service's hook could not decide on this request now; retry later".into()
            }
            ApiError::Upload(UploadError::Db(MetaError::Stale)) => {
                "another request moved this upload on meanwhile; ask for its offset and resume"
                    .into()
            }
            ApiError::Upload(UploadError::Db(_)) => "the server's database failed".into(),
            ApiError::Upload(UploadError::Internal(_)) | ApiError::Internal(_) => {
                "internal error; the server's log has the details".into()
            }
            ApiError::Unhealthy(_) => "unhealthy; the server's log has the details".into(),
            _ => self.to_string(),
        }
    }

    fn received(&self) -> Option<u64> {
        match self {
            ApiError::Upload(e) => e.received(),
            ApiError::AfterCreate { error, .. } | ApiError::WithStatus { error, .. } => {
                error.received()
            }
            _ => None,
        }
    }
}

fn upload_code(error: &UploadError) -> &'static str {
    match error {
        UploadError::NotFound => "not_found",
        UploadError::Gone(_) => "gone",
        UploadError::InvalidName(_) => "invalid_name",
        UploadError::TooLarge { .. } => "too_large",
        UploadError::OffsetMismatch { .. } => "offset_mismatch",
        UploadError::NotUploading { .. } => "not_uploading",
        UploadError::LengthMismatch { .. } => "length_mismatch",
        UploadError::LengthBelowReceived { .. } => "invalid_length",
        UploadError::ChecksumMismatch { .. } => "checksum_mismatch",
        UploadError::ChecksumIncomplete { .. } => "checksum_incomplete",
        UploadError::Sha256Mismatch { .. } => "sha256_mismatch",
        UploadError::BodyIncomplete => "incomplete_body",
        UploadError::NotComplete { .. } => "not_complete",
        UploadError::Superseded { .. } => "superseded",
        UploadError::ShuttingDown { .. } => "shutting_down",
        UploadError::IdleTimeout { .. } => "idle_timeout",
        UploadError::Rejected { .. } => "rejected",
        UploadError::InvalidConcat(_) => "invalid_concat",
        UploadError::NotPartial(_) => "not_partial",
        UploadError::PartTaken => "partial_taken",
        UploadError::FinalUpload => "final_upload",
        UploadError::PartialContent => "partial_upload",
        UploadError::PartsUnreadable(_) => "parts_unreadable",
        UploadError::Hook(_) => "hook_unavailable",
        UploadError::Storage(e) if e.is_out_of_space() => "insufficient_storage",
        e if e.is_unavailable() => "storage_unavailable",
        UploadError::Unavailable { .. } => "storage_unavailable",
        UploadError::DiskFull { .. } | UploadError::NoInodes { .. } => "insufficient_storage",
        UploadError::TooManyAppends | UploadError::TooManyClientAppends { .. } => {
            "too_many_appends"
        }
        UploadError::TooSlow { .. } => "body_too_slow",
        UploadError::Storage(_) => "storage_error",
        UploadError::Db(MetaError::Stale) => "superseded",
        UploadError::Db(_) => "database_error",
        UploadError::Internal(_) => "internal_error",
    }
}

/// tus' checksum extension: 460 Checksum Mismatch.
fn checksum_mismatch() -> StatusCode {
    StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST)
}

fn upload_status(error: &UploadError) -> StatusCode {
    match error {
        UploadError::NotFound => StatusCode::NOT_FOUND,
        UploadError::Gone(_) => StatusCode::GONE,
        UploadError::InvalidName(_)
        | UploadError::InvalidConcat(_)
        | UploadError::NotPartial(_)
        | UploadError::LengthBelowReceived { .. }
        | UploadError::ChecksumIncomplete { .. }
        | UploadError::BodyIncomplete => StatusCode::BAD_REQUEST,
        UploadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        UploadError::OffsetMismatch { .. }
        | UploadError::NotUploading { .. }
        | UploadError::LengthMismatch { .. }
        | UploadError::NotComplete { .. }
        | UploadError::PartTaken
        | UploadError::PartialContent
        | UploadError::Superseded { .. } => StatusCode::CONFLICT,
        UploadError::FinalUpload => StatusCode::FORBIDDEN,
        UploadError::PartsUnreadable(_) => StatusCode::INTERNAL_SERVER_ERROR,
        UploadError::ChecksumMismatch { .. } => checksum_mismatch(),
        UploadError::Sha256Mismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        UploadError::ShuttingDown { .. } => StatusCode::SERVICE_UNAVAILABLE,
        UploadError::IdleTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
        // The hook's own choice (checked to be 4xx or 5xx when it answered).
        UploadError::Rejected { status, .. } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::FORBIDDEN)
        }
        UploadError::Hook(_) => StatusCode::SERVICE_UNAVAILABLE,
        UploadError::Storage(e) if e.is_out_of_space() => StatusCode::INSUFFICIENT_STORAGE,
        e if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
        UploadError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        UploadError::DiskFull { .. } | UploadError::NoInodes { .. } => {
            StatusCode::INSUFFICIENT_STORAGE
        }
        UploadError::TooManyAppends => StatusCode::SERVICE_UNAVAILABLE,
        UploadError::TooManyClientAppends { .. } => StatusCode::TOO_MANY_REQUESTS,
        UploadError::TooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
        UploadError::Db(MetaError::Stale) => StatusCode::CONFLICT,
        UploadError::Storage(_) | UploadError::Db(_) | UploadError::Internal(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Upload(e) => upload_status(e),
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::DigestLength(_) => checksum_mismatch(),
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::ForbiddenOrigin(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MetricsLoopbackOnly => StatusCode::FORBIDDEN,
            ApiError::MisdirectedRequest(_) => StatusCode::MISDIRECTED_REQUEST,
            // Per upload, the client asks too much; in total, the server is full.
            ApiError::TooManyWatchers {
                per_upload: true, ..
            } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooManyWatchers { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unhealthy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UnsupportedTusVersion(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::AfterCreate { error, .. } => error.status_code(),
            ApiError::WithStatus { status, .. } => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::AfterCreate { location, error } = self {
            let mut response = error.error_response();
            if let Ok(value) = header::HeaderValue::from_str(location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            return response;
        }
        if let ApiError::WithStatus { status, error } = self {
            let mut response = error.error_response();
            *response.status_mut() = *status;
            return response;
        }
        let status = self.status_code();
        if status == StatusCode::INTERNAL_SERVER_ERROR || status == StatusCode::INSUFFICIENT_STORAGE
        {
            tracing::error!(error = %self, source = ?std::error::Error::source(self), "request failed");
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error = %self, "request refused");
        }
        let mut body = ErrorBody {
            error: ErrorCode(self.code()),
            message: self.client_message(),
            received: self.received(),
            status: None,
        };
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        if let Some(received) = body.received {
            response.insert_header(("Upload-Offset", received.to_string()));
        }
        if let ApiError::Upload(UploadError::Sha256Mismatch { status, .. }) = self {
            body.status = Some(Status::clone(status));
        }
        if let ApiError::Upload(
            UploadError::TooManyAppends | UploadError::TooManyClientAppends { .. },
        ) = self
        {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        if let ApiError::Upload(e) = self {
            if e.is_unavailable() || matches!(e, UploadError::Hook(_)) {
                response.insert_header((header::RETRY_AFTER, "5"));
            }
        }
        if let ApiError::UnsupportedTusVersion(version) = self {
            response.insert_header(("Tus-Version", *version));
        }
        if let ApiError::RateLimited { retry_after } = self {
            response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
        }
        if let ApiError::MethodNotAllowed { allow } = self {
            response.insert_header((header::ALLOW, *allow));
        }
        if let ApiError::Unauthorized = self {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let ApiError::RangeNotSatisfiable { len } = self {
            response.insert_header((header::CONTENT_RANGE, format!("bytes */{len}")));
        }
        response.json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody as _;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The string literals in `text`.
    fn literals(text: &str) -> Vec<&str> {
        text.split('"').skip(1).step_by(2).collect()
    }

    /// The codes passed to each call of `function` in `text`: its first argument when that is
    /// a string literal (`last` false), or its last one (`last` true).
    fn codes_passed_to<'a>(text: &'a str, function: &str, last: bool) -> Vec<&'a str> {
        let call = format!("{function}(");
        let mut codes = Vec::new();
        for (at, _) in text.match_indices(&call) {
            let rest = &text[at + call.len()..];
            // The argument list: up to the parenthesis that closes it.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(rest.len(), |(end, _)| end);
            let args = &rest[..end];
            let found = match last {
                false if args.trim_start().starts_with('"') => literals(args).first().copied(),
                true if args.trim_end().trim_end_matches(',').ends_with('"') => {
                    literals(args).last().copied()
                }
                _ => None,
            };
            codes.extend(found);
        }
        codes
    }

    fn sources(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(std::fs::read_to_string(&path).expect("a source file"));
            }
        }
    }

    /// `ERROR_CODES` is exactly the set of codes the source can answer with: those of
    /// `ApiError::code` and `upload_code`, and every code handed to `bad_request` or to the
    /// header readers.
    #[test]
    fn error_codes_lists_every_code_the_source_produces() {
        let listed: BTreeSet<&str> = ERROR_CODES.iter().copied().collect();
        assert_eq!(listed.len(), ERROR_CODES.len(), "a code is listed twice");

        let this = include_str!("error.rs");
        let body_of = |signature: &str| {
            let start = this.find(signature).expect("the function is in error.rs");
            let end = start + this[start..].find("\n}\n").unwrap_or(this.len() - start);
            &this[start..end]
        };
        let code_fn = body_of("    pub fn code(&self)");
        let code_fn = &code_fn[..code_fn.find("\n    }\n").unwrap_or(code_fn.len())];
        let mut produced: BTreeSet<String> = literals(code_fn)
            .into_iter()
            .chain(literals(body_of("fn upload_code(")))
            .map(str::to_owned)
            .collect();

        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        for file in &files {
            for code in codes_passed_to(file, "bad_request", false) {
                produced.insert(code.to_owned());
            }
            for function in ["optional_count", "required_count"] {
                for code in codes_passed_to(file, function, true) {
                    produced.insert(code.to_owned());
                }
            }
        }
        let produced: BTreeSet<&str> = produced.iter().map(String::as_str).collect();
        let unlisted: Vec<_> = produced.difference(&listed).collect();
        let unused: Vec<_> = listed.difference(&produced).collect();
        assert!(
            unlisted.is_empty(),
            "codes missing from ERROR_CODES: {unlisted:?}"
        );
        assert!(
            unused.is_empty(),
            "ERROR_CODES that nothing produces: {unused:?}"
        );
    }

    #[test]
    fn an_error_answers_its_code_message_and_offset_as_json() {
        let error = ApiError::Upload(UploadError::OffsetMismatch {
            given: 1,
            received: 5,
        });
        let response = error.error_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let header = |name: &str| response.headers().get(name).map(|v| v.as_bytes().to_vec());
        assert_eq!(header("upload-offset"), Some(b"5".to_vec()));
        assert_eq!(header("cache-control"), Some(b"no-store".to_vec()));
        let body = response.into_body().try_into_bytes().expect("a whole body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "error": "offset_mismatch",
                "message": "Upload-Offset is 1, but the upload has received 5 bytes",
                "received": 5,
            })
        );
        let plain = ApiError::bad_request("invalid_offset", "no");
        let body = plain.error_response().into_body().try_into_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body.expect("a body")).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({"error": "invalid_offset", "message": "no"})
        );
    }
}

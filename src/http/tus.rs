//! tus 1.0.0: creation (with an upload, or with a deferred length), appends, termination
//! and expiration on the native resource, and OPTIONS discovery.

use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};

use super::concat::{self, UploadConcat};
use super::extract::{optional_count, require_content_type};
use super::flow::{self, Creation};
use super::{draft, respond, Ctx};
use crate::error::ApiError;
use crate::upload::{AppendRequest, Engine, Status, UploadError};

pub const TUS_VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,termination,\
                          expiration,checksum,concatenation,concatenation-unfinished";
const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
const TUS_CONTENT_TYPE: &str = "application/offset+octet-stream";

/// `OPTIONS /uploads`, whatever the protocol: what this server speaks.
#[utoipa::path(
    options,
    path = "/uploads",
    operation_id = "discoverUploads",
    tag = "uploads",
    summary = "What this server speaks (tus discovery, the draft's limits)",
    params(
        ("Tus-Resumable" = Option<String>, Header,
            description = "tus clients send their version; any is answered."),
    ),
    responses(Discovery),
)]
pub async fn options(engine: web::Data<Engine>) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response
        .insert_header(("Tus-Version", TUS_VERSION))
        .insert_header(("Tus-Extension", EXTENSIONS))
        .insert_header(("Tus-Checksum-Algorithm", CHECKSUM_ALGORITHMS));
    let max_size = engine.settings().max_upload_size;
    if let Some(max) = max_size {
        response.insert_header(("Tus-Max-Size", max.to_string()));
    }
    draft::discovery(&mut response, max_size);
    response.finish()
}

/// What both OPTIONS answer.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 200,
    description = "The protocols' capabilities, in headers.",
    headers(
        ("Tus-Resumable" = String, description = "Always `1.0.0`."),
        ("Tus-Version" = String, description = "Always `1.0.0`."),
        ("Tus-Extension" = String, description = "Always: the tus extensions offered."),
        ("Tus-Checksum-Algorithm" = String, description = "Always `sha1,sha256`."),
        ("Tus-Max-Size" = u64, description = "`--max-upload-size`, when set."),
        ("Accept-Patch" = String, description = "Always `application/partial-upload` (the draft's appends)."),
        ("Upload-Limit" = String, description = "draft: `max-size=…`, when `--max-upload-size` is set."),
    )
)]
struct Discovery;

/// `OPTIONS /uploads/{id}`: the same as `OPTIONS /uploads` (the id is not looked at).
#[utoipa::path(
    options,
    path = "/uploads/{id}",
    operation_id = "discoverUpload",
    tag = "uploads",
    summary = "What this server speaks (the same as OPTIONS /uploads)",
    description = "The id is not looked at: any id is answered.",
    params(
        ("id" = String, Path, description = "Any id."),
        ("Tus-Resumable" = Option<String>, Header,
            description = "tus clients send their version; any is answered."),
    ),
    responses(Discovery),
)]
pub async fn options_upload(engine: web::Data<Engine>) -> HttpResponse {
    options(engine).await
}

/// `POST /uploads` with `Tus-Resumable`: creation, with data (creation-with-upload) or not.
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    engine: web::Data<Engine>,
    ctx: web::Data<Ctx>,
) -> Result<HttpResponse, ApiError> {
    flow::admit_creation(&req, &ctx)?;
    let body = super::gated_body(&req, payload);
    let concat = concat::read(&req, &ctx)?;
    if let Some(UploadConcat::Final(parts)) = concat {
        concat::check_final_request(req.headers())?;
        let status = Creation::create_final(&req, parts, &engine).await?;
        let location = respond::location(&ctx, &status.id);
        let mut response = respond::created(location, &status);
        expiration(&mut response, &status);
        return Ok(response.json(&status));
    }
    let partial = matches!(concat, Some(UploadConcat::Partial));
    let creation = Creation::read(&req, declared_size, partial)?;
    if creation.has_body() {
        require_content_type(req.headers(), TUS_CONTENT_TYPE)?;
    }
    let created = creation.run(body, engine, &ctx).await?;
    let mut response = respond::created(created.location, &created.status);
    expiration(&mut response, &created.status);
    Ok(response.json(&created.status))
}

/// The size a creation declares: `Upload-Length`, or `Upload-Defer-Length: 1`.
fn declared_size(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let length = optional_count(headers, "Upload-Length", "invalid_length")?;
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

/// `PATCH /uploads/{id}` with `Tus-Resumable`: 204 with the new offset.
pub async fn append(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let status = flow::append(&req, &path, payload, engine, tus_append)
        .await
        .map_err(tus_append_error)?;
    let mut response = respond::appended(&status);
    expiration(&mut response, &status);
    Ok(response.finish())
}

/// An `Upload-Length` that would change the upload's length is 400 in tus (as tusd answers),
/// where the native API says 409; the code stays `length_mismatch`. (A tus append never
/// declares itself the last piece, so this is the only length mismatch it can meet.)
fn tus_append_error(error: ApiError) -> ApiError {
    match error {
        ApiError::Upload(UploadError::LengthMismatch { .. }) => {
            error.with_status(StatusCode::BAD_REQUEST)
        }
        error => error,
    }
}

fn tus_append(headers: &HeaderMap, _: &mut AppendRequest) -> Result<(), ApiError> {
    require_content_type(headers, TUS_CONTENT_TYPE)?;
    refuse_checksum_trailer(headers)
}

/// tus' checksum-trailer is not offered: actix-http drops a request's trailers unread, so a
/// checksum sent as one could never be checked. A client that announces one is refused
/// before a byte is stored, rather than have its chunk stored unverified.
fn refuse_checksum_trailer(headers: &HeaderMap) -> Result<(), ApiError> {
    let announced = headers
        .get_all("Trailer")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|name| name.trim().eq_ignore_ascii_case("upload-checksum"));
    match announced {
        true => Err(ApiError::bad_request(
            "checksum_trailer_unsupported",
            "this server cannot read trailers: send Upload-Checksum as a header",
        )),
        false => Ok(()),
    }
}

/// tus expiration: `Upload-Expires`, while the upload may still expire.
pub(super) fn expiration(response: &mut HttpResponseBuilder, status: &Status) {
    if let Some(expires) = respond::expires_http_date(status) {
        response.insert_header(("Upload-Expires", expires));
    }
}

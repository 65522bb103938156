//! The protocol of javascript.info's "Resumable file upload" chapter, behind --tutorial-api.
//!
//! Its client picks the file id itself, so anyone who can guess one can append to that
//! upload: that is why it is off by default.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::extract::{client, optional_count, parse_count, parse_id};
use super::flow;
use crate::error::{ApiError, ErrorBody};
use crate::upload::input::validate_name;
use crate::upload::{AppendRequest, Engine, NewUpload, UploadError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/status")
            .route(web::get().to(status))
            .default_service(super::only("GET")),
    )
    .service(
        web::resource("/upload")
            .route(web::post().to(upload))
            .default_service(super::only("POST")),
    );
}

fn file_id(req: &HttpRequest) -> Result<String, ApiError> {
    req.headers()
        .get("X-File-Id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= 1024)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad_request("invalid_file_id", "the X-File-Id header is required"))
}

/// The tutorial's ids read `<name>-<size>-<lastModified>`; where one does, its name and size
/// describe the new upload.
fn new_upload(file_id: &str) -> NewUpload {
    let mut parts = file_id.rsplitn(3, '-');
    let (_modified, size, name) = (parts.next(), parts.next(), parts.next());
    let size = size.and_then(|s| s.parse::<u64>().ok());
    let name = name
        .filter(|n| size.is_some() && validate_name(n).is_ok())
        .unwrap_or("upload")
        .to_owned();
    NewUpload {
        name,
        size,
        ..NewUpload::default()
    }
}

fn plain(text: String) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(text)
}

/// `GET /status`: the bytes received for the file id, `0` for one never seen.
#[utoipa::path(
    get,
    path = "/status",
    operation_id = "tutorialStatus",
    tag = "tutorial",
    summary = "Tutorial protocol: the bytes received for a file id (only with --tutorial-api)",
    description = "javascript.info's \"Resumable file upload\" protocol. This route exists only \
        when the server runs with `--tutorial-api`.",
    params(
        ("X-File-Id" = String, Header, description = "The client's file id, up to 1024 bytes, such as `<name>-<size>-<lastModified>`."),
    ),
    responses(
        (status = 200, body = String, content_type = "text/plain",
            description = "The bytes received, in decimal; `0` for a file id never seen.",
            headers(("Cache-Control" = String, description = "Always `no-store`."))),
        (status = 400, body = ErrorBody, description = "`invalid_file_id`: `X-File-Id` missing or too long."),
        (status = 500, body = ErrorBody, description = "`database_error` or `internal_error`."),
        (status = 503, body = ErrorBody, description = "`storage_unavailable`: retry later."),
    ),
)]
pub(super) async fn status(
    req: HttpRequest,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let id = file_id(&req)?;
    let received = engine.find_by_key(&id).await?.map_or(0, |s| s.received);
    Ok(plain(received.to_string()))
}

/// `POST /upload`: appends the body when `X-Start-Byte` equals the bytes received.
#[utoipa::path(
    post,
    path = "/upload",
    operation_id = "tutorialUpload",
    tag = "tutorial",
    summary = "Tutorial protocol: append the body at the start byte (only with --tutorial-api)",
    description = "The first request for a file id (start byte 0) creates its upload, which \
        needs a bearer token when `--token` is set and counts against `--create-rate`. This \
        route exists only when the server runs with `--tutorial-api`.",
    params(
        ("X-File-Id" = String, Header, description = "The client's file id, up to 1024 bytes."),
        ("X-Start-Byte" = u64, Header, description = "Must equal the bytes received."),
    ),
    request_body(
        description = "The bytes to add.",
        content((String = "application/octet-stream")),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, body = String, content_type = "text/plain",
            description = "`Success <received>`.",
            headers(("Cache-Control" = String, description = "Always `no-store`."))),
        (status = 400, body = ErrorBody, description = "`invalid_file_id`, `invalid_start_byte`, \
            `invalid_content_length`, or `offset_mismatch`: the start byte is not the bytes received."),
        (status = 401, body = ErrorBody, description = "`unauthorized`: the first request, without a valid bearer token while `--token` is set."),
        (status = 403, body = ErrorBody, description = "`forbidden_origin`: a browser's `Origin` that may not write here."),
        (status = 404, body = ErrorBody, description = "`not_found`: the file id's upload vanished meanwhile."),
        (status = 408, body = ErrorBody, description = "`idle_timeout` or `body_too_slow`: what arrived is kept."),
        (status = 409, body = ErrorBody, description = "`not_uploading` (the upload is complete) or `superseded`."),
        (status = 410, body = ErrorBody, description = "`gone`: the upload was deleted or expired meanwhile."),
        (status = 413, body = ErrorBody, description = "`too_large`: past the size, or past `--max-upload-size`."),
        (status = 429, body = ErrorBody, description = "`rate_limited` (the first request) or `too_many_appends`."),
        (status = 500, body = ErrorBody, description = "`internal_error`, `storage_error` or `database_error`."),
        (status = 503, body = ErrorBody, description = "`too_many_appends`, `shutting_down`, `storage_unavailable` or `hook_unavailable`."),
        (status = 507, body = ErrorBody, description = "`insufficient_storage`: the disk is (nearly) full."),
    ),
)]
pub(super) async fn upload(
    req: HttpRequest,
    payload: web::Payload,
    engine: web::Data<Engine>,
    ctx: web::Data<super::Ctx>,
) -> Result<HttpResponse, ApiError> {
    let payload = super::gated_body(&req, payload);
    let id = file_id(&req)?;
    let start = req
        .headers()
        .get("X-Start-Byte")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_count)
        .ok_or_else(|| {
            ApiError::bad_request("invalid_start_byte", "X-Start-Byte must be a byte count")
        })?;
    let content_length = optional_count(req.headers(), "Content-Length", "invalid_content_length")?;
    let status = match engine.find_by_key(&id).await? {
        Some(status) => status,
        None if start == 0 => {
            flow::admit_creation(&req, &ctx)?;
            engine.create_for_key(&id, new_upload(&id)).await?
        }
        None => {
            return Err(ApiError::bad_request(
                "offset_mismatch",
                "nothing was received for this file yet; start at byte 0",
            ))
        }
    };
    let upload_id = parse_id(&status.id)?;
    let request = AppendRequest {
        offset: start,
        length: None,
        content_length,
        checksum: None,
        complete: false,
        client: client(&req),
    };
    match flow::append_body(engine.into_inner(), upload_id, request, payload).await {
        Ok(status) => Ok(plain(format!("Success {}", status.received))),
        // The tutorial answers a wrong start byte with 400, not 409.
        Err(ApiError::Upload(UploadError::OffsetMismatch { received, .. })) => {
            Err(ApiError::bad_request(
                "offset_mismatch",
                format!("X-Start-Byte must equal the {received} bytes received"),
            ))
        }
        Err(e) => Err(e),
    }
}

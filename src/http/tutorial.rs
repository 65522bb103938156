//! The protocol of javascript.info's "Resumable file upload" chapter, behind --tutorial-api.
//!
//! Its client picks the file id itself, so anyone who can guess one can append to that
//! upload: that is why it is off by default.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::extract::{client, optional_count, parse_count, parse_id};
use super::flow;
use crate::error::ApiError;
use crate::upload::input::validate_name;
use crate::upload::{AppendRequest, Engine, NewUpload, UploadError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/status", web::get().to(status))
        .route("/upload", web::post().to(upload));
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
async fn status(req: HttpRequest, engine: web::Data<Engine>) -> Result<HttpResponse, ApiError> {
    let id = file_id(&req)?;
    let received = engine.find_by_key(&id).await?.map_or(0, |s| s.received);
    Ok(plain(received.to_string()))
}

/// `POST /upload`: appends the body when `X-Start-Byte` equals the bytes received.
async fn upload(
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

//! The IETF draft "Resumable Uploads for HTTP" on the native resource: creation that may
//! carry the whole file (`Upload-Complete`), appends of `application/partial-upload`, and
//! `Upload-Limit`.

use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};

use super::extract::{optional_count, parse_id, require_content_type, upload_complete};
use super::flow::{self, Creation};
use super::protocol::{protocol_of, Protocol};
use super::{respond, Ctx};
use crate::error::ApiError;
use crate::upload::{AppendRequest, Engine, State, Status};

/// Interop versions of the draft served: 6 is draft-05, what tus-js-client's
/// `ietf-draft-05` protocol speaks; 8 is the newest (drafts -09 on), which adds `Upload-Limit`,
/// `Accept-Patch` in OPTIONS, and requires `application/partial-upload` on appends.
pub const INTEROP_VERSIONS: &[u32] = &[6, 8];
const PARTIAL_UPLOAD: &str = "application/partial-upload";

/// The interop version the request speaks (the middleware has let only served ones through).
fn version(req: &HttpRequest) -> u32 {
    match protocol_of(req.headers()) {
        Protocol::Draft(version) => version,
        _ => 0,
    }
}

/// `POST /uploads` with `Upload-Draft-Interop-Version`: creation, with the file's first
/// piece or all of it.
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    engine: web::Data<Engine>,
    ctx: web::Data<Ctx>,
) -> Result<HttpResponse, ApiError> {
    flow::admit_creation(&req, &ctx)?;
    let body = super::gated_body(&req, payload);
    // `Upload-Length` if the client knows it; otherwise the size is learnt when the last
    // piece ends normally (never from a `Content-Length` that a cut body may not reach).
    let creation = Creation::read(
        &req,
        |headers| optional_count(headers, "Upload-Length", "invalid_length"),
        false,
    )?;
    let max_size = engine.settings().max_upload_size;
    let created = creation.run(body, engine, &ctx).await?;
    let mut response = respond::created(created.location, &created.status);
    progress(&mut response, &created.status, version(&req), max_size);
    Ok(response.json(&created.status))
}

/// `PATCH /uploads/{id}` with `Upload-Draft-Interop-Version`: 204 with the new offset.
pub async fn append(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let version = version(&req);
    let max_size = engine.settings().max_upload_size;
    let draft_append = |headers: &HeaderMap, request: &mut AppendRequest| {
        if version >= 8 {
            require_content_type(headers, PARTIAL_UPLOAD)?;
        }
        // `Upload-Complete: ?1` makes this body the last piece, which the engine settles
        // once the body has ended.
        request.complete = upload_complete(headers)? == Some(true);
        Ok(())
    };
    let status = flow::append(&req, &path, payload, engine, draft_append).await?;
    let mut response = respond::appended(&status);
    progress(&mut response, &status, version, max_size);
    Ok(response.finish())
}

/// `HEAD /uploads/{id}` with `Upload-Draft-Interop-Version`: 204, and whether it is complete.
pub async fn head(
    req: HttpRequest,
    path: web::Path<String>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let status = engine.status(id).await?;
    let mut response = respond::head(&status);
    response.status(StatusCode::NO_CONTENT);
    let max_size = engine.settings().max_upload_size;
    progress(&mut response, &status, version(&req), max_size);
    Ok(response.finish())
}

/// `Upload-Complete`, and from interop version 8 `Upload-Limit`.
fn progress(
    response: &mut HttpResponseBuilder,
    status: &Status,
    version: u32,
    max_size: Option<u64>,
) {
    let complete = if status.state == State::Uploading {
        "?0"
    } else {
        "?1"
    };
    response.insert_header(("Upload-Complete", complete));
    if version == 8 {
        if let Some(limit) = upload_limit(status, max_size) {
            response.insert_header(("Upload-Limit", limit));
        }
    }
}

/// The draft's `Upload-Limit` dictionary: the largest size, and the seconds an incomplete
/// upload has left before it expires.
fn upload_limit(status: &Status, max_size: Option<u64>) -> Option<String> {
    let mut members = Vec::new();
    if let Some(max) = max_size {
        members.push(size_limit(max));
    }
    if let Some(left) = respond::time_left(status) {
        members.push(format!("max-age={}", left.as_secs()));
    }
    (!members.is_empty()).then(|| members.join(", "))
}

/// `Upload-Limit` with the largest size alone, as OPTIONS and a 413 carry it.
pub fn size_limit(max: u64) -> String {
    format!("max-size={max}")
}

/// The draft's discovery in OPTIONS: appends take `application/partial-upload`, within
/// these limits.
pub fn discovery(response: &mut HttpResponseBuilder, max_size: Option<u64>) {
    response.insert_header(("Accept-Patch", PARTIAL_UPLOAD));
    if let Some(max) = max_size {
        response.insert_header(("Upload-Limit", size_limit(max)));
    }
}

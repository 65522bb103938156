//! Answers shared by the protocols: the status as JSON, `Location`, `Upload-Offset`, the
//! HEAD headers, and the time an upload has left (the only place the HTTP layer reads the
//! status' time fields).

use std::time::{Duration, SystemTime};

use actix_web::http::header::{self, HttpDate};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, HttpResponseBuilder};

use super::Ctx;
use crate::upload::{State, Status};

/// The status as an answer: JSON body, `Upload-Offset`, never cached.
pub fn status_response(code: StatusCode, status: &Status) -> HttpResponse {
    HttpResponse::build(code)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("Upload-Offset", status.received.to_string()))
        .json(status)
}

/// The upload's URL: absolute under --public-url, else a path.
pub fn location(ctx: &Ctx, id: &str) -> String {
    match &ctx.public_url {
        Some(base) => format!("{}/uploads/{id}", base.trim_end_matches('/')),
        None => format!("/uploads/{id}"),
    }
}

/// The native creation's answer: 201, the status as JSON, and `Location`.
pub fn created_json(ctx: &Ctx, status: &Status) -> HttpResponse {
    let mut response = status_response(StatusCode::CREATED, status);
    if let Ok(value) = header::HeaderValue::from_str(&location(ctx, &status.id)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// A tus or draft creation's answer, before the protocol's own headers and the status as its
/// JSON body (as the native creation's, so that one document describes all three): 201,
/// `Location` and `Upload-Offset`. tus and the draft leave the body open; their clients read
/// the headers.
pub fn created(location: String, status: &Status) -> HttpResponseBuilder {
    let mut response = HttpResponse::Created();
    response
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::LOCATION, location))
        .insert_header(("Upload-Offset", status.received.to_string()));
    response
}

/// A tus or draft append's answer, before the protocol's own headers: 204 with the new offset.
pub fn appended(status: &Status) -> HttpResponseBuilder {
    let mut response = HttpResponse::NoContent();
    response
        .insert_header(("Upload-Offset", status.received.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    response
}

/// `HEAD /uploads/{id}` in every protocol: the offset, the length if known (else tus'
/// `Upload-Defer-Length: 1`), and tus `Upload-Metadata` as it was given.
/// A final upload still waiting for its parts has no offset of its own, and its length is
/// not deferred: it is the parts' total, shown once every part knows its own (tus).
pub fn head(status: &Status) -> HttpResponseBuilder {
    let waiting_final = status.parts.is_some() && status.state == State::Uploading;
    let mut response = HttpResponse::Ok();
    response.insert_header((header::CACHE_CONTROL, "no-store"));
    if !waiting_final {
        response.insert_header(("Upload-Offset", status.received.to_string()));
    }
    if let Some(size) = status.size {
        response.insert_header(("Upload-Length", size.to_string()));
    }
    if let Some(metadata) = &status.raw_metadata {
        response.insert_header(("Upload-Metadata", metadata.clone()));
    }
    if status.size.is_none() && !waiting_final {
        response.insert_header(("Upload-Defer-Length", "1"));
    }
    response
}

/// When an incomplete upload expires, as an HTTP date (tus `Upload-Expires`).
pub fn expires_http_date(status: &Status) -> Option<String> {
    Some(HttpDate::from(status.expires_at?).to_string())
}

/// The time an incomplete upload has left before it expires (the draft's `max-age`),
/// counted from the expiry in whole seconds, as the status shows it.
pub fn time_left(status: &Status) -> Option<Duration> {
    let expires = status
        .expires_at?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?;
    let shown = SystemTime::UNIX_EPOCH + Duration::from_secs(expires.as_secs());
    shown.duration_since(SystemTime::now()).ok()
}

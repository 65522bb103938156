//! The JSON/curl API of API.md: create (JSON or a form), status, HEAD, append, delete; and
//! the operator's health and metrics endpoints.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::extract::{client, content_type, detached, is_media_type, parse_id, read_limited};
use super::respond::{self, status_response};
use super::{concat, flow, form_answer, multipart, tus, Ctx};
use crate::error::ApiError;
use crate::upload::input::parse_sha256_hex;
use crate::upload::{Engine, NewUpload, UploadId};

/// A JSON creation body is a few hundred bytes; this is generous.
const JSON_BODY_LIMIT: usize = 64 * 1024;

/// `POST /uploads`: JSON describes an upload; multipart carries the file itself.
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    engine: web::Data<Engine>,
    ctx: web::Data<Ctx>,
) -> Result<HttpResponse, ApiError> {
    let admitted = flow::admit_creation(&req, &ctx);
    let media = content_type(req.headers());
    match media.as_ref().map(mime::Mime::essence_str) {
        Some("application/json") => {
            admitted?;
            let body = read_limited(payload, JSON_BODY_LIMIT).await?;
            let (new, parts) = parse_create_json(&body)?;
            let status = match parts {
                Some(parts) => engine.create_final(new, parts).await?,
                None => engine.create(new).await?,
            };
            Ok(respond::created_json(&ctx, &status))
        }
        Some("multipart/form-data") => {
            let created = async {
                admitted?;
                let engine = engine.into_inner();
                let headers = req.headers().clone();
                let body = super::gated_body(&req, payload);
                detached(multipart::create(headers, body, engine, client(&req))).await
            }
            .await;
            // The upload page's form, posted with JavaScript off: the browser shows a page.
            if form_answer::wants_html(req.headers()) {
                return Ok(form_answer::answer(&ctx, created));
            }
            Ok(respond::created_json(&ctx, &created?))
        }
        _ => {
            admitted?;
            Err(ApiError::UnsupportedMediaType(
                "create an upload with application/json or multipart/form-data".into(),
            ))
        }
    }
}

/// Validates the JSON creation body field by field, each with its own error code. With
/// `parts`, the upload is assembled from those (their ids are returned beside it).
fn parse_create_json(body: &[u8]) -> Result<(NewUpload, Option<Vec<UploadId>>), ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    let object = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("invalid_json", "the body must be a JSON object"))?;
    let name = match object.get("name") {
        Some(Value::String(name)) => name.clone(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_name",
                "name must be a string",
            ))
        }
        None => return Err(ApiError::bad_request("invalid_name", "name is required")),
    };
    let parts = parts_of(object)?;
    let size = match object.get("size") {
        Some(_) if parts.is_some() => {
            return Err(ApiError::bad_request(
                "invalid_concat",
                "an upload made of parts has their total size: send no size",
            ))
        }
        None if parts.is_some() => 0,
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
            ApiError::bad_request("invalid_size", "size must be a non-negative integer")
        })?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_size",
                "size must be a non-negative integer",
            ))
        }
        None => return Err(ApiError::bad_request("invalid_size", "size is required")),
    };
    let content_type = match object.get("content_type") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if is_media_type(text) => Some(text.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_content_type",
                "content_type must be a media type such as video/mp4",
            ))
        }
    };
    let expected_sha256 = match object.get("sha256") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(parse_sha256_hex(text).ok_or_else(|| {
            ApiError::bad_request("invalid_sha256", "sha256 must be 64 hexadecimal digits")
        })?),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_sha256",
                "sha256 must be a string",
            ))
        }
    };
    let partial = match object.get("partial") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) if parts.is_none() => true,
        Some(Value::Bool(true)) => {
            return Err(ApiError::bad_request(
                "invalid_concat",
                "an upload is either a part or made of parts, not both",
            ))
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_concat",
                "partial must be true or false",
            ))
        }
    };
    let new = NewUpload {
        name,
        size: parts.is_none().then_some(size),
        content_type,
        expected_sha256,
        metadata: None,
        partial,
    };
    Ok((new, parts))
}

/// `parts`: the ids of the uploads this one is made of, in order.
fn parts_of(object: &serde_json::Map<String, Value>) -> Result<Option<Vec<UploadId>>, ApiError> {
    let not_ids = || {
        ApiError::bad_request(
            "invalid_concat",
            "parts must be a list of upload ids, in the order of their bytes",
        )
    };
    match object.get("parts") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().ok_or_else(not_ids).and_then(parse_id))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(not_ids()),
    }
}

pub async fn status(
    path: web::Path<String>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let status = engine.status(id).await?;
    Ok(status_response(StatusCode::OK, &status))
}

/// `HEAD /uploads/{id}`, natively and in tus: the offset, the length or that it is deferred,
/// tus metadata, and tus' `Upload-Expires` while the upload may expire.
pub async fn head(
    path: web::Path<String>,
    engine: web::Data<Engine>,
    ctx: web::Data<Ctx>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let status = engine.status(id).await?;
    let mut response = respond::head(&status);
    tus::expiration(&mut response, &status);
    concat::describe(&mut response, &ctx, &status);
    Ok(response.finish())
}

/// `PATCH /uploads/{id}`: the body, streamed to disk at `Upload-Offset`; the status as JSON.
pub async fn append(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let status = flow::append(&req, &path, payload, engine, |_, _| Ok(())).await?;
    Ok(status_response(StatusCode::OK, &status))
}

/// `DELETE /uploads/{id}`, natively and as tus termination.
pub async fn delete(
    path: web::Path<String>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    // Detached like an append: a client that hangs up mid-delete cannot cut it short.
    let engine = engine.into_inner();
    detached(async move { Ok(engine.delete(id).await?) }).await?;
    Ok(HttpResponse::NoContent()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

/// `GET /metrics`: with --metrics-token, for its bearer only; without, for loopback only.
pub async fn metrics(
    req: HttpRequest,
    engine: web::Data<Engine>,
    ctx: web::Data<Ctx>,
) -> Result<HttpResponse, ApiError> {
    match &ctx.metrics_token {
        Some(token) => token.check(&req)?,
        None if req.peer_addr().is_some_and(|a| a.ip().is_loopback()) => {}
        None => return Err(ApiError::MetricsLoopbackOnly),
    }
    let free = engine.disk_free().await.ok().flatten();
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(engine.metrics().render(free)))
}

pub async fn healthz(engine: web::Data<Engine>) -> Result<HttpResponse, ApiError> {
    engine
        .healthy()
        .await
        .map_err(|e| ApiError::Unhealthy(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "status": "ok" })))
}

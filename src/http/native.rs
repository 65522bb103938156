//! The JSON/curl API of API.md: create, status, append, delete, download.

use std::future::Future;

use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::Value;

use super::headers::{chunk_checksum, optional_count, required_count};
use super::range::{self, RangeAnswer};
use super::tus::{self, Protocol};
use super::{multipart, Ctx};
use crate::error::ApiError;
use crate::upload::input::parse_sha256_hex;
use crate::upload::{AppendRequest, Engine, NewUpload, Status, UploadId};

/// A JSON creation body is a few hundred bytes; this is generous.
const JSON_BODY_LIMIT: usize = 64 * 1024;

pub fn parse_id(path: &str) -> Result<UploadId, ApiError> {
    path.parse().map_err(|e: crate::upload::model::InvalidId| {
        ApiError::bad_request("invalid_id", e.to_string())
    })
}

/// Runs an engine call that owns the request body on this worker, detached from the handler.
/// If the client vanishes actix may drop the handler; the detached task still commits.
pub async fn detached<T: 'static>(
    work: impl Future<Output = Result<T, ApiError>> + 'static,
) -> Result<T, ApiError> {
    actix_web::rt::spawn(work)
        .await
        .map_err(|e| ApiError::Internal(format!("append task failed: {e}")))?
}

/// The status as an answer: JSON body, `Upload-Offset`, never cached.
pub fn status_response(code: StatusCode, status: &Status) -> HttpResponse {
    HttpResponse::build(code)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("Upload-Offset", status.received.to_string()))
        .json(status)
}

pub fn location(ctx: &Ctx, id: &str) -> String {
    match &ctx.public_url {
        Some(base) => format!("{}/uploads/{id}", base.trim_end_matches('/')),
        None => format!("/uploads/{id}"),
    }
}

fn created_response(ctx: &Ctx, status: &Status) -> HttpResponse {
    let mut response = status_response(StatusCode::CREATED, status);
    if let Ok(value) = header::HeaderValue::from_str(&location(ctx, &status.id)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// `POST /uploads`: JSON describes an upload; multipart carries the file itself.
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    engine: web::Data<Engine>,
    ctx: web::Data<Ctx>,
) -> Result<HttpResponse, ApiError> {
    ctx.tokens.check(&req)?;
    ctx.create_rate.check(req.peer_addr().map(|a| a.ip()))?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let protocol = tus::protocol_of(req.headers());
    if protocol != Protocol::Native {
        return tus::create(req, payload, engine, ctx, protocol).await;
    }
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    match essence {
        "application/json" => {
            let body = read_limited(payload, JSON_BODY_LIMIT).await?;
            let new = parse_create_json(&body)?;
            let status = engine.create(new).await?;
            Ok(created_response(&ctx, &status))
        }
        "multipart/form-data" => {
            let engine = engine.into_inner();
            let headers = req.headers().clone();
            let body = super::gated_body(&req, payload);
            let client = req.peer_addr().map(|addr| addr.ip());
            let status = detached(multipart::create(headers, body, engine, client)).await?;
            Ok(created_response(&ctx, &status))
        }
        _ => Err(ApiError::UnsupportedMediaType(
            "create an upload with application/json or multipart/form-data".into(),
        )),
    }
}

async fn read_limited(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, ApiError> {
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

/// Validates the JSON creation body field by field, each with its own error code.
fn parse_create_json(body: &[u8]) -> Result<NewUpload, ApiError> {
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
    let size = match object.get("size") {
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
    Ok(NewUpload {
        name,
        size: Some(size),
        content_type,
        expected_sha256,
        metadata: None,
    })
}

/// `type/subtype` with optional parameters, printable ASCII, at most 255 bytes.
pub fn is_media_type(text: &str) -> bool {
    let essence = text.split(';').next().unwrap_or_default();
    let valid_token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    text.len() <= 255
        && text.bytes().all(|b| (0x20..0x7f).contains(&b))
        && essence
            .split_once('/')
            .is_some_and(|(t, s)| valid_token(t.trim()) && valid_token(s.trim()))
}

pub async fn status(
    path: web::Path<String>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let status = engine.status(id).await?;
    Ok(status_response(StatusCode::OK, &status))
}

pub async fn head(
    req: HttpRequest,
    path: web::Path<String>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let status = engine.status(id).await?;
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("Upload-Offset", status.received.to_string()));
    if let Some(size) = status.size {
        response.insert_header(("Upload-Length", size.to_string()));
    }
    let max_size = engine.settings().max_upload_size;
    tus::head_headers(
        &mut response,
        &status,
        tus::protocol_of(req.headers()),
        max_size,
    );
    Ok(response.finish())
}

/// `PATCH /uploads/{id}`: the body, streamed to disk at `Upload-Offset`.
pub async fn append(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    // Gated first, before anything awaits: see conn.rs.
    let payload = super::gated_body(&req, payload);
    let id = parse_id(&path)?;
    let protocol = tus::protocol_of(req.headers());
    let mut request = parse_append(&req)?;
    tus::adjust_append(&req, protocol, &mut request)?;
    let max_size = engine.settings().max_upload_size;
    let engine = engine.into_inner();
    let status = detached(async move { Ok(engine.append(id, request, payload).await?) }).await?;
    Ok(match protocol {
        Protocol::Native => status_response(StatusCode::OK, &status),
        _ => tus::append_response(&status, protocol, max_size),
    })
}

pub fn parse_append(req: &HttpRequest) -> Result<AppendRequest, ApiError> {
    let headers = req.headers();
    let is_multipart = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/")
        });
    if is_multipart {
        return Err(ApiError::UnsupportedMediaType(
            "a PATCH body is the raw bytes, not multipart".into(),
        ));
    }
    Ok(AppendRequest {
        offset: required_count(headers, "Upload-Offset", "invalid_offset")?,
        length: optional_count(headers, "Upload-Length", "invalid_length")?,
        content_length: optional_count(headers, "Content-Length", "invalid_content_length")?,
        checksum: chunk_checksum(headers)?,
        complete: false,
        client: req.peer_addr().map(|addr| addr.ip()),
    })
}

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

/// `GET /uploads/{id}/content`: the stored file, with Range, ETag and a download name.
pub async fn content(
    req: HttpRequest,
    path: web::Path<String>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let content = engine.content(id).await?;
    let status = content.status.clone();
    let len = content.len();
    let etag = format!("\"{}\"", status.sha256.as_deref().unwrap_or_default());
    let header_text = |name| req.headers().get(name).and_then(|v| v.to_str().ok());

    let mut response = HttpResponse::Ok();
    response
        .insert_header((
            header::CONTENT_TYPE,
            status
                .content_type
                .as_deref()
                .unwrap_or("application/octet-stream"),
        ))
        .insert_header(content_disposition(&status.name))
        .insert_header((header::ETAG, etag.clone()))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        // A stored HTML or SVG file never runs as a page of this origin.
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, "sandbox"));
    if header_text(header::IF_NONE_MATCH).is_some_and(|tags| etag_matches(tags, &etag)) {
        return Ok(response.status(StatusCode::NOT_MODIFIED).finish());
    }
    let range_applies = header_text(header::IF_RANGE).is_none_or(|tag| tag.trim() == etag);
    let range_header = header_text(header::RANGE).filter(|_| range_applies);
    let (start, count) = match range::resolve(range_header, len) {
        RangeAnswer::Whole => (0, len),
        RangeAnswer::Partial { start, end } => {
            response
                .status(StatusCode::PARTIAL_CONTENT)
                .insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}")));
            (start, end - start + 1)
        }
        RangeAnswer::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { len }),
    };
    let body = content.stream(start, count).await?;
    Ok(response.no_chunking(count).streaming(body))
}

fn etag_matches(header_value: &str, etag: &str) -> bool {
    header_value
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

/// RFC 6266: an ASCII `filename` fallback and the exact UTF-8 name in `filename*`.
fn content_disposition(name: &str) -> ContentDisposition {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    ContentDisposition {
        disposition: DispositionType::Attachment,
        parameters: vec![
            DispositionParam::Filename(ascii),
            DispositionParam::FilenameExt(header::ExtendedValue {
                charset: header::Charset::Ext("UTF-8".into()),
                language_tag: None,
                value: name.as_bytes().to_vec(),
            }),
        ],
    }
}

/// `GET /metrics`: Prometheus text format.
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

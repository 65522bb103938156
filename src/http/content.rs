//! `GET /uploads/{id}/content`: downloading a stored file, with Range, ETag and a download
//! name.

use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::extract::parse_id;
use super::openapi::UploadIdPath;
use super::range::{self, RangeAnswer};
use crate::error::{ApiError, ErrorBody};
use crate::upload::Engine;

/// `GET /uploads/{id}/content`: the stored file, with Range, ETag and a download name.
#[utoipa::path(
    get,
    path = "/uploads/{id}/content",
    operation_id = "getUploadContent",
    tag = "uploads",
    summary = "Download the complete file",
    description = "Typed as the upload's `content_type` (default `application/octet-stream`), \
        never sniffed or run as a page of this origin.",
    params(
        UploadIdPath,
        ("Range" = Option<String>, Header, description = "One byte range, `bytes=first-last`, `bytes=first-` or `bytes=-suffix`; several ranges or a malformed one get the whole file."),
        ("If-Range" = Option<String>, Header, description = "The range applies only if this is the file's `ETag`."),
        ("If-None-Match" = Option<String>, Header, description = "`304` when it names the file's `ETag` (or is `*`)."),
    ),
    responses(
        (status = 200, description = "The whole file.", content(("*/*"))),
        (status = 206, description = "The byte range asked for.", content(("*/*")),
            headers(
                ("Content-Range" = String, description = "Always `bytes first-last/length`."),
            )),
        (status = 304, description = "`If-None-Match` names the file's `ETag`."),
        (status = 400, body = ErrorBody, description = "`invalid_id`: not a lowercase UUID with hyphens."),
        (status = 404, body = ErrorBody, description = "`not_found`: no upload has this id."),
        (status = 409, body = ErrorBody, description = "`not_complete` (with `received`), or `partial_upload`: a part of another upload."),
        (status = 410, body = ErrorBody, description = "`gone`: the upload was deleted or expired."),
        (status = 416, body = ErrorBody, description = "`range_not_satisfiable`: the range is outside the file."),
        (status = 500, body = ErrorBody, description = "`storage_error`, `database_error` or `internal_error`."),
        (status = 503, body = ErrorBody, description = "`storage_unavailable`: retry later."),
    ),
)]
pub async fn content(
    req: HttpRequest,
    path: web::Path<String>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let content = engine.content(id).await?;
    let status = &content.status;
    let len = status.size.unwrap_or(status.received);
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

/// `HEAD /uploads/{id}/content`: what `GET` answers, without the body.
#[utoipa::path(
    head,
    path = "/uploads/{id}/content",
    operation_id = "headUploadContent",
    tag = "uploads",
    summary = "The download's headers",
    params(
        UploadIdPath,
        ("Range" = Option<String>, Header, description = "One byte range, as for `GET`."),
        ("If-Range" = Option<String>, Header, description = "The range applies only if this is the file's `ETag`."),
        ("If-None-Match" = Option<String>, Header, description = "`304` when it names the file's `ETag` (or is `*`)."),
    ),
    responses(
        (status = 200, description = "The whole file's headers."),
        (status = 206, description = "The range's headers.",
            headers(
                ("Content-Range" = String, description = "Always `bytes first-last/length`."),
            )),
        (status = 304, description = "`If-None-Match` names the file's `ETag`."),
        (status = 400, description = "`invalid_id`: not a lowercase UUID with hyphens."),
        (status = 404, description = "`not_found`: no upload has this id."),
        (status = 409, description = "`not_complete` or `partial_upload`."),
        (status = 410, description = "`gone`: the upload was deleted or expired."),
        (status = 416, description = "`range_not_satisfiable`: the range is outside the file."),
        (status = 500, description = "`storage_error`, `database_error` or `internal_error`."),
        (status = 503, description = "`storage_unavailable`: retry later."),
    ),
)]
pub async fn head(
    req: HttpRequest,
    path: web::Path<String>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    content(req, path, engine).await
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

//! `GET /uploads/{id}/content`: downloading a stored file, with Range, ETag and a download
//! name.

use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::extract::parse_id;
use super::range::{self, RangeAnswer};
use crate::error::ApiError;
use crate::upload::Engine;

/// `GET /uploads/{id}/content`: the stored file, with Range, ETag and a download name.
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

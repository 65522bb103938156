//! tus' `Upload-Concat` header, read in this one place: `partial`, or `final;` and the parts'
//! URLs, each of which must name an upload of this service.

use actix_web::http::header::HeaderMap;
use actix_web::{HttpRequest, HttpResponseBuilder};

use super::extract::{has_body, optional_count, parse_id};
use super::{respond, Ctx};
use crate::error::ApiError;
use crate::upload::{Status, UploadError, UploadId};

/// What a creation's `Upload-Concat` asks for.
pub enum UploadConcat {
    Partial,
    Final(Vec<UploadId>),
}

/// The request's `Upload-Concat`, if any. In a final's list an id that cannot be an upload
/// id names no upload (404, as tus answers for ids); a URL of another host or path is 400.
pub fn read(req: &HttpRequest, ctx: &Ctx) -> Result<Option<UploadConcat>, ApiError> {
    let Some(value) = req.headers().get("Upload-Concat") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| invalid("Upload-Concat must be `partial` or `final;<url> <url>…`"))?
        .trim();
    if text == "partial" {
        return Ok(Some(UploadConcat::Partial));
    }
    let Some(urls) = text.strip_prefix("final;") else {
        return Err(invalid(
            "Upload-Concat must be `partial` or `final;<url> <url>…`",
        ));
    };
    let own = own_authorities(req, ctx);
    let ids = urls
        .split_whitespace()
        .map(|url| part_id(url, &own))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(UploadConcat::Final(ids)))
}

/// A final's creation carries neither a length nor data: its parts have them.
pub fn check_final_request(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.contains_key("Upload-Length") || headers.contains_key("Upload-Defer-Length") {
        return Err(invalid(
            "a final upload's length is its parts' total: send no Upload-Length",
        ));
    }
    let content_length = optional_count(headers, "Content-Length", "invalid_content_length")?;
    if has_body(headers, content_length) {
        return Err(invalid("a final upload takes no data: append to its parts"));
    }
    Ok(())
}

/// tus' `Upload-Concat` answer header on HEAD: `partial`, or `final;` and the parts' URLs.
pub fn describe(response: &mut HttpResponseBuilder, ctx: &Ctx, status: &Status) {
    if status.partial {
        response.insert_header(("Upload-Concat", "partial"));
    } else if let Some(parts) = &status.parts {
        let urls: Vec<String> = parts.iter().map(|id| respond::location(ctx, id)).collect();
        response.insert_header(("Upload-Concat", format!("final;{}", urls.join(" "))));
    }
}

/// The authorities this service answers on, as a part's absolute URL may name them.
fn own_authorities(req: &HttpRequest, ctx: &Ctx) -> Vec<String> {
    let mut own = vec![req.connection_info().host().to_ascii_lowercase()];
    if let Some(public) = &ctx.public_url {
        if let Some(authority) = authority_of(public) {
            own.push(authority);
        }
    }
    own
}

fn authority_of(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    Some(authority.to_ascii_lowercase())
}

/// The id a part's URL names: `…/uploads/<id>`, relative or on one of `own`.
fn part_id(url: &str, own: &[String]) -> Result<UploadId, ApiError> {
    let path = match authority_of(url) {
        Some(authority) if own.contains(&authority) => {
            let after_scheme = url.split_once("//").map_or(url, |(_, rest)| rest);
            after_scheme.find('/').map_or("", |at| &after_scheme[at..])
        }
        Some(_) => return Err(invalid("a part's URL names another server")),
        None => url,
    };
    let Some(id) = path.rsplit_once("/uploads/").map(|(_, id)| id) else {
        return Err(invalid(
            "a part's URL must be the URL of an upload (…/uploads/<id>)",
        ));
    };
    match parse_id(id) {
        Ok(id) => Ok(id),
        Err(_) if id.contains('/') || id.is_empty() => Err(invalid(
            "a part's URL must be the URL of an upload (…/uploads/<id>)",
        )),
        Err(_) => Err(UploadError::NotFound.into()),
    }
}

fn invalid(message: &'static str) -> ApiError {
    UploadError::InvalidConcat(message).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_urls_name_uploads_of_this_service() {
        let own = vec!["example.org:8080".to_owned()];
        let id = UploadId::new_random();
        assert_eq!(part_id(&format!("/uploads/{id}"), &own).ok(), Some(id));
        let absolute = format!("http://EXAMPLE.org:8080/uploads/{id}");
        assert_eq!(part_id(&absolute, &own).ok(), Some(id));
        let foreign = format!("http://elsewhere.net/uploads/{id}");
        assert!(part_id(&foreign, &own).is_err());
        assert!(part_id("/files/x", &own).is_err());
        assert!(matches!(
            part_id("/uploads/not-an-id", &own),
            Err(ApiError::Upload(UploadError::NotFound))
        ));
    }
}

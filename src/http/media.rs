//! Media types, read one way (with `mime`): the request's Content-Type and the types clients
//! declare for their files.

use actix_web::http::header::{self, HeaderMap};

use crate::error::ApiError;

/// The request's media type, parsed the one way every handler reads it. Type and subtype
/// are case-insensitive (RFC 9110, section 8.3.1), so they come lowercased; parameters that
/// do not parse are dropped rather than taking the type with them. `None`: no Content-Type,
/// or not a media type at all.
pub fn content_type(headers: &HeaderMap) -> Option<mime::Mime> {
    let text = headers.get(header::CONTENT_TYPE)?.to_str().ok()?.trim();
    text.parse().ok().or_else(|| {
        let essence = text.split(';').next().unwrap_or_default().trim();
        essence.parse().ok()
    })
}

/// Whether the request's Content-Type names a multipart type, even one too malformed to
/// parse: such a body is a form, never raw file bytes.
pub fn is_multipart(headers: &HeaderMap) -> bool {
    let raw = headers.get(header::CONTENT_TYPE).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .trim_start()
            .to_ascii_lowercase()
    });
    raw.is_some_and(|text| text.starts_with("multipart/"))
        || content_type(headers).is_some_and(|m| m.type_() == mime::MULTIPART)
}

/// 415 unless the request's Content-Type is `wanted` (a lowercase `type/subtype`).
pub fn require_content_type(headers: &HeaderMap, wanted: &str) -> Result<(), ApiError> {
    if content_type(headers).is_some_and(|m| m.essence_str() == wanted) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "this append carries Content-Type: {wanted}"
        )))
    }
}

/// Whether a media type the client declares for its file (stored, and served back on
/// download) is `type/subtype` with optional parameters, printable ASCII, at most 255 bytes.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::extract::headers;

    #[test]
    fn content_types_are_read_one_way() {
        let of = |value: &str| content_type(&headers(&[("content-type", value)]));
        let essence = |value: &str| of(value).map(|m| m.essence_str().to_owned());
        assert_eq!(
            essence("Application/JSON").as_deref(),
            Some("application/json")
        );
        assert_eq!(
            essence("application/json; charset=utf-8").as_deref(),
            Some("application/json")
        );
        assert_eq!(
            essence("application/json ; charset").as_deref(),
            Some("application/json"),
            "a bad parameter does not lose the type"
        );
        assert_eq!(
            of("multipart/form-data; boundary=x").map(|m| m.type_() == mime::MULTIPART),
            Some(true)
        );
        assert_eq!(of("garbage"), None);
        assert_eq!(content_type(&headers(&[])), None);
        let partial = headers(&[("content-type", "APPLICATION/PARTIAL-UPLOAD")]);
        assert!(require_content_type(&partial, "application/partial-upload").is_ok());
        let wrong = require_content_type(&partial, "application/offset+octet-stream");
        assert_eq!(wrong.unwrap_err().code(), "unsupported_media_type");
    }

    #[test]
    fn multipart_bodies_are_recognised_even_malformed() {
        let multipart = |value: &str| is_multipart(&headers(&[("content-type", value)]));
        assert!(multipart("multipart/form-data; boundary=x"));
        assert!(
            multipart(" Multipart/Form-Data boundary=x"),
            "a missing ';'"
        );
        assert!(multipart("multipart/form data"));
        assert!(!multipart("application/offset+octet-stream"));
        assert!(!is_multipart(&headers(&[])));
    }

    #[test]
    fn media_types_are_checked() {
        assert!(is_media_type("video/mp4"));
        assert!(is_media_type("text/plain; charset=utf-8"));
        assert!(!is_media_type("video"));
        assert!(!is_media_type("video/"));
        assert!(!is_media_type("vid eo/mp4"));
        assert!(!is_media_type(&format!("a/{}", "b".repeat(300))));
    }
}

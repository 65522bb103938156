//! Which protocol a request speaks, read from its headers in this one place.
//!
//! A request speaks tus when it carries `Tus-Resumable`, the IETF draft ("Resumable Uploads
//! for HTTP") when it carries `Upload-Draft-Interop-Version`, and otherwise the native API.
//! All three share the engine, so the status, the progress channels and the page see every
//! upload alike.

use actix_web::guard::GuardContext;
use actix_web::http::header::HeaderMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Native,
    Tus,
    /// The draft's interop version; 0 when the header is there but not a number.
    Draft(u32),
}

pub fn protocol_of(headers: &HeaderMap) -> Protocol {
    if headers.contains_key("Tus-Resumable") {
        return Protocol::Tus;
    }
    match headers
        .get("Upload-Draft-Interop-Version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
    {
        Some(version) => Protocol::Draft(version),
        None if headers.contains_key("Upload-Draft-Interop-Version") => Protocol::Draft(0),
        None => Protocol::Native,
    }
}

/// The route guard of tus' handlers.
pub fn is_tus(ctx: &GuardContext<'_>) -> bool {
    protocol_of(ctx.head().headers()) == Protocol::Tus
}

/// The route guard of the draft's handlers.
pub fn is_draft(ctx: &GuardContext<'_>) -> bool {
    matches!(protocol_of(ctx.head().headers()), Protocol::Draft(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn of(pairs: &[(&'static str, &'static str)]) -> Protocol {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        protocol_of(&headers)
    }

    #[test]
    fn the_headers_name_the_protocol() {
        assert_eq!(of(&[]), Protocol::Native);
        assert_eq!(of(&[("tus-resumable", "1.0.0")]), Protocol::Tus);
        assert_eq!(
            of(&[("upload-draft-interop-version", " 8 ")]),
            Protocol::Draft(8)
        );
        assert_eq!(
            of(&[("upload-draft-interop-version", "eight")]),
            Protocol::Draft(0)
        );
        assert_eq!(
            of(&[
                ("tus-resumable", "1.0.0"),
                ("upload-draft-interop-version", "6")
            ]),
            Protocol::Tus,
            "tus wins"
        );
    }
}

//! tus `Upload-Metadata`, which draft clients (tus-js-client's `ietf-draft-*` protocols) send
//! too: comma-separated `key base64value` pairs, and what a creation takes from them.

use actix_web::http::header::HeaderMap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::extract::is_media_type;
use crate::error::ApiError;
use crate::upload::input::{validate_name, without_bidi};

/// Decoded `Upload-Metadata`: each key with its value, if it has one.
pub type Metadata = Vec<(String, Option<Vec<u8>>)>;

/// What a creation learns from `Upload-Metadata`.
pub struct Described {
    /// The header exactly as sent, echoed on HEAD.
    pub raw: Option<String>,
    /// The file name, made a valid base name; "upload" when there is none.
    pub name: String,
    pub content_type: Option<String>,
}

/// Reads and checks the request's `Upload-Metadata`.
pub fn described(headers: &HeaderMap) -> Result<Described, ApiError> {
    let raw = headers
        .get("Upload-Metadata")
        .map(|v| {
            v.to_str().map(str::to_owned).map_err(|_| {
                ApiError::bad_request("invalid_metadata", "Upload-Metadata must be ASCII")
            })
        })
        .transpose()?;
    let metadata = raw
        .as_deref()
        .map(parse_metadata)
        .transpose()?
        .unwrap_or_default();
    Ok(Described {
        name: name_from(&metadata),
        content_type: text_of(&metadata, &["filetype", "type"]).filter(|t| is_media_type(t)),
        raw,
    })
}

/// tus `Upload-Metadata`: comma-separated `key base64value` pairs (the value may be absent).
pub fn parse_metadata(text: &str) -> Result<Metadata, ApiError> {
    let invalid = |message: &str| ApiError::bad_request("invalid_metadata", message.to_owned());
    let mut pairs: Metadata = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut parts = pair.split(' ');
        let key = parts.next().unwrap_or_default();
        let value = parts.next();
        if parts.next().is_some() || key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "Upload-Metadata pairs are `key base64value`, separated by commas",
            ));
        }
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(invalid("Upload-Metadata keys must be unique"));
        }
        let value = value
            .map(|v| {
                STANDARD
                    .decode(v)
                    .map_err(|_| invalid("an Upload-Metadata value is not base64"))
            })
            .transpose()?;
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

fn text_of(metadata: &[(String, Option<Vec<u8>>)], keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|key| {
        metadata
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_ref())
            .and_then(|v| String::from_utf8(v.clone()).ok())
    })
}

/// The file name a tus client gave, as a valid base name; "upload" when there is none.
fn name_from(metadata: &[(String, Option<Vec<u8>>)]) -> String {
    text_of(metadata, &["filename", "name"])
        .and_then(|name| {
            let base = without_bidi(name.rsplit(['/', '\\']).next().unwrap_or_default());
            validate_name(&base).is_ok().then_some(base)
        })
        .unwrap_or_else(|| "upload".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_parses_and_names_are_made_safe() {
        let pairs = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
            .unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(name_from(&pairs), "world_domination_plan.pdf");
        assert_eq!(pairs[1], ("is_confidential".to_owned(), None));
        let path =
            parse_metadata(&format!("filename {}", STANDARD.encode("C:\\docs\\a.txt"))).unwrap();
        assert_eq!(name_from(&path), "a.txt");
        assert_eq!(name_from(&[]), "upload");
        let bidi = parse_metadata(&format!("filename {}", STANDARD.encode("\u{202E}"))).unwrap();
        assert_eq!(name_from(&bidi), "upload", "removed, not refused");
        assert!(parse_metadata("a b c").is_err());
        assert!(parse_metadata("a !!!").is_err());
        assert!(parse_metadata("a YQ==,a YQ==").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn metadata_parsing_never_panics(text in "[ -~]{0,200}") {
            if let Ok(pairs) = parse_metadata(&text) {
                let name = name_from(&pairs);
                prop_assert!(validate_name(&name).is_ok());
            }
        }

        #[test]
        fn metadata_round_trips(values in proptest::collection::btree_map("[a-z]{1,8}", proptest::collection::vec(any::<u8>(), 0..40), 0..6)) {
            let text = values
                .iter()
                .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
                .collect::<Vec<_>>()
                .join(",");
            let parsed = parse_metadata(&text).unwrap();
            prop_assert_eq!(parsed.len(), values.len());
            for (key, value) in parsed {
                let decoded = value.unwrap_or_default();
                prop_assert_eq!(Some(&decoded), values.get(&key));
            }
        }
    }
}

//! The upload's identity, state and the one status shape every endpoint and channel shows.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use uuid::Uuid;

use crate::db::UploadRow;

/// A random UUID v4, always written lowercase with hyphens. Knowing it is the capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UploadId(Uuid);

impl UploadId {
    pub fn new_random() -> Self {
        UploadId(Uuid::new_v4())
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// Only the canonical spelling is accepted, so one upload has exactly one URL.
#[derive(Debug, thiserror::Error)]
#[error("an upload id is a lowercase UUID with hyphens")]
pub struct InvalidId;

impl FromStr for UploadId {
    type Err = InvalidId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let uuid = Uuid::try_parse(text).map_err(|_| InvalidId)?;
        let canonical = UploadId(uuid);
        if canonical.to_string() == text {
            Ok(canonical)
        } else {
            Err(InvalidId)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Uploading,
    Complete,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Uploading => "uploading",
            State::Complete => "complete",
            State::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        match text {
            "uploading" => Some(State::Uploading),
            "complete" => Some(State::Complete),
            "failed" => Some(State::Failed),
            _ => None,
        }
    }
}

/// The status of API.md: the same JSON for GET, PATCH answers and every progress message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub id: String,
    pub name: String,
    pub size: Option<u64>,
    pub received: u64,
    pub state: State,
    pub content_type: Option<String>,
    pub expected_sha256: Option<String>,
    pub sha256: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub expires_at: Option<String>,
    /// `deleted` or `expired` in the last message watchers get about a removed upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
    /// tus `Upload-Metadata` exactly as the client sent it (echoed on HEAD, not in JSON).
    #[serde(skip)]
    pub metadata: Option<String>,
}

impl Status {
    /// No message follows this one: the upload is complete, failed or gone.
    pub fn is_final(&self) -> bool {
        self.state != State::Uploading || self.removed.is_some()
    }

    pub fn from_row(row: &UploadRow) -> Status {
        Status {
            id: row.id.clone(),
            name: row.name.clone(),
            size: row.size,
            received: row.received,
            state: State::parse(&row.state).unwrap_or(State::Failed),
            content_type: row.content_type.clone(),
            expected_sha256: row.expected_sha256.clone(),
            sha256: row.sha256.clone(),
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
            expires_at: row.expires_at.map(rfc3339),
            removed: None,
            metadata: row.metadata.clone(),
        }
    }
}

/// Milliseconds since the epoch, the unit the database stores.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub fn rfc3339(millis: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Validates a client's file name: 1–255 bytes, a base name with no separators or controls.
/// The name without bidirectional controls, which can make `exe.txt` display as `txt.exe`.
pub fn without_bidi(name: &str) -> String {
    name.chars()
        .filter(|c| {
            !matches!(
                c,
                '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            )
        })
        .collect()
}

pub fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("name must not be empty");
    }
    if name.len() > 255 {
        return Err("name must be at most 255 bytes");
    }
    if name.contains(['/', '\\']) {
        return Err("name must be a base name, without '/' or '\\'");
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters");
    }
    if name == "." || name == ".." {
        return Err("name must not be '.' or '..'");
    }
    Ok(())
}

/// Lowercase hex, the form API.md uses for digests.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

/// A declared whole-file digest: 64 hex digits, stored lowercase.
pub fn parse_sha256_hex(text: &str) -> Option<String> {
    (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_canonical() {
        let id = UploadId::new_random();
        assert_eq!(id.to_string().parse::<UploadId>().ok(), Some(id));
        assert!(id.to_string().to_uppercase().parse::<UploadId>().is_err());
        assert!(id.to_string().replace('-', "").parse::<UploadId>().is_err());
        assert!("not-a-uuid".parse::<UploadId>().is_err());
        assert!("".parse::<UploadId>().is_err());
    }

    #[test]
    fn names_are_base_names() {
        assert!(validate_name("movie.mp4").is_ok());
        assert_eq!(without_bidi("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
        assert_eq!(without_bidi("\u{2067}a\u{2069}\u{200F}b\u{061C}"), "ab");
        assert_eq!(without_bidi("fête.txt"), "fête.txt");
        assert!(validate_name("fête.txt").is_ok());
        for bad in ["", "../x", "a/b", "a\\b", "a\nb", "a\u{7f}", "..", "."] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"a".repeat(255)).is_ok());
        assert!(validate_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_543_200_999), "2026-11-24T18:00:00Z");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ids_and_names_and_digests_take_any_text(text in ".{0,300}") {
            if let Ok(id) = text.parse::<UploadId>() {
                prop_assert_eq!(id.to_string(), text.clone());
            }
            if validate_name(&text).is_ok() {
                prop_assert!(!text.is_empty() && text.len() <= 255 && !text.contains('/'));
            }
            if let Some(hex) = parse_sha256_hex(&text) {
                prop_assert_eq!(hex.len(), 64);
            }
        }
    }
}

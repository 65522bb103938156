//! The upload's identity, its state, the upload as the engine sees it, and the one status
//! shape every endpoint and channel shows.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

/// A random UUID v4, always written lowercase with hyphens. Knowing it is the capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UploadId(Uuid);

impl UploadId {
    pub fn new_random() -> Self {
        UploadId(Uuid::new_v4())
    }

    /// A 64-bit key for the upload (a PostgreSQL advisory lock's): the id's first 8 bytes,
    /// random in a v4 UUID.
    pub fn lock_key(&self) -> i64 {
        let bytes = self.0.as_bytes();
        i64::from_be_bytes([
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
        ])
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Status {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(min_length = 1)]
    pub name: String,
    #[schema(required = true)]
    pub size: Option<u64>,
    pub received: u64,
    pub state: State,
    #[schema(required = true)]
    pub content_type: Option<String>,
    #[schema(required = true, pattern = "^[0-9a-f]{64}$")]
    pub expected_sha256: Option<String>,
    #[schema(required = true, pattern = "^[0-9a-f]{64}$")]
    pub sha256: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: SystemTime,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: SystemTime,
    #[serde(serialize_with = "optional_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub expires_at: Option<SystemTime>,
    /// `deleted` or `expired` in the last message watchers get about a removed upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
    /// tus `Upload-Metadata` pairs, decoded (and what a `pre-create` hook set).
    pub metadata: BTreeMap<String, String>,
    /// Why a failed upload failed: `sha256_mismatch`, `rejected` (by a `pre-finish` hook), or
    /// for one made of parts `too_large` or `parts_unreadable`.
    #[schema(required = true)]
    pub failure: Option<String>,
    /// tus `Upload-Metadata` exactly as the client sent it (echoed on HEAD, not in JSON).
    #[serde(skip)]
    pub raw_metadata: Option<String>,
    /// A part of an upload assembled from parts (tus `Upload-Concat: partial`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// An upload assembled from these parts, in order (tus `Upload-Concat: final`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parts: Option<Vec<String>>,
}

impl Status {
    /// No message follows this one: the upload is complete, failed or gone.
    pub fn is_final(&self) -> bool {
        self.state != State::Uploading || self.removed.is_some()
    }

    pub fn of(upload: &Upload) -> Status {
        Status {
            id: upload.id.to_string(),
            name: upload.name.clone(),
            size: upload.size,
            received: upload.received,
            state: upload.state,
            content_type: upload.content_type.clone(),
            expected_sha256: upload.expected_sha256.clone(),
            sha256: upload.sha256.clone(),
            created_at: upload.created_at,
            updated_at: upload.updated_at,
            // All in, it only waits to be sealed: it does not expire.
            expires_at: upload.expires_at.filter(|_| !upload.is_all_in()),
            removed: None,
            metadata: upload
                .metadata
                .as_deref()
                .map(decode_metadata)
                .unwrap_or_default(),
            failure: upload.failure.clone(),
            raw_metadata: upload.metadata.clone(),
            partial: matches!(upload.concat, Concat::Partial { .. }),
            parts: match &upload.concat {
                Concat::Final { parts } => Some(parts.iter().map(UploadId::to_string).collect()),
                _ => None,
            },
        }
    }
}

/// Where an upload stands in a concatenation (tus' extension, and the native parts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Concat {
    /// A whole upload of its own.
    #[default]
    Whole,
    /// A part, with the upload that names it once one does.
    Partial { whole: Option<UploadId> },
    /// Assembled from these parts, in order, once every one is complete.
    Final { parts: Vec<UploadId> },
}

impl Concat {
    /// A part that no upload names yet.
    pub fn is_loose_part(&self) -> bool {
        matches!(self, Concat::Partial { whole: None })
    }
}

/// One upload as the engine keeps it; each metadata backend maps it to its own rows.
#[derive(Debug, Clone)]
pub struct Upload {
    pub id: UploadId,
    pub name: String,
    /// `None` while the size is deferred (tus `Upload-Defer-Length`, a streamed form part).
    pub size: Option<u64>,
    /// Bytes durable in the store and committed; never runs ahead of them.
    pub received: u64,
    pub state: State,
    pub content_type: Option<String>,
    pub expected_sha256: Option<String>,
    pub sha256: Option<String>,
    /// The SHA-256 state after `received` bytes, so any append can carry on hashing.
    pub hash_state: Option<Vec<u8>>,
    /// What the byte store keeps with `received` to carry on (see `Sink::state`).
    pub store_state: Option<Vec<u8>>,
    /// tus `Upload-Metadata` exactly as the client sent it.
    pub metadata: Option<String>,
    /// Why it failed (see `Status::failure`); `None` unless failed.
    pub failure: Option<String>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    /// When an uploading or failed upload is removed; a complete one never expires.
    pub expires_at: Option<SystemTime>,
    /// Set on a tombstone: the id answers 410 until it is forgotten.
    pub removed_at: Option<SystemTime>,
    pub concat: Concat,
}

impl Upload {
    /// Uploading and failed uploads expire; a complete one never does.
    /// Still `uploading` though every byte of a known size is committed: it only waits to be
    /// sealed (never to expire).
    pub fn is_all_in(&self) -> bool {
        self.state == State::Uploading && self.size == Some(self.received)
    }

    /// An upload whose bytes are all in never expires, whatever its `expires_at` says; nor
    /// does a complete one, unless it is a part no upload names.
    ///
    /// Where a final and its parts are tied, the sweep decides (`expire_part`,
    /// `settle_final`): a final waiting for its parts goes with them, and a part of a final
    /// goes once the final is done with it.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        let tied = match &self.concat {
            Concat::Final { .. } => self.state == State::Uploading,
            Concat::Partial { whole } => whole.is_some(),
            Concat::Whole => false,
        };
        if tied {
            return false;
        }
        (self.state != State::Complete || self.concat.is_loose_part())
            && !self.is_all_in()
            && self.expires_at.is_some_and(|at| at <= now)
    }

    /// When a complete upload expires: never, unless it is a part (the sweep then decides
    /// whether it still waits for its final).
    pub fn expiry_when_complete(&self, expiry: SystemTime) -> Option<SystemTime> {
        matches!(self.concat, Concat::Partial { .. }).then_some(expiry)
    }
}

/// tus `Upload-Metadata` as key → text: a value that is not UTF-8 is shown with U+FFFD, a key
/// without a value maps to "". The front-ends checked the syntax on the way in.
pub fn decode_metadata(raw: &str) -> BTreeMap<String, String> {
    use base64::Engine as _;
    raw.split(',')
        .filter_map(|pair| {
            let mut parts = pair.trim().split(' ');
            let key = parts.next().filter(|k| !k.is_empty())?;
            let value = match parts.next() {
                Some(v) => base64::engine::general_purpose::STANDARD.decode(v).ok()?,
                None => Vec::new(),
            };
            Some((key.to_owned(), String::from_utf8_lossy(&value).into_owned()))
        })
        .collect()
}

/// The `Upload-Metadata` form of `pairs`, or `None` if a key could not be a tus key (empty,
/// or holding a space, a comma or a non-printable character).
pub fn encode_metadata(pairs: &BTreeMap<String, String>) -> Option<String> {
    use base64::Engine as _;
    let mut out = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return None;
        }
        match value.is_empty() {
            true => out.push(key.clone()),
            false => out.push(format!(
                "{key} {}",
                base64::engine::general_purpose::STANDARD.encode(value)
            )),
        }
    }
    Some(out.join(","))
}

/// RFC 3339 in UTC to the second, as API.md writes times.
fn rfc3339<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_seconds(*time))
}

fn optional_rfc3339<S: Serializer>(
    time: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => rfc3339(time, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

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
    fn times_are_rfc3339_utc_to_the_second() {
        let at = |millis| UNIX_EPOCH + Duration::from_millis(millis);
        let upload = Upload {
            id: UploadId::new_random(),
            name: "a".into(),
            size: None,
            received: 0,
            state: State::Uploading,
            content_type: None,
            expected_sha256: None,
            sha256: None,
            hash_state: None,
            store_state: None,
            metadata: Some("filename ZmlsZS5iaW4=,flag".into()),
            failure: None,
            created_at: at(0),
            updated_at: at(1_795_543_200_999),
            expires_at: None,
            removed_at: None,
            concat: Concat::Whole,
        };
        let json = serde_json::to_value(Status::of(&upload)).unwrap();
        assert_eq!(json["created_at"], "1970-01-01T00:00:00Z");
        assert_eq!(json["updated_at"], "2026-11-24T18:00:00Z");
        assert!(json["expires_at"].is_null());
        assert_eq!(
            json["metadata"],
            serde_json::json!({"filename": "file.bin", "flag": ""})
        );
        assert!(json["failure"].is_null());
    }

    #[test]
    fn metadata_encodes_back_to_what_decodes() {
        let pairs: BTreeMap<String, String> = [
            ("user".to_owned(), "alice".to_owned()),
            ("empty".into(), "".into()),
        ]
        .into();
        let raw = encode_metadata(&pairs).unwrap();
        assert_eq!(raw, "empty,user YWxpY2U=");
        assert_eq!(decode_metadata(&raw), pairs);
        let bad: BTreeMap<String, String> = [("a b".to_owned(), "x".to_owned())].into();
        assert_eq!(encode_metadata(&bad), None);
    }
}

//! The two ways the client talks to a server: this service's own API (JSON creation, PATCH
//! with `Content-Digest`, the status JSON) and tus 1.0 (creation, checksum), which any tus
//! server speaks.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reqwest13::header::{CONTENT_TYPE, LOCATION};
use reqwest13::{Response, Url};
use serde_json::{json, Value};

use super::api::{append_timeout, checked, json_of, Api, ClientError, Result, SHORT_REQUEST};
use super::local::Piece;
use super::Protocol;

const TUS_VERSION: &str = "1.0.0";

/// Where an upload stands on the server.
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub received: u64,
    /// `uploading`, `complete` or `failed`, where the server says (tus does not).
    pub state: Option<String>,
    pub sha256: Option<String>,
    pub failure: Option<String>,
}

pub struct Appended {
    pub received: u64,
}

pub struct Speaker {
    pub api: Api,
    protocol: Protocol,
}

impl Speaker {
    pub fn new(api: Api, protocol: Protocol) -> Speaker {
        Speaker { api, protocol }
    }

    pub fn name(&self) -> &'static str {
        match self.protocol {
            Protocol::Native => "native",
            Protocol::Tus => "tus",
        }
    }

    /// A new upload of `size` bytes named `name`; its absolute URL.
    pub async fn create(&self, name: &str, size: u64) -> Result<Url> {
        let api = &self.api;
        let request = match self.protocol {
            Protocol::Native => api
                .http
                .post(api.url("uploads")?)
                .json(&json!({"name": name, "size": size})),
            Protocol::Tus => api
                .http
                .post(self.tus_endpoint()?)
                .header("Tus-Resumable", TUS_VERSION)
                .header("Upload-Length", size.to_string())
                .header(
                    "Upload-Metadata",
                    format!("filename {}", STANDARD.encode(name)),
                ),
        };
        let response = checked(api.send(request).await?).await?;
        let url = response.url().clone();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ClientError::Failed(format!("{url}: the answer has no Location")))?;
        url.join(location)
            .map_err(|e| ClientError::Failed(format!("{url}: a bad Location `{location}`: {e}")))
    }

    /// How much of the upload the server holds.
    pub async fn held(&self, url: &Url) -> Result<Held> {
        let api = &self.api;
        match self.protocol {
            Protocol::Native => Ok(held_of(&api.status(url).await?)),
            Protocol::Tus => {
                let request = api
                    .http
                    .head(url.clone())
                    .header("Tus-Resumable", TUS_VERSION)
                    .timeout(SHORT_REQUEST);
                let response = checked(api.send(request).await?).await?;
                let mut held = Held {
                    received: offset_of(&response)?,
                    ..Held::default()
                };
                // This service answers a GET with its status JSON (others serve the file).
                if response.headers().contains_key("upload-length")
                    && self.is_this_service(&response)
                {
                    // A failure here is retried like any other: never "complete, unchecked".
                    let status = api.status(url).await?;
                    let id = url.path_segments().and_then(|mut s| s.next_back());
                    if status["id"].as_str() == id {
                        held = held_of(&status);
                    }
                }
                Ok(held)
            }
        }
    }

    /// Appends `piece` at `offset`; an empty piece asks an all-in upload to finish.
    pub async fn append(&self, url: &Url, offset: u64, piece: &Piece) -> Result<Appended> {
        let api = &self.api;
        let mut request = api
            .http
            .patch(url.clone())
            .header("Upload-Offset", offset.to_string())
            .header(CONTENT_TYPE, "application/offset+octet-stream")
            .timeout(append_timeout(piece.bytes.len() as u64))
            .body(piece.bytes.clone());
        if let Some(sha256) = piece.sha256.filter(|_| !piece.bytes.is_empty()) {
            let digest = STANDARD.encode(sha256);
            request = match self.protocol {
                Protocol::Native => request.header("Content-Digest", format!("sha-256=:{digest}:")),
                Protocol::Tus => request.header("Upload-Checksum", format!("sha256 {digest}")),
            };
        }
        if self.protocol == Protocol::Tus {
            request = request.header("Tus-Resumable", TUS_VERSION);
        }
        let response = checked(api.send(request).await?).await?;
        let received = match self.protocol {
            Protocol::Native => held_of(&json_of(response).await?).received,
            Protocol::Tus => offset_of(&response)?,
        };
        Ok(Appended { received })
    }

    /// tus creation goes to --server itself when it names a path (`https://host/files/`),
    /// else to this service's `/uploads`.
    fn tus_endpoint(&self) -> Result<Url> {
        match self.api.server.path() {
            "" | "/" => self.api.url("uploads"),
            _ => Ok(self.api.server.clone()),
        }
    }

    fn is_this_service(&self, response: &Response) -> bool {
        response.url().path().contains("/uploads/")
            && response.url().host_str() == self.api.server.host_str()
    }
}

fn held_of(status: &Value) -> Held {
    let text = |field: &str| status[field].as_str().map(str::to_owned);
    Held {
        received: status["received"].as_u64().unwrap_or(0),
        state: text("state"),
        sha256: text("sha256"),
        failure: text("failure"),
    }
}

fn offset_of(response: &Response) -> Result<u64> {
    response
        .headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            ClientError::Failed(format!(
                "{}: the answer has no Upload-Offset",
                response.url()
            ))
        })
}

//! The client's HTTP side: where an upload lives, what a failed request means (worth a retry,
//! or final), and the backoff between tries.

use std::time::{Duration, Instant};

use reqwest13::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest13::{Response, StatusCode, Url};
use serde_json::Value;

use super::Common;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {error}")]
    File { path: String, error: std::io::Error },
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the server refused the token (401): check --token or RESUMABLE_TOKEN")]
    Unauthorized,
    #[error("{url}: {status} {code}: {message}")]
    Refused {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Failed(String),
    /// The server's final word on the upload: failed, or a different digest.
    #[error("{0}")]
    Verdict(String),
}

impl ClientError {
    /// Worth trying again: the server could not be reached, or failed on its side.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            // 423: a tus server still holding a dropped request's lock; 460: a chunk damaged
            // on the way (its digest did not match), sent again.
            ClientError::Refused { status, .. } => {
                *status >= 500 || matches!(*status, 408 | 423 | 429 | 460)
            }
            _ => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// A server and how to talk to it.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest13::Client,
    pub server: Url,
}

impl Api {
    pub fn new(common: &Common) -> Result<Api> {
        let server = Url::parse(&common.server)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "--server must be an http:// or https:// URL, not `{}`",
                    common.server
                ))
            })?;
        let mut headers = HeaderMap::new();
        for header in &common.headers {
            let (name, value) = header
                .split_once(':')
                .and_then(|(n, v)| {
                    let name = HeaderName::from_bytes(n.trim().as_bytes()).ok()?;
                    Some((name, HeaderValue::from_str(v.trim()).ok()?))
                })
                .ok_or_else(|| {
                    ClientError::Usage(format!("-H takes `Name: value`, not `{header}`"))
                })?;
            headers.append(name, value);
        }
        if let Some(token) = &common.token {
            let value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                .map_err(|_| ClientError::Usage("the token is not a valid header value".into()))?;
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest13::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Failed(format!("cannot set up HTTP: {e}")))?;
        Ok(Api { http, server })
    }

    /// The URL of an upload named by its id or its URL.
    pub fn upload_url(&self, target: &str) -> Result<Url> {
        if target.starts_with("http://") || target.starts_with("https://") {
            return Url::parse(target)
                .map_err(|e| ClientError::Usage(format!("`{target}` is not a URL: {e}")));
        }
        let id: crate::upload::UploadId = target.parse().map_err(|_| {
            ClientError::Usage(format!("`{target}` is neither an upload id nor a URL"))
        })?;
        self.url(&format!("uploads/{id}"))
    }

    /// `path` under the server's base URL.
    pub fn url(&self, path: &str) -> Result<Url> {
        let mut base = self.server.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        base.join(path)
            .map_err(|e| ClientError::Usage(format!("bad URL for {path}: {e}")))
    }

    /// Sends a request: a transport error is `Unreachable`.
    pub async fn send(&self, request: reqwest13::RequestBuilder) -> Result<Response> {
        let request = request
            .build()
            .map_err(|e| ClientError::Failed(format!("cannot build a request: {e}")))?;
        let url = request.url().to_string();
        self.http
            .execute(request)
            .await
            .map_err(|e| ClientError::Unreachable {
                url,
                message: if e.is_timeout() {
                    "no answer in time".to_owned()
                } else {
                    error_chain(&e)
                },
            })
    }

    /// The status JSON of an upload.
    pub async fn status(&self, url: &Url) -> Result<Value> {
        let request = self
            .http
            .get(url.clone())
            .header("Accept", "application/json")
            .timeout(SHORT_REQUEST);
        json_of(checked(self.send(request).await?).await?).await
    }
}

/// How long a request without a body (a status, a HEAD) may take: a stalled server or a
/// half-open connection must end in a retry, not a hang.
pub const SHORT_REQUEST: Duration = Duration::from_secs(60);

/// How long an append of `len` bytes may take: at least 64 KiB/s, plus a minute.
pub fn append_timeout(len: u64) -> Duration {
    Duration::from_secs(60 + len / (64 * 1024))
}

/// A 2xx answer, or the error it carries.
pub async fn checked(response: Response) -> Result<Response> {
    let status = response.status();
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        return Ok(response);
    }
    if status == StatusCode::UNAUTHORIZED {
        return Err(ClientError::Unauthorized);
    }
    let url = response.url().to_string();
    let retry_after = retry_after(&response);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let text = |field: &str| body[field].as_str().unwrap_or_default().to_owned();
    let mut message = text("message");
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or("error").to_owned();
    }
    if let Some(wait) = retry_after {
        message.push_str(&format!(" (retry after {} s)", wait.as_secs()));
    }
    Err(ClientError::Refused {
        url,
        status: status.as_u16(),
        code: text("error"),
        message,
    })
}

pub async fn json_of(response: Response) -> Result<Value> {
    let url = response.url().to_string();
    response
        .json()
        .await
        .map_err(|e| ClientError::Failed(format!("{url}: the answer is not JSON: {e}")))
}

fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
}

/// Waits between tries: 1 s, doubling to 30 s, or what the server's `Retry-After` asked for
/// (read back from the error's message, where `checked` put it).
pub struct Backoff {
    deadline: Instant,
    next: Duration,
}

impl Backoff {
    pub fn new(retry_for: Duration) -> Backoff {
        let now = Instant::now();
        Backoff {
            deadline: now
                .checked_add(retry_for)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
            next: Duration::from_secs(1),
        }
    }

    /// How long to wait before trying again after `error`, or `None` when it is not worth
    /// it (a final answer, or --retry-for is over).
    pub fn wait_after(&mut self, error: &ClientError) -> Option<Duration> {
        if !error.is_transient() {
            return None;
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let asked = asked_wait(error);
        let wait = asked.unwrap_or(self.next).min(Duration::from_secs(60));
        self.next = (self.next * 2).min(Duration::from_secs(30));
        // The last try comes when --retry-for is up, not a whole backoff before.
        Some(wait.min(left))
    }

    /// Progress was made: the next failure starts the waits over.
    pub fn reset(&mut self, retry_for: Duration) {
        *self = Backoff::new(retry_for);
    }
}

fn asked_wait(error: &ClientError) -> Option<Duration> {
    let ClientError::Refused { message, .. } = error else {
        return None;
    };
    let (_, rest) = message.rsplit_once("(retry after ")?;
    let seconds = rest.strip_suffix(" s)")?;
    seconds.parse().ok().map(Duration::from_secs)
}

/// An error with its causes: reqwest keeps them apart ("error sending request" alone says
/// little).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

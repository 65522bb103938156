//! Events: their kinds, the client request behind them, and the JSON a hook receives.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::upload::model::Status;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    PreCreate,
    PreFinish,
    PostCreate,
    PostReceive,
    PostFinish,
    PostTerminate,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::PreCreate,
        EventKind::PreFinish,
        EventKind::PostCreate,
        EventKind::PostReceive,
        EventKind::PostFinish,
        EventKind::PostTerminate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::PreCreate => "pre-create",
            EventKind::PreFinish => "pre-finish",
            EventKind::PostCreate => "post-create",
            EventKind::PostReceive => "post-receive",
            EventKind::PostFinish => "post-finish",
            EventKind::PostTerminate => "post-terminate",
        }
    }

    /// Its place in `crate::metrics::HOOK_EVENTS`.
    pub fn index(self) -> usize {
        match self {
            EventKind::PreCreate => 0,
            EventKind::PreFinish => 1,
            EventKind::PostCreate => 2,
            EventKind::PostReceive => 3,
            EventKind::PostFinish => 4,
            EventKind::PostTerminate => 5,
        }
    }
}

impl FromStr for EventKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<_> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "`{text}` is not a hook event; they are {}",
                    names.join(", ")
                )
            })
    }
}

/// The client request behind an event, as a hook sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RequestInfo {
    pub method: String,
    pub path: String,
    #[schema(required = true)]
    pub remote_addr: Option<String>,
    /// Lowercase names; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
}

tokio::task_local! {
    /// The request being served, set around each handler by the HTTP layer, so the engine
    /// can describe it in the events it raises without every front-end passing it along.
    /// Unset for work no client request caused (the expiry sweep, start-up repair).
    pub static REQUEST: Option<Arc<RequestInfo>>;
}

fn current_request() -> Option<Arc<RequestInfo>> {
    REQUEST.try_with(Clone::clone).ok().flatten()
}

/// `work` with the request being served now, for work spawned onto a task of its own.
pub fn with_current_request<F: std::future::Future>(
    work: F,
) -> impl std::future::Future<Output = F::Output> {
    REQUEST.scope(current_request(), work)
}

/// An event ready to be asked or queued.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub kind: EventKind,
    pub upload_id: String,
    pub created_at: SystemTime,
    /// The JSON, exactly as it is sent (and signed).
    pub body: String,
}

/// An event read back from the queue.
#[derive(Debug, Clone)]
pub struct QueuedEvent {
    pub seq: i64,
    pub kind: EventKind,
    pub upload_id: String,
    pub created_at: SystemTime,
    pub attempts: u32,
    pub body: String,
}

/// The event JSON a hook receives (`HookEvent` in the OpenAPI document).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = HookEvent)]
pub(crate) struct Wire<'a> {
    #[schema(format = "uuid")]
    event_id: &'a str,
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    kind: &'static str,
    #[schema(format = DateTime)]
    time: String,
    upload: &'a Status,
    #[schema(required = true)]
    request: Option<&'a RequestInfo>,
}

pub fn build(kind: EventKind, upload: &Status, now: SystemTime) -> NewEvent {
    let event_id = uuid::Uuid::new_v4().to_string();
    let request = current_request();
    let wire = Wire {
        event_id: &event_id,
        kind: kind.as_str(),
        time: humantime::format_rfc3339_seconds(now).to_string(),
        upload,
        request: request.as_deref(),
    };
    // Serialising plain strings, numbers and maps cannot fail.
    let body = serde_json::to_string(&wire).unwrap_or_default();
    NewEvent {
        event_id,
        kind,
        upload_id: upload.id.clone(),
        created_at: now,
        body,
    }
}

//! Hooks: the operator's system asked before an upload starts or is called done (`pre-*`),
//! and told of what happened (`post-*`) through a durable queue kept with the metadata.
//!
//! - [`event`]: the event kinds, the request that caused an event, and the event JSON.
//! - [`deliver`]: one delivery, over HTTP (signed) or to a command.
//! - [`outbox`]: drains the queue: retries with backoff, in order per upload.
//!
//! The engine raises every event in one place whatever the protocol; a `post-*` event is
//! written in the same transaction as the change it describes (see `Meta::save_progress`).

mod deliver;
pub mod event;
mod outbox;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

pub use deliver::{sign, Target};
pub use event::{with_current_request, EventKind, NewEvent, QueuedEvent, RequestInfo, REQUEST};
pub use outbox::run_outbox;

use crate::metrics::Metrics;
use crate::upload::model::{Status, UploadId};

/// What an operator configured.
#[derive(Debug, Clone)]
pub struct HookSettings {
    pub target: Target,
    pub events: Vec<EventKind>,
    pub timeout: Duration,
    pub retry_for: Duration,
    pub progress_interval: Duration,
    pub secret: Option<String>,
}

/// The hooks of one service: asks `pre-*` hooks and builds `post-*` events for the queue.
pub struct Hooks {
    settings: HookSettings,
    client: reqwest13::Client,
    metrics: Arc<Metrics>,
    /// When each upload's last `post-receive` was queued, to send at most one per interval.
    last_progress: Mutex<HashMap<UploadId, Instant>>,
    /// Wakes the outbox when an event was queued here.
    queued: tokio::sync::Notify,
    /// `pre-*` questions in flight at most: each may hold a process or a connection for up
    /// to --hooks-timeout, and a burst of creates must not make thousands at once.
    asking: tokio::sync::Semaphore,
    /// When a `pre-*` hook last failed, unless it has answered since: the sweep does not
    /// wait out a hook that is down for every upload it would seal.
    failed_at: Mutex<Option<Instant>>,
}

/// `pre-*` questions in flight at most.
const MAX_ASKING: usize = 64;

/// A `pre-*` hook's verdict.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub reject: Option<Rejection>,
    pub name: Option<String>,
    pub content_type: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A hook's refusal: the client gets this status and message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Rejection {
    #[serde(default = "forbidden")]
    pub status: u16,
    #[serde(default)]
    pub message: String,
}

fn forbidden() -> u16 {
    403
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("the {0} hook could not be reached: {1}")]
    Unreachable(&'static str, String),
    #[error("the {0} hook did not answer within {1:?}")]
    TimedOut(&'static str, Duration),
    #[error("the {0} hook failed: {1}")]
    Failed(&'static str, String),
    #[error("the {0} hook's answer is not valid: {1}")]
    BadAnswer(&'static str, String),
}

impl Hooks {
    pub fn new(settings: HookSettings, metrics: Arc<Metrics>) -> Result<Hooks, HookError> {
        // No redirects: a 30x would turn the POST into a body-less GET whose 2xx would count
        // as delivered (or, for a pre-* hook, as "accept").
        let client = reqwest13::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest13::redirect::Policy::none())
            .build()
            .map_err(|e| HookError::Unreachable("HTTP", e.to_string()))?;
        Ok(Hooks {
            settings,
            client,
            metrics,
            last_progress: Mutex::default(),
            queued: tokio::sync::Notify::new(),
            asking: tokio::sync::Semaphore::new(MAX_ASKING),
            failed_at: Mutex::default(),
        })
    }

    pub fn wants(&self, kind: EventKind) -> bool {
        self.settings.events.contains(&kind)
    }

    /// Asks a `pre-*` hook about `upload`; `{}` (or a hook not configured) accepts.
    pub async fn ask(&self, kind: EventKind, upload: &Status) -> Result<Answer, HookError> {
        if !self.wants(kind) {
            return Ok(Answer::default());
        }
        let event = event::build(kind, upload, SystemTime::now());
        let timeout = self.settings.timeout;
        let Ok(Ok(_permit)) = tokio::time::timeout(timeout, self.asking.acquire()).await else {
            return Err(HookError::TimedOut(kind.as_str(), timeout));
        };
        let reply = deliver::send(self, kind, &event.body).await;
        let outcome = if reply.is_ok() { "delivered" } else { "failed" };
        self.metrics.hooks.count(kind.index(), outcome);
        *lock(&self.failed_at) = reply.is_err().then(Instant::now);
        let reply = reply?;
        let answer = parse_answer(kind, &reply)?;
        if let Some(rejection) = &answer.reject {
            if !(400..=599).contains(&rejection.status) {
                let status = rejection.status;
                return Err(HookError::BadAnswer(
                    kind.as_str(),
                    format!("a rejection's status must be 4xx or 5xx, not {status}"),
                ));
            }
        }
        Ok(answer)
    }

    /// The `post-*` event for `upload`, if the operator wants that kind; `post-receive` at
    /// most once per --hooks-progress-interval for each upload.
    pub fn post(&self, kind: EventKind, upload: &Status) -> Option<NewEvent> {
        if !self.wants(kind) {
            return None;
        }
        if kind == EventKind::PostReceive && !self.progress_due(upload) {
            return None;
        }
        Some(event::build(kind, upload, SystemTime::now()))
    }

    /// Whether a `pre-*` hook failed lately and has not answered since (for a minute after
    /// each failure, so it is still asked now and then).
    pub fn failing(&self) -> bool {
        lock(&self.failed_at).is_some_and(|at| at.elapsed() < Duration::from_secs(60))
    }

    /// An upload that will take no more bytes no longer needs its progress throttle.
    pub fn forget_progress(&self, id: UploadId) {
        lock(&self.last_progress).remove(&id);
    }

    fn progress_due(&self, upload: &Status) -> bool {
        let Ok(id) = upload.id.parse::<UploadId>() else {
            return false;
        };
        let interval = self.settings.progress_interval;
        let now = Instant::now();
        let mut last = lock(&self.last_progress);
        if last
            .get(&id)
            .is_some_and(|at| now.duration_since(*at) < interval)
        {
            return false;
        }
        // Bounded: entries past their interval no longer throttle anything.
        if last.len() >= 10_000 {
            last.retain(|_, at| now.duration_since(*at) < interval);
        }
        last.insert(id, now);
        true
    }

    /// Tells the outbox that events were queued (it also looks every second).
    pub fn queued(&self, events: &[NewEvent]) {
        for event in events {
            self.metrics.hooks.count(event.kind.index(), "queued");
        }
        if !events.is_empty() {
            self.queued.notify_one();
        }
    }

    pub fn settings(&self) -> &HookSettings {
        &self.settings
    }
}

/// A lock whose holder cannot leave it inconsistent (plain inserts and reads).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A `pre-*` answer: JSON, or nothing at all for "accept".
fn parse_answer(kind: EventKind, reply: &[u8]) -> Result<Answer, HookError> {
    if reply.iter().all(u8::is_ascii_whitespace) {
        return Ok(Answer::default());
    }
    serde_json::from_slice(reply).map_err(|e| HookError::BadAnswer(kind.as_str(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_accept_reject_or_modify() {
        let kind = EventKind::PreCreate;
        assert!(parse_answer(kind, b"").unwrap().reject.is_none());
        assert!(parse_answer(kind, b" {} \n").unwrap().reject.is_none());
        let rejected = parse_answer(kind, br#"{"reject": {"status": 402, "message": "quota"}}"#);
        assert_eq!(
            rejected.unwrap().reject,
            Some(Rejection {
                status: 402,
                message: "quota".into()
            })
        );
        let set =
            parse_answer(kind, br#"{"name": "a.txt", "metadata": {"user": "alice"}}"#).unwrap();
        assert_eq!(set.name.as_deref(), Some("a.txt"));
        assert_eq!(set.metadata.unwrap()["user"], "alice");
        assert!(parse_answer(kind, b"yes").is_err());
        assert!(parse_answer(kind, br#"{"rejekt": {}}"#).is_err());
    }
}

//! Where the engine raises hook events, whatever protocol the request came in by: `pre-*`
//! hooks are asked here, and `post-*` events ride along with the change they describe.

use std::time::SystemTime;

use super::input::validate_name;
use super::model::{encode_metadata, Concat, Status};
use super::{Engine, Result, State, Upload, UploadError, UploadId};
use crate::hooks::{lock, EventKind, HookError, NewEvent, Rejection};

impl Engine {
    /// Saves an append's or a finish's changes with the `post-*` event they imply:
    /// `post-finish` when the upload just completed (the fenced save succeeds once), else
    /// `post-receive` (throttled) while bytes arrive.
    pub(super) async fn save(&self, upload: &Upload) -> Result<()> {
        let is_part = matches!(upload.concat, Concat::Partial { .. });
        let kind = match upload.state {
            State::Complete if is_part => None,
            State::Complete => Some(EventKind::PostFinish),
            State::Uploading if !upload.is_all_in() && !self.is_unannounced(upload) => {
                Some(EventKind::PostReceive)
            }
            _ => None,
        };
        // Without hooks, no status is built for an event on every checkpoint.
        let kind = kind.filter(|_| self.hooks.is_some());
        let events = kind.map(|k| self.post_event(k, &Status::of(upload)));
        let events = events.unwrap_or_default();
        self.meta.save_progress(upload, &events).await?;
        self.announce(&events);
        if let (Some(hooks), false) = (&self.hooks, upload.state == State::Uploading) {
            hooks.forget_progress(upload.id);
        }
        Ok(())
    }

    /// Holds back `post-receive` for a streamed create until it is announced (or not, when
    /// `quiet` is false).
    pub(super) fn set_unannounced(&self, id: UploadId, quiet: bool) {
        if self.hooks.is_none() {
            return;
        }
        let mut set = lock(&self.unannounced);
        match quiet {
            true => set.insert(id),
            false => set.remove(&id),
        };
    }

    fn is_unannounced(&self, upload: &Upload) -> bool {
        lock(&self.unannounced).contains(&upload.id)
    }

    /// The `post-*` event of this kind, if hooks want it.
    pub(super) fn post_event(&self, kind: EventKind, status: &Status) -> Vec<NewEvent> {
        self.hooks
            .as_ref()
            .and_then(|hooks| hooks.post(kind, status))
            .into_iter()
            .collect()
    }

    /// Events just committed: the outbox may send them now.
    pub(super) fn announce(&self, events: &[NewEvent]) {
        if let Some(hooks) = &self.hooks {
            hooks.queued(events);
        }
    }

    /// A `pre-finish` hook that failed lately: the sweep leaves all-in uploads for later
    /// rather than wait out the hook's timeout for each (clients' requests still ask).
    pub(super) fn pre_finish_failing(&self) -> bool {
        self.asks_pre_finish() && self.hooks.as_ref().is_some_and(|hooks| hooks.failing())
    }

    /// Whether a `pre-finish` hook decides before uploads are called done.
    pub(super) fn asks_pre_finish(&self) -> bool {
        self.hooks
            .as_ref()
            .is_some_and(|hooks| hooks.wants(EventKind::PreFinish))
    }

    /// Asks `pre-create` about a new upload, and applies what it sets (name, content type,
    /// metadata: each replaces what the client gave).
    pub(super) async fn ask_pre_create(&self, upload: &mut Upload) -> Result<()> {
        let Some(hooks) = &self.hooks else {
            return Ok(());
        };
        let kind = EventKind::PreCreate;
        let answer = hooks.ask(kind, &Status::of(upload)).await?;
        if let Some(rejection) = answer.reject {
            return Err(rejected(rejection, None));
        }
        let bad = |what: &str| HookError::BadAnswer(kind.as_str(), what.to_owned());
        if let Some(name) = answer.name {
            validate_name(&name).map_err(bad)?;
            upload.name = name;
        }
        if let Some(content_type) = answer.content_type {
            if content_type.len() > 255 || content_type.parse::<mime::Mime>().is_err() {
                return Err(bad("content_type must be a media type such as video/mp4").into());
            }
            upload.content_type = Some(content_type);
        }
        if let Some(pairs) = answer.metadata {
            let raw = encode_metadata(&pairs)
                .ok_or_else(|| bad("a metadata key holds a space, a comma or a control"))?;
            upload.metadata = (!raw.is_empty()).then_some(raw);
        }
        Ok(())
    }

    /// Asks `pre-finish` about an upload whose bytes are all in and whose digest matched:
    /// `Some` if the hook refuses it.
    pub(super) async fn ask_pre_finish(
        &self,
        upload: &Upload,
        digest: &str,
    ) -> Result<Option<Rejection>> {
        let Some(hooks) = &self.hooks else {
            return Ok(None);
        };
        let mut status = Status::of(upload);
        status.sha256 = Some(digest.to_owned());
        let answer = hooks.ask(EventKind::PreFinish, &status).await?;
        Ok(answer.reject)
    }

    /// Runs the outbox of `post-*` events until dropped; never ends without hooks.
    pub async fn deliver_events(&self) {
        match &self.hooks {
            Some(hooks) => crate::hooks::run_outbox(hooks.clone(), self.meta.clone()).await,
            None => std::future::pending().await,
        }
    }
}

/// A hook's refusal as the client sees it.
pub(super) fn rejected(rejection: Rejection, received: Option<u64>) -> UploadError {
    UploadError::Rejected {
        status: rejection.status,
        message: rejection.message,
        received,
    }
}

/// The expiry a failed upload gets: removed after the usual time.
pub(super) fn failed(upload: &mut Upload, failure: &str, expires_at: SystemTime) {
    upload.state = State::Failed;
    upload.failure = Some(failure.to_owned());
    upload.hash_state = None;
    upload.expires_at = Some(expires_at);
}

//! Live status for watchers (long poll, WebSocket, SSE all read through a [`Watcher`]).

use super::{Engine, Result, State, Status, UploadError, UploadId};
use crate::cluster::Subscription;

/// One watcher of an upload's status.
pub struct Watcher(Subscription);

impl Watcher {
    /// The latest status, marking it seen.
    pub fn latest(&mut self) -> Status {
        self.0.latest()
    }

    /// Waits for a newer status. `false` once no more can come (the upload was removed).
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await
    }
}

impl Engine {
    /// Starts watching an upload's status. The watcher holds the latest status; it changes
    /// with every committed append and closes after the upload is removed.
    pub async fn watch(&self, id: UploadId) -> Result<Watcher> {
        let status = self.status(id).await?;
        let subscription = self.cluster.subscribe(&status);
        // A change committed between that read and the subscription was published to nobody:
        // read again, and let the channel move forward (never back) to what is stored now.
        match self.status(id).await {
            Ok(latest) => self.cluster.update(&status.id, &mut |current| {
                let newer = latest.received > current.received
                    || (latest.state != current.state && current.state == State::Uploading);
                if newer {
                    *current = latest.clone();
                }
                newer
            }),
            Err(UploadError::Gone(_)) => self.cluster.update(&status.id, &mut |current| {
                current.removed = Some("deleted".into());
                true
            }),
            Err(_) => {}
        }
        Ok(Watcher(subscription))
    }
}

//! Uploads going away: DELETE, expiry, and tombstones (410, later forgotten: 404).

use std::time::SystemTime;

use tracing::{info, warn};

use super::model::Concat;
use super::{Engine, Result, State, Status, Upload, UploadError, UploadId};
use crate::cluster::{Purpose, Stop};
use crate::hooks::EventKind;
use crate::metrics::Metrics;

/// How many uploads one sweep handles at most; the next sweep takes the rest.
const SWEEP_BATCH: u32 = 1000;

impl Engine {
    pub async fn delete(&self, id: UploadId) -> Result<()> {
        // Taking the lock stops a running append, which commits before letting go.
        let guard = self.cluster.lock(id, Purpose::Remove).await;
        if guard.stop_reason() == Some(Stop::Unavailable) {
            return Err(UploadError::Unavailable { received: 0 });
        }
        let upload = self.load_live(id, Some(&guard)).await?;
        self.remove(&upload, "deleted").await?;
        drop(guard);
        self.remove_related(&upload, "deleted").await;
        Ok(())
    }

    /// The tombstone first, then the bytes: once the record says removed, the bytes are owed,
    /// and whoever finds them still there (this call, the sweeper, start-up) deletes them.
    pub(super) async fn remove(&self, upload: &Upload, reason: &str) -> Result<()> {
        let mut last = Status::of(upload);
        last.removed = Some(reason.to_owned());
        // Parts removed once their final holds their bytes end quietly.
        let events = match reason {
            "concatenated" => Vec::new(),
            _ => self.post_event(EventKind::PostTerminate, &last),
        };
        self.meta
            .mark_removed(upload.id, reason, SystemTime::now(), &events)
            .await?;
        self.announce(&events);
        let counter = if reason == "expired" {
            &self.metrics.expired
        } else {
            &self.metrics.deleted
        };
        Metrics::add(counter, 1);
        self.cluster.close(last);
        info!(upload = %upload.id, reason, "removed");
        crate::fault::point("remove-after-tombstone");
        self.remove_bytes(upload).await;
        Ok(())
    }

    /// Deletes a removed upload's bytes and records it. A failure is only logged: the bytes
    /// stay owed, and the next sweep tries again.
    async fn remove_bytes(&self, upload: &Upload) -> bool {
        let id = upload.id;
        let state = upload.store_state.as_deref();
        let recorded: Result<()> = match self.store.remove(&id.to_string(), state).await {
            Ok(()) => self
                .meta
                .mark_bytes_removed(id, SystemTime::now())
                .await
                .map_err(Into::into),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = &recorded {
            warn!(upload = %id, error = %e, "removing the bytes of a removed upload failed; will retry");
        }
        recorded.is_ok()
    }

    /// Forgets tombstones older than --forget-after whose bytes are gone; returns how many.
    pub async fn forget_removed(&self) -> Result<u64> {
        let now = SystemTime::now();
        let before = now
            .checked_sub(self.settings.forget_after)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(self.meta.forget_removed(before).await?)
    }

    /// Deletes the bytes that removals cut short left behind; returns how many uploads.
    pub async fn purge_removed(&self) -> Result<usize> {
        let mut purged = 0;
        loop {
            let batch = self.meta.removed_with_bytes(SWEEP_BATCH).await?;
            let mut done = 0;
            for upload in &batch {
                // Another instance (or a delete here) may be removing them right now.
                let Some(_guard) = self.cluster.try_lock(upload.id).await else {
                    continue;
                };
                if self.remove_bytes(upload).await {
                    done += 1;
                }
            }
            purged += done;
            if !more_to_sweep(batch.len(), done) {
                return Ok(purged);
            }
        }
    }

    /// Removes one upload if it is still expired and nobody is appending (or seals it, if its
    /// bytes are all in). True if it did either.
    pub(super) async fn expire_one(&self, id: UploadId) -> Result<bool> {
        let Some(guard) = self.cluster.try_lock(id).await else {
            return Ok(false);
        };
        let Some(mut upload) = self.meta.get(id).await? else {
            return Ok(false);
        };
        if upload.removed_at.is_some() {
            return Ok(false);
        }
        if matches!(upload.concat, Concat::Final { .. }) && upload.state == State::Uploading {
            return self.settle_final(&mut upload).await;
        }
        if upload.is_all_in() {
            if self.pre_finish_failing() {
                return Ok(false);
            }
            // Due, but its bytes are all in: sealing it is the only right end (`seal_all_in`).
            if let Err(e) = self.seal_all_in(&mut upload).await {
                warn!(upload = %upload.id, error = %e, "sealing an upload whose bytes are all in failed");
                return Ok(false);
            }
            drop(guard);
            // Boxed: assembling a final reads it through `load_live`, which may expire.
            Box::pin(self.part_moved(&upload, upload.state == State::Complete)).await;
            return Ok(true);
        }
        let removed = match upload.concat {
            Concat::Partial { whole: Some(whole) } => self.expire_part(&upload, whole).await?,
            _ if upload.is_expired(SystemTime::now()) => {
                self.remove(&upload, "expired").await?;
                true
            }
            _ => false,
        };
        if removed {
            drop(guard);
            self.remove_related(&upload, "expired").await;
        }
        Ok(removed)
    }

    /// Removes every upload whose expiry has passed; returns how many.
    pub async fn expire_due(&self) -> Result<usize> {
        let mut removed = 0;
        loop {
            let batch = self.meta.expired(SystemTime::now(), SWEEP_BATCH).await?;
            let mut done = 0;
            for id in &batch {
                if self.expire_one(*id).await? {
                    done += 1;
                }
            }
            removed += done;
            if !more_to_sweep(batch.len(), done) {
                return Ok(removed);
            }
        }
    }
}

/// Whether a sweep goes on at once: its batch was full (more may wait) and it got somewhere
/// (a batch of uploads it must skip, being appended to, would only come back). A sweep that
/// took one batch per minute fell behind a client creating 20 uploads a second.
fn more_to_sweep(fetched: usize, done: usize) -> bool {
    fetched >= SWEEP_BATCH as usize && done > 0
}

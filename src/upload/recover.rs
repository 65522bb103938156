//! Start-up repair: make every unfinished upload's bytes and record agree after a crash.

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tracing::warn;

use std::time::{Duration, SystemTime};

use super::append::restore_hasher;
use super::model::Concat;
use super::{checksum, Engine, Result, State, Status, Upload, UploadError};
use crate::hooks::Rejection;

/// How long after a failed completion the sweep tries again, at first and at most.
const SEAL_AGAIN: Duration = Duration::from_secs(10);
const SEAL_AGAIN_AT_MOST: Duration = Duration::from_secs(3600);

impl Engine {
    /// Reconciles every unfinished upload; returns how many needed repair.
    pub async fn reconcile(&self) -> Result<usize> {
        let mut repaired = 0;
        // Once the store could not be reached, the other seals wait for the sweep: each try
        // would wait out the store client's retries before the service starts.
        let mut store_away = false;
        let mut finals = Vec::new();
        for id in self.meta.unfinished().await? {
            // Another instance may be appending to it (or repairing it) right now; once locked,
            // read it, as that one may have moved it since the list was read.
            let Some(_guard) = self.cluster.try_lock(id).await else {
                continue;
            };
            let Some(upload) = self.meta.get(id).await? else {
                continue;
            };
            if upload.state != State::Uploading || upload.removed_at.is_some() {
                continue;
            }
            if matches!(upload.concat, Concat::Final { .. }) {
                // Assembled again from its parts below, with this lock let go.
                finals.push(id);
                continue;
            }
            let before = (upload.received, upload.hash_state.clone());
            let mut upload = self.reconcile_one(upload).await?;
            if upload.is_all_in() {
                // Every byte was committed, but the crash came before the upload was sealed.
                // A store that cannot complete it now (it is down) must not keep the service
                // from starting: the bytes are safe, and the expiry sweep seals it later.
                if store_away {
                    self.mark_due(&mut upload).await;
                    repaired += 1;
                    continue;
                }
                match self.seal_all_in(&mut upload).await {
                    Ok(_) => {
                        warn!(upload = %upload.id, "sealed after a crash");
                        // A part sealed now may be the last its final waited for.
                        if let Concat::Partial { whole: Some(whole) } = upload.concat {
                            finals.push(whole);
                        }
                    }
                    Err(e) => {
                        store_away = e.is_unavailable() || matches!(e, UploadError::Hook(_));
                        warn!(upload = %upload.id, error = %e, "sealing after a crash failed; retried by the sweep");
                    }
                }
                repaired += 1;
                continue;
            }
            if (upload.received, upload.hash_state.clone()) != before {
                warn!(upload = %upload.id, from = before.0, to = upload.received, "reconciled after a crash");
                self.meta.rewind(&upload).await?;
                repaired += 1;
            }
        }
        finals.sort_unstable();
        finals.dedup();
        for id in finals {
            if let Err(e) = self.assemble(id).await {
                warn!(upload = %id, error = %e, "assembling a final upload after a restart failed; retried by the sweep");
            }
        }
        Ok(repaired)
    }

    /// Seals an upload whose bytes are all committed but which is still `uploading` (a crash
    /// or a store outage came between the commit and the store's completion). On failure the
    /// upload is made due at once, so the expiry sweep (`expire_one`) tries again soon instead
    /// of waiting for a client or a restart.
    /// `Some` when a `pre-finish` hook refused it (it is failed now).
    pub(super) async fn seal_all_in(&self, upload: &mut Upload) -> Result<Option<Rejection>> {
        let sealed = async {
            let hasher = restore_hasher(upload)?;
            self.seal(upload, hasher, SystemTime::now()).await
        }
        .await;
        let rejection = match sealed {
            Ok(rejection) => rejection,
            Err(e) => {
                self.mark_due(upload).await;
                return Err(e);
            }
        };
        self.save(upload).await?;
        self.count_finished(upload);
        self.cluster.publish(&Status::of(upload));
        Ok(rejection)
    }

    /// Makes an all-in upload the store failed to complete due again later, for the sweep to
    /// seal: not at once (each try may wait out the store client's retries, and the sweep
    /// would spend itself on them while the store is down), and later the longer it has
    /// failed (half the time since its bytes were all in, 10 s to an hour), so that one the
    /// store will never complete costs little.
    pub(super) async fn mark_due(&self, upload: &mut Upload) {
        let now = SystemTime::now();
        let failing = now.duration_since(upload.updated_at).unwrap_or_default();
        let wait = (failing / 2).clamp(SEAL_AGAIN, SEAL_AGAIN_AT_MOST);
        upload.expires_at = Some(now + wait);
        if let Err(e) = self.save(upload).await {
            warn!(upload = %upload.id, error = %e, "could not mark an unsealed upload due");
        }
    }

    /// The store wins where it holds less (bytes lost in a crash); the record wins where the
    /// store holds more (bytes written but never committed as durable).
    async fn reconcile_one(&self, mut upload: Upload) -> Result<Upload> {
        let key = upload.id.to_string();
        let held = self
            .store
            .recover(&key, upload.received, upload.store_state.as_deref())
            .await?;
        let state_ok = upload
            .hash_state
            .as_deref()
            .is_some_and(|s| checksum::restore_state(s).is_some());
        if held < upload.received || !state_ok {
            let hasher = self.hash_prefix(&key, held).await?;
            upload.received = held;
            upload.hash_state = Some(checksum::save_state(&hasher));
        }
        Ok(upload)
    }

    /// The SHA-256 state after the first `len` stored bytes.
    pub(super) async fn hash_prefix(&self, key: &str, len: u64) -> Result<Sha256> {
        let mut bytes = self.store.open_read(key).await?.stream(0, len).await?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = bytes.next().await {
            let chunk =
                chunk.map_err(|e| UploadError::Internal(format!("re-reading {key}: {e}")))?;
            hasher.update(&chunk);
        }
        Ok(hasher)
    }
}

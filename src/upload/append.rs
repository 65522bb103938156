//! One append under the upload's lock: check, pump the body, commit, and settle the end.

use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest, Sha256};
use tracing::warn;

use super::checksum::{self, ChunkChecksum};
use super::events::{failed, rejected};
use super::model::Concat;
use super::pipeline::{Checkpoint, End, Pump, Pumped};
use super::{AppendRequest, Engine, Result, State, Status, Upload, UploadError, UploadId};
use crate::cluster::{Guard, Purpose, Stop};
use crate::hooks::Rejection;
use crate::metrics::Metrics;

impl Engine {
    /// Appends `body` at `request.offset`. Returns the new status once the bytes are durable.
    pub async fn append<S, E>(
        &self,
        id: UploadId,
        request: AppendRequest,
        body: S,
    ) -> Result<Status>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    {
        let started = Instant::now();
        let guard = self.cluster.lock(id, Purpose::Append).await;
        // After the lock: a request taking over a stalled one reuses the place it frees, so
        // even at the cap a resuming client is never refused. Declared after `guard`, it is
        // also released before the lock.
        let _slot = self.append_slot(request.client)?;
        let _in_flight = self.metrics.append_in_flight();
        // Before anything else: a guard told to stop may not hold the upload (across
        // instances, it was stopped while waiting for another instance's holder).
        if let Some(stop) = guard.stop_reason() {
            let received = self.meta.get(id).await?.map_or(0, |u| u.received);
            return Err(stopped(stop, received));
        }
        let mut upload = self.load_live(id, Some(&guard)).await?;
        let room = self.check_append(&mut upload, &request)?;
        if room == 0 && upload.is_all_in() {
            let (finished, upload) = self.finish_all_in(upload, started).await;
            // The place first, then the lock: whoever takes the lock over takes the place too.
            drop((_slot, _in_flight));
            drop(guard);
            self.part_moved(&upload, upload.state == State::Complete)
                .await;
            return finished;
        }
        if room > 0 {
            self.check_space().await?;
        }
        let start = upload.received;
        let pumped = self
            .pump(&guard, &mut upload, body, room, request.checksum.as_ref())
            .await?;
        let end = pumped.end;
        // Settled here, under the lock, and only for a body that ended normally.
        let finishing = request.complete && end == End::Finished;
        let rejection = match &request.checksum {
            Some(checksum) => {
                let settle = (start, checksum, finishing);
                self.settle_checksummed(&mut upload, pumped, settle, &guard)
                    .await?
            }
            None => self.commit(&mut upload, pumped, finishing).await?,
        };
        self.metrics.observe_append(started.elapsed());
        if let Some(rejection) = rejection {
            return Err(rejected(rejection, Some(upload.received)));
        }
        let verdict = self.append_verdict(&upload, end, request.complete, &guard);
        // A part's final is assembled (or its watchers told) with this lock let go: assembly
        // removes the parts, this one too. The place goes first: a request waiting for the
        // lock (taking over at the cap) must find it free.
        drop((_slot, _in_flight));
        drop(guard);
        self.part_moved(&upload, upload.state == State::Complete)
            .await;
        verdict
    }

    /// An append at the end of an upload whose bytes are all in, but which an earlier try
    /// could not seal (the store or a `pre-finish` hook failed): seals it now, without
    /// reopening bytes the store may have made one whole already. Its body cannot add a byte.
    async fn finish_all_in(
        &self,
        mut upload: Upload,
        started: Instant,
    ) -> (Result<Status>, Upload) {
        let rejection = match self.seal_all_in(&mut upload).await {
            Ok(rejection) => rejection,
            Err(e) => return (Err(e), upload),
        };
        self.metrics.observe_append(started.elapsed());
        if let Some(rejection) = rejection {
            return (Err(rejected(rejection, Some(upload.received))), upload);
        }
        (sha256_verdict(&upload, Status::of(&upload)), upload)
    }

    /// The answer to an append whose bytes are committed: what ended it decides.
    fn append_verdict(
        &self,
        upload: &Upload,
        end: End,
        last_piece: bool,
        guard: &Guard,
    ) -> Result<Status> {
        let status = Status::of(upload);
        let received = upload.received;
        if upload.state == State::Failed {
            return sha256_verdict(upload, status);
        }
        let length_mismatch = || UploadError::LengthMismatch {
            size: upload.size.unwrap_or(received),
            given: received,
            received,
        };
        match end {
            // A last piece that does not end at the size says the client has another length
            // in mind; what fitted is kept, the rest was never written.
            End::Overshoot if last_piece && upload.size.is_some() => Err(length_mismatch()),
            End::Overshoot => Err(UploadError::TooLarge {
                limit: upload.size.unwrap_or(self.size_limit()),
                received: Some(received),
            }),
            End::Cancelled => Err(stopped(
                guard.stop_reason().unwrap_or(Stop::ShuttingDown),
                received,
            )),
            End::Idle => Err(UploadError::IdleTimeout { received }),
            End::TooSlow => Err(UploadError::TooSlow { received }),
            End::Finished if last_piece && upload.size != Some(received) => Err(length_mismatch()),
            _ => Ok(status),
        }
    }

    /// The checks of API.md, in its order: state, offset, length, room. Returns the room left.
    fn check_append(&self, upload: &mut Upload, request: &AppendRequest) -> Result<u64> {
        let received = upload.received;
        if matches!(upload.concat, Concat::Final { .. }) {
            return Err(UploadError::FinalUpload);
        }
        if upload.state != State::Uploading {
            return Err(UploadError::NotUploading {
                state: upload.state.as_str(),
                received,
            });
        }
        if request.offset != received {
            return Err(UploadError::OffsetMismatch {
                given: request.offset,
                received,
            });
        }
        if let Some(length) = request.length {
            self.settle_length(upload, length)?;
        }
        let limit = upload.size.unwrap_or(self.size_limit());
        let room = limit.saturating_sub(received);
        if let (true, Some(size), Some(len)) =
            (request.complete, upload.size, request.content_length)
        {
            let end = received.saturating_add(len);
            if end != size {
                return Err(UploadError::LengthMismatch {
                    size,
                    given: end,
                    received,
                });
            }
        }
        if request.content_length.is_some_and(|len| len > room) {
            return Err(UploadError::TooLarge {
                limit,
                received: Some(received),
            });
        }
        Ok(room)
    }

    /// A length an append declares: it must match a known size, or becomes a deferred one.
    fn settle_length(&self, upload: &mut Upload, length: u64) -> Result<()> {
        let received = upload.received;
        match upload.size {
            Some(size) if size != length => Err(UploadError::LengthMismatch {
                size,
                given: length,
                received,
            }),
            Some(_) => Ok(()),
            None if length < received => Err(UploadError::LengthBelowReceived {
                given: length,
                received,
            }),
            None if length > self.size_limit() => Err(UploadError::TooLarge {
                limit: self.size_limit(),
                received: Some(received),
            }),
            None => {
                upload.size = Some(length);
                Ok(())
            }
        }
    }

    /// Runs the byte path, committing durable checkpoints as they come.
    pub(super) async fn pump<S, E>(
        &self,
        guard: &Guard,
        upload: &mut Upload,
        body: S,
        room: u64,
        checksum: Option<&ChunkChecksum>,
    ) -> Result<Pumped>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    {
        let hasher = restore_hasher(upload)?;
        let key = upload.id.to_string();
        let sink = self
            .store
            .open_append(
                &key,
                upload.received,
                upload.size,
                upload.store_state.as_deref(),
            )
            .await?;
        let pump = Pump {
            sink,
            hasher,
            chunk: checksum.map(ChunkChecksum::hasher),
            room,
            checkpoints: checksum.is_none(),
            idle_timeout: self.settings.idle_timeout,
            min_rate: self.settings.min_body_rate,
            jobs: self.jobs.clone(),
        };
        let mut last_commit = Instant::now();
        let shared = RefCell::new(upload);
        let pumped = pump
            .run(body, guard.cancel(), |checkpoint| {
                // Commit every checkpoint while someone watches; otherwise about once a second,
                // which bounds what a crash can take back.
                let due = self.cluster.is_watched(&key)
                    || last_commit.elapsed() >= Duration::from_secs(1);
                if due {
                    last_commit = Instant::now();
                }
                let shared = &shared;
                async move {
                    if due {
                        self.commit_checkpoint(shared, checkpoint).await;
                    }
                    due
                }
            })
            .await?;
        Ok(pumped)
    }

    async fn commit_checkpoint(&self, upload: &RefCell<&mut Upload>, checkpoint: Checkpoint) {
        let snapshot = {
            let mut upload = upload.borrow_mut();
            let now = SystemTime::now();
            let added = checkpoint.received.saturating_sub(upload.received);
            Metrics::add(&self.metrics.bytes_received, added);
            upload.received = checkpoint.received;
            upload.hash_state = Some(checkpoint.hash_state);
            upload.store_state = checkpoint.store_state;
            upload.updated_at = now;
            upload.expires_at = Some(self.expiry_from(now));
            (*upload).clone()
        };
        match self.save(&snapshot).await {
            Ok(()) => {
                self.cluster.publish(&Status::of(&snapshot));
                self.part_moved(&snapshot, false).await;
            }
            // The bytes are durable in the store; the final commit records them.
            Err(e) => warn!(upload = %snapshot.id, error = %e, "checkpoint commit failed"),
        }
    }

    /// Records what the pump made durable: `received`, the hasher, and completion.
    /// With `finishing` (the last piece ended normally), a deferred size becomes what arrived.
    /// `Some` when a `pre-finish` hook refused the upload (it is failed now).
    pub(super) async fn commit(
        &self,
        upload: &mut Upload,
        pumped: Pumped,
        finishing: bool,
    ) -> Result<Option<Rejection>> {
        let Pumped {
            sink,
            hasher,
            failure,
            ..
        } = pumped;
        // Kept: everything written is made durable now (a store of parts writes its tail).
        let (mut sink, failure) = self
            .jobs
            .block(move || {
                let mut sink = sink;
                let failure = failure.or_else(|| sink.finish().err());
                (sink, failure)
            })
            .await?;
        if let Some(failure) = failure {
            // Nothing past the last commit is known durable: cut the bytes back to it.
            let committed = upload.received;
            let _ = self.jobs.block(move || sink.truncate_to(committed)).await;
            return Err(failure.into());
        }
        let now = SystemTime::now();
        let added = sink.position().saturating_sub(upload.received);
        Metrics::add(&self.metrics.bytes_received, added);
        upload.received = sink.position();
        upload.store_state = sink.state();
        upload.updated_at = now;
        if finishing && upload.size.is_none() {
            upload.size = Some(upload.received);
        }
        let mut rejection = None;
        if upload.size == Some(upload.received) {
            rejection = self.seal_durably(upload, hasher, now).await?;
        } else {
            upload.hash_state = Some(checksum::save_state(&hasher));
            upload.expires_at = Some(self.expiry_from(now));
        }
        self.save(upload).await?;
        self.count_finished(upload);
        crate::fault::point("commit-before-publish");
        self.cluster.publish(&Status::of(upload));
        Ok(rejection)
    }

    /// A checksummed chunk counts whole or not at all: its checksum covers every byte of it,
    /// so one cut short, cut off at the size, or mismatched leaves nothing behind.
    async fn settle_checksummed(
        &self,
        upload: &mut Upload,
        mut pumped: Pumped,
        (start, checksum, finishing): (u64, &ChunkChecksum, bool),
        guard: &Guard,
    ) -> Result<Option<Rejection>> {
        let matched = pumped
            .chunk
            .take()
            .is_some_and(|chunk| chunk.matches(&checksum.expected));
        let verdict = match pumped.end {
            End::Overshoot => Err(UploadError::TooLarge {
                limit: upload.size.unwrap_or(self.size_limit()),
                received: Some(start),
            }),
            End::Cancelled => Err(stopped(
                guard.stop_reason().unwrap_or(Stop::ShuttingDown),
                start,
            )),
            End::Disconnected | End::Idle | End::TooSlow => {
                Err(UploadError::ChecksumIncomplete { received: start })
            }
            _ if pumped.failure.is_none() && !matched => {
                Err(UploadError::ChecksumMismatch { received: start })
            }
            _ => Ok(()),
        };
        match verdict {
            Ok(()) => self.commit(upload, pumped, finishing).await,
            Err(e) => {
                let mut sink = pumped.sink;
                self.jobs.block(move || sink.truncate_to(start)).await??;
                Err(e)
            }
        }
    }
}

/// The error for an append told to stop before its body ended.
fn stopped(stop: Stop, received: u64) -> UploadError {
    match stop {
        Stop::Superseded => UploadError::Superseded { received },
        Stop::Removed => UploadError::Gone("deleted while this request was streaming"),
        Stop::ShuttingDown => UploadError::ShuttingDown { received },
        Stop::Unavailable => UploadError::Unavailable { received },
    }
}

impl Engine {
    /// `seal`, for a store that keeps state or a `pre-finish` hook: every byte is first
    /// committed as received, so a crash while the store completes the upload (or a hook
    /// that cannot be asked now) leaves a record that says all the bytes are in, and the
    /// sweep or start-up seals it (see `recover.rs`) instead of resuming a finished upload.
    pub(super) async fn seal_durably(
        &self,
        upload: &mut Upload,
        hasher: Sha256,
        now: SystemTime,
    ) -> Result<Option<Rejection>> {
        let two_steps = upload.store_state.is_some() || self.asks_pre_finish();
        if two_steps {
            upload.hash_state = Some(checksum::save_state(&hasher));
            self.save(upload).await?;
        }
        crate::fault::point("seal-before-complete");
        let sealed = self.seal(upload, hasher, now).await;
        if sealed.is_err() && two_steps {
            // All the bytes are committed: the sweep seals it once the store is back.
            self.mark_due(upload).await;
        }
        let rejection = sealed?;
        crate::fault::point("seal-after-complete");
        Ok(rejection)
    }

    /// Completes an upload whose bytes have all arrived: the store makes them one whole,
    /// then the digest and the `pre-finish` hook decide its state (complete, or failed, which
    /// goes at the usual expiry). The upload is unchanged if this fails: it stays all in.
    /// `Some` when the hook refused it.
    pub(super) async fn seal(
        &self,
        upload: &mut Upload,
        hasher: Sha256,
        now: SystemTime,
    ) -> Result<Option<Rejection>> {
        let key = upload.id.to_string();
        self.store
            .complete(&key, upload.store_state.as_deref())
            .await?;
        let digest = hex::encode(hasher.finalize());
        let matches = upload.expected_sha256.as_ref().is_none_or(|e| *e == digest);
        // A part is no file of its own: only its final is asked.
        let is_part = matches!(upload.concat, Concat::Partial { .. });
        let rejection = match matches && !is_part {
            true => self.ask_pre_finish(upload, &digest).await?,
            false => None,
        };
        upload.sha256 = Some(digest);
        match (matches, &rejection) {
            (false, _) => failed(upload, "sha256_mismatch", self.expiry_from(now)),
            (true, Some(_)) => failed(upload, "rejected", self.expiry_from(now)),
            (true, None) => {
                upload.state = State::Complete;
                upload.hash_state = None;
                upload.expires_at = upload.expiry_when_complete(self.expiry_from(now));
            }
        }
        Ok(rejection)
    }
}

pub(super) fn sha256_verdict(upload: &Upload, status: Status) -> Result<Status> {
    if upload.state == State::Failed {
        return Err(UploadError::Sha256Mismatch {
            expected: upload.expected_sha256.clone().unwrap_or_default(),
            actual: upload.sha256.clone().unwrap_or_default(),
            status: Box::new(status),
        });
    }
    Ok(status)
}

pub(super) fn restore_hasher(upload: &Upload) -> Result<Sha256> {
    match &upload.hash_state {
        Some(state) => checksum::restore_state(state)
            .ok_or_else(|| UploadError::Internal("stored hash state is unreadable".into())),
        None if upload.received == 0 => Ok(Sha256::new()),
        None => Err(UploadError::Internal("hash state missing".into())),
    }
}

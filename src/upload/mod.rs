//! The engine: the rules of an upload. No HTTP types here; bodies arrive as byte streams.

mod append;
pub mod checksum;
mod error;
mod locks;
pub mod model;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

pub use append::{MinRate, CHECKPOINT_EVERY};
pub use checksum::{Algorithm, ChunkChecksum};
pub use error::UploadError;
pub use model::{State, Status, UploadId};

use crate::config::MAX_REPRESENTABLE_SIZE;
use crate::db::{Db, UploadRow};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::storage::Storage;
use append::{End, Jobs, Pump, Pumped};
use locks::{Guard, Locks, Purpose, Stop};
use model::{now_millis, to_hex, validate_name, without_bidi};

#[derive(Debug, Clone)]
pub struct Settings {
    pub max_upload_size: Option<u64>,
    pub expire_after: Duration,
    /// How long a removed upload's tombstone is kept (its id answers 410, then 404).
    pub forget_after: Duration,
    /// An append whose body sends nothing this long ends, keeping what it stored.
    pub idle_timeout: Duration,
    /// Creates and appends are refused while the disk has less free space than this.
    pub min_free_space: Option<u64>,
    /// Most appends streaming at once.
    pub max_appends: usize,
    /// Most appends streaming at once from one client address.
    pub max_appends_per_client: usize,
    /// The slowest body an append accepts.
    pub min_body_rate: Option<MinRate>,
}

/// A new upload as a client describes it.
#[derive(Debug, Clone, Default)]
pub struct NewUpload {
    pub name: String,
    pub size: Option<u64>,
    pub content_type: Option<String>,
    pub expected_sha256: Option<String>,
    pub metadata: Option<String>,
}

/// One append as the HTTP layer parsed it.
#[derive(Debug, Clone, Default)]
pub struct AppendRequest {
    pub offset: u64,
    /// `Upload-Length`, for an upload whose size is still deferred.
    pub length: Option<u64>,
    /// The body's declared length; an overshoot is refused before a byte is written.
    pub content_length: Option<u64>,
    pub checksum: Option<ChunkChecksum>,
    /// This body is the upload's last piece: when it ends normally, the upload's size is what
    /// it then holds. A body cut short never finishes anything.
    pub complete: bool,
    /// Who sends it, for the per-client cap on appends.
    pub client: Option<std::net::IpAddr>,
}

pub struct Engine {
    db: Db,
    storage: Storage,
    hub: Arc<Hub<Status>>,
    locks: Arc<Locks>,
    metrics: Arc<Metrics>,
    /// Bounds the appends streaming at once, so a flood cannot exhaust threads or memory.
    appends: Arc<tokio::sync::Semaphore>,
    /// Appends streaming now, per client address.
    clients: Arc<ClientSlots>,
    /// The blocking threads that hash and write, shared by every append.
    jobs: Jobs,
    settings: Settings,
}

type Result<T> = std::result::Result<T, UploadError>;

impl Engine {
    pub fn new(db: Db, storage: Storage, settings: Settings) -> Engine {
        Engine {
            db,
            storage,
            hub: Arc::default(),
            locks: Arc::default(),
            metrics: Arc::default(),
            appends: Arc::new(tokio::sync::Semaphore::new(settings.max_appends.max(1))),
            clients: Arc::default(),
            jobs: Jobs::new(4 * std::thread::available_parallelism().map_or(2, |n| n.get())),
            settings,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Free bytes where the uploads are stored.
    pub async fn disk_free(&self) -> Result<u64> {
        let storage = self.storage.clone();
        blocking(move || storage.free_bytes()).await
    }

    /// 507 while the disk is closer to full than --min-free-space allows, or has fewer free
    /// inodes than 1 % of them (at least 1,000): every upload is a file.
    async fn check_space(&self) -> Result<()> {
        let Some(min) = self.settings.min_free_space else {
            return Ok(());
        };
        let storage = self.storage.clone();
        let space = blocking(move || storage.space()).await?;
        if space.free_bytes < min {
            return Err(UploadError::DiskFull {
                free: space.free_bytes,
                min,
            });
        }
        let min_inodes = (space.total_inodes / 100).max(1000);
        if space.total_inodes > 0 && space.free_inodes < min_inodes {
            return Err(UploadError::NoInodes {
                free: space.free_inodes,
                min: min_inodes,
            });
        }
        Ok(())
    }

    /// A place among the appends streaming now: 503 when all are taken, 429 when this
    /// client already streams its share.
    fn append_slot(&self, client: Option<std::net::IpAddr>) -> Result<AppendSlot> {
        let permit = self
            .appends
            .clone()
            .try_acquire_owned()
            .map_err(|_| UploadError::TooManyAppends)?;
        let client = match client {
            Some(addr) => Some(
                self.clients
                    .take(addr, self.settings.max_appends_per_client)
                    .ok_or(UploadError::TooManyClientAppends {
                        limit: self.settings.max_appends_per_client,
                    })?,
            ),
            None => None,
        };
        Ok(AppendSlot {
            _permit: permit,
            _client: client,
        })
    }

    /// Counts an upload that just reached its final state.
    fn count_finished(&self, row: &UploadRow) {
        if row.state == State::Complete.as_str() {
            Metrics::add(&self.metrics.completed, 1);
        } else if row.state == State::Failed.as_str() {
            Metrics::add(&self.metrics.failed, 1);
        }
    }

    /// Starts watching an upload's status. The receiver holds the latest status; it changes
    /// with every committed append and closes after the upload is removed.
    pub async fn watch(&self, id: UploadId) -> Result<Watcher> {
        let status = self.status(id).await?;
        let key = status.id.clone();
        let receiver = self.hub.subscribe(&key, status);
        // A change committed between that read and the subscription was published to nobody:
        // read again, and let the channel move forward (never back) to what is stored now.
        match self.status(id).await {
            Ok(latest) => self.hub.update(&key, |current| {
                let newer = latest.received > current.received
                    || (latest.state != current.state && current.state == State::Uploading);
                if newer {
                    *current = latest;
                }
                newer
            }),
            Err(UploadError::Gone(_)) => self.hub.update(&key, |current| {
                current.removed = Some("deleted".into());
                true
            }),
            Err(_) => {}
        }
        Ok(Watcher {
            receiver,
            _lease: HubLease {
                hub: self.hub.clone(),
                key,
            },
        })
    }

    /// Whether anyone watches the upload now.
    pub fn is_watched(&self, id: &str) -> bool {
        self.hub.is_watched(id)
    }

    /// The largest size an upload may reach.
    fn size_limit(&self) -> u64 {
        self.settings
            .max_upload_size
            .unwrap_or(MAX_REPRESENTABLE_SIZE)
    }

    pub async fn create(&self, mut new: NewUpload) -> Result<Status> {
        new.name = without_bidi(&new.name);
        validate_name(&new.name).map_err(UploadError::InvalidName)?;
        self.check_space().await?;
        if let Some(size) = new.size {
            if size > self.size_limit() {
                return Err(UploadError::TooLarge {
                    limit: self.size_limit(),
                    received: None,
                });
            }
        }
        let id = UploadId::new_random().to_string();
        let now = now_millis();
        let mut row = UploadRow {
            id: id.clone(),
            name: new.name,
            size: new.size,
            received: 0,
            state: State::Uploading.as_str().into(),
            content_type: new.content_type,
            expected_sha256: new.expected_sha256,
            sha256: None,
            hash_state: Some(checksum::save_state(&Sha256::new())),
            metadata: new.metadata,
            created_at: now,
            updated_at: now,
            expires_at: Some(self.expiry_from(now)),
            removed_at: None,
        };
        // The row first: a crash before the file exists leaves a row that start-up repairs,
        // never a file nobody knows about.
        self.db.insert(&row).await?;
        let storage = self.storage.clone();
        let file_id = id.clone();
        if let Err(e) = blocking(move || storage.create(&file_id)).await {
            self.db.purge(&id).await?;
            return Err(e);
        }
        Metrics::add(&self.metrics.created, 1);
        if row.size == Some(0) {
            finish(&mut row, Sha256::new(), self.expiry_from(now));
            self.db.save_progress(&row).await?;
            self.count_finished(&row);
        }
        info!(upload = %id, size = ?row.size, "created");
        Ok(Status::from_row(&row))
    }

    pub async fn status(&self, id: UploadId) -> Result<Status> {
        Ok(Status::from_row(&self.load_live(id, None).await?))
    }

    /// The row of an upload that is neither deleted nor expired. An expired upload the sweep
    /// has not reached yet is removed here, so it answers 410 as soon as its time is up.
    async fn load_live(&self, id: UploadId, held: Option<&Guard>) -> Result<UploadRow> {
        let row = self
            .db
            .get(&id.to_string())
            .await?
            .ok_or(UploadError::NotFound)?;
        if row.removed_at.is_some() {
            return Err(UploadError::Gone("deleted or expired"));
        }
        if is_expired(&row) {
            let removed = match held {
                Some(_) => self.remove(&row, "expired").await.map(|_| true)?,
                None => self.expire_one(id).await?,
            };
            if removed {
                return Err(UploadError::Gone("deleted or expired"));
            }
        }
        Ok(row)
    }

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
        let started = std::time::Instant::now();
        let guard = self.locks.acquire(id, Purpose::Append).await;
        // After the lock: a request taking over a stalled one reuses the place it frees, so
        // even at the cap a resuming client is never refused. Declared after `guard`, it is
        // also released before the lock.
        let _slot = self.append_slot(request.client)?;
        let _in_flight = self.metrics.append_in_flight();
        let mut row = self.load_live(id, Some(&guard)).await?;
        if let Some(stop) = guard.stop_reason() {
            return Err(stopped(stop, row.received));
        }
        let room = self.check_append(&mut row, &request)?;
        if room > 0 {
            self.check_space().await?;
        }
        let start = row.received;
        let pumped = self
            .pump(&guard, &mut row, body, room, request.checksum.as_ref())
            .await?;
        let end = pumped.end;
        // Settled here, under the lock, and only for a body that ended normally.
        let finishing = request.complete && end == End::Finished;
        match &request.checksum {
            Some(checksum) => {
                self.settle_checksummed(&mut row, start, pumped, checksum, finishing, &guard)
                    .await?
            }
            None => self.commit(&mut row, pumped, finishing).await?,
        }
        self.metrics.observe_append(started.elapsed());
        self.append_verdict(&row, end, request.complete, &guard)
    }

    /// The answer to an append whose bytes are committed: what ended it decides.
    fn append_verdict(
        &self,
        row: &UploadRow,
        end: End,
        last_piece: bool,
        guard: &Guard,
    ) -> Result<Status> {
        let status = Status::from_row(row);
        let received = row.received;
        if row.state == State::Failed.as_str() {
            return sha256_verdict(row, status);
        }
        let length_mismatch = || UploadError::LengthMismatch {
            size: row.size.unwrap_or(received),
            given: received,
            received,
        };
        match end {
            // A last piece that does not end at the size says the client has another length
            // in mind; what fitted is kept, the rest was never written.
            End::Overshoot if last_piece && row.size.is_some() => Err(length_mismatch()),
            End::Overshoot => Err(UploadError::TooLarge {
                limit: row.size.unwrap_or(self.size_limit()),
                received: Some(received),
            }),
            End::Cancelled => Err(stopped(
                guard.stop_reason().unwrap_or(Stop::ShuttingDown),
                received,
            )),
            End::Idle => Err(UploadError::IdleTimeout { received }),
            End::TooSlow => Err(UploadError::TooSlow { received }),
            End::Finished if last_piece && row.size != Some(received) => Err(length_mismatch()),
            _ => Ok(status),
        }
    }

    /// The checks of API.md, in its order: state, offset, length, room. Returns the room left.
    fn check_append(&self, row: &mut UploadRow, request: &AppendRequest) -> Result<u64> {
        if row.state != State::Uploading.as_str() {
            return Err(UploadError::NotUploading {
                state: State::parse(&row.state).unwrap_or(State::Failed).as_str(),
                received: row.received,
            });
        }
        if request.offset != row.received {
            return Err(UploadError::OffsetMismatch {
                given: request.offset,
                received: row.received,
            });
        }
        if let Some(length) = request.length {
            match row.size {
                Some(size) if size != length => {
                    return Err(UploadError::LengthMismatch {
                        size,
                        given: length,
                        received: row.received,
                    })
                }
                Some(_) => {}
                None if length < row.received => {
                    return Err(UploadError::LengthBelowReceived {
                        given: length,
                        received: row.received,
                    })
                }
                None if length > self.size_limit() => {
                    return Err(UploadError::TooLarge {
                        limit: self.size_limit(),
                        received: Some(row.received),
                    })
                }
                None => row.size = Some(length),
            }
        }
        let limit = row.size.unwrap_or(self.size_limit());
        let room = limit.saturating_sub(row.received);
        if let (true, Some(size), Some(len)) = (request.complete, row.size, request.content_length)
        {
            let end = row.received.saturating_add(len);
            if end != size {
                return Err(UploadError::LengthMismatch {
                    size,
                    given: end,
                    received: row.received,
                });
            }
        }
        if request.content_length.is_some_and(|len| len > room) {
            return Err(UploadError::TooLarge {
                limit,
                received: Some(row.received),
            });
        }
        Ok(room)
    }

    /// Runs the byte path, committing durable checkpoints as they come.
    async fn pump<S, E>(
        &self,
        guard: &Guard,
        row: &mut UploadRow,
        body: S,
        room: u64,
        checksum: Option<&ChunkChecksum>,
    ) -> Result<Pumped>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    {
        let hasher = restore_hasher(row)?;
        let storage = self.storage.clone();
        let (file_id, offset) = (row.id.clone(), row.received);
        let file = blocking(move || storage.open_append(&file_id, offset)).await?;
        let pump = Pump {
            file,
            hasher,
            chunk: checksum.map(ChunkChecksum::hasher),
            room,
            checkpoints: checksum.is_none(),
            idle_timeout: self.settings.idle_timeout,
            min_rate: self.settings.min_body_rate,
            jobs: self.jobs.clone(),
        };
        let mut last_commit = std::time::Instant::now();
        let shared_row = std::cell::RefCell::new(row);
        let pumped = pump
            .run(body, &guard.cancel, |checkpoint| {
                // Commit every checkpoint while someone watches; otherwise about once a second,
                // which bounds what a crash can take back.
                let watched = self.is_watched(&shared_row.borrow().id);
                let due = watched || last_commit.elapsed() >= Duration::from_secs(1);
                if due {
                    last_commit = std::time::Instant::now();
                }
                let shared_row = &shared_row;
                async move {
                    if due {
                        self.commit_checkpoint(shared_row, checkpoint).await;
                    }
                }
            })
            .await?;
        Ok(pumped)
    }

    async fn commit_checkpoint(
        &self,
        row: &std::cell::RefCell<&mut UploadRow>,
        checkpoint: append::Checkpoint,
    ) {
        let snapshot = {
            let mut row = row.borrow_mut();
            let now = now_millis();
            Metrics::add(
                &self.metrics.bytes_received,
                checkpoint.received.saturating_sub(row.received),
            );
            row.received = checkpoint.received;
            row.hash_state = Some(checkpoint.hash_state);
            row.updated_at = now;
            row.expires_at = Some(self.expiry_from(now));
            (*row).clone()
        };
        match self.db.save_progress(&snapshot).await {
            Ok(()) => self.hub.publish(&snapshot.id, Status::from_row(&snapshot)),
            // The bytes are durable in the file; the final commit records them.
            Err(e) => warn!(upload = %snapshot.id, error = %e, "checkpoint commit failed"),
        }
    }

    /// Records what the pump made durable: `received`, the hasher, and completion.
    /// With `finishing` (the last piece ended normally), a deferred size becomes what arrived.
    async fn commit(&self, row: &mut UploadRow, pumped: Pumped, finishing: bool) -> Result<()> {
        let Pumped {
            mut file,
            hasher,
            failure,
            ..
        } = pumped;
        if let Some(failure) = failure {
            // Nothing past the last commit is known durable: cut the file back to it.
            let committed = row.received;
            let _ = blocking(move || file.truncate_to(committed)).await;
            return Err(failure.into());
        }
        let now = now_millis();
        Metrics::add(
            &self.metrics.bytes_received,
            file.position().saturating_sub(row.received),
        );
        row.received = file.position();
        row.updated_at = now;
        if finishing && row.size.is_none() {
            row.size = Some(row.received);
        }
        if row.size == Some(row.received) {
            finish(row, hasher, self.expiry_from(now));
        } else {
            row.hash_state = Some(checksum::save_state(&hasher));
            row.expires_at = Some(self.expiry_from(now));
        }
        self.db.save_progress(row).await?;
        self.count_finished(row);
        self.hub.publish(&row.id, Status::from_row(row));
        Ok(())
    }

    /// A checksummed chunk counts whole or not at all: its checksum covers every byte of it,
    /// so one cut short, cut off at the size, or mismatched leaves nothing behind.
    async fn settle_checksummed(
        &self,
        row: &mut UploadRow,
        start: u64,
        mut pumped: Pumped,
        checksum: &ChunkChecksum,
        finishing: bool,
        guard: &Guard,
    ) -> Result<()> {
        let matched = pumped
            .chunk
            .take()
            .is_some_and(|chunk| chunk.matches(&checksum.expected));
        let verdict = match pumped.end {
            End::Overshoot => Err(UploadError::TooLarge {
                limit: row.size.unwrap_or(self.size_limit()),
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
            Ok(()) => self.commit(row, pumped, finishing).await,
            Err(e) => {
                let mut file = pumped.file;
                blocking(move || file.truncate_to(start)).await?;
                Err(e)
            }
        }
    }

    pub async fn delete(&self, id: UploadId) -> Result<()> {
        // Taking the lock stops a running append, which commits before letting go.
        let guard = self.locks.acquire(id, Purpose::Remove).await;
        let row = self.load_live(id, Some(&guard)).await?;
        self.remove(&row, "deleted").await
    }

    /// The tombstone first, then the bytes: once the row says removed, the bytes are owed,
    /// and whoever finds them still there (this call, the sweeper, start-up) deletes them.
    async fn remove(&self, row: &UploadRow, reason: &str) -> Result<()> {
        self.db.mark_removed(&row.id, reason, now_millis()).await?;
        let counter = if reason == "expired" {
            &self.metrics.expired
        } else {
            &self.metrics.deleted
        };
        Metrics::add(counter, 1);
        let mut last = Status::from_row(row);
        last.removed = Some(reason.to_owned());
        self.hub.close(&row.id, last);
        info!(upload = %row.id, reason, "removed");
        crate::fault::point("remove-after-tombstone");
        self.remove_bytes(&row.id).await;
        Ok(())
    }

    /// Deletes a removed upload's bytes and records it. A failure is only logged: the bytes
    /// stay owed, and the next sweep tries again.
    async fn remove_bytes(&self, id: &str) -> bool {
        let storage = self.storage.clone();
        let file_id = id.to_owned();
        let removed = blocking(move || storage.remove(&file_id)).await;
        let recorded = match removed {
            Ok(()) => self
                .db
                .mark_bytes_removed(id, now_millis())
                .await
                .map_err(Into::into),
            Err(e) => Err(e),
        };
        if let Err(e) = &recorded {
            warn!(upload = %id, error = %e, "removing the bytes of a removed upload failed; will retry");
        }
        recorded.is_ok()
    }

    /// Forgets tombstones older than --forget-after whose bytes are gone; returns how many.
    pub async fn forget_removed(&self) -> Result<u64> {
        let keep = i64::try_from(self.settings.forget_after.as_millis()).unwrap_or(i64::MAX);
        Ok(self
            .db
            .forget_removed(now_millis().saturating_sub(keep))
            .await?)
    }

    /// Deletes the bytes that removals cut short left behind; returns how many uploads.
    pub async fn purge_removed(&self) -> Result<usize> {
        let mut purged = 0;
        for id in self.db.removed_with_bytes(1000).await? {
            if self.remove_bytes(&id).await {
                purged += 1;
            }
        }
        Ok(purged)
    }

    /// Removes one upload if it is still expired and nobody is appending. True if removed.
    async fn expire_one(&self, id: UploadId) -> Result<bool> {
        let Some(_guard) = self.locks.try_acquire(id) else {
            return Ok(false);
        };
        let Some(row) = self.db.get(&id.to_string()).await? else {
            return Ok(false);
        };
        let expired = row.removed_at.is_none() && is_expired(&row);
        if expired {
            self.remove(&row, "expired").await?;
        }
        Ok(expired)
    }

    /// Removes every upload whose expiry has passed; returns how many.
    pub async fn expire_due(&self) -> Result<usize> {
        let mut removed = 0;
        for id in self.db.expired_ids(now_millis(), 1000).await? {
            let Ok(id) = id.parse::<UploadId>() else {
                continue;
            };
            if self.expire_one(id).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A complete upload's status and file, for download.
    pub async fn content(&self, id: UploadId) -> Result<(Status, std::fs::File)> {
        let row = self.load_live(id, None).await?;
        if row.state != State::Complete.as_str() {
            return Err(UploadError::NotComplete {
                received: row.received,
            });
        }
        let storage = self.storage.clone();
        let file_id = row.id.clone();
        let file = blocking(move || storage.open_read(&file_id)).await?;
        Ok((Status::from_row(&row), file))
    }

    /// Creates an upload from a stream of unknown length (a multipart file part). The upload
    /// stays locked, `uploading` with its size deferred, until `finish_streamed` settles it
    /// (the form's later fields may still name it or give its digest).
    pub async fn create_streamed<S, E>(
        &self,
        new: NewUpload,
        body: S,
        client: Option<std::net::IpAddr>,
    ) -> Result<Streamed>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    {
        let _slot = self.append_slot(client)?;
        let status = self.create(NewUpload { size: None, ..new }).await?;
        let id: UploadId = status
            .id
            .parse()
            .map_err(|_| UploadError::Internal("created an invalid id".into()))?;
        let guard = self.locks.acquire(id, Purpose::Append).await;
        let outcome = async {
            let mut row = self.load_live(id, Some(&guard)).await?;
            let pumped = self
                .pump(&guard, &mut row, body, self.size_limit(), None)
                .await?;
            let end = pumped.end;
            self.commit(&mut row, pumped, false).await?;
            match end {
                End::Finished => Ok(row),
                End::Overshoot => Err(UploadError::TooLarge {
                    limit: self.size_limit(),
                    received: None,
                }),
                End::Disconnected | End::Cancelled | End::Idle | End::TooSlow => {
                    Err(UploadError::BodyIncomplete)
                }
            }
        }
        .await;
        match outcome {
            Ok(row) => Ok(Streamed { id, guard, row }),
            Err(e) => {
                drop(guard);
                self.discard(id).await;
                Err(e)
            }
        }
    }

    /// Settles a streamed upload: its size becomes what arrived, and its digest is checked.
    pub async fn finish_streamed(
        &self,
        streamed: Streamed,
        name: Option<String>,
        expected_sha256: Option<String>,
    ) -> Result<Status> {
        let Streamed {
            guard: _guard,
            mut row,
            ..
        } = streamed;
        if let Some(name) = name.map(|n| without_bidi(&n)) {
            validate_name(&name).map_err(UploadError::InvalidName)?;
            row.name = name;
        }
        if expected_sha256.is_some() {
            row.expected_sha256 = expected_sha256;
        }
        let hasher = restore_hasher(&row)?;
        row.size = Some(row.received);
        row.updated_at = now_millis();
        let failed_expiry = self.expiry_from(row.updated_at);
        finish(&mut row, hasher, failed_expiry);
        self.db.save_progress(&row).await?;
        self.count_finished(&row);
        let status = Status::from_row(&row);
        self.hub.publish(&row.id, status.clone());
        sha256_verdict(&row, status)
    }

    /// Forgets an upload whose creation failed: no row, no bytes left behind.
    pub async fn discard(&self, id: UploadId) {
        let file_id = id.to_string();
        let storage = self.storage.clone();
        let removed = blocking(move || storage.remove(&file_id)).await;
        let purged = self.db.purge(&id.to_string()).await;
        if let Err(e) = removed.map(|_| purged) {
            warn!(upload = %id, error = %e, "discarding a failed upload");
        }
    }

    /// The live upload behind a tutorial-protocol file id, if any.
    pub async fn tutorial_upload(&self, file_id: &str) -> Result<Option<Status>> {
        let Some(id) = self.db.tutorial_upload(file_id).await? else {
            return Ok(None);
        };
        let Ok(id) = id.parse::<UploadId>() else {
            return Ok(None);
        };
        match self.status(id).await {
            Ok(status) => Ok(Some(status)),
            Err(UploadError::NotFound | UploadError::Gone(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the upload for a tutorial-protocol file id. The tutorial's ids read
    /// `<name>-<size>-<lastModified>`; where one does, its name and size are used.
    pub async fn tutorial_create(&self, file_id: &str) -> Result<Status> {
        let mut parts = file_id.rsplitn(3, '-');
        let (_modified, size, name) = (parts.next(), parts.next(), parts.next());
        let size = size.and_then(|s| s.parse::<u64>().ok());
        let name = name
            .filter(|n| size.is_some() && validate_name(n).is_ok())
            .unwrap_or("upload")
            .to_owned();
        // One read decides: a live mapping (another first request won meanwhile) is used; a
        // dead one may be replaced, but only if it is still the one read here.
        let stale = self.db.tutorial_upload(file_id).await?;
        if let Some(mapped) = stale.as_deref().and_then(|id| id.parse().ok()) {
            match self.status(mapped).await {
                Ok(live) => return Ok(live),
                Err(UploadError::NotFound | UploadError::Gone(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let status = self
            .create(NewUpload {
                name,
                size,
                ..NewUpload::default()
            })
            .await?;
        if self
            .db
            .map_tutorial_file(file_id, &status.id, stale.as_deref())
            .await?
        {
            return Ok(status);
        }
        // Another first request for this file id mapped it first: use its upload, not ours.
        if let Ok(ours) = status.id.parse() {
            self.discard(ours).await;
        }
        self.tutorial_upload(file_id)
            .await?
            .ok_or(UploadError::NotFound)
    }

    /// Makes every unfinished upload's file and row agree again after a crash.
    pub async fn reconcile(&self) -> Result<usize> {
        let mut repaired = 0;
        for mut row in self.db.unfinished().await? {
            let storage = self.storage.clone();
            let before = (row.received, row.hash_state.clone());
            row = blocking(move || reconcile_file(&storage, row)).await?;
            if (row.received, row.hash_state.clone()) != before {
                warn!(upload = %row.id, from = before.0, to = row.received, "reconciled after a crash");
                self.db.save_progress(&row).await?;
                repaired += 1;
            }
        }
        Ok(repaired)
    }

    pub async fn healthy(&self) -> Result<()> {
        self.db.ping().await?;
        let storage = self.storage.clone();
        blocking(move || storage.check_writable()).await
    }

    /// Asks every running append to commit what it holds and answer (graceful shutdown).
    pub fn stop_appends(&self) {
        self.locks.cancel_all();
    }

    fn expiry_from(&self, now: i64) -> i64 {
        let after = i64::try_from(self.settings.expire_after.as_millis()).unwrap_or(i64::MAX);
        now.saturating_add(after)
    }
}

/// Uploading and failed uploads expire; a complete one never does (its `expires_at` is null).
fn is_expired(row: &UploadRow) -> bool {
    row.state != State::Complete.as_str() && row.expires_at.is_some_and(|at| at <= now_millis())
}

/// A place among the appends streaming now; freed on drop.
struct AppendSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _client: Option<ClientSlot>,
}

/// Appends streaming now, per client address.
#[derive(Default)]
struct ClientSlots(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

struct ClientSlot {
    slots: Arc<ClientSlots>,
    addr: std::net::IpAddr,
}

impl ClientSlots {
    fn take(self: &Arc<Self>, addr: std::net::IpAddr, limit: usize) -> Option<ClientSlot> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(addr).or_default();
        if *count >= limit.max(1) {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            slots: self.clone(),
            addr,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.slots.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

/// A multipart upload whose bytes are in, still locked until `Engine::finish_streamed`.
pub struct Streamed {
    id: UploadId,
    guard: Guard,
    row: UploadRow,
}

impl Streamed {
    pub fn id(&self) -> UploadId {
        self.id
    }
}

/// The error for an append told to stop before its body ended.
fn stopped(stop: Stop, received: u64) -> UploadError {
    match stop {
        Stop::Superseded => UploadError::Superseded { received },
        Stop::Removed => UploadError::Gone("deleted while this request was streaming"),
        Stop::ShuttingDown => UploadError::ShuttingDown { received },
    }
}

/// One watcher of an upload's status; the hub forgets the upload when its last watcher leaves.
pub struct Watcher {
    // Fields drop in order: the receiver goes before the lease checks for other receivers.
    receiver: tokio::sync::watch::Receiver<Status>,
    _lease: HubLease,
}

struct HubLease {
    hub: Arc<Hub<Status>>,
    key: String,
}

impl Drop for HubLease {
    fn drop(&mut self) {
        self.hub.release(&self.key);
    }
}

impl Watcher {
    /// The latest status, marking it seen.
    pub fn latest(&mut self) -> Status {
        self.receiver.borrow_and_update().clone()
    }

    /// Waits for a newer status. `false` once no more can come (the upload was removed).
    pub async fn changed(&mut self) -> bool {
        self.receiver.changed().await.is_ok()
    }
}

/// Completes a row whose bytes have all arrived: digest, state, and expiry: none when
/// complete; a failed upload (its digest did not match) goes at `failed_expiry`.
fn finish(row: &mut UploadRow, hasher: Sha256, failed_expiry: i64) {
    let digest = to_hex(&hasher.finalize());
    let matches = row.expected_sha256.as_ref().is_none_or(|e| *e == digest);
    row.state = if matches {
        State::Complete
    } else {
        State::Failed
    }
    .as_str()
    .into();
    row.sha256 = Some(digest);
    row.hash_state = None;
    row.expires_at = (!matches).then_some(failed_expiry);
}

fn sha256_verdict(row: &UploadRow, status: Status) -> Result<Status> {
    if row.state == State::Failed.as_str() {
        return Err(UploadError::Sha256Mismatch {
            expected: row.expected_sha256.clone().unwrap_or_default(),
            actual: row.sha256.clone().unwrap_or_default(),
            status: Box::new(status),
        });
    }
    Ok(status)
}

fn restore_hasher(row: &UploadRow) -> Result<Sha256> {
    match &row.hash_state {
        Some(state) => checksum::restore_state(state)
            .ok_or_else(|| UploadError::Internal("stored hash state is unreadable".into())),
        None if row.received == 0 => Ok(Sha256::new()),
        None => Err(UploadError::Internal("hash state missing".into())),
    }
}

/// The file wins where it is shorter (bytes lost in a crash); the row wins where the file is
/// longer (bytes written but never committed as durable).
fn reconcile_file(storage: &Storage, mut row: UploadRow) -> Result<UploadRow> {
    let len = match storage.len(&row.id)? {
        Some(len) => len,
        None => {
            storage.create(&row.id)?;
            0
        }
    };
    if len > row.received {
        storage.truncate(&row.id, row.received)?;
    }
    let state_ok = row
        .hash_state
        .as_deref()
        .is_some_and(|s| checksum::restore_state(s).is_some());
    if len < row.received || !state_ok {
        let received = len.min(row.received);
        let hasher = hash_prefix(storage, &row.id, received)?;
        row.received = received;
        row.hash_state = Some(checksum::save_state(&hasher));
    }
    Ok(row)
}

fn hash_prefix(storage: &Storage, id: &str, len: u64) -> Result<Sha256> {
    use std::io::Read;
    let file = storage.open_read(id)?;
    let mut hasher = Sha256::new();
    let mut reader = file.take(len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| UploadError::Internal(format!("re-reading {id}: {e}")))?;
        if n == 0 {
            return Ok(hasher);
        }
        hasher.update(&buf[..n]);
    }
}

/// Runs blocking storage work off the async workers.
async fn blocking<T, E, F>(work: F) -> Result<T>
where
    F: FnOnce() -> std::result::Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Into<UploadError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| UploadError::Internal(format!("blocking task failed: {e}")))?
        .map_err(Into::into)
}

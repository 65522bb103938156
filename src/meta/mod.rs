//! The metadata of uploads, behind one trait; the only SQL in the tree is below this module.
//!
//! [`sql::SqlMeta`] keeps them in SQLite (one instance) or PostgreSQL (many instances).
//! The trait speaks the engine's model ([`Upload`], typed state, real times); how a backend
//! lays that out in rows stays inside its own file.

mod sql;

use std::time::SystemTime;

use crate::hooks::{NewEvent, QueuedEvent};
use crate::upload::model::{Upload, UploadId};

pub use sql::{Backend, SqlMeta};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("--database-url must start with sqlite: or postgres:")]
    Scheme,
    #[error("the upload was moved on by another request meanwhile")]
    Stale,
    #[error("stored value out of range in column {0}")]
    OutOfRange(&'static str),
}

impl MetaError {
    /// The database cannot be reached now (down, restarting, or no connection free in time),
    /// as opposed to refusing a statement.
    pub fn is_unavailable(&self) -> bool {
        match self {
            MetaError::Sqlx(e) => unreachable_database(e),
            _ => false,
        }
    }
}

/// Whether an error means the database cannot be reached (its connection is gone or cannot
/// be made), as opposed to refusing a statement.
pub fn unreachable_database(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE class 08 (connection exception), 57P01–57P03 (shutting down, starting).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
        _ => false,
    }
}

pub type Result<T> = std::result::Result<T, MetaError>;

#[async_trait::async_trait]
pub trait Meta: Send + Sync + 'static {
    /// Checks the database answers.
    async fn ping(&self) -> Result<()>;

    /// Records a new upload, and queues `events` in the same transaction.
    async fn insert(&self, upload: &Upload, events: &[NewEvent]) -> Result<()>;

    /// The upload with this id, removed or not; `None` once it is forgotten (or never was).
    async fn get(&self, id: UploadId) -> Result<Option<Upload>>;

    /// Writes everything an append or a finish changes, atomically — only over a live
    /// upload still `uploading` whose `received` is not past this one's: else
    /// [`MetaError::Stale`] (someone else moved it on meanwhile). `events` are queued in the
    /// same transaction: written if and only if the change is.
    async fn save_progress(&self, upload: &Upload, events: &[NewEvent]) -> Result<()>;

    /// Pulls `received` (with the hasher's and the store's state) back to what the store
    /// holds: start-up repair after bytes were lost.
    async fn rewind(&self, upload: &Upload) -> Result<()>;

    /// Keeps the upload as a tombstone, so its id answers 410 from now on.
    /// `events` are queued in the same transaction, if the upload was live until now.
    async fn mark_removed(
        &self,
        id: UploadId,
        reason: &str,
        at: SystemTime,
        events: &[NewEvent],
    ) -> Result<()>;

    /// Records that a removed upload's bytes are gone.
    async fn mark_bytes_removed(&self, id: UploadId, at: SystemTime) -> Result<()>;

    /// Removed uploads whose bytes may still be stored (the removal was cut short).
    async fn removed_with_bytes(&self, limit: u32) -> Result<Vec<Upload>>;

    /// Forgets tombstones removed before `before` whose bytes are gone (their client keys
    /// too): from then on their ids answer 404. Returns how many.
    async fn forget_removed(&self, before: SystemTime) -> Result<u64>;

    /// Forgets an upload entirely, with its queued events, for a create that failed before
    /// anyone saw its id.
    async fn purge(&self, id: UploadId) -> Result<()>;

    /// Moves the expiry of these live uploads to `at`.
    async fn set_expiry(&self, ids: &[UploadId], at: SystemTime) -> Result<()>;

    /// What the parts a final claimed hold: the sum of their `received`, and of their sizes
    /// once every one is known.
    async fn parts_sum(&self, whole: UploadId) -> Result<(u64, Option<u64>)>;

    /// Live uploads (incomplete or failed) whose expiry time is at or before `now`.
    async fn expired(&self, now: SystemTime, limit: u32) -> Result<Vec<UploadId>>;

    /// The ids of every live upload still receiving bytes: what start-up reconciles.
    async fn unfinished(&self) -> Result<Vec<UploadId>>;

    /// The upload a client's own key for a file maps to.
    async fn key_upload(&self, key: &str) -> Result<Option<UploadId>>;

    /// Maps a client key to an upload, where it is unmapped or still maps to `stale`. False
    /// when another request mapped it first (two first requests racing).
    async fn map_key(&self, key: &str, upload: UploadId, stale: Option<UploadId>) -> Result<bool>;

    /// Queued hook events that may be tried now, each the oldest of its upload (the next
    /// waits until it is delivered), oldest first.
    async fn due_events(&self, now: SystemTime, limit: u32) -> Result<Vec<QueuedEvent>>;

    /// Takes these events for delivery until `until`, those still due at `now` (another
    /// instance may have taken some first); returns the ones taken.
    async fn claim_events(
        &self,
        seqs: &[i64],
        now: SystemTime,
        until: SystemTime,
    ) -> Result<Vec<i64>>;

    /// Forgets delivered events (or ones given up).
    async fn events_done(&self, seqs: &[i64]) -> Result<()>;

    /// Records a failed try: tried again at `at`.
    async fn event_retry(&self, seq: i64, at: SystemTime, error: &str) -> Result<()>;

    /// When the oldest queued event was queued.
    async fn oldest_event(&self) -> Result<Option<SystemTime>>;
}

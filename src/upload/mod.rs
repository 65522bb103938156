//! The engine: the rules of an upload. No HTTP types and no protocol names here: bodies
//! arrive as byte streams and requests as plain values; bytes go to a [`Store`], records to
//! a [`Meta`], and locks and progress through a [`Cluster`].
//!
//! - [`model`]: ids, the typed [`Upload`], and the [`Status`] every answer shows.
//! - `create`: new uploads, streamed ones (a form's file part) and client keys.
//! - `append`: lock, check, pump, checkpoint, commit, finish.
//! - `pipeline` and `stages`: the byte path of one append (socket → hasher → store).
//! - `remove`: delete, expiry, tombstones. `recover`: start-up repair after a crash.
//! - `slots`: how many appends may stream at once. `watch`: live status for watchers.

mod append;
mod assemble;
pub mod checksum;
mod concat;
mod content;
mod create;
mod error;
mod events;
pub mod input;
pub mod model;
mod pipeline;
mod recover;
mod remove;
mod slots;
mod stages;
mod watch;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use checksum::{Algorithm, ChunkChecksum};
pub use content::Content;
pub use create::Streamed;
pub use error::UploadError;
pub use model::{State, Status, Upload, UploadId};
pub use pipeline::{MinRate, CHECKPOINT_EVERY};
pub use watch::Watcher;

use crate::cluster::{Cluster, Guard};
use crate::config::MAX_REPRESENTABLE_SIZE;
use crate::hooks::Hooks;
use crate::meta::Meta;
use crate::metrics::Metrics;
use crate::store::Store;
use pipeline::Jobs;
use slots::ClientSlots;

#[derive(Debug, Clone)]
pub struct Settings {
    pub max_upload_size: Option<u64>,
    pub expire_after: Duration,
    /// How long a removed upload's tombstone is kept (its id answers 410, then 404).
    pub forget_after: Duration,
    /// An append whose body sends nothing this long ends, keeping what it stored.
    pub idle_timeout: Duration,
    /// Creates and appends are refused while the store has less free space than this.
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
    /// A part of an upload that a final upload assembles later (tus `Upload-Concat: partial`).
    pub partial: bool,
}

/// One append as a front-end parsed it.
#[derive(Debug, Clone, Default)]
pub struct AppendRequest {
    pub offset: u64,
    /// The upload's length, for an upload whose size is still deferred.
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

/// The handle every front-end uses; built once at start-up.
pub struct Engine {
    meta: Arc<dyn Meta>,
    store: Arc<dyn Store>,
    cluster: Arc<dyn Cluster>,
    metrics: Arc<Metrics>,
    /// Bounds the appends streaming at once, so a flood cannot exhaust threads or memory.
    appends: Arc<tokio::sync::Semaphore>,
    /// Appends streaming now, per client address.
    clients: Arc<ClientSlots>,
    /// The blocking threads that hash and write, shared by every append.
    jobs: Jobs,
    settings: Settings,
    /// The operator's hooks, when configured.
    hooks: Option<Arc<Hooks>>,
    /// Streamed creates whose `post-create` waits for their bytes: no `post-receive` before it.
    unannounced: std::sync::Mutex<std::collections::HashSet<UploadId>>,
    /// Finals being assembled at once: each holds a reader thread and several MiB of buffers,
    /// and the disk is the limit anyway, so many clients' finals take turns.
    assemblies: tokio::sync::Semaphore,
}

type Result<T> = std::result::Result<T, UploadError>;

impl Engine {
    pub fn new(
        meta: Arc<dyn Meta>,
        store: Arc<dyn Store>,
        cluster: Arc<dyn Cluster>,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Engine {
        Engine {
            meta,
            store,
            cluster,
            metrics,
            appends: Arc::new(tokio::sync::Semaphore::new(settings.max_appends.max(1))),
            clients: Arc::default(),
            jobs: Jobs::new(4 * std::thread::available_parallelism().map_or(2, |n| n.get())),
            settings,
            hooks: None,
            unannounced: Default::default(),
            assemblies: tokio::sync::Semaphore::new(2),
        }
    }

    /// Raises hook events through `hooks`.
    pub fn with_hooks(self, hooks: Option<Arc<Hooks>>) -> Engine {
        Engine { hooks, ..self }
    }

    /// Whether hooks are configured (the HTTP layer then describes requests for them).
    pub fn has_hooks(&self) -> bool {
        self.hooks.is_some()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub async fn status(&self, id: UploadId) -> Result<Status> {
        self.present(&self.load_live(id, None).await?).await
    }

    /// An upload that is neither deleted nor expired. An expired upload the sweep has not
    /// reached yet is removed here, so it answers 410 as soon as its time is up.
    async fn load_live(&self, id: UploadId, held: Option<&Guard>) -> Result<Upload> {
        let upload = self.meta.get(id).await?.ok_or(UploadError::NotFound)?;
        if upload.removed_at.is_some() {
            return Err(UploadError::Gone("deleted or expired"));
        }
        if upload.is_expired(SystemTime::now()) {
            let removed = match held {
                Some(_) => self.remove(&upload, "expired").await.map(|_| true)?,
                None => self.expire_one(id).await?,
            };
            if removed {
                return Err(UploadError::Gone("deleted or expired"));
            }
        }
        Ok(upload)
    }

    /// Free bytes where the uploads are stored, where the store knows.
    pub async fn disk_free(&self) -> Result<Option<u64>> {
        Ok(self.store.space().await?.map(|space| space.free_bytes))
    }

    /// 507 while the store is closer to full than --min-free-space allows, or has fewer
    /// free inodes than 1 % of them (at least 1,000): every upload is a file.
    async fn check_space(&self) -> Result<()> {
        let Some(min) = self.settings.min_free_space else {
            return Ok(());
        };
        let Some(space) = self.store.space().await? else {
            return Ok(());
        };
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

    /// The largest size an upload may reach.
    fn size_limit(&self) -> u64 {
        self.settings
            .max_upload_size
            .unwrap_or(MAX_REPRESENTABLE_SIZE)
    }

    fn expiry_from(&self, now: SystemTime) -> SystemTime {
        now.checked_add(self.settings.expire_after)
            .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400))
    }

    /// Counts an upload that just reached its final state.
    fn count_finished(&self, upload: &Upload) {
        match upload.state {
            State::Complete => Metrics::add(&self.metrics.completed, 1),
            State::Failed => Metrics::add(&self.metrics.failed, 1),
            State::Uploading => {}
        }
    }

    pub async fn healthy(&self) -> Result<()> {
        self.meta.ping().await?;
        Ok(self.store.check_writable().await?)
    }

    /// Asks every running append to commit what it holds and answer (graceful shutdown).
    pub fn stop_appends(&self) {
        self.cluster.stop_all();
    }
}

//! The byte path of an append: socket → hasher → batch → file, in one pass.
//!
//! The async side reads body chunks, hashes each (SHA-256 and the chunk's own checksum) as it
//! arrives, while it is still in the cache, and gathers them (without copying) into batches.
//! Each batch is written in a blocking job while the next is read and hashed, so receiving
//! and hashing on one core overlap writing on the other. Jobs run on tokio's blocking
//! threads, at most `Jobs`' count at once for all appends together, and only while bytes
//! flow: a body that trickles or stalls holds no thread. At most five batches per append are
//! in memory: one gathering and four in the pipeline. A job takes every batch waiting for it,
//! so when the disk falls behind, fewer, larger jobs carry the same bytes.
//!
//! While bytes flow, the writer makes them durable now and then and reports a checkpoint
//! (position and hasher state); the engine commits it so progress messages only ever show
//! durable bytes, and a crash mid-append loses at most the bytes since the last checkpoint.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::checksum::ChunkHasher;
use super::error::UploadError;
use super::stages::{Batch, Hashing, Pipeline};
use crate::store::{Sink, StoreError};

/// Bytes gathered before a hand-off to the writer; 256 KiB–2 MiB measured alike here.
const BATCH_BYTES: usize = 256 * 1024;
/// Batches in the pipeline (waiting or writing) before the body is read again.
pub(super) const QUEUED_BATCHES: usize = 4;
/// Batches queued across every append streaming now. One append keeps `QUEUED_BATCHES` in
/// flight (what a single upload needs to keep both cores busy); many share this many, down
/// to one each: with 32 appends on 2 cores, a deeper queue only held memory (32 concurrent
/// appends peaked at 68 MiB RSS with four each, 51 MiB with one).
const QUEUED_ACROSS_APPENDS: usize = 16;
/// How often the writer makes bytes durable and reports them while a body streams.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Why the body stopped flowing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The body ended normally.
    Finished,
    /// The body went past the room left; the excess was discarded.
    Overshoot,
    /// The connection dropped mid-body.
    Disconnected,
    /// A newer request (or shutdown) asked this one to stop.
    Cancelled,
    /// The client sent nothing for the idle timeout.
    Idle,
    /// The client sent more slowly than the minimum body rate for a whole window.
    TooSlow,
}

/// How long a checkpoint not committed waits before it is offered again.
const OFFER_AGAIN: Duration = Duration::from_secs(1);

/// Durable bytes the writer reports mid-stream.
#[derive(Clone)]
pub struct Checkpoint {
    pub received: u64,
    pub hash_state: Vec<u8>,
    /// What the store keeps beside `received` (see `Sink::state`).
    pub store_state: Option<Vec<u8>>,
}

/// What is left once the body and the writer are done.
pub struct Pumped {
    pub end: End,
    pub sink: Box<dyn Sink>,
    pub hasher: Sha256,
    pub chunk: Option<ChunkHasher>,
    /// A write or sync failed; nothing past the last checkpoint is durable.
    pub failure: Option<StoreError>,
}

/// The write jobs of every append share these places: a fixed number of blocking
/// threads, however many appends stream.
#[derive(Clone)]
pub struct Jobs(Arc<Semaphore>, Arc<AtomicUsize>);

impl Jobs {
    pub fn new(count: usize) -> Jobs {
        Jobs(Arc::new(Semaphore::new(count.max(2))), Arc::default())
    }

    /// How many batches one append may queue while `streaming` appends stream.
    fn queue_depth(&self) -> usize {
        let streaming = self.1.load(Ordering::Relaxed).max(1);
        (QUEUED_ACROSS_APPENDS / streaming).clamp(1, QUEUED_BATCHES)
    }

    /// Counts an append streaming until the guard is dropped.
    fn streaming(&self) -> StreamingGuard {
        self.1.fetch_add(1, Ordering::Relaxed);
        StreamingGuard(self.1.clone())
    }

    /// Runs `work` on a blocking thread once a place is free, and waits for it.
    pub(super) async fn block<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, UploadError> {
        self.run(work)
            .await
            .await
            .map_err(|e| UploadError::Internal(format!("append job failed: {e}")))
    }

    /// Runs `work` on a blocking thread once a place is free.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let permit = self.0.clone().acquire_owned().await;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
    }
}

struct StreamingGuard(Arc<AtomicUsize>);

impl Drop for StreamingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The least a body must send: `bytes` in every `window`, or it ends with what it stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    pub bytes: u64,
    pub window: Duration,
}

pub struct Pump {
    pub sink: Box<dyn Sink>,
    pub hasher: Sha256,
    pub chunk: Option<ChunkHasher>,
    /// Bytes the upload may still take; anything beyond is cut off.
    pub room: u64,
    /// Whether to report checkpoints (not for a checksummed chunk, which must stay discardable).
    pub checkpoints: bool,
    /// How long the body may send nothing before the append ends with what it stored.
    pub idle_timeout: Duration,
    pub min_rate: Option<MinRate>,
    pub jobs: Jobs,
}

impl Pump {
    /// Streams `body` through the hasher and the writer. `on_checkpoint` commits durable
    /// progress as it comes.
    pub async fn run<S, E, F, Fut>(
        self,
        mut body: S,
        cancel: &CancellationToken,
        mut on_checkpoint: F,
    ) -> Result<Pumped, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        F: FnMut(Checkpoint) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut hashing = Hashing::new(self.hasher, self.chunk, self.checkpoints, &*self.sink);
        let mut line = Pipeline::new(self.sink, hashing.has_marks());
        let jobs = self.jobs;
        let _streaming = jobs.streaming();
        let mut room = self.room;
        let mut batch = Batch::default();
        let idle = tokio::time::sleep(self.idle_timeout);
        tokio::pin!(idle);
        let window = self.min_rate.map_or(Duration::MAX, |rate| rate.window);
        let rate_check = tokio::time::sleep(window.min(Duration::from_secs(365 * 86_400)));
        tokio::pin!(rate_check);
        let mut window_bytes = 0u64;
        // A checkpoint the callback chose not to commit yet (it commits about once a second)
        // is offered again after a while: else a body that stops right after it (a client
        // gone quiet) would leave durable bytes uncounted, and unseen by watchers, until it
        // ends.
        let mut unsaved: Option<Checkpoint> = None;
        let offer_again = tokio::time::sleep(Duration::from_secs(365 * 86_400));
        tokio::pin!(offer_again);
        // Bytes followed by silence, the body still open, go through the pipeline and are
        // checkpointed after this long: else they would wait, uncounted, for more bytes or
        // for the idle timeout.
        let quiet = tokio::time::sleep(Duration::from_secs(365 * 86_400));
        tokio::pin!(quiet);
        let mut quiet_armed = false;
        let end = loop {
            line.start_jobs(&jobs).await;
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break End::Cancelled,
                done = line.next_done(), if line.busy() => {
                    if let Some(checkpoint) = done? {
                        hashing.checkpointed();
                        unsaved = None;
                        if !on_checkpoint(checkpoint.clone()).await {
                            unsaved = Some(checkpoint);
                            offer_again.as_mut().reset(tokio::time::Instant::now() + OFFER_AGAIN);
                        }
                    }
                    if line.failed() {
                        // The writer stopped on an error; it is reported below.
                        break End::Finished;
                    }
                }
                () = &mut offer_again, if unsaved.is_some() => {
                    if let Some(checkpoint) = unsaved.take() {
                        if !on_checkpoint(checkpoint.clone()).await {
                            unsaved = Some(checkpoint);
                            offer_again.as_mut().reset(tokio::time::Instant::now() + OFFER_AGAIN);
                        }
                    }
                }
                () = &mut quiet, if quiet_armed => {
                    quiet_armed = false;
                    hashing.seal(&mut batch, true);
                    line.push(std::mem::take(&mut batch));
                }
                () = &mut idle => break End::Idle,
                () = &mut rate_check, if self.min_rate.is_some() => {
                    if self.min_rate.is_some_and(|rate| window_bytes < rate.bytes) {
                        break End::TooSlow;
                    }
                    window_bytes = 0;
                    rate_check.as_mut().reset(tokio::time::Instant::now() + window);
                }
                item = body.next(), if line.queued < jobs.queue_depth() => {
                    let now = tokio::time::Instant::now();
                    idle.as_mut().reset(now + self.idle_timeout);
                    quiet.as_mut().reset(now + CHECKPOINT_EVERY);
                    quiet_armed = true;
                    let mut data = match item {
                        None => break End::Finished,
                        Some(Err(_)) => break End::Disconnected,
                        Some(Ok(data)) => data,
                    };
                    let overshoot = data.len() as u64 > room;
                    if overshoot {
                        data.truncate(room as usize);
                    }
                    room -= data.len() as u64;
                    window_bytes += data.len() as u64;
                    hashing.add(&mut batch, data);
                    if batch.len() >= BATCH_BYTES {
                        hashing.seal(&mut batch, false);
                        line.push(std::mem::take(&mut batch));
                    }
                    if overshoot {
                        break End::Overshoot;
                    }
                }
            }
        };
        line.drain(batch, &jobs).await?;
        let (sink, failure) = line.close()?;
        let (hasher, chunk) = hashing.into_parts();
        Ok(Pumped {
            end,
            sink,
            hasher,
            chunk,
            failure,
        })
    }
}

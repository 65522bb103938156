//! The byte path of an append: socket → batch → hasher → file, in one pass.
//!
//! The async side reads body chunks and gathers them (without copying) into batches. Each
//! batch is hashed (SHA-256 and the chunk's own checksum) in one blocking job and then written
//! in another, while the next batch is read and hashed: receiving, hashing and writing overlap
//! (with hashing and writing on one thread, that thread was the bottleneck while a core
//! idled). Jobs run on tokio's blocking threads, at most `Jobs`' count at once for all appends
//! together, and only while bytes flow: a body that trickles or stalls holds no thread.
//! At most five batches per append are in memory: one gathering and four in the pipeline. A
//! job takes every batch waiting for it, so when the disk or the hasher falls behind, fewer,
//! larger jobs carry the same bytes.
//!
//! While bytes flow, the writer makes them durable now and then and reports a checkpoint
//! (position and hasher state); the engine commits it so progress messages only ever show
//! durable bytes, and a crash mid-append loses at most the bytes since the last checkpoint.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::checksum::{save_state, ChunkHasher};
use super::error::UploadError;
use crate::storage::{FileWriter, StorageError};

/// Buffers gathered before a hand-off to the hasher; 256 KiB–2 MiB measured alike here.
const BATCH_BYTES: usize = 256 * 1024;
/// Batches in the pipeline (waiting, hashing, hashed, writing) before the body is read again.
const QUEUED_BATCHES: usize = 4;
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

/// Durable bytes the writer reports mid-stream.
pub struct Checkpoint {
    pub received: u64,
    pub hash_state: Vec<u8>,
}

/// What is left once the body and the writer are done.
pub struct Pumped {
    pub end: End,
    pub file: FileWriter,
    pub hasher: Sha256,
    pub chunk: Option<ChunkHasher>,
    /// A write or sync failed; nothing past the last checkpoint is durable.
    pub failure: Option<StorageError>,
}

/// The hash and write jobs of every append share these places: a fixed number of blocking
/// threads, however many appends stream.
#[derive(Clone)]
pub struct Jobs(Arc<Semaphore>);

impl Jobs {
    pub fn new(count: usize) -> Jobs {
        Jobs(Arc::new(Semaphore::new(count.max(2))))
    }

    /// Runs `work` on a blocking thread once a place is free.
    async fn run<T: Send + 'static>(
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

/// The least a body must send: `bytes` in every `window`, or it ends with what it stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    pub bytes: u64,
    pub window: Duration,
}

pub struct Pump {
    pub file: FileWriter,
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
        Fut: std::future::Future<Output = ()>,
    {
        let mut line = Pipeline::new(self.file, self.hasher, self.chunk, self.checkpoints);
        let jobs = self.jobs;
        let mut room = self.room;
        let mut batch = Vec::new();
        let mut batch_len = 0;
        let idle = tokio::time::sleep(self.idle_timeout);
        tokio::pin!(idle);
        let window = self.min_rate.map_or(Duration::MAX, |rate| rate.window);
        let rate_check = tokio::time::sleep(window.min(Duration::from_secs(365 * 86_400)));
        tokio::pin!(rate_check);
        let mut window_bytes = 0u64;
        let end = loop {
            line.start_jobs(&jobs).await;
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break End::Cancelled,
                done = line.next_done(), if line.busy() => {
                    if let Some(checkpoint) = line.finished(done?) {
                        on_checkpoint(checkpoint).await;
                    }
                    if line.failed() {
                        // The writer stopped on an error; it is reported below.
                        break End::Finished;
                    }
                }
                () = &mut idle => break End::Idle,
                () = &mut rate_check, if self.min_rate.is_some() => {
                    if self.min_rate.is_some_and(|rate| window_bytes < rate.bytes) {
                        break End::TooSlow;
                    }
                    window_bytes = 0;
                    rate_check.as_mut().reset(tokio::time::Instant::now() + window);
                }
                item = body.next(), if line.queued < QUEUED_BATCHES => {
                    idle.as_mut().reset(tokio::time::Instant::now() + self.idle_timeout);
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
                    batch_len += data.len();
                    batch.push(data);
                    if batch_len >= BATCH_BYTES {
                        batch_len = 0;
                        line.push(std::mem::take(&mut batch));
                    }
                    if overshoot {
                        break End::Overshoot;
                    }
                }
            }
        };
        line.drain(batch, &jobs).await?;
        let (file, hasher, chunk, failure) = line.close(&jobs).await?;
        Ok(Pumped {
            end,
            file,
            hasher,
            chunk,
            failure,
        })
    }
}

/// The hashers with what they have seen, between jobs.
struct HashSide {
    hasher: Sha256,
    chunk: Option<ChunkHasher>,
    checkpoints: bool,
    last_checkpoint: Instant,
}

/// The file, between jobs; after a failure nothing more is written.
struct WriteSide {
    file: FileWriter,
    failure: Option<StorageError>,
}

/// A hashed batch on its way to the disk, with the hasher's state after it when a
/// checkpoint is due.
struct Hashed {
    data: Vec<Bytes>,
    state_after: Option<Vec<u8>>,
}

enum Done {
    Hashed(HashSide, Hashed),
    Written(WriteSide, Option<Checkpoint>),
}

/// Each side is either idle (held here) or lent to its running job.
struct Pipeline {
    hash: Option<HashSide>,
    hash_job: Option<JoinHandle<(HashSide, Hashed)>>,
    write: Option<WriteSide>,
    write_job: Option<JoinHandle<(WriteSide, Option<Checkpoint>)>>,
    /// Batches waiting for the hasher, as one run of buffers.
    ready: Vec<Bytes>,
    /// Hashed batches waiting for the writer.
    hashed: Option<Hashed>,
    /// Batches anywhere in the pipeline; the body is read only while there is room.
    queued: usize,
    /// Batches waiting for the hasher, in the hash job and in the write job.
    waiting: usize,
    hashing: usize,
    in_hashed: usize,
    writing: usize,
}

impl Pipeline {
    fn new(
        file: FileWriter,
        hasher: Sha256,
        chunk: Option<ChunkHasher>,
        checkpoints: bool,
    ) -> Self {
        Pipeline {
            hash: Some(HashSide {
                hasher,
                chunk,
                checkpoints,
                last_checkpoint: Instant::now(),
            }),
            hash_job: None,
            write: Some(WriteSide {
                file,
                failure: None,
            }),
            write_job: None,
            ready: Vec::new(),
            hashed: None,
            queued: 0,
            waiting: 0,
            hashing: 0,
            in_hashed: 0,
            writing: 0,
        }
    }

    fn push(&mut self, batch: Vec<Bytes>) {
        self.ready.extend(batch);
        self.waiting += 1;
        self.queued += 1;
    }

    fn busy(&self) -> bool {
        self.hash_job.is_some() || self.write_job.is_some()
    }

    fn failed(&self) -> bool {
        self.write.as_ref().is_some_and(|w| w.failure.is_some())
    }

    /// Hands the waiting batches to idle sides.
    async fn start_jobs(&mut self, jobs: &Jobs) {
        if self.hashed.is_some() && self.write.is_some() {
            if let (Some(side), Some(hashed)) = (self.write.take(), self.hashed.take()) {
                self.writing = std::mem::take(&mut self.in_hashed);
                if side.failure.is_some() {
                    // Nothing more is written after a failure; the batches are dropped.
                    self.queued -= std::mem::take(&mut self.writing);
                    self.write = Some(side);
                } else {
                    self.write_job = Some(jobs.run(move || write_batch(side, hashed)).await);
                }
            }
        }
        if !self.ready.is_empty() && self.hash.is_some() {
            if let Some(side) = self.hash.take() {
                let data = std::mem::take(&mut self.ready);
                self.hashing = std::mem::take(&mut self.waiting);
                self.hash_job = Some(jobs.run(move || hash_batch(side, data)).await);
            }
        }
    }

    /// Waits for a running job to finish. Dropping this future loses nothing.
    async fn next_done(&mut self) -> Result<Done, UploadError> {
        let joined =
            |e: tokio::task::JoinError| UploadError::Internal(format!("append job failed: {e}"));
        std::future::poll_fn(|cx| {
            use std::task::Poll;
            if let Some(job) = self.hash_job.as_mut() {
                if let Poll::Ready(out) = std::pin::Pin::new(job).poll(cx) {
                    self.hash_job = None;
                    return Poll::Ready(out.map(|(side, h)| Done::Hashed(side, h)).map_err(joined));
                }
            }
            if let Some(job) = self.write_job.as_mut() {
                if let Poll::Ready(out) = std::pin::Pin::new(job).poll(cx) {
                    self.write_job = None;
                    return Poll::Ready(
                        out.map(|(side, c)| Done::Written(side, c)).map_err(joined),
                    );
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Takes a finished job's side back; returns the checkpoint a write made durable.
    fn finished(&mut self, done: Done) -> Option<Checkpoint> {
        match done {
            Done::Hashed(side, hashed) => {
                self.hash = Some(side);
                self.in_hashed += std::mem::take(&mut self.hashing);
                self.hashed = Some(match self.hashed.take() {
                    // Only the newest state describes all the bytes; an older one is dropped.
                    Some(mut waiting) => {
                        waiting.data.extend(hashed.data);
                        waiting.state_after = hashed.state_after;
                        waiting
                    }
                    None => hashed,
                });
                None
            }
            Done::Written(side, checkpoint) => {
                self.write = Some(side);
                self.queued -= std::mem::take(&mut self.writing);
                checkpoint
            }
        }
    }

    /// Runs what is left through both sides once the body has stopped.
    async fn drain(&mut self, last: Vec<Bytes>, jobs: &Jobs) -> Result<(), UploadError> {
        if !last.is_empty() {
            self.push(last);
        }
        loop {
            self.start_jobs(jobs).await;
            if !self.busy() {
                return Ok(());
            }
            // Checkpoints are not reported now: the final commit follows at once.
            let done = self.next_done().await?;
            self.finished(done);
        }
    }

    /// Makes everything written durable and hands back the file and hashers.
    #[allow(clippy::type_complexity)]
    async fn close(
        self,
        jobs: &Jobs,
    ) -> Result<
        (
            FileWriter,
            Sha256,
            Option<ChunkHasher>,
            Option<StorageError>,
        ),
        UploadError,
    > {
        let (Some(hash), Some(write)) = (self.hash, self.write) else {
            return Err(UploadError::Internal(
                "append pipeline closed while busy".into(),
            ));
        };
        let WriteSide { mut file, failure } = write;
        let (file, failure) = jobs
            .run(move || {
                let failure = failure.or_else(|| file.sync().err());
                (file, failure)
            })
            .await
            .await
            .map_err(|e| UploadError::Internal(format!("append job failed: {e}")))?;
        Ok((file, hash.hasher, hash.chunk, failure))
    }
}

/// The hashing job: SHA-256 and the chunk's own checksum over one batch.
fn hash_batch(mut side: HashSide, data: Vec<Bytes>) -> (HashSide, Hashed) {
    use sha2::Digest;
    for buf in &data {
        side.hasher.update(buf);
        if let Some(chunk) = side.chunk.as_mut() {
            chunk.update(buf);
        }
    }
    let due = side.checkpoints && side.last_checkpoint.elapsed() >= CHECKPOINT_EVERY;
    if due {
        side.last_checkpoint = Instant::now();
    }
    let state_after = due.then(|| save_state(&side.hasher));
    (side, Hashed { data, state_after })
}

/// The writing job: one batch to the file; where the hasher attached its state, the bytes are
/// made durable and reported as a checkpoint.
fn write_batch(mut side: WriteSide, hashed: Hashed) -> (WriteSide, Option<Checkpoint>) {
    let written = hashed.data.iter().try_for_each(|buf| side.file.write(buf));
    let synced = written.and_then(|()| match hashed.state_after {
        Some(hash_state) => side.file.sync().map(|()| {
            Some(Checkpoint {
                received: side.file.position(),
                hash_state,
            })
        }),
        None => Ok(None),
    });
    match synced {
        Ok(checkpoint) => (side, checkpoint),
        Err(e) => {
            side.failure = Some(e);
            (side, None)
        }
    }
}

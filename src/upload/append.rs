//! The byte path of an append: socket → batch → file and hasher, in one pass.
//!
//! The async side reads body chunks and gathers them (without copying) into batches. Two
//! blocking threads follow: one feeds each batch to the SHA-256 hasher, the next writes the
//! same buffers to the file, so receiving, hashing and writing overlap (measured here: with
//! hashing and writing on one thread, that thread was the bottleneck while a core idled).
//! The bounded channels are the backpressure: at most five batches per append are in memory.
//!
//! While bytes flow, the writer makes them durable now and then and reports a checkpoint
//! (position and hasher state); the engine commits it so progress messages only ever show
//! durable bytes, and a crash mid-append loses at most the bytes since the last checkpoint.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::checksum::{save_state, ChunkHasher};
use super::error::UploadError;
use crate::storage::{FileWriter, StorageError};

/// Buffers gathered before a hand-off to the writer; 256 KiB–2 MiB measured alike here.
const BATCH_BYTES: usize = 256 * 1024;
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
        let (to_hasher, hasher_rx) = mpsc::channel::<Vec<Bytes>>(1);
        let (to_writer, writer_rx) = mpsc::channel::<Hashed>(1);
        let (checkpoint_tx, mut checkpoint_rx) = mpsc::unbounded_channel();
        let hasher = HashStage {
            hasher: self.hasher,
            chunk: self.chunk,
            checkpoints: self.checkpoints,
        };
        let hasher = tokio::task::spawn_blocking(move || hasher.run(hasher_rx, to_writer));
        let file = self.file;
        let writer =
            tokio::task::spawn_blocking(move || write_stage(file, writer_rx, checkpoint_tx));

        let mut room = self.room;
        let mut batch = Vec::new();
        let mut batch_len = 0;
        let idle = tokio::time::sleep(self.idle_timeout);
        tokio::pin!(idle);
        let end = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break End::Cancelled,
                Some(checkpoint) = checkpoint_rx.recv() => on_checkpoint(checkpoint).await,
                () = &mut idle => break End::Idle,
                item = body.next() => {
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
                    batch_len += data.len();
                    batch.push(data);
                    if batch_len >= BATCH_BYTES {
                        batch_len = 0;
                        if to_hasher.send(std::mem::take(&mut batch)).await.is_err() {
                            // The writer stopped on an error; it reports it below.
                            break End::Finished;
                        }
                    }
                    if overshoot {
                        break End::Overshoot;
                    }
                }
            }
        };
        if !batch.is_empty() {
            // An error here means the writer already failed, which it reports.
            let _ = to_hasher.send(batch).await;
        }
        drop(to_hasher);
        let joined =
            |e: tokio::task::JoinError| UploadError::Internal(format!("append thread failed: {e}"));
        let (hasher, chunk) = hasher.await.map_err(joined)?;
        let (file, failure) = writer.await.map_err(joined)?;
        Ok(Pumped {
            end,
            file,
            hasher,
            chunk,
            failure,
        })
    }
}

/// A hashed batch on its way to the disk, with the hasher's state after it when a
/// checkpoint is due.
struct Hashed {
    data: Vec<Bytes>,
    state_after: Option<Vec<u8>>,
}

/// The first stage: hashes every batch (and the chunk's own checksum), then passes it on.
/// It runs beside the writer, so hashing one batch overlaps with writing the previous one.
struct HashStage {
    hasher: Sha256,
    chunk: Option<ChunkHasher>,
    checkpoints: bool,
}

impl HashStage {
    fn run(
        mut self,
        mut batches: mpsc::Receiver<Vec<Bytes>>,
        writer: mpsc::Sender<Hashed>,
    ) -> (Sha256, Option<ChunkHasher>) {
        use sha2::Digest;
        let mut last_checkpoint = Instant::now();
        while let Some(data) = batches.blocking_recv() {
            for buf in &data {
                self.hasher.update(buf);
                if let Some(chunk) = self.chunk.as_mut() {
                    chunk.update(buf);
                }
            }
            let due = self.checkpoints && last_checkpoint.elapsed() >= CHECKPOINT_EVERY;
            if due {
                last_checkpoint = Instant::now();
            }
            let state_after = due.then(|| save_state(&self.hasher));
            if writer.blocking_send(Hashed { data, state_after }).is_err() {
                break;
            }
        }
        (self.hasher, self.chunk)
    }
}

/// The second stage: writes each batch; where the hasher attached its state, makes the bytes
/// durable and reports the checkpoint.
fn write_stage(
    mut file: FileWriter,
    mut batches: mpsc::Receiver<Hashed>,
    checkpoints: mpsc::UnboundedSender<Checkpoint>,
) -> (FileWriter, Option<StorageError>) {
    let mut result = Ok(());
    while let Some(hashed) = batches.blocking_recv() {
        result = hashed.data.iter().try_for_each(|buf| file.write(buf));
        if result.is_err() {
            break;
        }
        if let Some(hash_state) = hashed.state_after {
            result = file.sync();
            if result.is_err() {
                break;
            }
            let _ = checkpoints.send(Checkpoint {
                received: file.position(),
                hash_state,
            });
        }
    }
    // Closing the receiver tells the hasher (and through it the reader) to stop on failure.
    drop(batches);
    if result.is_ok() {
        result = file.sync();
    }
    (file, result.err())
}

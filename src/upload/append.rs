//! The byte path of an append: socket → batch → file and hasher, in one pass.
//!
//! The async side reads body chunks and gathers them (without copying) into batches; a
//! blocking thread writes each batch to the file and feeds the same buffers to the SHA-256
//! hasher, so receiving overlaps with writing and hashing. The bounded channel between them
//! is the backpressure: at most about three batches per append are in memory.
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
}

impl Pump {
    /// Streams `body` through the writer. `on_checkpoint` commits durable progress as it comes.
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
        let (batches, batch_rx) = mpsc::channel::<Vec<Bytes>>(1);
        let (checkpoint_tx, mut checkpoint_rx) = mpsc::unbounded_channel();
        let checkpoint_tx = self.checkpoints.then_some(checkpoint_tx);
        let mut room = self.room;
        let writer = Writer {
            file: self.file,
            hasher: self.hasher,
            chunk: self.chunk,
        };
        let writer = tokio::task::spawn_blocking(move || writer.run(batch_rx, checkpoint_tx));

        let mut batch = Vec::new();
        let mut batch_len = 0;
        let end = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break End::Cancelled,
                Some(checkpoint) = checkpoint_rx.recv() => on_checkpoint(checkpoint).await,
                item = body.next() => {
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
                        if batches.send(std::mem::take(&mut batch)).await.is_err() {
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
            let _ = batches.send(batch).await;
        }
        drop(batches);
        let done = writer
            .await
            .map_err(|e| UploadError::Internal(format!("writer thread failed: {e}")))?;
        Ok(Pumped {
            end,
            file: done.file,
            hasher: done.hasher,
            chunk: done.chunk,
            failure: done.failure,
        })
    }
}

struct Writer {
    file: FileWriter,
    hasher: Sha256,
    chunk: Option<ChunkHasher>,
}

struct WriterDone {
    file: FileWriter,
    hasher: Sha256,
    chunk: Option<ChunkHasher>,
    failure: Option<StorageError>,
}

impl Writer {
    fn run(
        mut self,
        mut batches: mpsc::Receiver<Vec<Bytes>>,
        checkpoints: Option<mpsc::UnboundedSender<Checkpoint>>,
    ) -> WriterDone {
        let mut last_checkpoint = Instant::now();
        let mut result = Ok(());
        while let Some(batch) = batches.blocking_recv() {
            result = self.write_batch(&batch);
            if result.is_err() {
                break;
            }
            if let Some(tx) = &checkpoints {
                if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                    result = self.file.sync();
                    if result.is_err() {
                        break;
                    }
                    last_checkpoint = Instant::now();
                    let _ = tx.send(Checkpoint {
                        received: self.file.position(),
                        hash_state: save_state(&self.hasher),
                    });
                }
            }
        }
        drop(batches);
        if result.is_ok() {
            result = self.file.sync();
        }
        WriterDone {
            file: self.file,
            hasher: self.hasher,
            chunk: self.chunk,
            failure: result.err(),
        }
    }

    fn write_batch(&mut self, batch: &[Bytes]) -> Result<(), StorageError> {
        use sha2::Digest;
        for data in batch {
            self.file.write(data)?;
            self.hasher.update(data);
            if let Some(chunk) = self.chunk.as_mut() {
                chunk.update(data);
            }
        }
        Ok(())
    }
}

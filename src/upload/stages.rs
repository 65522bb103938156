//! The two stages of the byte pipeline, hashing and writing, each lent to one blocking job
//! at a time while the async side keeps reading the body.

use std::future::Future;
use std::time::Instant;

use bytes::Bytes;
use sha2::Sha256;
use tokio::task::JoinHandle;

use super::checksum::{save_state, ChunkHasher};
use super::error::UploadError;
use super::pipeline::{Checkpoint, Jobs, CHECKPOINT_EVERY};
use crate::store::{Sink, StoreError};

/// The hashers with what they have seen, between jobs.
pub(super) struct HashSide {
    hasher: Sha256,
    chunk: Option<ChunkHasher>,
    checkpoints: bool,
    last_checkpoint: Instant,
}

/// The sink, between jobs; after a failure nothing more is written.
pub(super) struct WriteSide {
    sink: Box<dyn Sink>,
    failure: Option<StoreError>,
}

/// A hashed batch on its way to the disk, with the hasher's state after it when a
/// checkpoint is due.
pub(super) struct Hashed {
    data: Vec<Bytes>,
    state_after: Option<Vec<u8>>,
}

pub(super) enum Done {
    Hashed(HashSide, Hashed),
    Written(WriteSide, Option<Checkpoint>),
}

/// Each side is either idle (held here) or lent to its running job.
pub(super) struct Pipeline {
    hash: Option<HashSide>,
    hash_job: Option<JoinHandle<(HashSide, Hashed)>>,
    write: Option<WriteSide>,
    write_job: Option<JoinHandle<(WriteSide, Option<Checkpoint>)>>,
    /// Batches waiting for the hasher, as one run of buffers.
    ready: Vec<Bytes>,
    /// Hashed batches waiting for the writer.
    hashed: Option<Hashed>,
    /// Batches anywhere in the pipeline; the body is read only while there is room.
    pub(super) queued: usize,
    /// Batches waiting for the hasher, in the hash job and in the write job.
    waiting: usize,
    hashing: usize,
    in_hashed: usize,
    writing: usize,
}

impl Pipeline {
    pub(super) fn new(
        sink: Box<dyn Sink>,
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
                sink,
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

    pub(super) fn push(&mut self, batch: Vec<Bytes>) {
        self.ready.extend(batch);
        self.waiting += 1;
        self.queued += 1;
    }

    pub(super) fn busy(&self) -> bool {
        self.hash_job.is_some() || self.write_job.is_some()
    }

    pub(super) fn failed(&self) -> bool {
        self.write.as_ref().is_some_and(|w| w.failure.is_some())
    }

    /// Hands the waiting batches to idle sides.
    pub(super) async fn start_jobs(&mut self, jobs: &Jobs) {
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
    pub(super) async fn next_done(&mut self) -> Result<Done, UploadError> {
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
    pub(super) fn finished(&mut self, done: Done) -> Option<Checkpoint> {
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
    pub(super) async fn drain(&mut self, last: Vec<Bytes>, jobs: &Jobs) -> Result<(), UploadError> {
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

    /// Makes everything written durable and hands back the sink and hashers.
    #[allow(clippy::type_complexity)]
    pub(super) async fn close(
        self,
        jobs: &Jobs,
    ) -> Result<
        (
            Box<dyn Sink>,
            Sha256,
            Option<ChunkHasher>,
            Option<StoreError>,
        ),
        UploadError,
    > {
        let (Some(hash), Some(write)) = (self.hash, self.write) else {
            return Err(UploadError::Internal(
                "append pipeline closed while busy".into(),
            ));
        };
        let WriteSide { mut sink, failure } = write;
        let (sink, failure) = jobs
            .run(move || {
                let failure = failure.or_else(|| sink.sync().err());
                (sink, failure)
            })
            .await
            .await
            .map_err(|e| UploadError::Internal(format!("append job failed: {e}")))?;
        Ok((sink, hash.hasher, hash.chunk, failure))
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

/// The writing job: one batch to the store; where the hasher attached its state, the bytes are
/// made durable and reported as a checkpoint.
fn write_batch(mut side: WriteSide, hashed: Hashed) -> (WriteSide, Option<Checkpoint>) {
    let written = hashed.data.iter().try_for_each(|buf| side.sink.write(buf));
    let synced = written.and_then(|()| match hashed.state_after {
        Some(hash_state) => side.sink.sync().map(|()| {
            Some(Checkpoint {
                received: side.sink.position(),
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

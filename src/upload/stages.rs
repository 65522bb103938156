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
    /// Save the state at this job's end whatever the time (the body went quiet).
    force: bool,
    /// The upload offset after the bytes hashed so far.
    position: u64,
    /// The store's durability marks (see `Sink::durable_every`): the hasher's state is saved
    /// at each one, since only there can a checkpoint land.
    every: Option<u64>,
}

/// The sink, between jobs; after a failure nothing more is written.
pub(super) struct WriteSide {
    sink: Box<dyn Sink>,
    failure: Option<StoreError>,
}

/// A hashed batch on its way to the store, with the hasher's state at the offsets where a
/// checkpoint may land.
pub(super) struct Hashed {
    data: Vec<Bytes>,
    states: Vec<(u64, Vec<u8>)>,
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
    /// The store is durable at its own marks, not wherever it syncs (see `HashSide::every`).
    marks: bool,
    /// Batches anywhere in the pipeline; the body is read only while there is room.
    pub(super) queued: usize,
    /// A checkpoint is wanted for everything handed in so far (the body went quiet).
    force: bool,
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
        let every = sink.durable_every().filter(|n| *n > 0);
        Pipeline {
            marks: every.is_some(),
            hash: Some(HashSide {
                hasher,
                chunk,
                checkpoints,
                last_checkpoint: Instant::now(),
                force: false,
                position: sink.position(),
                every,
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
            force: false,
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

    /// Asks for a checkpoint of every byte handed in so far, even if no more come.
    pub(super) fn force_checkpoint(&mut self) {
        self.force = true;
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
        if (!self.ready.is_empty() || self.force) && self.hash.is_some() {
            if let Some(mut side) = self.hash.take() {
                side.force = std::mem::take(&mut self.force);
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
                    Some(mut waiting) => {
                        waiting.data.extend(hashed.data);
                        if self.marks {
                            waiting.states.extend(hashed.states);
                        } else {
                            // A store that syncs anywhere is durable at the end of what it
                            // wrote: an older state is never that, and would cost a sync.
                            waiting.states = hashed.states;
                        }
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

    /// Hands back the sink and hashers. The engine makes the bytes durable (`Sink::finish`)
    /// once it has decided to keep them.
    #[allow(clippy::type_complexity)]
    pub(super) fn close(
        self,
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
        let WriteSide { sink, failure } = write;
        Ok((sink, hash.hasher, hash.chunk, failure))
    }
}

/// The hashing job: SHA-256 and the chunk's own checksum over one batch, saving the hasher's
/// state where a checkpoint may land: at the store's marks, or at the batch's end when one is
/// due by time.
fn hash_batch(mut side: HashSide, data: Vec<Bytes>) -> (HashSide, Hashed) {
    let mut states = Vec::new();
    for buf in &data {
        let mut rest: &[u8] = buf;
        while !rest.is_empty() {
            let n = match side.every.filter(|_| side.checkpoints) {
                Some(every) => rest.len().min((every - side.position % every) as usize),
                None => rest.len(),
            };
            side.hash(&rest[..n]);
            rest = &rest[n..];
            if side.checkpoints && side.every.is_some_and(|every| side.position % every == 0) {
                states.push((side.position, save_state(&side.hasher)));
            }
        }
    }
    let due = side.checkpoints
        && side.every.is_none()
        && (std::mem::take(&mut side.force) || side.last_checkpoint.elapsed() >= CHECKPOINT_EVERY);
    if due {
        side.last_checkpoint = Instant::now();
        states.push((side.position, save_state(&side.hasher)));
    }
    (side, Hashed { data, states })
}

impl HashSide {
    fn hash(&mut self, bytes: &[u8]) {
        use sha2::Digest;
        self.hasher.update(bytes);
        if let Some(chunk) = self.chunk.as_mut() {
            chunk.update(bytes);
        }
        self.position += bytes.len() as u64;
    }
}

/// The writing job: one batch to the store. Where the hasher saved states, the store is asked
/// how far the bytes are durable; if a saved state is for exactly there, that is a checkpoint.
fn write_batch(mut side: WriteSide, hashed: Hashed) -> (WriteSide, Option<Checkpoint>) {
    let written = hashed.data.iter().try_for_each(|buf| side.sink.write(buf));
    let synced = written.and_then(|()| side.sink.pause()).and_then(|()| {
        if hashed.states.is_empty() {
            return Ok(None);
        }
        let durable = side.sink.sync()?;
        let state = hashed
            .states
            .into_iter()
            .rev()
            .find(|(at, _)| *at == durable);
        Ok(state.map(|(received, hash_state)| Checkpoint {
            received,
            hash_state,
            store_state: side.sink.state(),
        }))
    });
    match synced {
        Ok(checkpoint) => (side, checkpoint),
        Err(e) => {
            side.failure = Some(e);
            (side, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::checksum::restore_state;
    use sha2::Digest;

    fn side(position: u64, every: Option<u64>) -> HashSide {
        HashSide {
            hasher: Sha256::new(),
            chunk: None,
            checkpoints: true,
            last_checkpoint: Instant::now(),
            force: false,
            position,
            every,
        }
    }

    #[test]
    fn states_are_saved_exactly_at_the_stores_marks() {
        let bytes: Vec<u8> = (0..25u8).collect();
        let data = vec![
            Bytes::copy_from_slice(&bytes[..7]),
            Bytes::copy_from_slice(&bytes[7..]),
        ];
        let (side, hashed) = hash_batch(side(5, Some(10)), data);
        assert_eq!(side.position, 30);
        let marks: Vec<u64> = hashed.states.iter().map(|(at, _)| *at).collect();
        assert_eq!(marks, [10, 20, 30]);
        for (at, state) in &hashed.states {
            let mut expected = Sha256::new();
            expected.update(&bytes[..(*at - 5) as usize]);
            let restored = restore_state(state).expect("a saved state");
            assert_eq!(restored.finalize(), expected.finalize(), "state at {at}");
        }
    }

    #[test]
    fn without_marks_a_state_is_saved_at_the_batch_end_when_due() {
        let mut hashing = side(0, None);
        hashing.last_checkpoint = Instant::now() - CHECKPOINT_EVERY;
        let (_, hashed) = hash_batch(hashing, vec![Bytes::from_static(b"abc")]);
        let marks: Vec<u64> = hashed.states.iter().map(|(at, _)| *at).collect();
        assert_eq!(marks, [3]);
        let (_, hashed) = hash_batch(side(0, None), vec![Bytes::from_static(b"abc")]);
        assert!(hashed.states.is_empty(), "not due yet");
    }
}

//! The byte pipeline's two halves: the hasher, fed each chunk on the receiving thread as it
//! arrives, and the writer, lent to one blocking job at a time while the body keeps coming.

use std::future::Future;
use std::time::Instant;

use bytes::Bytes;
use sha2::Sha256;
use tokio::task::JoinHandle;

use super::checksum::{save_state, ChunkHasher};
use super::error::UploadError;
use super::pipeline::{Checkpoint, Jobs, CHECKPOINT_EVERY};
use crate::store::{Sink, StoreError};

/// The hashers with what they have seen.
///
/// They run where the bytes arrive, on the worker that read them from the socket, while the
/// bytes are still in that core's cache. A blocking hash job per batch cost two thread
/// hand-offs and a cold read of every byte (docs/performance.md, "Tried", has the figures).
pub(super) struct Hashing {
    hasher: Sha256,
    chunk: Option<ChunkHasher>,
    checkpoints: bool,
    last_checkpoint: Instant,
    /// A checkpoint was asked for (the body went quiet) and the writer has not made one yet.
    forced: bool,
    /// The upload offset after the bytes hashed so far.
    position: u64,
    /// The store's durability marks (see `Sink::durable_every`): the hasher's state is saved
    /// at each one, since only there can a checkpoint land.
    every: Option<u64>,
}

/// Hashed bytes on their way to the store, with the hasher's state at the offsets where a
/// checkpoint may land.
#[derive(Default)]
pub(super) struct Batch {
    data: Vec<Bytes>,
    len: usize,
    states: Vec<(u64, Vec<u8>)>,
}

impl Batch {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Neither bytes to write nor a checkpoint to make.
    fn is_idle(&self) -> bool {
        self.len == 0 && self.states.is_empty()
    }
}

impl Hashing {
    pub(super) fn new(
        hasher: Sha256,
        chunk: Option<ChunkHasher>,
        checkpoints: bool,
        sink: &dyn Sink,
    ) -> Self {
        Hashing {
            hasher,
            chunk,
            checkpoints,
            last_checkpoint: Instant::now(),
            forced: false,
            position: sink.position(),
            every: sink.durable_every().filter(|n| *n > 0),
        }
    }

    /// Hashes `data` (SHA-256 and the chunk's own checksum) and adds it to `batch`, saving
    /// the hasher's state at each of the store's marks it crosses.
    pub(super) fn add(&mut self, batch: &mut Batch, data: Bytes) {
        let mut rest: &[u8] = &data;
        while !rest.is_empty() {
            let n = match self.every.filter(|_| self.checkpoints) {
                Some(every) => rest.len().min((every - self.position % every) as usize),
                None => rest.len(),
            };
            self.hash(&rest[..n]);
            rest = &rest[n..];
            if self.checkpoints && self.every.is_some_and(|every| self.position % every == 0) {
                batch.states.push((self.position, save_state(&self.hasher)));
            }
        }
        batch.len += data.len();
        batch.data.push(data);
    }

    /// Ends `batch` for the writer. A store durable anywhere gets the hasher's state at the
    /// batch's end when a checkpoint is due by time, or when `force`d (the body went quiet).
    /// Either stays due until the writer has made one (`checkpointed`): batches merged while
    /// the disk is behind keep only the newest state, so each must carry one.
    pub(super) fn seal(&mut self, batch: &mut Batch, force: bool) {
        self.forced |= force;
        let due = self.checkpoints
            && self.every.is_none()
            && (self.forced || self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY);
        if due {
            batch.states.push((self.position, save_state(&self.hasher)));
        }
    }

    /// The writer made a checkpoint: the next is due a `CHECKPOINT_EVERY` from now.
    pub(super) fn checkpointed(&mut self) {
        self.last_checkpoint = Instant::now();
        self.forced = false;
    }

    /// Whether the store is durable only at its own marks (see `every`).
    pub(super) fn has_marks(&self) -> bool {
        self.every.is_some()
    }

    pub(super) fn into_parts(self) -> (Sha256, Option<ChunkHasher>) {
        (self.hasher, self.chunk)
    }

    fn hash(&mut self, bytes: &[u8]) {
        use sha2::Digest;
        self.hasher.update(bytes);
        if let Some(chunk) = self.chunk.as_mut() {
            chunk.update(bytes);
        }
        self.position += bytes.len() as u64;
    }
}

/// The sink, between jobs; after a failure nothing more is written.
struct WriteSide {
    sink: Box<dyn Sink>,
    failure: Option<StoreError>,
}

type Written = (WriteSide, Option<Checkpoint>);

/// The writer is either idle (held here) or lent to its running job.
pub(super) struct Pipeline {
    write: Option<WriteSide>,
    job: Option<JoinHandle<Written>>,
    /// Sealed batches waiting for the writer, as one.
    waiting: Option<Batch>,
    /// The store is durable at its own marks, not wherever it syncs (see `Hashing::every`).
    marks: bool,
    /// Batches waiting or being written; the body is read only while there is room.
    pub(super) queued: usize,
    /// Of those, the batches in the running job.
    writing: usize,
}

impl Pipeline {
    /// `marks`: the store is durable only at its own marks (`Hashing::has_marks`).
    pub(super) fn new(sink: Box<dyn Sink>, marks: bool) -> Self {
        Pipeline {
            marks,
            write: Some(WriteSide {
                sink,
                failure: None,
            }),
            job: None,
            waiting: None,
            queued: 0,
            writing: 0,
        }
    }

    pub(super) fn push(&mut self, batch: Batch) {
        if batch.is_idle() {
            return;
        }
        self.queued += 1;
        self.waiting = Some(match self.waiting.take() {
            Some(mut waiting) => {
                waiting.data.extend(batch.data);
                waiting.len += batch.len;
                if self.marks {
                    waiting.states.extend(batch.states);
                } else {
                    // A store that syncs anywhere is durable at the end of what it wrote: an
                    // older state is never that, and would cost a sync.
                    waiting.states = batch.states;
                }
                waiting
            }
            None => batch,
        });
    }

    pub(super) fn busy(&self) -> bool {
        self.job.is_some()
    }

    pub(super) fn failed(&self) -> bool {
        self.write.as_ref().is_some_and(|w| w.failure.is_some())
    }

    /// Hands the waiting batches to the writer if it is idle.
    pub(super) async fn start_jobs(&mut self, jobs: &Jobs) {
        let (side, batch) = match (self.write.take(), self.waiting.take()) {
            (Some(side), Some(batch)) => (side, batch),
            // The writer is busy or nothing waits: both stay as they were.
            (side, batch) => {
                (self.write, self.waiting) = (side, batch);
                return;
            }
        };
        if side.failure.is_some() {
            // Nothing more is written after a failure; the batches are dropped.
            self.queued = 0;
            self.write = Some(side);
        } else {
            self.writing = self.queued;
            self.job = Some(jobs.run(move || write_batch(side, batch)).await);
        }
    }

    /// Waits for the running job to finish. Dropping this future loses nothing.
    pub(super) async fn next_done(&mut self) -> Result<Option<Checkpoint>, UploadError> {
        let joined =
            |e: tokio::task::JoinError| UploadError::Internal(format!("append job failed: {e}"));
        let out = std::future::poll_fn(|cx| match self.job.as_mut() {
            Some(job) => std::pin::Pin::new(job).poll(cx),
            None => std::task::Poll::Pending,
        })
        .await;
        self.job = None;
        let (side, checkpoint) = out.map_err(joined)?;
        self.write = Some(side);
        self.queued -= std::mem::take(&mut self.writing);
        Ok(checkpoint)
    }

    /// Writes what is left once the body has stopped.
    pub(super) async fn drain(&mut self, last: Batch, jobs: &Jobs) -> Result<(), UploadError> {
        self.push(last);
        loop {
            self.start_jobs(jobs).await;
            if !self.busy() {
                return Ok(());
            }
            // Checkpoints are not reported now: the final commit follows at once.
            self.next_done().await?;
        }
    }

    /// Hands back the sink. The engine makes the bytes durable (`Sink::finish`) once it has
    /// decided to keep them.
    pub(super) fn close(self) -> Result<(Box<dyn Sink>, Option<StoreError>), UploadError> {
        let Some(WriteSide { sink, failure }) = self.write else {
            return Err(UploadError::Internal(
                "append pipeline closed while busy".into(),
            ));
        };
        Ok((sink, failure))
    }
}

/// The writing job: one batch to the store. Where the hasher saved states, the store is asked
/// how far the bytes are durable; if a saved state is for exactly there, that is a checkpoint.
fn write_batch(mut side: WriteSide, batch: Batch) -> Written {
    let written = batch.data.iter().try_for_each(|buf| side.sink.write(buf));
    let synced = written.and_then(|()| side.sink.pause()).and_then(|()| {
        if batch.states.is_empty() {
            return Ok(None);
        }
        let durable = side.sink.sync()?;
        let state = batch
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

    fn hashing(position: u64, every: Option<u64>) -> Hashing {
        Hashing {
            hasher: Sha256::new(),
            chunk: None,
            checkpoints: true,
            last_checkpoint: Instant::now(),
            forced: false,
            position,
            every,
        }
    }

    fn marks(batch: &Batch) -> Vec<u64> {
        batch.states.iter().map(|(at, _)| *at).collect()
    }

    #[test]
    fn states_are_saved_exactly_at_the_stores_marks() {
        let bytes: Vec<u8> = (0..25u8).collect();
        let mut side = hashing(5, Some(10));
        let mut batch = Batch::default();
        side.add(&mut batch, Bytes::copy_from_slice(&bytes[..7]));
        side.add(&mut batch, Bytes::copy_from_slice(&bytes[7..]));
        side.seal(&mut batch, true);
        assert_eq!(side.position, 30);
        assert_eq!(batch.len(), 25);
        assert_eq!(
            marks(&batch),
            [10, 20, 30],
            "a forced seal adds nothing at marks"
        );
        for (at, state) in &batch.states {
            let mut expected = Sha256::new();
            expected.update(&bytes[..(*at - 5) as usize]);
            let restored = restore_state(state).expect("a saved state");
            assert_eq!(restored.finalize(), expected.finalize(), "state at {at}");
        }
    }

    /// A store in memory, durable at its marks (or anywhere), whose writes fail past `fail_at`.
    struct MemorySink {
        bytes: Vec<u8>,
        every: Option<u64>,
        fail_at: Option<usize>,
    }

    impl MemorySink {
        fn boxed(every: Option<u64>, fail_at: Option<usize>) -> Box<dyn Sink> {
            Box::new(MemorySink {
                bytes: Vec::new(),
                every,
                fail_at,
            })
        }
    }

    impl Sink for MemorySink {
        fn position(&self) -> u64 {
            self.bytes.len() as u64
        }

        fn write(&mut self, buf: &[u8]) -> crate::store::Result<()> {
            if self
                .fail_at
                .is_some_and(|at| self.bytes.len() + buf.len() > at)
            {
                let full = std::io::Error::other("full");
                return Err(StoreError::new("write", "memory", full));
            }
            self.bytes.extend_from_slice(buf);
            Ok(())
        }

        fn sync(&mut self) -> crate::store::Result<u64> {
            let at = self.position();
            Ok(self.every.map_or(at, |every| at / every * every))
        }

        fn truncate_to(&mut self, len: u64) -> crate::store::Result<()> {
            self.bytes.truncate(len as usize);
            Ok(())
        }

        fn durable_every(&self) -> Option<u64> {
            self.every
        }
    }

    fn batch_of(side: &mut Hashing, bytes: &[u8]) -> Batch {
        let mut batch = Batch::default();
        side.add(&mut batch, Bytes::copy_from_slice(bytes));
        side.seal(&mut batch, false);
        batch
    }

    /// Writes what is waiting in one job; returns its checkpoint.
    async fn one_job(line: &mut Pipeline, jobs: &Jobs) -> Option<Checkpoint> {
        line.start_jobs(jobs).await;
        assert!(line.busy(), "a job started");
        line.next_done().await.expect("the job ran")
    }

    fn hash_of(bytes: &[u8]) -> Vec<u8> {
        Sha256::digest(bytes).to_vec()
    }

    fn restored(checkpoint: &Checkpoint) -> Vec<u8> {
        let state = restore_state(&checkpoint.hash_state).expect("a saved state");
        state.finalize().to_vec()
    }

    #[tokio::test]
    async fn batches_merged_for_a_store_with_marks_keep_every_mark() {
        let bytes: Vec<u8> = (0..19u8).collect();
        let mut side = hashing(0, Some(10));
        let mut line = Pipeline::new(MemorySink::boxed(Some(10), None), side.has_marks());
        line.push(batch_of(&mut side, &bytes[..15]));
        line.push(batch_of(&mut side, &bytes[15..]));
        assert_eq!(line.queued, 2);
        let checkpoint = one_job(&mut line, &Jobs::new(2))
            .await
            .expect("a checkpoint");
        assert_eq!(checkpoint.received, 10, "durable at the first batch's mark");
        assert_eq!(restored(&checkpoint), hash_of(&bytes[..10]));
        assert_eq!(line.queued, 0, "the queue empties");
        let (sink, failure) = line.close().expect("idle");
        assert!(failure.is_none());
        assert_eq!(sink.position(), 19);
    }

    #[tokio::test]
    async fn a_due_checkpoint_survives_batches_merged_behind_a_slow_disk() {
        let mut side = hashing(0, None);
        side.last_checkpoint = Instant::now() - CHECKPOINT_EVERY;
        let mut line = Pipeline::new(MemorySink::boxed(None, None), side.has_marks());
        // Both sealed before the writer reports: the second must carry a state too, since
        // the merge keeps only the newest.
        line.push(batch_of(&mut side, b"abc"));
        line.push(batch_of(&mut side, b"de"));
        let jobs = Jobs::new(2);
        let checkpoint = one_job(&mut line, &jobs).await.expect("a checkpoint");
        assert_eq!(checkpoint.received, 5);
        assert_eq!(restored(&checkpoint), hash_of(b"abcde"));
        side.checkpointed();
        line.push(batch_of(&mut side, b"f"));
        assert!(
            one_job(&mut line, &jobs).await.is_none(),
            "not due again yet"
        );
        assert_eq!(line.queued, 0);
    }

    #[tokio::test]
    async fn after_a_failed_write_nothing_more_is_written() {
        let mut side = hashing(0, None);
        let mut line = Pipeline::new(MemorySink::boxed(None, Some(4)), side.has_marks());
        line.push(batch_of(&mut side, b"abcdef"));
        let jobs = Jobs::new(2);
        assert!(one_job(&mut line, &jobs).await.is_none());
        assert!(line.failed());
        line.push(batch_of(&mut side, b"gh"));
        line.drain(Batch::default(), &jobs).await.expect("drained");
        assert_eq!(line.queued, 0, "the batches after the failure are dropped");
        let (sink, failure) = line.close().expect("idle");
        assert!(failure.is_some());
        assert_eq!(sink.position(), 0, "nothing written after the failure");
    }

    #[test]
    fn a_batch_of_empty_chunks_is_not_pushed() {
        let mut side = hashing(0, None);
        let mut line = Pipeline::new(MemorySink::boxed(None, None), false);
        line.push(batch_of(&mut side, b""));
        assert_eq!(line.queued, 0);
    }

    #[test]
    fn without_marks_a_state_is_saved_at_the_batch_end_when_due() {
        let mut side = hashing(0, None);
        side.last_checkpoint = Instant::now() - CHECKPOINT_EVERY;
        let mut batch = Batch::default();
        side.add(&mut batch, Bytes::from_static(b"abc"));
        assert!(batch.states.is_empty(), "saved only when sealed");
        side.seal(&mut batch, false);
        assert_eq!(marks(&batch), [3]);

        side.checkpointed();
        let mut batch = Batch::default();
        side.add(&mut batch, Bytes::from_static(b"de"));
        side.seal(&mut batch, false);
        assert!(batch.states.is_empty(), "not due yet");
        side.seal(&mut batch, true);
        assert_eq!(marks(&batch), [5], "forced");

        // Bytes sealed after a forced state, before the writer reports, carry one too: the
        // merge keeps only the newest.
        let mut batch = Batch::default();
        side.add(&mut batch, Bytes::from_static(b"f"));
        side.seal(&mut batch, false);
        assert_eq!(marks(&batch), [6], "still forced");
        side.checkpointed();
        let mut batch = Batch::default();
        side.add(&mut batch, Bytes::from_static(b"g"));
        side.seal(&mut batch, false);
        assert!(batch.states.is_empty(), "the writer made it");
    }
}

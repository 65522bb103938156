//! The bytes of a final upload, written from its parts' in order and hashed once on the way.
//!
//! Where the store can copy the parts itself (UploadPartCopy; `copy_file_range` on a file
//! system that shares blocks), it does, and the parts are only read for the digest. Otherwise
//! the parts are read in batches, and each batch is hashed and written on two blocking threads
//! while the next one is read: reading, hashing and writing overlap, as in an append.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tracing::info;

use super::{Engine, Result, Upload, UploadError};
use crate::store::{ByteStream, Copied, Sink, Store};

/// Bytes read ahead while the batch before is hashed and written.
const BATCH: usize = 4 << 20;

impl Engine {
    /// Writes the parts' bytes as the final's, returning the digest of the whole and the
    /// store's state to complete it with.
    pub(super) async fn write_whole(
        &self,
        upload: &Upload,
        parts: &[Upload],
        total: u64,
    ) -> Result<(Sha256, Option<Vec<u8>>)> {
        let started = Instant::now();
        let key = upload.id.to_string();
        // Room for the final's bytes, empty: recreated if a failed try (or a crash) left
        // none, cut back if it left some.
        self.store.recover(&key, 0, None).await?;
        let sources: Vec<(String, u64)> = parts
            .iter()
            .map(|p| (p.id.to_string(), p.received))
            .collect();
        if self.store.copies_parts(&sources) {
            // The store copies while the parts are read for the digest.
            let (copied, (_, hashed)) = tokio::join!(
                self.store.copy_parts(&key, &sources),
                self.pass_through(None, &sources)
            );
            if let Copied::Done(state) = copied? {
                let hasher = self.undo_on_error(&key, state.as_deref(), hashed).await?;
                info!(upload = %upload.id, bytes = total, ms = started.elapsed().as_millis(),
                      "parts copied by the store");
                return Ok((hasher, state));
            }
        }
        let sink = self.store.open_append(&key, 0, Some(total), None).await?;
        let (sink, hashed) = self.pass_through(Some(sink), &sources).await;
        let Some(mut sink) = sink else {
            let lost = UploadError::Internal("the final's sink went missing".into());
            return self.undo_on_error(&key, None, hashed.and(Err(lost))).await;
        };
        let hasher = match hashed {
            Ok(hasher) => hasher,
            Err(e) => {
                let state = sink.state();
                return self.undo_on_error(&key, state.as_deref(), Err(e)).await;
            }
        };
        let finished = self
            .jobs
            .block(move || {
                let finished = sink.finish();
                (finished, sink.state())
            })
            .await?;
        let state = match finished {
            (Ok(()), state) => state,
            (Err(e), state) => {
                return self
                    .undo_on_error(&key, state.as_deref(), Err(e.into()))
                    .await
            }
        };
        info!(upload = %upload.id, bytes = total, ms = started.elapsed().as_millis(), "parts written");
        Ok((hasher, state))
    }

    /// A failed assembly leaves nothing behind in the store (an object store's multipart
    /// upload would linger); the next try makes room again and starts over from the parts.
    async fn undo_on_error<T>(
        &self,
        key: &str,
        state: Option<&[u8]>,
        done: Result<T>,
    ) -> Result<T> {
        if done.is_err() {
            if let Err(e) = self.store.remove(key, state).await {
                tracing::warn!(upload = key, error = %e, "cleaning up after a failed assembly failed");
            }
        }
        done
    }

    /// Reads every part once, in order, through the hasher and (if given) into `sink`. The
    /// sink comes back even when this fails, so what it started can be undone.
    async fn pass_through(
        &self,
        mut sink: Option<Box<dyn Sink>>,
        parts: &[(String, u64)],
    ) -> (Option<Box<dyn Sink>>, Result<Sha256>) {
        let mut hasher = Sha256::new();
        let mut reader = PartReader::new(self.store.clone(), parts);
        let mut next = reader.next_batch().await;
        while let Some(batch) = next {
            let batch = match batch {
                Ok(batch) => Arc::new(batch),
                Err(e) => return (sink, Err(e)),
            };
            let hashed = {
                let (batch, mut hasher) = (batch.clone(), std::mem::take(&mut hasher));
                self.jobs.block(move || {
                    batch.iter().for_each(|chunk| hasher.update(chunk));
                    hasher
                })
            };
            let written = async {
                let Some(mut sink) = sink.take() else {
                    return (None, Ok(()));
                };
                let batch = batch.clone();
                let job = self.jobs.block(move || {
                    let wrote = batch.iter().try_for_each(|chunk| sink.write(chunk));
                    (sink, wrote)
                });
                match job.await {
                    Ok((sink, wrote)) => (Some(sink), wrote.map_err(UploadError::from)),
                    Err(e) => (None, Err(e)),
                }
            };
            let (hashed, (back, wrote), read) = tokio::join!(hashed, written, reader.next_batch());
            sink = back;
            match (hashed, wrote) {
                (Ok(h), Ok(())) => hasher = h,
                (Err(e), _) | (_, Err(e)) => return (sink, Err(e)),
            }
            next = read;
        }
        (sink, Ok(hasher))
    }
}

/// The parts' bytes, in order, a batch of about `BATCH` bytes at a time.
struct PartReader {
    store: Arc<dyn Store>,
    parts: VecDeque<(String, u64)>,
    /// The part being read, and how many of its bytes are still to come.
    current: Option<(String, ByteStream, u64)>,
}

impl PartReader {
    fn new(store: Arc<dyn Store>, parts: &[(String, u64)]) -> PartReader {
        PartReader {
            store,
            parts: parts.iter().cloned().collect(),
            current: None,
        }
    }

    /// The next batch; `None` once every part was read.
    async fn next_batch(&mut self) -> Option<Result<Vec<Bytes>>> {
        let mut batch = Vec::new();
        let mut batched = 0;
        while batched < BATCH {
            let Some((key, bytes, left)) = self.current.as_mut() else {
                match self.open_next().await {
                    Some(Ok(())) => continue,
                    Some(Err(e)) => return Some(Err(e)),
                    None => break,
                }
            };
            // A part that holds fewer or more bytes than its record says would make a whole
            // that is not their concatenation: refused, never written.
            let wrong = |key: &str, left: u64| {
                let e = format!("part {key} does not hold the bytes its record says ({left} off)");
                Some(Err(UploadError::PartsUnreadable(e)))
            };
            match bytes.next().await {
                Some(Ok(chunk)) if chunk.len() as u64 > *left => return wrong(key, *left),
                Some(Ok(chunk)) => {
                    *left -= chunk.len() as u64;
                    batched += chunk.len();
                    batch.push(chunk);
                }
                Some(Err(e)) => {
                    let e = UploadError::Internal(format!("reading part {key}: {e}"));
                    return Some(Err(e));
                }
                None if *left > 0 => return wrong(key, *left),
                None => self.current = None,
            }
        }
        (!batch.is_empty()).then_some(Ok(batch))
    }

    /// Opens the next part; `None` when there is none.
    async fn open_next(&mut self) -> Option<Result<()>> {
        let (key, len) = self.parts.pop_front()?;
        let opened = async {
            let source = match self.store.open_read(&key).await {
                Err(e) if e.is_not_found() => {
                    let gone = format!("part {key}'s bytes are gone from the store");
                    return Err(UploadError::PartsUnreadable(gone));
                }
                other => other?,
            };
            Ok(source.stream_bulk(0, len).await?)
        };
        Some(
            opened
                .await
                .map(|bytes| self.current = Some((key, bytes, len))),
        )
    }
}

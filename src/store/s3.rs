//! An S3-compatible object store: one multipart upload per upload, created with its first
//! whole part; bytes short of a part are a tail object written when a body ends; the finished
//! upload is one object `PREFIX/<id>`.
//!
//! Only uploaded parts and written tails are durable, so the sink is durable at part
//! boundaries mid-body (`durable_every`) and at the body's end (`finish`). The parts so far
//! and the tail's length travel in the committed state, so any process can carry on. A tail
//! is named after the number of parts before it and its own length (`<id>.tail/<n>-<len>`),
//! so no write ever changes a tail a committed state may name: not a longer one written past
//! the last commit, and not a shorter one written by a request that lost its claim to the
//! upload while another instance committed more (states from before this naming name their
//! tail `<id>.tail/<n>`, and are still read). A tail a later state no longer names is removed
//! by the next append, once a committed state says so.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::part_copy::{self, Endpoint};
use super::{ByteStream, Copied, Result, Sink, Source, Space, Store, StoreError};
use crate::metrics::{Outcome, StoreMetrics, StoreOp};

/// Where the bytes go and how they are cut.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub part_size: u64,
}

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Arc<AmazonS3>,
    prefix: String,
    part_size: u64,
    metrics: Arc<StoreMetrics>,
    /// For the one request object_store does not make: UploadPartCopy.
    endpoint: Arc<Endpoint>,
    http: reqwest13::Client,
}

/// What is committed beside `received`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Multipart {
    /// The multipart upload, once the first part went up.
    upload: Option<String>,
    /// The ETags of the parts so far, in order; each holds `part_size` bytes.
    parts: Vec<String>,
    part_size: u64,
    /// Bytes after the last part, in the tail object.
    tail: u64,
    /// The tail after this many parts (named the old way), which a later part took in. It
    /// stays in the store until the next append removes it: only a committed state can say
    /// that nothing will read it again, and a tail per part would keep most of a long upload
    /// twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    superseded: Option<usize>,
    /// The tail is named `<parts>-<tail>` (else `<parts>`, as before that naming).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    sized_tails: bool,
    /// A tail (by its name) that the committed state before this one named and this one does
    /// not: removed by the next append.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    superseded_tail: Option<String>,
    /// Each part's length, where they differ (parts copied from other uploads); else every
    /// part holds `part_size` bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sizes: Vec<u64>,
}

impl Multipart {
    fn read(state: Option<&[u8]>, part_size: u64) -> Result<Multipart> {
        match state {
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| StoreError::new("read", "the store state", io::Error::other(e))),
            None => Ok(Multipart {
                part_size,
                ..Multipart::default()
            }),
        }
    }

    /// The offset where the parts end and the tail begins.
    fn base(&self) -> u64 {
        match self.sizes.is_empty() {
            true => self.parts.len() as u64 * self.part_size,
            false => self.sizes.iter().sum(),
        }
    }

    /// The name (under `<id>.tail/`) of the tail this state reads, if it has one.
    fn tail_name(&self) -> Option<String> {
        match (self.tail, self.sized_tails) {
            (0, _) => None,
            (len, true) => Some(format!("{}-{len}", self.parts.len())),
            (_, false) => Some(self.parts.len().to_string()),
        }
    }
}

/// The store's answer as an error. Network failures and errors on the store's side (what
/// object_store reports as generic, after its retries) mean the store is unavailable.
fn failed(action: &'static str, key: &Path) -> impl FnOnce(object_store::Error) -> StoreError {
    let key = key.to_string();
    move |e| match e {
        object_store::Error::Generic { .. } => {
            StoreError::unavailable(action, key, io::Error::other(e))
        }
        e @ object_store::Error::NotFound { .. } => {
            StoreError::new(action, key, io::Error::new(io::ErrorKind::NotFound, e))
        }
        e => StoreError::new(action, key, io::Error::other(e)),
    }
}

/// How a request ended, in the terms `failed` uses.
fn outcome<T>(result: &object_store::Result<T>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(object_store::Error::NotFound { .. }) => Outcome::NotFound,
        Err(object_store::Error::Generic { .. }) => Outcome::Unavailable,
        Err(_) => Outcome::Error,
    }
}

/// Whether S3's rules let these parts be copied into one multipart upload: every part before
/// the last at least the smallest part, and not too many ranges in all.
fn copyable(parts: &[(String, u64)]) -> bool {
    let (last, before) = parts.split_last().map_or((0, &[][..]), |(l, b)| (l.1, b));
    let copies: usize = parts
        .iter()
        .map(|(_, len)| part_copy::ranges(*len).len())
        .sum();
    last > 0
        && before.iter().all(|(_, len)| *len >= part_copy::MIN_PART)
        && copies as u64 <= MAX_PARTS
}

/// S3 takes at most this many parts per object.
const MAX_PARTS: u64 = 10_000;

/// The part size for an upload: the configured one, or for a known size too large for that,
/// the smallest whole MiB that fits the whole in `MAX_PARTS` parts. Fixed at the first part
/// (it travels in the state): a deferred size keeps the configured one.
fn part_size_for(size: Option<u64>, configured: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let needed = size.map_or(0, |size| size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB);
    configured.max(needed).min(max_part(configured))
}

/// The largest part an append holds in memory: a part is buffered whole, so a client's
/// declared size must not choose it freely.
fn max_part(configured: u64) -> u64 {
    configured.max(64 << 20)
}

/// A few quick retries: a store that stays down is reported (503) within a second or so,
/// rather than holding the request for minutes.
fn retries() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(10),
        ..RetryConfig::default()
    }
}

impl S3Store {
    /// The largest upload this store takes: `MAX_PARTS` parts of the largest part size.
    pub fn max_upload_size(&self) -> u64 {
        MAX_PARTS.saturating_mul(max_part(self.part_size))
    }

    /// Credentials come from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    pub fn open(config: &S3Config) -> Result<S3Store> {
        let mut builder = AmazonS3Builder::from_env()
            .with_retry(retries())
            .with_bucket_name(&config.bucket)
            .with_region(&config.region);
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false);
        }
        let client = builder
            .build()
            .map_err(|e| StoreError::new("configure", &config.bucket, io::Error::other(e)))?;
        let endpoint = Endpoint {
            endpoint: config.endpoint.clone(),
            bucket: config.bucket.clone(),
            region: config.region.clone(),
        };
        let http = reqwest13::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| StoreError::new("configure", &config.bucket, io::Error::other(e)))?;
        Ok(S3Store {
            client: Arc::new(client),
            prefix: config.prefix.trim_matches('/').to_owned(),
            part_size: config.part_size,
            metrics: Arc::default(),
            endpoint: Arc::new(endpoint),
            http,
        })
    }

    /// What /metrics shows of this store's requests.
    pub fn metrics(&self) -> Arc<StoreMetrics> {
        self.metrics.clone()
    }

    /// Sends one request, counted by operation and outcome and timed; `payload` is how many
    /// bytes it carries.
    async fn metered<T>(
        &self,
        op: StoreOp,
        payload: usize,
        request: impl Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        let started = Instant::now();
        let result = request.await;
        let took = started.elapsed();
        self.metrics
            .observe(op, outcome(&result), took, payload as u64);
        result
    }

    fn key(&self, name: &str) -> Path {
        match self.prefix.as_str() {
            "" => Path::from(name),
            prefix => Path::from(format!("{prefix}/{name}")),
        }
    }

    /// Tails live under a "directory" of their own, so they can be listed by prefix.
    fn tail_key(&self, id: &str, name: &str) -> Path {
        self.key(&format!("{id}.tail/{name}"))
    }

    async fn read_tail(&self, id: &str, state: &Multipart) -> Result<Vec<u8>> {
        let Some(name) = state.tail_name() else {
            return Ok(Vec::new());
        };
        let key = self.tail_key(id, &name);
        let get = self.client.get_range(&key, 0..state.tail);
        let bytes = self
            .metered(StoreOp::GetTail, 0, get)
            .await
            .map_err(failed("read", &key))?;
        Ok(bytes.to_vec())
    }

    /// Removes every tail the upload ever wrote.
    async fn remove_tails(&self, id: &str) -> Result<()> {
        let prefix = self.key(&format!("{id}.tail"));
        let list = self.client.list(Some(&prefix));
        let tails: Vec<_> = self
            .metered(
                StoreOp::List,
                0,
                list.map_ok(|meta| meta.location).try_collect(),
            )
            .await
            .map_err(failed("list", &prefix))?;
        for tail in tails {
            self.delete(&tail).await?;
        }
        Ok(())
    }

    /// Removes a tail (by name) which `state` (committed: read back from the metadata) no
    /// longer names. A failure leaves it to `complete` or `remove`, which remove every tail:
    /// it must not fail an append that can otherwise go on.
    async fn remove_superseded(&self, id: &str, state: &Multipart, name: &str) {
        // Never the tail that the state reads.
        if state.tail_name().as_deref() == Some(name) {
            return;
        }
        let key = self.tail_key(id, name);
        if let Err(e) = self.delete(&key).await {
            warn!(upload = id, error = %e, "removing a superseded tail failed; left for the end");
        }
    }

    /// The final's multipart upload made of the parts' objects, copied by the store; `None`
    /// when S3's rules forbid it (a part short of its minimum before the last, or too many).
    /// A last part shorter than that is uploaded again (some stores copy no range so short).
    async fn copy_parts_now(&self, id: &str, parts: &[(String, u64)]) -> Result<Option<Multipart>> {
        if !copyable(parts) {
            return Ok(None);
        }
        let key = self.key(id);
        let create = self.client.create_multipart(&key);
        let upload = self
            .metered(StoreOp::CreateMultipart, 0, create)
            .await
            .map_err(failed("start", &key))?;
        let mut state = Multipart {
            upload: Some(upload.clone()),
            part_size: self.part_size,
            sized_tails: true,
            ..Multipart::default()
        };
        if let Err(e) = self.copy_each(&key, &upload, parts, &mut state).await {
            let abort = self.client.abort_multipart(&key, &upload);
            let _ = self.metered(StoreOp::AbortMultipart, 0, abort).await;
            if e.is_unavailable() {
                return Err(e);
            }
            // A store that refuses the copy itself (it does not offer it, or not for these
            // objects) still takes the bytes sent: the caller streams them.
            warn!(upload = id, error = %e, "the store refused to copy the parts; they are sent instead");
            return Ok(None);
        }
        Ok(Some(state))
    }

    async fn copy_each(
        &self,
        key: &Path,
        upload: &String,
        parts: &[(String, u64)],
        state: &mut Multipart,
    ) -> Result<()> {
        for (part, len) in parts {
            let source = self.key(part);
            if *len < part_copy::MIN_PART {
                let get = self.client.get_range(&source, 0..*len);
                let bytes = self
                    .metered(StoreOp::GetObject, 0, get)
                    .await
                    .map_err(failed("read", &source))?;
                let put =
                    self.client
                        .put_part(key, upload, state.parts.len(), PutPayload::from(bytes));
                let part = self
                    .metered(StoreOp::PutPart, *len as usize, put)
                    .await
                    .map_err(failed("write a part of", key))?;
                state.parts.push(part.content_id);
                state.sizes.push(*len);
                continue;
            }
            for range in part_copy::ranges(*len) {
                let target = (key, upload.as_str(), state.parts.len() + 1);
                let size = range.end - range.start;
                let copy = part_copy::copy_part(
                    &self.client,
                    &self.http,
                    &self.endpoint,
                    target,
                    (&source, range),
                );
                state.parts.push(self.metered_copy(copy).await?);
                state.sizes.push(size);
            }
        }
        Ok(())
    }

    async fn metered_copy(&self, copy: impl Future<Output = Result<String>>) -> Result<String> {
        let started = Instant::now();
        let result = copy.await;
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(e) if e.is_unavailable() => Outcome::Unavailable,
            Err(_) => Outcome::Error,
        };
        self.metrics
            .observe(StoreOp::CopyPart, outcome, started.elapsed(), 0);
        result
    }

    async fn delete(&self, key: &Path) -> Result<()> {
        match self
            .metered(StoreOp::Delete, 0, self.client.delete(key))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(failed("delete", key)(e)),
        }
    }
}

#[async_trait::async_trait]
impl Store for S3Store {
    /// Nothing to make yet: the multipart upload starts with the first whole part.
    async fn create(&self, _id: &str) -> Result<()> {
        Ok(())
    }

    /// The committed state is the truth: what it names was durable before it was committed.
    async fn recover(&self, _id: &str, received: u64, _state: Option<&[u8]>) -> Result<u64> {
        Ok(received)
    }

    async fn open_append(
        &self,
        id: &str,
        offset: u64,
        size: Option<u64>,
        state: Option<&[u8]>,
    ) -> Result<Box<dyn Sink>> {
        let mut state = Multipart::read(state, part_size_for(size, self.part_size))?;
        if state.base() + state.tail != offset {
            let e = io::Error::other(format!(
                "the store state ends at {}, not at {offset}",
                state.base() + state.tail
            ));
            return Err(StoreError::new("open", self.key(id), e));
        }
        if let Some(parts) = state.superseded.take() {
            // The old naming: only ever a tail after fewer parts than the state has.
            if parts < state.parts.len() {
                self.remove_superseded(id, &state, &parts.to_string()).await;
            }
        }
        if let Some(name) = state.superseded_tail.take() {
            self.remove_superseded(id, &state, &name).await;
        }
        let tail = self.read_tail(id, &state).await?;
        Ok(Box::new(PartSink::new(self.clone(), id, state, tail)))
    }

    async fn complete(&self, id: &str, state: Option<&[u8]>) -> Result<()> {
        let mut state = Multipart::read(state, self.part_size)?;
        let key = self.key(id);
        // Done already by a call that crashed before its commit: only this upload ever writes
        // this key, and it does so last.
        match self.metered(StoreOp::Head, 0, self.client.head(&key)).await {
            Ok(meta) if meta.size == state.base() + state.tail => {
                return self.remove_tails(id).await;
            }
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(failed("look for", &key)(e)),
        }
        let tail = self.read_tail(id, &state).await?;
        match state.upload.clone() {
            None => {
                // Smaller than a part: one plain object.
                let len = tail.len();
                let put = self.client.put(&key, PutPayload::from(tail));
                self.metered(StoreOp::PutObject, len, put)
                    .await
                    .map_err(failed("write", &key))?;
            }
            Some(upload) => {
                if !tail.is_empty() {
                    let (number, len) = (state.parts.len(), tail.len());
                    let put = self
                        .client
                        .put_part(&key, &upload, number, PutPayload::from(tail));
                    let part = self
                        .metered(StoreOp::PutPart, len, put)
                        .await
                        .map_err(failed("write a part of", &key))?;
                    state.parts.push(part.content_id);
                }
                let parts = state
                    .parts
                    .iter()
                    .map(|etag| PartId {
                        content_id: etag.clone(),
                    })
                    .collect();
                let complete = self.client.complete_multipart(&key, &upload, parts);
                self.metered(StoreOp::CompleteMultipart, 0, complete)
                    .await
                    .map_err(failed("complete", &key))?;
            }
        }
        self.remove_tails(id).await
    }

    fn copies_parts(&self, parts: &[(String, u64)]) -> bool {
        copyable(parts)
    }

    async fn copy_parts(&self, id: &str, parts: &[(String, u64)]) -> Result<Copied> {
        match self.copy_parts_now(id, parts).await? {
            Some(state) => {
                let bytes = serde_json::to_vec(&state).map_err(|e| {
                    StoreError::new("write", "the store state", io::Error::other(e))
                })?;
                Ok(Copied::Done(Some(bytes)))
            }
            None => Ok(Copied::Not),
        }
    }

    async fn open_read(&self, id: &str) -> Result<Box<dyn Source>> {
        let key = self.key(id);
        let meta = self
            .metered(StoreOp::Head, 0, self.client.head(&key))
            .await
            .map_err(failed("open", &key))?;
        Ok(Box::new(Object {
            store: self.clone(),
            key,
            len: meta.size,
        }))
    }

    async fn remove(&self, id: &str, state: Option<&[u8]>) -> Result<()> {
        let key = self.key(id);
        let state = Multipart::read(state, self.part_size)?;
        if let Some(upload) = &state.upload {
            let abort = self.client.abort_multipart(&key, upload);
            match self.metered(StoreOp::AbortMultipart, 0, abort).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(failed("abort", &key)(e)),
            }
        }
        // A crash here leaves a removal whose upload is aborted already: the retry must take
        // "no such upload" as done. (Garage drops an unfinished upload under a key that is
        // deleted, so only a stop here lets a test see the abort itself.)
        crate::fault::point("s3-remove-after-abort");
        self.remove_tails(id).await?;
        self.delete(&key).await
    }

    async fn space(&self) -> Result<Option<Space>> {
        Ok(None)
    }

    async fn check_writable(&self) -> Result<()> {
        let probe = self.key(&format!(".healthz-{}", uuid::Uuid::new_v4()));
        let put = self.client.put(&probe, PutPayload::from_static(b"ok"));
        self.metered(StoreOp::PutObject, 0, put)
            .await
            .map_err(failed("write", &probe))?;
        self.delete(&probe).await
    }
}

/// One append's writer: whole parts go up as they fill; the rest stays in memory (at most a
/// part, in a buffer sized for one so it never grows by doubling) until the body ends and it
/// is written as the tail. A full buffer becomes the part itself, without a copy.
struct PartSink {
    store: S3Store,
    handle: tokio::runtime::Handle,
    id: String,
    state: Multipart,
    /// Bytes after the last part: the committed tail, then what this body added.
    buffer: Bytes,
    /// The buffer while it is written to (`buffer` holds it once it was sent as a tail).
    filling: Vec<u8>,
    /// How many bytes after the last part are durable in a tail object.
    durable_tail: u64,
    /// The committed tail this append started from (the number of parts before it), if any.
    committed_tail: Option<String>,
}

impl PartSink {
    fn new(store: S3Store, id: &str, state: Multipart, tail: Vec<u8>) -> PartSink {
        let mut filling = Vec::with_capacity(state.part_size as usize);
        filling.extend_from_slice(&tail);
        PartSink {
            store,
            handle: tokio::runtime::Handle::current(),
            id: id.to_owned(),
            durable_tail: state.tail,
            committed_tail: state.tail_name(),
            state,
            buffer: Bytes::new(),
            filling,
        }
    }

    /// Bytes after the last part.
    fn pending(&self) -> u64 {
        (self.buffer.len() + self.filling.len()) as u64
    }

    /// Sends the full buffer as the next part (blocking: the sink runs on a blocking thread).
    fn put_part(&mut self) -> Result<()> {
        let part = Bytes::from(std::mem::take(&mut self.filling));
        let key = self.store.key(&self.id);
        let (store, client) = (&self.store, &self.store.client);
        let upload = match self.state.upload.clone() {
            Some(upload) => upload,
            None => {
                let create =
                    store.metered(StoreOp::CreateMultipart, 0, client.create_multipart(&key));
                let upload = self
                    .handle
                    .block_on(create)
                    .map_err(failed("start a multipart upload of", &key))?;
                self.state.upload = Some(upload.clone());
                upload
            }
        };
        let (number, len) = (self.state.parts.len(), part.len());
        let put = client.put_part(&key, &upload, number, PutPayload::from(part.clone()));
        let put = store.metered(StoreOp::PutPart, len, put);
        let sent = self
            .handle
            .block_on(put)
            .map_err(failed("write a part of", &key))?;
        self.state.parts.push(sent.content_id);
        self.filling = reuse(part, self.state.part_size);
        // The tail's bytes are in this part now.
        self.durable_tail = 0;
        Ok(())
    }
}

/// The buffer of a part the store has taken, emptied for the next one; a new one if the
/// request kept a reference. Freed part-sized buffers linger in the allocator (and in RSS),
/// so an append that reuses its one buffer stays at one part of memory.
fn reuse(part: Bytes, part_size: u64) -> Vec<u8> {
    match part.try_into_mut() {
        Ok(buffer) => {
            let mut buffer = Vec::from(buffer);
            buffer.clear();
            buffer
        }
        Err(_) => Vec::with_capacity(part_size as usize),
    }
}

impl Sink for PartSink {
    fn position(&self) -> u64 {
        self.state.base() + self.pending()
    }

    fn write(&mut self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            let room = self.state.part_size as usize - self.filling.len();
            let n = room.min(buf.len());
            self.filling.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if self.filling.len() as u64 == self.state.part_size {
                self.put_part()?;
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<u64> {
        Ok(self.state.base() + self.durable_tail)
    }

    /// Not written to afterwards: the buffer is handed to the request as it is.
    fn finish(&mut self) -> Result<()> {
        if self.pending() == self.durable_tail {
            return Ok(());
        }
        self.buffer = Bytes::from(std::mem::take(&mut self.filling));
        let name = format!("{}-{}", self.state.parts.len(), self.pending());
        let key = self.store.tail_key(&self.id, &name);
        let tail = PutPayload::from(self.buffer.clone());
        let put = self.store.client.put(&key, tail);
        let put = self.store.metered(StoreOp::PutTail, self.buffer.len(), put);
        self.handle.block_on(put).map_err(failed("write", &key))?;
        self.durable_tail = self.pending();
        self.state.sized_tails = true;
        Ok(())
    }

    /// Nothing to undo: what is not in the committed state is never read.
    fn truncate_to(&mut self, _len: u64) -> Result<()> {
        Ok(())
    }

    fn state(&self) -> Option<Vec<u8>> {
        let mut state = Multipart {
            tail: self.durable_tail,
            superseded: None,
            ..self.state.clone()
        };
        // Once this state names another tail (parts took the committed one in, or a longer
        // one was written), committing it supersedes the one the append started from.
        let named = state.tail_name();
        state.superseded_tail = self
            .committed_tail
            .clone()
            .filter(|committed| Some(committed) != named.as_ref());
        serde_json::to_vec(&state).ok()
    }

    fn durable_every(&self) -> Option<u64> {
        Some(self.state.part_size)
    }
}

/// A finished object, read with ranged GETs.
struct Object {
    store: S3Store,
    key: Path,
    len: u64,
}

#[async_trait::async_trait]
impl Source for Object {
    fn len(&self) -> u64 {
        self.len
    }

    async fn stream(self: Box<Self>, start: u64, count: u64) -> Result<ByteStream> {
        if count == 0 {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(start..start + count)),
            ..GetOptions::default()
        };
        let get = self.store.client.get_opts(&self.key, options);
        // Timed to the answer's head: the body streams at the client's pace.
        let got = self
            .store
            .metered(StoreOp::GetObject, 0, get)
            .await
            .map_err(failed("read", &self.key))?;
        Ok(Box::pin(got.into_stream().map_err(io::Error::other)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_a_known_size_fits_the_part_limit() {
        let eight = 8 << 20;
        assert_eq!(part_size_for(None, eight), eight);
        assert_eq!(part_size_for(Some(1 << 30), eight), eight);
        // 100 GiB in 8 MiB parts would be 12,800 parts.
        let big = 100u64 << 30;
        let part = part_size_for(Some(big), eight);
        assert!(part > eight && part % (1 << 20) == 0);
        assert!(big.div_ceil(part) <= MAX_PARTS, "{part}");
        assert!(
            big.div_ceil(part - (1 << 20)) > MAX_PARTS,
            "the smallest such size"
        );
        // A declared size past what the store takes cannot choose a part of any size.
        assert_eq!(part_size_for(Some(u64::MAX / 2), eight), 64 << 20);
    }

    #[test]
    fn a_state_committed_before_superseded_tails_were_recorded_still_reads() {
        let old = br#"{"upload":"u","parts":["e1"],"part_size":5242880,"tail":7}"#;
        let state = Multipart::read(Some(old), 1).expect("an older state");
        assert_eq!(
            (state.parts.len(), state.tail, state.superseded),
            (1, 7, None)
        );
        let written = serde_json::to_string(&state).unwrap();
        assert!(!written.contains("superseded"), "{written}");
        assert_eq!(
            state.tail_name().as_deref(),
            Some("1"),
            "the old naming is still read"
        );
    }

    #[test]
    fn tails_are_named_by_parts_and_length() {
        let mut state = Multipart {
            parts: vec!["e1".into(), "e2".into()],
            tail: 4096,
            sized_tails: true,
            ..Multipart::default()
        };
        assert_eq!(state.tail_name().as_deref(), Some("2-4096"));
        state.tail = 0;
        assert_eq!(state.tail_name(), None);
    }
}

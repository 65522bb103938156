//! The uploaded bytes, behind one trait: create, append, read and remove an upload's bytes.
//!
//! [`FsStore`] keeps them in a local directory (the default); [`S3Store`] in an S3-compatible
//! object store, durable only at part boundaries and at a body's end. A store never sees an HTTP type, a database row or a protocol name: it
//! knows an upload by its id and its bytes by their offsets.

mod bulk_read;
pub mod dirs;
mod fs;
mod part_copy;
mod s3;
mod writer;

use std::io;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

pub use fs::FsStore;
pub use s3::{S3Config, S3Store};

#[derive(Debug, thiserror::Error)]
#[error("{action} {target}: {source}")]
pub struct StoreError {
    action: &'static str,
    /// The store could not be reached or failed on its side; the same request may work later.
    unavailable: bool,
    /// What the action was on (a path, an object key); for the logs, never for clients.
    target: String,
    #[source]
    source: io::Error,
}

impl StoreError {
    pub fn new(action: &'static str, target: impl std::fmt::Display, source: io::Error) -> Self {
        StoreError {
            action,
            unavailable: false,
            target: target.to_string(),
            source,
        }
    }

    /// A failure of the store itself (unreachable, or an error on its side), not of the request.
    pub fn unavailable(
        action: &'static str,
        target: impl std::fmt::Display,
        source: io::Error,
    ) -> Self {
        StoreError {
            unavailable: true,
            ..StoreError::new(action, target, source)
        }
    }

    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }

    /// The bytes are not there (removed meanwhile, say).
    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }

    /// True when the store is full or over quota, which a client may retry later.
    pub fn is_out_of_space(&self) -> bool {
        matches!(
            self.source.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT)
        )
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What a store has room for. Some file systems (btrfs, some network ones) report no inodes.
#[derive(Debug, Clone, Copy)]
pub struct Space {
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub free_inodes: u64,
    pub total_inodes: u64,
}

/// What [`Store::copy_parts`] did.
pub enum Copied {
    /// The store cannot copy these: the caller streams them.
    Not,
    /// Copied, with the state to commit and complete with.
    Done(Option<Vec<u8>>),
}

/// Bytes read back from a store.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Makes durable room for a new upload with no bytes yet.
    async fn create(&self, id: &str) -> Result<()>;

    /// After an unclean stop: makes the stored bytes agree with the committed `received` and
    /// `state` (bytes past it were never acknowledged and are dropped; bytes missing from
    /// place are recreated empty). Returns how many bytes are held, at most `received`.
    async fn recover(&self, id: &str, received: u64, state: Option<&[u8]>) -> Result<u64>;

    /// Opens the upload for appending at `offset`, its committed length, with the state
    /// committed beside it. `size` is the upload's size where known (an object store sizes
    /// its parts so the whole fits its part limit).
    async fn open_append(
        &self,
        id: &str,
        offset: u64,
        size: Option<u64>,
        state: Option<&[u8]>,
    ) -> Result<Box<dyn Sink>>;

    /// Every byte is in: makes the finished upload one readable whole (an object store
    /// completes its multipart upload). `state` is the last one committed.
    async fn complete(&self, id: &str, state: Option<&[u8]>) -> Result<()>;

    /// Writes `parts` (other uploads' keys with their lengths), in order, as the whole of
    /// upload `id`, durably, without the bytes passing through this process, where the store
    /// can (then `complete` makes them one whole, given the state returned).
    async fn copy_parts(&self, id: &str, parts: &[(String, u64)]) -> Result<Copied> {
        let _ = (id, parts);
        Ok(Copied::Not)
    }

    /// Whether `copy_parts` would copy these parts itself (so the caller may read them for
    /// their digest meanwhile); it may still decline.
    fn copies_parts(&self, parts: &[(String, u64)]) -> bool {
        let _ = parts;
        false
    }

    /// Opens the upload's bytes for reading. What is opened stays readable even if the
    /// upload is removed meanwhile.
    async fn open_read(&self, id: &str) -> Result<Box<dyn Source>>;

    /// Removes the upload's bytes durably; bytes already gone are not an error.
    async fn remove(&self, id: &str, state: Option<&[u8]>) -> Result<()>;

    /// Room left, where the store has a notion of it (a disk does; an object store may not).
    async fn space(&self) -> Result<Option<Space>>;

    /// Checks the store takes writes now.
    async fn check_writable(&self) -> Result<()>;
}

/// Where one append writes. Every method blocks: the engine calls them on blocking threads,
/// one batch at a time, and never from two threads at once.
pub trait Sink: Send {
    /// Where the next byte goes.
    fn position(&self) -> u64;

    fn write(&mut self, buf: &[u8]) -> Result<()>;

    /// Makes durable what can be made durable while the body still streams; returns the
    /// offset up to which bytes are durable. A disk syncs everything written; an object store
    /// holds its uploaded parts.
    fn sync(&mut self) -> Result<u64>;

    /// A write job ended: lets go of memory held only for writing (bytes staged for a later
    /// write are written now, durable at the next `sync` as before).
    fn pause(&mut self) -> Result<()> {
        Ok(())
    }

    /// The body has ended: makes every byte written durable (an object store writes the
    /// bytes short of a whole part as a tail).
    fn finish(&mut self) -> Result<()> {
        self.sync().map(drop)
    }

    /// Forgets everything past `len` (a chunk that failed its checksum, or a failed write).
    /// The sink is not written to afterwards.
    fn truncate_to(&mut self, len: u64) -> Result<()>;

    /// What must be committed with the durable offset so the next append can carry on.
    fn state(&self) -> Option<Vec<u8>> {
        None
    }

    /// Where mid-body durability can land: every this many bytes of the upload (an object
    /// store's part size). `None`: anywhere, whenever `sync` is called.
    fn durable_every(&self) -> Option<u64> {
        None
    }
}

/// An upload's bytes opened for reading, with their length.
#[async_trait::async_trait]
pub trait Source: Send {
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `count` bytes from `start` as a stream.
    async fn stream(self: Box<Self>, start: u64, count: u64) -> Result<ByteStream>;

    /// `stream`, for a reader that takes the bytes as fast as they come (not a client's
    /// download, which may hold what it was handed): larger reads where that is cheaper.
    async fn stream_bulk(self: Box<Self>, start: u64, count: u64) -> Result<ByteStream> {
        self.stream(start, count).await
    }
}

//! Reading a whole file as fast as the disk gives it (assembling an upload from its parts):
//! direct reads into a few aligned buffers that go round, on one blocking thread. Through
//! the page cache, copying every byte out of it (into freshly faulted memory) cost the
//! assembly more CPU than hashing; a direct read lands in the buffer itself.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc;

use bytes::Bytes;

use super::writer::{open_direct_read, AlignedBuf};
use super::ByteStream;

/// Each read, and how many may wait for the reader (more are made while the reader holds
/// some: a batch being hashed and written while the next is read).
const READ: usize = 1 << 20;
const BUFFERS: usize = 8;

/// `count` bytes of `path` from `start` (aligned for direct reads, or read through the page
/// cache where the file system refuses direct I/O), or `None` to read the usual way.
pub fn stream(file: &File, path: PathBuf, start: u64, count: u64) -> Option<ByteStream> {
    if start % 4096 != 0 {
        return None;
    }
    let buffered = file.try_clone().ok()?;
    let mut direct = open_direct_read(&path);
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(BUFFERS);
    let (give_back, pool) = mpsc::channel::<AlignedBuf>();
    tokio::task::spawn_blocking(move || {
        let mut at = start;
        let end = start.saturating_add(count);
        while at < end {
            // A new buffer when none came back: the channel bounds how far ahead this reads,
            // and waiting here for a buffer the reader still holds would never end.
            let Some(mut buf) = pool.try_recv().ok().or_else(|| AlignedBuf::zeroed(READ)) else {
                let _ = tx.blocking_send(Err(io::ErrorKind::OutOfMemory.into()));
                return;
            };
            let read = match buf.read_from(direct.as_ref().unwrap_or(&buffered), at) {
                // A file system that takes the direct open but not the read, or an offset
                // no longer aligned after a short read: the page cache from here on.
                Err(e) if direct.is_some() && e.raw_os_error() == Some(libc::EINVAL) => {
                    direct = None;
                    continue;
                }
                Ok(0) => break,
                Ok(n) => n.min(usize::try_from(end - at).unwrap_or(usize::MAX)),
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            at += read as u64;
            let owner = Pooled {
                buf: Some(buf),
                len: read,
                back: give_back.clone(),
            };
            if tx.blocking_send(Ok(Bytes::from_owner(owner))).is_err() {
                return;
            }
        }
    });
    Some(Box::pin(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    })))
}

/// A buffer lent to a `Bytes`: back in the pool once the last clone is dropped.
struct Pooled {
    buf: Option<AlignedBuf>,
    len: usize,
    back: mpsc::Sender<AlignedBuf>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], |b| &b.as_slice()[..self.len])
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            let _ = self.back.send(buf);
        }
    }
}

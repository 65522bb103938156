//! The file being uploaded, read on blocking threads: chunks with their digests (the next one
//! read while the current one is sent, into a recycled buffer). The whole file's SHA-256 is
//! taken from the same reads, in file order: it is a digest of the file, so it does not matter
//! whether the server took a chunk the first time; each byte is hashed once.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use super::api::{ClientError, Result};

/// One chunk and its SHA-256 (for `Content-Digest` / `Upload-Checksum`), unless chunks go
/// without.
#[derive(Default)]
pub struct Piece {
    pub bytes: Bytes,
    pub sha256: Option<[u8; 32]>,
}

pub struct LocalFile {
    path: String,
    size: u64,
    file: Arc<File>,
    /// A chunk buffer the server is done with, for the next read.
    spare: Option<BytesMut>,
    whole: Arc<Mutex<Whole>>,
}

/// The SHA-256 of the file's first `hashed_to` bytes.
#[derive(Default)]
struct Whole {
    hasher: Sha256,
    hashed_to: u64,
}

impl Whole {
    /// Hashes what lies between what is hashed and `offset` (a resumed upload's first part).
    fn catch_up(&mut self, file: &File, offset: u64) -> std::io::Result<()> {
        let mut buffer = vec![0u8; 1 << 20];
        while self.hashed_to < offset {
            let len = (offset - self.hashed_to).min(buffer.len() as u64) as usize;
            file.read_exact_at(&mut buffer[..len], self.hashed_to)?;
            self.hasher.update(&buffer[..len]);
            self.hashed_to += len as u64;
        }
        Ok(())
    }

    fn take(&mut self, offset: u64, bytes: &[u8]) {
        if self.hashed_to == offset {
            self.hasher.update(bytes);
            self.hashed_to += bytes.len() as u64;
        }
    }
}

/// A chunk being read.
pub struct Reading(JoinHandle<std::io::Result<Piece>>);

impl LocalFile {
    pub fn open(path: &Path, size: u64) -> Result<LocalFile> {
        let file = File::open(path).map_err(|error| ClientError::File {
            path: path.display().to_string(),
            error,
        })?;
        Ok(LocalFile {
            path: path.display().to_string(),
            size,
            file: Arc::new(file),
            spare: None,
            whole: Arc::default(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Starts reading `len` bytes at `offset`, with their digest if `digest`.
    pub fn read(&mut self, offset: u64, len: u64, digest: bool) -> Reading {
        let file = self.file.clone();
        let whole = self.whole.clone();
        let mut buffer = self.spare.take().unwrap_or_default();
        Reading(tokio::task::spawn_blocking(move || {
            // Reused as it is (only its length set): fresh pages for every chunk cost a fault
            // each, and zeroing them a pass over the bytes.
            buffer.resize(len as usize, 0);
            file.read_exact_at(&mut buffer, offset)?;
            // The two digests of these bytes on two threads: each pass costs about as much as
            // sending them, and the next chunk must be ready when this one has gone.
            let sha256 = std::thread::scope(|scope| {
                let chunk = scope.spawn(|| digest.then(|| Sha256::digest(&buffer).into()));
                let mut whole = lock(&whole);
                let caught_up = whole.catch_up(&file, offset);
                whole.take(offset, &buffer);
                drop(whole);
                let sha256 = chunk
                    .join()
                    .unwrap_or_else(|_| Some(Sha256::digest(&buffer).into()));
                caught_up.map(|()| sha256)
            })?;
            Ok(Piece {
                bytes: buffer.freeze(),
                sha256,
            })
        }))
    }

    /// The chunk, once read.
    pub async fn piece(&self, reading: Reading) -> Result<Piece> {
        let read = reading
            .0
            .await
            .map_err(|e| ClientError::Failed(format!("reading the file failed: {e}")))?;
        read.map_err(|error| ClientError::File {
            path: self.path.clone(),
            error,
        })
    }

    /// Takes back a sent chunk's buffer, if nothing else holds it.
    pub fn recycle(&mut self, piece: Piece) {
        if let Ok(buffer) = piece.bytes.try_into_mut() {
            self.spare = Some(buffer);
        }
    }

    /// The whole file's SHA-256 (hex), reading whatever the chunks did not cover.
    pub async fn digest(&self) -> Result<String> {
        let (file, whole, size) = (self.file.clone(), self.whole.clone(), self.size);
        let digest = tokio::task::spawn_blocking(move || {
            let mut whole = lock(&whole);
            whole.catch_up(&file, size)?;
            Ok(hex::encode(whole.hasher.clone().finalize()))
        })
        .await
        .map_err(|e| ClientError::Failed(format!("hashing the file failed: {e}")))?;
        digest.map_err(|error| ClientError::File {
            path: self.path.clone(),
            error,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

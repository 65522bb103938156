//! The file being uploaded: chunks read from it with their digests, and the whole file's
//! SHA-256 kept up to date beside the sending. Reading and hashing run on blocking threads.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::api::{ClientError, Result};

/// One chunk and its SHA-256 (for `Content-Digest` / `Upload-Checksum`).
#[derive(Default)]
pub struct Piece {
    pub offset: u64,
    pub bytes: Bytes,
    pub sha256: [u8; 32],
}

pub struct LocalFile {
    path: String,
    size: u64,
    /// Moved into each blocking task and back.
    inner: Option<Inner>,
}

struct Inner {
    file: File,
    /// The SHA-256 of the file's first `hashed_to` bytes.
    hasher: Sha256,
    hashed_to: u64,
}

impl LocalFile {
    pub fn open(path: &Path, size: u64) -> Result<LocalFile> {
        let file = File::open(path).map_err(|error| ClientError::File {
            path: path.display().to_string(),
            error,
        })?;
        Ok(LocalFile {
            path: path.display().to_string(),
            size,
            inner: Some(Inner {
                file,
                hasher: Sha256::new(),
                hashed_to: 0,
            }),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// `len` bytes at `offset`, with their digest.
    pub async fn piece(&mut self, offset: u64, len: u64) -> Result<Piece> {
        self.blocking(move |inner| {
            let mut bytes = vec![0u8; len as usize];
            inner.file.read_exact_at(&mut bytes, offset)?;
            let sha256 = Sha256::digest(&bytes).into();
            Ok(Piece {
                offset,
                bytes: bytes.into(),
                sha256,
            })
        })
        .await
    }

    /// The server took `piece`: the whole-file hash goes on with it (if it follows on).
    pub async fn landed(&mut self, piece: &Piece) {
        let bytes = piece.bytes.clone();
        let offset = piece.offset;
        let _ = self
            .blocking(move |inner| {
                if inner.hashed_to == offset {
                    inner.hasher.update(&bytes);
                    inner.hashed_to += bytes.len() as u64;
                }
                Ok(())
            })
            .await;
    }

    /// The SHA-256 (hex) of the first `end` bytes, reading what the hash has not seen yet
    /// (after a resume, or a chunk whose answer was lost).
    pub async fn digest_to(&mut self, end: u64) -> Result<String> {
        self.blocking(move |inner| {
            if inner.hashed_to > end {
                inner.hasher = Sha256::new();
                inner.hashed_to = 0;
            }
            let mut buffer = vec![0u8; 1 << 20];
            while inner.hashed_to < end {
                let len = (end - inner.hashed_to).min(buffer.len() as u64) as usize;
                inner
                    .file
                    .read_exact_at(&mut buffer[..len], inner.hashed_to)?;
                inner.hasher.update(&buffer[..len]);
                inner.hashed_to += len as u64;
            }
            Ok(hex::encode(inner.hasher.clone().finalize()))
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut Inner) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = self.path.clone();
        let io = |error| ClientError::File { path, error };
        let mut inner = self
            .inner
            .take()
            .ok_or_else(|| ClientError::Failed("the file was lost by a failed read".into()))?;
        let (inner, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = work(&mut inner);
            (inner, outcome)
        })
        .await
        .map_err(|e| ClientError::Failed(format!("reading the file failed: {e}")))?;
        self.inner = Some(inner);
        outcome.map_err(io)
    }
}

//! What lets a second run carry on where the first stopped: for each file sent to a server, the
//! upload it went to and what the file looked like then. Kept in the user's cache directory
//! (`$XDG_CACHE_HOME/resumable/uploads/`, else `~/.cache/resumable/uploads/`), one small JSON
//! file per file, written before the first byte is sent.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::api::{ClientError, Result};

/// The bytes at each end of a file that its fingerprint covers.
const EDGE: u64 = 64 * 1024;

/// A file as it was when its upload began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub size: u64,
    pub mtime_ns: u128,
    /// SHA-256 of the first and last 64 KiB: a file rewritten in place with the same size
    /// and a restored mtime still shows.
    pub edges: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub url: String,
    pub seen: Seen,
}

/// One file's entry on one server.
pub struct Slot {
    path: PathBuf,
}

impl Seen {
    pub fn of(path: &Path) -> Result<Seen> {
        let io = |error| ClientError::File {
            path: path.display().to_string(),
            error,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(ClientError::Usage(format!(
                "{}: not a regular file",
                path.display()
            )));
        }
        let size = meta.len();
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let mut hasher = Sha256::new();
        let mut edge = vec![0u8; EDGE.min(size) as usize];
        file.read_exact(&mut edge).map_err(io)?;
        hasher.update(&edge);
        if size > EDGE {
            let start = size.saturating_sub(EDGE).max(EDGE);
            let mut tail = Vec::with_capacity(EDGE as usize);
            file.seek(SeekFrom::Start(start)).map_err(io)?;
            file.take(EDGE).read_to_end(&mut tail).map_err(io)?;
            hasher.update(&tail);
        }
        Ok(Seen {
            size,
            mtime_ns,
            edges: hex::encode(hasher.finalize()),
        })
    }
}

impl Slot {
    /// The entry of `file` (made absolute) uploaded to `server` with `protocol`.
    pub fn of(server: &str, protocol: &str, file: &Path) -> Result<Slot> {
        let absolute = std::path::absolute(file).map_err(|error| ClientError::File {
            path: file.display().to_string(),
            error,
        })?;
        let key = Sha256::new()
            .chain_update(server.trim_end_matches('/'))
            .chain_update([0])
            .chain_update(protocol)
            .chain_update([0])
            .chain_update(absolute.as_os_str().as_encoded_bytes())
            .finalize();
        Ok(Slot {
            path: cache_dir()?.join(format!("{}.json", hex::encode(key))),
        })
    }

    /// The entry, if one was kept and can be read.
    pub fn load(&self) -> Option<Entry> {
        let text = std::fs::read(&self.path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes the entry whole (a temporary file renamed over it).
    pub fn save(&self, entry: &Entry) -> Result<()> {
        let io = |error| ClientError::File {
            path: self.path.display().to_string(),
            error,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let temporary = self.path.with_extension("tmp");
        let text = serde_json::to_vec(entry).unwrap_or_default();
        // Durable before the first byte is sent: a power cut must not lose where it went.
        let mut file = std::fs::File::create(&temporary).map_err(io)?;
        std::io::Write::write_all(&mut file, &text).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&temporary, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }

    pub fn drop_entry(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn cache_dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .ok_or_else(|| {
            ClientError::Usage(
                "neither XDG_CACHE_HOME nor HOME is set: nowhere to keep resume state".into(),
            )
        })?;
    Ok(base.join("resumable").join("uploads"))
}

//! The uploaded bytes: one file per upload under `<data-dir>/files`.
//!
//! Every function here blocks; the engine calls them from blocking threads.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct StorageError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl StorageError {
    fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        StorageError {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// True when the disk is full or over quota, which a client may retry later.
    pub fn is_out_of_space(&self) -> bool {
        matches!(
            self.source.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT)
        )
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

#[derive(Debug, Clone)]
pub struct Storage {
    dir: PathBuf,
}

impl Storage {
    pub fn open(data_dir: &Path) -> Result<Storage> {
        let dir = data_dir.join("files");
        fs::create_dir_all(&dir).map_err(|e| StorageError::new("create", &dir, e))?;
        Ok(Storage { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Creates the empty file and makes its directory entry durable.
    pub fn create(&self, id: &str) -> Result<()> {
        let path = self.path(id);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StorageError::new("create", &path, e))?;
        file.sync_all()
            .map_err(|e| StorageError::new("sync", &path, e))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::new("sync", &self.dir, e))
    }

    /// The file's length, or `None` when it does not exist.
    pub fn len(&self, id: &str) -> Result<Option<u64>> {
        let path = self.path(id);
        match fs::metadata(&path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::new("stat", &path, e)),
        }
    }

    /// Cuts (or extends with zeros, which callers never ask for) the file to `len`, durably.
    pub fn truncate(&self, id: &str, len: u64) -> Result<()> {
        let path = self.path(id);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::new("open", &path, e))?;
        file.set_len(len)
            .and_then(|_| file.sync_all())
            .map_err(|e| StorageError::new("truncate", &path, e))
    }

    /// Removes the file; a file already gone is not an error.
    pub fn remove(&self, id: &str) -> Result<()> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::new("remove", &path, e)),
        }
    }

    pub fn open_read(&self, id: &str) -> Result<File> {
        let path = self.path(id);
        File::open(&path).map_err(|e| StorageError::new("open", &path, e))
    }

    /// Opens the file for appending at `offset` (the durable length).
    pub fn open_append(&self, id: &str, offset: u64) -> Result<FileWriter> {
        let path = self.path(id);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::new("open", &path, e))?;
        Ok(FileWriter {
            file,
            path,
            position: offset,
            dropped_to: offset,
        })
    }

    /// Checks the directory takes writes: creates, syncs and removes a probe file.
    pub fn check_writable(&self) -> Result<()> {
        let probe = self.dir.join(".healthz");
        fs::write(&probe, b"ok")
            .and_then(|_| fs::remove_file(&probe))
            .map_err(|e| StorageError::new("write", &probe, e))
    }
}

/// How far behind the write position pages are waited for and dropped from the page cache.
const WRITEBACK_LAG: u64 = 4 << 20;

/// Appends to one upload's file.
///
/// Each write starts its own writeback at once, and pages more than `WRITEBACK_LAG` behind are
/// waited for and dropped. Measured on these VMs, this keeps the page cache from filling with
/// fresh pages (whose faults and final writeback made each PATCH's fdatasync wait), so the
/// closing `sync` is cheap and the memory of many concurrent uploads stays flat.
pub struct FileWriter {
    file: File,
    path: PathBuf,
    position: u64,
    dropped_to: u64,
}

impl FileWriter {
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn write(&mut self, buf: &[u8]) -> Result<()> {
        let start = self.position;
        self.file
            .write_all_at(buf, start)
            .map_err(|e| StorageError::new("write", &self.path, e))?;
        self.position += buf.len() as u64;
        writeback::start(&self.file, start, buf.len() as u64);
        if self.position - self.dropped_to > 2 * WRITEBACK_LAG {
            let until = self.position - WRITEBACK_LAG;
            writeback::wait_and_drop(&self.file, self.dropped_to, until - self.dropped_to);
            self.dropped_to = until;
        }
        Ok(())
    }

    /// Makes every byte written so far durable.
    pub fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| StorageError::new("sync", &self.path, e))
    }

    /// Discards everything past `len` (a chunk that failed its checksum, or a failed write).
    pub fn truncate_to(&mut self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .and_then(|_| self.file.sync_all())
            .map_err(|e| StorageError::new("truncate", &self.path, e))?;
        self.position = len;
        self.dropped_to = self.dropped_to.min(len);
        Ok(())
    }
}

/// Page-cache hints. They only steer when the kernel writes; durability still comes from
/// `sync_data`, so failures here are ignored.
#[cfg(target_os = "linux")]
mod writeback {
    use std::fs::File;
    use std::os::fd::AsRawFd;

    pub fn start(file: &File, offset: u64, len: u64) {
        // SAFETY: plain syscall on a valid descriptor; no memory is passed.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }

    pub fn wait_and_drop(file: &File, offset: u64, len: u64) {
        let fd = file.as_raw_fd();
        // SAFETY: plain syscalls on a valid descriptor; no memory is passed.
        unsafe {
            libc::sync_file_range(
                fd,
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            );
            libc::posix_fadvise(
                fd,
                offset as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod writeback {
    use std::fs::File;
    pub fn start(_file: &File, _offset: u64, _len: u64) {}
    pub fn wait_and_drop(_file: &File, _offset: u64, _len: u64) {}
}

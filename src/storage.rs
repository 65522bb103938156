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

/// What a file system has room for. Some (btrfs, some network ones) report no inodes at all.
#[derive(Debug, Clone, Copy)]
pub struct Space {
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub free_inodes: u64,
    pub total_inodes: u64,
}

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

    /// Removes the file durably; a file already gone is not an error.
    pub fn remove(&self, id: &str) -> Result<()> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            // Synced, so the removal is not undone by a power cut after it is recorded.
            Ok(()) => self.sync_dir(),
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
        Ok(FileWriter::new(file, path, offset))
    }

    /// Free bytes on the file system that holds the files (for unprivileged users).
    pub fn free_bytes(&self) -> Result<u64> {
        self.space().map(|space| space.free_bytes)
    }

    /// Room on the file system that holds the files, in bytes and inodes.
    pub fn space(&self) -> Result<Space> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.dir.as_os_str().as_bytes())
            .map_err(|e| StorageError::new("statvfs", &self.dir, io::Error::other(e)))?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `path` is NUL-terminated and `stat` is written by the call before being read.
        let stat = unsafe {
            if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
                return Err(StorageError::new(
                    "statvfs",
                    &self.dir,
                    io::Error::last_os_error(),
                ));
            }
            stat.assume_init()
        };
        Ok(Space {
            free_bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
            total_bytes: stat.f_blocks.saturating_mul(stat.f_frsize),
            free_inodes: stat.f_favail,
            total_inodes: stat.f_files,
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

/// How far behind the write position pages are waited for and dropped from the page cache
/// (buffered writing only).
const WRITEBACK_LAG: u64 = 4 << 20;
/// Direct I/O needs offsets, lengths and memory aligned to the device's blocks; 4 KiB covers
/// every common one.
const ALIGN: usize = 4096;
/// Bytes gathered before one direct write.
const STAGE_BYTES: usize = 256 * 1024;

/// Appends to one upload's file.
///
/// Where the file system allows it, whole aligned blocks go to the disk with O_DIRECT from an
/// aligned staging buffer, and only the unaligned edges of an append go through the page
/// cache. Measured on these VMs, filling the page cache with fresh pages cost as much CPU as
/// hashing, and its writeback made each PATCH's closing fdatasync wait. Without O_DIRECT
/// (tmpfs, say), each buffered write starts its own writeback and pages further behind than
/// `WRITEBACK_LAG` are dropped, so the closing `sync` stays cheap there too.
pub struct FileWriter {
    file: File,
    direct: Option<(File, AlignedBuf)>,
    /// File offset of the staging buffer's first byte (aligned).
    stage_start: u64,
    path: PathBuf,
    /// Where the next byte goes, counting staged bytes.
    position: u64,
    dropped_to: u64,
}

impl FileWriter {
    fn new(file: File, path: PathBuf, offset: u64) -> FileWriter {
        let direct = open_direct(&path).and_then(|f| Some((f, AlignedBuf::new(STAGE_BYTES)?)));
        FileWriter {
            file,
            direct,
            stage_start: offset,
            path,
            position: offset,
            dropped_to: offset,
        }
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn write(&mut self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            let Some((_, stage)) = self.direct.as_mut() else {
                return self.write_buffered(buf);
            };
            if stage.is_empty() {
                let misalignment = (self.position % ALIGN as u64) as usize;
                if misalignment != 0 {
                    // The unaligned head of an append completes its block through the cache.
                    let n = buf.len().min(ALIGN - misalignment);
                    self.write_at(&buf[..n], self.position)?;
                    self.position += n as u64;
                    buf = &buf[n..];
                    continue;
                }
                self.stage_start = self.position;
            }
            let n = stage.push(buf);
            self.position += n as u64;
            buf = &buf[n..];
            if stage.is_full() {
                self.flush_stage()?;
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| StorageError::new("write", &self.path, e))
    }

    fn write_buffered(&mut self, buf: &[u8]) -> Result<()> {
        let start = self.position;
        self.write_at(buf, start)?;
        self.position += buf.len() as u64;
        writeback::start(&self.file, start, buf.len() as u64);
        if self.position - self.dropped_to > 2 * WRITEBACK_LAG {
            let until = self.position - WRITEBACK_LAG;
            writeback::wait_and_drop(&self.file, self.dropped_to, until - self.dropped_to);
            self.dropped_to = until;
        }
        Ok(())
    }

    /// Writes the staged bytes: whole blocks directly, a partial last block through the cache.
    fn flush_stage(&mut self) -> Result<()> {
        let Some((direct, stage)) = self.direct.as_mut() else {
            return Ok(());
        };
        let staged = stage.as_slice();
        let aligned = staged.len() / ALIGN * ALIGN;
        let mut written = 0;
        if aligned > 0 {
            match direct.write_all_at(&staged[..aligned], self.stage_start) {
                Ok(()) => written = aligned,
                // A file system may refuse direct I/O only at write time: carry on buffered.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(StorageError::new("write", &self.path, e)),
            }
        }
        let rest = staged[written..].to_vec();
        let refused_direct = written < aligned;
        stage.clear();
        if refused_direct {
            self.direct = None;
        }
        if !rest.is_empty() {
            self.write_at(&rest, self.stage_start + written as u64)?;
        }
        Ok(())
    }

    /// Makes every byte written so far durable.
    pub fn sync(&mut self) -> Result<()> {
        self.flush_stage()?;
        self.file
            .sync_data()
            .map_err(|e| StorageError::new("sync", &self.path, e))
    }

    /// Discards everything past `len` (a chunk that failed its checksum, or a failed write).
    pub fn truncate_to(&mut self, len: u64) -> Result<()> {
        if let Some((_, stage)) = self.direct.as_mut() {
            stage.clear();
        }
        self.file
            .set_len(len)
            .and_then(|_| self.file.sync_all())
            .map_err(|e| StorageError::new("truncate", &self.path, e))?;
        self.position = len;
        self.dropped_to = self.dropped_to.min(len);
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<File> {
    None
}

/// A heap buffer aligned for direct I/O.
struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    layout: std::alloc::Layout,
}

// SAFETY: the buffer is owned exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn new(capacity: usize) -> Option<AlignedBuf> {
        let layout = std::alloc::Layout::from_size_align(capacity, ALIGN).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = std::ptr::NonNull::new(unsafe { std::alloc::alloc(layout) })?;
        Some(AlignedBuf {
            ptr,
            len: 0,
            layout,
        })
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn is_full(&self) -> bool {
        self.len == self.layout.size()
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Copies as much of `data` as fits; returns how much.
    fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.layout.size() - self.len);
        // SAFETY: `len + n` is within the allocation, and `data` cannot overlap it.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(self.len), n);
        }
        self.len += n;
        n
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len` bytes were initialised by `push`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
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

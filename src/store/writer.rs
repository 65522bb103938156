//! Appends to one file: O_DIRECT for whole blocks, the page cache for the edges.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{Result, Sink, StoreError};

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
    direct: Option<File>,
    /// The staging buffer, held only while a write job runs (`Sink::pause` lends it back to
    /// the pool): at most as many exist as write jobs run at once, not one per append.
    stage: Option<AlignedBuf>,
    /// File offset of the staging buffer's first byte (aligned).
    stage_start: u64,
    path: PathBuf,
    /// Where the next byte goes, counting staged bytes.
    position: u64,
    dropped_to: u64,
}

impl FileWriter {
    pub fn new(file: File, path: PathBuf, offset: u64) -> FileWriter {
        FileWriter {
            file,
            direct: open_direct(&path),
            stage: None,
            stage_start: offset,
            path,
            position: offset,
            dropped_to: offset,
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| StoreError::new("write", self.path.display(), e))
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
        let (Some(direct), Some(stage)) = (self.direct.as_ref(), self.stage.as_mut()) else {
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
                Err(e) => return Err(StoreError::new("write", self.path.display(), e)),
            }
        }
        let rest = staged[written..].to_vec();
        let refused_direct = written < aligned;
        stage.clear();
        if refused_direct {
            self.direct = None;
            stages::give_back(self.stage.take());
        }
        if !rest.is_empty() {
            self.write_at(&rest, self.stage_start + written as u64)?;
        }
        Ok(())
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        stages::give_back(self.stage.take());
    }
}

/// Staging buffers between write jobs: a few are kept for the next job of any append.
mod stages {
    use super::{AlignedBuf, STAGE_BYTES};
    use std::sync::Mutex;

    /// About as many as write jobs run at once.
    const KEPT: usize = 8;
    static POOL: Mutex<Vec<AlignedBuf>> = Mutex::new(Vec::new());

    pub(super) fn take() -> Option<AlignedBuf> {
        let pooled = POOL.lock().unwrap_or_else(|p| p.into_inner()).pop();
        pooled.or_else(|| AlignedBuf::new(STAGE_BYTES))
    }

    pub(super) fn give_back(stage: Option<AlignedBuf>) {
        let Some(mut stage) = stage else { return };
        stage.clear();
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < KEPT {
            pool.push(stage);
        }
    }
}

impl Sink for FileWriter {
    fn position(&self) -> u64 {
        self.position
    }

    fn write(&mut self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            if self.direct.is_some() && self.stage.is_none() {
                self.stage = stages::take();
            }
            let (Some(_), Some(stage)) = (self.direct.as_ref(), self.stage.as_mut()) else {
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

    fn pause(&mut self) -> Result<()> {
        self.flush_stage()?;
        stages::give_back(self.stage.take());
        Ok(())
    }

    /// Makes every byte written so far durable.
    fn sync(&mut self) -> Result<u64> {
        self.flush_stage()?;
        // Keeps "every acknowledged `received` survives": `received` is committed only up to
        // the offset this returns (without it the power-cut test fails at its first cut).
        self.file
            .sync_data()
            .map_err(|e| StoreError::new("sync", self.path.display(), e))?;
        Ok(self.position)
    }

    /// Discards everything past `len` (a chunk that failed its checksum, or a failed write).
    fn truncate_to(&mut self, len: u64) -> Result<()> {
        if let Some(stage) = self.stage.as_mut() {
            stage.clear();
        }
        // Synced so that a discarded chunk cannot reappear past `received` after a cut (the
        // power-cut test sends no checksums, so it does not exercise this one).
        self.file
            .set_len(len)
            .and_then(|_| self.file.sync_all())
            .map_err(|e| StoreError::new("truncate", self.path.display(), e))?;
        self.position = len;
        self.dropped_to = self.dropped_to.min(len);
        Ok(())
    }
}

/// The file opened for direct reads, where the file system allows it.
#[cfg(target_os = "linux")]
pub(super) fn open_direct_read(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
pub(super) fn open_direct_read(_path: &Path) -> Option<File> {
    None
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
pub(super) struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    layout: std::alloc::Layout,
    /// Every byte was initialised (`zeroed`), so the whole buffer may be read into.
    initialised: bool,
}

// SAFETY: the buffer is owned exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer: every byte initialised, so it may be read into.
    pub(super) fn zeroed(capacity: usize) -> Option<AlignedBuf> {
        let layout = std::alloc::Layout::from_size_align(capacity, ALIGN).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = std::ptr::NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
        Some(AlignedBuf {
            ptr,
            len: 0,
            layout,
            initialised: true,
        })
    }

    /// Reads into the whole buffer from `offset`; it then holds what was read. Only for a
    /// buffer made by `zeroed` (an uninitialised one cannot be lent to `read`).
    pub(super) fn read_from(&mut self, file: &File, offset: u64) -> std::io::Result<usize> {
        if !self.initialised {
            return Err(std::io::Error::other(
                "read into a buffer not made by zeroed",
            ));
        }
        // SAFETY: `zeroed` initialised every byte, and the buffer is owned exclusively.
        let all = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) };
        let n = file.read_at(all, offset)?;
        self.len = n;
        Ok(n)
    }

    fn new(capacity: usize) -> Option<AlignedBuf> {
        let layout = std::alloc::Layout::from_size_align(capacity, ALIGN).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = std::ptr::NonNull::new(unsafe { std::alloc::alloc(layout) })?;
        Some(AlignedBuf {
            ptr,
            len: 0,
            layout,
            initialised: false,
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

    pub(super) fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len` bytes were initialised by `push` or `read_from`.
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

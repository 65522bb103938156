//! A local directory: one file per upload under `<data-dir>/files`.
//!
//! File system calls block, so each runs on tokio's blocking threads.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::writer::FileWriter;
use super::{ByteStream, Copied, Result, Sink, Source, Space, Store, StoreError};

#[derive(Debug, Clone)]
pub struct FsStore {
    dir: PathBuf,
}

impl FsStore {
    /// The store in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<FsStore> {
        let dir = dir.to_path_buf();
        super::dirs::create(&dir).map_err(|e| StoreError::new("create", dir.display(), e))?;
        Ok(FsStore { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Runs blocking file work with a clone of the store.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(FsStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(store))
            .await
            .map_err(|e| StoreError::new("run", "a blocking file task", io::Error::other(e)))?
    }

    fn create_now(&self, id: &str) -> Result<()> {
        let path = self.path(id);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::new("create", path.display(), e))?;
        // The power-cut test passes without this one (the file is empty; its name is made
        // durable by the directory's sync below). Kept: one call per create, and a file system
        // that journals the inode apart from its entry may need it.
        file.sync_all()
            .map_err(|e| StoreError::new("sync", path.display(), e))?;
        // Keeps "no acknowledged upload vanishes, and no acknowledged byte with it": without
        // it a cut forgets the file's name while the record and its synced bytes stay, and
        // recovery pulls `received` back to 0 (the power-cut test fails at its first cut).
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<()> {
        super::dirs::sync(&self.dir).map_err(|e| StoreError::new("sync", self.dir.display(), e))
    }

    fn remove_now(&self, id: &str) -> Result<()> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            // Synced, so the removal is not undone by a power cut after it is recorded: a
            // deleted upload's bytes must not come back. No invariant of the power-cut test
            // needs it (it deletes nothing); the start-up purge would remove them again.
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::new("remove", path.display(), e)),
        }
    }

    /// The file wins where it is shorter (bytes lost in a crash); the record wins where the
    /// file is longer (bytes written but never committed as durable).
    fn recover_now(&self, id: &str, received: u64) -> Result<u64> {
        let path = self.path(id);
        let len = match fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.create_now(id)?;
                0
            }
            Err(e) => return Err(StoreError::new("stat", path.display(), e)),
        };
        if len > received {
            // Synced, though the power-cut test passes without it: a trim lost to a cut is
            // done again at the next start, and the next append's sync carries it anyway.
            let file = open_write(&path)?;
            file.set_len(received)
                .and_then(|_| file.sync_all())
                .map_err(|e| StoreError::new("truncate", path.display(), e))?;
        }
        Ok(len.min(received))
    }

    /// The final's file becomes the parts' bytes end to end. An earlier try cut short may have
    /// left some: it starts over from nothing.
    fn copy_parts_now(&self, id: &str, parts: &[(String, u64)]) -> Result<()> {
        let path = self.path(id);
        let out = open_write(&path)?;
        out.set_len(0)
            .map_err(|e| StoreError::new("truncate", path.display(), e))?;
        let mut at = 0;
        for (part, len) in parts {
            let from = self.path(part);
            let source =
                File::open(&from).map_err(|e| StoreError::new("open", from.display(), e))?;
            copy_range(&source, &out, &mut at, *len)
                .map_err(|e| StoreError::new("copy", from.display(), e))?;
        }
        // The final is recorded complete after this: its bytes must be durable first. (Not
        // exercised by the power-cut test, which assembles nothing.)
        out.sync_all()
            .map_err(|e| StoreError::new("sync", path.display(), e))
    }

    fn space_now(&self) -> Result<Space> {
        let stat = rustix::fs::statvfs(&self.dir)
            .map_err(|e| StoreError::new("statvfs", self.dir.display(), e.into()))?;
        Ok(Space {
            free_bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
            total_bytes: stat.f_blocks.saturating_mul(stat.f_frsize),
            free_inodes: stat.f_favail,
            total_inodes: stat.f_files,
        })
    }
}

#[async_trait::async_trait]
impl Store for FsStore {
    async fn create(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.blocking(move |store| store.create_now(&id)).await
    }

    async fn recover(&self, id: &str, received: u64, _state: Option<&[u8]>) -> Result<u64> {
        let id = id.to_owned();
        self.blocking(move |store| store.recover_now(&id, received))
            .await
    }

    async fn open_append(
        &self,
        id: &str,
        offset: u64,
        _size: Option<u64>,
        _state: Option<&[u8]>,
    ) -> Result<Box<dyn Sink>> {
        let path = self.path(id);
        self.blocking(move |_| {
            let file = open_write(&path)?;
            Ok(Box::new(FileWriter::new(file, path, offset)) as Box<dyn Sink>)
        })
        .await
    }

    /// Only where `copy_file_range` shares the parts' blocks (btrfs, XFS, bcachefs) does the
    /// kernel's copy beat streaming: on ext4 it reads and writes every byte through the page
    /// cache and the closing fsync waits for all of it (1 GiB: 2.6 s, against 1.3 s streamed
    /// through the hasher with direct writes, measured here).
    fn copies_parts(&self, _parts: &[(String, u64)]) -> bool {
        shares_blocks(&self.dir)
    }

    async fn copy_parts(&self, id: &str, parts: &[(String, u64)]) -> Result<Copied> {
        if !shares_blocks(&self.dir) {
            return Ok(Copied::Not);
        }
        let (id, parts) = (id.to_owned(), parts.to_vec());
        self.blocking(move |store| store.copy_parts_now(&id, &parts))
            .await?;
        Ok(Copied::Done(None))
    }

    /// The file is the finished upload already.
    async fn complete(&self, _id: &str, _state: Option<&[u8]>) -> Result<()> {
        Ok(())
    }

    async fn open_read(&self, id: &str) -> Result<Box<dyn Source>> {
        let path = self.path(id);
        self.blocking(move |_| {
            let file = File::open(&path).map_err(|e| StoreError::new("open", path.display(), e))?;
            let len = file
                .metadata()
                .map_err(|e| StoreError::new("stat", path.display(), e))?
                .len();
            Ok(Box::new(OpenFile { file, len, path }) as Box<dyn Source>)
        })
        .await
    }

    async fn remove(&self, id: &str, _state: Option<&[u8]>) -> Result<()> {
        let id = id.to_owned();
        self.blocking(move |store| store.remove_now(&id)).await
    }

    async fn space(&self) -> Result<Option<Space>> {
        self.blocking(|store| store.space_now().map(Some)).await
    }

    async fn check_writable(&self) -> Result<()> {
        // A name of its own: two checks at once must not remove each other's probe.
        let probe = self.dir.join(format!(".healthz-{}", uuid::Uuid::new_v4()));
        self.blocking(move |_| {
            fs::write(&probe, b"ok")
                .and_then(|_| fs::remove_file(&probe))
                .map_err(|e| StoreError::new("write", probe.display(), e))
        })
        .await
    }
}

/// Whether the file system under `dir` copies a file range by sharing its blocks.
fn shares_blocks(dir: &Path) -> bool {
    const BTRFS: i64 = 0x9123_683e;
    const XFS: i64 = 0x5846_5342;
    const BCACHEFS: i64 = 0xca45_1a4e;
    rustix::fs::statfs(dir).is_ok_and(|fs| {
        // `f_type`'s type differs between platforms (i64 here, u32 or i32 elsewhere).
        #[allow(clippy::unnecessary_cast)]
        let kind = fs.f_type as i64;
        kind == BTRFS || kind == XFS || kind == BCACHEFS
    })
}

/// Appends `len` bytes of `source` to `out` at `*at`. `copy_file_range` lets the kernel copy
/// (or share the blocks, on a file system that can), so the bytes never come up here; where
/// it cannot (another file system, an old kernel) they are read and written.
fn copy_range(source: &File, out: &File, at: &mut u64, len: u64) -> io::Result<()> {
    use rustix::io::Errno;
    let mut from = 0;
    while from < len {
        let want = usize::try_from(len - from)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(source, Some(&mut from), out, Some(&mut *at), want) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL) => {
                return copy_by_reading(source, out, at, from, len);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_by_reading(
    source: &File,
    out: &File,
    at: &mut u64,
    mut from: u64,
    len: u64,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; 1 << 20];
    while from < len {
        let want = usize::try_from(len - from).map_or(buf.len(), |n| n.min(buf.len()));
        let got = source.read_at(&mut buf[..want], from)?;
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        out.write_all_at(&buf[..got], *at)?;
        from += got as u64;
        *at += got as u64;
    }
    Ok(())
}

fn open_write(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StoreError::new("open", path.display(), e))
}

impl OpenFile {
    async fn stream_in(
        self: Box<Self>,
        start: u64,
        count: u64,
        reads: usize,
    ) -> Result<ByteStream> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = tokio::fs::File::from_std(self.file);
        file.seek(io::SeekFrom::Start(start))
            .await
            .map_err(|e| StoreError::new("seek", self.path.display(), e))?;
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            file.take(count),
            reads,
        )))
    }
}

/// A stored file opened for reading; removing the upload does not cut a download short.
struct OpenFile {
    file: File,
    len: u64,
    path: PathBuf,
}

#[async_trait::async_trait]
impl Source for OpenFile {
    fn len(&self) -> u64 {
        self.len
    }

    async fn stream(self: Box<Self>, start: u64, count: u64) -> Result<ByteStream> {
        // 64 KiB reads: a download the client stops reading holds about that, not a quarter MiB.
        self.stream_in(start, count, 64 * 1024).await
    }

    async fn stream_bulk(self: Box<Self>, start: u64, count: u64) -> Result<ByteStream> {
        match super::bulk_read::stream(&self.file, self.path.clone(), start, count) {
            Some(bytes) => Ok(bytes),
            None => self.stream_in(start, count, 1 << 20).await,
        }
    }
}

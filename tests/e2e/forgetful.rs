//! A file system that forgets, as a disk does when the power goes: the test tool behind the
//! power-cut tests (a FUSE file system served by a thread of the test process).
//!
//! It passes everything through to a backing directory, with two exceptions:
//! - a file's writes and truncations stay in memory until the file is fsynced (or
//!   fdatasynced); reads see them, as reads see the page cache;
//! - a create, mkdir, unlink, rmdir or rename is done in the backing directory at once but
//!   journaled, and is durable only once every directory it changed has been fsynced.
//!
//! `Mount::cut` is the power cut: every unsynced write is dropped, the journal is undone newest
//! first, and every later request fails with EIO. What is left in the backing directory is the
//! disk as found when the power comes back; mounting it again is the reboot.
//!
//! Mounted with `direct: false` it refuses `O_DIRECT` (EINVAL), as some file systems do, so the
//! service takes its buffered path with `fdatasync`; with `direct: true` the kernel passes
//! direct writes on as ordinary ones, which stay pending like any other, so the service's
//! `O_DIRECT` path (the one it takes on ext4 and XFS) meets the cuts too.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fuser::{
    AccessFlags, BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

/// Attributes are never cached by the kernel: every size it sees comes from here.
const TTL: Duration = Duration::ZERO;

/// A write or truncation not yet made durable.
enum Pending {
    Write(u64, Vec<u8>),
    Len(u64),
}

struct Node {
    /// Where the node is now in the backing directory (under the trash once unlinked).
    path: PathBuf,
    pending: Vec<Pending>,
}

/// How to take back one step of a namespace change.
enum Undo {
    Remove(PathBuf),
    RemoveDir(PathBuf),
    MakeDir(PathBuf),
    Move { from: PathBuf, to: PathBuf },
}

/// A namespace change and the directories whose fsync it still waits for.
struct Journaled {
    waits_for: Vec<u64>,
    undo: Vec<Undo>,
}

/// What the file system did, for a test to show that the cuts met unsynced state.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub file_syncs: u64,
    pub dir_syncs: u64,
    /// Writes through a file opened with `O_DIRECT`.
    pub direct_writes: u64,
    /// Unsynced bytes a cut dropped, by the directory (relative to the root) of their file.
    pub bytes_dropped: BTreeMap<PathBuf, u64>,
    pub changes_undone: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.file_syncs += other.file_syncs;
        self.dir_syncs += other.dir_syncs;
        self.direct_writes += other.direct_writes;
        self.changes_undone += other.changes_undone;
        for (dir, bytes) in &other.bytes_dropped {
            *self.bytes_dropped.entry(dir.clone()).or_default() += bytes;
        }
    }

    pub fn dropped_in(&self, dir: &str) -> u64 {
        self.bytes_dropped.get(Path::new(dir)).copied().unwrap_or(0)
    }
}

/// Each mount names its trash entries apart, as the trash outlives the mount.
static MOUNTS: AtomicU64 = AtomicU64::new(0);

struct State {
    root: PathBuf,
    direct: bool,
    trash: PathBuf,
    mount: u64,
    trashed: u64,
    nodes: HashMap<u64, Node>,
    inos: HashMap<PathBuf, u64>,
    next_ino: u64,
    journal: Vec<Journaled>,
    cut: bool,
    counts: Counts,
}

type Answer<T> = Result<T, Errno>;

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

impl State {
    fn new(root: &Path, trash: &Path, direct: bool) -> State {
        let mut state = State {
            root: root.to_path_buf(),
            direct,
            trash: trash.to_path_buf(),
            mount: MOUNTS.fetch_add(1, Ordering::Relaxed),
            trashed: 0,
            nodes: HashMap::new(),
            inos: HashMap::new(),
            next_ino: 2,
            journal: Vec::new(),
            cut: false,
            counts: Counts::default(),
        };
        state.nodes.insert(
            INodeNo::ROOT.0,
            Node {
                path: root.to_path_buf(),
                pending: Vec::new(),
            },
        );
        state.inos.insert(root.to_path_buf(), INodeNo::ROOT.0);
        state
    }

    fn refuses(&self, open_flags: i32) -> bool {
        !self.direct && open_flags & libc::O_DIRECT != 0
    }

    fn live(&self) -> Answer<()> {
        if self.cut {
            Err(Errno::EIO)
        } else {
            Ok(())
        }
    }

    fn node(&self, ino: INodeNo) -> Answer<&Node> {
        self.live()?;
        self.nodes.get(&ino.0).ok_or(Errno::ENOENT)
    }

    fn path(&self, ino: INodeNo) -> Answer<PathBuf> {
        Ok(self.node(ino)?.path.clone())
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Answer<PathBuf> {
        Ok(self.path(parent)?.join(name))
    }

    fn ino_of(&mut self, path: &Path) -> u64 {
        if let Some(ino) = self.inos.get(path) {
            return *ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inos.insert(path.to_path_buf(), ino);
        self.nodes.insert(
            ino,
            Node {
                path: path.to_path_buf(),
                pending: Vec::new(),
            },
        );
        ino
    }

    /// The length the file has with its pending changes.
    fn len(&self, node: &Node, stored: u64) -> u64 {
        node.pending
            .iter()
            .fold(stored, |len, change| match change {
                Pending::Write(at, bytes) => len.max(at + bytes.len() as u64),
                Pending::Len(to) => *to,
            })
    }

    fn attr(&mut self, path: &Path) -> Answer<FileAttr> {
        let meta = fs::symlink_metadata(path).map_err(errno)?;
        let ino = self.ino_of(path);
        let kind = if meta.is_dir() {
            FileType::Directory
        } else {
            FileType::RegularFile
        };
        let size = self.len(&self.nodes[&ino], meta.len());
        let time = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind,
            perm: (meta.mode() & 0o7777) as u16,
            nlink: if meta.is_dir() { 2 } else { 1 },
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn read(&self, ino: INodeNo, at: u64, size: u32) -> Answer<Vec<u8>> {
        let node = self.node(ino)?;
        let file = File::open(&node.path).map_err(errno)?;
        let stored = file.metadata().map_err(errno)?.len();
        let end = self.len(node, stored).min(at + u64::from(size));
        if at >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - at) as usize];
        let from_disk = stored.clamp(at, end) - at;
        file.read_exact_at(&mut out[..from_disk as usize], at)
            .map_err(errno)?;
        let mut len = stored;
        for change in &node.pending {
            match change {
                Pending::Write(offset, bytes) => {
                    let (start, stop) = (at.max(*offset), end.min(offset + bytes.len() as u64));
                    if start < stop {
                        out[(start - at) as usize..(stop - at) as usize].copy_from_slice(
                            &bytes[(start - offset) as usize..(stop - offset) as usize],
                        );
                    }
                    len = len.max(offset + bytes.len() as u64);
                }
                // Bytes cut off read back as zeros if the file grows again.
                Pending::Len(to) => {
                    if *to < len {
                        let start = (*to).clamp(at, end) - at;
                        out[start as usize..].fill(0);
                    }
                    len = *to;
                }
            }
        }
        Ok(out)
    }

    fn sync_file(&mut self, ino: INodeNo) -> Answer<()> {
        self.live()?;
        let node = self.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?;
        if !node.pending.is_empty() {
            let file = OpenOptions::new()
                .write(true)
                .open(&node.path)
                .map_err(errno)?;
            for change in node.pending.drain(..) {
                match change {
                    Pending::Write(at, bytes) => file.write_all_at(&bytes, at),
                    Pending::Len(to) => file.set_len(to),
                }
                .map_err(errno)?;
            }
        }
        self.counts.file_syncs += 1;
        Ok(())
    }

    fn sync_dir(&mut self, ino: INodeNo) -> Answer<()> {
        self.live()?;
        for change in &mut self.journal {
            change.waits_for.retain(|dir| *dir != ino.0);
        }
        self.journal.retain(|change| !change.waits_for.is_empty());
        self.counts.dir_syncs += 1;
        Ok(())
    }

    fn journal(&mut self, dirs: &[INodeNo], undo: Vec<Undo>) {
        let mut waits_for: Vec<u64> = dirs.iter().map(|d| d.0).collect();
        waits_for.dedup();
        self.journal.push(Journaled { waits_for, undo });
    }

    /// Moves what is at `path` under the trash, where it waits for its removal to be durable.
    fn trash(&mut self, path: &Path) -> Answer<PathBuf> {
        self.trashed += 1;
        let to = self.trash.join(format!("{}-{}", self.mount, self.trashed));
        fs::rename(path, &to).map_err(errno)?;
        self.moved(path, &to);
        Ok(to)
    }

    /// Keeps the nodes at and under `from` pointing at their new place.
    fn moved(&mut self, from: &Path, to: &Path) {
        let under: Vec<PathBuf> = self
            .inos
            .keys()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        for old in under {
            let rest = old.strip_prefix(from).expect("under from");
            // `join("")` would add a trailing slash, which a file's path cannot have.
            let new = match rest.as_os_str().is_empty() {
                true => to.to_path_buf(),
                false => to.join(rest),
            };
            if let Some(ino) = self.inos.remove(&old) {
                self.inos.insert(new.clone(), ino);
                if let Some(node) = self.nodes.get_mut(&ino) {
                    node.path = new;
                }
            }
        }
    }

    fn forget_path(&mut self, path: &Path) {
        if let Some(ino) = self.inos.remove(path) {
            self.nodes.remove(&ino);
        }
    }

    fn cut(&mut self) {
        for node in self.nodes.values_mut() {
            let dir = node
                .path
                .parent()
                .and_then(|d| d.strip_prefix(&self.root).ok())
                .map(Path::to_path_buf)
                .unwrap_or_default();
            for change in node.pending.drain(..) {
                if let Pending::Write(_, bytes) = change {
                    *self.counts.bytes_dropped.entry(dir.clone()).or_default() +=
                        bytes.len() as u64;
                }
            }
        }
        for change in self.journal.drain(..).rev() {
            self.counts.changes_undone += 1;
            for step in change.undo.iter().rev() {
                // Best effort, as the disk's own recovery: an undo that meets nothing to undo
                // (a directory already taken back with its parent) has nothing to do.
                let _ = match step {
                    Undo::Remove(path) => fs::remove_file(path),
                    Undo::RemoveDir(path) => fs::remove_dir_all(path),
                    Undo::MakeDir(path) => fs::create_dir(path),
                    Undo::Move { from, to } => fs::rename(from, to),
                };
            }
        }
        self.cut = true;
    }
}

/// The FUSE side: every request takes the one lock, so a cut falls between two requests.
struct Forgetful {
    state: Arc<Mutex<State>>,
}

impl Forgetful {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Filesystem for Forgetful {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut state = self.state();
        match state.child(parent, name).and_then(|p| state.attr(&p)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let mut state = self.state();
        match state.path(ino).and_then(|p| state.attr(&p)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        let answer = state.path(ino).and_then(|path| {
            if let Some(to) = size {
                let node = state.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?;
                node.pending.push(Pending::Len(to));
            }
            state.attr(&path)
        });
        match answer {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let answer = state.child(parent, name).and_then(|path| {
            fs::create_dir(&path).map_err(errno)?;
            state.journal(&[parent], vec![Undo::RemoveDir(path.clone())]);
            state.attr(&path)
        });
        match answer {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let answer = state.child(parent, name).and_then(|path| {
            if fs::symlink_metadata(&path).map_err(errno)?.is_dir() {
                return Err(Errno::EISDIR);
            }
            let to = state.trash(&path)?;
            state.journal(&[parent], vec![Undo::Move { from: to, to: path }]);
            Ok(())
        });
        match answer {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let answer = state.child(parent, name).and_then(|path| {
            fs::remove_dir(&path).map_err(errno)?;
            state.forget_path(&path);
            state.journal(&[parent], vec![Undo::MakeDir(path)]);
            Ok(())
        });
        match answer {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        let answer = (|| {
            let from = state.child(parent, name)?;
            let to = state.child(newparent, newname)?;
            fs::symlink_metadata(&from).map_err(errno)?;
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                return Err(Errno::EINVAL);
            }
            let mut undo = Vec::new();
            if let Ok(target) = fs::symlink_metadata(&to) {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                let occupied =
                    target.is_dir() && fs::read_dir(&to).map_err(errno)?.next().is_some();
                if occupied {
                    return Err(Errno::ENOTEMPTY);
                }
                let replaced = state.trash(&to)?;
                undo.push(Undo::Move {
                    from: replaced,
                    to: to.clone(),
                });
            }
            if let Err(e) = fs::rename(&from, &to) {
                // Put back what was moved aside for it.
                if let Some(Undo::Move { from: replaced, to }) = undo.pop() {
                    let _ = fs::rename(&replaced, &to);
                    state.moved(&replaced, &to);
                }
                return Err(errno(e));
            }
            state.moved(&from, &to);
            undo.push(Undo::Move { from: to, to: from });
            state.journal(&[parent, newparent], undo);
            Ok(())
        })();
        match answer {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.state();
        let answer = state.path(ino).and_then(|_| {
            if state.refuses(flags.0) {
                return Err(Errno::EINVAL);
            }
            if flags.0 & libc::O_TRUNC != 0 {
                let node = state.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?;
                node.pending.push(Pending::Len(0));
            }
            Ok(())
        });
        match answer {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        match self.state().read(ino, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.state();
        if let Err(e) = state.live() {
            return reply.error(e);
        }
        if flags.0 & libc::O_DIRECT != 0 {
            state.counts.direct_writes += 1;
        }
        match state.nodes.get_mut(&ino.0) {
            Some(node) => {
                node.pending.push(Pending::Write(offset, data.to_vec()));
                reply.written(data.len() as u32);
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.state().sync_file(ino) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut state = self.state();
        let listing = state.path(ino).and_then(|dir| {
            let mut names: Vec<(PathBuf, FileType)> = Vec::new();
            for entry in fs::read_dir(&dir).map_err(errno)? {
                let entry = entry.map_err(errno)?;
                let kind = match entry.file_type().map_err(errno)?.is_dir() {
                    true => FileType::Directory,
                    false => FileType::RegularFile,
                };
                names.push((entry.path(), kind));
            }
            names.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(names)
        });
        let names = match listing {
            Ok(names) => names,
            Err(e) => return reply.error(e),
        };
        for (index, (path, kind)) in names.iter().enumerate().skip(offset as usize) {
            let child = state.ino_of(path);
            let name = path.file_name().expect("a child has a name");
            if reply.add(INodeNo(child), index as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.state().sync_dir(ino) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let stat = self
            .state()
            .path(ino)
            .and_then(|p| rustix::fs::statvfs(&p).map_err(|e| Errno::from_i32(e.raw_os_error())));
        match stat {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                255,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        match self.state().node(ino) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.state();
        let answer = state.child(parent, name).and_then(|path| {
            if state.refuses(flags) {
                return Err(Errno::EINVAL);
            }
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => state.journal(&[parent], vec![Undo::Remove(path.clone())]),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if flags & libc::O_EXCL != 0 {
                        return Err(Errno::EEXIST);
                    }
                }
                Err(e) => return Err(errno(e)),
            }
            state.attr(&path)
        });
        match answer {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }
}

/// A forgetful file system mounted at a directory, over a backing directory.
pub struct Mount {
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
}

impl Mount {
    /// Mounts the backing directory `root` at `at` (needs root and /dev/fuse). `trash` holds
    /// removed files until their removal is durable; it must be on `root`'s file system and
    /// outside it. `direct`: whether `O_DIRECT` opens are taken (else EINVAL).
    pub fn new(root: &Path, trash: &Path, at: &Path, direct: bool) -> io::Result<Mount> {
        fs::create_dir_all(trash)?;
        let state = Arc::new(Mutex::new(State::new(root, trash, direct)));
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("forgetful".into())];
        let fs = Forgetful {
            state: state.clone(),
        };
        let session = fuser::spawn_mount(fs, at, &config)?;
        Ok(Mount {
            state,
            session: Some(session),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The power cut: everything not made durable is gone, and every later request fails.
    pub fn cut(&self) {
        self.state().cut();
    }

    /// The power cut, from another thread (while this one waits on something else).
    pub fn cutter(&self) -> impl Fn() + Send + 'static {
        let state = self.state.clone();
        move || state.lock().unwrap_or_else(|e| e.into_inner()).cut()
    }

    pub fn counts(&self) -> Counts {
        self.state().counts.clone()
    }

    /// Unmounts; fails (EBUSY) while a process holds a file or directory open on it.
    pub fn unmount(mut self) -> io::Result<()> {
        match self.session.take().map(BackgroundSession::umount_and_join) {
            // The kernel aborts the connection when it goes with requests still queued (a
            // release of the killed server's files, say): the session's end, not a failure.
            Some(Err(e)) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(()),
            Some(result) => result,
            None => Ok(()),
        }
    }

    fn stop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.stop();
    }
}

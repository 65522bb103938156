//! Power cuts, not only crashes: the data directory on the forgetful file system
//! (`forgetful.rs`), whose cut drops every write and every directory change that was not made
//! durable, at random moments of uploads through every protocol; the server is killed at once
//! and started again on what is left. SIGKILL alone keeps the page cache, so only this proves
//! that the right things were synced before an answer.
//!
//! Needs root and /dev/fuse, so `cargo test` lists these as ignored; `.ci/run` runs them.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

use crate::forgetful::{Counts, Mount};
use crate::support::*;

/// A disk: the backing directory, the trash of its removals, and where it is mounted.
struct Disk {
    // Before `dir`: fields drop in order, and the mount must be gone before the directory
    // under it is removed.
    mount: Option<Mount>,
    dir: TempDir,
    /// Whether `O_DIRECT` opens are taken.
    direct: bool,
    counts: Counts,
}

impl Disk {
    fn new(direct: bool) -> Disk {
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["backing", "mnt"] {
            fs::create_dir(dir.path().join(sub)).expect("disk directories");
        }
        let mut disk = Disk {
            mount: None,
            dir,
            direct,
            counts: Counts::default(),
        };
        disk.mount();
        disk
    }

    fn mount(&mut self) {
        let (root, trash, at) = (
            self.dir.path().join("backing"),
            self.dir.path().join("trash"),
            self.dir.path().join("mnt"),
        );
        let mount = Mount::new(&root, &trash, &at, self.direct).expect("mount the forgetful disk");
        self.mount = Some(mount);
    }

    /// `path` on the mounted disk.
    fn at(&self, path: &str) -> PathBuf {
        self.dir.path().join("mnt").join(path)
    }

    /// The power cut alone; `reboot` mounts what is left.
    fn cut(&mut self) {
        let mount = self.mount.take().expect("mounted");
        mount.cut();
        self.counts.add(&mount.counts());
        self.mount = Some(mount);
    }

    fn reboot(&mut self) {
        if let Some(mount) = self.mount.take() {
            mount
                .unmount()
                .expect("unmount (nothing may hold a file open)");
        }
        self.mount();
    }

    /// Starts `server` again while the power is cut at a random moment of its start-up
    /// (its repair of what the last cut left), then reboots and starts it for good. Returns
    /// whether the cut came before the server was up.
    fn cut_during_start(&mut self, server: &mut TestServer, after: Duration) -> bool {
        let cut = self.mount.as_ref().expect("mounted").cutter();
        let cutter = std::thread::spawn(move || {
            std::thread::sleep(after);
            cut();
        });
        // It may start before the cut, or fail under it: either way it is killed now.
        let failed = server.try_restart().is_err();
        cutter.join().expect("the cutter");
        server.kill9();
        if let Some(mount) = &self.mount {
            self.counts.add(&mount.counts());
        }
        self.reboot();
        server.restart();
        failed
    }

    fn cut_and_reboot(&mut self) {
        self.cut();
        self.reboot();
    }
}

fn sync_dir(path: &Path) {
    File::open(path)
        .and_then(|d| d.sync_all())
        .expect("sync the directory");
}

fn write_file(path: &Path, bytes: &[u8]) -> File {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    file.write_all(bytes).expect("write");
    file
}

#[test]
#[ignore = "needs root and /dev/fuse; .ci/run runs it"]
fn forgetful_disk_keeps_synced_bytes_and_drops_the_rest() {
    let mut disk = Disk::new(false);
    let path = disk.at("file");
    write_file(&path, b"durable").sync_all().unwrap();
    sync_dir(&disk.at(""));
    let mut file = write_file(&path, b"");
    file.write_all(b"DURABLE and more").unwrap();
    file.set_len(12).unwrap();
    drop(file);
    // Until the cut, reads see everything, as through the page cache.
    assert_eq!(fs::read(&path).unwrap(), b"DURABLE and ");
    disk.cut_and_reboot();
    assert_eq!(fs::read(&path).unwrap(), b"durable");

    // A truncation that shortens, then a write past the old end: the gap reads as zeros.
    let file = write_file(&path, b"");
    file.set_len(2).unwrap();
    file.write_all_at_end(b"!", 4);
    assert_eq!(fs::read(&path).unwrap(), b"du\0\0!");
    file.sync_data().unwrap();
    drop(file);
    disk.cut_and_reboot();
    assert_eq!(fs::read(&path).unwrap(), b"du\0\0!");
    assert!(disk.counts.dropped_in("") >= 16);
}

trait WriteAt {
    fn write_all_at_end(&self, bytes: &[u8], at: u64);
}

impl WriteAt for File {
    fn write_all_at_end(&self, bytes: &[u8], at: u64) {
        std::os::unix::fs::FileExt::write_all_at(self, bytes, at).expect("write at");
    }
}

#[test]
#[ignore = "needs root and /dev/fuse; .ci/run runs it"]
fn forgetful_disk_keeps_a_create_only_once_its_directory_is_synced() {
    let mut disk = Disk::new(false);
    // The file's own fsync is not enough: its name is in the directory.
    write_file(&disk.at("unnamed"), b"bytes")
        .sync_all()
        .unwrap();
    fs::create_dir(disk.at("sub")).unwrap();
    write_file(&disk.at("sub/inner"), b"x").sync_all().unwrap();
    sync_dir(&disk.at("sub"));
    assert!(disk.at("unnamed").exists() && disk.at("sub/inner").exists());
    disk.cut_and_reboot();
    assert!(!disk.at("unnamed").exists(), "a create outlived the cut");
    assert!(!disk.at("sub").exists(), "a directory outlived the cut");

    write_file(&disk.at("named"), b"bytes").sync_all().unwrap();
    sync_dir(&disk.at(""));
    disk.cut_and_reboot();
    assert_eq!(fs::read(disk.at("named")).unwrap(), b"bytes");
}

#[test]
#[ignore = "needs root and /dev/fuse; .ci/run runs it"]
fn forgetful_disk_undoes_unsynced_removals_and_renames() {
    let mut disk = Disk::new(false);
    for name in ["kept", "moved", "gone"] {
        write_file(&disk.at(name), name.as_bytes())
            .sync_all()
            .unwrap();
    }
    sync_dir(&disk.at(""));
    fs::remove_file(disk.at("kept")).unwrap();
    fs::rename(disk.at("moved"), disk.at("renamed")).unwrap();
    assert!(!disk.at("kept").exists() && disk.at("renamed").exists());
    disk.cut_and_reboot();
    assert_eq!(fs::read(disk.at("kept")).unwrap(), b"kept");
    assert_eq!(fs::read(disk.at("moved")).unwrap(), b"moved");
    assert!(!disk.at("renamed").exists());

    // Synced, they stay done; a rename over a file replaces it.
    fs::remove_file(disk.at("gone")).unwrap();
    fs::rename(disk.at("moved"), disk.at("kept")).unwrap();
    sync_dir(&disk.at(""));
    disk.cut_and_reboot();
    assert!(!disk.at("gone").exists() && !disk.at("moved").exists());
    assert_eq!(fs::read(disk.at("kept")).unwrap(), b"moved");
    assert!(disk.counts.changes_undone >= 2);
}

#[test]
#[ignore = "needs root and /dev/fuse; .ci/run runs it"]
fn forgetful_disk_refuses_direct_io_and_fails_everything_after_the_cut() {
    let mut disk = Disk::new(false);
    let direct = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(disk.at("direct"));
    assert_eq!(
        direct.err().and_then(|e| e.raw_os_error()),
        Some(libc::EINVAL)
    );
    let file = write_file(&disk.at("open"), b"x");
    disk.cut();
    let after = file.sync_all().expect_err("a sync after the cut");
    assert_eq!(after.raw_os_error(), Some(libc::EIO));
    drop(file);
    disk.reboot();
    assert!(!disk.at("open").exists());
}

// ---- The service on the forgetful disk ----

/// Cuts in a run with O_DIRECT refused (half as many with it taken); `RESUMABLE_POWER_CUTS`
/// sets more for a soak.
fn cuts() -> usize {
    std::env::var("RESUMABLE_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Protocol {
    Native,
    Tus,
    Draft,
}

const PROTOCOLS: [Protocol; 3] = [Protocol::Native, Protocol::Tus, Protocol::Draft];
const STREAMED_SIZE: usize = 6 << 20;

/// An upload streamed over many rounds, and what its client knows of it.
struct Streamed {
    id: String,
    protocol: Protocol,
    bytes: Arc<Vec<u8>>,
    /// The most handed to a socket: an upper bound on what can be stored.
    sent: AtomicU64,
    /// The most an answer confirmed as stored.
    confirmed: AtomicU64,
}

/// A one-shot upload (a multipart form) whose `201` arrived.
struct OneShot {
    id: String,
    sha256: String,
}

fn protocol_headers(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Native => "",
        Protocol::Tus => "Tus-Resumable: 1.0.0\r\n",
        Protocol::Draft => "Upload-Draft-Interop-Version: 8\r\n",
    }
}

/// Creates an upload of `len` bytes the way `protocol`'s clients do; returns its id.
fn create_streamed(port: u16, protocol: Protocol, len: usize) -> String {
    let request = match protocol {
        Protocol::Native => {
            let body = format!("{{\"name\":\"cut.bin\",\"size\":{len}}}");
            format!(
                "POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        Protocol::Tus => format!(
            "POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nUpload-Length: {len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        Protocol::Draft => format!(
            "POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Draft-Interop-Version: 8\r\nUpload-Complete: ?0\r\nUpload-Length: {len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    };
    let (status, head, body) = raw(port, request.as_bytes());
    assert_eq!(status, 201, "{protocol:?} creation: {head}{body}");
    match protocol {
        Protocol::Native => json(&body)["id"].as_str().expect("an id").to_owned(),
        _ => header_of(&head, "location")
            .and_then(|l| l.rsplit('/').next().map(str::to_owned))
            .expect("a Location"),
    }
}

/// The offset an answer to a PATCH confirms, if it is a success.
fn confirmed_offset(protocol: Protocol, status: u16, head: &str, body: &str) -> Option<u64> {
    match (protocol, status) {
        (Protocol::Native, 200) => json(body)["received"].as_u64(),
        (Protocol::Tus | Protocol::Draft, 204) => {
            header_of(head, "upload-offset").and_then(|v| v.parse().ok())
        }
        _ => None,
    }
}

/// PATCHes of up to 4 MiB (long enough to span checkpoints, every 100 ms) in 64 KiB pieces at
/// `pace` from `offset`, until told to stop, the upload is whole, or the connection breaks.
fn stream(port: u16, upload: &Streamed, mut offset: u64, pace: Duration, stop: &AtomicBool) {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let size = upload.bytes.len() as u64;
    while !stop.load(Ordering::Relaxed) && offset < size {
        let len = (size - offset).min(4 << 20);
        let last = offset + len == size;
        let extra = match upload.protocol {
            Protocol::Native => String::new(),
            Protocol::Tus => "Content-Type: application/offset+octet-stream\r\n".into(),
            Protocol::Draft => format!(
                "Content-Type: application/partial-upload\r\nUpload-Complete: {}\r\n",
                if last { "?1" } else { "?0" }
            ),
        };
        let head = format!(
            "PATCH /uploads/{} HTTP/1.1\r\nHost: 127.0.0.1\r\n{}{extra}Upload-Offset: {offset}\r\nContent-Length: {len}\r\n\r\n",
            upload.id,
            protocol_headers(upload.protocol)
        );
        if conn.write_all(head.as_bytes()).is_err() {
            return;
        }
        for piece in upload.bytes[offset as usize..(offset + len) as usize].chunks(64 << 10) {
            // Counted before the write: a write that fails may have delivered part of it.
            upload
                .sent
                .fetch_max(offset + piece.len() as u64, Ordering::SeqCst);
            if conn.write_all(piece).is_err() {
                return;
            }
            offset += piece.len() as u64;
            std::thread::sleep(pace);
        }
        let (status, head, body) = read_answer(&mut conn);
        let Some(at) = confirmed_offset(upload.protocol, status, &head, &body) else {
            return;
        };
        upload.confirmed.fetch_max(at, Ordering::SeqCst);
        offset = at;
    }
}

/// HEADs the uploads over and over while they stream, as a tus client does before it resumes:
/// an offset HEAD shows is acknowledged too, and must survive a cut.
fn watch_offsets(port: u16, uploads: &[Arc<Streamed>], stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        for upload in uploads {
            let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
                return;
            };
            conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let request = format!(
                "HEAD /uploads/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                upload.id
            );
            if conn.write_all(request.as_bytes()).is_err() {
                return;
            }
            // A HEAD answer is its head alone: read to the close.
            let mut head = String::new();
            if conn.read_to_string(&mut head).is_err() || !head.starts_with("HTTP/1.1 200") {
                return;
            }
            if let Some(offset) = header_of(&head, "upload-offset").and_then(|v| v.parse().ok()) {
                upload.confirmed.fetch_max(offset, Ordering::SeqCst);
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// Posts multipart one-shots of varied sizes until told to stop or the server is gone; each
/// `201` is recorded.
fn post_one_shots(port: u16, seed: u64, stop: &AtomicBool, acknowledged: &Mutex<Vec<OneShot>>) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let bytes = data(
            1 + ((seed * 7919 + n * 104_729) % (384 << 10)) as usize,
            seed + n,
        );
        let boundary = "cutcutcut";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"one.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let head = format!(
            "POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
            return;
        };
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
        if conn.write_all(head.as_bytes()).is_err() {
            return;
        }
        for piece in body.chunks(64 << 10) {
            if conn.write_all(piece).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let (status, _, answer) = read_answer(&mut conn);
        if status != 201 {
            return;
        }
        let id = json(&answer)["id"].as_str().expect("an id").to_owned();
        acknowledged.lock().unwrap().push(OneShot {
            id,
            sha256: sha_hex(&bytes),
        });
        let _ = conn.read(&mut [0u8; 1]);
    }
}

/// What the restarted server says of `id`: its status, and HEAD's `Upload-Offset`.
async fn after_restart(server: &TestServer, id: &str, what: &str) -> (serde_json::Value, u64) {
    let answer = client()
        .get(server.url(&format!("/uploads/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{what}: upload {id} vanished");
    let status: serde_json::Value = answer.json().await.unwrap();
    let head = client()
        .head(server.url(&format!("/uploads/{id}")))
        .send()
        .await
        .unwrap();
    let offset = head.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (status, offset)
}

async fn content_sha(server: &TestServer, id: &str) -> String {
    sha_hex(&content(server, id).await)
}

/// Checks one streamed upload after a restart; returns where its client goes on from.
async fn check_streamed(server: &TestServer, disk: &Disk, upload: &Streamed, what: &str) -> u64 {
    let (status, head) = after_restart(server, &upload.id, what).await;
    let received = status["received"].as_u64().expect("received");
    let (sent, confirmed) = (
        upload.sent.load(Ordering::SeqCst),
        upload.confirmed.load(Ordering::SeqCst),
    );
    let who = format!("{what}: {:?} upload {}", upload.protocol, upload.id);
    assert_eq!(head, received, "{who}: HEAD and status disagree");
    assert!(received <= sent, "{who}: received {received} > sent {sent}");
    assert!(
        received >= confirmed,
        "{who}: received {received} < confirmed {confirmed}"
    );
    let on_disk = fs::metadata(disk.at(&format!("data/files/{}", upload.id)))
        .map(|m| m.len())
        .unwrap_or_else(|e| panic!("{who}: its file: {e}"));
    assert_eq!(on_disk, received, "{who}: the file and received disagree");
    let stored = fs::read(disk.at(&format!("data/files/{}", upload.id))).expect("its file");
    assert!(
        stored == upload.bytes[..received as usize],
        "{who}: the file's {received} bytes are not the ones sent"
    );
    if received == upload.bytes.len() as u64 {
        let expected = sha_hex(&upload.bytes);
        assert_eq!(status["state"], "complete", "{who}");
        assert_eq!(status["sha256"], expected.as_str(), "{who}");
        assert_eq!(content_sha(server, &upload.id).await, expected, "{who}");
    }
    received
}

async fn check_one_shot(server: &TestServer, shot: &OneShot, what: &str, read_content: bool) {
    let (status, _) = after_restart(server, &shot.id, what).await;
    assert_eq!(status["state"], "complete", "{what}: one-shot {}", shot.id);
    assert_eq!(
        status["sha256"],
        shot.sha256.as_str(),
        "{what}: one-shot {}",
        shot.id
    );
    if read_content {
        assert_eq!(content_sha(server, &shot.id).await, shot.sha256, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root and /dev/fuse; .ci/run runs it"]
async fn power_cuts_never_lose_an_acknowledged_byte_or_upload() {
    // O_DIRECT refused: the buffered path with fdatasync.
    power_cut_rounds(false, cuts()).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root and /dev/fuse; .ci/run runs it"]
async fn power_cuts_never_lose_an_acknowledged_byte_written_directly() {
    // O_DIRECT taken: the aligned direct writes and the staged edges, as on ext4 and XFS.
    power_cut_rounds(true, cuts() / 2).await;
}

/// `cuts` rounds of: stream, cut the power, kill, reboot, restart, check.
async fn power_cut_rounds(direct: bool, cuts: usize) {
    let mut disk = Disk::new(direct);
    let data_dir = disk.at("data");
    let mut server = TestServer::start_with(
        &[
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--create-rate",
            "10000/s",
            "--create-burst",
            "100000",
        ],
        &[],
    );
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |bound: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound
    };
    let mut streamed: Vec<Option<(Arc<Streamed>, u64)>> = vec![None, None, None];
    let acknowledged = Arc::new(Mutex::new(Vec::<OneShot>::new()));
    let (mut checked_shots, mut completed, mut mid_body) = (0, 0, 0);
    let (mut starts_cut, mut starts_failed) = (0, 0);
    for cut in 0..cuts {
        let what = format!("cut {cut}");
        for (slot, protocol) in streamed.iter_mut().zip(PROTOCOLS) {
            if slot.is_none() {
                let bytes = Arc::new(data(STREAMED_SIZE, cut as u64 * 3 + protocol as u64));
                let id = create_streamed(server.port, protocol, bytes.len());
                let upload = Streamed {
                    id,
                    protocol,
                    bytes,
                    sent: AtomicU64::new(0),
                    confirmed: AtomicU64::new(0),
                };
                *slot = Some((Arc::new(upload), 0));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for (upload, offset) in streamed.iter().flatten() {
            let (port, upload, offset, stop) = (server.port, upload.clone(), *offset, stop.clone());
            let pace = Duration::from_micros(500 + next(3000));
            clients.push(std::thread::spawn(move || {
                stream(port, &upload, offset, pace, &stop)
            }));
        }
        let watcher = {
            let uploads: Vec<Arc<Streamed>> =
                streamed.iter().flatten().map(|s| s.0.clone()).collect();
            let (port, stop) = (server.port, stop.clone());
            std::thread::spawn(move || watch_offsets(port, &uploads, &stop))
        };
        let shots_before = acknowledged.lock().unwrap().len();
        let one_shots = {
            let (port, stop, acknowledged, seed) =
                (server.port, stop.clone(), acknowledged.clone(), cut as u64);
            std::thread::spawn(move || post_one_shots(port, seed, &stop, &acknowledged))
        };
        tokio::time::sleep(Duration::from_millis(10 + next(250))).await;
        // Mid-body: some upload has bytes on their way that nothing acknowledged yet.
        let in_flight = streamed.iter().flatten().any(|(upload, _)| {
            let sent = upload.sent.load(Ordering::SeqCst);
            sent < upload.bytes.len() as u64 && sent > upload.confirmed.load(Ordering::SeqCst)
        });
        if in_flight {
            mid_body += 1;
        }
        clients.extend([one_shots, watcher]);
        // The power goes: the disk forgets, and the process with it.
        disk.cut();
        server.kill9();
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            client.join().expect("a client thread");
        }
        disk.reboot();
        if cut % 4 == 3 {
            // Now and then the power goes again while the server repairs the last cut.
            starts_cut += 1;
            if disk.cut_during_start(&mut server, Duration::from_millis(next(40))) {
                starts_failed += 1;
            }
        } else {
            server.restart();
        }

        for slot in streamed.iter_mut() {
            let (upload, offset) = slot.as_mut().expect("a streamed upload");
            *offset = check_streamed(&server, &disk, upload, &what).await;
            if *offset == upload.bytes.len() as u64 {
                completed += 1;
                *slot = None;
            }
        }
        let shots: Vec<(String, String)> = acknowledged.lock().unwrap()[shots_before..]
            .iter()
            .map(|s| (s.id.clone(), s.sha256.clone()))
            .collect();
        for (id, sha256) in shots {
            check_one_shot(&server, &OneShot { id, sha256 }, &what, true).await;
            checked_shots += 1;
        }
    }
    // Every acknowledged one-shot is still there, whole, after all the cuts.
    let all = std::mem::take(&mut *acknowledged.lock().unwrap());
    for shot in &all {
        check_one_shot(&server, shot, "after the last cut", false).await;
    }
    let counts = &disk.counts;
    let dropped = counts.dropped_in("data/files");
    println!(
        "{cuts} power cuts (O_DIRECT {}), {mid_body} mid-body, {starts_cut} more during a start ({starts_failed} before it was up); {completed} streamed uploads completed, {} one-shots acknowledged ({checked_shots} read back); the cuts dropped {dropped} unsynced bytes of uploads, {} of the database, and undid {} directory changes; {} file and {} directory syncs, {} direct writes",
        if direct { "taken" } else { "refused" },
        all.len(),
        counts.dropped_in("data"),
        counts.changes_undone,
        counts.file_syncs,
        counts.dir_syncs,
        counts.direct_writes
    );
    assert!(mid_body >= cuts / 2, "only {mid_body} cuts landed mid-body");
    // The cuts met unsynced bytes of uploads: without them this would prove nothing.
    assert!(dropped > 0, "no cut met an upload's unsynced bytes");
    // The counts cover the mounts the cuts ended; enough of the writes went direct there.
    if direct {
        assert!(counts.direct_writes > 0, "no write went through O_DIRECT");
    }
    assert!(completed >= 3 && !all.is_empty());
}

//! The core benchmark: the real server over loopback against the raw disk, in one run.
//!
//! `cargo bench --bench core` (add `-- --quick` for a smaller run). It starts the release
//! `resumable` binary on a fresh data directory, then:
//! 1. writes 1 GiB straight to a file in 8 MiB writes (fdatasync after each, the durability a
//!    PATCH promises; and once more with a single fdatasync at the end),
//! 2. uploads 1 GiB in 8 MiB PATCHes over one keep-alive connection,
//! 3. uploads 32 files of 32 MiB concurrently,
//!
//! and prints throughput, the service/raw ratio, the server's CPU seconds per GiB and its RSS.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
const CHUNK: usize = 8 << 20;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let single_size: u64 = if quick { 256 * MIB } else { 1024 * MIB };
    let (concurrent, each): (usize, u64) = (32, 32 * MIB);

    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-core");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("bench dir");
    let chunk = pseudo_random(CHUNK);

    let raw_each = raw_disk(&work.join("raw.bin"), &chunk, single_size, true);
    let raw_once = raw_disk(&work.join("raw.bin"), &chunk, single_size, false);
    println!(
        "raw disk, {} MiB in 8 MiB writes: fdatasync each {:.0} MB/s, fdatasync once {:.0} MB/s",
        single_size / MIB,
        raw_each,
        raw_once
    );

    let server = Server::start(&work.join("data"));
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let digest = upload(server.port, &chunk, single_size);
    let secs = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    let single = mb_per_s(single_size, secs);
    assert_eq!(
        digest,
        expected_digest(&chunk, single_size),
        "stored SHA-256"
    );
    let gib = single_size as f64 / (1u64 << 30) as f64;
    println!(
        "service, 1 upload of {} MiB in 8 MiB PATCHes: {:.0} MB/s ({:.2} s), server CPU {:.2} s/GiB",
        single_size / MIB,
        single,
        secs,
        cpu / gib
    );
    println!(
        "ratio service/raw disk: {:.2} (fdatasync each 8 MiB), {:.2} (fdatasync once)",
        single / raw_each,
        single / raw_once
    );
    let rss_after_single = server.rss_kib();

    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop, pid) = (peak.clone(), stop.clone(), server.child.id());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let threads: Vec<_> = (0..concurrent)
        .map(|_| {
            let chunk = chunk.clone();
            let port = server.port;
            std::thread::spawn(move || upload(port, &chunk[..], each))
        })
        .collect();
    let expected = expected_digest(&chunk, each);
    for thread in threads {
        assert_eq!(thread.join().expect("upload thread"), expected);
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let total = concurrent as u64 * each;
    println!(
        "service, {concurrent} concurrent uploads of {} MiB: {:.0} MB/s aggregate ({:.2} s), server CPU {:.2} s/GiB",
        each / MIB,
        mb_per_s(total, secs),
        secs,
        cpu / (total as f64 / (1u64 << 30) as f64)
    );
    println!(
        "server RSS: {:.1} MiB after the single upload, peak {:.1} MiB during the concurrent uploads (VmHWM {:.1} MiB)",
        rss_after_single as f64 / 1024.0,
        peak.load(Ordering::Relaxed) as f64 / 1024.0,
        server.hwm_kib() as f64 / 1024.0
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&work);
}

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

/// Deterministic bytes that do not compress or dedupe (xorshift).
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn expected_digest(chunk: &[u8], size: u64) -> String {
    let mut hasher = Sha256::new();
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        hasher.update(&chunk[..n]);
        left -= n as u64;
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The same bytes straight to a file, in the same 8 MiB pieces.
fn raw_disk(path: &Path, chunk: &[u8], size: u64, sync_each: bool) -> f64 {
    let _ = std::fs::remove_file(path);
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .expect("raw file");
    let started = Instant::now();
    let mut offset = 0;
    while offset < size {
        let n = (size - offset).min(chunk.len() as u64) as usize;
        file.write_all_at(&chunk[..n], offset).expect("raw write");
        offset += n as u64;
        if sync_each {
            file.sync_data().expect("raw fdatasync");
        }
    }
    file.sync_data().expect("raw fdatasync");
    let secs = started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(path);
    mb_per_s(size, secs)
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_resumable"))
            .args(["--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start resumable");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Server { child, port }
    }

    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name: utime and stime are the 12th and 13th.
        let after = stat.rsplit(')').next().unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = fields
            .get(11..13)
            .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
            .unwrap_or(0.0);
        ticks / 100.0
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    fn hwm_kib(&self) -> u64 {
        status_field(self.child.id(), "VmHWM:")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

fn status_field(pid: u32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Creates an upload and sends it in 8 MiB PATCHes over one connection; returns its SHA-256.
fn upload(port: u16, chunk: &[u8], size: u64) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_nodelay(true).ok();
    let body = format!("{{\"name\":\"bench.bin\",\"size\":{size}}}");
    let request = format!(
        "POST /uploads HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).expect("create");
    let (status, text) = read_response(&mut conn);
    assert_eq!(status, 201, "{text}");
    let id = json_field(&text, "id");
    let mut offset = 0u64;
    let mut last = String::new();
    while offset < size {
        let n = (size - offset).min(chunk.len() as u64) as usize;
        let head = format!(
            "PATCH /uploads/{id} HTTP/1.1\r\nHost: bench\r\nUpload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {n}\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).expect("patch head");
        conn.write_all(&chunk[..n]).expect("patch body");
        let (status, text) = read_response(&mut conn);
        assert_eq!(status, 200, "{text}");
        offset += n as u64;
        last = text;
    }
    json_field(&last, "sha256")
}

/// Reads one response. Answers here are small, so one read usually holds all of it.
fn read_response(conn: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = conn.read(&mut chunk).expect("response head");
        assert!(n > 0, "connection closed before the answer");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    let missing = length.saturating_sub(body.len());
    let start = body.len();
    body.resize(start + missing, 0);
    conn.read_exact(&mut body[start..]).expect("response body");
    (status, String::from_utf8_lossy(&body).to_string())
}

fn json_field(text: &str, field: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(text).expect("JSON answer");
    value[field].as_str().unwrap_or_default().to_owned()
}

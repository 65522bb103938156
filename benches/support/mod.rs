//! What the benchmarks share: the real server as a child process and a lean raw HTTP client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const MIB: u64 = 1 << 20;

pub fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

/// `size` bytes as `chunk` repeated: whole chunks, then the start of one.
pub fn pieces(chunk: &[u8], size: u64) -> impl Iterator<Item = &[u8]> {
    let whole = size / chunk.len() as u64;
    let rest = (size % chunk.len() as u64) as usize;
    (0..whole)
        .map(move |_| chunk)
        .chain((rest > 0).then(|| &chunk[..rest]))
}

/// Deterministic bytes that do not compress or dedupe (xorshift).
pub fn pseudo_random(len: usize) -> Vec<u8> {
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

pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[], &[])
    }

    /// With more flags and environment (an object store's, say).
    pub fn start_with(data_dir: &Path, args: &[String], envs: &[(String, String)]) -> Server {
        // RESUMABLE_BENCH_BIN runs another build (an older commit's) under the same harness.
        let binary = std::env::var_os("RESUMABLE_BENCH_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_resumable").into());
        let mut child = Command::new(binary)
            .args(["--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
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

    pub fn cpu_seconds(&self) -> f64 {
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

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    pub fn hwm_kib(&self) -> u64 {
        status_field(self.child.id(), "VmHWM:")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

pub fn status_field(pid: u32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Creates an upload of `size` bytes (native JSON API); returns its id.
pub fn create(port: u16, size: u64) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    create_on(&mut conn, size)
}

fn create_on(conn: &mut TcpStream, size: u64) -> String {
    let body = format!("{{\"name\":\"bench.bin\",\"size\":{size}}}");
    let request = format!(
        "POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).expect("create");
    let (status, text) = read_response(conn);
    assert_eq!(status, 201, "{text}");
    json_field(&text, "id")
}

/// Creates an upload and sends it in 8 MiB PATCHes over one connection; returns its SHA-256.
pub fn upload(port: u16, chunk: &[u8], size: u64) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_nodelay(true).ok();
    let id = create_on(&mut conn, size);
    send_patches(&mut conn, &id, chunk, size, "", 200);
    let (_, text) = get(&mut conn, &format!("/uploads/{id}"));
    json_field(&text, "sha256")
}

/// The same upload as a tus client sends it: tus creation, then tus PATCHes (answered 204).
pub fn upload_tus(port: u16, chunk: &[u8], size: u64) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_nodelay(true).ok();
    let request = format!(
        "POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nUpload-Length: {size}\r\nContent-Length: 0\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).expect("create");
    let (status, head) = read_head_and_body(&mut conn);
    assert_eq!(status, 201);
    let location = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .expect("Location")
        .trim()
        .to_owned();
    let id = location.rsplit('/').next().expect("id").to_owned();
    send_patches(&mut conn, &id, chunk, size, "Tus-Resumable: 1.0.0\r\n", 204);
    let (_, text) = get(&mut conn, &format!("/uploads/{id}"));
    json_field(&text, "sha256")
}

fn send_patches(conn: &mut TcpStream, id: &str, chunk: &[u8], size: u64, extra: &str, expect: u16) {
    let mut offset = 0u64;
    while offset < size {
        let n = (size - offset).min(chunk.len() as u64) as usize;
        let head = format!(
            "PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {n}\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).expect("patch head");
        conn.write_all(&chunk[..n]).expect("patch body");
        let (status, text) = read_response(conn);
        assert_eq!(status, expect, "{text}");
        offset += n as u64;
    }
}

fn get(conn: &mut TcpStream, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    conn.write_all(request.as_bytes()).expect("get");
    read_response(conn)
}

fn read_head_and_body(conn: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).expect("response head");
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}

/// Reads one response. Answers here are small, so one read usually holds all of it.
pub fn read_response(conn: &mut TcpStream) -> (u16, String) {
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

pub fn json_field(text: &str, field: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(text).expect("JSON answer");
    value[field].as_str().unwrap_or_default().to_owned()
}

/// The server's object-store requests so far, over every operation and outcome (from
/// /metrics); `None` when it keeps its bytes in a local directory.
pub fn store_requests(port: u16) -> Option<f64> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (status, text) = get(&mut conn, "/metrics");
    assert_eq!(status, 200, "{text}");
    let counts: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("resumable_store_requests_total{"))
        .map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
        .collect::<Option<_>>()
        .expect("request counts are numbers");
    (!counts.is_empty()).then(|| counts.iter().sum())
}

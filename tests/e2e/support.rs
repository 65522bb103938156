//! The harness: the real `resumable` binary on port 0 with a temporary data directory.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::garage::{BucketCounts, Garage};

/// Where a test server keeps its bytes: the local data directory (the default) or a private
/// Garage's bucket (`--storage s3://…`). `on_each_store!` runs a test on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Local,
    S3,
}

/// The key prefix in the bucket of a server on `Store::S3`.
pub const S3_PREFIX: &str = "incoming";

/// Runs an `async fn name(store: Store)` test once on each store, as `name::local` and
/// `name::s3`; the attributes (`#[tokio::test]`, …) go on both.
macro_rules! on_each_store {
    ($(#[$attr:meta])* async fn $name:ident($store:ident: Store) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$attr])*
            async fn local() {
                let $store = $crate::support::Store::Local;
                $body
            }

            $(#[$attr])*
            async fn s3() {
                let $store = $crate::support::Store::S3;
                $body
            }
        }
    };
}
pub(crate) use on_each_store;

pub struct TestServer {
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    dir: TempDir,
    bind: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// Started under `prlimit --nofile=N:N`.
    nofile: Option<u64>,
    /// The store of a server on `Store::S3`; it outlives the server's restarts.
    garage: Option<Garage>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(&[], &[])
    }

    pub fn start_with(args: &[&str], envs: &[(&str, &str)]) -> TestServer {
        TestServer::start_at(Store::Local, "127.0.0.1:0", args, envs)
    }

    pub fn start_on(store: Store) -> TestServer {
        TestServer::start_on_with(store, &[], &[])
    }

    /// On `store`; on `Store::S3` a private Garage is started first, and the server keeps its
    /// bytes in its bucket in 5M parts (the smallest S3 allows, so that a few MiB make parts).
    pub fn start_on_with(store: Store, args: &[&str], envs: &[(&str, &str)]) -> TestServer {
        TestServer::start_at(store, "127.0.0.1:0", args, envs)
    }

    /// On a port of its own that stays the same across restarts (for a browser's origin).
    pub fn start_on_fixed_port(store: Store, args: &[&str]) -> TestServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        TestServer::start_at(store, &format!("127.0.0.1:{port}"), args, &[])
    }

    fn start_at(store: Store, bind: &str, args: &[&str], envs: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let garage = (store == Store::S3).then(Garage::start);
        if let Some(garage) = &garage {
            args.extend(garage.server_args(S3_PREFIX));
            args.extend(["--s3-part-size".to_owned(), "5M".to_owned()]);
            envs.extend(garage.server_envs());
        }
        let mut server = TestServer {
            child: None,
            port: 0,
            base: String::new(),
            dir,
            bind: bind.to_owned(),
            args,
            envs,
            nofile: None,
            garage,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    /// Starts the binary; an error if it exits (or stays silent 30 s) before printing its
    /// address. The child is kept either way, so `kill9` reaps it.
    fn try_spawn(&mut self) -> Result<(), String> {
        let binary = env!("CARGO_BIN_EXE_resumable");
        let mut command = match self.nofile {
            // prlimit execs the server, so the child's pid stays the server's.
            Some(n) => {
                let mut command = Command::new("prlimit");
                command
                    .arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command.args(["--bind", &self.bind]);
        // A test may bring its own data directory (a small disk, say).
        if !self.args.iter().any(|a| a == "--data-dir") {
            command.arg("--data-dir").arg(self.dir.path());
        }
        let mut child = command
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start resumable");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = BufReader::new(stderr).read_to_end(&mut sink);
        });
        self.child = Some(child);
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|e| format!("the server printed no address: {e}"))?;
        let port = port_in(&line);
        self.port = port;
        self.base = format!("http://127.0.0.1:{port}");
        Ok(())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn file_path(&self, id: &str) -> PathBuf {
        self.dir.path().join("files").join(id)
    }

    pub fn stored_files(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("files"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// SIGKILL: no chance to commit anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for the exit; returns how long it took.
    pub fn terminate(&mut self) -> Duration {
        let child = self.child.as_mut().expect("running");
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait().expect("wait").is_some() {
                self.child = None;
                return started.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the binary again on the same data directory (and the same port if fixed).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// `restart`, where the server may fail to start (its disk failing under it, say).
    pub fn try_restart(&mut self) -> Result<(), String> {
        self.kill9();
        self.try_spawn()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn store(&self) -> Store {
        match self.garage {
            Some(_) => Store::S3,
            None => Store::Local,
        }
    }

    /// The Garage of a server on `Store::S3`.
    pub fn garage(&self) -> &Garage {
        self.garage.as_ref().expect("a server on Store::S3")
    }

    pub fn garage_mut(&mut self) -> &mut Garage {
        self.garage.as_mut().expect("a server on Store::S3")
    }

    /// The length of upload `id`'s file, on `Store::Local` (the bucket's parts and tails have
    /// no one length to compare).
    pub fn local_file_len(&self, id: &str) -> Option<u64> {
        // A server given its bucket by the test (several instances share one) has no garage.
        let in_a_bucket = self.args.iter().any(|a| a.starts_with("s3://"));
        match self.garage {
            None if in_a_bucket => None,
            None => Some(
                std::fs::metadata(self.file_path(id))
                    .expect("the upload's file")
                    .len(),
            ),
            Some(_) => None,
        }
    }

    /// Whether the store still holds anything of upload `id`: its file in the data directory,
    /// or its object, tail or multipart upload in the bucket (the bucket is the test's own, so
    /// on S3 this is about every upload the test made).
    pub fn holds_bytes_of(&self, id: &str) -> bool {
        match &self.garage {
            None => self.file_path(id).exists(),
            Some(garage) => garage.counts() != BucketCounts::default(),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Deterministic, incompressible test bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub async fn create(server: &TestServer, name: &str, size: u64) -> Value {
    create_json(server, serde_json::json!({ "name": name, "size": size })).await
}

pub async fn create_json(server: &TestServer, body: Value) -> Value {
    let response = client()
        .post(server.url("/uploads"))
        .json(&body)
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 201, "create {body}");
    response.json().await.expect("status JSON")
}

pub async fn patch(server: &TestServer, id: &str, offset: u64, body: Vec<u8>) -> reqwest::Response {
    client()
        .patch(server.url(&format!("/uploads/{id}")))
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(body)
        .send()
        .await
        .expect("patch")
}

pub async fn status(server: &TestServer, id: &str) -> Value {
    let response = client()
        .get(server.url(&format!("/uploads/{id}")))
        .send()
        .await
        .expect("status");
    assert_eq!(response.status(), 200);
    response.json().await.expect("status JSON")
}

/// The status code of `GET /uploads/{id}`, whatever it is.
pub async fn status_code(server: &TestServer, id: &str) -> u16 {
    client()
        .get(server.url(&format!("/uploads/{id}")))
        .send()
        .await
        .expect("status")
        .status()
        .as_u16()
}

pub async fn received(server: &TestServer, id: &str) -> u64 {
    status(server, id).await["received"]
        .as_u64()
        .expect("received")
}

pub async fn content(server: &TestServer, id: &str) -> Vec<u8> {
    let response = client()
        .get(server.url(&format!("/uploads/{id}/content")))
        .send()
        .await
        .expect("content");
    assert_eq!(response.status(), 200);
    response.bytes().await.expect("bytes").to_vec()
}

/// Polls until `check` holds (or panics after `within`).
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A raw connection to the server that has sent `bytes`; reads time out after 30 s.
pub fn send_raw(port: u16, bytes: &[u8]) -> TcpStream {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    conn.write_all(bytes).expect("send");
    conn.flush().expect("flush");
    conn
}

/// A raw HTTP/1.1 exchange: sends `request` as is, returns (status, head, body).
pub fn raw(port: u16, request: &[u8]) -> (u16, String, String) {
    read_answer(&mut send_raw(port, request))
}

/// Opens a native PATCH at `offset` that declares `declared` bytes and sends only `first`.
pub fn open_patch(port: u16, id: &str, offset: usize, declared: usize, first: &[u8]) -> TcpStream {
    let head = format!(
        "PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Offset: {offset}\r\n\
         Content-Length: {declared}\r\n\r\n"
    );
    let mut conn = send_raw(port, head.as_bytes());
    conn.write_all(first).expect("body");
    conn.flush().expect("flush");
    conn
}

/// The port at the end of the address line the server prints on start.
pub fn port_in(line: &str) -> u16 {
    line.trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// Reads one answer (head and a Content-Length body) from a raw connection.
pub fn read_answer(conn: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = conn.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            return (0, String::from_utf8_lossy(&buf).into_owned(), String::new());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length = header_of(&head, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

pub fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// One sample of GET /metrics (the first line that starts with `name `).
pub async fn metric(server: &TestServer, name: &str) -> f64 {
    metric_opt(server, name)
        .await
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// The same, or `None` when the series is not there (yet).
pub async fn metric_opt(server: &TestServer, name: &str) -> Option<f64> {
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Waits until exactly `count` appends hold their upload's lock: they have begun streaming
/// (or wait for bytes), or, with 0, every append has committed and answered.
pub async fn wait_appends_in_flight(server: &TestServer, count: u64) {
    eventually(
        Duration::from_secs(20),
        &format!("{count} appends in flight"),
        || async { metric(server, "resumable_appends_in_flight").await == count as f64 },
    )
    .await;
}

impl TestServer {
    /// Sets (or with `None` removes) an environment variable for the next start.
    pub fn set_env(&mut self, name: &str, value: Option<&str>) {
        self.envs.retain(|(k, _)| k != name);
        if let Some(value) = value {
            self.envs.push((name.to_owned(), value.to_owned()));
        }
    }

    /// True once the server process has exited by itself (reaping it).
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(_))) | None => {
                self.child = None;
                true
            }
            _ => false,
        }
    }

    /// Waits until the server process has exited by itself (a fault point aborted it).
    pub async fn wait_exited(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.has_exited() {
            assert!(Instant::now() < deadline, "the server did not exit");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The server's process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
}

/// Waits until exactly `count` progress watchers are open on `channel` (`websocket`, `sse` or
/// `poll`): a watcher is counted once it has subscribed to the upload's changes.
pub async fn wait_watchers(server: &TestServer, channel: &str, count: u64) {
    let name = format!("resumable_watchers{{channel=\"{channel}\"}}");
    eventually(
        Duration::from_secs(20),
        &format!("{count} {channel} watchers"),
        || async { metric(server, &name).await == count as f64 },
    )
    .await;
}

/// Waits until the server process has read from its socket every byte sent on `conn`: none
/// wait in this end's send queue nor in the server end's receive queue (Linux's
/// /proc/net/tcp). With the append in flight, they are then in the server's hands, so a
/// takeover or a shutdown commits all of them.
pub async fn wait_sent_bytes_taken(server: &TestServer, conn: &TcpStream) {
    let ours = conn.local_addr().expect("local address").port();
    let theirs = server.port;
    eventually(
        Duration::from_secs(20),
        "the server to read every byte sent",
        || async move {
            let sent = tcp_queues(ours, theirs).map(|(tx, _)| tx);
            let unread = tcp_queues(theirs, ours).map(|(_, rx)| rx);
            sent == Some(0) && unread == Some(0)
        },
    )
    .await;
}

/// (send queue, receive queue) of the local IPv4 socket from port `local` to port `remote`.
fn tcp_queues(local: u16, remote: u16) -> Option<(u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = |address: &str| {
        address
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || port(fields[1])? != local || port(fields[2])? != remote {
            return None;
        }
        let (tx, rx) = fields[4].split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
}

impl TestServer {
    /// A server whose open-file limit (soft and hard) is `limit`.
    pub fn start_with_open_files(limit: u64, args: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = TestServer {
            child: None,
            port: 0,
            base: String::new(),
            dir,
            bind: "127.0.0.1:0".to_owned(),
            args: args.iter().map(|a| a.to_string()).collect(),
            envs: Vec::new(),
            nofile: Some(limit),
            garage: None,
        };
        server.spawn();
        server
    }
}

impl TestServer {
    /// The server process's resident memory, in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .expect("VmRSS in /proc/PID/status")
    }
}

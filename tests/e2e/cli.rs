//! The command-line client in the same binary (`resumable upload|status|watch|download`), run
//! as a user would: the real binary against a real server, its stdout, stderr and exit status
//! checked, and what it did checked through the server's own API (and, where the wire matters,
//! through a relay that sees every byte the client sends).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tempfile::TempDir;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_resumable");

/// How long any one client run may take before the test gives up on it (a deadline for a
/// failure, not the expected time).
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// Large enough that an upload is still under way when the test interrupts it, even with a
/// fast machine; 64 one-MiB chunks.
const BIG: usize = 64 << 20;

/// A user's shell: a cache directory of its own (the client's resume state) and a directory
/// for the files to upload.
struct User {
    cache: TempDir,
    files: TempDir,
}

impl User {
    fn new() -> User {
        User {
            cache: tempfile::tempdir().expect("cache dir"),
            files: tempfile::tempdir().expect("files dir"),
        }
    }

    /// Writes `bytes` to a file named `name` in the user's directory; returns its path.
    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.files.path().join(name);
        std::fs::write(&path, bytes).expect("write the file to upload");
        path.to_str().expect("UTF-8 path").to_owned()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.files.path().join(name)
    }

    /// Where the client keeps its resume state (`$XDG_CACHE_HOME/resumable`).
    fn state_dir(&self) -> PathBuf {
        self.cache.path().join("resumable")
    }

    /// The environment of every client run: this user's cache, and none of the test's own
    /// settings that the client reads.
    fn environ(&self, command: &mut Command) {
        command
            .env("XDG_CACHE_HOME", self.cache.path())
            .env_remove("RESUMABLE_SERVER")
            .env_remove("RESUMABLE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command.args(args);
        self.environ(&mut command);
        command
    }

    fn spawn(&self, args: &[&str]) -> Running {
        Running::spawn(self.command(args), &format!("resumable {}", args.join(" ")))
    }

    async fn run(&self, args: &[&str]) -> Outcome {
        self.spawn(args).finish(RUN_DEADLINE).await
    }

    async fn run_with_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Outcome {
        let mut command = self.command(args);
        command.envs(envs.iter().copied());
        Running::spawn(command, &format!("resumable {}", args.join(" ")))
            .finish(RUN_DEADLINE)
            .await
    }
}

/// A client process under way; its stdout and stderr are read as they come.
struct Running {
    child: Child,
    what: String,
    lines: mpsc::Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
}

fn read_pipe(
    pipe: impl Read + Send + 'static,
    all: Arc<Mutex<String>>,
    lines: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            all.lock().unwrap().push_str(&text);
            if let Some(lines) = &lines {
                let _ = lines.send(text.trim_end_matches(['\r', '\n']).to_owned());
            }
        }
    })
}

impl Running {
    fn spawn(mut command: Command, what: &str) -> Running {
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let (tx, rx) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            read_pipe(child.stdout.take().unwrap(), stdout.clone(), Some(tx)),
            read_pipe(child.stderr.take().unwrap(), stderr.clone(), None),
        ];
        Running {
            child,
            what: what.to_owned(),
            lines: rx,
            stdout,
            stderr,
            readers,
            started: Instant::now(),
        }
    }

    fn so_far(&self) -> String {
        format!(
            "{}\n--- stdout so far ---\n{}\n--- stderr so far ---\n{}",
            self.what,
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// The next stdout line, as it is printed.
    async fn next_line(&mut self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            match self.lines.try_recv() {
                Ok(line) if line.trim().is_empty() => {}
                Ok(line) => return line,
                Err(mpsc::TryRecvError::Disconnected) => {
                    panic!("the client's stdout ended early: {}", self.so_far())
                }
                Err(mpsc::TryRecvError::Empty) => {
                    assert!(
                        Instant::now() < deadline,
                        "no stdout line within {within:?}: {}",
                        self.so_far()
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// The next `--json` event called `name` on stdout (other lines are passed over).
    async fn event(&mut self, name: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {name:?} event within {within:?}: {}",
                self.so_far()
            );
            let line = self.next_line(left).await;
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                if value["event"] == name {
                    return value;
                }
            }
        }
    }

    fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL: the client gets no chance to say or save anything.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGINT, as Ctrl-C sends.
    fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill -INT");
        assert!(status.success());
    }

    /// Waits for the exit (or kills the client and fails after `within`).
    async fn finish(&mut self, within: Duration) -> Outcome {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the client") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the client did not exit within {within:?}: {}",
                    self.so_far()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let took = self.started.elapsed();
        for reader in std::mem::take(&mut self.readers) {
            let _ = reader.join();
        }
        Outcome {
            what: self.what.clone(),
            status,
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
            took,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.has_exited() {
            self.kill9();
        }
    }
}

/// What a client run left: its exit status and everything it printed.
struct Outcome {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Outcome {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// For assertion messages.
    fn show(&self) -> String {
        format!(
            "{} → {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.status, self.took, self.stdout, self.stderr
        )
    }

    fn assert_success(&self) {
        assert_eq!(self.code(), Some(0), "expected exit 0: {}", self.show());
    }

    fn assert_failure(&self) {
        assert_eq!(self.code(), Some(1), "expected exit 1: {}", self.show());
        assert!(
            !self.stderr.contains("panicked"),
            "the client panicked: {}",
            self.show()
        );
        // With --json the reason is in the `failed` event; otherwise a message on stderr.
        let said = !self.stderr.trim().is_empty() || self.stdout.contains(r#""event":"failed""#);
        assert!(said, "no message on stderr: {}", self.show());
    }

    /// The non-empty stdout lines, trimmed.
    fn lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Every stdout line as a `--json` event: each must be a JSON object with an `event`.
    fn events(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .map(|line| {
                let value: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("stdout line {line:?} is not JSON ({e}): {}", self.show())
                });
                assert!(
                    value.is_object() && value["event"].is_string(),
                    "stdout line {line:?} is not an object with an \"event\": {}",
                    self.show()
                );
                value
            })
            .collect()
    }

    /// The first `--json` event called `name`.
    fn event(&self, name: &str) -> Value {
        self.events()
            .into_iter()
            .find(|e| e["event"] == name)
            .unwrap_or_else(|| panic!("no {name:?} event: {}", self.show()))
    }
}

/// A TCP relay in front of the server: it passes everything both ways, counts the bytes the
/// client sends and keeps the first 32 MiB of them, to check what went over the wire. It can
/// also play an overloaded server: answer the next connections' request with a `503` and a
/// `Retry-After` instead of passing it on.
struct Relay {
    port: u16,
    wire: Arc<Wire>,
}

#[derive(Default)]
struct Wire {
    kept: Mutex<Vec<u8>>,
    total: AtomicU64,
    /// How many of the next connections get a 503, and its Retry-After.
    refuse: AtomicU64,
    retry_after: AtomicU64,
    /// When each 503 was sent.
    refused_at: Mutex<Vec<Instant>>,
    /// When each passed-on connection's first bytes arrived.
    requests_at: Mutex<Vec<Instant>>,
}

const RELAY_KEEPS: usize = 32 << 20;

impl Relay {
    fn start(upstream: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay port");
        let port = listener.local_addr().unwrap().port();
        let wire = Arc::new(Wire::default());
        let shared = wire.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let _ = client.set_nodelay(true);
                let wire = shared.clone();
                let refuse = wire
                    .refuse
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if refuse {
                    std::thread::spawn(move || refuse_one(client, &wire));
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = server.set_nodelay(true);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(client, server, Some(wire)));
                std::thread::spawn(move || pump(s2, c2, None));
            }
        });
        Relay { port, wire }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the client sent since the last reset, as lowercase text (heads are ASCII).
    fn requests(&self) -> String {
        String::from_utf8_lossy(&self.wire.kept.lock().unwrap()).to_ascii_lowercase()
    }

    fn bytes_sent(&self) -> u64 {
        self.wire.total.load(Ordering::SeqCst)
    }

    fn reset(&self) {
        self.wire.kept.lock().unwrap().clear();
        self.wire.total.store(0, Ordering::SeqCst);
    }

    /// The next `connections` get `503` with `Retry-After: retry_after` and are closed.
    fn refuse_next(&self, connections: u64, retry_after: u64) {
        self.wire.retry_after.store(retry_after, Ordering::SeqCst);
        self.wire.refuse.store(connections, Ordering::SeqCst);
    }

    fn refused_at(&self) -> Vec<Instant> {
        self.wire.refused_at.lock().unwrap().clone()
    }

    fn requests_at(&self) -> Vec<Instant> {
        self.wire.requests_at.lock().unwrap().clone()
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, record: Option<Arc<Wire>>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut first = true;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(wire) = &record {
            if first {
                wire.requests_at.lock().unwrap().push(Instant::now());
                first = false;
            }
            wire.total.fetch_add(n as u64, Ordering::SeqCst);
            let mut kept = wire.kept.lock().unwrap();
            let room = RELAY_KEEPS.saturating_sub(kept.len()).min(n);
            kept.extend_from_slice(&buf[..room]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// Reads one request (head and `Content-Length` body), answers `503` with `Retry-After`, and
/// closes.
fn refuse_one(mut client: TcpStream, wire: &Wire) {
    client.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let head_end = loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let length: usize = header_of(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = got.len() - head_end;
    while body < length {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => body += n,
        }
    }
    let message =
        r#"{"error":"storage_unavailable","message":"the relay plays an overloaded server"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{message}",
        wire.retry_after.load(Ordering::SeqCst),
        message.len()
    );
    let _ = client.write_all(answer.as_bytes());
    wire.refused_at.lock().unwrap().push(Instant::now());
    let _ = client.shutdown(Shutdown::Write);
    let _ = client.read(&mut buf);
}

/// The upload id at the end of `url`, which must be `{base}/uploads/<uuid>`.
fn id_in(url: &str, base: &str) -> String {
    let id = url
        .trim()
        .strip_prefix(&format!("{base}/uploads/"))
        .unwrap_or_else(|| panic!("{url:?} is not an upload URL under {base}"));
    let uuid_shape = id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        });
    assert!(uuid_shape, "{url:?} does not end with an upload id");
    id.to_owned()
}

fn text_of(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
        .to_owned()
}

/// Waits until the server has received some of upload `id`, and checks it is still under way
/// (else the file was too small to interrupt the upload on this machine). Returns `received`.
async fn wait_partly_received(server: &TestServer, id: &str) -> u64 {
    eventually(
        Duration::from_secs(20),
        "the server to receive part of the upload",
        || async { received(server, id).await > 0 },
    )
    .await;
    let now = status(server, id).await;
    assert_eq!(
        now["state"], "uploading",
        "the upload finished before the test could interrupt it: {now}"
    );
    now["received"].as_u64().unwrap()
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn upload_whole(server: &TestServer, name: &str, bytes: &[u8]) -> String {
    let id = text_of(&create(server, name, bytes.len() as u64).await["id"]);
    for (n, piece) in bytes.chunks(1 << 20).enumerate() {
        let response = patch(server, &id, (n << 20) as u64, piece.to_vec()).await;
        assert_eq!(response.status(), 200);
    }
    id
}

async fn delete(server: &TestServer, id: &str) {
    let response = client()
        .delete(server.url(&format!("/uploads/{id}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204);
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// upload
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn several_files_upload_byte_for_byte_with_one_url_each() {
    let server = TestServer::start();
    let user = User::new();
    let files = [
        ("one-byte.bin", data(1, 1)),
        ("three-hundred-k.bin", data(300 << 10, 2)),
        ("five-m.bin", data(5 << 20, 3)),
    ];
    let paths: Vec<String> = files.iter().map(|(n, b)| user.file(n, b)).collect();
    let mut args: Vec<&str> = vec!["upload"];
    args.extend(paths.iter().map(String::as_str));
    args.extend(["--server", &server.base]);

    let first = user.run(&args).await;
    first.assert_success();
    let urls = first.lines();
    assert_eq!(urls.len(), 3, "one URL per file: {}", first.show());
    let mut names = HashSet::new();
    for url in &urls {
        let id = id_in(url, &server.base);
        let now = status(&server, &id).await;
        let name = text_of(&now["name"]);
        let (_, bytes) = files
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("upload {id} is named {name:?}, none of the files"));
        assert_eq!(now["state"], "complete", "{now}");
        assert_eq!(now["size"], bytes.len() as u64, "{now}");
        assert_eq!(now["sha256"], sha_hex(bytes), "{now}");
        assert!(
            content(&server, &id).await == *bytes,
            "{name}: the stored bytes differ from the file"
        );
        names.insert(name);
    }
    assert_eq!(names.len(), 3, "three different uploads: {urls:?}");
    assert_eq!(
        metric(&server, "resumable_uploads_created_total").await,
        3.0
    );

    // A finished file's state is dropped: the same command makes three new uploads.
    args.extend(["--parallel", "2"]);
    let again = user.run(&args).await;
    again.assert_success();
    let again_urls = again.lines();
    assert_eq!(again_urls.len(), 3, "{}", again.show());
    for url in &again_urls {
        assert!(
            !urls.contains(url),
            "{url} was reused, though its upload had finished"
        );
        let id = id_in(url, &server.base);
        assert_eq!(status(&server, &id).await["state"], "complete");
    }
    assert_eq!(
        metric(&server, "resumable_uploads_created_total").await,
        6.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_rides_out_a_server_crash_and_restart_on_the_same_port() {
    let mut server = TestServer::start_on_fixed_port(Store::Local, &[]);
    let user = User::new();
    let bytes = data(BIG, 21);
    let path = user.file("big.bin", &bytes);
    let mut upload = user.spawn(&[
        "upload",
        &path,
        "--server",
        &server.base,
        "--json",
        "--chunk-size",
        "1M",
    ]);
    let started = upload.event("started", Duration::from_secs(20)).await;
    let id = text_of(&started["id"]);
    assert_eq!(
        started["url"],
        format!("{}/uploads/{id}", server.base),
        "{started}"
    );
    assert_eq!(started["size"], BIG as u64, "{started}");
    wait_partly_received(&server, &id).await;

    server.kill9();
    let killed = Instant::now();
    assert!(
        !upload.has_exited(),
        "the client ended before the server was killed: {}",
        upload.so_far()
    );
    // The client notices (and says so) before the server comes back.
    let retry = upload.event("retry", Duration::from_secs(20)).await;
    assert!(retry["error"].is_string(), "{retry}");
    assert!(retry["wait_seconds"].is_number(), "{retry}");
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(killed.elapsed())).await;
    server.restart();

    let outcome = upload.finish(Duration::from_secs(60)).await;
    outcome.assert_success();
    let complete = outcome.event("complete");
    assert_eq!(complete["id"], id.as_str(), "the same upload, finished");
    assert_eq!(complete["sha256"], sha_hex(&bytes));
    let done = outcome.event("done");
    assert_eq!(done["complete"], 1, "{done}");
    assert_eq!(done["failed"], 0, "{done}");
    assert_eq!(outcome.events().last().unwrap()["event"], "done");
    assert_eq!(status(&server, &id).await["state"], "complete");
    assert!(
        content(&server, &id).await == bytes,
        "the stored bytes differ"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_client_run_again_resumes_at_the_servers_offset_sending_nothing_twice() {
    let server = TestServer::start();
    let relay = Relay::start(server.port);
    let base = relay.base();
    let user = User::new();
    let bytes = data(BIG, 31);
    let path = user.file("resume.bin", &bytes);
    let args = [
        "upload",
        &path,
        "--server",
        &base,
        "--json",
        "--chunk-size",
        "1M",
    ];

    let mut first = user.spawn(&args);
    let started = first.event("started", Duration::from_secs(20)).await;
    assert_eq!(started["resumed"], false, "{started}");
    assert_eq!(started["offset"], 0, "{started}");
    let id = text_of(&started["id"]);
    let url = text_of(&started["url"]);
    assert_eq!(url, format!("{base}/uploads/{id}"));
    wait_partly_received(&server, &id).await;
    first.kill9();

    let state: Vec<_> = std::fs::read_dir(user.state_dir())
        .unwrap_or_else(|e| panic!("no resume state in $XDG_CACHE_HOME/resumable: {e}"))
        .collect();
    assert!(
        !state.is_empty(),
        "$XDG_CACHE_HOME/resumable is empty after an unfinished upload"
    );
    // The cut append has committed what reached the server: its offset is settled.
    wait_appends_in_flight(&server, 0).await;
    let offset = received(&server, &id).await;
    assert!(offset > 0 && offset < BIG as u64, "offset {offset}");

    relay.reset();
    let second = user.run(&args).await;
    second.assert_success();
    let resumed = second.event("started");
    assert_eq!(resumed["url"], url.as_str(), "the same upload: {resumed}");
    assert_eq!(resumed["id"], id.as_str(), "{resumed}");
    assert_eq!(resumed["resumed"], true, "{resumed}");
    assert_eq!(
        resumed["offset"], offset,
        "resumed at the server's offset: {resumed}"
    );
    assert_eq!(second.event("complete")["sha256"], sha_hex(&bytes));
    assert_eq!(status(&server, &id).await["state"], "complete");
    assert!(
        content(&server, &id).await == bytes,
        "the stored bytes differ"
    );
    assert_eq!(
        metric(&server, "resumable_uploads_created_total").await,
        1.0
    );
    assert_eq!(
        metric(&server, "resumable_bytes_received_total").await,
        BIG as f64,
        "bytes committed twice"
    );
    // Nothing before the offset went over the wire again (heads of ~64 requests aside).
    let rest = BIG as u64 - offset;
    let sent = relay.bytes_sent();
    assert!(
        sent >= rest && sent <= rest + (256 << 10),
        "the second run sent {sent} bytes for the {rest} left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_changed_between_runs_starts_a_new_upload_and_says_so() {
    let server = TestServer::start();
    let user = User::new();
    let bytes = data(BIG, 41);
    let path = user.file("changing.bin", &bytes);
    let args = [
        "upload",
        &path,
        "--server",
        &server.base,
        "--json",
        "--chunk-size",
        "1M",
    ];

    let mut first = user.spawn(&args);
    let started = first.event("started", Duration::from_secs(20)).await;
    let old_id = text_of(&started["id"]);
    let old_url = text_of(&started["url"]);
    wait_partly_received(&server, &old_id).await;
    first.kill9();
    wait_appends_in_flight(&server, 0).await;

    // Edit the file's first bytes in place (same size) and touch it.
    let mut changed = bytes.clone();
    changed[..4096].copy_from_slice(&data(4096, 42));
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open the file");
        file.seek(SeekFrom::Start(0)).unwrap();
        file.write_all(&changed[..4096]).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(2))
            .expect("touch");
    }

    let second = user.run(&args).await;
    second.assert_success();
    assert!(
        second.stderr.to_lowercase().contains("changed"),
        "no word that the file changed: {}",
        second.show()
    );
    let restarted = second.event("started");
    let new_id = text_of(&restarted["id"]);
    assert_ne!(restarted["url"], old_url.as_str(), "{}", second.show());
    assert_ne!(new_id, old_id);
    assert_eq!(restarted["resumed"], false, "{restarted}");
    assert_eq!(restarted["offset"], 0, "{restarted}");
    let complete = second.event("complete");
    assert_eq!(complete["id"], new_id.as_str());
    assert_eq!(complete["sha256"], sha_hex(&changed));
    assert!(
        content(&server, &new_id).await == changed,
        "the new upload holds other bytes than the changed file"
    );
    assert_eq!(status(&server, &old_id).await["state"], "uploading");
    assert_eq!(
        metric(&server, "resumable_uploads_created_total").await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_exits_130_says_how_to_resume_and_the_same_command_resumes() {
    let server = TestServer::start();
    let user = User::new();
    let bytes = data(BIG, 51);
    let path = user.file("interrupted.bin", &bytes);
    let args = [
        "upload",
        &path,
        "--server",
        &server.base,
        "--json",
        "--chunk-size",
        "1M",
    ];

    let mut first = user.spawn(&args);
    let started = first.event("started", Duration::from_secs(20)).await;
    let id = text_of(&started["id"]);
    wait_partly_received(&server, &id).await;
    first.interrupt();
    let stopped = first.finish(Duration::from_secs(20)).await;
    assert_eq!(stopped.code(), Some(130), "{}", stopped.show());
    assert!(
        stopped.stderr.contains("same command"),
        "no hint to run the same command again: {}",
        stopped.show()
    );
    wait_appends_in_flight(&server, 0).await;
    assert_eq!(status(&server, &id).await["state"], "uploading");

    let second = user.run(&args).await;
    second.assert_success();
    let resumed = second.event("started");
    assert_eq!(resumed["id"], id.as_str(), "{}", second.show());
    assert_eq!(resumed["resumed"], true, "{resumed}");
    assert!(resumed["offset"].as_u64().unwrap() > 0, "{resumed}");
    assert!(
        content(&server, &id).await == bytes,
        "the stored bytes differ"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_5xx_is_retried_after_its_retry_after_and_given_up_after_retry_for() {
    let server = TestServer::start();
    let relay = Relay::start(server.port);
    let base = relay.base();
    let user = User::new();
    let bytes = data((2 << 20) + 5, 71);
    let path = user.file("overloaded.bin", &bytes);

    // Overloaded for longer than --retry-for: the client gives up, saying why.
    relay.refuse_next(u64::MAX, 1);
    let outcome = user
        .run(&[
            "upload",
            &path,
            "--server",
            &base,
            "--json",
            "--retry-for",
            "2s",
        ])
        .await;
    outcome.assert_failure();
    assert!(
        outcome.took < Duration::from_secs(15),
        "--retry-for 2s took {:?}",
        outcome.took
    );
    let retry = outcome.event("retry");
    assert!(
        retry["error"].as_str().unwrap_or("").contains("503"),
        "{retry}"
    );
    let failed = outcome.event("failed");
    assert_eq!(failed["file"], path.as_str(), "{failed}");
    let done = outcome.events().pop().unwrap();
    assert_eq!(done["event"], "done", "{}", outcome.show());
    assert_eq!(done["complete"], 0, "{done}");
    assert_eq!(done["failed"], 1, "{done}");
    assert!(relay.refused_at().len() >= 2, "it was not retried");

    // One 503 with Retry-After: 3 (longer than a first backoff): the next try waits for it.
    relay.refuse_next(1, 3);
    let refused_before = relay.refused_at().len();
    let answered_before = relay.requests_at().len();
    let mut upload = user.spawn(&["upload", &path, "--server", &base, "--json"]);
    let retry = upload.event("retry", Duration::from_secs(20)).await;
    assert!(
        retry["wait_seconds"].as_f64().unwrap_or(0.0) >= 3.0,
        "Retry-After: 3 not honoured: {retry}"
    );
    let outcome = upload.finish(RUN_DEADLINE).await;
    outcome.assert_success();
    let refused = relay.refused_at()[refused_before];
    let next = relay.requests_at()[answered_before];
    assert!(
        next >= refused + Duration::from_millis(2900),
        "retried {:?} after a 503 with Retry-After: 3",
        next.saturating_duration_since(refused)
    );
    let id = text_of(&outcome.event("complete")["id"]);
    assert!(
        content(&server, &id).await == bytes,
        "the stored bytes differ"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_of_the_same_command_at_once_both_end_well() {
    let server = TestServer::start();
    let user = User::new();
    let bytes = data(BIG, 72);
    let path = user.file("twice.bin", &bytes);
    let args = [
        "upload",
        &path,
        "--server",
        &server.base,
        "--json",
        "--chunk-size",
        "1M",
    ];
    let mut first = user.spawn(&args);
    let id = text_of(&first.event("started", Duration::from_secs(20)).await["id"]);
    wait_partly_received(&server, &id).await;
    first.kill9();
    wait_appends_in_flight(&server, 0).await;

    // The user runs the same command in two terminals: the file ends complete and matching,
    // so each run must say so (exit 0 exactly when the server's SHA-256 is the file's).
    let mut a = user.spawn(&args);
    let mut b = user.spawn(&args);
    let (a, b) = (a.finish(RUN_DEADLINE).await, b.finish(RUN_DEADLINE).await);
    assert_eq!(status(&server, &id).await["state"], "complete");
    assert!(
        content(&server, &id).await == bytes,
        "the stored bytes differ"
    );
    a.assert_success();
    b.assert_success();
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_tus_speaks_tus_and_native_sends_content_digests() {
    let server = TestServer::start();
    let relay = Relay::start(server.port);
    let base = relay.base();
    let user = User::new();

    let bytes = data((3 << 20) + 12345, 61);
    let path = user.file("tus.bin", &bytes);
    let outcome = user
        .run(&[
            "upload",
            &path,
            "--server",
            &base,
            "--protocol",
            "tus",
            "--chunk-size",
            "1M",
        ])
        .await;
    outcome.assert_success();
    let lines = outcome.lines();
    assert_eq!(lines.len(), 1, "{}", outcome.show());
    let id = id_in(lines[0], &base);
    let now = status(&server, &id).await;
    assert_eq!(now["state"], "complete", "{now}");
    assert_eq!(now["sha256"], sha_hex(&bytes), "{now}");
    assert!(
        content(&server, &id).await == bytes,
        "the stored bytes differ"
    );
    let wire = relay.requests();
    assert!(
        wire.contains("tus-resumable: 1.0.0"),
        "no Tus-Resumable header went to the server"
    );
    assert!(
        wire.contains("upload-length: ") && wire.contains(&bytes.len().to_string()),
        "no tus creation with Upload-Length"
    );
    assert!(
        wire.contains("content-type: application/offset+octet-stream"),
        "no tus PATCH"
    );

    // The native API, by contrast: no tus, a Content-Digest on the chunks, and -H headers.
    relay.reset();
    let native = user.file("native.bin", &data((2 << 20) + 7, 62));
    let outcome = user
        .run(&[
            "upload",
            &native,
            "--server",
            &base,
            "-H",
            "X-Cli-Test: hello",
            "--chunk-size",
            "1M",
        ])
        .await;
    outcome.assert_success();
    let id = id_in(outcome.lines()[0], &base);
    assert_eq!(status(&server, &id).await["state"], "complete");
    let wire = relay.requests();
    assert!(
        !wire.contains("tus-resumable"),
        "the native upload spoke tus"
    );
    assert!(
        wire.contains("content-digest: sha-256=:"),
        "no Content-Digest on the native PATCHes"
    );
    assert!(
        wire.contains("x-cli-test: hello"),
        "the -H header was not sent"
    );

    // --no-chunk-digest: chunks go bare, and the whole file is still checked and complete.
    relay.reset();
    let bare = user.file("bare.bin", &data((2 << 20) + 9, 63));
    let outcome = user
        .run(&[
            "upload",
            &bare,
            "--server",
            &base,
            "--chunk-size",
            "1M",
            "--no-chunk-digest",
        ])
        .await;
    outcome.assert_success();
    let id = id_in(outcome.lines()[0], &base);
    assert_eq!(status(&server, &id).await["state"], "complete");
    assert!(
        !relay.requests().contains("content-digest"),
        "--no-chunk-digest still sent a Content-Digest"
    );
}

// ---------------------------------------------------------------------------------------------
// output: a terminal, plain lines, --json, --quiet
// ---------------------------------------------------------------------------------------------

/// Progress-bar characters, or a percentage.
fn shows_a_bar(text: &str) -> bool {
    let bar_chars = "█▉▊▋▌▍▎▏▓▒░━■⣿";
    let chars: Vec<char> = text.chars().collect();
    chars.iter().any(|c| bar_chars.contains(*c))
        || chars
            .windows(2)
            .any(|w| w[0].is_ascii_digit() && w[1] == '%')
        || ["[#", "[=", "##", "=>"].iter().any(|s| text.contains(s))
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_terminal_the_upload_shows_progress_bars() {
    let server = TestServer::start();
    let user = User::new();
    let bytes = data(24 << 20, 71);
    let path = user.file("tty.bin", &bytes);
    // `script` gives the client a pseudo-terminal of 100 columns and passes its exit status.
    let shell = format!(
        "stty cols 100 rows 30; exec '{BIN}' upload '{path}' --server {} --chunk-size 1M",
        server.base
    );
    let mut command = Command::new("script");
    command.args(["-qec", &shell, "/dev/null"]);
    user.environ(&mut command);
    command.env("TERM", "xterm-256color");
    let outcome = Running::spawn(command, &format!("script -qec \"{shell}\""))
        .finish(RUN_DEADLINE)
        .await;
    outcome.assert_success();
    // The URL is printed between redraws of the bar (after a `\r` and an erase-line).
    let prefix = format!("{}/uploads/", server.base);
    let at = outcome
        .stdout
        .find(&prefix)
        .unwrap_or_else(|| panic!("no upload URL on the terminal: {}", outcome.show()));
    let url: String = outcome.stdout[at..]
        .chars()
        .take(prefix.len() + 36)
        .collect();
    let id = id_in(&url, &server.base);
    assert!(
        content(&server, &id).await == bytes,
        "the stored bytes differ"
    );
    assert!(
        shows_a_bar(&outcome.stdout),
        "no progress bar nor percentage on the terminal: {}",
        outcome.show()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn off_a_terminal_progress_is_plain_json_is_one_object_per_line_and_quiet_is_quiet() {
    let server = TestServer::start();
    let user = User::new();

    // Plain: no escape sequences nor carriage returns (no bars) in a pipe.
    let plain = user.file("plain.bin", &data(3 << 20, 81));
    let outcome = user
        .run(&[
            "upload",
            &plain,
            "--server",
            &server.base,
            "--chunk-size",
            "256K",
        ])
        .await;
    outcome.assert_success();
    assert_eq!(outcome.lines().len(), 1, "{}", outcome.show());
    assert!(
        !outcome.stderr.contains('\x1b') && !outcome.stderr.contains('\r'),
        "terminal control characters in piped progress: {:?}",
        outcome.stderr
    );

    // --json: every line an object with an "event"; started first, done last.
    let bytes = data((5 << 20) + 3, 82);
    let path = user.file("json.bin", &bytes);
    let outcome = user
        .run(&["upload", &path, "--server", &server.base, "--json"])
        .await;
    outcome.assert_success();
    let events = outcome.events();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"started"), "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    let started = &events[0];
    assert_eq!(started["file"], path.as_str(), "{started}");
    assert_eq!(started["size"], bytes.len() as u64, "{started}");
    assert_eq!(started["offset"], 0, "{started}");
    assert_eq!(started["resumed"], false, "{started}");
    let id = text_of(&started["id"]);
    assert_eq!(started["url"], format!("{}/uploads/{id}", server.base));
    let mut last_sent = 0;
    for progress in events.iter().filter(|e| e["event"] == "progress") {
        let sent = progress["sent"].as_u64().expect("sent");
        assert!(
            sent >= last_sent && sent <= bytes.len() as u64,
            "{progress}"
        );
        assert_eq!(progress["size"], bytes.len() as u64, "{progress}");
        last_sent = sent;
    }
    let complete = outcome.event("complete");
    assert_eq!(complete["id"], id.as_str(), "{complete}");
    assert_eq!(complete["file"], path.as_str(), "{complete}");
    assert_eq!(complete["size"], bytes.len() as u64, "{complete}");
    assert_eq!(complete["sha256"], sha_hex(&bytes), "{complete}");
    let done = events.last().unwrap();
    assert_eq!(done["complete"], 1, "{done}");
    assert_eq!(done["failed"], 0, "{done}");
    assert!(
        content(&server, &id).await == bytes,
        "the stored bytes differ"
    );

    // --quiet: the URL and nothing else.
    let quiet = user.file("quiet.bin", &data(3 << 20, 83));
    let outcome = user
        .run(&[
            "upload",
            &quiet,
            "--server",
            &server.base,
            "--quiet",
            "--chunk-size",
            "256K",
        ])
        .await;
    outcome.assert_success();
    assert_eq!(outcome.lines().len(), 1, "{}", outcome.show());
    id_in(outcome.lines()[0], &server.base);
    assert!(
        outcome.stderr.trim().is_empty(),
        "--quiet printed on stderr: {}",
        outcome.show()
    );
}

// ---------------------------------------------------------------------------------------------
// watch
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn watch_follows_an_upload_until_it_completes() {
    let server = TestServer::start();
    let user = User::new();
    let bytes = data(3 << 20, 91);
    let id = text_of(&create(&server, "watched.bin", bytes.len() as u64).await["id"]);

    let mut watch = user.spawn(&["watch", &id, "--server", &server.base, "--json"]);
    wait_watchers(&server, "sse", 1).await;
    let first = json(&watch.next_line(Duration::from_secs(20)).await);
    assert_eq!(first["id"], id.as_str(), "{first}");
    assert_eq!(first["state"], "uploading", "{first}");
    assert!(
        !watch.has_exited(),
        "watch exited while the upload is under way"
    );

    for (n, piece) in bytes.chunks(1 << 20).enumerate() {
        let response = patch(&server, &id, (n << 20) as u64, piece.to_vec()).await;
        assert_eq!(response.status(), 200);
    }
    let outcome = watch.finish(Duration::from_secs(20)).await;
    outcome.assert_success();
    let statuses: Vec<Value> = outcome.lines().into_iter().map(json).collect();
    let counts: Vec<u64> = statuses
        .iter()
        .map(|s| s["received"].as_u64().expect("received"))
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "received went down: {counts:?}"
    );
    let last = statuses.last().unwrap();
    assert_eq!(last["state"], "complete", "{}", outcome.show());
    assert_eq!(last["received"], bytes.len() as u64, "{last}");
    assert_eq!(last["sha256"], sha_hex(&bytes), "{last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_by_url_of_an_upload_that_gets_deleted_exits_1() {
    let server = TestServer::start();
    let user = User::new();
    let id = text_of(&create(&server, "doomed.bin", 1 << 20).await["id"]);
    assert_eq!(patch(&server, &id, 0, data(1000, 92)).await.status(), 200);

    // Named by its full URL: no --server needed.
    let url = server.url(&format!("/uploads/{id}"));
    let mut watch = user.spawn(&["watch", &url]);
    wait_watchers(&server, "sse", 1).await;
    assert!(
        !watch.has_exited(),
        "watch exited early: {}",
        watch.so_far()
    );
    delete(&server, &id).await;
    let outcome = watch.finish(Duration::from_secs(20)).await;
    assert_eq!(outcome.code(), Some(1), "{}", outcome.show());
}

// ---------------------------------------------------------------------------------------------
// status and download
// ---------------------------------------------------------------------------------------------

/// `text` with digit-group separators removed (`1,234,567` → `1234567`).
fn without_separators(text: &str) -> String {
    text.chars()
        .filter(|c| ![',', '_', '\u{a0}', '\u{202f}', '\''].contains(c))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_the_state_and_numbers_or_fails_for_unknown_and_gone_uploads() {
    let server = TestServer::start();
    let user = User::new();
    let bytes = data(1_234_567, 101);
    let id = text_of(&create(&server, "status.bin", bytes.len() as u64).await["id"]);
    assert_eq!(
        patch(&server, &id, 0, bytes[..500_000].to_vec())
            .await
            .status(),
        200
    );

    let human = user.run(&["status", &id, "--server", &server.base]).await;
    human.assert_success();
    let text = without_separators(&human.stdout);
    assert!(text.contains("uploading"), "{}", human.show());
    assert!(
        text.contains("500000") && text.contains("1234567"),
        "the received and size numbers are missing: {}",
        human.show()
    );

    let as_json = user
        .run(&["status", &id, "--server", &server.base, "--json"])
        .await;
    as_json.assert_success();
    assert_eq!(as_json.lines().len(), 1, "one line: {}", as_json.show());
    let shown = json(as_json.lines()[0]);
    let truth = status(&server, &id).await;
    for field in ["id", "name", "size", "received", "state", "sha256"] {
        assert_eq!(shown[field], truth[field], "{field}: {shown} vs {truth}");
    }

    // By URL, and with the server from RESUMABLE_SERVER.
    let by_url = user
        .run(&["status", &server.url(&format!("/uploads/{id}")), "--json"])
        .await;
    by_url.assert_success();
    assert_eq!(json(by_url.lines()[0])["received"], 500_000);
    let by_env = user
        .run_with_env(
            &["status", &id, "--json"],
            &[("RESUMABLE_SERVER", &server.base)],
        )
        .await;
    by_env.assert_success();
    assert_eq!(json(by_env.lines()[0])["id"], id.as_str());

    assert_eq!(
        patch(&server, &id, 500_000, bytes[500_000..].to_vec())
            .await
            .status(),
        200
    );
    let done = user.run(&["status", &id, "--server", &server.base]).await;
    done.assert_success();
    assert!(done.stdout.contains("complete"), "{}", done.show());

    let unknown = user
        .run(&[
            "status",
            "00000000-0000-4000-8000-000000000000",
            "--server",
            &server.base,
        ])
        .await;
    unknown.assert_failure();

    delete(&server, &id).await;
    let gone = user.run(&["status", &id, "--server", &server.base]).await;
    gone.assert_failure();
}

#[tokio::test(flavor = "multi_thread")]
async fn download_writes_the_file_resumes_a_partial_one_and_checks_the_digest() {
    let server = TestServer::start();
    let relay = Relay::start(server.port);
    let user = User::new();
    let bytes = data((3 << 20) + 777, 111);
    let id = upload_whole(&server, "download.bin", &bytes).await;

    // Whole.
    let whole = user.path("whole.bin");
    let outcome = user
        .run(&[
            "download",
            &id,
            "-o",
            whole.to_str().unwrap(),
            "--server",
            &server.base,
        ])
        .await;
    outcome.assert_success();
    assert!(read(&whole) == bytes, "the downloaded file differs");

    // A partial file is completed with a Range request.
    let half = bytes.len() / 2;
    let partial = user.path("partial.bin");
    std::fs::write(&partial, &bytes[..half]).unwrap();
    relay.reset();
    let outcome = user
        .run(&[
            "download",
            &id,
            "-o",
            partial.to_str().unwrap(),
            "--server",
            &relay.base(),
        ])
        .await;
    outcome.assert_success();
    assert!(read(&partial) == bytes, "the resumed download differs");
    let wire = relay.requests();
    assert!(
        wire.contains(&format!("range: bytes={half}-")),
        "no Range from the partial file's end went to the server:\n{}",
        wire.chars().take(4000).collect::<String>()
    );

    // A partial file with wrong bytes never ends as a "successful" wrong file.
    let wrong = user.path("wrong.bin");
    std::fs::write(&wrong, data(half, 112)).unwrap();
    let outcome = user
        .run(&[
            "download",
            &id,
            "-o",
            wrong.to_str().unwrap(),
            "--server",
            &server.base,
        ])
        .await;
    if outcome.code() == Some(0) {
        assert!(
            read(&wrong) == bytes,
            "exit 0 with a file whose SHA-256 is not the ETag's: {}",
            outcome.show()
        );
    } else {
        outcome.assert_failure();
    }

    // By URL, without --server.
    let by_url = user.path("by-url.bin");
    let outcome = user
        .run(&[
            "download",
            &server.url(&format!("/uploads/{id}")),
            "-o",
            by_url.to_str().unwrap(),
        ])
        .await;
    outcome.assert_success();
    assert!(read(&by_url) == bytes, "the downloaded file differs");

    // An upload still under way cannot be downloaded.
    let unfinished = text_of(&create(&server, "unfinished.bin", 1000).await["id"]);
    assert_eq!(
        patch(&server, &unfinished, 0, data(10, 113)).await.status(),
        200
    );
    let target = user.path("unfinished.bin");
    let outcome = user
        .run(&[
            "download",
            &unfinished,
            "-o",
            target.to_str().unwrap(),
            "--server",
            &server.base,
        ])
        .await;
    outcome.assert_failure();
}

// ---------------------------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_is_not_there_is_a_clear_error() {
    let user = User::new();
    let path = user.file("nowhere.bin", &data(1000, 121));
    let port = dead_port();
    let base = format!("http://127.0.0.1:{port}");

    let outcome = user
        .run(&["upload", &path, "--server", &base, "--retry-for", "1s"])
        .await;
    outcome.assert_failure();
    assert!(
        outcome.took < Duration::from_secs(15),
        "--retry-for 1s took {:?}",
        outcome.took
    );
    assert!(
        outcome.stderr.contains(&format!("127.0.0.1:{port}")),
        "the message does not name the server: {}",
        outcome.show()
    );

    let outcome = user
        .run(&[
            "status",
            "00000000-0000-4000-8000-000000000000",
            "--server",
            &base,
        ])
        .await;
    outcome.assert_failure();
    assert!(
        outcome.stderr.contains(&format!("127.0.0.1:{port}")),
        "the message does not name the server: {}",
        outcome.show()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_is_a_clear_error() {
    let server = TestServer::start_with(&["--token", "secret"], &[]);
    let user = User::new();
    let path = user.file("token.bin", &data(1000, 131));

    let outcome = user
        .run(&[
            "upload",
            &path,
            "--server",
            &server.base,
            "--token",
            "wrong",
        ])
        .await;
    outcome.assert_failure();
    assert!(
        outcome.took < Duration::from_secs(15),
        "a 401 was retried: {:?}",
        outcome.took
    );
    let said = outcome.stderr.to_lowercase();
    assert!(
        said.contains("token") || said.contains("401"),
        "the message does not mention the token: {}",
        outcome.show()
    );
    assert_eq!(
        metric(&server, "resumable_uploads_created_total").await,
        0.0
    );

    let outcome = user
        .run(&[
            "upload",
            &path,
            "--server",
            &server.base,
            "--token",
            "secret",
        ])
        .await;
    outcome.assert_success();
    let id = id_in(outcome.lines()[0], &server.base);
    assert_eq!(status(&server, &id).await["state"], "complete");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_file_is_a_clear_error() {
    let server = TestServer::start();
    let user = User::new();
    let missing = user.path("does-not-exist.bin");
    let outcome = user
        .run(&[
            "upload",
            missing.to_str().unwrap(),
            "--server",
            &server.base,
        ])
        .await;
    outcome.assert_failure();
    assert!(
        outcome.stderr.contains("does-not-exist.bin"),
        "the message does not name the file: {}",
        outcome.show()
    );
    assert_eq!(
        metric(&server, "resumable_uploads_created_total").await,
        0.0
    );
}

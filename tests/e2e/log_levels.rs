//! A client's mistakes are answered, and logged at WARN or below: ERROR in the server's log
//! means the server failed, never that a client sent garbage.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// The server with its log (JSON lines) going to a file, to be read once it has exited.
struct Logged {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Logged {
    fn start(rust_log: Option<&str>) -> Logged {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("server.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_resumable"));
        command
            .args([
                "--bind",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let mut child = command.spawn().expect("start resumable");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the server prints its address");
        let port = port_in(&line);
        Logged {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    /// SIGTERM, wait for the exit, and return the log's lines.
    fn stop(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::read_to_string(&self.log)
            .expect("the log")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Sends `bytes` on a connection of its own and reads until the server closes it.
fn send(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The server may close before it read everything (that is what some cases test).
    let _ = conn.write_all(bytes);
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    answer
}

fn status_of(answer: &[u8]) -> u16 {
    String::from_utf8_lossy(answer)
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Every kind of client mistake the server answers, each on its own connection.
fn misbehave(port: u16) {
    let id = uuid::Uuid::new_v4();
    let mut huge_head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".to_vec();
    huge_head.extend(std::iter::repeat_n(b'a', 200 * 1024));
    let requests: Vec<(Vec<u8>, u16)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), 400),
        (
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon\r\n\r\n".to_vec(),
            400,
        ),
        (huge_head, 431),
        (
            b"POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\nzz\r\n"
                .to_vec(),
            400,
        ),
        (
            b"POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 5\r\nConnection: close\r\n\r\n{oops"
                .to_vec(),
            400,
        ),
        (
            format!(
                "PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Offset: x\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .into_bytes(),
            400,
        ),
        (
            b"POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: null\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n"
                .to_vec(),
            403,
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".to_vec(),
            421,
        ),
        (
            format!("GET /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .into_bytes(),
            404,
        ),
    ];
    for (request, expected) in requests {
        let answer = send(port, &request);
        assert_eq!(
            status_of(&answer),
            expected,
            "{}",
            String::from_utf8_lossy(&request[..request.len().min(120)])
        );
    }
}

/// A WebSocket client that sends a fragmented ping (control frames cannot be fragmented).
async fn fragmented_ping(port: u16) {
    let base = format!("http://127.0.0.1:{port}");
    let created: serde_json::Value = client()
        .post(format!("{base}/uploads"))
        .json(&serde_json::json!({"name": "w.bin", "size": 10}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut handshake = format!(
            "GET /uploads/{id}/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes();
        handshake.extend_from_slice(&[0x09, 0x80, 1, 2, 3, 4]);
        let answer = send(port, &handshake);
        assert_eq!(status_of(&answer), 101);
    })
    .await
    .unwrap();
}

async fn no_errors_logged(rust_log: Option<&str>) -> Vec<String> {
    let server = Logged::start(rust_log);
    let port = server.port;
    tokio::task::spawn_blocking(move || misbehave(port))
        .await
        .unwrap();
    fragmented_ping(port).await;
    let lines = server.stop();
    let errors: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(
        errors.is_empty(),
        "RUST_LOG={rust_log:?}: client mistakes logged as server errors: {errors:#?}"
    );
    lines
}

#[tokio::test]
async fn client_mistakes_are_never_logged_as_errors() {
    let lines = no_errors_logged(None).await;
    // And at start the server says which caps are in force.
    let limits = lines
        .iter()
        .find(|line| line.contains("\"message\":\"limits\""))
        .expect("a `limits` line at start");
    for field in ["open_files", "max_watchers", "max_appends"] {
        assert!(limits.contains(&format!("\"{field}\":")), "{limits}");
    }
}

#[tokio::test]
async fn client_mistakes_are_never_logged_as_errors_whatever_rust_log_says() {
    no_errors_logged(Some("warn")).await;
    no_errors_logged(Some("debug")).await;
}

//! The nginx recipe of docs/operations.md, run for real: Debian's nginx in front of the
//! service, with the site block the document shows, read out of it. Only its `listen` lines
//! (plain HTTP on a loopback port of its own), its `ssl_` lines (dropped) and the upstream's
//! port (the test server's) are changed. nginx runs in the foreground with a temporary prefix
//! of its own: configuration, logs, pid file and temporary files.
//!
//! The clients name the service `files.example.com`, as the document does (resolved to
//! loopback by the client, never looked up), so nginx passes that name on and the service
//! answers to it through `--public-url`.
//!
//! nginx is Debian's (`apt-get install -y nginx`, which .ci/run does): `nginx` on PATH, else
//! /usr/sbin/nginx. Without it these tests fail rather than skip, as the PostgreSQL ones do:
//! CI installs it, so a skip would only hide them.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// The document whose nginx block is under test.
const OPERATIONS: &str = include_str!("../../docs/operations.md");

/// The first line of that block.
const SITE_MARKER: &str = "# /etc/nginx/conf.d/resumable.conf";

/// The block's `server_name`, which the clients here use.
const NAME: &str = "files.example.com";

/// The block's upstream, replaced by the test server's address.
const UPSTREAM: &str = "server 127.0.0.1:8080;";

const INSTALL: &str = "apt-get install -y nginx";

const MIB: usize = 1 << 20;

/// The document's nginx site block, changed to listen on `listen` in plain HTTP and to pass
/// requests to the service on `upstream`.
fn site_config(upstream: u16, listen: u16) -> String {
    let start = OPERATIONS
        .find(&format!("```nginx\n{SITE_MARKER}"))
        .unwrap_or_else(|| {
            panic!("docs/operations.md has no ```nginx block starting with {SITE_MARKER:?}")
        });
    let body = &OPERATIONS[start + "```nginx\n".len()..];
    let block = &body[..body.find("\n```").expect("the nginx block's closing fence")];
    let (mut listens, mut tls) = (0, 0);
    let mut site = String::new();
    for line in block.lines() {
        let directive = line.trim_start();
        if directive.starts_with("listen ") {
            listens += 1;
            if listens == 1 {
                site.push_str(&format!("    listen 127.0.0.1:{listen};\n"));
            }
            continue;
        }
        if directive.starts_with("ssl_") {
            tls += 1;
            continue;
        }
        site.push_str(line);
        site.push('\n');
    }
    assert!(
        listens > 0 && tls > 0,
        "the nginx block of docs/operations.md has {listens} listen and {tls} ssl_ lines: \
         this test replaces those, and expects both"
    );
    assert_eq!(
        site.matches(UPSTREAM).count(),
        1,
        "the nginx block of docs/operations.md should name the service once, as {UPSTREAM:?}"
    );
    site.replace(UPSTREAM, &format!("server 127.0.0.1:{upstream};"))
}

/// A running nginx, in a prefix of its own; stopped (SIGTERM, its fast shutdown) on drop.
struct Nginx {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
}

impl Nginx {
    /// Starts nginx with `site` inside its `http {}` block, and waits until it has written
    /// its pid file (it has bound every listener by then) and accepts connections on `port`.
    fn start(port: u16, site: &str) -> Result<Nginx, String> {
        let bin = nginx_bin();
        let dir = tempfile::Builder::new()
            .prefix("resumable-nginx-")
            .tempdir()
            .expect("temp dir for nginx");
        let path = |name: &str| dir.path().join(name).display().to_string();
        // As root, the workers would run as `nobody`, who cannot enter this 0700 directory
        // (temporary files); they run as the user running the tests instead.
        // SAFETY: geteuid has no preconditions and touches no memory of ours.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;\n"
        } else {
            ""
        };
        let config = format!(
            "{user}daemon off;\n\
             worker_processes 2;\n\
             pid {pid};\n\
             error_log {error} info;\n\
             events {{\n    worker_connections 1024;\n}}\n\
             http {{\n\
             access_log {access};\n\
             client_body_temp_path {temp}/body;\n\
             proxy_temp_path {temp}/proxy;\n\
             fastcgi_temp_path {temp}/fastcgi;\n\
             uwsgi_temp_path {temp}/uwsgi;\n\
             scgi_temp_path {temp}/scgi;\n\
             {site}}}\n",
            pid = path("nginx.pid"),
            error = path("error.log"),
            access = path("access.log"),
            temp = dir.path().display(),
        );
        std::fs::write(dir.path().join("nginx.conf"), &config).expect("write nginx.conf");
        let output = std::fs::File::create(dir.path().join("nginx.out")).expect("nginx.out");
        let child = Command::new(&bin)
            .arg("-p")
            .arg(format!("{}/", dir.path().display()))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("nginx.out"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
        let mut nginx = Nginx {
            child: Some(child),
            dir,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = nginx.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                nginx.child = None;
                return Err(format!(
                    "nginx exited ({status}):\n{}\nwith this configuration:\n{config}",
                    nginx.log_tail()
                ));
            }
            let pid_written = nginx.dir.path().join("nginx.pid").exists();
            if pid_written && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(nginx);
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not accept connections on {port} within 30 s:\n{}",
                nginx.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The end of nginx's error log and of what it printed.
    fn log_tail(&self) -> String {
        let mut text = String::new();
        for name in ["nginx.out", "error.log"] {
            let log = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            text.push_str(&format!("-- {name}:\n"));
            text.push_str(&lines[lines.len().saturating_sub(20)..].join("\n"));
            text.push('\n');
        }
        text
    }

    /// CPU seconds nginx's processes (master and workers) have used.
    fn cpu_seconds(&self) -> f64 {
        let Some(child) = &self.child else {
            return 0.0;
        };
        let master = child.id() as i32;
        std::iter::once(master)
            .chain(children_of(master))
            .map(cpu_seconds_of)
            .sum()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let master = child.id() as i32;
        let workers = children_of(master);
        // SAFETY: signals our own child; no memory is involved.
        unsafe {
            libc::kill(master, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The workers would keep the port if only the master went.
        for worker in workers {
            // SAFETY: as above, nginx's own workers.
            unsafe {
                libc::kill(worker, libc::SIGKILL);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Debian's nginx: on PATH, else where the package puts it (/usr/sbin, which a user's PATH
/// may lack).
fn nginx_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nginx"))
            .find(|bin| bin.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|bin| bin.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "the nginx tests run Debian's nginx in front of the service and there is none: \
                 install it with `{INSTALL}` (.ci/run does)"
            )
        })
}

/// The processes whose parent is `parent`.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            proc_stat(pid).is_some_and(|fields| fields.get(1) == Some(&parent.to_string()))
        })
        .collect()
}

/// /proc/PID/stat's fields after the command (which may hold anything): state, ppid, …
fn proc_stat(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// User and system CPU seconds of one process (fields 14 and 15, in clock ticks).
fn cpu_seconds_of(pid: i32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    proc_stat(pid)
        .and_then(|fields| {
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / ticks)
        })
        .unwrap_or(0.0)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A test server behind its own nginx.
struct Proxied {
    server: TestServer,
    nginx: Nginx,
    /// `http://files.example.com:<nginx's port>`: what clients use, and `--public-url`.
    public: String,
}

impl Proxied {
    /// The service with `--public-url` naming nginx's address (or without, if `public_url`
    /// is false), and nginx in front of it. A free port is found by binding port 0 and letting
    /// go, so another process may take it before nginx binds it: then both start again.
    fn start(public_url: bool) -> Proxied {
        let mut failures = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let public = format!("http://{NAME}:{port}");
            let args: Vec<&str> = if public_url {
                vec!["--public-url", &public]
            } else {
                Vec::new()
            };
            let server = TestServer::start_with(&args, &[]);
            match Nginx::start(port, &site_config(server.port, port)) {
                Ok(nginx) => {
                    return Proxied {
                        server,
                        nginx,
                        public,
                    }
                }
                Err(why) => failures.push(why),
            }
        }
        panic!("nginx did not start:\n{}", failures.join("\n---\n"));
    }

    /// A URL through nginx, by the public name.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public)
    }

    /// A client that reaches `files.example.com` at nginx, with a 60 s timeout.
    fn client(&self) -> reqwest::Client {
        self.client_builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client")
    }

    /// The same, without a whole-request timeout (for bodies of a GiB).
    fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .resolve(NAME, SocketAddr::from(([127, 0, 0, 1], self.nginx.port)))
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
    }

    /// Creates an upload of `size` bytes through nginx; checks the answer's absolute
    /// `Location` and returns the id.
    async fn create(&self, size: u64) -> String {
        let response = self
            .client()
            .post(self.url("/uploads"))
            .json(&serde_json::json!({ "name": "through-nginx.bin", "size": size }))
            .send()
            .await
            .expect("create through nginx");
        assert_eq!(response.status(), 201, "{}", self.nginx.log_tail());
        let location = response.headers()["location"]
            .to_str()
            .expect("Location")
            .to_owned();
        let status: Value = response.json().await.expect("status JSON");
        let id = status["id"].as_str().expect("id").to_owned();
        assert_eq!(
            location,
            format!("{}/uploads/{id}", self.public),
            "--public-url makes Location absolute"
        );
        id
    }

    /// A native PATCH of `body` at `offset` through nginx; returns the answer's status JSON
    /// after checking it is 200.
    async fn patch(&self, id: &str, offset: u64, body: Vec<u8>) -> Value {
        let response = self
            .client()
            .patch(self.url(&format!("/uploads/{id}")))
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(body)
            .send()
            .await
            .expect("PATCH through nginx");
        let code = response.status();
        let text = response.text().await.expect("PATCH answer");
        assert_eq!(code, 200, "{text}");
        json(&text)
    }
}

/// Makes `size` deterministic bytes on a thread of its own, 1 MiB at a time, hashing them on
/// the way, and hands them to the returned body; after the first `pause_at` bytes it waits for
/// a word on the returned sender. Nothing is held whole: at most a few MiB are in flight.
fn generated_body(
    size: u64,
    seed: u64,
    pause_at: u64,
) -> (
    reqwest::Body,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<(u64, String)>,
) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let maker = std::thread::spawn(move || {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut hasher = Sha256::new();
        let mut sent = 0u64;
        while sent < size {
            if sent == pause_at {
                let _ = wait.recv();
            }
            let until = if sent < pause_at { pause_at } else { size };
            let n = (until - sent).min(MIB as u64) as usize;
            let mut piece = vec![0u8; n];
            for word in piece.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
            }
            hasher.update(&piece);
            if tx.blocking_send(Bytes::from(piece)).is_err() {
                break;
            }
            sent += n as u64;
        }
        let digest: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (sent, digest)
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let piece = rx.recv().await?;
        Some((Ok::<_, std::io::Error>(piece), rx))
    });
    (reqwest::Body::wrap_stream(stream), go, maker)
}

/// The statuses of an upload's SSE stream through nginx, as they come; the channel closes
/// when the stream ends.
async fn sse(proxied: &Proxied, id: &str) -> mpsc::UnboundedReceiver<Value> {
    let response = proxied
        .client_builder()
        .build()
        .expect("client")
        .get(proxied.url(&format!("/uploads/{id}/events")))
        .send()
        .await
        .expect("SSE through nginx");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = response.bytes_stream();
        let mut text = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                if !block.starts_with("event: progress") {
                    continue;
                }
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                    if tx.send(json(data)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// The first status from `statuses` for which `wanted` holds, within 30 s.
async fn wait_status(
    statuses: &mut mpsc::UnboundedReceiver<Value>,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, statuses.recv()).await {
            Ok(Some(status)) if wanted(&status) => return status,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended before {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

#[tokio::test]
async fn one_gib_streams_through_nginx_in_one_patch() {
    const SIZE: u64 = 1 << 30;
    let proxied = Proxied::start(true);
    let id = proxied.create(SIZE).await;
    let (body, go, maker) = generated_body(SIZE, 2027, SIZE / 2);
    let started = Instant::now();
    let cpu_before = proxied.nginx.cpu_seconds();
    let request = proxied
        .client_builder()
        .build()
        .expect("client")
        .patch(proxied.url(&format!("/uploads/{id}")))
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Content-Length", SIZE.to_string())
        .body(body)
        .send();
    let answer = tokio::spawn(request);
    // Half the body is sent and the rest waits. Only if nginx passes the body on as it
    // arrives (proxy_request_buffering off) has the service committed any of it yet.
    eventually(
        Duration::from_secs(60),
        "the service to commit bytes while the body is still being sent through nginx",
        || async { received(&proxied.server, &id).await > 0 },
    )
    .await;
    go.send(()).expect("the generator waits");
    let response = answer
        .await
        .expect("the PATCH task")
        .expect("the 1 GiB PATCH through nginx");
    let code = response.status();
    let text = response.text().await.expect("PATCH answer");
    assert_eq!(code, 200, "{text}\n{}", proxied.nginx.log_tail());
    let took = started.elapsed();
    let (sent, sha256) = maker.join().expect("the generator");
    assert_eq!(sent, SIZE);
    let answered = json(&text);
    assert_eq!(answered["state"], "complete", "{answered}");
    assert_eq!(answered["sha256"], sha256.as_str(), "{answered}");

    let status: Value = proxied
        .client()
        .get(proxied.url(&format!("/uploads/{id}")))
        .send()
        .await
        .expect("status through nginx")
        .json()
        .await
        .expect("status JSON");
    assert_eq!(status["state"], "complete", "{status}");
    assert_eq!(status["received"].as_u64(), Some(SIZE));
    assert_eq!(status["sha256"], sha256.as_str());
    println!(
        "1 GiB in one PATCH through nginx: {:.1} s ({:.0} MB/s); nginx used {:.2} CPU-s",
        took.as_secs_f64(),
        SIZE as f64 / took.as_secs_f64() / 1e6,
        proxied.nginx.cpu_seconds() - cpu_before
    );
}

#[tokio::test]
async fn a_patch_cut_through_nginx_resumes_from_head_offset_with_progress_over_sse() {
    let proxied = Proxied::start(true);
    let bytes = data(48 * MIB, 2028);
    // Never the whole body: the PATCH must be cut before its end.
    let most_sent = 40 * MIB;
    let id = proxied.create(bytes.len() as u64).await;
    let mut statuses = sse(&proxied, &id).await;
    let first = wait_status(&mut statuses, "the first SSE event through nginx", |_| true).await;
    assert_eq!(first["received"], 0, "{first}");

    // A PATCH that declares the whole file and sends it 64 KiB at a time, until the SSE
    // stream through nginx reports bytes committed. (The service commits a checkpoint at most
    // every 100 ms while bytes flow: a burst that then stops is not reported until the body
    // goes on or ends, so the body keeps flowing until the report comes.)
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", proxied.nginx.port))
        .await
        .expect("connect to nginx");
    let head = format!(
        "PATCH /uploads/{id} HTTP/1.1\r\nHost: {NAME}:{port}\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {len}\r\n\r\n",
        port = proxied.nginx.port,
        len = bytes.len()
    );
    conn.write_all(head.as_bytes()).await.expect("send head");
    let step = 64 << 10;
    let mut sent = 0;
    let seen = loop {
        assert!(
            sent < most_sent,
            "no progress over SSE through nginx after {sent} bytes sent"
        );
        conn.write_all(&bytes[sent..sent + step])
            .await
            .expect("send the body");
        sent += step;
        match tokio::time::timeout(Duration::from_millis(20), statuses.recv()).await {
            Ok(Some(status)) if status["received"].as_u64() > Some(0) => break status,
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => panic!("the SSE stream ended"),
        }
    };
    let seen = seen["received"].as_u64().expect("received");

    // The connection is cut mid-body: nginx drops its own to the service, which commits what
    // it stored and lets the upload go.
    drop(conn);
    wait_appends_in_flight(&proxied.server, 0).await;
    let response = proxied
        .client()
        .head(proxied.url(&format!("/uploads/{id}")))
        .send()
        .await
        .expect("HEAD through nginx");
    assert_eq!(response.status(), 200);
    let offset: u64 = response.headers()["upload-offset"]
        .to_str()
        .expect("Upload-Offset")
        .parse()
        .expect("a number");
    assert!(
        seen <= offset && offset <= sent as u64,
        "HEAD says {offset}: at least the {seen} reported, at most the {sent} sent"
    );

    let answered = proxied
        .patch(&id, offset, bytes[offset as usize..].to_vec())
        .await;
    assert_eq!(answered["state"], "complete", "{answered}");
    assert_eq!(answered["sha256"], sha_hex(&bytes).as_str());
    let last = wait_status(&mut statuses, "the complete state over SSE", |status| {
        status["state"] == "complete"
    })
    .await;
    assert_eq!(last["sha256"], sha_hex(&bytes).as_str(), "{last}");
}

#[tokio::test]
async fn websocket_tus_concatenation_and_metrics_through_nginx() {
    let proxied = Proxied::start(true);
    let client = proxied.client();

    // A WebSocket through nginx: the status at once, then the changes, then the close.
    let bytes = data(300_000, 2029);
    let id = proxied.create(bytes.len() as u64).await;
    let request = format!("ws://{NAME}:{}/uploads/{id}/ws", proxied.nginx.port)
        .into_client_request()
        .expect("a WebSocket request");
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", proxied.nginx.port))
        .await
        .expect("connect to nginx");
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap_or_else(|e| panic!("WebSocket through nginx: {e}\n{}", proxied.nginx.log_tail()));
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a first message within 10 s")
        .expect("a message")
        .expect("a good message");
    let first = json(first.to_text().expect("a text message"));
    assert_eq!(first["id"], id.as_str());
    assert_eq!(first["received"], 0);
    proxied.patch(&id, 0, bytes.clone()).await;
    // Every status until the close: the last is the complete one, the close code 1000.
    let mut last = first;
    let close = loop {
        let message = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a message or the close within 20 s");
        match message {
            Some(Ok(Message::Text(text))) => last = json(&text),
            Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
            Some(Ok(_)) => {}
            other => panic!("the WebSocket ended without a close: {other:?}"),
        }
    };
    assert_eq!(last["state"], "complete", "{last}");
    assert_eq!(last["sha256"], sha_hex(&bytes).as_str());
    assert_eq!(close, Some(CloseCode::Normal));

    // tus concatenation: the parts are named by the absolute URLs the client was given, on
    // nginx's port, which nginx's Host ($host) does not carry: --public-url matches them.
    let tus = |request: reqwest::RequestBuilder| request.header("Tus-Resumable", "1.0.0");
    let pieces = [data(70_000, 2030), data(50_000, 2031)];
    let mut parts = Vec::new();
    for piece in &pieces {
        let response = tus(client.post(proxied.url("/uploads")))
            .header("Upload-Concat", "partial")
            .header("Upload-Length", piece.len().to_string())
            .send()
            .await
            .expect("create a part through nginx");
        assert_eq!(response.status(), 201);
        let location = response.headers()["location"]
            .to_str()
            .expect("Location")
            .to_owned();
        assert!(location.starts_with(&proxied.public), "{location}");
        let response = tus(client.patch(&location))
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .body(piece.clone())
            .send()
            .await
            .expect("send a part through nginx");
        assert_eq!(response.status(), 204);
        parts.push(location);
    }
    let response = tus(client.post(proxied.url("/uploads")))
        .header("Upload-Concat", format!("final;{}", parts.join(" ")))
        .send()
        .await
        .expect("create the final through nginx");
    let code = response.status();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().expect("Location").to_owned());
    assert_eq!(code, 201, "{}", response.text().await.unwrap_or_default());
    let whole = [pieces[0].clone(), pieces[1].clone()].concat();
    let status: Value = client
        .get(location.expect("the final's Location"))
        .send()
        .await
        .expect("the final's status through nginx")
        .json()
        .await
        .expect("status JSON");
    assert_eq!(status["state"], "complete", "{status}");
    assert_eq!(status["sha256"], sha_hex(&whole).as_str());

    // /metrics: refused at nginx (to the service, nginx is a loopback peer), served directly.
    let through = client
        .get(proxied.url("/metrics"))
        .send()
        .await
        .expect("metrics through nginx");
    assert_eq!(through.status(), 403);
    let direct = reqwest::get(proxied.server.url("/metrics"))
        .await
        .expect("metrics directly");
    assert_eq!(direct.status(), 200);
}

#[tokio::test]
async fn without_public_url_the_public_name_is_misdirected() {
    let proxied = Proxied::start(false);
    let response = proxied
        .client()
        .get(proxied.url("/healthz"))
        .send()
        .await
        .expect("healthz through nginx");
    assert_eq!(response.status(), 421);
    let answer: Value = response.json().await.expect("error JSON");
    assert_eq!(answer["error"], "misdirected_request", "{answer}");
    // The service itself is fine: the refusal is of the name.
    assert_eq!(
        reqwest::get(proxied.server.url("/healthz"))
            .await
            .expect("healthz directly")
            .status(),
        200
    );
}

#[test]
fn the_site_block_is_read_from_the_document() {
    let site = site_config(1111, 2222);
    assert!(site.contains("server 127.0.0.1:1111;"), "{site}");
    assert!(site.contains("listen 127.0.0.1:2222;"), "{site}");
    assert!(!site.contains("ssl_"), "{site}");
    assert!(!site.contains("443"), "{site}");
}

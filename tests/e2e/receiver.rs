//! A hook receiver for the tests: a real HTTP/1.1 server on 127.0.0.1, on a port of its own
//! (outside the ephemeral range, the same for its whole life) and a runtime of its own, so that
//! it answers whatever the test's runtime is doing. It records every request (head, exact body
//! bytes, parsed JSON) and answers as the test programs it: a status and a JSON body, after a
//! delay if asked. It can go down (the listener and every open connection closed: connections
//! are refused) and come back on the same port.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request as it reached the receiver.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent (path and query).
    pub path: String,
    /// Header names lowercased, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body exactly as sent (de-chunked when chunked).
    pub body: Vec<u8>,
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<Value>,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The event this request delivered (its JSON body).
    pub fn event(&self) -> &Value {
        self.json.as_ref().unwrap_or_else(|| {
            panic!(
                "a hook request whose body is not JSON: {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The event's `type` ("" when none).
    pub fn kind(&self) -> &str {
        self.json
            .as_ref()
            .and_then(|j| j["type"].as_str())
            .unwrap_or("")
    }
}

/// What the receiver answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    /// `200 {}`: accept.
    pub fn ok() -> Reply {
        Reply::json(200, serde_json::json!({}))
    }

    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    /// The same answer, sent only after `delay`.
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Respond = dyn Fn(&Request) -> Reply + Send + Sync;

struct Shared {
    requests: Mutex<Vec<Request>>,
    respond: Mutex<Arc<Respond>>,
    /// The connections being served, closed when the receiver goes down.
    connections: Mutex<Vec<JoinHandle<()>>>,
}

pub struct Receiver {
    pub port: u16,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Receiver {
    /// Listening on 127.0.0.1 at a free port, answering `200 {}` to everything.
    pub fn start() -> Receiver {
        let listener = reserved_port_listener();
        let port = listener.local_addr().expect("receiver address").port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hook-receiver")
            .enable_all()
            .build()
            .expect("the receiver's runtime");
        let receiver = Receiver {
            port,
            shared: Arc::new(Shared {
                requests: Mutex::new(Vec::new()),
                respond: Mutex::new(Arc::new(|_: &Request| Reply::ok())),
                connections: Mutex::new(Vec::new()),
            }),
            runtime: Some(runtime),
            accept: Mutex::new(None),
        };
        receiver.serve(listener);
        receiver
    }

    /// The URL to give `--hooks-url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    /// Answers every request from now on with what `respond` says.
    pub fn respond_with(&self, respond: impl Fn(&Request) -> Reply + Send + Sync + 'static) {
        *self.shared.respond.lock().unwrap() = Arc::new(respond);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The JSON bodies of every request received so far, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.requests().iter().map(|r| r.event().clone()).collect()
    }

    pub fn is_down(&self) -> bool {
        self.accept.lock().unwrap().is_none()
    }

    /// Closes the listener and every open connection: from now on a connection to the port is
    /// refused. Returns once both are closed.
    pub async fn down(&self) {
        let accept = self.accept.lock().unwrap().take();
        let Some(accept) = accept else { return };
        accept.abort();
        let _ = accept.await;
        // The accept loop is gone: no connection can be added any more.
        let connections: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.shared.connections.lock().unwrap());
        for connection in &connections {
            connection.abort();
        }
        for connection in connections {
            let _ = connection.await;
        }
    }

    /// Listens again, on the same port.
    pub async fn up(&self) {
        if !self.is_down() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match std::net::TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "the receiver cannot bind port {} again: {e}",
                        self.port
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.serve(listener);
    }

    fn serve(&self, listener: std::net::TcpListener) {
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let shared = self.shared.clone();
        let runtime = self.runtime.as_ref().expect("the receiver's runtime");
        let accept = runtime.spawn(accept_loop(listener, shared));
        *self.accept.lock().unwrap() = Some(accept);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Dropped inside the test's runtime: a runtime cannot be dropped there, only let go.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A listener on a port of its own for good: below the kernel's ephemeral range, so that
/// while the receiver is down no `bind(0)` (another test's receiver or server) and no outgoing
/// connection can take it, and never one another receiver of this process had.
fn reserved_port_listener() -> std::net::TcpListener {
    static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(12_000));
    // Another process running these tests picks elsewhere in the range, most likely.
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ ((std::process::id() as u64) << 32)
        | 1;
    let mut taken = TAKEN.lock().unwrap();
    for _ in 0..1000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = low + (state % u64::from(high - low)) as u16;
        if taken.contains(&port) {
            continue;
        }
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            taken.push(port);
            return listener;
        }
    }
    panic!("no free port for a hook receiver in {low}..{high}");
}

async fn accept_loop(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let listener = TcpListener::from_std(listener).expect("the receiver's listener");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let task = tokio::spawn(serve_connection(stream, shared.clone()));
        let mut connections = shared.connections.lock().unwrap();
        connections.retain(|c| !c.is_finished());
        connections.push(task);
    }
}

/// Serves the requests of one connection (keep-alive) until it is closed.
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
    };
    loop {
        let Some(request) = conn.read_request().await else {
            return;
        };
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        shared.requests.lock().unwrap().push(request.clone());
        let respond = shared.respond.lock().unwrap().clone();
        let reply = respond(&request);
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
            reply.status,
            reason(reply.status),
            reply.body.len(),
            if close { "Connection: close\r\n" } else { "" },
        );
        let mut answer = head.into_bytes();
        answer.extend_from_slice(reply.body.as_bytes());
        if conn.stream.write_all(&answer).await.is_err() || conn.stream.flush().await.is_err() {
            return;
        }
        if close {
            return;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Reads more bytes into the buffer; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 << 10];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// One line without its CRLF.
    async fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..end].to_vec();
                self.buf.drain(..end + 2);
                return Some(line);
            }
            if self.buf.len() > 1 << 20 || !self.fill().await {
                return None;
            }
        }
    }

    async fn exactly(&mut self, len: usize) -> Option<Vec<u8>> {
        while self.buf.len() < len {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..len).collect())
    }

    async fn read_request(&mut self) -> Option<Request> {
        let mut first = self.line().await?;
        // Tolerate empty lines between requests (RFC 9112 §2.2).
        while first.is_empty() {
            first = self.line().await?;
        }
        let first = String::from_utf8_lossy(&first).into_owned();
        let mut parts = first.split_whitespace();
        let method = parts.next()?.to_owned();
        let path = parts.next()?.to_owned();
        let mut headers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v): &(String, String)| v.clone())
        };
        if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .ok()?;
        }
        let chunked =
            header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let size_line = String::from_utf8_lossy(&self.line().await?).into_owned();
                let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !self.line().await?.is_empty() {}
                    break;
                }
                body.extend(self.exactly(size).await?);
                self.exactly(2).await?;
            }
            body
        } else {
            let length = header("content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            self.exactly(length).await?
        };
        let json = serde_json::from_slice(&body).ok();
        Some(Request {
            method,
            path,
            headers,
            body,
            json,
            at: Instant::now(),
        })
    }
}

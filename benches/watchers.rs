//! The watchers benchmark: 10,000 idle WebSocket watchers and 10,000 pending long polls on a
//! few uploads cost how much memory, slow a 1 GiB upload how much, and how soon do the
//! watchers of that upload see its commits?
//!
//! `cargo bench --bench watchers` (add `-- --quick` for 2,000 of each and 256 MiB). Prints the
//! server's RSS per idle watcher, the upload's throughput with and without watchers, and the
//! delay from a PATCH's answer (its commit) to each watcher's first message showing it.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use support::{create, mb_per_s, pseudo_random, read_response, rss_kib, Server, MIB};

/// Watchers that follow the measured upload, for the delay figures.
const ACTIVE_WATCHERS: usize = 100;
/// The idle watchers spread over this many other uploads.
const IDLE_UPLOADS: usize = 4;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (wanted, size) = if quick {
        (2_000, 256 * MIB)
    } else {
        (10_000, 1024 * MIB)
    };
    let limit = raise_open_file_limit(2 * wanted as u64 + 2_000);
    // Both this process and the server hold one descriptor per watcher, and the server (which
    // inherits this limit) lets watchers of all kinds take half of its descriptors after a
    // reserve of 64 (docs/API.md, "Hostile clients"): past that it refuses them with 503.
    let server_cap = (limit.saturating_sub(64) / 2) as usize;
    let idle_each_kind = wanted
        .min((limit.saturating_sub(1_000) / 2) as usize)
        .min(server_cap.saturating_sub(ACTIVE_WATCHERS) / 2);
    if idle_each_kind < wanted {
        println!(
            "open-file limit {limit}: {idle_each_kind} watchers of each kind instead of {wanted}"
        );
    }

    let work = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-watchers");
    let _ = std::fs::remove_dir_all(&work);
    let server = Server::start(&work);
    let port = server.port;
    let pid = server.child.id();
    let chunk = pseudo_random(8 << 20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");

    let started = Instant::now();
    let plain = timed_upload(port, &chunk, size, None);
    let baseline = mb_per_s(size, started.elapsed().as_secs_f64());
    println!(
        "1 upload of {} MiB, no watchers: {baseline:.0} MB/s",
        size / MIB
    );

    let idle: Vec<String> = (0..IDLE_UPLOADS).map(|_| create(port, 1 << 30)).collect();
    let before = settle_rss(pid);
    let sockets = runtime.block_on(open_websockets(port, &idle, idle_each_kind, None));
    let after_ws = settle_rss(pid);
    let polls = runtime.block_on(open_long_polls(port, &idle, idle_each_kind));
    let after_polls = settle_rss(pid);
    println!(
        "server RSS: {:.1} MiB before, {:.1} MiB with {} idle WebSockets, {:.1} MiB with {} pending long polls too",
        before as f64 / 1024.0,
        after_ws as f64 / 1024.0,
        sockets.len(),
        after_polls as f64 / 1024.0,
        polls.len()
    );
    println!(
        "RSS per idle watcher: {:.2} KiB per WebSocket, {:.2} KiB per long poll (target <= 6 each)",
        (after_ws.saturating_sub(before)) as f64 / sockets.len() as f64,
        (after_polls.saturating_sub(after_ws)) as f64 / polls.len() as f64
    );

    let target = create(port, size);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let active = runtime.block_on(open_websockets(
        port,
        std::slice::from_ref(&target),
        ACTIVE_WATCHERS,
        Some(seen.clone()),
    ));
    let started = Instant::now();
    let answers = timed_upload(port, &chunk, size, Some(&target));
    let watched = mb_per_s(size, started.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "1 upload of {} MiB with {} idle watchers and {} watching it: {watched:.0} MB/s, ratio {:.2} (target >= 0.95)",
        size / MIB,
        sockets.len() + polls.len(),
        active.len(),
        watched / baseline
    );
    let delays = commit_to_message_delays(&answers, &seen.lock().expect("messages"));
    println!(
        "delay from a PATCH's answer to each watcher's first message showing it: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} observations",
        percentile(&delays, 0.50),
        percentile(&delays, 0.99),
        percentile(&delays, 1.0),
        delays.len()
    );
    let _ = plain;
    drop((sockets, polls, active));
    drop(server);
    let _ = std::fs::remove_dir_all(&work);
}

/// Raises this process's open-file limit (the server inherits it) as far as allowed; returns
/// the limit in force.
fn raise_open_file_limit(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or fill the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        let raised = libc::rlimit {
            rlim_cur: wanted.max(limit.rlim_cur),
            rlim_max: wanted.max(limit.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return raised.rlim_cur;
        }
        // Without the privilege to raise the hard limit, go up to it.
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

/// The server's RSS once it has stopped moving (KiB).
fn settle_rss(pid: u32) -> u64 {
    let mut last = rss_kib(pid);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        let now = rss_kib(pid);
        if now.abs_diff(last) < 64 {
            return now;
        }
        last = now;
    }
    last
}

/// Uploads `size` bytes in 8 MiB PATCHes (to `id`, or to a new upload); returns each PATCH's
/// end offset with the moment its answer arrived.
fn timed_upload(port: u16, chunk: &[u8], size: u64, id: Option<&str>) -> Vec<(u64, Instant)> {
    use std::io::Write;
    let id = id.map(str::to_owned).unwrap_or_else(|| create(port, size));
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_nodelay(true).ok();
    let mut answers = Vec::new();
    let mut offset = 0u64;
    while offset < size {
        let n = (size - offset).min(chunk.len() as u64) as usize;
        let head = format!(
            "PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Offset: {offset}\r\nContent-Length: {n}\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).expect("patch head");
        conn.write_all(&chunk[..n]).expect("patch body");
        let (status, text) = read_response(&mut conn);
        assert_eq!(status, 200, "{text}");
        offset += n as u64;
        answers.push((offset, Instant::now()));
    }
    answers
}

/// Local addresses to spread connections over, so 20,000 of them do not run out of ports.
fn local_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 8) as u8))
}

async fn connect(port: u16, i: usize) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(local_ip(i), 0))
        .expect("bind a local address");
    socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("connect")
}

type Seen = Arc<Mutex<Vec<(usize, u64, Instant)>>>;

/// Opens `count` WebSockets spread over `ids`; each keeps reading (answering pings) in its own
/// task. With `seen`, every message's `received` and arrival time is recorded.
async fn open_websockets(
    port: u16,
    ids: &[String],
    count: usize,
    seen: Option<Seen>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let gate = Arc::new(Semaphore::new(256));
    let mut opening = Vec::with_capacity(count);
    for i in 0..count {
        let url = format!("ws://127.0.0.1:{port}/uploads/{}/ws", ids[i % ids.len()]);
        let gate = gate.clone();
        let seen = seen.clone();
        opening.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("gate");
            let stream = connect(port, i).await;
            let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
                .await
                .expect("WebSocket handshake");
            let first = ws.next().await;
            drop(permit);
            let record = |message: Option<Result<Message, _>>| {
                if let (Some(seen), Some(Ok(Message::Text(text)))) = (&seen, message) {
                    let received = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["received"].as_u64())
                        .unwrap_or(0);
                    seen.lock()
                        .expect("seen")
                        .push((i, received, Instant::now()));
                }
            };
            record(first);
            while let Some(message) = ws.next().await {
                record(Some(message));
            }
        }));
    }
    // Wait until every handshake is done (each task holds a permit until then).
    let _all = gate.acquire_many(256).await.expect("gate");
    opening
}

/// Opens `count` long polls that stay pending (the uploads do not change).
async fn open_long_polls(port: u16, ids: &[String], count: usize) -> Vec<TcpStream> {
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let request = format!(
            "GET /uploads/{}/poll?received=0&timeout=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            ids[i % ids.len()]
        );
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("gate");
            let mut stream = connect(port, i + 7).await;
            stream
                .write_all(request.as_bytes())
                .await
                .expect("poll request");
            stream
        }));
    }
    let mut streams = Vec::with_capacity(count);
    for task in tasks {
        streams.push(task.await.expect("poll task"));
    }
    streams
}

/// For every PATCH answer and every watcher: how long until that watcher's first message
/// whose `received` covers the PATCH (milliseconds; 0 when the message came first).
fn commit_to_message_delays(
    answers: &[(u64, Instant)],
    seen: &[(usize, u64, Instant)],
) -> Vec<f64> {
    let mut by_watcher: std::collections::HashMap<usize, Vec<(u64, Instant)>> = Default::default();
    for &(watcher, received, at) in seen {
        by_watcher.entry(watcher).or_default().push((received, at));
    }
    let mut delays = Vec::new();
    for messages in by_watcher.values() {
        for &(offset, answered) in answers {
            if let Some(&(_, at)) = messages.iter().find(|(received, _)| *received >= offset) {
                delays.push(at.saturating_duration_since(answered).as_secs_f64() * 1000.0);
            }
        }
    }
    delays.sort_by(|a, b| a.total_cmp(b));
    delays
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

//! The hooks benchmark: 1,000 small uploads (create, one 4 KiB PATCH, on 8 connections at once)
//! with hooks off, with the `post-*` events only, then with every event on (`pre-create` and
//! `pre-finish` asked too), against a receiver on loopback. Prints uploads per second for each,
//! and how long after an upload's last PATCH was answered its `post-finish` reached the
//! receiver (p50, p99, max) in the last run.
//!
//! `cargo bench --bench hooks` (add `-- --quick` for 200 uploads).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{create, read_response, Server};

const CONNECTIONS: usize = 8;
const SIZE: usize = 4096;
const ALL_EVENTS: &str =
    "pre-create,post-create,post-receive,pre-finish,post-finish,post-terminate";

/// What the receiver saw: each event's type, upload id and arrival time.
type Seen = Arc<Mutex<Vec<(String, String, Instant)>>>;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let uploads = if quick { 200 } else { 1_000 };
    let work = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-hooks");

    let _ = std::fs::remove_dir_all(&work);
    // One client makes every upload here: the per-address create rate limit is off.
    let unlimited = ["--create-rate".to_owned(), "0".to_owned()];
    let plain = Server::start_with(&work.join("off"), &unlimited, &[]);
    let (rate_off, _) = run(plain.port, uploads);
    println!("{uploads} uploads of {SIZE} B, hooks off: {rate_off:.0} uploads/s");

    let (url, seen) = start_receiver();
    // Post events only: what the durable queue costs, without a question per create and finish.
    let post_only: Vec<String> = [
        "--hooks-url",
        &url,
        "--hooks-events",
        "post-create,post-receive,post-finish,post-terminate",
        "--create-rate",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let queued = Server::start_with(&work.join("post"), &post_only, &[]);
    let (rate_post, _) = run(queued.port, uploads);
    println!(
        "{uploads} uploads of {SIZE} B, post-* events only: {rate_post:.0} uploads/s ({:.0} % of off)",
        100.0 * rate_post / rate_off
    );
    wait_quiet(&seen, 2 * uploads);
    drop(queued);
    seen.lock().unwrap_or_else(|p| p.into_inner()).clear();

    let args: Vec<String> = [
        "--hooks-url",
        &url,
        "--hooks-events",
        ALL_EVENTS,
        "--create-rate",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let hooked = Server::start_with(&work.join("on"), &args, &[]);
    let (rate_on, answered) = run(hooked.port, uploads);
    println!(
        "{uploads} uploads of {SIZE} B, every event on: {rate_on:.0} uploads/s ({:.0} % of off)",
        100.0 * rate_on / rate_off
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    let finished = loop {
        let finished = count(&seen, "post-finish");
        if finished >= uploads || Instant::now() > deadline {
            break finished;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut delays: Vec<f64> = {
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter()
            .filter(|(kind, _, _)| kind == "post-finish")
            .filter_map(|(_, id, at)| {
                let (_, done) = answered.iter().find(|(i, _)| i == id)?;
                Some(at.saturating_duration_since(*done).as_secs_f64() * 1000.0)
            })
            .collect()
    };
    delays.sort_by(f64::total_cmp);
    let total = seen.lock().map(|s| s.len()).unwrap_or(0);
    println!(
        "post-finish delivered for {finished} of {uploads}; {total} events in all; \
         delay from the last PATCH's answer: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&delays, 0.50),
        percentile(&delays, 0.99),
        delays.last().copied().unwrap_or(f64::NAN)
    );
}

/// Runs `uploads` uploads over `CONNECTIONS` connections; returns uploads per second and
/// when each upload's PATCH was answered.
fn run(port: u16, uploads: usize) -> (f64, Vec<(String, Instant)>) {
    let body = vec![7u8; SIZE];
    let started = Instant::now();
    let answered: Vec<(String, Instant)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|w| {
                let body = &body;
                scope.spawn(move || {
                    let mine = (w..uploads).step_by(CONNECTIONS).count();
                    (0..mine)
                        .map(|_| one_upload(port, body))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    let rate = uploads as f64 / started.elapsed().as_secs_f64();
    (rate, answered)
}

fn one_upload(port: u16, body: &[u8]) -> (String, Instant) {
    let id = create(port, body.len() as u64);
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_nodelay(true).ok();
    let head = format!(
        "PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).expect("patch head");
    conn.write_all(body).expect("patch body");
    let (status, text) = read_response(&mut conn);
    assert_eq!(status, 200, "{text}");
    (id, Instant::now())
}

/// A receiver on loopback: answers every event `200 {}` and notes it.
fn start_receiver() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
    let url = format!("http://{}/events", listener.local_addr().expect("addr"));
    let seen: Seen = Arc::default();
    let keep = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let seen = keep.clone();
            std::thread::spawn(move || serve(conn, &seen));
        }
    });
    (url, seen)
}

/// Serves one keep-alive connection until the server closes it.
fn serve(conn: TcpStream, seen: &Seen) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut writer = conn;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let at = Instant::now();
        if let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) {
            let kind = event["type"].as_str().unwrap_or_default().to_owned();
            let id = event["upload"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((kind, id, at));
        }
        let answer =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// Waits until `total` events arrived (or 60 s passed), so one run's deliveries do not
/// overlap the next run.
fn wait_quiet(seen: &Seen, total: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().map(|s| s.len()).unwrap_or(0) < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count(seen: &Seen, kind: &str) -> usize {
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    seen.iter().filter(|(k, _, _)| k == kind).count()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

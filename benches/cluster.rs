//! The cluster benchmark: the same concurrent uploads on one instance (SQLite + a local
//! directory) and spread over three instances sharing one PostgreSQL and one Garage bucket,
//! in one run, with watchers on another instance than the one taking the bytes.
//!
//! `cargo bench --bench cluster` (add `-- --quick` for 12 uploads of 16 MiB). It starts the
//! release `resumable` binary, then:
//! 1. one instance: 32 uploads of 32 MiB at once, in 8 MiB PATCHes, each watched over a
//!    WebSocket on the same instance;
//! 2. a private PostgreSQL and Garage on loopback (tests/e2e/postgres.rs, tests/e2e/garage.rs)
//!    and three instances over them: the same uploads with upload i through instance i % 3
//!    and watched on instance (i + 1) % 3;
//! 3. the same again with each upload's PATCHes alternating between two instances and the
//!    watcher on the third;
//! 4. step 2 in 1 MiB PATCHes, each of which ends mid-part (a tail object in the store);
//! 5. one upload in a single PATCH, watched on the instance taking it and then on another:
//!    which offsets each watcher sees.
//!
//! For each it prints the aggregate MB/s; per instance the CPU seconds per GiB taken, peak
//! RSS and object-store requests; the delay from each PATCH's answer to its watcher seeing
//! the new offset (p50/p99); and for the cluster the PostgreSQL statements (by kind, from
//! pg_stat_statements), writing transactions (transaction ids taken), WAL, NOTIFYs (counted
//! by a LISTEN of the bench's own) and connections, per upload and per GiB.
//! docs/scaling.md works from these figures.

mod support;

#[path = "../tests/e2e/garage.rs"]
mod garage;
#[path = "../tests/e2e/postgres.rs"]
mod postgres;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnection, PgListener};
use sqlx::{Connection, Row};
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Message;

use support::{create, mb_per_s, pseudo_random, read_response, rss_kib, Server, MIB};

/// One PATCH is one part: each ends on a part boundary, so no PATCH leaves a tail object
/// behind for the next to read back, and the store requests are those of a large upload.
const PATCH: usize = 8 << 20;
/// PATCHes that each end mid-part: a tail object written, read back by the next one.
const SMALL_PATCH: usize = 1 << 20;
const PART_SIZE: &str = "8M";
const GIB: f64 = (1u64 << 30) as f64;
/// Not an operation: where `store_requests` puts the bytes the store took.
const BYTES_WRITTEN: &str = "bytes_written";
/// Less than the server's keep-alive timeout (actix-web's default, 5 s).
const KEEP_ALIVE: Duration = Duration::from_secs(4);
/// How long the idle instances are watched for what they run on their own.
const IDLE: Duration = Duration::from_secs(10);
/// The channels of src/cluster/postgres.rs, counted apart.
const CHANNELS: [&str; 3] = ["resumable_progress", "resumable_stop", "resumable_released"];

struct Plan {
    uploads: usize,
    size: u64,
}

/// Which instance takes each PATCH, and which one watches the upload.
#[derive(Clone, Copy)]
enum Route {
    /// Upload i through instance i % n, watched on the next one.
    Spread,
    /// Upload i's PATCHes alternate between instances i % n and (i + 1) % n, watched on the
    /// third: every PATCH moves the upload's lock from one instance to another.
    Alternate,
}

impl Route {
    fn writer(self, nodes: usize, upload: usize, patch: usize) -> usize {
        match self {
            Route::Spread => upload % nodes,
            Route::Alternate => (upload + patch % 2) % nodes,
        }
    }

    fn watcher(self, nodes: usize, upload: usize) -> usize {
        match self {
            Route::Spread => (upload + 1) % nodes,
            Route::Alternate => (upload + 2) % nodes,
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let plan = if quick {
        Plan {
            uploads: 12,
            size: 16 * MIB,
        }
    } else {
        Plan {
            uploads: 32,
            size: 32 * MIB,
        }
    };
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-cluster");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("bench dir");
    let chunk = pseudo_random(PATCH);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let bench = Bench {
        runtime: &runtime,
        plan: &plan,
        chunk: &chunk,
    };

    println!("== one instance: SQLite + local directory");
    let single = Server::start(&work.join("single"));
    bench.scenario(&[single], Route::Spread, PATCH, None);

    println!(
        "== three instances: PostgreSQL + S3 (Garage), all on loopback, part size {PART_SIZE}"
    );
    let mut pg = postgres::Postgres::start();
    let tracked = track_statements(&mut pg);
    let garage = garage::Garage::start();
    let nodes: Vec<Server> = (0..3)
        .map(|n| {
            let mut args = vec![
                "--database-url".to_owned(),
                // Tells each instance's sessions apart in pg_stat_activity.
                format!("{}?application_name=node-{n}", pg.url()),
                "--s3-part-size".to_owned(),
                PART_SIZE.to_owned(),
            ];
            args.extend(garage.server_args("bench"));
            Server::start_with(
                &work.join(format!("node-{n}")),
                &args,
                &garage.server_envs(),
            )
        })
        .collect();
    let db = runtime.block_on(Db::connect(&pg.url(), tracked));
    let db = Arc::new(db);
    runtime.block_on(db.idle_cost(nodes.len()));
    let others = Others::find(&pg);
    println!("-- spread: upload i through instance i % 3, watched on instance (i + 1) % 3");
    bench.scenario(&nodes, Route::Spread, PATCH, Some((&db, &others)));
    println!(
        "-- alternating: upload i's PATCHes alternate between instances i % 3 and (i + 1) % 3, watched on (i + 2) % 3"
    );
    bench.scenario(&nodes, Route::Alternate, PATCH, Some((&db, &others)));
    println!("-- spread again, in 1 MiB PATCHes: each ends mid-part");
    bench.scenario(&nodes, Route::Spread, SMALL_PATCH, Some((&db, &others)));
    let state = pg.psql(
        "SELECT avg(octet_length(store_state))::int || ' bytes for ' || \
         avg(jsonb_array_length(convert_from(store_state, 'UTF8')::jsonb -> 'parts'))::int || ' parts' \
         FROM uploads WHERE state = 'complete'",
    );
    println!(
        "store_state of a finished upload: {state} (its parts' ETags; every commit writes it whole)"
    );
    println!(
        "-- one upload in a single {} MiB PATCH through instance 0",
        plan.size / MIB
    );
    for watcher in [0, 1] {
        let seen = bench.one_long_patch(&nodes, watcher);
        println!(
            "  watched on instance {watcher}: the watcher saw received = {}",
            seen.iter()
                .map(|r| format!("{} MiB", r / MIB))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "connections on the database now, idle: {} (Postgres::connections(), the bench's two included); VmHWM per instance: {}",
        pg.connections(),
        nodes
            .iter()
            .map(|n| format!("{:.1} MiB", n.hwm_kib() as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    drop(nodes);
    drop(garage);
    drop(pg);
    let _ = std::fs::remove_dir_all(&work);
}

struct Bench<'a> {
    runtime: &'a Runtime,
    plan: &'a Plan,
    chunk: &'a [u8],
}

/// One PATCH's answer.
#[derive(Clone, Copy)]
struct Answer {
    node: usize,
    start: u64,
    end: u64,
    sent: Instant,
    at: Instant,
}

type Seen = Arc<Mutex<Vec<(u64, Instant)>>>;

impl Bench<'_> {
    /// Creates the uploads, opens their watchers, sends every upload's PATCHes at once, and
    /// prints what it cost.
    fn scenario(
        &self,
        nodes: &[Server],
        route: Route,
        patch: usize,
        db: Option<(&Arc<Db>, &Others)>,
    ) {
        let n = nodes.len();
        // The file is this over and over, one PATCH each.
        let chunk = &self.chunk[..patch];
        let expected = expected_digest(chunk, self.plan.size);
        let plan = self.plan;
        let ports: Vec<u16> = nodes.iter().map(|s| s.port).collect();
        let before = db.map(|(db, _)| self.runtime.block_on(db.snapshot()));
        let requests_before: Vec<BTreeMap<String, f64>> =
            ports.iter().map(|&p| store_requests(p)).collect();
        let cpu_before: Vec<f64> = nodes.iter().map(Server::cpu_seconds).collect();
        let others_before = db.map(|(_, o)| o.cpu_seconds());

        let ids: Vec<String> = (0..plan.uploads)
            .map(|i| create(ports[route.writer(n, i, 0)], plan.size))
            .collect();
        let seen: Vec<Seen> = (0..plan.uploads).map(|_| Seen::default()).collect();
        let watchers: Vec<_> = self.runtime.block_on(async {
            let mut handles = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                let port = ports[route.watcher(n, i)];
                handles.push(open_watcher(port, id, seen[i].clone()).await);
            }
            handles
        });

        let stop = Arc::new(AtomicBool::new(false));
        let peaks: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
        let sampler = {
            let (peaks, stop) = (peaks.clone(), stop.clone());
            let pids: Vec<u32> = nodes.iter().map(|s| s.child.id()).collect();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for (peak, &pid) in peaks.iter().zip(&pids) {
                        peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        let connections = db.map(|(db, _)| {
            let stop = stop.clone();
            self.runtime.spawn(db.clone().sample_connections(stop))
        });

        let started = Instant::now();
        let threads: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let (id, chunk, ports) = (id.clone(), chunk.to_vec(), ports.clone());
                let size = plan.size;
                std::thread::spawn(move || send_upload(&ports, route, i, &id, &chunk, size))
            })
            .collect();
        let (answers, failures): (Vec<Vec<Answer>>, Vec<Vec<String>>) = threads
            .into_iter()
            .map(|t| t.join().expect("upload thread"))
            .unzip();
        let secs = started.elapsed().as_secs_f64();
        let cpu: Vec<f64> = nodes
            .iter()
            .zip(&cpu_before)
            .map(|(s, before)| s.cpu_seconds() - before)
            .collect();
        let others_cpu = match (db, &others_before) {
            (Some((_, others)), Some(before)) => Some(others.cpu_seconds().minus(before)),
            _ => None,
        };
        stop.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        let peak_connections =
            connections.map(|c| self.runtime.block_on(c).expect("connection sampler"));

        // Every watcher ends on its own once it has shown the final state.
        let unfinished = self.runtime.block_on(async {
            let mut unfinished = 0;
            for watcher in watchers {
                if tokio::time::timeout(Duration::from_secs(10), watcher)
                    .await
                    .is_err()
                {
                    unfinished += 1;
                }
            }
            unfinished
        });
        for (i, id) in ids.iter().enumerate() {
            let status = status(ports[route.watcher(n, i)], id);
            assert_eq!(status["state"], "complete", "{status}");
            assert_eq!(status["sha256"], expected.as_str(), "{status}");
        }

        let total = plan.uploads as u64 * plan.size;
        println!(
            "{} concurrent uploads of {} MiB in {} MiB PATCHes: {:.0} MB/s aggregate ({:.2} s)",
            plan.uploads,
            plan.size / MIB,
            patch as u64 / MIB,
            mb_per_s(total, secs),
            secs
        );
        // What failed PATCHes committed before they stopped is left out.
        let mut taken = vec![0u64; n];
        for a in answers.iter().flatten() {
            taken[a.node] += a.end - a.start;
        }
        let mut all_requests = BTreeMap::new();
        for node in 0..n {
            let after = store_requests(ports[node]);
            let mut made = 0.0;
            for (op, count) in &after {
                let delta = count - requests_before[node].get(op).copied().unwrap_or(0.0);
                *all_requests.entry(op.clone()).or_insert(0.0) += delta;
                if op != BYTES_WRITTEN {
                    made += delta;
                }
            }
            let gib = taken[node] as f64 / GIB;
            let store = if after.is_empty() {
                String::new()
            } else {
                format!(", store requests {:.0}/GiB", made / gib)
            };
            println!(
                "  instance {node}: took {:.2} GiB, server CPU {:.2} s/GiB, peak RSS {:.1} MiB{store}",
                gib,
                cpu[node] / gib,
                peaks[node].load(Ordering::Relaxed) as f64 / 1024.0
            );
        }
        if let Some(written) = all_requests.remove(BYTES_WRITTEN) {
            let per_upload: Vec<String> = all_requests
                .iter()
                .filter(|(_, &c)| c > 0.0)
                .map(|(op, c)| format!("{op} {:.2}", c / plan.uploads as f64))
                .collect();
            let sum: f64 = all_requests.values().sum();
            println!(
                "  store requests: {:.0}/GiB, {:.2} per upload ({}); the store took {:.2} bytes per byte uploaded",
                sum / (total as f64 / GIB),
                sum / plan.uploads as f64,
                per_upload.join(", "),
                written / total as f64
            );
        }
        if let Some(cpu) = others_cpu {
            let gib = total as f64 / GIB;
            println!(
                "  beside the instances: PostgreSQL CPU {:.2} s/GiB, Garage {:.2} s/GiB, this bench (client) {:.2} s/GiB",
                cpu.postgres / gib,
                cpu.garage / gib,
                cpu.bench / gib
            );
        }

        let failures: Vec<String> = failures.into_iter().flatten().collect();
        if !failures.is_empty() {
            let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
            for why in &failures {
                *kinds.entry(why.as_str()).or_default() += 1;
            }
            let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} × {k}")).collect();
            println!(
                "  PATCHes that failed (resumed from the server's offset): {}",
                kinds.join(", ")
            );
        }
        let patches: usize = answers.iter().map(Vec::len).sum();
        let mut latencies: Vec<f64> = answers
            .iter()
            .flatten()
            .map(|a| (a.at - a.sent).as_secs_f64() * 1000.0)
            .collect();
        latencies.sort_by(f64::total_cmp);
        println!(
            "  PATCH time, first byte sent to answer ({patches} answered 200): p50 {:.0} ms, p99 {:.0} ms",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99)
        );
        let delays = watcher_delays(&answers, &seen, n, |i| route.watcher(n, i));
        let place = if n == 1 {
            "on the same instance"
        } else {
            "on another instance"
        };
        println!(
            "  watcher {place}: PATCH answered -> watcher shows its offset: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} PATCHes{}",
            percentile(&delays, 0.50),
            percentile(&delays, 0.99),
            percentile(&delays, 1.0),
            delays.len(),
            if n == 1 { "" } else { " (target p99 < 250 ms)" }
        );
        println!(
            "    (max(0, seen - answered) per PATCH: the commit comes before the answer, so this bounds commit -> watcher from above, less the answer's own way back; {} of {} watchers missed the final state)",
            unfinished, plan.uploads
        );

        if let (Some((db, _)), Some(before)) = (db, before) {
            // Notices are heard a moment after they are sent.
            std::thread::sleep(Duration::from_secs(1));
            let after = self.runtime.block_on(db.snapshot());
            db.print(&before, &after, plan.uploads, total);
            if let Some(peak) = peak_connections {
                let per_node: Vec<String> = peak
                    .per_app
                    .iter()
                    .filter(|(app, _)| app.starts_with("node-"))
                    .map(|(app, c)| format!("{app} {c}"))
                    .collect();
                println!(
                    "  connections: peak {} on the database from the instances ({}); each instance may hold 16 pooled + 4 of its own",
                    peak.instances,
                    per_node.join(", ")
                );
            }
        }
    }

    /// One upload sent whole in one PATCH through instance 0 and watched on `watcher`: the
    /// offsets the watcher saw. Mid-body commits come at part boundaries, each one while
    /// the taking instance knows of a watcher, else about once a second.
    fn one_long_patch(&self, nodes: &[Server], watcher: usize) -> Vec<u64> {
        let size = self.plan.size;
        let id = create(nodes[0].port, size);
        let seen = Seen::default();
        let task = self
            .runtime
            .block_on(open_watcher(nodes[watcher].port, &id, seen.clone()));
        let mut conn = TcpStream::connect(("127.0.0.1", nodes[0].port)).expect("connect");
        let head = format!(
            "PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {size}\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).expect("patch head");
        let mut left = size;
        while left > 0 {
            let n = left.min(self.chunk.len() as u64) as usize;
            conn.write_all(&self.chunk[..n]).expect("patch body");
            left -= n as u64;
        }
        let (code, text) = read_response(&mut conn);
        assert_eq!(code, 200, "{text}");
        let _ = self
            .runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await });
        let seen = seen.lock().expect("seen");
        seen.iter().map(|&(received, _)| received).collect()
    }
}

/// Sends one upload's PATCHes, each through the instance the route names (one keep-alive
/// connection per instance). A PATCH that fails is resumed as a client would: from the
/// offset the server reports, on a new connection; the failures are returned, described.
fn send_upload(
    ports: &[u16],
    route: Route,
    upload: usize,
    id: &str,
    chunk: &[u8],
    size: u64,
) -> (Vec<Answer>, Vec<String>) {
    let mut conns: HashMap<usize, (TcpStream, Instant)> = HashMap::new();
    let mut answers = Vec::new();
    let mut failures = Vec::new();
    let mut offset = 0u64;
    let mut patch = 0;
    while offset < size {
        let node = route.writer(ports.len(), upload, patch);
        patch += 1;
        // The server closes a connection idle for 5 s (actix-web's keep-alive), as one to
        // the other instance may be while PATCHes alternate: such a one is not reused.
        if let Some((_, used)) = conns.get(&node) {
            if used.elapsed() > KEEP_ALIVE {
                conns.remove(&node);
            }
        }
        let (conn, used) = conns.entry(node).or_insert_with(|| {
            let conn = TcpStream::connect(("127.0.0.1", ports[node])).expect("connect");
            conn.set_nodelay(true).ok();
            (conn, Instant::now())
        });
        // The file is `chunk` over and over: a PATCH resumed mid-chunk ends at the chunk's
        // end, so the next ones are whole again.
        let from = (offset % chunk.len() as u64) as usize;
        let n = (size - offset).min((chunk.len() - from) as u64) as usize;
        let head = format!(
            "PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {n}\r\n\r\n"
        );
        let sent = Instant::now();
        // Written from another thread while this one reads: a server that answers before the
        // body's end (and closes) is heard before its reset discards the answer.
        let mut writer = conn.try_clone().expect("clone the connection");
        let body = &chunk[from..from + n];
        let (written, answer) = std::thread::scope(|scope| {
            let writing = scope.spawn(move || {
                writer
                    .write_all(head.as_bytes())
                    .and_then(|()| writer.write_all(body))
            });
            let answer = try_read_response(conn);
            if answer.as_ref().is_some_and(|(code, _)| *code != 200) {
                // An early answer may leave the writer blocked on a full socket: unblock it.
                let _ = conn.shutdown(std::net::Shutdown::Write);
            }
            (writing.join().expect("writer"), answer)
        });
        *used = Instant::now();
        match (written, answer) {
            (Ok(()), Some((200, _))) => {
                answers.push(Answer {
                    node,
                    start: offset,
                    end: offset + n as u64,
                    sent,
                    at: Instant::now(),
                });
                offset += n as u64;
            }
            (_, answer) => {
                conns.remove(&node);
                let why = match answer {
                    Some((code, text)) => {
                        let error = serde_json::from_str::<serde_json::Value>(&text)
                            .ok()
                            .and_then(|v| v["error"].as_str().map(str::to_owned))
                            .unwrap_or_default();
                        format!("{code} {error}")
                    }
                    None => "connection closed without an answer".to_owned(),
                };
                failures.push(format!("{why} (instance {node})"));
                let now = status(ports[node], id);
                offset = now["received"].as_u64().expect("received");
            }
        }
    }
    (answers, failures)
}

/// Reads one answer, or `None` if the connection ends first (the server answered early and
/// closed, say, before the client had sent the whole body).
fn try_read_response(conn: &mut TcpStream) -> Option<(u16, String)> {
    use std::io::Read;
    conn.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let mut buf = Vec::with_capacity(4096);
    let mut piece = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match conn.read(&mut piece) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&piece[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
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
    while body.len() < length {
        match conn.read(&mut piece) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&piece[..n]),
        }
    }
    Some((code, String::from_utf8_lossy(&body).to_string()))
}

/// Opens a WebSocket on the upload and waits for its first message (the server has
/// subscribed by then); the returned task records every `received` with its arrival time
/// until the server closes after the final state.
async fn open_watcher(port: u16, id: &str, seen: Seen) -> tokio::task::JoinHandle<()> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let url = format!("ws://127.0.0.1:{port}/uploads/{id}/ws");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("WebSocket handshake");
    let record = move |message: Option<Result<Message, _>>| {
        if let Some(Ok(Message::Text(text))) = message {
            let received = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["received"].as_u64())
                .unwrap_or(0);
            seen.lock().expect("seen").push((received, Instant::now()));
        }
    };
    record(ws.next().await);
    tokio::spawn(async move {
        while let Some(message) = ws.next().await {
            record(Some(message));
        }
    })
}

/// For each PATCH taken by another instance than its watcher's (every PATCH on one
/// instance): milliseconds from its answer to the first message showing its end, 0 when the
/// message came first.
fn watcher_delays(
    answers: &[Vec<Answer>],
    seen: &[Seen],
    nodes: usize,
    watcher: impl Fn(usize) -> usize,
) -> Vec<f64> {
    let single = nodes == 1;
    let mut delays = Vec::new();
    for (i, upload) in answers.iter().enumerate() {
        let messages = seen[i].lock().expect("seen");
        for a in upload {
            if a.node == watcher(i) && !single {
                continue;
            }
            if let Some(&(_, at)) = messages.iter().find(|(received, _)| *received >= a.end) {
                delays.push(at.saturating_duration_since(a.at).as_secs_f64() * 1000.0);
            }
        }
    }
    delays.sort_by(f64::total_cmp);
    delays
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn status(port: u16, id: &str) -> serde_json::Value {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let request = format!("GET /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    conn.write_all(request.as_bytes()).expect("get");
    let (code, text) = read_response(&mut conn);
    assert_eq!(code, 200, "{text}");
    serde_json::from_str(&text).expect("status JSON")
}

/// The object-store requests so far by operation (every outcome), and the bytes the store
/// took as `bytes_written`, from /metrics; empty for an instance without an object store.
fn store_requests(port: u16) -> BTreeMap<String, f64> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("metrics");
    let (code, text) = read_response(&mut conn);
    assert_eq!(code, 200, "{text}");
    let mut by_op = BTreeMap::new();
    for line in text.lines() {
        if let Some(bytes) = line.strip_prefix("resumable_store_bytes_written_total ") {
            by_op.insert(
                BYTES_WRITTEN.to_owned(),
                bytes.parse().expect("a byte count"),
            );
            continue;
        }
        let Some(labels) = line.strip_prefix("resumable_store_requests_total{") else {
            continue;
        };
        let op = labels
            .split("operation=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("?");
        let count: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a request count");
        *by_op.entry(op.to_owned()).or_insert(0.0) += count;
    }
    by_op
}

fn expected_digest(chunk: &[u8], size: u64) -> String {
    let mut hasher = Sha256::new();
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        hasher.update(&chunk[..n]);
        left -= n as u64;
    }
    hex_string(&hasher.finalize())
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// pg_stat_statements needs loading at the server's start: set it, restart the private
/// cluster (same data, same port), create the extension. Whether statements by kind can be
/// shown.
fn track_statements(pg: &mut postgres::Postgres) -> bool {
    let set = pg.try_psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'");
    if let Err(why) = set {
        println!("pg_stat_statements not set ({why}): no statements by kind");
        return false;
    }
    pg.stop_immediate();
    pg.start_again();
    match pg.try_psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements") {
        Ok(_) => true,
        Err(why) => {
            println!("pg_stat_statements unavailable ({why}): no statements by kind");
            false
        }
    }
}

/// The bench's own sessions on the database: one for its queries, one listening to every
/// notice the instances send.
struct Db {
    conn: tokio::sync::Mutex<PgConnection>,
    notices: Arc<[AtomicU64; 3]>,
    statements: bool,
}

struct Statement {
    query: String,
    calls: i64,
    /// WAL the statement itself wrote (a commit record comes after, and is not in it).
    wal_bytes: i64,
}

struct Snapshot {
    /// The next transaction id: every transaction that writes (a commit record at least)
    /// takes one, and this counts them at once, where pg_stat_database's xact_commit trails
    /// (see STATS_SETTLE) and counts read-only ones too.
    next_xid: i64,
    wal_bytes: i64,
    notices: [u64; 3],
    /// The instances' statements since the previous snapshot.
    statements: Vec<Statement>,
}

/// The most connections seen at once during a scenario.
struct Peak {
    instances: i64,
    per_app: BTreeMap<String, i64>,
}

impl Db {
    async fn connect(url: &str, statements: bool) -> Db {
        let conn = PgConnection::connect(&format!("{url}?application_name=bench"))
            .await
            .expect("the bench's connection");
        let mut listener = PgListener::connect(&format!("{url}?application_name=bench-listen"))
            .await
            .expect("the bench's listener");
        listener.listen_all(CHANNELS).await.expect("LISTEN");
        let notices: Arc<[AtomicU64; 3]> = Arc::default();
        let counts = notices.clone();
        tokio::spawn(async move {
            while let Ok(notice) = listener.recv().await {
                if let Some(i) = CHANNELS.iter().position(|c| *c == notice.channel()) {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Db {
            conn: tokio::sync::Mutex::new(conn),
            notices,
            statements,
        }
    }

    async fn rows(&self, sql: &str) -> Vec<sqlx::postgres::PgRow> {
        let mut conn = self.conn.lock().await;
        sqlx::query(sql)
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    async fn number(&self, sql: &str) -> i64 {
        let rows = self.rows(sql).await;
        rows.first().map_or(0, |r| r.get::<i64, _>(0))
    }

    /// Reads the counters, and starts pg_stat_statements afresh: each snapshot's statements
    /// are those since the previous one.
    async fn snapshot(&self) -> Snapshot {
        let next_xid = self
            .number("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
            .await;
        let wal_bytes = self
            .number("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint")
            .await;
        let notices = std::array::from_fn(|i| self.notices[i].load(Ordering::Relaxed));
        let statements: Vec<Statement> = if self.statements {
            // Every query of the bench's own names a pg_stat view or a pg_current function.
            let rows = self
                .rows(
                    "SELECT query, calls, wal_bytes::bigint FROM pg_stat_statements \
                     WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'resumable') \
                     AND query NOT LIKE '%pg_stat%' AND query NOT LIKE '%pg_current%' \
                     ORDER BY calls DESC",
                )
                .await;
            self.rows("SELECT pg_stat_statements_reset()").await;
            rows.iter()
                .map(|r| Statement {
                    query: r.get(0),
                    calls: r.get(1),
                    wal_bytes: r.get(2),
                })
                .collect()
        } else {
            Vec::new()
        };
        Snapshot {
            next_xid,
            wal_bytes,
            notices,
            statements,
        }
    }

    /// What the instances run with nothing to do.
    async fn idle_cost(&self, nodes: usize) {
        self.snapshot().await;
        tokio::time::sleep(IDLE).await;
        let idle = self.snapshot().await;
        if self.statements {
            let calls: i64 = idle.statements.iter().map(|s| s.calls).sum();
            let kinds: Vec<String> = idle
                .statements
                .iter()
                .map(|s| format!("{} × {:?}", s.calls, short(&s.query)))
                .collect();
            let secs = IDLE.as_secs_f64();
            println!(
                "idle: {:.2} statements/s per instance ({calls} in {secs:.0} s over {nodes} instances: {})",
                calls as f64 / secs / nodes as f64,
                kinds.join(", ")
            );
        }
    }

    /// Counts the sessions on the database every 200 ms until `stop`.
    async fn sample_connections(self: Arc<Self>, stop: Arc<AtomicBool>) -> Peak {
        let mut peak = Peak {
            instances: 0,
            per_app: BTreeMap::new(),
        };
        while !stop.load(Ordering::Relaxed) {
            let rows = self
                .rows(
                    "SELECT coalesce(application_name, ''), count(*) FROM pg_stat_activity \
                     WHERE datname = 'resumable' AND backend_type = 'client backend' \
                     GROUP BY 1",
                )
                .await;
            let mut instances = 0;
            for row in rows {
                let (app, count): (String, i64) = (row.get(0), row.get(1));
                if app.starts_with("node-") {
                    instances += count;
                }
                let entry = peak.per_app.entry(app).or_insert(0);
                *entry = (*entry).max(count);
            }
            peak.instances = peak.instances.max(instances);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        peak
    }

    /// One scenario's statements, WAL and notices, per upload and per GiB.
    fn print(&self, before: &Snapshot, after: &Snapshot, uploads: usize, bytes: u64) {
        let uploads = uploads as f64;
        let gib = bytes as f64 / GIB;
        let (keepalive, work): (Vec<&Statement>, Vec<&Statement>) = after
            .statements
            .iter()
            .partition(|s| is_keepalive(&s.query));
        if self.statements {
            let calls: i64 = work.iter().map(|s| s.calls).sum();
            println!(
                "  PostgreSQL: {:.1} statements per upload, {:.0} per GiB, each its own transaction ({} keep-alive SELECT 1 left out)",
                calls as f64 / uploads,
                calls as f64 / gib,
                keepalive.iter().map(|s| s.calls).sum::<i64>()
            );
            for s in &work {
                println!(
                    "    {:>6.2} per upload  {:>6.0} per GiB  {:>4} WAL B/call  {}",
                    s.calls as f64 / uploads,
                    s.calls as f64 / gib,
                    s.wal_bytes / s.calls.max(1),
                    short(&s.query)
                );
            }
        }
        let wal = (after.wal_bytes - before.wal_bytes) as f64 / 1024.0;
        let xids = (after.next_xid - before.next_xid) as f64;
        let notices: Vec<String> = CHANNELS
            .iter()
            .enumerate()
            .map(|(i, channel)| {
                let n = (after.notices[i] - before.notices[i]) as f64;
                format!("{channel} {:.2} ({:.0}/GiB)", n / uploads, n / gib)
            })
            .collect();
        println!(
            "  PostgreSQL: {:.1} writing transactions per upload, {:.0} per GiB (transaction ids taken); WAL {:.1} KiB per upload, {:.0} KiB per GiB",
            xids / uploads,
            xids / gib,
            wal / uploads,
            wal / gib
        );
        println!(
            "  NOTIFYs per upload (heard by the bench's LISTEN; every instance hears every one): {}",
            notices.join(", ")
        );
    }
}

fn is_keepalive(query: &str) -> bool {
    matches!(query.trim(), "SELECT 1" | "SELECT $1")
}

fn short(query: &str) -> String {
    let one_line = query.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(90) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

/// The processes beside the instances: PostgreSQL (postmaster and every backend), Garage,
/// and this bench.
struct Others {
    postmaster: u32,
    garage: Option<u32>,
}

struct OthersCpu {
    postgres: f64,
    garage: f64,
    bench: f64,
}

impl OthersCpu {
    fn minus(&self, before: &OthersCpu) -> OthersCpu {
        OthersCpu {
            postgres: self.postgres - before.postgres,
            garage: self.garage - before.garage,
            bench: self.bench - before.bench,
        }
    }
}

impl Others {
    fn find(pg: &postgres::Postgres) -> Others {
        let pid_file =
            std::fs::read_to_string(pg.data().join("postmaster.pid")).expect("postmaster.pid");
        let postmaster = pid_file
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("the postmaster's pid");
        let me = std::process::id();
        let garage = all_processes()
            .into_iter()
            .find(|p| p.ppid == me && p.comm == "garage")
            .map(|p| p.pid);
        Others { postmaster, garage }
    }

    fn cpu_seconds(&self) -> OthersCpu {
        let all = all_processes();
        let tree = |root: u32| -> f64 {
            all.iter()
                .filter(|p| p.pid == root || p.ppid == root)
                .map(|p| p.ticks)
                .sum::<f64>()
                / 100.0
        };
        let me = std::process::id();
        OthersCpu {
            postgres: tree(self.postmaster),
            garage: self.garage.map_or(0.0, |g| {
                all.iter().find(|p| p.pid == g).map_or(0.0, |p| p.ticks) / 100.0
            }),
            bench: all.iter().find(|p| p.pid == me).map_or(0.0, |p| p.ticks) / 100.0,
        }
    }
}

struct Process {
    pid: u32,
    ppid: u32,
    comm: String,
    /// utime + stime + cutime + cstime: children that exited (a postmaster's closed
    /// sessions) count with their parent.
    ticks: f64,
}

fn all_processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let open = stat.find('(')?;
            let close = stat.rfind(')')?;
            let comm = stat.get(open + 1..close)?.to_owned();
            let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
            let ticks = fields
                .get(11..15)?
                .iter()
                .filter_map(|v| v.parse::<f64>().ok())
                .sum();
            Some(Process {
                pid,
                ppid: fields.get(1)?.parse().ok()?,
                comm,
                ticks,
            })
        })
        .collect()
}

//! The core benchmark: the real server over loopback against the raw disk, in one run.
//!
//! `cargo bench --bench core` (add `-- --quick` for a smaller run). It starts the release
//! `resumable` binary on a fresh data directory, then:
//! 1. writes 1 GiB straight to a file in 8 MiB writes (fdatasync after each, the durability a
//!    PATCH promises; and once more with a single fdatasync at the end),
//! 2. uploads 1 GiB in 8 MiB PATCHes over one keep-alive connection,
//! 3. uploads the same 1 GiB again as a tus client would (tus creation and PATCHes),
//! 4. uploads 32 files of 32 MiB concurrently,
//!
//! and prints throughput, the service/raw ratio, the server's CPU seconds per GiB and its RSS
//! (and, with an object store, the store requests per GiB each step caused, from /metrics).
//!
//! `-- --store s3` runs steps 2–4 a second time with the bytes in a private Garage on loopback
//! (tests/e2e/garage.rs; `cargo install garage --locked`), beside the local directory.

mod support;

#[path = "../tests/e2e/garage.rs"]
mod garage;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use support::{mb_per_s, pseudo_random, rss_kib, store_requests, upload, upload_tus, Server, MIB};
const CHUNK: usize = 8 << 20;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let args: Vec<String> = std::env::args().collect();
    let store_s3 = args.windows(2).any(|w| w[0] == "--store" && w[1] == "s3");
    let single_size: u64 = if quick { 256 * MIB } else { 1024 * MIB };

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

    let raw = (raw_each, raw_once);
    let runs: usize = args
        .windows(2)
        .find(|w| w[0] == "--runs")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(1);
    let mut figures = Vec::new();
    for run in 0..runs.max(1) {
        if runs > 1 {
            println!("-- run {} of {runs}", run + 1);
        }
        let data = work.join(format!("data-{run}"));
        let server = Server::start(&data);
        figures.push(measure(
            "local directory",
            &server,
            &chunk,
            single_size,
            raw,
        ));
        // Each run's gigabytes go before the next run writes its own.
        drop(server);
        let _ = std::fs::remove_dir_all(&data);
    }
    if !quick {
        print_targets(&figures);
    }
    if store_s3 {
        let garage = garage::Garage::start();
        let args = garage.server_args("bench");
        let server = Server::start_with(&work.join("data-s3"), &args, &garage.server_envs());
        let _ = measure("S3 (Garage on loopback)", &server, &chunk, single_size, raw);
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// What one run measured, for the targets of the byte path (issue 18).
struct Figures {
    single_mb_s: f64,
    single_cpu: f64,
    concurrent_mb_s: f64,
    concurrent_cpu: f64,
    peak_rss_mib: f64,
}

/// The medians of the runs beside the targets the byte path is held to.
fn print_targets(runs: &[Figures]) {
    let median = |pick: fn(&Figures) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(pick).collect();
        values.sort_by(|a, b| a.total_cmp(b));
        values[values.len() / 2]
    };
    println!(
        "== targets (medians of {} run(s); `-- --runs 3` for three)",
        runs.len()
    );
    let rows: [(&str, f64, &str, f64, bool); 5] = [
        (
            "server CPU, 1 GiB single (s/GiB)",
            median(|f| f.single_cpu),
            "<=",
            1.1,
            false,
        ),
        (
            "server CPU, 32 concurrent (s/GiB)",
            median(|f| f.concurrent_cpu),
            "<=",
            1.1,
            false,
        ),
        (
            "1 GiB single (MB/s)",
            median(|f| f.single_mb_s),
            ">=",
            1000.0,
            true,
        ),
        (
            "32 x 32 MiB concurrent (MB/s)",
            median(|f| f.concurrent_mb_s),
            ">=",
            1400.0,
            true,
        ),
        (
            "peak RSS, 32 concurrent (MiB)",
            median(|f| f.peak_rss_mib),
            "<=",
            32.0,
            false,
        ),
    ];
    for (what, value, sense, target, higher_is_better) in rows {
        let met = if higher_is_better {
            value >= target
        } else {
            value <= target
        };
        let verdict = if met { "met" } else { "not met" };
        println!("{what:<36} {value:>8.2}   target {sense} {target:<7}  {verdict}");
    }
}

/// Steps 2–4 against one running server.
fn measure(
    store: &str,
    server: &Server,
    chunk: &[u8],
    single_size: u64,
    raw: (f64, f64),
) -> Figures {
    let (raw_each, raw_once) = raw;
    let (concurrent, each): (usize, u64) = (32, 32 * MIB);
    println!("== bytes in: {store}");
    let requests = Requests::start(server);
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let digest = upload(server.port, chunk, single_size);
    let secs = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    let single = mb_per_s(single_size, secs);
    assert_eq!(
        digest,
        expected_digest(chunk, single_size),
        "stored SHA-256"
    );
    let gib = single_size as f64 / (1u64 << 30) as f64;
    let single_cpu = cpu / gib;
    println!(
        "service, 1 upload of {} MiB in 8 MiB PATCHes: {:.0} MB/s ({:.2} s), server CPU {:.2} s/GiB{}",
        single_size / MIB,
        single,
        secs,
        cpu / gib,
        requests.per_gib(server, single_size)
    );
    println!(
        "ratio service/raw disk: {:.2} (fdatasync each 8 MiB), {:.2} (fdatasync once)",
        single / raw_each,
        single / raw_once
    );
    let rss_after_single = server.rss_kib();

    let requests = Requests::start(server);
    let started = Instant::now();
    let tus_digest = upload_tus(server.port, chunk, single_size);
    let tus = mb_per_s(single_size, started.elapsed().as_secs_f64());
    assert_eq!(
        tus_digest,
        expected_digest(chunk, single_size),
        "tus upload SHA-256"
    );
    println!(
        "service, the same upload with tus PATCHes: {tus:.0} MB/s, ratio tus/native {:.2}{}",
        tus / single,
        requests.per_gib(server, single_size)
    );

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
    let requests = Requests::start(server);
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let threads: Vec<_> = (0..concurrent)
        .map(|_| {
            let chunk = chunk.to_vec();
            let port = server.port;
            std::thread::spawn(move || upload(port, &chunk[..], each))
        })
        .collect();
    let expected = expected_digest(chunk, each);
    for thread in threads {
        assert_eq!(thread.join().expect("upload thread"), expected);
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let total = concurrent as u64 * each;
    let concurrent_cpu = cpu / (total as f64 / (1u64 << 30) as f64);
    let concurrent_mb_s = mb_per_s(total, secs);
    println!(
        "service, {concurrent} concurrent uploads of {} MiB: {:.0} MB/s aggregate ({:.2} s), server CPU {:.2} s/GiB{}",
        each / MIB,
        concurrent_mb_s,
        secs,
        concurrent_cpu,
        requests.per_gib(server, total)
    );
    let peak_rss_mib = peak.load(Ordering::Relaxed) as f64 / 1024.0;
    println!(
        "server RSS: {:.1} MiB after the single upload, peak {:.1} MiB during the concurrent uploads (VmHWM {:.1} MiB)",
        rss_after_single as f64 / 1024.0,
        peak_rss_mib,
        server.hwm_kib() as f64 / 1024.0
    );
    Figures {
        single_mb_s: single,
        single_cpu,
        concurrent_mb_s,
        concurrent_cpu,
        peak_rss_mib,
    }
}

/// The object-store requests one scenario makes, from /metrics before and after it.
struct Requests(Option<f64>);

impl Requests {
    fn start(server: &Server) -> Requests {
        Requests(store_requests(server.port))
    }

    /// ", store requests N/GiB" for `bytes` uploaded since the start; nothing for a server
    /// without an object store.
    fn per_gib(&self, server: &Server, bytes: u64) -> String {
        match (self.0, store_requests(server.port)) {
            (Some(before), Some(after)) => {
                let gib = bytes as f64 / (1u64 << 30) as f64;
                format!(", store requests {:.0}/GiB", (after - before) / gib)
            }
            _ => String::new(),
        }
    }
}

fn expected_digest(chunk: &[u8], size: u64) -> String {
    let mut hasher = Sha256::new();
    support::pieces(chunk, size).for_each(|piece| hasher.update(piece));
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

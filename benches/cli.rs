//! The client benchmark: one file through `resumable upload`, beside the same bytes sent by
//! the core benchmark's lean client (8 MiB PATCHes from memory, no hashing), to the same
//! server in the same run. Prints each one's throughput, the ratio, and the client's CPU
//! seconds per GiB (what it spends reading, hashing twice and sending).
//!
//! `cargo bench --bench cli` (1 GiB; `-- --quick` for 256 MiB). Each is run twice, in turn;
//! the better run of each counts. `resumable upload --no-chunk-digest` is run too: what the
//! per-chunk digests cost (a SHA-256 pass over every byte on each side).

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use support::{mb_per_s, pseudo_random, upload, Server, MIB};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let size: u64 = if quick { 256 * MIB } else { 1024 * MIB };
    let work = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-cli");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let chunk = pseudo_random(8 << 20);
    let file = work.join("file.bin");
    write_file(&file, &chunk, size);
    let server = Server::start(&work.join("data"));
    let gib = size as f64 / (1u64 << 30) as f64;

    let mut lean = Vec::new();
    let mut cli = Vec::new();
    let mut bare = Vec::new();
    let mut cpu = Vec::new();
    let (mut server_lean, mut server_cli) = (Vec::new(), Vec::new());
    for round in 0..2 {
        let server_before = server.cpu_seconds();
        let started = Instant::now();
        upload(server.port, &chunk, size);
        lean.push(mb_per_s(size, started.elapsed().as_secs_f64()));
        server_lean.push((server.cpu_seconds() - server_before) / gib);

        let cache = work.join(format!("cache-{round}"));
        let before = children_cpu_seconds();
        let server_before = server.cpu_seconds();
        let started = Instant::now();
        run_client(server.port, &file, &cache, &[]);
        cli.push(mb_per_s(size, started.elapsed().as_secs_f64()));
        cpu.push((children_cpu_seconds() - before) / gib);
        server_cli.push((server.cpu_seconds() - server_before) / gib);

        let cache = work.join(format!("cache-bare-{round}"));
        let started = Instant::now();
        run_client(server.port, &file, &cache, &["--no-chunk-digest"]);
        bare.push(mb_per_s(size, started.elapsed().as_secs_f64()));
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    let least = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    println!(
        "{} MiB, lean client: {:.0} MB/s (runs {:?}); server CPU {:.2} s/GiB",
        size / MIB,
        best(&lean),
        rounded(&lean),
        least(&server_lean)
    );
    println!(
        "{} MiB, resumable upload: {:.0} MB/s (runs {:?}), {:.2}× the lean client; \
         client CPU {:.2} s/GiB, server CPU {:.2} s/GiB (it checks each chunk's digest too)",
        size / MIB,
        best(&cli),
        rounded(&cli),
        best(&cli) / best(&lean),
        least(&cpu),
        least(&server_cli)
    );
    println!(
        "{} MiB, resumable upload --no-chunk-digest: {:.0} MB/s (runs {:?}), {:.2}× the lean client",
        size / MIB,
        best(&bare),
        rounded(&bare),
        best(&bare) / best(&lean)
    );
}

fn run_client(port: u16, file: &std::path::Path, cache: &std::path::Path, extra: &[&str]) {
    let status = Command::new(env!("CARGO_BIN_EXE_resumable"))
        .args(["upload", "--quiet", "--server"])
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(file)
        .args(extra)
        .env("XDG_CACHE_HOME", cache)
        .stdout(Stdio::null())
        .status()
        .expect("run resumable upload");
    assert!(status.success(), "resumable upload failed");
}

fn write_file(path: &std::path::Path, chunk: &[u8], size: u64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create the file"));
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        out.write_all(&chunk[..n]).expect("write the file");
        left -= n as u64;
    }
    out.flush().expect("write the file");
}

/// CPU seconds (user + system) of the children this process has waited for.
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn rounded(values: &[f64]) -> Vec<u64> {
    values.iter().map(|v| v.round() as u64).collect()
}

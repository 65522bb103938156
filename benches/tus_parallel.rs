//! tus-js-client's `parallelUploads` (tus concatenation): one file through the real
//! tus-js-client (tests/tus-js) with `parallelUploads: 1` (one plain upload) and `4` (four
//! partial uploads and the final one, assembled by the server), to the same release server in
//! the same run. Prints each one's throughput, the ratio, and the server's CPU seconds per GiB.
//!
//! `cargo bench --bench tus_parallel` (1 GiB; `-- --quick` for 256 MiB; `-- --store s3` runs
//! it again with the bytes in a private Garage, where the final is assembled by UploadPartCopy).
//! Needs Node and `npm ci --prefix tests/tus-js`. Each is run twice, in turn; the better run of each counts.
//! The time is tus-js-client's, from `start()` to `onSuccess` (the final upload created, so
//! assembled), read from disk as it sends; the share of it the final POST took is printed too.

mod support;

#[path = "../tests/e2e/garage.rs"]
mod garage;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use support::{json_field, mb_per_s, pseudo_random, read_response, Server, MIB};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let size: u64 = if quick { 256 * MIB } else { 1024 * MIB };
    let client_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tus-js");
    assert!(
        client_dir.join("node_modules/tus-js-client").exists(),
        "run `npm ci --prefix tests/tus-js` first"
    );
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-tus-parallel");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let file = work.join("file.bin");
    let sha = write_file(&file, &pseudo_random(8 << 20), size);
    println!("== bytes in: local directory");
    let server = Server::start(&work.join("data"));
    compare(&server, &client_dir, &file, (size, &sha));
    drop(server);
    if std::env::args().any(|a| a == "s3") {
        println!("== bytes in: S3 (Garage on loopback)");
        let garage = garage::Garage::start();
        let args = garage.server_args("bench");
        let server = Server::start_with(&work.join("data-s3"), &args, &garage.server_envs());
        compare(&server, &client_dir, &file, (size, &sha));
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// parallelUploads 1 and 4, twice each in turn, against `server`.
fn compare(server: &Server, client_dir: &Path, file: &Path, (size, sha): (u64, &str)) {
    let gib = size as f64 / (1u64 << 30) as f64;

    let modes = [1u32, 4];
    let mut rates = vec![Vec::new(); modes.len()];
    let mut server_cpu = vec![Vec::new(); modes.len()];
    let mut assembly = vec![Vec::new(); modes.len()];
    for _round in 0..2 {
        for (n, parallel) in modes.iter().enumerate() {
            let before = server.cpu_seconds();
            let (id, seconds, final_seconds) = run_client(client_dir, server.port, file, *parallel);
            rates[n].push(mb_per_s(size, seconds));
            assembly[n].push(final_seconds.map_or(0.0, |f| f / seconds));
            server_cpu[n].push((server.cpu_seconds() - before) / gib);
            let (status, text) = request(server.port, "GET", &format!("/uploads/{id}"));
            assert_eq!(status, 200, "{text}");
            assert_eq!(json_field(&text, "state"), "complete", "{text}");
            assert_eq!(
                json_field(&text, "sha256"),
                sha,
                "parallelUploads {parallel}: {text}"
            );
            // Make room for the next run (the bytes are on the same disk).
            let (status, text) = request(server.port, "DELETE", &format!("/uploads/{id}"));
            assert_eq!(status, 204, "{text}");
        }
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    let least = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    for (n, parallel) in modes.iter().enumerate() {
        println!(
            "{} MiB, tus-js-client parallelUploads {parallel}: {:.0} MB/s (runs {:?}); \
             server CPU {:.2} s/GiB; the final upload's creation {:.0}% of the time",
            size / MIB,
            best(&rates[n]),
            rates[n]
                .iter()
                .map(|r| r.round() as u64)
                .collect::<Vec<_>>(),
            least(&server_cpu[n]),
            100.0 * least(&assembly[n])
        );
    }
    println!(
        "parallelUploads 4 / parallelUploads 1: {:.2}×",
        best(&rates[1]) / best(&rates[0])
    );
}

/// One upload of `file` by tus-js-client (run.mjs's `speed` scenario): the final upload's id,
/// the seconds it took, and those its final POST took (the server's assembly), if any.
fn run_client(dir: &Path, port: u16, file: &Path, parallel: u32) -> (String, f64, Option<f64>) {
    let output = Command::new("node")
        .arg(dir.join("run.mjs"))
        .arg(format!("http://127.0.0.1:{port}/uploads"))
        .arg("speed")
        .arg(file)
        .arg(parallel.to_string())
        .output()
        .expect("node");
    assert!(
        output.status.success(),
        "parallelUploads {parallel}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("run.mjs's JSON");
    let url = result["url"].as_str().expect("the upload's URL");
    let id = url.rsplit('/').next().expect("an id").to_owned();
    (
        id,
        result["seconds"].as_f64().expect("seconds"),
        result["finalSeconds"].as_f64(),
    )
}

/// A bodiless request on a connection of its own: (status, body).
fn request(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
    conn.write_all(head.as_bytes()).expect("request");
    read_response(&mut conn)
}

/// Writes `size` bytes (`chunk` over and over) to `path`; returns their SHA-256 (hex).
fn write_file(path: &Path, chunk: &[u8], size: u64) -> String {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create the file"));
    let mut hasher = Sha256::new();
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        hasher.update(&chunk[..n]);
        out.write_all(&chunk[..n]).expect("write the file");
        left -= n as u64;
    }
    out.flush().expect("write the file");
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

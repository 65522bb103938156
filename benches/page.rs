//! The page benchmark: one 1 GiB file through the upload page in headless Chromium, against
//! the core benchmark's curl-style upload (8 MiB PATCHes over one connection) of the same
//! bytes, on the same server.
//!
//! `cargo bench --bench page` (add `-- --quick` for 256 MiB). Needs Debian's chromium and
//! chromium-driver.

#[path = "../tests/browser/harness.rs"]
mod harness;
mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::{mb_per_s, pseudo_random, upload, Server, MIB};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let size: u64 = if quick { 256 * MIB } else { 1024 * MIB };
    let work = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-page");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("bench dir");
    let chunk = pseudo_random(8 << 20);
    let path = work.join("page-bench.bin");
    let mut file = std::fs::File::create(&path).expect("test file");
    for piece in support::pieces(&chunk, size) {
        file.write_all(piece).expect("write test file");
    }
    drop(file);

    let server = Server::start(&work.join("data"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let page_secs = runtime.block_on(async {
        let browser = harness::Browser::start().await;
        browser
            .open(&format!("http://127.0.0.1:{}/", server.port))
            .await;
        let started = Instant::now();
        browser.choose(&[&path]).await;
        let (_, _, received) = browser
            .wait_row(Duration::from_secs(600), "complete", |(_, state, _)| {
                state == "complete"
            })
            .await;
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(received, size);
        browser.screenshot("page-bench").await;
        browser.close().await;
        secs
    });
    let page = mb_per_s(size, page_secs);
    println!(
        "page in headless Chromium, {} MiB: {page:.0} MB/s ({page_secs:.2} s)",
        size / MIB
    );

    let started = Instant::now();
    upload(server.port, &chunk, size);
    let direct = mb_per_s(size, started.elapsed().as_secs_f64());
    println!(
        "curl-style client, 8 MiB PATCHes, {} MiB: {direct:.0} MB/s",
        size / MIB
    );
    println!(
        "ratio page/curl-style: {:.2} (target >= 0.7)",
        page / direct
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&work);
}

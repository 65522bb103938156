//! The machine's floor for the byte path: what receiving over loopback, SHA-256 and direct
//! writes cost on their own, with no HTTP, no framework and no copy that could be avoided.
//!
//! `cargo bench --bench floor` (add `-- --quick` for 256 MiB). A client thread sends the bytes
//! over a loopback TCP connection; the receiving thread reads them, in four steps:
//! 1. SHA-256 over bytes already in memory (no socket);
//! 2. receive only, 256 KiB reads, the bytes thrown away;
//! 3. receive and SHA-256;
//! 4. receive straight into an aligned buffer, SHA-256, an O_DIRECT write of each full buffer
//!    and one `fdatasync` at the end: the service's work at its cheapest, since it cannot
//!    choose where actix puts the bytes and so copies them into an aligned stage.
//!
//! Each step prints the CPU seconds per GiB of the receiving thread (the kernel's work on its
//! behalf included, as in the core bench's server CPU) and of the sending one, medians of 3.
//! The core bench's figures are compared with these in docs/performance.md.

mod support;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};
use support::{pieces, pseudo_random, MIB};

const READ_BYTES: usize = 256 * 1024;
const ALIGN: usize = 4096;

#[derive(Clone, Copy, PartialEq)]
enum Step {
    Receive,
    ReceiveHash,
    ReceiveHashWrite,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let size = if quick { 256 * MIB } else { 1024 * MIB };
    let gib = size as f64 / (1u64 << 30) as f64;
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-floor");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("bench dir");
    let data = pseudo_random(8 * MIB as usize);

    let hash_only = median((0..3).map(|_| hash_in_memory(&data, size)).collect());
    println!(
        "SHA-256 over bytes in memory: {:.2} CPU-s/GiB",
        hash_only / gib
    );
    for (step, name) in [
        (Step::Receive, "receive only"),
        (Step::ReceiveHash, "receive + SHA-256"),
        (
            Step::ReceiveHashWrite,
            "receive + SHA-256 + O_DIRECT write, fdatasync once",
        ),
    ] {
        let runs: Vec<(f64, f64)> = (0..3)
            .map(|_| transfer(step, &data, size, &work.join("floor.bin")))
            .collect();
        let receiver = median(runs.iter().map(|r| r.0).collect());
        let sender = median(runs.iter().map(|r| r.1).collect());
        println!(
            "{name}: receiver {:.2} CPU-s/GiB, sender {:.2} CPU-s/GiB, both {:.2}",
            receiver / gib,
            sender / gib,
            (receiver + sender) / gib
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// CPU seconds the calling thread has used, the kernel's time on its behalf included.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn hash_in_memory(data: &[u8], size: u64) -> f64 {
    let started = thread_cpu();
    let mut hasher = Sha256::new();
    pieces(data, size).for_each(|piece| hasher.update(piece));
    std::hint::black_box(hasher.finalize());
    thread_cpu() - started
}

/// Sends `size` bytes over loopback and receives them as `step` says; returns the receiving
/// and the sending thread's CPU seconds.
fn transfer(step: Step, data: &[u8], size: u64, path: &Path) -> (f64, f64) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let data = data.to_vec();
    let sender = std::thread::spawn(move || {
        let started = thread_cpu();
        let mut socket = TcpStream::connect(address).expect("connect");
        for piece in pieces(&data, size) {
            socket.write_all(piece).expect("send");
        }
        drop(socket);
        thread_cpu() - started
    });
    let (mut socket, _) = listener.accept().expect("accept");
    let started = thread_cpu();
    let mut buffer = Aligned::new(READ_BYTES);
    let file = (step == Step::ReceiveHashWrite).then(|| {
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .expect("a file system that takes O_DIRECT")
    });
    let mut hasher = Sha256::new();
    let (mut filled, mut offset, mut received) = (0usize, 0u64, 0u64);
    loop {
        let n = socket.read(&mut buffer.bytes()[filled..]).expect("receive");
        if n == 0 {
            break;
        }
        if step != Step::Receive {
            hasher.update(&buffer.bytes()[filled..filled + n]);
        }
        filled += n;
        received += n as u64;
        if filled == READ_BYTES || step != Step::ReceiveHashWrite {
            if let Some(file) = &file {
                file.write_all_at(buffer.bytes(), offset).expect("write");
                offset += filled as u64;
            }
            filled = 0;
        }
    }
    if let Some(file) = &file {
        let whole = filled / ALIGN * ALIGN;
        file.write_all_at(&buffer.bytes()[..whole], offset)
            .expect("write");
        assert_eq!(filled, whole, "the sizes here are whole blocks");
        file.sync_data().expect("fdatasync");
    }
    std::hint::black_box(hasher.finalize());
    let receiver = thread_cpu() - started;
    assert_eq!(received, size, "every byte arrived");
    (receiver, sender.join().expect("sender"))
}

/// A buffer aligned for O_DIRECT.
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, ALIGN).expect("layout");
        // SAFETY: the layout has a non-zero size; zeroed, so every byte is initialised.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocation");
        Aligned { ptr, layout }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the whole allocation is initialised and owned here.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

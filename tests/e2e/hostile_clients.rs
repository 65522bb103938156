//! One client must not be able to take the server down: a WebSocket frame that claims to be
//! huge is refused without being buffered.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::*;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .expect("VmRSS")
}

#[tokio::test]
async fn a_websocket_frame_claiming_to_be_huge_is_closed_with_1009_and_never_buffered() {
    let server = TestServer::start();
    let id = create(&server, "w.bin", 100).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let port = server.port;
    let (close_code, sent) = tokio::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let head = format!(
            "GET /uploads/{id}/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).unwrap();
        // A masked binary frame whose header claims 2^62 bytes, then 64 MiB of it.
        let mut frame = vec![0x82, 0xFF];
        frame.extend_from_slice(&(1u64 << 62).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        conn.write_all(&frame).unwrap();
        let junk = vec![0u8; 1 << 20];
        let mut sent = 0usize;
        for _ in 0..64 {
            match conn.write_all(&junk) {
                Ok(()) => sent += junk.len(),
                Err(_) => break,
            }
        }
        // Read everything the server sent: the 101, the first status, then the close frame.
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        let close = answer
            .windows(2)
            .rposition(|w| w[0] == 0x88)
            .and_then(|at| answer.get(at + 2..at + 4))
            .map(|code| u16::from_be_bytes([code[0], code[1]]));
        (close, sent)
    })
    .await
    .unwrap();
    let rss = rss_kib(server.pid());
    println!(
        "sent {} MiB of the frame; close code {close_code:?}; server RSS {} MiB",
        sent >> 20,
        rss >> 10
    );
    assert_eq!(
        close_code,
        Some(1009),
        "the watcher is closed with 1009 (message too big)"
    );
    assert!(rss < 64 * 1024, "the server grew to {} MiB", rss >> 10);
}

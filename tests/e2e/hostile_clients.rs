//! One client must not be able to take the server down: a WebSocket frame that claims to be
//! huge is refused without being buffered.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::*;

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
    let rss = server.rss_kib();
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

/// The status code of the answer's first line on a raw connection.
fn status_line(conn: &mut TcpStream) -> u16 {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") && line.len() < 200 {
        match conn.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&line)
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn watchers_never_take_the_descriptors_that_uploads_need() {
    let server = TestServer::start_with_open_files(512, &[]);
    let id = create(&server, "watched.bin", 100).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let port = server.port;
    let (streams, codes) = tokio::task::spawn_blocking(move || {
        let mut streams = Vec::new();
        let mut codes = std::collections::BTreeMap::<u16, usize>::new();
        for _ in 0..600 {
            let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let request = format!("GET /uploads/{id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            conn.write_all(request.as_bytes()).unwrap();
            let code = status_line(&mut conn);
            *codes.entry(code).or_default() += 1;
            match code {
                200 => streams.push(conn),
                503 => {}
                // Not answered (descriptors ran out): no point waiting on the rest.
                _ => break,
            }
        }
        (streams, codes)
    })
    .await
    .unwrap();
    println!("600 SSE streams under a limit of 512 open files: {codes:?}");
    assert!(codes.get(&503).is_some_and(|n| *n > 0), "{codes:?}");
    assert_eq!(
        codes.keys().copied().collect::<Vec<_>>(),
        vec![200, 503],
        "{codes:?}"
    );

    // With every watcher place taken, uploads and health checks still work.
    let bytes = data(4 << 20, 41);
    let upload = create(&server, "beside.bin", bytes.len() as u64).await;
    let upload = upload["id"].as_str().unwrap();
    assert_eq!(patch(&server, upload, 0, bytes.clone()).await.status(), 200);
    assert_eq!(content(&server, upload).await, bytes);
    let health = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    drop(streams);
}

#[tokio::test]
async fn a_closed_sse_client_frees_its_place_at_once() {
    let server = TestServer::start();
    let id = create(&server, "s.bin", 100).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut conn = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET /uploads/{id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    conn.write_all(request.as_bytes()).unwrap();
    assert_eq!(status_line(&mut conn), 200);
    wait_watchers(&server, "sse", 1).await;
    drop(conn);
    // Well before the next heartbeat (15 s), which used to be the first write to fail.
    let started = std::time::Instant::now();
    eventually(
        Duration::from_secs(5),
        "the SSE place to be freed",
        || async { metric(&server, "resumable_watchers{channel=\"sse\"}").await == 0.0 },
    )
    .await;
    println!("freed {:?} after the client closed", started.elapsed());

    // A client that only says it is done (FIN, as a browser closing an EventSource that has
    // read everything does), without a reset, is gone too.
    let mut conn = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    assert_eq!(status_line(&mut conn), 200);
    wait_watchers(&server, "sse", 1).await;
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    eventually(
        Duration::from_secs(5),
        "the half-closed SSE client's place to be freed",
        || async { metric(&server, "resumable_watchers{channel=\"sse\"}").await == 0.0 },
    )
    .await;
    drop(conn);
}

#[tokio::test]
async fn a_closed_long_poll_client_frees_its_place_at_once() {
    let server = TestServer::start();
    let id = create(&server, "p.bin", 100).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut conn = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let request =
        format!("GET /uploads/{id}/poll?received=0&timeout=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    conn.write_all(request.as_bytes()).unwrap();
    wait_watchers(&server, "poll", 1).await;
    drop(conn);
    // Well before the poll's own timeout (60 s).
    eventually(
        Duration::from_secs(5),
        "the long poll's place to be freed",
        || async { metric(&server, "resumable_watchers{channel=\"poll\"}").await == 0.0 },
    )
    .await;
}

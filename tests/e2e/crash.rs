//! SIGKILL at random moments of a stream of appends, restart after each kill, and check that
//! `received` never claims unsent bytes nor forgets confirmed ones.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

/// Kills per run: each S3 restart also meets the bucket, so fewer there.
fn kills(store: Store) -> usize {
    match store {
        Store::Local => 50,
        Store::S3 => 20,
    }
}
const SIZE: usize = 128 << 20;

struct Progress {
    /// The most the client has handed to the socket (an upper bound on what can be stored).
    sent: AtomicU64,
    /// The most a 200 answer has reported as received.
    confirmed: AtomicU64,
    stop: AtomicBool,
}

/// Streams PATCHes from `offset` in 64 KiB pieces at a varying pace until told to stop or the
/// connection breaks (the server was killed).
fn stream_appends(
    port: u16,
    id: String,
    bytes: Arc<Vec<u8>>,
    mut offset: u64,
    pace: Duration,
    progress: Arc<Progress>,
) {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
    while !progress.stop.load(Ordering::Relaxed) && (offset as usize) < bytes.len() {
        let len = (bytes.len() - offset as usize).min(1 << 20);
        let head = format!("PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Offset: {offset}\r\nContent-Length: {len}\r\n\r\n");
        if conn.write_all(head.as_bytes()).is_err() {
            return;
        }
        for piece in bytes[offset as usize..offset as usize + len].chunks(64 << 10) {
            // Counted before the write: a blocked write may already have delivered part of
            // the piece, which the server can read and commit before this one is killed.
            progress
                .sent
                .fetch_max(offset + piece.len() as u64, Ordering::SeqCst);
            if conn.write_all(piece).is_err() {
                return;
            }
            offset += piece.len() as u64;
            std::thread::sleep(pace);
        }
        let (status, _, body) = read_answer(&mut conn);
        if status != 200 {
            return;
        }
        let received = json(&body)["received"].as_u64().unwrap_or(0);
        progress.confirmed.fetch_max(received, Ordering::SeqCst);
        offset = received;
    }
    let _ = conn.read(&mut [0u8; 1]);
}

on_each_store! {
    #[tokio::test(flavor = "multi_thread")]
    async fn kills_mid_append_never_lose_confirmed_bytes_nor_invent_unsent_ones(store: Store) {
        let mut server = TestServer::start_on(store);
        let kills = kills(store);
        kill_rounds(std::slice::from_mut(&mut server), kills).await;
    }
}

/// `kills` rounds of: stream appends to one of `servers` (each in turn), SIGKILL it at a
/// random moment (mostly mid-body), restart it, and check through the next one (itself, if
/// alone) that `received` neither lost a confirmed byte nor counts one never sent. Then the
/// upload is finished and its SHA-256 checked.
pub async fn kill_rounds(servers: &mut [TestServer], kills: usize) {
    let bytes = Arc::new(data(SIZE, 99));
    let id = create(&servers[0], "crash.bin", SIZE as u64).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |bound: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound
    };
    let progress = Arc::new(Progress {
        sent: AtomicU64::new(0),
        confirmed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let mut offset = 0u64;
    let mut mid_body = 0;
    for kill in 0..kills {
        let (victim, judge) = (kill % servers.len(), (kill + 1) % servers.len());
        progress.stop.store(false, Ordering::SeqCst);
        // 64 KiB every 2–6 ms: a round sends about a MiB, so 50 rounds stay inside the file.
        let pace = Duration::from_micros(2000 + next(4000));
        let client = {
            let (port, id, bytes, progress) = (
                servers[victim].port,
                id.clone(),
                bytes.clone(),
                progress.clone(),
            );
            std::thread::spawn(move || stream_appends(port, id, bytes, offset, pace, progress))
        };
        tokio::time::sleep(Duration::from_millis(5 + next(150))).await;
        if !client.is_finished() {
            mid_body += 1;
        }
        servers[victim].kill9();
        progress.stop.store(true, Ordering::SeqCst);
        let _ = client.join();
        servers[victim].restart();
        let head = client_head(&servers[judge], &id).await;
        let (sent, confirmed) = (
            progress.sent.load(Ordering::SeqCst),
            progress.confirmed.load(Ordering::SeqCst),
        );
        assert!(head <= sent, "kill {kill}: received {head} > sent {sent}");
        assert!(
            head >= confirmed,
            "kill {kill}: received {head} < confirmed {confirmed}"
        );
        // On S3 the bytes are parts and a tail, with no one length to compare; a tail or part
        // missing for a committed `received` fails the final append's sha256 instead.
        if let Some(on_disk) = servers[victim].local_file_len(&id) {
            assert_eq!(
                on_disk, head,
                "kill {kill}: file and received disagree after restart"
            );
        }
        offset = head;
        // `sent` stays the most ever handed to a socket (every offset always carries the same
        // bytes): not lowered to this HEAD, which a killed instance's last commit may still
        // overtake once PostgreSQL makes it visible.
    }
    assert!(
        mid_body >= kills / 4,
        "only {mid_body} kills landed mid-body"
    );
    let last = &servers[kills % servers.len()];
    let response = patch(last, &id, offset, bytes[offset as usize..].to_vec()).await;
    assert_eq!(response.status(), 200);
    let status: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status["sha256"], sha_hex(&bytes));
    println!("{kills} kills survived, {mid_body} of them mid-body; final offset before the last append {offset}");
}

async fn client_head(server: &TestServer, id: &str) -> u64 {
    let response = client()
        .head(server.url(&format!("/uploads/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

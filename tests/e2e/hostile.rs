//! 10,000 generated hostile requests (malformed headers, offsets, ids, bodies, methods, cut
//! bodies and stalls) against the running server, while a well-formed upload runs beside them.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

const REQUESTS: usize = 10_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PATCH", "DELETE", "PUT", "OPTIONS", "TRACE", "BREW", "",
];
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "1e3",
    "5 5",
    "18446744073709551616",
    "9223372036854775807",
    "abc",
    "",
    "00",
    "+7",
    "0x10",
    "٣",
];
const HEADERS: &[&str] = &[
    "Upload-Offset",
    "Upload-Length",
    "Content-Length",
    "Content-Type",
    "Tus-Resumable",
    "Upload-Checksum",
    "Content-Digest",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Complete",
    "Upload-Draft-Interop-Version",
    "X-HTTP-Method-Override",
    "Range",
    "If-None-Match",
    "Origin",
    "Authorization",
    "Transfer-Encoding",
    "X-File-Id",
];
const VALUES: &[&str] = &[
    "application/offset+octet-stream",
    "multipart/form-data; boundary=zz",
    "application/json",
    "1.0.0",
    "0.2.2",
    "sha256 !!!",
    "sha1 AAAA",
    "md5 AAAA",
    "sha-256=:AAAA:",
    "sha-256=::",
    "filename aGVsbG8=",
    "a b c,,",
    "?1",
    "?0",
    "?2",
    "6",
    "8",
    "999",
    "PATCH",
    "DELETE",
    "bytes=0-",
    "bytes=-0",
    "bytes=5-1",
    "*",
    "Bearer x",
    "chunked",
    "gzip",
    "\u{7f}",
    "null",
];

fn random_request(rng: &mut Rng, ids: &[String]) -> (Vec<u8>, bool) {
    let method = rng.pick(METHODS);
    let id = match rng.below(6) {
        0 => "not-an-id".to_owned(),
        1 => ids[0].to_uppercase(),
        2 => uuid::Uuid::new_v4().to_string(),
        3 => "..%2F..%2Fetc%2Fpasswd".to_owned(),
        _ => ids[rng.below(ids.len())].clone(),
    };
    let path = match rng.below(10) {
        0 => "/uploads".to_owned(),
        1 => format!("/uploads/{id}/content"),
        2 => format!(
            "/uploads/{id}/poll?received={}&timeout={}",
            rng.pick(NUMBERS),
            rng.below(2)
        ),
        3 => format!("/uploads/{id}/events"),
        4 => format!("/uploads/{id}/ws"),
        5 => format!(
            "/{}",
            rng.pick(&[
                "status",
                "upload",
                "healthz",
                "metrics",
                "static/app.js",
                "%%",
                "uploads/"
            ])
        ),
        _ => format!("/uploads/{id}"),
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for _ in 0..rng.below(6) {
        let name = rng.pick(HEADERS);
        let value = if rng.below(2) == 0 {
            rng.pick(NUMBERS)
        } else {
            rng.pick(VALUES)
        };
        if name != "Content-Length" && name != "Transfer-Encoding" {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    let body = data(rng.below(3000), rng.next());
    // Sometimes the body is cut short: declared longer than what is sent, then the socket closes.
    let cut = rng.below(10) == 0;
    let declared = if cut {
        body.len() + 1 + rng.below(5000)
    } else {
        body.len()
    };
    if rng.below(8) == 0 {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        request.extend_from_slice(&body);
        if !cut {
            request.extend_from_slice(b"\r\n0\r\n\r\n");
        }
        return (request, cut);
    }
    head.push_str(&format!("Content-Length: {declared}\r\n\r\n"));
    let mut request = head.into_bytes();
    request.extend_from_slice(&body);
    (request, cut)
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_hostile_requests_get_no_5xx_and_a_real_upload_completes_beside_them() {
    let server = TestServer::start_with(&["--idle-timeout", "1s"], &[]);
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            create(&server, &format!("h{i}.bin"), 1 << 20).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let good = data(8 << 20, 7);
    let good_id = create(&server, "good.bin", good.len() as u64).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let honest = {
        let (base, id, good) = (server.base.clone(), good_id.clone(), good.clone());
        tokio::spawn(async move {
            for (n, piece) in good.chunks(256 << 10).enumerate() {
                let response = client()
                    .patch(format!("{base}/uploads/{id}"))
                    .header("Upload-Offset", (n * (256 << 10)).to_string())
                    .body(piece.to_vec())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let port = server.port;
    let stats = tokio::task::spawn_blocking(move || {
        // Every upload that was a target at some point (a deleted one is replaced, so that the
        // run keeps hitting live uploads).
        let mut targets = ids.clone();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut fives, mut answered, mut unanswered) = (Vec::new(), 0usize, 0usize);
        // Uploads the run created (a tus or draft creation, a form): their answers' Location.
        let mut created = Vec::new();
        let started = Instant::now();
        // A few slowloris connections: a head that never ends, held open throughout.
        let stalls: Vec<TcpStream> = (0..20)
            .filter_map(|_| {
                let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
                conn.write_all(b"PATCH /uploads/x HTTP/1.1\r\nHost: t\r\nUpload-Off")
                    .ok()?;
                Some(conn)
            })
            .collect();
        for n in 0..REQUESTS {
            if n % 50 == 0 {
                for id in ids.iter_mut() {
                    if raw(
                        port,
                        format!(
                            "GET /uploads/{id} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .0 != 200
                    {
                        *id = create_raw(port, &format!("h{}.bin", targets.len()));
                        targets.push(id.clone());
                    }
                }
            }
            let (request, cut) = random_request(&mut rng, &ids);
            let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let _ = conn.write_all(&request);
            if cut {
                let _ = conn.shutdown(std::net::Shutdown::Write);
            }
            let (status, head, _) = read_answer(&mut conn);
            if let Some(location) = header_of(&head, "location") {
                created.extend(location.rsplit('/').next().and_then(upload_id));
            }
            match status {
                0 => unanswered += 1,
                500..=506 | 508..=599 => fives.push(
                    format!(
                        "{status}: {}",
                        String::from_utf8_lossy(&request[..request.len().min(200)])
                    ) + &head,
                ),
                _ => answered += 1,
            }
        }
        drop(stalls);
        (
            fives,
            answered,
            unanswered,
            started.elapsed(),
            created,
            targets,
        )
    })
    .await
    .unwrap();
    let (fives, answered, unanswered, took, created, targets) = stats;
    println!("{REQUESTS} hostile requests in {took:?}: {answered} answered below 500 (or 507), {unanswered} closed without an answer, {} 5xx", fives.len());
    assert!(fives.is_empty(), "5xx answers:\n{}", fives.join("\n---\n"));
    honest.await.unwrap();
    assert_eq!(content(&server, &good_id).await, good);
    let good_status = status(&server, &good_id).await;
    assert_eq!(good_status["state"], "complete");
    assert_eq!(good_status["sha256"], sha_hex(&good));

    // Every upload the run targeted or created, and every file left on disk, is consistent.
    wait_appends_in_flight(&server, 0).await;
    let hostile_bytes = metric(&server, "resumable_bytes_received_total").await - good.len() as f64;
    let mut all: Vec<String> = targets.iter().chain([&good_id]).cloned().collect();
    all.extend(created);
    all.extend(
        server
            .stored_files()
            .iter()
            .filter_map(|name| upload_id(name)),
    );
    all.sort();
    all.dedup();
    let mut states = std::collections::BTreeMap::<String, usize>::new();
    for (n, id) in all.iter().enumerate() {
        let state = check_consistent(&server, id, 1000 + n as u64).await;
        *states.entry(state).or_default() += 1;
    }
    println!("after the run: {states:?}; the run's appends stored {hostile_bytes} bytes");
    assert_eq!(
        client()
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// A fresh 1 MiB upload, created over a raw connection (from the blocking request loop).
fn create_raw(port: u16, name: &str) -> String {
    let body = format!(r#"{{"name":"{name}","size":{}}}"#, 1 << 20);
    let request = format!(
        "POST /uploads HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, answer) = raw(port, request.as_bytes());
    assert_eq!(status, 201, "create: {answer}");
    json(&answer)["id"].as_str().unwrap().to_owned()
}

/// `text` if it is an upload id (a lowercase UUID).
fn upload_id(text: &str) -> Option<String> {
    let parsed = uuid::Uuid::parse_str(text).ok()?;
    (parsed.hyphenated().to_string() == text).then(|| text.to_owned())
}

/// Checks one upload after the run: a removed one has no bytes left; a live one has exactly
/// `received` bytes on disk; a complete one downloads to its `sha256`; one still uploading with
/// a known size takes the rest from `received` and completes with the right digest and bytes.
/// Returns the upload's state (or `removed`) for the summary.
async fn check_consistent(server: &TestServer, id: &str, seed: u64) -> String {
    let response = client()
        .get(server.url(&format!("/uploads/{id}")))
        .send()
        .await
        .unwrap();
    if response.status() == 404 || response.status() == 410 {
        assert!(
            !server.file_path(id).exists(),
            "{id} answers {} but its bytes are still on disk",
            response.status()
        );
        return "removed".into();
    }
    assert_eq!(response.status(), 200, "status of {id}");
    let status: serde_json::Value = response.json().await.unwrap();
    let received = status["received"].as_u64().unwrap();
    let stored = std::fs::read(server.file_path(id))
        .unwrap_or_else(|e| panic!("{id}: no file for a live upload ({e}): {status}"));
    assert_eq!(
        stored.len() as u64,
        received,
        "{id}: the file's length is not `received`: {status}"
    );
    let state = status["state"].as_str().unwrap().to_owned();
    match state.as_str() {
        "complete" => {
            assert_eq!(status["size"].as_u64(), Some(received), "{status}");
            let downloaded = content(server, id).await;
            assert_eq!(
                status["sha256"].as_str(),
                Some(sha_hex(&downloaded).as_str()),
                "{id}: the download does not hash to the status's sha256"
            );
            assert_eq!(
                downloaded, stored,
                "{id}: the download is not the stored file"
            );
        }
        "uploading" => {
            // The run's random bytes are not tracked; those the server kept are read from disk
            // (their length checked above), and the test knows the rest it sends now.
            // (Not one whose size is deferred or declared huge, nor one with a declared digest.)
            let Some(size) = status["size"].as_u64() else {
                return state;
            };
            if size - received > 16 << 20 || !status["expected_sha256"].is_null() {
                return state;
            }
            let rest = data((size - received) as usize, seed);
            let answer = patch(server, id, received, rest.clone()).await;
            assert_eq!(
                answer.status(),
                200,
                "{id}: resuming at {received}: {status}"
            );
            let after: serde_json::Value = answer.json().await.unwrap();
            let whole = [stored, rest].concat();
            assert_eq!(after["state"], "complete", "{after}");
            assert_eq!(after["received"], size);
            assert_eq!(after["sha256"].as_str(), Some(sha_hex(&whole).as_str()));
            assert_eq!(content(server, id).await, whole, "{id}: resumed content");
            if received > 0 {
                return "resumed after the run's bytes".into();
            }
        }
        _ => {}
    }
    state
}

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
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut fives, mut answered, mut unanswered) = (Vec::new(), 0usize, 0usize);
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
        for _ in 0..REQUESTS {
            let (request, cut) = random_request(&mut rng, &ids);
            let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let _ = conn.write_all(&request);
            if cut {
                let _ = conn.shutdown(std::net::Shutdown::Write);
            }
            let (status, head, _) = read_answer(&mut conn);
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
        (fives, answered, unanswered, started.elapsed())
    })
    .await
    .unwrap();
    let (fives, answered, unanswered, took) = stats;
    println!("{REQUESTS} hostile requests in {took:?}: {answered} answered below 500 (or 507), {unanswered} closed without an answer, {} 5xx", fives.len());
    assert!(fives.is_empty(), "5xx answers:\n{}", fives.join("\n---\n"));
    honest.await.unwrap();
    assert_eq!(content(&server, &good_id).await, good);
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

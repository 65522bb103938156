//! Slow clients cannot take the server from everyone else: a body that trickles holds no
//! thread, one address holds a bounded share of the appends, and a body below the minimum
//! rate ends (408) with its bytes kept.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::support::*;

fn id_of(status: &serde_json::Value) -> String {
    status["id"].as_str().expect("id").to_owned()
}

/// A client on another loopback address, so per-address caps do not count it.
fn other_client() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads line")
}

#[tokio::test]
async fn a_thousand_trickling_bodies_hold_no_threads_and_block_nobody() {
    let slow = 1000;
    let server = TestServer::start_with(
        &[
            "--max-appends",
            "1100",
            "--max-appends-per-client",
            "1000",
            "--create-rate",
            "0",
        ],
        &[],
    );
    let before = threads_of(server.pid());
    let mut conns = Vec::new();
    for _ in 0..slow {
        let id = id_of(&create(&server, "slow.bin", 1_000_000).await);
        conns.push(open_patch(server.port, &id, 0, 1_000_000, b"x"));
    }
    wait_appends_in_flight(&server, slow).await;
    let threads = threads_of(server.pid());
    println!("threads: {before} idle, {threads} with {slow} trickling bodies");
    assert!(
        threads < before + 40,
        "{threads} threads with {slow} trickling bodies (was {before}): each holds threads"
    );

    // Everyone else is served meanwhile: health checks, and a whole upload at full speed.
    let bytes = data(32 * 1024 * 1024, 31);
    let upload = {
        let server_url = server.url("/uploads");
        let bytes = bytes.clone();
        tokio::spawn(async move {
            let client = other_client();
            let created: serde_json::Value = client
                .post(&server_url)
                .json(&serde_json::json!({"name": "fast.bin", "size": bytes.len()}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let id = id_of(&created);
            let answer = client
                .patch(format!("{server_url}/{id}"))
                .header("Upload-Offset", "0")
                .body(bytes)
                .send()
                .await
                .unwrap();
            (id, answer.status().as_u16())
        })
    };
    let mut slowest = Duration::ZERO;
    while !upload.is_finished() {
        let started = Instant::now();
        let health = other_client()
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("slowest /healthz beside {slow} trickling bodies: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "/healthz took {slowest:?}"
    );
    let (id, code) = upload.await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(status(&server, &id).await["sha256"], sha_hex(&bytes));
    drop(conns);
}

#[tokio::test]
async fn one_address_holds_a_bounded_share_of_the_appends() {
    let server = TestServer::start_with(&["--max-appends-per-client", "2"], &[]);
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(id_of(&create(&server, "c.bin", 1000).await));
        }
        ids
    };
    let _a = open_patch(server.port, &ids[0], 0, 1000, b"ab");
    let _b = open_patch(server.port, &ids[1], 0, 1000, b"cd");
    wait_appends_in_flight(&server, 2).await;
    let third = patch(&server, &ids[2], 0, data(1000, 32)).await;
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    let body: serde_json::Value = third.json().await.unwrap();
    assert_eq!(body["error"], "too_many_appends");

    // Another address is not counted with this one.
    let elsewhere = other_client()
        .patch(server.url(&format!("/uploads/{}", ids[2])))
        .header("Upload-Offset", "0")
        .body(data(1000, 32))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 200);

    // At its cap, a client still takes over its own stalled append.
    let stored = client()
        .head(server.url(&format!("/uploads/{}", ids[0])))
        .send()
        .await
        .unwrap()
        .headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let takeover = patch(
        &server,
        &ids[0],
        stored,
        data(1000, 33)[stored as usize..].to_vec(),
    )
    .await;
    assert!(
        takeover.status() == 200 || takeover.status() == 409,
        "takeover at the cap answered {}",
        takeover.status()
    );
    assert_ne!(takeover.status(), 429);
}

#[tokio::test]
async fn a_body_below_the_minimum_rate_ends_with_408_and_keeps_its_bytes() {
    let server = TestServer::start_with(&["--min-body-rate", "20K/1s"], &[]);
    let id = id_of(&create(&server, "t.bin", 1_000_000).await);
    // 1 KiB every 100 ms: 10 KiB/s, half the minimum.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let body = futures_util::stream::unfold(0usize, {
        let sent = sent.clone();
        move |n| {
            let sent = sent.clone();
            async move {
                if n == 100 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                sent.fetch_add(1024, std::sync::atomic::Ordering::SeqCst);
                Some((Ok::<_, std::io::Error>(vec![5u8; 1024]), n + 1))
            }
        }
    });
    let answer = client()
        .patch(server.url(&format!("/uploads/{id}")))
        .header("Upload-Offset", "0")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 408);
    let error: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(error["error"], "body_too_slow");
    let kept = error["received"].as_u64().unwrap();
    assert!(kept > 0, "what arrived is kept");
    assert_eq!(received(&server, &id).await, kept);
    assert!(
        (sent.load(std::sync::atomic::Ordering::SeqCst) as u64) < 100 * 1024,
        "the body was ended before it finished"
    );

    // A body above the rate is not disturbed.
    let fast = patch(&server, &id, kept, data(1_000_000 - kept as usize, 34)).await;
    assert_eq!(fast.status(), 200);
}

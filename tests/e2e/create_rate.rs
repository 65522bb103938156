//! Creation is rate-limited per client address (`--create-rate`, `--create-burst`): one
//! address cannot fill the disk with rows and files, and others are not slowed by it.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::support::*;

fn from(last_octet: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)))
        .build()
        .expect("client")
}

async fn create_from(server: &TestServer, client: &reqwest::Client) -> reqwest::Response {
    client
        .post(server.url("/uploads"))
        .json(&serde_json::json!({"name": "r.bin", "size": 1}))
        .send()
        .await
        .expect("create")
}

#[tokio::test]
async fn one_address_creating_as_fast_as_it_can_hits_the_limit_and_others_do_not() {
    let server = TestServer::start_with(&["--create-rate", "2/s", "--create-burst", "50"], &[]);
    let flood = from(1);
    let (mut created, mut limited, mut retry_after) = (0, 0, None);
    for _ in 0..2_000 {
        let answer = create_from(&server, &flood).await;
        match answer.status().as_u16() {
            201 => created += 1,
            429 => {
                limited += 1;
                retry_after = answer
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                let body: serde_json::Value = answer.json().await.unwrap();
                assert_eq!(body["error"], "rate_limited");
            }
            other => panic!("create answered {other}"),
        }
    }
    println!("2,000 creates from one address: {created} created, {limited} refused");
    assert!((50..=60).contains(&created), "{created} created");
    assert_eq!(server.stored_files().len(), created);
    let wait = retry_after.expect("429 carries Retry-After");
    assert!((1..=2).contains(&wait), "Retry-After: {wait}");

    // Another address is served at once; the flood's address is again after Retry-After.
    assert_eq!(create_from(&server, &from(2)).await.status(), 201);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(create_from(&server, &flood).await.status(), 201);
}

#[tokio::test]
async fn the_tutorial_protocol_is_limited_too() {
    let server = TestServer::start_with(
        &[
            "--tutorial-api",
            "--create-rate",
            "1/h",
            "--create-burst",
            "1",
        ],
        &[],
    );
    let first_append = |file: &'static str| {
        client()
            .post(server.url("/upload"))
            .header("X-File-Id", file)
            .header("X-Start-Byte", "0")
            .body("abc")
            .send()
    };
    assert_eq!(first_append("one").await.unwrap().status(), 200);
    assert_eq!(first_append("two").await.unwrap().status(), 429);
}

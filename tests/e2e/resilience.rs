use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::*;

fn id_of(status: &serde_json::Value) -> String {
    status["id"].as_str().unwrap().to_owned()
}

on_each_store! {
    #[tokio::test]
    async fn a_dropped_connection_keeps_every_byte_that_arrived(store: Store) {
        let server = TestServer::start_on(store);
        let bytes = data(1_000_000, 11);
        let id = id_of(&create(&server, "f.bin", 1_000_000).await);
        let conn = open_patch(server.port, &id, 0, 1_000_000, &bytes[..300_001]);
        // Once the server is streaming the body and has read every byte sent off the socket.
        // (Dropping at once can lose up to 128 KiB in actix-http's read buffer when the body
        // ends while the handler is behind.)
        wait_appends_in_flight(&server, 1).await;
        wait_sent_bytes_taken(&server, &conn).await;
        drop(conn);
        eventually(
            Duration::from_secs(5),
            "the 300001 bytes to be committed",
            || async { received(&server, &id).await == 300_001 },
        )
        .await;
        if let Some(len) = server.local_file_len(&id) {
            assert_eq!(len, 300_001);
        }
        let response = patch(&server, &id, 300_001, bytes[300_001..].to_vec()).await;
        assert_eq!(response.status(), 200);
        let status: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status["state"], "complete");
        assert_eq!(status["sha256"], sha_hex(&bytes));
        assert_eq!(content(&server, &id).await, bytes);
    }
}

on_each_store! {
    #[tokio::test]
    async fn a_new_patch_takes_over_from_a_stalled_one_at_once(store: Store) {
        let server = TestServer::start_on(store);
        let bytes = data(1_000_000, 12);
        let id = id_of(&create(&server, "f.bin", 1_000_000).await);
        // The stalled request: 200,000 bytes, then silence on an open connection.
        let mut stalled = open_patch(server.port, &id, 0, 1_000_000, &bytes[..200_000]);
        wait_appends_in_flight(&server, 1).await;
        wait_sent_bytes_taken(&server, &stalled).await;

        let started = Instant::now();
        // A client that lost its connection asks where to resume and sends from there.
        let mut offset = head_offset(&server, &id).await;
        let mut answer = patch(&server, &id, offset, bytes[offset as usize..].to_vec()).await;
        if answer.status() == 409 {
            let body: serde_json::Value = answer.json().await.unwrap();
            assert_eq!(body["error"], "offset_mismatch");
            offset = body["received"].as_u64().unwrap();
            assert_eq!(
                offset, 200_000,
                "the stalled request committed what it stored"
            );
            answer = patch(&server, &id, offset, bytes[offset as usize..].to_vec()).await;
        }
        assert_eq!(answer.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}: the newcomer waited for the stalled request",
            started.elapsed()
        );
        let status: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(status["sha256"], sha_hex(&bytes));
        assert_eq!(content(&server, &id).await, bytes);
        // The stalled request was answered (it may also just see its connection closed).
        stalled
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (code, _, _) = read_answer(&mut stalled);
        assert!(code == 409 || code == 0, "stalled request got {code}");
    }
}

async fn head_offset(server: &TestServer, id: &str) -> u64 {
    let response = client()
        .head(server.url(&format!("/uploads/{id}")))
        .send()
        .await
        .unwrap();
    response.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

on_each_store! {
    #[tokio::test]
    async fn after_kill_9_mid_append_the_upload_resumes_to_a_correct_file(store: Store) {
        let mut server = TestServer::start_on(store);
        let bytes = data(3_000_000, 13);
        let id = id_of(&create(&server, "f.bin", 3_000_000).await);
        assert_eq!(
            patch(&server, &id, 0, bytes[..100_000].to_vec())
                .await
                .status(),
            200
        );
        // A slow append: 1.5 MB over about 1.5 s, then the server dies mid-body.
        let mut conn = open_patch(server.port, &id, 100_000, 2_900_000, &[]);
        let mut sent = 100_000;
        for piece in bytes[100_000..1_600_000].chunks(100_000) {
            conn.write_all(piece).unwrap();
            sent += piece.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.kill9();
        drop(conn);
        server.restart();
        let offset = head_offset(&server, &id).await;
        assert!(offset >= 100_000, "a confirmed append was lost: {offset}");
        assert!(offset as usize <= sent, "received {offset} > sent {sent}");
        if let Some(len) = server.local_file_len(&id) {
            assert_eq!(len, offset);
        }
        let response = patch(&server, &id, offset, bytes[offset as usize..].to_vec()).await;
        assert_eq!(response.status(), 200);
        let status: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status["sha256"], sha_hex(&bytes));
        assert_eq!(content(&server, &id).await, bytes);
    }
}

on_each_store! {
    #[tokio::test]
    async fn sigterm_commits_open_appends_before_exiting(store: Store) {
        let mut server = TestServer::start_on(store);
        let bytes = data(1_000_000, 14);
        let id = id_of(&create(&server, "f.bin", 1_000_000).await);
        let conn = open_patch(server.port, &id, 0, 1_000_000, &bytes[..500_000]);
        wait_appends_in_flight(&server, 1).await;
        wait_sent_bytes_taken(&server, &conn).await;
        let took = server.terminate();
        assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
        drop(conn);
        server.restart();
        assert_eq!(received(&server, &id).await, 500_000);
        assert_eq!(
            patch(&server, &id, 500_000, bytes[500_000..].to_vec())
                .await
                .status(),
            200
        );
        assert_eq!(content(&server, &id).await, bytes);
    }
}

on_each_store! {
    #[tokio::test]
    async fn twenty_concurrent_uploads_all_complete_correctly(store: Store) {
        let server = std::sync::Arc::new(TestServer::start_on(store));
        let tasks: Vec<_> = (0..20u64)
            .map(|i| {
                let server = server.clone();
                tokio::spawn(async move {
                    let bytes = data(2 << 20, 100 + i);
                    let id = id_of(&create(&server, &format!("f{i}.bin"), bytes.len() as u64).await);
                    for (n, piece) in bytes.chunks(600_000).enumerate() {
                        let response = patch(&server, &id, (n * 600_000) as u64, piece.to_vec()).await;
                        assert_eq!(response.status(), 200);
                    }
                    assert_eq!(status(&server, &id).await["sha256"], sha_hex(&bytes));
                    assert_eq!(content(&server, &id).await, bytes);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }
}

on_each_store! {
    #[tokio::test]
    async fn idle_incomplete_uploads_expire_and_complete_ones_never_do(store: Store) {
        let server = TestServer::start_on_with(store, &["--expire-after", "1s"], &[]);
        let idle = id_of(&create(&server, "idle.bin", 10).await);
        assert_eq!(patch(&server, &idle, 0, vec![1; 5]).await.status(), 200);
        let done = id_of(&create(&server, "done.bin", 3).await);
        assert_eq!(patch(&server, &done, 0, vec![1; 3]).await.status(), 200);
        match store {
            Store::Local => {
                let path = server.file_path(&idle);
                eventually(
                    Duration::from_secs(10),
                    "the idle upload's file to be removed",
                    || async { !path.exists() },
                )
                .await;
            }
            // The idle upload's 5 bytes are a tail object: only the finished one may be left.
            Store::S3 => {
                let done_key = format!("{S3_PREFIX}/{done}");
                server
                    .garage()
                    .wait_for("the bucket to hold only the finished upload", |g| {
                        let counts = g.counts();
                        let only_done = counts.objects == 1
                            && counts.unfinished_uploads == 0
                            && counts.unfinished_multipart_uploads == 0
                            && g.key(&done_key).live == Some(3);
                        only_done.then_some(()).ok_or(format!("{counts:?}"))
                    })
                    .await;
            }
        }
        let response = client()
            .get(server.url(&format!("/uploads/{idle}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 410);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(status(&server, &done).await["state"], "complete");
        assert_eq!(content(&server, &done).await, vec![1; 3]);
    }
}

#[tokio::test]
async fn hostile_requests_never_get_a_5xx() {
    let server = TestServer::start();
    let id = id_of(&create(&server, "f.bin", 10).await);
    let huge = "x".repeat(200 * 1024);
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let requests = [
        format!("GET /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {huge}\r\nConnection: close\r\n\r\n"),
        format!("GET /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}Connection: close\r\n\r\n"),
        "GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".into(),
        format!("PUT /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        format!("POST /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        "DELETE /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".into(),
        "GARBAGE\r\n\r\n".into(),
        format!("PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Offset: 0\r\nUpload-Length: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"),
        format!("PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Offset: 0\r\nContent-Length: zz\r\nConnection: close\r\n\r\nx"),
        format!("GET /uploads/{id}/poll?received=-1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        format!("GET /uploads/{id}/poll?timeout=abc HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        "POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".into(),
        "POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 9\r\nConnection: close\r\n\r\n--b\r\nxx\r\n".into(),
    ];
    for request in &requests {
        let (status, _, body) = raw(server.port, request.as_bytes());
        assert!(
            (400..500).contains(&status),
            "{status} for {}: {body}",
            &request[..request.len().min(80)]
        );
    }
    let (status, _, body) = raw(
        server.port,
        b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (status, json(&body)["error"].clone()),
        (404, serde_json::json!("not_found"))
    );
    let (status, _, body) = raw(server.port, format!("PUT /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
    assert_eq!(
        (status, json(&body)["error"].clone()),
        (405, serde_json::json!("method_not_allowed"))
    );
    assert_eq!(received(&server, &id).await, 0);
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

on_each_store! {
    #[tokio::test]
    async fn a_body_that_goes_silent_is_ended_after_the_idle_timeout_keeping_its_bytes(store: Store) {
        let server = TestServer::start_on_with(store, &["--idle-timeout", "1s"], &[]);
        let bytes = data(500_000, 15);
        let id = id_of(&create(&server, "f.bin", 500_000).await);
        let mut conn = open_patch(server.port, &id, 0, 500_000, &bytes[..100_000]);
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = Instant::now();
        let (status, _, body) = read_answer(&mut conn);
        assert_eq!(status, 408, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(json(&body)["error"], "idle_timeout");
        assert_eq!(json(&body)["received"], 100_000);
        assert_eq!(received(&server, &id).await, 100_000);
        assert_eq!(
            patch(&server, &id, 100_000, bytes[100_000..].to_vec())
                .await
                .status(),
            200
        );
        assert_eq!(content(&server, &id).await, bytes);
    }
}

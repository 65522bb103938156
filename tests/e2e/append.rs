use std::time::Duration;

use serde_json::json;
use sha2::Digest;

use crate::support::*;

fn id_of(status: &serde_json::Value) -> String {
    status["id"].as_str().unwrap().to_owned()
}

on_each_store! {
    #[tokio::test]
    async fn chunks_at_offsets_complete_the_file_with_its_sha256(store: Store) {
        let server = TestServer::start_on(store);
        let bytes = data(1_500_003, 1);
        let created = create_json(
            &server,
            json!({"name": "f.bin", "size": bytes.len(), "sha256": sha_hex(&bytes)}),
        )
        .await;
        let id = id_of(&created);
        let mut offset = 0;
        let mut last_expiry = created["expires_at"].as_str().unwrap().to_owned();
        // Times are to the second: the first append must come in a later second than the creation
        // for its expires_at to be later.
        let created_at =
            humantime::parse_rfc3339(created["created_at"].as_str().unwrap()).expect("RFC 3339");
        for (i, size) in [1usize, 4095, 500_000, 7, 600_000].into_iter().enumerate() {
            if i == 0 {
                eventually(
                    Duration::from_secs(5),
                    "the clock to pass the creation's second",
                    || async { std::time::SystemTime::now() >= created_at + Duration::from_secs(1) },
                )
                .await;
            }
            let response = patch(
                &server,
                &id,
                offset as u64,
                bytes[offset..offset + size].to_vec(),
            )
            .await;
            assert_eq!(response.status(), 200);
            offset += size;
            assert_eq!(
                response.headers()["upload-offset"],
                offset.to_string().as_str()
            );
            let status: serde_json::Value = response.json().await.unwrap();
            assert_eq!(status["received"], offset);
            assert_eq!(status["state"], "uploading");
            let expiry = status["expires_at"].as_str().unwrap().to_owned();
            if i == 0 {
                assert!(expiry > last_expiry, "an append moves expires_at forward");
            }
            last_expiry = expiry;
            let head = client()
                .head(server.url(&format!("/uploads/{id}")))
                .send()
                .await
                .unwrap();
            assert_eq!(head.status(), 200);
            assert_eq!(head.headers()["upload-offset"], offset.to_string().as_str());
            assert_eq!(
                head.headers()["upload-length"],
                bytes.len().to_string().as_str()
            );
            assert_eq!(head.headers()["cache-control"], "no-store");
        }
        let response = patch(&server, &id, offset as u64, bytes[offset..].to_vec()).await;
        assert_eq!(response.status(), 200);
        let status: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status["state"], "complete");
        assert_eq!(status["sha256"], sha_hex(&bytes));
        assert!(status["expires_at"].is_null());
        assert_eq!(content(&server, &id).await, bytes);
        let get = client()
            .get(server.url(&format!("/uploads/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(get.headers()["cache-control"], "no-store");
    }
}

on_each_store! {
    #[tokio::test]
    async fn a_wrong_offset_is_409_with_the_right_one(store: Store) {
        let server = TestServer::start_on(store);
        let id = id_of(&create(&server, "f.bin", 100).await);
        assert_eq!(patch(&server, &id, 0, vec![1; 10]).await.status(), 200);
        for wrong in [0u64, 5, 11, 100] {
            let response = patch(&server, &id, wrong, vec![2; 10]).await;
            assert_eq!(response.status(), 409, "offset {wrong}");
            assert_eq!(response.headers()["upload-offset"], "10");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"], "offset_mismatch");
            assert_eq!(body["received"], 10);
        }
        assert_eq!(received(&server, &id).await, 10);
    }
}

#[tokio::test]
async fn malformed_offsets_are_400_invalid_offset() {
    let server = TestServer::start();
    let id = id_of(&create(&server, "f.bin", 100).await);
    // Spaces around a header value are not part of it (RFC 9110 §5.5), so " 5" reads as 5;
    // inside the value they are an error.
    for offset in [
        "-1",
        "1e3",
        "5 5",
        "5 x",
        "18446744073709551616",
        "abc",
        "",
        "+3",
        "0x0",
    ] {
        let request = format!(
            "PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Offset: {offset}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
        );
        let (status, _, body) = raw(server.port, request.as_bytes());
        assert_eq!(status, 400, "offset {offset:?}: {body}");
        assert_eq!(json(&body)["error"], "invalid_offset", "offset {offset:?}");
    }
    let request = format!("PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx");
    let (status, _, body) = raw(server.port, request.as_bytes());
    assert_eq!(
        (status, json(&body)["error"].clone()),
        (400, json!("invalid_offset"))
    );
    // Two different offsets in one request: neither is taken.
    let request = format!("PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Offset: 0\r\nUpload-Offset: 1\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx");
    let (status, _, body) = raw(server.port, request.as_bytes());
    assert_eq!(
        (status, json(&body)["error"].clone()),
        (400, json!("invalid_offset"))
    );
    assert_eq!(received(&server, &id).await, 0);
}

#[tokio::test]
async fn a_content_length_past_the_size_is_refused_before_a_byte_is_written() {
    let server = TestServer::start();
    let id = id_of(&create(&server, "f.bin", 100).await);
    assert_eq!(patch(&server, &id, 0, vec![1; 60]).await.status(), 200);
    let response = patch(&server, &id, 60, vec![2; 41]).await;
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "too_large");
    assert_eq!(body["received"], 60);
    assert_eq!(received(&server, &id).await, 60);
    assert_eq!(std::fs::metadata(server.file_path(&id)).unwrap().len(), 60);
}

on_each_store! {
    #[tokio::test]
    async fn a_chunked_body_past_the_size_is_cut_at_the_size_and_answered_413(store: Store) {
        let server = TestServer::start_on(store);
        let bytes = data(1000, 2);
        let id = id_of(&create(&server, "f.bin", 1000).await);
        let mut request = format!(
            "PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Offset: 0\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        let mut body = bytes.clone();
        body.extend_from_slice(&[9u8; 500]);
        for piece in body.chunks(300) {
            request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            request.extend_from_slice(piece);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        let (status, _, answer) = raw(server.port, &request);
        assert_eq!(status, 413, "{answer}");
        assert_eq!(json(&answer)["error"], "too_large");
        let status = crate::support::status(&server, &id).await;
        assert_eq!(status["received"], 1000);
        assert_eq!(status["state"], "complete");
        assert_eq!(status["sha256"], sha_hex(&bytes));
        assert_eq!(content(&server, &id).await, bytes);
    }
}

on_each_store! {
    #[tokio::test]
    async fn per_chunk_checksums_keep_good_chunks_and_discard_bad_ones(store: Store) {
        let server = TestServer::start_on(store);
        let bytes = data(30_000, 3);
        let id = id_of(&create(&server, "f.bin", 30_000).await);
        let send = |offset: usize, chunk: Vec<u8>, name: &'static str, value: String| {
            let url = server.url(&format!("/uploads/{id}"));
            async move {
                client()
                    .patch(url)
                    .header("Upload-Offset", offset.to_string())
                    .header(name, value)
                    .body(chunk)
                    .send()
                    .await
                    .unwrap()
            }
        };
        let first = &bytes[..10_000];
        let tus = format!("sha256 {}", b64(&sha2::Sha256::digest(first)));
        assert_eq!(
            send(0, first.to_vec(), "Upload-Checksum", tus)
                .await
                .status(),
            200
        );

        let second = &bytes[10_000..20_000];
        let wrong = format!("sha-256=:{}:", b64(&sha2::Sha256::digest(b"not it")));
        let response = send(10_000, second.to_vec(), "Content-Digest", wrong).await;
        assert_eq!(response.status(), 460);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            (body["error"].clone(), body["received"].clone()),
            (json!("checksum_mismatch"), json!(10_000))
        );
        assert_eq!(received(&server, &id).await, 10_000);
        if let Some(len) = server.local_file_len(&id) {
            assert_eq!(len, 10_000, "the refused chunk's bytes are not in the file");
        }

        let right = format!("sha-256=:{}:", b64(&sha2::Sha256::digest(second)));
        assert_eq!(
            send(10_000, second.to_vec(), "Content-Digest", right)
                .await
                .status(),
            200
        );

        let third = &bytes[20_000..];
        let wrong_tus = format!("sha1 {}", b64(&[0u8; 20]));
        assert_eq!(
            send(20_000, third.to_vec(), "Upload-Checksum", wrong_tus)
                .await
                .status(),
            460
        );
        let unknown = send(20_000, third.to_vec(), "Upload-Checksum", "md5 AAAA".into()).await;
        assert_eq!(unknown.status(), 400);
        let garbage = send(
            20_000,
            third.to_vec(),
            "Upload-Checksum",
            "sha256 ###".into(),
        )
        .await;
        assert_eq!(garbage.status(), 400);
        assert_eq!(
            garbage.json::<serde_json::Value>().await.unwrap()["error"],
            "invalid_checksum"
        );
        let sha1 = {
            use sha1::Digest as _;
            sha1::Sha1::digest(third).to_vec()
        };
        let good_tus = format!("sha1 {}", b64(&sha1));
        let response = send(20_000, third.to_vec(), "Upload-Checksum", good_tus).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap()["sha256"],
            sha_hex(&bytes)
        );
        assert_eq!(content(&server, &id).await, bytes);
    }
}

on_each_store! {
    #[tokio::test]
    async fn a_finished_upload_takes_no_more_bytes_whatever_the_offset(store: Store) {
        let server = TestServer::start_on(store);
        let id = id_of(&create(&server, "f.bin", 4).await);
        assert_eq!(patch(&server, &id, 0, b"abcd".to_vec()).await.status(), 200);
        for offset in [0u64, 4, 99] {
            let response = patch(&server, &id, offset, b"e".to_vec()).await;
            assert_eq!(response.status(), 409);
            assert_eq!(
                response.json::<serde_json::Value>().await.unwrap()["error"],
                "not_uploading"
            );
        }
    }
}

on_each_store! {
    #[tokio::test]
    async fn a_declared_sha256_that_does_not_match_fails_the_upload_with_422(store: Store) {
        let server = TestServer::start_on(store);
        let bytes = data(5000, 4);
        let created = create_json(
            &server,
            json!({"name": "f.bin", "size": 5000, "sha256": sha_hex(b"other").to_uppercase()}),
        )
        .await;
        assert_eq!(created["expected_sha256"], sha_hex(b"other"));
        let id = id_of(&created);
        assert_eq!(
            patch(&server, &id, 0, bytes[..2000].to_vec())
                .await
                .status(),
            200
        );
        let response = patch(&server, &id, 2000, bytes[2000..].to_vec()).await;
        assert_eq!(response.status(), 422);
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap()["error"],
            "sha256_mismatch"
        );
        let status = status(&server, &id).await;
        assert_eq!(status["state"], "failed");
        assert_eq!(status["sha256"], sha_hex(&bytes));
        assert_eq!(status["received"], 5000);
        assert_eq!(patch(&server, &id, 5000, vec![1]).await.status(), 409);
    }
}

on_each_store! {
    #[tokio::test]
    async fn delete_removes_the_bytes_and_the_id_answers_410_everywhere(store: Store) {
        let server = TestServer::start_on(store);
        let id = id_of(&create(&server, "f.bin", 100).await);
        assert_eq!(patch(&server, &id, 0, vec![1; 50]).await.status(), 200);
        // The bucket's counters may trail a request by a moment.
        let stored = Duration::from_secs(15);
        eventually(stored, "the bytes in the store", || async {
            server.holds_bytes_of(&id)
        })
        .await;
        let response = client()
            .delete(server.url(&format!("/uploads/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        eventually(stored, "the bytes gone from the store", || async {
            !server.holds_bytes_of(&id)
        })
        .await;
        let c = client();
        let path = format!("/uploads/{id}");
        let answers = [
            c.get(server.url(&path)).send().await.unwrap().status(),
            c.head(server.url(&path)).send().await.unwrap().status(),
            patch(&server, &id, 50, vec![1]).await.status(),
            c.delete(server.url(&path)).send().await.unwrap().status(),
            c.get(server.url(&format!("{path}/content")))
                .send()
                .await
                .unwrap()
                .status(),
            c.get(server.url(&format!("{path}/poll")))
                .send()
                .await
                .unwrap()
                .status(),
            c.get(server.url(&format!("{path}/events")))
                .send()
                .await
                .unwrap()
                .status(),
        ];
        assert!(answers.iter().all(|s| *s == 410), "{answers:?}");
    }
}

#[tokio::test]
async fn malformed_ids_are_400_and_unknown_ones_404() {
    let server = TestServer::start();
    let known = id_of(&create(&server, "f.bin", 10).await);
    let unknown = uuid::Uuid::new_v4().to_string();
    let c = client();
    for bad in [
        known.to_uppercase(),
        "abc".into(),
        known.replace('-', ""),
        "..%2Fetc".into(),
    ] {
        for suffix in ["", "/content", "/poll", "/events", "/ws"] {
            let response = c
                .get(server.url(&format!("/uploads/{bad}{suffix}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{bad}{suffix}");
            assert_eq!(
                response.json::<serde_json::Value>().await.unwrap()["error"],
                "invalid_id"
            );
        }
        assert_eq!(patch(&server, &bad, 0, vec![1]).await.status(), 400);
        assert_eq!(
            c.delete(server.url(&format!("/uploads/{bad}")))
                .send()
                .await
                .unwrap()
                .status(),
            400
        );
    }
    for suffix in ["", "/content", "/poll", "/events", "/ws"] {
        let response = c
            .get(server.url(&format!("/uploads/{unknown}{suffix}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{suffix}");
    }
    assert_eq!(
        c.head(server.url(&format!("/uploads/{unknown}")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(patch(&server, &unknown, 0, vec![1]).await.status(), 404);
    assert_eq!(
        c.delete(server.url(&format!("/uploads/{unknown}")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn a_multipart_patch_is_refused() {
    let server = TestServer::start();
    let id = id_of(&create(&server, "f.bin", 10).await);
    let response = client()
        .patch(server.url(&format!("/uploads/{id}")))
        .header("Upload-Offset", "0")
        .header("Content-Type", "multipart/form-data; boundary=x")
        .body("--x--")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(received(&server, &id).await, 0);
}

/// Bytes that arrive and are then followed by silence, the body still open (a client
/// between two reads of its source, a network that stalls), are made durable and counted
/// within a moment: a watcher sees them, and a client that gives up there resumes after
/// them, without waiting for the idle timeout.
#[tokio::test]
async fn bytes_followed_by_silence_are_counted_while_the_body_stays_open() {
    let server = TestServer::start();
    let size = 1_000_000;
    let bytes = data(size, 77);
    // Less than a batch (the silence seals the batch with them), and exactly one batch of
    // 256 KiB (already handed to the writer when the silence comes, so the checkpoint goes
    // alone after it).
    for sent in [100_000, 256 * 1024] {
        let id = id_of(&create(&server, "stall.bin", size as u64).await);
        let open = open_patch(server.port, &id, 0, size, &bytes[..sent]);
        eventually(
            Duration::from_secs(10),
            "the stalled bytes to be counted",
            || async { received(&server, &id).await == sent as u64 },
        )
        .await;
        // The client gives up and resumes where the server says.
        drop(open);
        let response = patch(&server, &id, sent as u64, bytes[sent..].to_vec()).await;
        assert_eq!(response.status(), 200, "resumed after {sent} bytes");
        let status = status(&server, &id).await;
        assert_eq!(status["state"], "complete", "after {sent} bytes");
        assert_eq!(status["sha256"], sha_hex(&bytes));
        assert_eq!(content(&server, &id).await, bytes);
    }
}

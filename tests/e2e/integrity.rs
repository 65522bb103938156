//! The invariants every protocol keeps (API.md): a body cut short never finishes an upload,
//! a size never changes, and whatever removes an upload removes its bytes, even across a crash.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const MIB: usize = 1024 * 1024;

/// Sends `bytes` as chunks of the chunked transfer coding, never the last (empty) chunk.
fn send_chunks(conn: &mut TcpStream, bytes: &[u8]) {
    for piece in bytes.chunks(64 * 1024) {
        conn.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .expect("chunk size");
        conn.write_all(piece).expect("chunk");
        conn.write_all(b"\r\n").expect("chunk end");
    }
}

/// Drops the connection mid-body and waits until the server has committed what arrived.
async fn cut(server: &TestServer, conn: TcpStream) {
    wait_appends_in_flight(server, 1).await;
    drop(conn);
    wait_appends_in_flight(server, 0).await;
}

fn id_from_location(location: &str) -> String {
    location.rsplit('/').next().expect("an id").to_owned()
}

fn draft_headers(version: u32) -> String {
    let content_type = if version >= 8 {
        "Content-Type: application/partial-upload\r\n"
    } else {
        ""
    };
    format!("Upload-Draft-Interop-Version: {version}\r\n{content_type}")
}

/// A draft PATCH with `Upload-Complete: ?1` and a Content-Length body.
async fn draft_final_patch(
    server: &TestServer,
    version: u32,
    id: &str,
    offset: usize,
    body: &[u8],
) -> reqwest::Response {
    draft_last_piece(server, version, id, offset, body.to_vec().into()).await
}

/// A draft append with `Upload-Complete: ?1`: this body is the upload's last piece.
async fn draft_last_piece(
    server: &TestServer,
    version: u32,
    id: &str,
    offset: usize,
    body: reqwest::Body,
) -> reqwest::Response {
    client()
        .patch(server.url(&format!("/uploads/{id}")))
        .header("Upload-Draft-Interop-Version", version.to_string())
        .header("Upload-Offset", offset.to_string())
        .header("Upload-Complete", "?1")
        .header("Content-Type", "application/partial-upload")
        .body(body)
        .send()
        .await
        .expect("draft patch")
}

/// Creates an incomplete draft (interop version 8) upload, of `length` when given.
async fn draft_create(server: &TestServer, length: Option<usize>) -> String {
    let mut create = client()
        .post(server.url("/uploads"))
        .header("Upload-Draft-Interop-Version", "8")
        .header("Upload-Complete", "?0");
    if let Some(length) = length {
        create = create.header("Upload-Length", length.to_string());
    }
    let created = create.send().await.expect("draft create");
    id_from_location(created.headers()["location"].to_str().expect("location"))
}

fn assert_interrupted(status: &Value, received: usize, size: Option<usize>) {
    assert_eq!(status["state"], "uploading", "{status}");
    assert_eq!(status["received"], received as u64, "{status}");
    assert_eq!(status["size"], serde_json::json!(size), "{status}");
    assert_eq!(status["sha256"], Value::Null, "{status}");
}

async fn assert_complete(server: &TestServer, id: &str, bytes: &[u8]) {
    let status = status(server, id).await;
    assert_eq!(status["state"], "complete", "{status}");
    assert_eq!(status["size"], bytes.len() as u64, "{status}");
    assert_eq!(status["sha256"], sha_hex(bytes), "{status}");
    assert_eq!(content(server, id).await, bytes);
}

on_each_store! {
    #[tokio::test]
    async fn a_cut_final_draft_append_keeps_its_bytes_and_finishes_nothing(store: Store) {
        let server = TestServer::start_on(store);
        let bytes = data(2 * MIB, 901);
        for version in [6, 8] {
            for declared in [None, Some(2 * MIB)] {
                let mut create = client()
                    .post(server.url("/uploads"))
                    .header("Upload-Draft-Interop-Version", version.to_string())
                    .header("Upload-Complete", "?0");
                if let Some(size) = declared {
                    create = create.header("Upload-Length", size.to_string());
                }
                let created = create.send().await.expect("create");
                assert_eq!(created.status(), 201);
                let location = created.headers()["location"].to_str().unwrap().to_owned();
                let id = id_from_location(&location);

                let head = format!(
                    "PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\n{}Upload-Offset: 0\r\n\
                     Upload-Complete: ?1\r\nTransfer-Encoding: chunked\r\n\r\n",
                    draft_headers(version)
                );
                let mut conn = send_raw(server.port, head.as_bytes());
                send_chunks(&mut conn, &bytes[..MIB]);
                cut(&server, conn).await;
                assert_interrupted(&status(&server, &id).await, MIB, declared);

                let last = draft_final_patch(&server, version, &id, MIB, &bytes[MIB..]).await;
                let what = format!("draft {version}, declared {declared:?}");
                assert_eq!(last.status(), 204, "{what}");
                assert_eq!(last.headers()["upload-complete"], "?1");
                assert_complete(&server, &id, &bytes).await;
            }
        }
    }
}

#[tokio::test]
async fn a_cut_creation_with_upload_finishes_nothing_in_any_protocol() {
    let server = TestServer::start();
    let bytes = data(2 * MIB, 902);
    // (protocol headers, framing, declared size)
    let cases: [(&str, bool, Option<usize>); 4] = [
        (
            "Upload-Draft-Interop-Version: 6\r\nUpload-Complete: ?1\r\n",
            true,
            None,
        ),
        (
            "Upload-Draft-Interop-Version: 8\r\nUpload-Complete: ?1\r\nUpload-Length: 2097152\r\n",
            true,
            Some(2 * MIB),
        ),
        (
            "Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
             Upload-Length: 2097152\r\nContent-Length: 2097152\r\n",
            false,
            Some(2 * MIB),
        ),
        (
            "Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
             Upload-Defer-Length: 1\r\n",
            true,
            None,
        ),
    ];
    for (n, (protocol, chunked, declared)) in cases.into_iter().enumerate() {
        let before = server.stored_files();
        let framing = if chunked {
            "Transfer-Encoding: chunked\r\n"
        } else {
            ""
        };
        let head = format!("POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\n{protocol}{framing}\r\n");
        let mut conn = send_raw(server.port, head.as_bytes());
        if chunked {
            send_chunks(&mut conn, &bytes[..MIB]);
        } else {
            conn.write_all(&bytes[..MIB]).expect("body");
        }
        cut(&server, conn).await;
        // The client never saw a Location; the upload is found where its bytes are.
        let id = server
            .stored_files()
            .into_iter()
            .find(|f| !before.contains(f))
            .unwrap_or_else(|| panic!("case {n}: the creation left an upload"));
        assert_interrupted(&status(&server, &id).await, MIB, declared);

        let resumed = if protocol.starts_with("Tus") {
            let mut request = client()
                .patch(server.url(&format!("/uploads/{id}")))
                .header("Tus-Resumable", "1.0.0")
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", MIB.to_string());
            if declared.is_none() {
                request = request.header("Upload-Length", (2 * MIB).to_string());
            }
            request.body(bytes[MIB..].to_vec()).send().await.unwrap()
        } else {
            draft_final_patch(&server, 8, &id, MIB, &bytes[MIB..]).await
        };
        assert_eq!(resumed.status(), 204, "case {n}");
        assert_complete(&server, &id, &bytes).await;
    }
}

on_each_store! {
    #[tokio::test]
    async fn a_final_append_that_ends_short_of_the_size_is_409_and_keeps_its_bytes(store: Store) {
        let server = TestServer::start_on(store);
        let bytes = data(1000, 903);
        let id = draft_create(&server, Some(1000)).await;
        // A chunked `?1` body that ends normally after 400 of the 1000 bytes.
        let piece = bytes[..400].to_vec();
        let body = futures_util::stream::iter([Ok::<_, std::io::Error>(piece)]);
        let short = draft_last_piece(&server, 8, &id, 0, reqwest::Body::wrap_stream(body)).await;
        assert_eq!(short.status(), 409);
        assert_eq!(short.headers()["upload-offset"], "400");
        let answer: Value = short.json().await.unwrap();
        assert_eq!(answer["error"], "length_mismatch");
        assert_interrupted(&status(&server, &id).await, 400, Some(1000));

        // The same with a Content-Length that cannot reach the size: refused before a byte.
        let refused = draft_final_patch(&server, 8, &id, 400, &bytes[400..900]).await;
        assert_eq!(refused.status(), 409);
        assert_interrupted(&status(&server, &id).await, 400, Some(1000));

        let last = draft_final_patch(&server, 8, &id, 400, &bytes[400..]).await;
        assert_eq!(last.status(), 204);
        assert_complete(&server, &id, &bytes).await;

        // A chunked last piece that runs past the size: what fits is kept, the rest never is.
        let id = draft_create(&server, Some(1000)).await;
        let mut longer = bytes.clone();
        longer.extend_from_slice(&data(500, 910));
        let over = draft_last_piece(&server, 8, &id, 0, chunked(&longer)).await;
        assert_eq!(over.status(), 409);
        assert_eq!(
            over.json::<Value>().await.unwrap()["error"],
            "length_mismatch"
        );
        if let Some(len) = server.local_file_len(&id) {
            assert_eq!(len, 1000);
        }
        assert_complete(&server, &id, &bytes).await;
    }
}

/// A chunked body (no Content-Length) for reqwest.
fn chunked(bytes: &[u8]) -> reqwest::Body {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
}

#[tokio::test]
async fn an_append_that_completes_an_upload_answers_2xx_in_every_protocol() {
    let server = TestServer::start_with(&["--tutorial-api"], &[]);
    let bytes = data(5000, 904);
    let sha = sha_hex(&bytes);
    let mut finished: Vec<(String, String)> = Vec::new();
    let location =
        |r: &reqwest::Response| id_from_location(r.headers()["location"].to_str().unwrap());

    // Native: the JSON creation, then one PATCH.
    let id = create(&server, "n.bin", 5000).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(patch(&server, &id, 0, bytes.clone()).await.status(), 200);
    finished.push(("native".into(), id));

    // tus: creation, then PATCH; and creation-with-upload.
    let tus = || {
        client()
            .post(server.url("/uploads"))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", "5000")
    };
    let created = tus().send().await.unwrap();
    let id = location(&created);
    let appended = client()
        .patch(server.url(&format!("/uploads/{id}")))
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), 204);
    finished.push(("tus".into(), id));
    let with_upload = tus()
        .header("Content-Type", "application/offset+octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(with_upload.status(), 201);
    finished.push(("tus creation-with-upload".into(), location(&with_upload)));

    // The draft: a `?1` append with Content-Length and chunked, on a declared and a deferred
    // size; a whole upload in the creation request, with Content-Length and chunked.
    for (declared, framing_chunked) in [(true, false), (true, true), (false, true)] {
        let id = draft_create(&server, declared.then_some(5000)).await;
        let body = if framing_chunked {
            chunked(&bytes)
        } else {
            bytes.clone().into()
        };
        let answer = draft_last_piece(&server, 8, &id, 0, body).await;
        let what = format!("draft ?1 append, declared {declared}, chunked {framing_chunked}");
        assert_eq!(answer.status(), 204, "{what}");
        finished.push((what, id));
    }
    for framing_chunked in [false, true] {
        let body = if framing_chunked {
            chunked(&bytes)
        } else {
            bytes.clone().into()
        };
        let answer = client()
            .post(server.url("/uploads"))
            .header("Upload-Draft-Interop-Version", "6")
            .header("Upload-Complete", "?1")
            .body(body)
            .send()
            .await
            .unwrap();
        let what = format!("draft creation ?1, chunked {framing_chunked}");
        assert_eq!(answer.status(), 201, "{what}");
        finished.push((what, location(&answer)));
    }

    // Multipart, and the tutorial's protocol with a `name-size-mtime` file id.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes.clone()).file_name("m.bin"),
    );
    let answer = client()
        .post(server.url("/uploads"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let id = answer.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    finished.push(("multipart".into(), id));
    let tutorial = client()
        .post(server.url("/upload"))
        .header("X-File-Id", "t.bin-5000-1700000000")
        .header("X-Start-Byte", "0")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(tutorial.status(), 200);

    for (what, id) in &finished {
        let status = status(&server, id).await;
        assert_eq!(status["state"], "complete", "{what}: {status}");
        assert_eq!(status["sha256"], sha, "{what}");
    }
    assert_eq!(server.stored_files().len(), finished.len() + 1);
}

on_each_store! {
    #[tokio::test]
    async fn a_body_half_closed_under_cpu_load_keeps_every_byte_sent(store: Store) {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let server = TestServer::start_on(store);
        let stop = Arc::new(AtomicBool::new(false));
        let spinners: Vec<_> = (0..3)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                    }
                })
            })
            .collect();
        let bytes = data(3 * MIB + 12_345, 905);
        for run in 0..20 {
            let id = create(&server, "h.bin", 8 * MIB as u64).await["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let head = format!(
                "PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Offset: 0\r\n\
                 Content-Length: {}\r\n\r\n",
                8 * MIB
            );
            let mut conn = send_raw(server.port, head.as_bytes());
            conn.write_all(&bytes).expect("body");
            conn.shutdown(Shutdown::Write).expect("half-close");
            // The server answers (or closes) once it has committed what arrived.
            let _ = read_answer(&mut conn);
            wait_appends_in_flight(&server, 0).await;
            let got = received(&server, &id).await;
            assert_eq!(got, bytes.len() as u64, "run {run}: bytes sent were lost");
            if let Some(len) = server.local_file_len(&id) {
            assert_eq!(len, bytes.len() as u64);
        }
        }
        stop.store(true, Ordering::Relaxed);
        for spinner in spinners {
            spinner.join().unwrap();
        }
    }
}

on_each_store! {
    #[tokio::test]
    async fn a_crash_between_the_tombstone_and_the_unlink_leaks_no_bytes(store: Store) {
        let mut server =
            TestServer::start_on_with(store, &[], &[("RESUMABLE_FAULT_POINT", "remove-after-tombstone")]);
        let id = create(&server, "d.bin", 10_000).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(patch(&server, &id, 0, data(4000, 906)).await.status(), 200);
        let deleted = client()
            .delete(server.url(&format!("/uploads/{id}")))
            .send()
            .await;
        assert!(deleted.is_err(), "the server died at the fault point");
        server.wait_exited().await;
        let stored = Duration::from_secs(15);
        eventually(stored, "the bytes still there when the server died", || async {
            server.holds_bytes_of(&id)
        })
        .await;
        server.set_env("RESUMABLE_FAULT_POINT", None);
        server.restart();
        eventually(stored, "start-up to remove the bytes", || async {
            !server.holds_bytes_of(&id)
        })
        .await;
        let gone = client()
            .get(server.url(&format!("/uploads/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), 410);
    }
}

on_each_store! {
    #[tokio::test]
    async fn a_delete_during_a_streaming_append_ends_it_with_410_and_removes_the_bytes(store: Store) {
        let server = TestServer::start_on(store);
        let id = create(&server, "s.bin", 1_000_000).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let head = format!(
            "PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Offset: 0\r\nContent-Length: 1000000\r\n\r\n"
        );
        let mut conn = send_raw(server.port, head.as_bytes());
        conn.write_all(&data(300_000, 907)).unwrap();
        wait_appends_in_flight(&server, 1).await;
        let deleted = client()
            .delete(server.url(&format!("/uploads/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 204);
        let (code, _, body) = read_answer(&mut conn);
        assert_eq!(code, 410, "{body}");
        assert_eq!(json(&body)["error"], "gone");
        eventually(Duration::from_secs(15), "the bytes gone", || async {
            !server.holds_bytes_of(&id)
        })
        .await;
        let gone = client()
            .get(server.url(&format!("/uploads/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), 410);
    }
}

on_each_store! {
    #[tokio::test]
    async fn an_upload_is_not_expired_while_an_append_streams_into_it(store: Store) {
        let server = TestServer::start_on_with(store, &["--expire-after", "2s"], &[]);
        let id = create(&server, "e.bin", 1_000_000).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        // 30 pieces of 1 KiB, one every 200 ms: a body that streams for about 6 s.
        let body = futures_util::stream::unfold(0, |n| async move {
            if n == 30 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            Some((Ok::<_, std::io::Error>(vec![7u8; 1024]), n + 1))
        });
        let append = tokio::spawn({
            let url = server.url(&format!("/uploads/{id}"));
            async move {
                client()
                    .patch(url)
                    .header("Upload-Offset", "0")
                    .body(reqwest::Body::wrap_stream(body))
                    .send()
                    .await
                    .unwrap()
            }
        });
        wait_appends_in_flight(&server, 1).await;
        while !append.is_finished() {
            let answer = client()
                .get(server.url(&format!("/uploads/{id}")))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200, "expired while an append streamed");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let answer = append.await.unwrap();
        assert_eq!(answer.status(), 200);
        let status = status(&server, &id).await;
        assert_eq!(status["received"], 30 * 1024);
        assert_eq!(status["state"], "uploading");
    }
}

on_each_store! {
    #[tokio::test]
    async fn a_checksummed_chunk_past_the_size_is_413_and_leaves_nothing(store: Store) {
        let server = TestServer::start_on(store);
        let id = create(&server, "c.bin", 100).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let chunk = data(150, 908);
        let digest = {
            use sha2::Digest;
            b64(&sha2::Sha256::digest(&chunk))
        };
        let answer = client()
            .patch(server.url(&format!("/uploads/{id}")))
            .header("Upload-Offset", "0")
            .header("Upload-Checksum", format!("sha256 {digest}"))
            .body(chunked(&chunk))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 413);
        assert_eq!(received(&server, &id).await, 0);
        if let Some(len) = server.local_file_len(&id) {
            assert_eq!(len, 0);
        }
    }
}

on_each_store! {
    #[tokio::test]
    async fn an_overshoot_that_completes_a_mismatched_upload_is_422_failed(store: Store) {
        let server = TestServer::start_on(store);
        let wrong = "0".repeat(64);
        let id = create_json(
            &server,
            serde_json::json!({"name": "w.bin", "size": 100, "sha256": wrong}),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let answer = client()
            .patch(server.url(&format!("/uploads/{id}")))
            .header("Upload-Offset", "0")
            .body(chunked(&data(150, 909)))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 422);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"], "sha256_mismatch");
        assert_eq!(status(&server, &id).await["state"], "failed");
    }
}

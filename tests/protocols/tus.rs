use base64::Engine as _;
use sha2::Digest;

use crate::support::*;
use crate::{header, tus as tus_client, tus_patch};

async fn tus_create(
    server: &TestServer,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = tus_client().post(server.url("/uploads"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body).send().await.unwrap()
}

#[tokio::test]
async fn options_lists_version_extensions_algorithms_and_max_size() {
    let server = TestServer::start_with(&["--max-upload-size", "1G"], &[]);
    let response = client()
        .request(reqwest::Method::OPTIONS, server.url("/uploads"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "tus-version"), "1.0.0");
    assert_eq!(header(&response, "tus-resumable"), "1.0.0");
    assert_eq!(header(&response, "tus-max-size"), (1u64 << 30).to_string());
    let extensions = header(&response, "tus-extension");
    for extension in [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "expiration",
        "checksum",
    ] {
        assert!(
            extensions.split(',').any(|e| e == extension),
            "{extension} in {extensions}"
        );
    }
    let algorithms = header(&response, "tus-checksum-algorithm");
    assert!(
        algorithms.contains("sha1") && algorithms.contains("sha256"),
        "{algorithms}"
    );
}

#[tokio::test]
async fn options_is_200_on_the_collection_and_on_an_upload() {
    let server = TestServer::start();
    let created = tus_create(&server, &[("Upload-Length", "10")], vec![]).await;
    let url = header(&created, "location");
    for path in ["/uploads", url.as_str()] {
        for asking in [client(), tus_client()] {
            let response = asking
                .request(reqwest::Method::OPTIONS, server.url(path))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "OPTIONS {path}");
            assert_eq!(header(&response, "tus-version"), "1.0.0");
            assert_eq!(header(&response, "tus-resumable"), "1.0.0");
        }
    }
}

#[tokio::test]
async fn an_id_that_is_not_one_is_404_in_tus_and_400_natively() {
    let server = TestServer::start();
    let created = tus_create(&server, &[("Upload-Length", "10")], vec![]).await;
    let id = header(&created, "location")
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let unknown = "0b6f1c9e-2f7a-4f0e-9a57-2f3c5f1d7e21";
    for bad in ["not-an-id", &id.to_uppercase(), &id.replace('-', "")] {
        let url = server.url(&format!("/uploads/{bad}"));
        let requests = |c: reqwest::Client| {
            [
                ("HEAD", c.head(&url)),
                ("GET", c.get(&url)),
                (
                    "PATCH",
                    c.patch(&url)
                        .header("Upload-Offset", "0")
                        .header("Content-Type", "application/offset+octet-stream")
                        .body(vec![1u8; 10]),
                ),
                ("DELETE", c.delete(&url)),
                ("GET content", c.get(format!("{url}/content"))),
            ]
        };
        for (what, request) in requests(tus_client()) {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 404, "tus {what} {bad}");
            assert_eq!(header(&response, "tus-resumable"), "1.0.0");
            if what != "HEAD" {
                let answer: serde_json::Value = response.json().await.unwrap();
                assert_eq!(answer["error"], "not_found", "tus {what} {bad}");
            }
        }
        for (what, request) in requests(client()) {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 400, "native {what} {bad}");
            if what != "HEAD" {
                let answer: serde_json::Value = response.json().await.unwrap();
                assert_eq!(answer["error"], "invalid_id", "native {what} {bad}");
            }
        }
    }
    // A well-formed id of no upload is 404 either way; the upload itself is untouched.
    for asking in [client(), tus_client()] {
        let response = asking
            .head(server.url(&format!("/uploads/{unknown}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
    }
    assert_eq!(received(&server, &id).await, 0);
}

#[tokio::test]
async fn head_carries_upload_expires_while_the_upload_may_expire() {
    let server = TestServer::start();
    let created = tus_create(&server, &[("Upload-Length", "1000")], vec![]).await;
    let url = header(&created, "location");
    let head = tus_client().head(server.url(&url)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let first = header(&head, "upload-expires");
    assert!(httpdate_ok(&first));
    // An append moves the expiry on (to the second, as HTTP dates go: appends of a byte each
    // until one lands in a later second); HEAD tells the same time as the append's answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut offset = 0;
    let expires = loop {
        let appended = tus_patch(&server, &url, offset, vec![1]).await;
        assert_eq!(appended.status(), 204);
        offset += 1;
        let expires = header(&appended, "upload-expires");
        if expires != first {
            break expires;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Upload-Expires never moved"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let head = tus_client().head(server.url(&url)).send().await.unwrap();
    assert_eq!(header(&head, "upload-expires"), expires);
    // Once complete it never expires: no Upload-Expires.
    let rest = vec![2; (1000 - offset) as usize];
    assert_eq!(tus_patch(&server, &url, offset, rest).await.status(), 204);
    let head = tus_client().head(server.url(&url)).send().await.unwrap();
    assert_eq!(header(&head, "upload-offset"), "1000");
    assert!(head.headers().get("upload-expires").is_none());
}

#[tokio::test]
async fn a_digest_of_the_wrong_length_is_460_and_an_unreadable_one_400() {
    let server = TestServer::start();
    let bytes = data(1000, 54);
    let created = tus_create(&server, &[("Upload-Length", "1000")], vec![]).await;
    let url = header(&created, "location");
    let id = url.rsplit('/').next().unwrap().to_owned();
    let send = |name: &'static str, value: String| {
        tus_client()
            .patch(server.url(&url))
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .header(name, value)
            .body(bytes.clone())
            .send()
    };
    // A known algorithm whose digest cannot be one: a mismatch, the chunk discarded.
    for (name, value) in [
        ("Upload-Checksum", format!("sha256 {}", b64(&[7u8; 20]))),
        ("Upload-Checksum", format!("sha1 {}", b64(&[7u8; 32]))),
        ("Upload-Checksum", format!("sha1 {}", b64(&[7u8; 21]))),
        ("Content-Digest", format!("sha-256=:{}:", b64(&[7u8; 20]))),
    ] {
        let response = send(name, value.clone()).await.unwrap();
        assert_eq!(response.status(), 460, "{name}: {value}");
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["error"], "checksum_mismatch", "{name}: {value}");
        assert_eq!(received(&server, &id).await, 0);
    }
    // An unknown algorithm, or a digest that is not base64, stays a malformed request.
    for (name, value, code) in [
        (
            "Upload-Checksum",
            "md5 AAAA".to_owned(),
            "unsupported_checksum_algorithm",
        ),
        (
            "Upload-Checksum",
            "sha256 ###".to_owned(),
            "invalid_checksum",
        ),
        (
            "Content-Digest",
            "sha-256=:###:".to_owned(),
            "invalid_checksum",
        ),
    ] {
        let response = send(name, value.clone()).await.unwrap();
        assert_eq!(response.status(), 400, "{name}: {value}");
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["error"], code, "{name}: {value}");
    }
    // The same on a creation with data: refused before anything is created.
    let refused = tus_client()
        .post(server.url("/uploads"))
        .header("Upload-Length", "1000")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Checksum", format!("sha256 {}", b64(&[7u8; 20])))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 460);
    assert!(refused.headers().get("location").is_none());
    let right = format!("sha256 {}", b64(&sha2::Sha256::digest(&bytes)));
    assert_eq!(send("Upload-Checksum", right).await.unwrap().status(), 204);
    assert_eq!(content(&server, &id).await, bytes);
}

#[tokio::test]
async fn a_tus_patch_that_changes_the_length_is_400_and_a_native_one_409() {
    let server = TestServer::start();
    let created = tus_create(&server, &[("Upload-Length", "100")], vec![]).await;
    let url = header(&created, "location");
    let id = url.rsplit('/').next().unwrap().to_owned();
    let changing = |c: reqwest::Client, content_type: &'static str| {
        c.patch(server.url(&url))
            .header("Upload-Offset", "0")
            .header("Upload-Length", "101")
            .header("Content-Type", content_type)
            .body(vec![1u8; 10])
            .send()
    };
    let tus = changing(tus_client(), "application/offset+octet-stream")
        .await
        .unwrap();
    assert_eq!(tus.status(), 400);
    assert_eq!(header(&tus, "tus-resumable"), "1.0.0");
    assert_eq!(header(&tus, "upload-offset"), "0");
    let answer: serde_json::Value = tus.json().await.unwrap();
    assert_eq!(answer["error"], "length_mismatch");
    let native = changing(client(), "application/octet-stream")
        .await
        .unwrap();
    assert_eq!(native.status(), 409);
    let answer: serde_json::Value = native.json().await.unwrap();
    assert_eq!(answer["error"], "length_mismatch");
    let status = status(&server, &id).await;
    assert_eq!(
        (status["size"].clone(), status["received"].clone()),
        (serde_json::json!(100), serde_json::json!(0))
    );
}

/// checksum-trailer is not offered (actix-http drops trailers): a PATCH that announces its
/// checksum as a trailer is refused before a byte is stored, never stored unverified.
#[tokio::test]
async fn a_checksum_announced_as_a_trailer_is_refused_before_a_byte_is_stored() {
    let server = TestServer::start();
    let created = tus_create(&server, &[("Upload-Length", "10")], vec![]).await;
    let url = header(&created, "location");
    let id = url.rsplit('/').next().unwrap().to_owned();
    let answer = tus_client()
        .patch(server.url(&url))
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Trailer", "Upload-Checksum")
        .body(vec![7u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "checksum_trailer_unsupported");
    assert_eq!(received(&server, &id).await, 0);
    let options = tus_client()
        .request(reqwest::Method::OPTIONS, server.url("/uploads"))
        .send()
        .await
        .unwrap();
    assert!(!header(&options, "tus-extension").contains("checksum-trailer"));
}

#[tokio::test]
async fn a_client_without_tus_resumable_is_served_by_the_native_api() {
    let server = TestServer::start();
    // A tus creation without the header is a native one without a JSON body: 415.
    for body in [vec![], vec![1u8; 10]] {
        let mut request = client()
            .post(server.url("/uploads"))
            .header("Upload-Length", "10");
        if !body.is_empty() {
            request = request.header("Content-Type", "application/offset+octet-stream");
        }
        let refused = request.body(body).send().await.unwrap();
        assert_eq!(refused.status(), 415);
        assert!(refused.headers().get("location").is_none());
        assert!(refused.headers().get("tus-resumable").is_none());
        let answer: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(answer["error"], "unsupported_media_type");
    }
    assert!(server.stored_files().is_empty());
    // A PATCH without it is a native append: 200 and the status as JSON.
    let created = tus_create(&server, &[("Upload-Length", "10")], vec![]).await;
    let url = header(&created, "location");
    let appended = client()
        .patch(server.url(&url))
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), 200);
    assert_eq!(header(&appended, "upload-offset"), "10");
    assert!(appended.headers().get("tus-resumable").is_none());
    let answer: serde_json::Value = appended.json().await.unwrap();
    assert_eq!(answer["state"], "complete");
}

#[tokio::test]
async fn an_unsupported_version_is_412_with_tus_version() {
    let server = TestServer::start();
    let response = client()
        .post(server.url("/uploads"))
        .header("Tus-Resumable", "0.2.2")
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 412);
    assert_eq!(header(&response, "tus-version"), "1.0.0");
    assert!(server.stored_files().is_empty());
}

on_each_store! {
    #[tokio::test]
    async fn creation_head_patch_and_termination_follow_tus(store: Store) {
        let server = TestServer::start_on(store);
        let bytes = data(10_000, 51);
        let metadata = format!(
            "filename {},filetype {},flag",
            base64::engine::general_purpose::STANDARD.encode("report.pdf"),
            base64::engine::general_purpose::STANDARD.encode("application/pdf")
        );
        let created = tus_create(
            &server,
            &[("Upload-Length", "10000"), ("Upload-Metadata", &metadata)],
            vec![],
        )
        .await;
        assert_eq!(created.status(), 201);
        assert_eq!(header(&created, "tus-resumable"), "1.0.0");
        assert_eq!(header(&created, "upload-offset"), "0");
        assert!(httpdate_ok(&header(&created, "upload-expires")));
        let url = header(&created, "location");
        let id = url.rsplit('/').next().unwrap().to_owned();
        let native = status(&server, &id).await;
        assert_eq!(
            (native["name"].clone(), native["content_type"].clone()),
            (
                serde_json::json!("report.pdf"),
                serde_json::json!("application/pdf")
            )
        );

        let head = tus_client().head(server.url(&url)).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(header(&head, "upload-offset"), "0");
        assert_eq!(header(&head, "upload-length"), "10000");
        assert_eq!(header(&head, "upload-metadata"), metadata);
        assert_eq!(header(&head, "cache-control"), "no-store");
        assert_eq!(header(&head, "tus-resumable"), "1.0.0");

        let wrong_type = tus_client()
            .patch(server.url(&url))
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/octet-stream")
            .body(bytes[..10].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(wrong_type.status(), 415);
        let answer = tus_patch(&server, &url, 0, bytes[..4000].to_vec()).await;
        assert_eq!(answer.status(), 204);
        assert_eq!(header(&answer, "upload-offset"), "4000");
        assert!(httpdate_ok(&header(&answer, "upload-expires")));
        let conflict = tus_patch(&server, &url, 0, bytes[..10].to_vec()).await;
        assert_eq!(conflict.status(), 409);
        assert_eq!(header(&conflict, "upload-offset"), "4000");

        // checksum: sha1 mismatch is 460 and discards the chunk; an unknown algorithm is 400.
        let bad = tus_client()
            .patch(server.url(&url))
            .header("Upload-Offset", "4000")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Checksum", format!("sha1 {}", b64(&[7u8; 20])))
            .body(bytes[4000..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 460);
        assert_eq!(received(&server, &id).await, 4000);
        let unknown = tus_client()
            .patch(server.url(&url))
            .header("Upload-Offset", "4000")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Checksum", "crc32 AAAAAA==")
            .body(bytes[4000..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 400);
        let good = tus_client()
            .patch(server.url(&url))
            .header("Upload-Offset", "4000")
            .header("Content-Type", "application/offset+octet-stream")
            .header(
                "Upload-Checksum",
                format!("sha256 {}", b64(&sha2::Sha256::digest(&bytes[4000..]))),
            )
            .body(bytes[4000..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(good.status(), 204);
        assert_eq!(header(&good, "upload-offset"), "10000");
        assert_eq!(content(&server, &id).await, bytes);

        let gone = tus_client().delete(server.url(&url)).send().await.unwrap();
        assert_eq!(gone.status(), 204);
        assert_eq!(
            tus_client()
                .head(server.url(&url))
                .send()
                .await
                .unwrap()
                .status(),
            410
        );
    }
}

fn httpdate_ok(text: &str) -> bool {
    text.ends_with(" GMT") && text.len() == 29
}

#[tokio::test]
async fn creation_needs_a_length_or_a_deferral() {
    let server = TestServer::start();
    assert_eq!(tus_create(&server, &[], vec![]).await.status(), 400);
    assert_eq!(
        tus_create(
            &server,
            &[("Upload-Length", "5"), ("Upload-Defer-Length", "1")],
            vec![]
        )
        .await
        .status(),
        400
    );
    assert_eq!(
        tus_create(&server, &[("Upload-Defer-Length", "2")], vec![])
            .await
            .status(),
        400
    );
    assert_eq!(
        tus_create(&server, &[("Upload-Length", "-5")], vec![])
            .await
            .status(),
        400
    );
    assert_eq!(
        tus_create(
            &server,
            &[("Upload-Length", "5"), ("Upload-Metadata", "a !!")],
            vec![]
        )
        .await
        .status(),
        400
    );
}

on_each_store! {
    #[tokio::test]
    async fn a_deferred_length_is_set_by_a_later_patch(store: Store) {
        let server = TestServer::start_on(store);
        let created = tus_create(&server, &[("Upload-Defer-Length", "1")], vec![]).await;
        assert_eq!(created.status(), 201);
        let url = header(&created, "location");
        let head = tus_client().head(server.url(&url)).send().await.unwrap();
        assert_eq!(header(&head, "upload-defer-length"), "1");
        assert!(head.headers().get("upload-length").is_none());
        assert_eq!(
            tus_patch(&server, &url, 0, vec![1; 100]).await.status(),
            204
        );
        let last = tus_client()
            .patch(server.url(&url))
            .header("Upload-Offset", "100")
            .header("Upload-Length", "150")
            .header("Content-Type", "application/offset+octet-stream")
            .body(vec![2; 50])
            .send()
            .await
            .unwrap();
        assert_eq!(last.status(), 204);
        let id = url.rsplit('/').next().unwrap();
        let status = status(&server, id).await;
        assert_eq!(
            (status["size"].clone(), status["state"].clone()),
            (serde_json::json!(150), serde_json::json!("complete"))
        );
        let changed = tus_client()
            .patch(server.url(&url))
            .header("Upload-Offset", "150")
            .header("Upload-Length", "151")
            .header("Content-Type", "application/offset+octet-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(changed.status(), 409);
    }
}

on_each_store! {
    #[tokio::test]
    async fn creation_with_upload_stores_the_first_chunk(store: Store) {
        let server = TestServer::start_on(store);
        let bytes = data(5000, 52);
        let created = tus_client()
            .post(server.url("/uploads"))
            .header("Upload-Length", "5000")
            .header("Content-Type", "application/offset+octet-stream")
            .body(bytes[..3000].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        assert_eq!(header(&created, "upload-offset"), "3000");
        let url = header(&created, "location");
        assert_eq!(
            tus_patch(&server, &url, 3000, bytes[3000..].to_vec())
                .await
                .status(),
            204
        );
        assert_eq!(
            content(&server, url.rsplit('/').next().unwrap()).await,
            bytes
        );
    }
}

on_each_store! {
    #[tokio::test]
    async fn method_override_turns_a_post_into_patch_or_delete(store: Store) {
        let server = TestServer::start_on(store);
        let created = tus_create(&server, &[("Upload-Length", "4")], vec![]).await;
        let url = header(&created, "location");
        let patched = tus_client()
            .post(server.url(&url))
            .header("X-HTTP-Method-Override", "PATCH")
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .body(b"abcd".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(patched.status(), 204);
        assert_eq!(header(&patched, "upload-offset"), "4");
        let deleted = tus_client()
            .post(server.url(&url))
            .header("X-HTTP-Method-Override", "DELETE")
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 204);
    }
}

#[tokio::test]
async fn cors_preflight_and_exposed_headers_for_allowed_origins_only() {
    let server = TestServer::start_with(&["--allowed-origin", "https://app.example"], &[]);
    let preflight = client()
        .request(reqwest::Method::OPTIONS, server.url("/uploads"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "tus-resumable, upload-length, upload-metadata",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        header(&preflight, "access-control-allow-origin"),
        "https://app.example"
    );
    let methods = header(&preflight, "access-control-allow-methods");
    assert!(
        methods.contains("PATCH") && methods.contains("DELETE"),
        "{methods}"
    );
    let created = tus_client()
        .post(server.url("/uploads"))
        .header("Origin", "https://app.example")
        .header("Upload-Length", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let exposed = header(&created, "access-control-expose-headers").to_ascii_lowercase();
    for name in [
        "location",
        "upload-offset",
        "upload-length",
        "upload-metadata",
        "upload-expires",
        "tus-resumable",
    ] {
        assert!(exposed.contains(name), "{name} not exposed: {exposed}");
    }
    let foreign = client()
        .request(reqwest::Method::OPTIONS, server.url("/uploads"))
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(foreign
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

on_each_store! {
    #[tokio::test]
    async fn a_resuming_tus_client_takes_over_a_stalled_patch_at_once(store: Store) {
        use std::io::Write;
        let server = TestServer::start_on(store);
        let bytes = data(600_000, 53);
        let created = tus_create(&server, &[("Upload-Length", "600000")], vec![]).await;
        let url = header(&created, "location");
        let mut stalled = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        let head = format!(
            "PATCH {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: 600000\r\n\r\n"
        );
        stalled.write_all(head.as_bytes()).unwrap();
        stalled.write_all(&bytes[..250_000]).unwrap();
        wait_appends_in_flight(&server, 1).await;
        wait_sent_bytes_taken(&server, &stalled).await;
        let started = std::time::Instant::now();
        // What tus-js-client does after a drop: HEAD for the offset, then PATCH from there.
        let mut offset: u64 = header(
            &tus_client().head(server.url(&url)).send().await.unwrap(),
            "upload-offset",
        )
        .parse()
        .unwrap();
        let mut answer = tus_patch(&server, &url, offset, bytes[offset as usize..].to_vec()).await;
        if answer.status() == 409 {
            offset = header(&answer, "upload-offset").parse().unwrap();
            assert_eq!(offset, 250_000);
            answer = tus_patch(&server, &url, offset, bytes[offset as usize..].to_vec()).await;
        }
        assert_eq!(
            answer.status(),
            204,
            "never 423, never a wait for the dead connection"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            content(&server, url.rsplit('/').next().unwrap()).await,
            bytes
        );
        drop(stalled);
    }
}

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn json_create_answers_201_with_location_and_the_full_status() {
    let server = TestServer::start();
    let response = client()
        .post(server.url("/uploads"))
        .json(&json!({"name": "movie.mp4", "size": 1000, "content_type": "video/mp4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let status: serde_json::Value = response.json().await.unwrap();
    let id = status["id"].as_str().unwrap();
    assert_eq!(location, format!("/uploads/{id}"));
    let uuid = uuid::Uuid::parse_str(id).unwrap();
    assert_eq!(uuid.get_version_num(), 4);
    assert_eq!(id, id.to_lowercase());
    assert_eq!(status["name"], "movie.mp4");
    assert_eq!(status["size"], 1000);
    assert_eq!(status["received"], 0);
    assert_eq!(status["state"], "uploading");
    assert_eq!(status["content_type"], "video/mp4");
    assert!(status["expected_sha256"].is_null());
    assert!(status["sha256"].is_null());
    for field in ["created_at", "updated_at", "expires_at"] {
        let text = status[field].as_str().unwrap();
        assert!(humantime::parse_rfc3339(text).is_ok(), "{field}: {text}");
        assert!(text.ends_with('Z'));
    }
    // The same shape on GET.
    let fetched = status_of(&server, id).await;
    assert_eq!(fetched, status);
}

async fn status_of(server: &TestServer, id: &str) -> serde_json::Value {
    status(server, id).await
}

#[tokio::test]
async fn a_zero_byte_upload_is_complete_at_once() {
    let server = TestServer::start();
    let status = create(&server, "empty.txt", 0).await;
    assert_eq!(status["state"], "complete");
    assert_eq!(status["sha256"], sha_hex(b""));
    assert!(status["expires_at"].is_null());
    assert_eq!(content(&server, status["id"].as_str().unwrap()).await, b"");
}

#[tokio::test]
async fn names_must_be_base_names_of_1_to_255_bytes() {
    let server = TestServer::start();
    let long = "a".repeat(256);
    for bad in [
        "../x",
        "a/b",
        "a\\b",
        "a\nb",
        "tab\there",
        "",
        "..",
        long.as_str(),
    ] {
        let response = client()
            .post(server.url("/uploads"))
            .json(&json!({"name": bad, "size": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_name", "{bad:?}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let missing = client()
        .post(server.url("/uploads"))
        .json(&json!({"size": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    assert_eq!(
        missing.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_name"
    );
    let ok = "b".repeat(255);
    assert_eq!(create(&server, &ok, 1).await["name"], ok.as_str());
    assert!(
        server.stored_files().len() == 1,
        "only the valid upload was created"
    );
}

#[tokio::test]
async fn bad_fields_and_bodies_get_their_own_codes() {
    let server = TestServer::start();
    let cases = [
        (r#"{"name":"a"}"#, "invalid_size"),
        (r#"{"name":"a","size":-1}"#, "invalid_size"),
        (r#"{"name":"a","size":1e3}"#, "invalid_size"),
        (r#"{"name":"a","size":"5"}"#, "invalid_size"),
        (
            r#"{"name":"a","size":18446744073709551616}"#,
            "invalid_size",
        ),
        (r#"{"name":"a","size":1.5}"#, "invalid_size"),
        (r#"{"name":"a","size":1,"sha256":"abc"}"#, "invalid_sha256"),
        (r#"{"name":"a","size":1,"sha256":5}"#, "invalid_sha256"),
        (
            r#"{"name":"a","size":1,"content_type":"not a type"}"#,
            "invalid_content_type",
        ),
        (r#"{"name": 5,"size":1}"#, "invalid_name"),
        (r#"{"name":"a","size":1"#, "invalid_json"),
        (r#"[1,2]"#, "invalid_json"),
        (r#""#, "invalid_json"),
    ];
    for (body, code) in cases {
        let response = client()
            .post(server.url("/uploads"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap()["error"],
            code,
            "{body}"
        );
    }
    let wrong_type = client()
        .post(server.url("/uploads"))
        .header("Content-Type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    assert!(server.stored_files().is_empty());
}

#[tokio::test]
async fn a_declared_size_above_the_limit_is_413_and_creates_nothing() {
    let server = TestServer::start_with(&["--max-upload-size", "1M"], &[]);
    let response = client()
        .post(server.url("/uploads"))
        .json(&json!({"name": "big.bin", "size": 1048577}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "too_large"
    );
    assert!(server.stored_files().is_empty());
    assert_eq!(create(&server, "fits.bin", 1048576).await["size"], 1048576);
}

#[tokio::test]
async fn every_flag_has_an_environment_variable() {
    let server = TestServer::start_with(&[], &[("RESUMABLE_MAX_UPLOAD_SIZE", "1K")]);
    let response = client()
        .post(server.url("/uploads"))
        .json(&json!({"name": "big.bin", "size": 1025}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(create(&server, "fits.bin", 1024).await["size"], 1024);
}

fn form(parts: Vec<reqwest::multipart::Part>, names: &[&str]) -> reqwest::multipart::Form {
    parts
        .into_iter()
        .zip(names)
        .fold(reqwest::multipart::Form::new(), |form, (part, name)| {
            form.part(name.to_string(), part)
        })
}

#[tokio::test]
async fn a_multipart_file_part_streams_into_a_complete_upload() {
    let server = TestServer::start();
    let bytes = data(3_000_001, 7);
    let part = reqwest::multipart::Part::bytes(bytes.clone())
        .file_name("photo.jpg")
        .mime_str("image/jpeg")
        .unwrap();
    let response = client()
        .post(server.url("/uploads"))
        .multipart(form(vec![part], &["file"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let status: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/uploads/{}", status["id"].as_str().unwrap())
    );
    assert_eq!(status["state"], "complete");
    assert_eq!(status["name"], "photo.jpg");
    assert_eq!(status["content_type"], "image/jpeg");
    assert_eq!(status["size"], 3_000_001);
    assert_eq!(status["received"], 3_000_001);
    assert_eq!(status["sha256"], sha_hex(&bytes));
    assert_eq!(
        content(&server, status["id"].as_str().unwrap()).await,
        bytes
    );
}

#[tokio::test]
async fn multipart_text_fields_name_and_sha256_work_before_or_after_the_file() {
    let server = TestServer::start();
    let bytes = data(100_000, 8);
    let file = || reqwest::multipart::Part::bytes(bytes.clone()).file_name("x.bin");
    let text = |t: &str| reqwest::multipart::Part::text(t.to_owned());
    // name after the file overrides; a matching sha256 before the file completes it.
    let parts = vec![text(&sha_hex(&bytes)), file(), text("renamed.bin")];
    let response = client()
        .post(server.url("/uploads"))
        .multipart(form(parts, &["sha256", "file", "name"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let status: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status["name"], "renamed.bin");
    assert_eq!(status["state"], "complete");
    assert_eq!(status["expected_sha256"], sha_hex(&bytes));

    let parts = vec![file(), text(&sha_hex(b"something else"))];
    let response = client()
        .post(server.url("/uploads"))
        .multipart(form(parts, &["file", "sha256"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "sha256_mismatch");
    assert_eq!(body["status"]["state"], "failed");
    assert_eq!(body["status"]["sha256"], sha_hex(&bytes));

    let response = client()
        .post(server.url("/uploads"))
        .multipart(form(vec![text("a.bin")], &["name"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "missing_file"
    );
}

#[tokio::test]
async fn a_multipart_part_past_the_limit_is_413_and_leaves_nothing_behind() {
    let server = TestServer::start_with(&["--max-upload-size", "64K"], &[]);
    let part = reqwest::multipart::Part::bytes(data(200_000, 9)).file_name("big.bin");
    let result = client()
        .post(server.url("/uploads"))
        .multipart(form(vec![part], &["file"]))
        .send()
        .await;
    // The server answers before reading the whole body, so the client may see a reset instead.
    if let Ok(response) = result {
        assert_eq!(response.status(), 413);
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap()["error"],
            "too_large"
        );
    }
    eventually(
        std::time::Duration::from_secs(5),
        "the partial file to go",
        || async { server.stored_files().is_empty() },
    )
    .await;
}

#[tokio::test]
async fn with_tokens_only_bearers_create_and_the_id_stays_the_capability() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "from-file\n\n").unwrap();
    let server = TestServer::start_with(
        &["--token", "s3cret", "--token-file", file.to_str().unwrap()],
        &[],
    );
    let body = json!({"name": "a.bin", "size": 3});
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic s3cret"),
        Some("Bearer "),
    ] {
        let mut request = client().post(server.url("/uploads")).json(&body);
        if let Some(value) = auth {
            request = request.header("Authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap()["error"],
            "unauthorized"
        );
    }
    let tus = client()
        .post(server.url("/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(tus.status(), 401, "tus creation needs the token too");
    assert!(server.stored_files().is_empty());
    for token in ["s3cret", "from-file"] {
        let response = client()
            .post(server.url("/uploads"))
            .header("Authorization", format!("Bearer {token}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{token}");
        let id = response.json::<serde_json::Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        // The upload's URL alone lets its holder append, read and download.
        assert_eq!(patch(&server, &id, 0, b"abc".to_vec()).await.status(), 200);
        assert_eq!(content(&server, &id).await, b"abc");
    }
}

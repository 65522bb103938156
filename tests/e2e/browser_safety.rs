//! API.md "Browser safety": no page on another site can make a visitor's browser create or
//! change an upload, DNS rebinding does not reach a loopback service, and stored files never
//! run as pages of this origin.

use serde_json::Value;

use crate::support::*;

fn multipart_form() -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"<h1>hi</h1>".to_vec()).file_name("x.html"),
    )
}

async fn refused(response: reqwest::Response, code: u16, error: &str) {
    assert_eq!(response.status().as_u16(), code);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error);
}

#[tokio::test]
async fn writes_from_a_foreign_or_null_origin_are_403_and_store_nothing() {
    let server = TestServer::start();
    let id = create(&server, "kept.bin", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = server.url(&format!("/uploads/{id}"));
    for origin in ["https://evil.example", "null", "http://127.0.0.1:1"] {
        let json = client()
            .post(server.url("/uploads"))
            .header("Origin", origin)
            .json(&serde_json::json!({"name": "a", "size": 1}))
            .send()
            .await
            .unwrap();
        refused(json, 403, "forbidden_origin").await;
        let form = client()
            .post(server.url("/uploads"))
            .header("Origin", origin)
            .multipart(multipart_form())
            .send()
            .await
            .unwrap();
        refused(form, 403, "forbidden_origin").await;
        let append = client()
            .patch(&url)
            .header("Origin", origin)
            .header("Upload-Offset", "0")
            .body(vec![1u8; 10])
            .send()
            .await
            .unwrap();
        refused(append, 403, "forbidden_origin").await;
        let delete = client()
            .delete(&url)
            .header("Origin", origin)
            .send()
            .await
            .unwrap();
        refused(delete, 403, "forbidden_origin").await;
    }
    assert_eq!(
        server.stored_files(),
        vec![id.clone()],
        "nothing was created"
    );
    assert_eq!(received(&server, &id).await, 0, "nothing was appended");

    // The service's own origin, and requests without one, are served.
    let own = format!("http://127.0.0.1:{}", server.port);
    let appended = client()
        .patch(&url)
        .header("Origin", &own)
        .header("Upload-Offset", "0")
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), 200);
    let created = client()
        .post(server.url("/uploads"))
        .header("Origin", format!("http://localhost:{}", server.port))
        .json(&serde_json::json!({"name": "b", "size": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
}

#[tokio::test]
async fn listed_origins_may_write_across_origins() {
    let server = TestServer::start_with(&["--allowed-origin", "https://app.example"], &[]);
    let created = client()
        .post(server.url("/uploads"))
        .header("Origin", "https://app.example")
        .json(&serde_json::json!({"name": "c", "size": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(
        created.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}

#[tokio::test]
async fn a_rebinding_host_is_refused_while_bound_to_loopback() {
    let server = TestServer::start_with(&["--allowed-host", "uploads.internal"], &[]);
    let before = server.stored_files().len();
    for host in [
        "evil.example",
        "evil.example:1234",
        "127.0.0.1.evil.example",
    ] {
        let request = format!(
            "POST /uploads HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: 24\r\nConnection: close\r\n\r\n{{\"name\": \"r\", \"size\": 1}}"
        );
        let (code, _, body) = raw(server.port, request.as_bytes());
        assert_eq!(code, 421, "Host: {host}: {body}");
        assert_eq!(json(&body)["error"], "misdirected_request");
    }
    assert_eq!(server.stored_files().len(), before);
    for host in ["localhost", "uploads.internal:8080", "127.0.0.1"] {
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        assert_eq!(raw(server.port, request.as_bytes()).0, 200, "Host: {host}");
    }
}

#[tokio::test]
async fn stored_files_never_run_as_pages_and_the_page_cannot_be_framed() {
    let server = TestServer::start();
    let created: Value = client()
        .post(server.url("/uploads"))
        .multipart(multipart_form())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let download = client()
        .get(server.url(&format!("/uploads/{id}/content")))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["x-content-type-options"], "nosniff");
    assert_eq!(download.headers()["content-security-policy"], "sandbox");

    let page = client().get(server.url("/")).send().await.unwrap();
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let head = client().head(server.url("/")).send().await.unwrap();
    assert_eq!(head.status(), 200);
}

#[tokio::test]
async fn bidi_controls_are_removed_from_names() {
    let server = TestServer::start();
    let created = create(&server, "invoice\u{202E}fdp.exe", 1).await;
    assert_eq!(created["name"], "invoicefdp.exe");
    let tus = client()
        .post(server.url("/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "1")
        .header(
            "Upload-Metadata",
            format!("filename {}", b64("a\u{2067}b\u{2069}.txt".as_bytes())),
        )
        .send()
        .await
        .unwrap();
    let location = tus.headers()["location"].to_str().unwrap().to_owned();
    let id = location.rsplit('/').next().unwrap();
    assert_eq!(status(&server, id).await["name"], "ab.txt");
}

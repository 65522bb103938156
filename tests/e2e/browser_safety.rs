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

/// The status code a raw WebSocket handshake with these `Host` and `Origin` gets.
fn websocket_handshake(port: u16, id: &str, host: &str, origin: &str) -> u16 {
    let request = format!(
        "GET /uploads/{id}/ws HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    raw(port, request.as_bytes()).0
}

#[tokio::test]
async fn websockets_follow_the_same_origin_rule_scheme_and_port_included() {
    let server = TestServer::start();
    let id = create(&server, "w.bin", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let port = server.port;
    let other = port.wrapping_add(1).max(1);
    let own = format!("127.0.0.1:{port}");
    // Before, an origin matching the request's own Host passed: the Host is the client's word.
    for (host, origin) in [
        (own.clone(), format!("https://127.0.0.1:{port}")),
        (own.clone(), format!("http://127.0.0.1:{other}")),
        (
            format!("127.0.0.1:{other}"),
            format!("http://127.0.0.1:{other}"),
        ),
        (
            format!("localhost:{other}"),
            format!("http://localhost:{other}"),
        ),
        (own.clone(), "null".to_owned()),
        (own.clone(), "https://evil.example".to_owned()),
    ] {
        let id = id.clone();
        let code =
            tokio::task::spawn_blocking(move || websocket_handshake(port, &id, &host, &origin))
                .await
                .unwrap();
        assert_eq!(code, 403);
    }
    for origin in [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
    ] {
        let (id, host) = (id.clone(), own.clone());
        let code =
            tokio::task::spawn_blocking(move || websocket_handshake(port, &id, &host, &origin))
                .await
                .unwrap();
        assert_eq!(code, 101);
    }
}

#[tokio::test]
async fn the_tutorial_protocol_and_method_overrides_are_covered_too() {
    let server = TestServer::start_with(&["--tutorial-api"], &[]);
    let appended = client()
        .post(server.url("/upload"))
        .header("Origin", "https://evil.example")
        .header("X-File-Id", "a.txt-3-1700000000000")
        .header("X-Start-Byte", "0")
        .body("abc")
        .send()
        .await
        .unwrap();
    refused(appended, 403, "forbidden_origin").await;
    assert!(server.stored_files().is_empty(), "nothing was created");
    let id = create(&server, "kept.bin", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let overridden = client()
        .post(server.url(&format!("/uploads/{id}")))
        .header("Origin", "null")
        .header("Tus-Resumable", "1.0.0")
        .header("X-HTTP-Method-Override", "DELETE")
        .send()
        .await
        .unwrap();
    refused(overridden, 403, "forbidden_origin").await;
    assert_eq!(status(&server, &id).await["state"], "uploading");
    let own = client()
        .post(server.url("/upload"))
        .header("Origin", format!("http://127.0.0.1:{}", server.port))
        .header("X-File-Id", "a.txt-3-1700000000000")
        .header("X-Start-Byte", "0")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
}

#[tokio::test]
async fn the_public_url_is_an_own_origin_and_the_page_may_reach_its_websocket() {
    let server = TestServer::start_with(
        &["--public-url", "https://files.example:8443/resumable/"],
        &[],
    );
    let request = "POST /uploads HTTP/1.1\r\nHost: files.example:8443\r\n\
                   Origin: https://files.example:8443\r\nContent-Type: application/json\r\n\
                   Content-Length: 24\r\nConnection: close\r\n\r\n{\"name\": \"p\", \"size\": 1}";
    let (code, head, body) = raw(server.port, request.as_bytes());
    assert_eq!(code, 201, "{body}");
    assert!(
        header_of(&head, "location")
            .is_some_and(|l| l.starts_with("https://files.example:8443/resumable/uploads/")),
        "{head}"
    );
    let request = "POST /uploads HTTP/1.1\r\nHost: files.example:8443\r\n\
                   Origin: http://files.example:8443\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert_eq!(
        raw(server.port, request.as_bytes()).0,
        403,
        "another scheme"
    );

    let page = client().get(server.url("/")).send().await.unwrap();
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    let connect = policy
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("connect-src"))
        .unwrap_or_default();
    for source in [
        "'self'".to_owned(),
        format!("ws://127.0.0.1:{}", server.port),
        format!("ws://localhost:{}", server.port),
        "wss://files.example:8443".to_owned(),
    ] {
        assert!(
            connect.split_whitespace().any(|s| s == source),
            "{source} in {policy}"
        );
    }
    assert!(!policy.contains("unsafe-inline"), "{policy}");
}

#[tokio::test]
async fn a_tus_file_name_of_only_bidi_controls_is_cleaned_not_refused() {
    let server = TestServer::start();
    let tus = client()
        .post(server.url("/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "1")
        .header(
            "Upload-Metadata",
            format!("filename {}", b64("\u{202E}\u{200F}".as_bytes())),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(tus.status(), 201);
    let location = tus.headers()["location"].to_str().unwrap().to_owned();
    let id = location.rsplit('/').next().unwrap();
    assert_eq!(status(&server, id).await["name"], "upload");
    let form = client()
        .post(server.url("/uploads"))
        .multipart(reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("photo\u{202E}gpj.exe"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 201);
    let body: Value = form.json().await.unwrap();
    assert_eq!(body["name"], "photogpj.exe");
}

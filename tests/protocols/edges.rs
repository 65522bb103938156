//! Corners of the protocols: answers that must still name the upload, refusals that must
//! leave nothing behind, and case-insensitive matching where HTTP says so.

use serde_json::Value;

use crate::support::*;
use crate::{client_with, header, tus};

#[tokio::test]
async fn a_tus_creation_whose_body_fails_its_checksum_still_names_the_upload() {
    let server = TestServer::start();
    let answer = tus()
        .post(server.url("/uploads"))
        .header("Upload-Length", "100")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Checksum", format!("sha256 {}", b64(&[0u8; 32])))
        .body(data(100, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 460);
    let location = header(&answer, "location");
    let head = tus().head(server.url(&location)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "upload-offset"), "0");
}

/// Concatenation is offered (tests/protocols/tus_concat.rs); a malformed `Upload-Concat` is
/// refused before a byte is stored, though the request carries a length and a body.
#[tokio::test]
async fn a_malformed_tus_concatenation_is_refused_before_anything_is_stored() {
    let server = TestServer::start();
    for concat in ["whole", "partial;", "partial final", "final"] {
        let answer = tus()
            .post(server.url("/uploads"))
            .header("Upload-Length", "100")
            .header("Upload-Concat", concat)
            .header("Content-Type", "application/offset+octet-stream")
            .body(data(100, 2))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{concat}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"], "invalid_concat", "{concat}");
    }
    assert!(server.stored_files().is_empty());
}

#[tokio::test]
async fn protocol_refusals_are_never_cached() {
    let server = TestServer::start();
    let old_tus = client_with("tus-resumable", "0.2.2")
        .post(server.url("/uploads"))
        .header("Upload-Length", "5")
        .send()
        .await
        .unwrap();
    assert_eq!(old_tus.status(), 412);
    assert_eq!(header(&old_tus, "tus-version"), "1.0.0");
    assert_eq!(header(&old_tus, "tus-resumable"), "1.0.0");
    assert_eq!(header(&old_tus, "cache-control"), "no-store");
    let body: Value = old_tus.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_version");
    let old_draft = client_with("upload-draft-interop-version", "2")
        .post(server.url("/uploads"))
        .header("Upload-Complete", "?1")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(old_draft.status(), 400);
    assert_eq!(header(&old_draft, "cache-control"), "no-store");
    assert!(server.stored_files().is_empty());
}

#[tokio::test]
async fn media_types_match_whatever_their_case() {
    let server = TestServer::start();
    let bytes = data(300, 3);
    let created = tus()
        .post(server.url("/uploads"))
        .header("Upload-Length", "300")
        .send()
        .await
        .unwrap();
    let location = header(&created, "location");
    let answer = tus()
        .patch(server.url(&location))
        .header("Upload-Offset", "0")
        .header("Content-Type", "Application/Offset+Octet-Stream")
        .body(bytes[..100].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 204);
    let draft = client_with("upload-draft-interop-version", "8")
        .patch(server.url(&location))
        .header("Upload-Offset", "100")
        .header("Upload-Complete", "?1")
        .header("Content-Type", "APPLICATION/PARTIAL-UPLOAD")
        .body(bytes[100..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(draft.status(), 204);
    let id = location.rsplit('/').next().unwrap();
    assert_eq!(status(&server, id).await["sha256"], sha_hex(&bytes));
    let json = client()
        .post(server.url("/uploads"))
        .header("Content-Type", "Application/JSON")
        .body(r#"{"name": "a", "size": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 201);
}

#[tokio::test]
async fn racing_first_tutorial_appends_for_one_file_make_one_upload() {
    let server = TestServer::start_with(&["--tutorial-api"], &[]);
    let runs = 8;
    for run in 0..runs {
        let file_id = format!("race{run}.bin-1000-1700000000");
        let bytes = data(1000, 10 + run);
        let send = |part: Vec<u8>| {
            client()
                .post(server.url("/upload"))
                .header("X-File-Id", file_id.clone())
                .header("X-Start-Byte", "0")
                .body(part)
                .send()
        };
        let (a, b) = tokio::join!(send(bytes.clone()), send(bytes.clone()));
        let codes = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
        assert!(codes.contains(&200), "run {run}: {codes:?}");
    }
    assert_eq!(
        server.stored_files().len(),
        runs as usize,
        "one upload per file id"
    );
}

#[tokio::test]
async fn a_malformed_content_length_is_400_in_the_tutorial_protocol_too() {
    let server = TestServer::start_with(&["--tutorial-api"], &[]);
    for value in ["+5", "5, 5"] {
        let request = format!(
            "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nX-File-Id: cl\r\nX-Start-Byte: 0\r\n\
             Content-Length: {value}\r\nConnection: close\r\n\r\nhello"
        );
        let (code, _, _) = raw(server.port, request.as_bytes());
        assert_eq!(code, 400, "Content-Length: {value}");
    }
    assert!(server.stored_files().is_empty());
}

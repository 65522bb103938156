//! The client logic of javascript.info's "Resumable file upload": ask /status for the bytes
//! received, then POST the rest from there with X-Start-Byte.

use std::io::Write;
use std::time::Duration;

use crate::support::*;

async fn bytes_received(server: &TestServer, file_id: &str) -> u64 {
    let response = client()
        .get(server.url("/status"))
        .header("X-File-Id", file_id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn the_tutorial_protocol_is_off_by_default() {
    let server = TestServer::start();
    let response = client()
        .get(server.url("/status"))
        .header("X-File-Id", "a-1-2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn the_tutorial_client_uploads_is_interrupted_and_resumes() {
    let server = TestServer::start_with(&["--tutorial-api"], &[]);
    let bytes = data(2_000_000, 81);
    let file_id = format!("movie.mp4-{}-1700000000000", bytes.len());
    assert_eq!(bytes_received(&server, &file_id).await, 0);

    // The first attempt sends from byte 0 and loses its connection partway.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nX-File-Id: {file_id}\r\nX-Start-Byte: 0\r\nContent-Length: {}\r\n\r\n",
        bytes.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(&bytes[..700_000]).unwrap();
    // Once the server is streaming the body and has read every byte sent off the socket.
    // (Dropping at once can lose up to 128 KiB in actix-http's read buffer when the body
    // ends while the handler is behind.)
    wait_appends_in_flight(&server, 1).await;
    wait_sent_bytes_taken(&server, &conn).await;
    drop(conn);
    eventually(
        Duration::from_secs(5),
        "the first part to be stored",
        || async { bytes_received(&server, &file_id).await == 700_000 },
    )
    .await;

    let wrong = client()
        .post(server.url("/upload"))
        .header("X-File-Id", &file_id)
        .header("X-Start-Byte", "0")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);

    let start = bytes_received(&server, &file_id).await;
    let response = client()
        .post(server.url("/upload"))
        .header("X-File-Id", &file_id)
        .header("X-Start-Byte", start.to_string())
        .body(bytes[start as usize..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(bytes_received(&server, &file_id).await, bytes.len() as u64);

    let missing = client()
        .post(server.url("/upload"))
        .header("X-Start-Byte", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    let never_seen = client()
        .post(server.url("/upload"))
        .header("X-File-Id", "other-5-1")
        .header("X-Start-Byte", "3")
        .body("xx")
        .send()
        .await
        .unwrap();
    assert_eq!(never_seen.status(), 400);
}

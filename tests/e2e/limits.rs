//! The operator's limits: header size, concurrent appends, free disk space, a full disk.

use std::io::Write;
use std::process::Command;

use crate::support::*;

fn id_of(status: &serde_json::Value) -> String {
    status["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_request_head_past_the_limit_is_431() {
    let server = TestServer::start_with(&["--max-header-size", "2K"], &[]);
    let big = "x".repeat(3000);
    let response = client()
        .get(server.url("/healthz"))
        .header("X-Big", big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "headers_too_large"
    );
    let small = client()
        .get(server.url("/healthz"))
        .header("X-Small", "y".repeat(500))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
}

#[tokio::test]
async fn appends_past_the_concurrent_limit_get_503_with_retry_after() {
    let server = TestServer::start_with(&["--max-appends", "1"], &[]);
    let a = id_of(&create(&server, "a.bin", 1000).await);
    let b = id_of(&create(&server, "b.bin", 10).await);
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let head = format!("PATCH /uploads/{a} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Offset: 0\r\nContent-Length: 1000\r\n\r\n");
    stalled.write_all(head.as_bytes()).unwrap();
    stalled.write_all(&[1; 100]).unwrap();
    wait_appends_in_flight(&server, 1).await;
    wait_sent_bytes_taken(&server, &stalled).await;
    let busy = patch(&server, &b, 0, vec![2; 10]).await;
    assert_eq!(busy.status(), 503);
    assert_eq!(busy.headers()["retry-after"], "1");
    assert_eq!(
        busy.json::<serde_json::Value>().await.unwrap()["error"],
        "too_many_appends"
    );
    // A resuming client of the stalled upload takes over even at the cap.
    let takeover = patch(&server, &a, 0, vec![1; 1000]).await;
    assert_eq!(
        takeover.status(),
        409,
        "the stalled request committed its 100 bytes first"
    );
    assert_eq!(
        takeover.json::<serde_json::Value>().await.unwrap()["received"],
        100
    );
    assert_eq!(patch(&server, &a, 100, vec![1; 900]).await.status(), 200);
    drop(stalled);
    assert_eq!(patch(&server, &b, 0, vec![2; 10]).await.status(), 200);
}

/// A small tmpfs to fill up. Mounting needs root: the tests that use it are `#[ignore]`d and
/// .ci/run (as root) runs them with `--ignored small_disk`; there, a failed mount fails the test.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            status.success(),
            "mounting a tmpfs (size={size}) on {} failed ({status}): these tests need root",
            dir.path().display()
        );
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The server with its uploads on an 8 MiB tmpfs and its database elsewhere, so that only the
/// bytes run out of space.
fn server_on_small_disk(extra: &[&str]) -> (SmallDisk, TestServer, tempfile::TempDir) {
    let disk = SmallDisk::mount("8m");
    let db = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}/uploads.db", db.path().display());
    let data_dir = disk.dir.path().to_str().unwrap().to_owned();
    let mut args = vec!["--data-dir", &data_dir, "--database-url", &db_url];
    args.extend_from_slice(extra);
    let server = TestServer::start_with(&args, &[]);
    (disk, server, db)
}

#[tokio::test]
#[ignore = "needs root to mount a small tmpfs; .ci/run runs it"]
async fn a_full_disk_answers_507_loses_no_byte_and_resumes_once_space_returns_on_a_small_disk() {
    let (disk, server, _db) = server_on_small_disk(&[]);
    let first = data(5 << 20, 91);
    let second = data(5 << 20, 92);
    let a = id_of(&create(&server, "a.bin", first.len() as u64).await);
    assert_eq!(patch(&server, &a, 0, first.clone()).await.status(), 200);
    let b = id_of(&create(&server, "b.bin", second.len() as u64).await);
    let full = patch(&server, &b, 0, second.clone()).await;
    assert_eq!(full.status(), 507);
    let body: serde_json::Value = full.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_storage");
    let dir = disk.dir.path().to_string_lossy().into_owned();
    assert!(
        !body.to_string().contains(&dir) && !body.to_string().contains("/files/"),
        "the answer shows a server path: {body}"
    );
    let kept = received(&server, &b).await;
    assert!(kept < second.len() as u64);
    let on_disk = std::fs::metadata(disk.dir.path().join("files").join(&b))
        .unwrap()
        .len();
    assert_eq!(
        on_disk, kept,
        "nothing past the last durable byte is counted"
    );
    // Free space, then resume from what the server kept.
    assert_eq!(
        client()
            .delete(server.url(&format!("/uploads/{a}")))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let response = patch(&server, &b, kept, second[kept as usize..].to_vec()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(content(&server, &b).await, second);
}

#[tokio::test]
#[ignore = "needs root to mount a small tmpfs; .ci/run runs it"]
async fn min_free_space_refuses_creates_and_appends_before_the_disk_is_full_on_a_small_disk() {
    let (_disk, server, _db) = server_on_small_disk(&["--min-free-space", "4M"]);
    let a = id_of(&create(&server, "a.bin", 5 << 20).await);
    assert_eq!(patch(&server, &a, 0, data(5 << 20, 93)).await.status(), 200);
    let refused = client()
        .post(server.url("/uploads"))
        .json(&serde_json::json!({"name": "b.bin", "size": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 507);
    assert_eq!(
        refused.json::<serde_json::Value>().await.unwrap()["error"],
        "insufficient_storage"
    );
}

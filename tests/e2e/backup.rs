//! The backup and restore recipe of docs/operations.md, run for real: its backup script
//! against a running server (the records, then changes, then the bytes), its restore's copies
//! into an empty directory, and a server on the restored directory serving the same files and
//! repairing what the recipe says it repairs.

use std::path::Path;
use std::process::Command;

use crate::support::*;

const OPERATIONS: &str = include_str!("../../docs/operations.md");
const MIB: usize = 1 << 20;

/// The ```sh block of docs/operations.md that contains `marker`.
fn sh_block(marker: &str) -> &'static str {
    OPERATIONS
        .split("```sh\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default())
        .find(|block| block.contains(marker))
        .unwrap_or_else(|| panic!("docs/operations.md has no sh block with {marker:?}"))
}

/// The backup script with its `DATA` and `DEST` pointed at the test's directories, split where
/// it goes from the records (`# 1.`) to the bytes (`# 2.`), so that changes can come between.
fn backup_steps(data: &Path, dest: &Path) -> (String, String) {
    let script = sh_block("resumable-backup");
    let mut head = String::new();
    let (mut records, mut bytes, mut in_bytes) = (String::new(), String::new(), false);
    for line in script.lines() {
        let line = if line.starts_with("DATA=") {
            format!("DATA='{}'", data.display())
        } else if line.starts_with("DEST=") {
            format!("DEST='{}'", dest.display())
        } else {
            line.to_owned()
        };
        in_bytes |= line.starts_with("# 2.");
        if line.starts_with("set ") || line.starts_with("DATA=") || line.starts_with("DEST=") {
            head.push_str(&line);
            head.push('\n');
        } else if in_bytes {
            bytes.push_str(&line);
            bytes.push('\n');
        } else {
            records.push_str(&line);
            records.push('\n');
        }
    }
    assert!(
        head.contains("DATA=") && head.contains("DEST=") && records.contains("VACUUM INTO"),
        "the backup script no longer reads as this test expects:\n{script}"
    );
    assert!(bytes.contains("rsync"), "the script's second step: {bytes}");
    (format!("{head}{records}"), format!("{head}{bytes}"))
}

/// The restore's copies (its other lines are systemd's and the service user's), pointed at
/// the test's directories.
fn restore_copies(backup: &Path, data: &Path) -> String {
    let block = sh_block("systemctl stop resumable");
    let copies: Vec<String> = block
        .lines()
        .filter(|line| line.starts_with("cp "))
        .map(|line| {
            line.replace(
                "/var/backups/resumable/20261206T010000Z",
                &backup.display().to_string(),
            )
            .replace("/var/lib/resumable", &data.display().to_string())
        })
        .collect();
    assert_eq!(
        copies.len(),
        2,
        "the restore copies the database and the files: {block}"
    );
    copies.join("\n")
}

fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}\nfailed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn complete_upload(server: &TestServer, bytes: &[u8]) -> String {
    let id = create(server, "whole.bin", bytes.len() as u64).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(patch(server, &id, 0, bytes.to_vec()).await.status(), 200);
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backup_recipe_restores_a_server_that_serves_the_same_files() {
    let server = TestServer::start();
    let (whole, flight, doomed) = (data(2 * MIB, 1), data(4 * MIB, 2), data(MIB, 3));
    let kept = complete_upload(&server, &whole).await;
    let deleted = complete_upload(&server, &doomed).await;
    let growing = create(&server, "flight.bin", flight.len() as u64).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        patch(&server, &growing, 0, flight[..MIB].to_vec())
            .await
            .status(),
        200
    );

    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("backup");
    let (records, bytes) = backup_steps(server.data_dir(), &dest);
    sh(&records);
    // Between the two steps, as on a busy service: more bytes, a delete, a new upload.
    assert_eq!(
        patch(&server, &growing, MIB as u64, flight[MIB..2 * MIB].to_vec())
            .await
            .status(),
        200
    );
    let removed = client()
        .delete(server.url(&format!("/uploads/{deleted}")))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let late = complete_upload(&server, &data(MIB, 4)).await;
    sh(&bytes);
    drop(server);

    let restored_dir = scratch.path().join("restored");
    std::fs::create_dir(&restored_dir).unwrap();
    sh(&restore_copies(&dest, &restored_dir));
    let restored = TestServer::start_with(&["--data-dir", restored_dir.to_str().unwrap()], &[]);

    // The same files, whole.
    assert_eq!(status(&restored, &kept).await["state"], "complete");
    assert_eq!(content(&restored, &kept).await, whole);
    // The upload in flight is back at the snapshot's offset, its file cut to it, and resumes.
    assert_eq!(received(&restored, &growing).await, MIB as u64);
    assert_eq!(
        std::fs::metadata(restored_dir.join("files").join(&growing))
            .unwrap()
            .len(),
        MIB as u64
    );
    let rest = patch(&restored, &growing, MIB as u64, flight[MIB..].to_vec()).await;
    assert_eq!(rest.status(), 200);
    let done: serde_json::Value = rest.json().await.unwrap();
    assert_eq!(done["sha256"], sha_hex(&flight));
    // The leftovers the recipe lists: the deleted upload's record (its content 410, a DELETE
    // 204) and the late upload's file (no record: 404).
    let listing = sh(&sh_block("Records of complete uploads whose file is gone")
        .replace(
            "cd /var/lib/resumable",
            &format!("cd '{}'", restored_dir.display()),
        )
        .replace(
            "/tmp/known-ids",
            &scratch.path().join("ids").display().to_string(),
        ));
    let listed: Vec<&str> = listing.lines().collect();
    assert_eq!(listed, [deleted.as_str(), late.as_str()], "{listing}");
    // Its record says complete, though its file is gone.
    assert_eq!(status(&restored, &deleted).await["state"], "complete");
    let gone = client()
        .get(restored.url(&format!("/uploads/{deleted}/content")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 410);
    let removed = client()
        .delete(restored.url(&format!("/uploads/{deleted}")))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    assert_eq!(status_code(&restored, &late).await, 404);
}

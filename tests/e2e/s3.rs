//! The bytes kept in an S3-compatible store (`--storage s3://BUCKET/PREFIX`): each test starts a
//! private Garage (tests/e2e/garage.rs) and the server against it with 5M parts, uploads over
//! the unchanged HTTP API, and then looks in the bucket: a finished upload is the one object
//! `PREFIX/<id>`, with no tail object `PREFIX/<id>.tail/…` and no multipart upload left behind.

use std::io::Write as _;
use std::ops::Range;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::garage::Garage;
use crate::support::*;

const MIB: usize = 1 << 20;
const PREFIX: &str = "incoming";

/// The server, keeping its bytes in `garage`'s bucket under `incoming/` in 5M parts.
fn start_server(garage: &Garage) -> TestServer {
    start_server_with(garage, &[])
}

/// `start_server` with more environment, which a restart may change (`TestServer::set_env`)
/// where a flag could not.
fn start_server_with(garage: &Garage, more_envs: &[(&str, &str)]) -> TestServer {
    let mut args = garage.server_args(PREFIX);
    args.extend(["--s3-part-size".to_owned(), "5M".to_owned()]);
    let mut envs = garage.server_envs();
    envs.extend(
        more_envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestServer::start_with(&args, &envs)
}

async fn create_id(server: &TestServer, size: usize) -> String {
    create(server, "s3.bin", size as u64).await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// A PATCH of `bytes[offset..end]` that must be answered 200 with every byte received.
async fn append(server: &TestServer, id: &str, bytes: &[u8], offset: usize, end: usize) -> Value {
    let response = patch(server, id, offset as u64, bytes[offset..end].to_vec()).await;
    let code = response.status();
    let text = response.text().await.expect("PATCH answer");
    assert_eq!(code, 200, "PATCH {offset}..{end}: {text}");
    let status = json(&text);
    assert_eq!(
        status["received"].as_u64(),
        Some(end as u64),
        "a body that ended is held in the store whole: {status}"
    );
    status
}

/// The upload is complete, its sha256 is the data's, and its content is the data.
async fn assert_complete(server: &TestServer, id: &str, bytes: &[u8]) {
    let status = status(server, id).await;
    assert_eq!(status["state"], "complete", "{status}");
    assert_eq!(status["received"].as_u64(), Some(bytes.len() as u64));
    assert_eq!(status["sha256"], sha_hex(bytes), "{status}");
    let downloaded = content(server, id).await;
    assert_eq!(downloaded.len(), bytes.len(), "downloaded length");
    assert!(downloaded == bytes, "the download differs from the data");
}

fn object_key(id: &str) -> String {
    format!("{PREFIX}/{id}")
}

/// The tail of `len` bytes after `parts` whole parts (the server names tails after both, so
/// no write ever changes a tail a committed state may name).
fn tail_key(id: &str, parts: u64, len: usize) -> String {
    format!("{PREFIX}/{id}.tail/{parts}-{len}")
}

/// Waits until the bucket holds exactly the finished object `incoming/<id>` of `size` bytes:
/// one object in all, no tail, no unfinished upload of any kind.
async fn assert_only_the_object(garage: &Garage, id: &str, size: usize) {
    let object = object_key(id);
    garage
        .wait_for(&format!("the bucket to hold only {object}"), |g| {
            let counts = g.counts();
            let finished = g.key(&object);
            // One object in all, and it is the finished file: no tail is left.
            if counts.objects == 1
                && counts.unfinished_uploads == 0
                && counts.unfinished_multipart_uploads == 0
                && finished.live == Some(size as u64)
                && finished.uploading == 0
            {
                Ok(())
            } else {
                Err(format!("{counts:?}, {object}: {finished:?}"))
            }
        })
        .await;
}

/// Bytes the store holds for an unfinished upload that has `received` bytes: its multipart
/// upload's parts (the test's Garage holds one upload's) plus the tail after them that a
/// commit of `received` names.
fn held_in_store(garage: &Garage, id: &str, received: u64) -> u64 {
    let counts = garage.counts();
    let parts = counts.unfinished_multipart_parts;
    let tail_len = received.saturating_sub(parts * 5 * MIB as u64) as usize;
    let tail = garage.key(&tail_key(id, parts, tail_len));
    counts.unfinished_multipart_bytes + tail.live.unwrap_or(0)
}

/// The store holds at least what the server says it received; resuming from there completes
/// the upload with the right bytes, leaving only the object.
async fn resume_to_the_end(
    garage: &Garage,
    server: &TestServer,
    id: &str,
    bytes: &[u8],
    kept: u64,
) {
    // Garage's counters may trail a request by a moment.
    garage
        .wait_for("the store to hold what was received", |g| {
            let held = held_in_store(g, id, kept);
            match held >= kept {
                true => Ok(()),
                false => Err(format!(
                    "received {kept} but parts and tail hold {held} bytes"
                )),
            }
        })
        .await;
    let status = append(server, id, bytes, kept as usize, bytes.len()).await;
    assert_eq!(status["state"], "complete", "{status}");
    assert_complete(server, id, bytes).await;
    assert_only_the_object(garage, id, bytes.len()).await;
}

#[tokio::test]
async fn an_upload_in_1_mib_patches_ends_as_one_object_with_nothing_left_behind() {
    let garage = Garage::start();
    let server = start_server(&garage);
    // 100 bodies, 20 parts: each part is grown from tails over five PATCHes.
    let size = 100 * MIB;
    let bytes = data(size, 301);
    let id = create_id(&server, size).await;
    // Each body ends in a tail; the tails grow into 5M parts.
    for offset in (0..size).step_by(MIB) {
        append(&server, &id, &bytes, offset, offset + MIB).await;
    }
    assert_complete(&server, &id, &bytes).await;

    // Across the boundary between the first two parts, each made of five tails.
    let (start, end) = (4 * MIB + MIB / 2, 6 * MIB - 1);
    let response = client()
        .get(server.url(&format!("/uploads/{id}/content")))
        .header("Range", format!("bytes={start}-{end}"))
        .send()
        .await
        .expect("range download");
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.headers()["content-range"].to_str().unwrap(),
        format!("bytes {start}-{end}/{size}")
    );
    let range = response.bytes().await.expect("range bytes");
    assert_eq!(range.len(), end + 1 - start);
    assert!(range.as_ref() == &bytes[start..=end], "the range differs");

    assert_only_the_object(&garage, &id, size).await;
}

#[tokio::test]
async fn one_body_of_several_parts_then_the_last_mib_completes() {
    let garage = Garage::start();
    let server = start_server(&garage);
    let size = 13 * MIB;
    let bytes = data(size, 302);
    let id = create_id(&server, size).await;
    append(&server, &id, &bytes, 0, 12 * MIB).await;
    garage
        .wait_for("two parts or more from the one 12 MiB body", |g| {
            let counts = g.counts();
            if counts.unfinished_multipart_uploads == 1 && counts.unfinished_multipart_parts >= 2 {
                Ok(())
            } else {
                Err(format!("{counts:?}"))
            }
        })
        .await;
    let held = held_in_store(&garage, &id, 12 * MIB as u64);
    assert!(
        held >= 12 * MIB as u64,
        "received 12 MiB but parts and tail hold {held} bytes"
    );
    let status = append(&server, &id, &bytes, 12 * MIB, size).await;
    assert_eq!(status["state"], "complete", "{status}");
    assert_complete(&server, &id, &bytes).await;
    assert_only_the_object(&garage, &id, size).await;
}

#[tokio::test]
async fn one_64_mib_body_goes_up_as_twelve_parts_and_a_tail_then_the_rest_completes() {
    let garage = Garage::start();
    let server = start_server(&garage);
    let size = 100 * MIB;
    let bytes = data(size, 309);
    let id = create_id(&server, size).await;
    append(&server, &id, &bytes, 0, 64 * MIB).await;
    // 64 MiB in 5 MiB parts: twelve parts (60 MiB) went up while the body streamed, and the
    // 4 MiB after them became the tail when it ended, the only object so far.
    let tail = tail_key(&id, 12, 4 * MIB);
    garage
        .wait_for("twelve parts and a 4 MiB tail from the one body", |g| {
            let (counts, leftover) = (g.counts(), g.key(&tail));
            if counts.unfinished_multipart_uploads == 1
                && counts.unfinished_multipart_parts == 12
                && counts.unfinished_multipart_bytes == 60 * MIB as u64
                && counts.objects == 1
                && leftover.live == Some(4 * MIB as u64)
            {
                Ok(())
            } else {
                Err(format!("{counts:?}, {tail}: {leftover:?}"))
            }
        })
        .await;
    // The rest starts from the tail read back: 36 MiB more, 20 parts in all.
    let status = append(&server, &id, &bytes, 64 * MIB, size).await;
    assert_eq!(status["state"], "complete", "{status}");
    assert_complete(&server, &id, &bytes).await;
    assert_only_the_object(&garage, &id, size).await;
}

#[tokio::test]
async fn a_tail_a_part_took_in_does_not_stay_in_the_bucket_while_the_upload_goes_on() {
    let garage = Garage::start();
    let server = start_server(&garage);
    let size = 40 * MIB;
    let bytes = data(size, 310);
    let id = create_id(&server, size).await;
    // Every 1 MiB body ends short of a part, so it leaves a tail `<id>.tail/<parts>-<len>`. Once a
    // later commit has moved that tail's bytes into a part, nothing will read it again: the
    // bucket may hold the committed tail and, until the next append, the one before it, but
    // not one per part, which would store most of a long upload twice until its end.
    for offset in (0..32 * MIB).step_by(MIB) {
        append(&server, &id, &bytes, offset, offset + MIB).await;
        garage
            .wait_for("at most the committed tail and the one it replaced", |g| {
                let counts = g.counts();
                if counts.objects <= 2 {
                    Ok(())
                } else {
                    Err(format!("after {} MiB: {counts:?}", (offset + MIB) / MIB))
                }
            })
            .await;
    }
    // 32 MiB: six parts, and 2 MiB in the tail after them; besides it the bucket holds at
    // most the 1 MiB tail it superseded, which the next append removes.
    let tail = tail_key(&id, 6, 2 * MIB);
    garage
        .wait_for("six parts and the 2 MiB tail", |g| {
            let (counts, committed) = (g.counts(), g.key(&tail));
            if counts.unfinished_multipart_parts == 6
                && counts.objects <= 2
                && committed.live == Some(2 * MIB as u64)
            {
                Ok(())
            } else {
                Err(format!("{counts:?}, {tail}: {committed:?}"))
            }
        })
        .await;
    append(&server, &id, &bytes, 32 * MIB, size).await;
    assert_complete(&server, &id, &bytes).await;
    assert_only_the_object(&garage, &id, size).await;
}

#[tokio::test]
async fn a_body_cut_mid_part_keeps_what_the_store_made_durable_and_resumes() {
    let garage = Garage::start();
    let server = start_server(&garage);
    let size = 10 * MIB;
    let sent = 7 * MIB;
    let bytes = data(size, 303);
    let id = create_id(&server, size).await;
    // Declares 8 MiB, sends 7 MiB (one 5M part and some), then leaves.
    let conn = open_patch(server.port, &id, 0, 8 * MIB, &bytes[..sent]);
    wait_appends_in_flight(&server, 1).await;
    wait_sent_bytes_taken(&server, &conn).await;
    drop(conn);
    wait_appends_in_flight(&server, 0).await;

    let kept = received(&server, &id).await;
    assert!(kept > 0, "the server had every byte sent, yet kept none");
    assert!(kept <= sent as u64, "received {kept} > sent {sent}");
    resume_to_the_end(&garage, &server, &id, &bytes, kept).await;
}

#[tokio::test]
async fn a_kill_9_mid_upload_resumes_from_what_the_store_holds() {
    let garage = Garage::start();
    let mut server = start_server(&garage);
    let size = 16 * MIB;
    let bytes = data(size, 304);
    let id = create_id(&server, size).await;
    // Confirmed: one part and a tail.
    append(&server, &id, &bytes, 0, 6 * MIB).await;
    // Then 5 MiB more of a 10 MiB body, and SIGKILL while it streams.
    let sent = 11 * MIB;
    let conn = open_patch(server.port, &id, 6 * MIB, 10 * MIB, &bytes[6 * MIB..sent]);
    wait_appends_in_flight(&server, 1).await;
    wait_sent_bytes_taken(&server, &conn).await;
    server.kill9();
    drop(conn);
    // The same flags, the same data directory.
    server.restart();

    let kept = received(&server, &id).await;
    assert!(
        kept >= 6 * MIB as u64,
        "received {kept} after the restart, but 6 MiB were confirmed"
    );
    assert!(kept <= sent as u64, "received {kept} > sent {sent}");
    resume_to_the_end(&garage, &server, &id, &bytes, kept).await;
}

#[tokio::test]
async fn deleting_an_unfinished_upload_aborts_its_parts_and_removes_its_tail() {
    let garage = Garage::start();
    let server = start_server(&garage);
    let size = 20 * MIB;
    let bytes = data(size, 305);
    let id = create_id(&server, size).await;
    // 7 MiB: a 5M part in a multipart upload, the rest in the tail object.
    append(&server, &id, &bytes, 0, 7 * MIB).await;
    // 7 MiB: one 5 MiB part, and 2 MiB in the tail after it.
    let tail = tail_key(&id, 1, 2 * MIB);
    garage
        .wait_for("a part and a tail in the store", |g| {
            let (counts, leftover) = (g.counts(), g.key(&tail));
            if counts.unfinished_multipart_uploads == 1
                && counts.unfinished_multipart_parts >= 1
                && leftover.live.is_some()
            {
                Ok(())
            } else {
                Err(format!("{counts:?}, {tail}: {leftover:?}"))
            }
        })
        .await;

    let url = server.url(&format!("/uploads/{id}"));
    let response = client().delete(&url).send().await.expect("delete");
    assert_eq!(response.status(), 204);
    let code = client().get(&url).send().await.expect("status").status();
    assert!(code == 410 || code == 404, "status after DELETE: {code}");

    let object = object_key(&id);
    garage
        .wait_for("nothing left of the deleted upload", |g| {
            let counts = g.counts();
            let (finished, leftover) = (g.key(&object), g.key(&tail));
            if counts.objects == 0
                && counts.unfinished_uploads == 0
                && counts.unfinished_multipart_uploads == 0
                && finished.live.is_none()
                && finished.uploading == 0
                && leftover.live.is_none()
            {
                Ok(())
            } else {
                Err(format!(
                    "{counts:?}, {object}: {finished:?}, {tail}: {leftover:?}"
                ))
            }
        })
        .await;
}

/// Waits until the server has expired `count` uploads in all (each is counted as its
/// expiry sweep removes it, whether or not the store could then delete its bytes).
async fn wait_expired(server: &TestServer, count: u64) {
    eventually(
        Duration::from_secs(30),
        &format!("{count} uploads expired"),
        || async { metric(server, "resumable_uploads_expired_total").await == count as f64 },
    )
    .await;
}

/// An unfinished upload of 20 MiB with 8 MiB committed: one 5 MiB part in a multipart upload
/// and 3 MiB in the tail `<id>.tail/1-3145728`. It was last appended to under a 2 s `--expire-after`
/// (the server is restarted for it: an upload's expiry is fixed by its last append, and a
/// long one first lets the test look in the bucket at leisure), and tombstones are forgotten
/// 1 s after their removal. Returns the upload's id.
async fn an_upload_soon_to_expire(garage: &Garage, server: &mut TestServer, seed: u64) -> String {
    let size = 20 * MIB;
    let bytes = data(size, seed);
    let id = create_id(server, size).await;
    append(server, &id, &bytes, 0, 7 * MIB).await;
    let tail = tail_key(&id, 1, 2 * MIB);
    garage
        .wait_for("a part and a tail in the store", |g| {
            let (counts, leftover) = (g.counts(), g.key(&tail));
            if counts.unfinished_multipart_uploads == 1
                && counts.unfinished_multipart_parts == 1
                && leftover.live == Some(2 * MIB as u64)
            {
                Ok(())
            } else {
                Err(format!("{counts:?}, {tail}: {leftover:?}"))
            }
        })
        .await;
    // Swept every 0.5 s (a quarter of the expiry).
    server.set_env("RESUMABLE_EXPIRE_AFTER", Some("2s"));
    server.set_env("RESUMABLE_FORGET_AFTER", Some("1s"));
    server.restart();
    append(server, &id, &bytes, 7 * MIB, 8 * MIB).await;
    id
}

/// Waits until nothing of the upload `id` is left in the bucket (the test's only upload with
/// bytes): no object, no tail, no multipart upload.
async fn assert_nothing_left(garage: &Garage, id: &str) {
    let (object, tail) = (object_key(id), tail_key(id, 1, 3 * MIB));
    garage
        .wait_for("nothing left of the removed upload", |g| {
            let counts = g.counts();
            let (finished, leftover) = (g.key(&object), g.key(&tail));
            if counts.objects == 0
                && counts.unfinished_uploads == 0
                && counts.unfinished_multipart_uploads == 0
                && finished.live.is_none()
                && finished.uploading == 0
                && leftover.live.is_none()
            {
                Ok(())
            } else {
                Err(format!(
                    "{counts:?}, {object}: {finished:?}, {tail}: {leftover:?}"
                ))
            }
        })
        .await;
}

#[tokio::test]
async fn an_expired_upload_leaves_no_part_tail_or_object_and_is_then_forgotten() {
    let garage = Garage::start();
    let mut server = start_server_with(&garage, &[("RESUMABLE_EXPIRE_AFTER", "1h")]);
    let id = an_upload_soon_to_expire(&garage, &mut server, 311).await;

    wait_expired(&server, 1).await;
    assert_nothing_left(&garage, &id).await;
    let code = status_code(&server, &id).await;
    assert!(code == 410 || code == 404, "status after expiry: {code}");
    eventually(
        Duration::from_secs(30),
        "the expired upload to be forgotten (404)",
        || async { status_code(&server, &id).await == 404 },
    )
    .await;
    assert_nothing_left(&garage, &id).await;
}

#[tokio::test]
async fn an_upload_expired_while_the_store_is_down_is_remembered_until_its_bytes_are_gone() {
    let mut garage = Garage::start();
    let mut server = start_server_with(&garage, &[("RESUMABLE_EXPIRE_AFTER", "1h")]);
    let id = an_upload_soon_to_expire(&garage, &mut server, 312).await;

    garage.stop();
    // Removed (410), but its parts and tail could not be: they stay owed.
    wait_expired(&server, 1).await;
    assert_eq!(status_code(&server, &id).await, 410);
    // Two more uploads (no bytes, so they need no store to be created), each created once
    // the one before is removed, expire one after the other. The first one's expiry sweep
    // starts more than --forget-after after the removal above; the second one cannot expire
    // in that same sweep (it was not due when the sweep looked), so once it has, that sweep
    // has run to its end, forgetting every tombstone it may.
    for expired in 2..=3 {
        create_id(&server, MIB).await;
        wait_expired(&server, expired).await;
    }
    assert_eq!(
        status_code(&server, &id).await,
        410,
        "forgotten while its multipart upload and tail are still in the store"
    );

    // The sweep retries the removal once the store is back, and only then forgets.
    garage.start_again();
    assert_nothing_left(&garage, &id).await;
    eventually(
        Duration::from_secs(30),
        "the expired upload to be forgotten (404) once its bytes are gone",
        || async { status_code(&server, &id).await == 404 },
    )
    .await;
}

#[tokio::test]
async fn an_expiry_cut_short_after_the_abort_is_finished_after_a_restart() {
    let garage = Garage::start();
    let mut server = start_server_with(&garage, &[("RESUMABLE_EXPIRE_AFTER", "1h")]);
    // From the restart for the short expiry on, the server dies once the expiry has aborted
    // the multipart upload, before the tail and the object are removed.
    server.set_env("RESUMABLE_FAULT_POINT", Some("s3-remove-after-abort"));
    let id = an_upload_soon_to_expire(&garage, &mut server, 314).await;
    server.wait_exited().await;
    let (object, tail) = (object_key(&id), tail_key(&id, 1, 3 * MIB));
    garage
        .wait_for("the multipart upload aborted, the tail still there", |g| {
            let counts = g.counts();
            let (finished, leftover) = (g.key(&object), g.key(&tail));
            if counts.unfinished_uploads == 0
                && counts.unfinished_multipart_uploads == 0
                && finished.uploading == 0
                // The committed tail, and the one the last append superseded (an append
                // removes the one before it; none came after).
                && (1..=2).contains(&counts.objects)
                && leftover.live == Some(3 * MIB as u64)
            {
                Ok(())
            } else {
                Err(format!(
                    "{counts:?}, {object}: {finished:?}, {tail}: {leftover:?}"
                ))
            }
        })
        .await;

    // The removal is owed: the restarted server's sweep aborts again (the store no longer
    // knows the upload) and removes the rest.
    server.set_env("RESUMABLE_FAULT_POINT", None);
    server.restart();
    assert_nothing_left(&garage, &id).await;
    let code = status_code(&server, &id).await;
    assert!(code == 410 || code == 404, "status after expiry: {code}");
}

#[tokio::test]
async fn a_store_that_goes_away_answers_503_and_the_upload_resumes_when_it_is_back() {
    let mut garage = Garage::start();
    let server = start_server(&garage);
    let size = 10 * MIB;
    let bytes = data(size, 306);
    let id = create_id(&server, size).await;
    append(&server, &id, &bytes, 0, 3 * MIB).await;

    garage.stop();
    // Carrying on needs the tail back from the store, and then a part written to it.
    let refused = patch(
        &server,
        &id,
        3 * MIB as u64,
        bytes[3 * MIB..7 * MIB].to_vec(),
    )
    .await;
    assert_eq!(refused.status(), 503);
    assert!(
        refused.headers().contains_key("retry-after"),
        "503 says when to retry"
    );
    let answer: Value = refused.json().await.expect("JSON error");
    assert_eq!(answer["error"], "storage_unavailable", "{answer}");
    let health = client()
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 503, "/healthz reports the store");
    let kept = status(&server, &id).await;
    assert_eq!(
        kept["received"].as_u64(),
        Some(3 * MIB as u64),
        "nothing the store did not take is counted: {kept}"
    );

    garage.start_again();
    append(&server, &id, &bytes, 3 * MIB, size).await;
    assert_complete(&server, &id, &bytes).await;
    assert_only_the_object(&garage, &id, size).await;
}

#[tokio::test]
async fn a_crash_while_the_store_completes_the_upload_is_sealed_at_start_up() {
    for point in ["seal-before-complete", "seal-after-complete"] {
        let garage = Garage::start();
        let mut server = start_server(&garage);
        let size = 7 * MIB;
        let bytes = data(size, 307);
        let id = create_id(&server, size).await;
        append(&server, &id, &bytes, 0, 6 * MIB).await;

        server.set_env("RESUMABLE_FAULT_POINT", Some(point));
        server.restart();
        let last = client()
            .patch(server.url(&format!("/uploads/{id}")))
            .header("Upload-Offset", (6 * MIB).to_string())
            .body(bytes[6 * MIB..].to_vec())
            .send()
            .await;
        assert!(last.is_err(), "{point}: the server died at the fault point");
        server.wait_exited().await;

        server.set_env("RESUMABLE_FAULT_POINT", None);
        server.restart();
        assert_complete(&server, &id, &bytes).await;
        assert_only_the_object(&garage, &id, size).await;
    }
}

#[tokio::test]
async fn a_size_too_large_for_the_store_is_refused_at_creation() {
    let garage = Garage::start();
    let server = start_server(&garage);
    // 10,000 parts of at most 64 MiB: 625 GiB. A declared size must not choose the part (and
    // so the memory one append holds).
    let huge = 1u64 << 50;
    let response = client()
        .post(server.url("/uploads"))
        .json(&serde_json::json!({"name": "huge.bin", "size": huge}))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 413);
    let fits = create(&server, "fits.bin", 600 << 30).await;
    assert_eq!(fits["state"], "uploading", "{fits}");
}

/// `data(len, seed)`'s bytes, a MiB at a time, so that a large upload never sits in memory:
/// the same xorshift stream, and a piece is a whole number of its 8-byte steps.
fn pieces(len: u64, seed: u64) -> impl Iterator<Item = Vec<u8>> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut left = len;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(MIB as u64) as usize;
        let mut piece = Vec::with_capacity(n + 8);
        while piece.len() < n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            piece.extend_from_slice(&state.to_le_bytes());
        }
        piece.truncate(n);
        left -= n as u64;
        Some(piece)
    })
}

/// What the thread that makes a large upload's bytes learnt on the way.
struct Made {
    /// Bytes handed to the request.
    sent: u64,
    /// Their SHA-256, in hex.
    sha256: String,
    /// The bytes of each range asked for.
    ranges: Vec<Vec<u8>>,
}

/// Makes `pieces(len, seed)` on a thread of its own and hands them to the returned stream.
/// `sha256sum` hashes them on the side (an unoptimised test build hashes at some 30 MB/s), and
/// the bytes of each of `ranges` are kept for comparing downloads with.
fn make_body(
    len: u64,
    seed: u64,
    ranges: Vec<Range<u64>>,
) -> (reqwest::Body, std::thread::JoinHandle<Made>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let maker = std::thread::spawn(move || {
        let mut sha = Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run sha256sum");
        let mut hash_input = sha.stdin.take().expect("sha256sum's stdin");
        let mut kept = vec![Vec::new(); ranges.len()];
        let mut sent = 0u64;
        for piece in pieces(len, seed) {
            let end = sent + piece.len() as u64;
            for (range, kept) in ranges.iter().zip(&mut kept) {
                let (from, to) = (range.start.max(sent), range.end.min(end));
                if from < to {
                    kept.extend_from_slice(&piece[(from - sent) as usize..(to - sent) as usize]);
                }
            }
            hash_input.write_all(&piece).expect("feed sha256sum");
            if tx.blocking_send(Bytes::from(piece)).is_err() {
                // The request ended before its body did.
                break;
            }
            sent = end;
        }
        drop(hash_input);
        let out = sha.wait_with_output().expect("sha256sum's answer");
        let sha256 = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        Made {
            sent,
            sha256,
            ranges: kept,
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let piece = rx.recv().await?;
        Some((Ok::<_, std::io::Error>(piece), rx))
    });
    (reqwest::Body::wrap_stream(stream), maker)
}

#[tokio::test]
async fn a_2_gib_upload_reads_back_by_range_at_its_start_across_a_part_boundary_and_at_its_end() {
    const SEED: u64 = 313;
    let sample = 3 * MIB + 5;
    let streamed = pieces(sample as u64, SEED).collect::<Vec<_>>().concat();
    assert!(
        streamed == data(sample, SEED),
        "the pieces are data()'s bytes"
    );

    let garage = Garage::start();
    let server = start_server(&garage);
    let size: u64 = 2 << 30;
    let id = create_id(&server, size as usize).await;
    // 2 GiB fits in 10,000 parts of 5 MiB, so the parts keep --s3-part-size: 410 of them.
    let part = 5 * MIB as u64;
    let boundary = 205 * part;
    let kib = 1 << 10;
    let ranges = vec![
        0..64 * kib,
        boundary - 32 * kib..boundary + 32 * kib,
        size - 64 * kib..size,
    ];
    let (body, maker) = make_body(size, SEED, ranges.clone());
    let started = Instant::now();
    // One body, so every part is cut from a stream; without the support client's timeout,
    // which an unoptimised server hashing 2 GiB outlasts.
    let response = reqwest::Client::new()
        .patch(server.url(&format!("/uploads/{id}")))
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Content-Length", size.to_string())
        .body(body)
        .send()
        .await
        .expect("the 2 GiB PATCH");
    let code = response.status();
    let text = response.text().await.expect("PATCH answer");
    assert_eq!(code, 200, "{text}");
    println!("2 GiB in one PATCH took {:?}", started.elapsed());
    let made = maker.join().expect("the thread making the bytes");
    assert_eq!(made.sent, size);
    assert_eq!(made.sha256.len(), 64, "sha256sum printed {:?}", made.sha256);

    let status = status(&server, &id).await;
    assert_eq!(status["state"], "complete", "{status}");
    assert_eq!(status["received"].as_u64(), Some(size));
    assert_eq!(status["sha256"], made.sha256.as_str(), "{status}");

    for (range, expected) in ranges.iter().zip(&made.ranges) {
        let (start, end) = (range.start, range.end - 1);
        let response = client()
            .get(server.url(&format!("/uploads/{id}/content")))
            .header("Range", format!("bytes={start}-{end}"))
            .send()
            .await
            .expect("range download");
        assert_eq!(response.status(), 206, "bytes={start}-{end}");
        assert_eq!(
            response.headers()["content-range"].to_str().unwrap(),
            format!("bytes {start}-{end}/{size}")
        );
        let got = response.bytes().await.expect("range bytes");
        assert_eq!(got.len(), expected.len(), "bytes={start}-{end}");
        assert!(got == expected.as_slice(), "bytes={start}-{end} differ");
    }
    assert_only_the_object(&garage, &id, size as usize).await;
}

/// An upload made of parts of 6 MiB, 6 MiB and 1 MiB: the store copies the first two into the
/// final's multipart upload (two UploadPartCopy requests, none of their bytes sent again), the
/// last, under S3's 5 MiB minimum for a copy, is sent once more. The finished object is their
/// concatenation, and no multipart upload is left unfinished.
#[tokio::test]
async fn an_upload_made_of_parts_is_copied_by_the_store_not_sent_again() {
    let garage = Garage::start();
    let server = start_server(&garage);
    let pieces = [data(6 * MIB, 311), data(6 * MIB + 123, 312), data(MIB, 313)];
    let mut ids = Vec::new();
    for piece in &pieces {
        let body = serde_json::json!({"name": "part", "size": piece.len(), "partial": true});
        let id = create_json(&server, body).await["id"]
            .as_str()
            .expect("id")
            .to_owned();
        append(&server, &id, piece, 0, piece.len()).await;
        ids.push(id);
    }
    let written = metric(&server, "resumable_store_bytes_written_total").await;
    let copies = "resumable_store_requests_total{operation=\"copy_part\",outcome=\"ok\"}";
    assert_eq!(metric(&server, copies).await, 0.0);

    let whole = create_json(
        &server,
        serde_json::json!({"name": "whole.bin", "parts": ids}),
    )
    .await;
    let id = whole["id"].as_str().expect("id").to_owned();
    let bytes = pieces.concat();
    assert_complete(&server, &id, &bytes).await;
    assert_eq!(
        metric(&server, copies).await,
        2.0,
        "the two large parts are copied"
    );
    let sent_again = metric(&server, "resumable_store_bytes_written_total").await - written;
    assert_eq!(
        sent_again, MIB as f64,
        "only the last part's bytes are written again"
    );
    for part in &ids {
        assert_eq!(
            status_code(&server, part).await,
            200,
            "part {part} is kept a while"
        );
    }
    let parts_left = garage.counts();
    assert_eq!(parts_left.unfinished_multipart_uploads, 0, "{parts_left:?}");
}

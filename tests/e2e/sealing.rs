//! An upload whose bytes are all committed is sealed (made one object, its digest checked),
//! never expired, even when the store cannot complete it at the time: a store down at start-up
//! must not keep the service from starting, and the expiry sweep seals it once the store is
//! back — without a client having to come back.

use std::time::Duration;

use crate::support::*;

const MIB: usize = 1 << 20;

#[tokio::test]
async fn an_upload_the_store_could_not_complete_is_sealed_once_the_store_is_back() {
    // Sweeps every 250 ms; the idle upload below expires a second after its creation.
    let args = ["--expire-after", "1s"];
    let mut server = TestServer::start_on_with(Store::S3, &args, &[]);
    let size = 6 * MIB;
    let bytes = data(size, 401);
    let id = create(&server, "all-in.bin", size as u64).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    create(&server, "idle.bin", 10).await;

    // Every byte committed, then the server dies before the store completes the upload.
    server.set_env("RESUMABLE_FAULT_POINT", Some("seal-before-complete"));
    server.restart();
    let last = client()
        .patch(server.url(&format!("/uploads/{id}")))
        .header("Upload-Offset", "0")
        .body(bytes.clone())
        .send()
        .await;
    assert!(last.is_err(), "the server died at the fault point");
    server.wait_exited().await;

    // It starts with the store down (start-up cannot seal it) and says what it holds.
    server.garage_mut().stop();
    server.set_env("RESUMABLE_FAULT_POINT", None);
    server.restart();
    let before = status(&server, &id).await;
    assert_eq!(before["state"], "uploading", "{before}");
    assert_eq!(before["received"].as_u64(), Some(size as u64), "{before}");
    assert!(
        before["expires_at"].is_null(),
        "all in, it does not expire: {before}"
    );

    // A sweep has run since (it expired the idle upload) and tried to seal it: still there.
    // Each sealing attempt while the store is down first waits out its client's retries
    // (up to 10 s), hence the long waits.
    eventually(
        Duration::from_secs(60),
        "a sweep to expire the idle upload",
        || async { metric(&server, "resumable_uploads_expired_total").await >= 1.0 },
    )
    .await;
    let kept = status(&server, &id).await;
    assert_eq!(
        kept["state"], "uploading",
        "not expired while the store is down: {kept}"
    );
    assert_eq!(kept["received"].as_u64(), Some(size as u64), "{kept}");

    // The store back, the sweep seals it: no client comes back for it.
    server.garage_mut().start_again();
    eventually(
        Duration::from_secs(60),
        "the upload to be sealed",
        || async { status(&server, &id).await["state"] == "complete" },
    )
    .await;
    let done = status(&server, &id).await;
    assert_eq!(done["sha256"], sha_hex(&bytes), "{done}");
    assert_eq!(content(&server, &id).await, bytes);
}

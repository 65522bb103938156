use std::time::Duration;

use crate::harness::Browser;
use crate::support::*;

/// A test file on disk (the browser reads it from there).
fn file_of(
    dir: &tempfile::TempDir,
    name: &str,
    len: usize,
    seed: u64,
) -> (std::path::PathBuf, Vec<u8>) {
    let bytes = data(len, seed);
    let path = dir.path().join(name);
    std::fs::write(&path, &bytes).expect("write the test file");
    (path, bytes)
}

const MIB: usize = 1 << 20;

on_each_store! {
    #[tokio::test]
    async fn a_64_mib_file_uploads_from_the_page_byte_for_byte(store: Store) {
        let server = TestServer::start_on(store);
        let files = tempfile::tempdir().unwrap();
        let (path, bytes) = file_of(&files, "big file.bin", 64 * MIB, 41);
        let browser = Browser::start().await;
        browser.open(&server.url("/")).await;
        browser.choose(&[&path]).await;
        let (id, _, received) = browser
            .wait_row(Duration::from_secs(120), "complete", |(_, state, _)| {
                state == "complete"
            })
            .await;
        assert_eq!(received, bytes.len() as u64);
        let status = status(&server, &id).await;
        assert_eq!(status["name"], "big file.bin");
        assert_eq!(status["sha256"], sha_hex(&bytes));
        assert_eq!(content(&server, &id).await, bytes);
        let shown = browser
            .js("return document.querySelector('.upload-sha').textContent")
            .await;
        assert_eq!(shown.as_str(), Some(sha_hex(&bytes).as_str()));
        let link = browser
            .js("return document.querySelector('.upload-link').getAttribute('href')")
            .await;
        assert_eq!(
            link.as_str(),
            Some(format!("/uploads/{id}/content").as_str())
        );
        let shot = browser.screenshot("page-complete").await;
        println!("screenshot: {}", shot.display());
        browser.close().await;
    }
}

on_each_store! {
    #[tokio::test]
    async fn pause_stops_the_server_offset_and_resume_finishes(store: Store) {
        let server = TestServer::start_on(store);
        let files = tempfile::tempdir().unwrap();
        let (path, bytes) = file_of(&files, "pause.bin", 24 * MIB, 42);
        let browser = Browser::start().await;
        browser.open(&server.url("/")).await;
        browser.throttle_upload(Some(4 * MIB as u64)).await;
        browser.choose(&[&path]).await;
        browser
            .wait_row(
                Duration::from_secs(30),
                "some progress",
                |(_, state, received)| state == "uploading" && *received > 0,
            )
            .await;
        browser.click("[data-action=pause]").await;
        let (id, state, _) = browser.rows().await.remove(0);
        assert_eq!(state, "paused");
        // Bytes already in flight may still land (the aborted append commits them); then the
        // offset must stand still.
        wait_appends_in_flight(&server, 0).await;
        let settled = received(&server, &id).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            received(&server, &id).await,
            settled,
            "the offset moved while paused"
        );
        assert!(settled < bytes.len() as u64);
        let (_, _, shown) = browser.rows().await.remove(0);
        assert!(
            shown <= settled,
            "data-received {shown} exceeds the server's {settled}"
        );
        browser.throttle_upload(None).await;
        browser.click("[data-action=resume]").await;
        browser
            .wait_row(Duration::from_secs(60), "complete", |(_, state, _)| {
                state == "complete"
            })
            .await;
        assert_eq!(content(&server, &id).await, bytes);
        browser.close().await;
    }
}

on_each_store! {
    #[tokio::test]
    async fn the_upload_survives_a_server_restart_without_starting_over(store: Store) {
        let mut server = TestServer::start_on_fixed_port(store, &[]);
        let files = tempfile::tempdir().unwrap();
        let (path, bytes) = file_of(&files, "restart.bin", 32 * MIB, 43);
        let browser = Browser::start().await;
        browser.open(&server.url("/")).await;
        browser.throttle_upload(Some(6 * MIB as u64)).await;
        browser.choose(&[&path]).await;
        let (id, _, _) = browser
            .wait_row(
                Duration::from_secs(30),
                "a few MiB stored",
                |(_, state, received)| state == "uploading" && *received >= 4 * MIB as u64,
            )
            .await;
        server.kill9();
        browser
            .wait_row(Duration::from_secs(30), "retrying", |(_, state, _)| {
                state == "retrying"
            })
            .await;
        server.restart();
        let kept = received(&server, &id).await;
        assert!(kept > 0, "the stored bytes survived the kill");
        browser.throttle_upload(None).await;
        let (after, _, received) = browser
            .wait_row(Duration::from_secs(90), "complete", |(_, state, _)| {
                state == "complete"
            })
            .await;
        assert_eq!(after, id, "the same upload carried on");
        assert_eq!(received, bytes.len() as u64);
        let sent_after_restart = bytes.len() as u64 - kept;
        assert!(sent_after_restart < bytes.len() as u64, "it started over");
        assert_eq!(content(&server, &id).await, bytes);
        browser.close().await;
    }
}

on_each_store! {
    #[tokio::test]
    async fn choosing_the_same_file_after_a_reload_resumes_from_the_server_offset(store: Store) {
        let server = TestServer::start_on(store);
        let files = tempfile::tempdir().unwrap();
        let (path, bytes) = file_of(&files, "reload.bin", 24 * MIB, 44);
        let browser = Browser::start().await;
        browser.open(&server.url("/")).await;
        browser.throttle_upload(Some(4 * MIB as u64)).await;
        browser.choose(&[&path]).await;
        let (id, _, _) = browser
            .wait_row(
                Duration::from_secs(30),
                "a few MiB stored",
                |(_, _, received)| *received >= 4 * MIB as u64,
            )
            .await;
        browser.client.refresh().await.expect("reload");
        // The reload aborted the append; the server commits what arrived.
        wait_appends_in_flight(&server, 0).await;
        let before = received(&server, &id).await;
        assert!(before > 0);
        assert!(
            browser.rows().await.is_empty(),
            "a reloaded page forgets the file"
        );
        let hint = browser
            .js("return document.getElementById('resume-hint').hidden")
            .await;
        assert_eq!(
            hint.as_bool(),
            Some(false),
            "the page says uploads are waiting"
        );
        browser.throttle_upload(None).await;
        browser.choose(&[&path]).await;
        let (again, _, _) = browser
            .wait_row(Duration::from_secs(60), "complete", |(_, state, _)| {
                state == "complete"
            })
            .await;
        assert_eq!(again, id, "the same upload resumed instead of a new one");
        assert_eq!(content(&server, &id).await, bytes);
        browser.close().await;
    }
}

#[tokio::test]
async fn the_page_asks_for_a_token_when_the_server_requires_one() {
    let server = TestServer::start_with(&["--token", "tab-secret"], &[]);
    let files = tempfile::tempdir().unwrap();
    let (path, bytes) = file_of(&files, "token.bin", 2 * MIB, 45);
    let browser = Browser::start().await;
    browser.open(&server.url("/")).await;
    browser.choose(&[&path]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let prompt = loop {
        match browser.client.get_alert_text().await {
            Ok(text) => break text,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("no token prompt: {e}"),
        }
    };
    assert!(prompt.to_lowercase().contains("token"), "{prompt}");
    browser.client.send_alert_text("tab-secret").await.unwrap();
    browser.client.accept_alert().await.unwrap();
    let (id, _, _) = browser
        .wait_row(Duration::from_secs(60), "complete", |(_, state, _)| {
            state == "complete"
        })
        .await;
    assert_eq!(content(&server, &id).await, bytes);
    let kept = browser
        .js("return sessionStorage.getItem('resumable-token')")
        .await;
    assert_eq!(
        kept.as_str(),
        Some("tab-secret"),
        "kept for this tab's session"
    );
    let persistent = browser
        .js("return Object.values(localStorage).includes('tab-secret')")
        .await;
    assert_eq!(persistent.as_bool(), Some(false));
    browser.close().await;
}

/// While a file uploads or pauses, its row shows no empty "SHA-256" and no dead download link:
/// `hidden` must win over the result's flex layout. Once complete, both show.
#[tokio::test]
async fn the_result_stays_hidden_until_the_upload_is_complete() {
    let server = TestServer::start();
    let files = tempfile::tempdir().unwrap();
    let (path, _) = file_of(&files, "hidden.bin", 8 * MIB, 46);
    let browser = Browser::start().await;
    browser.open(&server.url("/")).await;
    browser.throttle_upload(Some(2 * MIB as u64)).await;
    browser.choose(&[&path]).await;
    browser
        .wait_row(
            Duration::from_secs(30),
            "some progress",
            |(_, state, received)| state == "uploading" && *received > 0,
        )
        .await;
    let shown = "return getComputedStyle(document.querySelector('.upload-result')).display";
    assert_eq!(
        browser.js(shown).await.as_str(),
        Some("none"),
        "while uploading"
    );
    browser.click("[data-action=pause]").await;
    assert_eq!(
        browser.js(shown).await.as_str(),
        Some("none"),
        "while paused"
    );
    browser.throttle_upload(None).await;
    browser.click("[data-action=resume]").await;
    browser
        .wait_row(Duration::from_secs(60), "complete", |(_, state, _)| {
            state == "complete"
        })
        .await;
    assert_ne!(
        browser.js(shown).await.as_str(),
        Some("none"),
        "once complete"
    );
    browser.close().await;
}

/// A row that failed (the token prompt dismissed) offers Retry and Remove; Retry with a token
/// completes it, and a file whose row failed can be chosen again.
#[tokio::test]
async fn a_failed_row_can_be_retried_removed_or_chosen_again() {
    let server = TestServer::start_with(&["--token", "row-secret"], &[]);
    let files = tempfile::tempdir().unwrap();
    let (path, bytes) = file_of(&files, "retry.bin", MIB, 47);
    let browser = Browser::start().await;
    browser.open(&server.url("/")).await;
    browser.js("window.prompt = () => null").await;
    browser.choose(&[&path]).await;
    browser
        .wait_row(Duration::from_secs(20), "failed", |(_, state, _)| {
            state == "failed"
        })
        .await;
    let visible =
        |action: &str| format!("return !document.querySelector('[data-action={action}]').hidden");
    assert_eq!(browser.js(&visible("retry")).await.as_bool(), Some(true));
    assert_eq!(browser.js(&visible("remove")).await.as_bool(), Some(true));
    let label = browser
        .js("return document.querySelector('[data-action=retry]').getAttribute('aria-label')")
        .await;
    assert_eq!(
        label.as_str(),
        Some("Retry retry.bin"),
        "buttons name their file"
    );
    let hint = browser
        .js("return document.querySelector('.token-part').hidden")
        .await;
    assert_eq!(
        hint.as_bool(),
        Some(false),
        "the terminal hint shows the token"
    );

    // Remove takes it off the list; choosing the file again starts a fresh row, which fails
    // the same way (still no token) and is then retried with one.
    browser.click("[data-action=remove]").await;
    assert!(browser.rows().await.is_empty(), "removed");
    browser.choose(&[&path]).await;
    browser
        .wait_row(Duration::from_secs(20), "failed again", |(_, state, _)| {
            state == "failed"
        })
        .await;
    browser.js("window.prompt = () => 'row-secret'").await;
    browser.click("[data-action=retry]").await;
    let (id, _, _) = browser
        .wait_row(Duration::from_secs(60), "complete", |(_, state, _)| {
            state == "complete"
        })
        .await;
    assert_eq!(content(&server, &id).await, bytes);
    assert_eq!(browser.rows().await.len(), 1);
    browser.close().await;
}

/// "Uploads from an earlier visit are waiting" names the files left unfinished, and is gone
/// once nothing is: finished uploads leave no resume entry behind.
#[tokio::test]
async fn the_resume_hint_names_unfinished_files_and_only_those() {
    let server = TestServer::start();
    let files = tempfile::tempdir().unwrap();
    let (done, _) = file_of(&files, "done.bin", 64 * 1024, 48);
    let (left, _) = file_of(&files, "left.bin", 8 * MIB, 49);
    let browser = Browser::start().await;
    browser.open(&server.url("/")).await;
    browser.choose(&[&done]).await;
    browser
        .wait_row(Duration::from_secs(30), "complete", |(_, state, _)| {
            state == "complete"
        })
        .await;
    browser.open(&server.url("/")).await;
    let hint = "return document.getElementById('resume-hint').hidden";
    assert_eq!(
        browser.js(hint).await.as_bool(),
        Some(true),
        "nothing left to resume"
    );

    browser.throttle_upload(Some(MIB as u64)).await;
    browser.choose(&[&left]).await;
    browser
        .wait_row(
            Duration::from_secs(30),
            "some progress",
            |(_, state, received)| state == "uploading" && *received > 0,
        )
        .await;
    browser.click("[data-action=pause]").await;
    browser.open(&server.url("/")).await;
    assert_eq!(
        browser.js(hint).await.as_bool(),
        Some(false),
        "one to resume"
    );
    let names = browser
        .js("return document.querySelector('.resume-names').textContent")
        .await;
    assert_eq!(names.as_str(), Some("left.bin"));
    browser.close().await;
}

/// The page has an icon, and `/favicon.ico` answers (it was a 404 in every browser's log).
#[tokio::test]
async fn the_page_has_an_icon() {
    let server = TestServer::start();
    for path in ["/favicon.ico", "/static/favicon.svg"] {
        let response = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "image/svg+xml",
            "{path}"
        );
    }
}

/// The live view of an upload follows it while another client (here, the test over HTTP)
/// sends the bytes, and ends complete with the digest and a download link.
#[tokio::test]
async fn the_live_view_follows_an_upload_someone_else_sends() {
    let server = TestServer::start();
    let bytes = data(3 * MIB, 50);
    let id = create(&server, "shared.bin", bytes.len() as u64).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let browser = Browser::start().await;
    browser
        .open(&server.url(&format!("/uploads/{id}/view")))
        .await;
    let state = "return [document.getElementById('view').dataset.state, \
                 Number(document.getElementById('view').dataset.received || -1)]";
    let wait_for = |want: &'static str, received: u64| {
        let browser = &browser;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let now = browser.js(state).await;
                if now[0] == want && now[1].as_u64() == Some(received) {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "view shows {now}, not {want} {received}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for("uploading", 0).await;
    wait_watchers(&server, "websocket", 1).await;
    assert_eq!(
        patch(&server, &id, 0, bytes[..MIB].to_vec()).await.status(),
        200
    );
    wait_for("uploading", MIB as u64).await;
    assert_eq!(
        patch(&server, &id, MIB as u64, bytes[MIB..].to_vec())
            .await
            .status(),
        200
    );
    wait_for("complete", bytes.len() as u64).await;
    let sha = browser
        .js("return document.querySelector('.upload-sha').textContent")
        .await;
    assert_eq!(sha.as_str(), Some(sha_hex(&bytes).as_str()));
    let link = browser
        .js("return document.querySelector('.upload-link').hidden")
        .await;
    assert_eq!(link.as_bool(), Some(false));
    let unknown = client()
        .get(server.url(&format!("/uploads/{}/view", uuid_v4_like())))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    browser.close().await;
}

fn uuid_v4_like() -> &'static str {
    "6f1c9e2f-7a4f-4e9a-972f-3c5f1d7e2100"
}

/// The uploads started from this browser are listed after a reload, with their state from
/// the server and a link to the live view, and can be taken off the list one by one.
#[tokio::test]
async fn this_browsers_uploads_are_listed_across_a_reload() {
    let server = TestServer::start();
    let files = tempfile::tempdir().unwrap();
    let (first, _) = file_of(&files, "first.bin", 64 * 1024, 51);
    let (second, _) = file_of(&files, "second.bin", 64 * 1024, 52);
    let browser = Browser::start().await;
    browser.open(&server.url("/")).await;
    browser.choose(&[&first, &second]).await;
    let done = |rows: &Vec<(String, String, u64)>| {
        rows.len() == 2 && rows.iter().all(|r| r.1 == "complete")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done(&browser.rows().await) {
        assert!(std::time::Instant::now() < deadline, "both complete");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.open(&server.url("/")).await;
    let listed = "return [...document.querySelectorAll('.history-row')].map(r => \
                  [r.querySelector('.history-name').textContent, r.dataset.historyState || '', \
                   r.querySelector('.history-name').getAttribute('href')])";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = browser.js(listed).await;
        let all_known = rows
            .as_array()
            .is_some_and(|r| r.len() == 2 && r.iter().all(|e| e[1] == "complete"));
        if all_known {
            break rows;
        }
        assert!(std::time::Instant::now() < deadline, "history shows {rows}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"first.bin") && names.contains(&"second.bin"),
        "{names:?}"
    );
    assert!(rows[0][2].as_str().unwrap().ends_with("/view"));
    browser.click(".history-row [data-action=forget]").await;
    let left = browser
        .js("return document.querySelectorAll('.history-row').length")
        .await;
    assert_eq!(left.as_u64(), Some(1));
    browser.open(&server.url("/")).await;
    let after = browser
        .js("return document.querySelectorAll('.history-row').length")
        .await;
    assert_eq!(after.as_u64(), Some(1), "the removal is kept");
    browser.close().await;
}

/// Each row draws its throughput over the last minute; a stall (here: a pause) shows as
/// seconds with nothing sent.
#[tokio::test]
async fn a_row_charts_its_throughput_and_a_stall_shows() {
    let server = TestServer::start();
    let files = tempfile::tempdir().unwrap();
    let (path, _) = file_of(&files, "chart.bin", 16 * MIB, 53);
    let browser = Browser::start().await;
    browser.open(&server.url("/")).await;
    browser.throttle_upload(Some(MIB as u64)).await;
    browser.choose(&[&path]).await;
    let chart = "const c = document.querySelector('.upload-chart'); \
                 return [c.hidden, Number(c.dataset.seconds || 0), Number(c.dataset.stalls || 0)]";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = browser.js(chart).await;
        if now[0] == false && now[1].as_u64() >= Some(2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no chart: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Paused, nothing goes out: the chart shows those seconds as gaps.
    browser.click("[data-action=pause]").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = browser.js(chart).await;
        if now[2].as_u64() >= Some(2) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no gap charted: {now}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.throttle_upload(None).await;
    browser.click("[data-action=resume]").await;
    browser
        .wait_row(Duration::from_secs(60), "complete", |(_, state, _)| {
            state == "complete"
        })
        .await;
    let after = browser.js(chart).await;
    assert!(after[1].as_u64() >= Some(4), "{after}");
    assert!(after[2].as_u64() >= Some(2), "{after}");
    let label = browser
        .js("return document.querySelector('.upload-chart').getAttribute('aria-label')")
        .await;
    assert!(
        label
            .as_str()
            .unwrap_or_default()
            .starts_with("Throughput over the last"),
        "{label}"
    );
    browser.close().await;
}

/// The page's own SHA-256 (static/sha256.js, fed piece by piece) gives the standard's digests,
/// and a file uploaded from the page shows "verified" when the browser's digest is the
/// server's.
#[tokio::test]
async fn the_browser_verifies_the_file_it_sent() {
    let server = TestServer::start();
    let files = tempfile::tempdir().unwrap();
    let (path, bytes) = file_of(&files, "verify.bin", 3 * MIB + 17, 54);
    let browser = Browser::start().await;
    browser.open(&server.url("/")).await;
    browser
        .js(
            "import('/static/sha256.js').then(({ Sha256 }) => { \
               const enc = new TextEncoder(); \
               const pieces = (text, size) => { const h = new Sha256(); const b = enc.encode(text); \
                 for (let i = 0; i < b.length; i += size) h.update(b.subarray(i, i + size)); return h.hex(); }; \
               window.__vectors = [pieces('', 1), pieces('abc', 1), \
                 pieces('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq', 7), \
                 pieces('a'.repeat(1000000), 4099)]; })",
        )
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let vectors = loop {
        let got = browser.js("return window.__vectors || null").await;
        if !got.is_null() {
            break got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sha256.js did not load"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        vectors,
        serde_json::json!([
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        ])
    );

    browser.choose(&[&path]).await;
    browser
        .wait_row(Duration::from_secs(60), "complete", |(_, state, _)| {
            state == "complete"
        })
        .await;
    let verified = "return [document.querySelector('.upload').dataset.verified || '', \
                    document.querySelector('.upload-verified').textContent]";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = browser.js(verified).await;
        if now[0] == "yes" {
            assert!(
                now[1].as_str().unwrap_or_default().starts_with("Verified"),
                "{now}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not verified: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = browser.rows().await.remove(0).0;
    assert_eq!(status(&server, &id).await["sha256"], sha_hex(&bytes));
    browser.close().await;
}

/// Times left never read "1 min 60 s" or "1 h 60 min": rounded once, then split.
#[tokio::test]
async fn times_left_are_rounded_before_they_are_split() {
    let server = TestServer::start();
    let browser = Browser::start().await;
    browser.open(&server.url("/")).await;
    browser
        .js(
            "import('/static/format.js').then(({ formatDuration: f }) => { \
               window.__times = [f(59.2), f(119.5), f(3599.5), f(7199), f(5400)]; })",
        )
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let times = loop {
        let got = browser.js("return window.__times || null").await;
        if !got.is_null() {
            break got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "format.js did not load"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        times,
        serde_json::json!([
            "1 min 0 s left",
            "2 min 0 s left",
            "1 h 0 min left",
            "2 h 0 min left",
            "1 h 30 min left"
        ])
    );
    browser.close().await;
}

/// Cancel while the upload is still being created (a slow pre-create hook here) leaves no
/// upload on the server and nothing to resume.
#[tokio::test]
async fn cancel_during_the_first_lookup_leaves_no_orphan() {
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("slow-hook");
    std::fs::write(&hook, "#!/bin/sh\ncat >/dev/null\nsleep 2\n").unwrap();
    let mut permissions = std::fs::metadata(&hook).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&hook, permissions).unwrap();
    let hook = hook.display().to_string();
    let server = TestServer::start_with(
        &["--hooks-command", &hook, "--hooks-events", "pre-create"],
        &[],
    );
    let (path, _) = file_of(&dir, "orphan.bin", MIB, 55);
    let browser = Browser::start().await;
    browser.open(&server.url("/")).await;
    browser.choose(&[&path]).await;
    browser
        .wait_row(Duration::from_secs(10), "uploading", |(_, state, _)| {
            state == "uploading"
        })
        .await;
    browser.click("[data-action=cancel]").await;
    assert!(browser.rows().await.is_empty());
    let created = || async { metric(&server, "resumable_uploads_created_total").await };
    let deleted = || async { metric(&server, "resumable_uploads_deleted_total").await };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(created().await == 1.0 && deleted().await == 1.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "created {} deleted {}",
            created().await,
            deleted().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = browser
        .js("return Object.keys(localStorage).filter(k => k.startsWith('resumable::')).length")
        .await;
    assert_eq!(kept.as_u64(), Some(0), "nothing left to resume");
    browser.close().await;
}

/// With JavaScript off the page is a plain form; sending a file with it answers a small page
/// that says it is stored, with its SHA-256 and a link to it (not the status JSON).
#[tokio::test]
async fn without_javascript_the_form_answers_a_page() {
    let server = TestServer::start();
    let files = tempfile::tempdir().unwrap();
    let (path, bytes) = file_of(&files, "plain <form>.bin", 200 * 1024, 56);
    let browser = Browser::start().await;
    browser
        .cdp(
            "Emulation.setScriptExecutionDisabled",
            serde_json::json!({"value": true}),
        )
        .await;
    browser.open(&server.url("/")).await;
    browser.choose(&[&path]).await;
    browser
        .click("noscript button, form button[type=submit]")
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let url = browser.client.current_url().await.unwrap();
        let source = browser.client.source().await.unwrap_or_default();
        if url.path() == "/uploads" && source.contains(&sha_hex(&bytes)) {
            assert!(source.contains("plain &lt;form&gt;.bin"), "{source}");
            assert!(
                !source.contains("\"received\""),
                "not the status JSON: {source}"
            );
            assert!(source.contains("/content"), "a link to the file: {source}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer page: {url} {source}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.close().await;
}

/// When the server cannot be reached the row says so in plain words (not "network error:
/// Failed to fetch"), and carries on once it is back.
#[tokio::test]
async fn a_server_away_reads_plainly_and_the_upload_carries_on() {
    let mut server = TestServer::start_on_fixed_port(Store::Local, &[]);
    let files = tempfile::tempdir().unwrap();
    let (path, bytes) = file_of(&files, "away.bin", 512 * 1024, 57);
    let browser = Browser::start().await;
    browser.open(&server.url("/")).await;
    server.kill9();
    browser.choose(&[&path]).await;
    browser
        .wait_row(Duration::from_secs(20), "retrying", |(_, state, _)| {
            state == "retrying"
        })
        .await;
    let text = browser
        .js("return document.querySelector('.upload-state').textContent")
        .await;
    let text = text.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("cannot be reached"), "{text}");
    assert!(!text.to_lowercase().contains("fetch"), "{text}");
    server.restart();
    let (id, _, _) = browser
        .wait_row(Duration::from_secs(60), "complete", |(_, state, _)| {
            state == "complete"
        })
        .await;
    assert_eq!(content(&server, &id).await, bytes);
    browser.close().await;
}

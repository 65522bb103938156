//! The page runs under its own Content-Security-Policy: nothing it does is blocked (its
//! script, its style, its WebSocket), and code injected inline does not run.

use std::time::Duration;

use crate::harness::Browser;
use crate::support::*;

#[tokio::test]
async fn the_page_works_under_its_own_content_security_policy() {
    let server = TestServer::start();
    let files = tempfile::tempdir().unwrap();
    let bytes = data(4 << 20, 61);
    let path = files.path().join("csp.bin");
    std::fs::write(&path, &bytes).unwrap();
    let browser = Browser::start().await;
    browser.open(&server.url("/")).await;
    browser
        .js("window.violations = []; \
             document.addEventListener('securitypolicyviolation', \
               (e) => window.violations.push(`${e.effectiveDirective} ${e.blockedURI}`)); \
             return true;")
        .await;
    // Slow enough that the page opens its WebSocket while the upload runs.
    browser.throttle_upload(Some(512 * 1024)).await;
    browser.choose(&[&path]).await;
    eventually(
        Duration::from_secs(60),
        "the page's WebSocket to open",
        || async { metric(&server, "resumable_watchers{channel=\"websocket\"}").await >= 1.0 },
    )
    .await;
    browser.throttle_upload(None).await;
    let (id, _, received) = browser
        .wait_row(Duration::from_secs(120), "complete", |(_, state, _)| {
            state == "complete"
        })
        .await;
    assert_eq!(received, bytes.len() as u64);
    assert_eq!(content(&server, &id).await, bytes);

    // The policy is in force: an inline script is refused, and that is the only violation.
    browser
        .js("const s = document.createElement('script'); \
             s.textContent = 'window.inlineRan = true'; document.body.append(s); return true;")
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let violations = loop {
        let violations = browser.js("return window.violations").await;
        if violations.as_array().is_some_and(|v| !v.is_empty()) {
            break violations;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the inline script was not reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(browser.js("return window.inlineRan === true").await, false);
    assert_eq!(
        violations,
        serde_json::json!(["script-src-elem inline"]),
        "only the injected script is blocked"
    );
    browser.close().await;
}

//! Accessibility: axe-core (the npm package pinned in tests/browser/axe) finds nothing serious
//! or critical on the upload page, empty or with rows in each state, nor on the live view, in
//! the light scheme or the dark; and the page, photographed at a phone's width and a desktop's
//! in both schemes, never scrolls sideways.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::Browser;
use crate::support::*;

const MIB: usize = 1 << 20;
/// The server asks for this token; the page is handed it, or not, to make rows fail.
const TOKEN: &str = "a11y-token";

fn axe_source() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser/axe/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} ({e}): npm ci --prefix tests/browser/axe",
            path.display()
        )
    })
}

/// Runs axe-core on the page as it is now; prints every violation and fails on a serious or
/// critical one. WebDriver's scripts are not held to the page's CSP, so axe goes in that way.
async fn check(browser: &Browser, what: &str) {
    let present = browser.js("return typeof window.axe === 'object'").await;
    if present != Value::Bool(true) {
        let loaded = browser
            .js(&format!(
                "{}\nreturn typeof window.axe === 'object';",
                axe_source()
            ))
            .await;
        assert_eq!(loaded, Value::Bool(true), "axe-core did not load");
    }
    let found = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             axe.run(document, { resultTypes: ['violations'] }) \
               .then((r) => done(r.violations.map((v) => ({ id: v.id, impact: v.impact, \
                 help: v.help, nodes: v.nodes.map((n) => `${n.target.join(' ')}: ${ \
                   [...n.any, ...n.all, ...n.none].map((c) => c.message).join('; ')}`) })))) \
               .catch((e) => done({ error: String(e) }));",
            vec![],
        )
        .await
        .expect("axe.run");
    let violations = found
        .as_array()
        .unwrap_or_else(|| panic!("axe.run failed on {what}: {found}"));
    let mut serious = Vec::new();
    for v in violations {
        let line = format!(
            "{} {} ({}): {}",
            v["impact"].as_str().unwrap_or("?"),
            v["id"].as_str().unwrap_or("?"),
            v["help"].as_str().unwrap_or("?"),
            v["nodes"]
        );
        println!("axe, {what}: {line}");
        if matches!(v["impact"].as_str(), Some("serious" | "critical")) {
            serious.push(line);
        }
    }
    if violations.is_empty() {
        println!("axe, {what}: no violations");
    }
    assert!(
        serious.is_empty(),
        "axe finds serious or critical violations on {what}:\n{}",
        serious.join("\n")
    );
}

/// Both schemes, light last (the default of the next check).
async fn check_both(browser: &Browser, what: &str) {
    for dark in [true, false] {
        browser.prefers_dark(dark).await;
        let scheme = if dark { "dark" } else { "light" };
        check(browser, &format!("{what}, {scheme}")).await;
    }
}

fn file_of(dir: &tempfile::TempDir, name: &str, len: usize, seed: u64) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, data(len, seed)).expect("write the test file");
    path
}

/// Waits until the row of `name` is in `state` with at least `received` bytes stored (and,
/// when asked, its browser-side check done), so that what is looked at has settled.
async fn wait_named(browser: &Browser, name: &str, state: &str, received: u64, verified: bool) {
    let script = format!(
        "const row = [...document.querySelectorAll('.upload')] \
           .find((r) => r.querySelector('.upload-name').textContent === {name:?}); \
         return row ? [row.dataset.state || '', Number(row.dataset.received || 0), \
           row.dataset.verified || ''] : null;"
    );
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let now = browser.js(&script).await;
        if now[0] == state && now[1].as_u64() >= Some(received) && (!verified || now[2] == "yes") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {now}, not {state} with {received} bytes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The rows the page shows, brought about one after the other on a server that wants a token.
struct Rows<'a> {
    browser: &'a Browser,
    files: tempfile::TempDir,
}

impl<'a> Rows<'a> {
    async fn new(browser: &'a Browser, server: &TestServer) -> Rows<'a> {
        browser.open(&server.url("/")).await;
        // As if this tab had been given the token already.
        browser
            .js(&format!(
                "sessionStorage.setItem('resumable-token', '{TOKEN}')"
            ))
            .await;
        Rows {
            browser,
            files: tempfile::tempdir().unwrap(),
        }
    }

    async fn complete(&self) {
        let path = file_of(&self.files, "report.pdf", 64 * 1024, 71);
        self.browser.choose(&[&path]).await;
        wait_named(self.browser, "report.pdf", "complete", 64 * 1024, true).await;
    }

    /// A 16 MiB file at 1 MiB/s: a fifth stored, and mid-way for long enough to be looked at.
    async fn uploading(&self) {
        let path = file_of(&self.files, "holiday video.mp4", 16 * MIB, 72);
        self.browser.throttle_upload(Some(MIB as u64)).await;
        self.browser.choose(&[&path]).await;
        wait_named(
            self.browser,
            "holiday video.mp4",
            "uploading",
            3 * MIB as u64,
            false,
        )
        .await;
    }

    async fn pause(&self) {
        self.browser
            .click("[data-state=uploading] [data-action=pause]")
            .await;
        wait_named(self.browser, "holiday video.mp4", "paused", 0, false).await;
        self.browser.throttle_upload(None).await;
    }

    /// The token forgotten and the prompt for it dismissed: the upload cannot start.
    async fn failed(&self) {
        self.browser
            .js("sessionStorage.removeItem('resumable-token'); window.prompt = () => null;")
            .await;
        let path = file_of(&self.files, "notes.txt", 4096, 73);
        self.browser.choose(&[&path]).await;
        wait_named(self.browser, "notes.txt", "failed", 0, false).await;
    }
}

#[tokio::test]
async fn axe_finds_nothing_serious_on_the_upload_page() {
    let server = TestServer::start_with(&["--token", TOKEN], &[]);
    let browser = Browser::start().await;
    let rows = Rows::new(&browser, &server).await;
    check_both(&browser, "the empty page").await;
    rows.complete().await;
    rows.uploading().await;
    rows.pause().await;
    rows.failed().await;
    check_both(
        &browser,
        "the page with a paused, a complete and a failed row",
    )
    .await;
    browser.close().await;
}

#[tokio::test]
async fn axe_finds_nothing_serious_on_the_live_view() {
    let server = TestServer::start();
    let bytes = data(2 * MIB, 74);
    let id = create(&server, "shared.bin", bytes.len() as u64).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        patch(&server, &id, 0, bytes[..MIB].to_vec()).await.status(),
        200
    );
    let browser = Browser::start().await;
    browser
        .open(&server.url(&format!("/uploads/{id}/view")))
        .await;
    let shows = |state: &'static str, received: usize| {
        let browser = &browser;
        async move {
            let script = "const v = document.getElementById('view'); \
                          return [v.dataset.state, Number(v.dataset.received || -1)]";
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let now = browser.js(script).await;
                if now[0] == state && now[1].as_u64() == Some(received as u64) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "view shows {now}, not {state} {received}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    shows("uploading", MIB).await;
    check_both(&browser, "the live view mid-upload").await;
    assert_eq!(
        patch(&server, &id, MIB as u64, bytes[MIB..].to_vec())
            .await
            .status(),
        200
    );
    shows("complete", bytes.len()).await;
    check_both(&browser, "the live view of a complete upload").await;
    browser.close().await;
}

/// Photographs the whole page as it is at both widths in both schemes, and checks that a
/// phone's width needs no sideways scrolling.
async fn photograph(browser: &Browser, state: &str) {
    // As on a phone, scrollbars take no width: the page is laid out at the full 360 px.
    browser
        .cdp(
            "Emulation.setScrollbarsHidden",
            serde_json::json!({"hidden": true}),
        )
        .await;
    for width in [360u32, 1280] {
        browser
            .client
            .set_window_size(width, if width == 360 { 800 } else { 900 })
            .await
            .expect("window size");
        for dark in [false, true] {
            browser.prefers_dark(dark).await;
            let scheme = if dark { "dark" } else { "light" };
            let name = format!("page-{width}-{scheme}-{state}");
            let sizes = browser
                .js("return [document.documentElement.scrollWidth, window.innerWidth]")
                .await;
            if width == 360 {
                assert_eq!(sizes[1], 360, "the viewport is 360 px wide");
                assert!(
                    sizes[0].as_u64() <= sizes[1].as_u64(),
                    "{name} scrolls sideways: {sizes}"
                );
            }
            let path = browser.screenshot_full_page(&name).await;
            println!("screenshot: {}", path.display());
        }
    }
}

#[tokio::test]
async fn screenshots_at_a_phones_width_and_a_desktops_in_both_schemes() {
    let server = TestServer::start_with(&["--token", TOKEN], &[]);
    let browser = Browser::start().await;
    let rows = Rows::new(&browser, &server).await;
    rows.complete().await;
    photograph(&browser, "complete").await;
    rows.uploading().await;
    photograph(&browser, "uploading").await;
    let still = browser
        .js("return document.querySelectorAll('[data-state=uploading]').length")
        .await;
    assert_eq!(still, 1, "the upload was still mid-way when photographed");
    rows.pause().await;
    photograph(&browser, "paused").await;
    rows.failed().await;
    photograph(&browser, "failed").await;
    browser.close().await;
}

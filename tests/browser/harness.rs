//! Headless Chromium through chromedriver (fantoccini speaks WebDriver to it).

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

pub struct Browser {
    pub client: Client,
    driver: Child,
    driver_url: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver_bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        // Its own process group, so that Chromium (its child) goes down with it even when a
        // failing test never reaches `close`.
        let driver = Command::new(&driver_bin)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{driver_bin} ({e}): apt-get install chromium chromium-driver")
            });
        let driver_url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=900,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!("a JSON object"),
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver_url)
            .await
            .expect("a Chromium session");
        Browser {
            client,
            driver,
            driver_url,
            _profile: profile,
        }
    }

    /// Limits the page's upload speed (Chromium's network emulation), or lifts the limit.
    pub async fn throttle_upload(&self, bytes_per_second: Option<u64>) {
        let session = self.client.session_id().await.unwrap().expect("a session");
        let throughput = bytes_per_second.map(|b| b as i64).unwrap_or(-1);
        let response = reqwest::Client::new()
            .post(format!(
                "{}/session/{session}/chromium/network_conditions",
                self.driver_url
            ))
            .json(&json!({"network_conditions": {
                "offline": false, "latency": 0,
                "download_throughput": -1, "upload_throughput": throughput,
            }}))
            .send()
            .await
            .expect("network conditions");
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
    }

    /// Sends one Chrome DevTools Protocol command through chromedriver; returns its result.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        let session = self.client.session_id().await.unwrap().expect("a session");
        let response = reqwest::Client::new()
            .post(format!(
                "{}/session/{session}/goog/cdp/execute",
                self.driver_url
            ))
            .json(&json!({"cmd": cmd, "params": params}))
            .send()
            .await
            .expect("a DevTools command");
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON answer");
        assert!(status.is_success(), "{cmd}: {body}");
        body["value"].clone()
    }

    /// Emulates the person's colour-scheme preference (`prefers-color-scheme`), which stays
    /// in force across navigations until changed.
    pub async fn prefers_dark(&self, dark: bool) {
        let scheme = if dark { "dark" } else { "light" };
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        )
        .await;
        let query = format!("return matchMedia('(prefers-color-scheme: {scheme})').matches");
        assert_eq!(self.js(&query).await, Value::Bool(true), "{scheme} scheme");
    }

    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("open the page");
    }

    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.expect("script")
    }

    /// Hands files to the page's file input, as a person choosing them would.
    pub async fn choose(&self, paths: &[&std::path::Path]) {
        let input = self
            .client
            .find(Locator::Css("input[type=file]"))
            .await
            .expect("the file input");
        let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        input
            .send_keys(&list.join("\n"))
            .await
            .expect("choose files");
    }

    /// The rows' testing hooks: (upload id, state, received) of each row.
    pub async fn rows(&self) -> Vec<(String, String, u64)> {
        let value = self
            .js(
                "return [...document.querySelectorAll('[data-state]')].map(r => \
                 [r.dataset.uploadId || '', r.dataset.state, Number(r.dataset.received || 0)]);",
            )
            .await;
        value
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        (
                            r[0].as_str().unwrap_or_default().to_owned(),
                            r[1].as_str().unwrap_or_default().to_owned(),
                            r[2].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until the first row satisfies `check`; returns it.
    pub async fn wait_row(
        &self,
        within: Duration,
        what: &str,
        check: impl Fn(&(String, String, u64)) -> bool,
    ) -> (String, String, u64) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(row) = self.rows().await.into_iter().next() {
                if check(&row) {
                    return row;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {what}; row is {row:?}"
                );
            } else {
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {what}; no row"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .expect("the button")
            .click()
            .await
            .expect("click");
    }

    /// Saves a screenshot under target/screenshots and returns its path.
    pub async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).expect("write screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG image");
        path
    }

    /// Like `screenshot`, but of the whole page, below the window's height too (DevTools'
    /// capture beyond the viewport).
    pub async fn screenshot_full_page(&self, name: &str) -> std::path::PathBuf {
        use base64::Engine;
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("the image"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG image");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).expect("write screenshot");
        path
    }

    /// Ends the session; dropping the browser then stops chromedriver and Chromium.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(group) = i32::try_from(self.driver.id()) {
            // SAFETY: signals the process group we created; no memory is involved.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        let _ = self.driver.wait();
    }
}

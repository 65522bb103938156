//! A private single-node Garage (an S3-compatible store) for the S3 tests: its own temporary
//! directory, loopback ports of its own, one bucket and one key, and a child process killed on
//! drop. Never a shared service.
//!
//! The bucket is inspected through Garage's own CLI (`garage json-api`, the admin API over
//! RPC): `GetBucketInfo` counts the bucket's objects and unfinished (multipart) uploads, and
//! `InspectObject` tells whether one key holds a live object. Neither lists keys nor names the
//! multipart uploads, so each test gets a Garage (and bucket) of its own: then the bucket-wide
//! counts are the test's own, and "exactly one object, no unfinished upload" is exact.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The Garage the CI installs (`cargo install garage --locked`), and the one these tests know.
const INSTALL: &str = "cargo install garage --locked";

pub struct Garage {
    binary: PathBuf,
    dir: TempDir,
    config: PathBuf,
    child: Option<Child>,
    s3_port: u16,
    pub key_id: String,
    pub secret: String,
    pub bucket: String,
    /// The bucket's 64-hex id (InspectObject wants it, not the alias).
    bucket_id: String,
}

/// What `GetBucketInfo` counts in the bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BucketCounts {
    /// Live (complete, not deleted) objects.
    pub objects: u64,
    pub bytes: u64,
    /// Objects with an upload in progress: multipart uploads and PutObjects under way.
    pub unfinished_uploads: u64,
    pub unfinished_multipart_uploads: u64,
    pub unfinished_multipart_parts: u64,
    pub unfinished_multipart_bytes: u64,
}

/// What `InspectObject` says about one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyState {
    /// Size of the live object under the key (the newest complete version, unless it is a
    /// delete marker).
    pub live: Option<u64>,
    /// Versions still uploading: multipart uploads neither completed nor aborted (or a
    /// PutObject under way).
    pub uploading: usize,
}

impl Garage {
    /// Starts Garage, lays out its one node, and creates a key and a bucket the key owns.
    /// Panics if the `garage` binary is missing: CI installs it, so a skip would hide tests.
    pub fn start() -> Garage {
        let binary = garage_binary();
        let dir = tempfile::tempdir().expect("temp dir for garage");
        let config = dir.path().join("garage.toml");
        let mut garage = Garage {
            binary,
            dir,
            config,
            child: None,
            s3_port: 0,
            key_id: String::new(),
            secret: String::new(),
            bucket: "resumable".to_owned(),
            bucket_id: String::new(),
        };
        // Free ports are found by binding port 0 and letting go, so another process may take
        // one before Garage binds it: then Garage exits, and we try again on new ports.
        let mut failures = Vec::new();
        for _ in 0..3 {
            garage.write_config();
            match garage.spawn_and_wait() {
                Ok(()) => break,
                Err(why) => failures.push(why),
            }
        }
        assert!(
            garage.child.is_some(),
            "garage did not start:\n{}",
            failures.join("\n---\n")
        );
        garage.set_up();
        garage
    }

    fn write_config(&mut self) {
        let (rpc, s3) = (free_port(), free_port());
        self.s3_port = s3;
        let secret = random_hex(32);
        let root = self.dir.path();
        let config = format!(
            r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
api_bind_addr = "127.0.0.1:{s3}"
s3_region = "garage"
root_domain = ".s3.garage.localhost"
"#,
            meta = root.join("meta").display(),
            data = root.join("data").display(),
        );
        std::fs::write(&self.config, config).expect("write garage.toml");
    }

    /// Runs `garage server`, then waits until the CLI reaches it over RPC and the S3 port
    /// accepts connections (or the child exits, or 30 s pass).
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
                .expect("garage log file")
        };
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "garage=info")
            .stdin(Stdio::null())
            .stdout(log("garage.out"))
            .stderr(log("garage.err"))
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                self.child = None;
                return Err(format!(
                    "garage server exited ({status}); its log ends:\n{}",
                    self.log_tail()
                ));
            }
            let s3_up = TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok();
            if s3_up && self.cli(&["status"]).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "garage was not ready after 30 s; its log ends:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One node with a role, a key, and a bucket the key may read, write and own.
    fn set_up(&mut self) {
        // `node id -q` prints the full `<id>@<addr>` (`status` shows a shortened id).
        let node = self.run(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap_or_default().to_owned();
        assert_eq!(
            node.len(),
            64,
            "a node id from `garage node id -q`: {node:?}"
        );
        self.run(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        self.run(&["layout", "apply", "--version", "1"]);

        let key = self.run(&["key", "create", "resumable-tests"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|line| line.trim().strip_prefix(name))
                .map(|value| value.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name:?} in `garage key create`:\n{key}"))
        };
        self.key_id = field("Key ID:");
        self.secret = field("Secret key:");

        let bucket = self.bucket.clone();
        self.run(&["bucket", "create", &bucket]);
        self.run(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &bucket,
            "--key",
            "resumable-tests",
        ]);
        let info = self.json_api(
            "GetBucketInfo",
            &serde_json::json!({ "globalAlias": bucket }),
        );
        self.bucket_id = info["id"].as_str().expect("bucket id").to_owned();
    }

    /// The S3 endpoint, for path-style requests.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The server's flags to keep its bytes in this bucket under `prefix`.
    pub fn server_args(&self, prefix: &str) -> Vec<String> {
        vec![
            "--storage".to_owned(),
            format!("s3://{}/{prefix}", self.bucket),
            "--s3-endpoint".to_owned(),
            self.endpoint(),
            "--s3-region".to_owned(),
            "garage".to_owned(),
        ]
    }

    /// The server's credentials for this bucket.
    pub fn server_envs(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".to_owned(), self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), self.secret.clone()),
        ]
    }

    /// SIGKILL: the store is down (its ports refuse connections) until `start_again`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same node again (same ports, same data, same key and bucket).
    pub fn start_again(&mut self) {
        self.stop();
        if let Err(why) = self.spawn_and_wait() {
            panic!("garage did not start again: {why}");
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The bucket's counts of objects and unfinished uploads.
    pub fn counts(&self) -> BucketCounts {
        let info = self.json_api(
            "GetBucketInfo",
            &serde_json::json!({ "id": self.bucket_id }),
        );
        let count = |name: &str| {
            info[name]
                .as_u64()
                .unwrap_or_else(|| panic!("no {name} in GetBucketInfo: {info}"))
        };
        BucketCounts {
            objects: count("objects"),
            bytes: count("bytes"),
            unfinished_uploads: count("unfinishedUploads"),
            unfinished_multipart_uploads: count("unfinishedMultipartUploads"),
            unfinished_multipart_parts: count("unfinishedMultipartUploadParts"),
            unfinished_multipart_bytes: count("unfinishedMultipartUploadBytes"),
        }
    }

    /// What the bucket holds under `key`.
    pub fn key(&self, key: &str) -> KeyState {
        let payload = serde_json::json!({ "bucketId": self.bucket_id, "key": key });
        let answer = match self.cli(&["json-api", "InspectObject", &payload.to_string()]) {
            Ok(out) => out,
            // A key never written.
            Err(why) if why.contains("NoSuchKey") => return KeyState::default(),
            Err(why) => panic!("garage json-api InspectObject {payload}: {why}"),
        };
        let answer: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("InspectObject answered no JSON ({e}): {answer}"));
        let versions = answer["versions"].as_array().cloned().unwrap_or_default();
        let flag = |v: &Value, name: &str| v[name].as_bool().unwrap_or(false);
        let uploading = versions.iter().filter(|v| flag(v, "uploading")).count();
        // Timestamps are RFC 3339 in UTC, all in one format: they sort as text.
        let newest_complete = versions
            .iter()
            .filter(|v| !flag(v, "uploading") && !flag(v, "aborted"))
            .max_by(|a, b| {
                let time = |v: &Value| v["timestamp"].as_str().unwrap_or_default().to_owned();
                time(a).cmp(&time(b))
            });
        let live = newest_complete
            .filter(|v| !flag(v, "deleteMarker"))
            .map(|v| v["size"].as_u64().unwrap_or(0));
        KeyState { live, uploading }
    }

    /// Polls the bucket until `check` passes (Garage's counters may trail a request by a
    /// moment), or panics after 15 s with the last complaint.
    pub async fn wait_for<F>(&self, what: &str, mut check: F)
    where
        F: FnMut(&Garage) -> Result<(), String>,
    {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let why = match check(self) {
                Ok(()) => return,
                Err(why) => why,
            };
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {why}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `garage -c garage.toml ARGS…`: its stdout, or why it failed.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let Output {
            status,
            stdout,
            stderr,
        } = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.binary.display()));
        let stdout = String::from_utf8_lossy(&stdout).into_owned();
        if status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "`garage {}` failed ({status}): {}{stdout}",
                args.join(" "),
                String::from_utf8_lossy(&stderr)
            ))
        }
    }

    /// Like `cli`, but a failure is a panic.
    fn run(&self, args: &[&str]) -> String {
        self.cli(args).unwrap_or_else(|why| panic!("{why}"))
    }

    /// One admin API call through the CLI (`garage json-api`), answered in JSON.
    pub fn json_api(&self, endpoint: &str, payload: &Value) -> Value {
        let out = self.run(&["json-api", endpoint, &payload.to_string()]);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{endpoint} answered no JSON ({e}): {out}"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("garage.err")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `garage` on PATH, else `$HOME/.cargo/bin/garage` (where `cargo install` puts it).
fn garage_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_bin = std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo/bin"));
    on_path
        .into_iter()
        .chain(cargo_bin)
        .map(|dir| dir.join("garage"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the S3 tests need the `garage` binary (on PATH or in ~/.cargo/bin) to start \
                 their own Garage: install it with `{INSTALL}` (.ci/run does)"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// `bytes` random bytes in hex, from the kernel.
fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom");
    buf.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[tokio::test]
async fn garage_fixture_starts_and_serves_s3() {
    let mut garage = Garage::start();
    assert!(garage.key_id.starts_with("GK"), "key id {}", garage.key_id);
    assert_eq!(garage.secret.len(), 64, "secret key {:?}", garage.secret);

    refuses_anonymous_requests(&garage).await;

    // The bucket exists, is empty, and the key may use it.
    assert_eq!(
        garage.counts(),
        BucketCounts {
            objects: 0,
            bytes: 0,
            unfinished_uploads: 0,
            unfinished_multipart_uploads: 0,
            unfinished_multipart_parts: 0,
            unfinished_multipart_bytes: 0,
        }
    );
    assert_eq!(garage.key("incoming/none"), KeyState::default());
    let info = garage.json_api(
        "GetBucketInfo",
        &serde_json::json!({ "globalAlias": "resumable" }),
    );
    let grant = &info["keys"][0];
    assert_eq!(grant["accessKeyId"], garage.key_id.as_str(), "{info}");
    for permission in ["read", "write", "owner"] {
        assert_eq!(grant["permissions"][permission], true, "{info}");
    }

    let args = garage.server_args("incoming");
    assert_eq!(args[1], "s3://resumable/incoming");
    assert_eq!(args[3], garage.endpoint());

    // Down, then up again on the same port with the same bucket.
    garage.stop();
    assert!(TcpStream::connect(("127.0.0.1", garage.s3_port)).is_err());
    garage.start_again();
    refuses_anonymous_requests(&garage).await;
    assert_eq!(garage.counts().objects, 0);
}

/// Anonymous requests reach the S3 API and are refused the S3 way.
async fn refuses_anonymous_requests(garage: &Garage) {
    let response = reqwest::Client::new()
        .get(format!("{}/{}/", garage.endpoint(), garage.bucket))
        .send()
        .await
        .expect("S3 answers");
    let status = response.status();
    let body = response.text().await.expect("S3 error body");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
}

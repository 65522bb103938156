//! The real tus-js-client from the npm registry (tests/tus-js, installed by .ci/run), parallel
//! uploads (tus concatenation) included.

use std::path::Path;
use std::process::Command;

use crate::support::*;

const SIZE: usize = 20 * 1024 * 1024 + 12_345;

fn run_client(server: &TestServer, scenario: &str, file: &Path) -> serde_json::Value {
    run_client_with(server, scenario, file, &[])
}

/// run.mjs with more arguments after the file (a scenario's `<extra>`).
fn run_client_with(
    server: &TestServer,
    scenario: &str,
    file: &Path,
    extra: &[&std::ffi::OsStr],
) -> serde_json::Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tus-js");
    assert!(
        dir.join("node_modules/tus-js-client").exists(),
        "run `npm ci --prefix tests/tus-js` first (.ci/run does)"
    );
    let output = Command::new("node")
        .arg(dir.join("run.mjs"))
        .arg(server.url("/uploads"))
        .arg(scenario)
        .arg(file)
        .args(extra)
        .output()
        .expect("node");
    assert!(
        output.status.success(),
        "{scenario}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    json(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap_or_default(),
    )
}

async fn check(store: Store, scenario: &str, seed: u64) -> serde_json::Value {
    let server = TestServer::start_on(store);
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(SIZE, seed);
    let path = dir.path().join("file.bin");
    std::fs::write(&path, &bytes).unwrap();
    let result = tokio::task::block_in_place(|| run_client(&server, scenario, &path));
    let id = result["url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let status = status(&server, &id).await;
    assert_eq!(status["state"], "complete", "{scenario}");
    assert_eq!(status["name"], "tus file.bin");
    assert_eq!(status["sha256"], sha_hex(&bytes), "{scenario}");
    assert_eq!(content(&server, &id).await, bytes, "{scenario}");
    result
}

on_each_store! {
    #[tokio::test(flavor = "multi_thread")]
    async fn tus_js_client_uploads_20_mib(store: Store) {
        check(store, "basic", 71).await;
    }
}

on_each_store! {
    #[tokio::test(flavor = "multi_thread")]
    async fn tus_js_client_resumes_from_the_server_offset_not_zero(store: Store) {
        let result = check(store, "resume", 72).await;
        assert_eq!(
            result["url"], result["firstUrl"],
            "the same upload was resumed"
        );
        let first_patch = result["patches"][0].as_u64().unwrap();
        assert!(first_patch > 0, "it started over: {result}");
        assert!(first_patch >= result["stoppedAt"].as_u64().unwrap() - 1024 * 1024);
    }
}

on_each_store! {
    #[tokio::test(flavor = "multi_thread")]
    async fn tus_js_client_creation_with_upload(store: Store) {
        let result = check(store, "with-upload", 73).await;
        assert!(
            result["patches"][0].as_u64().unwrap() > 0,
            "the first chunk went with the POST"
        );
    }
}

on_each_store! {
    #[tokio::test(flavor = "multi_thread")]
    async fn tus_js_client_deferred_length(store: Store) {
        check(store, "deferred", 74).await;
    }
}

on_each_store! {
    #[tokio::test(flavor = "multi_thread")]
    async fn tus_js_client_ietf_draft_05(store: Store) {
        check(store, "ietf", 75).await;
    }
}

/// 200 MiB and a little (so that the four partial uploads are not all of one length).
const PARALLEL_SIZE: u64 = 200 * 1024 * 1024 + 4_321;

/// Writes `size` bytes of `data()` to `path` a slice at a time; returns their SHA-256 (hex).
fn write_data_file(path: &Path, size: u64, seed: u64) -> String {
    use sha2::Digest;
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = sha2::Sha256::new();
    let mut left = size;
    let mut n = 0;
    while left > 0 {
        let slice = data(left.min(8 << 20) as usize, seed * 1_000 + n);
        hasher.update(&slice);
        out.write_all(&slice).unwrap();
        left -= slice.len() as u64;
        n += 1;
    }
    out.flush().unwrap();
    crate::tus_concat::hex_of(&hasher.finalize())
}

/// The exchanges of one run whose request had `method` (and, if given, an `Upload-Concat`
/// starting with `concat`).
fn exchanges<'a>(
    run: &'a serde_json::Value,
    method: &str,
    concat: Option<&str>,
) -> Vec<&'a serde_json::Value> {
    run.as_array()
        .expect("exchanges")
        .iter()
        .filter(|e| e["method"] == method)
        .filter(|e| match concat {
            Some(prefix) => e["concat"].as_str().is_some_and(|c| c.starts_with(prefix)),
            None => true,
        })
        .collect()
}

fn id_at_end(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

on_each_store! {
    /// `parallelUploads: 4`: four partial uploads, interrupted (abort) after a quarter of the
    /// bytes; then, in another process, a new `Upload` of the same file resumes them from
    /// tus-js-client's URL storage and creates the final upload: the whole file, byte for byte.
    #[tokio::test(flavor = "multi_thread")]
    async fn tus_js_client_parallel_uploads_resume_and_concatenate_200_mib(store: Store) {
        let server = TestServer::start_on(store);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file.bin");
        let sha = write_data_file(&path, PARALLEL_SIZE, 76);
        let storage = dir.path().join("tus-urls.json");
        let first = tokio::task::block_in_place(|| {
            run_client_with(&server, "parallel", &path, &[storage.as_os_str()])
        });

        // The first run: four partials, no final, stopped early.
        let created = exchanges(&first["exchanges"], "POST", Some("partial"));
        assert_eq!(created.len(), 4, "four partial uploads: {created:?}");
        assert!(created.iter().all(|e| e["status"] == 201), "{created:?}");
        assert!(exchanges(&first["exchanges"], "POST", Some("final")).is_empty());
        let stopped_at = first["stoppedAt"].as_u64().unwrap();
        assert!(stopped_at < PARALLEL_SIZE / 2, "interrupted early: {stopped_at}");
        let partial_urls: Vec<String> = first["partialUrls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap().to_owned())
            .collect();
        let mut stored: Vec<String> = partial_urls.iter().map(|u| id_at_end(u)).collect();
        let mut made: Vec<String> = created
            .iter()
            .map(|e| id_at_end(e["location"].as_str().unwrap()))
            .collect();
        stored.sort();
        made.sort();
        assert_eq!(stored, made, "the URL storage keeps the four partial uploads");
        // The aborted PATCHes have been committed (their connections are gone with the
        // process): the offsets the resumed client reads are final.
        wait_appends_in_flight(&server, 0).await;

        let second = tokio::task::block_in_place(|| {
            run_client_with(&server, "parallel-resume", &path, &[storage.as_os_str()])
        });
        // The second run: no new partial; each stored one resumed where the server said.
        let exchanged = &second["exchanges"];
        assert!(
            exchanges(exchanged, "POST", Some("partial")).is_empty(),
            "the resumed run created partial uploads anew"
        );
        let heads = exchanges(exchanged, "HEAD", None);
        assert_eq!(heads.len(), 4, "{heads:?}");
        let mut resumed_from = 0;
        for url in &partial_urls {
            let head = heads
                .iter()
                .find(|e| e["url"] == url.as_str())
                .unwrap_or_else(|| panic!("no HEAD of {url}"));
            assert_eq!(head["status"], 200, "{head}");
            let offset = head["answeredOffset"].as_u64().unwrap();
            resumed_from += offset;
            let patches: Vec<_> = exchanges(exchanged, "PATCH", None)
                .into_iter()
                .filter(|e| e["url"] == url.as_str())
                .collect();
            if let Some(first) = patches.first() {
                assert_eq!(first["offset"], offset, "{url} resumed at the server's offset");
            }
            assert!(patches.iter().all(|e| e["status"] == 204), "{patches:?}");
        }
        assert!(
            resumed_from >= stopped_at,
            "resumed from {resumed_from} bytes in all, {stopped_at} were accepted before"
        );
        let finals = exchanges(exchanged, "POST", Some("final"));
        assert_eq!(finals.len(), 1, "{finals:?}");
        assert_eq!(finals[0]["concat"], format!("final;{}", partial_urls.join(" ")));
        assert_eq!(finals[0]["status"], 201);

        // The final upload: the file, from its four partials in order, which are gone.
        let id = id_at_end(second["url"].as_str().unwrap());
        let status = status(&server, &id).await;
        assert_eq!(status["state"], "complete", "{status}");
        assert_eq!(status["name"], "tus file.bin");
        assert_eq!(status["content_type"], "application/x-test");
        assert_eq!(status["size"], PARALLEL_SIZE);
        assert_eq!(status["sha256"], sha);
        let parts: Vec<String> = partial_urls.iter().map(|u| id_at_end(u)).collect();
        assert_eq!(status["parts"], serde_json::json!(parts));
        assert_eq!(
            crate::tus_concat::content_digest(&server, &id).await,
            (PARALLEL_SIZE, sha)
        );
        for part in &parts {
            let kept = client()
                .head(server.url(&format!("/uploads/{part}")))
                .header("Tus-Resumable", "1.0.0")
                .send()
                .await
                .unwrap();
            // Kept a while after the final took their bytes (tus-js-client looks at them
            // again when it retries a final whose answer it lost).
            assert_eq!(kept.status(), 200, "partial {part}");
        }
    }
}

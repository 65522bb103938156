//! The real tus-js-client from the npm registry (tests/tus-js, installed by .ci/run).

use std::path::Path;
use std::process::Command;

use crate::support::*;

const SIZE: usize = 20 * 1024 * 1024 + 12_345;

fn run_client(server: &TestServer, scenario: &str, file: &Path) -> serde_json::Value {
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

//! Secure defaults: a token that is set but empty never leaves the service open, and a
//! service reachable from other machines needs a token or an explicit --allow-anonymous.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Runs the server with `args` and `envs`: `Some(stderr)` when it exits by itself (never with
/// success), `None` once it says it is listening (it is then stopped).
fn refuses_to_start(args: &[&str], envs: &[(&str, &str)]) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_resumable"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, listening) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            assert!(!status.success(), "{args:?} exited 0: {stderr}");
            return Some(stderr);
        }
        if listening
            .try_recv()
            .is_ok_and(|line| line.contains("listening"))
        {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{args:?} neither started nor exited");
}

#[test]
fn an_empty_token_in_any_form_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let comments_only = dir.path().join("tokens");
    std::fs::write(&comments_only, "# the deploy token goes here\n\n   \n").unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--bind", "127.0.0.1:0", "--token", ""],
            vec![],
            "empty token",
        ),
        (
            vec!["--bind", "127.0.0.1:0", "--token", "  "],
            vec![],
            "empty token",
        ),
        (
            vec!["--bind", "127.0.0.1:0"],
            vec![("RESUMABLE_TOKEN", "")],
            "empty token",
        ),
        (
            vec![
                "--bind",
                "127.0.0.1:0",
                "--token-file",
                empty.to_str().unwrap(),
            ],
            vec![],
            "has no token",
        ),
        (
            vec![
                "--bind",
                "127.0.0.1:0",
                "--token-file",
                comments_only.to_str().unwrap(),
            ],
            vec![],
            "has no token",
        ),
    ];
    for (args, envs, says) in cases {
        let stderr = refuses_to_start(&args, &envs)
            .unwrap_or_else(|| panic!("{args:?} {envs:?} started an open service"));
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn comment_lines_in_a_token_file_are_not_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "# old: hunter2\n  s3cret  \n").unwrap();
    let server = TestServer::start_with(&["--token-file", file.to_str().unwrap()], &[]);
    let create_with = |token: &str| {
        client()
            .post(server.url("/uploads"))
            .bearer_auth(token)
            .json(&serde_json::json!({"name": "t", "size": 1}))
            .send()
    };
    assert_eq!(create_with("s3cret").await.unwrap().status(), 201);
    assert_eq!(create_with("# old: hunter2").await.unwrap().status(), 401);
    assert_eq!(create_with("hunter2").await.unwrap().status(), 401);
}

#[test]
fn a_public_address_without_a_token_needs_allow_anonymous() {
    let stderr = refuses_to_start(&["--bind", "0.0.0.0:0"], &[])
        .expect("an anonymous service on a public address must not start silently");
    assert!(stderr.contains("--allow-anonymous"), "{stderr}");
    assert!(
        refuses_to_start(&["--bind", "0.0.0.0:0", "--allow-anonymous"], &[]).is_none(),
        "with --allow-anonymous it serves"
    );
    assert!(
        refuses_to_start(&["--bind", "0.0.0.0:0", "--token", "s3cret"], &[]).is_none(),
        "with a token it serves"
    );
}

#[tokio::test]
async fn metrics_need_their_token_when_one_is_set() {
    let server = TestServer::start_with(&["--metrics-token", "m3trics"], &[]);
    let get = |token: Option<&str>| {
        let request = client().get(server.url("/metrics"));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(get(Some("wrong")).await.unwrap().status(), 401);
    let answer = get(Some("m3trics")).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer
        .text()
        .await
        .unwrap()
        .contains("resumable_uploads_created_total"));
    let stderr = refuses_to_start(&["--bind", "127.0.0.1:0", "--metrics-token", ""], &[])
        .expect("an empty metrics token refuses to start");
    assert!(stderr.contains("empty token"), "{stderr}");
}

#[tokio::test]
async fn a_failed_upload_expires_with_its_bytes() {
    let server = TestServer::start_with(&["--expire-after", "1s"], &[]);
    let created = create_json(
        &server,
        serde_json::json!({"name": "f.bin", "size": 3, "sha256": "0".repeat(64)}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(patch(&server, &id, 0, b"abc".to_vec()).await.status(), 422);
    let failed = status(&server, &id).await;
    assert_eq!(failed["state"], "failed");
    assert!(failed["expires_at"].is_string(), "{failed}");
    eventually(
        Duration::from_secs(10),
        "the failed upload to expire",
        || async { status_code(&server, &id).await == 410 },
    )
    .await;
    eventually(Duration::from_secs(5), "its bytes to go", || async {
        !server.file_path(&id).exists()
    })
    .await;
}

#[tokio::test]
async fn removed_uploads_are_forgotten_after_forget_after() {
    let server = TestServer::start_with(&["--forget-after", "1s", "--expire-after", "1s"], &[]);
    let id = create(&server, "gone.bin", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = server.url(&format!("/uploads/{id}"));
    assert_eq!(client().delete(&url).send().await.unwrap().status(), 204);
    assert_eq!(client().get(&url).send().await.unwrap().status(), 410);
    eventually(
        Duration::from_secs(10),
        "the tombstone to be forgotten",
        || async { client().get(&url).send().await.unwrap().status() == 404 },
    )
    .await;
}

/// An object store that refuses the server's keys, or has no such bucket, would refuse every
/// upload: the server says so at start-up. One that cannot be reached may come back: the
/// server starts, and reports it on /healthz.
#[test]
fn a_store_that_refuses_the_keys_refuses_to_start_and_an_unreachable_one_does_not() {
    let mut garage = crate::garage::Garage::start();
    let args = garage.server_args("incoming");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let wrong_secret = [
        ("AWS_ACCESS_KEY_ID", garage.key_id.as_str()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ];
    let stderr = refuses_to_start(&args, &wrong_secret).expect("wrong keys refuse to start");
    assert!(stderr.contains("refused a test write"), "{stderr}");

    let envs = garage.server_envs();
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut no_bucket = args.clone();
    let storage = no_bucket
        .iter()
        .position(|a| *a == "--storage")
        .expect("--storage")
        + 1;
    no_bucket[storage] = "s3://no-such-bucket/incoming";
    let stderr = refuses_to_start(&no_bucket, &envs).expect("a missing bucket refuses to start");
    assert!(stderr.contains("refused a test write"), "{stderr}");

    assert_eq!(refuses_to_start(&args, &envs), None, "the right keys start");
    garage.stop();
    assert_eq!(
        refuses_to_start(&args, &envs),
        None,
        "an unreachable store does not stop it"
    );
}

/// Instances sharing one database must share their bytes too: PostgreSQL with the local
/// directory is refused before anything is connected.
#[test]
fn a_shared_database_without_an_object_store_refuses_to_start() {
    let url = ["--database-url", "postgres://nobody@127.0.0.1:1/resumable"];
    let stderr = refuses_to_start(&url, &[]).expect("refused");
    assert!(stderr.contains("--storage s3://"), "{stderr}");
}

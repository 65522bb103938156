//! Many instances sharing one PostgreSQL database: each test starts a private cluster
//! (tests/e2e/postgres.rs) on loopback.

use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::garage::Garage;
use crate::postgres::Postgres;
use crate::support::*;

/// The fixture itself: a committed row survives a crash of the whole cluster, and the
/// connection count sees a client come and go.
#[tokio::test]
async fn a_private_postgres_starts_stops_and_comes_back() {
    let mut pg = Postgres::start();
    let port = pg.port();
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{port}/resumable")
    );
    pg.psql("CREATE TABLE fixture (id integer PRIMARY KEY, note text)");
    pg.psql("INSERT INTO fixture VALUES (1, 'committed')");

    pg.stop();
    assert!(!pg.is_running());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(pg.try_psql("SELECT 1").is_err());

    pg.start_again();
    assert_eq!(pg.port(), port);
    assert_eq!(
        pg.psql("SELECT note FROM fixture WHERE id = 1"),
        "committed"
    );
    assert_eq!(pg.connections(), 0);

    // A session held open (psql waiting on its stdin) counts, and stops counting once closed.
    let mut session = pg
        .psql_command()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("psql");
    pg.wait_for("the session to count", |pg| match pg.connections() {
        1 => Ok(()),
        n => Err(format!("{n} connections")),
    })
    .await;
    drop(session.stdin.take());
    assert!(session.wait().expect("psql exits").success());
    pg.wait_for("the session to end", |pg| match pg.connections() {
        0 => Ok(()),
        n => Err(format!("{n} connections")),
    })
    .await;

    // The immediate shutdown loses nothing committed either.
    pg.psql("INSERT INTO fixture VALUES (2, 'also committed')");
    pg.stop_immediate();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    pg.start_again();
    assert_eq!(pg.psql("SELECT count(*) FROM fixture"), "2");
}

/// Several instances of the real binary over one PostgreSQL and one Garage bucket, as an
/// operator runs them behind a load balancer: any of them may serve any request.
struct Fleet {
    pg: Postgres,
    garage: Garage,
    servers: Vec<TestServer>,
}

impl Fleet {
    fn start(instances: usize) -> Fleet {
        let pg = Postgres::start();
        let garage = Garage::start();
        let mut fleet = Fleet {
            pg,
            garage,
            servers: Vec::new(),
        };
        for _ in 0..instances {
            let server = fleet.instance();
            fleet.servers.push(server);
        }
        fleet
    }

    /// One more instance on the shared database and bucket.
    fn instance(&self) -> TestServer {
        let mut args = self.pg.server_args();
        args.extend(self.garage.server_args(S3_PREFIX));
        args.extend(["--s3-part-size".to_owned(), "5M".to_owned()]);
        let envs = self.garage.server_envs();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        TestServer::start_with(&args, &envs)
    }
}

impl std::ops::Index<usize> for Fleet {
    type Output = TestServer;
    fn index(&self, i: usize) -> &TestServer {
        &self.servers[i]
    }
}

fn id_of(status: &Value) -> String {
    status["id"].as_str().expect("id").to_owned()
}

async fn head_offset(server: &TestServer, id: &str) -> u64 {
    let response = client()
        .head(server.url(&format!("/uploads/{id}")))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(response.status(), 200);
    response.headers()["upload-offset"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Upload-Offset")
}

/// Every progress event of an upload's SSE stream on `server`, until the stream ends.
fn follow_events(server: &TestServer, id: &str) -> tokio::task::JoinHandle<Vec<Value>> {
    let url = server.url(&format!("/uploads/{id}/events"));
    tokio::spawn(async move {
        let response = client().get(url).send().await.expect("events");
        assert_eq!(response.status(), 200);
        let mut text = String::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("event bytes")));
        }
        text.split("\n\n")
            .filter(|block| block.starts_with("event: progress"))
            .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(json)
            .collect()
    })
}

/// The story of a user of many instances: created through A, appended through B, B killed in
/// the middle of a body, resumed through C from the last durable byte; a watcher on A sees
/// every step, whichever instance the bytes went through.
#[tokio::test(flavor = "multi_thread")]
async fn created_on_a_appended_on_b_killed_resumed_on_c_while_a_watches() {
    let mut fleet = Fleet::start(3);
    let size = 24 << 20;
    let bytes = data(size, 501);
    let id = id_of(&create(&fleet[0], "story.bin", size as u64).await);
    let events = follow_events(&fleet[0], &id);
    wait_watchers(&fleet[0], "sse", 1).await;

    // B streams 16 MiB of a 24 MiB body: three 5M parts become durable, then B dies.
    let conn = open_patch(fleet[1].port, &id, 0, size, &bytes[..16 << 20]);
    eventually(
        Duration::from_secs(20),
        "three parts durable through B",
        || async { received(&fleet[2], &id).await >= 15 << 20 },
    )
    .await;
    fleet.servers[1].kill9();
    drop(conn);

    let offset = head_offset(&fleet[2], &id).await;
    assert!(offset >= 15 << 20, "a durable byte was lost: {offset}");
    assert!(
        offset <= 16 << 20,
        "received counts bytes never sent: {offset}"
    );
    let answer = patch(&fleet[2], &id, offset, bytes[offset as usize..].to_vec()).await;
    assert_eq!(answer.status(), 200);

    let done = status(&fleet[0], &id).await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(done["sha256"], sha_hex(&bytes));
    assert!(content(&fleet[0], &id).await == bytes, "the file differs");

    let events = tokio::time::timeout(Duration::from_secs(10), events)
        .await
        .expect("the watcher's stream ends after the final state")
        .expect("the watcher");
    let received: Vec<u64> = events
        .iter()
        .filter_map(|e| e["received"].as_u64())
        .collect();
    assert!(
        received.windows(2).all(|w| w[0] <= w[1]),
        "not monotone: {received:?}"
    );
    assert!(
        received.iter().any(|r| *r > 0 && *r < size as u64),
        "the watcher on A saw no progress made on B or C: {received:?}"
    );
    let last = events.last().expect("events");
    assert_eq!(last["state"], "complete");
    assert_eq!(last["sha256"], sha_hex(&bytes));
}

/// A stalled PATCH on A does not hold the upload: a resuming client's PATCH on B takes over
/// within a moment, and A commits what it had.
#[tokio::test(flavor = "multi_thread")]
async fn a_patch_on_b_takes_over_a_stalled_one_on_a_at_once() {
    let fleet = Fleet::start(2);
    let bytes = data(1_000_000, 502);
    let id = id_of(&create(&fleet[0], "stalled.bin", 1_000_000).await);
    let mut stalled = open_patch(fleet[0].port, &id, 0, 1_000_000, &bytes[..200_000]);
    wait_appends_in_flight(&fleet[0], 1).await;
    wait_sent_bytes_taken(&fleet[0], &stalled).await;

    let started = Instant::now();
    // The 200,000 bytes are short of a part, so nothing is durable yet: B is told 0. Its PATCH
    // stops A, which writes them as a tail and commits, so B learns the new offset.
    let offset = head_offset(&fleet[1], &id).await;
    assert_eq!(offset, 0);
    let answer = patch(&fleet[1], &id, 0, bytes.clone()).await;
    assert_eq!(answer.status(), 409, "B wrote while A held the upload");
    let body: Value = answer.json().await.expect("409 body");
    assert_eq!(body["error"], "offset_mismatch");
    assert_eq!(body["received"], 200_000, "A committed what it stored");
    let answer = patch(&fleet[1], &id, 200_000, bytes[200_000..].to_vec()).await;
    assert_eq!(answer.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}: B waited for the stalled request on A",
        started.elapsed()
    );
    let done: Value = answer.json().await.expect("status");
    assert_eq!(done["sha256"], sha_hex(&bytes));
    assert!(content(&fleet[0], &id).await == bytes);
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let (code, _, _) = read_answer(&mut stalled);
    assert!(code == 409 || code == 0, "the stalled request got {code}");
}

//! Many instances sharing one PostgreSQL database: each test starts a private cluster
//! (tests/e2e/postgres.rs) on loopback.

use std::net::TcpStream;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
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
        Fleet::start_with(instances, &[])
    }

    /// `instances` instances, each with `extra` flags too.
    fn start_with(instances: usize, extra: &[&str]) -> Fleet {
        let pg = Postgres::start();
        let garage = Garage::start();
        let mut fleet = Fleet {
            pg,
            garage,
            servers: Vec::new(),
        };
        for _ in 0..instances {
            let server = fleet.instance(extra);
            fleet.servers.push(server);
        }
        fleet
    }

    /// One more instance on the shared database and bucket.
    fn instance(&self, extra: &[&str]) -> TestServer {
        let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        args.extend(self.pg.server_args());
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

/// A watcher of an upload's SSE stream on one instance, keeping every progress event.
struct Follower {
    seen: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    fn start(server: &TestServer, id: &str) -> Follower {
        let url = server.url(&format!("/uploads/{id}/events"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let events = seen.clone();
        let task = tokio::spawn(async move {
            let response = client().get(url).send().await.expect("events");
            assert_eq!(response.status(), 200);
            let mut text = String::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.expect("event bytes")));
                while let Some(end) = text.find("\n\n") {
                    let block: String = text.drain(..end + 2).collect();
                    let data = block.lines().find_map(|l| l.strip_prefix("data: "));
                    if let (true, Some(data)) = (block.starts_with("event: progress"), data) {
                        events.lock().expect("events").push(json(data));
                    }
                }
            }
        });
        Follower { seen, task }
    }

    fn received(&self) -> Vec<u64> {
        let seen = self.seen.lock().expect("events");
        seen.iter().filter_map(|e| e["received"].as_u64()).collect()
    }

    /// Waits until the watcher has been told of `received` bytes.
    async fn wait_for(&self, received: u64) {
        eventually(
            Duration::from_secs(30),
            &format!("the watcher to see {received}"),
            || async { self.received().contains(&received) },
        )
        .await;
    }

    /// Every event, once the stream has ended (after the final state).
    async fn finish(self) -> Vec<Value> {
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the watcher's stream ends after the final state")
            .expect("the watcher");
        let seen = self.seen.lock().expect("events");
        seen.clone()
    }
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
    let watcher = Follower::start(&fleet[0], &id);
    wait_watchers(&fleet[0], "sse", 1).await;

    // B streams 16 MiB of a 24 MiB body: three 5M parts become durable, then B dies.
    let conn = open_patch(fleet[1].port, &id, 0, size, &bytes[..16 << 20]);
    eventually(
        Duration::from_secs(20),
        "three parts durable through B",
        || async { received(&fleet[2], &id).await >= 15 << 20 },
    )
    .await;
    // The watcher on A hears live of what B committed.
    watcher.wait_for(15 << 20).await;
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

    let events = watcher.finish().await;
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
    fleet
        .pg
        .wait_for("no advisory lock left", |pg| {
            match advisory_locks(pg).as_str() {
                "0" => Ok(()),
                n => Err(format!("{n} advisory locks")),
            }
        })
        .await;
}

/// PostgreSQL crashes in the middle of an upload: requests answer 503 with Retry-After while
/// it is gone, nothing acknowledged is lost, and every instance comes back by itself — its
/// pool, its lock connection and its listener, so that a watcher on A goes on seeing the
/// bytes B takes afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_restart_mid_upload_is_503_then_everything_carries_on() {
    let mut fleet = Fleet::start(2);
    let size = 12 << 20;
    let bytes = data(size, 503);
    let id = id_of(&create(&fleet[0], "restart.bin", size as u64).await);
    let watcher = Follower::start(&fleet[0], &id);
    wait_watchers(&fleet[0], "sse", 1).await;
    let mib = 1 << 20;
    assert_eq!(
        patch(&fleet[1], &id, 0, bytes[..6 * mib].to_vec())
            .await
            .status(),
        200
    );

    fleet.pg.stop();
    let refused = patch(
        &fleet[1],
        &id,
        6 * mib as u64,
        bytes[6 * mib..9 * mib].to_vec(),
    )
    .await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("503 body");
    assert_eq!(body["error"], "storage_unavailable", "{body}");

    fleet.pg.start_again();
    eventually(Duration::from_secs(30), "B to answer again", || async {
        client()
            .head(fleet[1].url(&format!("/uploads/{id}")))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert_eq!(
        head_offset(&fleet[1], &id).await,
        6 * mib as u64,
        "acknowledged bytes"
    );
    // B takes 3 MiB more: A's watcher must hear of it through A's new listener.
    let more = patch(
        &fleet[1],
        &id,
        6 * mib as u64,
        bytes[6 * mib..9 * mib].to_vec(),
    )
    .await;
    assert_eq!(more.status(), 200);
    // A's watcher hears of it through A's new listener.
    watcher.wait_for(9 * mib as u64).await;
    let last = patch(&fleet[0], &id, 9 * mib as u64, bytes[9 * mib..].to_vec()).await;
    assert_eq!(last.status(), 200);
    let done: Value = last.json().await.expect("status");
    assert_eq!(done["sha256"], sha_hex(&bytes));

    let events = watcher.finish().await;
    let received: Vec<u64> = events
        .iter()
        .filter_map(|e| e["received"].as_u64())
        .collect();
    assert!(
        received.windows(2).all(|w| w[0] <= w[1]),
        "not monotone: {received:?}"
    );
    assert_eq!(events.last().expect("events")["state"], "complete");
}

/// Expiry runs on every instance, yet each expired upload is removed once: its row and its
/// bytes, counted once across the instances.
#[tokio::test(flavor = "multi_thread")]
async fn expiry_on_a_cluster_removes_each_upload_once() {
    let fleet = Fleet::start_with(3, &["--expire-after", "1s"]);
    let mut ids = Vec::new();
    for n in 0..9 {
        let server = &fleet[n % 3];
        let id = id_of(&create(server, "idle.bin", 100).await);
        assert_eq!(
            patch(server, &id, 0, data(40, n as u64)).await.status(),
            200
        );
        ids.push(id);
    }
    let expired = || async {
        let mut total = 0.0;
        for server in &fleet.servers {
            total += metric(server, "resumable_uploads_expired_total").await;
        }
        total
    };
    eventually(
        Duration::from_secs(30),
        "the sweeps to expire all nine",
        || async { expired().await >= 9.0 },
    )
    .await;
    fleet
        .garage
        .wait_for("no tail or object left", |g| {
            let counts = g.counts();
            (counts == Default::default())
                .then_some(())
                .ok_or(format!("{counts:?}"))
        })
        .await;
    for id in &ids {
        let answer = client()
            .get(fleet[1].url(&format!("/uploads/{id}")))
            .send()
            .await
            .expect("GET");
        assert_eq!(answer.status(), 410, "{id}");
    }
    assert_eq!(expired().await, 9.0, "an upload was expired twice");
    let rows = fleet
        .pg
        .psql("SELECT count(*) FROM uploads WHERE removed_reason = 'expired'");
    assert_eq!(rows, "9");
}

/// The database connections three instances hold stay bounded, whatever the load: appends
/// share each instance's one lock connection, and watchers hold none. (The test process
/// and the servers need about 10,100 descriptors each: `ulimit -n` is 20,000 on these
/// machines.)
#[tokio::test(flavor = "multi_thread")]
async fn connections_stay_bounded_with_32_appends_and_10000_watchers() {
    let fleet = Fleet::start(3);
    let size = 1 << 20;
    let bytes = data(size, 504);
    let mut ids = Vec::new();
    for n in 0..32 {
        ids.push(id_of(&create(&fleet[n % 3], "busy.bin", size as u64).await));
    }
    // Opened a thousand at a time, each thousand seen open before the next: ten thousand at
    // once queue each instance's status reads behind its 16 connections, and on a busy
    // machine some wait past the pool's 5 s and are refused (503) — overload, not a leak.
    let mut watchers = Vec::new();
    for batch in 0..10 {
        for n in batch * 1000..(batch + 1) * 1000 {
            let request = format!(
                "GET /uploads/{}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                ids[n % 32]
            );
            watchers.push(send_raw(fleet[n % 3].port, request.as_bytes()));
        }
        let opened = (batch + 1) * 1000;
        for (i, server) in fleet.servers.iter().enumerate() {
            let here = (0..opened).filter(|n| n % 3 == i).count() as f64;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let open = metric(server, "resumable_watchers{channel=\"sse\"}").await;
                if open == here {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "instance {i}: {open} of {here} watchers open"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let mut appends = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        appends.push(open_patch(
            fleet[n % 3].port,
            id,
            0,
            size,
            &bytes[..size / 2],
        ));
    }
    for (i, server) in fleet.servers.iter().enumerate() {
        let here = (0..32).filter(|n| n % 3 == i).count() as u64;
        wait_appends_in_flight(server, here).await;
    }
    let held = fleet.pg.connections();
    println!("PostgreSQL connections with 32 appends and 10,000 watchers on 3 instances: {held}");
    // Each instance: its pool (at most 16), its lock, listener, notice and refresh connections.
    assert!(held <= 3 * (16 + 4), "{held} connections");
    drop(appends);
    drop(watchers);
}

/// The crash test's invariants across instances: 30 SIGKILLs at random moments, each of a
/// different instance than the last, with every check made through another instance.
#[tokio::test(flavor = "multi_thread")]
async fn thirty_kills_spread_over_three_instances_keep_received_honest() {
    let mut fleet = Fleet::start(3);
    crate::crash::kill_rounds(&mut fleet.servers, 30).await;
}

/// tus-js-client (the real one, from npm) stops after 8 MiB on A and resumes through B from
/// the server's offset, not from zero.
#[tokio::test(flavor = "multi_thread")]
async fn tus_js_client_stopped_on_a_resumes_through_b() {
    let fleet = Fleet::start(2);
    let bytes = data((20 << 20) + 12_345, 505);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("file.bin");
    std::fs::write(&file, &bytes).expect("write the file");
    let tus_js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tus-js");
    assert!(
        tus_js.join("node_modules/tus-js-client").exists(),
        "run `npm ci --prefix tests/tus-js` first (.ci/run does)"
    );
    let output = tokio::task::block_in_place(|| {
        std::process::Command::new("node")
            .arg(tus_js.join("run.mjs"))
            .arg(fleet[0].url("/uploads"))
            .arg("resume-elsewhere")
            .arg(&file)
            .arg(fleet[1].url("/uploads"))
            .output()
            .expect("node")
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result = json(stdout.lines().last().unwrap_or_default());
    let url = result["url"].as_str().expect("url");
    assert!(
        url.starts_with(&fleet[1].base),
        "resumed through B: {result}"
    );
    let first_patch = result["patches"][0].as_u64().expect("a PATCH on B");
    assert!(first_patch >= 7 << 20, "it started over: {result}");
    let id = url.rsplit('/').next().expect("id");
    let done = status(&fleet[0], id).await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(done["sha256"], sha_hex(&bytes));
}

/// An instance that dies between committing the last bytes and announcing them leaves no
/// watcher elsewhere waiting for ever: the watched uploads are read again every few seconds.
#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_on_a_sees_complete_though_b_died_before_announcing_it() {
    let mut fleet = Fleet::start(2);
    let bytes = data(300_000, 506);
    let id = id_of(&create(&fleet[0], "quiet.bin", bytes.len() as u64).await);
    let watcher = Follower::start(&fleet[0], &id);
    wait_watchers(&fleet[0], "sse", 1).await;
    fleet.servers[1].set_env("RESUMABLE_FAULT_POINT", Some("commit-before-publish"));
    fleet.servers[1].restart();
    let died = client()
        .patch(fleet[1].url(&format!("/uploads/{id}")))
        .header("Upload-Offset", "0")
        .body(bytes.clone())
        .send()
        .await;
    assert!(died.is_err(), "B died between its commit and its notice");
    fleet.servers[1].wait_exited().await;
    let events = watcher.finish().await;
    let last = events.last().expect("events");
    assert_eq!(last["state"], "complete", "{events:?}");
    assert_eq!(last["sha256"], sha_hex(&bytes));
}

/// Three instances started at the same moment on an empty database: one creates the schema,
/// the others wait for it (the migrator's lock), and all serve.
#[tokio::test(flavor = "multi_thread")]
async fn three_instances_starting_at_once_share_one_schema() {
    let fleet = Fleet::start(0);
    let servers: Vec<TestServer> = std::thread::scope(|scope| {
        let starting: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| fleet.instance(&[])))
            .collect();
        starting
            .into_iter()
            .map(|t| t.join().expect("an instance started"))
            .collect()
    });
    let id = id_of(&create(&servers[0], "schema.bin", 3).await);
    assert_eq!(patch(&servers[1], &id, 0, vec![7; 3]).await.status(), 200);
    assert_eq!(status(&servers[2], &id).await["state"], "complete");
    let applied = fleet.pg.psql("SELECT count(*) FROM _sqlx_migrations");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let files = std::fs::read_dir(dir).expect("migrations").count();
    assert_eq!(applied, files.to_string(), "each migration, applied once");
}

/// A DELETE through A ends an append streaming through B at once (410), and the bytes go.
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_on_a_ends_an_append_streaming_on_b() {
    let fleet = Fleet::start(2);
    let size = 8 << 20;
    let bytes = data(size, 507);
    let id = id_of(&create(&fleet[0], "doomed.bin", size as u64).await);
    let mut streaming = open_patch(fleet[1].port, &id, 0, size, &bytes[..6 << 20]);
    wait_appends_in_flight(&fleet[1], 1).await;
    let started = Instant::now();
    let deleted = client()
        .delete(fleet[0].url(&format!("/uploads/{id}")))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 204);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the delete waited {:?} for the append on B",
        started.elapsed()
    );
    let (code, _, body) = read_answer(&mut streaming);
    assert_eq!(code, 410, "{body}");
    fleet
        .garage
        .wait_for("no part, tail or object left", |g| {
            let counts = g.counts();
            (counts == Default::default())
                .then_some(())
                .ok_or(format!("{counts:?}"))
        })
        .await;
}

/// Advisory locks held by the instances once nothing happens (none leaked).
fn advisory_locks(pg: &Postgres) -> String {
    pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
}

/// A's lock connection is cut while A streams an append: A stops it (503) rather than go on
/// without the lock, B takes the upload over and finishes it, and no lock is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn an_append_whose_lock_connection_is_cut_stops_and_b_finishes() {
    let fleet = Fleet::start(2);
    let size = 12 << 20;
    let bytes = data(size, 508);
    let id = id_of(&create(&fleet[0], "cut.bin", size as u64).await);
    let mut streaming = open_patch(fleet[0].port, &id, 0, size, &bytes[..7 << 20]);
    eventually(
        Duration::from_secs(20),
        "a part committed through A",
        || async { received(&fleet[1], &id).await >= 5 << 20 },
    )
    .await;
    let cut = fleet
        .pg
        .psql("SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory'");
    assert_eq!(cut, "1", "A's lock connection holds the one advisory lock");
    let (code, _, body) = read_answer(&mut streaming);
    assert_eq!(code, 503, "{body}");
    assert_eq!(json(&body)["error"], "storage_unavailable");

    let offset = head_offset(&fleet[1], &id).await;
    assert!((5 << 20..=7 << 20).contains(&offset), "{offset}");
    let answer = patch(&fleet[1], &id, offset, bytes[offset as usize..].to_vec()).await;
    assert_eq!(answer.status(), 200);
    let done: Value = answer.json().await.expect("status");
    assert_eq!(done["sha256"], sha_hex(&bytes));
    fleet
        .pg
        .wait_for("no advisory lock left", |pg| {
            match advisory_locks(pg).as_str() {
                "0" => Ok(()),
                n => Err(format!("{n} advisory locks")),
            }
        })
        .await;
}

/// The IETF draft across instances: created (with a first piece) through A, reported and
/// appended to through B, finished through C.
#[tokio::test(flavor = "multi_thread")]
async fn a_draft_upload_goes_through_three_instances() {
    let fleet = Fleet::start(3);
    let bytes = data(6 << 20, 509);
    let draft = |request: reqwest::RequestBuilder| {
        request
            .header("Upload-Draft-Interop-Version", "6")
            .header("Content-Type", "application/partial-upload")
    };
    let created = draft(client().post(fleet[0].url("/uploads")))
        .header("Upload-Complete", "?0")
        .body(bytes[..1 << 20].to_vec())
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), 201);
    let url = created.headers()["location"]
        .to_str()
        .expect("Location")
        .to_owned();
    let head = draft(client().head(fleet[1].url(&url)))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.headers()["upload-offset"], "1048576");
    let middle = draft(client().patch(fleet[1].url(&url)))
        .header("Upload-Offset", "1048576")
        .header("Upload-Complete", "?0")
        .body(bytes[1 << 20..5 << 20].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(middle.status(), 204);
    let last = draft(client().patch(fleet[2].url(&url)))
        .header("Upload-Offset", (5 << 20).to_string())
        .header("Upload-Complete", "?1")
        .body(bytes[5 << 20..].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(last.status(), 204);
    assert_eq!(last.headers()["upload-complete"], "?1");
    let id = url.rsplit('/').next().expect("id");
    let done = status(&fleet[0], id).await;
    assert_eq!(done["sha256"], sha_hex(&bytes));
    assert!(content(&fleet[1], id).await == bytes);
}

/// tus concatenation over PostgreSQL and S3: parts created on one instance, the final created
/// first on another, the parts appended on the other two; the sum of the parts shows on any
/// instance, and the last part's append, wherever it lands, assembles the final.
#[tokio::test(flavor = "multi_thread")]
async fn parts_appended_on_three_instances_make_one_final() {
    let fleet = Fleet::start(3);
    let tus = |request: reqwest::RequestBuilder| request.header("Tus-Resumable", "1.0.0");
    let pieces = [data(6 << 20, 521), data(3 << 20, 522)];
    let mut urls = Vec::new();
    for piece in &pieces {
        let created = tus(client().post(fleet[0].url("/uploads")))
            .header("Upload-Concat", "partial")
            .header("Upload-Length", piece.len().to_string())
            .send()
            .await
            .expect("POST");
        assert_eq!(created.status(), 201);
        urls.push(
            created.headers()["location"]
                .to_str()
                .expect("Location")
                .to_owned(),
        );
    }
    let created = tus(client().post(fleet[2].url("/uploads")))
        .header("Upload-Concat", format!("final;{} {}", urls[0], urls[1]))
        .send()
        .await
        .expect("POST final");
    assert_eq!(created.status(), 201);
    let whole_url = created.headers()["location"]
        .to_str()
        .expect("Location")
        .to_owned();
    let whole_id = whole_url.rsplit('/').next().expect("id").to_owned();
    for (n, piece) in pieces.iter().enumerate() {
        let appended = tus(client().patch(fleet[1 + n].url(&urls[n])))
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .body(piece.clone())
            .send()
            .await
            .expect("PATCH");
        assert_eq!(appended.status(), 204);
        if n == 0 {
            let waiting = status(&fleet[0], &whole_id).await;
            assert_eq!(waiting["state"], "uploading", "{waiting}");
            assert_eq!(waiting["received"], pieces[0].len(), "{waiting}");
            assert_eq!(
                waiting["size"],
                pieces[0].len() + pieces[1].len(),
                "{waiting}"
            );
        }
    }
    let bytes = pieces.concat();
    let done = status(&fleet[0], &whole_id).await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(done["sha256"], sha_hex(&bytes));
    assert!(content(&fleet[1], &whole_id).await == bytes);
}

/// Hooks over PostgreSQL: events raised on either instance wait in the one queue while the
/// receiver is down; once it is back, both instances drain it, and each event arrives once (a
/// claim keeps two instances from sending the same one), in order for each upload, whichever
/// instance raised it.
#[tokio::test(flavor = "multi_thread")]
async fn hook_events_raised_on_any_instance_arrive_once_and_in_order() {
    let receiver = crate::receiver::Receiver::start();
    let url = receiver.url();
    let events = "post-create,post-finish,post-terminate";
    let fleet = Fleet::start_with(2, &["--hooks-url", &url, "--hooks-events", events]);
    receiver.down().await;
    let mut expected = Vec::new();
    for i in 0..6u64 {
        let id = id_of(&create(&fleet[0], "hooked.bin", 3).await);
        assert_eq!(
            patch(&fleet[1], &id, 0, vec![i as u8; 3]).await.status(),
            200
        );
        let mut kinds = vec!["post-create", "post-finish"];
        if i % 2 == 0 {
            let deleted = client()
                .delete(fleet[0].url(&format!("/uploads/{id}")))
                .send()
                .await
                .expect("delete");
            assert_eq!(deleted.status(), 204);
            kinds.push("post-terminate");
        }
        expected.push((id, kinds));
    }
    let total: usize = expected.iter().map(|(_, kinds)| kinds.len()).sum();
    receiver.up().await;
    eventually(Duration::from_secs(90), "every event delivered", || {
        let delivered = receiver.events().len();
        async move { delivered >= total }
    })
    .await;
    let delivered = receiver.events();
    let mut ids: Vec<&str> = delivered
        .iter()
        .map(|e| e["event_id"].as_str().expect("event_id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), delivered.len(), "an event was sent twice");
    for (id, kinds) in &expected {
        let got: Vec<&str> = delivered
            .iter()
            .filter(|e| e["upload"]["id"] == id.as_str())
            .map(|e| e["type"].as_str().expect("type"))
            .collect();
        assert_eq!(&got, kinds, "events of {id}");
    }
    // Each delivered event leaves the queue once its delivery is recorded.
    eventually(Duration::from_secs(10), "an empty queue", || {
        let left = fleet.pg.psql("SELECT count(*) FROM hook_events");
        async move { left == "0" }
    })
    .await;
}

//! Hooks (API.md "Hooks"): events POSTed to `--hooks-url` or piped into `--hooks-command`.
//! `pre-create` and `pre-finish` are asked before the client is answered and may refuse;
//! `post-*` events go through a queue in the database, at least once and in order per upload,
//! through receiver outages and server crashes. A test receiver (receiver.rs) plays the hook
//! endpoint.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::receiver::{Receiver, Reply, Request};
use crate::support::*;

const USER_AGENT: &str = "hooks-e2e/1.0";
const ALL_EVENTS: &str =
    "pre-create,post-create,post-receive,pre-finish,post-finish,post-terminate";

/// A client that says who it is, so the events can be checked to carry the request's headers.
fn hook_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

fn id_of(status: &Value) -> String {
    status["id"].as_str().expect("id").to_owned()
}

/// A JSON create, answered whatever it is.
async fn try_create(server: &TestServer, body: Value) -> reqwest::Response {
    hook_client()
        .post(server.url("/uploads"))
        .header("X-Trace", "trace-1")
        .json(&body)
        .send()
        .await
        .expect("create")
}

/// A JSON create that must succeed; its status.
async fn create_ok(server: &TestServer, name: &str, size: u64) -> Value {
    let response = try_create(server, json!({"name": name, "size": size})).await;
    assert_eq!(response.status(), 201, "create {name}");
    response.json().await.expect("status JSON")
}

async fn patch_as(server: &TestServer, id: &str, offset: u64, body: Vec<u8>) -> reqwest::Response {
    hook_client()
        .patch(server.url(&format!("/uploads/{id}")))
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .header("X-Trace", "trace-1")
        .body(body)
        .send()
        .await
        .expect("patch")
}

async fn patch_ok(server: &TestServer, id: &str, offset: u64, body: Vec<u8>) -> Value {
    let response = patch_as(server, id, offset, body).await;
    assert_eq!(response.status(), 200, "patch {id} at {offset}");
    response.json().await.expect("status JSON")
}

async fn delete_ok(server: &TestServer, id: &str) {
    let response = hook_client()
        .delete(server.url(&format!("/uploads/{id}")))
        .header("X-Trace", "trace-1")
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204, "delete {id}");
}

/// The `post-*` events about upload `id`, in arrival order (repeats included).
fn post_events_of(events: &[Value], id: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("post-")))
        .filter(|e| e["upload"]["id"] == id)
        .cloned()
        .collect()
}

/// The first arrival of each event_id, in arrival order.
fn dedup(events: &[Value]) -> Vec<Value> {
    let mut seen = HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert(e["event_id"].as_str().expect("event_id").to_owned()))
        .cloned()
        .collect()
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The events' types with runs of post-receive collapsed into one.
fn collapsed_types(events: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for kind in types(events) {
        if kind == "post-receive" && out.last().is_some_and(|k| k == "post-receive") {
            continue;
        }
        out.push(kind);
    }
    out
}

/// The deduplicated `post-*` types of upload `id` equal `expected`.
fn has_sequence(receiver: &Receiver, id: &str, expected: &[&str]) -> bool {
    types(&dedup(&post_events_of(&receiver.events(), id))) == expected
}

/// `resumable_hook_events_total{type=…,outcome=…}` (0 when the series is not there yet).
async fn hook_count(server: &TestServer, kind: &str, outcome: &str) -> f64 {
    let series = format!("resumable_hook_events_total{{type=\"{kind}\",outcome=\"{outcome}\"}}");
    metric_opt(server, &series).await.unwrap_or(0.0)
}

async fn queue_oldest(server: &TestServer) -> f64 {
    metric_opt(server, "resumable_hook_queue_oldest_seconds")
        .await
        .expect("the metric resumable_hook_queue_oldest_seconds")
}

fn is_uuid_v4(text: &str) -> bool {
    uuid::Uuid::parse_str(text).is_ok_and(|u| u.get_version_num() == 4)
        && text.len() == 36
        && text == text.to_ascii_lowercase()
}

/// The fields every event carries, and the status fields of its upload.
fn assert_event_shape(event: &Value) {
    let event_id = event["event_id"].as_str().unwrap_or("");
    assert!(is_uuid_v4(event_id), "event_id is a UUID v4: {event}");
    let time = event["time"].as_str().unwrap_or("");
    humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("time is RFC 3339 ({e}): {event}"));
    let upload = &event["upload"];
    assert!(upload.is_object(), "an upload: {event}");
    if event["type"] != "pre-create" {
        for field in [
            "id",
            "name",
            "size",
            "received",
            "state",
            "content_type",
            "expected_sha256",
            "sha256",
            "created_at",
            "updated_at",
            "expires_at",
            "failure",
        ] {
            assert!(upload.get(field).is_some(), "upload.{field} in {event}");
        }
        assert!(upload["metadata"].is_object(), "upload.metadata in {event}");
    }
}

/// The request part of an event caused by this test's client.
fn assert_request(event: &Value, method: &str, path: &str) {
    let request = &event["request"];
    assert_eq!(request["method"], method, "{event}");
    assert_eq!(request["path"], path, "{event}");
    let remote = request["remote_addr"].as_str().unwrap_or("");
    assert!(remote.starts_with("127.0.0.1:"), "remote_addr: {event}");
    assert_eq!(request["headers"]["user-agent"], USER_AGENT, "{event}");
    assert_eq!(request["headers"]["x-trace"], "trace-1", "{event}");
}

fn post_only(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("post-")))
        .cloned()
        .collect()
}

#[tokio::test]
async fn every_post_event_arrives_with_its_upload_and_request() {
    let receiver = Receiver::start();
    let url = receiver.url();
    let args = [
        "--hooks-url",
        &url,
        "--hooks-events",
        ALL_EVENTS,
        "--hooks-progress-interval",
        "1ms",
    ];
    let server = TestServer::start_with(&args, &[]);
    let bytes = data(10, 1);

    let created = create_ok(&server, "a.bin", 10).await;
    let a = id_of(&created);
    assert_eq!(created["metadata"], json!({}), "{created}");
    // The hook is asked before the upload exists.
    let pre_create = receiver
        .requests()
        .into_iter()
        .find(|r| r.kind() == "pre-create")
        .expect("pre-create was asked before the create was answered");
    assert_eq!(pre_create.method, "POST");
    assert_eq!(pre_create.path, "/hooks");
    assert!(
        pre_create
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{:?}",
        pre_create.headers
    );
    let pre_create = pre_create.event().clone();
    assert_event_shape(&pre_create);
    assert_eq!(pre_create["upload"]["name"], "a.bin", "{pre_create}");
    assert_eq!(pre_create["upload"]["size"], 10, "{pre_create}");
    assert_request(&pre_create, "POST", "/uploads");

    patch_ok(&server, &a, 0, bytes[..4].to_vec()).await;
    eventually(
        Duration::from_secs(10),
        "a post-receive at 4 bytes",
        || async {
            post_events_of(&receiver.events(), &a)
                .iter()
                .any(|e| e["type"] == "post-receive" && e["upload"]["received"] == 4)
        },
    )
    .await;
    assert!(
        !receiver.events().iter().any(|e| e["type"] == "pre-finish"),
        "pre-finish is asked only once every byte is in"
    );
    let done = patch_ok(&server, &a, 4, bytes[4..].to_vec()).await;
    assert_eq!(done["state"], "complete");
    let pre_finish: Vec<Value> = receiver
        .events()
        .into_iter()
        .filter(|e| e["type"] == "pre-finish")
        .collect();
    assert_eq!(pre_finish.len(), 1, "pre-finish asked once: {pre_finish:?}");
    assert_event_shape(&pre_finish[0]);
    assert_eq!(pre_finish[0]["upload"]["id"], a.as_str());
    assert_eq!(pre_finish[0]["upload"]["received"], 10);
    assert_eq!(
        pre_finish[0]["upload"]["sha256"],
        sha_hex(&bytes),
        "the hook sees the digest"
    );
    assert_request(&pre_finish[0], "PATCH", &format!("/uploads/{a}"));

    let b = id_of(&create_ok(&server, "b.bin", 5).await);
    delete_ok(&server, &b).await;

    eventually(Duration::from_secs(20), "every post event", || async {
        let events = receiver.events();
        collapsed_types(&dedup(&post_events_of(&events, &a)))
            == ["post-create", "post-receive", "post-finish"]
            && types(&dedup(&post_events_of(&events, &b))) == ["post-create", "post-terminate"]
    })
    .await;

    let requests = receiver.requests();
    for request in &requests {
        assert_eq!(request.method, "POST", "hooks are POSTed");
        assert_eq!(request.path, "/hooks");
    }
    let events = receiver.events();
    for event in &events {
        assert_event_shape(event);
    }
    let all_ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    let distinct: HashSet<&str> = all_ids.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        dedup(&events).len(),
        "event_ids are unique per event"
    );

    let of_a = dedup(&post_events_of(&events, &a));
    let create_a = &of_a[0];
    assert_eq!(create_a["upload"]["received"], 0, "{create_a}");
    assert_eq!(create_a["upload"]["state"], "uploading", "{create_a}");
    assert_eq!(create_a["upload"]["name"], "a.bin", "{create_a}");
    assert_eq!(create_a["upload"]["size"], 10, "{create_a}");
    assert_eq!(create_a["upload"]["metadata"], json!({}), "{create_a}");
    assert!(create_a["upload"]["failure"].is_null(), "{create_a}");
    assert_request(create_a, "POST", "/uploads");
    let mut last = 0;
    for receive in of_a.iter().filter(|e| e["type"] == "post-receive") {
        let got = receive["upload"]["received"].as_u64().expect("received");
        assert!(got >= last && got > 0 && got <= 10, "{receive}");
        last = got;
        assert_request(receive, "PATCH", &format!("/uploads/{a}"));
    }
    let finish = of_a.last().expect("post-finish");
    assert_eq!(finish["type"], "post-finish");
    assert_eq!(finish["upload"]["received"], 10, "{finish}");
    assert_eq!(finish["upload"]["state"], "complete", "{finish}");
    assert_eq!(finish["upload"]["sha256"], sha_hex(&bytes), "{finish}");
    assert!(finish["upload"]["failure"].is_null(), "{finish}");
    assert_request(finish, "PATCH", &format!("/uploads/{a}"));

    let of_b = dedup(&post_events_of(&events, &b));
    assert_request(&of_b[0], "POST", "/uploads");
    let terminate = &of_b[1];
    assert_eq!(terminate["upload"]["removed"], "deleted", "{terminate}");
    assert_eq!(terminate["upload"]["name"], "b.bin", "{terminate}");
    assert_request(terminate, "DELETE", &format!("/uploads/{b}"));

    // The pre-* events came first for their upload.
    let position = |pred: &dyn Fn(&Value) -> bool| events.iter().position(pred).expect("event");
    assert!(position(&|e| e["type"] == "pre-create") < position(&|e| e["type"] == "post-create"));
    assert!(position(&|e| e["type"] == "pre-finish") < position(&|e| e["type"] == "post-finish"));

    // The counters say the same.
    // A delivery is counted before its row leaves the queue: both are waited for.
    eventually(
        Duration::from_secs(10),
        "delivered counts, and nothing waits",
        || async {
            hook_count(&server, "post-finish", "delivered").await == 1.0
                && hook_count(&server, "post-terminate", "delivered").await == 1.0
                && hook_count(&server, "post-create", "delivered").await == 2.0
                && queue_oldest(&server).await == 0.0
        },
    )
    .await;
    assert_eq!(hook_count(&server, "post-finish", "queued").await, 1.0);
    assert_eq!(hook_count(&server, "post-create", "queued").await, 2.0);
    assert_eq!(hook_count(&server, "post-finish", "failed").await, 0.0);
}

#[tokio::test]
async fn a_pre_create_rejection_reaches_the_client_and_creates_nothing() {
    let receiver = Receiver::start();
    receiver.respond_with(|request: &Request| {
        let event = request.event();
        if event["type"] == "pre-create" && event["upload"]["name"] == "denied.bin" {
            // The hook's own answer is a 200: a non-2xx would be a failed hook (503).
            Reply::json(
                200,
                json!({"reject": {"status": 403, "message": "no quota"}}),
            )
        } else if event["type"] == "pre-create" && event["upload"]["name"] == "gone.bin" {
            // Any status the hook names reaches the client.
            Reply::json(
                200,
                json!({"reject": {"status": 451, "message": "not here"}}),
            )
        } else {
            Reply::ok()
        }
    });
    let url = receiver.url();
    let server = TestServer::start_with(&["--hooks-url", &url], &[]);

    let response = try_create(&server, json!({"name": "denied.bin", "size": 10})).await;
    assert_eq!(response.status(), 403);
    assert!(response.headers().get("location").is_none());
    let body: Value = response.json().await.expect("error JSON");
    assert_eq!(body["error"], "rejected", "{body}");
    assert_eq!(body["message"], "no quota", "{body}");

    let response = try_create(&server, json!({"name": "gone.bin", "size": 10})).await;
    assert_eq!(response.status(), 451);
    let body: Value = response.json().await.expect("error JSON");
    assert_eq!(body["error"], "rejected", "{body}");
    assert_eq!(body["message"], "not here", "{body}");

    // Nothing was stored for them.
    assert!(
        server.stored_files().is_empty(),
        "{:?}",
        server.stored_files()
    );
    let pre_creates: Vec<Value> = receiver
        .events()
        .into_iter()
        .filter(|e| e["type"] == "pre-create")
        .collect();
    assert_eq!(pre_creates.len(), 2, "{pre_creates:?}");
    assert_eq!(pre_creates[0]["upload"]["name"], "denied.bin");
    assert_eq!(pre_creates[0]["upload"]["size"], 10);

    // The next create goes through, and its post-create is the only one.
    let ok = id_of(&create_ok(&server, "ok.bin", 3).await);
    eventually(Duration::from_secs(10), "ok.bin's post-create", || async {
        has_sequence(&receiver, &ok, &["post-create"])
    })
    .await;
    assert_eq!(
        server.stored_files().len(),
        1,
        "{:?}",
        server.stored_files()
    );
    assert_eq!(hook_count(&server, "post-create", "queued").await, 1.0);
    let posts = post_only(&receiver.events());
    assert!(
        posts.iter().all(|e| e["upload"]["id"] == ok.as_str()),
        "only ok.bin has post events: {posts:?}"
    );
    let created = status(&server, &ok).await;
    assert_eq!(created["name"], "ok.bin");
}

#[tokio::test]
async fn a_pre_create_answer_sets_name_content_type_and_metadata() {
    let receiver = Receiver::start();
    receiver.respond_with(|request: &Request| {
        if request.kind() == "pre-create" {
            Reply::json(
                200,
                json!({"name": "x.bin", "content_type": "text/plain", "metadata": {"user": "alice"}}),
            )
        } else {
            Reply::ok()
        }
    });
    let url = receiver.url();
    let server = TestServer::start_with(&["--hooks-url", &url], &[]);

    let created = create_ok(&server, "original.bin", 5).await;
    let id = id_of(&created);
    for seen in [created, status(&server, &id).await] {
        assert_eq!(seen["name"], "x.bin", "{seen}");
        assert_eq!(seen["content_type"], "text/plain", "{seen}");
        assert_eq!(seen["metadata"], json!({"user": "alice"}), "{seen}");
    }
    eventually(Duration::from_secs(10), "the post-create", || async {
        has_sequence(&receiver, &id, &["post-create"])
    })
    .await;
    let post_create = &post_events_of(&receiver.events(), &id)[0];
    assert_eq!(post_create["upload"]["name"], "x.bin", "{post_create}");
    assert_eq!(
        post_create["upload"]["content_type"], "text/plain",
        "{post_create}"
    );
    assert_eq!(
        post_create["upload"]["metadata"],
        json!({"user": "alice"}),
        "{post_create}"
    );

    // The stored file is served under what the hook said.
    patch_ok(&server, &id, 0, b"hello".to_vec()).await;
    let response = client()
        .get(server.url(&format!("/uploads/{id}/content")))
        .send()
        .await
        .expect("content");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.contains("x.bin"), "{disposition}");
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"hello");
}

#[tokio::test]
async fn a_pre_finish_rejection_fails_the_upload() {
    let receiver = Receiver::start();
    receiver.respond_with(|request: &Request| {
        let event = request.event();
        if event["type"] == "pre-finish" && event["upload"]["name"] == "bad.bin" {
            Reply::json(
                200,
                json!({"reject": {"status": 403, "message": "infected"}}),
            )
        } else {
            Reply::ok()
        }
    });
    let url = receiver.url();
    let args = [
        "--hooks-url",
        &url,
        "--hooks-events",
        "pre-finish,post-create,post-finish",
    ];
    let server = TestServer::start_with(&args, &[]);
    let bytes = data(10, 4);

    let bad = id_of(&create_ok(&server, "bad.bin", 10).await);
    patch_ok(&server, &bad, 0, bytes[..4].to_vec()).await;
    assert!(
        !receiver.events().iter().any(|e| e["type"] == "pre-finish"),
        "not asked before every byte is in"
    );
    let response = patch_as(&server, &bad, 4, bytes[4..].to_vec()).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.expect("error JSON");
    assert_eq!(body["error"], "rejected", "{body}");
    assert_eq!(body["message"], "infected", "{body}");
    let pre_finish: Vec<Value> = receiver
        .events()
        .into_iter()
        .filter(|e| e["type"] == "pre-finish")
        .collect();
    assert_eq!(pre_finish.len(), 1, "{pre_finish:?}");
    assert_event_shape(&pre_finish[0]);
    assert_eq!(pre_finish[0]["upload"]["id"], bad.as_str());
    assert_eq!(pre_finish[0]["upload"]["received"], 10);

    let failed = status(&server, &bad).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["failure"], "rejected", "{failed}");
    assert_eq!(failed["received"], 10, "{failed}");
    let more = patch_as(&server, &bad, 10, Vec::new()).await;
    assert_eq!(more.status(), 409, "a failed upload takes no more appends");
    let content = client()
        .get(server.url(&format!("/uploads/{bad}/content")))
        .send()
        .await
        .unwrap();
    assert_eq!(content.status(), 409, "a rejected upload is never served");

    // A declared SHA-256 that does not match: the hook is not asked.
    let other = data(10, 5);
    let created = hook_client()
        .post(server.url("/uploads"))
        .json(&json!({"name": "mismatch.bin", "size": 10, "sha256": sha_hex(&other)}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let mismatch = id_of(&created.json().await.unwrap());
    let response = patch_as(&server, &mismatch, 0, bytes.clone()).await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        receiver
            .events()
            .iter()
            .filter(|e| e["type"] == "pre-finish")
            .count(),
        1,
        "pre-finish is asked only once the SHA-256 matched"
    );
    let mismatched = status(&server, &mismatch).await;
    assert_eq!(mismatched["state"], "failed", "{mismatched}");
    assert_eq!(mismatched["failure"], "sha256_mismatch", "{mismatched}");

    // An accepted one completes and is announced.
    let good = id_of(&create_ok(&server, "good.bin", 10).await);
    let done = patch_ok(&server, &good, 0, bytes.clone()).await;
    assert_eq!(done["state"], "complete", "{done}");
    assert!(done["failure"].is_null(), "{done}");
    eventually(
        Duration::from_secs(10),
        "good.bin's post-finish",
        || async { has_sequence(&receiver, &good, &["post-create", "post-finish"]) },
    )
    .await;
    // Nothing finished for the rejected one.
    assert!(has_sequence(&receiver, &bad, &["post-create"]));
    assert_eq!(hook_count(&server, "post-finish", "queued").await, 1.0);
    // Only the events asked for were sent.
    let kinds: HashSet<String> = types(&receiver.events()).into_iter().collect();
    let listed: HashSet<String> = ["pre-finish", "post-create", "post-finish"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert!(
        kinds.is_subset(&listed),
        "--hooks-events is obeyed: {kinds:?}"
    );
}

#[tokio::test]
async fn a_pre_create_hook_that_times_out_fails_or_is_down_refuses_with_503() {
    let receiver = Receiver::start();
    receiver.respond_with(|request: &Request| {
        if request.kind() == "pre-create" {
            Reply::ok().after(Duration::from_secs(5))
        } else {
            Reply::ok()
        }
    });
    let url = receiver.url();
    let server = TestServer::start_with(&["--hooks-url", &url, "--hooks-timeout", "1s"], &[]);

    async fn assert_unavailable(server: &TestServer, name: &str) -> Duration {
        let started = Instant::now();
        let response = try_create(server, json!({"name": name, "size": 10})).await;
        let took = started.elapsed();
        assert_eq!(response.status(), 503, "{name}");
        let retry_after = response
            .headers()
            .get("retry-after")
            .unwrap_or_else(|| panic!("{name}: a Retry-After header"))
            .to_str()
            .unwrap()
            .to_owned();
        assert!(!retry_after.trim().is_empty(), "{name}: Retry-After");
        let body: Value = response.json().await.expect("error JSON");
        assert_eq!(body["error"], "hook_unavailable", "{name}: {body}");
        took
    }

    // Slow: the hook's 5 s answer is not waited for.
    let took = assert_unavailable(&server, "slow.bin").await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(4500),
        "refused after the 1 s timeout, not after the hook's 5 s: {took:?}"
    );
    assert!(
        receiver.requests().iter().any(|r| r.kind() == "pre-create"),
        "the hook was asked"
    );

    // Failing: a 500.
    receiver.respond_with(|request: &Request| {
        if request.kind() == "pre-create" {
            Reply::json(500, json!({"oops": true}))
        } else {
            Reply::ok()
        }
    });
    assert_unavailable(&server, "failing.bin").await;

    // Down: connection refused.
    receiver.down().await;
    assert_unavailable(&server, "unreachable.bin").await;

    assert!(
        server.stored_files().is_empty(),
        "{:?}",
        server.stored_files()
    );
    assert_eq!(hook_count(&server, "post-create", "queued").await, 0.0);

    // Back and accepting: creates work again, and only this one is announced.
    receiver.respond_with(|_: &Request| Reply::ok());
    receiver.up().await;
    let id = id_of(&create_ok(&server, "fine.bin", 10).await);
    eventually(
        Duration::from_secs(15),
        "fine.bin's post-create",
        || async { has_sequence(&receiver, &id, &["post-create"]) },
    )
    .await;
    assert_eq!(hook_count(&server, "post-create", "queued").await, 1.0);
    let posts = post_only(&receiver.events());
    assert!(
        posts.iter().all(|e| e["upload"]["id"] == id.as_str()),
        "{posts:?}"
    );
}

/// Several uploads with one life each: `(id, expected post-* sequence)`.
async fn uploads_with_every_ending(server: &TestServer) -> Vec<(String, Vec<&'static str>)> {
    let mut expected = Vec::new();
    // Completed in two appends.
    let bytes = data(20, 6);
    let one = id_of(&create_ok(server, "one.bin", 20).await);
    patch_ok(server, &one, 0, bytes[..7].to_vec()).await;
    patch_ok(server, &one, 7, bytes[7..].to_vec()).await;
    expected.push((one, vec!["post-create", "post-finish"]));
    // Partly sent, then deleted.
    let two = id_of(&create_ok(server, "two.bin", 20).await);
    patch_ok(server, &two, 0, bytes[..3].to_vec()).await;
    delete_ok(server, &two).await;
    expected.push((two, vec!["post-create", "post-terminate"]));
    // Completed in one append.
    let three = id_of(&create_ok(server, "three.bin", 20).await);
    patch_ok(server, &three, 0, bytes.clone()).await;
    expected.push((three, vec!["post-create", "post-finish"]));
    // Only created.
    let four = id_of(&create_ok(server, "four.bin", 20).await);
    expected.push((four, vec!["post-create"]));
    // Created empty: complete at once.
    let five = id_of(&create_ok(server, "five.bin", 0).await);
    expected.push((five, vec!["post-create", "post-finish"]));
    // Completed, then deleted.
    let six = id_of(&create_ok(server, "six.bin", 20).await);
    patch_ok(server, &six, 0, bytes.clone()).await;
    delete_ok(server, &six).await;
    expected.push((six, vec!["post-create", "post-finish", "post-terminate"]));
    expected
}

/// Every upload's events arrived: each at least once, and, after dropping repeats, exactly
/// the expected sequence in the expected order.
fn assert_all_delivered_in_order(receiver: &Receiver, expected: &[(String, Vec<&'static str>)]) {
    let events = receiver.events();
    for (id, sequence) in expected {
        let arrived = post_events_of(&events, id);
        assert_eq!(
            types(&dedup(&arrived)),
            *sequence,
            "upload {id}: arrivals {:?}",
            types(&arrived)
        );
        for event in &arrived {
            assert_event_shape(event);
        }
    }
    let known: HashSet<&str> = expected.iter().map(|(id, _)| id.as_str()).collect();
    let strays: Vec<&Value> = events
        .iter()
        .filter(|e| !known.contains(e["upload"]["id"].as_str().unwrap_or("")))
        .collect();
    assert!(
        strays.is_empty(),
        "events about no upload of the test: {strays:?}"
    );
    let repeats = events.len() - dedup(&events).len();
    println!(
        "{} deliveries, {} distinct events, {repeats} repeats",
        events.len(),
        dedup(&events).len()
    );
}

fn all_arrived(receiver: &Receiver, expected: &[(String, Vec<&'static str>)]) -> bool {
    let events = receiver.events();
    expected.iter().all(|(id, sequence)| {
        let distinct = dedup(&post_events_of(&events, id));
        distinct.len() >= sequence.len()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_events_survive_a_20_second_receiver_outage() {
    let receiver = Receiver::start();
    receiver.down().await;
    let went_down = Instant::now();
    let url = receiver.url();
    let args = [
        "--hooks-url",
        &url,
        "--hooks-events",
        "post-create,post-finish,post-terminate",
    ];
    let server = TestServer::start_with(&args, &[]);

    // The clients are served while nobody takes the events.
    let expected = uploads_with_every_ending(&server).await;
    eventually(Duration::from_secs(5), "every event queued", || async {
        hook_count(&server, "post-create", "queued").await == 6.0
            && hook_count(&server, "post-finish", "queued").await == 4.0
            && hook_count(&server, "post-terminate", "queued").await == 2.0
    })
    .await;
    eventually(
        Duration::from_secs(15),
        "failed deliveries retried",
        || async { hook_count(&server, "post-create", "retried").await >= 1.0 },
    )
    .await;
    eventually(Duration::from_secs(15), "the queue to age", || async {
        queue_oldest(&server).await >= 2.0
    })
    .await;
    assert_eq!(hook_count(&server, "post-create", "delivered").await, 0.0);

    // The outage lasts 20 s.
    tokio::time::sleep_until((went_down + Duration::from_secs(20)).into()).await;
    assert!(receiver.requests().is_empty());
    let oldest = queue_oldest(&server).await;
    assert!(
        oldest >= 10.0,
        "the oldest event waits since the outage began: {oldest}"
    );
    receiver.up().await;
    let back = Instant::now();

    eventually(
        Duration::from_secs(75),
        "every event after the outage",
        || async { all_arrived(&receiver, &expected) },
    )
    .await;
    println!(
        "all delivered {:?} after the receiver came back",
        back.elapsed()
    );
    assert_all_delivered_in_order(&receiver, &expected);
    eventually(
        Duration::from_secs(10),
        "the counters to settle",
        || async {
            hook_count(&server, "post-create", "delivered").await == 6.0
                && hook_count(&server, "post-finish", "delivered").await == 4.0
                && hook_count(&server, "post-terminate", "delivered").await == 2.0
                && queue_oldest(&server).await == 0.0
        },
    )
    .await;
    assert_eq!(hook_count(&server, "post-create", "failed").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_post_events_survive_a_kill_9() {
    let receiver = Receiver::start();
    receiver.down().await;
    let url = receiver.url();
    let args = [
        "--hooks-url",
        &url,
        "--hooks-events",
        "post-create,post-finish,post-terminate",
    ];
    let mut server = TestServer::start_with(&args, &[]);

    // Every event is acknowledged to its client, then the server dies at once.
    let expected = uploads_with_every_ending(&server).await;
    server.kill9();
    server.restart();
    receiver.up().await;

    eventually(
        Duration::from_secs(40),
        "every event after the restart",
        || async { all_arrived(&receiver, &expected) },
    )
    .await;
    assert_all_delivered_in_order(&receiver, &expected);
    eventually(Duration::from_secs(10), "an empty queue", || async {
        queue_oldest(&server).await == 0.0
    })
    .await;
}

/// HMAC-SHA256 (RFC 2104) from SHA-256.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `Resumable-Signature: t=…,v1=…` verifies `request` with `secret`.
fn signature_verifies(request: &Request, secret: &str) -> bool {
    let Some(header) = request.header("resumable-signature") else {
        return false;
    };
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = Some(value.to_owned()),
            Some(("v1", value)) => v1.push(value.to_ascii_lowercase()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&request.body);
    let expected = hex(&hmac_sha256(secret.as_bytes(), &signed));
    v1.contains(&expected)
}

#[test]
fn hmac_sha256_matches_rfc_4231() {
    // Test case 2 and test case 6 (a key longer than a block).
    assert_eq!(
        hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        hex(&hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

#[tokio::test]
async fn every_delivery_is_signed_with_the_secret() {
    let receiver = Receiver::start();
    let url = receiver.url();
    let secret = "s3cret-for-the-hooks";
    let args = [
        "--hooks-url",
        &url,
        "--hooks-secret",
        secret,
        "--hooks-events",
        ALL_EVENTS,
    ];
    let server = TestServer::start_with(&args, &[]);
    let id = id_of(&create_ok(&server, "signed.bin", 6).await);
    patch_ok(&server, &id, 0, b"signed".to_vec()).await;
    eventually(Duration::from_secs(10), "the post events", || async {
        has_sequence(
            &receiver,
            &id,
            &["post-create", "post-receive", "post-finish"],
        ) || has_sequence(&receiver, &id, &["post-create", "post-finish"])
    })
    .await;

    let requests = receiver.requests();
    let kinds: HashSet<&str> = requests.iter().map(|r| r.kind()).collect();
    for kind in ["pre-create", "post-create", "pre-finish", "post-finish"] {
        assert!(kinds.contains(kind), "a {kind} delivery: {kinds:?}");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for request in &requests {
        let header = request
            .header("resumable-signature")
            .unwrap_or_else(|| panic!("{} carries Resumable-Signature", request.kind()));
        let t: i64 = header
            .split(',')
            .find_map(|p| p.trim().strip_prefix("t="))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("t=<unix seconds> in {header}"));
        assert!((now - t).abs() < 300, "t is the time of sending: {header}");
        assert!(
            signature_verifies(request, secret),
            "{} verifies with the secret: {header}",
            request.kind()
        );
        assert!(
            !signature_verifies(request, "another-secret"),
            "{} does not verify with another secret",
            request.kind()
        );
        let mut tampered = request.clone();
        tampered.body.push(b' ');
        assert!(
            !signature_verifies(&tampered, secret),
            "a changed body does not verify"
        );
    }

    // Without a secret there is no signature.
    let plain_receiver = Receiver::start();
    let plain_url = plain_receiver.url();
    let plain = TestServer::start_with(&["--hooks-url", &plain_url], &[]);
    create_ok(&plain, "plain.bin", 1).await;
    eventually(Duration::from_secs(10), "a post-create", || async {
        plain_receiver
            .requests()
            .iter()
            .any(|r| r.kind() == "post-create")
    })
    .await;
    assert!(plain_receiver
        .requests()
        .iter()
        .all(|r| r.header("resumable-signature").is_none()));
}

/// The JSON lines in `path` (none when it does not exist yet).
fn json_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(json)
        .collect()
}

#[tokio::test]
async fn a_command_hook_gets_every_event_on_stdin_and_may_refuse() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("events.log");
    let script = dir.path().join("hook.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
event=$(cat)
printf '%s\n' "$event" >> '{log}'
if printf '%s' "$event" | grep -Eq '"type" *: *"pre-create"'; then
  if printf '%s' "$event" | grep -q 'denied\.bin'; then
    printf '%s' '{{"reject": {{"status": 403, "message": "not by command"}}}}'
  elif printf '%s' "$event" | grep -q 'broken\.bin'; then
    echo 'broken on purpose' >&2
    exit 3
  elif printf '%s' "$event" | grep -q 'renamed\.bin'; then
    printf '%s\n' '{{"name": "by-command.txt", "metadata": {{"via": "command"}}}}'
  fi
fi
exit 0
"#,
            log = log.display()
        ),
    )
    .expect("write the hook script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let script_path = script.to_str().unwrap().to_owned();
    let args = [
        "--hooks-command",
        &script_path,
        "--hooks-events",
        "pre-create,post-create,post-finish,post-terminate",
    ];
    let server = TestServer::start_with(&args, &[]);

    let kept = id_of(&create_ok(&server, "kept.bin", 3).await);
    patch_ok(&server, &kept, 0, b"abc".to_vec()).await;
    let deleted = id_of(&create_ok(&server, "deleted.bin", 3).await);
    delete_ok(&server, &deleted).await;
    eventually(
        Duration::from_secs(20),
        "the post events in the log",
        || async {
            let events = json_lines(&log);
            types(&dedup(&post_events_of(&events, &kept))) == ["post-create", "post-finish"]
                && types(&dedup(&post_events_of(&events, &deleted)))
                    == ["post-create", "post-terminate"]
        },
    )
    .await;
    let events = json_lines(&log);
    for event in &events {
        assert_event_shape(event);
    }
    let finish = &dedup(&post_events_of(&events, &kept))[1];
    assert_eq!(finish["upload"]["state"], "complete", "{finish}");
    assert_eq!(finish["upload"]["sha256"], sha_hex(b"abc"), "{finish}");
    assert_request(finish, "PATCH", &format!("/uploads/{kept}"));
    let terminate = &dedup(&post_events_of(&events, &deleted))[1];
    assert_eq!(terminate["upload"]["removed"], "deleted", "{terminate}");
    let pre_creates: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "pre-create")
        .collect();
    assert_eq!(pre_creates.len(), 2, "{pre_creates:?}");

    // Its printed answer refuses.
    let response = try_create(&server, json!({"name": "denied.bin", "size": 3})).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rejected", "{body}");
    assert_eq!(body["message"], "not by command", "{body}");

    // A non-zero exit is a failed hook.
    let response = try_create(&server, json!({"name": "broken.bin", "size": 3})).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "hook_unavailable", "{body}");

    // Its printed answer sets the name and metadata.
    let renamed = create_ok(&server, "renamed.bin", 3).await;
    assert_eq!(renamed["name"], "by-command.txt", "{renamed}");
    assert_eq!(renamed["metadata"], json!({"via": "command"}), "{renamed}");

    // Only the created ones were stored and announced.
    assert_eq!(
        server.stored_files().len(),
        2,
        "{:?}",
        server.stored_files()
    );
    assert_eq!(hook_count(&server, "post-create", "queued").await, 3.0);
    let renamed_id = id_of(&renamed);
    eventually(Duration::from_secs(20), "renamed's post-create", || async {
        has_post_create(&json_lines(&log), &renamed_id)
    })
    .await;
    let posts = post_only(&json_lines(&log));
    let allowed = [kept.as_str(), deleted.as_str(), renamed_id.as_str()];
    assert!(
        posts
            .iter()
            .all(|e| allowed.contains(&e["upload"]["id"].as_str().unwrap_or(""))),
        "{posts:?}"
    );
}

fn has_post_create(events: &[Value], id: &str) -> bool {
    post_events_of(events, id)
        .iter()
        .any(|e| e["type"] == "post-create")
}

#[tokio::test]
async fn a_post_command_that_fails_is_retried() {
    use std::os::unix::fs::PermissionsExt;

    // The script fails the first two times it is run for a post-create, then takes it.
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("events.log");
    let tries = dir.path().join("tries");
    let script = dir.path().join("hook.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
event=$(cat)
echo x >> '{tries}'
if [ "$(wc -l < '{tries}')" -le 2 ]; then
  exit 1
fi
printf '%s\n' "$event" >> '{log}'
"#,
            tries = tries.display(),
            log = log.display()
        ),
    )
    .expect("write the hook script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let script_path = script.to_str().unwrap().to_owned();
    let args = [
        "--hooks-command",
        &script_path,
        "--hooks-events",
        "post-create",
    ];
    let server = TestServer::start_with(&args, &[]);
    let id = id_of(&create_ok(&server, "retried.bin", 3).await);
    eventually(
        Duration::from_secs(30),
        "the post-create after retries",
        || async { has_post_create(&json_lines(&log), &id) },
    )
    .await;
    let runs = std::fs::read_to_string(&tries).unwrap().lines().count();
    assert!(runs >= 3, "{runs} runs");
    // The script has run; the server counts the delivery once it has seen it exit.
    eventually(
        Duration::from_secs(10),
        "the delivery to be counted",
        || async { hook_count(&server, "post-create", "delivered").await == 1.0 },
    )
    .await;
    assert!(hook_count(&server, "post-create", "retried").await >= 2.0);
}

#[tokio::test]
async fn tus_upload_metadata_is_decoded_into_the_status() {
    let receiver = Receiver::start();
    let url = receiver.url();
    let server = TestServer::start_with(&["--hooks-url", &url], &[]);

    let response = hook_client()
        .post(server.url("/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "4")
        .header(
            "Upload-Metadata",
            format!("filename {},user {}", b64(b"file.bin"), b64(b"alice")),
        )
        .send()
        .await
        .expect("tus create");
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let id = location.rsplit('/').next().unwrap().to_owned();
    let seen = status(&server, &id).await;
    assert_eq!(seen["name"], "file.bin", "{seen}");
    assert_eq!(
        seen["metadata"],
        json!({"filename": "file.bin", "user": "alice"}),
        "{seen}"
    );

    // The hooks see it too, from pre-create on.
    let pre_create = receiver
        .events()
        .into_iter()
        .find(|e| e["type"] == "pre-create")
        .expect("a pre-create");
    assert_eq!(
        pre_create["upload"]["metadata"],
        json!({"filename": "file.bin", "user": "alice"}),
        "{pre_create}"
    );
    eventually(Duration::from_secs(10), "the post-create", || async {
        has_sequence(&receiver, &id, &["post-create"])
    })
    .await;
    let post_create = &post_events_of(&receiver.events(), &id)[0];
    assert_eq!(
        post_create["upload"]["metadata"],
        json!({"filename": "file.bin", "user": "alice"}),
        "{post_create}"
    );

    // Non-ASCII values are decoded as UTF-8.
    let response = hook_client()
        .post(server.url("/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "4")
        .header(
            "Upload-Metadata",
            format!(
                "filename {},city {}",
                b64("ünï.bin".as_bytes()),
                b64("Zürich".as_bytes())
            ),
        )
        .send()
        .await
        .expect("tus create");
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let unicode = status(&server, location.rsplit('/').next().unwrap()).await;
    assert_eq!(
        unicode["metadata"],
        json!({"filename": "ünï.bin", "city": "Zürich"}),
        "{unicode}"
    );

    // None given: an empty object, for tus and JSON creates alike.
    let response = hook_client()
        .post(server.url("/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "4")
        .send()
        .await
        .expect("tus create");
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let bare = status(&server, location.rsplit('/').next().unwrap()).await;
    assert_eq!(bare["metadata"], json!({}), "{bare}");
    let plain = create_ok(&server, "plain.bin", 4).await;
    assert_eq!(status(&server, &id_of(&plain)).await["metadata"], json!({}));
}

#[tokio::test]
async fn post_receive_comes_at_most_once_per_interval() {
    let receiver = Receiver::start();
    let url = receiver.url();
    let args = [
        "--hooks-url",
        &url,
        "--hooks-events",
        "post-receive,post-finish",
        "--hooks-progress-interval",
        "1s",
    ];
    let server = TestServer::start_with(&args, &[]);
    let id = id_of(&create(&server, "progress.bin", 41).await);
    let started = Instant::now();
    for offset in 0..40u64 {
        patch_ok(&server, &id, offset, vec![offset as u8]).await;
    }
    patch_ok(&server, &id, 40, vec![40]).await;
    let took = started.elapsed();
    // Every post-receive precedes the post-finish.
    eventually(Duration::from_secs(15), "the post-finish", || async {
        post_events_of(&receiver.events(), &id)
            .iter()
            .any(|e| e["type"] == "post-finish")
    })
    .await;
    let events = dedup(&post_events_of(&receiver.events(), &id));
    assert_eq!(
        collapsed_types(&events),
        ["post-receive", "post-finish"],
        "{:?}",
        types(&events)
    );
    let receives: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "post-receive")
        .map(|e| e["upload"]["received"].as_u64().expect("received"))
        .collect();
    let bound = took.as_secs() as usize + 2;
    assert!(
        receives.len() <= bound,
        "{} post-receive in {took:?} at 1 s apart at most: {receives:?}",
        receives.len()
    );
    assert!(receives.windows(2).all(|w| w[0] <= w[1]), "{receives:?}");
    println!("41 appends in {took:?}: post-receive at {receives:?}");
}

#[tokio::test]
async fn an_expired_upload_sends_post_terminate_without_a_request() {
    let receiver = Receiver::start();
    let url = receiver.url();
    let server = TestServer::start_with(&["--hooks-url", &url, "--expire-after", "1s"], &[]);
    let id = id_of(&create_ok(&server, "idle.bin", 10).await);
    eventually(
        Duration::from_secs(20),
        "the expiry's post-terminate",
        || async { has_sequence(&receiver, &id, &["post-create", "post-terminate"]) },
    )
    .await;
    let events = dedup(&post_events_of(&receiver.events(), &id));
    assert_request(&events[0], "POST", "/uploads");
    let terminate = &events[1];
    assert_event_shape(terminate);
    assert_eq!(terminate["upload"]["removed"], "expired", "{terminate}");
    assert!(
        terminate["request"].is_null(),
        "no request caused it: {terminate}"
    );
    // The bytes go right after the record says removed (and so after the event is queued).
    eventually(Duration::from_secs(10), "the bytes to go", || async {
        !server.holds_bytes_of(&id)
    })
    .await;
}

#[tokio::test]
async fn multipart_and_tus_uploads_raise_the_same_events_with_their_requests() {
    let receiver = Receiver::start();
    let url = receiver.url();
    let server = TestServer::start_with(&["--hooks-url", &url, "--hooks-events", ALL_EVENTS], &[]);

    // A multipart create: asked, created and finished in one request.
    let bytes = data(70_000, 8);
    let part = reqwest::multipart::Part::bytes(bytes.clone())
        .file_name("photo.jpg")
        .mime_str("image/jpeg")
        .unwrap();
    let response = hook_client()
        .post(server.url("/uploads"))
        .header("X-Trace", "trace-1")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("multipart create");
    assert_eq!(response.status(), 201);
    let multipart = id_of(&response.json().await.unwrap());
    let pre_create = receiver
        .events()
        .into_iter()
        .find(|e| e["type"] == "pre-create")
        .expect("pre-create asked for a multipart create");
    assert_eq!(pre_create["upload"]["name"], "photo.jpg", "{pre_create}");
    assert_request(&pre_create, "POST", "/uploads");
    eventually(
        Duration::from_secs(10),
        "the multipart upload's events",
        || async {
            let seen = collapsed_types(&dedup(&post_events_of(&receiver.events(), &multipart)));
            seen == ["post-create", "post-finish"]
                || seen == ["post-create", "post-receive", "post-finish"]
        },
    )
    .await;
    let events = receiver.events();
    let pre_finish = events
        .iter()
        .find(|e| e["type"] == "pre-finish" && e["upload"]["id"] == multipart.as_str())
        .expect("pre-finish asked for the multipart upload");
    assert_request(pre_finish, "POST", "/uploads");
    for event in dedup(&post_events_of(&events, &multipart)) {
        assert_event_shape(&event);
        assert_request(&event, "POST", "/uploads");
    }
    let finish = dedup(&post_events_of(&events, &multipart)).pop().unwrap();
    assert_eq!(finish["upload"]["sha256"], sha_hex(&bytes), "{finish}");

    // A tus upload: created, appended to and terminated the tus way.
    let response = hook_client()
        .post(server.url("/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "6")
        .header("X-Trace", "trace-1")
        .header("Upload-Metadata", format!("filename {}", b64(b"t.bin")))
        .send()
        .await
        .expect("tus create");
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let tus = location.rsplit('/').next().unwrap().to_owned();
    let response = hook_client()
        .patch(server.url(&format!("/uploads/{tus}")))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("X-Trace", "trace-1")
        .body(b"tus-ok".to_vec())
        .send()
        .await
        .expect("tus patch");
    assert_eq!(response.status(), 204);
    let response = hook_client()
        .delete(server.url(&format!("/uploads/{tus}")))
        .header("Tus-Resumable", "1.0.0")
        .header("X-Trace", "trace-1")
        .send()
        .await
        .expect("tus delete");
    assert_eq!(response.status(), 204);
    eventually(
        Duration::from_secs(10),
        "the tus upload's events",
        || async {
            collapsed_types(&dedup(&post_events_of(&receiver.events(), &tus)))
                == [
                    "post-create",
                    "post-receive",
                    "post-finish",
                    "post-terminate",
                ]
                || collapsed_types(&dedup(&post_events_of(&receiver.events(), &tus)))
                    == ["post-create", "post-finish", "post-terminate"]
        },
    )
    .await;
    let events = dedup(&post_events_of(&receiver.events(), &tus));
    let path = format!("/uploads/{tus}");
    for event in &events {
        assert_event_shape(event);
        match event["type"].as_str().unwrap() {
            "post-create" => assert_request(event, "POST", "/uploads"),
            "post-receive" | "post-finish" => assert_request(event, "PATCH", &path),
            "post-terminate" => assert_request(event, "DELETE", &path),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(events.last().unwrap()["upload"]["removed"], "deleted");
}

#[tokio::test]
async fn a_post_event_is_given_up_after_hooks_retry_for() {
    let receiver = Receiver::start();
    receiver.down().await;
    let url = receiver.url();
    let args = [
        "--hooks-url",
        &url,
        "--hooks-events",
        "post-create",
        "--hooks-retry-for",
        "3s",
    ];
    let server = TestServer::start_with(&args, &[]);
    let lost = id_of(&create_ok(&server, "lost.bin", 1).await);
    eventually(
        Duration::from_secs(30),
        "the event to be given up",
        || async { hook_count(&server, "post-create", "failed").await == 1.0 },
    )
    .await;
    assert!(hook_count(&server, "post-create", "retried").await >= 1.0);
    eventually(Duration::from_secs(5), "an empty queue", || async {
        queue_oldest(&server).await == 0.0
    })
    .await;

    // Back up: a new event goes through; the given-up one is not sent any more.
    receiver.up().await;
    let kept = id_of(&create_ok(&server, "kept.bin", 1).await);
    eventually(Duration::from_secs(15), "the new post-create", || async {
        has_sequence(&receiver, &kept, &["post-create"])
    })
    .await;
    assert_eq!(hook_count(&server, "post-create", "delivered").await, 1.0);
    assert!(
        post_events_of(&receiver.events(), &lost).is_empty(),
        "a given-up event stays given up"
    );
}

on_each_store! {
    /// A pre-finish hook that cannot answer: the finishing PATCH gets 503 hook_unavailable,
    /// but its bytes are kept (all in, still uploading, never expiring); once the hook answers
    /// again, an empty PATCH at the end completes the upload, announced once.
    #[tokio::test]
    async fn a_pre_finish_hook_that_fails_keeps_the_bytes_and_is_asked_again(store: Store) {
        let receiver = Receiver::start();
        let failing = Arc::new(AtomicBool::new(true));
        let fail = failing.clone();
        receiver.respond_with(move |request: &Request| {
            if request.event()["type"] == "pre-finish" && fail.load(Ordering::SeqCst) {
                Reply::json(500, json!({}))
            } else {
                Reply::ok()
            }
        });
        let url = receiver.url();
        let args = ["--hooks-url", &url, "--hooks-events", "pre-finish,post-finish"];
        let server = TestServer::start_on_with(store, &args, &[]);
        let bytes = data(6 << 20, 61);
        let id = id_of(&create_ok(&server, "scan.bin", bytes.len() as u64).await);
        patch_ok(&server, &id, 0, bytes[..1 << 20].to_vec()).await;

        let response = patch_as(&server, &id, 1 << 20, bytes[1 << 20..].to_vec()).await;
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
        let body: Value = response.json().await.expect("error JSON");
        assert_eq!(body["error"], "hook_unavailable", "{body}");
        let held = status(&server, &id).await;
        assert_eq!(held["state"], "uploading", "{held}");
        assert_eq!(held["received"], bytes.len() as u64, "every byte kept: {held}");
        assert!(held["expires_at"].is_null(), "all in, it never expires: {held}");

        failing.store(false, Ordering::SeqCst);
        let done = patch_ok(&server, &id, bytes.len() as u64, Vec::new()).await;
        assert_eq!(done["state"], "complete", "{done}");
        assert_eq!(done["sha256"], sha_hex(&bytes), "{done}");
        assert_eq!(content(&server, &id).await, bytes);
        eventually(Duration::from_secs(10), "post-finish", || async {
            has_sequence(&receiver, &id, &["post-finish"])
        })
        .await;
    }
}

/// A form names its upload after the file part: pre-create is asked again with that name, so
/// a policy on names cannot be passed by, and a refusal then creates nothing. A form upload a
/// pre-finish hook refuses stays, failed and rejected, like any other.
#[tokio::test]
async fn a_form_is_judged_by_its_final_name_and_a_refused_one_stays_failed() {
    let receiver = Receiver::start();
    receiver.respond_with(|request: &Request| {
        let event = request.event();
        let name = event["upload"]["name"].as_str().unwrap_or_default();
        let refuse = match event["type"].as_str() {
            Some("pre-create") => name.ends_with(".exe"),
            Some("pre-finish") => name.starts_with("infected"),
            _ => false,
        };
        match refuse {
            true => Reply::json(200, json!({"reject": {"status": 403, "message": "no"}})),
            false => Reply::ok(),
        }
    });
    let url = receiver.url();
    let events = "pre-create,pre-finish,post-create,post-finish";
    let server = TestServer::start_with(&["--hooks-url", &url, "--hooks-events", events], &[]);
    let form = |file_name: &str, name: Option<&str>| {
        let part = reqwest::multipart::Part::bytes(data(5_000, 9)).file_name(file_name.to_owned());
        let form = reqwest::multipart::Form::new().part("file", part);
        match name {
            Some(name) => form.text("name", name.to_owned()),
            None => form,
        }
    };

    let renamed = hook_client()
        .post(server.url("/uploads"))
        .multipart(form("ok.bin", Some("evil.exe")))
        .send()
        .await
        .expect("form");
    assert_eq!(renamed.status(), 403);
    let body: Value = renamed.json().await.expect("error JSON");
    assert_eq!(body["error"], "rejected", "{body}");
    let asked: Vec<String> = receiver
        .events()
        .iter()
        .filter(|e| e["type"] == "pre-create")
        .map(|e| e["upload"]["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        asked,
        ["ok.bin", "evil.exe"],
        "asked again with the form's name"
    );
    let refused_id = receiver.events()[0]["upload"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let gone = hook_client()
        .get(server.url(&format!("/uploads/{refused_id}")))
        .send()
        .await
        .expect("status");
    assert_eq!(gone.status(), 404, "a refused create leaves nothing");
    assert!(!server.holds_bytes_of(&refused_id));

    let infected = hook_client()
        .post(server.url("/uploads"))
        .multipart(form("infected.bin", None))
        .send()
        .await
        .expect("form");
    assert_eq!(infected.status(), 403);
    let body: Value = infected.json().await.expect("error JSON");
    assert_eq!(body["error"], "rejected", "{body}");
    let finish = receiver
        .events()
        .into_iter()
        .find(|e| e["type"] == "pre-finish")
        .expect("pre-finish asked");
    let id = finish["upload"]["id"].as_str().expect("id").to_owned();
    let kept = status(&server, &id).await;
    assert_eq!(kept["state"], "failed", "{kept}");
    assert_eq!(kept["failure"], "rejected", "{kept}");
    assert_eq!(kept["received"], 5_000, "{kept}");
    eventually(Duration::from_secs(10), "its post-create", || async {
        has_sequence(&receiver, &id, &["post-create"])
    })
    .await;
}

/// Parts of an upload (tus concatenation, the native `partial`) are no files of their own:
/// only the upload made of them is asked `pre-finish` and announced by `post-finish`, with
/// the whole file's digest; the parts are still created and receive bytes as usual.
#[tokio::test]
async fn only_the_upload_made_of_parts_is_finished_for_hooks() {
    let receiver = Receiver::start();
    let url = receiver.url();
    let args = ["--hooks-url", &url, "--hooks-events", ALL_EVENTS];
    let server = TestServer::start_with(&args, &[]);
    let pieces = [data(7, 31), data(5, 32)];
    let mut parts = Vec::new();
    for piece in &pieces {
        let created = try_create(
            &server,
            json!({"name": "part", "size": piece.len(), "partial": true}),
        )
        .await;
        assert_eq!(created.status(), 201);
        let id = id_of(&created.json().await.expect("status JSON"));
        let done = patch_ok(&server, &id, 0, piece.clone()).await;
        assert_eq!(done["state"], "complete", "{done}");
        assert_eq!(done["partial"], true, "{done}");
        parts.push(id);
    }
    let created = try_create(&server, json!({"name": "whole.bin", "parts": parts})).await;
    assert_eq!(created.status(), 201);
    let whole = id_of(&created.json().await.expect("status JSON"));
    let digest = sha_hex(&pieces.concat());

    // Every event the three uploads raised delivered: their post-creates, the whole's
    // post-finish, and nothing left queued that could still be a part's post-finish.
    eventually(Duration::from_secs(20), "every event delivered", || async {
        has_sequence(&receiver, &whole, &["post-create", "post-finish"])
            && parts
                .iter()
                .all(|part| has_sequence(&receiver, part, &["post-create"]))
            && queue_oldest(&server).await == 0.0
    })
    .await;
    assert_eq!(hook_count(&server, "post-finish", "queued").await, 1.0);
    let events = receiver.events();
    let finish = dedup(&post_events_of(&events, &whole))
        .pop()
        .expect("post-finish");
    assert_eq!(finish["upload"]["sha256"], digest, "{finish}");
    assert_eq!(finish["upload"]["size"], 12, "{finish}");
    let asked: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "pre-finish")
        .collect();
    assert_eq!(asked.len(), 1, "pre-finish only for the whole: {asked:?}");
    assert_eq!(asked[0]["upload"]["id"], whole.as_str());
    for part in &parts {
        let of_part = types(&dedup(&post_events_of(&events, part)));
        assert!(
            !of_part.iter().any(|t| t == "post-finish"),
            "a part is never finished for hooks: {of_part:?}"
        );
        assert_eq!(of_part.first().map(String::as_str), Some("post-create"));
    }
}

use std::time::Duration;

use crate::garage::Garage;
use crate::support::*;

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

async fn metrics(server: &TestServer) -> String {
    let response = client().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_count_uploads_bytes_appends_watchers_and_disk() {
    let server = TestServer::start();
    let done = create(&server, "a.bin", 1000).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let gone = create(&server, "b.bin", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(patch(&server, &done, 0, vec![1; 400]).await.status(), 200);
    assert_eq!(patch(&server, &done, 400, vec![2; 600]).await.status(), 200);
    assert_eq!(patch(&server, &gone, 0, vec![3; 5]).await.status(), 200);
    assert_eq!(
        client()
            .delete(server.url(&format!("/uploads/{gone}")))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let _sse = client()
        .get(server.url(&format!("/uploads/{gone}x/events")))
        .send()
        .await
        .unwrap();
    let other = create(&server, "c.bin", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sse = client()
        .get(server.url(&format!("/uploads/{other}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let text = metrics(&server).await;
    assert_eq!(value(&text, "resumable_uploads_created_total"), 3.0);
    assert_eq!(value(&text, "resumable_uploads_completed_total"), 1.0);
    assert_eq!(value(&text, "resumable_uploads_deleted_total"), 1.0);
    assert_eq!(value(&text, "resumable_uploads_failed_total"), 0.0);
    assert_eq!(value(&text, "resumable_bytes_received_total"), 1005.0);
    assert_eq!(value(&text, "resumable_append_duration_seconds_count"), 3.0);
    assert_eq!(
        value(
            &text,
            "resumable_append_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        3.0
    );
    assert_eq!(value(&text, "resumable_appends_in_flight"), 0.0);
    assert_eq!(value(&text, "resumable_watchers{channel=\"sse\"}"), 1.0);
    assert!(value(&text, "resumable_disk_free_bytes") > 0.0);
    drop(sse);

    let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let url = format!("ws://127.0.0.1:{}/uploads/{other}/ws", server.port);
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the WebSocket watcher to be counted",
        || async {
            value(
                &metrics(&server).await,
                "resumable_watchers{channel=\"websocket\"}",
            ) == 1.0
        },
    )
    .await;
    drop(ws);
    eventually(
        Duration::from_secs(5),
        "the WebSocket watcher to be counted out",
        || async {
            value(
                &metrics(&server).await,
                "resumable_watchers{channel=\"websocket\"}",
            ) == 0.0
        },
    )
    .await;
}

/// The S3 requests /metrics names, as `resumable_store_requests_total` labels them.
const STORE_OPS: [&str; 12] = [
    "create_multipart",
    "put_part",
    "copy_part",
    "put_tail",
    "put_object",
    "complete_multipart",
    "abort_multipart",
    "get_tail",
    "get_object",
    "head",
    "delete",
    "list",
];

fn store_requests(text: &str, op: &str, outcome: &str) -> f64 {
    value(
        text,
        &format!("resumable_store_requests_total{{operation=\"{op}\",outcome=\"{outcome}\"}}"),
    )
}

/// Requests with `outcome`, over every operation.
fn store_requests_with(text: &str, outcome: &str) -> f64 {
    STORE_OPS
        .iter()
        .map(|op| store_requests(text, op, outcome))
        .sum()
}

fn store_durations_counted(text: &str, op: &str) -> f64 {
    value(
        text,
        &format!("resumable_store_request_duration_seconds_count{{operation=\"{op}\"}}"),
    )
}

/// Every request, whatever its outcome, was timed once.
fn assert_every_request_timed(text: &str) {
    for op in STORE_OPS {
        let requests: f64 = ["ok", "not_found", "unavailable", "error"]
            .iter()
            .map(|outcome| store_requests(text, op, outcome))
            .sum();
        assert_eq!(store_durations_counted(text, op), requests, "{op}");
    }
}

#[tokio::test]
async fn metrics_count_the_object_stores_requests_bytes_and_failures() {
    const MIB: usize = 1 << 20;
    let mut garage = Garage::start();
    let mut args = garage.server_args("metrics");
    args.extend(["--s3-part-size".to_owned(), "5M".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let envs = garage.server_envs();
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = TestServer::start_with(&args, &envs);

    let before = metrics(&server).await;
    assert_eq!(value(&before, "resumable_store_bytes_written_total"), 0.0);
    assert_eq!(store_requests(&before, "put_part", "ok"), 0.0);

    // One body of 12 MiB in 5M parts: two whole parts while it streams, the rest a tail that
    // becomes the last part when the upload completes.
    let size = 12 * MIB;
    let bytes = data(size, 501);
    let id = create(&server, "s3.bin", size as u64).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let response = patch(&server, &id, 0, bytes.clone()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        json(&response.text().await.expect("answer"))["state"],
        "complete"
    );
    assert!(content(&server, &id).await == bytes, "the download differs");

    let text = metrics(&server).await;
    assert_eq!(store_requests(&text, "create_multipart", "ok"), 1.0);
    assert!(store_requests(&text, "put_part", "ok") >= 2.0, "{text}");
    assert_eq!(store_requests(&text, "complete_multipart", "ok"), 1.0);
    assert!(store_requests(&text, "get_object", "ok") >= 1.0, "{text}");
    let written = value(&text, "resumable_store_bytes_written_total");
    assert!(
        written >= size as f64 && written < (size + 5 * MIB) as f64,
        "the store accepted {written} bytes for a {size}-byte upload"
    );
    assert_eq!(store_requests_with(&text, "unavailable"), 0.0, "{text}");
    assert_eq!(store_requests_with(&text, "error"), 0.0, "{text}");
    assert!(
        value(
            &text,
            "resumable_store_request_duration_seconds_sum{operation=\"put_part\"}"
        ) > 0.0
    );
    assert_every_request_timed(&text);

    // With the store gone, a body that ends short of a part cannot be stored as a tail.
    let short = create(&server, "short.bin", 4096).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    garage.stop();
    let refused = patch(&server, &short, 0, vec![7; 1024]).await;
    assert_eq!(refused.status(), 503);
    let after = metrics(&server).await;
    assert!(store_requests_with(&after, "unavailable") >= 1.0, "{after}");
    assert_eq!(
        store_requests(&after, "put_tail", "ok"),
        store_requests(&text, "put_tail", "ok"),
        "no tail was stored"
    );
    assert_eq!(
        value(&after, "resumable_store_bytes_written_total"),
        written,
        "nothing more was written"
    );
    assert_every_request_timed(&after);
}

/// Many instances behind one name: each says which it is.
#[tokio::test]
async fn metrics_name_the_instance() {
    let server = TestServer::start_with(&["--instance-name", "upload-7"], &[]);
    let name = "resumable_instance_info{instance=\"upload-7\"}";
    assert_eq!(metric(&server, name).await, 1.0);
}

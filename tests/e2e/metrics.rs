use std::time::Duration;

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

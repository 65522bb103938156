use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

fn id_of(status: &serde_json::Value) -> String {
    status["id"].as_str().unwrap().to_owned()
}

async fn websocket(
    server: &TestServer,
    id: &str,
    origin: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://127.0.0.1:{}/uploads/{id}/ws", server.port)
        .into_client_request()
        .unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    tokio_tungstenite::client_async(request, stream)
        .await
        .map(|(ws, _)| ws)
}

/// Every status message until the server closes; returns them and the close code.
async fn drain(ws: &mut Ws) -> (Vec<serde_json::Value>, Option<CloseCode>) {
    let mut statuses = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a message or the close within 20 s");
        match message {
            Some(Ok(Message::Text(text))) => statuses.push(json(&text)),
            Some(Ok(Message::Close(frame))) => return (statuses, frame.map(|f| f.code)),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("WebSocket error: {e}"),
            None => return (statuses, None),
        }
    }
}

fn assert_monotone(statuses: &[serde_json::Value]) {
    let counts: Vec<u64> = statuses
        .iter()
        .map(|s| s["received"].as_u64().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "not monotone: {counts:?}"
    );
}

async fn upload_in_pieces(
    server: &TestServer,
    id: &str,
    bytes: &[u8],
    piece: usize,
    pause: Duration,
) {
    for (n, chunk) in bytes.chunks(piece).enumerate() {
        let response = patch(server, id, (n * piece) as u64, chunk.to_vec()).await;
        assert_eq!(response.status(), 200);
        tokio::time::sleep(pause).await;
    }
}

on_each_store! {
    #[tokio::test]
    async fn long_poll_answers_at_once_when_received_differs_or_is_absent(store: Store) {
        let server = TestServer::start_on(store);
        let id = id_of(&create(&server, "f.bin", 100).await);
        assert_eq!(patch(&server, &id, 0, vec![1; 10]).await.status(), 200);
        for query in ["?received=0&timeout=30", "", "?timeout=30"] {
            let started = Instant::now();
            let response = client()
                .get(server.url(&format!("/uploads/{id}/poll{query}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{query} took {:?}",
                started.elapsed()
            );
            assert_eq!(
                response.json::<serde_json::Value>().await.unwrap()["received"],
                10
            );
        }
    }
}

#[tokio::test]
async fn long_poll_holds_until_the_timeout_when_nothing_happens() {
    let server = TestServer::start();
    let id = id_of(&create(&server, "f.bin", 100).await);
    let started = Instant::now();
    let response = client()
        .get(server.url(&format!("/uploads/{id}/poll?received=0&timeout=2")))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(response.status(), 200);
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["received"],
        0
    );
    for bad in [
        "received=x",
        "received=-1",
        "received=%205",
        "received=1e3",
        "timeout=1.5",
        "timeout=-3",
    ] {
        let response = client()
            .get(server.url(&format!("/uploads/{id}/poll?{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }
}

on_each_store! {
    #[tokio::test]
    async fn long_poll_returns_right_after_an_append(store: Store) {
        let server = TestServer::start_on(store);
        let id = id_of(&create(&server, "f.bin", 100).await);
        let poll = {
            let url = server.url(&format!("/uploads/{id}/poll?received=0&timeout=30"));
            tokio::spawn(async move {
                let response = client().get(url).send().await.unwrap();
                (
                    Instant::now(),
                    response.json::<serde_json::Value>().await.unwrap(),
                )
            })
        };
        wait_watchers(&server, "poll", 1).await;
        assert!(
            !poll.is_finished(),
            "the poll answered before anything changed"
        );
        assert_eq!(patch(&server, &id, 0, vec![1; 40]).await.status(), 200);
        let appended = Instant::now();
        let (answered, status) = poll.await.unwrap();
        assert_eq!(status["received"], 40);
        assert!(answered.saturating_duration_since(appended) < Duration::from_millis(500));
    }
}

on_each_store! {
    #[tokio::test]
    async fn server_sent_events_follow_the_upload_and_end_with_complete(store: Store) {
        let server = TestServer::start_on(store);
        let bytes = data(400_000, 21);
        let id = id_of(&create(&server, "f.bin", bytes.len() as u64).await);
        let response = client()
            .get(server.url(&format!("/uploads/{id}/events")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let reader = tokio::spawn(async move {
            let mut text = String::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            }
            text
        });
        upload_in_pieces(&server, &id, &bytes, 50_000, Duration::from_millis(60)).await;
        let text = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the stream ends after the final state")
            .unwrap();
        let events: Vec<serde_json::Value> = text
            .split("\n\n")
            .filter(|block| block.starts_with("event: progress"))
            .map(|block| {
                json(
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .unwrap(),
                )
            })
            .collect();
        assert!(events.len() >= 3, "{text}");
        assert_eq!(events[0]["received"], 0);
        assert_monotone(&events);
        let last = events.last().unwrap();
        assert_eq!(last["state"], "complete");
        assert_eq!(last["sha256"], sha_hex(&bytes));
    }
}

on_each_store! {
    #[tokio::test]
    async fn websocket_sends_the_status_at_once_then_changes_then_closes_1000(store: Store) {
        let server = TestServer::start_on(store);
        let bytes = data(300_000, 22);
        let id = id_of(&create(&server, "f.bin", bytes.len() as u64).await);
        let mut ws = websocket(&server, &id, None).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let first = json(first.to_text().unwrap());
        assert_eq!(first["id"], id.as_str());
        assert_eq!(first["received"], 0);
        upload_in_pieces(&server, &id, &bytes, 30_000, Duration::from_millis(120)).await;
        let (statuses, code) = drain(&mut ws).await;
        assert!(statuses.len() >= 3, "{statuses:?}");
        assert_monotone(&statuses);
        assert_eq!(statuses.last().unwrap()["state"], "complete");
        assert_eq!(code, Some(CloseCode::Normal));
    }
}

// The hub's coalescing, not the store's: on the local directory only, where 100 appends land
// faster than a watcher's messages are written (an S3 tail per append is slower than that).
#[tokio::test]
async fn a_watcher_that_stops_reading_gets_the_latest_state_not_a_backlog() {
    let server = TestServer::start();
    let bytes = data(200_000, 23);
    let id = id_of(&create(&server, "f.bin", bytes.len() as u64).await);
    let mut ws = websocket(&server, &id, None).await.unwrap();
    // Not reading while 100 appends land as fast as they can.
    upload_in_pieces(&server, &id, &bytes, 2_000, Duration::ZERO).await;
    // Still not reading until the server has sent its last message and closed the socket.
    wait_watchers(&server, "websocket", 0).await;
    let (statuses, code) = drain(&mut ws).await;
    assert!(
        statuses.len() < 40,
        "{} messages for 100 appends: a backlog",
        statuses.len()
    );
    assert_monotone(&statuses);
    assert_eq!(statuses.last().unwrap()["received"], 200_000);
    assert_eq!(statuses.last().unwrap()["state"], "complete");
    assert_eq!(code, Some(CloseCode::Normal));
}

#[tokio::test]
async fn a_foreign_origin_is_refused_before_the_upgrade() {
    let server = TestServer::start_with(&["--allowed-origin", "https://app.example"], &[]);
    let id = id_of(&create(&server, "f.bin", 10).await);
    match websocket(&server, &id, Some("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected 403, got {:?}", other.map(|_| "an open socket")),
    }
    let own = format!("http://127.0.0.1:{}", server.port);
    assert!(websocket(&server, &id, Some(&own)).await.is_ok());
    assert!(websocket(&server, &id, Some("https://app.example"))
        .await
        .is_ok());
    assert!(websocket(&server, &id, None).await.is_ok());
    let unknown = uuid::Uuid::new_v4().to_string();
    match websocket(&server, &unknown, None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected 404, got {:?}", other.map(|_| "an open socket")),
    }
}

on_each_store! {
    #[tokio::test]
    async fn delete_ends_every_watcher_with_the_final_state(store: Store) {
        let server = TestServer::start_on(store);
        let id = id_of(&create(&server, "f.bin", 100).await);
        let mut ws = websocket(&server, &id, None).await.unwrap();
        let sse = client()
            .get(server.url(&format!("/uploads/{id}/events")))
            .send()
            .await
            .unwrap();
        let poll = {
            let url = server.url(&format!("/uploads/{id}/poll?received=0&timeout=30"));
            tokio::spawn(async move {
                client()
                    .get(url)
                    .send()
                    .await
                    .unwrap()
                    .json::<serde_json::Value>()
                    .await
                    .unwrap()
            })
        };
        wait_watchers(&server, "websocket", 1).await;
        wait_watchers(&server, "sse", 1).await;
        wait_watchers(&server, "poll", 1).await;
        let response = client()
            .delete(server.url(&format!("/uploads/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        let (statuses, code) = drain(&mut ws).await;
        assert_eq!(statuses.last().unwrap()["removed"], "deleted");
        assert_eq!(code, Some(CloseCode::Normal));
        let text = tokio::time::timeout(Duration::from_secs(5), sse.text())
            .await
            .expect("SSE ends")
            .unwrap();
        assert!(text.contains("\"removed\":\"deleted\""), "{text}");
        let polled = tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .expect("poll answers")
            .unwrap();
        assert_eq!(polled["removed"], "deleted");
    }
}

#[tokio::test]
async fn watcher_caps_answer_429_per_upload_and_503_in_total() {
    let server = TestServer::start_with(
        &["--max-watchers-per-upload", "2", "--max-watchers", "3"],
        &[],
    );
    let a = id_of(&create(&server, "a.bin", 10).await);
    let b = id_of(&create(&server, "b.bin", 10).await);
    let _w1 = websocket(&server, &a, None).await.unwrap();
    let _w2 = websocket(&server, &a, None).await.unwrap();
    let third = client()
        .get(server.url(&format!("/uploads/{a}/poll?received=0&timeout=1")))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
    assert_eq!(
        third.json::<serde_json::Value>().await.unwrap()["error"],
        "too_many_watchers"
    );
    let _w3 = websocket(&server, &b, None).await.unwrap();
    let fourth = client()
        .get(server.url(&format!("/uploads/{b}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(fourth.status(), 503);
    drop(_w1);
    // The slot frees once the server notices the socket is gone.
    eventually(Duration::from_secs(5), "a freed watcher slot", || async {
        client()
            .get(server.url(&format!("/uploads/{a}/poll?received=1")))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
}

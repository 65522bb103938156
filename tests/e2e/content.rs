use serde_json::json;

use crate::support::*;

async fn complete_upload(
    server: &TestServer,
    name: &str,
    bytes: &[u8],
    content_type: Option<&str>,
) -> String {
    let status = create_json(
        server,
        json!({"name": name, "size": bytes.len(), "content_type": content_type}),
    )
    .await;
    let id = status["id"].as_str().unwrap().to_owned();
    assert_eq!(patch(server, &id, 0, bytes.to_vec()).await.status(), 200);
    id
}

on_each_store! {
    #[tokio::test]
    async fn content_is_served_only_when_complete(store: Store) {
        let server = TestServer::start_on(store);
        let status = create(&server, "f.bin", 10).await;
        let id = status["id"].as_str().unwrap();
        let response = client()
            .get(server.url(&format!("/uploads/{id}/content")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 409);
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap()["error"],
            "not_complete"
        );
    }
}

on_each_store! {
    #[tokio::test]
    async fn content_has_its_type_name_etag_and_length(store: Store) {
        let server = TestServer::start_on(store);
        let bytes = data(70_000, 5);
        let id = complete_upload(&server, "fête 🎉 \"q\".txt", &bytes, Some("text/plain")).await;
        let response = client()
            .get(server.url(&format!("/uploads/{id}/content")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], "text/plain");
        assert_eq!(
            headers["etag"].to_str().unwrap(),
            format!("\"{}\"", sha_hex(&bytes))
        );
        assert_eq!(headers["content-length"], "70000");
        assert_eq!(headers["accept-ranges"], "bytes");
        let disposition = headers["content-disposition"].to_str().unwrap();
        assert!(disposition.starts_with("attachment"), "{disposition}");
        assert!(disposition.contains("filename=\""), "{disposition}");
        assert!(
            disposition.contains("filename*=UTF-8''f%C3%AAte%20%F0%9F%8E%89"),
            "{disposition}"
        );
        assert_eq!(response.bytes().await.unwrap().as_ref(), &bytes[..]);

        let other = complete_upload(&server, "plain.bin", b"abc", None).await;
        let response = client()
            .get(server.url(&format!("/uploads/{other}/content")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["content-type"],
            "application/octet-stream"
        );

        let cached = client()
            .get(server.url(&format!("/uploads/{id}/content")))
            .header("If-None-Match", format!("\"{}\"", sha_hex(&bytes)))
            .send()
            .await
            .unwrap();
        assert_eq!(cached.status(), 304);
    }
}

on_each_store! {
    #[tokio::test]
    async fn ranges_answer_206_and_unsatisfiable_ones_416(store: Store) {
        let server = TestServer::start_on(store);
        let bytes = data(1000, 6);
        let id = complete_upload(&server, "r.bin", &bytes, None).await;
        let get = |range: &'static str| {
            let url = server.url(&format!("/uploads/{id}/content"));
            async move {
                client()
                    .get(url)
                    .header("Range", range)
                    .send()
                    .await
                    .unwrap()
            }
        };
        for (range, start, end) in [
            ("bytes=0-9", 0, 9),
            ("bytes=-5", 995, 999),
            ("bytes=10-", 10, 999),
            ("bytes=990-5000", 990, 999),
        ] {
            let response = get(range).await;
            assert_eq!(response.status(), 206, "{range}");
            assert_eq!(
                response.headers()["content-range"].to_str().unwrap(),
                format!("bytes {start}-{end}/1000"),
                "{range}"
            );
            assert_eq!(
                response.bytes().await.unwrap().as_ref(),
                &bytes[start..=end],
                "{range}"
            );
        }
        let response = get("bytes=999999-").await;
        assert_eq!(response.status(), 416);
        assert_eq!(response.headers()["content-range"], "bytes */1000");
        let response = get("bytes=nonsense").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.unwrap().len(), 1000);
    }
}

#[tokio::test]
async fn healthz_answers_200() {
    let server = TestServer::start();
    let response = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_page_and_its_assets_are_served() {
    let server = TestServer::start();
    let page = client().get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("enctype=\"multipart/form-data\""));
    let css = client()
        .get(server.url("/static/app.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
    let missing = client()
        .get(server.url("/static/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

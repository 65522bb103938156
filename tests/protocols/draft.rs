use crate::support::*;
use crate::{client_with, header};

fn draft() -> reqwest::Client {
    client_with("upload-draft-interop-version", "6")
}

fn draft8() -> reqwest::Client {
    client_with("upload-draft-interop-version", "8")
}

on_each_store! {
    #[tokio::test]
    async fn the_draft_creates_reports_and_appends_with_upload_complete(store: Store) {
        let server = TestServer::start_on(store);
        let bytes = data(9000, 61);
        let created = draft()
            .post(server.url("/uploads"))
            .header("Upload-Complete", "?0")
            .header("Content-Type", "application/partial-upload")
            .body(bytes[..4000].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        assert_eq!(header(&created, "upload-offset"), "4000");
        assert_eq!(header(&created, "upload-complete"), "?0");
        let url = header(&created, "location");
        let head = draft().head(server.url(&url)).send().await.unwrap();
        assert_eq!(head.status(), 204);
        assert_eq!(header(&head, "upload-offset"), "4000");
        assert_eq!(header(&head, "upload-complete"), "?0");
        assert_eq!(header(&head, "cache-control"), "no-store");
        let mismatch = draft()
            .patch(server.url(&url))
            .header("Upload-Offset", "10")
            .header("Upload-Complete", "?1")
            .header("Content-Type", "application/partial-upload")
            .body(bytes[4000..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(mismatch.status(), 409);
        assert_eq!(header(&mismatch, "upload-offset"), "4000");
        let last = draft()
            .patch(server.url(&url))
            .header("Upload-Offset", "4000")
            .header("Upload-Complete", "?1")
            .header("Content-Type", "application/partial-upload")
            .body(bytes[4000..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(last.status(), 204);
        assert_eq!(header(&last, "upload-complete"), "?1");
        assert_eq!(header(&last, "upload-offset"), "9000");
        let id = url.rsplit('/').next().unwrap();
        assert_eq!(status(&server, id).await["state"], "complete");
        assert_eq!(content(&server, id).await, bytes);
        assert_eq!(
            draft()
                .delete(server.url(&url))
                .send()
                .await
                .unwrap()
                .status(),
            204
        );
    }
}

on_each_store! {
    #[tokio::test]
    async fn a_whole_upload_in_one_draft_request_is_complete(store: Store) {
        let server = TestServer::start_on(store);
        let bytes = data(3000, 62);
        let created = draft()
            .post(server.url("/uploads"))
            .header("Upload-Complete", "?1")
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        assert_eq!(header(&created, "upload-complete"), "?1");
        let id = header(&created, "location")
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(status(&server, &id).await["sha256"], sha_hex(&bytes));
        let unknown_version = client()
            .post(server.url("/uploads"))
            .header("Upload-Draft-Interop-Version", "999")
            .header("Upload-Complete", "?1")
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(unknown_version.status(), 400);
    }
}

on_each_store! {
    #[tokio::test]
    async fn interop_version_8_announces_limits_and_requires_partial_upload(store: Store) {
        let server = TestServer::start_on_with(store, &["--max-upload-size", "1M"], &[]);
        let options = draft8()
            .request(reqwest::Method::OPTIONS, server.url("/uploads"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            header(&options, "accept-patch"),
            "application/partial-upload"
        );
        assert_eq!(header(&options, "upload-limit"), "max-size=1048576");

        let bytes = data(5000, 63);
        let created = draft8()
            .post(server.url("/uploads"))
            .header("Upload-Complete", "?0")
            .header("Upload-Length", "5000")
            .body(bytes[..1000].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let limit = header(&created, "upload-limit");
        assert!(
            limit.contains("max-size=1048576") && limit.contains("max-age="),
            "{limit}"
        );
        let url = header(&created, "location");
        let head = draft8().head(server.url(&url)).send().await.unwrap();
        assert_eq!(head.status(), 204);
        assert_eq!(header(&head, "upload-length"), "5000");
        assert_eq!(header(&head, "upload-offset"), "1000");
        assert_eq!(header(&head, "upload-complete"), "?0");
        assert!(header(&head, "upload-limit").contains("max-size=1048576"));
        let untyped = draft8()
            .patch(server.url(&url))
            .header("Upload-Offset", "1000")
            .header("Upload-Complete", "?1")
            .body(bytes[1000..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(untyped.status(), 415);
        let last = draft8()
            .patch(server.url(&url))
            .header("Upload-Offset", "1000")
            .header("Upload-Complete", "?1")
            .header("Content-Type", "application/partial-upload")
            .body(bytes[1000..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(last.status(), 204);
        assert_eq!(header(&last, "upload-complete"), "?1");
        assert_eq!(
            content(&server, url.rsplit('/').next().unwrap()).await,
            bytes
        );

        let too_big = draft8()
            .post(server.url("/uploads"))
            .header("Upload-Complete", "?0")
            .header("Upload-Length", "2000000")
            .send()
            .await
            .unwrap();
        assert_eq!(too_big.status(), 413);
        assert_eq!(header(&too_big, "upload-limit"), "max-size=1048576");
    }
}

//! tus concatenation (`Upload-Concat: partial` / `final;…`, with concatenation-unfinished) and
//! its native twin (`"partial": true` / `"parts": [...]`), as docs/API.md describes them: raw
//! requests, every answer of the extension, on both stores where bytes are involved.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::*;
use crate::{header, tus, tus_patch};

async fn tus_post(
    server: &TestServer,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = tus().post(server.url("/uploads"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if !body.is_empty() {
        request = request.header("Content-Type", "application/offset+octet-stream");
    }
    request.body(body).send().await.unwrap()
}

async fn tus_patch_with(
    server: &TestServer,
    url: &str,
    offset: u64,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = tus()
        .patch(server.url(url))
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/offset+octet-stream");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body).send().await.unwrap()
}

async fn tus_head(server: &TestServer, url: &str) -> reqwest::Response {
    tus().head(server.url(url)).send().await.unwrap()
}

/// A tus partial upload of `length` bytes (`None`: deferred), with `first` sent along with the
/// creation; returns its `Location` (`/uploads/<id>`).
async fn partial(server: &TestServer, length: Option<u64>, first: &[u8]) -> String {
    let length = length.map(|l| l.to_string());
    let mut headers = vec![("Upload-Concat", "partial")];
    match &length {
        Some(length) => headers.push(("Upload-Length", length)),
        None => headers.push(("Upload-Defer-Length", "1")),
    }
    let created = tus_post(server, &headers, first.to_vec()).await;
    assert_eq!(created.status(), 201, "a partial upload");
    assert_eq!(header(&created, "upload-offset"), first.len().to_string());
    header(&created, "location")
}

/// `POST /uploads` with `Upload-Concat: final;<urls>` (and more headers).
async fn post_final(
    server: &TestServer,
    urls: &[&str],
    more: &[(&str, &str)],
) -> reqwest::Response {
    let concat = format!("final;{}", urls.join(" "));
    let mut headers = vec![("Upload-Concat", concat.as_str())];
    headers.extend_from_slice(more);
    tus_post(server, &headers, Vec::new()).await
}

/// The id at the end of an upload URL.
fn id_in(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

/// The `error` code of a JSON error answer.
async fn error_of(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("a JSON error body");
    body["error"].as_str().unwrap_or_default().to_owned()
}

/// `GET /uploads/{id}/content` read as a stream: its length and SHA-256 (hex), without holding
/// the file in memory.
pub async fn content_digest(server: &TestServer, id: &str) -> (u64, String) {
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
        .get(server.url(&format!("/uploads/{id}/content")))
        .send()
        .await
        .expect("content");
    assert_eq!(response.status(), 200, "content of {id}");
    let mut hasher = Sha256::new();
    let mut length = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("content bytes");
        length += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (length, hex_of(&hasher.finalize()))
}

pub fn hex_of(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn options_lists_concatenation_and_concatenation_unfinished() {
    let server = TestServer::start();
    let response = tus()
        .request(reqwest::Method::OPTIONS, server.url("/uploads"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let extensions = header(&response, "tus-extension");
    for extension in [
        "concatenation",
        "concatenation-unfinished",
        "creation",
        "termination",
    ] {
        assert!(
            extensions.split(',').any(|e| e.trim() == extension),
            "{extension} in {extensions}"
        );
    }
}

on_each_store! {
    #[tokio::test]
    async fn a_final_of_finished_partials_is_their_concatenation(store: Store) {
        let server = TestServer::start_on(store);
        // Across the bucket's 5M parts on S3: one partial larger than a part, one deferred,
        // one small.
        let a = data(6_000_123, 301);
        let b = data(3_100_000, 302);
        let c = data(4_321, 303);
        let whole = [a.as_slice(), &b, &c].concat();

        // A: Upload-Length, its first bytes with the creation, the rest by PATCH.
        let a_url = partial(&server, Some(a.len() as u64), &a[..1_000_000]).await;
        let head = tus_head(&server, &a_url).await;
        assert_eq!(head.status(), 200);
        assert_eq!(header(&head, "upload-concat"), "partial");
        assert_eq!(header(&head, "upload-offset"), "1000000");
        assert_eq!(header(&head, "upload-length"), a.len().to_string());
        assert_eq!(status(&server, &id_in(&a_url)).await["partial"], true);
        let done = tus_patch(&server, &a_url, 1_000_000, a[1_000_000..].to_vec()).await;
        assert_eq!(done.status(), 204);
        assert_eq!(header(&done, "upload-offset"), a.len().to_string());

        // B: a deferred length, set by its last PATCH.
        let b_url = partial(&server, None, &[]).await;
        let head = tus_head(&server, &b_url).await;
        assert_eq!(header(&head, "upload-concat"), "partial");
        assert_eq!(header(&head, "upload-defer-length"), "1");
        assert!(head.headers().get("upload-length").is_none());
        assert_eq!(
            tus_patch(&server, &b_url, 0, b[..2_000_000].to_vec()).await.status(),
            204
        );
        let length = b.len().to_string();
        let last = tus_patch_with(
            &server,
            &b_url,
            2_000_000,
            &[("Upload-Length", &length)],
            b[2_000_000..].to_vec(),
        )
        .await;
        assert_eq!(last.status(), 204);
        assert_eq!(header(&last, "upload-offset"), length);

        // C: the whole partial in its creation.
        let c_url = partial(&server, Some(c.len() as u64), &c).await;

        // Every partial is complete, and none may be downloaded on its own, nor has it raised
        // a finished file.
        for url in [&a_url, &b_url, &c_url] {
            let part = status(&server, &id_in(url)).await;
            assert_eq!(part["partial"], true, "{part}");
            assert_eq!(part["state"], "complete", "{part}");
            let download = client()
                .get(server.url(&format!("{url}/content")))
                .send()
                .await
                .unwrap();
            assert_eq!(download.status(), 409, "GET {url}/content");
            assert_eq!(error_of(download).await, "partial_upload");
        }

        // The final: an absolute URL of this host and relative ones, mixed.
        let metadata = format!("filename {}", b64(b"joined.bin"));
        let a_absolute = server.url(&a_url);
        let created = post_final(
            &server,
            &[&a_absolute, &b_url, &c_url],
            &[("Upload-Metadata", &metadata)],
        )
        .await;
        assert_eq!(created.status(), 201);
        assert_eq!(header(&created, "tus-resumable"), "1.0.0");
        let final_url = header(&created, "location");
        let final_id = id_in(&final_url);
        let status = status(&server, &final_id).await;
        assert_eq!(status["state"], "complete", "{status}");
        assert_eq!(status["name"], "joined.bin");
        assert_eq!(status["size"], whole.len() as u64);
        assert_eq!(status["received"], whole.len() as u64);
        assert_eq!(status["sha256"], sha_hex(&whole));
        assert_eq!(
            status["parts"],
            json!([id_in(&a_url), id_in(&b_url), id_in(&c_url)])
        );
        assert_eq!(content(&server, &final_id).await, whole);

        let head = tus_head(&server, &final_url).await;
        assert_eq!(head.status(), 200);
        assert_eq!(
            header(&head, "upload-concat"),
            format!("final;{a_url} {b_url} {c_url}")
        );
        assert_eq!(header(&head, "upload-length"), whole.len().to_string());
        assert_eq!(header(&head, "upload-offset"), whole.len().to_string());

        // Assembled: the partials stay a while, complete, for a client that looks at them
        // again (tus-js-client retrying its final), and the same final answers them.
        for url in [&a_url, &b_url, &c_url] {
            let head = tus_head(&server, url).await;
            assert_eq!(head.status(), 200, "HEAD {url}");
            assert_eq!(header(&head, "upload-offset"), header(&head, "upload-length"));
            assert_eq!(header(&head, "upload-concat"), "partial");
        }
        let again = post_final(&server, &[&a_url, &b_url, &c_url], &[]).await;
        assert_eq!(again.status(), 201);
        assert_eq!(header(&again, "location"), final_url);

        // A final takes no PATCH, in either protocol.
        let refused = tus_patch(&server, &final_url, whole.len() as u64, vec![1]).await;
        assert_eq!(refused.status(), 403);
        assert_eq!(error_of(refused).await, "final_upload");
        let refused = patch(&server, &final_id, whole.len() as u64, vec![1]).await;
        assert_eq!(refused.status(), 403);
        assert_eq!(error_of(refused).await, "final_upload");
    }
}

on_each_store! {
    #[tokio::test]
    async fn a_final_created_before_its_partials_finish_completes_with_the_last_byte(store: Store) {
        let server = TestServer::start_on(store);
        let a = data(5_500_000, 311);
        let b = data(700_000, 312);
        let c = data(90_000, 313);
        let whole = [a.as_slice(), &b, &c].concat();

        let a_url = partial(&server, Some(a.len() as u64), &a[..1_000]).await;
        let b_url = partial(&server, None, &b[..2_000]).await;
        let c_url = partial(&server, Some(c.len() as u64), &[]).await;
        let urls = [a_url.as_str(), b_url.as_str(), c_url.as_str()];

        let created = post_final(&server, &urls, &[]).await;
        assert_eq!(created.status(), 201);
        let final_url = header(&created, "location");
        let final_id = id_in(&final_url);

        // Unassembled, with B's length unknown: no offset, no length, the sum received.
        let head = tus_head(&server, &final_url).await;
        assert_eq!(head.status(), 200);
        assert_eq!(header(&head, "upload-concat"), format!("final;{}", urls.join(" ")));
        assert!(head.headers().get("upload-offset").is_none(), "{:?}", head.headers());
        assert!(head.headers().get("upload-length").is_none(), "{:?}", head.headers());
        let unfinished = status(&server, &final_id).await;
        assert_eq!(unfinished["state"], "uploading", "{unfinished}");
        assert_eq!(unfinished["received"], 3_000, "{unfinished}");
        assert_eq!(unfinished["size"], Value::Null, "{unfinished}");
        assert_eq!(
            unfinished["parts"],
            json!([id_in(&a_url), id_in(&b_url), id_in(&c_url)])
        );

        // B's length becomes known: so does the final's.
        let length = b.len().to_string();
        let answer = tus_patch_with(
            &server,
            &b_url,
            2_000,
            &[("Upload-Length", &length)],
            b[2_000..300_000].to_vec(),
        )
        .await;
        assert_eq!(answer.status(), 204);
        let head = tus_head(&server, &final_url).await;
        assert_eq!(header(&head, "upload-length"), whole.len().to_string());
        assert!(head.headers().get("upload-offset").is_none(), "{:?}", head.headers());
        let known = status(&server, &final_id).await;
        assert_eq!(known["size"], whole.len() as u64, "{known}");
        assert_eq!(known["received"], 1_000 + 300_000, "{known}");
        assert_eq!(known["state"], "uploading");

        // The same list again (a retried POST whose answer was lost): the same final.
        let again = post_final(&server, &urls, &[]).await;
        assert_eq!(again.status(), 201);
        assert_eq!(header(&again, "location"), final_url);
        // Another list naming a partial of this final: taken.
        let other = partial(&server, Some(10), &[7; 10]).await;
        let taken = post_final(&server, &[&other, &b_url], &[]).await;
        assert_eq!(taken.status(), 409);
        assert_eq!(error_of(taken).await, "partial_taken");
        // The same partials in another order are another list, and taken too.
        let reordered = post_final(&server, &[&c_url, &a_url, &b_url], &[]).await;
        assert_eq!(reordered.status(), 409);
        assert_eq!(error_of(reordered).await, "partial_taken");

        // A final takes no PATCH while it waits either.
        let refused = tus_patch(&server, &final_url, 0, vec![1]).await;
        assert_eq!(refused.status(), 403);
        assert_eq!(error_of(refused).await, "final_upload");

        // The partials finish, C first, A last; the final follows their sum.
        assert_eq!(tus_patch(&server, &c_url, 0, c.clone()).await.status(), 204);
        assert_eq!(
            tus_patch(&server, &b_url, 300_000, b[300_000..].to_vec()).await.status(),
            204
        );
        let waiting = status(&server, &final_id).await;
        assert_eq!(waiting["state"], "uploading", "{waiting}");
        assert_eq!(
            waiting["received"],
            (1_000 + b.len() + c.len()) as u64,
            "{waiting}"
        );
        assert!(tus_head(&server, &final_url).await.headers().get("upload-offset").is_none());
        let last = tus_patch(&server, &a_url, 1_000, a[1_000..].to_vec()).await;
        assert_eq!(last.status(), 204);
        assert_eq!(header(&last, "upload-offset"), a.len().to_string());

        // Assembled in the request that completed the last partial.
        let complete = status(&server, &final_id).await;
        assert_eq!(complete["state"], "complete", "{complete}");
        assert_eq!(complete["size"], whole.len() as u64);
        assert_eq!(complete["received"], whole.len() as u64);
        assert_eq!(complete["sha256"], sha_hex(&whole));
        let head = tus_head(&server, &final_url).await;
        assert_eq!(header(&head, "upload-offset"), whole.len().to_string());
        assert_eq!(header(&head, "upload-length"), whole.len().to_string());
        assert_eq!(content(&server, &final_id).await, whole);
        for url in urls {
            assert_eq!(tus_head(&server, url).await.status(), 200, "HEAD {url}");
        }
        // The partial that another final could not take is still a loose partial of its own.
        assert_eq!(tus_head(&server, &other).await.status(), 200);
    }
}

/// A refused creation: what it is, its headers and body, the status and `error` code expected.
type Refusal<'a> = (&'a str, Vec<(&'a str, String)>, Vec<u8>, u16, &'a str);

#[tokio::test]
async fn final_creations_that_cannot_be_are_refused_and_take_nothing() {
    let server = TestServer::start_with(&["--max-upload-size", "100000"], &[]);
    let p = partial(&server, Some(3), b"abc").await;
    let q = partial(&server, Some(2), b"de").await;
    let plain = tus_post(&server, &[("Upload-Length", "4")], b"wxyz".to_vec()).await;
    assert_eq!(plain.status(), 201);
    let plain = header(&plain, "location");
    let native_plain = create(&server, "plain.bin", 5).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let unknown = format!("/uploads/{}", uuid::Uuid::new_v4());
    let foreign = format!("http://elsewhere.example/uploads/{}", id_in(&q));
    let port = server.port;
    let foreign_port = format!("http://127.0.0.1:{}/uploads/{}", port + 1, id_in(&p));
    let gone = partial(&server, Some(3), b"ghi").await;
    assert_eq!(
        tus()
            .delete(server.url(&gone))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let large = partial(&server, Some(60_000), &[]).await;
    let larger = partial(&server, Some(50_000), &[]).await;

    let cases: Vec<Refusal> = vec![
        (
            "neither partial nor final",
            vec![
                ("Upload-Concat", "whole".into()),
                ("Upload-Length", "5".into()),
            ],
            vec![],
            400,
            "invalid_concat",
        ),
        (
            "final without a list",
            vec![("Upload-Concat", "final;".into())],
            vec![],
            400,
            "invalid_concat",
        ),
        (
            "final without a semicolon",
            vec![
                ("Upload-Concat", format!("final {p}")),
                ("Upload-Length", "5".into()),
            ],
            vec![],
            400,
            "invalid_concat",
        ),
        (
            "another host",
            vec![("Upload-Concat", format!("final;{p} {foreign}"))],
            vec![],
            400,
            "invalid_concat",
        ),
        (
            "another port",
            vec![("Upload-Concat", format!("final;{foreign_port} {q}"))],
            vec![],
            400,
            "invalid_concat",
        ),
        (
            "not an upload URL",
            vec![("Upload-Concat", format!("final;{p} /files/{}", id_in(&q)))],
            vec![],
            400,
            "invalid_concat",
        ),
        (
            "the same partial twice",
            vec![("Upload-Concat", format!("final;{p} {q} {p}"))],
            vec![],
            400,
            "invalid_concat",
        ),
        (
            "the same partial twice, once absolute",
            vec![("Upload-Concat", format!("final;{p} {}", server.url(&p)))],
            vec![],
            400,
            "invalid_concat",
        ),
        (
            "a final with Upload-Length",
            vec![
                ("Upload-Concat", format!("final;{p} {q}")),
                ("Upload-Length", "5".into()),
            ],
            vec![],
            400,
            "invalid_concat",
        ),
        (
            "a final with Upload-Defer-Length",
            vec![
                ("Upload-Concat", format!("final;{p} {q}")),
                ("Upload-Defer-Length", "1".into()),
            ],
            vec![],
            400,
            "invalid_concat",
        ),
        (
            "a final with a body",
            vec![("Upload-Concat", format!("final;{p} {q}"))],
            b"xy".to_vec(),
            400,
            "invalid_concat",
        ),
        (
            "a plain tus upload",
            vec![("Upload-Concat", format!("final;{p} {plain}"))],
            vec![],
            400,
            "not_partial",
        ),
        (
            "a plain native upload",
            vec![(
                "Upload-Concat",
                format!("final;/uploads/{native_plain} {q}"),
            )],
            vec![],
            400,
            "not_partial",
        ),
        (
            "an unknown id",
            vec![("Upload-Concat", format!("final;{p} {unknown}"))],
            vec![],
            404,
            "not_found",
        ),
        (
            "not an id",
            vec![("Upload-Concat", format!("final;{p} /uploads/not-an-id"))],
            vec![],
            404,
            "not_found",
        ),
        (
            "a deleted partial",
            vec![("Upload-Concat", format!("final;{p} {gone}"))],
            vec![],
            410,
            "gone",
        ),
        (
            "past --max-upload-size",
            vec![("Upload-Concat", format!("final;{large} {larger}"))],
            vec![],
            413,
            "too_large",
        ),
    ];
    for (what, headers, body, code, error) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = tus_post(&server, &headers, body).await;
        assert_eq!(answer.status(), code, "{what}");
        assert!(
            answer.headers().get("location").is_none(),
            "{what}: nothing is created"
        );
        assert_eq!(error_of(answer).await, error, "{what}");
    }

    // None of the refusals claimed a partial: a good list of them all is taken now.
    let created = post_final(&server, &[&q, &p], &[]).await;
    assert_eq!(created.status(), 201);
    let joined = id_in(&header(&created, "location"));
    let status = status(&server, &joined).await;
    assert_eq!(status["state"], "complete", "{status}");
    assert_eq!(content(&server, &joined).await, b"deabc");
    // And the large ones are still loose partials, within the limit one at a time.
    let alone = post_final(&server, &[&large], &[]).await;
    assert_eq!(alone.status(), 201);
}

on_each_store! {
    #[tokio::test]
    async fn deleting_a_final_removes_its_partials(store: Store) {
        let server = TestServer::start_on(store);
        let a = partial(&server, Some(6_000_000), &data(5_300_000, 321)).await;
        let b = partial(&server, None, &data(1_000, 322)).await;
        let created = post_final(&server, &[&a, &b], &[]).await;
        assert_eq!(created.status(), 201);
        let final_url = header(&created, "location");
        let deleted = tus().delete(server.url(&final_url)).send().await.unwrap();
        assert_eq!(deleted.status(), 204);
        for url in [&final_url, &a, &b] {
            assert_eq!(tus_head(&server, url).await.status(), 410, "HEAD {url}");
            assert_eq!(status_code(&server, &id_in(url)).await, 410, "GET {url}");
        }
        eventually(Duration::from_secs(20), "the partials' bytes to go", || async {
            !server.holds_bytes_of(&id_in(&a)) && !server.holds_bytes_of(&id_in(&b))
        })
        .await;

        // An assembled final: deleting it removes its bytes.
        let c = partial(&server, Some(4), b"abcd").await;
        let created = post_final(&server, &[&c], &[]).await;
        assert_eq!(created.status(), 201);
        let final_url = header(&created, "location");
        assert_eq!(status(&server, &id_in(&final_url)).await["state"], "complete");
        assert_eq!(
            tus().delete(server.url(&final_url)).send().await.unwrap().status(),
            204
        );
        assert_eq!(tus_head(&server, &final_url).await.status(), 410);
        assert_eq!(tus_head(&server, &c).await.status(), 410);
        eventually(Duration::from_secs(20), "the final's bytes to go", || async {
            !server.holds_bytes_of(&id_in(&final_url))
        })
        .await;
    }
}

#[tokio::test]
async fn deleting_a_partial_of_an_unfinished_final_removes_the_final() {
    let server = TestServer::start();
    let a = partial(&server, Some(10), b"01234").await;
    let b = partial(&server, Some(10), b"0123456789").await;
    let created = post_final(&server, &[&a, &b], &[]).await;
    assert_eq!(created.status(), 201);
    let final_url = header(&created, "location");
    assert_eq!(tus_head(&server, &final_url).await.status(), 200);
    assert_eq!(
        tus().delete(server.url(&a)).send().await.unwrap().status(),
        204
    );
    assert_eq!(tus_head(&server, &final_url).await.status(), 410);
    assert_eq!(status_code(&server, &id_in(&final_url)).await, 410);
    // A final that was never claimed by anything is untouched by another's partial going.
    let c = partial(&server, Some(2), b"cc").await;
    let d = partial(&server, Some(2), b"d").await;
    let other = post_final(&server, &[&c, &d], &[]).await;
    assert_eq!(other.status(), 201);
    let other_url = header(&other, "location");
    let e = partial(&server, Some(1), b"e").await;
    assert_eq!(
        tus().delete(server.url(&e)).send().await.unwrap().status(),
        204
    );
    assert_eq!(tus_head(&server, &other_url).await.status(), 200);
    assert_eq!(tus_patch(&server, &d, 1, b"d".to_vec()).await.status(), 204);
    assert_eq!(content(&server, &id_in(&other_url)).await, b"ccdd");
}

/// A part whose stored bytes were cut behind the service's back cannot make its final: the
/// final fails (`parts_unreadable`) at once instead of being tried again and again, and no
/// byte of a wrong whole is ever shown as complete.
#[tokio::test]
async fn a_final_whose_part_lost_bytes_fails_instead_of_completing() {
    let server = TestServer::start();
    let a = partial(&server, Some(6), b"abcdef").await;
    let b = partial(&server, Some(3), b"ghi").await;
    let cut = std::fs::OpenOptions::new()
        .write(true)
        .open(server.file_path(&id_in(&a)))
        .expect("the part's file");
    cut.set_len(2).expect("cut the part's file");
    let created = post_final(&server, &[&a, &b], &[]).await;
    assert_eq!(created.status(), 201);
    let whole = status(&server, &id_in(&header(&created, "location"))).await;
    assert_eq!(whole["state"], "failed", "{whole}");
    assert_eq!(whole["failure"], "parts_unreadable", "{whole}");
    assert!(whole["sha256"].is_null(), "{whole}");
}

/// Once assembled, the parts stay a while (at most --expire-after, at most an hour), then the
/// sweep removes them; the final keeps its bytes.
#[tokio::test]
async fn assembled_parts_are_swept_after_a_while_and_the_final_stays() {
    let server = TestServer::start_with(&["--expire-after", "1s"], &[]);
    let a = partial(&server, Some(3), b"abc").await;
    let b = partial(&server, Some(3), b"def").await;
    let created = post_final(&server, &[&a, &b], &[]).await;
    assert_eq!(created.status(), 201);
    let final_url = header(&created, "location");
    for url in [&a, &b] {
        eventually(
            Duration::from_secs(15),
            "an assembled part to be swept",
            || async { status_code(&server, &id_in(url)).await == 410 },
        )
        .await;
    }
    let whole = status(&server, &id_in(&final_url)).await;
    assert_eq!(whole["state"], "complete", "{whole}");
    assert_eq!(content(&server, &id_in(&final_url)).await, b"abcdef");
}

#[tokio::test]
async fn a_loose_partial_expires_even_when_complete_and_an_expired_partial_takes_its_final() {
    let server = TestServer::start_with(&["--expire-after", "1s"], &[]);
    let loose = partial(&server, Some(3), b"abc").await;
    assert_eq!(status(&server, &id_in(&loose)).await["state"], "complete");
    let waiting = partial(&server, Some(10), b"abc").await;
    let done = partial(&server, Some(3), b"xyz").await;
    let created = post_final(&server, &[&done, &waiting], &[]).await;
    assert_eq!(created.status(), 201);
    let final_url = header(&created, "location");
    // A plain upload with all its bytes in never expires: the yardstick.
    let plain = create(&server, "plain.bin", 3).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        patch(&server, &plain, 0, b"abc".to_vec()).await.status(),
        200
    );
    eventually(
        Duration::from_secs(15),
        "the loose complete partial to expire",
        || async { status_code(&server, &id_in(&loose)).await == 410 },
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "the unfinished partial to expire",
        || async { status_code(&server, &id_in(&waiting)).await == 410 },
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "its final to go with it",
        || async { status_code(&server, &id_in(&final_url)).await == 410 },
    )
    .await;
    assert_eq!(status(&server, &plain).await["state"], "complete");
}

on_each_store! {
    #[tokio::test]
    async fn native_parts_make_a_whole_with_the_right_sha256(store: Store) {
        let server = TestServer::start_on(store);
        let one = data(5_400_000, 331);
        let two = data(123_456, 332);
        let whole = [one.as_slice(), &two].concat();
        let mut ids = Vec::new();
        for (n, bytes) in [&one, &two].into_iter().enumerate() {
            let part = create_json(
                &server,
                json!({"name": format!("part-{n}"), "size": bytes.len(), "partial": true}),
            )
            .await;
            assert_eq!(part["partial"], true, "{part}");
            let id = part["id"].as_str().unwrap().to_owned();
            assert_eq!(patch(&server, &id, 0, bytes.clone()).await.status(), 200);
            ids.push(id);
        }
        // A whole with a size is refused.
        let sized = client()
            .post(server.url("/uploads"))
            .json(&json!({"name": "movie.mp4", "parts": ids, "size": whole.len()}))
            .send()
            .await
            .unwrap();
        assert_eq!(sized.status(), 400);
        assert_eq!(error_of(sized).await, "invalid_concat");
        // So is a whole naming an upload that is not a part.
        let plain = create(&server, "plain.bin", 3).await["id"].as_str().unwrap().to_owned();
        let mixed = client()
            .post(server.url("/uploads"))
            .json(&json!({"name": "movie.mp4", "parts": [ids[0], plain]}))
            .send()
            .await
            .unwrap();
        assert_eq!(mixed.status(), 400);
        assert_eq!(error_of(mixed).await, "not_partial");

        let created = create_json(
            &server,
            json!({
                "name": "movie.mp4",
                "parts": ids,
                "content_type": "video/mp4",
                "sha256": sha_hex(&whole),
            }),
        )
        .await;
        assert_eq!(created["parts"], json!(ids), "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let status = status(&server, &id).await;
        assert_eq!(status["state"], "complete", "{status}");
        assert_eq!(status["name"], "movie.mp4");
        assert_eq!(status["content_type"], "video/mp4");
        assert_eq!(status["size"], whole.len() as u64);
        assert_eq!(status["received"], whole.len() as u64);
        assert_eq!(status["sha256"], sha_hex(&whole));
        assert_eq!(content(&server, &id).await, whole);
        for part in &ids {
            let kept = crate::support::status(&server, part).await;
            assert_eq!(kept["state"], "complete", "part {part}");
        }
        let refused = patch(&server, &id, whole.len() as u64, vec![1]).await;
        assert_eq!(refused.status(), 403);
        assert_eq!(error_of(refused).await, "final_upload");
    }
}

on_each_store! {
    #[tokio::test]
    async fn native_parts_with_a_wrong_declared_sha256_make_a_failed_whole(store: Store) {
        let server = TestServer::start_on(store);
        let one = data(40_000, 341);
        let two = data(30_000, 342);
        let whole = [one.as_slice(), &two].concat();
        let mut ids = Vec::new();
        for (n, bytes) in [&one, &two].into_iter().enumerate() {
            let part = create_json(
                &server,
                json!({"name": format!("part-{n}"), "size": bytes.len(), "partial": true}),
            )
            .await;
            ids.push(part["id"].as_str().unwrap().to_owned());
        }
        // The whole first, with the digest of other bytes; then the parts arrive.
        let wrong = sha_hex(b"other bytes");
        let created = create_json(
            &server,
            json!({"name": "whole.bin", "parts": ids, "sha256": wrong}),
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        assert_eq!(created["state"], "uploading", "{created}");
        assert_eq!(created["size"], whole.len() as u64, "{created}");
        assert_eq!(created["received"], 0, "{created}");
        assert_eq!(patch(&server, &ids[0], 0, one.clone()).await.status(), 200);
        assert_eq!(received(&server, &id).await, one.len() as u64);
        let last = patch(&server, &ids[1], 0, two.clone()).await.status();
        assert!(last == 200 || last == 422, "the last part's PATCH: {last}");
        let status = status(&server, &id).await;
        assert_eq!(status["state"], "failed", "{status}");
        assert_eq!(status["failure"], "sha256_mismatch", "{status}");
        assert_eq!(status["expected_sha256"], wrong);
        assert_eq!(status["sha256"], sha_hex(&whole), "{status}");
    }
}

on_each_store! {
    #[tokio::test]
    async fn the_finals_progress_channels_follow_its_partials(store: Store) {
        let server = TestServer::start_on(store);
        let pieces: Vec<Vec<u8>> = (0..4).map(|n| data(60_000 + n * 1_000, 350 + n as u64)).collect();
        let whole = pieces.concat();
        let total = whole.len() as u64;
        let mut urls = Vec::new();
        for bytes in &pieces {
            urls.push(partial(&server, Some(bytes.len() as u64), &[]).await);
        }
        let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
        let created = post_final(&server, &refs, &[]).await;
        assert_eq!(created.status(), 201);
        let final_id = id_in(&header(&created, "location"));

        // SSE on the final, read as it arrives.
        let events = client()
            .get(server.url(&format!("/uploads/{final_id}/events")))
            .send()
            .await
            .unwrap();
        assert_eq!(events.status(), 200);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
        let reader = tokio::spawn(async move {
            let mut stream = events.bytes_stream();
            let mut text = String::new();
            while let Some(chunk) = stream.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                while let Some(end) = text.find("\n\n") {
                    let block: String = text.drain(..end + 2).collect();
                    if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                        if block.starts_with("event: progress") {
                            let _ = tx.send(json(data));
                        }
                    }
                }
            }
        });
        wait_watchers(&server, "sse", 1).await;
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the current status at once")
            .expect("an event");
        assert_eq!(first["received"], 0, "{first}");
        assert_eq!(first["state"], "uploading", "{first}");

        // Each partial in two halves, round robin; after each append the final's sum shows on
        // a long poll and on the SSE stream.
        let mut sent = vec![0usize; pieces.len()];
        let mut sum = 0u64;
        let mut seen = vec![0u64];
        for round in 0..2 {
            for (n, bytes) in pieces.iter().enumerate() {
                let end = if round == 0 { bytes.len() / 2 } else { bytes.len() };
                let before = sum;
                let poll = {
                    let url = server.url(&format!(
                        "/uploads/{final_id}/poll?received={before}&timeout=30"
                    ));
                    tokio::spawn(async move {
                        client().get(url).send().await.unwrap().json::<Value>().await.unwrap()
                    })
                };
                wait_watchers(&server, "poll", 1).await;
                let answer = tus_patch(&server, &urls[n], sent[n] as u64, bytes[sent[n]..end].to_vec()).await;
                assert_eq!(answer.status(), 204);
                sum += (end - sent[n]) as u64;
                sent[n] = end;
                let polled = tokio::time::timeout(Duration::from_secs(10), poll)
                    .await
                    .unwrap_or_else(|_| {
                        panic!("no long poll answer after piece {n} of round {round} ({sum} bytes in)")
                    })
                    .unwrap();
                // It answers at the first change: the sum, or a commit on the way to it.
                let polled_received = polled["received"].as_u64().unwrap();
                assert!(
                    before < polled_received && polled_received <= sum,
                    "long poll after piece {n} of round {round}: {polled}, expected {sum}"
                );
                if sum < total {
                    assert_eq!(polled["state"], "uploading", "{polled}");
                }
                // The SSE stream reaches the same sum (coalesced: maybe not every value), and
                // once it is the whole, the complete state.
                loop {
                    let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                        .await
                        .unwrap_or_else(|_| panic!("an SSE event with received {sum}: {seen:?}"))
                        .unwrap_or_else(|| panic!("the stream ended early: {seen:?}"));
                    let received = event["received"].as_u64().unwrap();
                    assert!(received >= *seen.last().unwrap(), "not monotone: {seen:?}, {event}");
                    assert!(received <= sum, "more than was sent: {event}");
                    seen.push(received);
                    if received < sum {
                        continue;
                    }
                    if sum < total {
                        assert_eq!(event["state"], "uploading", "{event}");
                        break;
                    }
                    if event["state"] == "complete" {
                        assert_eq!(event["sha256"], sha_hex(&whole), "{event}");
                        assert_eq!(event["size"], total, "{event}");
                        break;
                    }
                    assert_eq!(event["state"], "uploading", "all in, not yet assembled: {event}");
                }
            }
        }
        assert!(seen.len() >= 9, "the final's received rose step by step: {seen:?}");
        // After the complete state the stream ends.
        tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the stream ends after the final state")
            .unwrap();
        while let Ok(event) = rx.try_recv() {
            assert_eq!(event["state"], "complete", "nothing after complete but itself: {event}");
        }
        let status = status(&server, &final_id).await;
        assert_eq!(status["state"], "complete");
        assert_eq!(status["sha256"], sha_hex(&whole));
        assert_eq!(content(&server, &final_id).await, whole);
    }
}

//! The upload page's form with JavaScript off: a browser (which prefers `text/html`) reads a
//! small page; curl and API clients keep getting JSON. Status codes and `Location` are the
//! same either way.

use reqwest::multipart::{Form, Part};
use reqwest::Response;
use serde_json::Value;

use crate::support::{client, content, data, sha_hex, TestServer};

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const HOSTILE_NAME: &str = r#"<b>&"'.txt"#;
const HOSTILE_NAME_ESCAPED: &str = "&lt;b&gt;&amp;&quot;&#39;.txt";

fn file_form(bytes: &[u8], name: &str) -> Form {
    Form::new().part(
        "file",
        Part::bytes(bytes.to_vec()).file_name(name.to_owned()),
    )
}

async fn post(server: &TestServer, form: Form, accept: Option<&str>) -> Response {
    let mut request = client().post(server.url("/uploads")).multipart(form);
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    request.send().await.unwrap()
}

fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// A page the upload page's CSP would let through: no script, no inline style, nothing
/// from elsewhere.
fn assert_self_contained(page: &str) {
    let lower = page.to_ascii_lowercase();
    for forbidden in [
        "<script",
        "<style",
        "style=",
        "http://",
        "https://",
        "javascript:",
    ] {
        assert!(!lower.contains(forbidden), "{forbidden} in {page}");
    }
    assert!(lower.starts_with("<!doctype html>"), "{page}");
    assert!(
        page.contains(r#"href="/""#),
        "no link back to the page: {page}"
    );
}

fn assert_html(response: &Response) {
    assert_eq!(header(response, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(response, "cache-control"), "no-store");
}

#[tokio::test]
async fn a_browser_posting_the_form_reads_a_page_naming_the_stored_file() {
    let server = TestServer::start();
    let bytes = data(200_001, 31);
    let response = post(
        &server,
        file_form(&bytes, HOSTILE_NAME),
        Some(BROWSER_ACCEPT),
    )
    .await;
    assert_eq!(response.status(), 201);
    assert_html(&response);
    let location = header(&response, "location");
    let id = location
        .strip_prefix("/uploads/")
        .expect("a path")
        .to_owned();
    let page = response.text().await.unwrap();

    assert!(page.contains(HOSTILE_NAME_ESCAPED), "{page}");
    for raw in ["<b>", "&\"", "\"'", r#"<b>&"'"#] {
        assert!(!page.contains(raw), "raw {raw:?} in {page}");
    }
    assert!(page.contains(&sha_hex(&bytes)), "{page}");
    assert!(page.contains("200001 bytes"), "{page}");
    assert!(
        page.contains(&format!(r#"href="/uploads/{id}/content""#)),
        "{page}"
    );
    assert!(page.contains(&format!(r#"href="/uploads/{id}""#)), "{page}");
    assert_self_contained(&page);

    // The page's links lead to the upload it names, stored under the name as given.
    let status: Value = client()
        .get(server.url(&location))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["name"], HOSTILE_NAME);
    assert_eq!(status["state"], "complete");
    assert_eq!(content(&server, &id).await, bytes);
}

#[tokio::test]
async fn curl_and_api_clients_keep_getting_json() {
    let server = TestServer::start();
    let bytes = data(10_000, 32);
    for accept in [
        None,
        Some("*/*"),
        Some("application/json"),
        Some("text/html, application/json"),
        Some("application/json, text/html;q=0.9"),
    ] {
        let response = post(&server, file_form(&bytes, "plain.bin"), accept).await;
        assert_eq!(response.status(), 201, "{accept:?}");
        assert_eq!(
            header(&response, "content-type"),
            "application/json",
            "{accept:?}"
        );
        let location = header(&response, "location");
        let status: Value = response.json().await.unwrap();
        assert_eq!(
            location,
            format!("/uploads/{}", status["id"].as_str().unwrap())
        );
        assert_eq!(status["name"], "plain.bin");
        assert_eq!(status["sha256"], sha_hex(&bytes));

        // And so do their errors.
        let no_file = Form::new().text("name", "a.bin");
        let response = post(&server, no_file, accept).await;
        assert_eq!(response.status(), 400, "{accept:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "missing_file");
    }
}

#[tokio::test]
async fn a_failed_form_reads_a_page_with_the_same_status_and_the_message() {
    let server = TestServer::start();
    let no_file = Form::new().text("name", HOSTILE_NAME);
    let response = post(&server, no_file, Some(BROWSER_ACCEPT)).await;
    assert_eq!(response.status(), 400);
    assert_html(&response);
    assert!(response.headers().get("location").is_none());
    let page = response.text().await.unwrap();
    assert!(
        page.contains("the form needs a file part named `file`"),
        "{page}"
    );
    assert!(page.contains("missing_file"), "{page}");
    assert_self_contained(&page);

    // A name the engine refuses: 400 invalid_name, as in JSON.
    let response = post(&server, file_form(b"x", "a/b.txt"), Some(BROWSER_ACCEPT)).await;
    assert_eq!(response.status(), 400);
    assert_html(&response);
    let page = response.text().await.unwrap();
    assert!(page.contains("invalid_name"), "{page}");
    assert_self_contained(&page);
}

#[tokio::test]
async fn a_digest_mismatch_page_links_the_failed_upload() {
    let server = TestServer::start();
    let bytes = data(5_000, 33);
    let form = file_form(&bytes, "x.bin").text("sha256", sha_hex(b"something else"));
    let response = post(&server, form, Some(BROWSER_ACCEPT)).await;
    assert_eq!(response.status(), 422);
    assert_html(&response);
    assert_eq!(
        header(&response, "upload-offset"),
        "5000",
        "the JSON answer's headers are kept"
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("sha256_mismatch"), "{page}");
    let link = page
        .split(r#"href="/uploads/"#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no link to the upload: {page}"));
    let status: Value = client()
        .get(server.url(&format!("/uploads/{link}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "failed");
    assert_self_contained(&page);
}

#[tokio::test]
async fn a_refused_form_keeps_its_headers() {
    let server = TestServer::start_with(&["--token", "s3cret"], &[]);
    let response = post(&server, file_form(b"abc", "a.txt"), Some(BROWSER_ACCEPT)).await;
    assert_eq!(response.status(), 401);
    assert_html(&response);
    assert_eq!(header(&response, "www-authenticate"), "Bearer");
    let page = response.text().await.unwrap();
    assert!(page.contains("bearer token"), "{page}");
    assert_self_contained(&page);

    // A JSON create is untouched by Accept.
    let response = client()
        .post(server.url("/uploads"))
        .header("Accept", BROWSER_ACCEPT)
        .json(&serde_json::json!({ "name": "a.txt", "size": 3 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(header(&response, "content-type"), "application/json");
}

//! Other protocols on the same resource: tus 1.0.0 (with the real tus-js-client), the IETF
//! draft, CORS for cross-origin browser clients, and the tutorial's protocol.

#[path = "../e2e/garage.rs"]
mod garage;
#[path = "../e2e/support.rs"]
mod support;

mod draft;
mod edges;
mod tus;
mod tus_concat;
mod tus_js;
mod tutorial;

/// A client that sends `name: value` with every request (the protocol's marker header).
pub fn client_with(name: &'static str, value: &'static str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(name, reqwest::header::HeaderValue::from_static(value));
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// A client that speaks tus 1.0.0.
pub fn tus() -> reqwest::Client {
    client_with("tus-resumable", "1.0.0")
}

/// A tus PATCH of `body` at `offset` to the upload at `url` (a path).
pub async fn tus_patch(
    server: &support::TestServer,
    url: &str,
    offset: u64,
    body: Vec<u8>,
) -> reqwest::Response {
    tus()
        .patch(server.url(url))
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A response header's text; panics when it is missing.
pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("a text header")
        .to_owned()
}

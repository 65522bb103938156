//! `GET /openapi.json` against the route table and the live server: every route is in the
//! document with exactly the methods it serves, the answers the live server gives are the
//! ones the document lists, and the creation's links walk an upload through its life.
//! A route or a method added without its `#[utoipa::path]` fails here.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::Value;

use crate::support::*;

/// The route table's source: `routes()` and the tutorial's routes.
const ROUTE_SOURCES: [&str; 2] = [
    include_str!("../../src/http/mod.rs"),
    include_str!("../../src/http/tutorial.rs"),
];

/// The methods probed on every path.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "OPTIONS", "DELETE"];

/// The string literal that opens `text`, if it starts (after blanks) with one.
fn leading_literal(text: &str) -> Option<&str> {
    let rest = text.trim_start().strip_prefix('"')?;
    rest.split('"').next()
}

/// actix's `{name}` and `{name:regex}` segments as OpenAPI's `{name}`.
fn openapi_template(path: &str) -> String {
    let mut out = String::new();
    let mut in_name = false;
    let mut in_regex = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_name = true;
                out.push(c);
            }
            '}' if in_name => {
                in_name = false;
                in_regex = false;
                out.push(c);
            }
            ':' if in_name => in_regex = true,
            _ if in_regex => {}
            _ => out.push(c),
        }
    }
    out
}

/// Every path the route table registers, read from its source: the literal of each
/// `web::resource("…")` and each `.route("…", …)`.
fn registered_paths() -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for source in ROUTE_SOURCES {
        for needle in ["web::resource(", ".route(", "get_only("] {
            for (at, _) in source.match_indices(needle) {
                if let Some(path) = leading_literal(&source[at + needle.len()..]) {
                    paths.insert(openapi_template(path));
                }
            }
        }
    }
    paths
}

async fn document(server: &TestServer) -> Value {
    let response = client()
        .get(server.url("/openapi.json"))
        .send()
        .await
        .expect("GET /openapi.json");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(essence(&content_type), "application/json");
    let text = response.text().await.expect("the document");
    serde_json::from_str(&text).expect("the document is JSON")
}

/// `type/subtype` of a media type, lowercase, without parameters.
fn essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether `actual` is one of the documented media types (which may hold wildcards).
fn media_type_documented(documented: &[&String], actual: &str) -> bool {
    let actual = essence(actual);
    let (main, sub) = actual.split_once('/').unwrap_or((&actual, ""));
    documented.iter().any(|option| {
        let option = essence(option);
        let (want_main, want_sub) = option.split_once('/').unwrap_or((&option, ""));
        (want_main == "*" || want_main == main) && (want_sub == "*" || want_sub == sub)
    })
}

fn documented_methods(doc: &Value, path: &str) -> BTreeSet<String> {
    doc["paths"][path]
        .as_object()
        .map(|item| {
            item.keys()
                .map(|m| m.to_ascii_uppercase())
                .filter(|m| METHODS.contains(&m.as_str()) || m == "TRACE")
                .collect()
        })
        .unwrap_or_default()
}

async fn fresh_upload(server: &TestServer) -> String {
    create(server, "probe.bin", 10).await["id"]
        .as_str()
        .expect("an id")
        .to_owned()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_of_this_version() {
    let server = TestServer::start();
    let doc = document(&server).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()));
    let codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("the error codes");
    for code in [
        "invalid_id",
        "not_found",
        "gone",
        "offset_mismatch",
        "method_not_allowed",
    ] {
        assert!(codes.iter().any(|c| c == code), "{code}");
    }
}

#[tokio::test]
async fn the_document_has_exactly_the_paths_of_the_route_table() {
    let registered = registered_paths();
    // The reading of the source still finds what it must.
    for path in [
        "/uploads",
        "/uploads/{id}",
        "/uploads/{id}/poll",
        "/",
        "/status",
        "/openapi.json",
    ] {
        assert!(registered.contains(path), "{path} in {registered:?}");
    }
    let server = TestServer::start_with(&["--tutorial-api"], &[]);
    let doc = document(&server).await;
    let documented: BTreeSet<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    let routed: BTreeSet<&str> = registered.iter().map(String::as_str).collect();
    assert_eq!(
        documented, routed,
        "the document's paths (left) are not the route table's (right)"
    );
}

#[tokio::test]
async fn every_documented_method_is_served_and_no_other() {
    let server = TestServer::start_with(&["--tutorial-api"], &[]);
    let doc = document(&server).await;
    let mut failures = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        // An existing upload, so that a 404 can only mean "no route"; a fresh one per path,
        // as DELETE removes it.
        let id = fresh_upload(&server).await;
        let asset = item["get"]["parameters"][0]["example"]
            .as_str()
            .unwrap_or("app.js")
            .to_owned();
        let url = server.url(&path.replace("{id}", &id).replace("{path}", &asset));
        let documented = documented_methods(&doc, path);
        for method in METHODS {
            let response = client()
                .request(Method::from_bytes(method.as_bytes()).unwrap(), &url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            // An event stream stays open: its head is all this test reads.
            let body: Option<Value> = match content_type.as_deref().map(essence).as_deref() {
                Some("application/json") => response.json().await.ok(),
                _ => None,
            };
            let code = body
                .as_ref()
                .and_then(|b| b["error"].as_str())
                .unwrap_or("");
            let what = format!("{method} {path} answered {status} {code}");
            if !documented.contains(method) {
                // Refused as RFC 9110 says: 405, with `Allow` naming what the path takes.
                let allow: BTreeSet<String> = headers
                    .get("allow")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.split(',').map(|m| m.trim().to_owned()).collect())
                    .unwrap_or_default();
                if status != 405 {
                    failures.push(format!("{what}, but the document has no {method} there"));
                } else if allow != documented {
                    failures.push(format!("{what} with Allow {allow:?}, not {documented:?}"));
                }
                continue;
            }
            if status == 405 || status == 404 {
                failures.push(format!("{what}: documented, but not routed"));
                continue;
            }
            let operation = &doc["paths"][path][method.to_ascii_lowercase()];
            let Some(answer) = operation["responses"].get(status.to_string()) else {
                failures.push(format!("{what}, which the document does not list"));
                continue;
            };
            let media_types: Vec<&String> = answer["content"]
                .as_object()
                .map(|c| c.keys().collect())
                .unwrap_or_default();
            let has_body = method != "HEAD" && ![101, 204, 304].contains(&status);
            if has_body && !media_types.is_empty() {
                match content_type.as_deref() {
                    Some(actual) if media_type_documented(&media_types, actual) => {}
                    actual => failures.push(format!(
                        "{what} with Content-Type {actual:?}, not one of {media_types:?}"
                    )),
                }
            }
            for (name, header) in answer["headers"].as_object().into_iter().flatten() {
                if header["required"] == true && !headers.contains_key(name.as_str()) {
                    failures.push(format!("{what} without its required {name}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The links of the creation's `201` lead, by their operationIds and parameters alone,
/// through an upload's life: status, offset, append, download, delete.
#[tokio::test]
async fn the_creations_links_walk_an_upload_through_its_life() {
    let server = TestServer::start();
    let doc = document(&server).await;
    let operations: BTreeMap<&str, (&str, &str)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .filter_map(move |(method, op)| {
                    Some((
                        op["operationId"].as_str()?,
                        (path.as_str(), method.as_str()),
                    ))
                })
        })
        .collect();
    let links = doc["paths"]["/uploads"]["post"]["responses"]["201"]["links"]
        .as_object()
        .expect("the creation's links");
    let answer = client()
        .post(server.url("/uploads"))
        .json(&serde_json::json!({"name": "walk.bin", "size": 3}))
        .send()
        .await
        .expect("create");
    assert_eq!(answer.status(), 201);
    let created_headers = answer.headers().clone();
    let created: Value = answer.json().await.expect("the status");
    // A link's value comes from the creation's body (a JSON pointer) or one of its headers.
    let resolve = |expression: &Value| -> String {
        let expression = expression.as_str().expect("a runtime expression");
        if let Some(name) = expression.strip_prefix("$response.header.") {
            return created_headers[name]
                .to_str()
                .expect("a text header")
                .to_owned();
        }
        let pointer = expression
            .strip_prefix("$response.body#")
            .expect("a value of the response's body or headers");
        match &created.pointer(pointer).expect("the body has it") {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }
    };
    let walk = [
        ("getUpload", 200),
        ("headUpload", 200),
        ("appendToUpload", 200),
        ("getUploadContent", 200),
        ("headUploadContent", 200),
        ("pollUpload", 200),
        ("deleteUpload", 204),
    ];
    for (operation_id, expected) in walk {
        let link = links
            .values()
            .find(|link| link["operationId"] == operation_id)
            .unwrap_or_else(|| panic!("a link to {operation_id}"));
        let (path, method) = operations[operation_id];
        let mut url = path.to_owned();
        let mut request_headers = Vec::new();
        for (name, expression) in link["parameters"].as_object().expect("parameters") {
            let value = resolve(expression);
            match name.strip_prefix("header.") {
                Some(header) => request_headers.push((header.to_owned(), value)),
                None => url = url.replace(&format!("{{{name}}}"), &value),
            }
        }
        let mut request = client().request(
            Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap(),
            server.url(&url),
        );
        for (name, value) in request_headers {
            request = request.header(name, value);
        }
        if operation_id == "appendToUpload" {
            request = request
                .header("Content-Type", "application/octet-stream")
                .body(&b"abc"[..]);
        }
        let response = request.send().await.expect(operation_id);
        assert_eq!(
            response.status(),
            expected,
            "{operation_id}: {method} {url}"
        );
        if operation_id == "getUploadContent" {
            assert_eq!(response.bytes().await.unwrap().as_ref(), b"abc");
        }
    }
}

#[test]
fn route_templates_become_openapi_templates() {
    assert_eq!(
        openapi_template("/uploads/{id}/content"),
        "/uploads/{id}/content"
    );
    assert_eq!(openapi_template("/static/{tail:.*}"), "/static/{tail}");
    assert_eq!(leading_literal("  \"/x\", web::get()"), Some("/x"));
    assert_eq!(leading_literal("web::post()"), None);
}

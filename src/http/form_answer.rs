//! The answer to the upload page's form when JavaScript is off: a browser that posts the form
//! (and prefers `text/html`) reads a small page instead of the status' JSON. Status codes and
//! headers (`Location`, `Upload-Offset`, `Retry-After`, …) stay those of the JSON answer;
//! only the body and its type change. The page has no script and no inline style (the
//! upload page's CSP allows neither); every value in it is escaped.

use actix_web::body::MessageBody;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::HttpResponse;
use serde_json::Value;

use super::respond::{created_json, location};
use super::Ctx;
use crate::error::ApiError;
use crate::upload::Status;

/// Whether the client prefers `text/html` to JSON: a browser's form submission
/// (`text/html,…,*/*;q=0.8`) does; `*/*`, no `Accept` and `application/json` do not.
pub fn wants_html(headers: &HeaderMap) -> bool {
    let accept = headers
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let html = quality(&accept, "text", "html");
    html > 0.0 && html > quality(&accept, "application", "json")
}

/// The weight `accept` gives `kind/subtype`: that of its most specific matching range, 0 if
/// none matches.
fn quality(accept: &str, kind: &str, subtype: &str) -> f32 {
    let mut best: Option<(u8, f32)> = None;
    for entry in accept.split(',') {
        let mut params = entry.split(';');
        let range = params.next().unwrap_or_default().trim();
        let Some((t, s)) = range.split_once('/') else {
            continue;
        };
        let specificity = match (t.trim(), s.trim()) {
            ("*", "*") => 0,
            (t, "*") if t.eq_ignore_ascii_case(kind) => 1,
            (t, s) if t.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(subtype) => 2,
            _ => continue,
        };
        let mut q = 1.0;
        for param in params {
            if let Some((name, value)) = param.split_once('=') {
                if name.trim().eq_ignore_ascii_case("q") {
                    q = match value.trim().parse::<f32>() {
                        Ok(q) if (0.0..=1.0).contains(&q) => q,
                        _ => 0.0,
                    };
                }
            }
        }
        best = match best {
            Some((s, b)) if s > specificity || (s == specificity && b >= q) => Some((s, b)),
            _ => Some((specificity, q)),
        };
    }
    best.map_or(0.0, |(_, q)| q)
}

/// The form's answer as a page: what `respond::created_json` or the error would answer, with
/// an HTML body.
pub fn answer(ctx: &Ctx, result: Result<Status, ApiError>) -> HttpResponse {
    match result {
        Ok(status) => created(ctx, &status),
        Err(error) => failed(ctx, error),
    }
}

fn created(ctx: &Ctx, status: &Status) -> HttpResponse {
    let url = location(ctx, &status.id);
    let name = escape(&status.name);
    let size = status.size.unwrap_or(status.received);
    let sha256 = status.sha256.as_deref().map_or("—".into(), escape);
    let body = format!(
        "<h1>Uploaded {name}</h1>\n\
         <dl>\n\
         <dt>Name</dt><dd>{name}</dd>\n\
         <dt>Size</dt><dd>{size}</dd>\n\
         <dt>SHA-256</dt><dd><code>{sha256}</code></dd>\n\
         </dl>\n\
         <p><a href=\"{url}/content\">Download the stored file</a> · \
         <a href=\"{url}\">Its status (JSON)</a></p>\n\
         <p><a href=\"/\">Upload another file</a></p>",
        size = escape(&bytes(size)),
        url = escape(&url),
    );
    with_page(
        created_json(ctx, status),
        &format!("Uploaded {name}"),
        &body,
    )
}

fn failed(ctx: &Ctx, error: ApiError) -> HttpResponse {
    // The JSON answer is the reference: its status, headers and message (which hides
    // server-side details) are what the page shows.
    let response = HttpResponse::from_error(error);
    let code = response.status();
    let (head, json) = response.into_parts();
    let json: Value = json
        .try_into_bytes()
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let message = json["message"]
        .as_str()
        .or(code.canonical_reason())
        .unwrap_or("the upload failed");
    let mut body = format!(
        "<h1>Upload failed</h1>\n<p>{}</p>\n<p>HTTP {}",
        escape(message),
        code.as_u16(),
    );
    if let Some(error) = json["error"].as_str() {
        body += &format!(" · <code>{}</code>", escape(error));
    }
    body += "</p>\n";
    // A digest mismatch leaves a failed upload the client may inspect.
    if let Some(id) = json["status"]["id"].as_str() {
        body += &format!(
            "<p><a href=\"{}\">The upload's status (JSON)</a></p>\n",
            escape(&location(ctx, id))
        );
    }
    body += "<p><a href=\"/\">Back to the upload page</a></p>";
    with_page(head, "Upload failed", &body)
}

/// `response` with `body` in a page as its body, typed HTML and never cached.
fn with_page<B>(response: HttpResponse<B>, title: &str, body: &str) -> HttpResponse {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} — resumable</title>\n\
         <link rel=\"stylesheet\" href=\"/static/app.css\">\n\
         <link rel=\"icon\" href=\"/static/favicon.svg\" type=\"image/svg+xml\">\n\
         </head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    );
    let (head, _) = response.into_parts();
    let mut response = head.set_body(page).map_into_boxed_body();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `1234567 bytes (1.2 MiB)`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = None;
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = Some(u);
    }
    match unit {
        Some(unit) => format!("{n} bytes ({value:.1} {unit})"),
        None if n == 1 => "1 byte".into(),
        None => format!("{n} bytes"),
    }
}

/// Text made safe for HTML content and quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        crate::http::extract::headers(&[("accept", value)])
    }

    #[test]
    fn browsers_get_html_and_api_clients_json() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(wants_html(&accept(browser)));
        assert!(wants_html(&accept("text/*")));
        assert!(!wants_html(&HeaderMap::new()));
        assert!(!wants_html(&accept("*/*")));
        assert!(!wants_html(&accept("application/json")));
        assert!(!wants_html(&accept("text/html, application/json")));
        assert!(!wants_html(&accept("text/html;q=0, */*")));
        assert!(!wants_html(&accept("application/json, text/html;q=0.9")));
        assert!(wants_html(&accept("application/json;q=0.5, text/html")));
        assert!(!wants_html(&accept("text/html;q=abc")));
    }

    #[test]
    fn escapes_the_five_characters() {
        assert_eq!(
            escape(r#"<b>&"'x"#),
            "&lt;b&gt;&amp;&quot;&#39;x".to_string()
        );
    }

    #[test]
    fn sizes_read_in_bytes_and_binary_units() {
        assert_eq!(bytes(1), "1 byte");
        assert_eq!(bytes(1000), "1000 bytes");
        assert_eq!(bytes(3 * 1024 * 1024), "3145728 bytes (3.0 MiB)");
    }
}

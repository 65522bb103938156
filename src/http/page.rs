//! The upload page and its assets, embedded in the binary so it runs from anywhere.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::extract::parse_id;
use super::Ctx;
use crate::error::ApiError;
use crate::upload::Engine;

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../static/app.js"),
    },
    Asset {
        path: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../static/app.css"),
    },
    Asset {
        path: "format.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../static/format.js"),
    },
    Asset {
        path: "view.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../static/view.js"),
    },
    Asset {
        path: "sha256.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../static/sha256.js"),
    },
    Asset {
        path: "hash-worker.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../static/hash-worker.js"),
    },
    Asset {
        path: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../../static/favicon.svg"),
    },
];

/// `/favicon.ico`, which browsers and tools ask for whatever the page links: the page's icon.
pub async fn favicon() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "image/svg+xml"))
        .insert_header((header::CACHE_CONTROL, "max-age=86400"))
        .body(include_str!("../../static/favicon.svg"))
}

/// The page loads only its own script and style (no inline code), talks only to this
/// service, and no other site may frame it. Its WebSocket is named in `connect-src` too:
/// CSP 3's 'self' covers `ws:` on the same host, older browsers' does not.
fn page_policy(ctx: &Ctx) -> String {
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' {}; form-action 'self'; base-uri 'none'; object-src 'none'; \
         frame-ancestors 'none'",
        ctx.policy.websocket_sources()
    )
}

pub async fn index(ctx: web::Data<Ctx>) -> HttpResponse {
    html(&ctx, include_str!("../../static/index.html"))
}

/// `GET /uploads/{id}/view`: the live view of one upload, for anyone with its id. An id that
/// is malformed, unknown or gone answers as on every per-upload endpoint.
pub async fn view(
    path: web::Path<String>,
    engine: web::Data<Engine>,
    ctx: web::Data<Ctx>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    engine.status(id).await?;
    Ok(html(&ctx, include_str!("../../static/view.html")))
}

fn html(ctx: &Ctx, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, page_policy(ctx)))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

pub async fn asset(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|a| a.path == path.as_str())
        .ok_or(ApiError::RouteNotFound)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        // Revalidate each time: the page and its script must change together after an upgrade.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(asset.body))
}

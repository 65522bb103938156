//! The upload page and its assets, embedded in the binary so it runs from anywhere.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::extract::parse_id;
use super::openapi::UploadIdPath;
use super::Ctx;
use crate::error::{ApiError, ErrorBody};
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

/// The names `GET /static/{path}` serves (for the OpenAPI document).
pub(super) fn asset_names() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|asset| asset.path)
}

/// `/favicon.ico`, which browsers and tools ask for whatever the page links: the page's icon.
#[utoipa::path(
    get,
    path = "/favicon.ico",
    operation_id = "favicon",
    tag = "page",
    summary = "The page's icon (SVG)",
    responses(
        (status = 200, description = "The icon.", content(("image/svg+xml")),
            headers(("Cache-Control" = String, description = "Always `max-age=86400`."))),
    ),
)]
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

/// `GET /`: the upload page.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "page",
    tag = "page",
    summary = "The upload page",
    responses(
        (status = 200, body = String, content_type = "text/html", description = "The page.",
            headers(
                ("Cache-Control" = String, description = "Always `no-cache`."),
                ("Content-Security-Policy" = String, description = "Always: the page's own scripts and styles only, no framing."),
                ("X-Frame-Options" = String, description = "Always `DENY`."),
                ("X-Content-Type-Options" = String, description = "Always `nosniff`."),
            )),
    ),
)]
pub async fn index(ctx: web::Data<Ctx>) -> HttpResponse {
    html(&ctx, include_str!("../../static/index.html"))
}

/// `HEAD /`: the upload page's headers.
#[utoipa::path(
    head,
    path = "/",
    operation_id = "pageHead",
    tag = "page",
    summary = "The upload page's headers",
    responses(
        (status = 200, description = "The page's headers.",
            headers(
                ("Cache-Control" = String, description = "Always `no-cache`."),
                ("Content-Security-Policy" = String, description = "Always: the page's own scripts and styles only, no framing."),
                ("X-Frame-Options" = String, description = "Always `DENY`."),
                ("X-Content-Type-Options" = String, description = "Always `nosniff`."),
            )),
    ),
)]
pub async fn index_head(ctx: web::Data<Ctx>) -> HttpResponse {
    index(ctx).await
}

/// `GET /uploads/{id}/view`: the live view of one upload, for anyone with its id. An id that
/// is malformed, unknown or gone answers as on every per-upload endpoint.
#[utoipa::path(
    get,
    path = "/uploads/{id}/view",
    operation_id = "viewUpload",
    tag = "page",
    summary = "A live view of one upload (HTML)",
    params(UploadIdPath),
    responses(
        (status = 200, body = String, content_type = "text/html", description = "The view.",
            headers(
                ("Cache-Control" = String, description = "Always `no-cache`."),
                ("Content-Security-Policy" = String, description = "Always: the page's own scripts and styles only, no framing."),
                ("X-Frame-Options" = String, description = "Always `DENY`."),
                ("X-Content-Type-Options" = String, description = "Always `nosniff`."),
            )),
        (status = 400, body = ErrorBody, description = "`invalid_id`: not a lowercase UUID with hyphens."),
        (status = 404, body = ErrorBody, description = "`not_found`: no upload has this id."),
        (status = 410, body = ErrorBody, description = "`gone`: the upload was deleted or expired."),
        (status = 500, body = ErrorBody, description = "`database_error` or `internal_error`."),
        (status = 503, body = ErrorBody, description = "`storage_unavailable`: retry later."),
    ),
)]
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

/// `GET /static/{path}`: one of the page's assets.
#[utoipa::path(
    get,
    path = "/static/{path}",
    operation_id = "asset",
    tag = "page",
    summary = "One of the page's assets",
    params(
        ("path" = String, Path, example = "app.js", description = "The asset's name."),
    ),
    responses(
        (status = 200, description = "The asset.",
            content(("text/javascript"), ("text/css"), ("image/svg+xml")),
            headers(("Cache-Control" = String, description = "Always `no-cache`."))),
        (status = 404, body = ErrorBody, description = "`not_found`: no such asset."),
    ),
)]
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

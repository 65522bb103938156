//! The upload page and its assets, embedded in the binary so it runs from anywhere.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::error::ApiError;

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
];

pub async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(include_str!("../../static/index.html"))
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

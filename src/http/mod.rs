//! The HTTP layer: parses requests, calls the engine, writes responses. No SQL, no file I/O.
//!
//! One room per protocol — `native` (with `multipart`), `tus`, `draft`, `tutorial` — each
//! picked by its route guard below; what they share is in `extract` (reading requests),
//! `flow` (creating and appending) and `respond` (answering).

mod access;
mod browser;
mod concat;
mod conn;
mod content;
mod draft;
mod extract;
mod flow;
mod form_answer;
mod hook_context;
mod log;
mod media;
mod metadata;
mod middleware;
mod multipart;
mod native;
mod openapi;
mod origin;
mod page;
mod protocol;
mod range;
mod rate;
mod respond;
mod tus;
mod tutorial;
mod watch;

pub use access::Tokens;
pub use browser::browser_safety;
pub(crate) use conn::body as gated_body;
pub use conn::GatedStream;
pub use hook_context::hook_context;
pub use log::{request_log, RequestLog};
pub use middleware::{limit_header_size, protocol as protocol_middleware};
pub use origin::Policy;
pub use rate::{parse_rate, CreateRate};
pub use watch::WatcherSlots;

use actix_web::http::Method;
use actix_web::{web, HttpResponse};

use crate::error::ApiError;
use protocol::{is_draft, is_tus};

/// What handlers need besides the engine.
pub struct Ctx {
    /// When set, `Location` headers are absolute URLs under it.
    pub public_url: Option<String>,
    /// The service's own origin and host names, and the other origins allowed.
    pub policy: std::sync::Arc<Policy>,
    pub watchers: std::sync::Arc<WatcherSlots>,
    /// With --token, creating an upload needs one of these bearer tokens.
    pub tokens: Tokens,
    /// The largest request head accepted, in bytes.
    pub max_header_size: usize,
    /// Creates per client address.
    pub create_rate: CreateRate,
    /// With --metrics-token, the bearer token GET /metrics needs.
    pub metrics_token: Option<Tokens>,
}

/// The tutorial protocol's routes (only with --tutorial-api).
pub fn tutorial_routes(cfg: &mut web::ServiceConfig) {
    tutorial::routes(cfg);
}

/// The one route table. Where the protocols differ, a guard picks tus' or the draft's
/// handler and the native one is the fallback; the protocol middleware has already refused
/// versions not served and applied `X-HTTP-Method-Override`. Other methods are 405, with
/// `Allow`.
///
/// `GET /openapi.json` describes every route and method here (and the tutorial's); its test
/// (tests/e2e/openapi.rs) reads the paths from this source, so add routes in this form.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/uploads")
            .route(web::post().guard(is_tus).to(tus::create))
            .route(web::post().guard(is_draft).to(draft::create))
            .route(web::post().to(native::create))
            .route(web::method(Method::OPTIONS).to(tus::options))
            .default_service(only("POST, OPTIONS")),
    )
    .service(
        web::resource("/uploads/{id}")
            .route(web::get().to(native::status))
            // tus' HEAD is the native one.
            .route(web::head().guard(is_draft).to(draft::head))
            .route(web::head().to(native::head))
            .route(web::patch().guard(is_tus).to(tus::append))
            .route(web::patch().guard(is_draft).to(draft::append))
            .route(web::patch().to(native::append))
            // tus termination is the native DELETE.
            .route(web::delete().to(native::delete))
            .route(web::method(Method::OPTIONS).to(tus::options_upload))
            .default_service(only("GET, HEAD, PATCH, DELETE, OPTIONS")),
    )
    .service(
        web::resource("/uploads/{id}/content")
            .route(web::get().to(content::content))
            .route(web::head().to(content::head))
            .default_service(only("GET, HEAD")),
    )
    .service(get_only("/uploads/{id}/poll").route(web::get().to(watch::poll)))
    .service(get_only("/uploads/{id}/ws").route(web::get().to(watch::websocket)))
    .service(get_only("/uploads/{id}/events").route(web::get().to(watch::events)))
    .service(get_only("/uploads/{id}/view").route(web::get().to(page::view)))
    .service(get_only("/healthz").route(web::get().to(native::healthz)))
    .service(get_only("/metrics").route(web::get().to(native::metrics)))
    .service(
        web::resource("/")
            .route(web::get().to(page::index))
            .route(web::head().to(page::index_head))
            .default_service(only("GET, HEAD")),
    )
    .service(get_only("/static/{path}").route(web::get().to(page::asset)))
    .service(get_only("/favicon.ico").route(web::get().to(page::favicon)))
    .service(get_only("/openapi.json").route(web::get().to(openapi::document)))
    .default_service(web::to(not_found));
}

/// A path that takes only GET; any other method is 405.
fn get_only(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(only("GET"))
}

/// The answer to a method a path does not take: 405, with `Allow: <allow>`.
fn only(allow: &'static str) -> actix_web::Route {
    web::to(move || async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow }) })
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound)
}

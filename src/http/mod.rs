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
use actix_web::{guard, web, HttpResponse};

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
/// versions not served and applied `X-HTTP-Method-Override`. Other methods are 405.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/uploads")
            .route(web::post().guard(is_tus).to(tus::create))
            .route(web::post().guard(is_draft).to(draft::create))
            .route(web::post().to(native::create))
            .route(web::method(Method::OPTIONS).to(tus::options))
            .default_service(web::to(method_not_allowed)),
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
            .route(web::method(Method::OPTIONS).to(tus::options))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/uploads/{id}/content")
            .route(
                web::route()
                    .guard(guard::Any(guard::Get()).or(guard::Head()))
                    .to(content::content),
            )
            .default_service(web::to(method_not_allowed)),
    )
    .route("/uploads/{id}/poll", web::get().to(watch::poll))
    .route("/uploads/{id}/ws", web::get().to(watch::websocket))
    .route("/uploads/{id}/events", web::get().to(watch::events))
    .route("/uploads/{id}/view", web::get().to(page::view))
    .route("/healthz", web::get().to(native::healthz))
    .route("/metrics", web::get().to(native::metrics))
    .route(
        "/",
        web::route()
            .guard(guard::Any(guard::Get()).or(guard::Head()))
            .to(page::index),
    )
    .route("/static/{path}", web::get().to(page::asset))
    .route("/favicon.ico", web::get().to(page::favicon))
    .default_service(web::to(not_found));
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound)
}

//! The HTTP layer: parses requests, calls the engine, writes responses. No SQL, no file I/O.

mod access;
mod browser;
mod conn;
mod headers;
mod multipart;
mod native;
mod origin;
mod page;
mod range;
mod rate;
mod tus;
mod tutorial;
mod watch;

pub use access::Tokens;
pub use browser::browser_safety;
pub(crate) use conn::body as gated_body;
pub use conn::GatedStream;
pub use origin::Policy;
pub use rate::{parse_rate, CreateRate};
pub use tus::middleware as protocol_middleware;
pub use watch::WatcherSlots;

use actix_web::{guard, web, HttpResponse};

use crate::error::ApiError;

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

/// 431 for a request head larger than --max-header-size (actix's own limit is 128 KiB).
pub async fn limit_header_size(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<
    actix_web::dev::ServiceResponse<actix_web::body::EitherBody<impl actix_web::body::MessageBody>>,
    actix_web::Error,
> {
    let limit = req
        .app_data::<web::Data<Ctx>>()
        .map_or(usize::MAX, |ctx| ctx.max_header_size);
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + req.uri().to_string().len();
    if size > limit {
        let response = ApiError::HeadersTooLarge(limit);
        return Ok(req.error_response(response).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// The tutorial protocol's routes (only with --tutorial-api).
pub fn tutorial_routes(cfg: &mut web::ServiceConfig) {
    tutorial::routes(cfg);
}

/// The one route table.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/uploads")
            .route(web::post().to(native::create))
            .route(web::method(actix_web::http::Method::OPTIONS).to(tus::options))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/uploads/{id}")
            .route(web::get().to(native::status))
            .route(web::head().to(native::head))
            .route(web::patch().to(native::append))
            .route(web::delete().to(native::delete))
            .route(web::method(actix_web::http::Method::OPTIONS).to(tus::options))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/uploads/{id}/content")
            .route(
                web::route()
                    .guard(guard::Any(guard::Get()).or(guard::Head()))
                    .to(native::content),
            )
            .default_service(web::to(method_not_allowed)),
    )
    .route("/uploads/{id}/poll", web::get().to(watch::poll))
    .route("/uploads/{id}/ws", web::get().to(watch::websocket))
    .route("/uploads/{id}/events", web::get().to(watch::events))
    .route("/healthz", web::get().to(native::healthz))
    .route("/metrics", web::get().to(native::metrics))
    .route(
        "/",
        web::route()
            .guard(guard::Any(guard::Get()).or(guard::Head()))
            .to(page::index),
    )
    .route("/static/{path}", web::get().to(page::asset))
    .default_service(web::to(not_found));
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound)
}

//! Browser safety before any handler runs: a request naming another host while the service
//! is bound to loopback is refused (DNS rebinding), and one that would create or change an
//! upload from a foreign page (`Origin` not allowed, `null` included) is refused before
//! anything is stored. Requests without `Origin` (curl, tus clients outside a browser) pass.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::web;

use super::Ctx;
use crate::error::ApiError;

pub async fn browser_safety(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if let Some(error) = refusal(&req) {
        return Ok(req.error_response(error).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

fn refusal(req: &ServiceRequest) -> Option<ApiError> {
    let ctx = req.app_data::<web::Data<Ctx>>()?;
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    if !ctx.policy.host_allowed(host) {
        return Some(ApiError::MisdirectedRequest(
            host.unwrap_or_default().chars().take(100).collect(),
        ));
    }
    let writes = [Method::POST, Method::PATCH, Method::DELETE, Method::PUT];
    if !writes.contains(req.method()) {
        return None;
    }
    let origin = req.headers().get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("?").trim();
    (!ctx.policy.origin_allowed(origin))
        .then(|| ApiError::ForbiddenOrigin(origin.chars().take(100).collect()))
}

//! What runs around every handler: the method override, the protocols' version checks and
//! answer headers, and the request head size limit.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web;

use super::protocol::{protocol_of, Protocol};
use super::tus::TUS_VERSION;
use super::{draft, Ctx};
use crate::error::ApiError;
use crate::upload::{Engine, UploadError};

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");

/// Method override, protocol version checks, `Tus-Resumable` on every tus answer, tus' 404
/// for an id that is not one, and the draft's `Upload-Limit` on a 413.
pub async fn protocol(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    override_method(&mut req);
    let protocol = protocol_of(req.headers());
    let is_options = req.method() == Method::OPTIONS;
    if let Some(error) = unsupported_version(req.headers(), protocol, is_options) {
        let mut response = req.error_response(error);
        if protocol == Protocol::Tus {
            response
                .headers_mut()
                .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
        }
        return Ok(response.map_into_right_body());
    }
    let response = next.call(req).await?;
    let mut response = if protocol == Protocol::Tus && names_an_invalid_id(&response) {
        // tus knows no malformed id: an id that cannot name an upload names none (404), where
        // the native API and the draft answer 400 invalid_id.
        let (req, _) = response.into_parts();
        ServiceResponse::from_err(ApiError::Upload(UploadError::NotFound), req)
            .map_into_right_body()
    } else {
        response.map_into_left_body()
    };
    if protocol == Protocol::Draft(8) && response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        // The draft wants the limits on a 413 that they caused.
        let max = response
            .request()
            .app_data::<web::Data<Engine>>()
            .and_then(|engine| engine.settings().max_upload_size);
        if let Some(value) = max.and_then(|m| HeaderValue::from_str(&draft::size_limit(m)).ok()) {
            response
                .headers_mut()
                .insert(HeaderName::from_static("upload-limit"), value);
        }
    }
    if protocol == Protocol::Tus || is_options {
        response
            .headers_mut()
            .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    }
    Ok(response)
}

/// Whether the handler refused the id in the path as malformed (`parse_id`'s `invalid_id`).
fn names_an_invalid_id<B>(response: &ServiceResponse<B>) -> bool {
    response
        .response()
        .error()
        .and_then(|error| error.as_error::<ApiError>())
        .is_some_and(|error| error.code() == "invalid_id")
}

/// Clients behind proxies that drop PATCH or DELETE send POST with the real method in
/// `X-HTTP-Method-Override`; it is taken before routing.
fn override_method(req: &mut ServiceRequest) {
    if req.method() != Method::POST {
        return;
    }
    let wanted = req
        .headers()
        .get("X-HTTP-Method-Override")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Method::from_bytes(v.trim().to_ascii_uppercase().as_bytes()).ok());
    if let Some(method) = wanted {
        req.head_mut().method = method;
    }
}

/// 412 for a tus version other than ours (OPTIONS excepted: it is how a client learns it);
/// 400 for a draft interop version not served.
fn unsupported_version(
    headers: &HeaderMap,
    protocol: Protocol,
    is_options: bool,
) -> Option<ApiError> {
    match protocol {
        Protocol::Tus if !is_options => {
            let version = headers.get("Tus-Resumable").and_then(|v| v.to_str().ok());
            (version.map(str::trim) != Some(TUS_VERSION))
                .then_some(ApiError::UnsupportedTusVersion(TUS_VERSION))
        }
        Protocol::Draft(version) if !draft::INTEROP_VERSIONS.contains(&version) => {
            Some(ApiError::bad_request(
                "unsupported_draft_version",
                format!(
                    "supported Upload-Draft-Interop-Version values: {:?}",
                    draft::INTEROP_VERSIONS
                ),
            ))
        }
        _ => None,
    }
}

/// 431 for a request head larger than --max-header-size (actix's own limit is 128 KiB).
pub async fn limit_header_size(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
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

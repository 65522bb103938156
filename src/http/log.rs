//! The request log: one `request` line per answered request, from the outermost middleware
//! (tracing-actix-web's `TracingLogger`), so requests the other middlewares refuse (431, 412,
//! 403/421, CORS) are logged too. Each request runs in a `request` span naming its upload,
//! so whatever a handler logs says which upload it was about.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage};
use tracing::Span;
use tracing_actix_web::{RootSpanBuilder, TracingLogger};

/// The logging middleware, to be wrapped outermost.
pub fn request_log() -> TracingLogger<RequestLog> {
    TracingLogger::new()
}

pub struct RequestLog;

/// When the request reached the logger.
struct Started(Instant);

/// The upload a path is about: the segment after `/uploads/`, or "".
fn upload_of(path: &str) -> &str {
    path.strip_prefix("/uploads/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
}

impl RootSpanBuilder for RequestLog {
    fn on_request_start(request: &ServiceRequest) -> Span {
        request.extensions_mut().insert(Started(Instant::now()));
        match upload_of(request.path()) {
            "" => tracing::info_span!("request"),
            upload => tracing::info_span!("request", upload),
        }
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let _entered = span.enter();
        // The target the request line has always had, so RUST_LOG filters keep working.
        match outcome {
            Ok(response) => {
                let request = response.request();
                let (method, path) = (request.method(), request.path());
                let ms = request
                    .extensions()
                    .get::<Started>()
                    .map(|started| started.0.elapsed().as_millis() as u64);
                tracing::info!(target: "resumable::startup", %method, %path,
                               upload = upload_of(path), status = response.status().as_u16(),
                               ms, "request");
            }
            // Middlewares answer refusals with responses; an error here is actix's own.
            Err(error) => {
                let status = error.as_response_error().status_code().as_u16();
                tracing::info!(target: "resumable::startup", status, error = %error, "request");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_is_the_segment_after_uploads() {
        assert_eq!(upload_of("/uploads/abc"), "abc");
        assert_eq!(upload_of("/uploads/abc/content"), "abc");
        assert_eq!(upload_of("/uploads"), "");
        assert_eq!(upload_of("/healthz"), "");
    }
}

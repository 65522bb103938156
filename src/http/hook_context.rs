//! Hands the engine the request it serves, for the hook events it raises (see
//! `hooks::REQUEST`): every protocol's handlers run inside it.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;

use crate::hooks::{RequestInfo, REQUEST};
use crate::upload::Engine;

pub async fn hook_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let hooked = req
        .app_data::<web::Data<Engine>>()
        .is_some_and(|engine| engine.has_hooks());
    // Reads raise no events: they go by without the copy.
    if !hooked || matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.call(req).await;
    }
    let info = Arc::new(describe(&req));
    REQUEST.scope(Some(info), next.call(req)).await
}

fn describe(req: &ServiceRequest) -> RequestInfo {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    RequestInfo {
        method: req.method().to_string(),
        path: req.path().to_owned(),
        remote_addr: req.peer_addr().map(|addr| addr.to_string()),
        headers,
    }
}

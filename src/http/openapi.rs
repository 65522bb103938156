//! `GET /openapi.json`: the HTTP API as an OpenAPI 3.1 document, generated from the code and
//! built once. API.md stays the prose reference; this is what tools (fuzzers, client
//! generators) read, and `tests/e2e/openapi.rs` holds it to the route table and to the live
//! server.
//!
//! Each operation is the `#[utoipa::path]` beside its handler; the schemas are the types the
//! handlers serialize (`Status`, `ErrorBody`, …). Where one path and method serve several
//! protocols (native, tus, the IETF draft), the native handler carries the one operation and
//! describes the others' headers and answers. What holds for every answer because a
//! middleware or `error.rs` makes it hold is added by `Rules`, in one place, as it is in the
//! code.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::HttpResponse;
use serde_json::{Map, Value};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Required};
use utoipa::{Modify, OpenApi, PartialSchema};

use crate::hooks::EventKind;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "resumable",
        version = env!("CARGO_PKG_VERSION"),
        description = "A resumable file upload service: byte-exact, durable, watchable live, \
            tus-compatible. One resource, three dialects: a request is read by the rules of \
            tus 1.0.0 when it carries `Tus-Resumable`, of the IETF resumable-uploads draft \
            when it carries `Upload-Draft-Interop-Version`, and of the native API otherwise. \
            An upload's id is the capability: whoever knows it may read, append to, watch, \
            download and delete it. Every error answer is JSON (`ErrorBody`) with \
            `Cache-Control: no-store`. docs/API.md is the prose reference.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(
        super::native::create,
        super::tus::options,
        super::native::status,
        super::native::head,
        super::native::append,
        super::native::delete,
        super::tus::options_upload,
        super::content::content,
        super::content::head,
        super::watch::poll,
        super::watch::websocket,
        super::watch::events,
        super::page::view,
        super::native::healthz,
        super::native::metrics,
        super::page::index,
        super::page::index_head,
        super::page::asset,
        super::page::favicon,
        document,
        super::tutorial::status,
        super::tutorial::upload,
    ),
    components(schemas(crate::hooks::event::Wire)),
    modifiers(&Rules),
    tags(
        (name = "uploads", description = "Creating, appending to, reading and removing uploads, in every protocol."),
        (name = "progress", description = "Following an upload while someone else sends it: long poll, Server-Sent Events, WebSocket."),
        (name = "page", description = "The upload page, its assets and the live view of one upload."),
        (name = "service", description = "Health, metrics and this document."),
        (name = "tutorial", description = "javascript.info's \"Resumable file upload\" protocol: only with `--tutorial-api`."),
    ),
)]
struct ApiDoc;

/// The `{id}` of the per-upload paths.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(super) struct UploadIdPath {
    /// The upload's id: a UUID, lowercase with hyphens. Natively a malformed one is
    /// `400 invalid_id`, in tus `404 not_found`.
    #[param(
        format = "uuid",
        pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    id: String,
}

/// The headers that pick a protocol on a per-upload path (without them: native).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(super) struct ProtocolHeaders {
    /// tus: `1.0.0`; any other is `412`. A malformed id is then `404`.
    #[param(rename = "Tus-Resumable", pattern = r"^1\.0\.0$", example = "1.0.0")]
    tus_resumable: Option<String>,
    /// The IETF draft's interop version, `6` or `8`; any other is `400`.
    #[param(
        rename = "Upload-Draft-Interop-Version",
        pattern = "^(6|8)$",
        example = "8"
    )]
    upload_draft_interop_version: Option<String>,
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "service",
    summary = "This document: the HTTP API as OpenAPI 3.1",
    responses(
        (status = 200, description = "The OpenAPI document, generated from the code.",
            content((Object = "application/json")),
            headers(("Cache-Control" = String, description = "Always `no-cache`."))),
    ),
)]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(text())
}

/// The document as JSON text, built on first use.
pub fn text() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        // Serialising strings, numbers and maps with string keys cannot fail.
        let mut json = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        mark_required_headers(&mut json);
        fix_utoipa_output(&mut json);
        describe_hooks(&mut json);
        serde_json::to_string(&json).unwrap_or_default()
    })
}

/// What holds for every operation because the middlewares and `error.rs` make it hold.
struct Rules;

impl Modify for Rules {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "`--token` (creation) or `--metrics-token` (GET /metrics); \
                             without them these operations need none.",
                        ))
                        .build(),
                ),
            );
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, operation) in operations(item) {
                apply_rules(path, method, operation);
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("options", item.options.as_mut()),
        ("head", item.head.as_mut()),
        ("patch", item.patch.as_mut()),
        ("trace", item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, operation)| Some((method, operation?)))
}

fn has_header_parameter(operation: &Operation, name: &str) -> bool {
    operation.parameters.iter().flatten().any(|parameter| {
        parameter.parameter_in == ParameterIn::Header && parameter.name.eq_ignore_ascii_case(name)
    })
}

fn apply_rules(path: &str, method: &str, operation: &mut Operation) {
    let head = method == "head";
    let id = operation.operation_id.clone().unwrap_or_default();
    let tus = has_header_parameter(operation, "Tus-Resumable");
    let draft = has_header_parameter(operation, "Upload-Draft-Interop-Version");
    // An answer about an upload may carry its offset (`received`).
    let about_an_upload = path.starts_with("/uploads") || path == "/upload";

    if id == "createUpload" {
        // tus and draft creations may send no body at all.
        if let Some(body) = operation.request_body.as_mut() {
            body.required = Some(Required::False);
        }
    }
    if id == "asset" {
        // The names the handler serves, from its own list.
        for parameter in operation.parameters.iter_mut().flatten() {
            if parameter.parameter_in == ParameterIn::Path {
                let names = ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(super::page::asset_names()))
                    .build();
                parameter.schema = Some(RefOr::T(Schema::Object(names)));
            }
        }
    }

    if id == "getUploadContent" || id == "headUploadContent" {
        download_headers(&mut operation.responses.responses);
    }

    // The middlewares in front of every route (see startup.rs).
    let responses = &mut operation.responses.responses;
    responses.entry("421".into()).or_insert_with(|| {
        error_response(
            head,
            "`misdirected_request`: bound to loopback, the `Host` is not one of the service's \
             names.",
        )
    });
    responses.entry("431".into()).or_insert_with(|| {
        error_response(
            head,
            "`headers_too_large`: the request head is larger than `--max-header-size`.",
        )
    });

    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let status: u16 = status.parse().unwrap_or(0);
        let headers = &mut response.headers;
        if tus {
            // The protocol middleware's, on every answer to a tus request.
            add_header(headers, "Tus-Resumable", string_header("tus: `1.0.0`."));
        }
        if status < 400 {
            continue;
        }
        // What error.rs puts on error answers.
        add_header(
            headers,
            "Cache-Control",
            string_header("Always `no-store`."),
        );
        if about_an_upload {
            add_header(
                headers,
                "Upload-Offset",
                integer_header("The upload's `received`, when the error carries it."),
            );
        }
        match status {
            401 => add_header(
                headers,
                "WWW-Authenticate",
                string_header("Always `Bearer`."),
            ),
            412 => add_header(headers, "Tus-Version", string_header("Always `1.0.0`.")),
            416 => add_header(
                headers,
                "Content-Range",
                string_header("Always `bytes */<length>`."),
            ),
            429 | 503 => add_header(
                headers,
                "Retry-After",
                integer_header(
                    "Seconds to wait, where waiting helps: `rate_limited`, `too_many_appends`, \
                     `storage_unavailable`, `hook_unavailable`.",
                ),
            ),
            413 if draft => add_header(
                headers,
                "Upload-Limit",
                string_header("draft 8: `max-size=…`, when `--max-upload-size` is set."),
            ),
            _ => {}
        }
        if id == "createUpload" {
            add_header(
                headers,
                "Location",
                string_header(
                    "The upload this request created, when its data then failed: resume it.",
                ),
            );
        }
    }
}

/// What `content::content` puts on every download answer, GET or HEAD, whole, range or 304.
fn download_headers(responses: &mut std::collections::BTreeMap<String, RefOr<Response>>) {
    for status in ["200", "206", "304"] {
        let Some(RefOr::T(response)) = responses.get_mut(status) else {
            continue;
        };
        for (name, description) in [
            (
                "Content-Disposition",
                "Always `attachment; filename=\"…\"; filename*=UTF-8''…`.",
            ),
            ("ETag", "Always: the file's SHA-256 in quotes."),
            ("Accept-Ranges", "Always `bytes`."),
            ("Cache-Control", "Always `private, no-cache`."),
            ("X-Content-Type-Options", "Always `nosniff`."),
            ("Content-Security-Policy", "Always `sandbox`."),
        ] {
            add_header(&mut response.headers, name, string_header(description));
        }
    }
}

/// An error answer: `ErrorBody` as JSON (no body for a HEAD request).
fn error_response(head: bool, description: &str) -> RefOr<Response> {
    let mut response = ResponseBuilder::new().description(description);
    if !head {
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build();
        response = response.content("application/json", content);
    }
    RefOr::T(response.build())
}

fn add_header(
    headers: &mut std::collections::BTreeMap<String, Header>,
    name: &str,
    header: Header,
) {
    headers.entry(name.to_owned()).or_insert(header);
}

fn string_header(description: &str) -> Header {
    HeaderBuilder::new()
        .schema(String::schema())
        .description(Some(description))
        .build()
}

fn integer_header(description: &str) -> Header {
    HeaderBuilder::new()
        .schema(u64::schema())
        .description(Some(description))
        .build()
}

/// Every operation of the document as JSON, and each of its responses.
fn each_operation(json: &mut Value, mut visit: impl FnMut(&mut Map<String, Value>)) {
    let paths = json.get_mut("paths").and_then(Value::as_object_mut);
    for item in paths.into_iter().flat_map(|p| p.values_mut()) {
        for operation in item
            .as_object_mut()
            .into_iter()
            .flat_map(|i| i.values_mut())
        {
            if let Some(operation) = operation.as_object_mut() {
                visit(operation);
            }
        }
    }
}

/// The objects inside `object[field]` (a response's headers, say).
fn members<'a>(
    object: &'a mut Map<String, Value>,
    field: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    object
        .get_mut(field)
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|m| m.values_mut())
        .filter_map(Value::as_object_mut)
}

/// utoipa's headers have no `required`: a header described as "Always …" is marked required,
/// so that a client (or a fuzzer's conformance check) may count on it.
fn mark_required_headers(json: &mut Value) {
    each_operation(json, |operation| {
        for response in members(operation, "responses") {
            for header in members(response, "headers") {
                let always = header
                    .get("description")
                    .and_then(Value::as_str)
                    .is_some_and(|d| d.starts_with("Always"));
                if always {
                    header.insert("required".into(), Value::Bool(true));
                }
            }
        }
    });
}

/// Two things utoipa 5.5 writes that OpenAPI does not say: a link's `operationId` (and
/// `operationRef`, `requestBody`) in snake case, and an optional header parameter as
/// nullable (a header is absent or a string, never `null`).
fn fix_utoipa_output(json: &mut Value) {
    each_operation(json, |operation| {
        let parameters = operation
            .get_mut("parameters")
            .and_then(Value::as_array_mut);
        for parameter in parameters.into_iter().flatten() {
            if parameter.get("in").and_then(Value::as_str) == Some("header") {
                not_nullable(parameter);
            }
        }
        for response in members(operation, "responses") {
            for link in members(response, "links") {
                for (from, to) in [
                    ("operation_id", "operationId"),
                    ("operation_ref", "operationRef"),
                    ("request_body", "requestBody"),
                ] {
                    if let Some(value) = link.remove(from) {
                        link.insert(to.into(), value);
                    }
                }
            }
        }
    });
}

/// `"type": ["string", "null"]` in a parameter's schema becomes `"type": "string"`.
fn not_nullable(parameter: &mut Value) {
    let Some(types) = parameter
        .pointer_mut("/schema/type")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    types.retain(|t| t != "null");
    if let [only] = types.as_slice() {
        let only = only.clone();
        if let Some(schema) = parameter.get_mut("schema").and_then(Value::as_object_mut) {
            schema.insert("type".into(), only);
        }
    }
}

/// The hook event: its `type` is one of the event kinds, and it is what the service POSTs to
/// `--hooks-url` (an OpenAPI 3.1 webhook; utoipa has none, so it is added here).
fn describe_hooks(json: &mut Value) {
    let kinds: Vec<Value> = EventKind::ALL
        .iter()
        .map(|kind| Value::from(kind.as_str()))
        .collect();
    if let Some(kind) = json
        .pointer_mut("/components/schemas/HookEvent/properties/type")
        .and_then(Value::as_object_mut)
    {
        kind.insert("enum".into(), Value::Array(kinds));
    }
    if let Some(doc) = json.as_object_mut() {
        doc.insert(
            "webhooks".into(),
            serde_json::json!({
                "hookEvent": {
                    "post": {
                        "operationId": "hookEvent",
                        "summary": "A hook event, sent to --hooks-url",
                        "description": "With `--hooks-url`, each event of `--hooks-events` is \
                            POSTed as JSON (`--hooks-command` gets the same JSON on its standard \
                            input). With `--hooks-secret`, the request carries \
                            `Resumable-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">`. \
                            A `pre-*` hook may answer `{\"reject\": {\"status\": 403, \"message\": \"…\"}}`; \
                            `pre-create` may also set `name`, `content_type` and `metadata`. \
                            Delivery of `post-*` events is at least once, in order per upload: \
                            drop repeats by `event_id`.",
                        "requestBody": {
                            "required": true,
                            "content": {
                                "application/json": {
                                    "schema": { "$ref": "#/components/schemas/HookEvent" }
                                }
                            }
                        },
                        "responses": {
                            "2XX": { "description": "Delivered (a `pre-*` hook's JSON answer decides)." }
                        }
                    }
                }
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Value {
        serde_json::from_str(text()).expect("the document is JSON")
    }

    #[test]
    fn the_document_is_openapi_3_1_of_this_version() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn operation_ids_are_unique_and_links_name_them() {
        let doc = document();
        let mut ids = Vec::new();
        let mut linked = Vec::new();
        for item in doc["paths"].as_object().expect("paths").values() {
            for operation in item.as_object().expect("a path item").values() {
                ids.push(operation["operationId"].as_str().expect("an operationId"));
                for response in operation["responses"]
                    .as_object()
                    .expect("responses")
                    .values()
                {
                    for link in response["links"].as_object().into_iter().flatten() {
                        linked.push(
                            link.1["operationId"]
                                .as_str()
                                .expect("a link's operationId"),
                        );
                    }
                }
            }
        }
        let unique: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "operationIds: {ids:?}");
        linked.sort_unstable();
        assert_eq!(
            linked,
            [
                "appendToUpload",
                "deleteUpload",
                "getUpload",
                "getUploadContent",
                "headUpload",
                "headUploadContent",
                "pollUpload"
            ]
        );
        for target in linked {
            assert!(ids.contains(&target), "a link to {target}");
        }
    }

    #[test]
    fn error_answers_are_error_bodies_with_their_headers() {
        let doc = document();
        let create = &doc["paths"]["/uploads"]["post"]["responses"];
        let unauthorized = &create["401"];
        assert_eq!(
            unauthorized["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        assert_eq!(
            unauthorized["headers"]["WWW-Authenticate"]["required"],
            true
        );
        assert_eq!(unauthorized["headers"]["Cache-Control"]["required"], true);
        assert!(unauthorized["headers"]["Location"]["required"].is_null());
        assert_eq!(create["201"]["headers"]["Location"]["required"], true);
        let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
        assert_eq!(
            codes.as_array().map(Vec::len),
            Some(crate::error::ERROR_CODES.len())
        );
        let head = &doc["paths"]["/uploads/{id}"]["head"]["responses"]["404"];
        assert!(head["content"].is_null(), "a HEAD answer has no body");
    }
}

//! The JSON/curl API of API.md: create (JSON or a form), status, HEAD, append, delete; and
//! the operator's health and metrics endpoints.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::extract::{client, content_type, detached, is_media_type, parse_id, read_limited};
use super::openapi::{ProtocolHeaders, UploadIdPath};
use super::respond::{self, status_response};
use super::{concat, flow, form_answer, multipart, tus, Ctx};
use crate::error::{ApiError, ErrorBody};
use crate::upload::input::parse_sha256_hex;
use crate::upload::{Engine, NewUpload, Status, UploadId};

/// A JSON creation body is a few hundred bytes; this is generous.
const JSON_BODY_LIMIT: usize = 64 * 1024;

/// `POST /uploads`: JSON describes an upload; multipart carries the file itself.
///
/// The one operation of `POST /uploads` in the OpenAPI document: the route table sends tus
/// and draft creations to `tus::create` and `draft::create`, described here too.
#[utoipa::path(
    post,
    path = "/uploads",
    operation_id = "createUpload",
    tag = "uploads",
    summary = "Create an upload (native JSON or form, tus, or the IETF draft)",
    description = "One resource, three dialects. **Native**: a JSON description \
        (`application/json`, answered with the status) or the file itself as a form \
        (`multipart/form-data`, one part named `file`, answered with the complete upload; a \
        browser whose `Accept` prefers `text/html` gets a small HTML page with the same status \
        and headers). **tus 1.0.0** (`Tus-Resumable`): `Upload-Length` or \
        `Upload-Defer-Length: 1`, optionally the first bytes as \
        `application/offset+octet-stream`, or `Upload-Concat`; answered `201` with the status. \
        **IETF draft** (`Upload-Draft-Interop-Version`, without `Tus-Resumable`): optionally \
        the first bytes, or all of them with `Upload-Complete: ?1`; answered `201` with the \
        status. With `--token`, creation needs `Authorization: Bearer <token>`. Creations count \
        against `--create-rate`. A `pre-create` hook, when configured, may refuse with a \
        status of its choosing (`rejected`). `X-HTTP-Method-Override` on a `POST` turns it \
        into the named method before routing.",
    params(
        ("Tus-Resumable" = Option<String>, Header, pattern = r"^1\.0\.0$", example = "1.0.0",
            description = "tus: the protocol version, `1.0.0`; any other is `412 unsupported_version`."),
        ("Upload-Draft-Interop-Version" = Option<String>, Header, pattern = "^(6|8)$", example = "8",
            description = "The IETF draft's interop version, `6` (draft-05) or `8`; any other is `400 unsupported_draft_version`. Ignored with `Tus-Resumable`."),
        ("Upload-Length" = Option<u64>, Header,
            description = "tus and draft: the upload's total length in bytes (tus needs it or `Upload-Defer-Length: 1`)."),
        ("Upload-Defer-Length" = Option<String>, Header, pattern = "^1$",
            description = "tus: `1` when the length is not known yet."),
        ("Upload-Metadata" = Option<String>, Header,
            description = "tus and draft: comma-separated `key base64value` pairs; `filename` (or `name`) names the upload, `filetype` (or `type`) is its content type."),
        ("Upload-Concat" = Option<String>, Header,
            description = "tus concatenation: `partial` creates a part; `final;<url> <url> …` the upload made of those parts."),
        ("Upload-Complete" = Option<String>, Header, pattern = r"^\?[01]$",
            description = "draft: `?1` when the body is the whole file, `?0` when more follows."),
        ("Upload-Checksum" = Option<String>, Header,
            description = "tus checksum of the creation's body: `sha1 <base64>` or `sha256 <base64>`."),
        ("Content-Digest" = Option<String>, Header,
            description = "RFC 9530 checksum of the creation's body: `sha-256=:<base64>:`."),
    ),
    request_body(
        description = "Native: a JSON description or a form with the file. tus and draft: \
            nothing, or the first bytes (all of them with the draft's `Upload-Complete: ?1`).",
        content(
            (CreateUpload = "application/json"),
            (super::multipart::CreateForm = "multipart/form-data"),
            (String = "application/offset+octet-stream"),
        ),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "Created. Native: the status as JSON (the form's upload \
            is complete; a browser may get an HTML page). tus and draft: the status as JSON too.",
            content(
                (Status = "application/json"),
                (String = "text/html"),
            ),
            headers(
                ("Location" = String, description = "Always: the upload's URL, relative or under `--public-url`."),
                ("Upload-Offset" = u64, description = "Always: the bytes received (the next append's offset)."),
                ("Cache-Control" = String, description = "Always: `no-store`."),
                ("Upload-Expires" = String, description = "tus: when the upload expires if nobody appends, as an HTTP date."),
                ("Upload-Complete" = String, description = "draft: `?1` once the upload is complete, else `?0`."),
                ("Upload-Limit" = String, description = "draft 8: `max-size=…, max-age=…`, where they apply."),
            ),
            links(
                ("GetUpload" = (operation_id = "getUpload", parameters(("id" = "$response.body#/id")),
                    description = "The upload's status.")),
                ("HeadUpload" = (operation_id = "headUpload", parameters(("id" = "$response.body#/id")),
                    description = "The upload's offset and length, in headers.")),
                ("AppendToUpload" = (operation_id = "appendToUpload",
                    parameters(("id" = "$response.body#/id"), ("header.Upload-Offset" = "$response.header.Upload-Offset")),
                    description = "Append bytes at the upload's offset.")),
                ("GetUploadContent" = (operation_id = "getUploadContent", parameters(("id" = "$response.body#/id")),
                    description = "Download the file, once complete.")),
                ("HeadUploadContent" = (operation_id = "headUploadContent", parameters(("id" = "$response.body#/id")),
                    description = "The download's headers, once complete.")),
                ("PollUpload" = (operation_id = "pollUpload", parameters(("id" = "$response.body#/id")),
                    description = "The status again, or once it moves past a `received` the caller names.")),
                ("DeleteUpload" = (operation_id = "deleteUpload", parameters(("id" = "$response.body#/id")),
                    description = "Cancel the upload.")),
            ),
        ),
        (status = 400, body = ErrorBody, description = "A malformed request: `invalid_json`, \
            `invalid_body`, `invalid_name`, `invalid_size`, `invalid_content_type`, \
            `invalid_sha256`, `invalid_form`, `missing_file`, `incomplete_body`, \
            `invalid_concat`, `not_partial`, `invalid_id` (in `parts`), `invalid_length`, \
            `invalid_content_length`, `invalid_checksum`, `unsupported_checksum_algorithm`, \
            `checksum_incomplete`, `invalid_metadata`, `invalid_upload_complete`, \
            `unsupported_draft_version`."),
        (status = 401, body = ErrorBody, description = "`unauthorized`: `--token` is set and the request has no valid bearer token."),
        (status = 403, body = ErrorBody, description = "`forbidden_origin`: a browser's `Origin` that may not write here."),
        (status = 404, body = ErrorBody, description = "`not_found`: a part named in `parts` or `Upload-Concat: final` does not exist."),
        (status = 408, body = ErrorBody, description = "`idle_timeout` or `body_too_slow`: the creation's body stalled; an upload it created keeps what arrived."),
        (status = 409, body = ErrorBody, description = "`partial_taken` (a part already belongs to another upload), or for a creation with data `length_mismatch`, `superseded`."),
        (status = 410, body = ErrorBody, description = "`gone`: a part was deleted or expired."),
        (status = 412, body = ErrorBody, description = "`unsupported_version`: a `Tus-Resumable` other than `1.0.0`."),
        (status = 413, body = ErrorBody, description = "`too_large` (over `--max-upload-size`) or `body_too_large` (a JSON body over 64 KiB)."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: natively neither JSON nor a form; tus data that is not `application/offset+octet-stream`."),
        (status = 422, body = ErrorBody, description = "`sha256_mismatch`: the file (a form's, or parts assembled at once) is not the declared `sha256`; the upload is kept, `failed`."),
        (status = 429, body = ErrorBody, description = "`rate_limited` (over `--create-rate`) or `too_many_appends` (this client streams `--max-appends-per-client` bodies already)."),
        (status = 460, body = ErrorBody, description = "`checksum_mismatch`: the body's checksum did not match, or its digest has the wrong length."),
        (status = 500, body = ErrorBody, description = "`internal_error`, `storage_error`, `database_error` or `parts_unreadable`: a server-side failure."),
        (status = 503, body = ErrorBody, description = "`storage_unavailable`, `hook_unavailable`, `too_many_appends` or `shutting_down`: retry later."),
        (status = 507, body = ErrorBody, description = "`insufficient_storage`: the disk is (nearly) full."),
    ),
)]
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    engine: web::Data<Engine>,
    ctx: web::Data<Ctx>,
) -> Result<HttpResponse, ApiError> {
    let admitted = flow::admit_creation(&req, &ctx);
    let media = content_type(req.headers());
    match media.as_ref().map(mime::Mime::essence_str) {
        Some("application/json") => {
            admitted?;
            let body = read_limited(payload, JSON_BODY_LIMIT).await?;
            let (new, parts) = parse_create_json(&body)?;
            let status = match parts {
                Some(parts) => engine.create_final(new, parts).await?,
                None => engine.create(new).await?,
            };
            Ok(respond::created_json(&ctx, &status))
        }
        Some("multipart/form-data") => {
            let created = async {
                admitted?;
                let engine = engine.into_inner();
                let headers = req.headers().clone();
                let body = super::gated_body(&req, payload);
                detached(multipart::create(headers, body, engine, client(&req))).await
            }
            .await;
            // The upload page's form, posted with JavaScript off: the browser shows a page.
            if form_answer::wants_html(req.headers()) {
                return Ok(form_answer::answer(&ctx, created));
            }
            Ok(respond::created_json(&ctx, &created?))
        }
        _ => {
            admitted?;
            Err(ApiError::UnsupportedMediaType(
                "create an upload with application/json or multipart/form-data".into(),
            ))
        }
    }
}

/// The JSON creation body's shape, for the OpenAPI document. `parse_create_json` reads the
/// fields one by one instead, so that each has its own error code.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(super) struct CreateUpload {
    /// The file name: 1–255 bytes, no `/`, `\` or control characters, not `.` or `..`.
    #[schema(min_length = 1, max_length = 255)]
    name: String,
    /// The total length in bytes (required, except with `parts`); `0` makes an upload that
    /// is complete at once.
    #[schema(maximum = 9223372036854775807_u64)]
    size: Option<u64>,
    /// A media type such as `video/mp4`, returned on download.
    content_type: Option<String>,
    /// The whole file's SHA-256, 64 hexadecimal digits, checked when the last byte arrives.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    sha256: Option<String>,
    /// `true`: a part of an upload that another creation's `parts` assembles later.
    partial: Option<bool>,
    /// The ids of uploads created as parts, in the order of their bytes: this upload is made
    /// of them, and has no `size` of its own.
    parts: Option<Vec<String>>,
}

/// Validates the JSON creation body field by field, each with its own error code. With
/// `parts`, the upload is assembled from those (their ids are returned beside it).
fn parse_create_json(body: &[u8]) -> Result<(NewUpload, Option<Vec<UploadId>>), ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    let object = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("invalid_json", "the body must be a JSON object"))?;
    let name = match object.get("name") {
        Some(Value::String(name)) => name.clone(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_name",
                "name must be a string",
            ))
        }
        None => return Err(ApiError::bad_request("invalid_name", "name is required")),
    };
    let parts = parts_of(object)?;
    let size = match object.get("size") {
        Some(_) if parts.is_some() => {
            return Err(ApiError::bad_request(
                "invalid_concat",
                "an upload made of parts has their total size: send no size",
            ))
        }
        None if parts.is_some() => 0,
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
            ApiError::bad_request("invalid_size", "size must be a non-negative integer")
        })?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_size",
                "size must be a non-negative integer",
            ))
        }
        None => return Err(ApiError::bad_request("invalid_size", "size is required")),
    };
    let content_type = match object.get("content_type") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if is_media_type(text) => Some(text.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_content_type",
                "content_type must be a media type such as video/mp4",
            ))
        }
    };
    let expected_sha256 = match object.get("sha256") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(parse_sha256_hex(text).ok_or_else(|| {
            ApiError::bad_request("invalid_sha256", "sha256 must be 64 hexadecimal digits")
        })?),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_sha256",
                "sha256 must be a string",
            ))
        }
    };
    let partial = match object.get("partial") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) if parts.is_none() => true,
        Some(Value::Bool(true)) => {
            return Err(ApiError::bad_request(
                "invalid_concat",
                "an upload is either a part or made of parts, not both",
            ))
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_concat",
                "partial must be true or false",
            ))
        }
    };
    let new = NewUpload {
        name,
        size: parts.is_none().then_some(size),
        content_type,
        expected_sha256,
        metadata: None,
        partial,
    };
    Ok((new, parts))
}

/// `parts`: the ids of the uploads this one is made of, in order.
fn parts_of(object: &serde_json::Map<String, Value>) -> Result<Option<Vec<UploadId>>, ApiError> {
    let not_ids = || {
        ApiError::bad_request(
            "invalid_concat",
            "parts must be a list of upload ids, in the order of their bytes",
        )
    };
    match object.get("parts") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().ok_or_else(not_ids).and_then(parse_id))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(not_ids()),
    }
}

/// `GET /uploads/{id}`: the status.
#[utoipa::path(
    get,
    path = "/uploads/{id}",
    operation_id = "getUpload",
    tag = "uploads",
    summary = "The upload's status",
    params(UploadIdPath),
    responses(
        (status = 200, body = Status, description = "The status.",
            headers(
                ("Cache-Control" = String, description = "Always `no-store`."),
                ("Upload-Offset" = u64, description = "Always: `received`."),
            )),
        (status = 400, body = ErrorBody, description = "`invalid_id`: not a lowercase UUID with hyphens."),
        (status = 404, body = ErrorBody, description = "`not_found`: no upload has this id."),
        (status = 410, body = ErrorBody, description = "`gone`: the upload was deleted or expired."),
        (status = 500, body = ErrorBody, description = "`database_error` or `internal_error`."),
        (status = 503, body = ErrorBody, description = "`storage_unavailable`: the database cannot be reached; retry later."),
    ),
)]
pub async fn status(
    path: web::Path<String>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let status = engine.status(id).await?;
    Ok(status_response(StatusCode::OK, &status))
}

/// `HEAD /uploads/{id}`, natively and in tus: the offset, the length or that it is deferred,
/// tus metadata, and tus' `Upload-Expires` while the upload may expire.
///
/// The one operation of `HEAD /uploads/{id}` in the OpenAPI document, the draft's
/// (`draft::head`, 204) included.
#[utoipa::path(
    head,
    path = "/uploads/{id}",
    operation_id = "headUpload",
    tag = "uploads",
    summary = "The upload's offset and length, in headers (native, tus, draft)",
    description = "Natively and in tus `200`; in the IETF draft `204` with `Upload-Complete`. \
        A final upload (tus concatenation) still waiting for its parts has no `Upload-Offset`.",
    params(
        UploadIdPath,
        ProtocolHeaders,
    ),
    responses(
        (status = 200, description = "Native and tus: the upload's offset and length.",
            headers(
                ("Cache-Control" = String, description = "Always `no-store`."),
                ("Upload-Offset" = u64, description = "`received`; absent for a final upload still waiting for its parts."),
                ("Upload-Length" = u64, description = "The size, when known."),
                ("Upload-Defer-Length" = String, description = "`1` while the size is deferred."),
                ("Upload-Metadata" = String, description = "tus `Upload-Metadata` as the creation gave it."),
                ("Upload-Expires" = String, description = "When the upload expires if nobody appends, as an HTTP date."),
                ("Upload-Concat" = String, description = "tus: `partial`, or `final;<url> <url> …`."),
            )),
        (status = 204, description = "draft: the upload's offset, length and completeness.",
            headers(
                ("Cache-Control" = String, description = "Always `no-store`."),
                ("Upload-Complete" = String, description = "Always: `?1` once complete or failed, else `?0`."),
                ("Upload-Offset" = u64, description = "`received`; absent for a final upload still waiting for its parts."),
                ("Upload-Length" = u64, description = "The size, when known."),
                ("Upload-Limit" = String, description = "draft 8: `max-size=…, max-age=…`, where they apply."),
            )),
        (status = 400, description = "`invalid_id` (natively and in the draft), `unsupported_draft_version`."),
        (status = 404, description = "`not_found`: no upload has this id (in tus, also a malformed id)."),
        (status = 410, description = "`gone`: the upload was deleted or expired."),
        (status = 412, description = "`unsupported_version`: a `Tus-Resumable` other than `1.0.0`."),
        (status = 500, description = "`database_error` or `internal_error`."),
        (status = 503, description = "`storage_unavailable`: retry later."),
    ),
)]
pub async fn head(
    path: web::Path<String>,
    engine: web::Data<Engine>,
    ctx: web::Data<Ctx>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let status = engine.status(id).await?;
    let mut response = respond::head(&status);
    tus::expiration(&mut response, &status);
    concat::describe(&mut response, &ctx, &status);
    Ok(response.finish())
}

/// `PATCH /uploads/{id}`: the body, streamed to disk at `Upload-Offset`; the status as JSON.
///
/// The one operation of `PATCH /uploads/{id}` in the OpenAPI document: tus' and the draft's
/// appends (`tus::append`, `draft::append`, 204) are described here too.
#[utoipa::path(
    patch,
    path = "/uploads/{id}",
    operation_id = "appendToUpload",
    tag = "uploads",
    summary = "Append bytes at the upload's offset (native, tus, draft)",
    description = "The body is the raw bytes to add at `Upload-Offset`, streamed to disk. \
        Natively any content type but `multipart/*`, answered `200` with the status; tus \
        (`Tus-Resumable`) needs `application/offset+octet-stream` and the draft \
        (`Upload-Draft-Interop-Version`) 8 `application/partial-upload`, both answered `204`. \
        A body cut short keeps what arrived. A newer append for the same upload takes over at \
        once (the older one answers `409 superseded`). When a `pre-finish` hook is configured \
        it may refuse the last append with a status of its choosing (`rejected`).",
    params(
        UploadIdPath,
        ("Upload-Offset" = u64, Header, description = "Must equal the upload's `received`."),
        ("Upload-Length" = Option<u64>, Header,
            description = "Sets a deferred size; must equal a known one (`409`, `400` in tus), and not be below `received`."),
        ("Upload-Complete" = Option<String>, Header, pattern = r"^\?[01]$",
            description = "draft: `?1` on the last piece."),
        ("Upload-Checksum" = Option<String>, Header,
            description = "tus checksum of this chunk: `sha1 <base64>` or `sha256 <base64>`."),
        ("Content-Digest" = Option<String>, Header,
            description = "RFC 9530 checksum of this chunk: `sha-256=:<base64>:`."),
        ProtocolHeaders,
    ),
    request_body(
        description = "The bytes to add.",
        content(
            (String = "application/octet-stream"),
            (String = "application/offset+octet-stream"),
            (String = "application/partial-upload"),
        ),
    ),
    responses(
        (status = 200, body = Status, description = "Native: the new status.",
            headers(
                ("Cache-Control" = String, description = "Always `no-store`."),
                ("Upload-Offset" = u64, description = "Always: the new `received`."),
            )),
        (status = 204, description = "tus and draft: appended.",
            headers(
                ("Cache-Control" = String, description = "Always `no-store`."),
                ("Upload-Offset" = u64, description = "Always: the new `received`."),
                ("Upload-Expires" = String, description = "tus: when the upload expires if nobody appends, as an HTTP date."),
                ("Upload-Complete" = String, description = "draft: `?1` once complete, else `?0`."),
                ("Upload-Limit" = String, description = "draft 8: `max-size=…, max-age=…`, where they apply."),
            )),
        (status = 400, body = ErrorBody, description = "`invalid_id`, `invalid_offset`, \
            `invalid_length`, `invalid_content_length`, `invalid_checksum`, \
            `unsupported_checksum_algorithm`, `checksum_incomplete`, \
            `checksum_trailer_unsupported`, `invalid_upload_complete`, \
            `unsupported_draft_version`; tus: `length_mismatch`."),
        (status = 403, body = ErrorBody, description = "`forbidden_origin`, or `final_upload`: an upload made of parts takes no appends."),
        (status = 404, body = ErrorBody, description = "`not_found`: no upload has this id (in tus, also a malformed id)."),
        (status = 408, body = ErrorBody, description = "`idle_timeout` or `body_too_slow`: what arrived is kept."),
        (status = 409, body = ErrorBody, description = "`not_uploading`, `offset_mismatch`, `length_mismatch` or `superseded`, with `received`."),
        (status = 410, body = ErrorBody, description = "`gone`: deleted or expired, before or while the body streamed."),
        (status = 412, body = ErrorBody, description = "`unsupported_version`: a `Tus-Resumable` other than `1.0.0`."),
        (status = 413, body = ErrorBody, description = "`too_large`: past the size, or past `--max-upload-size` while it is deferred."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: `multipart/*`; tus without `application/offset+octet-stream`; draft 8 without `application/partial-upload`."),
        (status = 422, body = ErrorBody, description = "`sha256_mismatch`: the last byte arrived and the file is not the declared `sha256`; the upload is now `failed`."),
        (status = 429, body = ErrorBody, description = "`too_many_appends`: this client streams `--max-appends-per-client` appends already."),
        (status = 460, body = ErrorBody, description = "`checksum_mismatch`: the chunk was discarded."),
        (status = 500, body = ErrorBody, description = "`internal_error`, `storage_error` or `database_error`."),
        (status = 503, body = ErrorBody, description = "`too_many_appends`, `shutting_down`, `storage_unavailable` or `hook_unavailable`: retry later."),
        (status = 507, body = ErrorBody, description = "`insufficient_storage`: the disk is (nearly) full."),
    ),
)]
pub async fn append(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let status = flow::append(&req, &path, payload, engine, |_, _| Ok(())).await?;
    Ok(status_response(StatusCode::OK, &status))
}

/// `DELETE /uploads/{id}`, natively and as tus termination.
#[utoipa::path(
    delete,
    path = "/uploads/{id}",
    operation_id = "deleteUpload",
    tag = "uploads",
    summary = "Cancel the upload (native, tus termination, draft)",
    description = "An append still streaming is stopped first; the bytes are removed. \
        Afterwards every per-upload endpoint answers `410 gone` for this id.",
    params(
        UploadIdPath,
        ProtocolHeaders,
    ),
    responses(
        (status = 204, description = "Deleted.",
            headers(("Cache-Control" = String, description = "Always `no-store`."))),
        (status = 400, body = ErrorBody, description = "`invalid_id`, `unsupported_draft_version`."),
        (status = 403, body = ErrorBody, description = "`forbidden_origin`: a browser's `Origin` that may not write here."),
        (status = 404, body = ErrorBody, description = "`not_found`: no upload has this id (in tus, also a malformed id)."),
        (status = 410, body = ErrorBody, description = "`gone`: already deleted or expired."),
        (status = 412, body = ErrorBody, description = "`unsupported_version`: a `Tus-Resumable` other than `1.0.0`."),
        (status = 500, body = ErrorBody, description = "`internal_error`, `storage_error` or `database_error`."),
        (status = 503, body = ErrorBody, description = "`storage_unavailable`: retry later."),
    ),
)]
pub async fn delete(
    path: web::Path<String>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    // Detached like an append: a client that hangs up mid-delete cannot cut it short.
    let engine = engine.into_inner();
    detached(async move { Ok(engine.delete(id).await?) }).await?;
    Ok(HttpResponse::NoContent()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

/// `GET /metrics`: with --metrics-token, for its bearer only; without, for loopback only.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "service",
    summary = "Prometheus metrics",
    description = "Loopback peers only, or with `--metrics-token` that bearer token.",
    security((), ("bearer" = [])),
    responses(
        (status = 200, body = String, content_type = "text/plain",
            description = "The Prometheus text format (`version=0.0.4`).",
            headers(("Cache-Control" = String, description = "Always `no-store`."))),
        (status = 401, body = ErrorBody, description = "`unauthorized`: `--metrics-token` is set and the request lacks it."),
        (status = 403, body = ErrorBody, description = "`forbidden`: a non-loopback peer while no `--metrics-token` is set."),
    ),
)]
pub async fn metrics(
    req: HttpRequest,
    engine: web::Data<Engine>,
    ctx: web::Data<Ctx>,
) -> Result<HttpResponse, ApiError> {
    match &ctx.metrics_token {
        Some(token) => token.check(&req)?,
        None if req.peer_addr().is_some_and(|a| a.ip().is_loopback()) => {}
        None => return Err(ApiError::MetricsLoopbackOnly),
    }
    let free = engine.disk_free().await.ok().flatten();
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(engine.metrics().render(free)))
}

/// `GET /healthz`'s answer when all is well.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Healthy {
    /// Always `ok`.
    #[schema(value_type = String, pattern = "^ok$")]
    status: &'static str,
}

/// `GET /healthz`: whether the database answers and the store is writable.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "service",
    summary = "Health",
    description = "`200` when the database answers and the data directory (or the object \
        store: a small test object is written and removed) is writable.",
    responses(
        (status = 200, body = Healthy, description = "Healthy.",
            headers(("Cache-Control" = String, description = "Always `no-store`."))),
        (status = 503, body = ErrorBody, description = "`unhealthy`: the database, the data directory or the object store is not usable."),
    ),
)]
pub async fn healthz(engine: web::Data<Engine>) -> Result<HttpResponse, ApiError> {
    engine
        .healthy()
        .await
        .map_err(|e| ApiError::Unhealthy(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(Healthy { status: "ok" }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The creation body the OpenAPI document shows has the fields `parse_create_json`
    /// reads, no more and no fewer.
    #[test]
    fn the_documented_creation_body_is_the_one_read() {
        use utoipa::PartialSchema as _;
        let schema = serde_json::to_value(CreateUpload::schema()).expect("a schema");
        let documented: BTreeSet<&str> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(String::as_str)
            .collect();
        let source = include_str!("native.rs");
        let needle = concat!("object.get", "(\"");
        let read: BTreeSet<&str> = source
            .match_indices(needle)
            .filter_map(|(at, _)| source[at + needle.len()..].split('"').next())
            .collect();
        assert_eq!(documented, read);
    }

    #[test]
    fn a_creation_body_is_read_field_by_field() {
        let (new, parts) = parse_create_json(br#"{"name": "a.bin", "size": 3}"#).expect("valid");
        assert_eq!(
            (new.name.as_str(), new.size, parts),
            ("a.bin", Some(3), None)
        );
        let error = parse_create_json(br#"{"name": "a.bin"}"#).expect_err("no size");
        assert_eq!(error.code(), "invalid_size");
    }
}

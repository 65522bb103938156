//! The request flows the protocols share, each written once: who may create an upload,
//! "create, then append the creation body" (tus and the draft), and "append the body at the
//! offset" (every PATCH, the draft's and tus' creation bodies, the tutorial's upload).

use std::sync::Arc;

use actix_web::http::header::HeaderMap;
use actix_web::{web, HttpRequest};

use super::conn::GatedBody;
use super::extract::{
    chunk_checksum, client, detached, has_body, is_multipart, optional_count, parse_id,
    required_count, upload_complete,
};
use super::metadata;
use super::{respond, Ctx};
use crate::error::ApiError;
use crate::upload::{AppendRequest, Engine, NewUpload, Status, UploadId};

/// The request body, gated on its connection (see conn.rs).
pub type Body = GatedBody<web::Payload>;

/// Creating an upload: with --token, for a bearer only; and within the creation rate.
pub fn admit_creation(req: &HttpRequest, ctx: &Ctx) -> Result<(), ApiError> {
    ctx.tokens.check(req)?;
    ctx.create_rate.check(client(req))
}

/// Appends `body` at `request.offset`, detached from the handler: a client that hangs up
/// cannot cut the commit short. The one place the HTTP layer calls `Engine::append`.
pub async fn append_body(
    engine: Arc<Engine>,
    id: UploadId,
    request: AppendRequest,
    body: Body,
) -> Result<Status, ApiError> {
    detached(async move { Ok(engine.append(id, request, body).await?) }).await
}

/// `PATCH /uploads/{id}` in every protocol: the body, streamed to disk at `Upload-Offset`.
/// `protocol` adds what the protocol reads beyond the native headers; the caller answers.
pub async fn append(
    req: &HttpRequest,
    path: &str,
    payload: web::Payload,
    engine: web::Data<Engine>,
    protocol: impl FnOnce(&HeaderMap, &mut AppendRequest) -> Result<(), ApiError>,
) -> Result<Status, ApiError> {
    // Gated first, before anything awaits: see conn.rs.
    let body = super::gated_body(req, payload);
    let id = parse_id(path)?;
    let mut request = append_request(req)?;
    protocol(req.headers(), &mut request)?;
    append_body(engine.into_inner(), id, request, body).await
}

/// The native append headers: `Upload-Offset`, and optionally `Upload-Length`,
/// `Content-Length` and a chunk checksum.
fn append_request(req: &HttpRequest) -> Result<AppendRequest, ApiError> {
    let headers = req.headers();
    if is_multipart(headers) {
        return Err(ApiError::UnsupportedMediaType(
            "a PATCH body is the raw bytes, not multipart".into(),
        ));
    }
    Ok(AppendRequest {
        offset: required_count(headers, "Upload-Offset", "invalid_offset")?,
        length: optional_count(headers, "Upload-Length", "invalid_length")?,
        content_length: optional_count(headers, "Content-Length", "invalid_content_length")?,
        checksum: chunk_checksum(headers)?,
        complete: false,
        client: client(req),
    })
}

/// A tus or draft creation: the upload the headers describe, and the request's body as its
/// first piece.
pub struct Creation {
    new: NewUpload,
    first: AppendRequest,
    has_body: bool,
}

/// An upload a request created, and its URL.
pub struct Created {
    pub status: Status,
    pub location: String,
}

impl Creation {
    /// Reads the creation headers, in one order for both protocols: `Upload-Complete` (the
    /// draft's, honoured for tus as well), `Content-Length`, the size as the protocol
    /// declares it (`size`), `Upload-Metadata`, the checksum. `partial`: tus' part of a
    /// concatenation.
    pub fn read(
        req: &HttpRequest,
        size: impl FnOnce(&HeaderMap) -> Result<Option<u64>, ApiError>,
        partial: bool,
    ) -> Result<Creation, ApiError> {
        let headers = req.headers();
        let complete = upload_complete(headers)? == Some(true);
        let content_length = optional_count(headers, "Content-Length", "invalid_content_length")?;
        let size = size(headers)?;
        let described = metadata::described(headers)?;
        let new = NewUpload {
            name: described.name,
            size,
            content_type: described.content_type,
            expected_sha256: None,
            metadata: described.raw,
            partial,
        };
        let has_body = has_body(headers, content_length);
        let first = AppendRequest {
            offset: 0,
            length: None,
            content_length,
            checksum: chunk_checksum(headers)?,
            complete,
            client: client(req),
        };
        Ok(Creation {
            new,
            first,
            has_body,
        })
    }

    /// Whether the request carries data beyond the creation (tus creation-with-upload).
    pub fn has_body(&self) -> bool {
        self.has_body
    }

    /// Creates the upload made of `parts` (tus' final upload, the native API's parts).
    pub async fn create_final(
        req: &HttpRequest,
        parts: Vec<crate::upload::UploadId>,
        engine: &Engine,
    ) -> Result<Status, ApiError> {
        let described = metadata::described(req.headers())?;
        let new = NewUpload {
            name: described.name,
            content_type: described.content_type,
            metadata: described.raw,
            ..NewUpload::default()
        };
        Ok(engine.create_final(new, parts).await?)
    }

    /// Creates the upload, then appends the body. The draft's `Upload-Complete: ?1` finishes
    /// the upload with this body, even an empty one.
    pub async fn run(
        self,
        body: Body,
        engine: web::Data<Engine>,
        ctx: &Ctx,
    ) -> Result<Created, ApiError> {
        let mut status = engine.create(self.new).await?;
        let location = respond::location(ctx, &status.id);
        if self.has_body || self.first.complete {
            let id = parse_id(&status.id)?;
            status = append_body(engine.into_inner(), id, self.first, body)
                .await
                // The upload exists: the client needs its URL to resume or to look at it.
                .map_err(|e| e.after_create(location.clone()))?;
        }
        Ok(Created { status, location })
    }
}

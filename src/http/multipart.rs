//! One-shot form upload (`curl -F file=@photo.jpg`): the part streams into the engine.

use std::sync::Arc;

use actix_multipart::{Field, Multipart};
use actix_web::http::header::HeaderMap;
use futures_util::StreamExt;

use super::extract::is_media_type;
use crate::error::ApiError;
use crate::upload::input::parse_sha256_hex;
use crate::upload::{Engine, NewUpload, Status, Streamed};

/// The form's shape, for the OpenAPI document (`create` reads the parts as they stream).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(super) struct CreateForm {
    /// The file; its part's file name names the upload unless `name` is given.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// The upload's name, instead of the file part's file name.
    name: Option<String>,
    /// The whole file's SHA-256, 64 hexadecimal digits.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    sha256: Option<String>,
}

/// Text fields (`name`, `sha256`) are short; anything longer is a mistake.
const TEXT_FIELD_LIMIT: usize = 1024;

/// Creates an upload from the form's `file` part. Text fields may come before or after it.
/// If anything fails once the upload exists, it is discarded: no row, no bytes left behind.
pub async fn create<S>(
    headers: HeaderMap,
    payload: S,
    engine: Arc<Engine>,
    client: Option<std::net::IpAddr>,
) -> Result<Status, ApiError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, actix_web::error::PayloadError>> + 'static,
{
    let mut form = Multipart::new(&headers, payload);
    let mut fields = TextFields::default();
    let mut created: Option<Streamed> = None;
    let mut created_id = None;
    let result = async {
        while let Some(field) = form.next().await {
            let field = field.map_err(bad_form)?;
            match field.name().unwrap_or_default() {
                "file" if created.is_some() => {
                    return Err(ApiError::bad_request(
                        "invalid_form",
                        "send one file part per request",
                    ))
                }
                "file" => {
                    let streamed = receive_file(&engine, field, &fields, client).await?;
                    created_id = Some(streamed.id());
                    created = Some(streamed);
                }
                "name" => fields.name = Some(read_text(field).await?),
                "sha256" => {
                    let text = read_text(field).await?;
                    fields.sha256 = Some(parse_sha256_hex(text.trim()).ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_sha256",
                            "sha256 must be 64 hexadecimal digits",
                        )
                    })?);
                }
                _ => drain(field).await?,
            }
        }
        let streamed = created.take().ok_or_else(|| {
            ApiError::bad_request("missing_file", "the form needs a file part named `file`")
        })?;
        Ok(engine
            .finish_streamed(streamed, fields.name.clone(), fields.sha256.clone())
            .await?)
    }
    .await;
    // Unlocks the upload (if the form failed after its file part) before it is discarded.
    drop(created);
    if let (Err(_), Some(id)) = (&result, created_id) {
        // A digest mismatch, or a pre-finish hook's refusal (it knows `received`), leaves a
        // real, failed upload the client should be able to inspect; a refused create does not.
        use crate::upload::UploadError::{Rejected, Sha256Mismatch};
        if !matches!(
            result,
            Err(ApiError::Upload(
                Sha256Mismatch { .. }
                    | Rejected {
                        received: Some(_),
                        ..
                    }
            ))
        ) {
            engine.discard(id).await;
        }
    }
    result
}

#[derive(Default)]
struct TextFields {
    name: Option<String>,
    sha256: Option<String>,
}

async fn receive_file(
    engine: &Engine,
    field: Field,
    fields: &TextFields,
    client: Option<std::net::IpAddr>,
) -> Result<Streamed, ApiError> {
    let part_name = field
        .content_disposition()
        .and_then(|cd| cd.get_filename())
        .map(str::to_owned);
    let name = fields.name.clone().or(part_name).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_name",
            "the file part has no file name; add a `name` field",
        )
    })?;
    let content_type = field
        .content_type()
        .map(|m| m.essence_str().to_owned())
        .filter(|m| is_media_type(m));
    let new = NewUpload {
        name,
        content_type,
        ..NewUpload::default()
    };
    Ok(engine.create_streamed(new, field, client).await?)
}

async fn read_text(mut field: Field) -> Result<String, ApiError> {
    let mut text = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(bad_form)?;
        if text.len() + chunk.len() > TEXT_FIELD_LIMIT {
            return Err(ApiError::bad_request(
                "invalid_form",
                "a text field is longer than 1 KiB",
            ));
        }
        text.extend_from_slice(&chunk);
    }
    String::from_utf8(text)
        .map_err(|_| ApiError::bad_request("invalid_form", "a text field is not UTF-8"))
}

async fn drain(mut field: Field) -> Result<(), ApiError> {
    while let Some(chunk) = field.next().await {
        chunk.map_err(bad_form)?;
    }
    Ok(())
}

fn bad_form(error: actix_multipart::MultipartError) -> ApiError {
    ApiError::bad_request(
        "invalid_form",
        format!("the multipart body is malformed: {error}"),
    )
}

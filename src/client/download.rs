//! `resumable download ID -o PATH`: the file of a complete upload, resuming a partial PATH with
//! a `Range` (and `If-Range`, so a different file is never stitched on), then checked whole
//! against the SHA-256 the server gives as its ETag.

use std::io::{Read, Write};
use std::path::PathBuf;

use reqwest13::header::{ETAG, IF_RANGE, RANGE};
use reqwest13::StatusCode;
use sha2::{Digest, Sha256};

use super::api::{checked, error_chain, Api, ClientError, Result};
use super::report::emit;
use super::DownloadArgs;

pub async fn run(args: DownloadArgs) -> Result<bool> {
    let api = Api::new(&args.common)?;
    let url = api.upload_url(&args.upload)?;
    let status = api.status(&url).await?;
    if status["state"] != "complete" {
        let state = status["state"].as_str().unwrap_or("unknown");
        return Err(ClientError::Failed(format!(
            "{url} is {state}, not complete: nothing to download yet"
        )));
    }
    let size = status["size"].as_u64().unwrap_or(0);
    let sha256 = status["sha256"].as_str().unwrap_or_default().to_owned();
    let output = match args.output {
        Some(path) => path,
        // Only a base name: a server's name never places the file elsewhere.
        None => PathBuf::from(
            std::path::Path::new(status["name"].as_str().unwrap_or("download"))
                .file_name()
                .unwrap_or(std::ffi::OsStr::new("download")),
        ),
    };
    let io = |error| ClientError::File {
        path: output.display().to_string(),
        error,
    };
    let existing = std::fs::metadata(&output).ok().map(|m| m.len());
    match existing {
        // Longer than the upload: some other file; never truncated behind its owner's back.
        Some(have) if have > size => {
            return Err(ClientError::Usage(format!(
                "{} exists and is longer than the upload ({have} > {size} bytes): \
                 remove it or choose another -o",
                output.display()
            )))
        }
        Some(have) if have < size => fetch(&api, &url, &output, have, &sha256).await?,
        Some(_) => {}
        None => fetch(&api, &url, &output, 0, &sha256).await?,
    }
    let digest = hash_file(&output).map_err(io)?;
    if existing == Some(size) && digest != sha256 {
        return Err(ClientError::Usage(format!(
            "{} exists with other content than the upload: remove it or choose another -o",
            output.display()
        )));
    }
    let matched = digest == sha256;
    if args.common.json {
        emit(
            serde_json::json!({"event": "complete", "file": output.display().to_string(),
            "size": size, "sha256": digest, "matched": matched}),
        );
    } else if !args.common.quiet {
        eprintln!("{}: {size} bytes, sha256 {digest}", output.display());
    }
    if !matched {
        return Err(ClientError::Failed(format!(
            "{}: its SHA-256 is {digest}, the server's is {sha256}",
            output.display()
        )));
    }
    Ok(true)
}

/// Fetches from byte `have` on (or the whole file, if the server sends it whole).
async fn fetch(
    api: &Api,
    url: &reqwest13::Url,
    output: &PathBuf,
    have: u64,
    sha256: &str,
) -> Result<()> {
    let content = {
        let mut content = url.clone();
        content
            .path_segments_mut()
            .map_err(|()| ClientError::Usage(format!("{url} cannot name an upload")))?
            .pop_if_empty()
            .push("content");
        content
    };
    let mut request = api.http.get(content.clone());
    if have > 0 {
        request = request
            .header(RANGE, format!("bytes={have}-"))
            .header(IF_RANGE, format!("\"{sha256}\""));
    }
    let mut response = checked(api.send(request).await?).await?;
    if let Some(etag) = response.headers().get(ETAG).and_then(|v| v.to_str().ok()) {
        if etag.trim_start_matches("W/").trim_matches('"') != sha256 {
            return Err(ClientError::Failed(format!(
                "{content}: its ETag {etag} is not the status's SHA-256"
            )));
        }
    }
    let resumed = response.status() == StatusCode::PARTIAL_CONTENT;
    // A range that does not start where the file ends would be stitched on wrong.
    let starts_at = response
        .headers()
        .get(reqwest13::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.parse::<u64>().ok());
    if resumed && starts_at != Some(have) {
        return Err(ClientError::Failed(format!(
            "{content}: asked for bytes from {have}, got a range from {starts_at:?}"
        )));
    }
    let io = |error| ClientError::File {
        path: output.display().to_string(),
        error,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(output)
        .map_err(io)?;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ClientError::Unreachable {
            url: content.to_string(),
            message: error_chain(&e),
        })?
    {
        file.write_all(&chunk).map_err(io)?;
    }
    file.sync_all().map_err(io)
}

fn hash_file(path: &PathBuf) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buffer[..n]);
    }
}

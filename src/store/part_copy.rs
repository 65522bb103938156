//! S3's UploadPartCopy: a part of a multipart upload copied by the store from a range of an
//! object it holds, so assembling an upload from parts never sends their bytes again.
//!
//! object_store has no call for it, so the request is made here and signed with its SigV4
//! signer (`AwsAuthorizer`), with the credentials the store client already uses.

use std::io;

use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::path::Path;

use super::{Result, StoreError};

/// S3's smallest part (every part but the last) and largest copied range.
pub const MIN_PART: u64 = 5 << 20;
pub const MAX_COPY: u64 = 5 << 30;

/// Where the store's objects are addressed.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://host:port` of a path-style endpoint; `None` for AWS itself.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
}

impl Endpoint {
    fn object_url(&self, key: &Path) -> String {
        let key = encode(key.as_ref());
        match &self.endpoint {
            Some(base) => format!("{}/{}/{key}", base.trim_end_matches('/'), self.bucket),
            None => format!(
                "https://{}.s3.{}.amazonaws.com/{key}",
                self.bucket, self.region
            ),
        }
    }
}

/// One `UploadPartCopy`: bytes `range` of `source` become part `number` (from 1) of the
/// multipart upload `upload` of `target`. Returns the part's ETag.
pub async fn copy_part(
    client: &AmazonS3,
    http: &reqwest13::Client,
    at: &Endpoint,
    (target, upload, number): (&Path, &str, usize),
    (source, range): (&Path, std::ops::Range<u64>),
) -> Result<String> {
    let unavailable = |e: io::Error| StoreError::unavailable("copy a part to", target, e);
    let url = format!(
        "{}?partNumber={number}&uploadId={}",
        at.object_url(target),
        encode(upload)
    );
    let copy_source = format!("/{}/{}", at.bucket, encode(source.as_ref()));
    let copy_range = format!("bytes={}-{}", range.start, range.end - 1);
    let mut request: HttpRequest = http::Request::builder()
        .method(http::Method::PUT)
        .uri(&url)
        .header("x-amz-copy-source", copy_source)
        .header("x-amz-copy-source-range", copy_range)
        .body(HttpRequestBody::empty())
        .map_err(|e| StoreError::new("copy a part to", target, io::Error::other(e)))?;
    let credential = client
        .credentials()
        .get_credential()
        .await
        .map_err(|e| unavailable(io::Error::other(e)))?;
    AwsAuthorizer::new(&credential, "s3", &at.region)
        .try_authorize(&mut request, None)
        .map_err(|e| StoreError::new("sign a copy to", target, io::Error::other(e)))?;
    let (head, _) = request.into_parts();
    let answer = http
        .put(&url)
        .headers(head.headers)
        .send()
        .await
        .map_err(|e| unavailable(io::Error::other(e)))?;
    let status = answer.status();
    let body = answer
        .text()
        .await
        .map_err(|e| unavailable(io::Error::other(e)))?;
    // A copy may fail after its 200 has gone out: the error is then in the body.
    match (status.is_success(), etag_in(&body)) {
        (true, Some(etag)) if !body.contains("<Error>") => Ok(etag),
        _ if status.is_server_error() => {
            Err(unavailable(io::Error::other(format!("{status}: {body}"))))
        }
        _ => Err(StoreError::new(
            "copy a part to",
            target,
            io::Error::other(format!("{status}: {body}")),
        )),
    }
}

/// The ETag in an UploadPartCopy answer (`<CopyPartResult><ETag>"…"</ETag>…`).
fn etag_in(body: &str) -> Option<String> {
    let start = body.find("<ETag>")? + "<ETag>".len();
    let end = start + body[start..].find("</ETag>")?;
    let etag = body[start..end]
        .replace("&quot;", "\"")
        .replace("&#34;", "\"");
    Some(etag)
}

/// Percent-encodes all but S3's unreserved characters and `/`, as SigV4 expects.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The ranges a part of `len` bytes is copied in: as few as S3's largest copy allows, of
/// nearly equal lengths (so none falls short of the smallest part).
pub fn ranges(len: u64) -> Vec<std::ops::Range<u64>> {
    let count = len.div_ceil(MAX_COPY).max(1);
    let each = len.div_ceil(count);
    (0..count)
        .map(|n| n * each..((n + 1) * each).min(len))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_names_are_read_and_written_as_s3_does() {
        let body = "<?xml version=\"1.0\"?><CopyPartResult><LastModified>x</LastModified>\
                    <ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag></CopyPartResult>";
        assert_eq!(
            etag_in(body).as_deref(),
            Some("\"9b2cf535f27731c974343645a3985328\"")
        );
        assert_eq!(etag_in("<Error><Code>NoSuchUpload</Code></Error>"), None);
        assert_eq!(encode("p/a b+c"), "p/a%20b%2Bc");
        assert_eq!(ranges(10), vec![0..10]);
        assert_eq!(
            ranges(MAX_COPY + 1),
            vec![0..MAX_COPY / 2 + 1, MAX_COPY / 2 + 1..MAX_COPY + 1]
        );
    }
}

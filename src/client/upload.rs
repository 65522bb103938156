//! `resumable upload FILE…`: each file goes up in chunks, each chunk with its own
//! `Content-Digest`, while the whole file's SHA-256 is computed beside the sending and checked
//! against the server's at the end. Nothing ever starts over: the upload's URL is kept before
//! the first byte is sent (`state`), and every failure ends in asking the server how much it
//! holds and carrying on from there.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::Semaphore;

use super::api::{Api, Backoff, ClientError, Result};
use super::protocol::{Appended, Held, Speaker};
use super::report::{FileReport, Reporter};
use super::state::{Entry, Seen, Slot};
use super::{local::LocalFile, UploadArgs};

/// The first chunk, before the link's speed is known; then each aims at `CHUNK_SECONDS`.
const FIRST_CHUNK: u64 = 4 << 20;
const MIN_CHUNK: u64 = 1 << 20;
const MAX_CHUNK: u64 = 64 << 20;
const CHUNK_SECONDS: f64 = 3.0;
/// The largest `--chunk-size` honoured: two chunks are in memory per file.
const MAX_FIXED_CHUNK: u64 = 256 << 20;
/// Answers in a row that move nothing before each one waits out a backoff (a server that keeps
/// naming the same offset must not spin the client).
const FREE_STALLS: u32 = 3;

pub async fn run(args: UploadArgs) -> Result<bool> {
    let api = Api::new(&args.common)?;
    let mut files = Vec::new();
    let mut named = std::collections::HashSet::new();
    for path in &args.files {
        let seen = Seen::of(path)?;
        // One file named twice would be two uploads racing for one resume entry.
        if named.insert(std::path::absolute(path).unwrap_or_else(|_| path.clone())) {
            files.push((path.clone(), seen));
        }
    }
    let total = files.iter().map(|(_, seen)| seen.size).sum();
    let reporter = Reporter::new(&args.common, total, files.len());
    let speaker = Speaker::new(api, args.protocol);
    let parallel = Arc::new(Semaphore::new(args.parallel.max(1)));
    let outcomes = join_all(files.into_iter().map(|(path, seen)| {
        let (speaker, reporter, parallel) = (&speaker, &reporter, parallel.clone());
        let args = &args;
        async move {
            let _turn = parallel.acquire_owned().await;
            let report = reporter.file(&path.display().to_string(), seen.size);
            match upload_file(speaker, args, &report, &path, seen).await {
                Ok(()) => true,
                Err(e) => {
                    report.failed(&e.to_string());
                    false
                }
            }
        }
    }))
    .await;
    let complete = outcomes.iter().filter(|ok| **ok).count();
    reporter.done(complete, outcomes.len() - complete);
    Ok(complete == outcomes.len())
}

/// One file, from wherever its upload stands to complete and checked.
async fn upload_file(
    speaker: &Speaker,
    args: &UploadArgs,
    report: &FileReport,
    path: &Path,
    seen: Seen,
) -> Result<()> {
    let slot = Slot::of(speaker.api.server.as_str(), speaker.name(), path)?;
    let mut backoff = Backoff::new(args.retry_for);
    let (url, held, resumed) = match find_upload(speaker, report, &slot, &seen, &mut backoff)
        .await?
    {
        Some((url, held)) => (url, held, true),
        None => {
            let name = file_name(path);
            let url = retrying(&mut backoff, report, || speaker.create(&name, seen.size)).await?;
            // Kept before the first byte is sent: from now on nothing starts over.
            slot.save(&Entry {
                url: url.to_string(),
                seen: seen.clone(),
            })?;
            (url, Held::default(), false)
        }
    };
    report.started(url.as_str(), &last_segment(&url), held.received, resumed);
    let mut local = LocalFile::open(path, seen.size)?;
    let sent = Sending {
        speaker,
        report,
        url: &url,
        retry_for: args.retry_for,
        fixed_chunk: args.chunk_size.map(|c| c.clamp(1, MAX_FIXED_CHUNK)),
        chunk_digest: !args.no_chunk_digest,
    };
    let digest = sent.send_from(&mut local, held.received).await?;
    let outcome = sent.settle(&digest, seen.size).await;
    // Only a final word ends the entry: done, failed, or gone. Anything else (a refused token,
    // the server away too long) leaves it for the next run to carry on.
    let settled = match &outcome {
        Ok(_) => true,
        Err(ClientError::Verdict(_)) => true,
        Err(e) => matches!(e.status(), Some(404 | 410)),
    };
    if settled {
        slot.drop_entry();
    }
    let sha256 = outcome?;
    // The file must still be what was sent: a log that grew or a region rewritten meanwhile
    // would otherwise pass as the snapshot the reads happened to see.
    if Seen::of(path)? != seen {
        return Err(ClientError::Verdict(
            "the file changed while it was being sent: the upload holds an earlier state of it; \
             run the command again to send it as it is now"
                .into(),
        ));
    }
    report.complete(url.as_str(), &last_segment(&url), &sha256);
    Ok(())
}

/// The upload a previous run began for this file, if it still stands and the file has not
/// changed since.
async fn find_upload(
    speaker: &Speaker,
    report: &FileReport,
    slot: &Slot,
    seen: &Seen,
    backoff: &mut Backoff,
) -> Result<Option<(reqwest13::Url, Held)>> {
    let Some(entry) = slot.load() else {
        return Ok(None);
    };
    if entry.seen != *seen {
        report.warn("the file changed since its upload began: starting a new upload");
        slot.drop_entry();
        return Ok(None);
    }
    let Ok(url) = reqwest13::Url::parse(&entry.url) else {
        slot.drop_entry();
        return Ok(None);
    };
    match retrying(backoff, report, || speaker.held(&url)).await {
        Ok(held) => Ok(Some((url, held))),
        Err(e) if matches!(e.status(), Some(404 | 410)) => {
            report.warn("its upload is gone from the server: starting a new upload");
            slot.drop_entry();
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// One file's bytes on their way.
struct Sending<'a> {
    speaker: &'a Speaker,
    report: &'a FileReport,
    url: &'a reqwest13::Url,
    retry_for: Duration,
    fixed_chunk: Option<u64>,
    chunk_digest: bool,
}

impl Sending<'_> {
    /// Sends from `offset` to the end; returns the whole file's SHA-256 (hex). The next chunk
    /// is read (and hashed) while one is sent.
    async fn send_from(&self, local: &mut LocalFile, mut offset: u64) -> Result<String> {
        let size = local.size();
        let mut chunk = self.fixed_chunk.unwrap_or(FIRST_CHUNK).max(1);
        let mut backoff = Backoff::new(self.retry_for);
        let mut resync = false;
        let mut ahead = None;
        let mut stalls = 0;
        while offset < size || resync {
            if resync {
                ahead = None;
                match self.speaker.held(self.url).await {
                    Ok(held) => {
                        // Moved (by this run or another): not a stall.
                        if held.received != offset {
                            stalls = 0;
                        }
                        offset = held.received;
                        self.report.progress(offset);
                        resync = false;
                    }
                    Err(e) => self.wait_or_fail(&mut backoff, e).await?,
                }
                continue;
            }
            let reading = match ahead.take() {
                Some((at, reading)) if at == offset => reading,
                _ => local.read(offset, chunk.min(size - offset), self.chunk_digest),
            };
            let piece = local.piece(reading).await?;
            let len = piece.bytes.len() as u64;
            let next = offset + len;
            if next < size {
                ahead = Some((
                    next,
                    local.read(next, chunk.min(size - next), self.chunk_digest),
                ));
            }
            let started = Instant::now();
            let sent = self.speaker.append(self.url, offset, &piece).await;
            local.recycle(piece);
            match sent {
                Ok(Appended { received }) if received > offset && received <= offset + len => {
                    offset = received;
                    self.report.progress(offset);
                    backoff.reset(self.retry_for);
                    stalls = 0;
                    if self.fixed_chunk.is_none() {
                        chunk = next_chunk(len, started.elapsed());
                    }
                }
                // An answer that moved nothing (or named an offset this append cannot have
                // reached): ask where it stands, and wait between such rounds.
                Ok(_) => {
                    stalls += 1;
                    if stalls > FREE_STALLS {
                        self.wait_or_fail(&mut backoff, self.stalled()).await?;
                    }
                    resync = true;
                }
                // Another request moved it on (or an earlier try of this one landed after
                // all), or another run of the same command finished it (`not_uploading`):
                // ask where it stands and carry on from there.
                Err(e) if e.status() == Some(409) => {
                    stalls += 1;
                    if stalls > FREE_STALLS {
                        self.wait_or_fail(&mut backoff, self.stalled()).await?;
                    }
                    resync = true;
                }
                Err(e) => {
                    self.wait_or_fail(&mut backoff, e).await?;
                    resync = true;
                }
            }
        }
        local.digest().await
    }

    /// The server keeps answering without its offset moving: waited out like an outage.
    fn stalled(&self) -> ClientError {
        ClientError::Unreachable {
            url: self.url.to_string(),
            message: "the upload's offset does not move".into(),
        }
    }

    async fn wait_or_fail(&self, backoff: &mut Backoff, error: ClientError) -> Result<()> {
        let text = error.to_string();
        let wait = backoff.wait_after(&error).ok_or(error)?;
        self.report.retry(&text, wait);
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Every byte is in: the upload must be complete with this digest. One still sealing
    /// (its store or a hook failed before) is asked to finish with an empty append.
    async fn settle(&self, digest: &str, size: u64) -> Result<String> {
        let mut backoff = Backoff::new(self.retry_for);
        let mut conflicts = 0;
        loop {
            let outcome = async {
                let held = self.speaker.held(self.url).await?;
                if held.state.as_deref() == Some("uploading") {
                    self.speaker
                        .append(self.url, held.received, &Default::default())
                        .await?;
                    return self.speaker.held(self.url).await;
                }
                Ok(held)
            }
            .await;
            match outcome {
                Ok(held) => return verdict(&held, digest, size),
                // Sealed by someone else between the look and the append: look again.
                Err(e) if e.status() == Some(409) && conflicts < FREE_STALLS => conflicts += 1,
                Err(e) => self.wait_or_fail(&mut backoff, e).await?,
            }
        }
    }
}

/// Complete with the same SHA-256, or why not.
fn verdict(held: &Held, digest: &str, size: u64) -> Result<String> {
    match (held.state.as_deref(), held.sha256.as_deref()) {
        (Some("complete") | None, Some(server)) if server == digest => Ok(digest.to_owned()),
        // A tus server that does not tell its digest: it holds every byte, and each chunk's
        // checksum was checked on the way (where chunks carried one).
        (None, None) if held.received == size => Ok(digest.to_owned()),
        (Some("complete") | None, Some(server)) => Err(ClientError::Verdict(format!(
            "the server's SHA-256 is {server}, but the file's is {digest}"
        ))),
        (Some("failed"), _) => Err(ClientError::Verdict(format!(
            "the server failed the upload ({})",
            held.failure.as_deref().unwrap_or("no reason given")
        ))),
        (state, _) => Err(ClientError::Failed(format!(
            "every byte is sent, but the upload is {}",
            state.unwrap_or("in an unknown state")
        ))),
    }
}

/// Runs `step` until it succeeds, waiting out transient failures for --retry-for.
async fn retrying<T, F, Fut>(backoff: &mut Backoff, report: &FileReport, mut step: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    loop {
        match step().await {
            Ok(value) => return Ok(value),
            Err(e) => {
                let text = e.to_string();
                let wait = backoff.wait_after(&e).ok_or(e)?;
                report.retry(&text, wait);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// A chunk that takes about `CHUNK_SECONDS` at the speed the last one went.
fn next_chunk(len: u64, took: Duration) -> u64 {
    let rate = len as f64 / took.as_secs_f64().max(1e-3);
    let wanted = (rate * CHUNK_SECONDS) as u64;
    (wanted.clamp(MIN_CHUNK, MAX_CHUNK) / MIN_CHUNK) * MIN_CHUNK
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| "upload".to_owned(), |n| n.to_string_lossy().into_owned())
}

fn last_segment(url: &reqwest13::Url) -> String {
    url.path_segments()
        .and_then(|mut s| s.next_back().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_aim_at_a_few_seconds_within_bounds() {
        assert_eq!(next_chunk(4 << 20, Duration::from_secs(1)), 12 << 20);
        assert_eq!(next_chunk(4 << 20, Duration::from_secs(60)), MIN_CHUNK);
        assert_eq!(next_chunk(64 << 20, Duration::from_millis(10)), MAX_CHUNK);
    }
}

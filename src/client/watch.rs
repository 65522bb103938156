//! `resumable status` (one look) and `resumable watch` (follow it live over Server-Sent
//! Events, or long polls where those cannot be had, until its final state).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest13::Url;
use serde_json::Value;

use super::api::{checked, error_chain, json_of, Api, Backoff, ClientError, Result};
use super::report::{emit, percent};
use super::TargetArgs;

pub async fn status(args: TargetArgs) -> Result<bool> {
    let api = Api::new(&args.common)?;
    let url = api.upload_url(&args.upload)?;
    let status = api.status(&url).await?;
    if args.common.json {
        emit(status);
        return Ok(true);
    }
    let text = |field: &str| status[field].as_str().unwrap_or("-").to_owned();
    let received = status["received"].as_u64().unwrap_or(0);
    let size = status["size"].as_u64();
    let amount = match size {
        Some(size) => format!(
            "{received} of {size} bytes ({:.1} %)",
            percent(received, size)
        ),
        None => format!("{received} bytes (size not known yet)"),
    };
    println!("{url}");
    println!("  name      {}", text("name"));
    println!("  state     {}", text("state"));
    if let Some(failure) = status["failure"].as_str() {
        println!("  failure   {failure}");
    }
    println!("  received  {amount}");
    println!("  sha256    {}", text("sha256"));
    println!("  created   {}", text("created_at"));
    println!("  updated   {}", text("updated_at"));
    if let Some(expires) = status["expires_at"].as_str() {
        println!("  expires   {expires}");
    }
    Ok(true)
}

pub async fn watch(args: TargetArgs) -> Result<bool> {
    let api = Api::new(&args.common)?;
    let url = api.upload_url(&args.upload)?;
    let view = View::new(args.common.json, args.common.quiet);
    let last = match follow_events(&api, &url, &view).await {
        Ok(last) => last,
        // A proxy that buffers or refuses event streams: long polls get there too.
        Err(e) if !matches!(e.status(), Some(400..=499)) => {
            view.note(&format!("event stream unavailable ({e}); polling instead"));
            follow_polls(&api, &url, &view).await?
        }
        Err(e) => return Err(e),
    };
    view.finish(&last);
    Ok(last["state"] == "complete" && last.get("removed").is_none())
}

/// Follows `/events` until the stream's final message; returns it.
async fn follow_events(api: &Api, url: &Url, view: &View) -> Result<Value> {
    let events = join(url, "events")?;
    let request = api.http.get(events).header("Accept", "text/event-stream");
    let mut response = checked(api.send(request).await?).await?;
    let mut buffer = Vec::new();
    let mut last = Value::Null;
    loop {
        // The server sends a heartbeat every 15 s: silence this long is a stalled stream (or
        // a proxy that buffers it), and long polls take over.
        let chunk = tokio::time::timeout(Duration::from_secs(45), response.chunk())
            .await
            .map_err(|_| ClientError::Unreachable {
                url: url.to_string(),
                message: "the event stream went silent".into(),
            })?
            .map_err(|e| ClientError::Unreachable {
                url: url.to_string(),
                message: error_chain(&e),
            })?;
        let Some(chunk) = chunk else {
            // The server ends the stream after the final state.
            return final_or_error(last, url);
        };
        // Lines may end in CRLF or CR too (the event stream format allows all three).
        let text = String::from_utf8_lossy(&chunk)
            .replace("\r\n", "\n")
            .replace('\r', "\n");
        buffer.extend_from_slice(text.as_bytes());
        if buffer.len() > 1 << 20 {
            return Err(ClientError::Failed(format!("{url}: an event over 1 MiB")));
        }
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buffer.drain(..end + 2).collect();
            if let Some(status) = data_of(&event) {
                view.show(&status);
                let done = is_final(&status);
                last = status;
                if done {
                    return Ok(last);
                }
            }
        }
    }
}

/// Long polls until the final state; a failed poll is tried again after a backoff.
async fn follow_polls(api: &Api, url: &Url, view: &View) -> Result<Value> {
    let mut received: Option<u64> = None;
    let mut backoff = Backoff::new(Duration::from_secs(3600));
    loop {
        let mut poll = join(url, "poll")?;
        if let Some(received) = received {
            poll.set_query(Some(&format!("received={received}&timeout=25")));
        }
        let request = api.http.get(poll).timeout(Duration::from_secs(40));
        let answer = match api.send(request).await {
            Ok(response) => match checked(response).await {
                Ok(response) => json_of(response).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let status = match answer {
            Ok(status) => {
                backoff.reset(Duration::from_secs(3600));
                status
            }
            Err(e) => {
                let wait = backoff.wait_after(&e).ok_or(e)?;
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        view.show(&status);
        if is_final(&status) {
            return Ok(status);
        }
        received = status["received"].as_u64();
    }
}

fn final_or_error(last: Value, url: &Url) -> Result<Value> {
    match is_final(&last) {
        true => Ok(last),
        false => Err(ClientError::Unreachable {
            url: url.to_string(),
            message: "the event stream ended before the upload did".into(),
        }),
    }
}

fn is_final(status: &Value) -> bool {
    status.get("removed").is_some_and(|r| !r.is_null())
        || status["state"].as_str().is_some_and(|s| s != "uploading")
}

/// The JSON of an event's `data:` lines.
fn data_of(event: &[u8]) -> Option<Value> {
    let text = String::from_utf8_lossy(event);
    let data: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data.join("\n")).ok()
}

fn join(url: &Url, leaf: &str) -> Result<Url> {
    let mut joined = url.clone();
    joined
        .path_segments_mut()
        .map_err(|()| ClientError::Usage(format!("{url} cannot name an upload")))?
        .pop_if_empty()
        .push(leaf);
    Ok(joined)
}

/// A bar on a terminal, JSON lines with --json, plain lines otherwise.
struct View {
    json: bool,
    quiet: bool,
    bar: ProgressBar,
}

impl View {
    fn new(json: bool, quiet: bool) -> View {
        let target = match json || quiet {
            true => ProgressDrawTarget::hidden(),
            false => ProgressDrawTarget::stderr(),
        };
        let bar = ProgressBar::with_draw_target(None, target);
        let template = "[{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}";
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        View { json, quiet, bar }
    }

    fn show(&self, status: &Value) {
        if self.json {
            emit(status.clone());
            return;
        }
        if let Some(size) = status["size"].as_u64() {
            self.bar.set_length(size);
        }
        self.bar
            .set_position(status["received"].as_u64().unwrap_or(0));
        self.bar
            .set_message(status["state"].as_str().unwrap_or("").to_owned());
        if self.bar.is_hidden() && !self.quiet {
            eprintln!(
                "{} bytes of {}, {}",
                status["received"],
                status["size"],
                status["state"].as_str().unwrap_or("")
            );
        }
    }

    fn note(&self, text: &str) {
        if !self.json {
            self.bar.suspend(|| eprintln!("{text}"));
        }
    }

    fn finish(&self, last: &Value) {
        let state = match last.get("removed").and_then(Value::as_str) {
            Some(removed) => removed.to_owned(),
            None => last["state"].as_str().unwrap_or("unknown").to_owned(),
        };
        self.bar.finish_with_message(state.clone());
        if !self.json && !self.quiet {
            eprintln!("{state}");
        }
    }
}

//! Progress channels over the hub: long poll, WebSocket and Server-Sent Events.
//!
//! Each watcher reads the latest status from a `watch` channel, so a slow one never builds a
//! backlog; each sends at most one message per `MIN_GAP`, and always the final state.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message};
use bytes::Bytes;
use tokio::time::{interval_at, sleep, Instant};

use super::extract::{parse_count, parse_id};
use super::openapi::UploadIdPath;
use super::respond::status_response;
use super::Ctx;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::{Channel, Gauge};
use crate::upload::{Engine, Status, Watcher};

/// About ten messages a second per watcher.
const MIN_GAP: Duration = Duration::from_millis(100);
const POLL_DEFAULT: u64 = 25;
const POLL_MAX: u64 = 60;
const WS_PING_EVERY: Duration = Duration::from_secs(20);
const SSE_HEARTBEAT_EVERY: Duration = Duration::from_secs(15);
/// What a WebSocket client may send without completing a message. Watchers only ever send
/// pings, pongs and a close; actix's frame parser would buffer a frame whatever length its
/// header claims before checking it, so the bytes are counted here instead.
const WS_CLIENT_PENDING_MAX: usize = 16 * 1024;

/// Caps on open watchers, in total and per upload, so watchers cannot starve uploads.
pub struct WatcherSlots {
    max_total: usize,
    max_per_upload: usize,
    open: Mutex<(usize, HashMap<String, usize>)>,
}

/// One watcher's place; freed on drop.
pub struct Slot {
    slots: Arc<WatcherSlots>,
    key: String,
    /// Counts the watcher in /metrics while it is open.
    gauge: Option<Gauge>,
}

impl WatcherSlots {
    pub fn new(max_total: usize, max_per_upload: usize) -> Arc<WatcherSlots> {
        Arc::new(WatcherSlots {
            max_total,
            max_per_upload,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    fn take(self: &Arc<Self>, key: &str) -> Result<Slot, ApiError> {
        let mut open = self.lock();
        if open.0 >= self.max_total {
            return Err(ApiError::TooManyWatchers {
                per_upload: false,
                limit: self.max_total,
            });
        }
        // Checked before an entry exists, so a refused id leaves nothing behind.
        if open.1.get(key).copied().unwrap_or(0) >= self.max_per_upload {
            return Err(ApiError::TooManyWatchers {
                per_upload: true,
                limit: self.max_per_upload,
            });
        }
        *open.1.entry(key.to_owned()).or_default() += 1;
        open.0 += 1;
        Ok(Slot {
            slots: self.clone(),
            key: key.to_owned(),
            gauge: None,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<String, usize>)> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        open.0 -= 1;
        if let Some(count) = open.1.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.1.remove(&self.key);
            }
        }
    }
}

/// Takes a slot and subscribes: a malformed id is 400 and an unknown one 404, before anything
/// else happens.
async fn start_watching(
    path: &str,
    engine: &Engine,
    ctx: &Ctx,
    channel: Channel,
) -> Result<(Watcher, Slot), ApiError> {
    let id = parse_id(path)?;
    let mut slot = ctx.watchers.take(&id.to_string())?;
    // Boxed: the database read inside is a large future, and a watcher's handler would
    // otherwise keep room for it for as long as it waits (4.4 KiB of every pending long poll).
    let watcher = Box::pin(engine.watch(id)).await?;
    slot.gauge = Some(engine.metrics().watcher(channel));
    Ok((watcher, slot))
}

/// `GET /uploads/{id}/poll?received=N&timeout=S`.
#[utoipa::path(
    get,
    path = "/uploads/{id}/poll",
    operation_id = "pollUpload",
    tag = "progress",
    summary = "Long poll: the status once it differs from what the client knows",
    description = "Answers at once if `received` differs from the upload's or the upload is no \
        longer `uploading` (or without `received`); otherwise when one of those changes, or \
        after `timeout` seconds.",
    params(
        UploadIdPath,
        ("received" = Option<u64>, Query, description = "The `received` the client knows."),
        ("timeout" = Option<u64>, Query, description = "Seconds to wait at most: default 25; more than 60 counts as 60."),
    ),
    responses(
        (status = 200, body = Status, description = "The current status.",
            headers(
                ("Cache-Control" = String, description = "Always `no-store`."),
                ("Upload-Offset" = u64, description = "Always: `received`."),
            )),
        (status = 400, body = ErrorBody, description = "`invalid_id`, `invalid_query`, `invalid_received` or `invalid_timeout`."),
        (status = 404, body = ErrorBody, description = "`not_found`: no upload has this id."),
        (status = 410, body = ErrorBody, description = "`gone`: the upload was deleted or expired."),
        (status = 429, body = ErrorBody, description = "`too_many_watchers`: over `--max-watchers-per-upload`."),
        (status = 500, body = ErrorBody, description = "`database_error` or `internal_error`."),
        (status = 503, body = ErrorBody, description = "`too_many_watchers` (over `--max-watchers`) or `storage_unavailable`."),
    ),
)]
pub async fn poll(
    req: HttpRequest,
    path: web::Path<String>,
    engine: web::Data<Engine>,
    ctx: web::Data<Ctx>,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    let known = match query.get("received") {
        Some(text) => Some(parse_count(text).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_received",
                "received must be a non-negative integer",
            )
        })?),
        None => None,
    };
    let timeout = match query.get("timeout") {
        Some(text) => parse_count(text).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_timeout",
                "timeout must be a whole number of seconds",
            )
        })?,
        None => POLL_DEFAULT,
    }
    .min(POLL_MAX);
    let (mut watcher, _slot) = start_watching(&path, &engine, &ctx, Channel::Poll).await?;
    let deadline = sleep(Duration::from_secs(timeout));
    tokio::pin!(deadline);
    let status = loop {
        let status = watcher.latest();
        if known.is_none_or(|n| n != status.received) || status.is_final() {
            break status;
        }
        tokio::select! {
            more = watcher.changed() => if !more { break watcher.latest() },
            () = &mut deadline => break status,
        }
    };
    Ok(status_response(actix_web::http::StatusCode::OK, &status))
}

/// `GET /uploads/{id}/ws`: the status at once and on every change, then close 1000.
#[utoipa::path(
    get,
    path = "/uploads/{id}/ws",
    operation_id = "watchUploadWebSocket",
    tag = "progress",
    summary = "WebSocket: the status at once and on every change",
    description = "A WebSocket upgrade (RFC 6455: `Connection: Upgrade`, `Upgrade: websocket`, \
        `Sec-WebSocket-Key`, `Sec-WebSocket-Version: 13`). The server sends the status JSON as \
        a text message at once and on every change (about ten a second at most), pings every \
        20 s, and after the final state closes with 1000 and the final word (`complete`, \
        `failed`, `deleted`, `expired`). A client sending more than 16 KiB without completing \
        a message is closed with 1009.",
    params(UploadIdPath),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol.",
            headers(
                ("Upgrade" = String, description = "Always `websocket`."),
                ("Sec-WebSocket-Accept" = String, description = "Always: the handshake's answer."),
            )),
        (status = 400, body = ErrorBody, description = "`invalid_id`, or `invalid_websocket`: not a valid WebSocket upgrade."),
        (status = 403, body = ErrorBody, description = "`forbidden_origin`: an `Origin` that is not allowed."),
        (status = 404, body = ErrorBody, description = "`not_found`: no upload has this id."),
        (status = 410, body = ErrorBody, description = "`gone`: the upload was deleted or expired."),
        (status = 429, body = ErrorBody, description = "`too_many_watchers`: over `--max-watchers-per-upload`."),
        (status = 500, body = ErrorBody, description = "`database_error` or `internal_error`."),
        (status = 503, body = ErrorBody, description = "`too_many_watchers` (over `--max-watchers`) or `storage_unavailable`."),
    ),
)]
pub async fn websocket(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
    engine: web::Data<Engine>,
    ctx: web::Data<Ctx>,
) -> Result<HttpResponse, ApiError> {
    check_origin(&req, &ctx)?;
    let (watcher, slot) = start_watching(&path, &engine, &ctx, Channel::WebSocket).await?;
    let pending = Rc::new(Cell::new(0));
    let capped: actix_http::BoxedPayloadStream = Box::pin(CappedBody {
        body: body.into_inner(),
        pending: pending.clone(),
    });
    let capped: actix_web::dev::Payload = capped.into();
    let body = web::Payload::from_request(&req, &mut { capped })
        .await
        .map_err(|e| ApiError::bad_request("invalid_websocket", e.to_string()))?;
    let (response, session, messages) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::bad_request("invalid_websocket", e.to_string()))?;
    // A whole frame larger than this is refused too (actix checks it once the frame is in).
    let messages = messages.max_frame_size(WS_CLIENT_PENDING_MAX);
    actix_web::rt::spawn(websocket_loop(session, messages, watcher, slot, pending));
    Ok(response)
}

/// A WebSocket client's bytes, counted since its last whole message; past
/// `WS_CLIENT_PENDING_MAX` the stream fails, and the socket is closed with 1009.
struct CappedBody {
    body: actix_web::dev::Payload,
    pending: Rc<Cell<usize>>,
}

impl futures_util::Stream for CappedBody {
    type Item = Result<Bytes, actix_web::error::PayloadError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let next = std::pin::Pin::new(&mut self.body).poll_next(cx);
        if let std::task::Poll::Ready(Some(Ok(bytes))) = &next {
            let pending = self.pending.get() + bytes.len();
            self.pending.set(pending);
            if pending > WS_CLIENT_PENDING_MAX {
                return std::task::Poll::Ready(Some(Err(actix_web::error::PayloadError::Overflow)));
            }
        }
        next
    }
}

/// A WebSocket is not covered by the browser's same-origin rules, so a page on a foreign
/// origin could otherwise watch any upload whose id it learns.
fn check_origin(req: &HttpRequest, ctx: &Ctx) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default().trim();
    if ctx.policy.origin_allowed(origin) {
        Ok(())
    } else {
        Err(ApiError::ForbiddenOrigin(origin.to_owned()))
    }
}

async fn websocket_loop(
    mut session: actix_ws::Session,
    mut messages: actix_ws::MessageStream,
    mut watcher: Watcher,
    _slot: Slot,
    pending: Rc<Cell<usize>>,
) {
    let mut ping = interval_at(Instant::now() + WS_PING_EVERY, WS_PING_EVERY);
    let mut last_sent = Instant::now();
    let first = watcher.latest();
    if send_status(&mut session, &first).await.is_err() {
        return;
    }
    let mut last = first;
    while !last.is_final() {
        tokio::select! {
            more = watcher.changed() => {
                sleep_until_gap(last_sent).await;
                last = watcher.latest();
                if !more {
                    last.removed.get_or_insert_with(|| "deleted".into());
                }
                if send_status(&mut session, &last).await.is_err() {
                    return;
                }
                last_sent = Instant::now();
            }
            _ = ping.tick() => {
                if session.ping(b"").await.is_err() {
                    return;
                }
            }
            message = messages.recv() => match message {
                Some(Ok(Message::Ping(data))) => {
                    pending.set(0);
                    if session.pong(&data).await.is_err() {
                        return;
                    }
                }
                Some(Err(error))
                    if pending.get() > WS_CLIENT_PENDING_MAX
                        || matches!(error, actix_ws::ProtocolError::Overflow) =>
                {
                    let _ = session
                        .close(Some(CloseReason {
                            code: CloseCode::Size,
                            description: Some("a watcher sends only pings and a close".into()),
                        }))
                        .await;
                    return;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    let _ = session.close(None).await;
                    return;
                }
                Some(Ok(_)) => pending.set(0),
            },
        }
    }
    let _ = session
        .close(Some(CloseReason {
            code: CloseCode::Normal,
            description: Some(final_word(&last).into()),
        }))
        .await;
}

fn final_word(status: &Status) -> &str {
    status.removed.as_deref().unwrap_or(status.state.as_str())
}

async fn send_status(
    session: &mut actix_ws::Session,
    status: &Status,
) -> Result<(), actix_ws::Closed> {
    let text = serde_json::to_string(status).unwrap_or_default();
    session.text(text).await
}

async fn sleep_until_gap(last_sent: Instant) {
    let ready = last_sent + MIN_GAP;
    if ready > Instant::now() {
        tokio::time::sleep_until(ready).await;
    }
}

/// `GET /uploads/{id}/events`: Server-Sent Events, ending after the final state.
#[utoipa::path(
    get,
    path = "/uploads/{id}/events",
    operation_id = "watchUploadEvents",
    tag = "progress",
    summary = "Server-Sent Events: the status at once and on every change",
    description = "`event: progress` with the status JSON as `data`, at once and on every \
        change (about ten a second at most); a comment heartbeat every 15 s; the stream ends \
        after the final state. While the upload is `uploading` the stream stays open.",
    params(UploadIdPath),
    responses(
        (status = 200, description = "The event stream.", content(("text/event-stream")),
            headers(
                ("Cache-Control" = String, description = "Always `no-store`."),
                ("X-Accel-Buffering" = String, description = "Always `no` (for reverse proxies)."),
            )),
        (status = 400, body = ErrorBody, description = "`invalid_id`: not a lowercase UUID with hyphens."),
        (status = 404, body = ErrorBody, description = "`not_found`: no upload has this id."),
        (status = 410, body = ErrorBody, description = "`gone`: the upload was deleted or expired."),
        (status = 429, body = ErrorBody, description = "`too_many_watchers`: over `--max-watchers-per-upload`."),
        (status = 500, body = ErrorBody, description = "`database_error` or `internal_error`."),
        (status = 503, body = ErrorBody, description = "`too_many_watchers` (over `--max-watchers`) or `storage_unavailable`."),
    ),
)]
pub async fn events(
    path: web::Path<String>,
    engine: web::Data<Engine>,
    ctx: web::Data<Ctx>,
) -> Result<HttpResponse, ApiError> {
    let (watcher, slot) = start_watching(&path, &engine, &ctx, Channel::Sse).await?;
    let state = SseState {
        watcher,
        _slot: slot,
        heartbeat: interval_at(Instant::now() + SSE_HEARTBEAT_EVERY, SSE_HEARTBEAT_EVERY),
        last_sent: None,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        let chunk = state.next_chunk().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), state))
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // Tells reverse proxies such as nginx not to hold events back.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream))
}

struct SseState {
    watcher: Watcher,
    _slot: Slot,
    heartbeat: tokio::time::Interval,
    last_sent: Option<Instant>,
    done: bool,
}

impl SseState {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let Some(last_sent) = self.last_sent else {
            let first = self.watcher.latest();
            return Some(self.event(first));
        };
        tokio::select! {
            more = self.watcher.changed() => {
                sleep_until_gap(last_sent).await;
                let mut status = self.watcher.latest();
                if !more {
                    status.removed.get_or_insert_with(|| "deleted".into());
                }
                Some(self.event(status))
            }
            _ = self.heartbeat.tick() => Some(Bytes::from_static(b": heartbeat\n\n")),
        }
    }

    fn event(&mut self, status: Status) -> Bytes {
        self.last_sent = Some(Instant::now());
        self.done = status.is_final();
        let data = serde_json::to_string(&status).unwrap_or_default();
        Bytes::from(format!("event: progress\ndata: {data}\n\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_watcher_leaves_no_entry_behind() {
        let slots = WatcherSlots::new(10, 0);
        for n in 0..100 {
            assert!(slots.take(&format!("upload-{n}")).is_err());
        }
        assert!(slots.lock().1.is_empty(), "refused ids are not kept");
        let slots = WatcherSlots::new(10, 1);
        let held = slots.take("a").expect("a place");
        assert!(slots.take("a").is_err());
        drop(held);
        assert!(
            slots.lock().1.is_empty(),
            "the entry goes with its last watcher"
        );
    }
}

//! Counters for `GET /metrics` (Prometheus text format), kept with atomics so the byte path
//! never waits on them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds (seconds) of the append-duration histogram's buckets.
const DURATION_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default)]
pub struct Metrics {
    pub created: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub expired: AtomicU64,
    pub deleted: AtomicU64,
    pub bytes_received: AtomicU64,
    pub appends_in_flight: AtomicI64,
    pub watchers_websocket: AtomicI64,
    pub watchers_sse: AtomicI64,
    pub watchers_poll: AtomicI64,
    append_duration: Histogram,
    /// The object store's requests, when the bytes are in one.
    store: Option<Arc<StoreMetrics>>,
    /// Which instance this is, for an operator running many behind one name.
    instance: String,
    /// Hook events by type and outcome, and the age of the oldest queued one.
    pub hooks: HookMetrics,
}

/// Which progress channel a watcher uses.
#[derive(Debug, Clone, Copy)]
pub enum Channel {
    WebSocket,
    Sse,
    Poll,
}

impl Metrics {
    /// Also renders the requests of the object store that records into `store`.
    pub fn with_store(store: Arc<StoreMetrics>) -> Metrics {
        Metrics {
            store: Some(store),
            ..Metrics::default()
        }
    }

    /// Names this instance in `resumable_instance_info`.
    pub fn named(self, instance: &str) -> Metrics {
        Metrics {
            instance: instance.to_owned(),
            ..self
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn observe_append(&self, took: Duration) {
        self.append_duration.observe(took);
    }

    /// Counts one open watcher until the returned guard drops.
    pub fn watcher(self: &Arc<Self>, channel: Channel) -> Gauge {
        let pick: fn(&Metrics) -> &AtomicI64 = match channel {
            Channel::WebSocket => |m| &m.watchers_websocket,
            Channel::Sse => |m| &m.watchers_sse,
            Channel::Poll => |m| &m.watchers_poll,
        };
        Gauge::up(self.clone(), pick)
    }

    pub fn append_in_flight(self: &Arc<Self>) -> Gauge {
        Gauge::up(self.clone(), |m| &m.appends_in_flight)
    }

    /// The Prometheus text exposition of every metric; `disk_free` is measured by the caller.
    pub fn render(&self, disk_free: Option<u64>) -> String {
        let mut out = String::new();
        self.render_counters(&mut out);
        self.render_gauges(&mut out);
        let _ = writeln!(
            out,
            "# HELP resumable_append_duration_seconds Time from an append's start to its commit.\n# TYPE resumable_append_duration_seconds histogram"
        );
        self.append_duration
            .render(&mut out, "resumable_append_duration_seconds", "");
        if let Some(store) = &self.store {
            store.render(&mut out);
        }
        self.hooks.render(&mut out);
        if let Some(free) = disk_free {
            let _ = writeln!(
                out,
                "# HELP resumable_disk_free_bytes Free bytes on the data directory's file system.\n# TYPE resumable_disk_free_bytes gauge\nresumable_disk_free_bytes {free}"
            );
        }
        out
    }

    fn render_counters(&self, out: &mut String) {
        let counters = [
            ("uploads_created", "Uploads created.", &self.created),
            (
                "uploads_completed",
                "Uploads completed with a matching digest.",
                &self.completed,
            ),
            (
                "uploads_failed",
                "Uploads whose SHA-256 did not match the declared one.",
                &self.failed,
            ),
            (
                "uploads_expired",
                "Incomplete uploads removed after --expire-after.",
                &self.expired,
            ),
            (
                "uploads_deleted",
                "Uploads deleted by a client.",
                &self.deleted,
            ),
            (
                "bytes_received",
                "Bytes committed durably.",
                &self.bytes_received,
            ),
        ];
        for (name, help, value) in counters {
            let value = value.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP resumable_{name}_total {help}\n# TYPE resumable_{name}_total counter\nresumable_{name}_total {value}"
            );
        }
    }

    fn render_gauges(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP resumable_instance_info The instance these metrics are from (--instance-name).\n# TYPE resumable_instance_info gauge\nresumable_instance_info{{instance=\"{}\"}} 1",
            self.instance.replace(['\\', '"', '\n'], "_")
        );
        let _ = writeln!(
            out,
            "# HELP resumable_appends_in_flight Appends streaming now.\n# TYPE resumable_appends_in_flight gauge\nresumable_appends_in_flight {}",
            self.appends_in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP resumable_watchers Progress watchers open, by channel.\n# TYPE resumable_watchers gauge");
        for (channel, gauge) in [
            ("websocket", &self.watchers_websocket),
            ("sse", &self.watchers_sse),
            ("poll", &self.watchers_poll),
        ] {
            let _ = writeln!(
                out,
                "resumable_watchers{{channel=\"{channel}\"}} {}",
                gauge.load(Ordering::Relaxed)
            );
        }
    }
}

/// Hook event types, in the order of `hooks::EventKind::index`.
pub const HOOK_EVENTS: [&str; 6] = [
    "pre-create",
    "pre-finish",
    "post-create",
    "post-receive",
    "post-finish",
    "post-terminate",
];
/// What happened to a hook event: a `pre-*` one is delivered or failed; a `post-*` one is
/// queued, then delivered, retried or (after --hooks-retry-for) failed.
const HOOK_OUTCOMES: [&str; 4] = ["queued", "delivered", "retried", "failed"];

#[derive(Debug)]
pub struct HookMetrics {
    events: [[AtomicU64; HOOK_OUTCOMES.len()]; HOOK_EVENTS.len()],
    /// Milliseconds since the oldest queued event was queued; -1 when the queue is empty
    /// (or no hooks are configured).
    oldest_millis: AtomicI64,
}

impl Default for HookMetrics {
    fn default() -> Self {
        HookMetrics {
            events: Default::default(),
            oldest_millis: AtomicI64::new(-1),
        }
    }
}

impl HookMetrics {
    /// Counts one event of `HOOK_EVENTS[kind]` with an outcome of `HOOK_OUTCOMES`.
    pub fn count(&self, kind: usize, outcome: &str) {
        let Some(outcome) = HOOK_OUTCOMES.iter().position(|o| *o == outcome) else {
            return;
        };
        if let Some(row) = self.events.get(kind) {
            row[outcome].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn set_oldest_millis(&self, millis: i64) {
        self.oldest_millis.store(millis, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP resumable_hook_events_total Hook events by type and outcome.\n# TYPE resumable_hook_events_total counter");
        for (kind, row) in HOOK_EVENTS.iter().zip(&self.events) {
            for (outcome, value) in HOOK_OUTCOMES.iter().zip(row) {
                let value = value.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "resumable_hook_events_total{{type=\"{kind}\",outcome=\"{outcome}\"}} {value}"
                );
            }
        }
        let millis = self.oldest_millis.load(Ordering::Relaxed).max(0);
        let _ = writeln!(
            out,
            "# HELP resumable_hook_queue_oldest_seconds Age of the oldest hook event waiting for delivery (0 when none waits).\n# TYPE resumable_hook_queue_oldest_seconds gauge\nresumable_hook_queue_oldest_seconds {}",
            millis as f64 / 1000.0
        );
    }
}

/// A cumulative histogram of durations over `DURATION_BUCKETS`.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    count: AtomicU64,
    micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Its `_bucket`, `_sum` and `_count` series, each carrying `labels` (`key="value"`, or
    /// nothing).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let comma = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(&self.buckets) {
            let n = load(bucket);
            let _ = writeln!(out, "{name}_bucket{{{labels}{comma}le=\"{bound}\"}} {n}");
        }
        let count = load(&self.count);
        let _ = writeln!(out, "{name}_bucket{{{labels}{comma}le=\"+Inf\"}} {count}");
        let labels = match labels {
            "" => String::new(),
            labels => format!("{{{labels}}}"),
        };
        let seconds = load(&self.micros) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{labels} {seconds}");
        let _ = writeln!(out, "{name}_count{labels} {count}");
    }
}

/// A request an object store makes, by the name /metrics gives it.
#[derive(Debug, Clone, Copy)]
pub enum StoreOp {
    CreateMultipart,
    PutPart,
    CopyPart,
    PutTail,
    PutObject,
    CompleteMultipart,
    AbortMultipart,
    GetTail,
    GetObject,
    Head,
    Delete,
    List,
}

impl StoreOp {
    const ALL: [StoreOp; 12] = [
        StoreOp::CreateMultipart,
        StoreOp::PutPart,
        StoreOp::CopyPart,
        StoreOp::PutTail,
        StoreOp::PutObject,
        StoreOp::CompleteMultipart,
        StoreOp::AbortMultipart,
        StoreOp::GetTail,
        StoreOp::GetObject,
        StoreOp::Head,
        StoreOp::Delete,
        StoreOp::List,
    ];

    fn name(self) -> &'static str {
        match self {
            StoreOp::CreateMultipart => "create_multipart",
            StoreOp::PutPart => "put_part",
            StoreOp::CopyPart => "copy_part",
            StoreOp::PutTail => "put_tail",
            StoreOp::PutObject => "put_object",
            StoreOp::CompleteMultipart => "complete_multipart",
            StoreOp::AbortMultipart => "abort_multipart",
            StoreOp::GetTail => "get_tail",
            StoreOp::GetObject => "get_object",
            StoreOp::Head => "head",
            StoreOp::Delete => "delete",
            StoreOp::List => "list",
        }
    }
}

/// How a store request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The store answered that the object or upload is not there (often expected: a delete of
    /// what is gone, a look for a finished object that is not yet).
    NotFound,
    /// Unreachable, or an error on the store's side (the request may work later).
    Unavailable,
    Error,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::NotFound,
        Outcome::Unavailable,
        Outcome::Error,
    ];

    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "not_found",
            Outcome::Unavailable => "unavailable",
            Outcome::Error => "error",
        }
    }
}

/// An object store's requests by operation and outcome, their durations, and the bytes it
/// accepted. Shared by the store, which records, and `Metrics`, which renders.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    requests: [[AtomicU64; Outcome::ALL.len()]; StoreOp::ALL.len()],
    durations: [Histogram; StoreOp::ALL.len()],
    bytes_written: AtomicU64,
}

impl StoreMetrics {
    /// One request answered after `took`; the `payload` it carried counts as written if the
    /// store accepted it.
    pub fn observe(&self, op: StoreOp, outcome: Outcome, took: Duration, payload: u64) {
        self.requests[op as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
        self.durations[op as usize].observe(took);
        if outcome == Outcome::Ok && payload > 0 {
            self.bytes_written.fetch_add(payload, Ordering::Relaxed);
        }
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP resumable_store_requests_total Requests to the object store, by operation and outcome.\n# TYPE resumable_store_requests_total counter");
        for op in StoreOp::ALL {
            for outcome in Outcome::ALL {
                let n = self.requests[op as usize][outcome as usize].load(Ordering::Relaxed);
                let (op, outcome) = (op.name(), outcome.name());
                let _ = writeln!(
                    out,
                    "resumable_store_requests_total{{operation=\"{op}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        let name = "resumable_store_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time the object store took to answer a request (with its retries), by operation.\n# TYPE {name} histogram");
        for op in StoreOp::ALL {
            let labels = format!("operation=\"{}\"", op.name());
            self.durations[op as usize].render(out, name, &labels);
        }
        let _ = writeln!(
            out,
            "# HELP resumable_store_bytes_written_total Bytes the object store accepted in parts and objects.\n# TYPE resumable_store_bytes_written_total counter\nresumable_store_bytes_written_total {}",
            self.bytes_written.load(Ordering::Relaxed)
        );
    }
}

/// A gauge held up while this lives.
pub struct Gauge {
    metrics: Arc<Metrics>,
    pick: fn(&Metrics) -> &AtomicI64,
}

impl Gauge {
    fn up(metrics: Arc<Metrics>, pick: fn(&Metrics) -> &AtomicI64) -> Gauge {
        pick(&metrics).fetch_add(1, Ordering::Relaxed);
        Gauge { metrics, pick }
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        (self.pick)(&self.metrics).fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_a_cumulative_histogram() {
        let metrics = Arc::new(Metrics::default());
        Metrics::add(&metrics.created, 2);
        metrics.observe_append(Duration::from_millis(30));
        metrics.observe_append(Duration::from_secs(3));
        let _open = metrics.watcher(Channel::Sse);
        let text = metrics.render(Some(1234));
        assert!(text.contains("resumable_uploads_created_total 2\n"));
        assert!(text.contains("resumable_append_duration_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("resumable_append_duration_seconds_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("resumable_append_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("resumable_watchers{channel=\"sse\"} 1\n"));
        assert!(text.contains("resumable_disk_free_bytes 1234\n"));
        drop(_open);
        assert!(metrics
            .render(None)
            .contains("resumable_watchers{channel=\"sse\"} 0\n"));
        assert!(
            !text.contains("resumable_store_"),
            "no object store, no store series"
        );
    }

    #[test]
    fn renders_store_requests_by_operation_and_outcome() {
        let store = Arc::new(StoreMetrics::default());
        let metrics = Metrics::with_store(store.clone());
        let ms = Duration::from_millis;
        store.observe(StoreOp::PutPart, Outcome::Ok, ms(20), 5 << 20);
        store.observe(StoreOp::PutPart, Outcome::Unavailable, ms(300), 5 << 20);
        store.observe(StoreOp::Head, Outcome::NotFound, ms(2), 0);
        let text = metrics.render(None);
        let series = |s: &str| assert!(text.contains(s), "no {s:?} in\n{text}");
        series("resumable_store_requests_total{operation=\"put_part\",outcome=\"ok\"} 1\n");
        series(
            "resumable_store_requests_total{operation=\"put_part\",outcome=\"unavailable\"} 1\n",
        );
        series("resumable_store_requests_total{operation=\"put_part\",outcome=\"error\"} 0\n");
        series("resumable_store_requests_total{operation=\"head\",outcome=\"not_found\"} 1\n");
        series("resumable_store_request_duration_seconds_bucket{operation=\"put_part\",le=\"0.05\"} 1\n");
        series("resumable_store_request_duration_seconds_bucket{operation=\"put_part\",le=\"+Inf\"} 2\n");
        series("resumable_store_request_duration_seconds_count{operation=\"put_part\"} 2\n");
        series("resumable_store_request_duration_seconds_sum{operation=\"put_part\"} 0.32\n");
        series("resumable_store_request_duration_seconds_count{operation=\"head\"} 1\n");
        // Only what the store accepted was written.
        series("resumable_store_bytes_written_total 5242880\n");
    }
}

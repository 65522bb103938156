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
    append_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    append_count: AtomicU64,
    append_micros: AtomicU64,
}

/// Which progress channel a watcher uses.
#[derive(Debug, Clone, Copy)]
pub enum Channel {
    WebSocket,
    Sse,
    Poll,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn observe_append(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(&self.append_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.append_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.append_micros.fetch_add(micros, Ordering::Relaxed);
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
        self.render_durations(&mut out);
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

    fn render_durations(&self, out: &mut String) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP resumable_append_duration_seconds Time from an append's start to its commit.\n# TYPE resumable_append_duration_seconds histogram"
        );
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(&self.append_buckets) {
            let _ = writeln!(
                out,
                "resumable_append_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                load(bucket)
            );
        }
        let count = load(&self.append_count);
        let _ = writeln!(
            out,
            "resumable_append_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "resumable_append_duration_seconds_sum {}",
            load(&self.append_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "resumable_append_duration_seconds_count {count}");
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
    }
}

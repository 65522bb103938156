//! How the client tells its progress: bars on a terminal (one per file and a total), plain
//! lines every few seconds when standard error is not one, one JSON object per line on
//! standard output with `--json`, or nothing with `--quiet`. Upload URLs go to standard
//! output; everything else to standard error.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use super::Common;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bars,
    Lines,
    Json,
    Quiet,
}

/// How often a plain line or a JSON progress object is written for one file.
const LINE_EVERY: Duration = Duration::from_secs(2);
const JSON_EVERY: Duration = Duration::from_secs(1);

pub struct Reporter {
    mode: Mode,
    multi: MultiProgress,
    total: Option<ProgressBar>,
}

/// One file's share of the report.
pub struct FileReport {
    reporter: Arc<Reporter>,
    file: String,
    size: u64,
    bar: Option<ProgressBar>,
    state: Mutex<FileState>,
}

struct FileState {
    url: String,
    sent: u64,
    last_written: Option<Instant>,
    started: Instant,
    started_at: u64,
}

impl Reporter {
    /// For `total` bytes over `files` files.
    pub fn new(common: &Common, total: u64, files: usize) -> Arc<Reporter> {
        let mode = if common.json {
            Mode::Json
        } else if common.quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        };
        let multi = MultiProgress::with_draw_target(match mode {
            Mode::Bars => ProgressDrawTarget::stderr(),
            _ => ProgressDrawTarget::hidden(),
        });
        let total = (mode == Mode::Bars && files > 1).then(|| {
            let bar = multi.add(ProgressBar::new(total));
            bar.set_style(style(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            ));
            bar.set_prefix("total");
            bar
        });
        Arc::new(Reporter { mode, multi, total })
    }

    pub fn file(self: &Arc<Self>, file: &str, size: u64) -> FileReport {
        let bar = (self.mode == Mode::Bars).then(|| {
            let bar = match &self.total {
                Some(total) => self.multi.insert_before(total, ProgressBar::new(size)),
                None => self.multi.add(ProgressBar::new(size)),
            };
            bar.set_style(style(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta} {msg}",
            ));
            bar.set_prefix(short_name(file));
            bar
        });
        FileReport {
            reporter: self.clone(),
            file: file.to_owned(),
            size,
            bar,
            state: Mutex::new(FileState {
                url: String::new(),
                sent: 0,
                last_written: None,
                started: Instant::now(),
                started_at: 0,
            }),
        }
    }

    /// The end of the run.
    pub fn done(&self, complete: usize, failed: usize) {
        if let Some(total) = &self.total {
            total.finish();
        }
        match self.mode {
            Mode::Json => emit(json!({"event": "done", "complete": complete, "failed": failed})),
            Mode::Quiet => {}
            _ if failed > 0 => self.note(&format!("{complete} complete, {failed} failed")),
            _ => {}
        }
    }

    /// A line for the person at the terminal, between the bars.
    pub fn note(&self, text: &str) {
        match self.mode {
            Mode::Bars => self.multi.suspend(|| eprintln!("{text}")),
            Mode::Lines => eprintln!("{text}"),
            Mode::Json | Mode::Quiet => {}
        }
    }

    fn stdout_line(&self, text: &str) {
        let print = || {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        };
        match self.mode {
            Mode::Bars => self.multi.suspend(print),
            _ => print(),
        }
    }
}

impl FileReport {
    pub fn started(&self, url: &str, id: &str, offset: u64, resumed: bool) {
        {
            let mut state = self.lock();
            state.url = url.to_owned();
            state.sent = offset;
            state.started = Instant::now();
            state.started_at = offset;
        }
        if let Some(bar) = &self.bar {
            bar.set_position(offset);
            bar.reset_eta();
        }
        self.add_to_total(offset);
        let reporter = &self.reporter;
        match reporter.mode {
            Mode::Json => emit(json!({"event": "started", "file": self.file, "url": url,
                "id": id, "size": self.size, "offset": offset, "resumed": resumed})),
            _ => {
                reporter.stdout_line(url);
                if resumed && offset > 0 {
                    reporter.note(&format!(
                        "{}: resuming at {} of {} bytes",
                        self.file, offset, self.size
                    ));
                }
            }
        }
    }

    /// The server holds `sent` bytes now.
    pub fn progress(&self, sent: u64) {
        let (delta, due, url, rate) = {
            let mut state = self.lock();
            let delta = sent.saturating_sub(state.sent);
            state.sent = sent;
            let every = match self.reporter.mode {
                Mode::Json => JSON_EVERY,
                _ => LINE_EVERY,
            };
            let due = state.last_written.is_none_or(|at| at.elapsed() >= every);
            if due {
                state.last_written = Some(Instant::now());
            }
            let seconds = state.started.elapsed().as_secs_f64().max(1e-3);
            let rate = (sent.saturating_sub(state.started_at)) as f64 / seconds;
            (delta, due, state.url.clone(), rate)
        };
        if let Some(bar) = &self.bar {
            bar.set_position(sent);
        }
        self.add_to_total(delta);
        if !due {
            return;
        }
        match self.reporter.mode {
            Mode::Json => emit(json!({"event": "progress", "file": self.file, "url": url,
                "sent": sent, "size": self.size, "bytes_per_second": rate.round()})),
            Mode::Lines => eprintln!(
                "{}: {} of {} bytes ({:.0} %), {:.1} MiB/s",
                self.file,
                sent,
                self.size,
                percent(sent, self.size),
                rate / (1u64 << 20) as f64
            ),
            Mode::Bars | Mode::Quiet => {}
        }
    }

    pub fn retry(&self, error: &str, wait: Duration) {
        let url = self.lock().url.clone();
        match self.reporter.mode {
            Mode::Json => emit(json!({"event": "retry", "file": self.file, "url": url,
                "error": error, "wait_seconds": wait.as_secs_f64()})),
            _ => {
                if let Some(bar) = &self.bar {
                    bar.set_message(format!("retrying in {} s", wait.as_secs()));
                }
                self.reporter.note(&format!(
                    "{}: {error}; retrying in {} s",
                    self.file,
                    wait.as_secs()
                ));
            }
        }
    }

    pub fn complete(&self, url: &str, id: &str, sha256: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message("complete");
            bar.finish();
        }
        match self.reporter.mode {
            Mode::Json => emit(json!({"event": "complete", "file": self.file, "url": url,
                "id": id, "size": self.size, "sha256": sha256})),
            Mode::Lines => eprintln!("{}: complete, sha256 {sha256}", self.file),
            Mode::Bars | Mode::Quiet => {}
        }
    }

    pub fn failed(&self, error: &str) {
        if let Some(bar) = &self.bar {
            bar.abandon_with_message("failed");
        }
        match self.reporter.mode {
            Mode::Json => emit(json!({"event": "failed", "file": self.file, "error": error})),
            _ => self
                .reporter
                .multi
                .suspend(|| eprintln!("{}: {error}", self.file)),
        }
    }

    /// Something the user should know (shown even with --quiet, on standard error).
    pub fn warn(&self, text: &str) {
        let line = format!("{}: {text}", self.file);
        match self.reporter.mode {
            Mode::Bars => self.reporter.multi.suspend(|| eprintln!("{line}")),
            _ => eprintln!("{line}"),
        }
    }

    fn add_to_total(&self, delta: u64) {
        if let Some(total) = &self.reporter.total {
            total.inc(delta);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FileState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One JSON object per line on standard output.
pub fn emit(value: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn short_name(file: &str) -> String {
    let name = std::path::Path::new(file)
        .file_name()
        .map_or_else(|| file.to_owned(), |n| n.to_string_lossy().into_owned());
    match name.chars().count() {
        n if n > 12 => format!("…{}", name.chars().skip(n - 11).collect::<String>()),
        _ => name,
    }
}

pub fn percent(part: u64, whole: u64) -> f64 {
    match whole {
        0 => 100.0,
        whole => part as f64 * 100.0 / whole as f64,
    }
}

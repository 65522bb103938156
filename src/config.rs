//! Typed settings: every flag is also an environment variable (`RESUMABLE_*`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// The largest size SQLite's signed 64-bit integers can hold.
pub const MAX_REPRESENTABLE_SIZE: u64 = i64::MAX as u64;

// The groups of `--help`, in the order they are listed.
const ADDRESS_AND_STORAGE: &str = "Address and storage";
const UPLOADS: &str = "Uploads";
const LIMITS: &str = "Limits on clients";
const ACCESS: &str = "Access";
const HOOKS: &str = "Hooks";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "resumable",
    version,
    about = "A resumable file upload service",
    after_help = "`resumable serve [FLAGS]` is the same. The client: `resumable upload FILE...`, \
                  `resumable status ID`, `resumable watch ID`, `resumable download ID` \
                  (each with --help)."
)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "RESUMABLE_BIND", default_value = "127.0.0.1:8080")]
    #[arg(help_heading = ADDRESS_AND_STORAGE)]
    pub bind: String,

    /// Directory for the SQLite database and the uploaded bytes.
    #[arg(long, env = "RESUMABLE_DATA_DIR", default_value = "./data")]
    #[arg(help_heading = ADDRESS_AND_STORAGE)]
    pub data_dir: PathBuf,

    /// Database URL; defaults to sqlite://<data-dir>/uploads.db.
    #[arg(long, env = "RESUMABLE_DATABASE_URL")]
    #[arg(help_heading = ADDRESS_AND_STORAGE)]
    pub database_url: Option<String>,

    /// Where the bytes go: a directory (default <data-dir>/files), or s3://BUCKET[/PREFIX] for
    /// an S3-compatible object store (credentials from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "RESUMABLE_STORAGE")]
    #[arg(help_heading = ADDRESS_AND_STORAGE)]
    pub storage: Option<String>,

    /// The object store's URL, for stores other than AWS (Garage, MinIO…): path-style requests.
    #[arg(long, env = "RESUMABLE_S3_ENDPOINT")]
    #[arg(help_heading = ADDRESS_AND_STORAGE)]
    pub s3_endpoint: Option<String>,

    /// The object store's region; default AWS_REGION, else us-east-1.
    #[arg(long, env = "RESUMABLE_S3_REGION")]
    #[arg(help_heading = ADDRESS_AND_STORAGE)]
    pub s3_region: Option<String>,

    /// Size of the object store's multipart parts (at least 5M).
    #[arg(long, env = "RESUMABLE_S3_PART_SIZE", value_parser = parse_size, default_value = "8M")]
    #[arg(help_heading = ADDRESS_AND_STORAGE)]
    pub s3_part_size: u64,

    /// The public base URL (e.g. https://files.example.com); when set, Location is absolute.
    #[arg(long, env = "RESUMABLE_PUBLIC_URL")]
    #[arg(help_heading = ADDRESS_AND_STORAGE)]
    pub public_url: Option<String>,

    /// This instance's name in /metrics (resumable_instance_info) and in the log; default the
    /// host's name.
    #[arg(long, env = "RESUMABLE_INSTANCE_NAME")]
    #[arg(help_heading = ADDRESS_AND_STORAGE)]
    pub instance_name: Option<String>,

    /// Log format on stderr: text or json.
    #[arg(long, env = "RESUMABLE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    #[arg(help_heading = ADDRESS_AND_STORAGE)]
    pub log_format: String,

    /// Largest upload accepted, in bytes; K, M, G and T mean powers of 1024.
    #[arg(long, env = "RESUMABLE_MAX_UPLOAD_SIZE", value_parser = parse_size)]
    #[arg(help_heading = UPLOADS)]
    pub max_upload_size: Option<u64>,

    /// How long an incomplete upload may sit idle before it is deleted (90s, 30m, 24h).
    #[arg(long, env = "RESUMABLE_EXPIRE_AFTER", default_value = "24h", value_parser = parse_duration)]
    #[arg(help_heading = UPLOADS)]
    pub expire_after: Duration,

    /// How long a deleted or expired upload's id answers 410 before it is forgotten (404).
    #[arg(long, env = "RESUMABLE_FORGET_AFTER", default_value = "30d", value_parser = parse_duration)]
    #[arg(help_heading = UPLOADS)]
    pub forget_after: Duration,

    /// Refuse creates and appends (507) when the data directory's disk has less free space.
    /// Default: 1 GiB or 5 % of the disk, whichever is smaller; `0` turns the check off.
    #[arg(long, env = "RESUMABLE_MIN_FREE_SPACE", value_parser = parse_size)]
    #[arg(help_heading = UPLOADS)]
    pub min_free_space: Option<u64>,

    /// Serve javascript.info's tutorial protocol (GET /status, POST /upload). Its client picks
    /// the file id, so anyone who guesses one can append to that upload.
    #[arg(long, env = "RESUMABLE_TUTORIAL_API")]
    #[arg(help_heading = UPLOADS)]
    pub tutorial_api: bool,

    /// An append whose body sends nothing this long is ended; what it stored is kept.
    #[arg(long, env = "RESUMABLE_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    #[arg(help_heading = LIMITS)]
    pub idle_timeout: Duration,

    /// The slowest body accepted, as BYTES/WINDOW (e.g. 1K/30s): an append that sends less in
    /// a whole window ends with 408, keeping what it stored. `0` turns the check off.
    #[arg(long, env = "RESUMABLE_MIN_BODY_RATE", default_value = "1K/30s", value_parser = parse_min_rate)]
    #[arg(help_heading = LIMITS)]
    pub min_body_rate: MinBodyRate,

    /// Largest request head (all header names and values), in bytes; larger is 431.
    #[arg(long, env = "RESUMABLE_MAX_HEADER_SIZE", default_value = "32K", value_parser = parse_size)]
    #[arg(help_heading = LIMITS)]
    pub max_header_size: u64,

    /// Most appends streaming at once, over all uploads; more are answered 503.
    #[arg(long, env = "RESUMABLE_MAX_APPENDS", default_value_t = 256)]
    #[arg(help_heading = LIMITS)]
    pub max_appends: usize,

    /// Most appends streaming at once from one client address; more are answered 429.
    #[arg(long, env = "RESUMABLE_MAX_APPENDS_PER_CLIENT", default_value_t = 32)]
    #[arg(help_heading = LIMITS)]
    pub max_appends_per_client: usize,

    /// Creates allowed per client address: N/s, N/m or N/h; `0` turns the limit off.
    #[arg(long, env = "RESUMABLE_CREATE_RATE", default_value = "20/s", value_parser = parse_create_rate)]
    #[arg(help_heading = LIMITS)]
    pub create_rate: CreateRate,

    /// Creates one address may make at once before the rate applies.
    #[arg(long, env = "RESUMABLE_CREATE_BURST", default_value_t = 200)]
    #[arg(help_heading = LIMITS)]
    pub create_burst: u32,

    /// Most progress watchers (WebSocket, SSE, long poll) open at once.
    #[arg(long, env = "RESUMABLE_MAX_WATCHERS", default_value_t = 100_000)]
    #[arg(help_heading = LIMITS)]
    pub max_watchers: usize,

    /// Most progress watchers open at once on one upload.
    #[arg(
        long,
        env = "RESUMABLE_MAX_WATCHERS_PER_UPLOAD",
        default_value_t = 20_000
    )]
    #[arg(help_heading = LIMITS)]
    pub max_watchers_per_upload: usize,

    /// A bearer token that creating an upload requires (repeatable). Without any token,
    /// anyone who reaches the service may create uploads.
    #[arg(
        long = "token",
        env = "RESUMABLE_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    #[arg(help_heading = ACCESS)]
    pub token: Vec<String>,

    /// A file with one accepted bearer token per line (repeatable).
    #[arg(
        long = "token-file",
        env = "RESUMABLE_TOKEN_FILE",
        value_delimiter = ','
    )]
    #[arg(help_heading = ACCESS)]
    pub token_file: Vec<PathBuf>,

    /// Let anyone who reaches a non-loopback address create uploads, without a token.
    #[arg(long, env = "RESUMABLE_ALLOW_ANONYMOUS")]
    #[arg(help_heading = ACCESS)]
    pub allow_anonymous: bool,

    /// An origin allowed to open WebSockets and make cross-origin requests (repeatable).
    #[arg(
        long = "allowed-origin",
        env = "RESUMABLE_ALLOWED_ORIGIN",
        value_delimiter = ','
    )]
    #[arg(help_heading = ACCESS)]
    pub allowed_origins: Vec<String>,

    /// A host name this service answers to besides its bind address and localhost (repeatable).
    /// Bound to loopback, it refuses requests naming any other host (DNS rebinding).
    #[arg(
        long = "allowed-host",
        env = "RESUMABLE_ALLOWED_HOST",
        value_delimiter = ','
    )]
    #[arg(help_heading = ACCESS)]
    pub allowed_hosts: Vec<String>,

    /// A bearer token that GET /metrics needs; without it, /metrics answers loopback only.
    #[arg(long, env = "RESUMABLE_METRICS_TOKEN", hide_env_values = true)]
    #[arg(help_heading = ACCESS)]
    pub metrics_token: Option<String>,

    /// POST hook events as JSON to this URL (http:// or https://).
    #[arg(long, env = "RESUMABLE_HOOKS_URL", conflicts_with = "hooks_command")]
    #[arg(help_heading = HOOKS)]
    pub hooks_url: Option<String>,

    /// Run this program for each hook event, with the event JSON on standard input and the
    /// event type as its argument.
    #[arg(long, env = "RESUMABLE_HOOKS_COMMAND")]
    #[arg(help_heading = HOOKS)]
    pub hooks_command: Option<PathBuf>,

    /// The hook events to send: pre-create, pre-finish, post-create, post-receive,
    /// post-finish, post-terminate.
    #[arg(
        long,
        env = "RESUMABLE_HOOKS_EVENTS",
        value_delimiter = ',',
        default_value = "pre-create,post-create,post-finish,post-terminate"
    )]
    #[arg(help_heading = HOOKS)]
    pub hooks_events: Vec<crate::hooks::EventKind>,

    /// How long a hook may take to answer; a pre-* hook that takes longer refuses with 503.
    #[arg(long, env = "RESUMABLE_HOOKS_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    #[arg(help_heading = HOOKS)]
    pub hooks_timeout: Duration,

    /// How long a post-* event is retried before it is given up.
    #[arg(long, env = "RESUMABLE_HOOKS_RETRY_FOR", default_value = "24h", value_parser = parse_duration)]
    #[arg(help_heading = HOOKS)]
    pub hooks_retry_for: Duration,

    /// At most one post-receive event per upload this often.
    #[arg(long, env = "RESUMABLE_HOOKS_PROGRESS_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    #[arg(help_heading = HOOKS)]
    pub hooks_progress_interval: Duration,

    /// Signs every HTTP hook event (header Resumable-Signature, HMAC-SHA256) with this key.
    #[arg(long, env = "RESUMABLE_HOOKS_SECRET", hide_env_values = true)]
    #[arg(help_heading = HOOKS)]
    pub hooks_secret: Option<String>,
}

/// Settings that parse but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the token file {0}: {1}")]
    TokenFile(std::path::PathBuf, std::io::Error),
    #[error("an empty token (--token, RESUMABLE_TOKEN, --metrics-token) would leave the service open to anyone; give a token, or none at all")]
    EmptyToken,
    #[error(
        "the token file {0} has no token (blank lines and lines starting with # are comments)"
    )]
    NoTokenInFile(std::path::PathBuf),
    #[error("an empty --hooks-secret would sign with no key; give a secret, or none at all")]
    EmptyHooksSecret,
    #[error("--hooks-url must be an http:// or https:// URL, not `{0}`")]
    HooksUrl(String),
}

impl Config {
    /// The hooks, if --hooks-url or --hooks-command is set.
    pub fn hooks(&self) -> Result<Option<crate::hooks::HookSettings>, ConfigError> {
        use crate::hooks::{HookSettings, Target};
        let target = match (&self.hooks_url, &self.hooks_command) {
            (Some(url), _) => {
                let parsed = reqwest13::Url::parse(url);
                if !parsed.is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()) {
                    return Err(ConfigError::HooksUrl(url.clone()));
                }
                Target::Url(url.clone())
            }
            (None, Some(command)) => Target::Command(command.clone()),
            (None, None) => return Ok(None),
        };
        if self
            .hooks_secret
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return Err(ConfigError::EmptyHooksSecret);
        }
        Ok(Some(HookSettings {
            target,
            events: self.hooks_events.clone(),
            timeout: self.hooks_timeout,
            retry_for: self.hooks_retry_for,
            progress_interval: self.hooks_progress_interval,
            secret: self.hooks_secret.clone(),
        }))
    }

    /// The database URL in force: the flag, or the SQLite file inside the data directory.
    /// --instance-name, else the host's name.
    pub fn instance_name(&self) -> String {
        self.instance_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .unwrap_or_else(|_| "resumable".to_owned())
        })
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("uploads.db").display()),
        }
    }

    /// The metrics token, if set; an empty one is an error, like an empty --token.
    pub fn metrics_token(&self) -> Result<Option<String>, ConfigError> {
        match self.metrics_token.as_deref().map(str::trim) {
            Some("") => Err(ConfigError::EmptyToken),
            token => Ok(token.map(str::to_owned)),
        }
    }

    /// Every accepted token: the flags' and the token files' lines.
    /// An empty token, or a token file with none, is an error rather than an open service:
    /// whoever set one meant creation to be closed. Blank and `#` lines in a file are comments.
    pub fn tokens(&self) -> Result<Vec<String>, ConfigError> {
        let mut tokens = Vec::new();
        for token in &self.token {
            if token.trim().is_empty() {
                return Err(ConfigError::EmptyToken);
            }
            tokens.push(token.trim().to_owned());
        }
        for path in &self.token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::TokenFile(path.clone(), e))?;
            let before = tokens.len();
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
            if tokens.len() == before {
                return Err(ConfigError::NoTokenInFile(path.clone()));
            }
        }
        Ok(tokens)
    }
}

/// Parses `1048576`, `512K`, `10M`, `4G`, `1T` (powers of 1024; an optional trailing `B` or `iB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let without_b = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, shift) = match without_b.chars().last() {
        Some('K') => (&without_b[..without_b.len() - 1], 10),
        Some('M') => (&without_b[..without_b.len() - 1], 20),
        Some('G') => (&without_b[..without_b.len() - 1], 30),
        Some('T') => (&without_b[..without_b.len() - 1], 40),
        _ => (without_b, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` is not a size such as 1048576, 512K, 10M, 4G or 1T"
        ));
    }
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is too large"))?;
    value
        .checked_mul(1u64 << shift)
        .filter(|bytes| *bytes <= MAX_REPRESENTABLE_SIZE)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses durations such as `90s`, `30m`, `24h`, `1h 30m`; zero is refused.
/// `--create-rate`: creates per second, or none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CreateRate(pub Option<f64>);

fn parse_create_rate(text: &str) -> Result<CreateRate, String> {
    crate::http::parse_rate(text).map(CreateRate)
}

/// `--min-body-rate`: bytes per window, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinBodyRate(pub Option<(u64, Duration)>);

pub fn parse_min_rate(text: &str) -> Result<MinBodyRate, String> {
    if text.trim() == "0" {
        return Ok(MinBodyRate(None));
    }
    let (bytes, window) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not BYTES/WINDOW, such as 1K/30s (or 0 for off)"))?;
    let bytes = parse_size(bytes)?;
    let window = parse_duration(window)?;
    Ok(MinBodyRate((bytes > 0).then_some((bytes, window))))
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration such as 90s, 30m or 24h: {e}"))?;
    if duration.is_zero() {
        return Err("the duration must be longer than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_powers_of_1024() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("10m"), Ok(10 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn durations_parse_and_zero_is_refused() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sizes_and_durations_take_any_text(text in ".{0,40}", n in 0u64..1_000_000) {
            let _ = parse_size(&text);
            let _ = parse_duration(&text);
            prop_assert_eq!(parse_size(&format!("{n}K")), Ok(n * 1024));
        }
    }
}

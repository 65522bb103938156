//! The command-line client: `resumable upload | status | watch | download`. It speaks only
//! HTTP to a server (this one, or any tus server with `--protocol tus`), never the engine.
//!
//! - [`api`]: the HTTP client: where an upload lives, errors worth a retry, backoff.
//! - `upload`: files sent in chunks that survive anything; `state`: what lets a second run
//!   carry on where the first stopped; `report`: bars, plain lines or JSON lines.
//! - `watch` (and `status`), `download`.

mod api;
mod download;
mod local;
mod protocol;
mod report;
mod state;
mod upload;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{parse_duration, parse_size};

/// The client's subcommands; `resumable` alone (or `resumable serve`) is the server.
pub const SUBCOMMANDS: [&str; 4] = ["upload", "status", "watch", "download"];

#[derive(Debug, Parser)]
#[command(
    name = "resumable",
    version,
    about = "A resumable file upload service and its client"
)]
pub struct ClientCli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload files; run the same command again after anything breaks to carry on.
    Upload(UploadArgs),
    /// Show an upload's status.
    Status(TargetArgs),
    /// Follow an upload live until it ends.
    Watch(TargetArgs),
    /// Download a complete upload (resuming a partial file), checking its SHA-256.
    Download(DownloadArgs),
}

/// What every subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The server's base URL.
    #[arg(
        long,
        env = "RESUMABLE_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// A bearer token for the server.
    #[arg(long, env = "RESUMABLE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// An extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// One JSON object per line on standard output instead of bars and text.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// This service's own API.
    Native,
    /// tus 1.0 (creation, checksum), which other servers speak too.
    Tus,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The files to upload.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub common: Common,
    /// Files sent at once.
    #[arg(long, default_value_t = 2)]
    pub parallel: usize,
    /// Bytes per request (K, M, G); by default adapted to the link, a few seconds each.
    #[arg(long, value_parser = parse_size)]
    pub chunk_size: Option<u64>,
    /// How long to keep retrying while the server cannot be reached or fails.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub retry_for: Duration,
    /// The protocol to speak.
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    pub protocol: Protocol,
    /// Send chunks without their own digest (the whole file's SHA-256 is still checked at the
    /// end). Saves a SHA-256 pass over every byte on each side; a chunk damaged on the way is
    /// then found only at the end, and the file must be sent again.
    #[arg(long)]
    pub no_chunk_digest: bool,
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The upload's id, or its URL.
    pub upload: String,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The upload's id, or its URL.
    pub upload: String,
    /// Where to write the file (default: the upload's name, here).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

/// Exit statuses: 0 all done, 1 something failed, 130 interrupted (as shells report SIGINT).
pub const INTERRUPTED: u8 = 130;

/// Runs a client subcommand to its exit status.
pub async fn run(cli: ClientCli) -> ExitCode {
    let outcome = tokio::select! {
        outcome = dispatch(cli.command) => outcome,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted: run the same command again to carry on where it stopped");
            return ExitCode::from(INTERRUPTED);
        }
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("resumable: {e}");
            ExitCode::FAILURE
        }
    }
}

/// True when everything asked for succeeded.
async fn dispatch(command: Command) -> Result<bool, api::ClientError> {
    match command {
        Command::Upload(args) => upload::run(args).await,
        Command::Status(args) => watch::status(args).await,
        Command::Watch(args) => watch::watch(args).await,
        Command::Download(args) => download::run(args).await,
    }
}

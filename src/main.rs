use std::process::ExitCode;

use clap::Parser;
use resumable::client;
use resumable::config::Config;
use resumable::startup::Application;
use tracing_subscriber::EnvFilter;

#[actix_web::main]
async fn main() -> ExitCode {
    // `resumable upload …` and friends are the client; anything else (no subcommand, or
    // `serve`) is the server, with every flag it has always taken.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some(command) if client::SUBCOMMANDS.contains(&command) => {
            return client::run(client::ClientCli::parse_from(args)).await;
        }
        Some("serve") => {
            args.remove(1);
        }
        _ => {}
    }
    serve(Config::parse_from(args)).await
}

async fn serve(config: Config) -> ExitCode {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if config.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    // Scripts and tests read the real address (port 0 picks one) from this line.
    println!("resumable listening on http://{}", app.local_addr());
    match app.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` (default `info`), except that actix's reports of a client's malformed request,
/// which it logs at ERROR, are off unless `RUST_LOG` names their module: a client's mistake is
/// not the server's error, and each one is already answered (400, 431, a WebSocket close).
fn log_filter() -> EnvFilter {
    let named = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for module in [
        "actix_http::h1::dispatcher",
        "actix_http::h1::decoder",
        "actix_http::ws::codec",
    ] {
        if !named.contains(module) {
            if let Ok(off) = format!("{module}=off").parse() {
                filter = filter.add_directive(off);
            }
        }
    }
    filter
}

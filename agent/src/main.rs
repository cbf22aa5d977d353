//! `scanbridge-agent` command line: `check-config FILE` and `run --config FILE`.
//! Thin: parsing, logging setup, signals; everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use scanbridge_agent::{app, config};
use tokio_util::sync::CancellationToken;

/// EX_USAGE: bad command line or configuration.
const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(name = "scanbridge-agent", version, about = "Scanbridge site agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file; prints "ok" or the mistake with its key and line.
    CheckConfig {
        /// Path of the agent configuration (TOML).
        file: PathBuf,
    },
    /// Run the agent.
    Run {
        /// Path of the agent configuration (TOML).
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    match cli.command {
        Command::CheckConfig { file } => match config::load(&file) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Run { config: file } => {
            let cfg = match config::load(&file) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    tracing::error!(error = %e, "refusing to start: bad configuration");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the async runtime");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(async {
                let cancel = CancellationToken::new();
                let signals = tokio::spawn(wait_for_signal(cancel.clone()));
                let r = app::run(cfg, cancel).await;
                signals.abort();
                r
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "agent stopped with an error");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Cancels `cancel` on SIGTERM or SIGINT.
async fn wait_for_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!(
                "cannot install signal handlers; stop the agent with SIGKILL only after it is idle"
            );
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        _ = cancel.cancelled() => return,
    }
    cancel.cancel();
}

//! `scanbridge-agent` command line: `check-config FILE`, `run --config FILE`,
//! `status [--config FILE]` (exit 0 healthy, 1 degraded, 2 agent not reachable) and
//! `store renumber --config FILE --after N` (the way out of a relay's 409 store conflict).
//! Thin: parsing, logging setup, signals; everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use scanbridge_agent::{app, config, status};
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
    /// Show the running agent's backlog, sources, relay contact and certificate; exit 0 when
    /// healthy, 1 when degraded, 2 when the agent cannot be reached.
    Status {
        /// Path of the agent configuration (TOML); only `[status] listen` is read.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Maintenance of the event store (run with the agent stopped).
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Subcommand)]
enum StoreCommand {
    /// After a gateway box was replaced or its store file deleted, the relay refuses the new
    /// store's batches (409: it already holds seqs up to N for the site). Moves every stored
    /// event to start at seq N+1, in one durable transaction, so they are forwarded. Run it
    /// with the agent stopped, with the N the relay's refusal names.
    Renumber {
        /// Path of the agent configuration (TOML); `site` and `state_dir` are read.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The highest seq the relay holds for the site (from the relay's 409 reason).
        #[arg(long)]
        after: u64,
        /// Renumber even a store that has already had events acknowledged by the relay (they
        /// may then be stored twice).
        #[arg(long)]
        force: bool,
    },
}

/// `store renumber`: moves the stored events after `after`; prints what it did.
fn renumber(file: &std::path::Path, after: u64, force: bool) -> ExitCode {
    let cfg = match config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let path = cfg.store_path();
    match scanbridge_agent::store::renumber_store(&path, &cfg.site, after, force) {
        Ok(done) => {
            println!("{}: {done}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot renumber: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where the packages install the configuration.
const DEFAULT_CONFIG: &str = "/etc/scanbridge/agent.toml";
/// `status`: the agent is degraded.
const EXIT_DEGRADED: u8 = 1;
/// `status`: the agent cannot be reached.
const EXIT_UNREACHABLE: u8 = 2;

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
        // Colour codes only on a terminal: journald and log files get plain text.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();

    match cli.command {
        Command::Status { config: file } => status(&file),
        Command::Store(StoreCommand::Renumber {
            config: file,
            after,
            force,
        }) => renumber(&file, after, force),
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
                let reload = std::sync::Arc::new(tokio::sync::Notify::new());
                let signals = tokio::spawn(wait_for_signal(cancel.clone()));
                let hups = tokio::spawn(forward_sighup(reload.clone()));
                let r = app::run_with_reload(cfg, Some(file), cancel, reload).await;
                signals.abort();
                hups.abort();
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

/// `scanbridge-agent status`: fetch `/status` from the running agent and print it.
fn status(file: &std::path::Path) -> ExitCode {
    let addr = match config::status_listen_from_file(file) {
        Ok(Some(a)) => a,
        Ok(None) => {
            eprintln!(
                "{}: [status] listen is \"\" (disabled): nothing to ask",
                file.display()
            );
            return ExitCode::from(EXIT_UNREACHABLE);
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let fetched = runtime.block_on(async {
        let client = scanbridge_agent::tls::loopback_client(std::time::Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        let response = client
            .get(format!("http://{addr}/status"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let code = response.status().as_u16();
        let body = response.text().await.map_err(|e| e.to_string())?;
        status::parse_report(code, &body).map_err(|e| e.to_string())
    });
    match fetched {
        Ok(report) => {
            print!(
                "{}",
                status::render(&report, scanbridge_agent::now_micros())
            );
            if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_DEGRADED)
            }
        }
        Err(e) => {
            eprintln!("agent not reachable at http://{addr}/status: {e} (is scanbridge-agent running with this config?)");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

/// Turns each SIGHUP into a reload notification (several before it is handled count once).
async fn forward_sighup(reload: std::sync::Arc<tokio::sync::Notify>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; reload by restarting the agent");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading");
        reload.notify_one();
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

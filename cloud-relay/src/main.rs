//! `scanbridge-relay`: the command line. Parses arguments, sets up logging (stderr, RUST_LOG,
//! default `info`), maps failures to exit codes (64 = bad command line or configuration) and
//! turns SIGTERM/SIGINT into a clean shutdown. Everything else lives in the library.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use scanbridge_relay::ca::{self, DEFAULT_SITE_DAYS};
use scanbridge_relay::config::Config;
use scanbridge_relay::relay::Relay;
use tokio_util::sync::CancellationToken;

/// EX_USAGE: bad command line or configuration.
const EXIT_USAGE: u8 = 64;
/// EX_CANTCREAT: refusing to overwrite.
const EXIT_CANTCREAT: u8 = 73;

#[derive(Parser)]
#[command(
    name = "scanbridge-relay",
    version,
    about = "Scanbridge cloud relay: mTLS batch intake, durable inbox, Odoo push"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the site certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Validate a configuration file (including TLS files and the Odoo key file) and exit.
    CheckConfig { file: PathBuf },
    /// Run the relay.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Fleet status of every site, worst first (from a running relay's admin API).
    Sites(scanbridge_relay::cli::AdminArgs),
    /// Dead letters on a running relay: list, show, replay, skip.
    DeadLetters {
        #[command(subcommand)]
        command: scanbridge_relay::cli::DeadLetterCommand,
    },
    /// Where is my scan? An event's path by SITE SEQ, or by --barcode CODE.
    Trace(scanbridge_relay::cli::TraceArgs),
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a CA and the relay's server certificate.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// DNS name of the relay (repeatable; default localhost).
        #[arg(long = "server-name")]
        server_names: Vec<String>,
        /// IP address of the relay (repeatable; default 127.0.0.1).
        #[arg(long = "server-ip")]
        server_ips: Vec<IpAddr>,
    },
    /// Issue a renewed certificate for a site (new key, new serial) into a new bundle directory;
    /// lists the site's earlier serials to revoke once the agent uses the new one.
    Renew {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        site: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = DEFAULT_SITE_DAYS)]
        days: u32,
    },
    /// Issue an admin client certificate (SAN urn:scanbridge:admin:NAME) for the admin listener.
    IssueAdmin {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 397)]
        days: u32,
    },
    /// Issue a site certificate bundle.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        site: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = DEFAULT_SITE_DAYS)]
        days: u32,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging();
    match cli.command {
        Command::Ca { command } => run_ca(command),
        Command::CheckConfig { file } => match check_config(&file) {
            Ok(()) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Run { config } => run(&config),
        Command::Sites(args) => ExitCode::from(scanbridge_relay::cli::sites(args)),
        Command::DeadLetters { command } => {
            ExitCode::from(scanbridge_relay::cli::dead_letters(command))
        }
        Command::Trace(args) => ExitCode::from(scanbridge_relay::cli::trace(args)),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: journald and log files get plain text.
        .with_ansi(colour_wanted())
        .init();
}

/// Whether log lines may carry ANSI colours: stderr is a terminal and `NO_COLOR` is unset.
fn colour_wanted() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn run_ca(command: CaCommand) -> ExitCode {
    let result = match command {
        CaCommand::IssueAdmin {
            dir,
            name,
            out,
            days,
        } => return run_issue_admin(&dir, &name, &out, days),
        CaCommand::Init {
            dir,
            mut server_names,
            mut server_ips,
        } => {
            if server_names.is_empty() {
                server_names.push("localhost".into());
            }
            if server_ips.is_empty() {
                server_ips.push(IpAddr::from([127, 0, 0, 1]));
            }
            ca::init(&dir, &server_names, &server_ips).map(|files| {
                println!("CA written: {}", files.ca_cert.display());
                println!("server certificate: {}", files.server_cert.display());
            })
        }
        CaCommand::Issue {
            dir,
            site,
            out,
            days,
        } => ca::issue(&dir, &site, &out, days).map(|bundle| {
            println!("site bundle for {site}: {}", bundle.site_cert.display());
        }),
        CaCommand::Renew {
            dir,
            site,
            out,
            days,
        } => ca::renew(&dir, &site, &out, days).map(|r| {
            println!(
                "renewed certificate for {site}: {} (serial {}, valid until {})",
                r.bundle.site_cert.display(),
                r.issued.serial,
                r.issued.not_after
            );
            println!(
                "install site.pem and site.key over the agent's relay.client_cert and relay.client_key; the agent switches without a restart"
            );
            if r.earlier.is_empty() {
                println!("no earlier certificate of {site} is recorded in {}", dir.join(ca::ISSUED_FILE).display());
            } else {
                println!("earlier certificates of {site} (still accepted until they expire; once the agent uses the new one, add their serials to [tls] revoked_serials_file):");
                for c in &r.earlier {
                    println!("  {}  valid until {}", c.serial, c.not_after);
                }
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let code = if e.is_usage() {
                EXIT_USAGE
            } else if matches!(e, ca::CaError::CaExists(_) | ca::CaError::BundleExists(_)) {
                EXIT_CANTCREAT
            } else {
                1
            };
            ExitCode::from(code)
        }
    }
}

/// `ca issue-admin`: an admin client certificate for the admin listener.
fn run_issue_admin(dir: &Path, name: &str, out: &Path, days: u32) -> ExitCode {
    match scanbridge_relay::admin::cert::issue_admin(dir, name, out, days) {
        Ok(b) => {
            println!(
                "admin certificate for {name}: {} (key {})",
                b.cert.display(),
                b.key.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_usage() {
                EXIT_USAGE
            } else {
                EXIT_CANTCREAT
            })
        }
    }
}

/// Everything `run` validates before opening a socket.
fn check_config(file: &Path) -> Result<(), String> {
    let config = Config::load(file).map_err(|e| e.to_string())?;
    scanbridge_relay::tls::server_config(
        &config.tls.server_cert,
        &config.tls.server_key,
        &config.tls.client_ca,
    )
    .map_err(|e| {
        let line = e.key().map_or(1, |key| {
            std::fs::read_to_string(file)
                .map_or(1, |text| scanbridge_relay::config::line_of_key(&text, key))
        });
        format!("{}: line {line}: {e}", file.display())
    })?;
    scanbridge_relay::tls::Revoked::load(config.tls.revoked_serials_file.as_deref()).map_err(
        |e| {
            let line = e.key().map_or(1, |key| {
                std::fs::read_to_string(file)
                    .map_or(1, |text| scanbridge_relay::config::line_of_key(&text, key))
            });
            format!("{}: line {line}: {e}", file.display())
        },
    )?;
    Ok(())
}

fn run(file: &Path) -> ExitCode {
    if let Err(message) = check_config(file) {
        eprintln!("error: {message}");
        return ExitCode::from(EXIT_USAGE);
    }
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async {
        let cancel = CancellationToken::new();
        let signals = Signals::install();
        let relay = Relay::start(config, cancel.clone()).await?;
        tokio::spawn(reload_on_sighup(signals.hup, relay.reload_trigger()));
        tokio::spawn(shutdown_on_signal(signals.term, cancel));
        relay.run().await?;
        Ok(())
    });
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP, SIGTERM and SIGINT, watched from the moment [`Signals::install`] returns: installed
/// before the relay binds and logs `listening on`, so a signal sent right after readiness is
/// handled, not the default action (which for SIGHUP and SIGTERM kills the process uncleanly).
struct Signals {
    hup: Option<tokio::signal::unix::Signal>,
    term: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let hup = signal(SignalKind::hangup()).ok();
        if hup.is_none() {
            tracing::error!(
                "cannot install the SIGHUP handler; the revocation file is still polled"
            );
        }
        let term = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => Some((t, i)),
            _ => {
                tracing::error!("cannot install signal handlers; stop the relay with SIGKILL");
                None
            }
        };
        Signals { hup, term }
    }
}

/// Each SIGHUP reloads what the relay can reload live (the revocation file).
async fn reload_on_sighup(
    hup: Option<tokio::signal::unix::Signal>,
    reload: std::sync::Arc<tokio::sync::Notify>,
) {
    let Some(mut hup) = hup else { return };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the revocation file");
        reload.notify_one();
    }
}

/// Cancels `cancel` on SIGTERM or SIGINT.
async fn shutdown_on_signal(
    term: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
    cancel: CancellationToken,
) {
    let Some((mut term, mut int)) = term else {
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = cancel.cancelled() => return,
    }
    cancel.cancel();
}

//! `scanbridge-odoo-sim`: command line, logging, signals. Prints `listening on ADDR` on stdout
//! once bound; logs go to stderr. Exit 64 on a bad command line.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use scanbridge_odoo_sim::{control, demo, server, OdooVersion, Sim, SimConfig};
use tokio_util::sync::CancellationToken;

/// An Odoo 17/18/19 simulator for Scanbridge's tests (JSON-RPC `/jsonrpc`, control API `/__sim/`).
#[derive(Debug, Parser)]
#[command(name = "scanbridge-odoo-sim", version)]
struct Cli {
    /// Address to listen on (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:8069")]
    listen: std::net::SocketAddr,
    /// Odoo major version to impersonate: 17, 18 or 19.
    #[arg(long = "odoo-version", default_value = "17")]
    odoo_version: OdooVersion,
    /// Database name (the only one that exists).
    #[arg(long, default_value = "scanbridge")]
    db: String,
    /// Login of the integration user (uid 2).
    #[arg(long, default_value = "scanbridge")]
    login: String,
    /// API key of the integration user.
    #[arg(long = "api-key")]
    api_key: String,
    /// Display name of the integration user (Odoo appends it to inventory move names).
    #[arg(long = "user-name", default_value = "Administrator")]
    user_name: String,
    /// Seed a small demo warehouse (products with EAN-13 barcodes, shelves WH-STOCK-A01..A12).
    #[arg(long = "demo-data")]
    demo_data: bool,
}

const EX_USAGE: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EX_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if cli.api_key.trim().is_empty() {
        eprintln!("error: --api-key must not be empty");
        return ExitCode::from(EX_USAGE);
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "odoo simulator stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let sim = Sim::new(SimConfig {
        version: cli.odoo_version,
        db_name: cli.db,
        login: cli.login,
        api_key: cli.api_key,
        user_name: cli.user_name,
    })?;
    if cli.demo_data {
        let seed = demo::demo_seed();
        let ids = sim.transaction(|db| control::seed_db(db, &seed))?;
        eprintln!("demo data seeded (product barcode -> name, location barcode):");
        for p in &seed.products {
            eprintln!(
                "  product  {}  {}  id={}",
                p.barcode, p.name, ids["products"][&p.barcode]
            );
        }
        for l in &seed.locations {
            eprintln!(
                "  location {}  {}  id={}",
                l.barcode, l.name, ids["locations"][&l.barcode]
            );
        }
    }
    if let Some(path) = std::env::var_os("SCANBRIDGE_SIM_CALL_LOG") {
        let path = std::path::PathBuf::from(path);
        match sim.log_calls_to(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "logging every object call"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open the call log")
            }
        }
    }
    let sim = Arc::new(sim);
    // SIGTERM is watched before "listening on" is printed: whoever waits for that line may stop
    // the simulator at once (the tests do), and an unwatched SIGTERM would kill it uncleanly.
    let stop_signal = StopSignal::watch();
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cli.listen))?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, version = %sim.config.version, db = %sim.config.db_name, "odoo simulator ready");

    let shutdown = CancellationToken::new();
    let signals = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            stop_signal.recv().await;
            shutdown.cancel();
        })
    };
    server::serve(listener, sim, shutdown).await;
    signals.abort();
    tracing::info!("odoo simulator stopped");
    Ok(())
}

/// SIGTERM (or Ctrl-C), watched from the moment [`StopSignal::watch`] returns.
struct StopSignal {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl StopSignal {
    fn watch() -> StopSignal {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let term = signal(SignalKind::terminate())
                .map_err(|e| {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the simulator");
                })
                .ok();
            StopSignal { term }
        }
        #[cfg(not(unix))]
        StopSignal {}
    }

    async fn recv(self) {
        #[cfg(unix)]
        if let Some(mut term) = self.term {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

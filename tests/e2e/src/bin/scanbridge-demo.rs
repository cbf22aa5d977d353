//! `scanbridge-demo`: the whole chain on one machine with embedded defaults — mosquitto with the
//! shipped gateway fragment, the Odoo simulator with its demo warehouse, a site CA and the WH01
//! bundle, the relay, the agent, and a scanner simulator publishing a realistic stream (several
//! devices counting shelves, now and then a malformed payload, a wrong check digit or a barcode
//! Odoo does not know). Prints a summary line every few seconds and where to look; Ctrl-C stops
//! everything cleanly (SIGTERM to each child, wait, exit 0).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use scanbridge_e2e::ean;
use scanbridge_e2e::odoo_sim::{SimOptions, SimState};
use scanbridge_e2e::process::StateDir;
use scanbridge_e2e::publisher::Publisher;
use scanbridge_e2e::scans::{topic_for, ScanPayload};
use scanbridge_e2e::stack::{Catalog, Stack, StackOptions};
use tokio_util::sync::CancellationToken;

/// Run the Scanbridge chain locally with a simulated scanner stream.
#[derive(Debug, Parser)]
#[command(name = "scanbridge-demo", version)]
struct Cli {
    /// State directory (wiped at start): configs, certificates, stores and every process's log.
    #[arg(long, default_value = "./demo-state")]
    state_dir: PathBuf,
    /// Scans per second the simulated scanners publish, all devices together.
    #[arg(long, default_value_t = 4.0)]
    rate: f64,
    /// Odoo version the simulator answers as (17, 18 or 19).
    #[arg(long, default_value = "17")]
    odoo_version: String,
    /// Seconds between two summary lines.
    #[arg(long, default_value_t = 5)]
    summary_secs: u64,
    /// Stop by itself after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration_secs: Option<u64>,
}

/// What the scanner simulator has sent, by kind.
#[derive(Default)]
struct Sent {
    good: AtomicU64,
    malformed: AtomicU64,
    bad_check_digit: AtomicU64,
    unknown_barcode: AtomicU64,
}

impl Sent {
    fn total(&self) -> u64 {
        self.good.load(Ordering::Relaxed)
            + self.malformed.load(Ordering::Relaxed)
            + self.bad_check_digit.load(Ordering::Relaxed)
            + self.unknown_barcode.load(Ordering::Relaxed)
    }
}

/// Products and shelves the scanners use: the simulator's demo warehouse when it lists it.
struct Shelves {
    products: Vec<(String, String)>,
    locations: Vec<String>,
}

fn shelves_from_state(state: &SimState) -> Option<Shelves> {
    let products: Vec<(String, String)> = state
        .products
        .iter()
        .filter(|p| ean::is_valid(&p.barcode))
        .map(|p| (p.barcode.clone(), p.name.clone()))
        .collect();
    let locations: Vec<String> = state
        .locations
        .iter()
        .filter(|l| l.usage.as_deref().is_none_or(|u| u == "internal"))
        .filter(|l| l.barcode.starts_with("WH-STOCK-"))
        .map(|l| l.barcode.clone())
        .collect();
    (!products.is_empty() && !locations.is_empty()).then_some(Shelves {
        products,
        locations,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let dir = StateDir::wiped(&cli.state_dir)
        .with_context(|| format!("preparing {}", cli.state_dir.display()))?;
    let root = dir.path().to_path_buf();
    println!("scanbridge-demo: starting the chain in {}", root.display());

    let opts = StackOptions {
        sim: SimOptions {
            odoo_version: cli.odoo_version.clone(),
            demo_data: true,
            ..SimOptions::default()
        },
        ..StackOptions::default()
    };
    let mut stack = Stack::start(dir, &opts)
        .await
        .context("starting mosquitto, the Odoo simulator, the relay and the agent")?;

    let state = stack
        .sim
        .state()
        .await
        .context("reading the simulator's state")?;
    let shelves = match shelves_from_state(&state) {
        Some(s) => s,
        None => {
            println!("  (the simulator did not list its demo data; seeding a small catalog)");
            let c = Catalog::seed(&stack.sim, 5, 24, 6, "WH-STOCK").await?;
            Shelves {
                products: c
                    .products
                    .iter()
                    .map(|(code, id)| (code.clone(), format!("product {id}")))
                    .collect(),
                locations: c.locations.iter().map(|(code, _)| code.clone()).collect(),
            }
        }
    };
    let names: BTreeMap<i64, String> = state
        .products
        .iter()
        .map(|p| (p.id, p.name.clone()))
        .collect();
    let loc_names: BTreeMap<i64, String> = state
        .locations
        .iter()
        .map(|l| (l.id, l.barcode.clone()))
        .collect();

    print_where_to_look(&stack, &root, &shelves);

    let stop = CancellationToken::new();
    let sent = Arc::new(Sent::default());
    let mut publisher = Publisher::connect(stack.mosquitto.port(), "scanner-simulator")
        .await
        .context("connecting the scanner simulator to mosquitto")?;
    let scanner = {
        let (stop, sent) = (stop.clone(), sent.clone());
        let rate = cli.rate.max(0.1);
        tokio::spawn(async move {
            let outcome = simulate_scanners(&mut publisher, shelves, rate, &sent, &stop).await;
            (publisher, outcome)
        })
    };

    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(cli.summary_secs.max(1)));
    ticker.tick().await;
    let mut last_quants: BTreeMap<(i64, i64), f64> = BTreeMap::new();
    let deadline = cli.duration_secs.map(|s| started + Duration::from_secs(s));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { println!("\nCtrl-C: stopping"); break; }
            _ = sigterm.recv() => { println!("\nSIGTERM: stopping"); break; }
            _ = ticker.tick() => {
                if let Err(e) = stack.ensure_all_running() {
                    println!("a process of the chain stopped: {e}");
                    break;
                }
                match stack.sim.state().await {
                    Ok(state) => {
                        let line = summary_line(started, &sent, &state, &mut last_quants, &names, &loc_names,
                            stack.relay.log_path());
                        println!("{line}");
                    }
                    Err(e) => println!("could not read the simulator's state: {e}"),
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    println!("--duration-secs reached: stopping");
                    break;
                }
            }
        }
    }

    stop.cancel();
    if let Ok((publisher, outcome)) = scanner.await {
        if let Err(e) = outcome {
            println!("scanner simulator stopped with: {e}");
        }
        publisher.disconnect().await;
    }
    shutdown(&mut stack);
    println!("stopped; everything is still in {}", root.display());
    Ok(())
}

fn print_where_to_look(stack: &Stack, root: &Path, shelves: &Shelves) {
    println!("chain is up — where to look:");
    println!("  state dir        {}", root.display());
    println!(
        "  mosquitto        127.0.0.1:{}  log {}",
        stack.mosquitto.port(),
        stack.mosquitto.log_path().display()
    );
    println!(
        "  Odoo simulator   {}  log {}",
        stack.sim.url(),
        root.join("odoo-sim.log").display()
    );
    println!("  simulator state  {}/__sim/state", stack.sim.url());
    println!(
        "  relay            {}  log {}  config {}",
        stack.relay.url(),
        stack.relay.log_path().display(),
        stack.relay.config_path().display()
    );
    println!(
        "  agent            log {}  config {}",
        stack.agent.log_path().display(),
        stack.agent.config_path().display()
    );
    println!("  site bundle      {}", stack.bundle.dir.display());
    println!(
        "  scanners publish to scanbridge/<device>/scan: {} products, shelves {}",
        shelves.products.len(),
        shelves.locations.join(" ")
    );
    println!("  try: mosquitto_pub -p {} -q 1 -t scanbridge/SC-09/scan -m '{{\"code\":\"{}\",\"op\":\"count\",\"qty\":5,\"location\":\"{}\"}}'",
        stack.mosquitto.port(), shelves.products[0].0, shelves.locations[0]);
    println!("Ctrl-C stops everything.\n");
}

/// The stream: four devices, each working its own shelves; mostly counts with plausible
/// quantities, about one in twelve scans going wrong in one of three ways.
async fn simulate_scanners(
    publisher: &mut Publisher,
    shelves: Shelves,
    rate: f64,
    sent: &Sent,
    stop: &CancellationToken,
) -> scanbridge_e2e::Result<()> {
    let devices = ["SC-01", "SC-02", "SC-03", "SC-04"];
    let unknown = ean::generate(9, 900_000, 50);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut rng = rand::rngs::StdRng::from_entropy();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let d = rng.gen_range(0..devices.len());
        let device = devices[d];
        // Each device counts its own stretch of shelves.
        let loc = &shelves.locations[(d * 3 + rng.gen_range(0..3)) % shelves.locations.len()];
        let (code, _name) = shelves
            .products
            .choose(&mut rng)
            .cloned()
            .unwrap_or_default();
        let roll: f64 = rng.gen();
        let payload = if roll < 0.03 {
            sent.malformed.fetch_add(1, Ordering::Relaxed);
            format!("{code};{loc};qty=").into_bytes()
        } else if roll < 0.06 {
            sent.bad_check_digit.fetch_add(1, Ordering::Relaxed);
            let wrong = ean::with_wrong_check_digit(&code).unwrap_or_else(|_| code.clone());
            ScanPayload::count(device, &wrong, loc, f64::from(rng.gen_range(1..40))).to_bytes()
        } else if roll < 0.08 {
            sent.unknown_barcode.fetch_add(1, Ordering::Relaxed);
            let code = unknown.choose(&mut rng).cloned().unwrap_or_default();
            ScanPayload::count(device, &code, loc, f64::from(rng.gen_range(1..40))).to_bytes()
        } else {
            sent.good.fetch_add(1, Ordering::Relaxed);
            ScanPayload::count(device, &code, loc, f64::from(rng.gen_range(0..60))).to_bytes()
        };
        publisher.publish(&topic_for(device), payload).await?;
    }
}

fn summary_line(
    started: Instant,
    sent: &Sent,
    state: &SimState,
    last: &mut BTreeMap<(i64, i64), f64>,
    names: &BTreeMap<i64, String>,
    loc_names: &BTreeMap<i64, String>,
    relay_log: &Path,
) -> String {
    let applied = state
        .moves
        .iter()
        .filter(|m| m.is_inventory && m.name.starts_with("scanbridge:"))
        .count();
    let chunks: std::collections::BTreeSet<&str> = state
        .moves
        .iter()
        .filter(|m| m.name.starts_with("scanbridge:"))
        .map(|m| m.name.as_str())
        .collect();
    let mut changes = Vec::new();
    for q in &state.quants {
        let (Some(p), Some(l)) = (q.product_id, q.location_id) else {
            continue;
        };
        let Some(loc) = loc_names.get(&l) else {
            continue;
        };
        let before = last.insert((p, l), q.quantity).unwrap_or(0.0);
        if before != q.quantity {
            let name = names
                .get(&p)
                .cloned()
                .unwrap_or_else(|| format!("product {p}"));
            changes.push(format!("{name}@{loc} {before}→{}", q.quantity));
        }
    }
    let shown = changes.len().min(3);
    let more = if changes.len() > shown {
        format!(" (+{} more)", changes.len() - shown)
    } else {
        String::new()
    };
    format!(
        "[{:>4}s] published {} | bad payloads {} (→ agent quarantine) | unknown barcodes {} | \
         Odoo: {} counts applied ({} chunks, {} RPCs) | relay dead letters {} | changes: {}{}",
        started.elapsed().as_secs(),
        sent.total(),
        sent.malformed.load(Ordering::Relaxed) + sent.bad_check_digit.load(Ordering::Relaxed),
        sent.unknown_barcode.load(Ordering::Relaxed),
        applied,
        chunks.len(),
        state.rpc_total,
        dead_letter_lines(relay_log).map_or_else(|| "n/a".to_string(), |n| n.to_string()),
        if changes.is_empty() {
            "none".to_string()
        } else {
            changes[..shown].join(", ")
        },
        more,
    )
}

/// Lines of the relay's log that report a dead letter (the relay logs each one; it has no status
/// endpoint to ask instead).
fn dead_letter_lines(relay_log: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(relay_log).ok()?;
    Some(
        text.lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("dead-lettered")
            })
            .count(),
    )
}

/// SIGTERM to each child in the order data flows, waiting for each.
fn shutdown(stack: &mut Stack) {
    let grace = Duration::from_secs(10);
    let report =
        |what: &str, r: scanbridge_e2e::Result<Option<(std::process::ExitStatus, bool)>>| match r {
            Ok(Some((status, true))) => println!("  {what}: stopped ({status})"),
            Ok(Some((_, false))) => println!(
                "  {what}: did not stop within {} s, killed",
                grace.as_secs()
            ),
            Ok(None) => println!("  {what}: was not running"),
            Err(e) => println!("  {what}: {e}"),
        };
    report("agent", stack.agent.stop(grace));
    report("relay", stack.relay.process().terminate(grace).map(Some));
    report(
        "Odoo simulator",
        stack.sim.process().terminate(grace).map(Some),
    );
    report(
        "mosquitto",
        stack.mosquitto.process().terminate(grace).map(Some),
    );
}

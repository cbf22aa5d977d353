//! `scanbridge-bench`: measures the chain on this machine and prints one table (benchmarks.md).
//!
//! Each round, on a fresh state directory and one mosquitto started with the shipped fragment:
//! 1. baseline: a no-op rumqttc subscriber (auto-ack, QoS 1) receives N scans from the publisher;
//! 2. agent durable ingest: the agent, forwarding to a probe relay that acks at once, receives the
//!    same N scans from the same publisher; timed until the probe holds all N (the agent forwards
//!    only what it has committed, so this bounds "all committed" from above);
//! 3. end to end: the agent, the real relay and the Odoo simulator; N counts published as fast as
//!    QoS 1 allows, timed until the last one is applied in the simulator (then verified exactly
//!    once), with the Odoo RPCs it took.
//!
//! The agent's peak RSS is VmHWM from /proc. Every figure printed comes from a measurement made in
//! this run; nothing is estimated. Run a release build: `cargo build --release --workspace --bins`
//! then `target/release/scanbridge-bench`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rand::SeedableRng;
use scanbridge_e2e::agent::{Agent, AgentOptions};
use scanbridge_e2e::checks::verify_exactly_once;
use scanbridge_e2e::mosquitto::Mosquitto;
use scanbridge_e2e::odoo_sim::{OdooSim, SimOptions};
use scanbridge_e2e::probe_relay::ProbeRelay;
use scanbridge_e2e::process::StateDir;
use scanbridge_e2e::publisher::{preregister_session, NoopSubscriber, Publisher};
use scanbridge_e2e::relay::{ca_init, ca_issue, CaDir, Relay, RelayOptions, SiteBundle};
use scanbridge_e2e::scans::ScanPayload;
use scanbridge_e2e::stack::{plan_counts, publish_plan, Catalog, PlannedCount, FENCE_QTY};

/// Measure end-to-end throughput, agent durable ingest against a no-op subscriber, and agent RSS.
#[derive(Debug, Parser)]
#[command(name = "scanbridge-bench", version)]
struct Cli {
    /// Rounds; the table shows min / median / max over them.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Scans published per measurement.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Keep each round's state directory (configs and logs) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

/// One round's measurements.
#[derive(Debug, Clone)]
struct Round {
    noop_eps: f64,
    ingest_eps: f64,
    e2e_eps: f64,
    publish_eps: f64,
    ingest_rss_kib: u64,
    e2e_rss_kib: u64,
    rpcs_per_1000: f64,
}

const SITE: &str = "WH01";
const TIMEOUT: Duration = Duration::from_secs(600);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.rounds == 0 || cli.events == 0 {
        bail!("--rounds and --events must be at least 1");
    }
    let mut rounds = Vec::new();
    for r in 1..=cli.rounds {
        let mut dir = StateDir::temp("bench").context("state directory")?;
        eprintln!(
            "round {r}/{}: {} events, state in {}",
            cli.rounds,
            cli.events,
            dir.path().display()
        );
        let round = run_round(&dir, cli.events).await;
        if cli.keep || round.is_err() {
            dir.keep_for_diagnosis();
        }
        let round = round.with_context(|| format!("round {r}"))?;
        eprintln!("  {round:?}");
        rounds.push(round);
    }
    print_table(&cli, &rounds);
    Ok(())
}

async fn run_round(dir: &StateDir, n: usize) -> anyhow::Result<Round> {
    let root = dir.path();
    let mosquitto = Mosquitto::start(root).await?;
    let port = mosquitto.port();
    let ca = ca_init(&dir.subdir("ca")?).await?;
    let bundle = ca_issue(&ca, SITE, &dir.subdir("site-WH01")?).await?;

    // The stream used by phases 1 and 2: valid counts, content irrelevant to the figure.
    let codes = scanbridge_e2e::ean::generate(4, 1, 200);
    let payloads: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let loc = format!("WH-STOCK-A{:02}", i % 5 + 1);
            ScanPayload::count(
                "SC-01",
                &codes[i % codes.len()],
                &loc,
                (i / codes.len() + 1) as f64,
            )
            .to_bytes()
        })
        .collect();

    // 1. Baseline: no-op subscriber.
    let noop = NoopSubscriber::start(port, "bench-noop", "bench/+/scan").await?;
    let mut publisher = Publisher::connect(port, "bench-scanner").await?;
    let t0 = Instant::now();
    for p in &payloads {
        publisher.publish("bench/SC-01/scan", p.clone()).await?;
    }
    publisher.wait_all_acked(TIMEOUT).await?;
    noop.wait_received(n as u64, TIMEOUT).await?;
    let noop_secs = t0.elapsed().as_secs_f64();
    noop.stop().await;

    // 2. Agent durable ingest, forwarding to the probe relay.
    let probe = ProbeRelay::start(&ca).await?;
    let ingest_dir = dir.subdir("ingest")?;
    let mut opts = AgentOptions::new(bundle.clone(), probe.url(), port);
    opts.client_id = "scanbridge-agent-BENCH".into();
    opts.topics = vec!["bench/+/scan".into()];
    opts.rust_log = "warn".into();
    preregister_session(port, &opts.client_id, &opts.topics).await?;
    let mut agent = Agent::start(&ingest_dir, &opts).await?;
    // Warm-up: one scan through, so agent start-up is not in the figure.
    publisher
        .publish("bench/SC-01/scan", payloads[0].clone())
        .await?;
    probe.wait_events(1, Duration::from_secs(60)).await?;
    let t1 = Instant::now();
    for p in &payloads {
        publisher.publish("bench/SC-01/scan", p.clone()).await?;
    }
    let publish_secs;
    {
        publisher.wait_all_acked(TIMEOUT).await?;
        publish_secs = t1.elapsed().as_secs_f64();
    }
    wait_probe(&probe, &mut agent, n as u64 + 1).await?;
    let ingest_secs = t1.elapsed().as_secs_f64();
    let ingest_rss_kib = agent.sample_peak_rss_kib().unwrap_or(0);
    agent.stop(Duration::from_secs(10))?;
    drop(probe);

    // 3. End to end through the real relay into the Odoo simulator.
    let (e2e_eps, e2e_rss_kib, rpcs_per_1000) =
        end_to_end(root, &ca, &bundle, port, &mut publisher, n).await?;
    publisher.disconnect().await;

    Ok(Round {
        noop_eps: n as f64 / noop_secs,
        ingest_eps: n as f64 / ingest_secs,
        e2e_eps,
        publish_eps: n as f64 / publish_secs,
        ingest_rss_kib,
        e2e_rss_kib,
        rpcs_per_1000,
    })
}

async fn wait_probe(probe: &ProbeRelay, agent: &mut Agent, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    while probe.events() < n {
        agent.ensure_running()?;
        agent.sample_peak_rss_kib();
        if Instant::now() > deadline {
            bail!("the probe relay got {} of {n} events", probe.events());
        }
        let _ = probe.wait_events(n, Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn end_to_end(
    root: &Path,
    ca: &CaDir,
    bundle: &SiteBundle,
    port: u16,
    publisher: &mut Publisher,
    n: usize,
) -> anyhow::Result<(f64, u64, f64)> {
    let e2e = root.join("e2e");
    std::fs::create_dir_all(&e2e)?;
    let sim = OdooSim::start(
        &e2e,
        &SimOptions {
            rust_log: "warn".into(),
            ..SimOptions::default()
        },
    )
    .await?;
    let mut relay = Relay::start(
        &e2e,
        ca,
        &RelayOptions {
            odoo_url: sim.url().to_string(),
            odoo_api_key: sim.api_key().to_string(),
            max_chunk: Some(200),
            // info: the harness waits for the relay's `listening on` line; nothing per event.
            rust_log: "info".into(),
        },
    )
    .await?;
    let catalog = Catalog::seed(&sim, 6, 200, 5, "WH-BENCH").await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(20_000);
    let (plan, expected) = plan_counts(&catalog, n, &mut rng);
    let mut opts = AgentOptions::new(bundle.clone(), relay.url(), port);
    opts.rust_log = "warn".into();
    preregister_session(port, &opts.client_id, &opts.topics).await?;
    let mut agent = Agent::start(&e2e, &opts).await?;
    // Warm-up: the fence product once, so start-up and first Odoo login are not in the figure.
    let (fence_code, fence_id) = catalog.fence_product.clone();
    let (loc_code, loc_id) = catalog.locations[0].clone();
    let warm = PlannedCount {
        product_code: fence_code.clone(),
        location_code: loc_code.clone(),
        pair: (fence_id, loc_id),
        qty: 1,
    };
    publish_plan(publisher, "SC-01", std::slice::from_ref(&warm), None).await?;
    wait_quant(&sim, &mut agent, &mut relay, fence_id, loc_id, 1.0).await?;
    let rpc_before = sim.state().await?.rpc_total;

    let t = Instant::now();
    publish_plan(publisher, "SC-01", &plan, None).await?;
    let fence = ScanPayload::count("SC-01", &fence_code, &loc_code, FENCE_QTY);
    publisher
        .publish("scanbridge/SC-01/scan", fence.to_bytes())
        .await?;
    publisher.wait_all_acked(TIMEOUT).await?;
    wait_quant(&sim, &mut agent, &mut relay, fence_id, loc_id, FENCE_QTY).await?;
    let secs = t.elapsed().as_secs_f64();
    let state = sim.state().await?;
    if let Err(problems) = verify_exactly_once(&state, &expected, SITE) {
        bail!(
            "end-to-end run was not exactly once ({} problems), first: {}",
            problems.len(),
            problems.first().cloned().unwrap_or_default()
        );
    }
    let rss = agent.sample_peak_rss_kib().unwrap_or(0);
    agent.stop(Duration::from_secs(10))?;
    let rpcs = (state.rpc_total - rpc_before) as f64 * 1000.0 / (n as f64 + 1.0);
    Ok(((n + 1) as f64 / secs, rss, rpcs))
}

async fn wait_quant(
    sim: &OdooSim,
    agent: &mut Agent,
    relay: &mut Relay,
    product: i64,
    location: i64,
    qty: f64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        agent.ensure_running()?;
        relay.process().ensure_running()?;
        agent.sample_peak_rss_kib();
        let state = sim.state().await?;
        if state
            .quant(product, location)
            .is_some_and(|q| q.quantity == qty)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "count {qty} of product {product} not applied within {} s",
                TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (v[0], median, v[v.len() - 1])
}

fn machine() -> String {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| scanbridge_e2e::process::parse_status_kib(&m, "MemTotal"))
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("nproc {nproc}, memory {mem}, {cpu}")
}

fn print_table(cli: &Cli, rounds: &[Round]) {
    let col = |f: fn(&Round) -> f64| stats(rounds.iter().map(f).collect());
    let profile = scanbridge_e2e::bins::bin_dir()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let now = time::OffsetDateTime::now_utc();
    println!();
    println!("Scanbridge bench, {now}");
    println!(
        "machine: {}; binaries: target/{profile}; mosquitto with deploy/mosquitto/scanbridge.conf",
        machine()
    );
    println!(
        "command: scanbridge-bench --rounds {} --events {}",
        cli.rounds, cli.events
    );
    println!();
    println!("| figure | baseline (same run) | ratio | rounds | min | median | max |");
    println!("|---|---|---|---|---|---|---|");
    let (a0, a1, a2) = col(|r| r.e2e_eps);
    println!(
        "| (a) end to end, scans/s (QoS 1 publish → applied in Odoo sim, exactly once verified) | — | — | {} | {a0:.0} | {a1:.0} | {a2:.0} |",
        rounds.len()
    );
    let (b0, b1, b2) = col(|r| r.ingest_eps);
    let (_, nb, _) = col(|r| r.noop_eps);
    let (r0, r1, r2) = col(|r| r.ingest_eps / r.noop_eps);
    println!(
        "| (b) agent durable ingest, events/s (publish → committed and handed to a probe relay) | no-op rumqttc subscriber: median {nb:.0}/s | median {r1:.2} (min {r0:.2}, max {r2:.2}) | {} | {b0:.0} | {b1:.0} | {b2:.0} |",
        rounds.len()
    );
    let (n0, n1, n2) = col(|r| r.noop_eps);
    println!(
        "| (b′) baseline: no-op rumqttc subscriber (auto-ack), events/s | — | — | {} | {n0:.0} | {n1:.0} | {n2:.0} |",
        rounds.len()
    );
    let (p0, p1, p2) = col(|r| r.publish_eps);
    println!(
        "| publisher alone during (b): QoS 1 publishes PUBACKed by mosquitto, /s | — | — | {} | {p0:.0} | {p1:.0} | {p2:.0} |",
        rounds.len()
    );

    let (c0, c1, c2) = col(|r| r.ingest_rss_kib as f64 / 1024.0);
    println!(
        "| (c) agent peak RSS (VmHWM) during (b), MiB | — | — | {} | {c0:.1} | {c1:.1} | {c2:.1} |",
        rounds.len()
    );
    let (d0, d1, d2) = col(|r| r.e2e_rss_kib as f64 / 1024.0);
    println!(
        "| (c) agent peak RSS (VmHWM) during (a), MiB | — | — | {} | {d0:.1} | {d1:.1} | {d2:.1} |",
        rounds.len()
    );
    let (e0, e1, e2) = col(|r| r.rpcs_per_1000);
    println!(
        "| Odoo RPCs per 1,000 applied events during (a) | one call per event: 1000 | median {:.3} | {} | {e0:.1} | {e1:.1} | {e2:.1} |",
        e1 / 1000.0,
        rounds.len()
    );
}

//! `scanbridge-bench`: measures the chain on this machine and prints one table, each figure beside
//! its baseline measured in the same run (/work/shared/benchmarks.md, issue 7). Figures (select
//! with `--figures 1,2,...`; all by default):
//!
//! 1. agent durable ingest (publish → committed and handed to a probe relay that acks at once) vs
//!    a no-op rumqttc subscriber (auto-ack) on the same mosquitto with the same publisher; also the
//!    end-to-end rate into the Odoo simulator (exactly once verified) and the agent's peak RSS.
//! 2. drain of a `--backlog` (1,000,000) event backlog, built up while a fault proxy blackholes
//!    the relay, to the real relay once the proxy heals, timed until the agent's backlog is 0; vs
//!    plain HTTPS POSTs of batches of the same size and shape (protocol crate, status included)
//!    over the same kind of link (site certificate, TLS 1.3, through a fault proxy) to a handler
//!    that only reads the body. The wire bytes per event of both are printed to compare.
//! 3. the agent's VmHWM once it holds that backlog, and its growth over the drain.
//! 4. scan → relay ack latency (p50/p99) at `--latency-rate` (1,000) scans/s: each scan carries
//!    `reference = lat-<n>`; a tap between agent and relay forwards every batch to the real relay
//!    and records when the relay's ack for `lat-<n>` passed (one extra loopback hop, counted
//!    against us); vs a bare QoS 1 publish → PUBACK round trip on the same broker and rate.
//! 5. relay ingest with `--agents` (200) concurrent mTLS agents, each with its own site
//!    certificate from the CA, posting batches of 100 events: events/s and the relay's CPU seconds
//!    (utime + stime from /proc) per 1,000 events.
//! 6. Odoo RPC round trips per 1,000 applied events during figure 1's end-to-end run.
//!
//! In figures 2–5 the relay's Odoo URL points at a blackholed proxy: they measure the link to the
//! relay, not the push to Odoo (figure 1's end-to-end row and figure 6 cover that).
//! `--quick` runs everything small and once; `--smoke` tiny, for CI (correctness only: every
//! phase still checks that every event arrived, no figure is asserted). Every figure printed comes
//! from a measurement made in this run; nothing is estimated. Run a release build:
//! `cargo build --release --workspace --bins` then `target/release/scanbridge-bench`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rand::SeedableRng;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use scanbridge_e2e::agent::{Agent, AgentOptions, StatusApi};
use scanbridge_e2e::checks::verify_exactly_once;
use scanbridge_e2e::fault_proxy::{FaultProxy, Mode};
use scanbridge_e2e::mosquitto::Mosquitto;
use scanbridge_e2e::odoo_sim::{OdooSim, SimOptions};
use scanbridge_e2e::probe_relay::ProbeMode;
use scanbridge_e2e::probe_relay::ProbeRelay;
use scanbridge_e2e::process::StateDir;
use scanbridge_e2e::process::{vm_hwm_kib, vm_rss_kib};
use scanbridge_e2e::publisher::{preregister_session, NoopSubscriber, Publisher};
use scanbridge_e2e::relay::{ca_init, ca_issue, CaDir, Relay, RelayOptions, SiteBundle};
use scanbridge_e2e::scans::ScanPayload;
use scanbridge_e2e::stack::{plan_counts, publish_plan, Catalog, PlannedCount, FENCE_QTY};
use scanbridge_e2e::synthetic::{cpu_seconds, encoded_batches, site_client};
use scanbridge_protocol::{decode, Ack};

/// Measure the agent, the relay and the chain against baselines from the same run.
#[derive(Debug, Parser)]
#[command(name = "scanbridge-bench", version)]
struct Cli {
    /// Rounds; the table shows min / median / max over them.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Scans published per measurement of figure 1 (agent ingest and its baseline). Long enough
    /// (about 2.5 s at 80,000/s) that the fixed tail of the last batch (commit linger, one
    /// forwarder round trip) does not weigh in the rate: at 20,000 it was about a tenth of it.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Scans sent through the whole chain into the Odoo simulator (the end-to-end row and
    /// figure 6).
    #[arg(long, default_value_t = 20_000)]
    e2e_events: usize,
    /// Backlog size for figures 2 and 3.
    #[arg(long, default_value_t = 1_000_000)]
    backlog: usize,
    /// Concurrent mTLS agents for figure 5.
    #[arg(long, default_value_t = 200)]
    agents: usize,
    /// Events all agents of figure 5 post together.
    #[arg(long, default_value_t = 200_000)]
    fleet_events: usize,
    /// Scans per second for figure 4.
    #[arg(long, default_value_t = 1_000)]
    latency_rate: u32,
    /// Seconds of paced scans for figure 4.
    #[arg(long, default_value_t = 20)]
    latency_secs: u64,
    /// Figures to run, e.g. `--figures 2,3` (default: all).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1u8, 2, 3, 4, 5, 6])]
    figures: Vec<u8>,
    /// Small sizes, one round: a quick look (minutes).
    #[arg(long)]
    quick: bool,
    /// Tiny sizes, one round: the CI smoke run (correctness only).
    #[arg(long, conflicts_with = "quick")]
    smoke: bool,
    /// Keep each round's state directory (configs and logs) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

impl Cli {
    /// Applies `--quick` / `--smoke`.
    fn sized(mut self) -> Cli {
        if self.quick {
            (self.rounds, self.events, self.backlog) = (1, 50_000, 100_000);
            self.e2e_events = 5_000;
            (self.agents, self.fleet_events, self.latency_secs) = (50, 20_000, 5);
        }
        if self.smoke {
            (self.rounds, self.events, self.backlog) = (1, 500, 3_000);
            self.e2e_events = 500;
            (self.agents, self.fleet_events, self.latency_secs) = (4, 800, 2);
            self.latency_rate = self.latency_rate.min(200);
        }
        self
    }

    fn wants(&self, figure: u8) -> bool {
        self.figures.contains(&figure)
    }

    fn command_line(&self) -> String {
        std::env::args()
            .map(|a| a.rsplit('/').next().unwrap_or(&a).to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One round of figures 1 and 6.
#[derive(Debug, Clone)]
struct Round {
    noop_eps: f64,
    ingest_eps: f64,
    /// Agent CPU seconds (utime + stime) per 1,000 events over the timed ingest.
    ingest_cpu_per_1000: f64,
    e2e_eps: f64,
    publish_eps: f64,
    ingest_rss_kib: u64,
    e2e_rss_kib: u64,
    rpcs_per_1000: f64,
}

/// One round of figures 2 and 3.
#[derive(Debug, Clone)]
struct DrainRound {
    fill_eps: f64,
    drain_eps: f64,
    baseline_eps: f64,
    hold_hwm_kib: u64,
    hold_rss_kib: u64,
    after_drain_hwm_kib: u64,
    drain_wire_bytes_per_event: f64,
    baseline_wire_bytes_per_event: f64,
}

/// One round of figure 4.
#[derive(Debug, Clone)]
struct LatencyRound {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    rtt_p50_ms: f64,
    rtt_p99_ms: f64,
}

/// One round of figure 5.
#[derive(Debug, Clone)]
struct FleetRound {
    eps: f64,
    cpu_per_1000: f64,
}

#[derive(Debug, Default)]
struct Results {
    /// `/proc/loadavg` when the bench started (the machine is shared).
    load_at_start: String,
    main: Vec<Round>,
    drain: Vec<DrainRound>,
    latency: Vec<LatencyRound>,
    fleet: Vec<FleetRound>,
}

const SITE: &str = "WH01";
const TIMEOUT: Duration = Duration::from_secs(600);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse().sized();
    if cli.rounds == 0
        || cli.events == 0
        || cli.e2e_events == 0
        || cli.backlog < 1000
        || cli.agents == 0
    {
        bail!(
            "--rounds, --events, --e2e-events and --agents must be at least 1, --backlog at \
             least 1000"
        );
    }
    let mut results = Results {
        load_at_start: load_average(),
        ..Results::default()
    };
    // Figure 5's site certificates are issued once (the relay's `ca issue`, one process each).
    let fleet_ca = if cli.wants(5) {
        let dir = StateDir::temp("bench-fleet-ca").context("state directory")?;
        eprintln!("issuing {} site certificates for figure 5", cli.agents);
        let ca = ca_init(&dir.subdir("ca")?).await?;
        let mut bundles = Vec::with_capacity(cli.agents);
        for i in 0..cli.agents {
            let site = format!("S{:03}", i + 1);
            bundles.push(ca_issue(&ca, &site, &dir.subdir(&format!("site-{site}"))?).await?);
        }
        Some((dir, ca, bundles))
    } else {
        None
    };
    for r in 1..=cli.rounds {
        let mut dir = StateDir::temp("bench").context("state directory")?;
        eprintln!(
            "round {r}/{}: state in {}",
            cli.rounds,
            dir.path().display()
        );
        let outcome = run_all(&cli, &dir, fleet_ca.as_ref(), &mut results).await;
        if cli.keep || outcome.is_err() {
            dir.keep_for_diagnosis();
        }
        outcome.with_context(|| format!("round {r}"))?;
    }
    print_table(&cli, &results);
    Ok(())
}

async fn run_all(
    cli: &Cli,
    dir: &StateDir,
    fleet: Option<&(StateDir, CaDir, Vec<SiteBundle>)>,
    results: &mut Results,
) -> anyhow::Result<()> {
    if cli.wants(1) || cli.wants(6) {
        let round = run_round(dir, cli.events, cli.e2e_events).await?;
        eprintln!("  figures 1, 6: {round:?}");
        results.main.push(round);
    }
    if cli.wants(2) || cli.wants(3) {
        let round = drain_round(&dir.subdir("drain")?, cli.backlog).await?;
        eprintln!("  figures 2, 3: {round:?}");
        results.drain.push(round);
    }
    if cli.wants(4) {
        let round =
            latency_round(&dir.subdir("latency")?, cli.latency_rate, cli.latency_secs).await?;
        eprintln!("  figure 4: {round:?}");
        results.latency.push(round);
    }
    if let Some((_, ca, bundles)) = fleet {
        let round = fleet_round(&dir.subdir("fleet")?, ca, bundles, cli.fleet_events).await?;
        eprintln!("  figure 5: {round:?}");
        results.fleet.push(round);
    }
    Ok(())
}

async fn run_round(dir: &StateDir, n: usize, e2e_n: usize) -> anyhow::Result<Round> {
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
    let agent_pid = agent.pid().context("the agent's pid")?.as_raw();
    let cpu_before = cpu_seconds(agent_pid).context("agent CPU time")?;
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
    let ingest_cpu = cpu_seconds(agent_pid).context("agent CPU time")? - cpu_before;
    let ingest_rss_kib = agent.sample_peak_rss_kib().unwrap_or(0);
    agent.stop(Duration::from_secs(10))?;
    drop(probe);

    // 3. End to end through the real relay into the Odoo simulator.
    let (e2e_eps, e2e_rss_kib, rpcs_per_1000) =
        end_to_end(root, &ca, &bundle, port, &mut publisher, e2e_n).await?;
    publisher.disconnect().await;

    Ok(Round {
        noop_eps: n as f64 / noop_secs,
        ingest_eps: n as f64 / ingest_secs,
        ingest_cpu_per_1000: ingest_cpu / n as f64 * 1000.0,
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
            // The shipped default, so figure 6 measures what sites run.
            max_chunk: None,
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

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
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

/// A relay whose Odoo URL is a blackholed proxy (figures 2, 4, 5 measure the link to the relay).
async fn relay_without_odoo(root: &Path, ca: &CaDir) -> anyhow::Result<(Relay, FaultProxy)> {
    let nowhere = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let odoo = FaultProxy::start(nowhere).await?;
    odoo.set_mode(Mode::Blackhole);
    let relay = Relay::start(
        root,
        ca,
        &RelayOptions {
            odoo_url: format!("http://127.0.0.1:{}", odoo.port()),
            odoo_api_key: "bench-no-odoo".into(),
            max_chunk: Some(200),
            rust_log: "info".into(),
        },
    )
    .await?;
    Ok((relay, odoo))
}

fn socket_of(url: &str) -> anyhow::Result<std::net::SocketAddr> {
    url.trim_start_matches("https://")
        .trim_start_matches("http://")
        .parse()
        .with_context(|| format!("not host:port: {url}"))
}

/// Polls the agent's `/metrics` until `done` holds for the sample.
async fn wait_metrics(
    api: &StatusApi,
    agent: &mut Agent,
    what: &str,
    done: impl Fn(&std::collections::BTreeMap<String, f64>) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        agent.ensure_running()?;
        agent.sample_peak_rss_kib();
        if let Ok(m) = api.metrics().await {
            if done(&m) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric(m: &std::collections::BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(-1.0)
}

/// Figures 2 and 3.
async fn drain_round(root: &Path, n: usize) -> anyhow::Result<DrainRound> {
    let mosquitto = Mosquitto::start(root).await?;
    let port = mosquitto.port();
    let ca = ca_init(&root.join("ca")).await?;
    let bundle = ca_issue(&ca, SITE, &root.join("site-WH01")).await?;
    let (relay, _odoo) = relay_without_odoo(root, &ca).await?;
    let link = FaultProxy::start(socket_of(&relay.url())?).await?;
    link.set_mode(Mode::Blackhole);
    let mut opts = AgentOptions::new(
        bundle.clone(),
        format!("https://127.0.0.1:{}", link.port()),
        port,
    );
    opts.topics = vec!["bench/+/scan".into()];
    opts.rust_log = "warn".into();
    opts.retry_max_ms = Some(100);
    preregister_session(port, &opts.client_id, &opts.topics).await?;
    let mut agent = Agent::start(root, &opts).await?;
    let api = StatusApi::new(opts.status_url().context("status API")?)?;
    let pid = agent.pid().context("agent pid")?;
    let codes = scanbridge_e2e::ean::generate(4, 1, 200);
    // The fill loop reads the agent's metrics: wait until its status API answers (a poll right
    // after the start could find nothing listening yet and end the round).
    wait_metrics(&api, &mut agent, "the agent's status API", |_| true).await?;

    // Fill: n scans while the relay is unreachable. The publisher stays within 20,000 scans of
    // what the agent has committed, so mosquitto's per-client queue cap (max_queued_bytes) is
    // never the limit (with 100,000 mosquitto 2.0.11 dropped messages for the agent).
    let mut publisher = Publisher::connect(port, "bench-backlog").await?;
    let t = Instant::now();
    let mut committed = 0.0;
    for i in 0..n {
        if i % 1_000 == 0 {
            while (i as f64) - committed > 20_000.0 {
                agent.ensure_running()?;
                committed = metric(
                    &api.metrics().await?,
                    "scanbridge_agent_events_committed_total",
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let payload = ScanPayload::count(
            "SC-01",
            &codes[i % codes.len()],
            &format!("WH-STOCK-A{:02}", i % 5 + 1),
            (i / 1000 + 1) as f64,
        );
        publisher
            .publish("bench/SC-01/scan", payload.to_bytes())
            .await?;
    }
    publisher.wait_all_acked(TIMEOUT).await?;
    wait_metrics(&api, &mut agent, "the backlog to be committed", |m| {
        metric(m, "scanbridge_agent_events_committed_total") >= n as f64
            && metric(m, "scanbridge_agent_backlog_events") >= n as f64
    })
    .await?;
    let fill_secs = t.elapsed().as_secs_f64();
    publisher.disconnect().await;
    let hold_hwm_kib = vm_hwm_kib(pid).unwrap_or(0);
    let hold_rss_kib = vm_rss_kib(pid).unwrap_or(0);
    let before = link.stats().bytes_to_upstream;

    // Drain: heal the link, time until the agent's backlog is empty (every event acked).
    let t = Instant::now();
    link.heal();
    wait_metrics(&api, &mut agent, "the backlog to drain", |m| {
        metric(m, "scanbridge_agent_backlog_events") == 0.0
    })
    .await?;
    let drain_secs = t.elapsed().as_secs_f64();
    let after_drain_hwm_kib = vm_hwm_kib(pid).unwrap_or(0);
    let drain_bytes = link.stats().bytes_to_upstream - before;
    agent.stop(Duration::from_secs(10))?;
    drop(relay);

    // Baseline: the same number of batches of the same size and shape, POSTed one after another
    // with a site certificate through a fault proxy to a handler that only reads the body.
    let per_batch = 1000;
    let bodies = encoded_batches(SITE, 1, n / per_batch, per_batch, &codes)?;
    let sink = ProbeRelay::start_with(&ca, ProbeMode::ReadOnly).await?;
    let sink_link = FaultProxy::start(socket_of(&sink.url())?).await?;
    let client = site_client(&bundle)?;
    let url = format!("https://127.0.0.1:{}/v1/batches", sink_link.port());
    client
        .post(&url)
        .body(bodies[0].clone())
        .send()
        .await?
        .error_for_status()?;
    let before = sink_link.stats().bytes_to_upstream;
    let t = Instant::now();
    for body in bodies {
        let resp = client.post(&url).body(body).send().await?;
        resp.error_for_status()?.bytes().await?;
    }
    let baseline_secs = t.elapsed().as_secs_f64();
    let baseline_bytes = sink_link.stats().bytes_to_upstream - before;
    let sent = (n / per_batch * per_batch) as f64;
    Ok(DrainRound {
        fill_eps: n as f64 / fill_secs,
        drain_eps: n as f64 / drain_secs,
        baseline_eps: sent / baseline_secs,
        hold_hwm_kib,
        hold_rss_kib,
        after_drain_hwm_kib,
        drain_wire_bytes_per_event: drain_bytes as f64 / n as f64,
        baseline_wire_bytes_per_event: baseline_bytes as f64 / sent,
    })
}

/// The `q` quantile (0..=1) of sorted `v`, nearest rank.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Figure 4.
async fn latency_round(root: &Path, rate: u32, secs: u64) -> anyhow::Result<LatencyRound> {
    let mosquitto = Mosquitto::start(root).await?;
    let port = mosquitto.port();
    let ca = ca_init(&root.join("ca")).await?;
    let bundle = ca_issue(&ca, SITE, &root.join("site-WH01")).await?;
    let (relay, _odoo) = relay_without_odoo(root, &ca).await?;
    let tap = ProbeRelay::start_with(
        &ca,
        ProbeMode::Tap {
            url: format!("{}/v1/batches", relay.url()),
            client: site_client(&bundle)?,
        },
    )
    .await?;
    let mut opts = AgentOptions::new(bundle.clone(), tap.url(), port);
    opts.rust_log = "warn".into();
    preregister_session(port, &opts.client_id, &opts.topics).await?;
    let mut agent = Agent::start(root, &opts).await?;
    let api = StatusApi::new(opts.status_url().context("status API")?)?;
    let codes = scanbridge_e2e::ean::generate(4, 1, 200);
    let mut publisher = Publisher::connect(port, "bench-latency").await?;
    // Warm-up: one scan through to the relay.
    let warm = ScanPayload::count("SC-01", &codes[0], "WH-STOCK-A01", 1.0);
    publisher
        .publish("scanbridge/SC-01/scan", warm.to_bytes())
        .await?;
    wait_metrics(&api, &mut agent, "the warm-up scan to be acked", |m| {
        metric(m, "scanbridge_agent_events_committed_total") >= 1.0
            && metric(m, "scanbridge_agent_backlog_events") == 0.0
    })
    .await?;

    let total = (u64::from(rate) * secs) as usize;
    let mut sent_at = Vec::with_capacity(total);
    let start = tokio::time::Instant::now();
    let gap = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    for i in 0..total {
        tokio::time::sleep_until(start + gap * i as u32).await;
        let mut scan = ScanPayload::count(
            "SC-01",
            &codes[i % codes.len()],
            "WH-STOCK-A01",
            (i + 2) as f64,
        );
        scan.reference = Some(format!("lat-{i}"));
        sent_at.push(Instant::now());
        publisher
            .publish("scanbridge/SC-01/scan", scan.to_bytes())
            .await?;
    }
    let deadline = Instant::now() + TIMEOUT;
    let acks = loop {
        agent.ensure_running()?;
        let acks = tap.ack_times();
        if acks.len() >= total {
            break acks;
        }
        if Instant::now() > deadline {
            bail!("the relay acked {} of {total} tagged scans", acks.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut seen = vec![false; total];
    let mut lat = Vec::with_capacity(total);
    for (n, at) in acks {
        let i = n as usize;
        if i < total && !seen[i] {
            seen[i] = true;
            lat.push(at.saturating_duration_since(sent_at[i]).as_secs_f64() * 1e3);
        }
    }
    if lat.len() != total {
        bail!("only {} of {total} tagged scans were acked", lat.len());
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    agent.stop(Duration::from_secs(10))?;
    publisher.disconnect().await;

    let mut rtt = mqtt_publish_rtt(port, rate, total).await?;
    rtt.sort_by(|a, b| a.total_cmp(b));
    Ok(LatencyRound {
        p50_ms: quantile(&lat, 0.50),
        p99_ms: quantile(&lat, 0.99),
        max_ms: quantile(&lat, 1.0),
        rtt_p50_ms: quantile(&rtt, 0.50),
        rtt_p99_ms: quantile(&rtt, 0.99),
    })
}

/// QoS 1 publish → PUBACK round trips (ms) of a bare rumqttc client at `rate` per second.
async fn mqtt_publish_rtt(port: u16, rate: u32, total: usize) -> anyhow::Result<Vec<f64>> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut options = MqttOptions::new("bench-rtt", "127.0.0.1", port);
    options.set_inflight(1000);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let sent = Arc::new(Mutex::new(VecDeque::<Instant>::new()));
    let (sent_in, done) = (
        sent.clone(),
        Arc::new(Mutex::new(Vec::with_capacity(total))),
    );
    let done_in = done.clone();
    let driver = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    let at = sent_in.lock().ok().and_then(|mut q| q.pop_front());
                    if let (Some(at), Ok(mut d)) = (at, done_in.lock()) {
                        d.push(at.elapsed().as_secs_f64() * 1e3);
                    }
                }
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    });
    let start = tokio::time::Instant::now();
    let gap = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    for i in 0..total {
        tokio::time::sleep_until(start + gap * i as u32).await;
        if let Ok(mut q) = sent.lock() {
            q.push_back(Instant::now());
        }
        client
            .publish("bench/rtt", QoS::AtLeastOnce, false, vec![b'x'; 150])
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = done.lock().map(|d| d.len()).unwrap_or(0);
        if got >= total {
            break;
        }
        if driver.is_finished() || Instant::now() > deadline {
            bail!("{got} of {total} PUBACKs for the round-trip baseline");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    driver.abort();
    let out = done.lock().map(|d| d.clone()).unwrap_or_default();
    Ok(out)
}

/// Figure 5.
async fn fleet_round(
    root: &Path,
    ca: &CaDir,
    bundles: &[SiteBundle],
    total: usize,
) -> anyhow::Result<FleetRound> {
    let (mut relay, _odoo) = relay_without_odoo(root, ca).await?;
    let per_batch = 100;
    let per_agent_batches = (total / bundles.len() / per_batch).max(1);
    let codes = scanbridge_e2e::ean::generate(4, 1, 200);
    let url = format!("{}/v1/batches", relay.url());
    let mut work = Vec::with_capacity(bundles.len());
    for b in bundles {
        let bodies = encoded_batches(&b.site, 1, per_agent_batches, per_batch, &codes)?;
        work.push((site_client(b)?, bodies));
    }
    let events = (bundles.len() * per_agent_batches * per_batch) as f64;
    let pid = relay.process().pid().as_raw();
    let cpu_before = cpu_seconds(pid).context("relay CPU time")?;
    let go = Arc::new(tokio::sync::Barrier::new(work.len() + 1));
    let mut tasks = Vec::with_capacity(work.len());
    for (client, bodies) in work {
        let (go, url) = (go.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            go.wait().await;
            let last = (bodies.len() * per_batch) as u64;
            let mut upto = 0;
            for body in bodies {
                let resp = client.post(&url).body(body).send().await?;
                let bytes = resp.error_for_status()?.bytes().await?;
                let ack: Ack = decode(&bytes)?;
                upto = ack.upto;
            }
            anyhow::ensure!(upto == last, "relay acked up to {upto} of {last}");
            anyhow::Ok(())
        }));
    }
    go.wait().await;
    let t = Instant::now();
    for task in tasks {
        task.await??;
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid).context("relay CPU time")? - cpu_before;
    relay.process().ensure_running()?;
    Ok(FleetRound {
        eps: events / secs,
        cpu_per_1000: cpu / events * 1000.0,
    })
}

/// `| figure | baseline | ratio | rounds | min | median | max |` for `values`.
fn row(figure: &str, baseline: &str, ratio: &str, values: Vec<f64>, digits: usize) {
    if values.is_empty() {
        return;
    }
    let n = values.len();
    let (lo, mid, hi) = stats(values);
    println!("| {figure} | {baseline} | {ratio} | {n} | {lo:.digits$} | {mid:.digits$} | {hi:.digits$} |");
}

fn ratio_text(ratios: Vec<f64>) -> String {
    if ratios.is_empty() {
        return "—".into();
    }
    let (lo, mid, hi) = stats(ratios);
    format!("median {mid:.2} (min {lo:.2}, max {hi:.2})")
}

fn print_table(cli: &Cli, res: &Results) {
    let profile = scanbridge_e2e::bins::bin_dir()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let now = time::OffsetDateTime::now_utc();
    println!();
    println!("Scanbridge bench, {now}");
    let agent_env: Vec<String> =
        scanbridge_e2e::agent::unit_environment(scanbridge_e2e::agent::AGENT_UNIT)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
    println!(
        "machine: {}; binaries: target/{profile}; mosquitto with deploy/mosquitto/scanbridge.conf; \
         agent with the environment of its systemd unit ({})",
        machine(),
        agent_env.join(" ")
    );
    println!("command: {}", cli.command_line());
    println!(
        "load average (1/5/15 min) at start: {}; at end: {}",
        res.load_at_start,
        load_average()
    );
    println!();
    println!("| figure | baseline (same run) | ratio | rounds | min | median | max |");
    println!("|---|---|---|---|---|---|---|");
    let m = &res.main;
    let med = |v: Vec<f64>| if v.is_empty() { f64::NAN } else { stats(v).1 };
    if cli.wants(1) {
        row(
            &format!(
                "(1) agent durable ingest of {} scans, events/s (publish → committed, handed to \
                 a probe relay)",
                cli.events
            ),
            &format!(
                "no-op rumqttc subscriber: median {:.0}/s",
                med(m.iter().map(|r| r.noop_eps).collect())
            ),
            &ratio_text(m.iter().map(|r| r.ingest_eps / r.noop_eps).collect()),
            m.iter().map(|r| r.ingest_eps).collect(),
            0,
        );
        row(
            "(1′) baseline: no-op rumqttc subscriber (auto-ack), events/s",
            "—",
            "—",
            m.iter().map(|r| r.noop_eps).collect(),
            0,
        );
        row(
            "publisher alone during (1): QoS 1 publishes PUBACKed by mosquitto, /s",
            "—",
            "—",
            m.iter().map(|r| r.publish_eps).collect(),
            0,
        );
        row(
            "agent CPU seconds (utime + stime) per 1,000 events during (1)",
            "—",
            "—",
            m.iter().map(|r| r.ingest_cpu_per_1000).collect(),
            4,
        );
        row(
            &format!(
                "end to end ({} scans), scans/s (QoS 1 publish → applied in Odoo sim, exactly \
                 once verified)",
                cli.e2e_events
            ),
            "—",
            "—",
            m.iter().map(|r| r.e2e_eps).collect(),
            0,
        );
        row(
            "agent peak RSS (VmHWM) during (1) ingest / end to end, MiB",
            "—",
            "—",
            m.iter()
                .map(|r| r.ingest_rss_kib.max(r.e2e_rss_kib) as f64 / 1024.0)
                .collect(),
            1,
        );
    }
    let d = &res.drain;
    let backlog = cli.backlog;
    if cli.wants(2) {
        row(
            &format!("(2) drain of a {backlog}-event backlog to the relay, events/s"),
            &format!(
                "plain HTTPS POSTs of same-size batches, same mTLS link, body-reading handler: \
                 median {:.0}/s",
                med(d.iter().map(|r| r.baseline_eps).collect())
            ),
            &ratio_text(d.iter().map(|r| r.drain_eps / r.baseline_eps).collect()),
            d.iter().map(|r| r.drain_eps).collect(),
            0,
        );
        row(
            "(2′) baseline: plain HTTPS POSTs, events/s",
            "—",
            "—",
            d.iter().map(|r| r.baseline_eps).collect(),
            0,
        );
        row(
            "(2) bytes per event on the link, agent drain (TLS records, HTTP, envelope)",
            &format!(
                "baseline batches: median {:.1} B",
                med(d.iter().map(|r| r.baseline_wire_bytes_per_event).collect())
            ),
            &ratio_text(
                d.iter()
                    .map(|r| r.drain_wire_bytes_per_event / r.baseline_wire_bytes_per_event)
                    .collect(),
            ),
            d.iter().map(|r| r.drain_wire_bytes_per_event).collect(),
            1,
        );
        row(
            &format!("agent ingest while the relay is unreachable ({backlog} scans), events/s"),
            "—",
            "—",
            d.iter().map(|r| r.fill_eps).collect(),
            0,
        );
    }
    if cli.wants(3) {
        row(
            &format!("(3) agent peak RSS (VmHWM) holding the {backlog}-event backlog, MiB"),
            "goal < 24 MiB",
            "—",
            d.iter().map(|r| r.hold_hwm_kib as f64 / 1024.0).collect(),
            1,
        );
        row(
            "(3) agent current RSS (VmRSS) once the backlog is held (after the fill), MiB",
            "—",
            "—",
            d.iter().map(|r| r.hold_rss_kib as f64 / 1024.0).collect(),
            1,
        );
        row(
            "(3) agent VmHWM growth over the drain, %",
            "goal < 10 %",
            "—",
            d.iter()
                .map(|r| {
                    (r.after_drain_hwm_kib as f64 / r.hold_hwm_kib.max(1) as f64 - 1.0) * 100.0
                })
                .collect(),
            1,
        );
    }
    let l = &res.latency;
    if cli.wants(4) {
        let rate = cli.latency_rate;
        row(
            &format!("(4) scan → relay ack latency p50 at {rate}/s, ms"),
            &format!(
                "bare QoS 1 publish → PUBACK, same broker and rate: p50 median {:.2} ms",
                med(l.iter().map(|r| r.rtt_p50_ms).collect())
            ),
            &ratio_text(l.iter().map(|r| r.p50_ms / r.rtt_p50_ms).collect()),
            l.iter().map(|r| r.p50_ms).collect(),
            2,
        );
        row(
            &format!("(4) scan → relay ack latency p99 at {rate}/s, ms (goal < 25)"),
            &format!(
                "bare QoS 1 publish → PUBACK: p99 median {:.2} ms",
                med(l.iter().map(|r| r.rtt_p99_ms).collect())
            ),
            &ratio_text(l.iter().map(|r| r.p99_ms / r.rtt_p99_ms).collect()),
            l.iter().map(|r| r.p99_ms).collect(),
            2,
        );
        row(
            "(4) scan → relay ack latency, max, ms",
            "—",
            "—",
            l.iter().map(|r| r.max_ms).collect(),
            2,
        );
    }
    let f = &res.fleet;
    if cli.wants(5) {
        row(
            &format!(
                "(5) relay ingest, {} concurrent mTLS agents (batches of 100), events/s",
                cli.agents
            ),
            "—",
            "—",
            f.iter().map(|r| r.eps).collect(),
            0,
        );
        row(
            "(5) relay CPU seconds (user + system) per 1,000 events",
            "—",
            "—",
            f.iter().map(|r| r.cpu_per_1000).collect(),
            4,
        );
    }
    if cli.wants(6) {
        let rpcs: Vec<f64> = m.iter().map(|r| r.rpcs_per_1000).collect();
        let ratio = if rpcs.is_empty() {
            "—".into()
        } else {
            format!("median {:.3}", stats(rpcs.clone()).1 / 1000.0)
        };
        row(
            "(6) Odoo RPCs per 1,000 applied events (end to end run)",
            "one call per event: 1000",
            &ratio,
            rpcs,
            1,
        );
    }
}

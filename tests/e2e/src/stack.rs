//! The whole chain wired together as separate processes, in the order a site brings it up:
//! mosquitto (with the shipped fragment), the Odoo simulator, a site CA and the site's bundle
//! (made with the relay's CLI), the relay, the agent's persistent broker session, and the agent.
//! Tests, the demo and the bench all start their world through [`Stack::start`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::agent::{Agent, AgentOptions, Station};
use crate::checks::{Expected, Pair};
use crate::ean;
use crate::error::{HarnessError, Result};
use crate::fault_proxy::FaultProxy;
use crate::mosquitto::Mosquitto;
use crate::odoo_sim::{OdooSim, SeedLocation, SeedProduct, SeedRequest, SimOptions, SimState};
use crate::process::StateDir;
use crate::publisher::{preregister_session, Publisher};
use crate::relay::{ca_init, ca_issue, CaDir, Relay, RelayOptions, SiteBundle};
use crate::scans::{topic_for, ScanPayload};

/// How to build the stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub site: String,
    pub sim: SimOptions,
    pub max_chunk: Option<u32>,
    pub stations: Vec<Station>,
    /// `RUST_LOG` for relay and agent.
    pub rust_log: String,
    /// Whether to create the agent's persistent session on the broker before the agent starts,
    /// so nothing published before its first connection is lost.
    pub preregister_agent_session: bool,
    /// Put a [`FaultProxy`] between agent and relay and one between relay and the Odoo simulator.
    pub proxies: bool,
    /// Applied to the agent's options before it starts (store cap, retry, state dir, env).
    pub agent: AgentTuning,
}

/// Agent settings a scenario changes; `None` / empty keeps the harness default.
#[derive(Debug, Clone, Default)]
pub struct AgentTuning {
    pub store_max_bytes: Option<u64>,
    pub retry_max_ms: Option<u64>,
    pub state_dir: Option<std::path::PathBuf>,
    pub env: Vec<(String, String)>,
    pub heartbeat_secs: Option<u64>,
    /// Raw TOML appended to the agent's configuration.
    pub extra_config: String,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            site: "WH01".into(),
            sim: SimOptions::default(),
            max_chunk: Some(200),
            stations: Vec::new(),
            rust_log: "info".into(),
            preregister_agent_session: true,
            proxies: false,
            agent: AgentTuning::default(),
        }
    }
}

/// Every process of the chain, killed on drop (children first, the state directory last).
pub struct Stack {
    pub agent: Agent,
    pub relay: Relay,
    pub sim: OdooSim,
    pub mosquitto: Mosquitto,
    pub ca: CaDir,
    pub bundle: SiteBundle,
    pub agent_options: AgentOptions,
    pub site: String,
    /// Between agent and relay, when [`StackOptions::proxies`].
    pub relay_proxy: Option<FaultProxy>,
    /// Between relay and the Odoo simulator, when [`StackOptions::proxies`].
    pub odoo_proxy: Option<FaultProxy>,
    /// Declared last so it is dropped after every process (and kept if a test panics).
    pub dir: StateDir,
}

impl Stack {
    /// Brings the chain up in `dir`. If a step fails, the directory is kept (and printed) so the
    /// logs of the processes started so far can be read.
    pub async fn start(mut dir: StateDir, opts: &StackOptions) -> Result<Stack> {
        match Stack::start_in(&dir, opts).await {
            Ok(parts) => Ok(parts.with_dir(dir)),
            Err(e) => {
                dir.keep_for_diagnosis();
                Err(e)
            }
        }
    }

    async fn start_in(dir: &StateDir, opts: &StackOptions) -> Result<StackParts> {
        let root = dir.path().to_path_buf();
        let mosquitto = Mosquitto::start(&root).await?;
        let sim = OdooSim::start(&root, &opts.sim).await?;
        let odoo_proxy = match opts.proxies {
            true => Some(start_proxy(sim.url().trim_start_matches("http://"), &root).await?),
            false => None,
        };
        let odoo_url = match &odoo_proxy {
            Some(p) => format!("http://127.0.0.1:{}", p.port()),
            None => sim.url().to_string(),
        };
        let ca = ca_init(&dir.subdir("ca")?).await?;
        let bundle = ca_issue(
            &ca,
            &opts.site,
            &dir.subdir(&format!("site-{}", opts.site))?,
        )
        .await?;
        let relay = Relay::start(
            &root,
            &ca,
            &RelayOptions {
                odoo_url,
                odoo_api_key: sim.api_key().to_string(),
                max_chunk: opts.max_chunk,
                rust_log: opts.rust_log.clone(),
            },
        )
        .await?;
        let relay_proxy = match opts.proxies {
            true => Some(start_proxy(relay.url().trim_start_matches("https://"), &root).await?),
            false => None,
        };
        let relay_url = match &relay_proxy {
            Some(p) => format!("https://127.0.0.1:{}", p.port()),
            None => relay.url(),
        };
        let mut agent_options = AgentOptions::new(bundle.clone(), relay_url, mosquitto.port());
        agent_options.stations = opts.stations.clone();
        agent_options.rust_log = opts.rust_log.clone();
        agent_options.store_max_bytes = opts.agent.store_max_bytes;
        agent_options.retry_max_ms = opts.agent.retry_max_ms;
        agent_options.state_dir = opts.agent.state_dir.clone();
        agent_options.env = opts.agent.env.clone();
        agent_options.heartbeat_secs = opts.agent.heartbeat_secs;
        agent_options.extra_config = opts.agent.extra_config.clone();
        if opts.preregister_agent_session {
            preregister_session(
                mosquitto.port(),
                &agent_options.client_id,
                &agent_options.topics,
            )
            .await?;
        }
        let agent = Agent::start(&root, &agent_options).await?;
        Ok(StackParts {
            agent,
            relay,
            sim,
            mosquitto,
            ca,
            bundle,
            agent_options,
            site: opts.site.clone(),
            relay_proxy,
            odoo_proxy,
        })
    }

    /// The agent's local status API (`/metrics`, `/healthz`, `/status`).
    pub fn agent_api(&self) -> Result<crate::agent::StatusApi> {
        let url = self.agent_options.status_url().ok_or_else(|| {
            HarnessError::Setup("the agent's status API is disabled (status_port None)".into())
        })?;
        crate::agent::StatusApi::new(url)
    }

    /// Fails with the log to read if any process of the chain has died.
    pub fn ensure_all_running(&mut self) -> Result<()> {
        self.mosquitto.process().ensure_running()?;
        self.sim.process().ensure_running()?;
        self.relay.process().ensure_running()?;
        self.agent.ensure_running()
    }

    /// Polls `/__sim/state` until `done` says so, failing after `timeout` with `progress`'s account
    /// of how far it got, or early if a process died.
    ///
    /// The dump holds the simulator's database while it is built, so with a million moves in it
    /// polling every 200 ms would starve the very relay writes being waited for: the pause after
    /// each poll is four times what the poll took (at least 200 ms), which keeps the simulator
    /// free at least 80% of the time whatever its size.
    pub async fn wait_for_state(
        &mut self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&SimState) -> bool,
        progress: impl Fn(&SimState) -> String,
    ) -> Result<SimState> {
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_all_running()?;
            let polled = Instant::now();
            let state = self.sim.state().await?;
            let took = polled.elapsed();
            if done(&state) {
                return Ok(state);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: format!("{what} (got: {})", progress(&state)),
                    waited: timeout,
                    look_at: self.dir.path().to_path_buf(),
                });
            }
            tokio::time::sleep(poll_pause(took)).await;
        }
    }
}

/// The pause after a simulator poll that took `took` (see [`Stack::wait_for_state`]).
pub fn poll_pause(took: Duration) -> Duration {
    (took * 4).max(Duration::from_millis(200))
}

/// A stack without its directory, while it is being started.
struct StackParts {
    agent: Agent,
    relay: Relay,
    sim: OdooSim,
    mosquitto: Mosquitto,
    ca: CaDir,
    bundle: SiteBundle,
    agent_options: AgentOptions,
    site: String,
    relay_proxy: Option<FaultProxy>,
    odoo_proxy: Option<FaultProxy>,
}

/// A fault proxy in front of `upstream` (`127.0.0.1:PORT`).
async fn start_proxy(upstream: &str, root: &std::path::Path) -> Result<FaultProxy> {
    let addr: std::net::SocketAddr = upstream.parse().map_err(|_| {
        HarnessError::Setup(format!(
            "fault proxy upstream `{upstream}` is not an address"
        ))
    })?;
    FaultProxy::start(addr).await.map_err(|e| HarnessError::Io {
        action: "start a fault proxy in",
        path: root.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

impl StackParts {
    fn with_dir(self, dir: StateDir) -> Stack {
        Stack {
            agent: self.agent,
            relay: self.relay,
            sim: self.sim,
            mosquitto: self.mosquitto,
            ca: self.ca,
            bundle: self.bundle,
            agent_options: self.agent_options,
            site: self.site,
            relay_proxy: self.relay_proxy,
            odoo_proxy: self.odoo_proxy,
            dir,
        }
    }
}

/// The qty of the fence count: the last scan of a stream, on a product no stream counts.
pub const FENCE_QTY: f64 = 7.0;

impl Stack {
    /// Publishes the fence scan after a stream (same publisher, so after every scan of it), waits
    /// for every PUBACK, then polls the simulator until the fence is applied. The relay applies a
    /// site's events in seq order, so every scan before the fence has been dealt with by then.
    pub async fn fence_and_wait(
        &mut self,
        publisher: &mut Publisher,
        device: &str,
        catalog: &Catalog,
        expected: &Expected,
        timeout: Duration,
    ) -> Result<SimState> {
        let (fence_code, fence_id) = catalog.fence_product.clone();
        let (loc_code, loc_id) = catalog.locations[0].clone();
        let fence = ScanPayload::count(device, &fence_code, &loc_code, FENCE_QTY);
        publisher
            .publish(&topic_for(device), fence.to_bytes())
            .await?;
        publisher.wait_all_acked(timeout).await?;
        let total = expected.counts.len();
        self.wait_for_state(
            timeout,
            "the fence scan to be applied in the Odoo simulator",
            |s| {
                s.quant(fence_id, loc_id)
                    .is_some_and(|q| q.quantity == FENCE_QTY)
            },
            |s| {
                format!(
                    "{}/{total} pairs at their final quantity, {} moves, {} RPCs",
                    expected.pairs_done(s),
                    s.moves.len(),
                    s.rpc_total
                )
            },
        )
        .await
    }
}

/// Publishes `plan` in order as counts from `device`; with `per_second`, paced at about that rate.
pub async fn publish_plan(
    publisher: &mut Publisher,
    device: &str,
    plan: &[PlannedCount],
    per_second: Option<u32>,
) -> Result<()> {
    let topic = topic_for(device);
    let tick = Duration::from_millis(10);
    let per_tick = per_second.map(|r| (r as usize / 100).max(1));
    let mut interval = tokio::time::interval(tick);
    for (i, c) in plan.iter().enumerate() {
        if let Some(n) = per_tick {
            if i % n == 0 {
                interval.tick().await;
            }
        }
        let scan = ScanPayload::count(device, &c.product_code, &c.location_code, c.qty as f64);
        publisher.publish(&topic, scan.to_bytes()).await?;
    }
    Ok(())
}

/// Products and shelf locations seeded into the simulator, with their database ids.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// (barcode, product id)
    pub products: Vec<(String, i64)>,
    /// (barcode, location id)
    pub locations: Vec<(String, i64)>,
    /// A product kept out of every count stream, for the fence scan (see [`Catalog::fence`]).
    pub fence_product: (String, i64),
}

impl Catalog {
    /// Seeds `products` valid EAN-13 products (`family` picks the GS1 prefix `2<family>`) and
    /// `locations` shelves `<prefix>-A01`, ... plus one fence product.
    pub async fn seed(
        sim: &OdooSim,
        family: u8,
        products: usize,
        locations: usize,
        location_prefix: &str,
    ) -> Result<Catalog> {
        let codes = ean::generate(family, 1, products + 1);
        let req = SeedRequest {
            products: codes
                .iter()
                .enumerate()
                .map(|(i, c)| SeedProduct {
                    barcode: c.clone(),
                    name: if i == products {
                        "E2E fence".to_string()
                    } else {
                        format!("E2E product {i:03}")
                    },
                })
                .collect(),
            locations: (1..=locations)
                .map(|i| SeedLocation {
                    barcode: format!("{location_prefix}-A{i:02}"),
                    name: format!("A{i:02}"),
                })
                .collect(),
        };
        let ids = sim.seed(&req).await?;
        let lookup = |map: &BTreeMap<String, i64>, code: &str| {
            map.get(code)
                .copied()
                .ok_or_else(|| HarnessError::HttpStatus {
                    url: format!("{}/__sim/seed", sim.url()),
                    status: 200,
                    body: format!("the answer has no id for barcode {code}"),
                })
        };
        let mut product_ids = Vec::new();
        for c in &codes {
            product_ids.push((c.clone(), lookup(&ids.products, c)?));
        }
        let fence_product = product_ids.pop().ok_or_else(|| HarnessError::HttpStatus {
            url: sim.url().to_string(),
            status: 200,
            body: "no products seeded".into(),
        })?;
        let mut location_ids = Vec::new();
        for l in &req.locations {
            location_ids.push((l.barcode.clone(), lookup(&ids.locations, &l.barcode)?));
        }
        Ok(Catalog {
            products: product_ids,
            locations: location_ids,
            fence_product,
        })
    }

    /// All (product index, location index) pairs.
    pub fn pair_count(&self) -> usize {
        self.products.len() * self.locations.len()
    }

    /// The ids of pair number `i` (product-major).
    pub fn pair(&self, i: usize) -> ((&str, i64), (&str, i64)) {
        let p = &self.products[i / self.locations.len()];
        let l = &self.locations[i % self.locations.len()];
        ((p.0.as_str(), p.1), (l.0.as_str(), l.1))
    }
}

/// One planned scan of a count stream.
#[derive(Debug, Clone)]
pub struct PlannedCount {
    pub product_code: String,
    pub location_code: String,
    pub pair: Pair,
    pub qty: u64,
}

/// `n` counts over the catalog's pairs in passes of fresh random permutations, with the k-th count
/// of a pair carrying qty = k; returns the scans in publish order and the expectation.
pub fn plan_counts(
    catalog: &Catalog,
    n: usize,
    rng: &mut impl rand::Rng,
) -> (Vec<PlannedCount>, Expected) {
    use rand::seq::SliceRandom;
    let mut expected = Expected::default();
    let mut plan = Vec::with_capacity(n);
    let mut order: Vec<usize> = (0..catalog.pair_count()).collect();
    while plan.len() < n {
        order.shuffle(rng);
        for &i in &order {
            if plan.len() == n {
                break;
            }
            let ((pcode, pid), (lcode, lid)) = catalog.pair(i);
            let qty = expected.next_qty((pid, lid));
            plan.push(PlannedCount {
                product_code: pcode.to_string(),
                location_code: lcode.to_string(),
                pair: (pid, lid),
                qty,
            });
        }
    }
    (plan, expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn catalog() -> Catalog {
        Catalog {
            products: ean::generate(1, 1, 4).into_iter().zip(1..).collect(),
            locations: vec![("L-A01".into(), 100), ("L-A02".into(), 101)],
            fence_product: ("2000000000008".into(), 99),
        }
    }

    #[test]
    fn polls_of_a_big_simulator_leave_it_free_four_fifths_of_the_time() {
        assert_eq!(
            poll_pause(Duration::from_millis(10)),
            Duration::from_millis(200)
        );
        assert_eq!(poll_pause(Duration::from_secs(3)), Duration::from_secs(12));
    }

    #[test]
    fn the_kth_count_of_a_pair_carries_qty_k_and_totals_match() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (plan, expected) = plan_counts(&catalog(), 21, &mut rng);
        assert_eq!(plan.len(), 21);
        assert_eq!(expected.total(), 21);
        let mut seen: BTreeMap<Pair, u64> = BTreeMap::new();
        for c in &plan {
            let k = seen.entry(c.pair).or_default();
            *k += 1;
            assert_eq!(c.qty, *k);
        }
        assert_eq!(seen, expected.counts);
        // 21 counts over 8 pairs in passes: every pair counted 2 or 3 times.
        assert!(expected.counts.values().all(|&n| n == 2 || n == 3));
    }
}

//! The shipped broker fragment queues a long outage's worth of scans for an agent that is down:
//! `max_queued_bytes` (deploy/mosquitto/scanbridge.conf) counts payload bytes only, and at the old
//! 64 MiB a 1,000,000-scan burst lost a quarter of its scans, PUBACKed to the scanners and then
//! dropped ("Outgoing messages are being dropped"). Here the agent is stopped, the scans are
//! published and PUBACKed, the broker's log must show no drop, and the started agent takes every
//! one exactly once.
//!
//! Checked at the agent, the hop under test: the relay is blackholed so the agent's buffer holds
//! everything it took, which must be exactly the published count, fence (the last scan) included,
//! over one broker connection, so no redelivery could make up for a loss. (What happens after the
//! agent, exactly once into Odoo, is the other scenarios' verdict; a 1,000,000-count Odoo verdict
//! does not fit the simulator's memory on a 24 GiB machine.)
//!
//! Short variant (CI): 500,000 scans (~69 MiB of payload: more than the old 64 MiB cap, so this
//! fails if the fragment regresses). `SCANBRIDGE_LONG=1`: 1,000,000 (measured: 36 s, mosquitto
//! RSS 465 MiB while holding them).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use rand::SeedableRng;
use scanbridge_e2e::fault_proxy::Mode;
use scanbridge_e2e::long_variant as long;
use scanbridge_e2e::process::{vm_rss_kib, StateDir};
use scanbridge_e2e::publisher::Publisher;
use scanbridge_e2e::scans::{topic_for, ScanPayload};
use scanbridge_e2e::stack::{
    plan_counts, publish_plan, AgentTuning, Catalog, Stack, StackOptions, FENCE_QTY,
};

/// Polls an agent metric until `want` holds, failing after `timeout`.
async fn agent_metric_until(
    stack: &Stack,
    name: &str,
    timeout: Duration,
    want: impl Fn(f64) -> bool,
) -> f64 {
    let api = stack.agent_api().unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        let v = api.metrics().await.ok().and_then(|m| m.get(name).copied());
        if let Some(v) = v.filter(|v| want(*v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {v:?} after {:.0} s",
            timeout.as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A chain with the relay blackholed (the agent's buffer keeps what it takes) and the agent
/// stopped, and `n` counts plus a fence (the last scan) published and PUBACKed by the broker for
/// it: the queue the tests drain. Returns the stack, the fence, and when publishing started.
async fn queued_for_a_stopped_agent(
    label: &str,
    n: usize,
    seed: u64,
) -> (Stack, ScanPayload, Instant) {
    let opts = StackOptions {
        proxies: true,
        agent: AgentTuning {
            retry_max_ms: Some(1_000),
            ..AgentTuning::default()
        },
        ..StackOptions::default()
    };
    let dir = StateDir::temp(label).expect("state dir");
    let mut stack = Stack::start(dir, &opts).await.expect("chain up");
    let catalog = Catalog::seed(&stack.sim, 4, 200, 5, "WH-BQ")
        .await
        .expect("seed");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (plan, _expected) = plan_counts(&catalog, n, &mut rng);
    let relay = stack.relay_proxy.as_ref().unwrap();
    relay.set_mode(Mode::Blackhole);
    relay.reset_all();

    stack
        .agent
        .stop(Duration::from_secs(20))
        .expect("stop the agent");
    let started = Instant::now();
    let mut publisher = Publisher::connect(stack.mosquitto.port(), &format!("scanner-{label}"))
        .await
        .expect("publisher");
    publish_plan(&mut publisher, "SC-01", &plan, None)
        .await
        .expect("publish");
    let (fence_code, _) = catalog.fence_product.clone();
    let (loc_code, _) = catalog.locations[0].clone();
    let fence = ScanPayload::count("SC-01", &fence_code, &loc_code, FENCE_QTY);
    publisher
        .publish(&topic_for("SC-01"), fence.to_bytes())
        .await
        .expect("publish the fence");
    publisher
        .wait_all_acked(Duration::from_secs(600))
        .await
        .expect("the broker PUBACKed every scan");
    (stack, fence, started)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_queues_an_outage_of_scans_for_a_stopped_agent_and_drops_none() {
    let n = if long() { 1_000_000 } else { 500_000 };
    let (mut stack, fence, started) = queued_for_a_stopped_agent("broker-queue", n, 0xb0c).await;
    let payload_bytes: usize = fence.to_bytes().len() * (n + 1);
    let rss = vm_rss_kib(stack.mosquitto.process().pid()).unwrap_or(0);
    eprintln!(
        "{} scans (~{} MiB of payload) queued for the stopped agent in {:.1} s; mosquitto RSS \
         {} MiB ({} bytes per queued scan)",
        n + 1,
        payload_bytes >> 20,
        started.elapsed().as_secs_f64(),
        rss >> 10,
        rss * 1024 / (n as u64 + 1)
    );
    assert!(
        !stack.mosquitto.dropped_messages(),
        "mosquitto dropped scans it had PUBACKed: raise max_queued_bytes in \
         deploy/mosquitto/scanbridge.conf"
    );

    stack.agent.restart().expect("start the agent");
    let want = (n + 1) as f64;
    let backlog = agent_metric_until(
        &stack,
        "scanbridge_agent_backlog_events",
        Duration::from_secs(if long() { 1800 } else { 300 }),
        |b| b >= want,
    )
    .await;
    eprintln!(
        "the agent took {backlog} events from the broker in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        backlog, want,
        "the agent stored more events than were published"
    );
    let agent_log = std::fs::read_to_string(stack.agent.log_path()).unwrap();
    let last_run = scanbridge_e2e::process::latest_run(&agent_log);
    assert_eq!(
        last_run.matches("connected to MQTT broker").count(),
        1,
        "the agent reconnected to the broker: a redelivery could hide a loss"
    );

    stack.ensure_all_running().expect("no process died");
}

/// mosquitto 2.0.11 puts a reconnecting session's whole queue in flight at once (its in-flight
/// window is not applied to queued messages at reconnect; `broker_pkid_reuse.rs` measures it), so
/// a queue deeper than 65,535 messages has several messages in flight under one packet id. An
/// agent killed while it drains such a queue gets every one of them again, DUP set, on restart:
/// it must recognise each copy of a scan it committed, whichever generation of the packet id it
/// came under, and store every scan exactly once. (Before the fix: one dedupe row per packet id
/// recognised only the newest generation; the older copies were stored again: 86,527 of 200,000
/// after three kills.) A broker restart between the kills adds a reconnect with PUBACKs of the
/// old connection still queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_while_draining_a_deep_broker_queue_stores_every_scan_once() {
    let n = if long() { 600_000 } else { 200_000 };
    let (mut stack, _, _) = queued_for_a_stopped_agent("broker-queue-kill", n, 0xb0d).await;
    assert!(
        !stack.mosquitto.dropped_messages(),
        "mosquitto dropped scans"
    );

    let want = (n + 1) as f64;
    let timeout = Duration::from_secs(if long() { 1800 } else { 300 });
    let mut kills = 0;
    stack.agent.restart().expect("start the agent");
    // SIGKILL the agent, restart the broker under it (a reconnect: PUBACKs still queued for the
    // old connection must not be sent on the new one), SIGKILL the agent again.
    for (fraction, broker_restart) in [(0.25, false), (0.5, true), (0.75, false)] {
        let at = agent_metric_until(&stack, "scanbridge_agent_backlog_events", timeout, |b| {
            b >= want * fraction
        })
        .await;
        if broker_restart {
            stack.mosquitto.restart().await.expect("restart the broker");
            eprintln!("broker restarted with {at} events committed");
            continue;
        }
        stack.agent.kill_hard().expect("SIGKILL the agent");
        kills += 1;
        eprintln!("SIGKILL {kills} with {at} events committed");
        stack.agent.restart().expect("restart the agent");
    }
    let backlog = agent_metric_until(&stack, "scanbridge_agent_backlog_events", timeout, |b| {
        b >= want
    })
    .await;
    // A copy stored twice raises the count past `want`; look again a little later for copies
    // still on their way.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled =
        agent_metric_until(&stack, "scanbridge_agent_backlog_events", timeout, |_| true).await;
    eprintln!("{kills} kills: {backlog} events, {settled} after 3 s, {want} published");
    assert_eq!(
        (backlog, settled),
        (want, want),
        "the agent stored redelivered copies of scans it had committed (or lost some)"
    );
    stack.ensure_all_running().expect("no process died");
}

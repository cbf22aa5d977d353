//! Odoo under load: sites pushed in parallel up to `max_concurrency` (each site strictly in
//! order), and every call paced to `max_rps`; observed through a counting proxy in front of the
//! Odoo simulator.

#![allow(clippy::unwrap_used)]

mod common;
mod flows_support;

use std::time::Duration;

use common::{client, post, Harness};
use flows_support::{rows, start_relay_with, Proxy, Sim};
use scanbridge_protocol::{encode, Batch, Event, EventBody, Operation, Scan, Source, Symbology};
use scanbridge_relay::inbox::Outcome;
use serde_json::json;

const GADGET: &str = "4006381333948";

fn ev(seq: u64, code: &str) -> Event {
    Event {
        seq,
        captured_at: 1_700_000_000_000_000,
        received_at: 1_700_000_000_000_100,
        source: Source::Serial {
            port: "/dev/ttyACM0".into(),
        },
        device: "SC-01".into(),
        body: EventBody::Scan(Scan {
            code: code.into(),
            symbology: Symbology::Code128,
            gs1: None,
            op: Some(Operation::Receive),
            qty: None,
            location: None,
            reference: None,
        }),
    }
}

/// A receipt for `site`: open, three scans, validate (seqs 1..=5).
async fn receipt(relay: &Harness, site: &str, picking: &str) {
    let events = vec![
        ev(1, picking),
        ev(2, GADGET),
        ev(3, GADGET),
        ev(4, GADGET),
        ev(5, "O-BTN.validate"),
    ];
    let batch = Batch {
        site: site.into(),
        agent: "gw".into(),
        first_seq: 1,
        events,
        status: None,
    };
    let body = encode(&batch).unwrap();
    assert_eq!(
        post(&client(&relay.bundle(site)), &relay.url(), body)
            .await
            .0,
        200
    );
}

async fn seed(sim: &Sim, pickings: &[&str]) {
    let pickings: Vec<_> = pickings
        .iter()
        .map(|name| {
            json!({"name": name, "type": "incoming", "state": "assigned",
            "moves": [{"product": GADGET, "qty": 3}]})
        })
        .collect();
    sim.seed(json!({"products": [{"barcode": GADGET, "name": "Gadget"}], "pickings": pickings}))
        .await;
}

fn all_applied(relay: &Harness, site: &str) -> bool {
    (1..=5).all(|seq| {
        matches!(
            relay.inbox.outcome(site, seq),
            Ok(Some(Outcome::Applied { .. }))
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_are_pushed_in_parallel_but_never_more_than_max_concurrency_at_once() {
    let sim = Sim::start("17").await;
    let sites = ["WH01", "WH02", "WH03", "WH04"];
    let names = ["WH/IN/10001", "WH/IN/10002", "WH/IN/10003", "WH/IN/10004"];
    seed(&sim, &names).await;
    let proxy = Proxy::start(&sim.url).await;
    // Slow Odoo calls make the overlap visible.
    sim.faults(json!({"latency_ms": 150})).await;
    let relay = start_relay_with(&proxy.url, "max_concurrency = 2\nmax_rps = 1000\n").await;
    for (site, name) in sites.iter().zip(names) {
        receipt(&relay, site, name).await;
    }
    common::eventually(
        Duration::from_secs(120),
        "every site's receipt applied",
        || sites.iter().all(|s| all_applied(&relay, s)),
    )
    .await;
    let max = proxy.stats.lock().unwrap().max_in_flight;
    assert_eq!(max, 2, "two sites at a time, never more");
    let state = sim.state().await;
    for name in names {
        assert_eq!(
            rows(&state, "pickings", "name", &json!(name))[0]["state"],
            "done"
        );
    }
    relay.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_odoo_are_paced_to_max_rps() {
    let sim = Sim::start("17").await;
    seed(&sim, &["WH/IN/20001"]).await;
    let proxy = Proxy::start(&sim.url).await;
    let relay = start_relay_with(&proxy.url, "max_rps = 5\n").await;
    receipt(&relay, "WH01", "WH/IN/20001").await;
    common::eventually(Duration::from_secs(60), "the receipt applied", || {
        all_applied(&relay, "WH01")
    })
    .await;
    let arrivals = proxy.stats.lock().unwrap().arrivals.clone();
    assert!(arrivals.len() >= 6, "{} calls", arrivals.len());
    let span = arrivals[arrivals.len() - 1] - arrivals[0];
    let min = Duration::from_millis(200 * (arrivals.len() as u64 - 1) * 95 / 100);
    assert!(
        span >= min,
        "{} calls in {span:?}: faster than 5 per second",
        arrivals.len()
    );
    relay.stop().await;
    sim.stop().await;
}

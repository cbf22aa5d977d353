//! PLC readings on a picking field that Odoo computes from the lines (`shipping_weight`): the
//! relay keeps the latest reading per (picking, field) and writes it again after its own line
//! writes on the picking and after validation (also when a lost validate answer makes the retry
//! find the picking done), so the scale's weight is what the done picking shows. Real relay (in-process, real mTLS intake) against the Odoo simulator as a process.

#![allow(clippy::unwrap_used)]

mod common;
mod flows_support;

use std::time::{Duration, Instant};

use common::{client, post, Harness};
use flows_support::{rows, start_relay_with, Sim};
use scanbridge_protocol::{encode, Batch, Event, EventBody, Operation, Reading, Scan, Symbology};
use scanbridge_relay::inbox::Outcome;
use serde_json::{json, Value};

const GADGET: &str = "4006381333948";
const BOLT: &str = "4006381333955";

fn ev(seq: u64, device: &str, body: EventBody) -> Event {
    common::device_event(seq, device, body)
}

fn scan(code: &str, qty: Option<f64>) -> EventBody {
    EventBody::Scan(Scan {
        code: code.into(),
        symbology: Symbology::Code128,
        gs1: None,
        op: Some(Operation::Pick),
        qty,
        location: None,
        reference: None,
    })
}

fn weight(value: f64) -> EventBody {
    EventBody::Reading(Reading {
        tag: "scale1.weight".into(),
        value,
        unit: Some("kg".into()),
    })
}

async fn send(relay: &Harness, site: &str, events: Vec<Event>) {
    let batch = Batch {
        site: site.into(),
        agent: "gw".into(),
        first_seq: events[0].seq,
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

async fn settled(relay: &Harness, site: &str, upto: u64) {
    let inbox = relay.inbox.clone();
    let site = site.to_string();
    common::eventually(Duration::from_secs(60), "all events settled", || {
        inbox.stats(&site).map(|s| s.cursor > upto).unwrap_or(false)
    })
    .await;
}

fn assert_all_applied(relay: &Harness, site: &str, upto: u64) {
    for seq in 1..=upto {
        let outcome = relay.inbox.outcome(site, seq).unwrap();
        assert!(
            matches!(outcome, Some(Outcome::Applied { .. })),
            "event {seq}: {outcome:?}"
        );
    }
}

/// WH/OUT/00007: 4 Gadgets of 0.5 kg and 2 Bolts of 0.2 kg, reserved from WH/Stock; the scale
/// reading of SCALE-1 goes onto the picking open on SC-03.
async fn delivery(version: &str, backorder: bool) -> (Sim, Harness) {
    let sim = Sim::start(version).await;
    sim.seed(json!({
        "products": [
            {"barcode": GADGET, "name": "Gadget", "weight": 0.5},
            {"barcode": BOLT, "name": "Bolt", "weight": 0.2}
        ],
        "quants": [
            {"product": GADGET, "location": "WHSTOCK", "quantity": 10},
            {"product": BOLT, "location": "WHSTOCK", "quantity": 5}
        ],
        "pickings": [
            {"name": "WH/OUT/00007", "type": "outgoing", "state": "assigned",
             "moves": [{"product": GADGET, "qty": 4}, {"product": BOLT, "qty": 2}]}
        ]
    }))
    .await;
    let relay = start_relay_with(
        &sim.url,
        &format!("[[odoo.stations]]\nsite = \"WH01\"\ndevice = \"SC-03\"\nbackorder = {backorder}\n[[odoo.readings]]\ntag = \"scale1.weight\"\nmodel = \"stock.picking\"\nfield = \"shipping_weight\"\ndevice = \"SC-03\"\n"),
    )
    .await;
    (sim, relay)
}

fn out(state: &Value) -> Value {
    rows(state, "pickings", "name", &json!("WH/OUT/00007"))[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_weight_read_before_the_last_scan_is_the_shipping_weight_of_the_validated_delivery()
{
    let (sim, relay) = delivery("18", true).await;
    // One batch per step, so the reading is written before the Bolt's line exists.
    send(
        &relay,
        "WH01",
        vec![
            ev(1, "SC-03", scan("WH/OUT/00007", None)),
            ev(2, "SC-03", scan(GADGET, Some(4.0))),
        ],
    )
    .await;
    settled(&relay, "WH01", 2).await;
    send(&relay, "WH01", vec![ev(3, "SCALE-1", weight(3.75))]).await;
    settled(&relay, "WH01", 3).await;
    let state = sim.state().await;
    assert_eq!(out(&state)["shipping_weight"], 3.75, "{}", out(&state));
    send(&relay, "WH01", vec![ev(4, "SC-03", scan(BOLT, None))]).await;
    settled(&relay, "WH01", 4).await;
    let state = sim.state().await;
    assert_eq!(
        out(&state)["shipping_weight"],
        3.75,
        "written again after the Bolt's line made Odoo recompute it: {}",
        out(&state)
    );
    send(
        &relay,
        "WH01",
        vec![ev(5, "SC-03", scan("O-BTN.validate", None))],
    )
    .await;
    settled(&relay, "WH01", 5).await;
    assert_all_applied(&relay, "WH01", 5);
    let state = sim.state().await;
    let done = out(&state);
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(
        done["shipping_weight"], 3.75,
        "the scale's weight, not 4 x 0.5 + 1 x 0.2 (+ the dropped reservations): {done}"
    );
    assert_eq!(
        rows(&state, "pickings", "backorder_id", &done["id"]).len(),
        1,
        "the short Bolt goes to a backorder"
    );
    relay.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_weight_read_after_the_last_scan_survives_the_validation_that_drops_reservations() {
    let (sim, relay) = delivery("17", false).await;
    send(
        &relay,
        "WH01",
        vec![
            ev(1, "SC-03", scan("WH/OUT/00007", None)),
            ev(2, "SC-03", scan(GADGET, Some(4.0))),
            ev(3, "SC-03", scan(BOLT, None)),
            ev(4, "SCALE-1", weight(2.8)),
            ev(5, "SC-03", scan("O-BTN.validate", None)),
        ],
    )
    .await;
    settled(&relay, "WH01", 5).await;
    assert_all_applied(&relay, "WH01", 5);
    let state = sim.state().await;
    let done = out(&state);
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(
        done["shipping_weight"], 2.8,
        "written again after validation recomputed it from the picked lines: {done}"
    );
    assert!(
        rows(&state, "pickings", "backorder_id", &done["id"]).is_empty(),
        "station SC-03 says no backorder"
    );
    relay.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_weight_is_written_again_when_a_lost_validate_answer_finds_the_picking_done() {
    let (sim, relay) = delivery("17", false).await;
    // The full demand is scanned, so button_validate validates at once (no wizard).
    send(
        &relay,
        "WH01",
        vec![
            ev(1, "SC-03", scan("WH/OUT/00007", None)),
            ev(2, "SC-03", scan(GADGET, Some(4.0))),
            ev(3, "SC-03", scan(BOLT, Some(2.0))),
            ev(4, "SCALE-1", weight(2.8)),
        ],
    )
    .await;
    settled(&relay, "WH01", 4).await;
    // Slow calls, so the fault can be armed after the guard read arrived and before
    // button_validate does: Odoo validates, then the answer is lost.
    sim.faults(json!({"latency_ms": 1500})).await;
    let reads_before = sim.calls("stock.picking.read").await;
    send(
        &relay,
        "WH01",
        vec![ev(5, "SC-03", scan("O-BTN.validate", None))],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.calls("stock.picking.read").await == reads_before {
        assert!(Instant::now() < deadline, "the guard read never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.faults(json!({"drop_after_commit_next": 1, "latency_ms": 0}))
        .await;
    settled(&relay, "WH01", 5).await;
    assert_all_applied(&relay, "WH01", 5);
    let state = sim.state().await;
    let done = out(&state);
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(
        state["calls"]["stock.picking.button_validate"], 1,
        "validated once"
    );
    assert!(
        sim.calls("stock.picking.read").await >= reads_before + 2,
        "the answer was lost and the retry read the state again"
    );
    assert_eq!(
        done["shipping_weight"], 2.8,
        "the retry found the picking done and still wrote the reading again: {done}"
    );
    relay.stop().await;
    sim.stop().await;
}

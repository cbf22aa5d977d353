//! The warehouse flows end to end through a real relay (in-process, real mTLS intake) and the
//! Odoo simulator as a process: receipt with GS1 lots and the backorder wizard, readings onto
//! the open picking, the ordering rule with replay, lost answers after commit (receipt load and
//! validate), Odoo down for a while, and the RPC round trips per 1,000 receipt events.

#![allow(clippy::unwrap_used)]

mod common;
mod flows_support;

use std::time::{Duration, Instant};

use common::{client, post, Harness};
use flows_support::{rows, start_relay_with, Sim};
use scanbridge_protocol::{
    encode, Batch, Event, EventBody, Gs1, Operation, Reading, Scan, Symbology,
};
use scanbridge_relay::inbox::{DeadLetterState, Outcome, ReplayResult};
use serde_json::{json, Value};

const WIDGET: &str = "4006381333931";
const GADGET: &str = "4006381333948";

fn ev(seq: u64, device: &str, body: EventBody) -> Event {
    common::device_event(seq, device, body)
}

fn scan(op: Operation, code: &str) -> EventBody {
    EventBody::Scan(Scan {
        code: code.into(),
        symbology: Symbology::Code128,
        gs1: None,
        op: Some(op),
        qty: None,
        location: None,
        reference: None,
    })
}

fn gs1(op: Operation, ean13: &str, lot: &str, qty: f64) -> EventBody {
    EventBody::Scan(Scan {
        code: format!("010{ean13}10{lot}\u{1d}30{qty}"),
        symbology: Symbology::Gs1_128,
        gs1: Some(Gs1 {
            gtin: Some(format!("0{ean13}")),
            lot: Some(lot.into()),
            qty: Some(qty),
            ..Gs1::default()
        }),
        op: Some(op),
        qty: None,
        location: None,
        reference: None,
    })
}

fn reading(tag: &str, value: f64) -> EventBody {
    EventBody::Reading(Reading {
        tag: tag.into(),
        value,
        unit: Some("kg".into()),
    })
}

/// Posts events (seqs must continue the site's sequence) for `site`.
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

async fn warehouse(sim: &Sim) -> Value {
    sim.seed(json!({
        "products": [
            {"barcode": WIDGET, "name": "Widget", "tracking": "lot"},
            {"barcode": GADGET, "name": "Gadget", "weight": 0.5,
             "packagings": [{"barcode": "14006381333945", "qty": 6}]}
        ],
        "pickings": [
            {"name": "WH/IN/00012", "type": "incoming", "state": "assigned",
             "moves": [{"product": WIDGET, "qty": 10}, {"product": GADGET, "qty": 10}]},
            {"name": "WH/IN/00013", "type": "incoming", "state": "assigned",
             "moves": [{"product": GADGET, "qty": 4}]}
        ]
    }))
    .await
}

fn picking<'a>(state: &'a Value, name: &str) -> &'a Value {
    rows(state, "pickings", "name", &json!(name))[0]
}

fn assert_all_applied(relay: &Harness, site: &str, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        let outcome = relay.inbox.outcome(site, seq).unwrap();
        assert!(
            matches!(outcome, Some(Outcome::Applied { .. })),
            "event {seq}: {outcome:?}"
        );
    }
}

/// Receipt with GS1 lots, a packaging barcode, a scale reading and validate without backorder,
/// on Odoo `version` with the relay's extra `[odoo]` keys `api_keys`; returns Odoo's state.
async fn receipt_with_lots_packaging_and_weight(version: &str, api_keys: &str) -> Value {
    let sim = Sim::start(version).await;
    let ids = warehouse(&sim).await;
    let relay = start_relay_with(
        &sim.url,
        &format!("{api_keys}[[odoo.stations]]\nsite = \"WH01\"\ndevice = \"SC-01\"\nbackorder = false\n[[odoo.readings]]\ntag = \"scale1.weight\"\nmodel = \"stock.picking\"\nfield = \"shipping_weight\"\ndevice = \"SC-01\"\n"),
    )
    .await;
    let r = Operation::Receive;
    send(
        &relay,
        "WH01",
        vec![
            ev(1, "SC-01", scan(r, "WH/IN/00012")),
            ev(2, "SC-01", gs1(r, WIDGET, "LOT-A", 6.0)),
            ev(3, "SC-01", gs1(r, WIDGET, "LOT-A", 4.0)),
            ev(4, "SC-01", scan(r, GADGET)),
            ev(5, "SC-01", scan(r, "14006381333945")),
            ev(6, "SCALE-1", reading("scale1.weight", 12.5)),
            ev(7, "SC-01", scan(r, "O-BTN.validate")),
        ],
    )
    .await;
    settled(&relay, "WH01", 7).await;
    assert_all_applied(&relay, "WH01", 1..=7);
    let state = sim.state().await;
    let p = picking(&state, "WH/IN/00012");
    assert_eq!(p["state"], "done", "{p}");
    assert_eq!(p["shipping_weight"], 12.5, "{p}");
    let pid = p["id"].clone();
    let lines: Vec<&Value> = rows(&state, "move_lines", "picking_id", &pid);
    let widget = ids["products"][WIDGET].clone();
    let gadget = ids["products"][GADGET].clone();
    let qty_of = |product: &Value| -> f64 {
        lines
            .iter()
            .filter(|l| &l["product_id"] == product)
            .map(|l| l["quantity"].as_f64().unwrap())
            .sum()
    };
    assert_eq!(
        qty_of(&widget),
        10.0,
        "GS1 quantities added on one line: {lines:?}"
    );
    assert_eq!(qty_of(&gadget), 7.0, "1 unit + a box of 6: {lines:?}");
    let lot = rows(&state, "lots", "name", &json!("LOT-A"));
    assert_eq!(lot.len(), 1, "lot created from lot_name at validation");
    assert_eq!(lot[0]["product_id"], widget);
    assert!(
        rows(&state, "pickings", "backorder_id", &pid).is_empty(),
        "station SC-01 says no backorder"
    );
    match relay.inbox.outcome("WH01", 2).unwrap() {
        Some(Outcome::Applied { odoo: Some(r), .. }) => assert_eq!(r.model, "stock.move.line"),
        other => panic!("{other:?}"),
    }
    relay.stop().await;
    sim.stop().await;
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_records_gs1_lots_and_packagings_and_validates_without_backorder_on_odoo_17() {
    receipt_with_lots_packaging_and_weight("17", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_receipt_works_on_odoo_18_with_the_version_detected() {
    receipt_with_lots_packaging_and_weight("18", "version = \"auto\"\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_odoo_19_the_receipt_goes_over_json2_and_packagings_come_from_product_uom() {
    let state = receipt_with_lots_packaging_and_weight("19", "api = \"json2\"\n").await;
    assert!(
        state["rpc_total"].as_u64().unwrap() <= 1,
        "only common.version over /jsonrpc: {}",
        state["rpc_total"]
    );
    assert!(state["calls"]["product.uom.search_read"].as_u64().unwrap() >= 1);
    assert!(state["calls"]["stock.move.line.load"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odoos_refusal_to_validate_is_dead_lettered_with_its_own_message_under_the_picking() {
    let sim = Sim::start("17").await;
    warehouse(&sim).await;
    let relay = start_relay_with(&sim.url, "").await;
    let r = Operation::Receive;
    // Widget is lot-tracked: a plain scan without lot cannot be validated.
    send(
        &relay,
        "WH01",
        vec![
            ev(1, "SC-01", scan(r, "WH/IN/00012")),
            ev(2, "SC-01", scan(r, WIDGET)),
            ev(3, "SC-01", scan(r, "O-BTN.validate")),
            ev(4, "SC-01", scan(r, GADGET)),
        ],
    )
    .await;
    settled(&relay, "WH01", 4).await;
    let dead = relay
        .inbox
        .dead_letter("WH01", 3)
        .unwrap()
        .expect("dead letter");
    assert!(
        dead.reason.contains("You need to supply a Lot/Serial"),
        "Odoo's own message: {}",
        dead.reason
    );
    assert_eq!(dead.document.as_deref(), Some("WH/IN/00012"));
    assert!(matches!(dead.event, Ok(Event { seq: 3, .. })));
    assert_eq!(dead.held, [4]);
    relay.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialization_failures_and_500s_are_retried_until_applied() {
    let sim = Sim::start("17").await;
    warehouse(&sim).await;
    sim.faults(json!({"serialization_failure_next": 2, "http_500_next": 1}))
        .await;
    let relay = start_relay_with(&sim.url, "").await;
    let r = Operation::Receive;
    send(
        &relay,
        "WH01",
        vec![
            ev(1, "SC-01", scan(r, "WH/IN/00013")),
            ev(2, "SC-01", scan(r, GADGET)),
            ev(3, "SC-01", scan(r, "O-BTN.validate")),
        ],
    )
    .await;
    settled(&relay, "WH01", 3).await;
    assert_all_applied(&relay, "WH01", 1..=3);
    assert!(relay.inbox.dead_letters("WH01").unwrap().is_empty());
    assert_eq!(picking(&sim.state().await, "WH/IN/00013")["state"], "done");
    relay.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_receipt_on_a_default_station_answers_the_wizard_with_a_backorder() {
    let sim = Sim::start("18").await;
    warehouse(&sim).await;
    let relay = start_relay_with(&sim.url, "").await;
    let r = Operation::Receive;
    send(
        &relay,
        "WH01",
        vec![
            ev(1, "SC-02", scan(r, "WH/IN/00013")),
            ev(2, "SC-02", scan(r, GADGET)),
            ev(3, "SC-02", scan(r, "O-BTN.validate")),
        ],
    )
    .await;
    settled(&relay, "WH01", 3).await;
    assert_all_applied(&relay, "WH01", 1..=3);
    let state = sim.state().await;
    let p = picking(&state, "WH/IN/00013");
    assert_eq!(p["state"], "done");
    let backorders = rows(&state, "pickings", "backorder_id", &p["id"]);
    assert_eq!(backorders.len(), 1, "Odoo's wizard answered with process");
    assert_eq!(state["calls"]["stock.backorder.confirmation.process"], 1);
    relay.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_holds_its_picking_only_and_a_replay_after_fixing_odoo_applies_the_rest_in_order(
) {
    let sim = Sim::start("17").await;
    warehouse(&sim).await;
    let relay = start_relay_with(&sim.url, "").await;
    let r = Operation::Receive;
    const NEW: &str = "4006381333955";
    send(
        &relay,
        "WH01",
        vec![
            ev(1, "SC-01", scan(r, "WH/IN/00012")),
            ev(2, "SC-01", scan(r, NEW)),
            ev(3, "SC-01", scan(r, GADGET)),
            ev(4, "SC-02", scan(r, "WH/IN/00013")),
            ev(5, "SC-02", scan(r, GADGET)),
            // A second scanner joins the held picking: it waits too.
            ev(6, "SC-03", scan(r, "WH/IN/00012")),
            ev(7, "SC-03", scan(r, GADGET)),
            ev(8, "SC-01", scan(r, "O-BTN.validate")),
            ev(9, "SC-02", scan(r, "O-BTN.validate")),
        ],
    )
    .await;
    settled(&relay, "WH01", 9).await;
    let dead = relay
        .inbox
        .dead_letter("WH01", 2)
        .unwrap()
        .expect("dead letter");
    assert_eq!(dead.state, DeadLetterState::Open);
    assert_eq!(dead.document.as_deref(), Some("WH/IN/00012"));
    assert!(dead.reason.contains(NEW), "{}", dead.reason);
    assert_eq!(
        dead.held,
        [3, 6, 7, 8],
        "the same picking's later events wait"
    );
    for seq in [3, 6, 7, 8] {
        assert!(matches!(
            relay.inbox.outcome("WH01", seq).unwrap(),
            Some(Outcome::Held { behind: 2, .. })
        ));
    }
    assert_all_applied(&relay, "WH01", 4..=5);
    assert_all_applied(&relay, "WH01", 9..=9);
    let state = sim.state().await;
    assert_eq!(
        picking(&state, "WH/IN/00013")["state"],
        "done",
        "other picking not held"
    );
    assert_ne!(picking(&state, "WH/IN/00012")["state"], "done");

    // Fix master data in Odoo, then replay.
    sim.seed(json!({"products": [{"barcode": NEW, "name": "New thing"}]}))
        .await;
    assert_eq!(
        relay.inbox.replay_dead_letter("WH01", 2).unwrap(),
        ReplayResult::Done {
            state: DeadLetterState::ReplayRequested,
            released: vec![3, 6, 7, 8]
        }
    );
    let inbox = relay.inbox.clone();
    common::eventually(
        Duration::from_secs(60),
        "replay and held events applied",
        || {
            [2, 3, 6, 7, 8].iter().all(|&seq| {
                matches!(
                    inbox.outcome("WH01", seq),
                    Ok(Some(Outcome::Applied { .. }))
                )
            })
        },
    )
    .await;
    assert_eq!(
        relay.inbox.dead_letter("WH01", 2).unwrap().unwrap().state,
        DeadLetterState::Resolved
    );
    let state = sim.state().await;
    let p = picking(&state, "WH/IN/00012");
    assert_eq!(
        p["state"], "done",
        "validated after the replayed scans: {p}"
    );
    let gadget_scanned: f64 = rows(&state, "move_lines", "picking_id", &p["id"])
        .iter()
        .filter(|l| l["picked"] == true && l["product_id"] != json!(false))
        .filter_map(|l| l["quantity"].as_f64())
        .sum();
    assert_eq!(
        gadget_scanned, 3.0,
        "NEW + two gadget scans from two devices"
    );
    relay.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_load_whose_answer_is_lost_after_commit_is_applied_once() {
    let sim = Sim::start("17").await;
    let ids = warehouse(&sim).await;
    let relay = start_relay_with(&sim.url, "").await;
    let r = Operation::Receive;
    send(
        &relay,
        "WH01",
        vec![
            ev(1, "SC-01", scan(r, "WH/IN/00013")),
            ev(2, "SC-01", scan(r, GADGET)),
        ],
    )
    .await;
    settled(&relay, "WH01", 2).await;
    // Everything is cached now: the next scan's first object call is the load.
    sim.faults(json!({"drop_after_commit_next": 1})).await;
    let loads_before = sim.calls("stock.move.line.load").await;
    send(&relay, "WH01", vec![ev(3, "SC-01", scan(r, GADGET))]).await;
    settled(&relay, "WH01", 3).await;
    assert_all_applied(&relay, "WH01", 1..=3);
    let state = sim.state().await;
    assert_eq!(
        sim.calls("stock.move.line.load").await - loads_before,
        2,
        "the lost load was sent again"
    );
    let pid = picking(&state, "WH/IN/00013")["id"].clone();
    let gadget = ids["products"][GADGET].clone();
    let picked: f64 = rows(&state, "move_lines", "picking_id", &pid)
        .iter()
        .filter(|l| l["product_id"] == gadget && l["picked"] == true)
        .map(|l| l["quantity"].as_f64().unwrap())
        .sum();
    assert_eq!(picked, 2.0, "two scans, one effect each");
    relay.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validate_whose_answer_is_lost_after_commit_validates_once() {
    let sim = Sim::start("17").await;
    warehouse(&sim).await;
    let relay = start_relay_with(&sim.url, "").await;
    let r = Operation::Receive;
    // The full demand of 4 is scanned, so button_validate validates at once (no wizard).
    send(
        &relay,
        "WH01",
        vec![
            ev(1, "SC-01", scan(r, "WH/IN/00013")),
            ev(2, "SC-01", scan(r, GADGET)),
            ev(3, "SC-01", scan(r, GADGET)),
            ev(4, "SC-01", scan(r, GADGET)),
            ev(5, "SC-01", scan(r, GADGET)),
        ],
    )
    .await;
    settled(&relay, "WH01", 5).await;
    // Slow calls, so the fault can be armed after the guard read arrived and before
    // button_validate does.
    sim.faults(json!({"latency_ms": 1500})).await;
    let reads_before = sim.calls("stock.picking.read").await;
    send(
        &relay,
        "WH01",
        vec![ev(6, "SC-01", scan(r, "O-BTN.validate"))],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.calls("stock.picking.read").await == reads_before {
        assert!(Instant::now() < deadline, "the guard read never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.faults(json!({"drop_after_commit_next": 1, "latency_ms": 0}))
        .await;
    settled(&relay, "WH01", 6).await;
    assert_all_applied(&relay, "WH01", 1..=6);
    let state = sim.state().await;
    let p = picking(&state, "WH/IN/00013");
    assert_eq!(p["state"], "done");
    assert_eq!(
        state["calls"]["stock.picking.button_validate"], 1,
        "the retry saw the picking done and did not validate again"
    );
    assert!(rows(&state, "pickings", "backorder_id", &p["id"]).is_empty());
    assert!(
        sim.calls("stock.picking.read").await >= reads_before + 2,
        "the retry read the state again"
    );
    relay.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odoo_down_for_a_while_loses_nothing_and_needs_no_manual_step() {
    let sim = Sim::start("17").await;
    warehouse(&sim).await;
    let addr = sim.addr();
    let relay = start_relay_with(&sim.url, "").await;
    let r = Operation::Receive;
    send(&relay, "WH01", vec![ev(1, "SC-01", scan(r, "WH/IN/00013"))]).await;
    settled(&relay, "WH01", 1).await;
    sim.stop().await;
    send(
        &relay,
        "WH01",
        vec![
            ev(2, "SC-01", scan(r, GADGET)),
            ev(3, "SC-01", scan(r, GADGET)),
        ],
    )
    .await;
    // Odoo's port answers nothing (connections accepted and closed at once) until the relay
    // has tried three times.
    let down = tokio::net::TcpListener::bind(&addr).await.unwrap();
    for _ in 0..3 {
        let (socket, _) = tokio::time::timeout(Duration::from_secs(60), down.accept())
            .await
            .expect("the relay keeps retrying")
            .unwrap();
        drop(socket);
    }
    drop(down);
    assert!(
        relay.inbox.stats("WH01").unwrap().cursor <= 2,
        "nothing applied while down"
    );
    let sim = Sim::start_on("17", &addr).await;
    warehouse(&sim).await;
    settled(&relay, "WH01", 3).await;
    assert_all_applied(&relay, "WH01", 2..=3);
    assert!(relay.inbox.dead_letters("WH01").unwrap().is_empty());
    relay.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_round_trips_per_thousand_receipt_events_are_measured() {
    let sim = Sim::start("17").await;
    let ids = warehouse(&sim).await;
    let relay = start_relay_with(&sim.url, "max_chunk = 200\nmax_rps = 1000\n").await;
    let r = Operation::Receive;
    let mut events = Vec::new();
    let mut seq = 0;
    // 10 receipts of 100 events each: open, 98 product scans, validate.
    for i in 0..10 {
        let name = format!("WH/IN/9{i:04}");
        sim.seed(
            json!({"pickings": [{"name": name, "type": "incoming", "state": "assigned",
            "moves": [{"product": GADGET, "qty": 98}]}]}),
        )
        .await;
        seq += 1;
        events.push(ev(seq, "SC-01", scan(r, &name)));
        for _ in 0..98 {
            seq += 1;
            events.push(ev(seq, "SC-01", scan(r, GADGET)));
        }
        seq += 1;
        events.push(ev(seq, "SC-01", scan(r, "O-BTN.validate")));
    }
    let before = sim.state().await["rpc_total"].as_u64().unwrap();
    send(&relay, "WH01", events).await;
    settled(&relay, "WH01", seq).await;
    let after = sim.state().await["rpc_total"].as_u64().unwrap();
    let per_thousand = (after - before) as f64 * 1000.0 / seq as f64;
    println!(
        "receipt flow: {} events, {} RPC round trips, {per_thousand:.1} per 1,000 events",
        seq,
        after - before
    );
    assert_all_applied(&relay, "WH01", 1..=seq);
    let state = sim.state().await;
    let done = state["pickings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"].as_str().unwrap().starts_with("WH/IN/9") && p["state"] == "done")
        .count();
    assert_eq!(done, 10);
    let _ = ids;
    assert!(per_thousand < 200.0, "batched: {per_thousand}");
    relay.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_move_between_two_location_barcodes_moves_the_scanned_stock() {
    let sim = Sim::start("17").await;
    let ids = sim
        .seed(json!({
            "products": [{"barcode": GADGET, "name": "Gadget"}],
            "locations": [{"barcode": "WH-STOCK-A01", "name": "A01"}, {"barcode": "WH-STOCK-A02", "name": "A02"}],
            "quants": [{"product": GADGET, "location": "WH-STOCK-A01", "quantity": 5}]
        }))
        .await;
    let relay = start_relay_with(&sim.url, "").await;
    let m = Operation::Move;
    send(
        &relay,
        "WH01",
        vec![
            ev(1, "SC-05", scan(m, "WH-STOCK-A01")),
            ev(2, "SC-05", scan(m, GADGET)),
            ev(3, "SC-05", scan(m, GADGET)),
            ev(4, "SC-05", scan(m, "WH-STOCK-A02")),
            // A second move, abandoned: nothing moves.
            ev(5, "SC-05", scan(m, "WH-STOCK-A02")),
            ev(6, "SC-05", scan(m, GADGET)),
            ev(7, "SC-05", scan(m, "O-CMD.DISCARD")),
            ev(8, "SC-05", scan(m, "O-BTN.validate")),
        ],
    )
    .await;
    settled(&relay, "WH01", 8).await;
    assert!(matches!(
        relay.inbox.outcome("WH01", 7).unwrap(),
        Some(Outcome::Applied { .. })
    ));
    let dead = relay
        .inbox
        .dead_letter("WH01", 8)
        .unwrap()
        .expect("validate in a move");
    assert!(
        dead.reason.contains("destination location"),
        "{}",
        dead.reason
    );
    for seq in 1..=4 {
        let outcome = relay.inbox.outcome("WH01", seq).unwrap();
        assert!(
            matches!(outcome, Some(Outcome::Applied { .. })),
            "event {seq}: {outcome:?} {:?}",
            relay
                .inbox
                .dead_letter("WH01", seq)
                .unwrap()
                .map(|d| d.reason)
        );
    }
    let state = sim.state().await;
    let gadget = ids["products"][GADGET].clone();
    let at = |barcode: &str| -> f64 {
        let location = ids["locations"][barcode].clone();
        state["quants"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| q["product_id"] == gadget && q["location_id"] == location)
            .map(|q| q["quantity"].as_f64().unwrap())
            .sum()
    };
    assert_eq!((at("WH-STOCK-A01"), at("WH-STOCK-A02")), (3.0, 2.0));
    let internal: Vec<&Value> = state["pickings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["picking_type_code"] == "internal")
        .collect();
    let states: Vec<&str> = internal
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["done", "draft"],
        "the abandoned move stays a draft"
    );
    relay.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picking_a_delivery_uses_the_existing_lot_and_ships_what_was_scanned() {
    let sim = Sim::start("18").await;
    let ids = sim
        .seed(json!({
            "products": [
                {"barcode": WIDGET, "name": "Widget", "tracking": "lot"},
                {"barcode": GADGET, "name": "Gadget"}
            ],
            "lots": [{"product": WIDGET, "name": "LOT-7"}],
            "quants": [
                {"product": GADGET, "location": "WHSTOCK", "quantity": 5},
                {"product": WIDGET, "location": "WHSTOCK", "quantity": 4, "lot": "LOT-7"}
            ],
            "pickings": [{"name": "WH/OUT/00007", "type": "outgoing", "state": "assigned",
                "moves": [{"product": GADGET, "qty": 3}, {"product": WIDGET, "qty": 2}]}]
        }))
        .await;
    let relay = start_relay_with(&sim.url, "").await;
    let p = Operation::Pick;
    send(
        &relay,
        "WH01",
        vec![
            ev(1, "SC-03", scan(p, "WH/OUT/00007")),
            ev(2, "SC-03", scan(p, GADGET)),
            ev(3, "SC-03", scan(p, GADGET)),
            ev(4, "SC-03", scan(Operation::Ship, GADGET)),
            ev(5, "SC-03", gs1(p, WIDGET, "LOT-7", 2.0)),
            ev(6, "SC-03", scan(p, "O-BTN.validate")),
        ],
    )
    .await;
    settled(&relay, "WH01", 6).await;
    assert_all_applied(&relay, "WH01", 1..=6);
    let state = sim.state().await;
    let out = picking(&state, "WH/OUT/00007");
    assert_eq!(out["state"], "done");
    let lot_id = ids["lots"][format!("{WIDGET}/LOT-7")].clone();
    let widget = ids["products"][WIDGET].clone();
    let widget_lines: Vec<&Value> = rows(&state, "move_lines", "picking_id", &out["id"])
        .into_iter()
        .filter(|l| l["product_id"] == widget)
        .collect();
    assert_eq!(widget_lines.len(), 1, "{widget_lines:?}");
    assert_eq!(
        widget_lines[0]["lot_id"], lot_id,
        "the existing lot, not a new one"
    );
    assert_eq!(widget_lines[0]["quantity"], 2.0);
    assert_eq!(rows(&state, "lots", "name", &json!("LOT-7")).len(), 1);
    relay.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_picking_of_a_device_survives_a_relay_restart() {
    let sim = Sim::start("17").await;
    warehouse(&sim).await;
    let relay = start_relay_with(&sim.url, "").await;
    let r = Operation::Receive;
    send(
        &relay,
        "WH01",
        vec![
            ev(1, "SC-01", scan(r, "WH/IN/00013")),
            ev(2, "SC-01", scan(r, GADGET)),
        ],
    )
    .await;
    settled(&relay, "WH01", 2).await;
    let relay = relay.restart().await;
    send(
        &relay,
        "WH01",
        vec![
            ev(3, "SC-01", scan(r, GADGET)),
            ev(4, "SC-01", scan(r, "O-BTN.validate")),
        ],
    )
    .await;
    settled(&relay, "WH01", 4).await;
    assert_all_applied(&relay, "WH01", 1..=4);
    let state = sim.state().await;
    let p = picking(&state, "WH/IN/00013");
    assert_eq!(p["state"], "done");
    let picked: f64 = rows(&state, "move_lines", "picking_id", &p["id"])
        .iter()
        .filter(|l| l["picked"] == true)
        .map(|l| l["quantity"].as_f64().unwrap())
        .sum();
    assert_eq!(
        picked, 2.0,
        "the line's quantity continued from the durable account"
    );
    relay.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_validate_names_its_picking_in_reference() {
    let sim = Sim::start("17").await;
    warehouse(&sim).await;
    let relay = start_relay_with(&sim.url, "").await;
    let r = Operation::Receive;
    let mut validate = Scan {
        code: "O-BTN.validate".into(),
        symbology: Symbology::Code128,
        gs1: None,
        op: Some(r),
        qty: None,
        location: None,
        reference: Some("WH/IN/00013".into()),
    };
    let mut with_reference = validate.clone();
    with_reference.code = GADGET.into();
    with_reference.qty = Some(4.0);
    validate.qty = None;
    // A picking no device ever opened: nothing scanned, so Odoo validates its whole demand.
    sim.seed(
        json!({"pickings": [{"name": "WH/IN/00077", "type": "incoming", "state": "assigned",
        "moves": [{"product": GADGET, "qty": 2}]}]}),
    )
    .await;
    let mut untouched = validate.clone();
    untouched.reference = Some("WH/IN/00077".into());
    send(
        &relay,
        "WH01",
        vec![
            // A scanner that sends the picking with every scan, and a terminal validating it.
            ev(1, "SC-01", EventBody::Scan(with_reference)),
            ev(2, "TERMINAL-1", EventBody::Scan(validate)),
            ev(3, "TERMINAL-1", EventBody::Scan(untouched)),
        ],
    )
    .await;
    settled(&relay, "WH01", 3).await;
    assert_all_applied(&relay, "WH01", 1..=3);
    let state = sim.state().await;
    assert_eq!(picking(&state, "WH/IN/00013")["state"], "done");
    assert_eq!(picking(&state, "WH/IN/00077")["state"], "done");
    relay.stop().await;
    sim.stop().await;
}

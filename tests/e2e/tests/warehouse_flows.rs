//! The warehouse flows end to end through the real stack — scanners publishing on mosquitto or
//! writing on a serial pseudo-terminal, the agent process, the relay process (mTLS, redb inbox,
//! admin API) and the Odoo simulator process — asserting Odoo's final state through
//! `/__sim/state` (picking state, move line quantities, lots, backorders, shipping weight) and
//! that every published event has an outcome in the relay (`/v1/sites/<site>/events`):
//! - receipts with plain and GS1 codes in the JSON and text formats and the backorder choice per
//!   station (Odoo 17 over JSON-RPC, Odoo 19 over JSON-2);
//! - a delivery with a PLC scale weight from Kepware tag JSON on its shipping weight;
//! - a serial scanner (pty) receiving a picking;
//! - GS1 serials created on a receipt, an existing lot matched on a delivery;
//! - an unknown barcode dead-lettered, holding back only its own picking until the product is
//!   created and `scanbridge-relay dead-letters replay` applies the held scans in order;
//! - lost answers after commit (move line load, `button_validate`, the backorder wizard's
//!   `process`) with one effect each, and a relay SIGKILLed in the middle of a receipt.
//!
//! Each test runs its own world (`scanbridge_e2e::flows::FlowStack`) with a handful of events.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use scanbridge_e2e::flows::{
    backorders_of, demand_on, lines_of, picking, qty_on, rows, tags_topic, text_topic, FlowOptions,
    FlowStack, Probe, PtyScanner, SerialPort, TagMapping,
};
use scanbridge_e2e::process::StateDir;
use scanbridge_e2e::publisher::Publisher;
use scanbridge_e2e::scans::topic_for;
use serde_json::{json, Value};

/// Lot-tracked.
const WIDGET: &str = "4006381333931";
const GADGET: &str = "4006381333948";
const BOLT: &str = "4006381333955";
/// Not in Odoo until scenario 4 seeds it.
const SPROCKET: &str = "4006381333962";
/// FNC1 as scanners transmit it.
const GS: char = '\u{1d}';

/// Generous on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(60);

fn stations(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(d, o)| (d.to_string(), o.to_string()))
        .collect()
}

async fn start(label: &str, opts: FlowOptions, seed: Value) -> FlowStack {
    let dir = StateDir::temp(label).expect("state dir");
    FlowStack::start(dir, &opts, &seed).await.expect("stack up")
}

async fn publisher(stack: &FlowStack, id: &str) -> Publisher {
    Publisher::connect(stack.mosquitto.port(), id)
        .await
        .expect("publisher")
}

/// A canonical JSON scan from `device` (op from its station).
async fn scan_json(p: &mut Publisher, device: &str, body: Value) {
    let mut body = body;
    body["device"] = json!(device);
    p.publish(&topic_for(device), serde_json::to_vec(&body).unwrap())
        .await
        .unwrap();
}

async fn scan(p: &mut Publisher, device: &str, code: &str) {
    scan_json(p, device, json!({ "code": code })).await;
}

/// Seeding products again is idempotent by barcode: the answer gives their ids.
async fn product_ids(stack: &FlowStack, seed: &Value) -> Value {
    stack
        .seed(&json!({"products": seed["products"]}))
        .await
        .unwrap()
}

/// The product id seeded for `barcode`.
fn product(ids: &Value, barcode: &str) -> i64 {
    ids["products"][barcode]
        .as_i64()
        .unwrap_or_else(|| panic!("no id for {barcode} in {ids}"))
}

fn outcome_of(events: &[Value], seq: u64) -> (String, String) {
    let e = events
        .iter()
        .find(|e| e["seq"] == seq)
        .unwrap_or_else(|| panic!("no event {seq} in {events:#?}"));
    (
        e["outcome"].as_str().unwrap_or("").to_string(),
        e["outcome_detail"].as_str().unwrap_or("").to_string(),
    )
}

fn assert_all_applied(events: &[Value], n: usize) {
    assert_eq!(events.len(), n, "{events:#?}");
    for e in events {
        assert_eq!(
            e["outcome"], "applied",
            "event {} ({}) should be applied: {}",
            e["seq"], e["summary"], e["outcome_detail"]
        );
    }
}

/// Waits until `n` events are stored and every one is applied (held events are applied after a
/// replay, a moment after Odoo shows their effect).
async fn wait_all_applied(stack: &mut FlowStack, n: usize) -> Vec<Value> {
    let v = stack
        .wait_until(WAIT, &format!("{n} events applied"), Probe::Events, |v| {
            v.as_array()
                .is_some_and(|l| l.len() >= n && l.iter().all(|e| e["outcome"] == "applied"))
        })
        .await
        .unwrap();
    v.as_array().cloned().unwrap_or_default()
}

fn picked_qty(state: &Value, picking_id: &Value, product: i64, lot: Option<&str>) -> f64 {
    lines_of(state, picking_id)
        .into_iter()
        .filter(|(p, l, _, picked)| *p == product && *picked && lot.is_none_or(|w| l == w))
        .map(|(_, _, q, _)| q)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_scanned_over_mqtt_in_json_and_text_with_gs1_lots_are_done_with_a_backorder_only_where_the_station_wants_one(
) {
    receipts_with_backorder_per_station("17", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_receipts_work_on_odoo_19_over_json_2() {
    receipts_with_backorder_per_station("19", "api = \"json2\"\nversion = \"19\"\n").await;
}

/// Scenario 1 on Odoo `version` with the relay's extra `[odoo]` keys `odoo_keys`.
async fn receipts_with_backorder_per_station(version: &str, odoo_keys: &str) {
    let seed = json!({
        "products": [
            {"barcode": WIDGET, "name": "Widget", "tracking": "lot"},
            {"barcode": GADGET, "name": "Gadget"},
            {"barcode": BOLT, "name": "Bolt"}
        ],
        "pickings": [
            {"name": "WH/IN/00012", "type": "incoming", "state": "assigned",
             "moves": [{"product": WIDGET, "qty": 10}, {"product": GADGET, "qty": 5}]},
            {"name": "WH/IN/00013", "type": "incoming", "state": "assigned",
             "moves": [{"product": GADGET, "qty": 4}, {"product": BOLT, "qty": 2}]}
        ]
    });
    let opts = FlowOptions {
        stations: stations(&[("SC-01", "receive"), ("SC-02", "receive")]),
        backorder: vec![("SC-01".into(), true), ("SC-02".into(), false)],
        odoo_version: version.into(),
        odoo_keys: odoo_keys.into(),
        ..FlowOptions::default()
    };
    let mut stack = start(&format!("flows-receipt-{version}"), opts, seed.clone()).await;
    let ids = product_ids(&stack, &seed).await;
    let (widget, gadget, bolt) = (
        product(&ids, WIDGET),
        product(&ids, GADGET),
        product(&ids, BOLT),
    );

    let mut p = publisher(&stack, "scanner-receipt").await;
    // SC-01: a short receipt, station backorder = true.
    scan(&mut p, "SC-01", "WH/IN/00012").await;
    scan(&mut p, "SC-01", GADGET).await;
    scan(&mut p, "SC-01", GADGET).await;
    // GS1-128 with AIM ]C1 in the JSON code: GTIN-14, expiry, lot, count 6.
    scan(
        &mut p,
        "SC-01",
        &format!("]C1010{WIDGET}1727123110LOT-A{GS}306"),
    )
    .await;
    // The same label type as a plain-text scanner bridge sends it: lot LOT-B, count 4.
    p.publish(
        &text_topic("SC-01"),
        format!("]C1010{WIDGET}1727123110LOT-B{GS}304\r\n").into_bytes(),
    )
    .await
    .unwrap();
    scan(&mut p, "SC-01", "O-BTN.validate").await;
    // SC-02: a short receipt, station backorder = false.
    scan(&mut p, "SC-02", "WH/IN/00013").await;
    scan_json(&mut p, "SC-02", json!({"code": GADGET, "qty": 3})).await;
    scan(&mut p, "SC-02", "O-BTN.validate").await;
    p.wait_all_acked(WAIT).await.unwrap();

    let events = stack.wait_outcomes(9, WAIT).await.unwrap();
    assert_all_applied(&events, 9);
    let state = stack.state().await.unwrap();

    if odoo_keys.contains("json2") {
        assert!(
            state["json2_total"].as_u64().unwrap_or(0) > 0,
            "the relay spoke JSON-2: {}",
            state["json2_total"]
        );
    }
    let r12 = picking(&state, "WH/IN/00012").unwrap().clone();
    assert_eq!(r12["state"], "done", "{r12}");
    let id12 = r12["id"].clone();
    assert_eq!(picked_qty(&state, &id12, widget, Some("LOT-A")), 6.0);
    assert_eq!(picked_qty(&state, &id12, widget, Some("LOT-B")), 4.0);
    assert_eq!(picked_qty(&state, &id12, gadget, None), 2.0);
    assert_eq!(
        qty_on(&state, &id12, gadget, None),
        2.0,
        "unpicked lines dropped"
    );
    let lots: Vec<&str> = state["lots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["product_id"] == widget)
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        lots,
        ["LOT-A", "LOT-B"],
        "lots created from the GS1 AI (10)"
    );
    let bo = backorders_of(&state, &id12);
    assert_eq!(bo.len(), 1, "SC-01 creates a backorder: {bo:?}");
    assert_eq!(demand_on(&state, &bo[0]["id"], gadget), 3.0, "the rest");
    assert_eq!(
        demand_on(&state, &bo[0]["id"], widget),
        0.0,
        "widget complete"
    );
    assert_eq!(bo[0]["state"], "assigned");

    let r13 = picking(&state, "WH/IN/00013").unwrap().clone();
    assert_eq!(r13["state"], "done", "{r13}");
    let id13 = r13["id"].clone();
    assert_eq!(picked_qty(&state, &id13, gadget, None), 3.0);
    assert_eq!(picked_qty(&state, &id13, bolt, None), 0.0);
    assert!(
        backorders_of(&state, &id13).is_empty(),
        "SC-02 says no backorder"
    );
    stack.ensure_all_running().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_picked_and_shipped_with_the_plc_scale_weight_from_kepware_on_its_shipping_weight(
) {
    let seed = json!({
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
             "partner": "Azure Interior", "origin": "SO042",
             "moves": [{"product": GADGET, "qty": 4}, {"product": BOLT, "qty": 2}]}
        ]
    });
    let opts = FlowOptions {
        stations: stations(&[("SC-03", "pick")]),
        tags: vec![TagMapping {
            id: "Channel1.Scale1.Weight".into(),
            tag: "scale1.weight".into(),
            device: "SCALE-1".into(),
            target_device: "SC-03".into(),
            field: "shipping_weight".into(),
        }],
        ..FlowOptions::default()
    };
    let mut stack = start("flows-ship", opts, seed.clone()).await;
    let ids = product_ids(&stack, &seed).await;
    let (gadget, bolt) = (product(&ids, GADGET), product(&ids, BOLT));
    let ready = stack.state().await.unwrap();
    assert_eq!(
        picking(&ready, "WH/OUT/00007").unwrap()["state"],
        "assigned",
        "the delivery is reserved from WH/Stock"
    );

    let mut p = publisher(&stack, "scanner-ship").await;
    scan(&mut p, "SC-03", "WH/OUT/00007").await;
    scan_json(&mut p, "SC-03", json!({"code": GADGET, "qty": 4})).await;
    scan(&mut p, "SC-03", BOLT).await;
    // The parcel goes on the scale after the last item: Kepware's IoT Gateway publishes it.
    let now_ms = 1_700_000_000_000u64;
    p.publish(
        &tags_topic("line1"),
        serde_json::to_vec(&json!({
            "timestamp": now_ms,
            "values": [{"id": "Channel1.Scale1.Weight", "v": 3.75, "q": true, "t": now_ms}]
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    scan(&mut p, "SC-03", "O-BTN.validate").await;
    p.wait_all_acked(WAIT).await.unwrap();

    let events = stack.wait_outcomes(5, WAIT).await.unwrap();
    assert_all_applied(&events, 5);
    let reading = &events[3];
    assert_eq!(reading["kind"], "reading", "{reading}");
    assert_eq!(reading["device"], "SCALE-1", "{reading}");
    let state = stack.state().await.unwrap();
    let out = picking(&state, "WH/OUT/00007").unwrap().clone();
    assert_eq!(out["state"], "done", "{out}");
    assert_eq!(
        out["shipping_weight"], 3.75,
        "the scale's weight, not the computed 4 x 0.5 + 1 x 0.2: {out}"
    );
    let id = out["id"].clone();
    assert_eq!(picked_qty(&state, &id, gadget, None), 4.0);
    assert_eq!(picked_qty(&state, &id, bolt, None), 1.0);
    let bo = backorders_of(&state, &id);
    assert_eq!(bo.len(), 1, "station default: backorder for the short bolt");
    assert_eq!(demand_on(&state, &bo[0]["id"], bolt), 1.0);
    assert_eq!(demand_on(&state, &bo[0]["id"], gadget), 0.0);
    stack.ensure_all_running().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_from_a_serial_scanner_on_a_pseudo_terminal_receive_a_picking_in_odoo() {
    let seed = json!({
        "products": [{"barcode": GADGET, "name": "Gadget"}],
        "pickings": [
            {"name": "WH/IN/00020", "type": "incoming", "state": "assigned",
             "moves": [{"product": GADGET, "qty": 3}]}
        ]
    });
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("usb-Datalogic_QD2430-if00");
    let mut scanner = PtyScanner::plug(&link).unwrap();
    let opts = FlowOptions {
        stations: stations(&[("SC-07", "receive")]),
        serial: vec![SerialPort {
            name: "dock".into(),
            path: scanner.link().to_path_buf(),
            device: "SC-07".into(),
        }],
        ..FlowOptions::default()
    };
    let mut stack = start("flows-serial", opts, seed.clone()).await;
    let ids = product_ids(&stack, &seed).await;
    let gadget = product(&ids, GADGET);
    // The agent puts the tty in raw mode when it opens it: write only once it has.
    stack.wait_serial_up("dock", WAIT).await.unwrap();
    scanner.send(b"WH/IN/00020\r").unwrap();
    // EAN-13 with the AIM identifier ]E0, as the scanner is configured to send.
    scanner.send(format!("]E0{GADGET}\r").as_bytes()).unwrap();
    // A GS1-128 case label: GTIN-14 and a count of 2 (AI 30).
    scanner
        .send(format!("]C1010{GADGET}302\r").as_bytes())
        .unwrap();
    scanner.send(b"O-BTN.validate\r").unwrap();

    let events = stack.wait_outcomes(4, WAIT).await.unwrap();
    assert_all_applied(&events, 4);
    for e in &events {
        assert_eq!(e["source"], "serial dock", "{e}");
        assert_eq!(e["device"], "SC-07", "{e}");
    }
    let state = stack.state().await.unwrap();
    let r = picking(&state, "WH/IN/00020").unwrap().clone();
    assert_eq!(r["state"], "done", "{r}");
    assert_eq!(picked_qty(&state, &r["id"], gadget, None), 3.0);
    assert!(backorders_of(&state, &r["id"]).is_empty(), "full demand");
    stack.ensure_all_running().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_barcode_is_dead_lettered_holds_back_only_its_picking_and_applies_in_order_after_seeding_and_a_cli_replay(
) {
    let seed = json!({
        "products": [{"barcode": GADGET, "name": "Gadget"}],
        "pickings": [
            {"name": "WH/IN/00030", "type": "incoming", "state": "assigned",
             "moves": [{"product": GADGET, "qty": 2}]},
            {"name": "WH/IN/00031", "type": "incoming", "state": "assigned",
             "moves": [{"product": GADGET, "qty": 1}]},
            {"name": "WH/IN/00032", "type": "incoming", "state": "assigned",
             "moves": [{"product": GADGET, "qty": 1}]}
        ]
    });
    let opts = FlowOptions {
        stations: stations(&[("SC-04", "receive"), ("SC-05", "receive")]),
        ..FlowOptions::default()
    };
    let mut stack = start("flows-dead", opts, seed.clone()).await;
    let ids = product_ids(&stack, &seed).await;
    let gadget = product(&ids, GADGET);

    let mut p = publisher(&stack, "scanner-dead").await;
    scan(&mut p, "SC-04", "WH/IN/00030").await;
    scan(&mut p, "SC-04", SPROCKET).await; // not in Odoo yet
    scan(&mut p, "SC-05", "WH/IN/00031").await;
    scan(&mut p, "SC-04", GADGET).await;
    scan(&mut p, "SC-05", GADGET).await;
    scan(&mut p, "SC-04", GADGET).await;
    scan(&mut p, "SC-04", "O-BTN.validate").await;
    scan(&mut p, "SC-05", "O-BTN.validate").await;
    // The operator leaves the stuck receipt and works on the next one with the same scanner.
    scan(&mut p, "SC-04", "WH/IN/00032").await;
    scan(&mut p, "SC-04", GADGET).await;
    scan(&mut p, "SC-04", "O-BTN.validate").await;
    p.wait_all_acked(WAIT).await.unwrap();

    let events = stack.wait_outcomes(11, WAIT).await.unwrap();
    let dead = stack.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let dead_seq = dead[0]["seq"].as_u64().unwrap();
    assert!(
        dead[0]["reason"].as_str().unwrap().contains(SPROCKET),
        "the reason names the barcode: {}",
        dead[0]["reason"]
    );
    assert_eq!(dead[0]["document"], "WH/IN/00030", "{}", dead[0]);
    assert_eq!(dead[0]["state"], "open");
    let (outcome, _) = outcome_of(&events, dead_seq);
    assert_eq!(outcome, "dead_lettered");
    let next_open = events
        .iter()
        .find(|e| e["summary"].as_str().unwrap().ends_with("WH/IN/00032"))
        .unwrap()["seq"]
        .as_u64()
        .unwrap();
    for e in &events {
        let seq = e["seq"].as_u64().unwrap();
        let (outcome, detail) = outcome_of(&events, seq);
        match (e["device"].as_str().unwrap(), seq) {
            ("SC-04", s) if s >= next_open => {
                assert_eq!(outcome, "applied", "the device's next picking goes on: {e}")
            }
            ("SC-04", s) if s > dead_seq => {
                assert_eq!(outcome, "held", "{e}");
                assert!(detail.contains("WH/IN/00030"), "{detail}");
            }
            ("SC-04", s) if s < dead_seq => assert_eq!(outcome, "applied", "{e}"),
            ("SC-05", _) => assert_eq!(outcome, "applied", "the other picking goes on: {e}"),
            _ => assert_eq!(seq, dead_seq),
        }
    }
    let state = stack.state().await.unwrap();
    let other = picking(&state, "WH/IN/00031").unwrap().clone();
    assert_eq!(other["state"], "done", "{other}");
    assert_eq!(picked_qty(&state, &other["id"], gadget, None), 1.0);
    let next = picking(&state, "WH/IN/00032").unwrap().clone();
    assert_eq!(next["state"], "done", "{next}");
    assert_eq!(picked_qty(&state, &next["id"], gadget, None), 1.0);
    let held = picking(&state, "WH/IN/00030").unwrap().clone();
    assert_eq!(held["state"], "assigned", "{held}");
    assert_eq!(
        picked_qty(&state, &held["id"], gadget, None),
        0.0,
        "nothing of the held scans reached Odoo"
    );

    // Central IT creates the product in Odoo, then replays the dead letter with the CLI.
    let ids = stack
        .seed(&json!({"products": [{"barcode": SPROCKET, "name": "Sprocket"}]}))
        .await
        .unwrap();
    let sprocket = product(&ids, SPROCKET);
    let said = stack.replay_with_cli(dead_seq).await.unwrap();
    assert!(said.contains(&format!("WH01/{dead_seq}")), "{said}");
    let state = stack
        .wait_picking_state("WH/IN/00030", "done", WAIT)
        .await
        .unwrap();
    let events = wait_all_applied(&mut stack, 11).await;
    assert_all_applied(&events, 11);
    let r = picking(&state, "WH/IN/00030").unwrap().clone();
    assert_eq!(picked_qty(&state, &r["id"], sprocket, None), 1.0);
    assert_eq!(picked_qty(&state, &r["id"], gadget, None), 2.0);
    assert!(
        backorders_of(&state, &r["id"]).is_empty(),
        "validated after both gadget scans (in order), so nothing was short"
    );
    let next = picking(&state, "WH/IN/00032").unwrap();
    assert_eq!(
        picked_qty(&state, &next["id"], gadget, None),
        1.0,
        "the replayed scans went to their own picking, not the device's current one"
    );
    let dead = stack.dead_letters().await.unwrap();
    assert_eq!(dead[0]["state"], "resolved", "{dead:#?}");
    stack.ensure_all_running().unwrap();
}

/// Odoo's count of object calls `model.method` so far.
fn calls(state: &Value, method: &str) -> u64 {
    state["calls"][method].as_u64().unwrap_or(0)
}

/// Slows every Odoo call down (3 s, room for a loaded machine to notice), waits until `method` has been called once more than now (the
/// call is then in flight), then arms one drop-after-commit for the call after it and removes
/// the latency.
async fn drop_the_call_after(stack: &mut FlowStack, method: &str) {
    stack.faults(&json!({"latency_ms": 3000})).await.unwrap();
    let before = calls(&stack.state().await.unwrap(), method);
    let m = method.to_string();
    stack
        .wait_until(
            WAIT,
            &format!("the relay to call {method}"),
            Probe::State,
            move |s| calls(s, &m) > before,
        )
        .await
        .unwrap();
    stack
        .faults(&json!({"drop_after_commit_next": 1, "latency_ms": 0}))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_whose_line_write_and_validate_lose_their_answers_after_commit_has_one_effect_each(
) {
    let seed = json!({
        "products": [
            {"barcode": GADGET, "name": "Gadget"},
            {"barcode": BOLT, "name": "Bolt"}
        ],
        "pickings": [
            {"name": "WH/IN/00040", "type": "incoming", "state": "assigned",
             "moves": [{"product": GADGET, "qty": 5}, {"product": BOLT, "qty": 2}]},
            {"name": "WH/IN/00041", "type": "incoming", "state": "assigned",
             "moves": [{"product": GADGET, "qty": 3}]}
        ]
    });
    let opts = FlowOptions {
        stations: stations(&[("SC-06", "receive")]),
        backorder: vec![("SC-06".into(), true)],
        ..FlowOptions::default()
    };
    let mut stack = start("flows-once", opts, seed.clone()).await;
    let ids = product_ids(&stack, &seed).await;
    let (gadget, bolt) = (product(&ids, GADGET), product(&ids, BOLT));

    let mut p = publisher(&stack, "scanner-once").await;
    scan(&mut p, "SC-06", "WH/IN/00040").await;
    scan(&mut p, "SC-06", GADGET).await;
    wait_all_applied(&mut stack, 2).await;

    // The picking and the product are resolved and cached: the next scan's first Odoo call is
    // the move line load. Odoo commits it and the answer is lost.
    let loads_before = calls(&stack.state().await.unwrap(), "stock.move.line.load");
    stack
        .faults(&json!({"drop_after_commit_next": 1}))
        .await
        .unwrap();
    scan(&mut p, "SC-06", GADGET).await;
    wait_all_applied(&mut stack, 3).await;
    let state = stack.state().await.unwrap();
    assert_eq!(
        calls(&state, "stock.move.line.load") - loads_before,
        2,
        "the lost load was sent again"
    );
    let id = picking(&state, "WH/IN/00040").unwrap()["id"].clone();
    assert_eq!(
        picked_qty(&state, &id, gadget, None),
        2.0,
        "two scans, one effect each: {:?}",
        lines_of(&state, &id)
    );

    // Validate a short receipt: button_validate commits the picked flags and answers with the
    // backorder wizard, and that answer is lost.
    scan(&mut p, "SC-06", "O-BTN.validate").await;
    p.wait_all_acked(WAIT).await.unwrap();
    drop_the_call_after(&mut stack, "stock.picking.read").await;
    let events = wait_all_applied(&mut stack, 4).await;
    assert_all_applied(&events, 4);
    let state = stack.state().await.unwrap();
    assert_eq!(
        calls(&state, "stock.picking.button_validate"),
        2,
        "the lost button_validate was retried"
    );
    let r = picking(&state, "WH/IN/00040").unwrap().clone();
    assert_eq!(r["state"], "done", "{r}");
    assert_eq!(picked_qty(&state, &r["id"], gadget, None), 2.0);
    assert_eq!(picked_qty(&state, &r["id"], bolt, None), 0.0);
    let bo = backorders_of(&state, &r["id"]);
    assert_eq!(bo.len(), 1, "one backorder, not two: {bo:#?}");
    assert_eq!(demand_on(&state, &bo[0]["id"], gadget), 3.0);
    assert_eq!(demand_on(&state, &bo[0]["id"], bolt), 2.0);

    // Another short receipt: this time the wizard's `process` (which validates and creates the
    // backorder) commits and its answer is lost.
    scan(&mut p, "SC-06", "WH/IN/00041").await;
    scan(&mut p, "SC-06", GADGET).await;
    wait_all_applied(&mut stack, 6).await;
    let validates_before = calls(
        &stack.state().await.unwrap(),
        "stock.picking.button_validate",
    );
    scan(&mut p, "SC-06", "O-BTN.validate").await;
    p.wait_all_acked(WAIT).await.unwrap();
    drop_the_call_after(&mut stack, "stock.backorder.confirmation.create").await;
    let events = wait_all_applied(&mut stack, 7).await;
    assert_all_applied(&events, 7);
    let state = stack.state().await.unwrap();
    assert_eq!(
        calls(&state, "stock.picking.button_validate") - validates_before,
        1,
        "the retry found the picking done and did not validate again"
    );
    assert_eq!(
        state["faults"]["drop_after_commit_next"], 0,
        "the armed drop was spent (on the wizard's process): {}",
        state["faults"]
    );
    assert_eq!(calls(&state, "stock.backorder.confirmation.process"), 2);
    let r = picking(&state, "WH/IN/00041").unwrap().clone();
    assert_eq!(r["state"], "done", "{r}");
    assert_eq!(picked_qty(&state, &r["id"], gadget, None), 1.0);
    let bo = backorders_of(&state, &r["id"]);
    assert_eq!(bo.len(), 1, "one backorder, not two: {bo:#?}");
    assert_eq!(demand_on(&state, &bo[0]["id"], gadget), 2.0);
    stack.ensure_all_running().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serials_are_created_on_a_receipt_and_an_existing_lot_is_matched_on_a_delivery() {
    const SERIALIZED: &str = BOLT;
    let seed = json!({
        "products": [
            {"barcode": WIDGET, "name": "Widget", "tracking": "lot"},
            {"barcode": SERIALIZED, "name": "Drill", "tracking": "serial"}
        ],
        "quants": [{"product": WIDGET, "location": "WHSTOCK", "quantity": 5, "lot": "LOT-X"}],
        "pickings": [
            {"name": "WH/IN/00050", "type": "incoming", "state": "assigned",
             "moves": [{"product": SERIALIZED, "qty": 2}]},
            {"name": "WH/OUT/00051", "type": "outgoing", "state": "assigned",
             "moves": [{"product": WIDGET, "qty": 3}]}
        ]
    });
    let opts = FlowOptions {
        stations: stations(&[("SC-08", "receive"), ("SC-09", "ship")]),
        ..FlowOptions::default()
    };
    let mut stack = start("flows-lots", opts, seed.clone()).await;
    let ids = product_ids(&stack, &seed).await;
    let (widget, drill) = (product(&ids, WIDGET), product(&ids, SERIALIZED));
    let before = stack.state().await.unwrap();
    let lot_x = rows(&before, "lots", "name", &json!("LOT-X"))[0]["id"].clone();

    let mut p = publisher(&stack, "scanner-lots").await;
    scan(&mut p, "SC-08", "WH/IN/00050").await;
    for sn in ["SN-001", "SN-002"] {
        // GS1 DataMatrix with AIM ]d2: GTIN-14 and serial (AI 21).
        scan(&mut p, "SC-08", &format!("]d2010{SERIALIZED}21{sn}")).await;
    }
    scan(&mut p, "SC-08", "O-BTN.validate").await;
    scan(&mut p, "SC-09", "WH/OUT/00051").await;
    scan(&mut p, "SC-09", &format!("]C1010{WIDGET}10LOT-X{GS}303")).await;
    scan(&mut p, "SC-09", "O-BTN.validate").await;
    p.wait_all_acked(WAIT).await.unwrap();

    let events = stack.wait_outcomes(7, WAIT).await.unwrap();
    assert_all_applied(&events, 7);
    let state = stack.state().await.unwrap();
    let r = picking(&state, "WH/IN/00050").unwrap().clone();
    assert_eq!(r["state"], "done", "{r}");
    let mut serials: Vec<(String, f64)> = lines_of(&state, &r["id"])
        .into_iter()
        .filter(|(p, _, _, picked)| *p == drill && *picked)
        .map(|(_, lot, q, _)| (lot, q))
        .collect();
    serials.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        serials,
        [("SN-001".to_string(), 1.0), ("SN-002".to_string(), 1.0)],
        "one line per serial"
    );
    for sn in ["SN-001", "SN-002"] {
        let lot = rows(&state, "lots", "name", &json!(sn));
        assert_eq!(lot.len(), 1, "serial {sn} created once: {lot:?}");
        assert_eq!(lot[0]["product_id"], drill);
    }
    let d = picking(&state, "WH/OUT/00051").unwrap().clone();
    assert_eq!(d["state"], "done", "{d}");
    let picked: Vec<&Value> = rows(&state, "move_lines", "picking_id", &d["id"])
        .into_iter()
        .filter(|l| l["product_id"] == widget && l["picked"] == true)
        .collect();
    assert_eq!(picked.len(), 1, "{picked:?}");
    assert_eq!(picked[0]["quantity"], 3.0);
    assert_eq!(
        picked[0]["lot_id"], lot_x,
        "the existing lot, not a new one"
    );
    assert_eq!(
        rows(&state, "lots", "name", &json!("LOT-X")).len(),
        1,
        "no second LOT-X"
    );
    stack.ensure_all_running().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_in_the_middle_of_a_receipt_keeps_the_open_picking_and_finishes_it_once() {
    let seed = json!({
        "products": [{"barcode": GADGET, "name": "Gadget"}],
        "pickings": [
            {"name": "WH/IN/00060", "type": "incoming", "state": "assigned",
             "moves": [{"product": GADGET, "qty": 3}]}
        ]
    });
    let opts = FlowOptions {
        stations: stations(&[("SC-10", "receive")]),
        ..FlowOptions::default()
    };
    let mut stack = start("flows-restart", opts, seed.clone()).await;
    let ids = product_ids(&stack, &seed).await;
    let gadget = product(&ids, GADGET);

    let mut p = publisher(&stack, "scanner-restart").await;
    scan(&mut p, "SC-10", "WH/IN/00060").await;
    scan(&mut p, "SC-10", GADGET).await;
    wait_all_applied(&mut stack, 2).await;
    stack.kill_and_restart_relay().await.unwrap();
    // The device's open picking is in relay.redb: the next scans land on it.
    scan(&mut p, "SC-10", GADGET).await;
    scan(&mut p, "SC-10", GADGET).await;
    scan(&mut p, "SC-10", "O-BTN.validate").await;
    p.wait_all_acked(WAIT).await.unwrap();

    let events = wait_all_applied(&mut stack, 5).await;
    assert_all_applied(&events, 5);
    let state = stack.state().await.unwrap();
    let r = picking(&state, "WH/IN/00060").unwrap().clone();
    assert_eq!(r["state"], "done", "{r}");
    assert_eq!(picked_qty(&state, &r["id"], gadget, None), 3.0);
    assert!(backorders_of(&state, &r["id"]).is_empty());
    stack.ensure_all_running().unwrap();
}

//! A receipt end to end through every real part: a scanner publishes over MQTT to mosquitto, the
//! agent stores and forwards over mTLS, the relay opens the picking named by the scan, records
//! the scanned quantities on its move lines and validates it in the Odoo simulator when the
//! scanner sends Odoo's `O-BTN.validate` command barcode.

use std::time::{Duration, Instant};

use scanbridge_e2e::agent::Station;
use scanbridge_e2e::process::StateDir;
use scanbridge_e2e::publisher::Publisher;
use scanbridge_e2e::scans::{topic_for, ScanPayload};
use scanbridge_e2e::stack::{Stack, StackOptions};
use serde_json::{json, Value};

const GADGET: &str = "4006381333948";

fn scan(code: &str) -> Vec<u8> {
    ScanPayload {
        code: code.to_string(),
        device: Some("SC-09".into()),
        op: None,
        qty: None,
        location: None,
        symbology: None,
        captured_at: None,
        reference: None,
    }
    .to_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_scanned_over_mqtt_is_recorded_and_validated_in_odoo() {
    let dir = StateDir::temp("flows-receipt").expect("state dir");
    let options = StackOptions {
        stations: vec![Station {
            device: "SC-09".into(),
            op: "receive".into(),
            location: "WH-STOCK-A01".into(),
        }],
        ..StackOptions::default()
    };
    let mut stack = Stack::start(dir, &options).await.expect("chain up");
    let http = reqwest::Client::new();
    let seeded = http
        .post(format!("{}/__sim/seed", stack.sim.url()))
        .json(&json!({
            "products": [{"barcode": GADGET, "name": "Gadget"}],
            "pickings": [{"name": "WH/IN/00042", "type": "incoming", "state": "assigned",
                          "moves": [{"product": GADGET, "qty": 3}]}]
        }))
        .send()
        .await
        .expect("seed");
    assert!(
        seeded.status().is_success(),
        "seed: {}",
        seeded.text().await.unwrap_or_default()
    );

    let mut publisher = Publisher::connect(stack.mosquitto.port(), "scanner-sc09")
        .await
        .expect("publisher");
    let topic = topic_for("SC-09");
    for code in ["WH/IN/00042", GADGET, GADGET, GADGET, "O-BTN.validate"] {
        publisher
            .publish(&topic, scan(code))
            .await
            .expect("publish");
    }
    publisher
        .wait_all_acked(Duration::from_secs(30))
        .await
        .expect("broker acked");

    let deadline = Instant::now() + Duration::from_secs(120);
    let picking = loop {
        let state: Value = http
            .get(format!("{}/__sim/state", stack.sim.url()))
            .send()
            .await
            .expect("state")
            .json()
            .await
            .expect("state json");
        let picking = state["pickings"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "WH/IN/00042")
            .cloned()
            .expect("seeded picking");
        if picking["state"] == "done" {
            let lines: Vec<Value> = state["move_lines"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|l| l["picking_id"] == picking["id"] && l["picked"] == true)
                .cloned()
                .collect();
            let qty: f64 = lines.iter().filter_map(|l| l["quantity"].as_f64()).sum();
            assert_eq!(qty, 3.0, "three scans, three units: {lines:?}");
            break picking;
        }
        assert!(
            Instant::now() < deadline,
            "picking not validated in time: {picking}"
        );
        stack.ensure_all_running().expect("processes alive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(picking["state"], "done");
    publisher.disconnect().await;
}

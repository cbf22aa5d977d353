//! Upgrade in place: a state directory written by the relay before the inbox stored one row per
//! batch (one `inbox` row per event) is read by this relay, its events reach Odoo (the Odoo
//! simulator) exactly once and in order, and the agent re-sending them after the upgrade is
//! acknowledged as duplicates without applying anything again.

#![allow(clippy::unwrap_used)]

mod common;
mod flows_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{client, post, start_with_config, Harness};
use flows_support::{rows, Sim, KEY};
use redb::{Database, Durability, TableDefinition};
use scanbridge_protocol::{decode, encode, Ack, Batch, Event, EventBody, Operation, Scan, Source};
use scanbridge_relay::inbox::Outcome;
use serde_json::{json, Value};

const GADGET: &str = "4006381333948";
const SITE: &str = "WH01";
const PICKINGS: [&str; 3] = ["WH/IN/30001", "WH/IN/30002", "WH/IN/30003"];

/// The previous release's tables, exactly as it declared them.
const OLD_INBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("inbox");
const OLD_SITE_HIGHEST: TableDefinition<&str, u64> = TableDefinition::new("site_highest");
const OLD_COUNTERS: TableDefinition<(&str, &str), u64> = TableDefinition::new("counters");
const OLD_INTAKE_LOG: TableDefinition<(&str, u64), (i64, u64)> = TableDefinition::new("intake_log");

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
            symbology: scanbridge_protocol::Symbology::Code128,
            gs1: None,
            op: Some(Operation::Receive),
            qty: None,
            location: None,
            reference: None,
        }),
    }
}

/// Receipt `n` (0-based): open the picking, three gadgets, validate; seqs `5n+1..=5n+5`.
fn receipt(n: usize) -> Vec<Event> {
    let first = 5 * n as u64 + 1;
    [PICKINGS[n], GADGET, GADGET, GADGET, "O-BTN.validate"]
        .iter()
        .enumerate()
        .map(|(i, code)| ev(first + i as u64, code))
        .collect()
}

/// Writes `state/relay.redb` as the previous release did after storing receipts 0 and 1 as
/// two batches (seqs 1..=10, nothing pushed yet): one postcard row per event in `inbox`.
fn write_old_store(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let db = Database::create(path).unwrap();
    let mut txn = db.begin_write().unwrap();
    txn.set_durability(Durability::Immediate);
    {
        let mut inbox = txn.open_table(OLD_INBOX).unwrap();
        let mut log = txn.open_table(OLD_INTAKE_LOG).unwrap();
        for n in 0..2 {
            let events = receipt(n);
            for e in &events {
                let bytes = postcard::to_allocvec(e).unwrap();
                inbox.insert((SITE, e.seq), bytes.as_slice()).unwrap();
            }
            log.insert(
                (SITE, events[0].seq),
                (1_700_000_000_000_000, events[4].seq),
            )
            .unwrap();
        }
        txn.open_table(OLD_SITE_HIGHEST)
            .unwrap()
            .insert(SITE, 10)
            .unwrap();
        txn.open_table(OLD_COUNTERS)
            .unwrap()
            .insert((SITE, "received"), 10)
            .unwrap();
    }
    txn.commit().unwrap();
}

/// A relay on a state directory that already holds the old store.
async fn start_on_old_store(odoo_url: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    scanbridge_relay::ca::init(
        &dir.path().join("ca"),
        &["localhost".into()],
        &["127.0.0.1".parse().unwrap()],
    )
    .unwrap();
    std::fs::write(dir.path().join("odoo-api-key"), format!("{KEY}\n")).unwrap();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\n[tls]\nserver_cert = \"ca/server.pem\"\nserver_key = \"ca/server.key\"\nclient_ca = \"ca/ca.pem\"\n[odoo]\nurl = \"{odoo_url}\"\ndatabase = \"scanbridge\"\nlogin = \"scanbridge\"\napi_key_file = \"odoo-api-key\"\ntimeout_secs = 5\n"
    );
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, text).unwrap();
    write_old_store(&dir.path().join("state").join("relay.redb"));
    start_with_config(Arc::new(dir), &path).await
}

fn applied_upto(relay: &Harness, last: u64) -> bool {
    (1..=last).all(|seq| {
        matches!(
            relay.inbox.outcome(SITE, seq),
            Ok(Some(Outcome::Applied { .. }))
        )
    })
}

/// Each picking's state and the quantity received on it.
fn receipts(state: &Value) -> Vec<(String, f64)> {
    PICKINGS
        .iter()
        .map(|name| {
            let p = rows(state, "pickings", "name", &json!(name))[0];
            let qty = rows(state, "move_lines", "picking_id", &p["id"])
                .iter()
                .map(|l| l["quantity"].as_f64().unwrap())
                .sum();
            (p["state"].as_str().unwrap().to_string(), qty)
        })
        .collect()
}

async fn send(relay: &Harness, events: Vec<Event>) -> Ack {
    let batch = Batch {
        site: SITE.into(),
        agent: "gw".into(),
        first_seq: events[0].seq,
        events,
        status: None,
    };
    let (status, body) = post(
        &client(&relay.bundle(SITE)),
        &relay.url(),
        encode(&batch).unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    decode(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stored_by_the_previous_release_reach_odoo_exactly_once_after_the_upgrade() {
    let sim = Sim::start("17").await;
    let moves: Vec<Value> = PICKINGS
        .iter()
        .map(|name| {
            json!({"name": name, "type": "incoming", "state": "assigned",
                   "moves": [{"product": GADGET, "qty": 3}]})
        })
        .collect();
    sim.seed(json!({"products": [{"barcode": GADGET, "name": "Gadget"}], "pickings": moves}))
        .await;
    let relay = start_on_old_store(&sim.url).await;
    common::eventually(
        Duration::from_secs(120),
        "the old store's events applied",
        || applied_upto(&relay, 10),
    )
    .await;
    let stats = relay.inbox.stats(SITE).unwrap();
    assert_eq!((stats.received, stats.cursor), (10, 11));
    let event = relay.inbox.event(SITE, 7).unwrap().expect("old event 7");
    assert_eq!(event.event.unwrap(), receipt(1)[1]);
    assert_eq!(event.stored_at, Some(1_700_000_000_000_000));

    // The agent did not see the old relay's Ack and sends both receipts again, overlapping the
    // next one: the old events are duplicates, only 11..=15 are new.
    let mut events = receipt(0);
    events.extend(receipt(1));
    assert_eq!(send(&relay, events).await.duplicates, 10);
    let mut events = receipt(1);
    events.extend(receipt(2));
    let ack = send(&relay, events).await;
    assert_eq!((ack.upto, ack.duplicates), (15, 5));
    // A restart on the migrated store changes nothing either.
    let relay = relay.restart().await;
    common::eventually(
        Duration::from_secs(120),
        "the third receipt applied",
        || applied_upto(&relay, 15),
    )
    .await;
    let state = sim.state().await;
    assert_eq!(
        receipts(&state),
        [
            ("done".to_string(), 3.0),
            ("done".to_string(), 3.0),
            ("done".to_string(), 3.0)
        ],
        "every receipt applied once"
    );
    let stats = relay.inbox.stats(SITE).unwrap();
    assert_eq!(
        (
            stats.received,
            stats.duplicates,
            stats.applied,
            stats.cursor
        ),
        (15, 15, 15, 16)
    );
    relay.stop().await;
    sim.stop().await;
}

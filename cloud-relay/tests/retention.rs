//! Retention through a real relay (in-process, real mTLS intake) and the Odoo simulator as a
//! process: finished events are pruned once old enough, an agent re-sending a pruned batch is
//! answered Ack and counted as duplicates without Odoo seeing anything twice, an open dead
//! letter keeps itself and everything after it (and its replay still works), and the watermark
//! survives a restart. "Old enough" is reached by calling the prune with a clock two days ahead
//! (`Inbox::prune_site` takes `now`), not by sleeping.

#![allow(clippy::unwrap_used)]

mod common;
mod flows_support;

use std::time::Duration;

use common::{client, post, Harness};
use flows_support::{rows, start_relay_with, Sim};
use scanbridge_protocol::{
    decode, encode, Ack, Batch, Event, EventBody, Operation, Scan, Symbology,
};
use scanbridge_relay::inbox::{DeadLetterState, Outcome, ReplayResult};
use serde_json::{json, Value};

const GADGET: &str = "4006381333948";
const NEW: &str = "4006381333955";
const DAY: i64 = 86_400 * 1_000_000;

fn ev(seq: u64, device: &str, code: &str) -> Event {
    common::device_event(
        seq,
        device,
        EventBody::Scan(Scan {
            code: code.into(),
            symbology: Symbology::Code128,
            gs1: None,
            op: Some(Operation::Receive),
            qty: None,
            location: None,
            reference: None,
        }),
    )
}

/// The enveloped batch exactly as an agent sends it (and re-sends it).
fn body(events: Vec<Event>) -> Vec<u8> {
    encode(&Batch {
        site: "WH01".into(),
        agent: "gw".into(),
        first_seq: events[0].seq,
        events,
        status: None,
    })
    .unwrap()
}

async fn send(relay: &Harness, body: &[u8]) -> Ack {
    let (status, ack) = post(&client(&relay.bundle("WH01")), &relay.url(), body.to_vec()).await;
    assert_eq!(status, 200);
    decode(&ack).unwrap()
}

async fn settled(relay: &Harness, upto: u64) {
    let inbox = relay.inbox.clone();
    common::eventually(Duration::from_secs(60), "all events settled", || {
        inbox
            .stats("WH01")
            .map(|s| s.cursor > upto)
            .unwrap_or(false)
    })
    .await;
}

/// Prunes WH01 with `[retention] keep_days = 1` as if it were two days from now.
fn prune_two_days_later(relay: &Harness) -> scanbridge_relay::inbox::retention::PrunePass {
    let now = scanbridge_relay::now_micros() + 2 * DAY;
    relay.inbox.prune_site("WH01", 1, now, &|| false).unwrap()
}

/// Object calls the simulator received, all models and methods together.
async fn odoo_calls(sim: &Sim) -> u64 {
    let state = sim.state().await;
    state["calls"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_u64)
        .sum()
}

/// Picked quantity on the move lines of picking `name`.
fn picked(state: &Value, name: &str) -> f64 {
    let p = rows(state, "pickings", "name", &json!(name))[0];
    rows(state, "move_lines", "picking_id", &p["id"])
        .iter()
        .filter(|l| l["picked"] == true && l["product_id"] != json!(false))
        .filter_map(|l| l["quantity"].as_f64())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_events_stay_applied_once_resends_are_duplicates_and_open_dead_letters_stay() {
    let sim = Sim::start("17").await;
    sim.seed(json!({
        "products": [{"barcode": GADGET, "name": "Gadget"}],
        "pickings": [
            {"name": "WH/IN/00012", "type": "incoming", "state": "assigned",
             "moves": [{"product": GADGET, "qty": 10}]},
            {"name": "WH/IN/00013", "type": "incoming", "state": "assigned",
             "moves": [{"product": GADGET, "qty": 10}]}
        ]
    }))
    .await;
    let relay = start_relay_with(
        &sim.url,
        "\n[retention]\nkeep_days = 1\ncheck_interval_secs = 1\n",
    )
    .await;

    // Batch A: applied. Batch B: a dead letter (unknown product) on WH/IN/00012, holding the
    // gadget scan after it. Batch C: applied on the other picking, after the dead letter.
    let a = body(vec![ev(1, "SC-02", "WH/IN/00013"), ev(2, "SC-02", GADGET)]);
    let b = body(vec![
        ev(3, "SC-01", "WH/IN/00012"),
        ev(4, "SC-01", NEW),
        ev(5, "SC-01", GADGET),
    ]);
    let c = body(vec![ev(6, "SC-02", GADGET)]);
    for batch in [&a, &b, &c] {
        send(&relay, batch).await;
    }
    settled(&relay, 6).await;
    assert_eq!(
        relay.inbox.dead_letter("WH01", 4).unwrap().unwrap().state,
        DeadLetterState::Open
    );
    assert!(matches!(
        relay.inbox.outcome("WH01", 5).unwrap(),
        Some(Outcome::Held { behind: 4, .. })
    ));
    assert_eq!(picked(&sim.state().await, "WH/IN/00013"), 2.0);

    // The relay's own loop (hourly in production, every second here) prunes nothing young.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(relay.inbox.pruned_through("WH01").unwrap(), None);

    // Two days later: batch A goes; the dead letter keeps its batch and everything after it.
    let pass = prune_two_days_later(&relay);
    assert_eq!((pass.rows, pass.events, pass.through), (1, 2, Some(2)));
    for seq in 1..=2 {
        assert!(relay.inbox.event("WH01", seq).unwrap().is_none());
        assert!(relay.inbox.outcome("WH01", seq).unwrap().is_none());
    }
    for seq in 3..=6 {
        assert!(relay.inbox.event("WH01", seq).unwrap().is_some(), "{seq}");
        assert!(relay.inbox.outcome("WH01", seq).unwrap().is_some(), "{seq}");
    }
    let trace = scanbridge_relay::admin::trace::trace_seq(&relay.inbox, "WH01", 1)
        .unwrap()
        .expect("a pruned event is known, not unknown");
    assert_eq!(trace.steps.len(), 1);
    assert_eq!(trace.steps[0].step, "pruned");
    assert!(
        trace.steps[0].detail.contains("pruned after 1 day "),
        "{:?}",
        trace.steps
    );
    assert!(
        scanbridge_relay::admin::trace::trace_seq(&relay.inbox, "WH01", 7)
            .unwrap()
            .is_none()
    );

    // The agent re-sends batch A (its delete was lost): Ack, all duplicates, nothing stored,
    // nothing sent to Odoo.
    let calls = odoo_calls(&sim).await;
    let before = relay.inbox.stats("WH01").unwrap();
    assert_eq!(
        send(&relay, &a).await,
        Ack {
            upto: 2,
            duplicates: 2
        }
    );
    let after = relay.inbox.stats("WH01").unwrap();
    assert_eq!(
        (
            after.received,
            after.duplicates,
            after.pruned,
            after.pruned_through
        ),
        (before.received, before.duplicates + 2, 2, Some(2))
    );
    assert!(relay.inbox.event("WH01", 1).unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        odoo_calls(&sim).await,
        calls,
        "Odoo saw nothing of the resend"
    );
    assert_eq!(
        picked(&sim.state().await, "WH/IN/00013"),
        2.0,
        "applied once"
    );

    // The open dead letter still replays after the prune.
    sim.seed(json!({"products": [{"barcode": NEW, "name": "New thing"}]}))
        .await;
    assert_eq!(
        relay.inbox.replay_dead_letter("WH01", 4).unwrap(),
        ReplayResult::Done {
            state: DeadLetterState::ReplayRequested,
            released: vec![5]
        }
    );
    let inbox = relay.inbox.clone();
    common::eventually(Duration::from_secs(60), "replay applied", || {
        [4, 5].iter().all(|&seq| {
            matches!(
                inbox.outcome("WH01", seq),
                Ok(Some(Outcome::Applied { .. }))
            )
        })
    })
    .await;
    assert_eq!(
        picked(&sim.state().await, "WH/IN/00012"),
        2.0,
        "NEW + gadget"
    );

    drop(inbox);
    // After a restart the watermark holds, and the rest can go now that it is finished.
    let relay = relay.restart().await;
    assert_eq!(relay.inbox.stats("WH01").unwrap().pruned_through, Some(2));
    assert_eq!(
        send(&relay, &a).await,
        Ack {
            upto: 2,
            duplicates: 2
        }
    );
    assert!(relay.inbox.event("WH01", 2).unwrap().is_none());
    let pass = prune_two_days_later(&relay);
    assert_eq!((pass.rows, pass.events, pass.through), (2, 4, Some(6)));
    assert!(relay.inbox.dead_letter_list("WH01").unwrap().is_empty());
    let why = scanbridge_relay::admin::dead::show_explained(&relay.inbox, "WH01", 4)
        .unwrap()
        .expect_err("the closed dead letter is pruned");
    assert!(why.contains("pruned by retention"), "{why}");
    let why = scanbridge_relay::admin::dead::show_explained(&relay.inbox, "WH01", 99)
        .unwrap()
        .expect_err("never was");
    assert!(why.contains("has no dead letter"), "{why}");
    let calls = odoo_calls(&sim).await;
    for (batch, upto, duplicates) in [(&a, 2, 2), (&b, 5, 3), (&c, 6, 1)] {
        assert_eq!(send(&relay, batch).await, Ack { upto, duplicates });
    }
    let b_more = body(vec![ev(6, "SC-02", GADGET), ev(7, "SC-02", GADGET)]);
    assert_eq!(
        send(&relay, &b_more).await,
        Ack {
            upto: 7,
            duplicates: 1
        }
    );
    settled(&relay, 7).await;
    let state = sim.state().await;
    assert_eq!(
        picked(&state, "WH/IN/00013"),
        3.0,
        "only the new seq 7 was added"
    );
    assert_eq!(picked(&state, "WH/IN/00012"), 2.0);
    assert!(odoo_calls(&sim).await > calls, "seq 7 reached Odoo");
    let stats = relay.inbox.stats("WH01").unwrap();
    assert_eq!((stats.received, stats.applied, stats.pruned), (7, 7, 6));
    relay.stop().await;
    sim.stop().await;
}

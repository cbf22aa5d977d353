//! What the scan-id dedupe costs the store: `commits` durable commits of `per` scans each into a
//! fresh store, without ids and then with a unique id per scan (UUID-like, or per-device
//! counters with `SEQ=1`), twice, alternated. Prints events/s, the file size and the ids held.
//!
//! `cargo run --release -p scanbridge-agent --example dedupe_cost -- 100 2000`
#![allow(clippy::unwrap_used)]
use scanbridge_agent::store::writer::commit_batch;
use scanbridge_agent::store::{IngestItem, Store};
use scanbridge_protocol::{Event, EventBody, Scan, Source, Symbology};
use std::time::Instant;

fn item(i: u64, id: bool) -> IngestItem {
    IngestItem {
        source: 0,
        token: i,
        event: Event {
            seq: 0,
            captured_at: 1,
            received_at: scanbridge_agent::now_micros(),
            source: Source::Mqtt {
                broker: "site".into(),
                topic: "scanbridge/SC-01/scan".into(),
            },
            device: format!("SC-{:02}", i % 20),
            body: EventBody::Scan(Scan {
                code: "4006381333931".into(),
                symbology: Symbology::Ean13,
                gs1: None,
                op: None,
                qty: Some(3.0),
                location: Some("WH-STOCK-A01".into()),
                reference: None,
            }),
        },
        mqtt: None,
        scan_id: id.then(|| {
            if std::env::var("SEQ").is_ok() {
                format!("SC-{:02}-{:08}", i % 20, i)
            } else {
                format!(
                    "3f2b8c1e-0d4a-4c1b-{:04x}-{:012x}",
                    i % 65536,
                    i.wrapping_mul(0x9e3779b97f4a7c15) >> 16
                )
            }
        }),
    }
}

fn run(id: bool, commits: u64, per: u64) -> (f64, u64, u64) {
    let dir = tempfile::tempdir_in("/work/main/target").unwrap();
    let store = Store::open(&dir.path().join("agent.redb"), 1 << 40).unwrap();
    let t = Instant::now();
    for c in 0..commits {
        let mut batch: Vec<IngestItem> = (0..per).map(|j| item(c * per + j, id)).collect();
        commit_batch(&store, &mut batch).unwrap();
    }
    let el = t.elapsed().as_secs_f64();
    let ids = store.scan_ids_len().unwrap();
    (((commits * per) as f64) / el, store.disk_used_bytes(), ids)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (commits, per) = (args[0], args[1]);
    for round in 0..2 {
        for id in [false, true] {
            let (eps, bytes, ids) = run(id, commits, per);
            println!("round {round} ids={id}: {eps:.0} events/s, file {bytes} bytes, {ids} ids");
        }
    }
}

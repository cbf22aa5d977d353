//! Writes the store fixture used by `agent/tests/store_upgrade.rs`: a store as this build lays
//! it out, with a backlog whose seqs do not start at 1, a quarantined event and MQTT dedupe
//! rows. Deterministic content (fixed times), so the test can compare every field.
//!
//! `cargo run -p scanbridge-agent --example store_fixture -- agent/tests/fixtures/store-v1/agent.redb`
//! (see `agent/tests/fixtures/README.md`: the committed file was made by the release with
//! schema 1, before schema 2 existed).

use scanbridge_agent::store::writer::{commit_batch, message_hash};
use scanbridge_agent::store::{IngestItem, MqttMark, Store};
use scanbridge_protocol::{Event, EventBody, Quarantined, Scan, Source, Symbology};

/// The events the fixture holds (seq is assigned at commit: 1..=10; 1..=3 are then deleted).
pub fn fixture_events() -> Vec<Event> {
    (1..=10u64)
        .map(|i| Event {
            seq: 0,
            captured_at: 1_790_000_000_000_000 + i as i64 * 1_000,
            received_at: 1_790_000_000_500_000 + i as i64 * 1_000,
            source: Source::Mqtt {
                broker: "site".into(),
                topic: "scanbridge/SC-01/scan".into(),
            },
            device: "SC-01".into(),
            body: if i == 7 {
                EventBody::Quarantined(Quarantined {
                    raw: b"\xff not json".to_vec(),
                    reason: "payload is not UTF-8".into(),
                })
            } else {
                EventBody::Scan(Scan {
                    code: format!("FIXTURE-{i}"),
                    symbology: Symbology::Code128,
                    gs1: None,
                    op: None,
                    qty: Some(i as f64),
                    location: Some("WH-STOCK-A01".into()),
                    reference: None,
                })
            },
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: store_fixture OUT.redb")?;
    let path = std::path::Path::new(&out);
    if path.exists() {
        return Err(format!("{out} exists; refusing to overwrite").into());
    }
    let store = Store::open(path, 1 << 30)?;
    let mut items: Vec<IngestItem> = fixture_events()
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let pkid = u16::try_from(i + 1).unwrap_or(u16::MAX);
            IngestItem {
                source: 0,
                token: i as u64,
                mqtt: Some(MqttMark {
                    broker: "site".into(),
                    pkid,
                    hash: message_hash("scanbridge/SC-01/scan", format!("{pkid}").as_bytes()),
                    dup: false,
                    retire: Vec::new(),
                    more_events: Vec::new(),
                }),
                event,
                scan_id: None,
            }
        })
        .collect();
    commit_batch(&store, &mut items)?;
    store.delete_upto_blocking(3)?;
    let s = store.stats();
    let rows = store.mqtt_inflight_len()?;
    drop(store);
    // Compacted, so the committed file stays small (redb preallocates).
    let mut db = redb::Database::create(path)?;
    while db.compact()? {}
    drop(db);
    println!(
        "wrote {out}: backlog {} events, next_seq {}, {} dedupe rows",
        s.backlog_events, s.next_seq, rows
    );
    Ok(())
}

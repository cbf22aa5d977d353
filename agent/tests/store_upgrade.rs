//! Store upgrade: the real agent binary opens a COMMITTED store file written by the release with
//! store schema 1 (`tests/fixtures/store-v1.redb`, see the README there), upgrades it in place,
//! and forwards its buffered events intact with their seqs; the next event continues the seqs.
//! A store from a newer, unknown schema is refused with a clear message and left untouched;
//! a store bound to another site is refused.
#![allow(clippy::unwrap_used)]

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use scanbridge_protocol::{EventBody, Source, Symbology};
use support::recording_relay::RecordingRelay;
use support::{Agent, AgentSetup};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-v1.redb");

/// A state dir holding a copy of the fixture as `agent.redb`.
fn state_with_fixture(dir: &Path) -> PathBuf {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let store = state.join("agent.redb");
    std::fs::copy(FIXTURE, &store).unwrap();
    store
}

fn meta(path: &Path, key: &str) -> Option<u64> {
    let db = redb::Database::open(path).unwrap();
    let tx = db.begin_read().unwrap();
    let t = tx
        .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
        .unwrap();
    let v = t.get(key).unwrap().map(|g| g.value());
    v
}

fn site_of(path: &Path) -> Option<String> {
    let db = redb::Database::open(path).unwrap();
    let tx = db.begin_read().unwrap();
    let t = tx
        .open_table(redb::TableDefinition::<&str, &str>::new("meta_text"))
        .ok()?;
    let v = t.get("site").unwrap().map(|g| g.value().to_string());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_schema_1_store_is_upgraded_and_its_backlog_forwarded_intact_with_its_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let store = state_with_fixture(dir.path());
    assert_eq!(
        meta(&store, "schema_version"),
        Some(1),
        "the fixture is a schema-1 file"
    );
    assert_eq!(meta(&store, "next_seq"), Some(11));

    let broker = common::Broker::start();
    let pki = common::Pki::new();
    let relay = RecordingRelay::start(&pki.ca_pem, &pki.server_cert_pem, &pki.server_key_pem).await;
    let setup = AgentSetup::new(&pki, &relay.url(), broker.port);
    let cfg = setup.write(dir.path());
    let agent = Agent::spawn(&cfg, &dir.path().join("agent.log"));

    let seen = relay.seen.clone();
    common::eventually(
        Duration::from_secs(60),
        "the fixture's backlog at the relay",
        || (seen.lock().unwrap().acked.len() == 7).then_some(()),
    )
    .await;
    {
        let s = seen.lock().unwrap();
        assert_eq!(
            s.acked.keys().copied().collect::<Vec<_>>(),
            (4..=10).collect::<Vec<u64>>()
        );
        for (seq, (e, times)) in &s.acked {
            assert_eq!(*times, 1, "seq {seq} acknowledged once");
            let i = *seq as i64;
            assert_eq!(e.seq, *seq);
            assert_eq!(e.captured_at, 1_790_000_000_000_000 + i * 1_000);
            assert_eq!(e.received_at, 1_790_000_000_500_000 + i * 1_000);
            assert_eq!(e.device, "SC-01");
            assert_eq!(
                e.source,
                Source::Mqtt {
                    broker: "site".into(),
                    topic: "scanbridge/SC-01/scan".into()
                }
            );
            match &e.body {
                EventBody::Quarantined(q) => {
                    assert_eq!(*seq, 7);
                    assert_eq!(q.raw, b"\xff not json");
                    assert_eq!(q.reason, "payload is not UTF-8");
                }
                EventBody::Scan(sc) => {
                    assert_eq!(sc.code, format!("FIXTURE-{seq}"));
                    assert_eq!(sc.symbology, Symbology::Code128);
                    assert_eq!(sc.qty, Some(*seq as f64));
                    assert_eq!(sc.location.as_deref(), Some("WH-STOCK-A01"));
                }
                other => panic!("seq {seq}: unexpected body {other:?}"),
            }
        }
    }
    // The next event continues the old store's seqs.
    common::publish_all(
        broker.port,
        "pub",
        "scanbridge/SC-01/scan",
        vec![br#"{"code":"AFTER-UPGRADE"}"#.to_vec()],
    )
    .await;
    common::eventually(Duration::from_secs(60), "seq 11 at the relay", || {
        seen.lock().unwrap().acked.contains_key(&11).then_some(())
    })
    .await;
    let log = agent.stop();
    assert!(
        log.contains("event store upgraded to the current layout"),
        "{log}"
    );
    assert_eq!(
        meta(&store, "schema_version"),
        Some(scanbridge_agent::store::SCHEMA_VERSION)
    );
    assert_eq!(site_of(&store).as_deref(), Some("WH01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_a_newer_agent_is_refused_with_a_clear_message_and_not_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = state_with_fixture(dir.path());
    {
        let db = redb::Database::open(&store).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(redb::TableDefinition::<&str, u64>::new("meta"))
            .unwrap()
            .insert("schema_version", 99)
            .unwrap();
        tx.commit().unwrap();
    }
    let before = std::fs::read(&store).unwrap();
    let pki = common::Pki::new();
    let setup = AgentSetup::new(&pki, "https://127.0.0.1:9", common::free_port());
    let cfg = setup.write(dir.path());
    let mut agent = Agent::spawn(&cfg, &dir.path().join("agent.log"));
    let status = tokio::task::spawn_blocking(move || {
        let s = agent.child.wait().unwrap();
        (s, agent)
    })
    .await
    .unwrap();
    let (exit, agent) = status;
    let log = agent.log_text();
    assert!(!exit.success(), "{log}");
    assert!(
        log.contains(&format!("event store was written by a newer agent (schema 99, this build knows up to {}); the file was left untouched", scanbridge_agent::store::SCHEMA_VERSION)),
        "{log}"
    );
    assert_eq!(std::fs::read(&store).unwrap(), before, "not a byte changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_bound_to_another_site_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = state_with_fixture(dir.path());
    scanbridge_agent::store::Store::open(&store, 1 << 30)
        .unwrap()
        .bind_site("WH09")
        .unwrap();
    let pki = common::Pki::new();
    let setup = AgentSetup::new(&pki, "https://127.0.0.1:9", common::free_port());
    let cfg = setup.write(dir.path());
    let mut agent = Agent::spawn(&cfg, &dir.path().join("agent.log"));
    let (exit, agent) = tokio::task::spawn_blocking(move || {
        let s = agent.child.wait().unwrap();
        (s, agent)
    })
    .await
    .unwrap();
    let log = agent.log_text();
    assert!(!exit.success(), "{log}");
    assert!(
        log.contains("holds events of site WH09, but the configuration says site WH01"),
        "{log}"
    );
}

//! Deletes after the relay's Ack are not fsynced (`DeleteDurability::Deferred`). These tests cut
//! the power under the store — a storage backend that keeps only what was synced — and check what
//! the store module doc promises: a lost delete brings the acknowledged events back (nothing
//! lost), `next_seq` is the one of the last durable commit (no seq reused), a later ingest commit
//! persists an earlier deferred delete, and the forwarder sends the returned events again, which
//! the relay acknowledges as events it already holds.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::relay::FakeRelay;
use scanbridge_agent::forwarder::{Forwarder, ForwarderConfig};
use scanbridge_agent::sources::Health;
use scanbridge_agent::status::StatusSource;
use scanbridge_agent::store::writer::commit_batch;
use scanbridge_agent::store::{DeleteDurability, IngestItem, Opener, Store};
use scanbridge_agent::tls;
use scanbridge_protocol::{Event, EventBody, Scan, Source, Symbology};
use tokio_util::sync::CancellationToken;

/// An in-memory disk: `live` is what the process wrote, `synced` what survived the last
/// `sync_data` — all that is left after a power cut.
#[derive(Debug, Clone, Default)]
struct PowerCutDisk {
    live: Arc<Mutex<Vec<u8>>>,
    synced: Arc<Mutex<Vec<u8>>>,
}

impl PowerCutDisk {
    /// The disk as found after a power cut now: only the synced bytes.
    fn after_power_cut(&self) -> PowerCutDisk {
        let synced = self.synced.lock().unwrap().clone();
        PowerCutDisk {
            live: Arc::new(Mutex::new(synced.clone())),
            synced: Arc::new(Mutex::new(synced)),
        }
    }
}

impl redb::StorageBackend for PowerCutDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.live.lock().unwrap().len() as u64)
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        let live = self.live.lock().unwrap();
        let start = usize::try_from(offset).unwrap();
        Ok(live[start..start + len].to_vec())
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.live
            .lock()
            .unwrap()
            .resize(usize::try_from(len).unwrap(), 0);
        Ok(())
    }
    fn sync_data(&self, _eventual: bool) -> Result<(), std::io::Error> {
        let live = self.live.lock().unwrap().clone();
        *self.synced.lock().unwrap() = live;
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut live = self.live.lock().unwrap();
        let start = usize::try_from(offset).unwrap();
        if live.len() < start + data.len() {
            live.resize(start + data.len(), 0);
        }
        live[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

fn open(disk: &PowerCutDisk) -> Store {
    let d = disk.clone();
    let opener: Opener = Box::new(move || redb::Builder::new().create_with_backend(d.clone()));
    Store::open_with(std::path::Path::new("power-cut-disk"), 1 << 30, opener).unwrap()
}

fn item(i: u64) -> IngestItem {
    IngestItem {
        source: 0,
        token: i,
        event: Event {
            seq: 0,
            captured_at: 1,
            received_at: 2,
            source: Source::Serial {
                port: "/dev/ttyACM0".into(),
            },
            device: "SC-01".into(),
            body: EventBody::Scan(Scan {
                code: format!("CODE-{i}"),
                symbology: Symbology::Unknown,
                gs1: None,
                op: None,
                qty: None,
                location: None,
                reference: None,
            }),
        },
        mqtt: None,
        scan_id: None,
    }
}

fn commit(store: &Store, range: std::ops::RangeInclusive<u64>) {
    let mut batch: Vec<_> = range.map(item).collect();
    commit_batch(store, &mut batch).unwrap();
}

fn seqs_and_codes(store: &Store) -> Vec<(u64, String)> {
    store
        .read_oldest_blocking(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| match e.body {
            EventBody::Scan(s) => (e.seq, s.code),
            other => panic!("unexpected body {other:?}"),
        })
        .collect()
}

#[test]
fn a_deferred_delete_lost_in_a_power_cut_brings_the_events_back_and_no_seq_is_reused() {
    let disk = PowerCutDisk::default();
    let store = open(&disk);
    commit(&store, 1..=10);
    let d = store
        .delete_upto_with(6, DeleteDurability::Deferred)
        .unwrap();
    assert_eq!(d.events, 6);
    assert_eq!(store.stats().backlog_events, 4, "visible at once");
    assert_eq!(seqs_and_codes(&store).first().map(|e| e.0), Some(7));

    let after = disk.after_power_cut();
    drop(store);
    let store = open(&after);
    let stats = store.stats();
    assert_eq!(stats.backlog_events, 10, "the lost delete brings them back");
    assert_eq!(stats.next_seq, 11, "next_seq of the last durable commit");
    let expected: Vec<_> = (1..=10).map(|i| (i, format!("CODE-{i}"))).collect();
    assert_eq!(seqs_and_codes(&store), expected, "same events, same seqs");

    commit(&store, 11..=11);
    assert_eq!(
        seqs_and_codes(&store).last(),
        Some(&(11, "CODE-11".to_string())),
        "the next event gets a new seq"
    );
}

#[test]
fn the_next_ingest_commit_makes_an_earlier_deferred_delete_durable() {
    let disk = PowerCutDisk::default();
    let store = open(&disk);
    commit(&store, 1..=10);
    store
        .delete_upto_with(6, DeleteDurability::Deferred)
        .unwrap();
    commit(&store, 11..=12);

    let after = disk.after_power_cut();
    drop(store);
    let store = open(&after);
    assert_eq!(store.stats().backlog_events, 6);
    assert_eq!(store.stats().next_seq, 13);
    let seqs: Vec<u64> = seqs_and_codes(&store).iter().map(|e| e.0).collect();
    assert_eq!(seqs, (7..=12).collect::<Vec<_>>());
}

#[test]
fn an_immediate_delete_survives_a_power_cut() {
    let disk = PowerCutDisk::default();
    let store = open(&disk);
    commit(&store, 1..=10);
    store
        .delete_upto_with(6, DeleteDurability::Immediate)
        .unwrap();
    let after = disk.after_power_cut();
    drop(store);
    let store = open(&after);
    assert_eq!(store.stats().backlog_events, 4);
    assert_eq!(store.stats().next_seq, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_power_cut_the_forwarder_resends_what_the_relay_holds_and_the_store_drains() {
    let pki = common::Pki::new();
    let relay = FakeRelay::start(
        &pki.ca_pem,
        &pki.server_cert_pem,
        &pki.server_key_pem,
        vec![],
    )
    .await;
    let disk = PowerCutDisk::default();
    let store = open(&disk);
    commit(&store, 1..=30);

    // First life: everything is forwarded and acknowledged; deletes after the first durable one
    // are deferred (batches of 5, so several deletes).
    let running = start(&pki, &relay.url(), &store);
    let s = store.clone();
    common::eventually(Duration::from_secs(30), "the first drain", || {
        (s.stats().backlog_events == 0).then_some(())
    })
    .await;
    // The power fails while the forwarder still runs: what is on disk is what was synced.
    let after = disk.after_power_cut();
    running.cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), running.task).await;
    drop(store);
    assert_eq!(relay.acked_seqs(), (1..=30).collect::<Vec<_>>());

    // Second life on the surviving bytes.
    let store = open(&after);
    let back = store.stats().backlog_events;
    assert!(back <= 30, "{back} events back");
    assert_eq!(store.stats().next_seq, 31, "no seq given out again");
    let returned: Vec<u64> = seqs_and_codes(&store).iter().map(|e| e.0).collect();
    let batches_before = relay.recorded.lock().unwrap().batches.len();
    commit(&store, 31..=32);
    let running = start(&pki, &relay.url(), &store);
    let s = store.clone();
    common::eventually(Duration::from_secs(30), "the second drain", || {
        (s.stats().backlog_events == 0).then_some(())
    })
    .await;
    running.cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), running.task).await;

    // Nothing lost: the relay holds 1..=32, each event with the code it was committed with.
    assert_eq!(relay.acked_seqs(), (1..=32).collect::<Vec<_>>());
    let recorded = relay.recorded.lock().unwrap();
    for (seq, event) in &recorded.events {
        match &event.body {
            EventBody::Scan(s) => assert_eq!(s.code, format!("CODE-{seq}")),
            other => panic!("unexpected body {other:?}"),
        }
    }
    // The second life sent exactly the events that came back, then the new ones, in order.
    let resent: Vec<u64> = recorded.batches[batches_before..]
        .iter()
        .flat_map(|b| b.events.iter().map(|e| e.seq))
        .collect();
    let mut expected = returned.clone();
    expected.extend([31, 32]);
    assert_eq!(resent, expected);
}

struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), scanbridge_agent::forwarder::ForwarderError>>,
}

fn start(pki: &common::Pki, relay_url: &str, store: &Store) -> Running {
    let cfg = tls::client_config(
        &pki.path("ca.pem"),
        &pki.path("site.pem"),
        &pki.path("site.key"),
    )
    .unwrap();
    let client = tls::relay_client(cfg, Duration::from_secs(10)).unwrap();
    let cancel = CancellationToken::new();
    let forwarder = Forwarder::new(
        ForwarderConfig {
            relay_url: relay_url.parse().unwrap(),
            site: "WH01".into(),
            agent: "test-agent".into(),
            batch_max_events: 5,
            heartbeat: Duration::from_secs(3600),
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(100),
        },
        store.clone(),
        client,
        StatusSource::new(store.clone(), Health::default(), None),
        Arc::new(tokio::sync::Notify::new()),
        cancel.clone(),
    )
    .unwrap();
    Running {
        cancel,
        task: tokio::spawn(forwarder.run()),
    }
}

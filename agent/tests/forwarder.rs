//! The forwarder against a fake relay over real mutual TLS: drains in order, deletes only what
//! was acknowledged, retries refusals and throttling without losing anything, heartbeats.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::relay::{Answer, FakeRelay};
use scanbridge_agent::forwarder::{Forwarder, ForwarderConfig};
use scanbridge_agent::sources::Health;
use scanbridge_agent::status::StatusSource;
use scanbridge_agent::store::writer::commit_batch;
use scanbridge_agent::store::{IngestItem, Store};
use scanbridge_agent::tls;
use scanbridge_protocol::{Event, EventBody, Scan, Source, Symbology};
use tokio_util::sync::CancellationToken;

fn item(i: u64) -> IngestItem {
    IngestItem {
        source: 0,
        token: i,
        event: Event {
            seq: 0,
            captured_at: 1,
            received_at: 2,
            source: Source::Mqtt {
                broker: "site".into(),
                topic: "scanbridge/SC-01/scan".into(),
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

struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), scanbridge_agent::forwarder::ForwarderError>>,
    notify: Arc<tokio::sync::Notify>,
}

fn start(pki: &common::Pki, relay_url: &str, store: &Store, heartbeat: Duration) -> Running {
    let cfg = tls::client_config(
        &pki.path("ca.pem"),
        &pki.path("site.pem"),
        &pki.path("site.key"),
    )
    .expect("tls");
    let client = tls::relay_client(cfg, Duration::from_secs(10)).expect("client");
    let cancel = CancellationToken::new();
    let notify = Arc::new(tokio::sync::Notify::new());
    let forwarder = Forwarder::new(
        ForwarderConfig {
            relay_url: relay_url.parse().expect("url"),
            site: "WH01".into(),
            agent: "test-agent".into(),
            batch_max_events: 1000,
            heartbeat,
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(100),
        },
        store.clone(),
        client,
        StatusSource::new(store.clone(), Health::default(), None),
        notify.clone(),
        cancel.clone(),
    )
    .expect("forwarder");
    Running {
        cancel,
        task: tokio::spawn(forwarder.run()),
        notify,
    }
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        let r = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stops")
            .expect("task");
        assert!(r.is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_drains_in_seq_order_through_refusals_and_throttling_and_nothing_unacked_is_deleted(
) {
    let pki = common::Pki::new();
    let relay = FakeRelay::start(
        &pki.ca_pem,
        &pki.server_cert_pem,
        &pki.server_key_pem,
        vec![
            Answer::Status {
                code: 503,
                retry_after: Some("0"),
                reason: "draining",
            },
            Answer::Status {
                code: 403,
                retry_after: None,
                reason: "site WH01 does not match the certificate",
            },
            Answer::Status {
                code: 429,
                retry_after: None,
                reason: "slow down",
            },
            Answer::Status {
                code: 500,
                retry_after: None,
                reason: "boom",
            },
        ],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("agent.redb"), 1 << 30).expect("store");
    let mut batch: Vec<_> = (0..2500).map(item).collect();
    commit_batch(&store, &mut batch).expect("commit");

    let running = start(&pki, &relay.url(), &store, Duration::from_secs(3600));
    let s = store.clone();
    common::eventually(Duration::from_secs(30), "the backlog to drain", || {
        (s.stats().backlog_events == 0).then_some(())
    })
    .await;
    running.stop().await;

    assert_eq!(relay.acked_seqs(), (1..=2500).collect::<Vec<_>>());
    let rec = relay.recorded.lock().expect("lock");
    // Four refused attempts of the very first batch, then the same batch again, then the rest.
    let firsts: Vec<u64> = rec.batches.iter().map(|b| b.first_seq).collect();
    assert_eq!(
        &firsts[..5],
        &[1, 1, 1, 1, 1],
        "refused batches are resent, not skipped"
    );
    assert!(rec
        .batches
        .iter()
        .all(|b| b.site == "WH01" && b.status.is_some()));
    for b in &rec.batches {
        for (i, e) in b.events.iter().enumerate() {
            assert_eq!(
                e.seq,
                b.first_seq + i as u64,
                "events consecutive from first_seq"
            );
        }
        assert!(b.events.len() <= 1000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_agent_sends_heartbeats_with_its_status() {
    let pki = common::Pki::new();
    let relay = FakeRelay::start(
        &pki.ca_pem,
        &pki.server_cert_pem,
        &pki.server_key_pem,
        vec![],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("agent.redb"), 1 << 30).expect("store");
    let running = start(&pki, &relay.url(), &store, Duration::from_secs(1));
    let rec = relay.recorded.clone();
    common::eventually(Duration::from_secs(10), "two heartbeats", || {
        (rec.lock().expect("lock").batches.len() >= 2).then_some(())
    })
    .await;
    // New events are forwarded at once, without waiting for the heartbeat timer.
    commit_batch(&store, &mut [item(0)]).expect("commit");
    running.notify.notify_one();
    let s = store.clone();
    common::eventually(
        Duration::from_secs(10),
        "the new event to be acknowledged",
        || (s.stats().backlog_events == 0).then_some(()),
    )
    .await;
    running.stop().await;
    assert_eq!(relay.acked_seqs(), vec![1]);
    let rec = relay.recorded.lock().expect("lock");
    let hb = &rec.batches[0];
    assert!(hb.events.is_empty());
    let status = hb.status.as_ref().expect("status in heartbeat");
    assert_eq!(status.backlog_events, 0);
    assert_eq!(status.disk_cap_bytes, 1 << 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_a_certificate_from_another_ca_gets_nothing_and_nothing_is_deleted() {
    let pki = common::Pki::new();
    let other = common::Pki::new();
    let relay = FakeRelay::start(
        &other.ca_pem,
        &other.server_cert_pem,
        &other.server_key_pem,
        vec![],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("agent.redb"), 1 << 30).expect("store");
    commit_batch(&store, &mut [item(0), item(1)]).expect("commit");
    let running = start(&pki, &relay.url(), &store, Duration::from_secs(3600));
    let failures = relay.handshake_failures.clone();
    common::eventually(Duration::from_secs(10), "three refused handshakes", || {
        (failures.load(std::sync::atomic::Ordering::SeqCst) >= 3).then_some(())
    })
    .await;
    running.stop().await;
    assert!(
        relay.recorded.lock().expect("lock").batches.is_empty(),
        "no batch crossed an untrusted TLS link"
    );
    assert_eq!(store.stats().backlog_events, 2);
}

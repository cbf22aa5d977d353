//! Store tests of the scan-id dedupe: copies across commits, within one batch, after a reopen,
//! per device, beside MQTT redelivery, and retention (window, cap, bounded pruning).

use scanbridge_protocol::{Event, EventBody, Scan, Source, Symbology};

use super::super::writer::{commit_batch, commit_batch_with, message_hash};
use super::super::{IngestItem, MqttMark, Store};
use super::*;

const HOUR: i64 = 3_600_000_000;

fn event(device: &str, code: &str, received_at: i64) -> Event {
    Event {
        seq: 0,
        captured_at: received_at,
        received_at,
        source: Source::Mqtt {
            broker: "site".into(),
            topic: format!("scanbridge/{device}/scan"),
        },
        device: device.into(),
        body: EventBody::Scan(Scan {
            code: code.into(),
            symbology: Symbology::Unknown,
            gs1: None,
            op: None,
            qty: None,
            location: None,
            reference: None,
        }),
    }
}

fn scan(token: u64, device: &str, id: Option<&str>) -> IngestItem {
    scan_at(token, device, id, crate::now_micros())
}

fn scan_at(token: u64, device: &str, id: Option<&str>, received_at: i64) -> IngestItem {
    IngestItem {
        source: 0,
        token,
        event: event(device, "4006381333931", received_at),
        mqtt: None,
        scan_id: id.map(str::to_string),
    }
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("agent.redb"), 1 << 30).expect("open store")
}

fn stored(store: &Store) -> usize {
    store.read_oldest_blocking(usize::MAX).expect("read").len()
}

fn hours(window: i64, max_ids: u64) -> DedupePolicy {
    DedupePolicy {
        window: Duration::from_secs(u64::try_from(window / 1_000_000).expect("positive")),
        max_ids,
    }
}

#[test]
fn the_same_id_in_a_later_commit_is_acknowledged_but_not_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let r1 = commit_batch(&store, &mut [scan(1, "SC-01", Some("a-1"))]).expect("commit");
    let r2 = commit_batch(&store, &mut [scan(2, "SC-01", Some("a-1"))]).expect("commit");
    assert_eq!((r1.stored, r1.duplicates), (1, 0));
    assert_eq!((r2.stored, r2.duplicates), (0, 1));
    assert_eq!(stored(&store), 1);
    assert_eq!(store.duplicates_suppressed(), 1);
    assert_eq!(store.stats().next_seq, 2, "the copy took no seq");
}

#[test]
fn a_copy_within_one_batch_is_caught_and_the_rest_of_the_batch_is_stored_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let mut batch = [
        scan(1, "SC-01", Some("a-1")),
        scan(2, "SC-01", None),
        scan(3, "SC-01", Some("a-1")),
        scan(4, "SC-01", Some("a-2")),
    ];
    let r = commit_batch(&store, &mut batch).expect("commit");
    assert_eq!((r.stored, r.duplicates), (3, 1));
    let seqs: Vec<u64> = store
        .read_oldest_blocking(10)
        .expect("read")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(store.scan_ids_len().expect("len"), 2);
}

#[test]
fn ids_survive_a_reopen_of_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(&dir);
        commit_batch(&store, &mut [scan(1, "SC-01", Some("a-1"))]).expect("commit");
    }
    let store = open(&dir);
    let r = commit_batch(&store, &mut [scan(2, "SC-01", Some("a-1"))]).expect("commit");
    assert_eq!((r.stored, r.duplicates), (0, 1));
    assert_eq!(stored(&store), 1);
}

#[test]
fn ids_are_per_device_and_scans_without_an_id_are_never_deduped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let mut batch = [
        scan(1, "SC-01", Some("7")),
        scan(2, "SC-02", Some("7")),
        scan(3, "SC-01", None),
        scan(4, "SC-01", None),
    ];
    let r = commit_batch(&store, &mut batch).expect("commit");
    assert_eq!((r.stored, r.duplicates), (4, 0));
}

#[test]
fn batches_without_ids_do_not_create_the_dedupe_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    commit_batch(&store, &mut [scan(1, "SC-01", None)]).expect("commit");
    let tx = store.db().expect("db").begin_read().expect("read");
    assert!(matches!(
        tx.open_table(SCAN_IDS),
        Err(redb::TableError::TableDoesNotExist(_))
    ));
}

#[test]
fn an_mqtt_redelivery_of_a_message_with_an_id_is_still_recognised_by_its_packet_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let payload = br#"{"code":"4006381333931","id":"a-1"}"#;
    let item = |token, dup| {
        let mut it = scan(token, "SC-01", Some("a-1"));
        it.mqtt = Some(MqttMark {
            broker: "site".into(),
            pkid: 7,
            hash: message_hash("scanbridge/SC-01/scan", payload),
            dup,
            retire: Vec::new(),
            more_events: Vec::new(),
        });
        it
    };
    commit_batch(&store, &mut [item(1, false)]).expect("commit");
    let r = commit_batch(&store, &mut [item(2, true)]).expect("commit");
    assert_eq!((r.stored, r.already_committed, r.duplicates), (0, 1, 0));
    // The same scan re-published by the device: a new packet id, no DUP flag.
    let mut copy = item(3, false);
    if let Some(m) = copy.mqtt.as_mut() {
        m.pkid = 8;
    }
    let r = commit_batch(&store, &mut [copy]).expect("commit");
    assert_eq!((r.stored, r.duplicates), (0, 1));
    assert_eq!(stored(&store), 1);
}

#[test]
fn an_id_is_forgotten_after_the_window_and_a_later_scan_with_it_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let policy = hours(HOUR, 1_000);
    let now = crate::now_micros();
    // Received 2 hours ago: out of the window, pruned in its own commit.
    commit_batch_with(
        &store,
        &mut [scan_at(1, "SC-01", Some("old"), now - 2 * HOUR)],
        &policy,
    )
    .expect("commit");
    assert_eq!(store.scan_ids_len().expect("len"), 0);
    // Received 30 minutes ago: inside the 1-hour window, kept.
    commit_batch_with(
        &store,
        &mut [scan_at(2, "SC-01", Some("young"), now - HOUR / 2)],
        &policy,
    )
    .expect("commit");
    let r = commit_batch_with(
        &store,
        &mut [
            scan(3, "SC-01", Some("young")),
            scan(4, "SC-01", Some("old")),
        ],
        &policy,
    )
    .expect("commit");
    assert_eq!((r.stored, r.duplicates), (1, 1));
    assert_eq!(stored(&store), 3);
}

#[test]
fn at_most_max_ids_are_kept_and_the_oldest_goes_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let policy = hours(HOUR, 3);
    for i in 0..10u64 {
        let id = format!("n-{i}");
        commit_batch_with(&store, &mut [scan(i, "SC-01", Some(&id))], &policy).expect("commit");
        assert!(store.scan_ids_len().expect("len") <= 3);
    }
    let r = commit_batch_with(
        &store,
        &mut [
            scan(20, "SC-01", Some("n-9")),
            scan(21, "SC-01", Some("n-0")),
        ],
        &policy,
    )
    .expect("commit");
    assert_eq!((r.stored, r.duplicates), (1, 1), "n-9 kept, n-0 forgotten");
}

#[test]
fn pruning_a_large_expired_backlog_takes_bounded_steps_per_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let long = hours(1000 * HOUR, 1_000_000);
    let old = crate::now_micros() - 10 * HOUR;
    let mut batch: Vec<IngestItem> = (0..200u64)
        .map(|i| scan_at(i, "SC-01", Some(&format!("old-{i}")), old))
        .collect();
    commit_batch_with(&store, &mut batch, &long).expect("commit");
    assert_eq!(store.scan_ids_len().expect("len"), 200);
    // The window shrinks to 1 hour: all 200 are expired, but one commit recording one id
    // prunes at most prune_budget(1) of them.
    let short = hours(HOUR, 1_000_000);
    commit_batch_with(&store, &mut [scan(1000, "SC-01", Some("new"))], &short).expect("commit");
    assert_eq!(
        store.scan_ids_len().expect("len"),
        200 + 1 - prune_budget(1)
    );
    // Later commits keep going until only the young ids are left.
    let mut young = 1u64;
    while store.scan_ids_len().expect("len") > young {
        let id = format!("new-{young}");
        commit_batch_with(
            &store,
            &mut [scan(1000 + young, "SC-01", Some(&id))],
            &short,
        )
        .expect("commit");
        young += 1;
        assert!(young < 100, "pruning does not progress");
    }
    assert!(young <= 200 / (prune_budget(1) - 1) + 2, "{young} commits");
}

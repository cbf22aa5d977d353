//! Unit tests of the store: group commit numbering, deletes, reopen, quarantine counter, MQTT
//! redelivery dedupe rows, and the writer thread (notices after commit, buffer-cap pause).

use std::sync::Arc;
use std::time::{Duration, Instant};

use scanbridge_protocol::{Event, EventBody, Quarantined, Scan, Source, Symbology};
use tokio_util::sync::CancellationToken;

use super::writer::{commit_batch, message_hash};
use super::*;
use crate::config::StoreConfig;

fn event(code: &str) -> Event {
    Event {
        seq: 0,
        captured_at: 1,
        received_at: 2,
        source: Source::Mqtt {
            broker: "site".into(),
            topic: "scanbridge/SC-01/scan".into(),
        },
        device: "SC-01".into(),
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

fn item(token: u64, code: &str) -> IngestItem {
    IngestItem {
        source: 0,
        token,
        event: event(code),
        mqtt: None,
        scan_id: None,
    }
}

fn mqtt_item(
    token: u64,
    pkid: u16,
    payload: &str,
    dup: bool,
    retire: Vec<(u16, u16)>,
) -> IngestItem {
    IngestItem {
        source: 0,
        token,
        event: event(payload),
        mqtt: Some(MqttMark {
            broker: "site".into(),
            pkid,
            hash: message_hash("scanbridge/SC-01/scan", payload.as_bytes()),
            dup,
            retire,
            more_events: Vec::new(),
        }),
        scan_id: None,
    }
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("agent.redb"), 1 << 30).expect("open store")
}

fn seqs(store: &Store) -> Vec<u64> {
    store
        .read_oldest_blocking(usize::MAX)
        .expect("read")
        .iter()
        .map(|e| e.seq)
        .collect()
}

#[test]
fn group_commit_assigns_consecutive_seqs_starting_at_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let mut batch: Vec<_> = (0..5).map(|i| item(i, &format!("C{i}"))).collect();
    let report = commit_batch(&store, &mut batch).expect("commit");
    assert_eq!(
        (report.first_seq, report.last_seq, report.stored),
        (Some(1), Some(5), 5)
    );
    let mut more: Vec<_> = (0..3).map(|i| item(i, "X")).collect();
    commit_batch(&store, &mut more).expect("commit");
    assert_eq!(seqs(&store), (1..=8).collect::<Vec<_>>());
    let events = store.read_oldest_blocking(2).expect("read");
    assert_eq!(events[0].body, event("C0").body, "stored in arrival order");
    let s = store.stats();
    assert_eq!((s.backlog_events, s.next_seq), (8, 9));
    assert!(s.backlog_bytes > 0);
    assert_eq!(s.oldest_received_at, Some(2));
}

#[test]
fn delete_upto_removes_exactly_the_acknowledged_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let mut batch: Vec<_> = (0..10).map(|i| item(i, "C")).collect();
    commit_batch(&store, &mut batch).expect("commit");
    let bytes_before = store.stats().backlog_bytes;
    let d = store.delete_upto_blocking(4).expect("delete");
    assert_eq!(d.events, 4);
    assert_eq!(seqs(&store), (5..=10).collect::<Vec<_>>());
    assert_eq!(store.stats().backlog_bytes, bytes_before - d.bytes);
    assert_eq!(
        store.delete_upto_blocking(4).expect("again").events,
        0,
        "idempotent"
    );
    store.delete_upto_blocking(10).expect("delete all");
    let s = store.stats();
    assert_eq!(
        (s.backlog_events, s.backlog_bytes, s.oldest_received_at),
        (0, 0, None)
    );
}

#[test]
fn reopening_keeps_the_events_and_never_reuses_a_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(&dir);
        let mut batch: Vec<_> = (0..3).map(|i| item(i, "C")).collect();
        commit_batch(&store, &mut batch).expect("commit");
        store.delete_upto_blocking(3).expect("delete all");
    }
    let store = open(&dir);
    assert_eq!(store.stats().next_seq, 4);
    let mut batch = vec![item(0, "D")];
    commit_batch(&store, &mut batch).expect("commit");
    drop(store);
    let store = open(&dir);
    assert_eq!(seqs(&store), vec![4]);
    assert_eq!(store.stats().backlog_events, 1);
}

#[test]
fn quarantined_events_are_counted_in_meta() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let mut q = item(0, "x");
    q.event.body = EventBody::Quarantined(Quarantined {
        raw: vec![0xff],
        reason: "payload is not UTF-8".into(),
    });
    commit_batch(&store, &mut [q, item(1, "ok")]).expect("commit");
    assert_eq!(store.stats().quarantine_count, 1);
    drop(store);
    assert_eq!(open(&dir).stats().quarantine_count, 1);
}

#[test]
fn a_redelivered_message_already_committed_is_not_stored_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    commit_batch(&store, &mut [mqtt_item(0, 7, "A", false, vec![])]).expect("commit");
    // Agent "restarts" before the PUBACK: the broker resends pkid 7 with DUP set.
    drop(store);
    let store = open(&dir);
    let report = commit_batch(&store, &mut [mqtt_item(0, 7, "A", true, vec![])]).expect("commit");
    assert_eq!((report.stored, report.already_committed), (0, 1));
    assert_eq!(seqs(&store), vec![1]);
}

#[test]
fn a_redelivery_of_a_message_never_committed_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    commit_batch(&store, &mut [mqtt_item(0, 7, "A", false, vec![])]).expect("commit");
    let report = commit_batch(&store, &mut [mqtt_item(0, 8, "B", true, vec![])]).expect("commit");
    assert_eq!(report.stored, 1);
    assert_eq!(seqs(&store), vec![1, 2]);
}

#[test]
fn copies_of_every_message_in_flight_under_one_reused_pkid_are_recognised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    // The broker sent A and then B under pkid 7 (its queue was deeper than 65,535 ids), both
    // committed; after a crash it redelivers both with DUP set: neither is stored again.
    commit_batch(&store, &mut [mqtt_item(0, 7, "A", false, vec![])]).expect("commit");
    commit_batch(&store, &mut [mqtt_item(1, 7, "B", false, vec![])]).expect("commit");
    drop(store);
    let store = open(&dir);
    let report = commit_batch(
        &store,
        &mut [
            mqtt_item(2, 7, "A", true, vec![]),
            mqtt_item(3, 7, "B", true, vec![]),
        ],
    )
    .expect("commit");
    assert_eq!((report.stored, report.already_committed), (0, 2));
    assert_eq!(seqs(&store), vec![1, 2]);
    // A third message under 7 that was in flight but never received comes back with DUP set:
    // stored (and counted as a DUP the record did not know).
    let report = commit_batch(&store, &mut [mqtt_item(4, 7, "C", true, vec![])]).expect("commit");
    assert_eq!((report.stored, report.dup_hash_mismatch), (1, 1));
}

#[test]
fn confirmed_pubacks_retire_the_oldest_entries_of_their_pkid_in_the_next_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let h = |p: &str| message_hash("scanbridge/SC-01/scan", p.as_bytes());
    commit_batch(&store, &mut [mqtt_item(0, 7, "A", false, vec![])]).expect("commit");
    assert_eq!(store.mqtt_inflight_len().expect("len"), 1);
    // The broker processed A's PUBACK: the next message retires it; only pkid 8 remains.
    commit_batch(&store, &mut [mqtt_item(1, 8, "B", false, vec![(7, 1)])]).expect("commit");
    assert_eq!(
        store.mqtt_inflight_len().expect("len"),
        1,
        "only pkid 8 remains"
    );
    // pkid 8 is used again for C (in flight beside B) and then for D in the transaction that
    // retires one PUBACK for 8: B, the oldest, goes; C and D stay recognisable.
    commit_batch(&store, &mut [mqtt_item(2, 8, "C", false, vec![])]).expect("commit");
    commit_batch(&store, &mut [mqtt_item(3, 8, "D", false, vec![(8, 1)])]).expect("commit");
    let left = store.mqtt_unconfirmed("site", 8).expect("record");
    assert!(!left.contains(&h("B")) && left.contains(&h("C")) && left.contains(&h("D")));
    let report = commit_batch(
        &store,
        &mut [
            mqtt_item(4, 8, "C", true, vec![]),
            mqtt_item(5, 8, "D", true, vec![]),
        ],
    )
    .expect("commit");
    assert_eq!(report.already_committed, 2);
    // Retiring more than is recorded empties the record and removes the row.
    commit_batch(&store, &mut [mqtt_item(6, 9, "E", false, vec![(8, 5)])]).expect("commit");
    assert!(store
        .mqtt_unconfirmed("site", 8)
        .expect("record")
        .is_empty());
}

fn writer_fixture(
    store: &Store,
    cfg: StoreConfig,
) -> (
    Writer,
    tokio::sync::mpsc::Sender<IngestItem>,
    tokio::sync::mpsc::Receiver<Committed>,
    Arc<tokio::sync::Notify>,
) {
    let notify = Arc::new(tokio::sync::Notify::new());
    let (mut w, tx) = Writer::new(store.clone(), &cfg, 64, notify.clone());
    let (id, notices) = w.add_source(16);
    assert_eq!(id, 0);
    (w, tx, notices, notify)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_thread_commits_before_it_hands_back_notices_and_drains_on_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let (w, tx, mut notices, notify) = writer_fixture(&store, StoreConfig::default());
    let thread = w
        .spawn(tokio::runtime::Handle::current(), CancellationToken::new())
        .expect("spawn");
    for i in 0..100 {
        tx.send(item(i, "C")).await.expect("send");
    }
    drop(tx);
    let mut acked = Vec::new();
    while let Some(c) = notices.recv().await {
        // Every token handed back is already durable.
        assert!(store.stats().backlog_events >= c.tokens.len() as u64);
        acked.extend(c.tokens);
    }
    assert_eq!(acked, (0..100).collect::<Vec<_>>());
    let joined = tokio::task::spawn_blocking(move || thread.join())
        .await
        .expect("join");
    assert!(matches!(joined, Ok(Ok(()))));
    assert_eq!(seqs(&store), (1..=100).collect::<Vec<_>>());
    tokio::time::timeout(Duration::from_secs(1), notify.notified())
        .await
        .expect("forwarder was woken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_buffer_cap_ingest_pauses_and_resumes_when_space_is_freed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("agent.redb"), 200).expect("open");
    let cfg = StoreConfig {
        commit_max_events: 1,
        ..StoreConfig::default()
    };
    let (w, tx, mut notices, _notify) = writer_fixture(&store, cfg);
    let cancel = CancellationToken::new();
    let thread = w
        .spawn(tokio::runtime::Handle::current(), cancel.clone())
        .expect("spawn");
    // Each event is ~60 bytes: after a few the 200-byte cap is reached.
    for i in 0..10 {
        tx.send(item(i, "C")).await.expect("send");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut acked = 0;
    while !store.stats().ingest_paused {
        assert!(Instant::now() < deadline, "ingest never paused");
        if let Ok(Some(c)) = tokio::time::timeout(Duration::from_millis(20), notices.recv()).await {
            acked += c.tokens.len();
        }
    }
    let stored = store.stats().backlog_events;
    assert!(stored < 10, "writer kept accepting past the cap");
    store.delete_upto(u64::MAX).await.expect("drain");
    while acked < 10 {
        let c = tokio::time::timeout(Duration::from_secs(10), notices.recv())
            .await
            .expect("resumed")
            .expect("open");
        acked += c.tokens.len();
        if store.stats().ingest_paused {
            store.delete_upto(u64::MAX).await.expect("drain");
        }
    }
    drop(tx);
    cancel.cancel();
    let joined = tokio::task::spawn_blocking(move || thread.join())
        .await
        .expect("join");
    assert!(matches!(joined, Ok(Ok(()))));
}

/// A file backend that fails every write with ENOSPC while `full` is set.
#[derive(Debug)]
struct DiskThatFillsUp {
    inner: redb::backends::FileBackend,
    full: Arc<std::sync::atomic::AtomicBool>,
}

impl DiskThatFillsUp {
    fn check(&self) -> Result<(), std::io::Error> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        } else {
            Ok(())
        }
    }
}

impl redb::StorageBackend for DiskThatFillsUp {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        self.inner.read(offset, len)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.sync_data(eventual)
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_ingest_without_acknowledging_and_ingest_resumes_when_space_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.redb");
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (p, f) = (path.clone(), full.clone());
    let opener: Opener = Box::new(move || {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .map_err(|e| redb::DatabaseError::Storage(redb::StorageError::Io(e)))?;
        let backend = DiskThatFillsUp {
            inner: redb::backends::FileBackend::new(file)?,
            full: f.clone(),
        };
        redb::Builder::new().create_with_backend(backend)
    });
    let store = Store::open_with(&path, 1 << 30, opener).expect("open");
    let (w, tx, mut notices, _notify) = writer_fixture(&store, StoreConfig::default());
    let cancel = CancellationToken::new();
    let thread = w
        .spawn(tokio::runtime::Handle::current(), cancel.clone())
        .expect("spawn");

    for i in 0..5 {
        tx.send(item(i, "before")).await.expect("send");
    }
    let mut acked = Vec::new();
    while acked.len() < 5 {
        acked.extend(notices.recv().await.expect("notice").tokens);
    }

    full.store(true, std::sync::atomic::Ordering::SeqCst);
    for i in 5..10 {
        tx.send(item(i, "during")).await.expect("send");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.stats().ingest_paused {
        assert!(Instant::now() < deadline, "ingest never paused on ENOSPC");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        notices.try_recv().is_err(),
        "nothing may be acknowledged while the disk is full"
    );
    assert!(
        store.read_oldest(100).await.is_err() || store.stats().backlog_events == 5,
        "the forwarder sees an error or the committed events, never half a batch"
    );

    full.store(false, std::sync::atomic::Ordering::SeqCst);
    while acked.len() < 10 {
        let c = tokio::time::timeout(Duration::from_secs(20), notices.recv())
            .await
            .expect("ingest resumed after space returned")
            .expect("open");
        acked.extend(c.tokens);
    }
    assert_eq!(acked, (0..10).collect::<Vec<_>>());
    assert!(!store.stats().ingest_paused);
    assert_eq!(seqs(&store), (1..=10).collect::<Vec<_>>());

    drop(tx);
    cancel.cancel();
    let joined = tokio::task::spawn_blocking(move || thread.join())
        .await
        .expect("join");
    assert!(matches!(joined, Ok(Ok(()))));
}

#[test]
fn a_new_store_is_created_at_the_current_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    assert_eq!(store.schema_version().ok(), Some(SCHEMA_VERSION));
    assert_eq!(store.meta_text("upgraded_from").ok(), Some(None));
}

/// A schema-1 file, laid out as the first release did: `events`, `meta`, `mqtt_inflight`.
fn write_v1(path: &std::path::Path, events: &[Event]) {
    let db = redb::Database::create(path).expect("create");
    let tx = db.begin_write().expect("tx");
    {
        let mut meta = tx.open_table(META).expect("meta");
        let mut ev = tx.open_table(EVENTS).expect("events");
        let mut inflight = tx.open_table(MQTT_INFLIGHT).expect("inflight");
        let mut bytes = 0u64;
        for e in events {
            let v = postcard::to_allocvec(e).expect("encode");
            bytes += v.len() as u64;
            ev.insert(e.seq, v.as_slice()).expect("insert");
        }
        inflight.insert(("site", 7u16), [7u8; 8]).expect("row");
        meta.insert(META_SCHEMA_VERSION, 1).expect("version");
        meta.insert(META_NEXT_SEQ, events.last().map_or(1, |e| e.seq + 1))
            .expect("next");
        meta.insert(META_BACKLOG_EVENTS, events.len() as u64)
            .expect("count");
        meta.insert(META_BACKLOG_BYTES, bytes).expect("bytes");
    }
    tx.commit().expect("commit");
}

#[test]
fn a_schema_1_store_is_upgraded_in_place_with_its_events_seqs_and_dedupe_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.redb");
    let events: Vec<Event> = (5..8)
        .map(|seq| Event {
            seq,
            ..event(&format!("V1-{seq}"))
        })
        .collect();
    write_v1(&path, &events);
    let store = Store::open(&path, 1 << 30).expect("open v1");
    assert_eq!(store.schema_version().ok(), Some(SCHEMA_VERSION));
    assert_eq!(
        store.meta_text("upgraded_from").ok().flatten().as_deref(),
        Some("1")
    );
    assert_eq!(store.read_oldest_blocking(10).expect("read"), events);
    assert_eq!(store.stats().next_seq, 8);
    assert_eq!(store.mqtt_inflight_len().expect("rows"), 1);
    // The old one-hash row became a one-entry record: a DUP copy of it is still recognised.
    assert_eq!(
        store.mqtt_unconfirmed("site", 7).expect("record").encode(),
        vec![7u8; 8]
    );
    drop(store);
    // Opening again is a no-op upgrade.
    let store = Store::open(&path, 1 << 30).expect("reopen");
    assert_eq!(store.schema_version().ok(), Some(SCHEMA_VERSION));
    assert_eq!(store.read_oldest_blocking(10).expect("read").len(), 3);
}

#[test]
fn a_store_from_a_newer_agent_is_refused_and_left_byte_for_byte_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.redb");
    write_v1(&path, &[]);
    {
        let db = redb::Database::create(&path).expect("open");
        let tx = db.begin_write().expect("tx");
        tx.open_table(META)
            .expect("meta")
            .insert(META_SCHEMA_VERSION, SCHEMA_VERSION + 1)
            .expect("stamp");
        tx.commit().expect("commit");
    }
    let before = std::fs::read(&path).expect("read");
    let err = Store::open(&path, 1 << 30).expect_err("refused");
    assert!(
        matches!(err, StoreError::NewerSchema { found } if found == SCHEMA_VERSION + 1),
        "{err}"
    );
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert_eq!(std::fs::read(&path).expect("read"), before);
}

#[test]
fn a_store_is_bound_to_its_site_and_refuses_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    store.bind_site("WH01").expect("first bind");
    store.bind_site("WH01").expect("same site again");
    let err = store.bind_site("WH02").expect_err("other site");
    assert!(
        err.to_string()
            .contains("holds events of site WH01, but the configuration says site WH02"),
        "{err}"
    );
}

#[test]
fn a_store_keeps_its_identity_across_reopens_and_a_new_store_gets_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = open(&dir).store_id().to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{id}"
    );
    assert_eq!(
        open(&dir)
            .meta_text(META_TEXT_STORE_ID)
            .ok()
            .flatten()
            .as_deref(),
        Some(id.as_str())
    );
    assert_eq!(open(&dir).store_id(), id, "stable across reopen");
    let other = tempfile::tempdir().expect("tempdir");
    assert_ne!(
        open(&other).store_id(),
        id,
        "a new store has its own identity"
    );
    // A store of an older agent (no identity yet) gets one at its first open and keeps it.
    let path = other.path().join("old.redb");
    write_v1(&path, &[]);
    let first = Store::open(&path, 1 << 30)
        .expect("open v1")
        .store_id()
        .to_string();
    assert_eq!(first.len(), 32);
    assert_eq!(
        Store::open(&path, 1 << 30).expect("reopen").store_id(),
        first
    );
}

#[test]
fn renumbering_moves_every_event_after_the_given_seq_keeping_order_content_and_counters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let mut batch: Vec<_> = (0..6).map(|i| item(i, &format!("R{i}"))).collect();
    commit_batch(&store, &mut batch).expect("commit");
    store
        .delete_upto_blocking(2)
        .expect("delete the acknowledged 1..=2");
    let before = store.read_oldest_blocking(usize::MAX).expect("read");
    assert_eq!(
        before.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [3, 4, 5, 6]
    );

    // 1..=2 were acknowledged and deleted: the relay may hold them, renumbering needs --force.
    let err = store
        .renumber_after(1000, false)
        .expect_err("already forwarded");
    assert!(
        matches!(err, StoreError::AlreadyForwarded { oldest: 3 }),
        "{err}"
    );
    assert_eq!(seqs(&store), [3, 4, 5, 6], "nothing moved");
    // Seqs 3..=6 become 1001..=1004 (a shift past a postcard varint length step, too).
    let done = store.renumber_after(1000, true).expect("renumber");
    assert_eq!(
        done,
        Renumbered::Moved {
            events: 4,
            old_first: 3,
            old_last: 6,
            shift: 998,
            next_seq: 1005
        }
    );
    let check = |store: &Store| {
        let after = store.read_oldest_blocking(usize::MAX).expect("read");
        assert_eq!(after.len(), before.len());
        for (old, new) in before.iter().zip(&after) {
            assert_eq!(
                new.seq,
                old.seq + 998,
                "the seq inside the event matches its key"
            );
            assert_eq!(
                Event {
                    seq: old.seq,
                    ..new.clone()
                },
                *old,
                "content kept"
            );
        }
        let raw = store.read_raw_from_blocking(0, usize::MAX).expect("raw");
        let keys: Vec<u64> = raw.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [1001, 1002, 1003, 1004]);
        for (key, bytes) in &raw {
            let ev: Event = postcard::from_bytes(bytes).expect("decode");
            assert_eq!(ev.seq, *key);
        }
        let s = store.stats();
        assert_eq!((s.backlog_events, s.next_seq), (4, 1005));
        assert_eq!(
            s.backlog_bytes,
            raw.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
        );
    };
    check(&store);
    drop(store);
    let store = open(&dir);
    check(&store);
    // New events continue after the renumbered ones.
    commit_batch(&store, &mut [item(9, "NEW")]).expect("commit");
    assert_eq!(seqs(&store), [1001, 1002, 1003, 1004, 1005]);
    // Asking again for an earlier seq never moves seqs down.
    assert_eq!(
        store.renumber_after(10, false).expect("again"),
        Renumbered::AlreadyAfter { first: 1001 }
    );
    assert_eq!(seqs(&store), [1001, 1002, 1003, 1004, 1005]);
}

#[test]
fn renumbering_an_empty_store_moves_only_next_seq_and_a_small_shift_overwrites_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    assert_eq!(
        store.renumber_after(41, false).expect("renumber"),
        Renumbered::NextSeqOnly {
            from: 1,
            next_seq: 42
        }
    );
    drop(store);
    let store = open(&dir);
    assert_eq!(store.stats().next_seq, 42);
    let mut batch: Vec<_> = (0..5).map(|i| item(i, &format!("S{i}"))).collect();
    commit_batch(&store, &mut batch).expect("commit");
    assert_eq!(seqs(&store), [42, 43, 44, 45, 46]);
    // Shift by 1: every row moves onto its neighbour's former key.
    store.renumber_after(42, true).expect("renumber");
    let events = store.read_oldest_blocking(usize::MAX).expect("read");
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [43, 44, 45, 46, 47]
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.body, event(&format!("S{i}")).body);
    }
    assert_eq!(store.stats().next_seq, 48);
}

#[test]
fn renumber_store_refuses_a_missing_store_another_sites_store_and_a_store_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.redb");
    let err = renumber_store(&path, "WH01", 5, false).expect_err("missing");
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    assert!(!path.exists(), "no store is created");

    let store = open(&dir);
    store.bind_site("WH01").expect("bind");
    commit_batch(&store, &mut [item(0, "A")]).expect("commit");
    let err = renumber_store(&path, "WH01", 5, false).expect_err("in use");
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("stop it first"), "{err}");
    drop(store);

    let err = renumber_store(&path, "WH02", 5, false).expect_err("other site");
    assert!(matches!(err, StoreError::SiteMismatch { .. }), "{err}");
    let done = renumber_store(&path, "WH01", 5, false).expect("renumber");
    assert!(
        matches!(done, Renumbered::Moved { next_seq: 7, .. }),
        "{done}"
    );
    assert_eq!(seqs(&open(&dir)), [6]);
}

//! The group-commit writer: the only code that adds events to the store.
//!
//! A dedicated `std::thread` (redb is blocking) receives [`IngestItem`]s over a bounded tokio mpsc
//! channel. It takes the first item, then everything else that arrives until `commit_max_events`
//! items are gathered or `commit_linger` has passed since the first one, assigns strictly
//! increasing seqs inside one write transaction, commits with `Durability::Immediate`, and only
//! then sends each source a [`Committed`] notice listing the tokens of its items. A source
//! acknowledges upstream (MQTT PUBACK) only on that notice: **nothing is acknowledged before it is
//! on disk**.
//!
//! Buffer cap: when the backlog reaches `max_bytes`, the writer stops taking items (the bounded
//! channel fills, sources stop reading, the broker holds the messages), raises `ingest_paused`,
//! and resumes as soon as the forwarder frees space. A failed commit (ENOSPC, I/O error) is
//! handled the same way: the batch is held, nothing is acknowledged, the commit is retried with
//! backoff. redb refuses all work after an I/O error until the database is reopened
//! (`PreviousIo`), so the writer then reopens it ([`Store::recover`], which runs redb's crash
//! recovery: the file is back at its last commit) and retries the held batch; the forwarder's
//! reads fail with [`StoreError::Recovering`] meanwhile and back off.
//!
//! # MQTT redelivery dedupe
//!
//! If the agent dies (or the connection drops) after a commit but before the broker processed
//! the PUBACK, the broker (persistent session) redelivers that message on the next connection
//! with `dup = 1` and the **same packet id**. Storing it again would duplicate the event. So, in
//! the same transaction that stores a message, the writer appends `hash(topic, payload)` to
//! `mqtt_unconfirmed[(broker, pkid)]`, the list of messages committed under that id whose PUBACK
//! the broker has not been seen to process ([`super::redelivery`]: why a list — mosquitto keeps
//! several messages in flight under one id when its queue is deep). A message with `dup = 1`
//! whose hash is in the list is already committed: it is acknowledged without being stored again
//! ([`redelivery_decision`]). Any other message is stored (a `dup = 0` message was never sent
//! before).
//!
//! Entries are retired lazily. A PUBACK handed to the MQTT client is not yet a PUBACK the broker
//! processed (a killed process's socket can be reset with it unsent), so entries are retired only
//! once the broker has *confirmed* PUBACKs (a PINGREQ written after them was answered; the broker
//! handles a client's packets in order). The source then attaches `(pkid, count)` pairs to its
//! next item and that transaction drops the `count` oldest entries of each list before the item's
//! own decision (in channel order: every copy the broker redelivered before the confirmation was
//! decided on first). A list holds at most [`super::redelivery::MAX_PER_PKID`] entries (oldest
//! dropped), so the table stays bounded.
//!
//! # Scan-id dedupe
//!
//! A device that re-publishes a scan (QoS 1 at least once: its PUBACK was lost with a crashed
//! broker) sends a *new* message (new packet id, no DUP): the rows above cannot see it. An item
//! carrying the payload's scan id ([`IngestItem::scan_id`]) whose `(device, id)` is already
//! committed is acknowledged and not stored; check, insert and prune happen in this same
//! transaction ([`super::dedupe`]). Items without an id never touch those tables.
//!
//! Residual risk (documented, not handled): an entry not yet retired whose packet id the broker
//! reuses for a *byte-identical* message (same topic and payload) that the agent never committed
//! and that comes back with `dup = 1` would be taken for the committed one. That takes an
//! identical payload under the same packet id (65,535 messages apart) within the unconfirmed
//! window, and a crash or reconnect while it was in flight; scan ids ([`super::dedupe`]) make
//! even that case exact.

use std::time::{Duration, Instant};

use redb::{Durability, ReadableTable};
use scanbridge_protocol::{Event, EventBody};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::dedupe::{DedupePolicy, DedupeTx};
use super::redelivery::PkidHashes;
pub use super::redelivery::{redelivery_decision, RedeliveryDecision};
use super::{MetaValues, Store, StoreError, EVENTS, META, MQTT_UNCONFIRMED};
use crate::config::StoreConfig;

/// Index of a registered source (its slot for [`Committed`] notices).
pub type SourceId = usize;

/// MQTT-specific facts the writer needs for redelivery dedupe.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttMark {
    /// Configured broker name.
    pub broker: String,
    /// MQTT packet id of the PUBLISH.
    pub pkid: u16,
    /// [`message_hash`] of topic and payload.
    pub hash: [u8; 8],
    /// The PUBLISH's DUP flag.
    pub dup: bool,
    /// `(pkid, count)`: the broker has processed `count` more PUBACKs for `pkid` since the
    /// source's previous item (their oldest entries are dropped before this item is decided).
    pub retire: Vec<(u16, u16)>,
    /// Further events decoded from the same message (a PLC tag message with several values).
    /// They are stored right after the item's `event`, in the same transaction, get the next
    /// seqs, and share the message's redelivery decision and its one acknowledgement.
    pub more_events: Vec<Event>,
}

/// One event on its way into the store.
#[derive(Debug, Clone)]
pub struct IngestItem {
    /// Which source sent it (where its [`Committed`] notice goes).
    pub source: SourceId,
    /// Opaque to the store; handed back in the notice so the source knows what to acknowledge.
    pub token: u64,
    /// The normalised event; its `seq` is assigned at commit.
    pub event: Event,
    pub mqtt: Option<MqttMark>,
    /// The scan id the payload carried (canonical JSON `id`): the item is not stored when
    /// `(event.device, id)` was committed before ([`super::dedupe`]).
    pub scan_id: Option<String>,
}

/// Sent to a source after a commit: these items are durable (or were already), acknowledge them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub tokens: Vec<u64>,
}

/// FNV-1a 64 over (topic length as u32 LE, topic, payload): stable across builds and platforms.
pub fn message_hash(topic: &str, payload: &[u8]) -> [u8; 8] {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let len = u32::try_from(topic.len()).unwrap_or(u32::MAX).to_le_bytes();
    let mut h = OFFSET;
    for b in len.iter().chain(topic.as_bytes()).chain(payload) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    h.to_le_bytes()
}

/// Counts of one commit, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitReport {
    pub stored: u64,
    pub already_committed: u64,
    /// Scan copies recognised by `(device, id)`: acknowledged, not stored.
    pub duplicates: u64,
    /// DUP publishes whose packet id has unconfirmed entries, none of them theirs: stored as new
    /// (a message sent before the connection dropped and never received, normally).
    pub dup_hash_mismatch: u64,
    /// Entries dropped from full per-packet-id lists ([`super::redelivery::MAX_PER_PKID`]).
    pub evicted: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
}

/// Where commit notices go, by [`SourceId`]. Shared with the running writer thread, so sources
/// can be added and retired while it runs (configuration reload restarts sources).
#[derive(Debug, Clone, Default)]
pub struct SourceRegistry {
    sinks: std::sync::Arc<std::sync::Mutex<Vec<Option<mpsc::Sender<Committed>>>>>,
}

impl SourceRegistry {
    /// Registers a source; its [`Committed`] notices arrive on the returned receiver.
    pub fn add_source(&self, capacity: usize) -> (SourceId, mpsc::Receiver<Committed>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let mut sinks = self.lock();
        sinks.push(Some(tx));
        (sinks.len() - 1, rx)
    }

    /// Forgets a stopped source (its late notices are dropped; the broker redelivers).
    pub fn retire(&self, id: SourceId) {
        if let Some(slot) = self.lock().get_mut(id) {
            *slot = None;
        }
    }

    fn snapshot(&self) -> Vec<Option<mpsc::Sender<Committed>>> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<mpsc::Sender<Committed>>>> {
        self.sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The group-commit writer. Build with [`Writer::new`], register sources, then [`Writer::spawn`].
pub struct Writer {
    store: Store,
    rx: mpsc::Receiver<IngestItem>,
    /// One notice channel per registered source, indexed by [`SourceId`].
    sinks: SourceRegistry,
    linger: Duration,
    max_events: usize,
    dedupe: DedupePolicy,
    /// Woken after every commit that stored events (the forwarder waits on it).
    committed: std::sync::Arc<tokio::sync::Notify>,
}

impl Writer {
    /// A writer for `store` and the sender sources use to feed it (`capacity` items deep).
    pub fn new(
        store: Store,
        cfg: &StoreConfig,
        capacity: usize,
        committed: std::sync::Arc<tokio::sync::Notify>,
    ) -> (Writer, mpsc::Sender<IngestItem>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Writer {
                store,
                rx,
                sinks: SourceRegistry::default(),
                linger: cfg.commit_linger,
                max_events: cfg.commit_max_events.max(1),
                dedupe: DedupePolicy::from_config(cfg),
                committed,
            },
            tx,
        )
    }

    /// Registers a source; its [`Committed`] notices arrive on the returned receiver.
    pub fn add_source(&mut self, capacity: usize) -> (SourceId, mpsc::Receiver<Committed>) {
        self.sinks.add_source(capacity)
    }

    /// The registry, to add and retire sources after [`Writer::spawn`].
    pub fn registry(&self) -> SourceRegistry {
        self.sinks.clone()
    }

    /// Starts the writer thread. It ends once every ingest sender is dropped and everything
    /// received has been committed, or on `cancel` while it is paused or retrying.
    pub fn spawn(
        self,
        runtime: tokio::runtime::Handle,
        cancel: CancellationToken,
    ) -> Result<std::thread::JoinHandle<Result<(), StoreError>>, StoreError> {
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || self.run_blocking(&runtime, &cancel))
            .map_err(|e| StoreError::Join(format!("cannot start the store writer thread: {e}")))
    }

    fn run_blocking(
        mut self,
        rt: &tokio::runtime::Handle,
        cancel: &CancellationToken,
    ) -> Result<(), StoreError> {
        let mut batch: Vec<IngestItem> = Vec::with_capacity(self.max_events);
        let mut retry = Duration::from_millis(100);
        loop {
            if batch.is_empty() {
                if !self.wait_for_space(rt, cancel) {
                    return Ok(());
                }
                if !self.gather(rt, &mut batch) {
                    tracing::debug!("all sources closed; store writer done");
                    return Ok(());
                }
            }
            match self.commit(&mut batch) {
                Ok(report) => {
                    if self.store.stats.set_paused(false) {
                        tracing::info!("store writable again; ingest resumed");
                    }
                    self.after_commit(&mut batch, report);
                    retry = Duration::from_millis(100);
                }
                Err(e) => {
                    if !self.store.stats.set_paused(true) {
                        tracing::error!(error = %e, held = batch.len(), "cannot commit events (disk full?); ingest paused, nothing acknowledged, retrying");
                    }
                    // Reopen at once, not after the backoff: redb refuses every read until then,
                    // and the forwarder must keep draining (and deleting) while the disk is full —
                    // that is how space comes back.
                    if needs_reopen(&e) {
                        match self.store.recover() {
                            Ok(()) => tracing::warn!(
                                "event store reopened after an I/O error; the held batch is retried when space is freed"
                            ),
                            Err(re) => {
                                tracing::error!(error = %re, "cannot reopen the event store yet; retrying")
                            }
                        }
                    }
                    let cancelled = rt.block_on(async {
                        tokio::select! {
                            _ = cancel.cancelled() => true,
                            _ = self.store.space_freed.notified() => false,
                            _ = tokio::time::sleep(retry) => false,
                        }
                    });
                    if cancelled {
                        tracing::warn!(held = batch.len(), "shutdown while the store cannot commit; held events stay unacknowledged");
                        return Ok(());
                    }
                    retry = (retry * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Blocks while the backlog is at the buffer cap. Returns false on cancellation.
    fn wait_for_space(&self, rt: &tokio::runtime::Handle, cancel: &CancellationToken) -> bool {
        loop {
            let s = self.store.stats();
            if s.backlog_bytes < self.store.max_bytes {
                if !s.ingest_paused {
                    return true;
                }
                // Paused only by the cap (a commit error keeps its batch and does not get here).
                self.store.stats.set_paused(false);
                tracing::info!(
                    backlog_bytes = s.backlog_bytes,
                    "buffer below its cap; ingest resumed"
                );
                return true;
            }
            if !self.store.stats.set_paused(true) {
                tracing::error!(backlog_bytes = s.backlog_bytes, cap = self.store.max_bytes, "buffer cap reached: ingest paused, MQTT messages stay at the broker until the relay drains the backlog");
            }
            let cancelled = rt.block_on(async {
                tokio::select! {
                    _ = cancel.cancelled() => true,
                    _ = self.store.space_freed.notified() => false,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => false,
                }
            });
            if cancelled {
                return false;
            }
        }
    }

    /// Waits for a first item, then gathers more until the batch is full or the linger elapsed.
    /// Returns false when every sender is gone and nothing is left.
    fn gather(&mut self, rt: &tokio::runtime::Handle, batch: &mut Vec<IngestItem>) -> bool {
        let Some(first) = self.rx.blocking_recv() else {
            return false;
        };
        batch.push(first);
        let deadline = Instant::now() + self.linger;
        while batch.len() < self.max_events {
            match self.rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match rt.block_on(async { tokio::time::timeout(left, self.rx.recv()).await }) {
                        Ok(Some(item)) => batch.push(item),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        true
    }

    /// One durable transaction for the whole batch.
    fn commit(&self, batch: &mut [IngestItem]) -> Result<CommitReport, StoreError> {
        commit_batch_with(&self.store, batch, &self.dedupe)
    }

    fn after_commit(&self, batch: &mut Vec<IngestItem>, report: CommitReport) {
        let sinks = self.sinks.snapshot();
        let mut per_source: Vec<Vec<u64>> = vec![Vec::new(); sinks.len()];
        for item in batch.drain(..) {
            if let Some(tokens) = per_source.get_mut(item.source) {
                tokens.push(item.token);
            }
        }
        if report.dup_hash_mismatch > 0 || report.evicted > 0 {
            tracing::debug!(
                dup_not_recorded = report.dup_hash_mismatch,
                evicted = report.evicted,
                first_seq = report.first_seq,
                "redelivery record: DUP messages stored as new, oldest entries dropped"
            );
        }
        if report.stored > 0 {
            self.committed.notify_one();
            tracing::debug!(
                stored = report.stored,
                first_seq = report.first_seq,
                last_seq = report.last_seq,
                redelivered = report.already_committed,
                duplicates = report.duplicates,
                "committed"
            );
        }
        for (sink, tokens) in sinks.iter().zip(per_source) {
            let Some(sink) = sink.as_ref().filter(|_| !tokens.is_empty()) else {
                continue;
            };
            if sink.blocking_send(Committed { tokens }).is_err() {
                // The source is gone (shutdown): its messages stay unacknowledged and the broker
                // redelivers them; the dedupe table recognises them.
                tracing::debug!("source closed before its commit notice; broker will redeliver");
            }
        }
    }
}

/// [`commit_batch_with`] and the default scan-id retention.
pub fn commit_batch(store: &Store, batch: &mut [IngestItem]) -> Result<CommitReport, StoreError> {
    commit_batch_with(store, batch, &DedupePolicy::default())
}

/// Stores `batch` in one transaction (see the module doc); sets each stored event's `seq`.
/// Items carrying a scan id already committed are not stored ([`super::dedupe`]); the ids are
/// recorded and pruned (`dedupe`) in the same transaction.
pub fn commit_batch_with(
    store: &Store,
    batch: &mut [IngestItem],
    dedupe: &DedupePolicy,
) -> Result<CommitReport, StoreError> {
    let _guard = store.commit_guard();
    let db = store.db()?;
    let mut tx = db.begin_write()?;
    tx.set_durability(Durability::Immediate);
    let mut report = CommitReport::default();
    let (values, oldest) = {
        let mut meta = tx.open_table(META)?;
        let mut events = tx.open_table(EVENTS)?;
        let mut unconfirmed = tx.open_table(MQTT_UNCONFIRMED)?;
        let mut values = MetaValues::read(&meta)?;
        let mut buf = Vec::with_capacity(256);
        // Opened by the first item with a scan id only: batches without ids never touch it.
        let mut ids: Option<DedupeTx<'_>> = None;
        for item in batch.iter_mut() {
            if let Some(m) = &item.mqtt {
                let broker = m.broker.as_str();
                for (pkid, n) in &m.retire {
                    let Some(mut record) = unconfirmed
                        .get((broker, *pkid))?
                        .map(|g| PkidHashes::decode(g.value()))
                    else {
                        continue;
                    };
                    record.retire_oldest(usize::from(*n));
                    if record.is_empty() {
                        unconfirmed.remove((broker, *pkid))?;
                    } else {
                        unconfirmed.insert((broker, *pkid), record.encode().as_slice())?;
                    }
                }
                let key = (broker, m.pkid);
                let mut record = unconfirmed
                    .get(key)?
                    .map(|g| PkidHashes::decode(g.value()))
                    .unwrap_or_default();
                match redelivery_decision(m.dup, &record, m.hash) {
                    RedeliveryDecision::AlreadyCommitted => {
                        report.already_committed += 1;
                        continue;
                    }
                    RedeliveryDecision::Store => {
                        if m.dup && !record.is_empty() {
                            report.dup_hash_mismatch += 1;
                        }
                        if record.push(m.hash) {
                            report.evicted += 1;
                        }
                        unconfirmed.insert(key, record.encode().as_slice())?;
                    }
                }
            }
            if let Some(id) = item.scan_id.as_deref() {
                let d = match &mut ids {
                    Some(d) => d,
                    None => ids.insert(DedupeTx::open(&tx)?),
                };
                if d.check_and_record(&item.event.device, id, item.event.received_at)? {
                    tracing::debug!(device = %item.event.device, scan_id = %id, "scan id already committed: acknowledged, not stored again");
                    continue;
                }
            }
            let more = item.mqtt.as_mut().map(|m| m.more_events.iter_mut());
            for event in std::iter::once(&mut item.event).chain(more.into_iter().flatten()) {
                let seq = values.next_seq;
                event.seq = seq;
                buf.clear();
                let bytes = postcard::to_extend(&*event, std::mem::take(&mut buf))?;
                events.insert(seq, bytes.as_slice())?;
                values.next_seq += 1;
                values.backlog_events += 1;
                values.backlog_bytes += bytes.len() as u64;
                if matches!(event.body, EventBody::Quarantined(_)) {
                    values.quarantine_count += 1;
                }
                report.stored += 1;
                report.first_seq.get_or_insert(seq);
                report.last_seq = Some(seq);
                buf = bytes;
            }
        }
        if let Some(mut d) = ids {
            d.prune(dedupe, crate::now_micros())?;
            report.duplicates = d.duplicates;
        }
        values.write(&mut meta)?;
        (values, super::oldest_received_at(&events)?)
    };
    tx.commit()?;
    store.stats.publish(&values, oldest);
    store.count_duplicates(report.duplicates);
    Ok(report)
}

/// Whether redb refuses further work until the database is reopened.
fn needs_reopen(e: &StoreError) -> bool {
    use redb::{CommitError as C, StorageError as S, TransactionError as T};
    match e {
        StoreError::Recovering | StoreError::Open { .. } => true,
        StoreError::Storage(S::PreviousIo) | StoreError::Commit(C::Storage(S::PreviousIo)) => true,
        StoreError::Transaction(t) => matches!(**t, T::Storage(S::PreviousIo)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_hash_separates_topic_from_payload_and_is_stable() {
        assert_ne!(message_hash("a/b", b"c"), message_hash("a/", b"bc"));
        assert_eq!(message_hash("t", b"p"), message_hash("t", b"p"));
        // Pinned against an independent FNV-1a: the stored hashes must survive upgrades.
        assert_eq!(
            u64::from_le_bytes(message_hash("t", b"p")),
            fnv1a(&[1, 0, 0, 0, b't', b'p'])
        );
    }

    fn fnv1a(bytes: &[u8]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        h
    }
}

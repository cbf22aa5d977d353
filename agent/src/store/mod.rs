//! The agent's durable event buffer: one redb 2 file, `state_dir/agent.redb`.
//!
//! The store owns every byte on disk. Writes happen only in the group-commit [`writer`] thread
//! (events in) and in [`Store::delete_upto`] (events out, after the relay's `Ack`). redb
//! serialises write transactions and each one rewrites the `meta` counters it read, so the
//! counters always agree with the `events` table.
//!
//! # Durability of deletes
//!
//! Ingest commits are always `Durability::Immediate` (fsync): an event is acknowledged to its
//! source only once it is on disk. A delete after the relay's `Ack` may be non-durable
//! ([`DeleteDurability::Deferred`], redb `Durability::None`: no fsync; the forwarder makes one
//! delete durable at least every few hundred milliseconds, see `forwarder`). That is safe:
//! - redb keeps a non-durable commit visible to every later transaction of this process and
//!   persists it with the next durable commit (the writer's next ingest commit, the next durable
//!   delete, or the commit redb makes when the database is closed cleanly).
//! - If the process or the machine dies first, the file comes back at its last durable commit:
//!   the events of the lost delete are back in `events`, and `meta` (`next_seq`, counters) is the
//!   one of that same commit, which agrees with it. Those events were acknowledged by the relay,
//!   which keeps them durably keyed by `(site, seq)`; the forwarder sends them again, the relay
//!   counts them as duplicates and acknowledges them, and they are deleted again. Nothing acked
//!   is lost and nothing reaches Odoo twice (invariants 1, 4, 6).
//! - A seq is never reused: `next_seq` is written only by ingest commits, which are durable, and
//!   a delete rewrites the value it read. A lost delete cannot take `next_seq` back past an event
//!   that was ever acknowledged to a source. `agent/tests/forwarder_deferred_delete.rs` cuts the
//!   power under a store (a backend keeping only synced bytes) after non-durable deletes, reopens
//!   it and resends; the e2e SIGKILL loops do the same against the real relay.
//! - redb frees the pages of a non-durable delete only at the next durable commit, so the
//!   periodic durable delete also bounds how much the file grows during a long drain.
//!
//! # On-disk layout (redb tables)
//!
//! | table           | key                                  | value |
//! |-----------------|--------------------------------------|-------|
//! | `events`        | `u64` seq (redb: 8 bytes little-endian) | postcard-encoded [`scanbridge_protocol::Event`] (the event's own `seq` field equals the key) |
//! | `meta`          | `&str` name (UTF-8)                  | `u64` (8 bytes little-endian) |
//! | `mqtt_unconfirmed` | `(&str broker name, u16 packet id)` (redb tuple: 4-byte LE length of the name, name bytes, 2-byte LE packet id) | `&[u8]`: 1 to 32 hashes of 8 bytes, oldest first, each FNV-1a 64 of (topic length as u32 LE, topic bytes, payload bytes), little-endian — since schema 3 |
//! | `meta_text`     | `&str` name (UTF-8)                  | `&str` (UTF-8) — since schema 2 |
//! | `scan_ids`, `scan_id_order` | (device, scan id); counter | scan-id dedupe, see [`dedupe`] (created on first use, ignored by older agents) |
//!
//! `meta` keys:
//! - `schema_version` — layout version of this file (currently [`SCHEMA_VERSION`] = 3).
//! - `next_seq` — the seq the next committed event gets. Starts at 1, only grows, is written in
//!   the same transaction as the events it numbers, so a seq is never reused — also after a crash,
//!   and also after every event has been deleted.
//! - `backlog_events` / `backlog_bytes` — count and total value bytes of rows in `events`.
//! - `quarantine_count` — quarantined payloads committed since the store was created.
//!
//! `mqtt_unconfirmed` is the redelivery-dedupe record described in [`writer`] and [`redelivery`].
//!
//! `meta_text` keys: `site` — the site whose events this store holds, bound at the first open by
//! an agent configured for it ([`Store::bind_site`]); `upgraded_from` — the schema the file had
//! before its last upgrade; `store_id` — 16 random bytes as 32 hex digits, written once when the
//! store is created (a store of an older agent gets one at its first open, no layout change),
//! never changed: the forwarder sends it as the `scanbridge-store-id` header, and the relay refuses
//! (409) a store whose seqs collide with another store's it already holds (a replaced box, a
//! deleted file); `scanbridge-agent store renumber` ([`renumber`], [`renumber_store`]) is the way out.
//!
//! # Schema versions and upgrades
//!
//! | version | written by | layout |
//! |---|---|---|
//! | 1 | the first release | `events`, `meta`, `mqtt_inflight` |
//! | 2 | 2026-11 | + `meta_text` (site binding) |
//! | 3 | this release | `mqtt_inflight` (one hash per packet id) → `mqtt_unconfirmed` (a list per packet id; each old row becomes a one-entry list) |
//!
//! Opening reads `schema_version` first, in a read transaction: a file from a *newer* agent is
//! refused before anything is written ([`StoreError::NewerSchema`]), so an accidental downgrade
//! cannot damage it. An older file is upgraded step by step ([`migrate`]) in the same durable
//! write transaction that stamps the new version: an upgrade either happens completely or not
//! at all. Events, seqs and counters are never rewritten by an upgrade; dedupe rows are carried
//! over. A new store is created at the current version. `agent/tests/store_upgrade.rs` opens a
//! committed schema-1 file (`agent/tests/fixtures/`) and forwards its backlog.
//!
//! redb's file does not shrink when events are deleted; freed pages are reused by later writes.

pub mod dedupe;
pub mod redelivery;
pub mod renumber;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use scanbridge_protocol::{Event, UnixMicros};

pub use renumber::Renumbered;
pub use writer::{
    redelivery_decision, Committed, IngestItem, MqttMark, RedeliveryDecision, SourceId, Writer,
};

/// `events`: seq → postcard [`Event`].
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// `meta`: counter name → value.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `mqtt_inflight` (schemas 1 and 2): (broker, packet id) → hash of topic + payload. Replaced by
/// [`MQTT_UNCONFIRMED`]; read only by the upgrade.
pub const MQTT_INFLIGHT: TableDefinition<(&str, u16), [u8; 8]> =
    TableDefinition::new("mqtt_inflight");
/// `mqtt_unconfirmed` (schema 3): (broker, packet id) → unconfirmed hashes, oldest first
/// ([`redelivery::PkidHashes`]).
pub const MQTT_UNCONFIRMED: TableDefinition<(&str, u16), &[u8]> =
    TableDefinition::new("mqtt_unconfirmed");
/// `meta_text` (schema 2): text facts about the store (`site`, `upgraded_from`).
pub const META_TEXT: TableDefinition<&str, &str> = TableDefinition::new("meta_text");
/// `meta_text` key: the site the store belongs to.
pub const META_TEXT_SITE: &str = "site";
/// `meta_text` key: this store's random identity (32 lowercase hex digits), written once when
/// the store is created (or first opened by an agent that knows it). Sent with every batch so
/// the relay can tell a new store that restarted the numbering from the one it knows.
pub const META_TEXT_STORE_ID: &str = "store_id";

pub const META_SCHEMA_VERSION: &str = "schema_version";
pub const META_NEXT_SEQ: &str = "next_seq";
pub const META_BACKLOG_EVENTS: &str = "backlog_events";
pub const META_BACKLOG_BYTES: &str = "backlog_bytes";
pub const META_QUARANTINE_COUNT: &str = "quarantine_count";

/// The layout version this build writes (see the module doc for the history).
pub const SCHEMA_VERSION: u64 = 3;
/// redb page cache. redb's default (1 GiB) would let a large backlog inflate the agent's memory;
/// the access pattern (append at the end, read and delete at the front) needs little cache.
/// Measured (release, 2-core box): 2 MiB keeps peak RSS at ~18-20 MB with a 300k-event backlog
/// (8 MiB: ~26 MB) at the same ~75-80k events/s durable ingest.
const CACHE_BYTES: usize = 2 * 1024 * 1024;

/// Why the store failed. Storage errors are retryable (the writer holds its batch and retries);
/// a corrupt row or a newer schema needs an operator.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the event store {path}: {source} (is another agent running on it?)")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("event store I/O failed (disk full or failing?): {0}")]
    Storage(#[from] redb::StorageError),
    #[error("event store transaction failed: {0}")]
    Transaction(Box<redb::TransactionError>),
    #[error("event store table error: {0}")]
    Table(#[from] redb::TableError),
    #[error("event store commit failed (disk full or failing?): {0}")]
    Commit(#[from] redb::CommitError),
    #[error("stored event {seq} cannot be decoded ({detail}); the store is damaged, restore it or move it aside")]
    Corrupt { seq: u64, detail: String },
    #[error("cannot encode event: {0}")]
    Encode(#[from] postcard::Error),
    #[error("event store was written by a newer agent (schema {found}, this build knows up to {SCHEMA_VERSION}); the file was left untouched: install the newer agent again")]
    NewerSchema { found: u64 },
    #[error("event store {path} holds events of site {stored}, but the configuration says site {configured}; a store belongs to one site: forward its backlog with site = \"{stored}\", or move the file aside to start an empty store")]
    SiteMismatch {
        path: PathBuf,
        stored: String,
        configured: String,
    },
    #[error("event store is being reopened after an I/O error; retrying")]
    Recovering,
    #[error("there is no event store at {path} (check state_dir in the configuration)")]
    Missing { path: PathBuf },
    #[error("the event store {path} is in use: the agent is running on it; stop it first (systemctl stop scanbridge-agent) and run the command again")]
    InUse { path: PathBuf },
    #[error("refusing to renumber: this store has already forwarded events the relay acknowledged (it starts at seq {oldest}, the ones before were deleted), so the relay may hold some of its events and would store them again under new seqs; renumber only a store the relay refused (409) from its first batch, or pass --force if you are sure")]
    AlreadyForwarded { oldest: u64 },
    #[error("store task failed: {0}")]
    Join(String),
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        StoreError::Transaction(Box::new(e))
    }
}

/// Cheap-to-read store counters, kept in memory and updated after every commit.
#[derive(Debug, Default)]
pub struct Stats {
    backlog_events: AtomicU64,
    backlog_bytes: AtomicU64,
    next_seq: AtomicU64,
    quarantine_count: AtomicU64,
    /// `received_at` of the oldest stored event; `i64::MIN` when empty.
    oldest_received_at: AtomicI64,
    ingest_paused: AtomicBool,
    /// Scan copies recognised by their `(device, id)` and not stored ([`dedupe`]).
    duplicates_suppressed: AtomicU64,
    /// Held from `begin_write` to publishing the counters, so counters are published in commit order.
    commit_lock: std::sync::Mutex<()>,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub backlog_events: u64,
    pub backlog_bytes: u64,
    pub next_seq: u64,
    pub quarantine_count: u64,
    pub oldest_received_at: Option<UnixMicros>,
    pub ingest_paused: bool,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let oldest = self.oldest_received_at.load(Ordering::Acquire);
        StatsSnapshot {
            backlog_events: self.backlog_events.load(Ordering::Acquire),
            backlog_bytes: self.backlog_bytes.load(Ordering::Acquire),
            next_seq: self.next_seq.load(Ordering::Acquire),
            quarantine_count: self.quarantine_count.load(Ordering::Acquire),
            oldest_received_at: (oldest != i64::MIN).then_some(oldest),
            ingest_paused: self.ingest_paused.load(Ordering::Acquire),
        }
    }

    fn set_paused(&self, paused: bool) -> bool {
        self.ingest_paused.swap(paused, Ordering::AcqRel)
    }

    fn publish(&self, m: &MetaValues, oldest: Option<UnixMicros>) {
        self.backlog_events
            .store(m.backlog_events, Ordering::Release);
        self.backlog_bytes.store(m.backlog_bytes, Ordering::Release);
        self.next_seq.store(m.next_seq, Ordering::Release);
        self.quarantine_count
            .store(m.quarantine_count, Ordering::Release);
        self.oldest_received_at
            .store(oldest.unwrap_or(i64::MIN), Ordering::Release);
    }
}

/// The `meta` counters, as read inside a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MetaValues {
    next_seq: u64,
    backlog_events: u64,
    backlog_bytes: u64,
    quarantine_count: u64,
}

impl MetaValues {
    fn read(meta: &impl ReadableTable<&'static str, u64>) -> Result<MetaValues, StoreError> {
        let get = |k: &str, default: u64| -> Result<u64, StoreError> {
            Ok(meta.get(k)?.map(|g| g.value()).unwrap_or(default))
        };
        Ok(MetaValues {
            next_seq: get(META_NEXT_SEQ, 1)?,
            backlog_events: get(META_BACKLOG_EVENTS, 0)?,
            backlog_bytes: get(META_BACKLOG_BYTES, 0)?,
            quarantine_count: get(META_QUARANTINE_COUNT, 0)?,
        })
    }

    fn write(&self, meta: &mut redb::Table<&'static str, u64>) -> Result<(), StoreError> {
        meta.insert(META_NEXT_SEQ, self.next_seq)?;
        meta.insert(META_BACKLOG_EVENTS, self.backlog_events)?;
        meta.insert(META_BACKLOG_BYTES, self.backlog_bytes)?;
        meta.insert(META_QUARANTINE_COUNT, self.quarantine_count)?;
        Ok(())
    }
}

/// What [`Store::delete_upto`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    pub events: u64,
    pub bytes: u64,
}

/// How a delete after the relay's `Ack` is committed (module doc: "Durability of deletes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteDurability {
    /// fsync before returning (redb `Durability::Immediate`).
    Immediate,
    /// No fsync (redb `Durability::None`): persisted by the next durable commit; lost on a crash
    /// before that, which only makes the forwarder resend events the relay already holds.
    Deferred,
}

/// Opens (or reopens) the redb database.
pub type Opener = Box<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// The database, swappable so it can be reopened after an I/O error without restarting.
struct DbSlot {
    db: std::sync::Mutex<Option<Arc<Database>>>,
    opener: Opener,
}

/// Handle to the open store; cheap to clone, shared by the writer, the forwarder and status.
#[derive(Clone)]
pub struct Store {
    slot: Arc<DbSlot>,
    stats: Arc<Stats>,
    path: PathBuf,
    max_bytes: u64,
    /// Signalled when space is freed, so a paused writer resumes at once.
    space_freed: Arc<tokio::sync::Notify>,
    /// `meta_text.store_id`, read (or created) at open; never changes.
    store_id: Arc<str>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) `path`, creating its directory and tables, and loads the counters.
    /// Blocking: call before the runtime is busy or via `spawn_blocking`.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::StateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let file = path.to_path_buf();
        Store::open_with(
            path,
            max_bytes,
            Box::new(move || {
                redb::Builder::new()
                    .set_cache_size(CACHE_BYTES)
                    .create(&file)
            }),
        )
    }

    /// Opens the store through `opener`, which is called again to reopen the database after an
    /// I/O error (tests pass a fault-injecting storage backend here).
    pub fn open_with(path: &Path, max_bytes: u64, opener: Opener) -> Result<Store, StoreError> {
        let db = opener().map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let stats = Arc::new(Stats::default());
        let (values, oldest, store_id) = init_tables(&db)?;
        stats.publish(&values, oldest);
        Ok(Store {
            slot: Arc::new(DbSlot {
                db: std::sync::Mutex::new(Some(Arc::new(db))),
                opener,
            }),
            stats,
            path: path.to_path_buf(),
            max_bytes,
            space_freed: Arc::new(tokio::sync::Notify::new()),
            store_id: store_id.into(),
        })
    }

    /// This store's identity (`meta_text.store_id`, 32 hex digits), fixed when it was created.
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// The open database, or [`StoreError::Recovering`] while it is being reopened.
    /// Held from `begin_write` to publishing the counters by every write (ingest commits,
    /// deletes, renumbering), so counters are published in commit order.
    pub(crate) fn commit_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.stats
            .commit_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.slot
            .db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Recovering)
    }

    /// Reopens the database after redb reported an earlier I/O error (redb refuses all work until
    /// then; reopening runs its crash recovery, so the file is back at its last commit). Waits up
    /// to 10 s for in-flight reads to finish. Blocking.
    pub fn recover(&self) -> Result<(), StoreError> {
        let old = self
            .slot
            .db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(old) = old {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            drop(old);
        }
        let db = (self.slot.opener)().map_err(|source| StoreError::Open {
            path: self.path.clone(),
            source,
        })?;
        let (values, oldest, _) = init_tables(&db)?;
        self.stats.publish(&values, oldest);
        *self
            .slot
            .db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(db));
        Ok(())
    }

    /// Current counters (no I/O).
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The configured buffer cap.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Size of the store file on disk.
    pub fn disk_used_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Reads up to `max` events in seq order, starting at the oldest. Blocking.
    pub fn read_oldest_blocking(&self, max: usize) -> Result<Vec<Event>, StoreError> {
        self.read_from_blocking(0, max)
    }

    /// Reads up to `max` events in seq order, starting at the first seq `>= from` (the forwarder
    /// reads the batch after the one in flight while the delete of an earlier one may still be
    /// pending). Blocking.
    pub fn read_from_blocking(&self, from: u64, max: usize) -> Result<Vec<Event>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(EVENTS)?;
        let mut out = Vec::with_capacity(max.min(4096));
        for row in table.range(from..)?.take(max) {
            let (k, v) = row?;
            let seq = k.value();
            let ev: Event = postcard::from_bytes(v.value()).map_err(|e| StoreError::Corrupt {
                seq,
                detail: e.to_string(),
            })?;
            out.push(ev);
        }
        Ok(out)
    }

    /// Up to `max` stored rows from seq `from` on, in seq order, as `(seq, postcard bytes of the
    /// event)` exactly as stored, without decoding them (the forwarder sends these bytes).
    /// Blocking.
    pub fn read_raw_from_blocking(
        &self,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(EVENTS)?;
        let mut out = Vec::with_capacity(max.min(4096));
        for row in table.range(from..)?.take(max) {
            let (k, v) = row?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// [`Store::read_oldest_blocking`] on the blocking pool.
    pub async fn read_oldest(&self, max: usize) -> Result<Vec<Event>, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_oldest_blocking(max))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Deletes every event with `seq <= upto` in one durable transaction. Blocking.
    pub fn delete_upto_blocking(&self, upto: u64) -> Result<Deleted, StoreError> {
        self.delete_upto_with(upto, DeleteDurability::Immediate)
    }

    /// Deletes every event with `seq <= upto` in one transaction committed with `durability`
    /// (see "Durability of deletes" in the module doc). Blocking.
    pub fn delete_upto_with(
        &self,
        upto: u64,
        durability: DeleteDurability,
    ) -> Result<Deleted, StoreError> {
        let _guard = self.commit_guard();
        let db = self.db()?;
        let mut tx = db.begin_write()?;
        tx.set_durability(match durability {
            DeleteDurability::Immediate => Durability::Immediate,
            DeleteDurability::Deferred => Durability::None,
        });
        let (values, oldest, deleted) = {
            let mut meta = tx.open_table(META)?;
            let mut events = tx.open_table(EVENTS)?;
            let mut values = MetaValues::read(&meta)?;
            let mut deleted = Deleted {
                events: 0,
                bytes: 0,
            };
            // Seqs are stored consecutively: remove them one after another from the first (one
            // lookup each) and look for the next stored seq only after a gap. (redb's
            // `retain_in` halved the bench's drain rate: it copies the path of every removed row.)
            let mut next = events.first()?.map(|(k, _)| k.value());
            while let Some(seq) = next.filter(|s| *s <= upto) {
                let removed = events.remove(seq)?.map(|v| v.value().len() as u64);
                match removed {
                    Some(bytes) => {
                        deleted.events += 1;
                        deleted.bytes += bytes;
                        next = seq.checked_add(1);
                    }
                    None => next = events.first()?.map(|(k, _)| k.value()),
                }
            }
            values.backlog_events = values.backlog_events.saturating_sub(deleted.events);
            values.backlog_bytes = values.backlog_bytes.saturating_sub(deleted.bytes);
            values.write(&mut meta)?;
            (values, oldest_received_at(&events)?, deleted)
        };
        tx.commit()?;
        self.stats.publish(&values, oldest);
        if deleted.events > 0 {
            self.space_freed.notify_one();
        }
        Ok(deleted)
    }

    /// [`Store::delete_upto_blocking`] on the blocking pool.
    pub async fn delete_upto(&self, upto: u64) -> Result<Deleted, StoreError> {
        self.delete_upto_async(upto, DeleteDurability::Immediate)
            .await
    }

    /// [`Store::delete_upto_with`] on the blocking pool.
    pub async fn delete_upto_async(
        &self,
        upto: u64,
        durability: DeleteDurability,
    ) -> Result<Deleted, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.delete_upto_with(upto, durability))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Binds the store to `site` on first use, and refuses a store that holds another site's
    /// events ([`StoreError::SiteMismatch`]). Blocking.
    pub fn bind_site(&self, site: &str) -> Result<(), StoreError> {
        let db = self.db()?;
        let mut tx = db.begin_write()?;
        tx.set_durability(Durability::Immediate);
        {
            let mut t = tx.open_table(META_TEXT)?;
            let stored = t.get(META_TEXT_SITE)?.map(|g| g.value().to_string());
            match stored {
                Some(s) if s == site => {}
                Some(stored) => {
                    return Err(StoreError::SiteMismatch {
                        path: self.path.clone(),
                        stored,
                        configured: site.to_string(),
                    })
                }
                None => {
                    t.insert(META_TEXT_SITE, site)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A `meta_text` value (diagnostics and tests).
    pub fn meta_text(&self, key: &str) -> Result<Option<String>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let t = match tx.open_table(META_TEXT) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(t.get(key)?.map(|g| g.value().to_string()))
    }

    /// The layout version of the open file.
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        let db = self.db()?;
        stored_schema_version(&db)?.ok_or(StoreError::Corrupt {
            seq: 0,
            detail: "meta.schema_version is missing".into(),
        })
    }

    /// Number of packet ids with unconfirmed messages (`mqtt_unconfirmed` rows; diagnostics and
    /// tests).
    pub fn mqtt_inflight_len(&self) -> Result<u64, StoreError> {
        let tx = self.db()?.begin_read()?;
        Ok(tx.open_table(MQTT_UNCONFIRMED)?.len()?)
    }

    /// Unconfirmed message hashes recorded under `(broker, pkid)`, oldest first (tests).
    pub fn mqtt_unconfirmed(
        &self,
        broker: &str,
        pkid: u16,
    ) -> Result<redelivery::PkidHashes, StoreError> {
        let tx = self.db()?.begin_read()?;
        let t = tx.open_table(MQTT_UNCONFIRMED)?;
        let v = t.get((broker, pkid))?;
        Ok(v.map(|g| redelivery::PkidHashes::decode(g.value()))
            .unwrap_or_default())
    }
}

/// `scanbridge-agent store renumber`: opens the existing store at `path` (refusing a missing
/// file, a store in use by a running agent — redb's file lock — and another site's store) and
/// moves its events after `after` ([`Store::renumber_after`], `force` as there). Blocking.
pub fn renumber_store(
    path: &Path,
    site: &str,
    after: u64,
    force: bool,
) -> Result<Renumbered, StoreError> {
    if !path.exists() {
        return Err(StoreError::Missing {
            path: path.to_path_buf(),
        });
    }
    let store = Store::open(path, u64::MAX).map_err(|e| match e {
        StoreError::Open {
            path,
            source: redb::DatabaseError::DatabaseAlreadyOpen,
        } => StoreError::InUse { path },
        other => other,
    })?;
    store.bind_site(site)?;
    store.renumber_after(after, force)
}

/// `meta.schema_version` of a database, read without writing: `None` for a new (empty) file;
/// a `meta` table without the key is schema 1 (it was always stamped, but be lenient).
fn stored_schema_version(db: &Database) -> Result<Option<u64>, StoreError> {
    let tx = db.begin_read()?;
    let meta = match tx.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(Some(
        meta.get(META_SCHEMA_VERSION)?
            .map(|g| g.value())
            .unwrap_or(1),
    ))
}

/// Upgrades the layout from `from` to [`SCHEMA_VERSION`] inside `tx` (the caller stamps the
/// version and commits). Steps add tables or carry rows over; events and counters are never
/// rewritten.
pub fn migrate(tx: &redb::WriteTransaction, from: u64) -> Result<(), StoreError> {
    let mut v = from;
    while v < SCHEMA_VERSION {
        match v {
            // 1 → 2: the `meta_text` table (site binding); the site is bound at first open.
            1 => {
                let mut t = tx.open_table(META_TEXT)?;
                t.insert("upgraded_from", from.to_string().as_str())?;
            }
            // 2 → 3: one hash per packet id becomes a list per packet id (each row a one-entry
            // list), so copies of every generation of a reused id are recognised.
            2 => {
                {
                    let mut to = tx.open_table(MQTT_UNCONFIRMED)?;
                    let old = tx.open_table(MQTT_INFLIGHT)?;
                    for row in old.iter()? {
                        let (k, v) = row?;
                        let (broker, pkid) = k.value();
                        to.insert((broker, pkid), v.value().as_slice())?;
                    }
                }
                tx.delete_table(MQTT_INFLIGHT)?;
                let mut t = tx.open_table(META_TEXT)?;
                t.insert("upgraded_from", from.to_string().as_str())?;
            }
            other => {
                return Err(StoreError::Corrupt {
                    seq: 0,
                    detail: format!("meta.schema_version {other} is not a known layout"),
                })
            }
        }
        v += 1;
    }
    Ok(())
}

/// A new random store identity: 16 random bytes as 32 lowercase hex digits.
pub fn new_store_id() -> String {
    use std::fmt::Write as _;
    let bytes: [u8; 16] = rand::random();
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Creates the tables, checks the schema, upgrades an older layout, gives a store without an
/// identity one, and returns the counters (recounted if inconsistent) and the store id.
fn init_tables(db: &Database) -> Result<(MetaValues, Option<UnixMicros>, String), StoreError> {
    let version = stored_schema_version(db)?;
    if let Some(v) = version.filter(|v| *v > SCHEMA_VERSION) {
        return Err(StoreError::NewerSchema { found: v });
    }
    let mut tx = db.begin_write()?;
    tx.set_durability(Durability::Immediate);
    if let Some(v) = version.filter(|v| *v < SCHEMA_VERSION) {
        migrate(&tx, v)?;
        tracing::info!(
            from = v,
            to = SCHEMA_VERSION,
            "event store upgraded to the current layout (backlog and seqs unchanged)"
        );
    }
    let (values, oldest, store_id) = {
        let mut meta = tx.open_table(META)?;
        let events = tx.open_table(EVENTS)?;
        tx.open_table(MQTT_UNCONFIRMED)?;
        let mut text = tx.open_table(META_TEXT)?;
        let stored_id = text.get(META_TEXT_STORE_ID)?.map(|g| g.value().to_string());
        let store_id = match stored_id {
            Some(id) => id,
            None => {
                let id = new_store_id();
                text.insert(META_TEXT_STORE_ID, id.as_str())?;
                tracing::info!(store_id = %id, "event store identity created");
                id
            }
        };
        meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
        let mut values = MetaValues::read(&meta)?;
        // The counters are maintained transactionally; recount only if they disagree with the
        // table (cheap sanity check on the row count).
        let rows = events.len()?;
        if rows != values.backlog_events {
            let mut bytes = 0u64;
            let mut max_seq = 0u64;
            for row in events.iter()? {
                let (k, v) = row?;
                bytes += v.value().len() as u64;
                max_seq = max_seq.max(k.value());
            }
            values.backlog_events = rows;
            values.backlog_bytes = bytes;
            values.next_seq = values.next_seq.max(max_seq + 1);
            tracing::warn!(
                rows,
                bytes,
                "store counters recomputed from the events table"
            );
        }
        values.write(&mut meta)?;
        (values, oldest_received_at(&events)?, store_id)
    };
    tx.commit()?;
    Ok((values, oldest, store_id))
}

/// `received_at` of the first event of the table.
fn oldest_received_at(
    events: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Option<UnixMicros>, StoreError> {
    match events.first()? {
        Some((k, v)) => {
            let ev: Event = postcard::from_bytes(v.value()).map_err(|e| StoreError::Corrupt {
                seq: k.value(),
                detail: e.to_string(),
            })?;
            Ok(Some(ev.received_at))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests;

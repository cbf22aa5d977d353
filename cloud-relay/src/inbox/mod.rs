//! The relay's durable store (`state_dir/relay.redb`): inbox, dedupe, push cursors, outcomes,
//! dead letters, quarantine, agent status and counters, all in one redb file.
//!
//! Every method is blocking (redb does file I/O and fsync): call them from `spawn_blocking`.
//! Every write transaction commits with `Durability::Immediate` (fsync) before it returns, so a
//! caller may acknowledge what it wrote as soon as the call returns.
//!
//! # Tables
//!
//! Keys and values use redb's own fixed encodings (integers little-endian; `&str`/`&[u8]`
//! length-prefixed inside tuples). Timestamps are microseconds since the Unix epoch (UTC).
//!
//! | table            | key                          | value                                                   |
//! |------------------|------------------------------|---------------------------------------------------------|
//! | `inbox_batches`  | `(site: &str, first_seq: u64)` | `(last_seq: u64, format: u8, bytes: &[u8])`: one row per stored batch, the enveloped `Batch` exactly as the agent POSTed it (layout, formats and the upgrade from the per-event `inbox` table of older relays in `inbox/rows.rs`) |
//! | `site_highest`   | `site: &str`                 | `u64`: highest seq ever received for the site            |
//! | `agent_status`   | `site: &str`                 | `(received_at: i64, agent: &str, status: &[u8])`; `status` is an enveloped `AgentStatus` (`scanbridge_protocol::encode`, magic + version + CRC), empty when the last batch carried none |
//! | `push_cursor`    | `site: &str`                 | `u64`: next seq the pusher has to handle; every seq below has an outcome |
//! | `push_inflight`  | `site: &str`                 | `(first_seq: u64, last_seq: u64)`: the chunk last sent to Odoo, written before the first write call so a retry (also after a restart) re-forms the same chunk and the same TAG |
//! | `outcomes`       | `(site: &str, seq: u64)`     | `(kind: u8, detail: &str)`; kind 1 applied (detail = TAG), 2 dead-lettered (reason), 3 quarantined (reason) |
//! | `dead_letters`   | `(site: &str, seq: u64)`     | `(at: i64, reason: &str)`; the event itself stays in `inbox` for replay |
//! | `quarantine`     | `(site: &str, seq: u64)`     | `(received_at: i64, raw: &[u8], reason: &str)`             |
//! | `counters`       | `(site: &str, name: &str)`   | `u64`; names in [`counter`]                               |
//! | `intake_log`     | `(site: &str, first_seq: u64)` | `(stored_at: i64, last_seq: u64)`: when the relay stored the newly inserted events `first_seq..=last_seq` of one batch (for the trace; one row per batch, see [`fleet`]) |
//! | `site_store`     | `site: &str`                 | `(store_id: &str, since_seq: u64)`: the agent event store (its `scanbridge-store-id` header) whose events the site currently sends, and the first seq of the batch that made it current |
//! | `store_conflict` | `site: &str`                 | `(at: i64, store_id: &str, first_seq: u64, relay_highest: u64)`: the site's open store conflict, the last refused batch's; removed by the next batch that stores new events (the fleet page and the site status show it) |
//!
//! # Store identity (`site_store`)
//!
//! Dedupe by `(site, seq)` assumes one numbering per site. A replaced gateway box, or a deleted
//! agent store file, starts again at seq 1: its new events would all be "duplicates" and the
//! agent would delete them. So [`Inbox::accept_batch_from`] checks the batch's store id in the
//! same write transaction: no row yet → the store is recorded; the current store → as before;
//! another store whose first seq is above everything the site ever sent (`site_highest` and the retention
//! watermark) → accepted, it becomes current (a replaced box that was renumbered); another store
//! whose seqs collide → refused ([`StoreConflict`], intake answers 409), nothing stored, the
//! `store_conflicts` counter counts it and `store_conflict` keeps the last refusal until a batch
//! stores new events (so the site's status shows the conflict while it is open). A batch
//! without a store id (an older agent) and an empty batch (heartbeat) are not checked. The first
//! store id a site ever sends is trusted (a relay upgraded after a box was replaced cannot tell).
//!
//! The dead-letter lifecycle, held and requeued events, Odoo references of applied events and
//! the flows' state live in more tables, described in [`lifecycle`]. Retention (pruning finished
//! events older than `[retention] keep_days`, and the per-site watermark `pruned_through` below
//! which every seq counts as a duplicate) is described in [`retention`].
//!
//! Invariants: an event is stored once and never overwritten: intake stores only the seqs of a
//! batch that no `inbox_batches` row covers yet, the rest are duplicates (dedupe by `(site, seq)`);
//! `push_cursor` and the `outcomes`/`dead_letters` rows of the events it passes are written in
//! the same transaction; every seq below the cursor has an outcome (held events included) or
//! was pruned (`<= pruned_through`, see [`retention`]).

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, TableDefinition};
use scanbridge_protocol::{Batch, Event, EventBody};

const SITE_HIGHEST: TableDefinition<&str, u64> = TableDefinition::new("site_highest");
const AGENT_STATUS: TableDefinition<&str, (i64, &str, &[u8])> =
    TableDefinition::new("agent_status");
const PUSH_CURSOR: TableDefinition<&str, u64> = TableDefinition::new("push_cursor");
const PUSH_INFLIGHT: TableDefinition<&str, (u64, u64)> = TableDefinition::new("push_inflight");
const OUTCOMES: TableDefinition<(&str, u64), (u8, &str)> = TableDefinition::new("outcomes");
const DEAD_LETTERS: TableDefinition<(&str, u64), (i64, &str)> =
    TableDefinition::new("dead_letters");
const QUARANTINE: TableDefinition<(&str, u64), (i64, &[u8], &str)> =
    TableDefinition::new("quarantine");
const COUNTERS: TableDefinition<(&str, &str), u64> = TableDefinition::new("counters");
const INTAKE_LOG: TableDefinition<(&str, u64), (i64, u64)> = TableDefinition::new("intake_log");
const SITE_STORE: TableDefinition<&str, (&str, u64)> = TableDefinition::new("site_store");
const STORE_CONFLICT: TableDefinition<&str, (i64, &str, u64, u64)> =
    TableDefinition::new("store_conflict");

pub mod fleet;
mod rows;
use rows::INBOX_BATCHES;

pub mod lifecycle;
pub mod retention;
pub use lifecycle::{
    DeadLetterDetail, DeadLetterState, DeadLetterSummary, FlowView, OdooRef, ReplayResult,
    StepCommit,
};

/// Names of the per-site counters.
pub mod counter {
    pub const RECEIVED: &str = "received";
    pub const DUPLICATES: &str = "duplicates";
    pub const APPLIED: &str = "applied";
    pub const DEAD_LETTERED: &str = "dead_lettered";
    pub const QUARANTINED: &str = "quarantined";
    /// Finished events removed by retention (see [`super::retention`]).
    pub const PRUNED: &str = "pruned";
    /// Batches refused because their seqs collide with another agent store's (module doc,
    /// "Store identity").
    pub const STORE_CONFLICTS: &str = "store_conflicts";
}

const KIND_APPLIED: u8 = 1;
const KIND_DEAD_LETTERED: u8 = 2;
const KIND_QUARANTINED: u8 = 3;
/// Held back behind an open dead letter of the same document (see [`lifecycle`]).
const KIND_HELD: u8 = 4;

/// The store failed; the caller answers 503 (intake) or retries later (pusher).
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("relay store {path} cannot be opened: {source} (is another relay running on this state_dir?)")]
    Open {
        path: PathBuf,
        source: Box<redb::Error>,
    },
    #[error("relay store I/O failed: {0} (disk full or failing?)")]
    Storage(Box<redb::Error>),
    #[error("relay store worker failed: {0}")]
    Worker(String),
}

macro_rules! redb_from {
    ($($t:ty),*) => {$(
        impl From<$t> for InboxError {
            fn from(e: $t) -> Self {
                InboxError::Storage(Box::new(e.into()))
            }
        }
    )*};
}
redb_from!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

/// What happened to one event in the pusher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written to Odoo by the chunk (or flow step) `tag`; `odoo` is the record it wrote.
    Applied { tag: String, odoo: Option<OdooRef> },
    /// Kept in `dead_letters` with Odoo's (or the relay's) reason.
    DeadLettered { reason: String },
    /// A quarantined payload; already recorded in `quarantine` at intake.
    Quarantined { reason: String },
    /// Held back behind the open dead letter `behind` of the same Odoo `document` (ordering
    /// rule, see [`lifecycle`]); released when that dead letter is replayed or skipped.
    Held { behind: u64, document: String },
}

/// The result of storing one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub inserted: u32,
    pub duplicates: u32,
}

/// A batch refused because its seqs collide with those of another agent store of the site
/// (module doc, "Store identity"). Nothing of it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConflict {
    /// The refused batch's store id.
    pub store_id: String,
    /// The store the site's stored seqs came from.
    pub current_store: String,
    /// The refused batch's first seq.
    pub first_seq: u64,
    /// The highest seq the relay holds (or pruned) for the site: the agent must renumber its
    /// events to start after it.
    pub relay_highest: u64,
    /// `store_conflicts` of the site, this one included.
    pub conflicts: u64,
}

/// An event read back for the pusher; `Err` holds why its stored bytes do not decode.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: Result<Event, String>,
}

/// The pusher's view of one site.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Next seq to handle.
    pub cursor: u64,
    /// The chunk last sent to Odoo, if any.
    pub inflight: Option<(u64, u64)>,
    /// Events with `seq >= cursor`, in seq order, at most the requested limit.
    pub events: Vec<StoredEvent>,
}

/// A dead letter as listed for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub seq: u64,
    pub at: i64,
    pub reason: String,
}

/// A quarantined payload as listed for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry {
    pub seq: u64,
    pub received_at: i64,
    pub raw: Vec<u8>,
    pub reason: String,
}

/// Per-site counters and cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteStats {
    pub received: u64,
    pub duplicates: u64,
    pub applied: u64,
    pub dead_lettered: u64,
    pub quarantined: u64,
    pub cursor: u64,
    pub highest_seq: Option<u64>,
    /// Finished events removed by retention.
    pub pruned: u64,
    /// Every seq up to this one was pruned (retention's watermark), if any.
    pub pruned_through: Option<u64>,
    /// Batches refused because their seqs collided with another agent store's.
    pub store_conflicts: u64,
    /// The agent store the site currently sends from, and the seq it started at.
    pub current_store: Option<(String, u64)>,
    /// The last refused batch's conflict, while no batch has stored new events since.
    pub open_store_conflict: Option<OpenStoreConflict>,
}

/// A store conflict not resolved yet (`store_conflict` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenStoreConflict {
    /// When the last batch was refused, µs.
    pub at: i64,
    /// The refused store.
    pub store_id: String,
    /// The refused batch's first seq.
    pub first_seq: u64,
    /// The highest seq the relay holds (or pruned) for the site: renumber after it.
    pub relay_highest: u64,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    db: Arc<Database>,
}

impl Inbox {
    /// Opens (or creates) the store and its tables.
    pub fn open(path: &Path) -> Result<Inbox, InboxError> {
        let open_err = |e: redb::Error| InboxError::Open {
            path: path.to_path_buf(),
            source: Box::new(e),
        };
        let db = Database::create(path).map_err(|e| open_err(e.into()))?;
        let mut txn = db.begin_write().map_err(|e| open_err(e.into()))?;
        txn.set_durability(Durability::Immediate);
        {
            txn.open_table(INBOX_BATCHES)?;
            txn.open_table(SITE_HIGHEST)?;
            txn.open_table(AGENT_STATUS)?;
            txn.open_table(PUSH_CURSOR)?;
            txn.open_table(PUSH_INFLIGHT)?;
            txn.open_table(OUTCOMES)?;
            txn.open_table(DEAD_LETTERS)?;
            txn.open_table(QUARANTINE)?;
            txn.open_table(COUNTERS)?;
            lifecycle::create_tables(&txn)?;
            retention::create_tables(&txn)?;
            txn.open_table(INTAKE_LOG)?;
            txn.open_table(SITE_STORE)?;
            txn.open_table(STORE_CONFLICT)?;
        }
        txn.commit()?;
        rows::migrate_legacy(&db, rows::MIGRATE_CHUNK)?;
        Ok(Inbox { db: Arc::new(db) })
    }

    /// Stores a batch (already checked by intake: events consecutive from `first_seq`) for
    /// `site`: stores the events no row holds yet as one row over `body` (the enveloped batch
    /// exactly as received, which must be the bytes `batch` was decoded from), counts the ones
    /// already there, records quarantined payloads and the agent status, and commits durably.
    /// No store identity check: [`Inbox::accept_batch_from`] with no store id.
    pub fn accept_batch(
        &self,
        site: &str,
        batch: &Batch,
        body: &[u8],
        now: i64,
    ) -> Result<Accepted, InboxError> {
        match self.accept_batch_from(site, None, batch, body, now)? {
            Ok(accepted) => Ok(accepted),
            // Unreachable without a store id; kept total rather than panicking.
            Err(conflict) => Err(InboxError::Worker(format!(
                "unexpected store conflict without a store id: {conflict:?}"
            ))),
        }
    }

    /// [`Inbox::accept_batch`] for a batch sent by the agent store `store_id` (the
    /// `scanbridge-store-id` header; `None` for an older agent): first checks the store in the
    /// same transaction (module doc, "Store identity"). `Ok(Err(conflict))`: refused, nothing
    /// stored but the `store_conflicts` counter.
    pub fn accept_batch_from(
        &self,
        site: &str,
        store_id: Option<&str>,
        batch: &Batch,
        body: &[u8],
        now: i64,
    ) -> Result<Result<Accepted, StoreConflict>, InboxError> {
        let txn = self.write_txn()?;
        let mut accepted = Accepted {
            inserted: 0,
            duplicates: 0,
        };
        if let (Some(id), Some(first)) = (store_id, batch.events.first()) {
            if let Err(mut conflict) = check_store(&txn, site, id, first.seq)? {
                let mut counters = txn.open_table(COUNTERS)?;
                add(&mut counters, site, counter::STORE_CONFLICTS, 1)?;
                conflict.conflicts = counters
                    .get((site, counter::STORE_CONFLICTS))?
                    .map_or(1, |v| v.value());
                drop(counters);
                txn.open_table(STORE_CONFLICT)?.insert(
                    site,
                    (
                        now,
                        conflict.store_id.as_str(),
                        conflict.first_seq,
                        conflict.relay_highest,
                    ),
                )?;
                txn.commit()?;
                return Ok(Err(conflict));
            }
        }
        {
            let mut quarantined = 0u64;
            let mut stored_range: Option<(u64, u64)> = None;
            if let (Some(lo), Some(hi)) = (batch.events.first(), batch.events.last()) {
                let (lo, hi) = (lo.seq, hi.seq);
                let mut inbox = txn.open_table(INBOX_BATCHES)?;
                // Seqs of this batch already stored (a resend): usually one lookup finds none.
                // Seqs up to the retention watermark were stored, applied and pruned: duplicates.
                let mut present = rows::stored_ranges(&inbox, site, lo, hi)?;
                let pruned = txn
                    .open_table(retention::PRUNED_THROUGH)?
                    .get(site)?
                    .map(|v| v.value().0);
                if let Some(through) = pruned {
                    present.insert(0, (0, through));
                }
                let new = rows::uncovered(&present, lo, hi);
                for &(first, last) in &new {
                    inbox.insert((site, first), (last, rows::FORMAT_BATCH, body))?;
                }
                stored_range = new.first().zip(new.last()).map(|(f, l)| (f.0, l.1));
                let mut quarantine = None;
                for event in &batch.events {
                    if !new.iter().any(|&(f, l)| f <= event.seq && event.seq <= l) {
                        accepted.duplicates += 1;
                        continue;
                    }
                    accepted.inserted += 1;
                    if let EventBody::Quarantined(q) = &event.body {
                        if quarantine.is_none() {
                            quarantine = Some(txn.open_table(QUARANTINE)?);
                        }
                        if let Some(table) = quarantine.as_mut() {
                            table.insert(
                                (site, event.seq),
                                (event.received_at, q.raw.as_slice(), q.reason.as_str()),
                            )?;
                        }
                        quarantined += 1;
                    }
                }
            }
            if let Some((first, last)) = stored_range {
                txn.open_table(INTAKE_LOG)?
                    .insert((site, first), (now, last))?;
            }
            if accepted.inserted > 0 {
                // New events stored: whatever store conflict the site had is over.
                txn.open_table(STORE_CONFLICT)?.remove(site)?;
                let mut highest = txn.open_table(SITE_HIGHEST)?;
                let last = batch.events.last().map_or(0, |e| e.seq);
                let previous = highest.get(site)?.map(|v| v.value());
                if previous.is_none_or(|p| p < last) {
                    highest.insert(site, last)?;
                }
            }
            let mut counters = txn.open_table(COUNTERS)?;
            add(
                &mut counters,
                site,
                counter::RECEIVED,
                u64::from(accepted.inserted),
            )?;
            add(
                &mut counters,
                site,
                counter::DUPLICATES,
                u64::from(accepted.duplicates),
            )?;
            add(&mut counters, site, counter::QUARANTINED, quarantined)?;

            let status = match &batch.status {
                Some(s) => {
                    scanbridge_protocol::encode(s).map_err(|e| InboxError::Worker(e.to_string()))?
                }
                None => Vec::new(),
            };
            let mut statuses = txn.open_table(AGENT_STATUS)?;
            let keep_previous =
                status.is_empty() && statuses.get(site)?.is_some_and(|v| !v.value().2.is_empty());
            if !keep_previous {
                statuses.insert(site, (now, batch.agent.as_str(), status.as_slice()))?;
            }
        }
        txn.commit()?;
        Ok(Ok(accepted))
    }

    /// Sites that have events at or past their push cursor.
    pub fn sites_with_backlog(&self) -> Result<Vec<String>, InboxError> {
        let txn = self.db.begin_read()?;
        let highest = txn.open_table(SITE_HIGHEST)?;
        let cursors = txn.open_table(PUSH_CURSOR)?;
        let mut out = Vec::new();
        for row in highest.iter()? {
            let (site, high) = row?;
            let cursor = cursors.get(site.value())?.map_or(0, |v| v.value());
            if high.value() >= cursor {
                out.push(site.value().to_string());
            }
        }
        for site in self.sites_with_requeue()? {
            if !out.contains(&site) {
                out.push(site);
            }
        }
        Ok(out)
    }

    /// Reads the push cursor, the inflight chunk and up to `limit` events from the cursor on.
    pub fn pending(&self, site: &str, limit: usize) -> Result<Pending, InboxError> {
        let txn = self.db.begin_read()?;
        let cursor = txn
            .open_table(PUSH_CURSOR)?
            .get(site)?
            .map_or(0, |v| v.value());
        let inflight = txn.open_table(PUSH_INFLIGHT)?.get(site)?.map(|v| v.value());
        let events = rows::events_from(&txn.open_table(INBOX_BATCHES)?, site, cursor, limit)?;
        Ok(Pending {
            cursor,
            inflight,
            events,
        })
    }

    /// Records the chunk about to be sent to Odoo (durably, before the first write call).
    pub fn set_inflight(&self, site: &str, first: u64, last: u64) -> Result<(), InboxError> {
        let txn = self.write_txn()?;
        txn.open_table(PUSH_INFLIGHT)?.insert(site, (first, last))?;
        txn.commit()?;
        Ok(())
    }

    /// Moves the cursor to `new_cursor` and records `outcomes`, in one durable transaction.
    /// Clears the inflight chunk when the cursor passes it.
    pub fn commit_outcomes(
        &self,
        site: &str,
        new_cursor: u64,
        outcomes: &[(u64, Outcome)],
        now: i64,
    ) -> Result<(), InboxError> {
        let step = StepCommit {
            cursor: Some(new_cursor),
            outcomes: outcomes.to_vec(),
            ..StepCommit::default()
        };
        self.commit_step(site, &step, now)
    }

    /// Counters and cursor of one site.
    pub fn stats(&self, site: &str) -> Result<SiteStats, InboxError> {
        let txn = self.db.begin_read()?;
        let counters = txn.open_table(COUNTERS)?;
        let get = |name: &str| -> Result<u64, InboxError> {
            Ok(counters.get((site, name))?.map_or(0, |v| v.value()))
        };
        Ok(SiteStats {
            received: get(counter::RECEIVED)?,
            duplicates: get(counter::DUPLICATES)?,
            applied: get(counter::APPLIED)?,
            dead_lettered: get(counter::DEAD_LETTERED)?,
            quarantined: get(counter::QUARANTINED)?,
            cursor: txn
                .open_table(PUSH_CURSOR)?
                .get(site)?
                .map_or(0, |v| v.value()),
            highest_seq: txn.open_table(SITE_HIGHEST)?.get(site)?.map(|v| v.value()),
            pruned: get(counter::PRUNED)?,
            pruned_through: txn
                .open_table(retention::PRUNED_THROUGH)?
                .get(site)?
                .map(|v| v.value().0),
            store_conflicts: get(counter::STORE_CONFLICTS)?,
            current_store: txn.open_table(SITE_STORE)?.get(site)?.map(|v| {
                let (id, since) = v.value();
                (id.to_string(), since)
            }),
            open_store_conflict: txn.open_table(STORE_CONFLICT)?.get(site)?.map(|v| {
                let (at, store_id, first_seq, relay_highest) = v.value();
                OpenStoreConflict {
                    at,
                    store_id: store_id.to_string(),
                    first_seq,
                    relay_highest,
                }
            }),
        })
    }

    /// The outcome recorded for one event, if any.
    pub fn outcome(&self, site: &str, seq: u64) -> Result<Option<Outcome>, InboxError> {
        let txn = self.db.begin_read()?;
        Inbox::read_outcome(&txn, site, seq)
    }

    /// All dead letters of a site, in seq order.
    pub fn dead_letters(&self, site: &str) -> Result<Vec<DeadLetter>, InboxError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DEAD_LETTERS)?;
        let mut out = Vec::new();
        for row in table.range(seqs_from(site, 0))? {
            let (key, value) = row?;
            let (at, reason) = value.value();
            out.push(DeadLetter {
                seq: key.value().1,
                at,
                reason: reason.to_string(),
            });
        }
        Ok(out)
    }

    /// All quarantined payloads of a site, in seq order.
    pub fn quarantine(&self, site: &str) -> Result<Vec<QuarantineEntry>, InboxError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(QUARANTINE)?;
        let mut out = Vec::new();
        for row in table.range(seqs_from(site, 0))? {
            let (key, value) = row?;
            let (received_at, raw, reason) = value.value();
            out.push(QuarantineEntry {
                seq: key.value().1,
                received_at,
                raw: raw.to_vec(),
                reason: reason.to_string(),
            });
        }
        Ok(out)
    }

    /// The agent name and decoded status last received from a site.
    pub fn agent_status(
        &self,
        site: &str,
    ) -> Result<Option<(i64, String, Option<scanbridge_protocol::AgentStatus>)>, InboxError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(AGENT_STATUS)?;
        Ok(table.get(site)?.map(|v| {
            let (at, agent, bytes) = v.value();
            let status = if bytes.is_empty() {
                None
            } else {
                scanbridge_protocol::decode(bytes).ok()
            };
            (at, agent.to_string(), status)
        }))
    }

    /// A write transaction that commits with immediate durability (fsync), as every write here.
    fn write_txn(&self) -> Result<redb::WriteTransaction, InboxError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        Ok(txn)
    }
}

/// The store identity check of a batch with events from store `id` starting at `first_seq`
/// (module doc, "Store identity"); records the store when it becomes current.
fn check_store(
    txn: &redb::WriteTransaction,
    site: &str,
    id: &str,
    first_seq: u64,
) -> Result<Result<(), StoreConflict>, InboxError> {
    let mut stores = txn.open_table(SITE_STORE)?;
    let current = stores.get(site)?.map(|v| v.value().0.to_string());
    match current {
        Some(current) if current == id => return Ok(Ok(())),
        None => {}
        Some(current) => {
            let highest = txn
                .open_table(SITE_HIGHEST)?
                .get(site)?
                .map_or(0, |v| v.value());
            let pruned = txn
                .open_table(retention::PRUNED_THROUGH)?
                .get(site)?
                .map_or(0, |v| v.value().0);
            let relay_highest = highest.max(pruned);
            if first_seq <= relay_highest {
                return Ok(Err(StoreConflict {
                    store_id: id.to_string(),
                    current_store: current,
                    first_seq,
                    relay_highest,
                    conflicts: 0,
                }));
            }
            tracing::info!(
                site, store_id = id, previous_store = %current, first_seq, relay_highest,
                "site sends from another agent store now (its seqs continue after the relay's)"
            );
        }
    }
    stores.insert(site, (id, first_seq))?;
    Ok(Ok(()))
}

/// The keys of one site's rows in a `(site, seq)` table, from `first` on.
fn seqs_from(site: &str, first: u64) -> RangeInclusive<(&str, u64)> {
    (site, first)..=(site, u64::MAX)
}

fn add(
    counters: &mut redb::Table<(&str, &str), u64>,
    site: &str,
    name: &str,
    n: u64,
) -> Result<(), InboxError> {
    if n == 0 {
        return Ok(());
    }
    let current = counters.get((site, name))?.map_or(0, |v| v.value());
    counters.insert((site, name), current.saturating_add(n))?;
    Ok(())
}

/// Runs a blocking store call on tokio's blocking pool.
pub async fn run_blocking<T, F>(f: F) -> Result<T, InboxError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, InboxError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| InboxError::Worker(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanbridge_protocol::{Quarantined, Source};

    /// An event of scanner SC-01 on a serial port, received at time 5.
    pub(super) fn event_with(seq: u64, body: EventBody) -> Event {
        Event {
            seq,
            captured_at: 0,
            received_at: 5,
            source: Source::Serial {
                port: "/dev/ttyUSB0".into(),
            },
            device: "SC-01".into(),
            body,
        }
    }

    fn event(seq: u64) -> Event {
        event_with(
            seq,
            EventBody::Quarantined(Quarantined {
                raw: vec![0xff],
                reason: "not UTF-8".into(),
            }),
        )
    }

    fn accept(inbox: &Inbox, seqs: std::ops::RangeInclusive<u64>) -> Accepted {
        store(inbox, seqs.map(event).collect())
    }

    /// Stores `events` as one batch of site WH01 without agent status, at time 1.
    pub(super) fn store(inbox: &Inbox, events: Vec<Event>) -> Accepted {
        let batch = Batch {
            site: "WH01".into(),
            agent: "gw".into(),
            first_seq: events[0].seq,
            events,
            status: None,
        };
        let body = scanbridge_protocol::encode(&batch).expect("encode");
        inbox
            .accept_batch("WH01", &batch, &body, 1)
            .expect("accept")
    }

    #[test]
    fn an_event_is_stored_once_and_counted_as_duplicate_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inbox = Inbox::open(&dir.path().join("relay.redb")).expect("open");
        assert_eq!(
            accept(&inbox, 1..=3),
            Accepted {
                inserted: 3,
                duplicates: 0
            }
        );
        assert_eq!(
            accept(&inbox, 2..=4),
            Accepted {
                inserted: 1,
                duplicates: 2
            }
        );
        let stats = inbox.stats("WH01").expect("stats");
        assert_eq!(
            (stats.received, stats.duplicates, stats.quarantined),
            (4, 2, 4)
        );
        assert_eq!(inbox.quarantine("WH01").expect("quarantine").len(), 4);
    }

    #[test]
    fn committing_outcomes_moves_the_cursor_and_clears_a_passed_inflight_chunk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inbox = Inbox::open(&dir.path().join("relay.redb")).expect("open");
        accept(&inbox, 1..=3);
        assert_eq!(inbox.sites_with_backlog().expect("sites"), ["WH01"]);
        inbox.set_inflight("WH01", 1, 2).expect("inflight");
        let pending = inbox.pending("WH01", 10).expect("pending");
        assert_eq!(
            (pending.cursor, pending.inflight, pending.events.len()),
            (0, Some((1, 2)), 3)
        );
        let dead = Outcome::DeadLettered {
            reason: "no".into(),
        };
        inbox
            .commit_outcomes("WH01", 3, &[(1, dead.clone()), (2, dead)], 9)
            .expect("commit");
        let pending = inbox.pending("WH01", 10).expect("pending");
        assert_eq!((pending.cursor, pending.inflight), (3, None));
        assert_eq!(
            pending.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [3]
        );
        assert_eq!(inbox.dead_letters("WH01").expect("dead").len(), 2);
        inbox.commit_outcomes("WH01", 4, &[], 9).expect("commit");
        assert!(inbox.sites_with_backlog().expect("sites").is_empty());
    }
}

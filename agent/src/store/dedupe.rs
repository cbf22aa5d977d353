//! Scan-id dedupe: a scan whose `(device, id)` was already committed is not stored again.
//!
//! Why. A scanner publishing QoS 1 (MQTT 3.1.1, at least once) re-publishes a scan whose PUBACK
//! it never got, for example because the broker was killed after taking the scan and before the
//! PUBACK left. If the broker had already handed the first copy on, the agent receives the scan
//! twice as two distinct messages (new packet id, no DUP flag): the redelivery dedupe of
//! [`super::writer`] (`mqtt_inflight`, by packet id) cannot see it, and without help from the
//! device the copy looks exactly like a second scan of the same label. Devices (or gateways)
//! that give each scan a unique `id` (canonical JSON, `docs/payloads.md`) get exactly once
//! across broker crashes: the writer keeps the ids of recently committed scans per device and
//! acknowledges a copy without storing it.
//!
//! How. In the writer's one transaction per batch ([`super::writer::commit_batch`]), for each
//! item that carries an id, [`DedupeTx::check_and_record`] looks `(device, id)` up in
//! `scan_ids`; if present, the item is a duplicate: nothing is stored, it is counted and still
//! acknowledged (it is durably known already). Otherwise the id is inserted next to the event.
//! Check, insert and the event commit in the same transaction, so a crash never keeps an event
//! without its id or an id without its event; a second copy later in the same batch finds the
//! first one's row (a write transaction reads its own writes). Items without an id never open
//! these tables: the dedupe costs nothing for them.
//!
//! Retention. Each recorded id also gets a row in `scan_id_order`, keyed by a counter that only
//! grows (the last key + 1), holding when the event was received and the `(device, id)`. The
//! same transaction prunes from the front of that table: rows older than the window
//! (`[store] dedupe_window_secs`) or beyond the newest `dedupe_max_ids`, at most
//! `2 × inserted + 16` rows per commit — a small, bounded step (each removal is two B-tree
//! deletes), never a scan of the table, and always faster than ids arrive, so the tables stay
//! within the window and the cap. The counter makes the row count `last - first + 1` without
//! a scan. Rows are pruned by commits that record ids; a site that stops sending ids keeps its
//! last window of rows (bounded by the cap) until ids come again. Nothing is kept per id in
//! memory. A wall clock that jumps forward prunes early (a copy arriving later would be stored:
//! at least once, as without ids); one that jumps back delays pruning (the cap still holds).
//!
//! Cost (`examples/dedupe_cost.rs`, release, 100 durable commits of 2,000 scans, 2-core box at
//! load 4-7, 15:56 UTC): without ids 147,000-237,000 events/s (unchanged: no dedupe table is
//! opened), with an id per scan 52,000-78,000/s (about a third: three more B-tree writes per
//! scan, each carrying the device and id text), counters or UUIDs alike; ~340 bytes of store
//! file per id. The ids are not counted in `max_bytes` (the backlog cap); `dedupe_max_ids`
//! bounds them. At a site's real scan rates an id adds a few hundred bytes to a commit whose
//! fsync dominates.
//!
//! The id is agent-side only: it does not travel to the relay (the wire `Event` is unchanged);
//! the relay keeps its own exactly-once by `(site, seq)`.
//!
//! Tables (created on first use; an older agent ignores them, so no schema change):
//!
//! | table           | key                          | value |
//! |-----------------|------------------------------|-------|
//! | `scan_ids`      | `(&str device, &str id)`     | `u64`: its `scan_id_order` key |
//! | `scan_id_order` | `u64` counter                | `(i64 received_at µs, &str device, &str id)` |

use std::sync::atomic::Ordering;
use std::time::Duration;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use scanbridge_protocol::UnixMicros;

use super::{Store, StoreError};
use crate::config::StoreConfig;

/// `scan_ids`: (device, scan id) → its `scan_id_order` key.
pub const SCAN_IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("scan_ids");
/// `scan_id_order`: counter → (received_at, device, scan id), oldest first.
pub const SCAN_ID_ORDER: TableDefinition<u64, (i64, &str, &str)> =
    TableDefinition::new("scan_id_order");

/// Default `[store] dedupe_window_secs`: 3 days. A copy arrives when the scanner reconnects
/// after a broker crash — seconds later, or after a scanner or gateway that went offline
/// holding an unacknowledged scan comes back: 3 days cover one left off over a weekend (Friday
/// evening to Monday morning). A longer window only costs disk.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3 * 24 * 3600);
/// Default `[store] dedupe_max_ids`: the most ids kept whatever their age. Measured
/// (`examples/dedupe_cost.rs`): 200,000 ids grew the store file by 67 MB, ~340 bytes each, so
/// at most ~340 MB; a million ids is 3 days of ~4 scans/s around the clock.
pub const DEFAULT_MAX_IDS: u64 = 1_000_000;
/// Rows pruned per commit on top of twice the ids it recorded.
const PRUNE_EXTRA: u64 = 16;

/// How long and how many ids are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupePolicy {
    /// Ids of events received longer ago than this are forgotten.
    pub window: Duration,
    /// At most this many ids are kept (the oldest go first).
    pub max_ids: u64,
}

impl Default for DedupePolicy {
    fn default() -> Self {
        DedupePolicy {
            window: DEFAULT_WINDOW,
            max_ids: DEFAULT_MAX_IDS,
        }
    }
}

impl DedupePolicy {
    /// The policy of a `[store]` section.
    pub fn from_config(cfg: &StoreConfig) -> DedupePolicy {
        DedupePolicy {
            window: cfg.dedupe_window,
            max_ids: cfg.dedupe_max_ids.max(1),
        }
    }

    /// Whether the oldest row, received at `at` with key `first`, goes, given the next key
    /// `next` (rows held: `next - first`) and the time `now`. Pure.
    pub fn expired(&self, at: UnixMicros, first: u64, next: u64, now: UnixMicros) -> bool {
        let window = i64::try_from(self.window.as_micros()).unwrap_or(i64::MAX);
        next.saturating_sub(first) > self.max_ids || at < now.saturating_sub(window)
    }
}

/// The most rows one commit prunes after recording `inserted` ids. Pure.
pub fn prune_budget(inserted: u64) -> u64 {
    inserted.saturating_mul(2).saturating_add(PRUNE_EXTRA)
}

/// The dedupe tables opened inside a write transaction; see the module doc.
pub struct DedupeTx<'t> {
    ids: redb::Table<'t, (&'static str, &'static str), u64>,
    order: redb::Table<'t, u64, (i64, &'static str, &'static str)>,
    next: u64,
    inserted: u64,
    /// Copies found in this transaction.
    pub duplicates: u64,
}

impl<'t> DedupeTx<'t> {
    /// Opens (creating if needed) both tables in `tx`.
    pub fn open(tx: &'t WriteTransaction) -> Result<DedupeTx<'t>, StoreError> {
        let ids = tx.open_table(SCAN_IDS)?;
        let order = tx.open_table(SCAN_ID_ORDER)?;
        let next = order
            .last()?
            .map_or(0, |(k, _)| k.value().saturating_add(1));
        Ok(DedupeTx {
            ids,
            order,
            next,
            inserted: 0,
            duplicates: 0,
        })
    }

    /// True when `(device, id)` is already recorded (the event is a copy: do not store it);
    /// otherwise records it, received at `at`, and returns false.
    pub fn check_and_record(
        &mut self,
        device: &str,
        id: &str,
        at: UnixMicros,
    ) -> Result<bool, StoreError> {
        let n = self.next;
        // One B-tree descent: insert, and put the old value back in the rare case there was one.
        let old = self.ids.insert((device, id), n)?.map(|g| g.value());
        if let Some(old) = old {
            self.ids.insert((device, id), old)?;
            self.duplicates += 1;
            return Ok(true);
        }
        self.order.insert(n, (at, device, id))?;
        self.next = n.saturating_add(1);
        self.inserted += 1;
        Ok(false)
    }

    /// Forgets the oldest ids the policy no longer keeps, at most [`prune_budget`] of them.
    /// Returns how many went.
    pub fn prune(&mut self, policy: &DedupePolicy, now: UnixMicros) -> Result<u64, StoreError> {
        let budget = prune_budget(self.inserted);
        let mut pruned = 0;
        while pruned < budget {
            let (n, device, id) = match self.order.first()? {
                Some((k, v)) => {
                    let (at, device, id) = v.value();
                    if !policy.expired(at, k.value(), self.next, now) {
                        break;
                    }
                    (k.value(), device.to_string(), id.to_string())
                }
                None => break,
            };
            self.order.remove(n)?;
            let owned = self
                .ids
                .get((device.as_str(), id.as_str()))?
                .is_some_and(|g| g.value() == n);
            if owned {
                self.ids.remove((device.as_str(), id.as_str()))?;
            }
            pruned += 1;
        }
        Ok(pruned)
    }
}

impl Store {
    /// Scan copies acknowledged without being stored since this process opened the store
    /// (`scanbridge_agent_duplicate_scans_total`).
    pub fn duplicates_suppressed(&self) -> u64 {
        self.stats.duplicates_suppressed.load(Ordering::Acquire)
    }

    pub(super) fn count_duplicates(&self, n: u64) {
        if n > 0 {
            self.stats
                .duplicates_suppressed
                .fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Number of scan ids kept (diagnostics and tests).
    pub fn scan_ids_len(&self) -> Result<u64, StoreError> {
        let tx = self.db()?.begin_read()?;
        match tx.open_table(SCAN_IDS) {
            Ok(t) => Ok(t.len()?),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod pure_tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000;

    fn policy(hours: u64, max_ids: u64) -> DedupePolicy {
        DedupePolicy {
            window: Duration::from_secs(hours * 3600),
            max_ids,
        }
    }

    #[test]
    fn a_row_inside_the_window_and_under_the_cap_is_kept() {
        let p = policy(24, 10);
        assert!(!p.expired(100 * HOUR - 23 * HOUR, 0, 10, 100 * HOUR));
    }

    #[test]
    fn a_row_older_than_the_window_goes() {
        let p = policy(24, 10);
        assert!(p.expired(100 * HOUR - 25 * HOUR, 0, 1, 100 * HOUR));
    }

    #[test]
    fn the_oldest_row_goes_when_more_than_max_ids_are_held() {
        let p = policy(24, 10);
        assert!(p.expired(100 * HOUR, 5, 16, 100 * HOUR));
        assert!(!p.expired(100 * HOUR, 6, 16, 100 * HOUR));
    }

    #[test]
    fn a_huge_window_or_an_early_clock_does_not_overflow() {
        let p = DedupePolicy {
            window: Duration::MAX,
            max_ids: u64::MAX,
        };
        assert!(!p.expired(i64::MIN, 0, u64::MAX, i64::MIN));
        assert!(!p.expired(0, 0, 1, 0));
    }

    #[test]
    fn each_commit_prunes_more_rows_than_it_records() {
        assert_eq!(prune_budget(0), 16);
        assert!(prune_budget(4096) > 4096);
        assert_eq!(prune_budget(u64::MAX), u64::MAX);
    }
}

//! The inbox's on-disk layout: one row per stored batch instead of one row per event.
//!
//! # Table `inbox_batches`
//!
//! | key                            | value                                                    |
//! |--------------------------------|----------------------------------------------------------|
//! | `(site: &str, first_seq: u64)` | `(last_seq: u64, format: u8, bytes: &[u8])`: the events `first_seq..=last_seq` of the site |
//!
//! Formats of `bytes`:
//! - [`FORMAT_BATCH`] (1): the enveloped `scanbridge_protocol::Batch` exactly as the agent POSTed
//!   it (wire format version 1, magic, CRC-32C). The row holds only the events of the batch with
//!   `first_seq <= seq <= last_seq`: when a batch partly overlaps events stored before, each run of
//!   its new events gets its own row over the same bytes, so an event is never stored twice.
//!   Reading decodes the whole batch (CRC checked); intake neither re-encodes nor splits it.
//! - [`FORMAT_EVENTS`] (2): consecutive events, each as `u32` little-endian length + the event's
//!   postcard bytes. Written only by [`migrate_legacy`] from the per-event layout.
//!
//! Invariants: rows of one site never overlap (intake inserts only the seqs no row covers, so an
//! event is stored once and a re-sent or overlapping batch is a duplicate); a row is never
//! overwritten, and removed only whole by retention (`super::retention`, below the site's
//! watermark, which intake then treats as stored). Because rows are disjoint and keyed by their first seq, their last
//! seqs increase with the key: the row holding seq `s` is the last row keyed `<= s`, if its
//! `last_seq >= s`.
//!
//! # Upgrade from the per-event layout
//!
//! Relays before this layout stored one row per event in table `inbox` (`(site, seq)` → the
//! event's postcard bytes). [`migrate_legacy`] runs when the store is opened, before intake or the
//! pusher can read: it moves those rows into `inbox_batches` ([`FORMAT_EVENTS`] rows of consecutive
//! seqs, the bytes unchanged, undecodable ones included) in durable transactions of at most
//! [`MIGRATE_CHUNK`] events, each removing the rows it moved, and deletes the old table in the last
//! one. A crash part way leaves every event in exactly one of the two tables; the next open goes
//! on. Downgrading to a relay that only knows `inbox` is not supported.
//!
//! A future wire format version must keep reading version-1 rows (or migrate them here).

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use scanbridge_protocol::{Batch, Event};

use super::{InboxError, StoredEvent};

/// The inbox: one row per stored batch (see the module doc).
pub(super) const INBOX_BATCHES: TableDefinition<(&str, u64), (u64, u8, &[u8])> =
    TableDefinition::new("inbox_batches");
/// The per-event inbox written by relays before `inbox_batches` (migrated on open).
pub(super) const LEGACY_INBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("inbox");

/// `bytes` is an enveloped batch as received.
pub(super) const FORMAT_BATCH: u8 = 1;
/// `bytes` is consecutive length-prefixed event postcard bytes (migrated rows).
pub(super) const FORMAT_EVENTS: u8 = 2;

/// Events moved per migration transaction.
pub(super) const MIGRATE_CHUNK: usize = 10_000;
/// Most events in one migrated row.
const MIGRATED_ROW_EVENTS: usize = 1_000;

/// A readable `inbox_batches` table (read-only or inside a write transaction).
pub(super) trait Rows: ReadableTable<(&'static str, u64), (u64, u8, &'static [u8])> {}
impl<T: ReadableTable<(&'static str, u64), (u64, u8, &'static [u8])>> Rows for T {}

/// The events `first..=last` of one row, in seq order; an event that cannot be read back is
/// `Err` with the reason (the pusher dead-letters it).
pub(super) fn decode_row(first: u64, last: u64, format: u8, bytes: &[u8]) -> Vec<StoredEvent> {
    let all_err = |reason: String| -> Vec<StoredEvent> {
        (first..=last)
            .map(|seq| StoredEvent {
                seq,
                event: Err(reason.clone()),
            })
            .collect()
    };
    match format {
        FORMAT_BATCH => match scanbridge_protocol::decode::<Batch>(bytes) {
            Ok(batch) => {
                let mut events = batch.events.into_iter().skip_while(|e| e.seq < first);
                (first..=last)
                    .map(|seq| StoredEvent {
                        seq,
                        event: match events.next() {
                            Some(e) if e.seq == seq => Ok(e),
                            _ => Err(format!("stored batch has no event {seq}")),
                        },
                    })
                    .collect()
            }
            Err(e) => all_err(format!("stored batch bytes do not decode: {e}")),
        },
        FORMAT_EVENTS => {
            let mut rest = bytes;
            (first..=last)
                .map(|seq| {
                    let event = match split_framed(rest) {
                        Some((one, tail)) => {
                            rest = tail;
                            postcard::from_bytes::<Event>(one)
                                .map_err(|e| format!("stored event bytes do not decode: {e}"))
                        }
                        None => Err("stored event bytes are truncated".to_string()),
                    };
                    StoredEvent { seq, event }
                })
                .collect()
        }
        other => all_err(format!(
            "inbox row format {other} is unknown (written by a newer relay?)"
        )),
    }
}

/// Splits one `u32`-length-prefixed frame off `bytes`.
fn split_framed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    let len = usize::try_from(u32::from_le_bytes(len)).ok()?;
    let rest = &bytes[4..];
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Appends one frame for [`FORMAT_EVENTS`].
fn push_framed(out: &mut Vec<u8>, bytes: &[u8]) {
    // An event row of the old layout is far below 4 GiB (batches are limited to 16 MiB).
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Up to `limit` events of `site` with `seq >= from`, in seq order.
pub(super) fn events_from(
    rows: &impl Rows,
    site: &str,
    from: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, InboxError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    // The row starting before `from` may still hold it.
    if let Some(row) = rows.range((site, 0)..(site, from))?.next_back() {
        let (key, value) = row?;
        let (last, format, bytes) = value.value();
        if last >= from {
            out.extend(
                decode_row(key.value().1, last, format, bytes)
                    .into_iter()
                    .filter(|e| e.seq >= from)
                    .take(limit),
            );
        }
    }
    for row in rows.range((site, from)..=(site, u64::MAX))? {
        if out.len() >= limit {
            break;
        }
        let (key, value) = row?;
        let (last, format, bytes) = value.value();
        let room = limit - out.len();
        out.extend(
            decode_row(key.value().1, last, format, bytes)
                .into_iter()
                .take(room),
        );
    }
    Ok(out)
}

/// The stored event `(site, seq)`, `None` when no row holds it.
pub(super) fn event_at(
    rows: &impl Rows,
    site: &str,
    seq: u64,
) -> Result<Option<Result<Event, String>>, InboxError> {
    let Some(row) = rows.range((site, 0)..=(site, seq))?.next_back() else {
        return Ok(None);
    };
    let (key, value) = row?;
    let (last, format, bytes) = value.value();
    if last < seq {
        return Ok(None);
    }
    Ok(decode_row(key.value().1, last, format, bytes)
        .into_iter()
        .find(|e| e.seq == seq)
        .map(|e| e.event))
}

/// The `limit` newest events of `site`, newest first.
pub(super) fn events_newest_first(
    rows: &impl Rows,
    site: &str,
    limit: usize,
) -> Result<Vec<StoredEvent>, InboxError> {
    let mut out = Vec::new();
    for row in rows.range((site, 0)..=(site, u64::MAX))?.rev() {
        if out.len() >= limit {
            break;
        }
        let (key, value) = row?;
        let (last, format, bytes) = value.value();
        let room = limit - out.len();
        out.extend(
            decode_row(key.value().1, last, format, bytes)
                .into_iter()
                .rev()
                .take(room),
        );
    }
    Ok(out)
}

/// The stored seq ranges of `site` that overlap `lo..=hi`, ascending.
pub(super) fn stored_ranges(
    rows: &impl Rows,
    site: &str,
    lo: u64,
    hi: u64,
) -> Result<Vec<(u64, u64)>, InboxError> {
    let mut out = Vec::new();
    for row in rows.range((site, 0)..=(site, hi))?.rev() {
        let (key, value) = row?;
        let last = value.value().0;
        if last < lo {
            // Rows are disjoint: every earlier row ends before this one.
            break;
        }
        out.push((key.value().1, last));
    }
    out.reverse();
    Ok(out)
}

/// The maximal runs of `lo..=hi` that no range of `stored` (ascending, disjoint) covers.
pub(super) fn uncovered(stored: &[(u64, u64)], lo: u64, hi: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut next = Some(lo);
    for &(first, last) in stored {
        let Some(from) = next else { break };
        if last < from {
            continue;
        }
        if first > from {
            out.push((from, (first - 1).min(hi)));
        }
        next = last.checked_add(1);
        if next.is_some_and(|n| n > hi) {
            next = None;
        }
    }
    if let Some(from) = next {
        if from <= hi {
            out.push((from, hi));
        }
    }
    out
}

/// Moves the per-event `inbox` table of an older relay into `inbox_batches` (see the module
/// doc), `chunk` events per durable transaction. Returns how many events it moved.
pub(super) fn migrate_legacy(db: &Database, chunk: usize) -> Result<u64, InboxError> {
    {
        let txn = db.begin_read()?;
        match txn.open_table(LEGACY_INBOX) {
            Ok(_) => {}
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
    }
    let mut moved = 0u64;
    loop {
        let (n, done) = migrate_step(db, chunk)?;
        moved += n;
        if done {
            break;
        }
    }
    tracing::info!(
        events = moved,
        "moved the inbox of an older relay to one row per batch"
    );
    Ok(moved)
}

/// One durable migration transaction: moves up to `chunk` events, deletes the old table when
/// it is empty. Returns the events moved and whether the old table is gone.
fn migrate_step(db: &Database, chunk: usize) -> Result<(u64, bool), InboxError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    let mut moved = 0u64;
    let done = {
        let mut legacy = txn.open_table(LEGACY_INBOX)?;
        let mut batches = txn.open_table(INBOX_BATCHES)?;
        // Runs of consecutive seqs of one site: (site, first, last, framed bytes, events).
        let mut runs: Vec<(String, u64, u64, Vec<u8>, usize)> = Vec::new();
        for _ in 0..chunk.max(1) {
            let Some((key, value)) = legacy.pop_first()? else {
                break;
            };
            let (site, seq) = key.value();
            match runs.last_mut() {
                Some((s, _, last, bytes, n))
                    if s == site
                        && last.checked_add(1) == Some(seq)
                        && *n < MIGRATED_ROW_EVENTS =>
                {
                    push_framed(bytes, value.value());
                    *last = seq;
                    *n += 1;
                }
                _ => {
                    let mut bytes = Vec::new();
                    push_framed(&mut bytes, value.value());
                    runs.push((site.to_string(), seq, seq, bytes, 1));
                }
            }
            moved += 1;
        }
        for (site, first, last, bytes, _) in &runs {
            batches.insert(
                (site.as_str(), *first),
                (*last, FORMAT_EVENTS, bytes.as_slice()),
            )?;
        }
        legacy.is_empty()?
    };
    if done {
        txn.delete_table(LEGACY_INBOX)?;
    }
    txn.commit()?;
    Ok((moved, done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncovered_runs_are_what_no_stored_range_holds() {
        assert_eq!(uncovered(&[], 5, 9), [(5, 9)]);
        assert_eq!(uncovered(&[(5, 9)], 5, 9), []);
        assert_eq!(uncovered(&[(1, 6)], 5, 9), [(7, 9)]);
        assert_eq!(uncovered(&[(8, 20)], 5, 9), [(5, 7)]);
        assert_eq!(
            uncovered(&[(1, 10), (15, 16), (20, 30)], 5, 25),
            [(11, 14), (17, 19)]
        );
        assert_eq!(uncovered(&[(0, u64::MAX)], 3, 4), []);
        assert_eq!(
            uncovered(&[(0, 2)], u64::MAX - 1, u64::MAX),
            [(u64::MAX - 1, u64::MAX)]
        );
        assert_eq!(uncovered(&[(6, 6)], 5, 7), [(5, 5), (7, 7)]);
    }

    #[test]
    fn framed_events_split_and_a_truncated_frame_is_refused() {
        let mut bytes = Vec::new();
        push_framed(&mut bytes, b"ab");
        push_framed(&mut bytes, b"");
        let (one, rest) = split_framed(&bytes).expect("first");
        assert_eq!(one, b"ab");
        let (two, rest) = split_framed(rest).expect("second");
        assert_eq!((two, rest), (&b""[..], &b""[..]));
        assert!(split_framed(&bytes[..5]).is_none());
        assert!(split_framed(&[1, 0]).is_none());
    }

    /// The per-event layout as the previous release wrote it: `inbox` rows of postcard events,
    /// `site_highest` and the `received` counters; the new table does not exist yet.
    fn old_layout_store(path: &std::path::Path, rows: &[(&str, u64, Vec<u8>)]) {
        const SITE_HIGHEST: TableDefinition<&str, u64> = TableDefinition::new("site_highest");
        let db = Database::create(path).expect("create");
        let mut txn = db.begin_write().expect("write");
        txn.set_durability(Durability::Immediate);
        {
            let mut inbox = txn.open_table(LEGACY_INBOX).expect("inbox");
            let mut highest = txn.open_table(SITE_HIGHEST).expect("highest");
            for (site, seq, bytes) in rows {
                inbox
                    .insert((*site, *seq), bytes.as_slice())
                    .expect("insert");
                let previous = highest.get(*site).expect("get").map(|v| v.value());
                highest
                    .insert(*site, previous.unwrap_or(0).max(*seq))
                    .expect("insert");
            }
        }
        txn.commit().expect("commit");
    }

    fn ev(seq: u64) -> Event {
        crate::inbox::tests::event_with(
            seq,
            scanbridge_protocol::EventBody::Reading(scanbridge_protocol::Reading {
                tag: format!("t{seq}"),
                value: seq as f64,
                unit: None,
            }),
        )
    }

    fn seqs(events: &[StoredEvent]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn an_inbox_of_an_older_relay_is_moved_to_batch_rows_also_after_a_crash_part_way() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relay.redb");
        let mut old: Vec<(&str, u64, Vec<u8>)> = Vec::new();
        for seq in (1..=7).chain(9..=10) {
            old.push(("A", seq, postcard::to_allocvec(&ev(seq)).expect("encode")));
        }
        old.push(("A", 11, vec![0xff, 0xff]));
        for seq in 1..=3 {
            old.push(("B", seq, postcard::to_allocvec(&ev(seq)).expect("encode")));
        }
        old_layout_store(&path, &old);
        {
            // The first transaction of a migration, then a crash: both tables hold rows.
            let db = Database::create(&path).expect("open");
            {
                let txn = db.begin_write().expect("write");
                txn.open_table(INBOX_BATCHES).expect("create");
                txn.commit().expect("commit");
            }
            assert_eq!(migrate_step(&db, 4).expect("step"), (4, false));
        }
        let inbox = crate::inbox::Inbox::open(&path).expect("open migrates");
        let pending = inbox.pending("A", 100).expect("pending");
        assert_eq!(seqs(&pending.events), [1, 2, 3, 4, 5, 6, 7, 9, 10, 11]);
        for stored in &pending.events[..9] {
            assert_eq!(stored.event.as_ref().expect("decodes"), &ev(stored.seq));
        }
        assert!(pending.events[9].event.is_err(), "undecodable stays so");
        assert_eq!(
            seqs(&inbox.pending("B", 100).expect("pending").events),
            [1, 2, 3]
        );
        assert_eq!(
            seqs(&inbox.pending("A", 3).expect("pending").events),
            [1, 2, 3]
        );
        {
            let txn = inbox.db.begin_read().expect("read");
            assert!(matches!(
                txn.open_table(LEGACY_INBOX),
                Err(redb::TableError::TableDoesNotExist(_))
            ));
        }
        assert_eq!(
            migrate_legacy(&inbox.db, MIGRATE_CHUNK).expect("again"),
            0,
            "nothing left to move"
        );

        // The agent re-sends events the old relay stored: duplicates, and only 8 and 12 are new.
        let batch = Batch {
            site: "A".into(),
            agent: "gw".into(),
            first_seq: 5,
            events: (5..=12).map(ev).collect(),
            status: None,
        };
        let body = scanbridge_protocol::encode(&batch).expect("encode");
        let accepted = inbox.accept_batch("A", &batch, &body, 1).expect("accept");
        assert_eq!((accepted.inserted, accepted.duplicates), (2, 6));
        let pending = inbox.pending("A", 100).expect("pending");
        assert_eq!(seqs(&pending.events), (1..=12).collect::<Vec<_>>());
        assert!(
            pending.events[10].event.is_err(),
            "11 is still the old bytes"
        );
        assert_eq!(pending.events[7].event.as_ref().expect("8"), &ev(8));
        assert_eq!(pending.events[11].event.as_ref().expect("12"), &ev(12));
    }

    #[test]
    fn an_overlapping_batch_stores_only_its_new_runs_and_every_reader_sees_each_event_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inbox = crate::inbox::Inbox::open(&dir.path().join("relay.redb")).expect("open");
        let store = |seqs: std::ops::RangeInclusive<u64>| {
            let batch = Batch {
                site: "A".into(),
                agent: "gw".into(),
                first_seq: *seqs.start(),
                events: seqs.map(ev).collect(),
                status: None,
            };
            let body = scanbridge_protocol::encode(&batch).expect("encode");
            let a = inbox.accept_batch("A", &batch, &body, 1).expect("accept");
            (a.inserted, a.duplicates)
        };
        assert_eq!(store(1..=3), (3, 0));
        assert_eq!(store(7..=9), (3, 0));
        assert_eq!(store(1..=10), (4, 6));
        assert_eq!(store(1..=10), (0, 10));
        let all = inbox.pending("A", 100).expect("pending").events;
        assert_eq!(seqs(&all), (1..=10).collect::<Vec<_>>());
        assert!(all
            .iter()
            .all(|e| e.event.as_ref().expect("decodes") == &ev(e.seq)));
        let from_cursor = |from: u64, limit: usize| {
            let txn = inbox.db.begin_read().expect("read");
            let rows = txn.open_table(INBOX_BATCHES).expect("table");
            seqs(&events_from(&rows, "A", from, limit).expect("read"))
        };
        assert_eq!(from_cursor(5, 3), [5, 6, 7]);
        assert_eq!(from_cursor(8, 100), [8, 9, 10]);
        assert_eq!(from_cursor(11, 100), Vec::<u64>::new());
        let recent: Vec<u64> = inbox
            .recent_events("A", 4)
            .expect("recent")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(recent, [10, 9, 8, 7]);
        assert!(inbox.event("A", 5).expect("event").is_some());
        assert!(inbox.event("A", 11).expect("event").is_none());
        assert!(inbox.event("B", 5).expect("event").is_none());
        let stats = inbox.stats("A").expect("stats");
        assert_eq!((stats.received, stats.duplicates), (10, 16));
    }

    #[test]
    fn an_unreadable_row_yields_one_error_per_seq() {
        let events = decode_row(3, 5, FORMAT_BATCH, b"not a batch");
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(events.iter().all(|e| e.event.is_err()));
        let events = decode_row(1, 1, 9, b"");
        assert!(events[0]
            .event
            .as_ref()
            .is_err_and(|e| e.contains("newer relay")));
    }
}

//! `scanbridge-agent store renumber --after N`: the way out of a store conflict.
//!
//! A replaced gateway box (or a deleted store file) starts its seqs at 1 again, while the relay
//! already holds seqs up to N for the site from the old store. The relay refuses such batches
//! with 409 (its dedupe by `(site, seq)` would otherwise take the new events for duplicates and
//! the agent would delete them). With the agent stopped, [`Store::renumber_after`] moves every
//! stored event to `seq - first + N + 1` — key and the `seq` inside the event's postcard bytes —
//! and `next_seq` with them, in one durable write transaction: it happens completely or not at
//! all. Order and content of the events are kept; seqs only grow, so none is ever reused.
//!
//! Renumbering a store the relay already accepted events from would make the relay store some
//! of them a second time (under their new seqs) and write them to Odoo twice. A store the relay
//! refused with 409 had nothing acknowledged, so nothing of it was ever deleted: its oldest
//! event is still seq 1 (or, when empty, `next_seq` is still 1). Any other store is refused
//! ([`StoreError::AlreadyForwarded`]) unless `force` is given.

use redb::{Durability, ReadableTable};
use scanbridge_protocol::Event;

use super::{oldest_received_at, MetaValues, Store, StoreError, EVENTS, META};

/// What [`Store::renumber_after`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renumbered {
    /// Every stored event moved by `shift`: `old_first..=old_last` is now
    /// `old_first + shift ..= old_last + shift`; `next_seq` is the seq the next event gets.
    Moved {
        events: u64,
        old_first: u64,
        old_last: u64,
        shift: u64,
        next_seq: u64,
    },
    /// The store held no events: only `next_seq` moved (from `from`) to `next_seq`.
    NextSeqOnly { from: u64, next_seq: u64 },
    /// Nothing to do: the store's seqs (its first stored event, or `next_seq` when empty) are
    /// already above `after`.
    AlreadyAfter { first: u64 },
}

impl std::fmt::Display for Renumbered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Renumbered::Moved {
                events,
                old_first,
                old_last,
                shift,
                next_seq,
            } => write!(
                f,
                "renumbered {events} stored events: seqs {old_first}..={old_last} are now {}..={}; the next event gets seq {next_seq}",
                old_first + shift,
                old_last + shift
            ),
            Renumbered::NextSeqOnly { from, next_seq } => write!(
                f,
                "the store holds no events; the next event gets seq {next_seq} (was {from})"
            ),
            Renumbered::AlreadyAfter { first } => write!(
                f,
                "nothing to do: the store's seqs already start at {first}, after the given seq"
            ),
        }
    }
}

impl Store {
    /// Moves every stored event so the first gets seq `after + 1` (and `next_seq` past the
    /// last), in one durable transaction (module doc). Never moves seqs down. Without `force`,
    /// refuses a store that has had events acknowledged and deleted (module doc). Blocking; run it
    /// only while no writer or forwarder uses the store (the CLI opens the file itself, which
    /// redb's file lock refuses while an agent runs).
    pub fn renumber_after(&self, after: u64, force: bool) -> Result<Renumbered, StoreError> {
        let overflow = |seq: u64| StoreError::Corrupt {
            seq,
            detail: format!("renumbering after {after} overflows the seq range"),
        };
        let _guard = self.commit_guard();
        let db = self.db()?;
        let mut tx = db.begin_write()?;
        tx.set_durability(Durability::Immediate);
        let target = after.checked_add(1).ok_or_else(|| overflow(after))?;
        let (result, values, oldest) = {
            let mut meta = tx.open_table(META)?;
            let mut events = tx.open_table(EVENTS)?;
            let mut values = MetaValues::read(&meta)?;
            let first = events.first()?.map(|(k, _)| k.value());
            let last = events.last()?.map(|(k, _)| k.value());
            let oldest = first.unwrap_or(values.next_seq);
            if oldest > 1 && oldest < target && !force {
                return Err(StoreError::AlreadyForwarded { oldest });
            }
            let result = match first.zip(last) {
                None if values.next_seq >= target => Renumbered::AlreadyAfter {
                    first: values.next_seq,
                },
                None => {
                    let from = values.next_seq;
                    values.next_seq = target;
                    Renumbered::NextSeqOnly {
                        from,
                        next_seq: target,
                    }
                }
                Some((first, _)) if first >= target => Renumbered::AlreadyAfter { first },
                Some((first, last)) => {
                    let shift = target - first;
                    last.checked_add(shift).ok_or_else(|| overflow(last))?;
                    let next_seq = values
                        .next_seq
                        .max(last + 1)
                        .checked_add(shift)
                        .ok_or_else(|| overflow(last))?;
                    // Highest first: a row moves up to a key that is free (its own former
                    // occupant moved up before it), so no row is overwritten.
                    let mut moved = 0u64;
                    let mut bytes = values.backlog_bytes;
                    let mut upper = last;
                    loop {
                        let row = events
                            .range(..=upper)?
                            .next_back()
                            .transpose()?
                            .map(|(k, v)| (k.value(), v.value().to_vec()));
                        let Some((seq, old)) = row else { break };
                        let mut event: Event =
                            postcard::from_bytes(&old).map_err(|e| StoreError::Corrupt {
                                seq,
                                detail: e.to_string(),
                            })?;
                        let new_seq = seq + shift;
                        event.seq = new_seq;
                        let new = postcard::to_allocvec(&event)?;
                        events.remove(seq)?;
                        events.insert(new_seq, new.as_slice())?;
                        bytes = bytes
                            .saturating_sub(old.len() as u64)
                            .saturating_add(new.len() as u64);
                        moved += 1;
                        match seq.checked_sub(1) {
                            Some(s) if s >= first => upper = s,
                            _ => break,
                        }
                    }
                    values.backlog_bytes = bytes;
                    values.next_seq = next_seq;
                    Renumbered::Moved {
                        events: moved,
                        old_first: first,
                        old_last: last,
                        shift,
                        next_seq,
                    }
                }
            };
            values.write(&mut meta)?;
            (result, values, oldest_received_at(&events)?)
        };
        if matches!(result, Renumbered::AlreadyAfter { .. }) {
            tx.abort()?;
        } else {
            tx.commit()?;
            tracing::info!(after, result = %result, "event store renumbered");
        }
        self.stats.publish(&values, oldest);
        Ok(result)
    }
}

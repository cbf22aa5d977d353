//! Retention: the store side of forgetting finished events, as an extension of [`Inbox`].
//!
//! Owns the per-site watermark table and the prune step. The background loop that calls
//! [`Inbox::prune_site`] lives in `crate::relay` (`[retention]` in the config: `keep_days`,
//! `check_interval_secs`).
//!
//! # Table (in `relay.redb`, next to those of [`super`])
//!
//! | table            | key          | value                                                       |
//! |------------------|--------------|-------------------------------------------------------------|
//! | `pruned_through` | `site: &str` | `(through: u64, keep_days: u32, pruned_at: i64)`: every seq `<= through` of the site is finished and its rows are gone; `keep_days` and `pruned_at` (µs) of the last step that moved it, for the trace |
//!
//! # What is pruned
//!
//! Only ever a *prefix* of a site's seqs. The new watermark `W` is the end of the last
//! `inbox_batches` row of the longest run of rows (from the old watermark on) each of which
//! - lies wholly below `push_cursor` (every event has an outcome),
//! - holds no open or replay-requested dead letter, no held and no requeued event (the first
//!   such seq stops the run: replay and the dead-letter page still need it and everything after
//!   it; skipped and resolved dead letters may go), and
//! - was stored (its `intake_log` time; for rows migrated from the per-event layout, which
//!   have none, the newest `received_at` of its events; with no time at all it counts as old)
//!   at or before `now - keep_days`.
//!
//! A row straddling a limit stays whole: rows are never split. For seqs `<= W` the step removes
//! the `inbox_batches` rows, `outcomes`, `outcome_refs`, `quarantine`, the (closed)
//! `dead_letters` and `dead_letter_state` rows, and the `intake_log` rows ending `<= W`, raises
//! the watermark and the site's `pruned` counter, all in one durable write transaction of at
//! most [`PRUNE_CHUNK_ROWS`] rows / about [`PRUNE_CHUNK_EVENTS`] events, so intake and the
//! pusher wait at most one short transaction. Counters, `site_highest`, `push_cursor`,
//! `agent_status` and `flow_state` are kept.
//!
//! # Exactly once
//!
//! Intake treats every seq `<= W` as a duplicate ([`Inbox::accept_batch`] reads the watermark in
//! its own write transaction): an agent re-sending an old batch after its rows were pruned is
//! answered `Ack` and counted as duplicates, nothing is stored or pushed again. The watermark
//! only grows and survives restarts (it is in the same file).
//!
//! # Disk space
//!
//! redb reuses the pages freed here for new rows but does not shrink the file: in steady state
//! the file stops growing at roughly `keep_days` worth of events; it does not get smaller.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::rows::{self, INBOX_BATCHES};
use super::{
    add, counter, Inbox, InboxError, DEAD_LETTERS, INTAKE_LOG, OUTCOMES, PUSH_CURSOR, QUARANTINE,
};
use crate::inbox::lifecycle::{DeadLetterState, DEAD_LETTER_STATE, HELD, OUTCOME_REFS, REQUEUE};

/// The watermark per site (see the module doc).
pub(super) const PRUNED_THROUGH: TableDefinition<&str, (u64, u32, i64)> =
    TableDefinition::new("pruned_through");

/// Most `inbox_batches` rows removed in one write transaction.
pub const PRUNE_CHUNK_ROWS: usize = 1_000;
/// A step stops taking rows once they hold this many events (it always takes at least one row).
pub const PRUNE_CHUNK_EVENTS: u64 = 20_000;

const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

/// Creates this module's table (called from [`Inbox::open`]).
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), InboxError> {
    txn.open_table(PRUNED_THROUGH)?;
    Ok(())
}

/// The newest intake time a row may have to be pruned at `now` with `keep_days`; `None` when
/// `keep_days` is 0 (keep forever).
pub fn cutoff(keep_days: u32, now: i64) -> Option<i64> {
    (keep_days > 0).then(|| now.saturating_sub(i64::from(keep_days) * MICROS_PER_DAY))
}

/// One `inbox_batches` row as the watermark rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowAge {
    pub first: u64,
    pub last: u64,
    /// When the relay stored it (µs); `None`: unknown (counts as old).
    pub stored_at: Option<i64>,
}

/// The pure rule: how many of `rows` (ascending, disjoint, all past the old watermark) form a
/// prunable prefix, and the new watermark (the last seq of the last of them). A row is
/// prunable when it ends below `cursor`, ends before `first_blocker` (the lowest open or
/// replay-requested dead letter, held or requeued seq past the old watermark) and was stored at
/// or before `cutoff`. `None`: nothing to prune.
pub fn prunable_through(
    rows: &[RowAge],
    cursor: u64,
    first_blocker: Option<u64>,
    cutoff: Option<i64>,
) -> Option<(u64, usize)> {
    let cutoff = cutoff?;
    let n = rows
        .iter()
        .take_while(|r| {
            r.last < cursor
                && first_blocker.is_none_or(|b| r.last < b)
                && r.stored_at.is_none_or(|t| t <= cutoff)
        })
        .count();
    n.checked_sub(1).map(|i| (rows[i].last, n))
}

/// What one prune step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStep {
    /// `inbox_batches` rows removed.
    pub rows: u64,
    /// Events they held.
    pub events: u64,
    /// The site's watermark after the step (`None`: nothing pruned yet).
    pub through: Option<u64>,
}

/// What one pass over a site did (see [`Inbox::prune_site`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrunePass {
    pub rows: u64,
    pub events: u64,
    pub through: Option<u64>,
    /// Write transactions committed.
    pub steps: u64,
}

/// A pruned event as the trace explains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// The site's watermark (every seq up to it is pruned).
    pub through: u64,
    /// The retention in force when the watermark last moved.
    pub keep_days: u32,
    /// When it last moved, µs.
    pub pruned_at: i64,
}

impl Inbox {
    /// The site's watermark, if anything was pruned.
    pub fn pruned_through(&self, site: &str) -> Result<Option<Pruned>, InboxError> {
        let txn = self.db.begin_read()?;
        let row = txn
            .open_table(PRUNED_THROUGH)?
            .get(site)?
            .map(|v| v.value());
        Ok(row.map(|(through, keep_days, pruned_at)| Pruned {
            through,
            keep_days,
            pruned_at,
        }))
    }

    /// Whether `(site, seq)` was finished and pruned (the trace's "pruned" answer).
    pub fn pruned(&self, site: &str, seq: u64) -> Result<Option<Pruned>, InboxError> {
        Ok(self.pruned_through(site)?.filter(|p| seq <= p.through))
    }

    /// Prunes what `keep_days` allows at `now` for one site, step by step (one durable write
    /// transaction each) until nothing more is prunable or `stop` returns true between steps.
    /// Blocking: call it from `spawn_blocking`.
    pub fn prune_site(
        &self,
        site: &str,
        keep_days: u32,
        now: i64,
        stop: &dyn Fn() -> bool,
    ) -> Result<PrunePass, InboxError> {
        let mut pass = PrunePass::default();
        if cutoff(keep_days, now).is_none() {
            return Ok(pass);
        }
        loop {
            let step = self.prune_step(site, keep_days, now)?;
            pass.through = step.through;
            if step.rows == 0 {
                return Ok(pass);
            }
            pass.rows += step.rows;
            pass.events += step.events;
            pass.steps += 1;
            if stop() {
                return Ok(pass);
            }
        }
    }

    /// One prune step (at most [`PRUNE_CHUNK_ROWS`] rows) in one durable write transaction;
    /// aborted without an fsync when there is nothing to prune.
    pub fn prune_step(
        &self,
        site: &str,
        keep_days: u32,
        now: i64,
    ) -> Result<PruneStep, InboxError> {
        let txn = self.write_txn()?;
        let step = prune_in(&txn, site, keep_days, now)?;
        if step.rows == 0 {
            txn.abort()?;
        } else {
            txn.commit()?;
        }
        Ok(step)
    }
}

/// The prune step inside `txn`.
fn prune_in(
    txn: &WriteTransaction,
    site: &str,
    keep_days: u32,
    now: i64,
) -> Result<PruneStep, InboxError> {
    let previous = txn
        .open_table(PRUNED_THROUGH)?
        .get(site)?
        .map(|v| v.value().0);
    let mut step = PruneStep {
        through: previous,
        ..PruneStep::default()
    };
    let start = match previous {
        None => 0,
        Some(through) => match through.checked_add(1) {
            Some(s) => s,
            None => return Ok(step),
        },
    };
    let cursor = txn
        .open_table(PUSH_CURSOR)?
        .get(site)?
        .map_or(0, |v| v.value());
    let candidates = candidate_rows(txn, site, start, cursor)?;
    let blocker = first_blocker(txn, site, start)?;
    let Some((through, n)) = prunable_through(&candidates, cursor, blocker, cutoff(keep_days, now))
    else {
        return Ok(step);
    };
    let range = (site, start)..=(site, through);
    let mut removed = 0u64;
    txn.open_table(INBOX_BATCHES)?
        .retain_in(range.clone(), |_, _| {
            removed += 1;
            false
        })?;
    txn.open_table(OUTCOMES)?
        .retain_in(range.clone(), |_, _| false)?;
    txn.open_table(OUTCOME_REFS)?
        .retain_in(range.clone(), |_, _| false)?;
    txn.open_table(QUARANTINE)?
        .retain_in(range.clone(), |_, _| false)?;
    txn.open_table(DEAD_LETTERS)?
        .retain_in(range.clone(), |_, _| false)?;
    txn.open_table(DEAD_LETTER_STATE)?
        .retain_in(range, |_, _| false)?;
    // An intake_log row spans one batch's new runs: keep it while it reaches past `through`.
    txn.open_table(INTAKE_LOG)?
        .retain_in((site, 0)..=(site, through), |_, (_, last)| last > through)?;
    let events: u64 = candidates[..n].iter().map(|r| r.last - r.first + 1).sum();
    txn.open_table(PRUNED_THROUGH)?
        .insert(site, (through, keep_days, now))?;
    add(
        &mut txn.open_table(super::COUNTERS)?,
        site,
        counter::PRUNED,
        events,
    )?;
    step.rows = removed;
    step.events = events;
    step.through = Some(through);
    Ok(step)
}

/// Up to one chunk of rows of `site` from `start` on that end below `cursor`, with their times.
fn candidate_rows(
    txn: &WriteTransaction,
    site: &str,
    start: u64,
    cursor: u64,
) -> Result<Vec<RowAge>, InboxError> {
    let inbox = txn.open_table(INBOX_BATCHES)?;
    let log = txn.open_table(INTAKE_LOG)?;
    let mut out = Vec::new();
    let mut events = 0u64;
    for row in inbox.range((site, start)..=(site, u64::MAX))? {
        if out.len() >= PRUNE_CHUNK_ROWS || events >= PRUNE_CHUNK_EVENTS {
            break;
        }
        let (key, value) = row?;
        let first = key.value().1;
        let (last, format, bytes) = value.value();
        if last >= cursor {
            break;
        }
        let stored_at = match super::fleet::stored_at_in(&log, site, first)? {
            Some(at) => Some(at),
            // Migrated rows have no intake time: the newest agent receive time stands in.
            None => rows::decode_row(first, last, format, bytes)
                .iter()
                .filter_map(|e| e.event.as_ref().ok().map(|e| e.received_at))
                .max(),
        };
        events += last - first + 1;
        out.push(RowAge {
            first,
            last,
            stored_at,
        });
    }
    Ok(out)
}

/// The lowest seq `>= start` that must stay: an open or replay-requested dead letter, a held or
/// a requeued event.
fn first_blocker(
    txn: &WriteTransaction,
    site: &str,
    start: u64,
) -> Result<Option<u64>, InboxError> {
    let range = (site, start)..=(site, u64::MAX);
    let mut lowest: Option<u64> = None;
    let mut lower = |seq: u64| lowest = Some(lowest.map_or(seq, |l: u64| l.min(seq)));
    if let Some(row) = txn.open_table(HELD)?.range(range.clone())?.next() {
        lower(row?.0.value().1);
    }
    if let Some(row) = txn.open_table(REQUEUE)?.range(range.clone())?.next() {
        lower(row?.0.value().1);
    }
    let states = txn.open_table(DEAD_LETTER_STATE)?;
    for row in txn.open_table(DEAD_LETTERS)?.range(range)? {
        let seq = row?.0.value().1;
        // A dead letter without a state row is open (written before the lifecycle existed).
        let open = match states.get((site, seq))? {
            Some(v) => DeadLetterState::from_code(v.value().0).blocks(),
            None => true,
        };
        if open {
            lower(seq);
            break;
        }
    }
    Ok(lowest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(first: u64, last: u64, stored_at: i64) -> RowAge {
        RowAge {
            first,
            last,
            stored_at: Some(stored_at),
        }
    }

    /// Three rows 1..=10, 11..=20, 21..=30 stored at 100, 200, 300.
    fn rows3() -> Vec<RowAge> {
        vec![row(1, 10, 100), row(11, 20, 200), row(21, 30, 300)]
    }

    #[test]
    fn everything_finished_and_old_enough_is_pruned_through_the_last_row() {
        assert_eq!(
            prunable_through(&rows3(), 31, None, Some(300)),
            Some((30, 3))
        );
    }

    #[test]
    fn an_open_dead_letter_stops_the_watermark_before_its_row() {
        assert_eq!(
            prunable_through(&rows3(), 31, Some(15), Some(1_000)),
            Some((10, 1))
        );
        assert_eq!(prunable_through(&rows3(), 31, Some(1), Some(1_000)), None);
        assert_eq!(
            prunable_through(&rows3(), 31, Some(21), Some(1_000)),
            Some((20, 2)),
            "a blocker in the next row lets the rows before it go"
        );
    }

    #[test]
    fn a_row_straddling_the_push_cursor_stays_whole() {
        assert_eq!(
            prunable_through(&rows3(), 25, None, Some(1_000)),
            Some((20, 2))
        );
        assert_eq!(prunable_through(&rows3(), 10, None, Some(1_000)), None);
        assert_eq!(
            prunable_through(&rows3(), 11, None, Some(1_000)),
            Some((10, 1))
        );
    }

    #[test]
    fn nothing_old_enough_prunes_nothing_and_a_young_row_stops_the_prefix() {
        assert_eq!(prunable_through(&rows3(), 31, None, Some(99)), None);
        assert_eq!(
            prunable_through(&rows3(), 31, None, Some(250)),
            Some((20, 2))
        );
        let mut out_of_order = rows3();
        out_of_order[1].stored_at = Some(900);
        assert_eq!(
            prunable_through(&out_of_order, 31, None, Some(250)),
            Some((10, 1)),
            "only a prefix: the old row after a young one stays"
        );
        let mut unknown = rows3();
        unknown[0].stored_at = None;
        assert_eq!(
            prunable_through(&unknown, 31, None, Some(150)),
            Some((10, 1))
        );
    }

    fn scan(seq: u64) -> scanbridge_protocol::Event {
        crate::inbox::tests::event_with(
            seq,
            scanbridge_protocol::EventBody::Scan(scanbridge_protocol::Scan {
                code: format!("c{seq}"),
                symbology: scanbridge_protocol::Symbology::Code128,
                gs1: None,
                op: None,
                qty: None,
                location: None,
                reference: None,
            }),
        )
    }

    fn accept(inbox: &Inbox, seqs: std::ops::RangeInclusive<u64>) -> (u32, u32) {
        let a = crate::inbox::tests::store(inbox, seqs.map(scan).collect());
        (a.inserted, a.duplicates)
    }

    fn applied() -> crate::inbox::Outcome {
        crate::inbox::Outcome::Applied {
            tag: "t".into(),
            odoo: Some(crate::inbox::OdooRef {
                model: "stock.move.line".into(),
                id: 1,
            }),
        }
    }

    /// Intake time of the test batches is 1 µs; two days later everything is old for 1 day.
    const LATER: i64 = 2 * MICROS_PER_DAY;

    #[test]
    fn a_prune_removes_the_finished_prefix_up_to_an_open_dead_letter_and_intake_honours_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inbox = Inbox::open(&dir.path().join("relay.redb")).expect("open");
        assert_eq!(accept(&inbox, 1..=3), (3, 0));
        assert_eq!(accept(&inbox, 4..=6), (3, 0));
        assert_eq!(accept(&inbox, 7..=9), (3, 0));
        let mut outcomes: Vec<_> = (1..=9).map(|s| (s, applied())).collect();
        outcomes[4] = (
            5,
            crate::inbox::Outcome::DeadLettered {
                reason: "unknown".into(),
            },
        );
        inbox
            .commit_outcomes("WH01", 10, &outcomes, 1)
            .expect("commit");
        let never = || false;

        let young = inbox.prune_site("WH01", 1, MICROS_PER_DAY / 2, &never);
        assert_eq!(young.expect("prune").rows, 0, "nothing is a day old yet");
        assert_eq!(
            inbox
                .prune_site("WH01", 0, LATER, &never)
                .expect("prune")
                .rows,
            0
        );

        let pass = inbox.prune_site("WH01", 1, LATER, &never).expect("prune");
        assert_eq!((pass.rows, pass.events, pass.through), (1, 3, Some(3)));
        assert!(inbox.event("WH01", 3).expect("event").is_none());
        assert!(inbox.outcome("WH01", 3).expect("outcome").is_none());
        assert!(inbox.stored_at("WH01", 3).expect("log").is_none());
        assert!(
            inbox.event("WH01", 4).expect("event").is_some(),
            "row of the dead letter stays"
        );
        assert!(inbox.outcome("WH01", 4).expect("outcome").is_some());
        assert_eq!(
            inbox.pruned("WH01", 2).expect("pruned"),
            Some(Pruned {
                through: 3,
                keep_days: 1,
                pruned_at: LATER
            })
        );
        assert_eq!(inbox.pruned("WH01", 4).expect("pruned"), None);

        assert_eq!(
            accept(&inbox, 1..=3),
            (0, 3),
            "a resend of pruned events is a duplicate"
        );
        assert_eq!(accept(&inbox, 2..=5), (0, 4));
        assert!(
            inbox.event("WH01", 1).expect("event").is_none(),
            "not stored again"
        );
        let stats = inbox.stats("WH01").expect("stats");
        assert_eq!(
            (
                stats.received,
                stats.duplicates,
                stats.pruned,
                stats.pruned_through
            ),
            (9, 7, 3, Some(3))
        );

        inbox.skip_dead_letter("WH01", 5, "by hand").expect("skip");
        let pass = inbox.prune_site("WH01", 1, LATER, &never).expect("prune");
        assert_eq!((pass.rows, pass.events, pass.through), (2, 6, Some(9)));
        assert!(
            inbox.dead_letter_list("WH01").expect("list").is_empty(),
            "closed ones go"
        );
        assert_eq!(inbox.pending("WH01", 10).expect("pending").cursor, 10);
        assert_eq!(
            accept(&inbox, 9..=10),
            (1, 1),
            "the next new event is stored"
        );
        assert_eq!(inbox.stats("WH01").expect("stats").pruned, 9);
    }

    #[test]
    fn a_batch_not_yet_pushed_or_held_or_requeued_stops_the_prune() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inbox = Inbox::open(&dir.path().join("relay.redb")).expect("open");
        accept(&inbox, 1..=3);
        accept(&inbox, 4..=6);
        let outcomes: Vec<_> = (1..=4).map(|s| (s, applied())).collect();
        inbox
            .commit_outcomes("WH01", 5, &outcomes, 1)
            .expect("commit");
        let never = || false;
        let pass = inbox.prune_site("WH01", 1, LATER, &never).expect("prune");
        assert_eq!(
            pass.through,
            Some(3),
            "4..=6 straddles the cursor and stays whole"
        );
        assert!(inbox.event("WH01", 4).expect("event").is_some());

        // A replay-requested dead letter keeps its row (and everything after it).
        let step = crate::inbox::StepCommit {
            cursor: Some(7),
            outcomes: vec![
                (
                    5,
                    crate::inbox::Outcome::DeadLettered {
                        reason: "no".into(),
                    },
                ),
                (6, applied()),
            ],
            ..crate::inbox::StepCommit::default()
        };
        inbox.commit_step("WH01", &step, 1).expect("commit");
        inbox.replay_dead_letter("WH01", 5).expect("replay");
        assert_eq!(
            inbox
                .prune_site("WH01", 1, LATER, &never)
                .expect("prune")
                .rows,
            0
        );
        let view = inbox.flow_view("WH01", 10).expect("view");
        assert_eq!(view.requeued.len(), 1);
        assert!(
            view.requeued[0].0.event.is_ok(),
            "the replay still finds its event"
        );
    }

    #[test]
    fn a_prune_stops_between_steps_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inbox = Inbox::open(&dir.path().join("relay.redb")).expect("open");
        // More rows than one step takes.
        for first in (1..=(PRUNE_CHUNK_ROWS as u64 + 10)).map(|i| i * 2 - 1) {
            accept(&inbox, first..=first + 1);
        }
        let last = 2 * (PRUNE_CHUNK_ROWS as u64 + 10);
        inbox
            .commit_outcomes("WH01", last + 1, &[], 1)
            .expect("commit");
        let stop = || true;
        let pass = inbox.prune_site("WH01", 1, LATER, &stop).expect("prune");
        assert_eq!((pass.steps, pass.rows), (1, PRUNE_CHUNK_ROWS as u64));
        let pass = inbox
            .prune_site("WH01", 1, LATER, &|| false)
            .expect("prune");
        assert_eq!((pass.rows, pass.through), (10, Some(last)));
    }

    #[test]
    fn keep_days_zero_keeps_everything() {
        assert_eq!(cutoff(0, i64::MAX), None);
        assert_eq!(
            prunable_through(&rows3(), 31, None, cutoff(0, 1 << 60)),
            None
        );
        assert_eq!(cutoff(1, 2 * MICROS_PER_DAY), Some(MICROS_PER_DAY));
        assert_eq!(cutoff(30, 0), Some(-30 * MICROS_PER_DAY));
        assert!(prunable_through(&[], 31, None, Some(1)).is_none());
    }
}

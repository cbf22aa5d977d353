//! The dead-letter lifecycle and the ordering rule, as an extension of [`Inbox`]: dead-letter
//! states (open → replay_requested → resolved, or → skipped), events held back behind a dead
//! letter of the same Odoo document, the requeue the pusher drains before its cursor, the Odoo
//! record each applied event wrote (for the trace), and the flows' durable state (open picking
//! per device, accounted line quantities), committed together with the cursor.
//!
//! # Tables (in `relay.redb`, next to those of [`super`])
//!
//! | table               | key                         | value                                                   |
//! |---------------------|-----------------------------|---------------------------------------------------------|
//! | `dead_letter_state` | `(site: &str, seq: u64)`    | `(state: u8, changed_at: i64, document: &str, note: &str)`; state 1 open, 2 replay_requested, 3 skipped, 4 resolved; `document` = the Odoo document (picking) the event belongs to, empty for none. A `dead_letters` row without a state row is open with no document (written before this table existed). |
//! | `held`              | `(site: &str, seq: u64)`    | `(behind: u64, document: &str)`: an event held back behind the open dead letter `behind` of the same document |
//! | `requeue`           | `(site: &str, seq: u64)`    | `document: &str`: an event handed back to the pusher (a replayed dead letter, or an event released from `held`); the pusher drains these, in seq order, before its cursor |
//! | `outcome_refs`      | `(site: &str, seq: u64)`    | `(model: &str, id: i64)`: the Odoo record an applied event wrote |
//! | `flow_state`        | `(site: &str, key: &str)`   | `&[u8]`: the flows' per-site durable state (JSON, owned by `crate::odoo::flows`) |
//! | `blocking`          | `(site: &str, document: &str)` | `u64`: the lowest open or replay-requested dead letter of that document (an index of `dead_letter_state`, kept in the same transactions) |
//!
//! # The ordering rule
//! Events of one site are applied in seq order. A dead letter whose event belongs to an Odoo
//! document (a picking) holds back every later event of the same document and nothing else: the
//! pusher records such an event in `held` (outcome "held", the cursor moves on) instead of
//! sending it. Replaying the dead letter requeues it and releases the events it held (into
//! `requeue`); the pusher then handles them one by one in seq order before anything past its
//! cursor, so the document sees its events in order. If the replayed event fails again it is
//! open again and the released events are held again. Skipping a dead letter gives it up (its
//! effect never reaches Odoo) and releases what it held. Dead letters without a document (an
//! inventory count, a malformed event) hold nothing.

use std::collections::BTreeMap;

use redb::{ReadableTable, TableDefinition};
use scanbridge_protocol::Event;

use super::rows::{self, INBOX_BATCHES};
use super::{
    add, counter, seqs_from, Inbox, InboxError, Outcome, StoredEvent, COUNTERS, DEAD_LETTERS,
    KIND_APPLIED, KIND_DEAD_LETTERED, KIND_HELD, KIND_QUARANTINED, OUTCOMES, PUSH_CURSOR,
    PUSH_INFLIGHT,
};

pub(super) const DEAD_LETTER_STATE: TableDefinition<(&str, u64), (u8, i64, &str, &str)> =
    TableDefinition::new("dead_letter_state");
pub(super) const HELD: TableDefinition<(&str, u64), (u64, &str)> = TableDefinition::new("held");
pub(super) const REQUEUE: TableDefinition<(&str, u64), &str> = TableDefinition::new("requeue");
pub(super) const OUTCOME_REFS: TableDefinition<(&str, u64), (&str, i64)> =
    TableDefinition::new("outcome_refs");
pub(super) const FLOW_STATE: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("flow_state");
pub(super) const BLOCKING: TableDefinition<(&str, &str), u64> = TableDefinition::new("blocking");

/// Creates this module's tables (called from [`Inbox::open`]).
pub(super) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), InboxError> {
    txn.open_table(DEAD_LETTER_STATE)?;
    txn.open_table(HELD)?;
    txn.open_table(REQUEUE)?;
    txn.open_table(OUTCOME_REFS)?;
    txn.open_table(FLOW_STATE)?;
    txn.open_table(BLOCKING)?;
    Ok(())
}

/// Recomputes the `blocking` row of one document from `dead_letter_state` (called when a dead
/// letter of that document changes state; dead letters are rare, so the scan is cheap).
fn refresh_blocking(
    states: &redb::Table<(&str, u64), (u8, i64, &str, &str)>,
    blocking: &mut redb::Table<(&str, &str), u64>,
    site: &str,
    document: &str,
) -> Result<(), InboxError> {
    if document.is_empty() {
        return Ok(());
    }
    let mut lowest: Option<u64> = None;
    for row in states.range(seqs_from(site, 0))? {
        let (key, value) = row?;
        let (code, _, doc, _) = value.value();
        if doc == document && DeadLetterState::from_code(code).blocks() {
            let seq = key.value().1;
            lowest = Some(lowest.map_or(seq, |l| l.min(seq)));
        }
    }
    match lowest {
        Some(seq) => blocking.insert((site, document), seq)?,
        None => blocking.remove((site, document))?,
    };
    Ok(())
}

/// Where a dead letter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterState {
    /// Refused; waiting for an operator (holds back later events of its document).
    Open,
    /// An operator asked for a replay; the pusher has not re-sent it yet (still holds).
    ReplayRequested,
    /// An operator gave it up; it holds nothing any more.
    Skipped,
    /// Replayed and applied.
    Resolved,
}

impl DeadLetterState {
    /// Lower-case name for APIs and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterState::Open => "open",
            DeadLetterState::ReplayRequested => "replay_requested",
            DeadLetterState::Skipped => "skipped",
            DeadLetterState::Resolved => "resolved",
        }
    }

    /// Whether a dead letter in this state holds back later events of its document.
    pub fn blocks(self) -> bool {
        matches!(
            self,
            DeadLetterState::Open | DeadLetterState::ReplayRequested
        )
    }

    fn code(self) -> u8 {
        match self {
            DeadLetterState::Open => 1,
            DeadLetterState::ReplayRequested => 2,
            DeadLetterState::Skipped => 3,
            DeadLetterState::Resolved => 4,
        }
    }

    pub(super) fn from_code(code: u8) -> DeadLetterState {
        match code {
            2 => DeadLetterState::ReplayRequested,
            3 => DeadLetterState::Skipped,
            4 => DeadLetterState::Resolved,
            _ => DeadLetterState::Open,
        }
    }
}

/// The Odoo record an applied event wrote (model and database id), for the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OdooRef {
    pub model: String,
    pub id: i64,
}

/// One dead letter with everything an operator needs to decide.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterDetail {
    pub seq: u64,
    /// When it was (last) dead-lettered, µs since the epoch.
    pub at: i64,
    /// Odoo's (or the relay's) message.
    pub reason: String,
    pub state: DeadLetterState,
    /// When the state last changed, µs since the epoch.
    pub changed_at: i64,
    /// The Odoo document (picking name) it belongs to, if any.
    pub document: Option<String>,
    /// The operator's note when skipped.
    pub note: Option<String>,
    /// The event itself (or why its stored bytes do not decode).
    pub event: Result<Event, String>,
    /// Events held back behind it, in seq order.
    pub held: Vec<u64>,
}

/// A dead letter as listed, with its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSummary {
    pub seq: u64,
    pub at: i64,
    pub reason: String,
    pub state: DeadLetterState,
    pub document: Option<String>,
}

/// What a replay or skip request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayResult {
    /// Done: the dead letter is now in `state`; `released` are the held events handed back to
    /// the pusher (wake it with `Notify::notify_one`).
    Done {
        state: DeadLetterState,
        released: Vec<u64>,
    },
    /// No dead letter with this (site, seq).
    NotFound,
    /// Already skipped or resolved: nothing changed.
    Closed(DeadLetterState),
}

/// Everything one pusher step settles, committed in one durable transaction.
#[derive(Debug, Clone, Default)]
pub struct StepCommit {
    /// The new push cursor (`None`: unchanged, e.g. a step that only drained the requeue).
    pub cursor: Option<u64>,
    pub outcomes: Vec<(u64, Outcome)>,
    /// The document of dead-lettered events (absent: none; it holds nothing).
    pub documents: Vec<(u64, String)>,
    /// Requeued events settled by this step (their `requeue` rows are removed).
    pub requeue_settled: Vec<u64>,
    /// Flow state rows to write.
    pub state_put: Vec<(String, Vec<u8>)>,
    /// Flow state rows to remove.
    pub state_delete: Vec<String>,
}

/// What the pusher needs besides the events past its cursor.
#[derive(Debug, Clone, Default)]
pub struct FlowView {
    /// Requeued events, in seq order, with the document recorded for them ("" = none).
    pub requeued: Vec<(StoredEvent, String)>,
    /// Documents with a blocking dead letter → the lowest such seq.
    pub blocked: BTreeMap<String, u64>,
    /// The flows' state rows.
    pub state: Vec<(String, Vec<u8>)>,
}

/// A stored event by its key, decoded (or why not: gone from the inbox, or undecodable).
fn stored_event(
    inbox: &impl rows::Rows,
    site: &str,
    seq: u64,
) -> Result<Result<Event, String>, InboxError> {
    Ok(rows::event_at(inbox, site, seq)?
        .unwrap_or_else(|| Err("the event is no longer in the inbox".to_string())))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl Inbox {
    /// One dead letter with its state, event and the events it holds back.
    pub fn dead_letter(
        &self,
        site: &str,
        seq: u64,
    ) -> Result<Option<DeadLetterDetail>, InboxError> {
        let txn = self.db.begin_read()?;
        let Some((at, reason)) = txn.open_table(DEAD_LETTERS)?.get((site, seq))?.map(|v| {
            let (at, reason) = v.value();
            (at, reason.to_string())
        }) else {
            return Ok(None);
        };
        let (state, changed_at, document, note) =
            match txn.open_table(DEAD_LETTER_STATE)?.get((site, seq))? {
                Some(v) => {
                    let (code, changed, doc, note) = v.value();
                    (
                        DeadLetterState::from_code(code),
                        changed,
                        non_empty(doc),
                        non_empty(note),
                    )
                }
                None => (DeadLetterState::Open, at, None, None),
            };
        let event = stored_event(&txn.open_table(INBOX_BATCHES)?, site, seq)?;
        let mut held = Vec::new();
        for row in txn.open_table(HELD)?.range(seqs_from(site, 0))? {
            let (key, value) = row?;
            if value.value().0 == seq {
                held.push(key.value().1);
            }
        }
        Ok(Some(DeadLetterDetail {
            seq,
            at,
            reason,
            state,
            changed_at,
            document,
            note,
            event,
            held,
        }))
    }

    /// All dead letters of a site with their states, in seq order.
    pub fn dead_letter_list(&self, site: &str) -> Result<Vec<DeadLetterSummary>, InboxError> {
        let txn = self.db.begin_read()?;
        let states = txn.open_table(DEAD_LETTER_STATE)?;
        let mut out = Vec::new();
        for row in txn.open_table(DEAD_LETTERS)?.range(seqs_from(site, 0))? {
            let (key, value) = row?;
            let seq = key.value().1;
            let (at, reason) = value.value();
            let (state, document) = match states.get((site, seq))? {
                Some(v) => {
                    let (code, _, doc, _) = v.value();
                    (DeadLetterState::from_code(code), non_empty(doc))
                }
                None => (DeadLetterState::Open, None),
            };
            out.push(DeadLetterSummary {
                seq,
                at,
                reason: reason.to_string(),
                state,
                document,
            });
        }
        Ok(out)
    }

    /// How many dead letters of a site are open or waiting for their replay.
    pub fn open_dead_letters(&self, site: &str) -> Result<u64, InboxError> {
        Ok(self
            .dead_letter_list(site)?
            .iter()
            .filter(|d| d.state.blocks())
            .count() as u64)
    }

    /// Queues a dead letter again (after master data was fixed in Odoo) and releases the events
    /// it held back. Idempotent while the replay is pending. Wake the pusher afterwards.
    pub fn replay_dead_letter(&self, site: &str, seq: u64) -> Result<ReplayResult, InboxError> {
        self.change_dead_letter(site, seq, DeadLetterState::ReplayRequested, "")
    }

    /// Gives a dead letter up (it never reaches Odoo) with an operator's note, and releases the
    /// events it held back. Wake the pusher afterwards.
    pub fn skip_dead_letter(
        &self,
        site: &str,
        seq: u64,
        note: &str,
    ) -> Result<ReplayResult, InboxError> {
        self.change_dead_letter(site, seq, DeadLetterState::Skipped, note)
    }

    fn change_dead_letter(
        &self,
        site: &str,
        seq: u64,
        to: DeadLetterState,
        note: &str,
    ) -> Result<ReplayResult, InboxError> {
        let now = crate::now_micros();
        let txn = self.write_txn()?;
        let result = {
            if txn.open_table(DEAD_LETTERS)?.get((site, seq))?.is_none() {
                return Ok(ReplayResult::NotFound);
            }
            let mut states = txn.open_table(DEAD_LETTER_STATE)?;
            let (state, document) = match states.get((site, seq))? {
                Some(v) => {
                    let (code, _, doc, _) = v.value();
                    (DeadLetterState::from_code(code), doc.to_string())
                }
                None => (DeadLetterState::Open, String::new()),
            };
            match (state, to) {
                (DeadLetterState::Skipped | DeadLetterState::Resolved, _) => {
                    return Ok(ReplayResult::Closed(state));
                }
                (DeadLetterState::ReplayRequested, DeadLetterState::ReplayRequested) => {
                    return Ok(ReplayResult::Done {
                        state,
                        released: Vec::new(),
                    });
                }
                _ => {}
            }
            states.insert((site, seq), (to.code(), now, document.as_str(), note))?;
            refresh_blocking(&states, &mut txn.open_table(BLOCKING)?, site, &document)?;
            let mut requeue = txn.open_table(REQUEUE)?;
            if to == DeadLetterState::ReplayRequested {
                requeue.insert((site, seq), document.as_str())?;
            } else {
                requeue.remove((site, seq))?;
            }
            let mut held = txn.open_table(HELD)?;
            let mut released = Vec::new();
            if !document.is_empty() {
                for row in held.range(seqs_from(site, 0))? {
                    let (key, value) = row?;
                    if value.value().1 == document {
                        released.push(key.value().1);
                    }
                }
            }
            for &r in &released {
                held.remove((site, r))?;
                requeue.insert((site, r), document.as_str())?;
            }
            ReplayResult::Done {
                state: to,
                released,
            }
        };
        txn.commit()?;
        Ok(result)
    }

    /// Requeued events (up to `limit`), blocked documents and the flow state of a site.
    pub fn flow_view(&self, site: &str, limit: usize) -> Result<FlowView, InboxError> {
        let txn = self.db.begin_read()?;
        let inbox = txn.open_table(INBOX_BATCHES)?;
        let mut view = FlowView::default();
        for row in txn
            .open_table(REQUEUE)?
            .range(seqs_from(site, 0))?
            .take(limit)
        {
            let (key, document) = row?;
            let seq = key.value().1;
            let event = stored_event(&inbox, site, seq)?;
            view.requeued
                .push((StoredEvent { seq, event }, document.value().to_string()));
        }
        for row in txn.open_table(BLOCKING)?.range((site, "")..)? {
            let (key, value) = row?;
            let (row_site, document) = key.value();
            if row_site != site {
                break;
            }
            view.blocked.insert(document.to_string(), value.value());
        }
        for row in txn.open_table(FLOW_STATE)?.range((site, "")..)? {
            let (key, value) = row?;
            let (row_site, name) = key.value();
            if row_site != site {
                break;
            }
            view.state.push((name.to_string(), value.value().to_vec()));
        }
        Ok(view)
    }

    /// Sites with requeued events.
    pub(super) fn sites_with_requeue(&self) -> Result<Vec<String>, InboxError> {
        let txn = self.db.begin_read()?;
        let mut out: Vec<String> = Vec::new();
        for row in txn.open_table(REQUEUE)?.iter()? {
            let (key, _) = row?;
            let site = key.value().0;
            if out.last().map(String::as_str) != Some(site) {
                out.push(site.to_string());
            }
        }
        Ok(out)
    }

    /// Commits one pusher step: outcomes (with the dead-letter lifecycle, held events and Odoo
    /// references), the requeue rows it settled, the flow state and the cursor, in one durable
    /// transaction. Clears the inflight chunk when the cursor passes it.
    pub fn commit_step(&self, site: &str, step: &StepCommit, now: i64) -> Result<(), InboxError> {
        let txn = self.write_txn()?;
        {
            let mut table = txn.open_table(OUTCOMES)?;
            let mut dead = txn.open_table(DEAD_LETTERS)?;
            let mut states = txn.open_table(DEAD_LETTER_STATE)?;
            let mut held = txn.open_table(HELD)?;
            let mut refs = txn.open_table(OUTCOME_REFS)?;
            let mut counters = txn.open_table(COUNTERS)?;
            let documents: BTreeMap<u64, &str> = step
                .documents
                .iter()
                .map(|(seq, d)| (*seq, d.as_str()))
                .collect();
            let (mut applied, mut dead_lettered) = (0u64, 0u64);
            let mut touched: Vec<String> = Vec::new();
            for (seq, outcome) in &step.outcomes {
                let key = (site, *seq);
                let (kind, detail) = match outcome {
                    Outcome::Applied { tag, odoo } => {
                        applied += 1;
                        if let Some(odoo) = odoo {
                            refs.insert(key, (odoo.model.as_str(), odoo.id))?;
                        }
                        let state = states.get(key)?.map(|v| {
                            let (_, _, doc, note) = v.value();
                            (doc.to_string(), note.to_string())
                        });
                        if let Some((doc, note)) = state {
                            let code = DeadLetterState::Resolved.code();
                            states.insert(key, (code, now, doc.as_str(), note.as_str()))?;
                            touched.push(doc);
                        }
                        held.remove(key)?;
                        (KIND_APPLIED, tag.as_str())
                    }
                    Outcome::DeadLettered { reason } => {
                        if dead.insert(key, (now, reason.as_str()))?.is_none() {
                            dead_lettered += 1;
                        }
                        let doc = documents.get(seq).copied().unwrap_or_default();
                        states.insert(key, (DeadLetterState::Open.code(), now, doc, ""))?;
                        touched.push(doc.to_string());
                        held.remove(key)?;
                        (KIND_DEAD_LETTERED, reason.as_str())
                    }
                    Outcome::Quarantined { reason } => (KIND_QUARANTINED, reason.as_str()),
                    Outcome::Held { behind, document } => {
                        held.insert(key, (*behind, document.as_str()))?;
                        (KIND_HELD, document.as_str())
                    }
                };
                table.insert(key, (kind, detail))?;
            }
            add(&mut counters, site, counter::APPLIED, applied)?;
            add(&mut counters, site, counter::DEAD_LETTERED, dead_lettered)?;
            touched.sort();
            touched.dedup();
            let mut blocking = txn.open_table(BLOCKING)?;
            for doc in &touched {
                refresh_blocking(&states, &mut blocking, site, doc)?;
            }
            let mut requeue = txn.open_table(REQUEUE)?;
            for seq in &step.requeue_settled {
                requeue.remove((site, *seq))?;
            }
            let mut flow = txn.open_table(FLOW_STATE)?;
            for key in &step.state_delete {
                flow.remove((site, key.as_str()))?;
            }
            for (key, value) in &step.state_put {
                flow.insert((site, key.as_str()), value.as_slice())?;
            }
            if let Some(new_cursor) = step.cursor {
                txn.open_table(PUSH_CURSOR)?.insert(site, new_cursor)?;
                let mut inflight = txn.open_table(PUSH_INFLIGHT)?;
                let passed = inflight
                    .get(site)?
                    .is_some_and(|v| v.value().1 < new_cursor);
                if passed {
                    inflight.remove(site)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The outcome of one event from an open read transaction (used by [`Inbox::outcome`]).
    pub(super) fn read_outcome(
        txn: &redb::ReadTransaction,
        site: &str,
        seq: u64,
    ) -> Result<Option<Outcome>, InboxError> {
        let Some((kind, detail)) = txn.open_table(OUTCOMES)?.get((site, seq))?.map(|v| {
            let (kind, detail) = v.value();
            (kind, detail.to_string())
        }) else {
            return Ok(None);
        };
        Ok(Some(match kind {
            KIND_APPLIED => Outcome::Applied {
                tag: detail,
                odoo: txn.open_table(OUTCOME_REFS)?.get((site, seq))?.map(|v| {
                    let (model, id) = v.value();
                    OdooRef {
                        model: model.to_string(),
                        id,
                    }
                }),
            },
            KIND_QUARANTINED => Outcome::Quarantined { reason: detail },
            KIND_HELD => Outcome::Held {
                behind: txn
                    .open_table(HELD)?
                    .get((site, seq))?
                    .map_or(0, |v| v.value().0),
                document: detail,
            },
            _ => Outcome::DeadLettered { reason: detail },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanbridge_protocol::{EventBody, Operation, Scan, Symbology};

    fn scan(seq: u64) -> Event {
        crate::inbox::tests::event_with(
            seq,
            EventBody::Scan(Scan {
                code: "4006381333931".into(),
                symbology: Symbology::Ean13,
                gs1: None,
                op: Some(Operation::Receive),
                qty: Some(1.0),
                location: None,
                reference: None,
            }),
        )
    }

    fn inbox_with(seqs: std::ops::RangeInclusive<u64>) -> (tempfile::TempDir, Inbox) {
        let dir = tempfile::tempdir().expect("tempdir");
        let inbox = Inbox::open(&dir.path().join("relay.redb")).expect("open");
        crate::inbox::tests::store(&inbox, seqs.map(scan).collect());
        (dir, inbox)
    }

    fn dead(reason: &str) -> Outcome {
        Outcome::DeadLettered {
            reason: reason.into(),
        }
    }

    fn held(behind: u64) -> Outcome {
        Outcome::Held {
            behind,
            document: "WH/IN/00001".into(),
        }
    }

    /// seq 1 dead on WH/IN/00001, 2 held behind it, 3 applied elsewhere, 4 dead without document.
    fn scenario() -> (tempfile::TempDir, Inbox) {
        let (dir, inbox) = inbox_with(1..=4);
        let step = StepCommit {
            cursor: Some(5),
            outcomes: vec![
                (1, dead("Lot missing")),
                (2, held(1)),
                (
                    3,
                    Outcome::Applied {
                        tag: "t".into(),
                        odoo: Some(OdooRef {
                            model: "stock.move.line".into(),
                            id: 9,
                        }),
                    },
                ),
                (4, dead("unknown barcode")),
            ],
            documents: vec![(1, "WH/IN/00001".into())],
            ..StepCommit::default()
        };
        inbox.commit_step("WH01", &step, 7).expect("commit");
        (dir, inbox)
    }

    #[test]
    fn a_dead_letter_of_a_picking_blocks_that_picking_only_and_shows_what_it_holds() {
        let (_dir, inbox) = scenario();
        let view = inbox.flow_view("WH01", 10).expect("view");
        assert_eq!(
            view.blocked,
            BTreeMap::from([("WH/IN/00001".to_string(), 1)])
        );
        let detail = inbox.dead_letter("WH01", 1).expect("read").expect("exists");
        assert_eq!(detail.state, DeadLetterState::Open);
        assert_eq!(detail.document.as_deref(), Some("WH/IN/00001"));
        assert_eq!(detail.held, [2]);
        assert!(detail.event.is_ok());
        assert_eq!(inbox.outcome("WH01", 2).expect("outcome"), Some(held(1)));
        assert_eq!(
            inbox.outcome("WH01", 3).expect("outcome"),
            Some(Outcome::Applied {
                tag: "t".into(),
                odoo: Some(OdooRef {
                    model: "stock.move.line".into(),
                    id: 9
                })
            })
        );
        assert_eq!(inbox.open_dead_letters("WH01").expect("open"), 2);
    }

    #[test]
    fn replaying_requeues_the_dead_letter_and_what_it_held_and_applying_resolves_it() {
        let (_dir, inbox) = scenario();
        assert_eq!(
            inbox.replay_dead_letter("WH01", 1).expect("replay"),
            ReplayResult::Done {
                state: DeadLetterState::ReplayRequested,
                released: vec![2]
            }
        );
        assert_eq!(
            inbox.replay_dead_letter("WH01", 1).expect("again"),
            ReplayResult::Done {
                state: DeadLetterState::ReplayRequested,
                released: vec![]
            },
            "a second replay request changes nothing"
        );
        assert!(inbox
            .sites_with_backlog()
            .expect("sites")
            .contains(&"WH01".to_string()));
        let view = inbox.flow_view("WH01", 10).expect("view");
        let requeued: Vec<(u64, &str)> = view
            .requeued
            .iter()
            .map(|(e, d)| (e.seq, d.as_str()))
            .collect();
        assert_eq!(requeued, [(1, "WH/IN/00001"), (2, "WH/IN/00001")]);
        let applied = Outcome::Applied {
            tag: "t".into(),
            odoo: None,
        };
        let step = StepCommit {
            outcomes: vec![(1, applied.clone()), (2, applied)],
            requeue_settled: vec![1, 2],
            ..StepCommit::default()
        };
        inbox.commit_step("WH01", &step, 9).expect("commit");
        let detail = inbox.dead_letter("WH01", 1).expect("read").expect("exists");
        assert_eq!(detail.state, DeadLetterState::Resolved);
        assert!(inbox
            .flow_view("WH01", 10)
            .expect("view")
            .requeued
            .is_empty());
        assert!(inbox
            .flow_view("WH01", 10)
            .expect("view")
            .blocked
            .is_empty());
        assert_eq!(
            inbox.replay_dead_letter("WH01", 1).expect("closed"),
            ReplayResult::Closed(DeadLetterState::Resolved)
        );
    }

    #[test]
    fn skipping_releases_the_held_events_but_not_the_dead_letter_itself() {
        let (_dir, inbox) = scenario();
        assert_eq!(
            inbox
                .skip_dead_letter("WH01", 1, "received by hand")
                .expect("skip"),
            ReplayResult::Done {
                state: DeadLetterState::Skipped,
                released: vec![2]
            }
        );
        let view = inbox.flow_view("WH01", 10).expect("view");
        assert_eq!(
            view.requeued.iter().map(|(e, _)| e.seq).collect::<Vec<_>>(),
            [2]
        );
        assert!(view.blocked.is_empty());
        let detail = inbox.dead_letter("WH01", 1).expect("read").expect("exists");
        assert_eq!(detail.note.as_deref(), Some("received by hand"));
        assert_eq!(
            inbox.skip_dead_letter("WH01", 1, "again").expect("closed"),
            ReplayResult::Closed(DeadLetterState::Skipped)
        );
        assert_eq!(
            inbox.replay_dead_letter("WH01", 77).expect("none"),
            ReplayResult::NotFound
        );
    }

    #[test]
    fn a_replayed_event_refused_again_is_open_again_and_counted_once() {
        let (_dir, inbox) = scenario();
        inbox.replay_dead_letter("WH01", 4).expect("replay");
        let step = StepCommit {
            outcomes: vec![(4, dead("still unknown"))],
            requeue_settled: vec![4],
            ..StepCommit::default()
        };
        inbox.commit_step("WH01", &step, 11).expect("commit");
        let detail = inbox.dead_letter("WH01", 4).expect("read").expect("exists");
        assert_eq!(
            (detail.state, detail.reason.as_str()),
            (DeadLetterState::Open, "still unknown")
        );
        assert_eq!(inbox.stats("WH01").expect("stats").dead_lettered, 2);
    }

    #[test]
    fn flow_state_rows_commit_with_the_step_and_stay_per_site() {
        let (_dir, inbox) = scenario();
        let step = StepCommit {
            state_put: vec![("device/SC-01".into(), b"{}".to_vec())],
            ..StepCommit::default()
        };
        inbox.commit_step("WH01", &step, 1).expect("commit");
        inbox.commit_step("WH02", &step, 1).expect("commit");
        let view = inbox.flow_view("WH01", 10).expect("view");
        assert_eq!(view.state, [("device/SC-01".to_string(), b"{}".to_vec())]);
        let step = StepCommit {
            state_delete: vec!["device/SC-01".into()],
            ..StepCommit::default()
        };
        inbox.commit_step("WH01", &step, 1).expect("commit");
        assert!(inbox.flow_view("WH01", 10).expect("view").state.is_empty());
        assert_eq!(inbox.flow_view("WH02", 10).expect("view").state.len(), 1);
    }
}

//! The Odoo pusher: moves every site's inbox into Odoo, in seq order, from a per-site cursor.
//!
//! Owns the scheduler, the shared barcode caches (no negative cache) and each site's retry
//! state. Sites are pushed in parallel, at most `[odoo] max_concurrency` at a time, one site
//! strictly in order (a site is never stepped by two tasks at once); the client paces all calls
//! to `max_rps`. Per site, one step at a time:
//!
//! 0. Requeued events (a replayed dead letter, events released by a replay or skip) go first,
//!    one per step, in seq order (the ordering rule, `crate::inbox::lifecycle`).
//! 1. Leading events that need no Odoo call are settled: quarantined payloads get the
//!    `quarantined` outcome, unmapped events are dead-lettered with the reason.
//! 2. A run of count scans is a count chunk ([`count::chunk_len`]): barcodes resolved
//!    (`search_read`, cached), unresolvable events dead-lettered and left out, the chunk recorded
//!    as inflight, and — only when in doubt (first chunk after start, or the previous attempt was
//!    ambiguous) — `stock.move.search_count([name = TAG])` decides whether it is already applied.
//!    Then `stock.quant.load` and `action_apply_inventory`, exactly as CONTRACTS.md says (plus,
//!    for counts of 0 only, a `stock.quant.write` of `inventory_quantity_set`).
//! 3. Picking flows and PLC readings go to [`flows`] (receipts, pick/pack/ship, validate with
//!    the backorder wizard, readings written onto the open picking).
//! 4. After Odoo answered, the cursor, the outcomes and the flow state commit in one redb
//!    transaction.
//!
//! Transient failures keep the cursor and retry the same step (a count chunk keeps its TAG: the
//! inflight record pins its end, also across a restart) with capped exponential backoff and
//! jitter, forever: Odoo down for hours loses nothing and needs no manual step. A permanent
//! failure of a multi-event count chunk isolates it: each event is retried alone under its own
//! TAG (`<seq>-<seq>`), and the one Odoo refuses is dead-lettered with Odoo's message. The loop
//! wakes on new inbox data ([`Notify`]) and on a periodic tick.

mod flows;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::inbox::{run_blocking, Inbox, InboxError, OdooRef, Outcome, StepCommit};
use crate::odoo::client::OdooClient;
use crate::odoo::count::{self, CountLine, LoadOutcome, LoadRow};
use crate::odoo::errors::{Class, OdooError};
use crate::odoo::flows::{FlowEvent, Pack};

/// Periodic wake-up even without new data (retries of sites in backoff are also timed).
const TICK: Duration = Duration::from_secs(5);
/// First retry delay after a transient failure.
const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Steps one site task takes before giving the slot back (fairness between sites).
const STEPS_PER_TURN: usize = 32;

/// Why a push step could not finish; the site is retried after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Odoo(#[from] OdooError),
    #[error(transparent)]
    Store(#[from] InboxError),
}

/// Retry state of one site.
#[derive(Debug, Clone)]
struct SiteState {
    /// The next chunk must first be checked with `search_count` (start, or ambiguous failure).
    in_doubt: bool,
    /// Consecutive failed steps.
    failures: u32,
    /// No attempt before this instant.
    not_before: Option<Instant>,
    /// Flow steps take one event at a time up to this seq (Odoo refused a multi-event load).
    single_until: Option<u64>,
}

impl Default for SiteState {
    fn default() -> Self {
        SiteState {
            in_doubt: true,
            failures: 0,
            not_before: None,
            single_until: None,
        }
    }
}

/// The result of a failed write of a chunk's rows.
enum WriteError {
    /// Odoo refused the data (rolled back); its message.
    Refused(String),
    /// Anything else: retry later.
    Failed(OdooError),
}

/// Ids the pusher resolved from barcodes, shared by all site tasks.
#[derive(Default)]
struct Caches {
    /// product barcode → product.product id.
    products: HashMap<String, i64>,
    /// location barcode → stock.location id.
    locations: HashMap<String, i64>,
    /// packaging barcode → product and size.
    packs: HashMap<String, Pack>,
    /// picking type id → (use_create_lots, use_existing_lots).
    picking_types: HashMap<i64, (bool, bool)>,
    /// The internal operation type (id, use_create_lots, use_existing_lots).
    internal_type: Option<(i64, bool, bool)>,
}

/// What every site task shares.
struct Shared {
    inbox: Inbox,
    client: Arc<OdooClient>,
    max_chunk: usize,
    caches: Mutex<Caches>,
    cancel: CancellationToken,
}

impl Shared {
    fn caches(&self) -> std::sync::MutexGuard<'_, Caches> {
        self.caches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The pusher component.
pub struct Pusher {
    shared: Arc<Shared>,
    /// Signalled by intake after a commit that inserted events (and by replay/skip).
    wake: Arc<Notify>,
    cancel: CancellationToken,
    sites: HashMap<String, SiteState>,
}

/// One site's worker for one turn.
struct Worker {
    shared: Arc<Shared>,
    site: String,
    /// The requeued event being handled (its outcome settles the requeue row, not the cursor).
    requeued: Option<u64>,
    /// The quant each count row of the last write landed on (seq → stock.quant id).
    quant_ids: HashMap<u64, i64>,
}

impl Pusher {
    pub fn new(
        inbox: Inbox,
        client: OdooClient,
        max_chunk: usize,
        wake: Arc<Notify>,
        cancel: CancellationToken,
    ) -> Pusher {
        Pusher {
            shared: Arc::new(Shared {
                inbox,
                client: Arc::new(client),
                max_chunk: max_chunk.max(1),
                caches: Mutex::new(Caches::default()),
                cancel: cancel.clone(),
            }),
            wake,
            cancel,
            sites: HashMap::new(),
        }
    }

    /// The Odoo client (for its call counters).
    pub fn client(&self) -> Arc<OdooClient> {
        self.shared.client.clone()
    }

    /// Pushes until cancelled. Steps in progress finish (the caller bounds it with a drain
    /// deadline; an interrupted chunk is in doubt at the next start and checked then).
    pub async fn run(mut self) -> Result<(), PushError> {
        let max_concurrency = self.shared.client.settings().max_concurrency.max(1);
        let mut tasks: JoinSet<(String, SiteState, Result<bool, PushError>)> = JoinSet::new();
        let mut running: HashSet<String> = HashSet::new();
        // Where the next scan of the site list starts, so no site waits behind busy ones.
        let mut rotation = 0usize;
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            let inbox = self.shared.inbox.clone();
            let sites = match run_blocking(move || inbox.sites_with_backlog()).await {
                Ok(mut sites) => {
                    if !sites.is_empty() {
                        rotation = rotation.wrapping_add(1);
                        let by = rotation % sites.len();
                        sites.rotate_left(by);
                    }
                    sites
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the inbox; retrying");
                    Vec::new()
                }
            };
            let mut next_due = Instant::now() + TICK;
            for site in sites {
                if running.len() >= max_concurrency {
                    break;
                }
                if running.contains(&site) {
                    continue;
                }
                let state = self.sites.get(&site).cloned().unwrap_or_default();
                if let Some(t) = state.not_before {
                    if t > Instant::now() {
                        next_due = next_due.min(t);
                        continue;
                    }
                }
                running.insert(site.clone());
                let shared = self.shared.clone();
                tasks.spawn(turn(shared, site, state));
            }
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    match joined {
                        Ok((site, mut state, result)) => {
                            running.remove(&site);
                            match result {
                                Ok(_) => {
                                    state.failures = 0;
                                    state.not_before = None;
                                }
                                Err(e) => {
                                    state.failures = state.failures.saturating_add(1);
                                    let delay = backoff_delay(
                                        state.failures,
                                        BACKOFF_INITIAL,
                                        BACKOFF_MAX,
                                        rand::thread_rng().gen::<f64>(),
                                    );
                                    state.not_before = Some(Instant::now() + delay);
                                    let span = tracing::info_span!("push", site = %site);
                                    let _enter = span.enter();
                                    self.report_failure(&e, &mut state, delay);
                                }
                            }
                            self.sites.insert(site, state);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "a push task failed");
                            running.clear();
                        }
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(next_due) => {}
            }
        }
        while tasks.join_next().await.is_some() {}
        tracing::debug!("pusher stopped");
        Ok(())
    }

    fn report_failure(&mut self, e: &PushError, state: &mut SiteState, delay: Duration) {
        let retry_in_ms = delay.as_millis() as u64;
        match e {
            PushError::Store(e) => {
                tracing::error!(error = %e, retry_in_ms, "relay store failed while pushing")
            }
            PushError::Odoo(e) => match e.class() {
                Class::Transient { ambiguous } => {
                    state.in_doubt |= ambiguous;
                    tracing::warn!(error = %e, ambiguous, retry_in_ms, failures = state.failures, "Odoo call failed; retrying");
                }
                Class::Alarm => {
                    self.shared.client.reset_session();
                    tracing::error!(error = %e, retry_in_ms, "Odoo refuses the relay: an operator must fix the Odoo settings; retrying");
                }
                Class::Permanent => {
                    tracing::error!(error = %e, retry_in_ms, "Odoo refused a lookup; retrying");
                }
            },
        }
    }
}

/// One turn of one site: steps until nothing is left, a failure, or [`STEPS_PER_TURN`].
async fn turn(
    shared: Arc<Shared>,
    site: String,
    mut state: SiteState,
) -> (String, SiteState, Result<bool, PushError>) {
    let mut worker = Worker {
        shared: shared.clone(),
        site: site.clone(),
        requeued: None,
        quant_ids: HashMap::new(),
    };
    let span = tracing::info_span!("push", site = %site);
    let mut progressed = false;
    for _ in 0..STEPS_PER_TURN {
        if shared.cancel.is_cancelled() {
            break;
        }
        match worker.step(&mut state).instrument(span.clone()).await {
            Ok(true) => progressed = true,
            Ok(false) => break,
            Err(e) => return (site, state, Err(e)),
        }
    }
    (site, state, Ok(progressed))
}

impl Worker {
    /// One step for one site. `Ok(true)` when something was settled.
    async fn step(&mut self, state: &mut SiteState) -> Result<bool, PushError> {
        let site = self.site.clone();
        let site = site.as_str();
        let settings = self.shared.client.settings().clone();
        let (inbox, site_owned) = (self.shared.inbox.clone(), site.to_string());
        let view = run_blocking(move || inbox.flow_view(&site_owned, 1)).await?;
        if let Some((stored, document)) = view.requeued.first().cloned() {
            self.requeued = Some(stored.seq);
            let result = match crate::odoo::flows::classify(&stored, &settings) {
                FlowEvent::Settle(o) => self
                    .commit(site, stored.seq, vec![(stored.seq, o)])
                    .await
                    .map_err(PushError::from),
                FlowEvent::Count(line) => {
                    // A replayed count may have been loaded before: check first.
                    let mut doubt = true;
                    self.push_chunk(site, &[line], None, &mut doubt).await
                }
                event => {
                    let doc = (!document.is_empty()).then_some(document);
                    self.flow_step(vec![(stored.seq, event)], &view, doc, state)
                        .await
                }
            };
            self.requeued = None;
            result?;
            return Ok(true);
        }
        let inbox = self.shared.inbox.clone();
        let (site_owned, limit) = (site.to_string(), self.shared.max_chunk);
        let pending = run_blocking(move || inbox.pending(&site_owned, limit)).await?;
        let Some(first) = pending.events.first() else {
            return Ok(false);
        };
        if first.seq != pending.cursor && pending.cursor != 0 {
            tracing::warn!(
                cursor = pending.cursor,
                next_seq = first.seq,
                "events missing from the inbox; continuing after the gap"
            );
        }
        let handled: Vec<(u64, FlowEvent)> = pending
            .events
            .iter()
            .map(|e| (e.seq, crate::odoo::flows::classify(e, &settings)))
            .collect();

        // 1. Leading events that do not go to Odoo.
        let settled: Vec<(u64, Outcome)> = handled
            .iter()
            .map_while(|(seq, h)| match h {
                FlowEvent::Settle(o) => Some((*seq, o.clone())),
                _ => None,
            })
            .collect();
        if let Some(&(last, _)) = settled.last() {
            self.commit(site, last.saturating_add(1), settled).await?;
            return Ok(true);
        }

        // 2. The next chunk of count scans.
        if matches!(handled.first(), Some((_, FlowEvent::Count(_)))) {
            let lines: Vec<CountLine> = handled
                .into_iter()
                .map_while(|(_, h)| match h {
                    FlowEvent::Count(line) => Some(line),
                    _ => None,
                })
                .collect();
            let limit_last = pending
                .inflight
                .filter(|&(first_seq, _)| first_seq == first.seq)
                .map(|(_, last)| last);
            let n = count::chunk_len(&lines, self.shared.max_chunk, limit_last);
            let chunk = &lines[..n];
            self.push_chunk(site, chunk, pending.inflight, &mut state.in_doubt)
                .await?;
            return Ok(true);
        }

        // 3. Picking flows and readings.
        let mut run: Vec<(u64, FlowEvent)> = handled
            .into_iter()
            .take_while(|(_, h)| {
                matches!(
                    h,
                    FlowEvent::Picking { .. } | FlowEvent::Move { .. } | FlowEvent::Reading { .. }
                )
            })
            .collect();
        if state.single_until.is_some_and(|until| first.seq <= until) {
            run.truncate(1);
        } else {
            state.single_until = None;
        }
        self.flow_step(run, &view, None, state).await?;
        Ok(true)
    }

    /// Pushes one chunk and commits its outcomes and the cursor past it.
    async fn push_chunk(
        &mut self,
        site: &str,
        chunk: &[CountLine],
        inflight: Option<(u64, u64)>,
        in_doubt: &mut bool,
    ) -> Result<(), PushError> {
        let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
            return Ok(());
        };
        let (first, last) = (first.seq, last.seq);
        let tag = count::tag(site, first, last);
        let span = tracing::info_span!("chunk", %tag, events = chunk.len());
        async {
            let mut outcomes: BTreeMap<u64, Outcome> = BTreeMap::new();
            let complete: Vec<&CountLine> = chunk
                .iter()
                .filter(|line| match line.incomplete() {
                    Some(reason) => {
                        outcomes.insert(line.seq, Outcome::DeadLettered { reason });
                        false
                    }
                    None => true,
                })
                .collect();
            self.quant_ids.clear();
            let rows = self.resolve(&complete, &mut outcomes).await?;
            if rows.is_empty() {
                self.commit(site, last.saturating_add(1), outcomes.into_iter().collect()).await?;
                *in_doubt = false;
                return Ok(());
            }
            if inflight != Some((first, last)) {
                let (inbox, s) = (self.shared.inbox.clone(), site.to_string());
                run_blocking(move || inbox.set_inflight(&s, first, last)).await?;
            }
            match self.write_rows(&tag, site, &rows, *in_doubt).await {
                Ok(missing) => {
                    for row in &rows {
                        let outcome = if missing.contains(&row.seq) {
                            Outcome::DeadLettered { reason: not_in_applied_chunk(&tag) }
                        } else {
                            Outcome::Applied { tag: tag.clone(), odoo: self.quant_ref(row.seq) }
                        };
                        outcomes.insert(row.seq, outcome);
                    }
                }
                Err(WriteError::Failed(e)) => return Err(e.into()),
                Err(WriteError::Refused(reason)) if rows.len() == 1 => {
                    outcomes.insert(rows[0].seq, Outcome::DeadLettered { reason });
                }
                Err(WriteError::Refused(reason)) => {
                    tracing::warn!(%reason, "Odoo refused the chunk; retrying its events one by one");
                    let doubt = std::mem::replace(in_doubt, false);
                    return self.isolate(site, last, rows, outcomes, doubt).await;
                }
            }
            self.commit(site, last.saturating_add(1), outcomes.into_iter().collect()).await?;
            *in_doubt = false;
            tracing::debug!("chunk settled");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Retries each row alone, committing after each, so the refused one is dead-lettered.
    /// `in_doubt`: the chunk was in doubt, so a row's earlier load may have committed.
    async fn isolate(
        &mut self,
        site: &str,
        chunk_last: u64,
        rows: Vec<LoadRow>,
        mut outcomes: BTreeMap<u64, Outcome>,
        in_doubt: bool,
    ) -> Result<(), PushError> {
        for row in rows {
            let seq = row.seq;
            let tag = count::tag(site, seq, seq);
            let (inbox, s) = (self.shared.inbox.clone(), site.to_string());
            run_blocking(move || inbox.set_inflight(&s, seq, seq)).await?;
            let outcome = match self
                .write_rows(&tag, site, std::slice::from_ref(&row), in_doubt)
                .await
            {
                Ok(missing) if missing.contains(&seq) => Outcome::DeadLettered {
                    reason: not_in_applied_chunk(&tag),
                },
                Ok(_) => Outcome::Applied {
                    tag,
                    odoo: self.quant_ref(seq),
                },
                Err(WriteError::Refused(reason)) => Outcome::DeadLettered { reason },
                Err(WriteError::Failed(e)) => return Err(e.into()),
            };
            outcomes.insert(seq, outcome);
            let rest = outcomes.split_off(&seq.saturating_add(1));
            let done = std::mem::replace(&mut outcomes, rest);
            self.commit(site, seq.saturating_add(1), done.into_iter().collect())
                .await?;
        }
        self.commit(
            site,
            chunk_last.saturating_add(1),
            outcomes.into_iter().collect(),
        )
        .await?;
        Ok(())
    }

    /// Resolves barcodes to ids (cache, then `search_read`); unknown ones are dead-lettered.
    async fn resolve(
        &mut self,
        lines: &[&CountLine],
        outcomes: &mut BTreeMap<u64, Outcome>,
    ) -> Result<Vec<LoadRow>, PushError> {
        let products: Vec<String> = lines.iter().map(|l| l.product.clone()).collect();
        let locations: Vec<String> = lines.iter().filter_map(|l| l.location.clone()).collect();
        self.lookup("product.product", &products).await?;
        self.lookup("stock.location", &locations).await?;
        let mut rows = Vec::with_capacity(lines.len());
        for line in lines {
            let location = line.location.as_deref().unwrap_or_default();
            let (product_id, location_id) = {
                let caches = self.shared.caches();
                (
                    caches.products.get(&line.product).copied(),
                    caches.locations.get(location).copied(),
                )
            };
            match (product_id, location_id, line.qty) {
                (Some(product_id), Some(location_id), Some(qty)) => rows.push(LoadRow {
                    seq: line.seq,
                    product_id,
                    location_id,
                    qty,
                }),
                (None, _, _) => {
                    outcomes.insert(line.seq, Outcome::DeadLettered {
                        reason: format!("product barcode {} not found in Odoo (product.product.barcode); create the product or fix its barcode, then replay", line.product),
                    });
                }
                (_, None, _) => {
                    outcomes.insert(line.seq, Outcome::DeadLettered {
                        reason: format!("location barcode {location} not found in Odoo (stock.location.barcode); create the location or fix its barcode, then replay"),
                    });
                }
                (_, _, None) => {
                    outcomes.insert(
                        line.seq,
                        Outcome::DeadLettered {
                            reason: "count scan without a quantity".into(),
                        },
                    );
                }
            }
        }
        Ok(rows)
    }

    /// Looks up the barcodes of `model` (`product.product` or `stock.location`) that are not
    /// cached yet.
    async fn lookup(&mut self, model: &str, barcodes: &[String]) -> Result<(), OdooError> {
        let mut missing: Vec<String> = {
            let caches = self.shared.caches();
            let cache = if model == "product.product" {
                &caches.products
            } else {
                &caches.locations
            };
            barcodes
                .iter()
                .filter(|b| !cache.contains_key(*b))
                .cloned()
                .collect()
        };
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let result = self
            .shared
            .client
            .execute_kw(
                model,
                "search_read",
                count::lookup_args(&missing),
                Some(count::lookup_kwargs()),
            )
            .await?;
        let found = count::parse_lookup(&format!("{model}.search_read"), result)?;
        let mut caches = self.shared.caches();
        let cache = if model == "product.product" {
            &mut caches.products
        } else {
            &mut caches.locations
        };
        cache.extend(found);
        Ok(())
    }

    /// The in-doubt check (when asked), `load`, then `action_apply_inventory`. Returns the seqs
    /// of rows that turned out not to be part of an earlier, already applied write (rare; the
    /// caller dead-letters them).
    ///
    /// In doubt and not applied yet, an earlier `load` of these rows may still have committed
    /// (its answer lost): its external ids exist then, and loading them again with product and
    /// location would be refused by Odoo ("Quant's editing is restricted"). Those rows are found
    /// in `ir.model.data` and re-loaded with only `inventory_quantity`.
    async fn write_rows(
        &mut self,
        tag: &str,
        site: &str,
        rows: &[LoadRow],
        in_doubt: bool,
    ) -> Result<Vec<u64>, WriteError> {
        let (mut fresh, mut loaded): (Vec<LoadRow>, Vec<LoadRow>) = (rows.to_vec(), Vec::new());
        if in_doubt {
            tracing::debug!("chunk in doubt: asking Odoo whether it was applied");
            let result = self
                .shared
                .client
                .execute_kw(
                    "stock.move",
                    "search_count",
                    count::in_doubt_args(tag),
                    None,
                )
                .await
                .map_err(WriteError::Failed)?;
            let applied = count::parse_count(result).map_err(WriteError::Failed)?;
            let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
            let result = self
                .shared
                .client
                .execute_kw(
                    "ir.model.data",
                    "search_read",
                    count::xid_lookup_args(site, &seqs),
                    Some(count::xid_lookup_kwargs()),
                )
                .await
                .map_err(WriteError::Failed)?;
            let existing = count::parse_xid_lookup(result).map_err(WriteError::Failed)?;
            if applied > 0 {
                // Rows without an external id were not part of the load Odoo applied (their
                // barcode only resolved since): they are reported, not silently marked applied.
                let missing: Vec<u64> = rows
                    .iter()
                    .filter(|r| !existing.contains(&count::xid_name(site, r.seq)))
                    .map(|r| r.seq)
                    .collect();
                tracing::info!(
                    moves = applied,
                    "chunk was already applied before; not writing it again"
                );
                return Ok(missing);
            }
            (loaded, fresh) = rows
                .iter()
                .cloned()
                .partition(|r| existing.contains(&count::xid_name(site, r.seq)));
            if !loaded.is_empty() {
                tracing::info!(
                    rows = loaded.len(),
                    "an earlier load of this chunk committed; re-asserting its quantities"
                );
            }
        }
        let mut ids = Vec::new();
        let mut zero_counts = Vec::new();
        for (batch, args) in [
            (&loaded, count::reload_args(site, &loaded)),
            (&fresh, count::load_args(site, &fresh)),
        ] {
            if batch.is_empty() {
                continue;
            }
            let written = self.load(args).await?;
            self.quant_ids
                .extend(batch.iter().zip(&written).map(|(row, id)| (row.seq, *id)));
            zero_counts.extend(
                batch
                    .iter()
                    .zip(&written)
                    .filter(|(row, _)| row.qty == 0.0)
                    .map(|(_, id)| *id),
            );
            ids.extend(written);
        }
        if !zero_counts.is_empty() {
            self.shared
                .client
                .execute_kw(
                    "stock.quant",
                    "write",
                    count::mark_counted_args(&zero_counts),
                    Some(count::load_kwargs()),
                )
                .await
                .map_err(|e| self.refused(e))?;
        }
        ids.sort_unstable();
        ids.dedup();
        let result = self
            .shared
            .client
            .execute_kw(
                "stock.quant",
                "action_apply_inventory",
                json!([ids]),
                Some(count::apply_kwargs(tag)),
            )
            .await
            .map_err(|e| self.refused(e))?;
        count::interpret_apply(result).map_err(WriteError::Refused)?;
        Ok(Vec::new())
    }

    /// The quant a count row was applied to, for the trace.
    fn quant_ref(&self, seq: u64) -> Option<OdooRef> {
        self.quant_ids.get(&seq).map(|&id| OdooRef {
            model: "stock.quant".into(),
            id,
        })
    }

    /// One `stock.quant.load` in inventory mode; the quant ids it wrote.
    async fn load(&mut self, args: serde_json::Value) -> Result<Vec<i64>, WriteError> {
        let result = self
            .shared
            .client
            .execute_kw("stock.quant", "load", args, Some(count::load_kwargs()))
            .await
            .map_err(|e| self.refused(e))?;
        match count::interpret_load(result).map_err(WriteError::Failed)? {
            LoadOutcome::Written(ids) => Ok(ids),
            LoadOutcome::Rejected(reason) => {
                self.forget_ids();
                Err(WriteError::Refused(reason))
            }
        }
    }

    /// Sorts a failed write call: a permanent Odoo error refuses the rows, anything else retries.
    fn refused(&mut self, e: OdooError) -> WriteError {
        match e.class() {
            Class::Permanent => {
                self.forget_ids();
                WriteError::Refused(e.to_string())
            }
            _ => WriteError::Failed(e),
        }
    }

    /// Drops the barcode caches (ids may be stale after Odoo refused a write).
    fn forget_ids(&mut self) {
        let mut caches = self.shared.caches();
        caches.products.clear();
        caches.locations.clear();
        caches.packs.clear();
    }

    /// Commits the cursor and outcomes, then logs the dead letters.
    async fn commit(
        &self,
        site: &str,
        cursor: u64,
        outcomes: Vec<(u64, Outcome)>,
    ) -> Result<(), InboxError> {
        self.commit_step(
            site,
            StepCommit {
                cursor: Some(cursor),
                outcomes,
                ..StepCommit::default()
            },
        )
        .await
    }

    /// Commits a step (a requeued event settles its requeue row instead of moving the
    /// cursor), then logs the dead letters.
    async fn commit_step(&self, site: &str, mut step: StepCommit) -> Result<(), InboxError> {
        if let Some(seq) = self.requeued {
            step.cursor = None;
            step.requeue_settled = vec![seq];
        }
        let (inbox, s) = (self.shared.inbox.clone(), site.to_string());
        let step = run_blocking(move || {
            inbox.commit_step(&s, &step, crate::now_micros())?;
            Ok(step)
        })
        .await?;
        for (seq, outcome) in &step.outcomes {
            if let Outcome::DeadLettered { reason } = outcome {
                tracing::warn!(event_seq = seq, %reason, "event dead-lettered");
            }
        }
        Ok(())
    }
}

/// Why a row of an already applied chunk is dead-lettered when it was not in that write.
fn not_in_applied_chunk(tag: &str) -> String {
    format!("Odoo already applied chunk {tag} without this count (its barcode was unknown then); check the count in Odoo and replay it if needed")
}

/// Capped exponential backoff with jitter: `failures` ≥ 1, `jitter` in [0, 1). The delay is
/// between half and all of `initial * 2^(failures-1)`, capped at `max`.
pub fn backoff_delay(failures: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    let base = initial.saturating_mul(1u32 << exponent).min(max);
    let jitter = jitter.clamp(0.0, 1.0);
    base / 2 + base.mul_f64(jitter / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_initial_delay() {
        let d = |n| {
            backoff_delay(
                n,
                Duration::from_millis(500),
                Duration::from_secs(60),
                0.999_999,
            )
        };
        assert!(d(1) <= Duration::from_millis(500) && d(1) >= Duration::from_millis(499));
        assert!(d(2) >= Duration::from_millis(999) && d(2) <= Duration::from_millis(1000));
    }

    #[test]
    fn backoff_is_capped_and_jitter_never_goes_below_half() {
        let max = Duration::from_secs(60);
        for n in [8, 30, u32::MAX] {
            assert!(backoff_delay(n, Duration::from_millis(500), max, 0.999) <= max);
            assert!(backoff_delay(n, Duration::from_millis(500), max, 0.0) >= max / 2);
        }
    }
}

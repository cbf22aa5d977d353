//! The picking flows and PLC readings, executed against Odoo for one site step: resolving
//! barcodes (products, packagings, picking names, lots; cached), opening a picking for a device,
//! recording scanned quantities on move lines (one `stock.move.line.load` for the whole step,
//! absolute quantities under external ids from the creating scan), validating with the backorder
//! wizard handled per station, closing, and writing readings onto the open picking. Applies the
//! ordering rule: an event whose picking has an open dead letter is held, not sent.
//!
//! A step is either a run of picking scans (opens and product scans, ending before the first
//! validate/close command or reading) or one validate/close command, or a run of readings for the
//! same picking field. Odoo's permanent refusals become dead letters with Odoo's message, filed
//! under the picking so they hold its later events; transient failures return an error and the
//! step is retried as a whole (every write in it is idempotent, see docs/flows.md).
//!
//! A reading is kept in the flow state until its picking is validated, and written again after
//! every line write of the relay on that picking and after validation: Odoo recomputes stored
//! computed fields such as `shipping_weight` from the lines.

use std::collections::{BTreeMap, BTreeSet};

use scanbridge_protocol::Scan;
use serde_json::{json, Value};

use super::{PushError, SiteState, Worker};
use crate::inbox::{FlowView, OdooRef, Outcome, StepCommit};
use crate::odoo::count;
use crate::odoo::errors::{Class, OdooError};
use crate::odoo::flows::{
    self, FlowEvent, FlowState, LineKey, LineRow, LineState, LotRef, Pack, PickingInfo,
    ReadingState, ScanKind, ValidateAnswer,
};
use crate::odoo::version::Packaging;

/// What [`Worker::moves`] did: how many events of the run it handled, and a refused load.
struct MovesDone {
    handled: usize,
    last: u64,
    refused: Option<String>,
}

impl MovesDone {
    fn take_refusal(&mut self) -> Option<String> {
        self.refused.take()
    }
}

/// What a resolved code is.
#[derive(Debug, Clone)]
enum Resolved {
    Product { id: i64, pack: f64 },
    Picking(PickingInfo),
    Unknown,
}

/// The outcomes, documents and state of one flow step under construction.
struct Plan {
    site: String,
    state: FlowState,
    before: FlowState,
    blocked: BTreeMap<String, u64>,
    outcomes: Vec<(u64, Outcome)>,
    documents: Vec<(u64, String)>,
}

impl Plan {
    fn new(site: &str, view: &FlowView) -> Plan {
        let state = FlowState::from_rows(&view.state);
        Plan {
            site: site.to_string(),
            before: state.clone(),
            state,
            blocked: view.blocked.clone(),
            outcomes: Vec::new(),
            documents: Vec::new(),
        }
    }

    /// Held when `doc` has an open dead letter older than `seq`.
    fn hold(&mut self, seq: u64, doc: Option<&str>) -> bool {
        let Some(doc) = doc else { return false };
        match self.blocked.get(doc) {
            Some(&behind) if behind < seq => {
                self.outcomes.push((
                    seq,
                    Outcome::Held {
                        behind,
                        document: doc.to_string(),
                    },
                ));
                true
            }
            _ => false,
        }
    }

    fn dead(&mut self, seq: u64, doc: Option<&str>, reason: String) {
        if let Some(doc) = doc {
            self.documents.push((seq, doc.to_string()));
            self.blocked.entry(doc.to_string()).or_insert(seq);
        }
        self.outcomes.push((seq, Outcome::DeadLettered { reason }));
    }

    fn applied(&mut self, seq: u64, tag: &str, odoo: Option<(&str, i64)>) {
        self.outcomes.push((
            seq,
            Outcome::Applied {
                tag: tag.to_string(),
                odoo: odoo.map(|(model, id)| OdooRef {
                    model: model.to_string(),
                    id,
                }),
            },
        ));
    }

    fn into_commit(self, cursor: Option<u64>) -> StepCommit {
        let (state_put, state_delete) = self.state.diff(&self.before);
        let mut outcomes = self.outcomes;
        outcomes.sort_by_key(|(seq, _)| *seq);
        StepCommit {
            cursor,
            outcomes,
            documents: self.documents,
            requeue_settled: Vec::new(),
            state_put,
            state_delete,
        }
    }

    fn device_doc(&self, device: &str) -> Option<String> {
        self.state
            .devices
            .get(device)
            .and_then(|d| d.picking.clone())
    }
}

fn odoo_refusal(e: &OdooError) -> Option<String> {
    match e.class() {
        Class::Permanent => Some(match e {
            OdooError::Fault { message, .. } => message.clone(),
            other => other.to_string(),
        }),
        _ => None,
    }
}

impl Worker {
    /// One flow step over `run` (consecutive picking scans and readings from the cursor, or
    /// one requeued event whose document is `doc_override`).
    pub(super) async fn flow_step(
        &mut self,
        mut run: Vec<(u64, FlowEvent)>,
        view: &FlowView,
        doc_override: Option<String>,
        site_state: &mut SiteState,
    ) -> Result<(), PushError> {
        let site = self.site.clone();
        let Some((first_seq, first)) = run.first().cloned() else {
            return Ok(());
        };
        let mut plan = Plan::new(&site, view);
        match &first {
            FlowEvent::Reading { .. } => {
                let n = reading_run_len(&run);
                run.truncate(n);
                self.readings(&mut plan, &run, doc_override.as_deref())
                    .await?;
            }
            FlowEvent::Move { .. } => {
                let n = run
                    .iter()
                    .take_while(|(_, e)| matches!(e, FlowEvent::Move { .. }))
                    .count()
                    .max(1);
                run.truncate(n);
                let mut moves = self.moves(&mut plan, &run).await?;
                if let Some(refused) = moves.take_refusal() {
                    let last = moves.last;
                    tracing::warn!(reason = %refused, "Odoo refused the scans; retrying them one by one");
                    site_state.single_until = Some(last);
                    return Ok(());
                }
                run.truncate(moves.handled);
            }
            FlowEvent::Picking { scan, device, .. } if scan_is_command(scan) => {
                run.truncate(1);
                self.command(&mut plan, first_seq, device, scan, doc_override.as_deref())
                    .await?;
            }
            _ => {
                let n = run
                    .iter()
                    .take_while(|(_, e)| matches!(e, FlowEvent::Picking { scan, .. } if !scan_is_command(scan)))
                    .count()
                    .max(1);
                run.truncate(n);
                if let Some(refused) = self.scans(&mut plan, &run, doc_override.as_deref()).await? {
                    // Odoo refused the step's load: take the events one at a time to find the
                    // one it refuses (nothing was written: `load` rolls back on any error).
                    let last = run.last().map_or(first_seq, |(s, _)| *s);
                    tracing::warn!(reason = %refused, "Odoo refused the scans; retrying them one by one");
                    site_state.single_until = Some(last);
                    return Ok(());
                }
            }
        }
        let last = run.last().map_or(first_seq, |(s, _)| *s);
        let cursor = self.requeued.is_none().then(|| last.saturating_add(1));
        self.commit_step(&site, plan.into_commit(cursor)).await?;
        Ok(())
    }

    /// A run of readings with the same target and field: one absolute write of the last value.
    async fn readings(
        &mut self,
        plan: &mut Plan,
        run: &[(u64, FlowEvent)],
        doc_override: Option<&str>,
    ) -> Result<(), PushError> {
        let Some((
            _,
            FlowEvent::Reading {
                target_device,
                rule,
                ..
            },
        )) = run.first()
        else {
            return Ok(());
        };
        let last_seq = run.last().map_or(0, |(s, _)| *s);
        let first_seq = run.first().map_or(0, |(s, _)| *s);
        let tag = flows::tag(&plan.site, first_seq, last_seq);
        let doc = doc_override
            .map(str::to_string)
            .or_else(|| plan.device_doc(target_device));
        let mut live = Vec::new();
        for (seq, event) in run {
            if plan.hold(*seq, doc.as_deref()) {
                continue;
            }
            if let FlowEvent::Reading { value, .. } = event {
                live.push((*seq, *value));
            }
        }
        let Some(&(value_seq, value)) = live.last() else {
            return Ok(());
        };
        let picking = doc
            .as_deref()
            .and_then(|d| plan.state.pickings.get(d).cloned());
        let Some(picking) = picking else {
            for (seq, _) in live {
                plan.dead(
                    seq,
                    None,
                    format!(
                        "reading {} has no open picking to write to: device {target_device} has none open (scan a picking name on it first)",
                        rule.tag
                    ),
                );
            }
            return Ok(());
        };
        let result = self
            .shared
            .client
            .execute_kw(
                "stock.picking",
                "write",
                json!([[picking.id], {rule.field.clone(): value}]),
                None,
            )
            .await;
        match result {
            Ok(_) => {
                // Kept (same transaction as the cursor) to be written again after the line
                // writes and the validation that make Odoo recompute the field.
                plan.state.readings.insert(
                    (picking.id, rule.field.clone()),
                    ReadingState {
                        value,
                        seq: value_seq,
                    },
                );
                for (seq, _) in live {
                    plan.applied(seq, &tag, Some(("stock.picking", picking.id)));
                }
                Ok(())
            }
            Err(e) => match odoo_refusal(&e) {
                Some(reason) => {
                    for (seq, _) in live {
                        plan.dead(seq, Some(&picking.name), reason.clone());
                    }
                    Ok(())
                }
                None => Err(e.into()),
            },
        }
    }

    /// Writes the readings kept for `picking_id` again (one absolute `stock.picking.write`; a
    /// repeat changes nothing). Transient failures fail the step, which is retried as a whole;
    /// a refusal is logged and the step goes on (the scans or the validation it follows are
    /// in Odoo already).
    async fn restore_readings(&mut self, plan: &Plan, picking_id: i64) -> Result<(), PushError> {
        let Some(values) = plan.state.readings_of(picking_id) else {
            return Ok(());
        };
        let result = self
            .shared
            .client
            .execute_kw(
                "stock.picking",
                "write",
                json!([[picking_id], values]),
                None,
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match odoo_refusal(&e) {
                Some(reason) => {
                    tracing::warn!(site = %plan.site, picking_id, %reason, "Odoo refused to write the PLC readings again after a line change; the picking keeps Odoo's computed value");
                    Ok(())
                }
                None => Err(e.into()),
            },
        }
    }

    /// Validate or close the device's open picking.
    async fn command(
        &mut self,
        plan: &mut Plan,
        seq: u64,
        device: &str,
        scan: &Scan,
        doc_override: Option<&str>,
    ) -> Result<(), PushError> {
        let tag = flows::tag(&plan.site, seq, seq);
        // An explicit validate names its picking in `reference`; otherwise the device's open one.
        let explicit = scan.reference.clone().filter(|r| !r.is_empty());
        let doc = doc_override
            .map(str::to_string)
            .or_else(|| explicit.clone())
            .or_else(|| plan.device_doc(device));
        if plan.hold(seq, doc.as_deref()) {
            return Ok(());
        }
        if let Some(name) = doc
            .as_ref()
            .filter(|n| !plan.state.pickings.contains_key(*n))
        {
            if explicit.as_ref() == Some(name) {
                let resolved = self
                    .resolve_codes(plan, &[(seq, device.to_string(), scan.clone())])
                    .await?;
                if let Some(Resolved::Picking(info)) = resolved.get(name) {
                    plan.state.pickings.insert(name.clone(), info.clone());
                }
            }
        }
        let Some(name) = doc else {
            plan.dead(
                seq,
                None,
                format!(
                    "{} on device {device} without an open picking: scan the picking's name first",
                    scan.code
                ),
            );
            return Ok(());
        };
        if flows::scan_kind(scan) == ScanKind::Close {
            if let Some(d) = plan.state.devices.get_mut(device) {
                d.picking = None;
            }
            plan.applied(seq, &tag, None);
            return Ok(());
        }
        let Some(picking) = plan.state.pickings.get(&name).cloned() else {
            plan.dead(seq, Some(&name), format!("picking {name} is not known to the relay (its opening scan failed); fix it in Odoo and replay"));
            return Ok(());
        };
        let backorder = self.shared.client.settings().backorder(&plan.site, device);
        match self.validate(picking.id, backorder).await {
            Ok(Ok(())) => {
                // Validation dropped the unpicked lines: Odoo recomputed the reading's field.
                self.restore_readings(plan, picking.id).await?;
                plan.applied(seq, &tag, Some(("stock.picking", picking.id)));
                plan.state.close_picking(&name);
            }
            Ok(Err(reason)) => plan.dead(seq, Some(&name), reason),
            Err(e) => match odoo_refusal(&e) {
                Some(reason) => plan.dead(seq, Some(&name), reason),
                None => return Err(e.into()),
            },
        }
        Ok(())
    }

    /// Validates one picking exactly once: guarded by a state read, then `button_validate`, and
    /// the backorder wizard answered per station. `Ok(Err(reason))` = refused for a reason
    /// Odoo did not raise (cancelled, another wizard).
    async fn validate(
        &mut self,
        picking_id: i64,
        backorder: bool,
    ) -> Result<Result<(), String>, OdooError> {
        let client = self.shared.client.clone();
        let (args, kwargs) = flows::state_args(picking_id);
        let state = flows::parse_state(
            client
                .execute_kw("stock.picking", "read", args, Some(kwargs))
                .await?,
        )?;
        match state.as_deref() {
            Some("done") => {
                tracing::debug!(picking_id, "picking already done: not validating again");
                return Ok(Ok(()));
            }
            Some("cancel") => {
                return Ok(Err(format!(
                    "picking {picking_id} is cancelled in Odoo; nothing to validate"
                )))
            }
            None => {
                return Ok(Err(format!(
                    "picking {picking_id} no longer exists in Odoo"
                )))
            }
            Some(_) => {}
        }
        let answer = client
            .execute_kw(
                "stock.picking",
                "button_validate",
                json!([[picking_id]]),
                None,
            )
            .await?;
        match flows::interpret_validate(answer) {
            ValidateAnswer::Done => Ok(Ok(())),
            ValidateAnswer::Backorder { context } => {
                let kwargs = json!({"context": context});
                let created = client
                    .execute_kw(
                        "stock.backorder.confirmation",
                        "create",
                        json!([{}]),
                        Some(kwargs.clone()),
                    )
                    .await?;
                let wizard =
                    flows::parse_created_id("stock.backorder.confirmation.create", created)?;
                client
                    .execute_kw(
                        "stock.backorder.confirmation",
                        flows::wizard_method(backorder),
                        json!([[wizard]]),
                        Some(kwargs),
                    )
                    .await?;
                Ok(Ok(()))
            }
            ValidateAnswer::OtherWizard(model) => Ok(Err(format!(
                "Odoo asks a person to confirm {model} before validating picking {picking_id}; validate it in Odoo, then skip this event"
            ))),
        }
    }

    /// A run of picking scans: opens and product scans; one `load` of the touched lines.
    /// `Ok(Some(reason))`: Odoo refused a multi-event load (nothing written, nothing settled).
    async fn scans(
        &mut self,
        plan: &mut Plan,
        run: &[(u64, FlowEvent)],
        doc_override: Option<&str>,
    ) -> Result<Option<String>, PushError> {
        let first_seq = run.first().map_or(0, |(s, _)| *s);
        let last_seq = run.last().map_or(0, |(s, _)| *s);
        let tag = flows::tag(&plan.site, first_seq, last_seq);
        let scans: Vec<(u64, String, Scan)> = run
            .iter()
            .filter_map(|(seq, e)| match e {
                FlowEvent::Picking { device, scan, .. } => {
                    Some((*seq, device.clone(), scan.clone()))
                }
                _ => None,
            })
            .collect();
        let resolved = self.resolve_codes(plan, &scans).await?;
        let lots = self.resolve_lots(&scans, &resolved).await?;
        // seq → line key, for the outcome once the load answered.
        let mut scanned: Vec<(u64, LineKey)> = Vec::new();
        let mut touched: BTreeSet<LineKey> = BTreeSet::new();
        let mut lot_refs: BTreeMap<LineKey, LotRef> = BTreeMap::new();
        for (seq, device, scan) in &scans {
            let seq = *seq;
            // `reference` opens that picking for the device first.
            if let Some(reference) = scan.reference.as_ref().filter(|r| !r.is_empty()) {
                if doc_override.is_none() && plan.device_doc(device).as_deref() != Some(reference) {
                    plan.state
                        .devices
                        .entry(device.clone())
                        .or_default()
                        .picking = Some(reference.clone());
                    if let Some(Resolved::Picking(info)) = resolved.get(reference) {
                        plan.state.pickings.insert(reference.clone(), info.clone());
                    }
                }
            }
            let code = match flows::scan_kind(scan) {
                ScanKind::Code { code } => code,
                _ => continue,
            };
            let doc = doc_override
                .map(str::to_string)
                .or_else(|| plan.device_doc(device));
            match resolved.get(&code).cloned().unwrap_or(Resolved::Unknown) {
                Resolved::Picking(info) => {
                    // The device works on this picking from now on, also when the opening is
                    // held: its next scans then wait behind the same dead letter.
                    let device_state = plan.state.devices.entry(device.clone()).or_default();
                    if doc_override.is_none() || device_state.picking.is_none() {
                        device_state.picking = Some(info.name.clone());
                    }
                    if plan.hold(seq, Some(&info.name)) {
                        continue;
                    }
                    if info.state == "done" || info.state == "cancel" {
                        plan.dead(
                            seq,
                            Some(&info.name),
                            format!(
                                "picking {} is {} in Odoo: scans cannot be recorded on it",
                                info.name, info.state
                            ),
                        );
                        continue;
                    }
                    plan.state.pickings.insert(info.name.clone(), info.clone());
                    plan.applied(seq, &tag, Some(("stock.picking", info.id)));
                }
                Resolved::Product {
                    id: product_id,
                    pack,
                } => {
                    if plan.hold(seq, doc.as_deref()) {
                        continue;
                    }
                    let Some(name) = doc.clone() else {
                        plan.dead(seq, None, format!("product {code} scanned on device {device} without an open picking: scan the picking's name (or send `reference`) first"));
                        continue;
                    };
                    let Some(picking) = plan.state.pickings.get(&name).cloned() else {
                        plan.dead(seq, Some(&name), format!("picking {name} not found in Odoo (stock.picking.name); check the name, then replay"));
                        continue;
                    };
                    let lot = flows::scan_lot(scan);
                    let lot_ref = match &lot {
                        None => LotRef::None,
                        Some((lot_name, _)) => match lots.get(&(product_id, lot_name.clone())) {
                            Some(&lot_id) => LotRef::Id(lot_id),
                            None if picking.use_create_lots => LotRef::Name(lot_name.clone()),
                            None => {
                                plan.dead(seq, Some(&name), format!("lot/serial {lot_name} of product {code} does not exist in Odoo and operation type of {name} does not create lots; create the lot, then replay"));
                                continue;
                            }
                        },
                    };
                    let key: LineKey = (
                        picking.id,
                        product_id,
                        lot.as_ref().map(|(l, _)| l.clone()).unwrap_or_default(),
                    );
                    let qty = flows::scan_qty(scan, pack);
                    if !qty.is_finite() || qty <= 0.0 {
                        plan.dead(
                            seq,
                            Some(&name),
                            format!("scan quantity {qty} is not a positive number"),
                        );
                        continue;
                    }
                    let line = plan.state.lines.entry(key.clone()).or_insert(LineState {
                        xid_seq: seq,
                        qty: 0.0,
                        id: None,
                    });
                    line.qty = if lot.as_ref().is_some_and(|(_, serial)| *serial) {
                        1.0
                    } else {
                        line.qty + qty
                    };
                    lot_refs.insert(key.clone(), lot_ref);
                    touched.insert(key.clone());
                    scanned.push((seq, key));
                }
                Resolved::Unknown => {
                    if plan.hold(seq, doc.as_deref()) {
                        continue;
                    }
                    plan.dead(
                        seq,
                        doc.as_deref(),
                        format!("barcode {code} is not a product, packaging or picking name in Odoo (product.product.barcode, packaging barcode, stock.picking.name); create it or fix the barcode, then replay"),
                    );
                }
            }
        }
        if touched.is_empty() {
            return Ok(None);
        }
        let rows: Vec<LineRow> = touched
            .iter()
            .filter_map(|key| {
                let line = plan.state.lines.get(key)?;
                Some(LineRow {
                    xid_seq: line.xid_seq,
                    picking_id: key.0,
                    product_id: key.1,
                    qty: line.qty,
                    lot: lot_refs.get(key).cloned().unwrap_or(LotRef::None),
                })
            })
            .collect();
        let mut ids: BTreeMap<u64, i64> = BTreeMap::new();
        for (args, group) in flows::line_loads(&plan.site, &rows) {
            let result = self
                .shared
                .client
                .execute_kw("stock.move.line", "load", args, None)
                .await;
            let refused = match result {
                Ok(answer) => match count::interpret_load_of("stock.move.line.load", answer)? {
                    count::LoadOutcome::Written(written) => {
                        for (row, id) in group.iter().zip(written) {
                            ids.insert(row.xid_seq, id);
                        }
                        continue;
                    }
                    count::LoadOutcome::Rejected(reason) => reason,
                },
                Err(e) => match odoo_refusal(&e) {
                    Some(reason) => reason,
                    None => return Err(e.into()),
                },
            };
            if scans.len() > 1 {
                return Ok(Some(refused));
            }
            // One event: it is the one Odoo refuses.
            for (seq, key) in &scanned {
                let doc = plan
                    .state
                    .pickings
                    .values()
                    .find(|p| p.id == key.0)
                    .map(|p| p.name.clone());
                plan.dead(*seq, doc.as_deref(), refused.clone());
            }
            plan.state.lines = plan.before.lines.clone();
            return Ok(None);
        }
        // The loads changed these pickings' lines: Odoo recomputed the readings' fields.
        let pickings: BTreeSet<i64> = touched.iter().map(|(picking, _, _)| *picking).collect();
        for picking_id in pickings {
            self.restore_readings(plan, picking_id).await?;
        }
        for (seq, key) in scanned {
            let line = plan.state.lines.get_mut(&key);
            let id = line.and_then(|l| {
                l.id = ids.get(&l.xid_seq).copied().or(l.id);
                l.id
            });
            plan.applied(seq, &tag, id.map(|id| ("stock.move.line", id)));
        }
        Ok(None)
    }

    /// Resolves every code of the run: products (cache, then `search_read` with the GTIN-14 →
    /// EAN-13 candidates), packagings, then picking names (with their operation type's lot
    /// flags). References are resolved as picking names too.
    async fn resolve_codes(
        &mut self,
        plan: &Plan,
        scans: &[(u64, String, Scan)],
    ) -> Result<BTreeMap<String, Resolved>, PushError> {
        let mut codes: BTreeSet<String> = BTreeSet::new();
        let mut names: BTreeSet<String> = BTreeSet::new();
        for (_, _, scan) in scans {
            if let ScanKind::Code { code } = flows::scan_kind(scan) {
                codes.insert(code);
            }
            if let Some(r) = scan.reference.as_ref().filter(|r| !r.is_empty()) {
                names.insert(r.clone());
            }
        }
        let mut out: BTreeMap<String, Resolved> = BTreeMap::new();
        // Picking names first when they look like Odoo's sequences (`WH/IN/00012`): a scan of a
        // picking name then costs one lookup, not three.
        names.extend(codes.iter().filter(|c| c.contains('/')).cloned());
        self.lookup_pickings(plan, names, &mut out).await?;
        let codes: Vec<String> = codes.into_iter().filter(|c| !out.contains_key(c)).collect();
        // Products.
        let candidates: Vec<String> = codes
            .iter()
            .flat_map(|c| flows::barcode_candidates(c))
            .collect();
        self.lookup("product.product", &candidates).await?;
        let mut unresolved: Vec<String> = Vec::new();
        {
            let caches = self.shared.caches();
            for code in &codes {
                let product = flows::barcode_candidates(code)
                    .iter()
                    .find_map(|c| caches.products.get(c).copied());
                match (product, caches.packs.get(code)) {
                    (Some(id), _) => {
                        out.insert(code.clone(), Resolved::Product { id, pack: 1.0 });
                    }
                    (None, Some(pack)) => {
                        out.insert(
                            code.clone(),
                            Resolved::Product {
                                id: pack.product_id,
                                pack: pack.qty,
                            },
                        );
                    }
                    (None, None) => unresolved.push(code.clone()),
                }
            }
        }
        // Packagings.
        if !unresolved.is_empty() {
            let version = self.shared.client.version().await?;
            let packs = self.packagings(version.packaging(), &unresolved).await?;
            let mut caches = self.shared.caches();
            for (barcode, pack) in packs {
                caches.packs.insert(barcode.clone(), pack);
                out.insert(
                    barcode.clone(),
                    Resolved::Product {
                        id: pack.product_id,
                        pack: pack.qty,
                    },
                );
            }
            unresolved.retain(|c| !out.contains_key(c));
        }
        // Picking names that do not look like one.
        let rest: BTreeSet<String> = unresolved
            .into_iter()
            .filter(|c| !c.contains('/'))
            .collect();
        self.lookup_pickings(plan, rest, &mut out).await?;
        Ok(out)
    }

    /// Resolves picking names (known ones from the flow state, others with one
    /// `stock.picking.search_read` and, for new operation types, one `stock.picking.type.read`).
    async fn lookup_pickings(
        &mut self,
        plan: &Plan,
        names: BTreeSet<String>,
        out: &mut BTreeMap<String, Resolved>,
    ) -> Result<(), PushError> {
        let mut lookup: Vec<String> = Vec::new();
        for name in names {
            match plan.state.pickings.get(&name) {
                Some(info) => {
                    out.insert(name, Resolved::Picking(info.clone()));
                }
                None => lookup.push(name),
            }
        }
        if lookup.is_empty() {
            return Ok(());
        }
        let client = self.shared.client.clone();
        let (args, kwargs) = flows::picking_lookup_args(&lookup);
        let records = flows::parse_pickings(
            client
                .execute_kw("stock.picking", "search_read", args, Some(kwargs))
                .await?,
        )?;
        let missing_types: Vec<i64> = {
            let caches = self.shared.caches();
            let mut t: Vec<i64> = records
                .iter()
                .filter_map(|r| r.type_id)
                .filter(|t| !caches.picking_types.contains_key(t))
                .collect();
            t.sort_unstable();
            t.dedup();
            t
        };
        if !missing_types.is_empty() {
            let (args, kwargs) = flows::picking_type_args(&missing_types);
            let types = flows::parse_picking_types(
                client
                    .execute_kw("stock.picking.type", "read", args, Some(kwargs))
                    .await?,
            )?;
            self.shared.caches().picking_types.extend(types);
        }
        let caches = self.shared.caches();
        for r in records {
            let (use_create_lots, use_existing_lots) = r
                .type_id
                .and_then(|t| caches.picking_types.get(&t).copied())
                .unwrap_or((r.code == "incoming", r.code != "incoming"));
            out.insert(
                r.name.clone(),
                Resolved::Picking(PickingInfo {
                    id: r.id,
                    name: r.name,
                    code: r.code,
                    state: r.state,
                    use_create_lots,
                    use_existing_lots,
                }),
            );
        }
        Ok(())
    }

    /// Packaging barcodes: `product.packaging` (17/18) or `product.uom` + its UoM factor (19).
    async fn packagings(
        &mut self,
        model: Packaging,
        barcodes: &[String],
    ) -> Result<Vec<(String, Pack)>, OdooError> {
        let client = self.shared.client.clone();
        let mut out = Vec::new();
        match model {
            Packaging::ProductPackaging => {
                let (args, kwargs) = flows::packaging_args(barcodes);
                let found = flows::parse_packagings(
                    "product.packaging.search_read",
                    client
                        .execute_kw("product.packaging", "search_read", args, Some(kwargs))
                        .await?,
                    "qty",
                )?;
                for (barcode, product_id, qty) in found {
                    out.push((barcode, Pack { product_id, qty }));
                }
            }
            Packaging::ProductUom => {
                let (args, kwargs) = flows::product_uom_args(barcodes);
                let found = flows::parse_packagings(
                    "product.uom.search_read",
                    client
                        .execute_kw("product.uom", "search_read", args, Some(kwargs))
                        .await?,
                    "uom_id",
                )?;
                if found.is_empty() {
                    return Ok(out);
                }
                let uoms: Vec<i64> = found.iter().map(|(_, _, u)| *u as i64).collect();
                let factors = client
                    .execute_kw(
                        "uom.uom",
                        "read",
                        json!([uoms]),
                        Some(json!({"fields": ["id", "relative_factor"]})),
                    )
                    .await?;
                let factors: BTreeMap<i64, f64> = match factors {
                    Some(Value::Array(list)) => list
                        .iter()
                        .filter_map(|r| {
                            Some((r.get("id")?.as_i64()?, r.get("relative_factor")?.as_f64()?))
                        })
                        .collect(),
                    _ => BTreeMap::new(),
                };
                for (barcode, product_id, uom) in found {
                    if let Some(&qty) = factors.get(&(uom as i64)) {
                        out.push((barcode, Pack { product_id, qty }));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Existing lots for the (product, lot name) pairs of the run, in one `search_read`.
    async fn resolve_lots(
        &mut self,
        scans: &[(u64, String, Scan)],
        resolved: &BTreeMap<String, Resolved>,
    ) -> Result<BTreeMap<(i64, String), i64>, PushError> {
        let mut products: BTreeSet<i64> = BTreeSet::new();
        let mut names: BTreeSet<String> = BTreeSet::new();
        for (_, _, scan) in scans {
            let (ScanKind::Code { code }, Some((lot, _))) =
                (flows::scan_kind(scan), flows::scan_lot(scan))
            else {
                continue;
            };
            if let Some(Resolved::Product { id, .. }) = resolved.get(&code) {
                products.insert(*id);
                names.insert(lot);
            }
        }
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        let products: Vec<i64> = products.into_iter().collect();
        let names: Vec<String> = names.into_iter().collect();
        let (args, kwargs) = flows::lot_lookup_args(&products, &names);
        let result = self
            .shared
            .client
            .execute_kw("stock.lot", "search_read", args, Some(kwargs))
            .await?;
        Ok(flows::parse_lots(result)?)
    }
}

impl Worker {
    /// A run of internal-move scans (op `move`): a location barcode alone (source, or the
    /// destination that finishes the move), or the product scans up to the next location.
    async fn moves(
        &mut self,
        plan: &mut Plan,
        run: &[(u64, FlowEvent)],
    ) -> Result<MovesDone, PushError> {
        let codes: Vec<String> = run
            .iter()
            .filter_map(|(_, e)| match e {
                FlowEvent::Move { scan, .. } => Some(scan.code.trim().to_string()),
                _ => None,
            })
            .collect();
        self.lookup("stock.location", &codes).await?;
        let location_of = |code: &str| self.shared.caches().locations.get(code).copied();
        let Some((seq, FlowEvent::Move { device, scan, .. })) = run.first().cloned() else {
            return Ok(MovesDone {
                handled: 1,
                last: 0,
                refused: None,
            });
        };
        let one = MovesDone {
            handled: 1,
            last: seq,
            refused: None,
        };
        match flows::scan_kind(&scan) {
            ScanKind::Close => {
                // Abandon the move: a picking already created stays a draft in Odoo.
                let tag = flows::tag(&plan.site, seq, seq);
                if let Some(d) = plan.state.devices.get_mut(&device) {
                    d.moving = None;
                    d.picking = None;
                }
                plan.applied(seq, &tag, None);
                return Ok(one);
            }
            ScanKind::Validate => {
                plan.dead(
                    seq,
                    None,
                    format!("{} in a move on device {device}: a move is finished by scanning its destination location's barcode; scan it, then skip this event", scan.code),
                );
                return Ok(one);
            }
            ScanKind::Code { .. } => {}
        }
        if let Some(location_id) = location_of(scan.code.trim()) {
            self.move_location(plan, seq, &device, location_id, scan.code.trim())
                .await?;
            return Ok(MovesDone {
                handled: 1,
                last: seq,
                refused: None,
            });
        }
        // Product scans of the same device up to the next location barcode.
        let products: Vec<(u64, FlowEvent)> = run
            .iter()
            .take_while(|(_, e)| match e {
                FlowEvent::Move {
                    device: d, scan, ..
                } => {
                    *d == device
                        && location_of(scan.code.trim()).is_none()
                        && !scan_is_command(scan)
                }
                _ => false,
            })
            .map(|(s, e)| match e {
                FlowEvent::Move { seq, device, scan } => (
                    *s,
                    FlowEvent::Picking {
                        seq: *seq,
                        device: device.clone(),
                        scan: scan.clone(),
                    },
                ),
                other => (*s, other.clone()),
            })
            .collect();
        let handled = products.len().max(1);
        let last = products.last().map_or(seq, |(s, _)| *s);
        let moving = plan
            .state
            .devices
            .get(&device)
            .and_then(|d| d.moving.clone());
        let Some(moving) = moving else {
            for (s, _) in &products {
                plan.dead(*s, None, format!("product scanned on device {device} in a move without a source location: scan the source location's barcode first"));
            }
            return Ok(MovesDone {
                handled,
                last,
                refused: None,
            });
        };
        let doc = flows::move_doc(&device, moving.started);
        if !moving.created && !plan.blocked.contains_key(&doc) {
            if let Err(e) = self.create_move_picking(plan, &device, &doc, &moving).await {
                match odoo_refusal(&e) {
                    Some(reason) => {
                        for (s, _) in &products {
                            plan.dead(*s, Some(&doc), reason.clone());
                        }
                        return Ok(MovesDone {
                            handled,
                            last,
                            refused: None,
                        });
                    }
                    None => return Err(e.into()),
                }
            }
        }
        let refused = self.scans(plan, &products, None).await?;
        Ok(MovesDone {
            handled,
            last,
            refused,
        })
    }

    /// Creates the internal picking of a move (`load` under the source scan's external id).
    async fn create_move_picking(
        &mut self,
        plan: &mut Plan,
        device: &str,
        doc: &str,
        moving: &flows::MoveState,
    ) -> Result<(), OdooError> {
        let client = self.shared.client.clone();
        let known = self.shared.caches().internal_type;
        let (type_id, use_create_lots, use_existing_lots) = match known {
            Some(t) => t,
            None => {
                let (args, kwargs) = flows::internal_type_args();
                let types = flows::parse_picking_types(
                    client
                        .execute_kw("stock.picking.type", "search_read", args, Some(kwargs))
                        .await?,
                )?;
                let Some((&id, &(create, existing))) = types.iter().next() else {
                    return Err(OdooError::Fault {
                        name: "scanbridge.NoInternalType".into(),
                        message: "Odoo has no internal operation type (stock.picking.type with code internal); enable multi-step routes or create one, then replay".into(),
                    });
                };
                self.shared.caches().internal_type = Some((id, create, existing));
                (id, create, existing)
            }
        };
        let args = flows::move_picking_load(&plan.site, moving.started, type_id, moving.source_id);
        let answer = client
            .execute_kw("stock.picking", "load", args, None)
            .await?;
        let id = match count::interpret_load_of("stock.picking.load", answer)? {
            count::LoadOutcome::Written(ids) if !ids.is_empty() => ids[0],
            count::LoadOutcome::Written(_) => {
                return Err(OdooError::Unexpected {
                    call: "stock.picking.load".into(),
                    detail: "no id returned".into(),
                })
            }
            count::LoadOutcome::Rejected(reason) => {
                return Err(OdooError::Fault {
                    name: "load".into(),
                    message: reason,
                })
            }
        };
        plan.state.pickings.insert(
            doc.to_string(),
            PickingInfo {
                id,
                name: doc.to_string(),
                code: "internal".into(),
                state: "draft".into(),
                use_create_lots,
                use_existing_lots,
            },
        );
        let d = plan.state.devices.entry(device.to_string()).or_default();
        d.picking = Some(doc.to_string());
        if let Some(m) = d.moving.as_mut() {
            m.created = true;
        }
        Ok(())
    }

    /// A location barcode in a move: the source (also replacing a source with nothing scanned
    /// after it), or the destination that finishes the move: absolute writes of
    /// `location_dest_id` on the picking and its lines, then the guarded validate.
    async fn move_location(
        &mut self,
        plan: &mut Plan,
        seq: u64,
        device: &str,
        location_id: i64,
        code: &str,
    ) -> Result<(), PushError> {
        let tag = flows::tag(&plan.site, seq, seq);
        let moving = plan
            .state
            .devices
            .get(device)
            .and_then(|d| d.moving.clone());
        let doc = moving.as_ref().map(|m| flows::move_doc(device, m.started));
        if plan.hold(seq, doc.as_deref()) {
            return Ok(());
        }
        let picking = doc
            .as_ref()
            .and_then(|d| plan.state.pickings.get(d).cloned());
        let (Some(doc), Some(picking)) = (doc, picking) else {
            // A source (or a new source before any product).
            let d = plan.state.devices.entry(device.to_string()).or_default();
            d.moving = Some(flows::MoveState {
                source_id: location_id,
                source: code.to_string(),
                started: seq,
                created: false,
            });
            plan.applied(seq, &tag, Some(("stock.location", location_id)));
            return Ok(());
        };
        let result = self.finish_move(plan, picking.id, location_id).await;
        match result {
            Ok(Ok(())) => {
                self.restore_readings(plan, picking.id).await?;
                plan.applied(seq, &tag, Some(("stock.picking", picking.id)));
                plan.state.close_picking(&doc);
            }
            Ok(Err(reason)) => plan.dead(seq, Some(&doc), reason),
            Err(e) => match odoo_refusal(&e) {
                Some(reason) => plan.dead(seq, Some(&doc), reason),
                None => return Err(e.into()),
            },
        }
        Ok(())
    }

    async fn finish_move(
        &mut self,
        plan: &Plan,
        picking_id: i64,
        destination: i64,
    ) -> Result<Result<(), String>, OdooError> {
        let client = self.shared.client.clone();
        let (args, kwargs) = flows::state_args(picking_id);
        let state = flows::parse_state(
            client
                .execute_kw("stock.picking", "read", args, Some(kwargs))
                .await?,
        )?;
        if state.as_deref() == Some("done") {
            return Ok(Ok(()));
        }
        client
            .execute_kw(
                "stock.picking",
                "write",
                json!([[picking_id], {"location_dest_id": destination}]),
                None,
            )
            .await?;
        let lines: Vec<i64> = plan
            .state
            .lines
            .iter()
            .filter(|((p, _, _), _)| *p == picking_id)
            .filter_map(|(_, l)| l.id)
            .collect();
        if !lines.is_empty() {
            client
                .execute_kw(
                    "stock.move.line",
                    "write",
                    json!([lines, {"location_dest_id": destination}]),
                    None,
                )
                .await?;
        }
        // The relay made this transfer from the scans: nothing is left for a backorder.
        self.validate(picking_id, false).await
    }
}

fn scan_is_command(scan: &Scan) -> bool {
    matches!(flows::scan_kind(scan), ScanKind::Validate | ScanKind::Close)
}

/// How many leading readings go to the same picking field (one write of the last value).
fn reading_run_len(run: &[(u64, FlowEvent)]) -> usize {
    let key = |e: &FlowEvent| match e {
        FlowEvent::Reading {
            target_device,
            rule,
            ..
        } => Some((target_device.clone(), rule.field.clone())),
        _ => None,
    };
    let Some(first) = run.first().and_then(|(_, e)| key(e)) else {
        return 1;
    };
    run.iter()
        .take_while(|(_, e)| key(e).as_ref() == Some(&first))
        .count()
        .max(1)
}

//! The warehouse-flow mapping, as pure functions (no I/O): which events belong to which flow,
//! the per-site durable flow state (the picking each device has open, the resolved pickings,
//! the quantity the relay has accounted per move line, the latest PLC reading per picking
//! field), the `load` rows for move lines, the
//! Odoo call arguments of the flows and how their answers are read. The pusher
//! (`crate::pusher::flows`) makes the calls; `docs/flows.md` gives the mapping per flow and the
//! exactly-once argument for every write.
//!
//! Naming: a move line the relay creates has the external id `scanbridge.<site>_<seq>` where
//! `seq` is the scan that created it; later scans of the same (picking, product, lot) load the
//! same external id with the new absolute quantity. A flow step's TAG is
//! `scanbridge:<site>:<first_seq>-<last_seq>` as for counts.

use std::collections::BTreeMap;

use scanbridge_protocol::{EventBody, Operation, Scan};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::inbox::{Outcome, StoredEvent};
use crate::odoo::count::{self, CountLine};
use crate::odoo::errors::OdooError;
use crate::odoo::settings::{FlowSettings, ReadingRule};

/// Odoo's command barcode that validates the open picking.
pub const VALIDATE: &str = "O-BTN.validate";
/// Odoo's command barcodes that leave the open picking without validating it.
pub const CLOSE: &[&str] = &["O-CMD.DISCARD", "O-CMD.MAIN-MENU", "O-BTN.discard"];

/// A picking the relay resolved by name (kept in the flow state while a device works on it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PickingInfo {
    pub id: i64,
    pub name: String,
    /// `picking_type_code`: incoming, outgoing or internal.
    pub code: String,
    pub state: String,
    /// The operation type creates lots from `lot_name` at validation.
    pub use_create_lots: bool,
    /// The operation type uses existing lots (`lot_id`).
    pub use_existing_lots: bool,
}

/// What a device is working on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    /// The picking (name) the device has open; set also when the name could not be resolved,
    /// so the device's later scans are held behind that dead letter, not sent elsewhere. For
    /// an internal move it is the move's document name ([`move_doc`]).
    pub picking: Option<String>,
    /// An internal move in progress (op `move`): source scanned, products scanned so far.
    #[serde(default)]
    pub moving: Option<MoveState>,
}

/// An internal move between two location barcodes, as a device builds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveState {
    /// The source location (`stock.location` id and barcode).
    pub source_id: i64,
    pub source: String,
    /// The seq of the source scan: names the move ([`move_doc`]) and the picking's external id.
    pub started: u64,
    /// Whether the internal picking exists in Odoo (created with the first product scan).
    pub created: bool,
}

/// The document (ordering-rule key, and the flow-state name of its picking) of an internal move.
pub fn move_doc(device: &str, started: u64) -> String {
    format!("move:{device}:{started}")
}

/// `stock.picking.load` creating an internal move's picking under the external id of the
/// source scan (a retry finds it by that id).
pub fn move_picking_load(site: &str, started: u64, type_id: i64, source_id: i64) -> Value {
    json!([
        [
            "id",
            "picking_type_id/.id",
            "location_id/.id",
            "location_dest_id/.id"
        ],
        [[count::xid(site, started), type_id, source_id, source_id]]
    ])
}

/// `stock.picking.type.search_read` of the internal operation type.
pub fn internal_type_args() -> (Value, Value) {
    (
        json!([[["code", "=", "internal"]]]),
        json!({"fields": ["id", "use_create_lots", "use_existing_lots"], "limit": 1}),
    )
}

/// The relay's account of one move line it created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineState {
    /// The scan that created the line: its external id is `scanbridge.<site>_<xid_seq>`.
    pub xid_seq: u64,
    /// Absolute quantity accounted so far.
    pub qty: f64,
    /// Odoo's id, once known.
    pub id: Option<i64>,
}

/// (picking id, product id, lot or serial name or "").
pub type LineKey = (i64, i64, String);

/// The latest PLC reading the relay wrote onto a field of an open picking. Kept until the
/// picking is validated: Odoo recomputes stored computed fields such as `shipping_weight` when
/// the picking's lines change, so the relay writes the reading again after its own line writes
/// and after validation (docs/flows.md, "PLC readings").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingState {
    /// The value written (absolute).
    pub value: f64,
    /// The seq of the reading event it came from.
    pub seq: u64,
}

/// (picking id, field name).
pub type ReadingKey = (i64, String);

/// A site's flow state, read from and written to the `flow_state` rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowState {
    pub devices: BTreeMap<String, DeviceState>,
    pub pickings: BTreeMap<String, PickingInfo>,
    pub lines: BTreeMap<LineKey, LineState>,
    pub readings: BTreeMap<ReadingKey, ReadingState>,
}

fn device_key(device: &str) -> String {
    format!("device/{device}")
}
fn picking_key(name: &str) -> String {
    format!("picking/{name}")
}
fn line_key((picking, product, lot): &LineKey) -> String {
    format!("line/{picking}/{product}/{lot}")
}
fn reading_key((picking, field): &ReadingKey) -> String {
    format!("reading/{picking}/{field}")
}

impl FlowState {
    /// Reads the rows (unreadable rows are skipped with a warning: the state is a cache of
    /// decisions Odoo also knows, never the only copy of an effect).
    pub fn from_rows(rows: &[(String, Vec<u8>)]) -> FlowState {
        let mut state = FlowState::default();
        for (key, value) in rows {
            let ok = if let Some(device) = key.strip_prefix("device/") {
                serde_json::from_slice(value)
                    .map(|d| state.devices.insert(device.to_string(), d))
                    .is_ok()
            } else if let Some(name) = key.strip_prefix("picking/") {
                serde_json::from_slice(value)
                    .map(|p| state.pickings.insert(name.to_string(), p))
                    .is_ok()
            } else if let Some(rest) = key.strip_prefix("line/") {
                let mut parts = rest.splitn(3, '/');
                let picking = parts.next().and_then(|p| p.parse().ok());
                let product = parts.next().and_then(|p| p.parse().ok());
                let lot = parts.next().map(str::to_string);
                match (picking, product, lot, serde_json::from_slice(value)) {
                    (Some(pk), Some(pr), Some(lot), Ok(line)) => {
                        state.lines.insert((pk, pr, lot), line);
                        true
                    }
                    _ => false,
                }
            } else if let Some(rest) = key.strip_prefix("reading/") {
                let mut parts = rest.splitn(2, '/');
                let picking = parts.next().and_then(|p| p.parse().ok());
                let field = parts.next().map(str::to_string);
                match (picking, field, serde_json::from_slice(value)) {
                    (Some(pk), Some(field), Ok(reading)) => {
                        state.readings.insert((pk, field), reading);
                        true
                    }
                    _ => false,
                }
            } else {
                false
            };
            if !ok {
                tracing::warn!(%key, "unreadable flow state row ignored");
            }
        }
        state
    }

    /// The rows to write and to delete to go from `before` to `self`.
    pub fn diff(&self, before: &FlowState) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
        let mut put = Vec::new();
        let mut delete = Vec::new();
        fn sync<K: Ord, V: PartialEq + Serialize>(
            now: &BTreeMap<K, V>,
            before: &BTreeMap<K, V>,
            key: impl Fn(&K) -> String,
            put: &mut Vec<(String, Vec<u8>)>,
            delete: &mut Vec<String>,
        ) {
            for (k, v) in now {
                if before.get(k) != Some(v) {
                    if let Ok(bytes) = serde_json::to_vec(v) {
                        put.push((key(k), bytes));
                    }
                }
            }
            for k in before.keys() {
                if !now.contains_key(k) {
                    delete.push(key(k));
                }
            }
        }
        sync(
            &self.devices,
            &before.devices,
            |d| device_key(d),
            &mut put,
            &mut delete,
        );
        sync(
            &self.pickings,
            &before.pickings,
            |n| picking_key(n),
            &mut put,
            &mut delete,
        );
        sync(&self.lines, &before.lines, line_key, &mut put, &mut delete);
        sync(
            &self.readings,
            &before.readings,
            reading_key,
            &mut put,
            &mut delete,
        );
        (put, delete)
    }

    /// The `stock.picking.write` values restoring the readings kept for `picking_id` (absolute
    /// values; `None` when it has none).
    pub fn readings_of(&self, picking_id: i64) -> Option<Value> {
        let values: serde_json::Map<String, Value> = self
            .readings
            .iter()
            .filter(|((picking, _), _)| *picking == picking_id)
            .map(|((_, field), r)| (field.clone(), json!(r.value)))
            .collect();
        (!values.is_empty()).then_some(Value::Object(values))
    }

    /// Forgets a validated picking: its lines, its readings and its resolution; devices that
    /// had it open have nothing open any more.
    pub fn close_picking(&mut self, name: &str) {
        if let Some(info) = self.pickings.remove(name) {
            self.lines.retain(|(picking, _, _), _| *picking != info.id);
            self.readings.retain(|(picking, _), _| *picking != info.id);
        }
        for device in self.devices.values_mut() {
            if device.picking.as_deref() == Some(name) {
                device.picking = None;
                device.moving = None;
            }
        }
    }
}

/// How the pusher handles one event.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowEvent {
    /// An inventory count scan (`crate::odoo::count`).
    Count(CountLine),
    /// Settled without Odoo.
    Settle(Outcome),
    /// A scan in a picking flow (receive, pick, pack, ship): a picking name, a product, a
    /// packaging, or a command barcode.
    Picking {
        seq: u64,
        device: String,
        scan: Scan,
    },
    /// A scan in an internal move (op `move`): a location barcode (source, then destination)
    /// or a product.
    Move {
        seq: u64,
        device: String,
        scan: Scan,
    },
    /// A PLC reading mapped to a field of the open picking of `target_device`.
    Reading {
        seq: u64,
        target_device: String,
        rule: ReadingRule,
        value: f64,
    },
}

impl FlowEvent {
    pub fn seq(&self) -> Option<u64> {
        match self {
            FlowEvent::Picking { seq, .. }
            | FlowEvent::Move { seq, .. }
            | FlowEvent::Reading { seq, .. } => Some(*seq),
            FlowEvent::Count(line) => Some(line.seq),
            FlowEvent::Settle(_) => None,
        }
    }
}

/// Decides how one stored event is handled.
pub fn classify(stored: &StoredEvent, settings: &FlowSettings) -> FlowEvent {
    let event = match &stored.event {
        Ok(event) => event,
        Err(e) => {
            return FlowEvent::Settle(Outcome::DeadLettered { reason: e.clone() });
        }
    };
    match &event.body {
        EventBody::Scan(scan) => match scan.op {
            Some(Operation::Count) => match count::classify(stored) {
                count::Handling::Count(line) => FlowEvent::Count(line),
                count::Handling::Settle(o) => FlowEvent::Settle(o),
            },
            Some(Operation::Receive | Operation::Pick | Operation::Pack | Operation::Ship) => {
                FlowEvent::Picking {
                    seq: stored.seq,
                    device: event.device.clone(),
                    scan: scan.clone(),
                }
            }
            Some(Operation::Move) => FlowEvent::Move {
                seq: stored.seq,
                device: event.device.clone(),
                scan: scan.clone(),
            },
            None => FlowEvent::Settle(Outcome::DeadLettered {
                reason: format!(
                    "scan from device {:?} has no operation: send `op` in the payload or configure a station for the device",
                    event.device
                ),
            }),
        },
        EventBody::Reading(reading) => match settings.reading(&reading.tag) {
            Some(rule) if reading.value.is_finite() => FlowEvent::Reading {
                seq: stored.seq,
                target_device: rule.device.clone().unwrap_or_else(|| event.device.clone()),
                rule: rule.clone(),
                value: reading.value,
            },
            Some(_) => FlowEvent::Settle(Outcome::DeadLettered {
                reason: format!("PLC tag {} sent a value that is not a number", reading.tag),
            }),
            None => FlowEvent::Settle(Outcome::DeadLettered {
                reason: format!(
                    "no mapping configured for PLC tag {}: add an [[odoo.readings]] entry, then replay",
                    reading.tag
                ),
            }),
        },
        EventBody::Quarantined(q) => FlowEvent::Settle(Outcome::Quarantined {
            reason: q.reason.clone(),
        }),
    }
}

/// What a picking-flow scan is, syntactically (before any lookup).
#[derive(Debug, Clone, PartialEq)]
pub enum ScanKind {
    /// `O-BTN.validate`.
    Validate,
    /// A close/discard command barcode.
    Close,
    /// A barcode to resolve: product, packaging or picking name. `gtin` is set for GS1.
    Code { code: String },
}

/// Command barcodes are recognised as Odoo's barcode app does (case-insensitive).
pub fn scan_kind(scan: &Scan) -> ScanKind {
    let code = scan.code.trim();
    if code.eq_ignore_ascii_case(VALIDATE) {
        return ScanKind::Validate;
    }
    if CLOSE.iter().any(|c| code.eq_ignore_ascii_case(c)) {
        return ScanKind::Close;
    }
    ScanKind::Code {
        code: match scan.gs1.as_ref().and_then(|g| g.gtin.as_deref()) {
            Some(gtin) => gtin.to_string(),
            None => code.to_string(),
        },
    }
}

/// The barcodes to try for a product code: the code itself and, for a GTIN-14 with a leading
/// zero, the 13-digit EAN Odoo usually stores (and a GTIN-13 with a leading zero as UPC-A).
pub fn barcode_candidates(code: &str) -> Vec<String> {
    let mut out = vec![code.to_string()];
    let digits = code.bytes().all(|b| b.is_ascii_digit());
    if digits && (code.len() == 14 || code.len() == 13) && code.starts_with('0') {
        out.push(code[1..].to_string());
    }
    out
}

/// The quantity a product scan adds: the payload's `qty`, else the GS1 quantity, else 1; times
/// the packaging's size when a packaging barcode was scanned.
pub fn scan_qty(scan: &Scan, pack_size: f64) -> f64 {
    let base = scan
        .qty
        .or_else(|| scan.gs1.as_ref().and_then(|g| g.qty))
        .unwrap_or(1.0);
    base * pack_size
}

/// The lot or serial of a scan (GS1 AI 21 serial wins over AI 10 lot), and whether it is a serial.
pub fn scan_lot(scan: &Scan) -> Option<(String, bool)> {
    let gs1 = scan.gs1.as_ref()?;
    if let Some(serial) = gs1.serial.as_ref().filter(|s| !s.is_empty()) {
        return Some((serial.clone(), true));
    }
    gs1.lot
        .as_ref()
        .filter(|l| !l.is_empty())
        .map(|l| (l.clone(), false))
}

/// How a move line names its lot.
#[derive(Debug, Clone, PartialEq)]
pub enum LotRef {
    None,
    /// An existing `stock.lot`.
    Id(i64),
    /// A new lot Odoo creates at validation (`use_create_lots`).
    Name(String),
}

/// One move line row of a `stock.move.line.load`.
#[derive(Debug, Clone, PartialEq)]
pub struct LineRow {
    pub xid_seq: u64,
    pub picking_id: i64,
    pub product_id: i64,
    pub qty: f64,
    pub lot: LotRef,
}

/// The rows of one load grouped by their column set (Odoo's `load` takes one header per call).
/// Returns `(args, rows in order)` per call.
pub fn line_loads(site: &str, rows: &[LineRow]) -> Vec<(Value, Vec<LineRow>)> {
    let mut groups: BTreeMap<u8, Vec<LineRow>> = BTreeMap::new();
    for row in rows {
        let group = match row.lot {
            LotRef::None => 0,
            LotRef::Id(_) => 1,
            LotRef::Name(_) => 2,
        };
        groups.entry(group).or_default().push(row.clone());
    }
    groups
        .into_iter()
        .map(|(group, rows)| {
            let mut header = vec![
                "id",
                "picking_id/.id",
                "product_id/.id",
                "quantity",
                "picked",
            ];
            match group {
                1 => header.push("lot_id/.id"),
                2 => header.push("lot_name"),
                _ => {}
            }
            let data: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let mut row = vec![
                        json!(count::xid(site, r.xid_seq)),
                        json!(r.picking_id),
                        json!(r.product_id),
                        json!(r.qty),
                        json!(true),
                    ];
                    match &r.lot {
                        LotRef::Id(id) => row.push(json!(id)),
                        LotRef::Name(name) => row.push(json!(name)),
                        LotRef::None => {}
                    }
                    Value::Array(row)
                })
                .collect();
            (json!([header, data]), rows)
        })
        .collect()
}

/// `stock.picking.search_read` by names.
pub fn picking_lookup_args(names: &[String]) -> (Value, Value) {
    (
        json!([[["name", "in", names]]]),
        json!({"fields": ["id", "name", "state", "picking_type_id", "picking_type_code"]}),
    )
}

/// A picking as `search_read` returns it, before its operation type is known.
#[derive(Debug, Clone, PartialEq)]
pub struct PickingRecord {
    pub id: i64,
    pub name: String,
    pub state: String,
    pub code: String,
    pub type_id: Option<i64>,
}

fn unexpected(call: &str, detail: String) -> OdooError {
    OdooError::Unexpected {
        call: call.to_string(),
        detail,
    }
}

fn records(call: &str, result: Option<Value>) -> Result<Vec<Value>, OdooError> {
    match result {
        Some(Value::Array(list)) => Ok(list),
        other => Err(unexpected(
            call,
            format!("expected a list of records, got {other:?}"),
        )),
    }
}

/// A many2one as read: `[id, "name"]` or `false`.
pub fn many2one_id(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Array(pair) => pair.first().and_then(Value::as_i64),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// Reads the pickings `search_read`.
pub fn parse_pickings(result: Option<Value>) -> Result<Vec<PickingRecord>, OdooError> {
    let call = "stock.picking.search_read";
    records(call, result)?
        .into_iter()
        .map(|r| {
            let id = r
                .get("id")
                .and_then(Value::as_i64)
                .ok_or_else(|| unexpected(call, format!("record without id: {r}")))?;
            let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            Ok(PickingRecord {
                id,
                name: text("name"),
                state: text("state"),
                code: text("picking_type_code"),
                type_id: many2one_id(r.get("picking_type_id")),
            })
        })
        .collect()
}

/// `stock.picking.type.read` of the lot flags.
pub fn picking_type_args(type_ids: &[i64]) -> (Value, Value) {
    (
        json!([type_ids]),
        json!({"fields": ["id", "use_create_lots", "use_existing_lots"]}),
    )
}

/// Reads the picking types: id → (use_create_lots, use_existing_lots).
pub fn parse_picking_types(
    result: Option<Value>,
) -> Result<BTreeMap<i64, (bool, bool)>, OdooError> {
    let call = "stock.picking.type.read";
    let mut out = BTreeMap::new();
    for r in records(call, result)? {
        let id = r
            .get("id")
            .and_then(Value::as_i64)
            .ok_or_else(|| unexpected(call, format!("record without id: {r}")))?;
        let flag = |k: &str| r.get(k).and_then(Value::as_bool).unwrap_or(false);
        out.insert(id, (flag("use_create_lots"), flag("use_existing_lots")));
    }
    Ok(out)
}

/// A packaging barcode: the product and how many units it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pack {
    pub product_id: i64,
    pub qty: f64,
}

/// `product.packaging.search_read` (17/18) by barcode.
pub fn packaging_args(barcodes: &[String]) -> (Value, Value) {
    (
        json!([[["barcode", "in", barcodes]]]),
        json!({"fields": ["id", "barcode", "qty", "product_id"]}),
    )
}

/// `product.uom.search_read` (19) by barcode.
pub fn product_uom_args(barcodes: &[String]) -> (Value, Value) {
    (
        json!([[["barcode", "in", barcodes]]]),
        json!({"fields": ["id", "barcode", "product_id", "uom_id"]}),
    )
}

/// Reads packagings: barcode → (product id, qty or uom id).
pub fn parse_packagings(
    call: &str,
    result: Option<Value>,
    qty_field: &str,
) -> Result<Vec<(String, i64, f64)>, OdooError> {
    let mut out = Vec::new();
    for r in records(call, result)? {
        let barcode = r.get("barcode").and_then(Value::as_str);
        let product = many2one_id(r.get("product_id"));
        let qty = match r.get(qty_field) {
            Some(Value::Number(n)) => n.as_f64(),
            other => many2one_id(other).map(|id| id as f64),
        };
        if let (Some(b), Some(p), Some(q)) = (barcode, product, qty) {
            out.push((b.to_string(), p, q));
        }
    }
    Ok(out)
}

/// `stock.lot.search_read` for (product, name) pairs.
pub fn lot_lookup_args(product_ids: &[i64], names: &[String]) -> (Value, Value) {
    (
        json!([[["product_id", "in", product_ids], ["name", "in", names]]]),
        json!({"fields": ["id", "name", "product_id"]}),
    )
}

/// Reads lots: (product id, name) → lot id.
pub fn parse_lots(result: Option<Value>) -> Result<BTreeMap<(i64, String), i64>, OdooError> {
    let mut out = BTreeMap::new();
    for r in records("stock.lot.search_read", result)? {
        let id = r.get("id").and_then(Value::as_i64);
        let name = r.get("name").and_then(Value::as_str);
        let product = many2one_id(r.get("product_id"));
        if let (Some(id), Some(name), Some(product)) = (id, name, product) {
            out.insert((product, name.to_string()), id);
        }
    }
    Ok(out)
}

/// `stock.picking.read([id], ["state"])`: the guard before validating.
pub fn state_args(picking_id: i64) -> (Value, Value) {
    (json!([[picking_id]]), json!({"fields": ["state"]}))
}

/// Reads the state of one picking; `None` when Odoo has no such record any more.
pub fn parse_state(result: Option<Value>) -> Result<Option<String>, OdooError> {
    Ok(records("stock.picking.read", result)?
        .first()
        .and_then(|r| r.get("state"))
        .and_then(Value::as_str)
        .map(str::to_string))
}

/// What `button_validate` answered.
#[derive(Debug, Clone, PartialEq)]
pub enum ValidateAnswer {
    /// Validated (`true`, or an action that is not a wizard, such as a print report).
    Done,
    /// The backorder wizard: create it with this context, then `process` or
    /// `process_cancel_backorder`.
    Backorder { context: Value },
    /// Another wizard a person has to answer in Odoo (its model).
    OtherWizard(String),
}

/// Reads a `button_validate` answer.
pub fn interpret_validate(result: Option<Value>) -> ValidateAnswer {
    let Some(Value::Object(action)) = result else {
        return ValidateAnswer::Done;
    };
    let model = action
        .get("res_model")
        .and_then(Value::as_str)
        .unwrap_or("");
    let is_wizard = action.get("type").and_then(Value::as_str) == Some("ir.actions.act_window");
    if !is_wizard {
        return ValidateAnswer::Done;
    }
    if model == "stock.backorder.confirmation" {
        return ValidateAnswer::Backorder {
            context: action.get("context").cloned().unwrap_or_else(|| json!({})),
        };
    }
    ValidateAnswer::OtherWizard(model.to_string())
}

/// Reads a `create` answer (an id, or a list with one id).
pub fn parse_created_id(call: &str, result: Option<Value>) -> Result<i64, OdooError> {
    match &result {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::Array(ids)) => ids.first().and_then(Value::as_i64),
        _ => None,
    }
    .ok_or_else(|| unexpected(call, format!("expected a record id, got {result:?}")))
}

/// The station's backorder choice as the wizard method to call.
pub fn wizard_method(backorder: bool) -> &'static str {
    if backorder {
        "process"
    } else {
        "process_cancel_backorder"
    }
}

/// The TAG of a flow step.
pub fn tag(site: &str, first: u64, last: u64) -> String {
    count::tag(site, first, last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanbridge_protocol::{Event, Gs1, Reading, Source, Symbology};

    fn scan(code: &str, op: Operation) -> Scan {
        Scan {
            code: code.into(),
            symbology: Symbology::Ean13,
            gs1: None,
            op: Some(op),
            qty: None,
            location: None,
            reference: None,
        }
    }

    fn stored(seq: u64, body: EventBody) -> StoredEvent {
        StoredEvent {
            seq,
            event: Ok(Event {
                seq,
                captured_at: 0,
                received_at: 0,
                source: Source::Serial {
                    port: "/dev/ttyACM0".into(),
                },
                device: "SC-01".into(),
                body,
            }),
        }
    }

    #[test]
    fn command_barcodes_are_recognised_and_gs1_scans_resolve_by_gtin() {
        assert_eq!(
            scan_kind(&scan("O-BTN.validate", Operation::Receive)),
            ScanKind::Validate
        );
        assert_eq!(
            scan_kind(&scan("o-cmd.discard", Operation::Pick)),
            ScanKind::Close
        );
        let mut s = scan("0104006381333931107LOT9", Operation::Receive);
        s.gs1 = Some(Gs1 {
            gtin: Some("04006381333931".into()),
            lot: Some("LOT9".into()),
            qty: Some(4.0),
            ..Gs1::default()
        });
        assert_eq!(
            scan_kind(&s),
            ScanKind::Code {
                code: "04006381333931".into()
            }
        );
        assert_eq!(
            barcode_candidates("04006381333931"),
            ["04006381333931", "4006381333931"]
        );
        assert_eq!(barcode_candidates("WH/IN/00012"), ["WH/IN/00012"]);
        assert_eq!(scan_qty(&s, 1.0), 4.0);
        assert_eq!(scan_qty(&scan("x", Operation::Pick), 6.0), 6.0);
        assert_eq!(scan_lot(&s), Some(("LOT9".into(), false)));
    }

    #[test]
    fn picking_scans_readings_and_counts_go_to_their_flows() {
        let mut settings = FlowSettings::default();
        settings.readings.push(ReadingRule {
            tag: "scale1.weight".into(),
            model: "stock.picking".into(),
            field: "shipping_weight".into(),
            device: Some("SC-07".into()),
        });
        let receive = stored(1, EventBody::Scan(scan("WH/IN/00012", Operation::Receive)));
        assert!(matches!(
            classify(&receive, &settings),
            FlowEvent::Picking { seq: 1, .. }
        ));
        let reading = stored(
            2,
            EventBody::Reading(Reading {
                tag: "scale1.weight".into(),
                value: 12.5,
                unit: Some("kg".into()),
            }),
        );
        match classify(&reading, &settings) {
            FlowEvent::Reading {
                target_device,
                value,
                ..
            } => assert_eq!((target_device.as_str(), value), ("SC-07", 12.5)),
            other => panic!("{other:?}"),
        }
        let unmapped = stored(
            3,
            EventBody::Reading(Reading {
                tag: "door.open".into(),
                value: 1.0,
                unit: None,
            }),
        );
        assert!(matches!(
            classify(&unmapped, &settings),
            FlowEvent::Settle(Outcome::DeadLettered { .. })
        ));
    }

    #[test]
    fn line_rows_are_grouped_by_lot_column_and_carry_absolute_quantities() {
        let rows = vec![
            LineRow {
                xid_seq: 5,
                picking_id: 7,
                product_id: 1,
                qty: 3.0,
                lot: LotRef::None,
            },
            LineRow {
                xid_seq: 6,
                picking_id: 7,
                product_id: 2,
                qty: 1.0,
                lot: LotRef::Name("LOT-A".into()),
            },
        ];
        let loads = line_loads("WH01", &rows);
        assert_eq!(loads.len(), 2);
        assert_eq!(
            loads[0].0,
            json!([
                [
                    "id",
                    "picking_id/.id",
                    "product_id/.id",
                    "quantity",
                    "picked"
                ],
                [["scanbridge.WH01_5", 7, 1, 3.0, true]]
            ])
        );
        assert_eq!(
            loads[1].0,
            json!([
                [
                    "id",
                    "picking_id/.id",
                    "product_id/.id",
                    "quantity",
                    "picked",
                    "lot_name"
                ],
                [["scanbridge.WH01_6", 7, 2, 1.0, true, "LOT-A"]]
            ])
        );
    }

    #[test]
    fn the_flow_state_round_trips_through_rows_and_diffs_only_what_changed() {
        let mut state = FlowState::default();
        state.devices.insert(
            "SC-01".into(),
            DeviceState {
                picking: Some("WH/IN/00012".into()),
                moving: None,
            },
        );
        state.pickings.insert(
            "WH/IN/00012".into(),
            PickingInfo {
                id: 7,
                name: "WH/IN/00012".into(),
                code: "incoming".into(),
                state: "assigned".into(),
                use_create_lots: true,
                use_existing_lots: false,
            },
        );
        state.lines.insert(
            (7, 1, "LOT/1".into()),
            LineState {
                xid_seq: 3,
                qty: 2.0,
                id: Some(40),
            },
        );
        state.readings.insert(
            (7, "shipping_weight".into()),
            ReadingState {
                value: 3.75,
                seq: 4,
            },
        );
        let (put, delete) = state.diff(&FlowState::default());
        assert_eq!((put.len(), delete.len()), (4, 0));
        let back = FlowState::from_rows(&put);
        assert_eq!(back, state);
        let mut closed = back.clone();
        closed.close_picking("WH/IN/00012");
        let (put, delete) = closed.diff(&back);
        assert_eq!(put.len(), 1, "the device row changes");
        assert_eq!(delete.len(), 3, "picking, line and reading rows go");
    }

    #[test]
    fn the_readings_kept_for_a_picking_are_one_write_of_their_latest_values() {
        let mut state = FlowState::default();
        assert_eq!(state.readings_of(7), None);
        for (picking, field, value) in [
            (7, "shipping_weight", 3.75),
            (7, "x_pallet_height", 1.2),
            (8, "shipping_weight", 9.0),
        ] {
            state
                .readings
                .insert((picking, field.into()), ReadingState { value, seq: 1 });
        }
        assert_eq!(
            state.readings_of(7),
            Some(json!({"shipping_weight": 3.75, "x_pallet_height": 1.2}))
        );
        assert_eq!(state.readings_of(8), Some(json!({"shipping_weight": 9.0})));
    }

    #[test]
    fn the_backorder_wizard_is_told_apart_from_done_and_other_wizards() {
        assert_eq!(interpret_validate(Some(json!(true))), ValidateAnswer::Done);
        assert_eq!(interpret_validate(None), ValidateAnswer::Done);
        let wizard = json!({"type": "ir.actions.act_window", "res_model": "stock.backorder.confirmation",
            "target": "new", "context": {"button_validate_picking_ids": [7], "default_pick_ids": [[4, 7]]}});
        assert_eq!(
            interpret_validate(Some(wizard)),
            ValidateAnswer::Backorder {
                context: json!({"button_validate_picking_ids": [7], "default_pick_ids": [[4, 7]]})
            }
        );
        let other =
            json!({"type": "ir.actions.act_window", "res_model": "expiry.picking.confirmation"});
        assert_eq!(
            interpret_validate(Some(other)),
            ValidateAnswer::OtherWizard("expiry.picking.confirmation".into())
        );
        assert_eq!(parse_created_id("c", Some(json!([12]))), Ok(12));
        assert_eq!(parse_created_id("c", Some(json!(12))), Ok(12));
        assert_eq!(wizard_method(false), "process_cancel_backorder");
    }
}

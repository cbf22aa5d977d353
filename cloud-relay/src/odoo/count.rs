//! The inventory-count mapping, as pure functions (no I/O): which events are count scans, how
//! consecutive count scans are cut into chunks, the TAG and external-id names, the `load` rows,
//! and how Odoo's answers to `search_read`, `search_count`, `load` and `action_apply_inventory`
//! are read. The pusher does the calls; everything here is unit-tested without Odoo.
//!
//! Naming (CONTRACTS.md): TAG = `scanbridge:<site>:<first_seq>-<last_seq>` (the stock.move name
//! and the in-doubt check), external id = `scanbridge.<site>_<seq>` (module `scanbridge`).

use std::collections::HashSet;

use scanbridge_protocol::{EventBody, Operation, Scan};
use serde_json::{json, Value};

use crate::inbox::{Outcome, StoredEvent};
use crate::odoo::errors::OdooError;

/// The TAG of a chunk.
pub fn tag(site: &str, first_seq: u64, last_seq: u64) -> String {
    format!("scanbridge:{site}:{first_seq}-{last_seq}")
}

/// Module part of the relay's external ids.
pub const XID_MODULE: &str = "scanbridge";

/// The external id of one event's quant row (`module.name`).
pub fn xid(site: &str, seq: u64) -> String {
    format!("{XID_MODULE}.{}", xid_name(site, seq))
}

/// The `ir.model.data.name` part of [`xid`].
pub fn xid_name(site: &str, seq: u64) -> String {
    format!("{site}_{seq}")
}

/// A count scan, as the chunker sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CountLine {
    pub seq: u64,
    /// Product barcode to look up (`product.product.barcode`).
    pub product: String,
    /// Location barcode (`stock.location.barcode`); a count without one cannot be applied.
    pub location: Option<String>,
    /// Counted quantity; a count without one cannot be applied.
    pub qty: Option<f64>,
}

impl CountLine {
    /// Why this line cannot be sent to Odoo at all, if so.
    pub fn incomplete(&self) -> Option<String> {
        match (&self.location, self.qty) {
            (None, _) => Some(
                "count scan without a location: send `location` in the payload or configure the device's station location".into(),
            ),
            (_, None) => Some("count scan without a quantity: send `qty` in the payload".into()),
            (_, Some(q)) if !q.is_finite() || q < 0.0 => {
                Some(format!("count scan with an invalid quantity {q}"))
            }
            _ => None,
        }
    }
}

/// What the pusher does with one stored event.
#[derive(Debug, Clone, PartialEq)]
pub enum Handling {
    /// A count scan: goes into a chunk.
    Count(CountLine),
    /// Not sent to Odoo: recorded with this outcome (dead letter or quarantine).
    Settle(Outcome),
}

/// Decides how one stored event is handled.
pub fn classify(stored: &StoredEvent) -> Handling {
    let event = match &stored.event {
        Ok(event) => event,
        Err(e) => return dead(e.clone()),
    };
    match &event.body {
        EventBody::Scan(scan) => match scan.op {
            Some(Operation::Count) => Handling::Count(CountLine {
                seq: stored.seq,
                product: product_barcode(scan),
                location: scan.location.clone().filter(|l| !l.is_empty()),
                qty: scan.qty.or_else(|| scan.gs1.as_ref().and_then(|g| g.qty)),
            }),
            Some(op) => dead(format!("operation {} is not mapped to Odoo yet", op.as_str())),
            None => dead(format!(
                "scan from device {:?} has no operation: send `op` in the payload or configure a station for the device",
                event.device
            )),
        },
        EventBody::Reading(reading) => dead(format!("no mapping configured for PLC tag {}", reading.tag)),
        EventBody::Quarantined(q) => Handling::Settle(Outcome::Quarantined {
            reason: q.reason.clone(),
        }),
    }
}

fn dead(reason: String) -> Handling {
    Handling::Settle(Outcome::DeadLettered { reason })
}

/// The barcode to look a product up by: the GTIN of a GS1 code (a GTIN-14 with a leading zero
/// as the EAN-13 Odoo usually stores), else the scanned code.
pub fn product_barcode(scan: &Scan) -> String {
    match scan.gs1.as_ref().and_then(|g| g.gtin.as_deref()) {
        Some(gtin) if gtin.len() == 14 && gtin.starts_with('0') => gtin[1..].to_string(),
        Some(gtin) => gtin.to_string(),
        None => scan.code.clone(),
    }
}

/// How many of `lines` (consecutive count scans from the cursor) form the next chunk: at most
/// `max_chunk`, seqs consecutive, no (product, location) pair twice, and none past `limit_last`
/// (the inflight chunk being retried). At least one when `lines` is not empty.
pub fn chunk_len(lines: &[CountLine], max_chunk: usize, limit_last: Option<u64>) -> usize {
    let mut seen: HashSet<(&str, Option<&str>)> = HashSet::new();
    let mut previous: Option<u64> = None;
    let mut len = 0;
    for line in lines {
        let beyond_limit = limit_last.is_some_and(|last| line.seq > last);
        let gap = previous.is_some_and(|p| p.checked_add(1) != Some(line.seq));
        let repeat = !seen.insert((line.product.as_str(), line.location.as_deref()));
        if len > 0 && (len >= max_chunk || beyond_limit || gap || repeat) {
            break;
        }
        previous = Some(line.seq);
        len += 1;
    }
    len
}

/// A row of the `stock.quant` load.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadRow {
    pub seq: u64,
    pub product_id: i64,
    pub location_id: i64,
    pub qty: f64,
}

/// The positional args of `stock.quant.load`.
pub fn load_args(site: &str, rows: &[LoadRow]) -> Value {
    let data: Vec<Value> = rows
        .iter()
        .map(|r| json!([xid(site, r.seq), r.product_id, r.location_id, r.qty]))
        .collect();
    json!([
        [
            "id",
            "product_id/.id",
            "location_id/.id",
            "inventory_quantity"
        ],
        data
    ])
}

/// The kwargs of `stock.quant.load`.
pub fn load_kwargs() -> Value {
    json!({"context": {"inventory_mode": true}})
}

/// The positional args of the `stock.quant.write` that marks zero counts as counted.
///
/// Odoo skips assigning a value equal to the current one, and a quant's pending
/// `inventory_quantity` is 0 after every apply: a count of 0 loaded into an existing quant leaves
/// it "not set" (Odoo 17), and applying it changes nothing. Setting `inventory_quantity_set`
/// explicitly makes the zero count apply like any other.
pub fn mark_counted_args(ids: &[i64]) -> Value {
    json!([ids, {"inventory_quantity_set": true}])
}

/// The kwargs of `stock.quant.action_apply_inventory`.
pub fn apply_kwargs(tag: &str) -> Value {
    json!({"context": {"inventory_mode": true, "inventory_name": tag}})
}

/// The positional args of a barcode `search_read`.
pub fn lookup_args(barcodes: &[String]) -> Value {
    json!([[["barcode", "in", barcodes]]])
}

/// The kwargs of a barcode `search_read`.
pub fn lookup_kwargs() -> Value {
    json!({"fields": ["id", "barcode"]})
}

/// The positional args of the in-doubt `stock.move.search_count`.
///
/// Odoo 17+ names an inventory move `TAG (<user>)` when the quant is assigned to a user (a
/// create in inventory mode assigns the caller), and exactly `TAG` otherwise, so both forms
/// are matched: `["|", ["name","=",TAG], ["name","=like",TAG + " (%"]]` (LIKE wildcards in the
/// TAG escaped).
pub fn in_doubt_args(tag: &str) -> Value {
    json!([[
        "|",
        ["name", "=", tag],
        ["name", "=like", format!("{} (%", escape_like(tag))]
    ]])
}

/// Escapes `\`, `%` and `_` for a SQL LIKE pattern.
pub fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The positional args of the `ir.model.data.search_read` that finds which rows of an in-doubt
/// chunk a lost `load` answer already created.
pub fn xid_lookup_args(site: &str, seqs: &[u64]) -> Value {
    let names: Vec<String> = seqs.iter().map(|&seq| xid_name(site, seq)).collect();
    json!([[["module", "=", XID_MODULE], ["name", "in", names]]])
}

/// The kwargs of the `ir.model.data.search_read`.
pub fn xid_lookup_kwargs() -> Value {
    json!({"fields": ["name", "res_id"]})
}

/// Reads the `ir.model.data.search_read` answer into the names that exist.
pub fn parse_xid_lookup(result: Option<Value>) -> Result<Vec<String>, OdooError> {
    let Some(Value::Array(records)) = result else {
        return Err(OdooError::Unexpected {
            call: "ir.model.data.search_read".into(),
            detail: format!("expected a list of records, got {result:?}"),
        });
    };
    Ok(records
        .iter()
        .filter_map(|r| r.get("name").and_then(Value::as_str).map(str::to_string))
        .collect())
}

/// The positional args of a `stock.quant.load` that only re-asserts the counted quantity of
/// quants whose external id already exists (a write may not touch product or location).
pub fn reload_args(site: &str, rows: &[LoadRow]) -> Value {
    let data: Vec<Value> = rows
        .iter()
        .map(|r| json!([xid(site, r.seq), r.qty]))
        .collect();
    json!([["id", "inventory_quantity"], data])
}

/// Reads a barcode `search_read` answer into `(barcode, id)` pairs.
pub fn parse_lookup(call: &str, result: Option<Value>) -> Result<Vec<(String, i64)>, OdooError> {
    let unexpected = |detail: String| OdooError::Unexpected {
        call: call.to_string(),
        detail,
    };
    let Some(Value::Array(records)) = result else {
        return Err(unexpected(format!(
            "expected a list of records, got {result:?}"
        )));
    };
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let id = record.get("id").and_then(Value::as_i64);
        // `barcode` is false for records without one; those cannot have matched the domain.
        let barcode = record.get("barcode").and_then(Value::as_str);
        match (id, barcode) {
            (Some(id), Some(barcode)) => out.push((barcode.to_string(), id)),
            (Some(_), None) => {}
            _ => return Err(unexpected(format!("record without an id: {record}"))),
        }
    }
    Ok(out)
}

/// Reads a `search_count` answer.
pub fn parse_count(result: Option<Value>) -> Result<u64, OdooError> {
    result
        .as_ref()
        .and_then(Value::as_u64)
        .ok_or_else(|| OdooError::Unexpected {
            call: "stock.move.search_count".into(),
            detail: format!("expected a number, got {result:?}"),
        })
}

/// What a `load` did.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadOutcome {
    /// Written; the quant ids, one per row (merged quants keep their id).
    Written(Vec<i64>),
    /// Odoo refused the rows and rolled back; its messages, joined.
    Rejected(String),
}

/// Reads a `stock.quant.load` answer: `{"ids": [...] | false, "messages": [...]}`.
pub fn interpret_load(result: Option<Value>) -> Result<LoadOutcome, OdooError> {
    interpret_load_of("stock.quant.load", result)
}

/// Reads the answer of the `load` named `call` (e.g. `stock.move.line.load`).
pub fn interpret_load_of(call: &str, result: Option<Value>) -> Result<LoadOutcome, OdooError> {
    let unexpected = |detail: String| OdooError::Unexpected {
        call: call.to_string(),
        detail,
    };
    let Some(Value::Object(map)) = result else {
        return Err(unexpected(format!("expected an object, got {result:?}")));
    };
    let messages: Vec<String> = map
        .get("messages")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter(|m| m.get("type").and_then(Value::as_str) != Some("warning"))
                .map(|m| {
                    let text = m
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("(no message)");
                    match m.get("record").and_then(Value::as_u64) {
                        Some(r) => format!("row {r}: {text}"),
                        None => text.to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    match map.get("ids") {
        Some(Value::Array(ids)) if messages.is_empty() => ids
            .iter()
            .map(|v| {
                v.as_i64()
                    .ok_or_else(|| unexpected(format!("id {v} is not a number")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(LoadOutcome::Written),
        Some(Value::Array(_)) | Some(Value::Bool(false)) | Some(Value::Null) | None => {
            if messages.is_empty() {
                Ok(LoadOutcome::Rejected(
                    "Odoo wrote nothing and gave no reason".into(),
                ))
            } else {
                Ok(LoadOutcome::Rejected(messages.join("; ")))
            }
        }
        Some(other) => Err(unexpected(format!("ids is {other}"))),
    }
}

/// Reads an `action_apply_inventory` answer: `None` (done) or a wizard action Odoo wants a
/// person to confirm, which the relay does not do (the reason, for the dead letter).
pub fn interpret_apply(result: Option<Value>) -> Result<(), String> {
    match result {
        None | Some(Value::Null) | Some(Value::Bool(true)) => Ok(()),
        Some(Value::Object(action)) => {
            let model = action
                .get("res_model")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            Err(format!(
                "Odoo asks for a confirmation wizard ({model}) instead of applying the count; apply it in Odoo's Physical Inventory screen"
            ))
        }
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanbridge_protocol::{Event, Gs1, Reading, Source, Symbology};

    fn line(seq: u64, product: &str, location: &str) -> CountLine {
        CountLine {
            seq,
            product: product.into(),
            location: Some(location.into()),
            qty: Some(1.0),
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

    fn scan(op: Option<Operation>) -> Scan {
        Scan {
            code: "4006381333931".into(),
            symbology: Symbology::Ean13,
            gs1: None,
            op,
            qty: Some(12.0),
            location: Some("WH-STOCK-A01".into()),
            reference: None,
        }
    }

    #[test]
    fn tag_and_external_id_follow_the_contract() {
        assert_eq!(tag("WH01", 1, 200), "scanbridge:WH01:1-200");
        assert_eq!(xid("WH01", 17), "scanbridge.WH01_17");
    }

    #[test]
    fn the_in_doubt_check_matches_the_tag_with_and_without_the_user_suffix() {
        assert_eq!(
            in_doubt_args("scanbridge:WH_01:1-2"),
            json!([[
                "|",
                ["name", "=", "scanbridge:WH_01:1-2"],
                ["name", "=like", "scanbridge:WH\\_01:1-2 (%"]
            ]])
        );
    }

    #[test]
    fn a_chunk_stops_before_a_repeated_product_and_location() {
        let lines = [
            line(1, "A", "L1"),
            line(2, "B", "L1"),
            line(3, "A", "L2"),
            line(4, "A", "L1"),
        ];
        assert_eq!(chunk_len(&lines, 200, None), 3);
        assert_eq!(chunk_len(&lines[3..], 200, None), 1);
    }

    #[test]
    fn a_chunk_holds_at_most_max_chunk_events() {
        let lines: Vec<_> = (1..=10).map(|i| line(i, &format!("P{i}"), "L")).collect();
        assert_eq!(chunk_len(&lines, 4, None), 4);
    }

    #[test]
    fn a_chunk_being_retried_keeps_its_original_end() {
        let lines: Vec<_> = (5..=10).map(|i| line(i, &format!("P{i}"), "L")).collect();
        assert_eq!(chunk_len(&lines, 200, Some(7)), 3);
    }

    #[test]
    fn a_chunk_stops_at_a_gap_in_seqs() {
        let lines = [line(1, "A", "L"), line(2, "B", "L"), line(5, "C", "L")];
        assert_eq!(chunk_len(&lines, 200, None), 2);
    }

    #[test]
    fn an_empty_window_makes_no_chunk_and_one_line_makes_one() {
        assert_eq!(chunk_len(&[], 200, None), 0);
        assert_eq!(chunk_len(&[line(3, "A", "L")], 1, Some(1)), 1);
    }

    #[test]
    fn count_scans_are_chunked_and_other_operations_are_dead_lettered_with_a_reason() {
        assert!(matches!(
            classify(&stored(1, EventBody::Scan(scan(Some(Operation::Count))))),
            Handling::Count(_)
        ));
        assert_eq!(
            classify(&stored(2, EventBody::Scan(scan(Some(Operation::Receive))))),
            Handling::Settle(Outcome::DeadLettered {
                reason: "operation receive is not mapped to Odoo yet".into()
            })
        );
        let reading = EventBody::Reading(Reading {
            tag: "scale1.weight".into(),
            value: 1.5,
            unit: None,
        });
        assert_eq!(
            classify(&stored(3, reading)),
            Handling::Settle(Outcome::DeadLettered {
                reason: "no mapping configured for PLC tag scale1.weight".into()
            })
        );
    }

    #[test]
    fn a_gs1_gtin_with_a_leading_zero_is_looked_up_as_ean13() {
        let mut s = scan(Some(Operation::Count));
        s.code = "0104006381333931".into();
        s.gs1 = Some(Gs1 {
            gtin: Some("04006381333931".into()),
            ..Gs1::default()
        });
        assert_eq!(product_barcode(&s), "4006381333931");
    }

    #[test]
    fn load_rows_carry_the_external_id_and_database_ids() {
        let args = load_args(
            "WH01",
            &[LoadRow {
                seq: 7,
                product_id: 3,
                location_id: 9,
                qty: 12.0,
            }],
        );
        assert_eq!(
            args,
            json!([
                [
                    "id",
                    "product_id/.id",
                    "location_id/.id",
                    "inventory_quantity"
                ],
                [["scanbridge.WH01_7", 3, 9, 12.0]]
            ])
        );
    }

    #[test]
    fn a_load_with_ids_is_written_and_one_with_error_messages_is_rejected() {
        let ok = json!({"ids": [41, 42], "messages": [], "nextrow": 0});
        assert_eq!(
            interpret_load(Some(ok)).expect("ok"),
            LoadOutcome::Written(vec![41, 42])
        );
        let bad = json!({"ids": false, "messages": [{"type": "error", "message": "Invalid database id '999' for the field 'Product'", "rows": {"from": 0, "to": 0}, "record": 0, "field": "product_id"}]});
        assert_eq!(
            interpret_load(Some(bad)).expect("ok"),
            LoadOutcome::Rejected(
                "row 0: Invalid database id '999' for the field 'Product'".into()
            )
        );
    }

    #[test]
    fn apply_returning_none_is_done_and_a_wizard_is_a_reason_to_dead_letter() {
        assert_eq!(interpret_apply(None), Ok(()));
        let wizard = json!({"type": "ir.actions.act_window", "res_model": "stock.inventory.conflict", "target": "new"});
        assert!(interpret_apply(Some(wizard))
            .expect_err("wizard")
            .contains("stock.inventory.conflict"));
    }

    #[test]
    fn lookups_skip_records_without_a_barcode() {
        let result = json!([{"id": 3, "barcode": "4006381333931"}, {"id": 4, "barcode": false}]);
        assert_eq!(
            parse_lookup("product.product.search_read", Some(result)).expect("ok"),
            vec![("4006381333931".to_string(), 3)]
        );
    }
}

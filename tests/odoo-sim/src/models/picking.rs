//! `stock.picking.type` and `stock.picking`: operation types (receipts, deliveries, internal
//! transfers) and transfers with Odoo's state machine and validation.
//!
//! Mirrors `addons/stock/models/stock_picking.py` (odoo/odoo 17.0/18.0/19.0):
//! - `create`: the name comes from the type's sequence (`WH/IN/00001`, padding 5), locations from
//!   the type (`_compute_location_id`); `write` refuses a type change on done/cancelled pickings
//!   and pushes location/partner changes to the moves;
//! - `_compute_state`: draft if no move or any draft move, cancel if all cancelled, done if all
//!   done/cancelled, else the relevant state of the moves (partially available → assigned);
//! - `action_confirm`, `action_assign` ("Nothing to check the availability for."),
//!   `action_cancel`, `do_unreserve`;
//! - `button_validate`: (18+: done pickings skipped) drafts confirmed and their empty moves
//!   filled with the demand, `_sanity_check` (empty transfer, zero quantities, missing lots — the
//!   messages differ by version), `_pre_action_done_hook` (all moves picked when some quantity
//!   and nothing picked; `_check_backorder` → the `stock.backorder.confirmation` action when the
//!   type says `ask` and something is short, unless `skip_backorder`), then `_action_done` with
//!   `cancel_backorder` for types `never` and `picking_ids_not_to_backorder` (unless `always`),
//!   and `_create_backorder` (a copy named by the sequence, `backorder_id` set, the open moves
//!   moved over, unpicked, and reserved again);
//! - `stock_delivery`'s `shipping_weight`: a stored compute of the bulk weight and packages,
//!   recomputed whenever the picking's move lines change quantity, package or unit (so a value
//!   written before the last scan is overwritten, as in Odoo); `weight` from the moves.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::db::{as_id, float, now_string, truthy, Db, Record};
use crate::models::{ir_model_data, move_, move_line, orm, Ctx};
use crate::rpc::errors::OdooError;
use crate::version::OdooVersion;

/// `stock.picking`.
pub const P: &str = "stock.picking";
/// `stock.picking.type`.
pub const T: &str = "stock.picking.type";
const ML: &str = move_line::ML;
const M: &str = move_::M;

/// The view id carried by the backorder wizard action (`stock.view_backorder_confirmation`).
pub const BACKORDER_VIEW_ID: i64 = 711;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn std_location(db: &Db, name: &str) -> Result<i64, OdooError> {
    ir_model_data::lookup(db, "stock", name)
        .map(|x| x.res_id)
        .ok_or_else(|| {
            OdooError::value_error(format!("External ID not found in the system: stock.{name}"))
        })
}

/// The unit "Units" (`uom.product_uom_unit`) and the warehouse's operation types
/// (`stock_warehouse._get_picking_type_create_values`): Receipts `IN`, Delivery Orders `OUT`,
/// Internal Transfers `INT`.
pub fn seed(db: &mut Db) -> Result<(), OdooError> {
    let units = orm::base_create(db, "uom.uom", &obj(json!({"name": "Units"})))?;
    ir_model_data::register(db, "uom", "product_uom_unit", "uom.uom", units)?;
    let stock = std_location(db, "stock_location_stock")?;
    let vendors = std_location(db, "stock_location_suppliers")?;
    let customers = std_location(db, "stock_location_customers")?;
    for (xid, vals) in [
        (
            "picking_type_in",
            json!({"name": "Receipts", "code": "incoming", "sequence_code": "IN", "sequence": 1,
                   "default_location_src_id": vendors, "default_location_dest_id": stock,
                   "use_create_lots": true, "use_existing_lots": false}),
        ),
        (
            "picking_type_out",
            json!({"name": "Delivery Orders", "code": "outgoing", "sequence_code": "OUT", "sequence": 5,
                   "default_location_src_id": stock, "default_location_dest_id": customers,
                   "use_create_lots": false, "use_existing_lots": true}),
        ),
        (
            "picking_type_internal",
            json!({"name": "Internal Transfers", "code": "internal", "sequence_code": "INT", "sequence": 2,
                   "default_location_src_id": stock, "default_location_dest_id": stock,
                   "use_create_lots": false, "use_existing_lots": true}),
        ),
    ] {
        let id = orm::base_create(db, T, &obj(vals))?;
        ir_model_data::register(db, "stock", xid, T, id)?;
    }
    Ok(())
}

/// True when location `loc` is `ancestor` or below it.
pub fn is_child_of(db: &Db, loc: i64, ancestor: i64) -> bool {
    let mut cur = Some(loc);
    let mut guard = 0;
    while let Some(c) = cur {
        if c == ancestor {
            return true;
        }
        guard += 1;
        if guard > 64 {
            return false;
        }
        cur = db.m2o("stock.location", c, "location_id");
    }
    false
}

/// Quantity reserved by open move lines on (product, location, lot).
pub fn reserved(db: &Db, product: i64, location: i64, lot: Option<i64>) -> f64 {
    db.all_ids(ML)
        .into_iter()
        .filter(|l| {
            db.m2o(ML, *l, "product_id") == Some(product)
                && db.m2o(ML, *l, "location_id") == Some(location)
                && db.m2o(ML, *l, "lot_id") == lot
                && !matches!(db.str(ML, *l, "state").as_str(), "done" | "cancel")
                && db
                    .m2o(ML, *l, "move_id")
                    .is_some_and(|m| !move_::should_bypass(db, m))
        })
        .map(|l| db.float(ML, l, "quantity"))
        .sum()
}

/// `ir.sequence.next_by_id` of the type's sequence: `WH/<code>/<5 digits>`, one more than the
/// highest number used so far.
fn next_name(db: &Db, ptype: i64) -> String {
    let code = db.str(T, ptype, "sequence_code");
    let prefix = format!("WH/{code}/");
    let max = db
        .all_ids(P)
        .into_iter()
        .filter_map(|p| {
            db.str(P, p, "name")
                .strip_prefix(&prefix)
                .and_then(|n| n.parse::<u64>().ok())
        })
        .max()
        .unwrap_or(0);
    format!("{prefix}{:05}", max + 1)
}

fn set_if_changed(
    db: &mut Db,
    model: &str,
    id: i64,
    field: &str,
    v: Value,
) -> Result<(), OdooError> {
    let old = db.value(model, id, field);
    let same = match (old, &v) {
        (Value::Number(a), Value::Number(b)) => {
            (a.as_f64().unwrap_or(0.0) - b.as_f64().unwrap_or(0.0)).abs() < 1e-12
        }
        (Value::Null | Value::Bool(false), Value::Null | Value::Bool(false)) => true,
        (a, b) => a == b,
    };
    if !same {
        db.set1(model, id, field, v)?;
    }
    Ok(())
}

/// `name_uniq`: unique (name, company_id), surfaced as Odoo's converted IntegrityError.
pub fn check_name_unique(db: &Db, id: i64) -> Result<(), OdooError> {
    let name = db.str(P, id, "name");
    if name.is_empty() || name == "/" {
        return Ok(());
    }
    if db
        .all_ids(P)
        .into_iter()
        .any(|o| o != id && db.str(P, o, "name") == name)
    {
        return Err(OdooError::validation_error(
            "The operation cannot be completed: Reference must be unique per company!",
        ));
    }
    Ok(())
}

/// `stock.picking.create(vals_list)`.
pub fn create(
    db: &mut Db,
    vals_list: &[Map<String, Value>],
    uid: i64,
    ctx: &Ctx,
) -> Result<Vec<i64>, OdooError> {
    let mut ids = Vec::new();
    for vals in vals_list {
        let mut vals = vals.clone();
        let ptype = vals
            .get("picking_type_id")
            .and_then(as_id)
            .filter(|t| db.exists(T, *t));
        if let Some(t) = ptype {
            let unnamed = vals
                .get("name")
                .is_none_or(|n| !truthy(n) || n.as_str() == Some("/"));
            if unnamed {
                vals.insert("name".into(), next_name(db, t).into());
            }
            for (f, tf) in [
                ("location_id", "default_location_src_id"),
                ("location_dest_id", "default_location_dest_id"),
            ] {
                if vals.get(f).and_then(as_id).is_none() {
                    if let Some(l) = db.m2o(T, t, tf) {
                        vals.insert(f.into(), l.into());
                    }
                }
            }
        }
        let id = orm::base_create_ctx(db, P, &vals, uid, ctx)?;
        ids.push(id);
    }
    // _autoconfirm_picking: draft moves that already carry a quantity are confirmed.
    let to_confirm: Vec<i64> = ids
        .iter()
        .flat_map(|p| db.one2many_ids(M, "picking_id", *p))
        .filter(|m| db.str(M, *m, "state") == "draft" && db.float(M, *m, "quantity") > 0.0)
        .collect();
    move_::confirm(db, &to_confirm)?;
    sync(db)?;
    Ok(ids)
}

/// `stock.picking.write(vals)`.
pub fn write(
    db: &mut Db,
    ids: &[i64],
    vals: &Map<String, Value>,
    uid: i64,
    ctx: &Ctx,
) -> Result<(), OdooError> {
    orm::ensure_exist(db, P, ids, uid)?;
    let mut vals = vals.clone();
    if let Some(t) = vals.get("picking_type_id").and_then(as_id) {
        if ids
            .iter()
            .any(|p| matches!(db.str(P, *p, "state").as_str(), "done" | "cancel"))
        {
            return Err(OdooError::user_error(
                "Changing the operation type of this record is forbidden at this point.",
            ));
        }
        if ids
            .iter()
            .any(|p| db.m2o(P, *p, "picking_type_id") != Some(t))
        {
            if ids.len() == 1 {
                vals.insert("name".into(), next_name(db, t).into());
            }
            for (f, tf) in [
                ("location_id", "default_location_src_id"),
                ("location_dest_id", "default_location_dest_id"),
            ] {
                if let Some(l) = db.m2o(T, t, tf) {
                    vals.insert(f.into(), l.into());
                }
            }
        }
    }
    orm::base_write(db, P, ids, &vals, uid)?;
    let mut after = Map::new();
    for f in ["location_id", "location_dest_id", "partner_id"] {
        if let Some(v) = vals.get(f) {
            if f == "partner_id" || truthy(v) {
                after.insert(f.to_owned(), v.clone());
            }
        }
    }
    if !after.is_empty() {
        let moves: Vec<i64> = ids
            .iter()
            .flat_map(|p| db.one2many_ids(M, "picking_id", *p))
            .filter(|m| db.str(M, *m, "state") != "done")
            .collect();
        if !moves.is_empty() {
            orm::base_write(db, M, &moves, &after, uid)?;
            let mut line_vals = Map::new();
            for f in ["location_id", "location_dest_id"] {
                if let Some(v) = after.get(f) {
                    line_vals.insert(f.to_owned(), v.clone());
                }
            }
            let lines: Vec<i64> = moves
                .iter()
                .flat_map(|m| db.one2many_ids(ML, "move_id", *m))
                .collect();
            if !line_vals.is_empty() && !lines.is_empty() {
                orm::base_write(db, ML, &lines, &line_vals, uid)?;
            }
        }
    }
    let _ = ctx;
    sync(db)
}

/// `action_confirm()`.
pub fn action_confirm(db: &mut Db, ids: &[i64]) -> Result<(), OdooError> {
    let drafts: Vec<i64> = ids
        .iter()
        .flat_map(|p| db.one2many_ids(M, "picking_id", *p))
        .filter(|m| db.str(M, *m, "state") == "draft")
        .collect();
    move_::confirm(db, &drafts)?;
    sync(db)
}

/// `action_assign()`.
pub fn action_assign(db: &mut Db, ids: &[i64]) -> Result<(), OdooError> {
    let drafts: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|p| db.str(P, *p, "state") == "draft")
        .collect();
    action_confirm(db, &drafts)?;
    let moves: Vec<i64> = ids
        .iter()
        .flat_map(|p| db.one2many_ids(M, "picking_id", *p))
        .filter(|m| !matches!(db.str(M, *m, "state").as_str(), "draft" | "cancel" | "done"))
        .collect();
    if moves.is_empty() {
        return Err(OdooError::user_error(
            "Nothing to check the availability for.",
        ));
    }
    move_::assign(db, &moves)?;
    sync(db)
}

/// `action_cancel()`.
pub fn action_cancel(db: &mut Db, ids: &[i64]) -> Result<(), OdooError> {
    let moves: Vec<i64> = ids
        .iter()
        .flat_map(|p| db.one2many_ids(M, "picking_id", *p))
        .filter(|m| db.str(M, *m, "state") != "done")
        .collect();
    move_::cancel(db, &moves)?;
    for p in ids {
        db.set1(P, *p, "is_locked", Value::Bool(true))?;
        if db.one2many_ids(M, "picking_id", *p).is_empty() {
            db.set1(P, *p, "state", "cancel".into())?;
        }
    }
    sync(db)
}

/// `do_unreserve()`: drop the unpicked lines of open moves.
pub fn do_unreserve(db: &mut Db, ids: &[i64]) -> Result<(), OdooError> {
    let moves: Vec<i64> = ids
        .iter()
        .flat_map(|p| db.one2many_ids(M, "picking_id", *p))
        .filter(|m| !matches!(db.str(M, *m, "state").as_str(), "done" | "cancel"))
        .collect();
    let lines: Vec<i64> = moves
        .iter()
        .flat_map(|m| db.one2many_ids(ML, "move_id", *m))
        .filter(|l| !db.bool(ML, *l, "picked"))
        .collect();
    move_line::remove(db, &lines)?;
    move_::recompute_state(db, &moves)?;
    sync(db)
}

fn ctx_ids(ctx: &Ctx, key: &str) -> Vec<i64> {
    match ctx.get(key) {
        Some(Value::Array(a)) => a.iter().filter_map(as_id).collect(),
        Some(v) => as_id(v).into_iter().collect(),
        None => Vec::new(),
    }
}

fn empty_transfer_message(v: OdooVersion) -> &'static str {
    if v == OdooVersion::V17 {
        "Please add some items to move."
    } else {
        "You can’t validate an empty transfer. Please add some products to move before proceeding."
    }
}

fn without_quantities_message(v: OdooVersion) -> &'static str {
    match v {
        OdooVersion::V17 => "You cannot validate a transfer if no quantities are reserved nor done. To force the transfer, encode quantities.",
        OdooVersion::V18 => "You cannot validate a transfer if no quantities are reserved. To force the transfer, encode quantities.",
        OdooVersion::V19 => "Transfer trouble alert! Validating a zero quantity transfer? You're not moving invisible goods around are you?\nSet some quantities and let's get moving!",
    }
}

/// `_sanity_check()`.
fn sanity_check(db: &Db, ids: &[i64]) -> Result<(), OdooError> {
    let v = db.version;
    let mut without_moves = Vec::new();
    let mut without_qty = Vec::new();
    let mut without_lots = Vec::new();
    let mut products_without_lots: Vec<String> = Vec::new();
    for p in ids {
        let moves = db.one2many_ids(M, "picking_id", *p);
        let lines = db.one2many_ids(ML, "picking_id", *p);
        if moves.is_empty() && lines.is_empty() {
            without_moves.push(*p);
        }
        let open: Vec<i64> = moves
            .iter()
            .copied()
            .filter(|m| !matches!(db.str(M, *m, "state").as_str(), "done" | "cancel"))
            .collect();
        // 19 only looks at the picked moves when some are picked.
        let has_pick = v >= OdooVersion::V19 && open.iter().any(|m| db.bool(M, *m, "picked"));
        if open
            .iter()
            .filter(|m| !has_pick || db.bool(M, **m, "picked"))
            .all(|m| db.float(M, *m, "quantity").abs() < 1e-9)
        {
            without_qty.push(*p);
        }
        let Some(t) = db.m2o(P, *p, "picking_type_id") else {
            continue;
        };
        if db.bool(T, t, "use_create_lots") || db.bool(T, t, "use_existing_lots") {
            for l in lines {
                let product = db.m2o(ML, l, "product_id").unwrap_or_default();
                let tracking = db.str("product.product", product, "tracking");
                if tracking.is_empty() || tracking == "none" {
                    continue;
                }
                if !db.bool(ML, l, "picked") || db.float(ML, l, "quantity").abs() < 1e-9 {
                    continue;
                }
                if db.str(ML, l, "lot_name").is_empty() && db.m2o(ML, l, "lot_id").is_none() {
                    if !without_lots.contains(p) {
                        without_lots.push(*p);
                    }
                    let n = db.display_name("product.product", product);
                    if !products_without_lots.contains(&n) {
                        products_without_lots.push(n);
                    }
                }
            }
        }
    }
    if ids.len() <= 1 {
        if !without_moves.is_empty() {
            return Err(OdooError::user_error(empty_transfer_message(v)));
        }
        if !without_qty.is_empty() {
            return Err(OdooError::user_error(without_quantities_message(v)));
        }
        if !without_lots.is_empty() {
            return Err(OdooError::user_error(format!(
                "You need to supply a Lot/Serial number for products {}.",
                products_without_lots.join(", ")
            )));
        }
        return Ok(());
    }
    let names = |ps: &[i64]| -> String {
        ps.iter()
            .map(|p| db.str(P, *p, "name"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut message = String::new();
    if !without_moves.is_empty() {
        message.push_str(&format!(
            "Transfers {}: Please add some items to move.",
            names(&without_moves)
        ));
    }
    if !without_lots.is_empty() {
        message.push_str(&format!(
            "\n\nTransfers {}: You need to supply a Lot/Serial number for products {}.",
            names(&without_lots),
            products_without_lots.join(", ")
        ));
    }
    if message.is_empty() {
        Ok(())
    } else {
        Err(OdooError::user_error(message.trim_start().to_owned()))
    }
}

/// `_get_picked_quantity` of a move: the quantity of its picked lines.
fn picked_quantity(db: &Db, m: i64) -> f64 {
    db.one2many_ids(ML, "move_id", m)
        .iter()
        .filter(|l| db.bool(ML, **l, "picked"))
        .map(|l| db.float(ML, *l, "quantity"))
        .sum()
}

/// `_check_backorder()`: pickings of `ask` types with a move not picked or short.
fn check_backorder(db: &Db, ids: &[i64]) -> Vec<i64> {
    ids.iter()
        .copied()
        .filter(|p| {
            db.m2o(P, *p, "picking_type_id")
                .is_some_and(|t| db.str(T, t, "create_backorder") == "ask")
        })
        .filter(|p| {
            db.one2many_ids(M, "picking_id", *p)
                .into_iter()
                .filter(|m| db.str(M, *m, "state") != "cancel")
                .any(|m| {
                    let demand = db.float(M, m, "product_uom_qty");
                    (demand != 0.0 && !db.bool(M, m, "picked"))
                        || picked_quantity(db, m) < demand - 1e-9
                })
        })
        .collect()
}

/// `button_validate()` with the call's context.
pub fn button_validate(db: &mut Db, ids: &[i64], uid: i64, ctx: &Ctx) -> Result<Value, OdooError> {
    orm::ensure_exist(db, P, ids, uid)?;
    let ids: Vec<i64> = if db.version >= OdooVersion::V18 {
        ids.iter()
            .copied()
            .filter(|p| db.str(P, *p, "state") != "done")
            .collect()
    } else {
        ids.to_vec()
    };
    let drafts: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|p| db.str(P, *p, "state") == "draft")
        .collect();
    action_confirm(db, &drafts)?;
    let draft_moves: Vec<i64> = drafts
        .iter()
        .flat_map(|p| db.one2many_ids(M, "picking_id", *p))
        .collect();
    for m in draft_moves {
        let demand = db.float(M, m, "product_uom_qty");
        if db.float(M, m, "quantity").abs() < 1e-9 && demand.abs() > 1e-9 {
            move_::set_quantity(db, m, demand, uid, ctx)?;
        }
    }
    if !ctx.get("skip_sanity_check").is_some_and(truthy) {
        sanity_check(db, &ids)?;
    }
    let mut ctx = ctx.clone();
    if !ctx.get("button_validate_picking_ids").is_some_and(truthy) {
        ctx.insert("button_validate_picking_ids".into(), json!(ids));
    }
    // _pre_action_done_hook
    for p in &ids {
        let moves = db.one2many_ids(M, "picking_id", *p);
        let has_quantity = moves.iter().any(|m| db.float(M, *m, "quantity") != 0.0);
        let has_pick = moves.iter().any(|m| db.bool(M, *m, "picked"));
        if has_quantity && !has_pick {
            let mut v = Map::new();
            v.insert("picked".into(), Value::Bool(true));
            move_::write(db, &moves, &v, uid, &ctx)?;
        }
    }
    if !ctx.get("skip_backorder").is_some_and(truthy) {
        let to_backorder = check_backorder(db, &ids);
        if !to_backorder.is_empty() {
            let mut wctx = ctx.clone();
            wctx.insert("default_show_transfers".into(), Value::Bool(ids.len() > 1));
            wctx.insert(
                "default_pick_ids".into(),
                Value::Array(to_backorder.iter().map(|p| json!([4, p])).collect()),
            );
            return Ok(json!({
                "name": "Create Backorder?",
                "type": "ir.actions.act_window",
                "view_mode": "form",
                "res_model": "stock.backorder.confirmation",
                "views": [[BACKORDER_VIEW_ID, "form"]],
                "view_id": BACKORDER_VIEW_ID,
                "target": "new",
                "context": Value::Object(wctx),
            }));
        }
    }
    let not_to_backorder_ctx = ctx_ids(&ctx, "picking_ids_not_to_backorder");
    let policy = |db: &Db, p: i64| {
        db.m2o(P, p, "picking_type_id")
            .map(|t| db.str(T, t, "create_backorder"))
            .unwrap_or_default()
    };
    let mut no_bo: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|p| policy(db, *p) == "never")
        .collect();
    for p in not_to_backorder_ctx {
        if ids.contains(&p) && !no_bo.contains(&p) && policy(db, p) != "always" {
            no_bo.push(p);
        }
    }
    let with_bo: Vec<i64> = ids.iter().copied().filter(|p| !no_bo.contains(p)).collect();
    if !no_bo.is_empty() {
        action_done(db, &no_bo, true)?;
    }
    if !with_bo.is_empty() {
        action_done(db, &with_bo, false)?;
    }
    Ok(Value::Bool(true))
}

/// `stock.picking._action_done()`.
fn action_done(db: &mut Db, ids: &[i64], cancel_backorder: bool) -> Result<(), OdooError> {
    let moves: Vec<i64> = ids
        .iter()
        .flat_map(|p| db.one2many_ids(M, "picking_id", *p))
        .filter(|m| {
            matches!(
                db.str(M, *m, "state").as_str(),
                "draft" | "waiting" | "partially_available" | "assigned" | "confirmed"
            )
        })
        .collect();
    let done = move_::done(db, &moves, cancel_backorder)?;
    let now = now_string();
    for p in ids {
        let mut rec = Record::new();
        rec.insert("date_done".into(), now.clone().into());
        rec.insert("priority".into(), "0".into());
        db.set(P, *p, rec)?;
    }
    if !cancel_backorder {
        let mut picks: Vec<i64> = done
            .iter()
            .filter_map(|m| db.m2o(M, *m, "picking_id"))
            .collect();
        picks.sort_unstable();
        picks.dedup();
        for p in picks {
            create_backorder(db, p)?;
        }
    }
    sync(db)?;
    // _trigger_assign: receipts and internal transfers may make waiting moves available.
    let products: Vec<Option<i64>> = done
        .iter()
        .filter(|m| {
            db.m2o(M, **m, "picking_type_id")
                .is_some_and(|t| db.str(T, t, "code") != "outgoing")
        })
        .map(|m| db.m2o(M, *m, "product_id"))
        .collect();
    let waiting: Vec<i64> = db
        .all_ids(M)
        .into_iter()
        .filter(|m| {
            matches!(
                db.str(M, *m, "state").as_str(),
                "confirmed" | "partially_available"
            ) && products.contains(&db.m2o(M, *m, "product_id"))
                && !move_::should_bypass(db, *m)
        })
        .collect();
    move_::assign(db, &waiting)?;
    sync(db)
}

/// `_create_backorder()` of one picking: its open moves go to a new picking.
fn create_backorder(db: &mut Db, p: i64) -> Result<Option<i64>, OdooError> {
    let moves: Vec<i64> = db
        .one2many_ids(M, "picking_id", p)
        .into_iter()
        .filter(|m| !matches!(db.str(M, *m, "state").as_str(), "done" | "cancel"))
        .collect();
    if moves.is_empty() {
        return Ok(None);
    }
    move_::recompute_state(db, &moves)?;
    let t = db.m2o(P, p, "picking_type_id").unwrap_or_default();
    let mut vals = Map::new();
    for f in [
        "picking_type_id",
        "location_id",
        "location_dest_id",
        "partner_id",
        "origin",
        "move_type",
        "scheduled_date",
    ] {
        let v = db.value(P, p, f).clone();
        if !v.is_null() {
            vals.insert(f.into(), v);
        }
    }
    vals.insert("name".into(), next_name(db, t).into());
    vals.insert("backorder_id".into(), p.into());
    let bo = orm::base_create(db, P, &vals)?;
    for m in &moves {
        let mut rec = Record::new();
        rec.insert("picking_id".into(), bo.into());
        rec.insert("picked".into(), Value::Bool(false));
        db.set(M, *m, rec)?;
        for l in db.one2many_ids(ML, "move_id", *m) {
            let mut r = Record::new();
            r.insert("picking_id".into(), bo.into());
            r.insert("picked".into(), Value::Bool(false));
            db.set(ML, l, r)?;
        }
    }
    sync(db)?;
    if db.str(T, t, "reservation_method") == "at_confirm" {
        let open: Vec<i64> = db
            .one2many_ids(M, "picking_id", bo)
            .into_iter()
            .filter(|m| !matches!(db.str(M, *m, "state").as_str(), "draft" | "cancel" | "done"))
            .collect();
        move_::assign(db, &open)?;
    }
    recompute_shipping_weight(db, bo)?;
    // The lines that went with the moves no longer weigh on `p`.
    recompute_shipping_weight(db, p)?;
    Ok(Some(bo))
}

/// `_compute_shipping_weight` (`stock_delivery`): bulk weight of the lines without a destination
/// package, plus each package's shipping weight (or its content's weight).
pub fn recompute_shipping_weight(db: &mut Db, p: i64) -> Result<(), OdooError> {
    if !db.exists(P, p) {
        return Ok(());
    }
    let package_model = if db.version >= OdooVersion::V19 {
        "stock.package"
    } else {
        "stock.quant.package"
    };
    let mut bulk = 0.0;
    let mut packages: HashMap<i64, f64> = HashMap::new();
    for l in db.one2many_ids(ML, "picking_id", p) {
        let product = db.m2o(ML, l, "product_id").unwrap_or_default();
        let w = db.float(ML, l, "quantity") * db.float("product.product", product, "weight");
        match db.m2o(ML, l, "result_package_id") {
            Some(pk) => *packages.entry(pk).or_insert(0.0) += w,
            None => bulk += w,
        }
    }
    let mut total = bulk;
    for (pk, content) in packages {
        let sw = db.float(package_model, pk, "shipping_weight");
        total += if sw != 0.0 { sw } else { content };
    }
    set_if_changed(db, P, p, "shipping_weight", float(total))
}

/// [`recompute_shipping_weight`] of the picking of move `m`.
pub fn recompute_shipping_weight_of_move(db: &mut Db, m: i64) -> Result<(), OdooError> {
    match db.m2o(M, m, "picking_id") {
        Some(p) => recompute_shipping_weight(db, p),
        None => Ok(()),
    }
}

/// Recompute the stored computed fields of transfers after a change: move lines' related
/// fields, moves' `quantity`/`picked`/state/reference, pickings' state/code/weight, and the
/// quants' `reserved_quantity`.
pub fn sync(db: &mut Db) -> Result<(), OdooError> {
    let mut lines_by_move: HashMap<i64, Vec<i64>> = HashMap::new();
    for l in db.all_ids(ML) {
        let mv = db.m2o(ML, l, "move_id");
        if let Some(m) = mv {
            lines_by_move.entry(m).or_default().push(l);
        }
        // done/cancelled lines are frozen (synced when they were done)
        if matches!(db.value(ML, l, "state").as_str(), Some("done" | "cancel")) {
            continue;
        }
        let state = mv
            .map(|m| db.value(M, m, "state").clone())
            .unwrap_or(Value::Null);
        let product = db.m2o(ML, l, "product_id").unwrap_or_default();
        let tracking = db.value("product.product", product, "tracking").clone();
        let pick = db.m2o(ML, l, "picking_id");
        let ptype = pick.and_then(|p| db.m2o(P, p, "picking_type_id"));
        let code = ptype
            .map(|t| db.value(T, t, "code").clone())
            .unwrap_or(Value::Null);
        let reference = mv
            .map(|m| db.value(M, m, "reference").clone())
            .unwrap_or(Value::Null);
        let inv = mv.is_some_and(|m| db.bool(M, m, "is_inventory"));
        let qty = db.value(ML, l, "quantity").clone();
        set_if_changed(db, ML, l, "state", state.clone())?;
        set_if_changed(db, ML, l, "tracking", tracking)?;
        set_if_changed(db, ML, l, "picking_code", code)?;
        set_if_changed(
            db,
            ML,
            l,
            "picking_type_id",
            ptype.map(Value::from).unwrap_or(Value::Null),
        )?;
        set_if_changed(db, ML, l, "reference", reference)?;
        set_if_changed(db, ML, l, "is_inventory", Value::Bool(inv))?;
        set_if_changed(db, ML, l, "quantity_product_uom", qty)?;
        if state.as_str() == Some("done") {
            set_if_changed(db, ML, l, "picked", Value::Bool(true))?;
        }
    }
    let mut moves_by_picking: HashMap<i64, Vec<i64>> = HashMap::new();
    for m in db.all_ids(M) {
        let Some(p) = db.m2o(M, m, "picking_id") else {
            continue;
        };
        moves_by_picking.entry(p).or_default().push(m);
        if matches!(db.value(M, m, "state").as_str(), Some("done" | "cancel")) {
            continue;
        }
        let lines = lines_by_move.get(&m).cloned().unwrap_or_default();
        let qty: f64 = lines.iter().map(|l| db.float(ML, *l, "quantity")).sum();
        if db.str(M, m, "state") != "cancel" {
            set_if_changed(db, M, m, "quantity", float(qty))?;
        }
        if !lines.is_empty() {
            let picked = lines.iter().any(|l| db.bool(ML, *l, "picked"));
            set_if_changed(db, M, m, "picked", Value::Bool(picked))?;
        }
        let name = db.value(P, p, "name").clone();
        set_if_changed(db, M, m, "reference", name)?;
        let demand = db.value(M, m, "product_uom_qty").clone();
        set_if_changed(db, M, m, "product_qty", demand.clone())?;
        // _recompute_state, from the lines gathered above
        let state = db.str(M, m, "state");
        if !matches!(state.as_str(), "draft" | "cancel" | "done") {
            let demand = crate::db::as_f64(&demand);
            let new = if qty >= demand - 1e-9 {
                "assigned"
            } else if qty > 1e-9 {
                "partially_available"
            } else if state == "waiting" {
                "waiting"
            } else {
                "confirmed"
            };
            set_if_changed(db, M, m, "state", new.into())?;
        }
    }
    for p in db.all_ids(P) {
        if matches!(db.value(P, p, "state").as_str(), Some("done" | "cancel")) {
            continue;
        }
        let moves = moves_by_picking.get(&p).cloned().unwrap_or_default();
        let states: Vec<String> = moves.iter().map(|m| db.str(M, *m, "state")).collect();
        let current = db.str(P, p, "state");
        let state = if states.is_empty() {
            if current == "cancel" {
                "cancel".to_owned()
            } else {
                "draft".to_owned()
            }
        } else if states.iter().any(|s| s == "draft") {
            "draft".to_owned()
        } else if states.iter().all(|s| s == "cancel") {
            "cancel".to_owned()
        } else if states.iter().all(|s| s == "cancel" || s == "done") {
            "done".to_owned()
        } else {
            relevant_state(db, p, &moves)
        };
        set_if_changed(db, P, p, "state", state.into())?;
        let code = db
            .m2o(P, p, "picking_type_id")
            .map(|t| db.value(T, t, "code").clone())
            .unwrap_or(Value::Null);
        set_if_changed(db, P, p, "picking_type_code", code)?;
        let weight: f64 = moves
            .iter()
            .filter(|m| db.str(M, **m, "state") != "cancel")
            .map(|m| {
                let product = db.m2o(M, *m, "product_id").unwrap_or_default();
                db.float(M, *m, "product_qty") * db.float("product.product", product, "weight")
            })
            .sum();
        set_if_changed(db, P, p, "weight", float(weight))?;
    }
    // reserved_quantity of quants = open lines of moves that do not bypass reservation
    let mut reserved: HashMap<(i64, i64, Option<i64>), f64> = HashMap::new();
    let mut bypass: HashMap<i64, bool> = HashMap::new();
    for l in db.all_ids(ML) {
        if matches!(db.str(ML, l, "state").as_str(), "done" | "cancel" | "") {
            continue;
        }
        let Some(m) = db.m2o(ML, l, "move_id") else {
            continue;
        };
        if *bypass
            .entry(m)
            .or_insert_with(|| move_::should_bypass(db, m))
        {
            continue;
        }
        let key = (
            db.m2o(ML, l, "product_id").unwrap_or_default(),
            db.m2o(ML, l, "location_id").unwrap_or_default(),
            db.m2o(ML, l, "lot_id"),
        );
        *reserved.entry(key).or_insert(0.0) += db.float(ML, l, "quantity");
    }
    for q in db.all_ids("stock.quant") {
        let key = (
            db.m2o("stock.quant", q, "product_id").unwrap_or_default(),
            db.m2o("stock.quant", q, "location_id").unwrap_or_default(),
            db.m2o("stock.quant", q, "lot_id"),
        );
        // one quant per key carries the reservation (the first one)
        let r = reserved.remove(&key).unwrap_or(0.0);
        set_if_changed(db, "stock.quant", q, "reserved_quantity", float(r))?;
    }
    Ok(())
}

/// `_get_relevant_state_among_moves` for a "direct" picking (partially available → assigned),
/// or "one" (everything must be reserved).
fn relevant_state(db: &Db, p: i64, moves: &[i64]) -> String {
    let todo: Vec<String> = moves
        .iter()
        .filter(|m| {
            let s = db.str(M, **m, "state");
            let empty_ready = s == "assigned" && db.float(M, **m, "product_uom_qty") == 0.0;
            !(matches!(s.as_str(), "cancel" | "done") || empty_ready)
        })
        .map(|m| db.str(M, *m, "state"))
        .collect();
    if todo.is_empty() {
        return "assigned".to_owned();
    }
    let any_ready = todo
        .iter()
        .any(|s| s == "assigned" || s == "partially_available");
    if db.str(P, p, "move_type") == "one" {
        if todo.iter().all(|s| s == "assigned") {
            return "assigned".to_owned();
        }
        return if todo.iter().any(|s| s == "waiting") {
            "waiting".to_owned()
        } else {
            "confirmed".to_owned()
        };
    }
    if any_ready {
        "assigned".to_owned()
    } else if todo.iter().any(|s| s == "waiting") {
        "waiting".to_owned()
    } else {
        "confirmed".to_owned()
    }
}

/// A picking's fields for `/__sim/state`.
pub fn dump(db: &Db, id: i64) -> Value {
    let m2o = |f: &str| {
        db.m2o(P, id, f)
            .map(Value::from)
            .unwrap_or(Value::Bool(false))
    };
    json!({
        "id": id,
        "name": db.str(P, id, "name"),
        "state": db.str(P, id, "state"),
        "picking_type_id": m2o("picking_type_id"),
        "picking_type_code": db.str(P, id, "picking_type_code"),
        "location_id": m2o("location_id"),
        "location_dest_id": m2o("location_dest_id"),
        "partner_id": m2o("partner_id"),
        "origin": db.value(P, id, "origin").as_str().map(Value::from).unwrap_or(Value::Bool(false)),
        "backorder_id": m2o("backorder_id"),
        "shipping_weight": db.float(P, id, "shipping_weight"),
        "weight": db.float(P, id, "weight"),
        "move_ids": db.one2many_ids(M, "picking_id", id),
        "move_line_ids": db.one2many_ids(ML, "picking_id", id),
    })
}

/// An operation type's fields for `/__sim/state`.
pub fn dump_type(db: &Db, id: i64) -> Value {
    let m2o = |f: &str| {
        db.m2o(T, id, f)
            .map(Value::from)
            .unwrap_or(Value::Bool(false))
    };
    json!({
        "id": id,
        "name": db.str(T, id, "name"),
        "code": db.str(T, id, "code"),
        "sequence_code": db.str(T, id, "sequence_code"),
        "create_backorder": db.str(T, id, "create_backorder"),
        "use_create_lots": db.bool(T, id, "use_create_lots"),
        "use_existing_lots": db.bool(T, id, "use_existing_lots"),
        "default_location_src_id": m2o("default_location_src_id"),
        "default_location_dest_id": m2o("default_location_dest_id"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::base_db;

    fn db(v: OdooVersion) -> Db {
        base_db(v, "scanbridge", "Administrator").unwrap_or_else(|e| panic!("base db: {e}"))
    }

    fn type_id(db: &Db, code: &str) -> i64 {
        db.all_ids(T)
            .into_iter()
            .find(|t| db.str(T, *t, "sequence_code") == code)
            .unwrap_or_else(|| panic!("no type {code}"))
    }

    #[test]
    fn a_fresh_database_has_the_three_warehouse_operation_types() {
        let db = db(OdooVersion::V17);
        let codes: Vec<(String, String, bool, bool)> = db
            .all_ids(T)
            .into_iter()
            .map(|t| {
                (
                    db.str(T, t, "sequence_code"),
                    db.str(T, t, "create_backorder"),
                    db.bool(T, t, "use_create_lots"),
                    db.bool(T, t, "use_existing_lots"),
                )
            })
            .collect();
        assert_eq!(
            codes,
            vec![
                ("IN".into(), "ask".into(), true, false),
                ("OUT".into(), "ask".into(), false, true),
                ("INT".into(), "ask".into(), false, true),
            ]
        );
        assert_eq!(
            db.display_name(T, type_id(&db, "IN")),
            "My Company: Receipts"
        );
    }

    #[test]
    fn picking_names_follow_the_type_sequence_with_five_digits() {
        let mut db = db(OdooVersion::V18);
        let t = type_id(&db, "OUT");
        assert_eq!(next_name(&db, t), "WH/OUT/00001");
        let vals = obj(json!({"picking_type_id": t, "name": "WH/OUT/00041"}));
        let _ = create(&mut db, &[vals], 2, &Ctx::new());
        assert_eq!(next_name(&db, t), "WH/OUT/00042");
    }

    #[test]
    fn a_location_is_a_child_of_its_ancestors_only() {
        let db = db(OdooVersion::V17);
        let stock = std_location(&db, "stock_location_stock").unwrap_or_default();
        let customers = std_location(&db, "stock_location_customers").unwrap_or_default();
        let wh = db
            .m2o("stock.location", stock, "location_id")
            .unwrap_or_default();
        assert!(is_child_of(&db, stock, stock));
        assert!(is_child_of(&db, stock, wh));
        assert!(!is_child_of(&db, customers, wh));
    }

    #[test]
    fn a_picking_without_moves_is_draft_and_an_empty_one_cannot_be_validated() {
        let mut db = db(OdooVersion::V17);
        let t = type_id(&db, "INT");
        let ids = create(
            &mut db,
            &[obj(json!({"picking_type_id": t}))],
            2,
            &Ctx::new(),
        )
        .unwrap_or_default();
        assert_eq!(db.str(P, ids[0], "state"), "draft");
        let err = button_validate(&mut db, &ids, 2, &Ctx::new()).err();
        assert_eq!(
            err.map(|e| e.message),
            Some("Please add some items to move.".to_owned())
        );
    }
}

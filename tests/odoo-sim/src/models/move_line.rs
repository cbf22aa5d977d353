//! `stock.move.line` (17+): the detailed operations of a transfer — `quantity` plus `picked`
//! (no `qty_done` since 17), `lot_id` / `lot_name`, source/destination locations and packages.
//!
//! Mirrors `addons/stock/models/stock_move_line.py` (read from odoo/odoo):
//! - `create`: a line created on an open picking without `move_id` is attached to a move of the
//!   same product (`_get_linkable_moves`: moves whose quantity is below their demand first), or
//!   a move is created from `_prepare_stock_move_vals` (demand 0, state = the picking's state);
//!   `picked` follows the move when not given;
//! - `_check_lot_product` / `_check_positive_quantity` constraints (ValidationError);
//! - `_action_done`: negative quantities refused, zero-quantity lines deleted, lots looked up or
//!   created from `lot_name` when the operation type has `use_create_lots`, "You need to supply a
//!   Lot/Serial Number for product" otherwise, then quants move from source to destination;
//! - a line created on a done picking gets a done move and moves the quants at once;
//! - `_unlink_except_done_or_cancel`.
//!
//! Derived values (move quantity/picked, picking state, reservations, shipping weight) are
//! refreshed by [`crate::models::picking::sync`] after every change.

use serde_json::{json, Map, Value};

use crate::db::{as_id, float, now_string, Db, Record};
use crate::models::{lot, move_, orm, picking, product, quant, Ctx};
use crate::rpc::errors::OdooError;
use crate::version::OdooVersion;

/// Model name.
pub const ML: &str = "stock.move.line";

/// The values of a new line of `mv` for `qty` (`stock.move._prepare_move_line_vals`).
pub fn prepare_vals(
    db: &Db,
    mv: i64,
    qty: f64,
    location: Option<i64>,
    lot: Option<i64>,
) -> Map<String, Value> {
    let m = move_::M;
    let mut v = Map::new();
    v.insert("move_id".into(), mv.into());
    v.insert(
        "product_id".into(),
        db.m2o(m, mv, "product_id")
            .map(Value::from)
            .unwrap_or(Value::Null),
    );
    v.insert("quantity".into(), float(qty));
    let loc = location.or_else(|| db.m2o(m, mv, "location_id"));
    v.insert(
        "location_id".into(),
        loc.map(Value::from).unwrap_or(Value::Null),
    );
    v.insert(
        "location_dest_id".into(),
        db.m2o(m, mv, "location_dest_id")
            .map(Value::from)
            .unwrap_or(Value::Null),
    );
    v.insert(
        "picking_id".into(),
        db.m2o(m, mv, "picking_id")
            .map(Value::from)
            .unwrap_or(Value::Null),
    );
    if let Some(l) = lot {
        v.insert("lot_id".into(), l.into());
    }
    complete_vals(db, &mut v);
    v
}

/// Fill what `create` computes: company-free defaults, `product_uom_id`, locations from the
/// move or the picking (`_compute_location_id`), `picked` from the move.
fn complete_vals(db: &Db, vals: &mut Map<String, Value>) {
    let mv = vals.get("move_id").and_then(as_id);
    let pick = vals
        .get("picking_id")
        .and_then(as_id)
        .or_else(|| mv.and_then(|m| db.m2o(move_::M, m, "picking_id")));
    if let Some(m) = mv {
        if !vals.contains_key("picked") {
            vals.insert("picked".into(), db.bool(move_::M, m, "picked").into());
        }
    }
    for (field, pfield) in [
        ("location_id", "location_id"),
        ("location_dest_id", "location_dest_id"),
    ] {
        let unset = vals.get(field).and_then(as_id).is_none();
        if unset {
            let v = mv
                .and_then(|m| db.m2o(move_::M, m, pfield))
                .or_else(|| pick.and_then(|p| db.m2o(picking::P, p, pfield)));
            if let Some(v) = v {
                vals.insert(field.into(), v.into());
            }
        }
    }
    if vals.get("product_uom_id").and_then(as_id).is_none() {
        let uom = mv
            .and_then(|m| db.m2o(move_::M, m, "product_uom"))
            .or_else(|| {
                vals.get("product_id")
                    .and_then(as_id)
                    .and_then(|p| db.m2o("product.product", p, "uom_id"))
            });
        if let Some(u) = uom {
            vals.insert("product_uom_id".into(), u.into());
        }
    }
    if vals.get("product_id").and_then(as_id).is_none() {
        if let Some(m) = mv {
            if let Some(p) = db.m2o(move_::M, m, "product_id") {
                vals.insert("product_id".into(), p.into());
            }
        }
    }
}

/// `stock.move.line.create(vals_list)`.
pub fn create(
    db: &mut Db,
    vals_list: &[Map<String, Value>],
    uid: i64,
    ctx: &Ctx,
) -> Result<Vec<i64>, OdooError> {
    let mut ids = Vec::with_capacity(vals_list.len());
    for vals in vals_list {
        let mut vals = vals.clone();
        complete_vals(db, &mut vals);
        let id = orm::base_create_ctx(db, ML, &vals, uid, ctx)?;
        ids.push(id);
    }
    for id in &ids {
        let id = *id;
        if db.m2o(ML, id, "move_id").is_some() {
            continue;
        }
        let Some(pick) = db.m2o(ML, id, "picking_id") else {
            continue;
        };
        let linkable = if db.str(picking::P, pick, "state") != "done" {
            linkable_moves(db, id, pick)
        } else {
            Vec::new()
        };
        if let Some(mv) = linkable.first().copied() {
            let mut rec = Record::new();
            rec.insert("move_id".into(), mv.into());
            if db.bool(move_::M, mv, "picked") {
                rec.insert("picked".into(), true.into());
            }
            db.set(ML, id, rec)?;
        } else {
            let mv = create_move_for(db, id, pick, uid, ctx)?;
            db.set1(ML, id, "move_id", mv.into())?;
            if db.str(move_::M, mv, "state") == "done" {
                // a line added to a done picking is done at once: the quants move now
                picking::sync(db)?;
                let mut rec = Record::new();
                rec.insert("state".into(), "done".into());
                rec.insert("picked".into(), Value::Bool(true));
                db.set(ML, id, rec)?;
                let product = db.m2o(ML, id, "product_id").unwrap_or_default();
                let qty = db.float(ML, id, "quantity");
                if product::is_storable(db, product) && qty != 0.0 {
                    let lot = db.m2o(ML, id, "lot_id");
                    let src = db.m2o(ML, id, "location_id").unwrap_or_default();
                    let dest = db.m2o(ML, id, "location_dest_id").unwrap_or_default();
                    quant::update_available_quantity(db, product, src, lot, -qty)?;
                    quant::update_available_quantity(db, product, dest, lot, qty)?;
                }
            }
        }
    }
    for id in &ids {
        check(db, *id)?;
    }
    let mut picks: Vec<i64> = ids
        .iter()
        .filter_map(|i| db.m2o(ML, *i, "picking_id"))
        .collect();
    picks.sort_unstable();
    picks.dedup();
    picking::sync(db)?;
    for p in picks {
        picking::recompute_shipping_weight(db, p)?;
    }
    Ok(ids)
}

/// `_get_linkable_moves`: the picking's moves of the line's product, those whose quantity is
/// still below the demand first (a stable sort, as Python's `sorted`).
fn linkable_moves(db: &Db, ml: i64, pick: i64) -> Vec<i64> {
    let product = db.m2o(ML, ml, "product_id");
    let mut moves: Vec<i64> = db
        .one2many_ids(move_::M, "picking_id", pick)
        .into_iter()
        .filter(|m| db.m2o(move_::M, *m, "product_id") == product)
        .collect();
    moves.sort_by_key(|m| {
        let short = db.float(move_::M, *m, "quantity") < db.float(move_::M, *m, "product_qty");
        !short
    });
    moves
}

/// `create_move` of `create`: a move from `_prepare_stock_move_vals` (demand 0 on an open
/// picking, state = the picking's state).
fn create_move_for(db: &mut Db, ml: i64, pick: i64, uid: i64, ctx: &Ctx) -> Result<i64, OdooError> {
    let product = db
        .m2o(ML, ml, "product_id")
        .ok_or_else(|| OdooError::missing("product.product", &[], uid))?;
    let done = db.str(picking::P, pick, "state") == "done";
    let mut vals = Map::new();
    vals.insert(
        "name".into(),
        db.display_name("product.product", product).into(),
    );
    vals.insert("product_id".into(), product.into());
    vals.insert(
        "product_uom_qty".into(),
        float(if done {
            db.float(ML, ml, "quantity")
        } else {
            0.0
        }),
    );
    if let Some(u) = db.m2o(ML, ml, "product_uom_id") {
        vals.insert("product_uom".into(), u.into());
    }
    for f in ["location_id", "location_dest_id", "partner_id"] {
        if let Some(v) = db.m2o(picking::P, pick, f) {
            vals.insert(f.into(), v.into());
        }
    }
    vals.insert("picked".into(), db.bool(ML, ml, "picked").into());
    vals.insert("picking_id".into(), pick.into());
    vals.insert("state".into(), db.str(picking::P, pick, "state").into());
    if let Some(t) = db.m2o(picking::P, pick, "picking_type_id") {
        vals.insert("picking_type_id".into(), t.into());
    }
    orm::base_create_ctx(db, move_::M, &vals, uid, ctx)
}

/// Constraints of one line.
fn check(db: &Db, id: i64) -> Result<(), OdooError> {
    if db.float(ML, id, "quantity") < 0.0 {
        return Err(OdooError::validation_error(
            "You can not enter negative quantities.",
        ));
    }
    if let Some(l) = db.m2o(ML, id, "lot_id") {
        let product = db.m2o(ML, id, "product_id");
        if db.m2o(lot::L, l, "product_id") != product {
            return Err(OdooError::validation_error(format!(
                "This lot {} is incompatible with this product {}",
                db.str(lot::L, l, "name"),
                product
                    .map(|p| db.display_name("product.product", p))
                    .unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// `stock.move.line.write(vals)`.
pub fn write(
    db: &mut Db,
    ids: &[i64],
    vals: &Map<String, Value>,
    uid: i64,
    _ctx: &Ctx,
) -> Result<(), OdooError> {
    orm::ensure_exist(db, ML, ids, uid)?;
    if let Some(p) = vals.get("product_id").and_then(as_id) {
        if ids.iter().any(|ml| {
            db.str(ML, *ml, "state") != "draft" && db.m2o(ML, *ml, "product_id") != Some(p)
        }) {
            return Err(OdooError::user_error(
                "Changing the product is only allowed in 'Draft' state.",
            ));
        }
    }
    if vals.contains_key("lot_id") {
        let mut products: Vec<Option<i64>> =
            ids.iter().map(|ml| db.m2o(ML, *ml, "product_id")).collect();
        products.dedup();
        if products.len() > 1 {
            return Err(OdooError::user_error(
                "Changing the Lot/Serial number for move lines with different products is not allowed.",
            ));
        }
    }
    if let Some(q) = vals.get("quantity") {
        if crate::db::as_f64(q) < 0.0
            && ids.iter().any(|ml| {
                product::is_storable(db, db.m2o(ML, *ml, "product_id").unwrap_or_default())
                    && db.str(ML, *ml, "state") != "done"
            })
        {
            return Err(OdooError::user_error(
                "Reserving a negative quantity is not allowed.",
            ));
        }
    }
    orm::base_write(db, ML, ids, vals, uid)?;
    for id in ids {
        check(db, *id)?;
    }
    picking::sync(db)?;
    let weight_fields = [
        "quantity",
        "result_package_id",
        "product_uom_id",
        "move_id",
        "picking_id",
    ];
    if weight_fields.iter().any(|f| vals.contains_key(*f)) {
        let mut picks: Vec<i64> = ids
            .iter()
            .filter_map(|i| db.m2o(ML, *i, "picking_id"))
            .collect();
        picks.sort_unstable();
        picks.sort_unstable();
        picks.dedup();
        for p in picks {
            picking::recompute_shipping_weight(db, p)?;
        }
    }
    Ok(())
}

/// `unlink()` with `_unlink_except_done_or_cancel`.
pub fn unlink(db: &mut Db, ids: &[i64], uid: i64) -> Result<(), OdooError> {
    orm::ensure_exist(db, ML, ids, uid)?;
    if ids
        .iter()
        .any(|ml| matches!(db.str(ML, *ml, "state").as_str(), "done" | "cancel"))
    {
        return Err(OdooError::user_error(
            "Deleting product moves after the transfer is done?\n\nThat would be like going back in time to revert all operations triggered after this move. Who knows what the end result would be, So let's not do it.\n\nTry changing the “done” quantity to 0 instead.",
        ));
    }
    remove(db, ids)
}

/// Delete lines without the done/cancel check (internal use), then resync.
pub fn remove(db: &mut Db, ids: &[i64]) -> Result<(), OdooError> {
    let mut picks: Vec<i64> = ids
        .iter()
        .filter_map(|i| db.m2o(ML, *i, "picking_id"))
        .collect();
    picks.sort_unstable();
    picks.dedup();
    for id in ids {
        db.remove(ML, *id);
    }
    picking::sync(db)?;
    for p in picks {
        picking::recompute_shipping_weight(db, p)?;
    }
    Ok(())
}

fn lot_missing_error(db: &Db, mls: &[i64]) -> OdooError {
    let mut names: Vec<String> = Vec::new();
    for ml in mls {
        let n = db
            .m2o(ML, *ml, "product_id")
            .map(|p| db.display_name("product.product", p))
            .unwrap_or_default();
        if !names.contains(&n) {
            names.push(n);
        }
    }
    if db.version == OdooVersion::V17 {
        // 17.0: _('You need to supply a Lot/Serial Number for product: \n - %s', ...)
        OdooError::user_error(format!(
            "You need to supply a Lot/Serial Number for product: \n - {}",
            names.join("\n - ")
        ))
    } else {
        let list: Vec<String> = names.iter().map(|n| format!("- {n}")).collect();
        OdooError::user_error(format!(
            "You need to supply a Lot/Serial Number for product:\n{}",
            list.join("\n")
        ))
    }
}

/// `_action_done` of the lines of the moves being validated.
pub fn action_done(db: &mut Db, mls: &[i64]) -> Result<(), OdooError> {
    let mut without_lot: Vec<i64> = Vec::new();
    let mut to_delete: Vec<i64> = Vec::new();
    let mut to_check: Vec<i64> = Vec::new();
    for ml in mls {
        let ml = *ml;
        let qty = db.float(ML, ml, "quantity");
        if qty > 0.0 {
            let product = db.m2o(ML, ml, "product_id").unwrap_or_default();
            if db.str("product.product", product, "tracking") == "none"
                || db.str("product.product", product, "tracking").is_empty()
            {
                continue;
            }
            let mv = db.m2o(ML, ml, "move_id");
            let ptype = mv.and_then(|m| db.m2o(move_::M, m, "picking_type_id"));
            let is_inventory = mv.is_some_and(|m| db.bool(move_::M, m, "is_inventory"));
            let has_lot = db.m2o(ML, ml, "lot_id").is_some();
            // _exclude_requiring_lot: a picking type, an inventory move or a lot
            if ptype.is_none() && !is_inventory && !has_lot {
                without_lot.push(ml);
                continue;
            }
            let Some(t) = ptype else { continue };
            let create = db.bool(picking::T, t, "use_create_lots");
            let existing = db.bool(picking::T, t, "use_existing_lots");
            if has_lot || (!create && !existing) {
                continue;
            }
            if create {
                to_check.push(ml);
            } else {
                without_lot.push(ml);
            }
        } else if qty < 0.0 {
            return Err(OdooError::user_error("No negative quantities allowed"));
        } else if !db
            .m2o(ML, ml, "move_id")
            .is_some_and(|m| db.bool(move_::M, m, "is_inventory"))
        {
            to_delete.push(ml);
        }
    }
    let mut to_create: Vec<i64> = Vec::new();
    for ml in to_check {
        let product = db.m2o(ML, ml, "product_id").unwrap_or_default();
        let name = db.str(ML, ml, "lot_name");
        match lot::find(db, product, &name) {
            Some(l) if !name.is_empty() => db.set1(ML, ml, "lot_id", l.into())?,
            _ if !name.is_empty() => to_create.push(ml),
            _ => without_lot.push(ml),
        }
    }
    if !without_lot.is_empty() {
        return Err(lot_missing_error(db, &without_lot));
    }
    // _create_and_assign_production_lot: one lot per (product, lot_name) for lots, one per line
    // for serials (a duplicate serial then fails the uniqueness constraint).
    let mut created: Vec<((i64, String), i64)> = Vec::new();
    for ml in to_create {
        let product = db.m2o(ML, ml, "product_id").unwrap_or_default();
        let name = db.str(ML, ml, "lot_name");
        let serial = db.str("product.product", product, "tracking") != "lot";
        let existing = created
            .iter()
            .find(|(k, _)| *k == (product, name.clone()))
            .map(|(_, l)| *l);
        let l = match existing {
            Some(l) if !serial => l,
            _ => {
                let mut vals = Map::new();
                vals.insert("name".into(), name.clone().into());
                vals.insert("product_id".into(), product.into());
                let l = orm::base_create(db, lot::L, &vals)?;
                created.push(((product, name), l));
                l
            }
        };
        db.set1(ML, ml, "lot_id", l.into())?;
    }
    for ml in &to_delete {
        db.remove(ML, *ml);
    }
    for ml in mls {
        if to_delete.contains(ml) || !db.exists(ML, *ml) {
            continue;
        }
        let product = db.m2o(ML, *ml, "product_id").unwrap_or_default();
        let qty = db.float(ML, *ml, "quantity");
        if !product::is_storable(db, product) || qty == 0.0 {
            continue;
        }
        let lot = db.m2o(ML, *ml, "lot_id");
        let src = db.m2o(ML, *ml, "location_id").unwrap_or_default();
        let dest = db.m2o(ML, *ml, "location_dest_id").unwrap_or_default();
        quant::update_available_quantity(db, product, src, lot, -qty)?;
        quant::update_available_quantity(db, product, dest, lot, qty)?;
    }
    let now = now_string();
    for ml in mls {
        if db.exists(ML, *ml) {
            db.set1(ML, *ml, "date", now.clone().into())?;
        }
    }
    Ok(())
}

/// A line's fields for `/__sim/state`.
pub fn dump(db: &Db, id: i64) -> Value {
    let m2o = |f: &str| {
        db.m2o(ML, id, f)
            .map(Value::from)
            .unwrap_or(Value::Bool(false))
    };
    json!({
        "id": id,
        "picking_id": m2o("picking_id"),
        "move_id": m2o("move_id"),
        "product_id": m2o("product_id"),
        "lot_id": m2o("lot_id"),
        "lot_name": db.value(ML, id, "lot_name").as_str().map(Value::from).unwrap_or(Value::Bool(false)),
        "quantity": db.float(ML, id, "quantity"),
        "picked": db.bool(ML, id, "picked"),
        "location_id": m2o("location_id"),
        "location_dest_id": m2o("location_dest_id"),
        "state": db.str(ML, id, "state"),
        "package_id": m2o("package_id"),
        "result_package_id": m2o("result_package_id"),
    })
}

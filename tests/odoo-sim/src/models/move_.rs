//! `stock.move`: the inventory adjustment moves created when counts are applied, and the moves
//! of transfers (confirm, reserve, validate, split for backorders).
//!
//! Transfer moves mirror `addons/stock/models/stock_move.py` 17+: `_action_confirm` (draft →
//! confirmed, then `_action_assign` for moves that bypass reservation or whose operation type
//! reserves at confirmation), `_action_assign` (bypass: one line for the missing quantity — one
//! per unit for serials; else reserve from the quants of the source location and its children),
//! `_recompute_state`, `_action_cancel`, `_action_done(cancel_backorder)` (unpicked lines of
//! picked moves dropped, unpicked or empty moves cancelled when no backorder is wanted, extra
//! quantity merged into the demand, short moves split with `_split` for the backorder), and the
//! `quantity` / `picked` inverses (`_set_quantity`, `_inverse_picked`).
//!
//! Mirrors `addons/stock/models/stock_quant.py` `_get_inventory_move_values` (state confirmed,
//! `is_inventory`, `picked`, one move line of the same quantity) and
//! `addons/stock/models/stock_move.py` / `stock_move_line.py` `_action_done` (state done,
//! `_synchronize_quant`: quantity leaves the source quant and arrives in the destination quant,
//! nothing for a zero quantity or a non-storable product), `_compute_reference` (the move's name
//! when it has no picking) and `_unlink_if_draft_or_cancel`.

use serde_json::{json, Map, Value};

use crate::db::{as_f64, as_id, float, now_string, Db, Record};
use crate::models::{move_line, orm, picking, product, quant, Ctx};
use crate::rpc::errors::OdooError;

/// Model name.
pub const M: &str = "stock.move";

/// Create a confirmed inventory move of `qty` from `src` to `dest` (not yet done).
pub fn create_inventory_move(
    db: &mut Db,
    name: &str,
    product: i64,
    qty: f64,
    src: i64,
    dest: i64,
) -> Result<i64, OdooError> {
    let vals = json!({
        "name": name,
        "product_id": product,
        "product_uom_qty": qty,
        "quantity": qty,
        "state": "confirmed",
        "location_id": src,
        "location_dest_id": dest,
        "is_inventory": true,
        "picked": true,
    });
    let Value::Object(vals) = vals else {
        return Err(OdooError::value_error("bad move values"));
    };
    orm::base_create(db, M, &vals)
}

/// `_action_done` of one move whose move line carries `lot`.
pub fn action_done(db: &mut Db, id: i64, lot: Option<i64>) -> Result<(), OdooError> {
    let qty = db.float(M, id, "quantity");
    let product = db
        .m2o(M, id, "product_id")
        .ok_or_else(|| OdooError::missing(M, &[id], 2))?;
    let src = db
        .m2o(M, id, "location_id")
        .ok_or_else(|| OdooError::missing(M, &[id], 2))?;
    let dest = db
        .m2o(M, id, "location_dest_id")
        .ok_or_else(|| OdooError::missing(M, &[id], 2))?;
    if product::is_storable(db, product)
        && !quant::float_compare(qty, 0.0, quant::UNIT_ROUNDING).is_eq()
    {
        quant::update_available_quantity(db, product, src, lot, -qty)?;
        quant::update_available_quantity(db, product, dest, lot, qty)?;
    }
    let mut vals = Map::new();
    vals.insert("state".into(), "done".into());
    vals.insert("date".into(), now_string().into());
    db.set(M, id, vals)
}

/// `_unlink_if_draft_or_cancel`.
pub fn check_unlink(db: &Db, ids: &[i64]) -> Result<(), OdooError> {
    if ids
        .iter()
        .any(|m| !matches!(db.str(M, *m, "state").as_str(), "draft" | "cancel"))
    {
        return Err(OdooError::user_error(
            "You can only delete draft or cancelled moves.",
        ));
    }
    Ok(())
}

/// A move's fields for `/__sim/state`.
pub fn dump(db: &Db, id: i64) -> Value {
    let m2o = |f: &str| {
        db.m2o(M, id, f)
            .map(Value::from)
            .unwrap_or(Value::Bool(false))
    };
    json!({
        "id": id,
        "picking_id": m2o("picking_id"),
        "move_line_ids": db.one2many_ids(crate::models::move_line::ML, "move_id", id),
        "name": db.str(M, id, "name"),
        "reference": db.str(M, id, "reference"),
        "product_id": m2o("product_id"),
        "location_id": m2o("location_id"),
        "location_dest_id": m2o("location_dest_id"),
        "product_uom_qty": db.float(M, id, "product_uom_qty"),
        "quantity": db.float(M, id, "quantity"),
        "state": db.str(M, id, "state"),
        "is_inventory": db.bool(M, id, "is_inventory"),
        "picked": db.bool(M, id, "picked"),
    })
}

/// `stock.move.create`: transfer moves take their picking's locations, type and partner
/// (`_compute_location_id` and friends), a name from the product when none is given, the unit of
/// the product; a move added to a confirmed picking is confirmed (`additional`,
/// `_autoconfirm_picking`).
pub fn create(
    db: &mut Db,
    vals_list: &[Map<String, Value>],
    uid: i64,
    ctx: &Ctx,
) -> Result<Vec<i64>, OdooError> {
    let mut ids = Vec::new();
    for vals in vals_list {
        let mut vals = vals.clone();
        if let Some(p) = vals.get("picking_id").and_then(as_id) {
            for (f, pf) in [
                ("location_id", "location_id"),
                ("location_dest_id", "location_dest_id"),
                ("picking_type_id", "picking_type_id"),
                ("partner_id", "partner_id"),
            ] {
                if vals.get(f).and_then(as_id).is_none() {
                    if let Some(v) = db.m2o(picking::P, p, pf) {
                        vals.insert(f.into(), v.into());
                    }
                }
            }
        }
        let product = vals.get("product_id").and_then(as_id);
        if let Some(p) = product.filter(|p| db.exists("product.product", *p)) {
            if !vals.contains_key("name") {
                vals.insert("name".into(), db.display_name("product.product", p).into());
            }
            if vals.get("product_uom").and_then(as_id).is_none() {
                if let Some(u) = db.m2o("product.product", p, "uom_id") {
                    vals.insert("product_uom".into(), u.into());
                }
            }
        }
        let id = orm::base_create_ctx(db, M, &vals, uid, ctx)?;
        if let Some(t) = db.m2o(M, id, "picking_type_id") {
            let code = db.value(picking::T, t, "code").clone();
            db.set1(M, id, "picking_code", code)?;
        }
        ids.push(id);
    }
    let additional: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|m| {
            db.str(M, *m, "state") == "draft"
                && db.m2o(M, *m, "picking_id").is_some_and(|p| {
                    !matches!(
                        db.str(picking::P, p, "state").as_str(),
                        "draft" | "done" | "cancel"
                    )
                })
        })
        .collect();
    if !additional.is_empty() {
        confirm(db, &additional)?;
    }
    picking::sync(db)?;
    Ok(ids)
}

/// `stock.move.write`: `quantity` goes through `_set_quantity` (move lines follow), `picked`
/// through `_inverse_picked` (every line follows).
pub fn write(
    db: &mut Db,
    ids: &[i64],
    vals: &Map<String, Value>,
    uid: i64,
    ctx: &Ctx,
) -> Result<(), OdooError> {
    let mut plain = vals.clone();
    let quantity = plain.remove("quantity");
    orm::base_write(db, M, ids, &plain, uid)?;
    if let Some(q) = quantity {
        for m in ids {
            if db.m2o(M, *m, "picking_id").is_none() {
                db.set1(M, *m, "quantity", float(as_f64(&q)))?;
            } else {
                set_quantity(db, *m, as_f64(&q), uid, ctx)?;
            }
        }
    }
    if let Some(p) = vals.get("picked") {
        let lines: Vec<i64> = ids
            .iter()
            .flat_map(|m| db.one2many_ids(move_line::ML, "move_id", *m))
            .collect();
        for l in lines {
            db.set1(
                move_line::ML,
                l,
                "picked",
                Value::Bool(crate::db::truthy(p)),
            )?;
        }
    }
    picking::sync(db)?;
    Ok(())
}

/// `_set_quantity`: decrease from the last lines, increase the first line (or add one).
pub fn set_quantity(db: &mut Db, m: i64, qty: f64, uid: i64, ctx: &Ctx) -> Result<(), OdooError> {
    let lines = db.one2many_ids(move_line::ML, "move_id", m);
    let current: f64 = lines
        .iter()
        .map(|l| db.float(move_line::ML, *l, "quantity"))
        .sum();
    let diff = qty - current;
    if diff > 1e-9 {
        if let Some(first) = lines.first().copied() {
            let q = db.float(move_line::ML, first, "quantity") + diff;
            db.set1(move_line::ML, first, "quantity", float(q))?;
        } else {
            let vals = move_line::prepare_vals(db, m, diff, None, None);
            move_line::create(db, &[vals], uid, ctx)?;
        }
    } else if diff < -1e-9 {
        let mut left = -diff;
        let mut drop = Vec::new();
        for l in lines.iter().rev() {
            if left <= 1e-9 {
                break;
            }
            let q = db.float(move_line::ML, *l, "quantity");
            let dec = q.min(left);
            left -= dec;
            if q - dec <= 1e-9 {
                drop.push(*l);
            } else {
                db.set1(move_line::ML, *l, "quantity", float(q - dec))?;
            }
        }
        move_line::remove(db, &drop)?;
    }
    picking::sync(db)?;
    picking::recompute_shipping_weight_of_move(db, m)
}

/// `_should_bypass_reservation`: the source is not internal/transit, or the product is not
/// storable.
pub fn should_bypass(db: &Db, m: i64) -> bool {
    let src = db.m2o(M, m, "location_id").unwrap_or_default();
    let usage = db.str("stock.location", src, "usage");
    let product = db.m2o(M, m, "product_id").unwrap_or_default();
    !matches!(usage.as_str(), "internal" | "transit") || !product::is_storable(db, product)
}

/// `_action_confirm` of draft moves, then the at-confirm / bypass reservation.
pub fn confirm(db: &mut Db, moves: &[i64]) -> Result<(), OdooError> {
    let drafts: Vec<i64> = moves
        .iter()
        .copied()
        .filter(|m| db.str(M, *m, "state") == "draft")
        .collect();
    for m in &drafts {
        db.set1(M, *m, "state", "confirmed".into())?;
    }
    let to_assign: Vec<i64> = drafts
        .iter()
        .copied()
        .filter(|m| {
            should_bypass(db, *m)
                || db
                    .m2o(M, *m, "picking_type_id")
                    .is_some_and(|t| db.str(picking::T, t, "reservation_method") == "at_confirm")
        })
        .collect();
    assign(db, &to_assign)?;
    picking::sync(db)
}

/// `_action_assign` of moves waiting for availability.
pub fn assign(db: &mut Db, moves: &[i64]) -> Result<(), OdooError> {
    for m in moves {
        let m = *m;
        if !matches!(
            db.str(M, m, "state").as_str(),
            "confirmed" | "waiting" | "partially_available"
        ) {
            continue;
        }
        let lines = db.one2many_ids(move_line::ML, "move_id", m);
        let have: f64 = lines
            .iter()
            .map(|l| db.float(move_line::ML, *l, "quantity"))
            .sum();
        let missing = db.float(M, m, "product_uom_qty") - have;
        if missing <= 1e-9 {
            continue;
        }
        let product = db.m2o(M, m, "product_id").unwrap_or_default();
        if should_bypass(db, m) {
            let serial = db.str("product.product", product, "tracking") == "serial"
                && db.m2o(M, m, "picking_type_id").is_some_and(|t| {
                    db.bool(picking::T, t, "use_create_lots")
                        || db.bool(picking::T, t, "use_existing_lots")
                });
            if serial {
                for _ in 0..(missing.floor() as i64) {
                    let v = move_line::prepare_vals(db, m, 1.0, None, None);
                    orm::base_create(db, move_line::ML, &v)?;
                }
            } else {
                // _reservation_is_updatable: an unpicked line without lot at the same place
                let updatable = lines.iter().copied().find(|l| {
                    !db.bool(move_line::ML, *l, "picked")
                        && db.m2o(move_line::ML, *l, "lot_id").is_none()
                        && db.str(move_line::ML, *l, "lot_name").is_empty()
                        && db.m2o(move_line::ML, *l, "location_id") == db.m2o(M, m, "location_id")
                });
                match updatable {
                    Some(l) => {
                        let q = db.float(move_line::ML, l, "quantity") + missing;
                        db.set1(move_line::ML, l, "quantity", float(q))?;
                    }
                    None => {
                        let v = move_line::prepare_vals(db, m, missing, None, None);
                        orm::base_create(db, move_line::ML, &v)?;
                    }
                }
            }
            db.set1(M, m, "state", "assigned".into())?;
            continue;
        }
        let src = db.m2o(M, m, "location_id").unwrap_or_default();
        let mut need = missing;
        let mut quants: Vec<i64> = db
            .all_ids("stock.quant")
            .into_iter()
            .filter(|q| {
                db.m2o("stock.quant", *q, "product_id") == Some(product)
                    && db
                        .m2o("stock.quant", *q, "location_id")
                        .is_some_and(|l| picking::is_child_of(db, l, src))
            })
            .collect();
        // FIFO removal: oldest incoming date first, then id
        quants.sort_by(|a, b| {
            db.str("stock.quant", *a, "in_date")
                .cmp(&db.str("stock.quant", *b, "in_date"))
                .then(a.cmp(b))
        });
        for q in quants {
            if need <= 1e-9 {
                break;
            }
            let loc = db.m2o("stock.quant", q, "location_id");
            let lot = db.m2o("stock.quant", q, "lot_id");
            let avail = db.float("stock.quant", q, "quantity")
                - picking::reserved(db, product, loc.unwrap_or_default(), lot);
            if avail <= 1e-9 {
                continue;
            }
            let take = avail.min(need);
            need -= take;
            let v = move_line::prepare_vals(db, m, take, loc, lot);
            orm::base_create(db, move_line::ML, &v)?;
        }
        recompute_state(db, &[m])?;
    }
    picking::sync(db)
}

/// `_recompute_state` of open moves from their quantity.
pub fn recompute_state(db: &mut Db, moves: &[i64]) -> Result<(), OdooError> {
    for m in moves {
        let state = db.str(M, *m, "state");
        if matches!(state.as_str(), "draft" | "cancel" | "done") {
            continue;
        }
        let qty: f64 = db
            .one2many_ids(move_line::ML, "move_id", *m)
            .iter()
            .map(|l| db.float(move_line::ML, *l, "quantity"))
            .sum();
        let demand = db.float(M, *m, "product_uom_qty");
        let new = if qty >= demand - 1e-9 {
            "assigned"
        } else if qty > 1e-9 {
            "partially_available"
        } else if state == "waiting" {
            "waiting"
        } else {
            "confirmed"
        };
        if new != state {
            db.set1(M, *m, "state", new.into())?;
        }
    }
    Ok(())
}

/// `_action_cancel`: unreserve (drop the lines) and cancel; the pickings' `shipping_weight`
/// is recomputed without the dropped lines.
pub fn cancel(db: &mut Db, moves: &[i64]) -> Result<(), OdooError> {
    let mut pickings: Vec<i64> = moves
        .iter()
        .filter_map(|m| db.m2o(M, *m, "picking_id"))
        .collect();
    pickings.sort_unstable();
    pickings.dedup();
    for m in moves {
        if db.str(M, *m, "state") == "done" {
            return Err(OdooError::user_error(
                "You cannot cancel a stock move that has been set to 'Done'. Create a return in order to reverse the moves which took place.",
            ));
        }
        for l in db.one2many_ids(move_line::ML, "move_id", *m) {
            db.remove(move_line::ML, l);
        }
        let mut rec = Record::new();
        rec.insert("state".into(), "cancel".into());
        rec.insert("quantity".into(), float(0.0));
        rec.insert("picked".into(), Value::Bool(false));
        db.set(M, *m, rec)?;
    }
    for p in pickings {
        picking::recompute_shipping_weight(db, p)?;
    }
    Ok(())
}

/// `_action_done(cancel_backorder)` of transfer moves. Returns the moves done.
pub fn done(db: &mut Db, moves: &[i64], cancel_backorder: bool) -> Result<Vec<i64>, OdooError> {
    let drafts: Vec<i64> = moves
        .iter()
        .copied()
        .filter(|m| db.str(M, *m, "state") == "draft")
        .collect();
    confirm(db, &drafts)?;
    let open: Vec<i64> = moves
        .iter()
        .copied()
        .filter(|m| {
            db.exists(M, *m) && !matches!(db.str(M, *m, "state").as_str(), "done" | "cancel")
        })
        .collect();
    let mut unpicked_lines = Vec::new();
    let mut to_cancel = Vec::new();
    for m in &open {
        let picked = db.bool(M, *m, "picked");
        if picked {
            unpicked_lines.extend(
                db.one2many_ids(move_line::ML, "move_id", *m)
                    .into_iter()
                    .filter(|l| !db.bool(move_line::ML, *l, "picked")),
            );
        }
        if (db.float(M, *m, "quantity") <= 0.0 || !picked) && !db.bool(M, *m, "is_inventory") {
            let demand = db.float(M, *m, "product_uom_qty");
            if demand.abs() < 1e-9 || cancel_backorder {
                to_cancel.push(*m);
            }
        }
    }
    // Through the unlink path: the pickings' stored computes (`shipping_weight`) run again, as
    // Odoo recomputes them when their move lines go.
    move_line::remove(db, &unpicked_lines)?;
    cancel(db, &to_cancel)?;
    let mut todo = Vec::new();
    for m in &open {
        if db.str(M, *m, "state") == "cancel"
            || (db.float(M, *m, "quantity") <= 0.0 && !db.bool(M, *m, "is_inventory"))
            || !db.bool(M, *m, "picked")
        {
            continue;
        }
        // _create_extra_move: the surplus is merged into the demand.
        let qty = db.float(M, *m, "quantity");
        if qty > db.float(M, *m, "product_uom_qty") + 1e-9 {
            db.set1(M, *m, "product_uom_qty", float(qty))?;
        }
        todo.push(*m);
    }
    if !cancel_backorder {
        for m in &todo {
            let qty = db.float(M, *m, "quantity");
            let demand = db.float(M, *m, "product_uom_qty");
            if qty < demand - 1e-9 {
                split(db, *m, demand - qty)?;
            }
        }
    }
    let lines: Vec<i64> = todo
        .iter()
        .flat_map(|m| db.one2many_ids(move_line::ML, "move_id", *m))
        .collect();
    move_line::action_done(db, &lines)?;
    let now = now_string();
    for m in &todo {
        let mut rec = Record::new();
        rec.insert("state".into(), "done".into());
        rec.insert("date".into(), now.clone().into());
        db.set(M, *m, rec)?;
        for l in db.one2many_ids(move_line::ML, "move_id", *m) {
            let mut r = Record::new();
            r.insert("state".into(), "done".into());
            r.insert("picked".into(), Value::Bool(true));
            db.set(move_line::ML, l, r)?;
        }
    }
    picking::sync(db)?;
    Ok(todo)
}

/// `_split(qty)`: a new confirmed move for `qty` in the same picking; this move keeps the rest.
fn split(db: &mut Db, m: i64, qty: f64) -> Result<i64, OdooError> {
    let mut vals = Map::new();
    for f in [
        "name",
        "product_id",
        "location_id",
        "location_dest_id",
        "picking_id",
        "picking_type_id",
        "partner_id",
        "origin",
        "product_uom",
    ] {
        let v = db.value(M, m, f).clone();
        if !v.is_null() {
            vals.insert(f.into(), v);
        }
    }
    vals.insert("product_uom_qty".into(), float(qty));
    let new = orm::base_create(db, M, &vals)?;
    if let Some(t) = db.m2o(M, new, "picking_type_id") {
        let code = db.value(picking::T, t, "code").clone();
        db.set1(M, new, "picking_code", code)?;
    }
    let rest = db.float(M, m, "product_uom_qty") - qty;
    db.set1(M, m, "product_uom_qty", float(rest))?;
    db.set1(M, new, "state", "confirmed".into())?;
    Ok(new)
}

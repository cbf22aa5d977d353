//! `stock.move`: the inventory adjustment moves created when counts are applied.
//!
//! Mirrors `addons/stock/models/stock_quant.py` `_get_inventory_move_values` (state confirmed,
//! `is_inventory`, `picked`, one move line of the same quantity) and
//! `addons/stock/models/stock_move.py` / `stock_move_line.py` `_action_done` (state done,
//! `_synchronize_quant`: quantity leaves the source quant and arrives in the destination quant,
//! nothing for a zero quantity or a non-storable product), `_compute_reference` (the move's name
//! when it has no picking) and `_unlink_if_draft_or_cancel`.

use serde_json::{json, Map, Value};

use crate::db::{now_string, Db};
use crate::models::{orm, product, quant};
use crate::rpc::errors::OdooError;

const M: &str = "stock.move";

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

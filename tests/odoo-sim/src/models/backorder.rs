//! `stock.backorder.confirmation`: the "Create Backorder?" wizard `button_validate` answers with.
//!
//! Mirrors `addons/stock/wizard/stock_backorder_confirmation.py` (17.0+):
//! - `default_get`: `default_*` keys of the context fill the wizard (`default_pick_ids` =
//!   `[[4, id]]`), and one line per picking with `to_backorder` true;
//! - `process()`: with `button_validate_picking_ids` in the CALL's context, validates those
//!   pickings again with `skip_backorder` (and `picking_ids_not_to_backorder` for lines set to
//!   false) — a backorder is created for what is short; without it in the context nothing
//!   happens and it returns true (as in Odoo);
//! - `process_cancel_backorder()`: same, with `picking_ids_not_to_backorder` = all the wizard's
//!   pickings: nothing left is kept.

use serde_json::{json, Map, Value};

use crate::db::{id_list, truthy, Db};
use crate::models::{orm, picking, Ctx};
use crate::rpc::errors::OdooError;

/// Model name.
pub const W: &str = "stock.backorder.confirmation";
const LINE: &str = "stock.backorder.confirmation.line";

/// `create(vals_list)` after `default_get` from the context.
pub fn create(
    db: &mut Db,
    vals_list: &[Map<String, Value>],
    uid: i64,
    ctx: &Ctx,
) -> Result<Vec<i64>, OdooError> {
    let mut ids = Vec::new();
    for vals in vals_list {
        let mut vals = vals.clone();
        let def = db.model(W)?.clone();
        for (k, v) in ctx {
            if let Some(field) = k.strip_prefix("default_") {
                if def.field(field).is_some() && !vals.contains_key(field) {
                    vals.insert(field.to_owned(), v.clone());
                }
            }
        }
        let id = orm::base_create_ctx(db, W, &vals, uid, ctx)?;
        if !vals.contains_key("backorder_confirmation_line_ids") {
            for p in id_list(db.value(W, id, "pick_ids")) {
                let line =
                    json!({"backorder_confirmation_id": id, "picking_id": p, "to_backorder": true});
                if let Value::Object(l) = line {
                    orm::base_create(db, LINE, &l)?;
                }
            }
        }
        ids.push(id);
    }
    Ok(ids)
}

fn validate_ids(ctx: &Ctx) -> Vec<i64> {
    match ctx.get("button_validate_picking_ids") {
        Some(Value::Array(a)) => a.iter().filter_map(crate::db::as_id).collect(),
        Some(v) => crate::db::as_id(v).into_iter().collect(),
        None => Vec::new(),
    }
}

/// `process()`.
pub fn process(db: &mut Db, ids: &[i64], uid: i64, ctx: &Ctx) -> Result<Value, OdooError> {
    orm::ensure_exist(db, W, ids, uid)?;
    let mut not_to_do = Vec::new();
    for w in ids {
        for l in db.one2many_ids(LINE, "backorder_confirmation_id", *w) {
            if !db.bool(LINE, l, "to_backorder") {
                if let Some(p) = db.m2o(LINE, l, "picking_id") {
                    not_to_do.push(p);
                }
            }
        }
    }
    let to_validate = validate_ids(ctx);
    if to_validate.is_empty() {
        return Ok(Value::Bool(true));
    }
    let mut c = ctx.clone();
    c.insert("skip_backorder".into(), Value::Bool(true));
    if !not_to_do.is_empty() {
        c.insert("picking_ids_not_to_backorder".into(), json!(not_to_do));
    }
    picking::button_validate(db, &to_validate, uid, &c)
}

/// `process_cancel_backorder()`.
pub fn process_cancel_backorder(
    db: &mut Db,
    ids: &[i64],
    uid: i64,
    ctx: &Ctx,
) -> Result<Value, OdooError> {
    orm::ensure_exist(db, W, ids, uid)?;
    let to_validate = validate_ids(ctx);
    if to_validate.is_empty() {
        return Ok(Value::Bool(true));
    }
    let picks: Vec<i64> = ids
        .iter()
        .flat_map(|w| id_list(db.value(W, *w, "pick_ids")))
        .collect();
    let mut c = ctx.clone();
    c.insert("skip_backorder".into(), Value::Bool(true));
    c.insert("picking_ids_not_to_backorder".into(), json!(picks));
    let _ = truthy;
    picking::button_validate(db, &to_validate, uid, &c)
}

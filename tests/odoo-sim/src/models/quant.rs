//! `stock.quant`: stock on hand per product/location/lot, and the inventory count flow.
//!
//! Mirrors `addons/stock/models/stock_quant.py` of 17.0/18.0/19.0:
//! - `create()` in inventory mode (`inventory_mode` in context): only the
//!   `_get_inventory_fields_create()` fields are allowed; the counted quantity is written on the
//!   existing quant of the same product+location(+lot) found by `_gather(strict=True)` (merge),
//!   or on a fresh empty quant; `user_id` is set to the current user. Assignments go through
//!   `Field.__set__`, which skips values equal to the cached one.
//! - `write()` in inventory mode: `_get_forbidden_fields_write()` (product, location, lot,
//!   package, owner) raise "Quant's editing is restricted" (silently ignored on quants in an
//!   inventory-usage location). This is what a second `load` of the same xid hits.
//! - `_compute_inventory_quantity_set` / `_compute_inventory_diff_quantity`: stored computes
//!   triggered by writes of `inventory_quantity` / `inventory_quantity_set` only (not by
//!   `quantity`), so a quant moved after counting becomes `is_outdated`.
//! - `action_apply_inventory()`: conflict wizard for outdated quants, tracking wizard (17/18) for
//!   tracked products without lot, else `_apply_inventory()` and `inventory_quantity_set =
//!   False`; returns None.
//! - `_apply_inventory()`: (18+: first marks unset quants as set) one move per quant via
//!   `_get_inventory_move_values` between the product's inventory-loss location and the quant
//!   location, `_action_done`, then `action_clear_inventory_quantity()`.
//! - `_update_available_quantity()`: adds to the first strict-gathered quant or creates one
//!   (negative quants appear in the Inventory adjustment location, as in Odoo).
//! - constraints `check_product_id`, `check_location_id`, `check_lot_id`.

use serde_json::{json, Map, Value};

use crate::db::{as_f64, float, truthy, Db, Record};
use crate::models::{location, move_, orm, product, users, Ctx};
use crate::rpc::errors::OdooError;

const Q: &str = "stock.quant";

/// Product UoM rounding of "Units" (`uom.product_uom_unit`).
pub const UNIT_ROUNDING: f64 = 0.01;

/// `float_compare(a, b, precision_rounding)`.
pub fn float_compare(a: f64, b: f64, rounding: f64) -> std::cmp::Ordering {
    let ra = (a / rounding).round();
    let rb = (b / rounding).round();
    ra.partial_cmp(&rb).unwrap_or(std::cmp::Ordering::Equal)
}

fn is_zero(v: f64) -> bool {
    float_compare(v, 0.0, UNIT_ROUNDING).is_eq()
}

/// `_is_inventory_mode()`: context flag (the simulated user has the stock user group).
pub fn is_inventory_mode(ctx: &Ctx) -> bool {
    ctx.get("inventory_mode").is_some_and(truthy)
}

const INVENTORY_FIELDS_CREATE: &[&str] = &[
    "product_id",
    "owner_id",
    "inventory_quantity",
    "inventory_quantity_auto_apply",
    "inventory_diff_quantity",
    "inventory_date",
    "user_id",
    "inventory_quantity_set",
    "is_outdated",
    "lot_id",
    "location_id",
    "package_id",
];

const FORBIDDEN_FIELDS_WRITE: &[&str] = &[
    "product_id",
    "location_id",
    "lot_id",
    "package_id",
    "owner_id",
];

/// Fields the simulator does not store but Odoo accepts (no-ops here).
const IGNORED_FIELDS: &[&str] = &["owner_id", "package_id", "inventory_date", "is_outdated"];

fn strip_ignored(vals: &Map<String, Value>) -> Map<String, Value> {
    vals.iter()
        .filter(|(k, _)| !IGNORED_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn id_value(v: Option<&Value>) -> Option<i64> {
    v.and_then(|v| match v {
        Value::Number(n) => n.as_i64().filter(|i| *i > 0),
        _ => None,
    })
}

/// `_gather(product, location, lot_id, strict=True)`: quants of exactly that key, oldest first.
pub fn gather(db: &Db, product: i64, location: i64, lot: Option<i64>) -> Vec<i64> {
    db.quants_by_key((Some(product), Some(location), lot))
        .to_vec()
}

/// `record.field = value` (`Field.__set__`): a no-op when the value is unchanged, else a write.
/// Returns true when it wrote.
pub fn assign(db: &mut Db, id: i64, field: &str, value: Value) -> Result<bool, OdooError> {
    let def = db.model(Q)?.field(field).cloned();
    let Some(def) = def else {
        return Err(OdooError::value_error(format!(
            "Invalid field '{field}' on model '{Q}'"
        )));
    };
    let new = db.coerce(Q, &def, &value)?;
    let old = db.value(Q, id, field).clone();
    let same = match (&old, &new) {
        (Value::Number(_), Value::Number(_)) => as_f64(&old) == as_f64(&new),
        (Value::Null | Value::Bool(false), Value::Null | Value::Bool(false)) => true,
        _ => old == new,
    };
    if same {
        return Ok(false);
    }
    let mut rec = Record::new();
    rec.insert(field.to_owned(), new);
    db.set(Q, id, rec.clone())?;
    after_write(db, id, &rec)?;
    Ok(true)
}

/// Stored computes triggered by a write (`_compute_inventory_quantity_set`,
/// `_compute_inventory_diff_quantity`).
pub fn after_write(db: &mut Db, id: i64, written: &Record) -> Result<(), OdooError> {
    if written.contains_key("inventory_quantity") && !written.contains_key("inventory_quantity_set")
    {
        db.set1(Q, id, "inventory_quantity_set", Value::Bool(true))?;
    }
    if (written.contains_key("inventory_quantity")
        || written.contains_key("inventory_quantity_set"))
        && !written.contains_key("inventory_diff_quantity")
    {
        let diff = if db.bool(Q, id, "inventory_quantity_set") {
            db.float(Q, id, "inventory_quantity") - db.float(Q, id, "quantity")
        } else {
            0.0
        };
        db.set1(Q, id, "inventory_diff_quantity", float(diff))?;
    }
    Ok(())
}

/// `check_product_id`, `check_location_id`, `check_lot_id`.
pub fn check_constraints(db: &Db, id: i64) -> Result<(), OdooError> {
    if let Some(p) = db.m2o(Q, id, "product_id") {
        if !product::is_storable(db, p) {
            return Err(OdooError::validation_error(
                "Quants cannot be created for consumables or services.",
            ));
        }
    }
    if let Some(l) = db.m2o(Q, id, "location_id") {
        if db.str("stock.location", l, "usage") == "view" {
            return Err(OdooError::validation_error(format!(
                "You cannot take products from or deliver products to a location of type \"view\" ({}).",
                db.str("stock.location", l, "name")
            )));
        }
    }
    if let Some(lot) = db.m2o(Q, id, "lot_id") {
        let lot_product = db.m2o("stock.lot", lot, "product_id");
        if lot_product.is_some() && lot_product != db.m2o(Q, id, "product_id") {
            return Err(OdooError::validation_error(format!(
                "The Lot/Serial number ({}) is linked to another product.",
                db.str("stock.lot", lot, "name")
            )));
        }
    }
    Ok(())
}

/// Plain create (the non-inventory branch of `create`).
fn create_plain(db: &mut Db, vals: &Map<String, Value>) -> Result<i64, OdooError> {
    let mut vals = strip_ignored(vals);
    if !vals.contains_key("inventory_quantity") {
        vals.entry("inventory_quantity_set")
            .or_insert(Value::Bool(false));
    }
    let rec = orm::convert_vals(db, Q, &vals)?;
    let id = db.insert(Q, rec.clone())?;
    after_write(db, id, &rec)?;
    orm::check_required(db, Q, id)?;
    check_constraints(db, id)?;
    Ok(id)
}

/// `stock.quant.create(vals_list)`, inventory mode included.
pub fn create(
    db: &mut Db,
    vals_list: &[Map<String, Value>],
    uid: i64,
    ctx: &Ctx,
) -> Result<Vec<i64>, OdooError> {
    let inventory_mode = is_inventory_mode(ctx);
    let mut out = Vec::with_capacity(vals_list.len());
    for vals in vals_list {
        let counted = vals.contains_key("inventory_quantity")
            || vals.contains_key("inventory_quantity_auto_apply");
        if !(inventory_mode && counted) {
            out.push(create_plain(db, vals)?);
            continue;
        }
        if vals
            .keys()
            .any(|k| !INVENTORY_FIELDS_CREATE.contains(&k.as_str()))
        {
            return Err(OdooError::user_error(
                "Quant's creation is restricted, you can't do this operation.",
            ));
        }
        let mut vals = vals.clone();
        let auto_apply = vals.contains_key("inventory_quantity_auto_apply");
        let a = vals.remove("inventory_quantity_auto_apply").filter(truthy);
        let b = vals.remove("inventory_quantity").filter(truthy);
        let qty = a.or(b).map(|v| as_f64(&v)).unwrap_or(0.0);
        let product = id_value(Some(
            vals.get("product_id")
                .ok_or_else(|| OdooError::key_error("product_id"))?,
        ));
        let location = id_value(Some(
            vals.get("location_id")
                .ok_or_else(|| OdooError::key_error("location_id"))?,
        ));
        let lot = id_value(vals.get("lot_id"));
        let import_file = ctx.get("import_file").is_some_and(truthy);
        let existing = match (product, location, import_file) {
            (Some(p), Some(l), false) => {
                let mut q = gather(db, p, l, lot);
                if lot.is_some() {
                    q.retain(|x| db.m2o(Q, *x, "lot_id").is_some());
                }
                q.first().copied()
            }
            _ => None,
        };
        let quant = match existing {
            Some(q) => q,
            None => create_plain(db, &vals)?,
        };
        if auto_apply {
            set_inventory_quantity_auto_apply(db, &[quant], qty, uid, ctx)?;
        } else {
            assign(db, quant, "inventory_quantity", float(qty))?;
            let user = vals.get("user_id").cloned().unwrap_or(Value::from(uid));
            assign(db, quant, "user_id", user)?;
        }
        out.push(quant);
    }
    Ok(out)
}

/// `_set_inventory_quantity` (inverse of `inventory_quantity_auto_apply`).
fn set_inventory_quantity_auto_apply(
    db: &mut Db,
    ids: &[i64],
    qty: f64,
    uid: i64,
    ctx: &Ctx,
) -> Result<(), OdooError> {
    if !is_inventory_mode(ctx) {
        return Ok(());
    }
    let mut to_apply = Vec::new();
    for q in ids {
        if db.float(Q, *q, "quantity") == qty {
            continue;
        }
        assign(db, *q, "inventory_quantity", float(qty))?;
        to_apply.push(*q);
    }
    if !to_apply.is_empty() {
        action_apply_inventory(db, &to_apply, uid, ctx)?;
    }
    Ok(())
}

/// `stock.quant.write(vals)`.
pub fn write(
    db: &mut Db,
    ids: &[i64],
    vals: &Map<String, Value>,
    uid: i64,
    ctx: &Ctx,
) -> Result<(), OdooError> {
    orm::ensure_exist(db, Q, ids, uid)?;
    if is_inventory_mode(ctx)
        && vals
            .keys()
            .any(|k| FORBIDDEN_FIELDS_WRITE.contains(&k.as_str()))
    {
        let in_inventory_location = ids.iter().any(|q| {
            db.m2o(Q, *q, "location_id")
                .is_some_and(|l| db.str("stock.location", l, "usage") == "inventory")
        });
        if in_inventory_location {
            // "Do nothing when user tries to modify manually a inventory loss"
            return Ok(());
        }
        return Err(OdooError::user_error(
            "Quant's editing is restricted, you can't do this operation.",
        ));
    }
    let mut vals = strip_ignored(vals);
    let auto_apply = vals.remove("inventory_quantity_auto_apply");
    if !vals.is_empty() {
        orm::base_write(db, Q, ids, &vals, uid)?;
    }
    if let Some(v) = auto_apply {
        set_inventory_quantity_auto_apply(db, ids, as_f64(&v), uid, ctx)?;
    }
    Ok(())
}

/// `is_outdated`: the quantity moved since the count was entered.
pub fn is_outdated(db: &Db, id: i64) -> bool {
    db.bool(Q, id, "inventory_quantity_set")
        && float_compare(
            db.float(Q, id, "inventory_quantity") - db.float(Q, id, "inventory_diff_quantity"),
            db.float(Q, id, "quantity"),
            UNIT_ROUNDING,
        )
        .is_ne()
}

fn wizard(name: &str, res_model: &str, ctx: Map<String, Value>) -> Value {
    json!({
        "name": name,
        "type": "ir.actions.act_window",
        "view_mode": "form",
        "views": [[false, "form"]],
        "res_model": res_model,
        "target": "new",
        "context": Value::Object(ctx),
    })
}

/// `action_apply_inventory()`: None when applied, or a wizard action.
pub fn action_apply_inventory(
    db: &mut Db,
    ids: &[i64],
    uid: i64,
    ctx: &Ctx,
) -> Result<Option<Value>, OdooError> {
    orm::ensure_exist(db, Q, ids, uid)?;
    let mut tracked_without_lot: Vec<i64> = Vec::new();
    if db.version.major() <= 18 {
        for q in ids {
            let (diff, inv, qty) = (
                db.float(Q, *q, "inventory_diff_quantity"),
                db.float(Q, *q, "inventory_quantity"),
                db.float(Q, *q, "quantity"),
            );
            if is_zero(diff) && is_zero(inv) && is_zero(qty) {
                continue;
            }
            let Some(p) = db.m2o(Q, *q, "product_id") else {
                continue;
            };
            let tracking = db.str("product.product", p, "tracking");
            if (tracking == "lot" || tracking == "serial")
                && db.m2o(Q, *q, "lot_id").is_none()
                && inv != qty
                && is_zero(qty)
            {
                tracked_without_lot.push(p);
            }
        }
    }
    let mut wctx = ctx.clone();
    wctx.insert("default_quant_ids".into(), json!(ids));
    let outdated: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|q| is_outdated(db, *q))
        .collect();
    if !outdated.is_empty() {
        wctx.insert("default_quant_to_fix_ids".into(), json!(outdated));
        return Ok(Some(wizard(
            "Conflict in Inventory Adjustment",
            "stock.inventory.conflict",
            wctx,
        )));
    }
    if !tracked_without_lot.is_empty() {
        wctx.insert("default_product_ids".into(), json!(tracked_without_lot));
        return Ok(Some(wizard(
            "Tracked Products in Inventory Adjustment",
            "stock.track.confirmation",
            wctx,
        )));
    }
    apply_inventory(db, ids, ctx)?;
    for q in ids {
        assign(db, *q, "inventory_quantity_set", Value::Bool(false))?;
    }
    Ok(None)
}

/// `_get_inventory_move_values` name: context `inventory_name`, else Confirmed/Updated, plus
/// ` (user)` when the quant is assigned to a user other than the superuser.
pub fn inventory_move_name(db: &Db, quant: i64, qty: f64, ctx: &Ctx) -> String {
    let mut name = match ctx.get("inventory_name").filter(|v| truthy(v)) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None if is_zero(qty) => "Product Quantity Confirmed".to_owned(),
        None => "Product Quantity Updated".to_owned(),
    };
    if let Some(user) = db
        .m2o(Q, quant, "user_id")
        .filter(|u| *u != users::SUPERUSER_ID)
    {
        name.push_str(&format!(" ({})", db.display_name("res.users", user)));
    }
    name
}

/// `_apply_inventory()`: one done inventory move per quant, then clear the counts.
pub fn apply_inventory(db: &mut Db, ids: &[i64], ctx: &Ctx) -> Result<(), OdooError> {
    if db.version.major() >= 18 {
        // "Consider the inventory_quantity as set => recompute the inventory_diff_quantity if needed"
        for q in ids {
            assign(db, *q, "inventory_quantity_set", Value::Bool(true))?;
        }
    }
    let loss = location::standard(db)?.inventory_adjustment;
    let mut moves = Vec::with_capacity(ids.len());
    for q in ids {
        let diff = db.float(Q, *q, "inventory_diff_quantity");
        let product = db
            .m2o(Q, *q, "product_id")
            .ok_or_else(|| OdooError::missing("product.product", &[], 2))?;
        let loc = db
            .m2o(Q, *q, "location_id")
            .ok_or_else(|| OdooError::missing("stock.location", &[], 2))?;
        let (qty, src, dest) = if float_compare(diff, 0.0, UNIT_ROUNDING).is_gt() {
            (diff, loss, loc)
        } else {
            (-diff, loc, loss)
        };
        let name = inventory_move_name(db, *q, qty, ctx);
        let m = move_::create_inventory_move(db, &name, product, qty, src, dest)?;
        moves.push((m, db.m2o(Q, *q, "lot_id")));
    }
    for (m, lot) in moves {
        move_::action_done(db, m, lot)?;
    }
    action_clear_inventory_quantity(db, ids)
}

/// `action_clear_inventory_quantity()`.
pub fn action_clear_inventory_quantity(db: &mut Db, ids: &[i64]) -> Result<(), OdooError> {
    for q in ids {
        let mut rec = Record::new();
        rec.insert("inventory_quantity".into(), float(0.0));
        rec.insert("inventory_diff_quantity".into(), float(0.0));
        rec.insert("inventory_quantity_set".into(), Value::Bool(false));
        rec.insert("user_id".into(), Value::Null);
        db.set(Q, *q, rec)?;
    }
    Ok(())
}

/// `_update_available_quantity(product, location, quantity, lot_id)`.
pub fn update_available_quantity(
    db: &mut Db,
    product: i64,
    location: i64,
    lot: Option<i64>,
    qty: f64,
) -> Result<(), OdooError> {
    let mut quants = gather(db, product, location, lot);
    if lot.is_some() && qty > 0.0 {
        quants.retain(|q| db.m2o(Q, *q, "lot_id").is_some());
    }
    if let Some(q) = quants.first().copied() {
        let new = db.float(Q, q, "quantity") + qty;
        db.set1(Q, q, "quantity", float(new))?;
        return Ok(());
    }
    let mut vals = Map::new();
    vals.insert("product_id".into(), product.into());
    vals.insert("location_id".into(), location.into());
    vals.insert(
        "lot_id".into(),
        lot.map(Value::from).unwrap_or(Value::Bool(false)),
    );
    vals.insert("quantity".into(), float(qty));
    create_plain(db, &vals)?;
    Ok(())
}

/// A quant's fields for `/__sim/state`.
pub fn dump(db: &Db, id: i64) -> Value {
    let m2o = |f: &str| {
        db.m2o(Q, id, f)
            .map(Value::from)
            .unwrap_or(Value::Bool(false))
    };
    json!({
        "id": id,
        "product_id": m2o("product_id"),
        "location_id": m2o("location_id"),
        "lot_id": m2o("lot_id"),
        "quantity": db.float(Q, id, "quantity"),
        "inventory_quantity": db.float(Q, id, "inventory_quantity"),
        "inventory_quantity_set": db.bool(Q, id, "inventory_quantity_set"),
        "inventory_diff_quantity": db.float(Q, id, "inventory_diff_quantity"),
    })
}

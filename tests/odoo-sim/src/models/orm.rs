//! The generic ORM methods every model has: `search`, `search_count`, `search_read`, `read`,
//! `create`, `write`, `unlink`, `fields_get`, with Odoo's error messages.
//!
//! Mirrors `odoo/models.py` BaseModel: `search` / `_search` (active_test, `_order`), `read` /
//! `_read_format` (missing ids skipped silently), `create` (NOT NULL and constraint checks),
//! `write` (MissingError for missing ids), `unlink`. Model-specific overrides live in the
//! sibling modules and are chosen in [`create`] / [`write`].

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::db::{as_f64, py_repr, truthy, Db, FieldType, Record};
use crate::domain::{self, Domain};
use crate::models::{backorder, location, lot, move_, move_line, picking, product, quant, Ctx};
use crate::rpc::errors::OdooError;

/// `active_test` from the context (default true).
pub fn active_test(ctx: &Ctx) -> bool {
    ctx.get("active_test").is_none_or(truthy)
}

/// Parse and validate a domain for `model`, adding `active = True` like `_search` does.
pub fn prepare_domain(
    db: &Db,
    model: &str,
    domain: &Value,
    ctx: &Ctx,
) -> Result<Domain, OdooError> {
    let d = domain::parse(domain)?;
    d.validate(db, model)?;
    let def = db.model(model)?;
    if def.has_active() && active_test(ctx) && !d.mentions_active() {
        let active = Domain::Leaf {
            path: vec!["active".into()],
            op: "=".into(),
            value: Value::Bool(true),
        };
        return Ok(Domain::And(vec![active, d]));
    }
    Ok(d)
}

fn order_error(order: &str) -> OdooError {
    OdooError::value_error(format!(
        "Invalid \"order\" specified ({order}). A valid \"order\" specification is a comma-separated list of valid field names (optionally followed by asc/desc for the direction)"
    ))
}

fn compare(a: &Value, b: &Value) -> Ordering {
    let unset = |v: &Value| matches!(v, Value::Null | Value::Bool(false));
    match (unset(a), unset(b)) {
        (true, true) => return Ordering::Equal,
        // PostgreSQL: NULLS LAST ascending.
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => as_f64(a).partial_cmp(&as_f64(b)).unwrap_or(Ordering::Equal),
    }
}

/// Sort ids by an `order` spec (`"name desc, id"`), defaulting to the model's `_order`.
pub fn sort_ids(
    db: &Db,
    model: &str,
    ids: &mut [i64],
    order: Option<&str>,
) -> Result<(), OdooError> {
    let def = db.model(model)?;
    let spec = order.filter(|o| !o.trim().is_empty()).unwrap_or(def.order);
    let mut keys: Vec<(String, bool)> = Vec::new();
    for part in spec.split(',') {
        let mut words = part.split_whitespace();
        let Some(field) = words.next() else {
            return Err(order_error(spec));
        };
        let desc = match words.next().map(str::to_lowercase).as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(_) => return Err(order_error(spec)),
        };
        if def.field(field).is_none() {
            return Err(order_error(spec));
        }
        keys.push((field.to_owned(), desc));
    }
    ids.sort_by(|a, b| {
        for (field, desc) in &keys {
            let ord = compare(db.value(model, *a, field), db.value(model, *b, field));
            let ord = if *desc { ord.reverse() } else { ord };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        a.cmp(b)
    });
    Ok(())
}

fn opt_usize(v: &Value, what: &str) -> Result<Option<usize>, OdooError> {
    match v {
        Value::Null | Value::Bool(false) => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .map(|u| Some(u as usize))
            .ok_or_else(|| OdooError::value_error(format!("Invalid {what}: {n}"))),
        other => Err(OdooError::type_error(format!(
            "'{}' object cannot be interpreted as an integer ({what})",
            py_type(other)
        ))),
    }
}

/// Python's type name of a JSON value.
pub fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// `search(domain, offset, limit, order)` → ids.
pub fn search(
    db: &Db,
    model: &str,
    domain: &Value,
    offset: &Value,
    limit: &Value,
    order: &Value,
    ctx: &Ctx,
) -> Result<Vec<i64>, OdooError> {
    let d = prepare_domain(db, model, domain, ctx)?;
    let mut ids: Vec<i64> = db
        .all_ids(model)
        .into_iter()
        .filter(|id| d.matches(db, model, *id))
        .collect();
    sort_ids(db, model, &mut ids, order.as_str())?;
    let offset = opt_usize(offset, "offset")?.unwrap_or(0);
    let limit = opt_usize(limit, "limit")?;
    let ids: Vec<i64> = ids
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    Ok(ids)
}

/// `search_count(domain, limit)`.
pub fn search_count(
    db: &Db,
    model: &str,
    domain: &Value,
    limit: &Value,
    ctx: &Ctx,
) -> Result<usize, OdooError> {
    let d = prepare_domain(db, model, domain, ctx)?;
    let n = db
        .all_ids(model)
        .into_iter()
        .filter(|id| d.matches(db, model, *id))
        .count();
    Ok(match opt_usize(limit, "limit")? {
        Some(l) => n.min(l),
        None => n,
    })
}

/// The field names a `fields` argument selects (all when empty/None); `id` always included.
pub fn field_list(db: &Db, model: &str, fields: &Value) -> Result<Vec<String>, OdooError> {
    let def = db.model(model)?;
    let wanted: Vec<String> = match fields {
        Value::Null | Value::Bool(false) => Vec::new(),
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect(),
        Value::String(s) => vec![s.clone()],
        other => {
            return Err(OdooError::type_error(format!(
                "'{}' object is not iterable",
                py_type(other)
            )))
        }
    };
    if wanted.is_empty() {
        return Ok(def.fields.iter().map(|f| f.name.to_owned()).collect());
    }
    let mut out = vec!["id".to_owned()];
    for w in wanted {
        if def.field(&w).is_none() {
            return Err(OdooError::value_error(format!(
                "Invalid field '{w}' on model '{model}'"
            )));
        }
        if !out.contains(&w) {
            out.push(w);
        }
    }
    Ok(out)
}

/// `read(ids, fields)`: one dict per existing id, in the order given; missing ids skipped.
pub fn read(db: &Db, model: &str, ids: &[i64], fields: &Value) -> Result<Vec<Value>, OdooError> {
    let names = field_list(db, model, fields)?;
    let def = db.model(model)?;
    let mut out = Vec::new();
    for id in ids {
        if !db.exists(model, *id) {
            continue;
        }
        let mut row = Map::new();
        for n in &names {
            if let Some(field) = def.field(n) {
                row.insert(n.clone(), db.read_value(model, *id, field));
            }
        }
        out.push(Value::Object(row));
    }
    Ok(out)
}

/// Normalise the `ids` argument of a record method (int or list of ints).
pub fn ids_arg(v: &Value) -> Result<Vec<i64>, OdooError> {
    match v {
        Value::Null | Value::Bool(false) => Ok(Vec::new()),
        Value::Number(n) => n.as_i64().map(|i| vec![i]).ok_or_else(|| bad_ids(v)),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_i64().ok_or_else(|| bad_ids(v)))
            .collect(),
        _ => Err(bad_ids(v)),
    }
}

fn bad_ids(v: &Value) -> OdooError {
    OdooError::value_error(format!("Invalid ids {}", py_repr(v)))
}

/// Raise MissingError if any id does not exist (what touching a deleted record does).
pub fn ensure_exist(db: &Db, model: &str, ids: &[i64], uid: i64) -> Result<(), OdooError> {
    let missing: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|i| !db.exists(model, *i))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(OdooError::missing(model, &missing, uid))
    }
}

/// Convert client values to stored values, rejecting unknown fields. One2many values are
/// left out (see [`split_one2many`]); many2many commands are resolved against `current`.
pub fn convert_vals(db: &Db, model: &str, vals: &Map<String, Value>) -> Result<Record, OdooError> {
    convert_vals_for(db, model, vals, None)
}

fn convert_vals_for(
    db: &Db,
    model: &str,
    vals: &Map<String, Value>,
    current: Option<i64>,
) -> Result<Record, OdooError> {
    let def = db.model(model)?;
    let mut out = Record::new();
    for (k, v) in vals {
        if k == "id" || k == "display_name" {
            continue;
        }
        let field = def.field(k).ok_or_else(|| {
            OdooError::value_error(format!("Invalid field '{k}' on model '{model}'"))
        })?;
        match field.ty {
            FieldType::One2many(..) => continue,
            FieldType::Many2many(_) => {
                let existing = current
                    .map(|id| crate::db::id_list(db.value(model, id, k)))
                    .unwrap_or_default();
                out.insert(k.clone(), Value::from(apply_m2m(existing, v)?));
            }
            _ => {
                out.insert(k.clone(), db.coerce(model, field, v)?);
            }
        }
    }
    Ok(out)
}

/// Resolve many2many commands (`[6, 0, ids]`, `[4, id]`, `[3, id]`, `[5]`, or a list of ids).
pub fn apply_m2m(mut ids: Vec<i64>, value: &Value) -> Result<Vec<i64>, OdooError> {
    let bad = || OdooError::value_error(format!("Wrong value for many2many: {}", py_repr(value)));
    let Value::Array(items) = value else {
        return if matches!(value, Value::Null | Value::Bool(false)) {
            Ok(Vec::new())
        } else {
            Err(bad())
        };
    };
    for item in items {
        match item {
            Value::Number(n) => {
                let id = n.as_i64().ok_or_else(bad)?;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            Value::Array(cmd) => {
                let code = cmd.first().and_then(Value::as_i64).ok_or_else(bad)?;
                let arg = cmd.get(1).and_then(Value::as_i64);
                match code {
                    4 => {
                        let id = arg.ok_or_else(bad)?;
                        if !ids.contains(&id) {
                            ids.push(id);
                        }
                    }
                    3 | 2 => {
                        let id = arg.ok_or_else(bad)?;
                        ids.retain(|i| *i != id);
                    }
                    5 => ids.clear(),
                    6 => {
                        ids = cmd
                            .get(2)
                            .and_then(Value::as_array)
                            .map(|a| a.iter().filter_map(Value::as_i64).collect())
                            .unwrap_or_default();
                    }
                    _ => return Err(bad()),
                }
            }
            _ => return Err(bad()),
        }
    }
    Ok(ids)
}

/// The one2many values of `vals` (field, comodel, inverse, commands), applied after the parent
/// record exists.
pub fn split_one2many(
    db: &Db,
    model: &str,
    vals: &Map<String, Value>,
) -> Result<Vec<(&'static str, &'static str, Value)>, OdooError> {
    let def = db.model(model)?;
    let mut out = Vec::new();
    for (k, v) in vals {
        if let Some(FieldType::One2many(co, inverse)) = def.field(k).map(|f| f.ty) {
            out.push((co, inverse, v.clone()));
        }
    }
    Ok(out)
}

/// Apply one2many commands of record `id`: `[0, 0, vals]` create, `[1, id, vals]` write,
/// `[2, id]` delete, `[3, id]` unlink from the parent, `[4, id]` link, `[6, 0, ids]` set.
pub fn apply_one2many(
    db: &mut Db,
    id: i64,
    commands: Vec<(&'static str, &'static str, Value)>,
    uid: i64,
    ctx: &Ctx,
) -> Result<(), OdooError> {
    for (co, inverse, value) in commands {
        let bad =
            || OdooError::value_error(format!("Wrong value for one2many: {}", py_repr(&value)));
        let Value::Array(items) = &value else {
            if matches!(value, Value::Null | Value::Bool(false)) {
                continue;
            }
            return Err(bad());
        };
        for item in items {
            let cmd = item.as_array().ok_or_else(bad)?;
            let code = cmd.first().and_then(Value::as_i64).ok_or_else(bad)?;
            let arg = cmd.get(1).and_then(Value::as_i64).unwrap_or(0);
            let link = |target: i64| {
                let mut m = Map::new();
                m.insert(inverse.to_owned(), Value::from(target));
                m
            };
            match code {
                0 => {
                    let mut vals = cmd
                        .get(2)
                        .and_then(Value::as_object)
                        .cloned()
                        .ok_or_else(bad)?;
                    vals.insert(inverse.to_owned(), Value::from(id));
                    create(db, co, &[vals], uid, ctx)?;
                }
                1 => {
                    let vals = cmd
                        .get(2)
                        .and_then(Value::as_object)
                        .cloned()
                        .ok_or_else(bad)?;
                    write(db, co, &[arg], &vals, uid, ctx)?;
                }
                2 => unlink(db, co, &[arg], uid)?,
                3 => {
                    let mut m = Map::new();
                    m.insert(inverse.to_owned(), Value::Bool(false));
                    write(db, co, &[arg], &m, uid, ctx)?;
                }
                4 => write(db, co, &[arg], &link(id), uid, ctx)?,
                5 | 6 => {
                    let keep: Vec<i64> = if code == 6 {
                        cmd.get(2)
                            .and_then(Value::as_array)
                            .map(|a| a.iter().filter_map(Value::as_i64).collect())
                            .unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    for old in db.one2many_ids(co, inverse, id) {
                        if !keep.contains(&old) {
                            let mut m = Map::new();
                            m.insert(inverse.to_owned(), Value::Bool(false));
                            write(db, co, &[old], &m, uid, ctx)?;
                        }
                    }
                    for k in keep {
                        write(db, co, &[k], &link(id), uid, ctx)?;
                    }
                }
                _ => return Err(bad()),
            }
        }
    }
    Ok(())
}

/// NOT NULL and FOREIGN KEY checks of a stored record (what PostgreSQL enforces).
pub fn check_required(db: &Db, model: &str, id: i64) -> Result<(), OdooError> {
    let def = db.model(model)?;
    for f in &def.fields {
        let v = db.value(model, id, f.name);
        if let FieldType::Many2one(co) = f.ty {
            if let Some(target) = crate::db::as_id(v) {
                if !db.exists(co, target) {
                    return Err(OdooError::foreign_key(
                        model,
                        def.description,
                        f.name,
                        co,
                        target,
                    ));
                }
            }
        }
        if f.required && v.is_null() {
            return Err(OdooError::not_null(
                model,
                def.description,
                f.string,
                f.name,
            ));
        }
    }
    Ok(())
}

/// Python-level constraints (`@api.constrains`) and SQL constraints of one record.
pub fn check_constraints(db: &Db, model: &str, id: i64) -> Result<(), OdooError> {
    match model {
        "product.product" => product::check_barcode_uniqueness(db, id),
        "stock.location" => location::check_barcode_unique(db, id),
        "stock.quant" => quant::check_constraints(db, id),
        "stock.lot" => lot::check_unique(db, id),
        "stock.picking" => picking::check_name_unique(db, id),
        "product.packaging" | "product.uom" => lot::check_packaging_barcode(db, model, id),
        _ => Ok(()),
    }
}

/// Plain `BaseModel.create` for one dict of client values.
pub fn base_create(db: &mut Db, model: &str, vals: &Map<String, Value>) -> Result<i64, OdooError> {
    base_create_ctx(db, model, vals, 2, &Ctx::new())
}

/// [`base_create`] with the caller's uid and context (used for one2many commands).
pub fn base_create_ctx(
    db: &mut Db,
    model: &str,
    vals: &Map<String, Value>,
    uid: i64,
    ctx: &Ctx,
) -> Result<i64, OdooError> {
    let rec = convert_vals(db, model, vals)?;
    let o2m = split_one2many(db, model, vals)?;
    let id = db.insert(model, rec)?;
    check_required(db, model, id)?;
    check_constraints(db, model, id)?;
    apply_one2many(db, id, o2m, uid, ctx)?;
    Ok(id)
}

/// Plain `BaseModel.write` of client values on existing records.
pub fn base_write(
    db: &mut Db,
    model: &str,
    ids: &[i64],
    vals: &Map<String, Value>,
    uid: i64,
) -> Result<(), OdooError> {
    ensure_exist(db, model, ids, uid)?;
    convert_vals(db, model, vals)?;
    let o2m = split_one2many(db, model, vals)?;
    for id in ids {
        let rec = convert_vals_for(db, model, vals, Some(*id))?;
        db.set(model, *id, rec.clone())?;
        if model == "stock.quant" {
            quant::after_write(db, *id, &rec)?;
        }
        check_required(db, model, *id)?;
        check_constraints(db, model, *id)?;
        apply_one2many(db, *id, o2m.clone(), uid, &Ctx::new())?;
    }
    Ok(())
}

/// `create(vals_list)` with model overrides; returns the ids in input order.
pub fn create(
    db: &mut Db,
    model: &str,
    vals_list: &[Map<String, Value>],
    uid: i64,
    ctx: &Ctx,
) -> Result<Vec<i64>, OdooError> {
    match model {
        "stock.quant" => quant::create(db, vals_list, uid, ctx),
        "stock.picking" => picking::create(db, vals_list, uid, ctx),
        "stock.move" => move_::create(db, vals_list, uid, ctx),
        "stock.move.line" => move_line::create(db, vals_list, uid, ctx),
        "stock.backorder.confirmation" => backorder::create(db, vals_list, uid, ctx),
        _ => vals_list
            .iter()
            .map(|v| base_create_ctx(db, model, v, uid, ctx))
            .collect(),
    }
}

/// `write(vals)` with model overrides.
pub fn write(
    db: &mut Db,
    model: &str,
    ids: &[i64],
    vals: &Map<String, Value>,
    uid: i64,
    ctx: &Ctx,
) -> Result<(), OdooError> {
    match model {
        "stock.quant" => quant::write(db, ids, vals, uid, ctx),
        "stock.picking" => picking::write(db, ids, vals, uid, ctx),
        "stock.move" => move_::write(db, ids, vals, uid, ctx),
        "stock.move.line" => move_line::write(db, ids, vals, uid, ctx),
        _ => base_write(db, model, ids, vals, uid),
    }
}

/// `unlink()`.
pub fn unlink(db: &mut Db, model: &str, ids: &[i64], uid: i64) -> Result<(), OdooError> {
    ensure_exist(db, model, ids, uid)?;
    if model == "stock.move.line" {
        return move_line::unlink(db, ids, uid);
    }
    if model == "stock.picking" {
        // unlink: cancel the moves, then delete them (draft/cancel only)
        let moves: Vec<i64> = ids
            .iter()
            .flat_map(|p| db.one2many_ids("stock.move", "picking_id", *p))
            .collect();
        move_::cancel(db, &moves)?;
        for m in moves {
            db.remove("stock.move", m);
        }
    }
    if model == "stock.move" {
        move_::check_unlink(db, ids)?;
        for m in ids {
            for l in db.one2many_ids("stock.move.line", "move_id", *m) {
                db.remove("stock.move.line", l);
            }
        }
    }
    for id in ids {
        db.remove(model, *id);
    }
    Ok(())
}

/// `fields_get()`: type, string, required and relation of each field.
pub fn fields_get(db: &Db, model: &str) -> Result<Value, OdooError> {
    let def = db.model(model)?;
    let mut out = Map::new();
    for f in &def.fields {
        let mut d = Map::new();
        let (ty, relation) = match f.ty {
            FieldType::Integer => ("integer", None),
            FieldType::Float => ("float", None),
            FieldType::Char => ("char", None),
            FieldType::Boolean => ("boolean", None),
            FieldType::Selection(opts) => {
                d.insert(
                    "selection".into(),
                    Value::Array(
                        opts.iter()
                            .map(|o| Value::Array(vec![(*o).into(), (*o).into()]))
                            .collect(),
                    ),
                );
                ("selection", None)
            }
            FieldType::Many2one(co) => ("many2one", Some(co)),
            FieldType::Datetime => ("datetime", None),
            FieldType::One2many(co, inverse) => {
                d.insert("relation_field".into(), inverse.into());
                ("one2many", Some(co))
            }
            FieldType::Many2many(co) => ("many2many", Some(co)),
        };
        d.insert("type".into(), ty.into());
        d.insert("string".into(), f.string.into());
        d.insert("required".into(), f.required.into());
        if let Some(r) = relation {
            d.insert("relation".into(), r.into());
        }
        out.insert(f.name.to_owned(), Value::Object(d));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::apply_m2m;
    use serde_json::json;

    #[test]
    fn many2many_commands_link_unlink_and_replace() {
        assert_eq!(
            apply_m2m(vec![], &json!([[4, 7], [4, 8], [4, 7]])).ok(),
            Some(vec![7, 8])
        );
        assert_eq!(apply_m2m(vec![7, 8], &json!([[3, 7]])).ok(), Some(vec![8]));
        assert_eq!(
            apply_m2m(vec![7], &json!([[6, 0, [1, 2]]])).ok(),
            Some(vec![1, 2])
        );
        assert_eq!(apply_m2m(vec![7], &json!([[5]])).ok(), Some(vec![]));
        assert_eq!(apply_m2m(vec![], &json!([3, 4])).ok(), Some(vec![3, 4]));
        assert!(apply_m2m(vec![], &json!("x")).is_err());
    }
}

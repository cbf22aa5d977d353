//! `load(fields, data)`: Odoo's idempotent import by external id.
//!
//! Mirrors `odoo/models.py` `BaseModel.load` / `_extract_records` / `_convert_records` /
//! `_load_records` and `odoo/addons/base/models/ir_fields.py` (`db_id_for`, `_str_to_*`):
//! - column paths are fixed like `fix_import_export_id_paths` (`a.id` → `a/.id`, `a:id` → `a/id`);
//!   an unknown top-level column raises KeyError (the only way `load` itself raises);
//! - `id` holds an external id (`__import__.` prefix when it has no dot): existing → the record
//!   is written (`_load_records_write`), missing → created (`_load_records_create`) and the xid
//!   registered (`_update_xmlids`); `.id` holds a database id; `field/.id` and `field/id`
//!   reference by database / external id, a plain relational column by name;
//! - conversion problems are logged as messages, the batch is flushed in one savepoint, and on
//!   failure retried row by row to report each row's error; any error message rolls the whole
//!   call back and answers `ids: false` (errors never raise);
//! - `stock.quant` overrides: `_load_records_create` defaults `location_id` to WH/Stock and (18+)
//!   forces `inventory_mode`, `_load_records_write` (18+) forces `inventory_mode`.

use serde_json::{json, Map, Value};

use crate::db::{py_repr, truthy, Db, FieldType};
use crate::models::{ir_model_data, location, orm, Ctx};
use crate::rpc::errors::{names, OdooError};

/// One converted row.
struct Row {
    xid: Option<String>,
    dbid: Option<Value>,
    vals: Map<String, Value>,
    index: usize,
}

fn info(index: usize) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("rows".into(), json!({"from": index, "to": index}));
    m.insert("record".into(), index.into());
    m
}

/// `fix_import_export_id_paths`.
fn fix_path(f: &str) -> Vec<String> {
    let mut out = String::new();
    let mut prev: Option<char> = None;
    for (i, c) in f.char_indices() {
        let next_is_id = f.get(i + 1..).is_some_and(|rest| rest.starts_with("id"));
        if (c == '.' || c == ':') && next_is_id && prev.is_some_and(|p| p != '/') {
            // `x.id` → `x/.id`, `x:id` → `x/id`
            out.push('/');
            if c == '.' {
                out.push('.');
            }
        } else {
            out.push(c);
        }
        prev = Some(c);
    }
    out.split('/').map(str::to_owned).collect()
}

/// Python `str()` of a cell.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) => n.to_string(),
        other => py_repr(other),
    }
}

fn is_empty_cell(v: &Value) -> bool {
    matches!(v, Value::Null | Value::Bool(false)) || v.as_str() == Some("")
}

/// A conversion error: message template with `%(field)s`, plus extra keys.
struct ConvError {
    warning: bool,
    message: String,
    extra: Map<String, Value>,
}

fn conv_err(message: String) -> ConvError {
    ConvError {
        warning: false,
        message,
        extra: Map::new(),
    }
}

fn moreinfo(comodel: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "moreinfo".into(),
        json!({
            "name": "Possible Values",
            "type": "ir.actions.act_window",
            "target": "new",
            "view_mode": "list,form",
            "views": [[false, "list"], [false, "form"]],
            "context": {"create": false},
            "help": "See all possible values",
            "res_model": comodel,
        }),
    );
    m
}

fn not_found(kind: &str, value: &Value, comodel: &str) -> ConvError {
    ConvError {
        warning: false,
        message: format!(
            "No matching record found for {kind} '{}' in field '%(field)s'",
            py_str(value)
        ),
        extra: moreinfo(comodel),
    }
}

/// Convert one cell of column `path` (`ir.fields.converter`). Ok((value, warnings)).
fn convert_cell(
    db: &Db,
    field: &crate::db::FieldDef,
    sub: Option<&str>,
    value: &Value,
    current_module: &str,
) -> Result<(Value, Vec<ConvError>), ConvError> {
    if is_empty_cell(value) {
        return Ok((Value::Bool(false), Vec::new()));
    }
    let mut warnings = Vec::new();
    if let FieldType::Many2one(co) = field.ty {
        let id = match sub {
            Some(".id") => {
                let id = match value {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => Some(s.trim().parse::<i64>().map_err(|_| {
                        conv_err(format!(
                            "Invalid database id '{}' for the field '%(field)s'",
                            py_str(value)
                        ))
                    })?),
                    _ => None,
                };
                id.filter(|i| db.exists(co, *i))
                    .ok_or_else(|| not_found("database id", value, co))?
            }
            Some("id") => {
                let xid = py_str(value);
                let (module, name) = ir_model_data::split(&xid, current_module);
                ir_model_data::lookup(db, &module, &name)
                    .filter(|x| x.model == co && x.record_exists)
                    .map(|x| x.res_id)
                    .ok_or_else(|| not_found("external id", value, co))?
            }
            None => {
                let name = py_str(value);
                let hits: Vec<i64> = db
                    .all_ids(co)
                    .into_iter()
                    .filter(|r| db.display_name(co, *r) == name || db.str(co, *r, "name") == name)
                    .collect();
                if hits.len() > 1 {
                    warnings.push(ConvError {
                        warning: true,
                        message: format!("Found multiple matches for value '{name}' in field '%(field)s' ({} matches)", hits.len()),
                        extra: Map::new(),
                    });
                }
                *hits.first().ok_or_else(|| not_found("name", value, co))?
            }
            Some(other) => return Err(conv_err(format!("Unknown sub-field '{other}'"))),
        };
        return Ok((Value::from(id), warnings));
    }
    if let Some(other) = sub {
        return Err(conv_err(format!("Unknown sub-field '{other}'")));
    }
    let v = match field.ty {
        FieldType::Float => match value {
            Value::Number(_) => value.clone(),
            _ => py_str(value)
                .trim()
                .parse::<f64>()
                .map(Value::from)
                .map_err(|_| {
                    conv_err(format!(
                        "'{}' does not seem to be a number for field '%(field)s'",
                        py_str(value)
                    ))
                })?,
        },
        FieldType::Integer => match value {
            Value::Number(n) if n.is_i64() => value.clone(),
            _ => py_str(value)
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| {
                    conv_err(format!(
                        "'{}' does not seem to be an integer for field '%(field)s'",
                        py_str(value)
                    ))
                })?,
        },
        FieldType::Boolean => match value {
            Value::Bool(_) | Value::Number(_) => Value::Bool(truthy(value)),
            _ => {
                let s = py_str(value).to_lowercase();
                if ["1", "true", "yes"].contains(&s.as_str()) {
                    Value::Bool(true)
                } else if ["0", "false", "no"].contains(&s.as_str()) {
                    Value::Bool(false)
                } else {
                    warnings.push(ConvError {
                        warning: true,
                        message: format!(
                            "Unknown value '{}' for boolean field '%(field)s', assuming 'yes'",
                            py_str(value)
                        ),
                        extra: Map::new(),
                    });
                    Value::Bool(true)
                }
            }
        },
        FieldType::Selection(opts) => {
            let s = py_str(value);
            let found = opts.iter().find(|o| o.eq_ignore_ascii_case(&s));
            Value::String(
                found
                    .ok_or_else(|| {
                        conv_err(format!(
                            "Value '{s}' not found in selection field '%(field)s'"
                        ))
                    })?
                    .to_string(),
            )
        }
        FieldType::Char | FieldType::Datetime => Value::String(py_str(value)),
        FieldType::Many2one(_) => Value::Bool(false),
        FieldType::One2many(..) | FieldType::Many2many(_) => {
            return Err(conv_err(
                "Importing one2many/many2many columns ('%(field)s') is not simulated".to_owned(),
            ))
        }
    };
    Ok((v, warnings))
}

fn message_for(err: ConvError, index: usize, field: &crate::db::FieldDef) -> Value {
    let mut m = info(index);
    m.insert(
        "type".into(),
        if err.warning { "warning" } else { "error" }.into(),
    );
    m.insert("field".into(), field.name.into());
    m.insert(
        "message".into(),
        err.message.replace("%(field)s", field.string).into(),
    );
    m.insert("field_name".into(), field.string.into());
    for (k, v) in err.extra {
        m.insert(k, v);
    }
    Value::Object(m)
}

/// The context `_load_records_create` / `_load_records_write` run with.
fn load_ctx(db: &Db, model: &str, ctx: &Ctx) -> Ctx {
    let mut c = ctx.clone();
    if model == "stock.quant" && db.version.major() >= 18 {
        c.insert("inventory_mode".into(), Value::Bool(true));
    }
    c
}

/// `_load_records`: write existing xids, create the rest, register xids. Ids in row order.
fn load_records(
    db: &mut Db,
    model: &str,
    rows: &[&Row],
    uid: i64,
    ctx: &Ctx,
    current_module: &str,
) -> Result<Vec<i64>, OdooError> {
    let lctx = load_ctx(db, model, ctx);
    let mut result: Vec<Option<i64>> = vec![None; rows.len()];
    let mut to_create: Vec<usize> = Vec::new();
    let mut to_register: Vec<(String, String, usize)> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let Some(xid) = &row.xid else {
            if let Some(dbid) = row.dbid.as_ref().and_then(Value::as_i64) {
                orm::write(db, model, &[dbid], &row.vals, uid, &lctx)?;
                result[i] = Some(dbid);
            } else {
                to_create.push(i);
            }
            continue;
        };
        let (module, name) = ir_model_data::split(xid, current_module);
        match ir_model_data::lookup(db, &module, &name) {
            Some(x) if x.model != model => {
                return Err(OdooError::validation_error(format!(
                    "For external id {module}.{name} when trying to create/update a record of model {model} found record of different model {} ({})",
                    x.model, x.id
                )));
            }
            Some(x) if x.record_exists => {
                orm::write(db, model, &[x.res_id], &row.vals, uid, &lctx)?;
                result[i] = Some(x.res_id);
                to_register.push((module, name, i));
            }
            Some(x) => {
                // dangling xid: unlink it and create the record anew
                db.remove("ir.model.data", x.id);
                to_create.push(i);
                to_register.push((module, name, i));
            }
            None => {
                to_create.push(i);
                to_register.push((module, name, i));
            }
        }
    }
    if !to_create.is_empty() {
        let mut vals_list: Vec<Map<String, Value>> =
            to_create.iter().map(|i| rows[*i].vals.clone()).collect();
        if model == "stock.quant" {
            let stock = location::standard(db)?.stock;
            for v in &mut vals_list {
                v.entry("location_id").or_insert(Value::from(stock));
            }
        }
        let ids = orm::create(db, model, &vals_list, uid, &lctx)?;
        for (i, id) in to_create.iter().zip(ids) {
            result[*i] = Some(id);
        }
    }
    for (module, name, i) in to_register {
        if let Some(id) = result[i] {
            ir_model_data::register(db, &module, &name, model, id)?;
        }
    }
    Ok(result.into_iter().flatten().collect())
}

fn python_class(name: &str) -> String {
    format!("<class '{}'>", name.rsplit('.').next().unwrap_or(name))
}

/// The message `load` logs for a row whose write/create raised.
fn row_error_message(e: &OdooError, index: usize) -> Value {
    let mut m = info(index);
    m.insert("type".into(), "error".into());
    if e.name == names::NOT_NULL {
        let label = e
            .arguments
            .first()
            .and_then(Value::as_str)
            .unwrap_or_default();
        let tech = e
            .arguments
            .get(1)
            .and_then(Value::as_str)
            .unwrap_or_default();
        m.insert(
            "message".into(),
            format!("Missing required value for the field '{label}' ({tech})").into(),
        );
        m.insert("field".into(), tech.into());
    } else if e.name == names::FOREIGN_KEY {
        m.insert(
            "message".into(),
            e.arguments
                .first()
                .cloned()
                .unwrap_or(Value::from(e.message.clone())),
        );
    } else if e.is_odoo_exception() {
        m.insert("message".into(), e.message.clone().into());
    } else {
        m.insert(
            "message".into(),
            format!(
                "Unknown error during import: {}: {}",
                python_class(&e.name),
                e.message
            )
            .into(),
        );
        m.insert("moreinfo".into(), "Resolve other errors first".into());
    }
    Value::Object(m)
}

/// `model.load(fields, data)` → `{"ids": [...] | false, "messages": [...], "nextrow": 0}`.
pub fn load(
    db: &mut Db,
    model: &str,
    fields: &Value,
    data: &Value,
    uid: i64,
    ctx: &Ctx,
) -> Result<Value, OdooError> {
    let def = db.model(model)?.clone();
    let fields: Vec<Vec<String>> = match fields {
        Value::Array(a) => a.iter().map(|f| fix_path(&py_str(f))).collect(),
        other => {
            return Err(OdooError::type_error(format!(
                "'{}' object is not iterable",
                orm::py_type(other)
            )))
        }
    };
    for path in &fields {
        let head = path[0].as_str();
        if head != "id" && head != ".id" && def.field(head).is_none() {
            return Err(OdooError::key_error(head));
        }
    }
    let rows_in: Vec<Vec<Value>> = match data {
        Value::Array(a) => a
            .iter()
            .map(|r| r.as_array().cloned().unwrap_or_default())
            .collect(),
        other => {
            return Err(OdooError::type_error(format!(
                "'{}' object is not iterable",
                orm::py_type(other)
            )))
        }
    };
    let current_module = ctx
        .get("module")
        .and_then(Value::as_str)
        .unwrap_or("__import__")
        .to_owned();
    let snapshot = db.savepoint();
    let mut messages: Vec<Value> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    for (index, cells) in rows_in.iter().enumerate() {
        let mut row = Row {
            xid: None,
            dbid: None,
            vals: Map::new(),
            index,
        };
        for (col, path) in fields.iter().enumerate() {
            let cell = cells.get(col).cloned().unwrap_or(Value::Null);
            match path[0].as_str() {
                "id" => {
                    if !is_empty_cell(&cell) {
                        row.xid = Some(py_str(&cell));
                    }
                }
                ".id" => {
                    if is_empty_cell(&cell) {
                        continue;
                    }
                    let id = cell
                        .as_i64()
                        .or_else(|| py_str(&cell).trim().parse::<i64>().ok());
                    match id.filter(|i| db.exists(model, *i)) {
                        Some(i) => row.dbid = Some(Value::from(i)),
                        None => {
                            let mut m = info(index);
                            m.insert("type".into(), "error".into());
                            m.insert("field".into(), ".id".into());
                            m.insert(
                                "message".into(),
                                format!("Unknown database identifier '{}'", py_str(&cell)).into(),
                            );
                            messages.push(Value::Object(m));
                        }
                    }
                }
                head => {
                    let Some(field) = def.field(head) else {
                        continue;
                    };
                    match convert_cell(
                        db,
                        field,
                        path.get(1).map(String::as_str),
                        &cell,
                        &current_module,
                    ) {
                        Ok((v, warnings)) => {
                            messages
                                .extend(warnings.into_iter().map(|w| message_for(w, index, field)));
                            row.vals.insert(head.to_owned(), v);
                        }
                        Err(e) => messages.push(message_for(e, index, field)),
                    }
                }
            }
        }
        rows.push(row);
    }

    // flush(): the whole batch in one savepoint, else row by row to collect the errors.
    let mut ids: Vec<i64> = Vec::new();
    let batch: Vec<&Row> = rows.iter().collect();
    let before_batch = db.savepoint();
    match load_records(db, model, &batch, uid, ctx, &current_module) {
        Ok(done) => ids.extend(done),
        Err(_) => {
            db.rollback_to(before_batch);
            let mut errors = 0usize;
            for (i, row) in rows.iter().enumerate() {
                let savepoint = db.savepoint();
                match load_records(db, model, &[row], uid, ctx, &current_module) {
                    Ok(done) => ids.extend(done),
                    Err(e) => {
                        db.rollback_to(savepoint);
                        messages.push(row_error_message(&e, row.index));
                        errors += 1;
                    }
                }
                if errors >= 10 && errors * 10 > i {
                    messages.push(json!({
                        "type": "warning",
                        "message": "Found more than 10 errors and more than one error per 10 records, interrupted to avoid showing too many errors."
                    }));
                    break;
                }
            }
        }
    }
    let failed = messages.iter().any(|m| m["type"] == "error");
    if failed {
        db.rollback_to(snapshot);
    }
    Ok(json!({
        "ids": if failed { Value::Bool(false) } else { json!(ids) },
        "messages": messages,
        "nextrow": 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::fix_path;

    #[test]
    fn id_paths_are_fixed_like_odoo() {
        assert_eq!(fix_path("product_id/.id"), vec!["product_id", ".id"]);
        assert_eq!(fix_path("product_id.id"), vec!["product_id", ".id"]);
        assert_eq!(fix_path("product_id:id"), vec!["product_id", "id"]);
        assert_eq!(fix_path("id"), vec!["id"]);
        assert_eq!(fix_path(".id"), vec![".id"]);
    }
}

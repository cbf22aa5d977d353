//! The model layer: method dispatch for `execute_kw` (`call_kw`), Python-style argument
//! binding, and the base data every database starts with. Everything here is plain functions
//! over [`Db`]; the RPC layer decides the transaction boundary.
//!
//! Mirrors `odoo/service/model.py` (`execute_cr`: "Object x doesn't exist"; 17
//! `check_method_name`, 18+ `get_public_method`: private and unknown methods) and `odoo/api.py`
//! `call_kw` (context popped from kwargs, `ids = args[0]` for record methods, `create` returning
//! an id for a dict and ids for a list).

pub mod backorder;
pub mod ir_model_data;
pub mod load;
pub mod location;
pub mod lot;
pub mod move_;
pub mod move_line;
pub mod orm;
pub mod picking;
pub mod product;
pub mod quant;
pub mod users;

use serde_json::{Map, Value};

use crate::db::Db;
use crate::rpc::errors::OdooError;
use crate::version::OdooVersion;

/// The call context (`kwargs["context"]`).
pub type Ctx = Map<String, Value>;

/// A fresh database: users, standard locations, nothing else.
pub fn base_db(version: OdooVersion, login: &str, user_name: &str) -> Result<Db, OdooError> {
    let mut db = Db::empty(version);
    users::seed(&mut db, login, user_name)?;
    location::seed(&mut db)?;
    picking::seed(&mut db)?;
    Ok(db)
}

/// One parameter of a method signature: name and whether it is required.
type Param = (&'static str, bool);

/// Bind positional and keyword arguments to a signature like Python does, with its TypeErrors.
pub fn bind(
    name: &str,
    params: &[Param],
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> Result<Vec<Value>, OdooError> {
    let required = params.iter().filter(|p| p.1).count();
    if args.len() > params.len() {
        let takes = if required == params.len() {
            format!("{}", params.len() + 1)
        } else {
            format!("from {} to {}", required + 1, params.len() + 1)
        };
        return Err(OdooError::type_error(format!(
            "{name}() takes {takes} positional arguments but {} were given",
            args.len() + 1
        )));
    }
    let mut out: Vec<Option<Value>> = params.iter().map(|_| None).collect();
    for (i, a) in args.iter().enumerate() {
        out[i] = Some(a.clone());
    }
    for (k, v) in kwargs {
        let Some(pos) = params.iter().position(|p| p.0 == k) else {
            return Err(OdooError::type_error(format!(
                "{name}() got an unexpected keyword argument '{k}'"
            )));
        };
        if out[pos].is_some() {
            return Err(OdooError::type_error(format!(
                "{name}() got multiple values for argument '{k}'"
            )));
        }
        out[pos] = Some(v.clone());
    }
    let missing: Vec<&str> = params
        .iter()
        .zip(&out)
        .filter(|(p, v)| p.1 && v.is_none())
        .map(|(p, _)| p.0)
        .collect();
    if !missing.is_empty() {
        let quoted: Vec<String> = missing.iter().map(|m| format!("'{m}'")).collect();
        // Python: 'a' / 'a' and 'b' / 'a', 'b', and 'c'
        let list = match quoted.as_slice() {
            [one] => one.clone(),
            [a, b] => format!("{a} and {b}"),
            [rest @ .., last] => format!("{}, and {last}", rest.join(", ")),
            [] => String::new(),
        };
        let plural = if missing.len() == 1 {
            "argument"
        } else {
            "arguments"
        };
        return Err(OdooError::type_error(format!(
            "{name}() missing {} required positional {plural}: {list}",
            missing.len()
        )));
    }
    Ok(out.into_iter().map(|v| v.unwrap_or(Value::Null)).collect())
}

const GENERIC_METHODS: &[&str] = &[
    "search",
    "search_read",
    "search_count",
    "read",
    "create",
    "write",
    "unlink",
    "load",
    "fields_get",
];

fn model_methods(model: &str) -> &'static [&'static str] {
    match model {
        "stock.quant" => &["action_apply_inventory", "action_clear_inventory_quantity"],
        "stock.picking" => &[
            "action_confirm",
            "action_assign",
            "button_validate",
            "action_cancel",
            "do_unreserve",
        ],
        "stock.backorder.confirmation" => &["process", "process_cancel_backorder"],
        _ => &[],
    }
}

fn is_private(method: &str) -> bool {
    method.starts_with('_') || method == "init"
}

/// Check that `model.method` may be called remotely (version-specific order and wording).
pub fn check_method(db: &Db, model: &str, method: &str) -> Result<(), OdooError> {
    let exists = |m: &str| GENERIC_METHODS.contains(&m) || model_methods(model).contains(&m);
    if db.version == OdooVersion::V17 {
        if is_private(method) {
            return Err(OdooError::access_error(format!(
                "Private methods (such as {method}) cannot be called remotely."
            )));
        }
        db.model(model)?;
        if !exists(method) {
            return Err(OdooError::attribute_error(format!(
                "The method '{method}' does not exist on the model '{model}'"
            )));
        }
    } else {
        db.model(model)?;
        if is_private(method) {
            return Err(OdooError::access_error(format!(
                "Private methods (such as '{model}.{method}') cannot be called remotely."
            )));
        }
        if !exists(method) {
            return Err(OdooError::attribute_error(format!(
                "The method '{model}.{method}' does not exist"
            )));
        }
    }
    Ok(())
}

fn record_ids(args: &mut Vec<Value>) -> Result<Vec<i64>, OdooError> {
    if args.is_empty() {
        return Err(OdooError::new(
            crate::rpc::errors::names::INDEX_ERROR,
            "list index out of range",
        ));
    }
    orm::ids_arg(&args.remove(0))
}

fn dicts(v: &Value) -> Result<(Vec<Map<String, Value>>, bool), OdooError> {
    match v {
        Value::Object(m) => Ok((vec![m.clone()], true)),
        Value::Array(a) => {
            let list = a
                .iter()
                .map(|x| {
                    x.as_object().cloned().ok_or_else(|| {
                        OdooError::type_error(format!(
                            "'{}' object is not a mapping",
                            orm::py_type(x)
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((list, false))
        }
        other => Err(OdooError::type_error(format!(
            "'{}' object is not a mapping",
            orm::py_type(other)
        ))),
    }
}

/// `call_kw(model, method, args, kwargs)` as user `uid`. `Ok(None)` = the method returned None.
pub fn call_kw(
    db: &mut Db,
    uid: i64,
    model: &str,
    method: &str,
    args: Vec<Value>,
    mut kwargs: Map<String, Value>,
) -> Result<Option<Value>, OdooError> {
    check_method(db, model, method)?;
    let ctx: Ctx = match kwargs.remove("context") {
        Some(Value::Object(c)) => c,
        Some(Value::Null) | Some(Value::Bool(false)) | None => Map::new(),
        Some(other) => {
            return Err(OdooError::type_error(format!(
                "'{}' object is not a mapping",
                orm::py_type(&other)
            )))
        }
    };
    let mut args = args;
    let some = |v: Value| Ok(Some(v));
    match method {
        "search" => {
            let a = bind(
                method,
                &[
                    ("domain", true),
                    ("offset", false),
                    ("limit", false),
                    ("order", false),
                ],
                &args,
                &kwargs,
            )?;
            some(serde_json::json!(orm::search(
                db, model, &a[0], &a[1], &a[2], &a[3], &ctx
            )?))
        }
        "search_count" => {
            let a = bind(
                method,
                &[("domain", true), ("limit", false)],
                &args,
                &kwargs,
            )?;
            some(Value::from(orm::search_count(
                db, model, &a[0], &a[1], &ctx,
            )?))
        }
        "search_read" => {
            let a = bind(
                method,
                &[
                    ("domain", false),
                    ("fields", false),
                    ("offset", false),
                    ("limit", false),
                    ("order", false),
                    ("load", false),
                ],
                &args,
                &kwargs,
            )?;
            let ids = orm::search(db, model, &a[0], &a[2], &a[3], &a[4], &ctx)?;
            some(Value::Array(orm::read(db, model, &ids, &a[1])?))
        }
        "read" => {
            let ids = record_ids(&mut args)?;
            let a = bind(
                method,
                &[("fields", false), ("load", false)],
                &args,
                &kwargs,
            )?;
            some(Value::Array(orm::read(db, model, &ids, &a[0])?))
        }
        "create" => {
            let a = bind(method, &[("vals_list", true)], &args, &kwargs)?;
            let (list, single) = dicts(&a[0])?;
            let ids = orm::create(db, model, &list, uid, &ctx)?;
            if single {
                some(
                    ids.first()
                        .copied()
                        .map(Value::from)
                        .unwrap_or(Value::Bool(false)),
                )
            } else {
                some(serde_json::json!(ids))
            }
        }
        "write" => {
            let ids = record_ids(&mut args)?;
            let a = bind(method, &[("vals", true)], &args, &kwargs)?;
            let vals = a[0].as_object().cloned().ok_or_else(|| {
                OdooError::type_error(format!("'{}' object is not a mapping", orm::py_type(&a[0])))
            })?;
            orm::write(db, model, &ids, &vals, uid, &ctx)?;
            some(Value::Bool(true))
        }
        "unlink" => {
            let ids = record_ids(&mut args)?;
            bind(method, &[], &args, &kwargs)?;
            orm::unlink(db, model, &ids, uid)?;
            some(Value::Bool(true))
        }
        "load" => {
            let a = bind(method, &[("fields", true), ("data", true)], &args, &kwargs)?;
            some(load::load(db, model, &a[0], &a[1], uid, &ctx)?)
        }
        "fields_get" => {
            bind(
                method,
                &[("allfields", false), ("attributes", false)],
                &args,
                &kwargs,
            )?;
            some(orm::fields_get(db, model)?)
        }
        "action_apply_inventory" => {
            let ids = record_ids(&mut args)?;
            let params: &[Param] = if db.version >= OdooVersion::V19 {
                &[("date", false)]
            } else {
                &[]
            };
            bind(method, params, &args, &kwargs)?;
            quant::action_apply_inventory(db, &ids, uid, &ctx)
        }
        "action_clear_inventory_quantity" => {
            let ids = record_ids(&mut args)?;
            bind(method, &[], &args, &kwargs)?;
            orm::ensure_exist(db, model, &ids, uid)?;
            quant::action_clear_inventory_quantity(db, &ids)?;
            Ok(None)
        }
        "action_confirm" | "action_assign" | "action_cancel" | "do_unreserve" => {
            let ids = record_ids(&mut args)?;
            bind(method, &[], &args, &kwargs)?;
            orm::ensure_exist(db, model, &ids, uid)?;
            match method {
                "action_confirm" => picking::action_confirm(db, &ids)?,
                "action_assign" => picking::action_assign(db, &ids)?,
                "action_cancel" => picking::action_cancel(db, &ids)?,
                _ => {
                    picking::do_unreserve(db, &ids)?;
                    return Ok(None);
                }
            }
            some(Value::Bool(true))
        }
        "button_validate" => {
            let ids = record_ids(&mut args)?;
            bind(method, &[], &args, &kwargs)?;
            some(picking::button_validate(db, &ids, uid, &ctx)?)
        }
        "process" | "process_cancel_backorder" => {
            let ids = record_ids(&mut args)?;
            bind(method, &[], &args, &kwargs)?;
            if method == "process" {
                some(backorder::process(db, &ids, uid, &ctx)?)
            } else {
                some(backorder::process_cancel_backorder(db, &ids, uid, &ctx)?)
            }
        }
        _ => Err(OdooError::attribute_error(format!(
            "The method '{model}.{method}' does not exist"
        ))),
    }
}

/// True when `model.method` is a record method (`ids` first) rather than an `@api.model` one.
pub fn is_record_method(method: &str) -> bool {
    !matches!(
        method,
        "search"
            | "search_read"
            | "search_count"
            | "create"
            | "load"
            | "fields_get"
            | "name_search"
    )
}

#[cfg(test)]
mod tests;

//! `ir.model.data`: external ids (`module.name` → model, res_id).
//!
//! Mirrors `odoo/addons/base/models/ir_model.py` IrModelData: `_lookup_xmlids` (a row whose
//! record is gone is reported as dangling) and `_update_xmlids` (create or repoint the xid).

use serde_json::{json, Map, Value};

use crate::db::Db;
use crate::rpc::errors::OdooError;

/// The model name.
pub const M: &str = "ir.model.data";

/// One external id row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlId {
    /// The `ir.model.data` id.
    pub id: i64,
    /// Model the xid points at.
    pub model: String,
    /// Target record id.
    pub res_id: i64,
    /// True when the target record still exists (`r_id` of `_lookup_xmlids`).
    pub record_exists: bool,
}

/// Split `module.name`; a name without a dot belongs to `default_module`.
pub fn split(xid: &str, default_module: &str) -> (String, String) {
    match xid.split_once('.') {
        Some((m, n)) => (m.to_owned(), n.to_owned()),
        None => (default_module.to_owned(), xid.to_owned()),
    }
}

/// `_lookup_xmlids` for one xid.
pub fn lookup(db: &Db, module: &str, name: &str) -> Option<XmlId> {
    db.xid_lookup(module, name).map(|i| {
        let model = db.str(M, i, "model");
        let res_id = db.value(M, i, "res_id").as_i64().unwrap_or_default();
        XmlId {
            id: i,
            record_exists: db.exists(&model, res_id),
            model,
            res_id,
        }
    })
}

/// `_update_xmlids` for one xid: create it, or repoint it at `model`/`res_id`.
pub fn register(
    db: &mut Db,
    module: &str,
    name: &str,
    model: &str,
    res_id: i64,
) -> Result<i64, OdooError> {
    if let Some(x) = lookup(db, module, name) {
        let mut vals = Map::new();
        vals.insert("model".into(), model.into());
        vals.insert("res_id".into(), res_id.into());
        db.set(M, x.id, vals)?;
        return Ok(x.id);
    }
    let vals = json!({"module": module, "name": name, "model": model, "res_id": res_id, "noupdate": false});
    let Value::Object(vals) = vals else {
        return Err(OdooError::value_error("bad xmlid values"));
    };
    db.insert(M, vals)
}

/// All xids as `{"module","name","model","res_id"}`, in id order (for `/__sim/state`).
pub fn dump(db: &Db) -> Vec<Value> {
    db.all_ids(M).into_iter().map(|i| dump_one(db, i)).collect()
}

/// One xid as `{"module","name","model","res_id"}` (a row of [`dump`]).
pub fn dump_one(db: &Db, i: i64) -> Value {
    json!({
        "module": db.str(M, i, "module"),
        "name": db.str(M, i, "name"),
        "model": db.str(M, i, "model"),
        "res_id": db.value(M, i, "res_id"),
    })
}

//! `res.users`: the superuser (id 1, `__system__`) and the integration user (id 2, the
//! `--login`), and the credential check used by `authenticate` and every `execute_kw`.
//!
//! Mirrors `odoo/addons/base/models/res_users.py`: `_login` / `check` (AccessDenied for an
//! empty password, unknown or inactive user, or a wrong password / API key).

use serde_json::{json, Value};

use crate::db::Db;
use crate::rpc::errors::OdooError;

/// `odoo.SUPERUSER_ID`.
pub const SUPERUSER_ID: i64 = 1;

const U: &str = "res.users";

/// Create `__system__` (1) and the integration user (2, named `name`).
pub fn seed(db: &mut Db, login: &str, name: &str) -> Result<i64, OdooError> {
    for vals in [
        json!({"login": "__system__", "name": "OdooBot", "active": false}),
        json!({"login": login, "name": name}),
    ] {
        let Value::Object(vals) = vals else { continue };
        db.insert(U, vals)?;
    }
    Ok(2)
}

/// uid of an active user with that login.
pub fn uid_for_login(db: &Db, login: &str) -> Option<i64> {
    db.all_ids(U)
        .into_iter()
        .find(|u| db.str(U, *u, "login") == login && db.bool(U, *u, "active"))
}

/// `res.users.check(db, uid, password)`: the key must be non-empty and belong to that user.
pub fn check(db: &Db, uid: i64, key: &str, api_key: &str) -> Result<(), OdooError> {
    if key.is_empty()
        || !db.exists(U, uid)
        || !db.bool(U, uid, "active")
        || uid == SUPERUSER_ID
        || key != api_key
    {
        return Err(OdooError::access_denied());
    }
    Ok(())
}

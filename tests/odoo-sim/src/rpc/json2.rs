//! Odoo 19's JSON-2 API: `POST /json/2/<model>/<method>` (absent in 17/18: plain 404).
//!
//! Mirrors `addons/rpc/controllers/json2.py` (19.0) and the `json2` dispatcher of
//! `odoo/http.py`:
//! - `Authorization: bearer <api key>` (`ir.http._auth_method_bearer`; else 401 with
//!   `WWW-Authenticate: bearer`), optional `X-Odoo-Database` (another name → 404);
//! - the body is a JSON object of named arguments plus `ids` and `context` (not JSON → 400);
//! - unknown model → 404 "the model 'x' does not exist"; unknown method → 404 with the
//!   AttributeError text; private method → 403; `ids` on an `@api.model` method → 422
//!   "cannot call m.x with ids"; arguments that do not bind → 422;
//! - the result is the bare JSON value (recordsets as id lists: `create` answers a list even
//!   for one dict; None → `null`);
//! - errors: `{"name","message","arguments","context","debug"}` with 422 (UserError,
//!   ValidationError), 404 (MissingError), 403 (AccessError, AccessDenied), 500 (anything else,
//!   SerializationFailure after Odoo's own retries);
//! - each call is its own transaction; injected faults apply as on `/jsonrpc`.

use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

use crate::faults::FaultAction;
use crate::models;
use crate::rpc::errors::{names, OdooError};
use crate::sim::Sim;

/// What the HTTP layer answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Json2Outcome {
    /// A JSON body with this status (and `WWW-Authenticate: bearer` on 401).
    Reply(StatusCode, Value),
    /// HTTP 500 page (injected fault).
    Http500,
    /// Close the connection without a response (injected fault).
    Drop,
}

fn werkzeug(status: StatusCode, class: &str, message: &str) -> Json2Outcome {
    let e = OdooError::new(&format!("werkzeug.exceptions.{class}"), message);
    Json2Outcome::Reply(status, body(&e))
}

fn body(e: &OdooError) -> Value {
    json!({
        "name": e.name,
        "message": e.message,
        "arguments": e.arguments,
        "context": {},
        "debug": e.debug_traceback(),
    })
}

/// The status of an exception raised by the method.
pub fn status_of(e: &OdooError) -> StatusCode {
    match e.name.as_str() {
        names::USER_ERROR | names::VALIDATION_ERROR => StatusCode::UNPROCESSABLE_ENTITY,
        names::MISSING_ERROR => StatusCode::NOT_FOUND,
        names::ACCESS_ERROR | names::ACCESS_DENIED => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The 404 of any other `/json/2` path or verb.
pub fn not_found() -> Json2Outcome {
    werkzeug(
        StatusCode::NOT_FOUND,
        "NotFound",
        "Did you mean POST /json/2/<model>/<method>?",
    )
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let h = headers.get("authorization")?.to_str().ok()?;
    let (scheme, key) = h.trim().split_once(char::is_whitespace)?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim().to_owned())
}

/// Serve one JSON-2 call.
pub async fn handle(
    sim: &Sim,
    headers: &HeaderMap,
    model: &str,
    method: &str,
    raw: &[u8],
) -> Json2Outcome {
    if let Some(db) = headers.get("x-odoo-database").and_then(|v| v.to_str().ok()) {
        if db != sim.config.db_name {
            return werkzeug(
                StatusCode::NOT_FOUND,
                "NotFound",
                "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.",
            );
        }
    }
    let Some(key) = bearer(headers) else {
        return unauthorized("Invalid apikey");
    };
    let uid = 2;
    if sim
        .read(|db| models::users::check(db, uid, &key, &sim.config.api_key))
        .is_err()
    {
        return unauthorized("Invalid apikey");
    }
    let parsed: Value = if raw.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        match serde_json::from_slice(raw) {
            Ok(v) => v,
            Err(e) => {
                return werkzeug(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("could not parse the body as json: {e}"),
                )
            }
        }
    };
    let Value::Object(mut kwargs) = parsed else {
        return werkzeug(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body must be a json object",
        );
    };
    sim.count_call(model, method);
    sim.count_json2();
    let (fault, latency) = sim.take_fault();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        FaultAction::None => dispatch(sim, uid, model, method, &mut kwargs),
        FaultAction::Http500 => Json2Outcome::Http500,
        FaultAction::SerializationFailure => {
            let e = OdooError::serialization_failure();
            Json2Outcome::Reply(StatusCode::INTERNAL_SERVER_ERROR, body(&e))
        }
        FaultAction::DropBeforeCommit => Json2Outcome::Drop,
        FaultAction::DropAfterCommit => {
            let r = dispatch(sim, uid, model, method, &mut kwargs);
            tracing::debug!(?r, "dropping the JSON-2 connection after the call");
            Json2Outcome::Drop
        }
    }
}

fn unauthorized(message: &str) -> Json2Outcome {
    werkzeug(StatusCode::UNAUTHORIZED, "Unauthorized", message)
}

fn dispatch(
    sim: &Sim,
    uid: i64,
    model: &str,
    method: &str,
    kwargs: &mut Map<String, Value>,
) -> Json2Outcome {
    // request.env[model]
    if sim.read(|db| db.model(model).is_err()) {
        return werkzeug(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the model '{model}' does not exist"),
        );
    }
    // get_public_method
    if let Err(e) = sim.read(|db| models::check_method(db, model, method)) {
        if e.name == names::ATTRIBUTE_ERROR {
            return werkzeug(StatusCode::NOT_FOUND, "NotFound", &e.message);
        }
        return Json2Outcome::Reply(status_of(&e), body(&e));
    }
    let ids = kwargs.remove("ids").unwrap_or(Value::Array(Vec::new()));
    let has_ids = match &ids {
        Value::Array(a) => !a.is_empty(),
        Value::Null | Value::Bool(false) => false,
        _ => true,
    };
    let record_method = models::is_record_method(method);
    if !record_method && has_ids {
        return werkzeug(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UnprocessableEntity",
            &format!("cannot call {model}.{method} with ids"),
        );
    }
    let args = if record_method { vec![ids] } else { Vec::new() };
    let single_create = method == "create" && kwargs.get("vals_list").is_some_and(Value::is_object);
    let result = sim.execute_kw(uid, model, method, args, kwargs.clone());
    match result {
        Ok(v) => {
            let v = v.unwrap_or(Value::Null);
            // a recordset comes back as its ids: `create` with one dict too
            let v = if single_create && v.is_number() {
                Value::Array(vec![v])
            } else {
                v
            };
            Json2Outcome::Reply(StatusCode::OK, v)
        }
        Err(e) if e.name == names::TYPE_ERROR && e.message.contains("argument") => {
            // inspect.signature(func).bind(...) → UnprocessableEntity(exc.args[0])
            let msg = e
                .message
                .split_once("() ")
                .map(|(_, rest)| rest.to_owned())
                .unwrap_or(e.message.clone());
            werkzeug(
                StatusCode::UNPROCESSABLE_ENTITY,
                "UnprocessableEntity",
                &msg,
            )
        }
        Err(e) => Json2Outcome::Reply(status_of(&e), body(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            "Bearer abc".parse().unwrap_or_else(|_| panic!()),
        );
        assert_eq!(bearer(&h), Some("abc".to_owned()));
        h.insert(
            "authorization",
            "Basic abc".parse().unwrap_or_else(|_| panic!()),
        );
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn odoo_exceptions_map_to_json2_statuses() {
        assert_eq!(
            status_of(&OdooError::user_error("x")),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            status_of(&OdooError::validation_error("x")),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            status_of(&OdooError::missing("m", &[1], 2)),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status_of(&OdooError::access_error("x")),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status_of(&OdooError::serialization_failure()),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}

//! Odoo 19's JSON-2 API (`POST /json/2/<model>/<method>`), as pure functions: turning the
//! relay's `execute_kw`-shaped calls (positional args + kwargs) into JSON-2's named-argument body,
//! and reading JSON-2 answers (bare JSON value on 200; `{name, message, ...}` with a status code
//! on errors: 401 bad key, 403 access, 404 unknown/missing, 409 lock, 422 user/validation error,
//! 500 anything else, see odoo-api-facts.md §2) into the same classified [`OdooError`]s.

use serde_json::{Map, Value};

use crate::odoo::errors::OdooError;

/// The named parameters of the ORM methods the relay calls, in positional order. Record methods
/// (`ids` first) are marked `true`.
fn signature(method: &str) -> Option<(bool, &'static [&'static str])> {
    Some(match method {
        "search_read" => (false, &["domain", "fields", "offset", "limit", "order"]),
        "search_count" => (false, &["domain", "limit"]),
        "search" => (false, &["domain", "offset", "limit", "order"]),
        "load" => (false, &["fields", "data"]),
        "create" => (false, &["vals_list"]),
        "fields_get" => (false, &["allfields", "attributes"]),
        "read" => (true, &["fields", "load"]),
        "write" => (true, &["vals"]),
        "unlink"
        | "button_validate"
        | "action_apply_inventory"
        | "action_confirm"
        | "action_assign"
        | "process"
        | "process_cancel_backorder" => (true, &[]),
        _ => return None,
    })
}

/// The JSON-2 body for a call given as `execute_kw` args and kwargs.
pub fn body(method: &str, args: &Value, kwargs: Option<&Value>) -> Result<Value, OdooError> {
    let unexpected = |detail: String| OdooError::Unexpected {
        call: format!("JSON-2 {method}"),
        detail,
    };
    let (record, names) = signature(method).ok_or_else(|| {
        unexpected("the relay has no JSON-2 mapping for this method (a relay bug)".into())
    })?;
    let positional: &[Value] = match args {
        Value::Array(list) => list,
        other => return Err(unexpected(format!("args must be a list, got {other}"))),
    };
    let mut out = Map::new();
    let mut rest = positional.iter();
    if record {
        let ids = rest
            .next()
            .ok_or_else(|| unexpected("a record method needs ids".into()))?;
        out.insert("ids".into(), ids.clone());
    }
    for (value, name) in rest.by_ref().zip(names.iter()) {
        out.insert((*name).to_string(), value.clone());
    }
    if rest.next().is_some() {
        return Err(unexpected(format!("too many positional args: {args}")));
    }
    if let Some(Value::Object(kw)) = kwargs {
        for (k, v) in kw {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(Value::Object(out))
}

/// Reads one JSON-2 HTTP answer. `null` becomes `None` (as an absent JSON-RPC `result`).
pub fn parse_response(status: u16, body: &[u8]) -> Result<Option<Value>, OdooError> {
    if status == 200 {
        let value: Value = serde_json::from_slice(body).map_err(|e| OdooError::NotJson {
            detail: e.to_string(),
            snippet: snippet(body),
        })?;
        return Ok((!value.is_null()).then_some(value));
    }
    let error: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let name = error
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| snippet(body), str::to_string);
    Err(match status {
        401 => OdooError::AccessDenied(format!("JSON-2 answered 401: {message}")),
        403 | 422 => OdooError::Fault { name, message },
        404 if name == "odoo.exceptions.MissingError" => OdooError::Fault { name, message },
        409 => OdooError::Serialization(message),
        500 if name.contains("SerializationFailure") || name.contains("LockNotAvailable") => {
            OdooError::Serialization(message)
        }
        _ => OdooError::Http {
            status,
            body: if name.is_empty() {
                message
            } else {
                format!("{name}: {message}")
            },
        },
    })
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odoo::errors::Class;
    use serde_json::json;

    #[test]
    fn record_methods_take_ids_and_model_methods_name_their_arguments() {
        assert_eq!(
            body(
                "button_validate",
                &json!([[7]]),
                Some(&json!({"context": {"skip_backorder": true}}))
            )
            .expect("body"),
            json!({"ids": [7], "context": {"skip_backorder": true}})
        );
        assert_eq!(
            body(
                "search_read",
                &json!([[["barcode", "in", ["A"]]]]),
                Some(&json!({"fields": ["id", "barcode"]}))
            )
            .expect("body"),
            json!({"domain": [["barcode", "in", ["A"]]], "fields": ["id", "barcode"]})
        );
        assert_eq!(
            body("load", &json!([["id", "quantity"], [["x.y", 1]]]), None).expect("body"),
            json!({"fields": ["id", "quantity"], "data": [["x.y", 1]]})
        );
        assert_eq!(
            body("write", &json!([[1, 2], {"shipping_weight": 3.5}]), None).expect("body"),
            json!({"ids": [1, 2], "vals": {"shipping_weight": 3.5}})
        );
        assert!(body("frobnicate", &json!([]), None).is_err());
    }

    #[test]
    fn json2_statuses_map_to_the_same_classes_as_jsonrpc_faults() {
        let err = |status, name: &str| {
            parse_response(
                status,
                json!({"name": name, "message": "m", "arguments": [], "context": {}, "debug": ""})
                    .to_string()
                    .as_bytes(),
            )
            .expect_err("error")
        };
        assert_eq!(
            err(422, "odoo.exceptions.UserError").class(),
            Class::Permanent
        );
        assert_eq!(
            err(403, "odoo.exceptions.AccessError").class(),
            Class::Permanent
        );
        assert_eq!(
            err(404, "odoo.exceptions.MissingError").class(),
            Class::Permanent
        );
        assert!(err(401, "werkzeug.exceptions.Unauthorized").needs_login());
        assert_eq!(
            err(409, "odoo.exceptions.LockError").class(),
            Class::Transient { ambiguous: false }
        );
        assert_eq!(
            err(500, "psycopg2.errors.SerializationFailure").class(),
            Class::Transient { ambiguous: false }
        );
        assert_eq!(
            err(500, "builtins.KeyError").class(),
            Class::Transient { ambiguous: true }
        );
        assert_eq!(
            err(404, "werkzeug.exceptions.NotFound").class(),
            Class::Alarm
        );
    }

    #[test]
    fn a_null_answer_is_none_like_an_absent_jsonrpc_result() {
        assert_eq!(parse_response(200, b"null"), Ok(None));
        assert_eq!(parse_response(200, b"true"), Ok(Some(json!(true))));
    }
}

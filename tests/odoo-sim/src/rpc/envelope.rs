//! The JSON-RPC 2.0 envelope of `POST /jsonrpc`: request parsing and response building.
//!
//! Mirrors `odoo/http.py` `JsonRPCDispatcher`: the body must be a JSON object (else HTTP 400
//! text/plain "Invalid JSON data" / "Invalid JSON-RPC data"), the `method` member is ignored,
//! `id` is echoed; `_response` puts `result` only when it is not None; `handle_error` answers
//! `{"code": 200 (0 in 19), "message": "Odoo Server Error", "data": serialize_exception(e)}`.

use serde_json::{json, Map, Value};

use crate::rpc::errors::OdooError;
use crate::version::OdooVersion;

/// A request body Odoo refuses before dispatch (HTTP 400, text/plain).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON at all.
    #[error("Invalid JSON data")]
    InvalidJson,
    /// JSON, but not an object.
    #[error("Invalid JSON-RPC data")]
    InvalidJsonRpc,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcRequest {
    /// `id`, echoed in the response (`null` when absent).
    pub id: Value,
    /// `params` (an object; `{}` when absent).
    pub params: Map<String, Value>,
}

/// Parse a request body.
pub fn parse(body: &[u8]) -> Result<RpcRequest, EnvelopeError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| EnvelopeError::InvalidJson)?;
    let Value::Object(obj) = v else {
        return Err(EnvelopeError::InvalidJsonRpc);
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    let params = match obj.get("params") {
        Some(Value::Object(p)) => p.clone(),
        None | Some(Value::Null) => Map::new(),
        // dict(<list>) raises inside dispatch: a non-object params is not JSON-RPC data here.
        Some(_) => return Err(EnvelopeError::InvalidJsonRpc),
    };
    Ok(RpcRequest { id, params })
}

/// A success envelope; `result` absent when the method returned None.
pub fn success(id: &Value, result: Option<Value>) -> Value {
    let mut m = Map::new();
    m.insert("jsonrpc".into(), "2.0".into());
    m.insert("id".into(), id.clone());
    if let Some(r) = result {
        if !r.is_null() {
            m.insert("result".into(), r);
        }
    }
    Value::Object(m)
}

/// An error envelope.
pub fn error(id: &Value, err: &OdooError, version: OdooVersion) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": version.jsonrpc_error_code(),
            "message": "Odoo Server Error",
            "data": err.to_data(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_none_result_leaves_the_result_key_out() {
        let v = success(&json!(7), None);
        assert_eq!(v, json!({"jsonrpc": "2.0", "id": 7}));
        assert!(v.get("result").is_none());
    }

    #[test]
    fn false_and_empty_results_are_kept() {
        assert_eq!(
            success(&json!(1), Some(json!(false)))["result"],
            json!(false)
        );
        assert_eq!(success(&json!(1), Some(json!([])))["result"], json!([]));
    }

    #[test]
    fn bodies_that_are_not_objects_are_refused_like_odoo() {
        assert_eq!(parse(b"{nope"), Err(EnvelopeError::InvalidJson));
        assert_eq!(parse(b"[1,2]"), Err(EnvelopeError::InvalidJsonRpc));
        assert!(parse(br#"{"jsonrpc":"2.0","id":3,"params":{}}"#).is_ok());
    }

    #[test]
    fn error_code_follows_the_version() {
        let e = OdooError::user_error("x");
        assert_eq!(error(&json!(1), &e, OdooVersion::V17)["error"]["code"], 200);
        assert_eq!(error(&json!(1), &e, OdooVersion::V19)["error"]["code"], 0);
    }
}

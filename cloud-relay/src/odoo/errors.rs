//! Odoo call failures and their classification: transient (retry the same chunk with backoff),
//! permanent (isolate and dead-letter the offending event) or alarm (configuration: retried with
//! backoff, logged at ERROR because an operator must act).
//!
//! Owns [`parse_rpc_response`], the pure reading of a `/jsonrpc` HTTP answer into a result or a
//! classified [`OdooError`], so every Odoo-shaped answer can be unit-tested without a socket.

use serde_json::Value;

/// What the pusher does with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Retry later; `ambiguous` = the call may have been applied (timeout, dropped connection,
    /// 5xx, garbled answer), so the next attempt starts with the in-doubt check.
    Transient { ambiguous: bool },
    /// The call was refused because of the data: isolate and dead-letter.
    Permanent,
    /// Odoo or the relay is misconfigured (credentials, URL): retry with backoff, log at ERROR.
    Alarm,
}

/// A failed Odoo call.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum OdooError {
    #[error("cannot connect to Odoo: {0} (is Odoo running and odoo.url right?)")]
    Unreachable(String),
    #[error("Odoo did not answer within odoo.timeout_secs ({0}); the call may have been applied")]
    Timeout(String),
    #[error(
        "the connection to Odoo broke before the answer ({0}); the call may have been applied"
    )]
    Dropped(String),
    #[error("Odoo answered HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("Odoo's answer is not JSON-RPC ({detail}): {snippet}")]
    NotJson { detail: String, snippet: String },
    #[error("Odoo could not serialize concurrent updates ({0}); the call was rolled back and is retried")]
    Serialization(String),
    #[error("Odoo rejected the credentials ({0}): the API key in odoo.api_key_file is wrong or expired, or the user is inactive")]
    AccessDenied(String),
    #[error("Odoo session expired ({0})")]
    SessionExpired(String),
    #[error("Odoo refused the call: {name}: {message}")]
    Fault { name: String, message: String },
    #[error("unexpected answer from Odoo to {call}: {detail}")]
    Unexpected { call: String, detail: String },
}

impl OdooError {
    /// How the pusher handles this failure.
    pub fn class(&self) -> Class {
        match self {
            OdooError::Unreachable(_) | OdooError::Serialization(_) => {
                Class::Transient { ambiguous: false }
            }
            OdooError::Timeout(_) | OdooError::Dropped(_) | OdooError::NotJson { .. } => {
                Class::Transient { ambiguous: true }
            }
            OdooError::Http { status, .. } if *status >= 500 => {
                Class::Transient { ambiguous: true }
            }
            OdooError::Http { .. }
            | OdooError::AccessDenied(_)
            | OdooError::SessionExpired(_)
            | OdooError::Unexpected { .. } => Class::Alarm,
            OdooError::Fault { .. } => Class::Permanent,
        }
    }

    /// The credentials were refused: authenticate again (once) before giving up.
    pub fn needs_login(&self) -> bool {
        matches!(
            self,
            OdooError::AccessDenied(_) | OdooError::SessionExpired(_)
        )
    }

    /// Classifies a transport error from reqwest.
    pub fn from_transport(e: &reqwest::Error) -> OdooError {
        let detail = error_chain(e);
        if e.is_connect() {
            OdooError::Unreachable(detail)
        } else if e.is_timeout() {
            OdooError::Timeout(detail)
        } else {
            OdooError::Dropped(detail)
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Exception names that mean "the data was refused" (dead-letter the event).
const PERMANENT_NAMES: &[&str] = &[
    "odoo.exceptions.UserError",
    "odoo.exceptions.ValidationError",
    "odoo.exceptions.AccessError",
    "odoo.exceptions.MissingError",
    "odoo.exceptions.RedirectWarning",
    "builtins.AttributeError",
    "builtins.ValueError",
    "builtins.TypeError",
    "builtins.KeyError",
];

/// Exception names of database conflicts Odoo already retried; the call was rolled back.
const RETRYABLE_NAMES: &[&str] = &[
    "psycopg2.errors.SerializationFailure",
    "psycopg2.errors.LockNotAvailable",
    "psycopg2.errors.DeadlockDetected",
    "psycopg2.extensions.TransactionRollbackError",
    "psycopg2.OperationalError",
];

/// Reads one `/jsonrpc` HTTP answer: `Ok(Some(result))`, `Ok(None)` when the `result` key is
/// absent (the method returned None), or the classified error.
pub fn parse_rpc_response(status: u16, body: &[u8]) -> Result<Option<Value>, OdooError> {
    if status >= 300 {
        return Err(OdooError::Http {
            status,
            body: snippet(body),
        });
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| OdooError::NotJson {
        detail: e.to_string(),
        snippet: snippet(body),
    })?;
    let Value::Object(mut envelope) = value else {
        return Err(OdooError::NotJson {
            detail: "not a JSON object".into(),
            snippet: snippet(body),
        });
    };
    if let Some(error) = envelope.remove("error") {
        return Err(classify_fault(&error));
    }
    Ok(envelope.remove("result"))
}

/// Turns a JSON-RPC `error` member into an [`OdooError`].
pub fn classify_fault(error: &Value) -> OdooError {
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    let data = error.get("data");
    let name = data
        .and_then(|d| d.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let message = data
        .and_then(|d| d.get("message"))
        .and_then(Value::as_str)
        .or_else(|| error.get("message").and_then(Value::as_str))
        .unwrap_or("no message")
        .to_string();
    if name == "odoo.exceptions.AccessDenied" {
        return OdooError::AccessDenied(message);
    }
    if code == 100 || name.ends_with("SessionExpiredException") {
        return OdooError::SessionExpired(message);
    }
    if RETRYABLE_NAMES.contains(&name.as_str()) {
        return OdooError::Serialization(message);
    }
    if code == 404 || name.starts_with("werkzeug.exceptions.") {
        return OdooError::Http {
            status: if code == 0 { 400 } else { code as u16 },
            body: format!("{name}: {message}"),
        };
    }
    if name.is_empty() {
        return OdooError::Unexpected {
            call: "jsonrpc".into(),
            detail: format!("error without data.name: {error}"),
        };
    }
    if !PERMANENT_NAMES.contains(&name.as_str()) {
        // An exception we do not know: Odoo raised it while handling this data, so it is treated
        // like a business error (isolated and dead-lettered with Odoo's message), not retried.
        tracing::debug!(%name, "unknown Odoo exception name, treated as permanent");
    }
    OdooError::Fault { name, message }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(code: i64, name: &str, message: &str) -> Vec<u8> {
        serde_json::json!({"jsonrpc":"2.0","id":7,"error":{"code":code,"message":"Odoo Server Error",
            "data":{"name":name,"debug":"Traceback (most recent call last):\n...","message":message,
            "arguments":[message],"context":{}}}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_result_is_returned_as_is() {
        let body = br#"{"jsonrpc":"2.0","id":7,"result":{"server_version":"17.0","server_version_info":[17,0,0,"final",0,""],"server_serie":"17.0","protocol_version":1}}"#;
        let value = parse_rpc_response(200, body).expect("ok").expect("some");
        assert_eq!(value["server_serie"], "17.0");
    }

    #[test]
    fn an_absent_result_key_means_the_method_returned_none() {
        let body = br#"{"jsonrpc":"2.0","id":7}"#;
        assert_eq!(parse_rpc_response(200, body), Ok(None));
    }

    #[test]
    fn authenticate_answering_false_is_a_result_not_an_error() {
        let body = br#"{"jsonrpc":"2.0","id":1,"result":false}"#;
        assert_eq!(parse_rpc_response(200, body), Ok(Some(Value::Bool(false))));
    }

    #[test]
    fn a_user_error_is_permanent_and_keeps_odoos_message() {
        let err = parse_rpc_response(
            200,
            &fault(
                200,
                "odoo.exceptions.UserError",
                "You need to supply a Lot/Serial Number for product: Widget",
            ),
        )
        .expect_err("fault");
        assert_eq!(err.class(), Class::Permanent);
        assert!(
            err.to_string()
                .contains("You need to supply a Lot/Serial Number"),
            "{err}"
        );
    }

    #[test]
    fn validation_access_and_missing_errors_and_unknown_methods_are_permanent() {
        for (code, name, message) in [
            (200, "odoo.exceptions.ValidationError", "constraint"),
            (0, "odoo.exceptions.AccessError", "Private methods (such as _x) cannot be called remotely."),
            (200, "odoo.exceptions.MissingError", "Record does not exist or has been deleted.\n(Record: stock.picking(999,), User: 2)"),
            (200, "odoo.exceptions.UserError", "Object foo.bar doesn't exist"),
            (200, "builtins.AttributeError", "The method 'x' does not exist on the model 'm'"),
        ] {
            let err = parse_rpc_response(200, &fault(code, name, message)).expect_err("fault");
            assert_eq!(err.class(), Class::Permanent, "{name}");
        }
    }

    #[test]
    fn a_serialization_failure_is_transient_and_not_ambiguous() {
        let err = parse_rpc_response(
            200,
            &fault(
                200,
                "psycopg2.errors.SerializationFailure",
                "could not serialize access due to concurrent update",
            ),
        )
        .expect_err("fault");
        assert_eq!(err.class(), Class::Transient { ambiguous: false });
    }

    #[test]
    fn access_denied_asks_for_a_new_login_and_is_an_alarm() {
        let err = parse_rpc_response(
            200,
            &fault(0, "odoo.exceptions.AccessDenied", "Access Denied"),
        )
        .expect_err("fault");
        assert!(err.needs_login());
        assert_eq!(err.class(), Class::Alarm);
    }

    #[test]
    fn an_expired_session_asks_for_a_new_login() {
        let body = br#"{"jsonrpc":"2.0","id":3,"error":{"code":100,"message":"Odoo Session Expired","data":{"name":"odoo.http.SessionExpiredException","message":"Session expired"}}}"#;
        assert!(parse_rpc_response(200, body)
            .expect_err("fault")
            .needs_login());
    }

    #[test]
    fn http_5xx_and_html_answers_are_transient_and_ambiguous() {
        let err = parse_rpc_response(502, b"<html>Bad Gateway</html>").expect_err("5xx");
        assert_eq!(err.class(), Class::Transient { ambiguous: true });
        let err = parse_rpc_response(200, b"<html>maintenance</html>").expect_err("html");
        assert_eq!(err.class(), Class::Transient { ambiguous: true });
    }

    #[test]
    fn http_404_and_400_are_configuration_alarms() {
        assert_eq!(
            parse_rpc_response(404, b"Not Found")
                .expect_err("404")
                .class(),
            Class::Alarm
        );
        assert_eq!(
            parse_rpc_response(400, b"Invalid JSON data")
                .expect_err("400")
                .class(),
            Class::Alarm
        );
    }
}

//! Odoo's server-side exceptions as the simulator raises them, and their JSON-RPC serialisation.
//!
//! Mirrors `odoo/http.py` `serialize_exception` (name = `module.ClassName`, message, arguments,
//! context, debug) and `odoo/exceptions.py` (UserError, ValidationError, MissingError,
//! AccessDenied, AccessError), plus the Python built-ins and psycopg2 errors that reach the client
//! unconverted (AttributeError, TypeError, ValueError, KeyError, SerializationFailure).

use serde_json::{json, Map, Value};

/// One exception raised while serving a call; always answered with HTTP 200 and an error envelope.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct OdooError {
    /// Fully qualified Python class, e.g. `odoo.exceptions.UserError`.
    pub name: String,
    /// `str(exception)`, what Odoo shows the user.
    pub message: String,
    /// `exception.args`.
    pub arguments: Vec<Value>,
}

/// Class names, spelled exactly as `serialize_exception` does.
pub mod names {
    /// `odoo.exceptions.UserError`
    pub const USER_ERROR: &str = "odoo.exceptions.UserError";
    /// `odoo.exceptions.ValidationError`
    pub const VALIDATION_ERROR: &str = "odoo.exceptions.ValidationError";
    /// `odoo.exceptions.MissingError`
    pub const MISSING_ERROR: &str = "odoo.exceptions.MissingError";
    /// `odoo.exceptions.AccessDenied`
    pub const ACCESS_DENIED: &str = "odoo.exceptions.AccessDenied";
    /// `odoo.exceptions.AccessError`
    pub const ACCESS_ERROR: &str = "odoo.exceptions.AccessError";
    /// `builtins.AttributeError`
    pub const ATTRIBUTE_ERROR: &str = "builtins.AttributeError";
    /// `builtins.TypeError`
    pub const TYPE_ERROR: &str = "builtins.TypeError";
    /// `builtins.ValueError`
    pub const VALUE_ERROR: &str = "builtins.ValueError";
    /// `builtins.KeyError`
    pub const KEY_ERROR: &str = "builtins.KeyError";
    /// `builtins.Exception`
    pub const EXCEPTION: &str = "builtins.Exception";
    /// `builtins.NameError`
    pub const NAME_ERROR: &str = "builtins.NameError";
    /// `psycopg2.errors.SerializationFailure`
    pub const SERIALIZATION_FAILURE: &str = "psycopg2.errors.SerializationFailure";
    /// `psycopg2.OperationalError`
    pub const OPERATIONAL_ERROR: &str = "psycopg2.OperationalError";
    /// `psycopg2.errors.NotNullViolation`: only inside a call; converted to a ValidationError
    /// at the RPC boundary (`odoo/service/model.py` `_as_validation_error`) and to a load message.
    pub const NOT_NULL: &str = "psycopg2.errors.NotNullViolation";
    /// `psycopg2.errors.ForeignKeyViolation`: converted like [`NOT_NULL`].
    pub const FOREIGN_KEY: &str = "psycopg2.errors.ForeignKeyViolation";
    /// `builtins.IndexError`
    pub const INDEX_ERROR: &str = "builtins.IndexError";
}

impl OdooError {
    /// An exception whose `args` is `(message,)`.
    pub fn new(name: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            name: name.to_owned(),
            arguments: vec![Value::String(message.clone())],
            message,
        }
    }

    /// `UserError(message)`: a business rule refused the operation.
    pub fn user_error(message: impl Into<String>) -> Self {
        Self::new(names::USER_ERROR, message)
    }

    /// `ValidationError(message)`: a constraint failed.
    pub fn validation_error(message: impl Into<String>) -> Self {
        Self::new(names::VALIDATION_ERROR, message)
    }

    /// `MissingError` for records that do not exist (`BaseModel._check_exists` wording).
    pub fn missing(model: &str, ids: &[i64], uid: i64) -> Self {
        Self::new(
            names::MISSING_ERROR,
            format!(
                "Record does not exist or has been deleted.\n(Record: {model}{}, User: {uid})",
                python_tuple(ids)
            ),
        )
    }

    /// `AccessDenied()`: bad key, unknown or inactive user, empty password.
    pub fn access_denied() -> Self {
        Self::new(names::ACCESS_DENIED, "Access Denied")
    }

    /// `AccessDenied` raised by `_assert_can_auth` during the login cooldown.
    pub fn login_cooldown() -> Self {
        Self::new(
            names::ACCESS_DENIED,
            "Too many login failures, please wait a bit before trying again.",
        )
    }

    /// `AccessError(message)`.
    pub fn access_error(message: impl Into<String>) -> Self {
        Self::new(names::ACCESS_ERROR, message)
    }

    /// `AttributeError(message)`.
    pub fn attribute_error(message: impl Into<String>) -> Self {
        Self::new(names::ATTRIBUTE_ERROR, message)
    }

    /// `TypeError(message)`, e.g. a missing or unexpected argument.
    pub fn type_error(message: impl Into<String>) -> Self {
        Self::new(names::TYPE_ERROR, message)
    }

    /// `ValueError(message)`, e.g. an invalid field or domain.
    pub fn value_error(message: impl Into<String>) -> Self {
        Self::new(names::VALUE_ERROR, message)
    }

    /// `KeyError(key)`: `str()` of a KeyError is the repr of the key.
    pub fn key_error(key: &str) -> Self {
        Self::new(names::KEY_ERROR, format!("'{key}'"))
    }

    /// The serialization failure Odoo returns once its own 5 retries are exhausted.
    pub fn serialization_failure() -> Self {
        Self::new(
            names::SERIALIZATION_FAILURE,
            "could not serialize access due to concurrent update",
        )
    }

    /// A NOT NULL violation on `field` (converted before reaching the client, see
    /// [`OdooError::into_client_error`]). `arguments` = `[field label, technical name]`.
    pub fn not_null(model: &str, description: &str, label: &str, field: &str) -> Self {
        Self {
            name: names::NOT_NULL.to_owned(),
            message: format!(
                "The operation cannot be completed:\n- Create/update: a mandatory field is not set.\n- Delete: another model requires the record being deleted. If possible, archive it instead.\n\nModel: {description} ({model})\nField: {label} ({field})\n"
            ),
            arguments: vec![Value::String(label.to_owned()), Value::String(field.to_owned())],
        }
    }

    /// A foreign key violation: `field` of `model` points at a missing `comodel` row.
    /// `message` is the client ValidationError text, `arguments[0]` PostgreSQL's own text (what
    /// `load` reports).
    pub fn foreign_key(
        model: &str,
        description: &str,
        field: &str,
        comodel: &str,
        id: i64,
    ) -> Self {
        let table = model.replace('.', "_");
        let cotable = comodel.replace('.', "_");
        let constraint = format!("{table}_{field}_fkey");
        Self {
            name: names::FOREIGN_KEY.to_owned(),
            message: format!(
                "The operation cannot be completed: another model requires the record being deleted. If possible, archive it instead.\n\nModel: {description} ({model})\nConstraint: {constraint}\n"
            ),
            arguments: vec![Value::String(format!(
                "insert or update on table \"{table}\" violates foreign key constraint \"{constraint}\"\nDETAIL:  Key ({field})=({id}) is not present in table \"{cotable}\".\n"
            ))],
        }
    }

    /// What the client sees: database constraint errors become ValidationErrors
    /// (`odoo/service/model.py` `_as_validation_error`).
    pub fn into_client_error(self) -> Self {
        if self.name == names::NOT_NULL || self.name == names::FOREIGN_KEY {
            Self::validation_error(self.message)
        } else {
            self
        }
    }

    /// True for `odoo.exceptions.*` (the UserError family that `load` reports verbatim).
    pub fn is_odoo_exception(&self) -> bool {
        self.name.starts_with("odoo.exceptions.")
    }

    /// True for the exceptions a client should treat as "try again later".
    pub fn is_transient(&self) -> bool {
        self.name == names::SERIALIZATION_FAILURE
    }

    /// The short class name (`UserError`), as Python's traceback prints it.
    pub fn class_name(&self) -> &str {
        self.name.rsplit('.').next().unwrap_or(&self.name)
    }

    /// A plausible `traceback.format_exc()` for `data.debug`.
    pub fn debug_traceback(&self) -> String {
        format!(
            "Traceback (most recent call last):\n  File \"/usr/lib/python3/dist-packages/odoo/http.py\", line 1, in _serve_db\n    return service_model.retrying(self._serve_ir_http, self.env)\n{}: {}\n",
            self.name, self.message
        )
    }

    /// `error.data` of the JSON-RPC envelope (`serialize_exception`).
    pub fn to_data(&self) -> Value {
        json!({
            "name": self.name,
            "debug": self.debug_traceback(),
            "message": self.message,
            "arguments": self.arguments,
            "context": Value::Object(Map::new()),
        })
    }
}

/// Python's repr of a tuple of ints: `(7,)`, `(1, 2)`, `()`.
pub fn python_tuple(ids: &[i64]) -> String {
    match ids {
        [] => "()".to_owned(),
        [one] => format!("({one},)"),
        many => {
            let inner: Vec<String> = many.iter().map(|i| i.to_string()).collect();
            format!("({})", inner.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_error_names_the_model_ids_and_user_like_odoo() {
        let e = OdooError::missing("stock.picking", &[999], 2);
        assert_eq!(
            e.message,
            "Record does not exist or has been deleted.\n(Record: stock.picking(999,), User: 2)"
        );
        assert_eq!(e.class_name(), "MissingError");
    }

    #[test]
    fn error_data_carries_name_message_arguments_debug_and_context() {
        let data = OdooError::user_error("nope").to_data();
        assert_eq!(data["name"], "odoo.exceptions.UserError");
        assert_eq!(data["message"], "nope");
        assert_eq!(data["arguments"], json!(["nope"]));
        assert!(data["debug"]
            .as_str()
            .is_some_and(|d| d.starts_with("Traceback")));
        assert_eq!(data["context"], json!({}));
    }
}

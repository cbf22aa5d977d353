//! A JSON-RPC client for Odoo's external API (`POST <url>/jsonrpc`), on reqwest.
//!
//! Owns the HTTP client, the credentials and the session (the uid from `common.authenticate`).
//! The session is opened lazily with `common.version()` then `common.authenticate(db, login,
//! key, {})`. When an `execute_kw` is refused with `AccessDenied` (or a session expiry), the
//! client authenticates again once and repeats the call once (a refused call had no effect);
//! a second refusal is returned as an alarm for the pusher to log loudly and retry later.
//! Every answer goes through [`parse_rpc_response`], so failures arrive classified.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{ApiKey, OdooConfig};
use crate::odoo::errors::{parse_rpc_response, OdooError};

/// Connect timeout, capped so an unreachable Odoo is noticed quickly.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Odoo JSON-RPC client with its session.
pub struct OdooClient {
    http: reqwest::Client,
    /// `<url>/jsonrpc`.
    endpoint: String,
    database: String,
    login: String,
    key: ApiKey,
    /// The authenticated user id, once logged in.
    uid: Option<i64>,
    /// JSON-RPC request ids, for correlating with Odoo's logs.
    next_id: AtomicU64,
}

impl OdooClient {
    /// Builds the client (no network I/O yet).
    pub fn new(config: &OdooConfig) -> Result<OdooClient, OdooError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(MAX_CONNECT_TIMEOUT))
            .user_agent(concat!("scanbridge-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OdooError::Unexpected {
                call: "client setup".into(),
                detail: e.to_string(),
            })?;
        Ok(OdooClient {
            http,
            endpoint: format!("{}/jsonrpc", config.url),
            database: config.database.clone(),
            login: config.login.clone(),
            key: config.api_key.clone(),
            uid: None,
            next_id: AtomicU64::new(1),
        })
    }

    /// One JSON-RPC call.
    async fn call(
        &self,
        service: &str,
        method: &str,
        args: Value,
    ) -> Result<Option<Value>, OdooError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = json!({
            "jsonrpc": "2.0",
            "method": "call",
            "id": id,
            "params": {"service": service, "method": method, "args": args},
        });
        let response = self
            .http
            .post(&self.endpoint)
            .json(&request)
            .send()
            .await
            .map_err(|e| OdooError::from_transport(&e))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| OdooError::from_transport(&e))?;
        parse_rpc_response(status, &body)
    }

    /// `common.version()`.
    pub async fn version(&self) -> Result<Value, OdooError> {
        self.call("common", "version", json!([]))
            .await?
            .ok_or_else(|| OdooError::Unexpected {
                call: "common.version".into(),
                detail: "no result".into(),
            })
    }

    /// `common.authenticate(db, login, key, {})` → uid; `false` becomes [`OdooError::AccessDenied`].
    pub async fn authenticate(&mut self) -> Result<i64, OdooError> {
        let args = json!([self.database, self.login, self.key.expose(), {}]);
        let result = self.call("common", "authenticate", args).await?;
        match result {
            Some(Value::Number(n)) if n.as_i64().is_some_and(|uid| uid > 0) => {
                let uid = n.as_i64().unwrap_or_default();
                self.uid = Some(uid);
                Ok(uid)
            }
            Some(Value::Bool(false)) | None => {
                self.uid = None;
                Err(OdooError::AccessDenied(format!(
                    "authenticate returned false for login {:?} on database {:?}",
                    self.login, self.database
                )))
            }
            Some(other) => Err(OdooError::Unexpected {
                call: "common.authenticate".into(),
                detail: format!("expected a user id, got {other}"),
            }),
        }
    }

    /// Opens the session if needed: `version()` then `authenticate()`.
    pub async fn ensure_session(&mut self) -> Result<i64, OdooError> {
        if let Some(uid) = self.uid {
            return Ok(uid);
        }
        let version = self.version().await?;
        let serie = version
            .get("server_serie")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        let uid = self.authenticate().await?;
        tracing::info!(odoo_version = %serie, uid, database = %self.database, "logged in to Odoo");
        Ok(uid)
    }

    /// `object.execute_kw(db, uid, key, model, method, args[, kwargs])`. `kwargs` is omitted
    /// from the call when `None`. Re-authenticates once on `AccessDenied`.
    pub async fn execute_kw(
        &mut self,
        model: &str,
        method: &str,
        args: Value,
        kwargs: Option<Value>,
    ) -> Result<Option<Value>, OdooError> {
        let uid = self.ensure_session().await?;
        match self
            .execute_once(uid, model, method, &args, kwargs.as_ref())
            .await
        {
            Err(e) if e.needs_login() => {
                tracing::warn!(error = %e, model, method, "Odoo refused the session; logging in again");
                self.uid = None;
                let uid = self.authenticate().await?;
                self.execute_once(uid, model, method, &args, kwargs.as_ref())
                    .await
            }
            other => other,
        }
    }

    async fn execute_once(
        &self,
        uid: i64,
        model: &str,
        method: &str,
        args: &Value,
        kwargs: Option<&Value>,
    ) -> Result<Option<Value>, OdooError> {
        let mut params = vec![
            json!(self.database),
            json!(uid),
            json!(self.key.expose()),
            json!(model),
            json!(method),
            args.clone(),
        ];
        if let Some(kwargs) = kwargs {
            params.push(kwargs.clone());
        }
        self.call("object", "execute_kw", Value::Array(params))
            .await
    }

    /// Forgets the session (the next call logs in again).
    pub fn reset_session(&mut self) {
        self.uid = None;
    }
}

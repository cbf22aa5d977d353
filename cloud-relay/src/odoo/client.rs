//! The Odoo client: JSON-RPC (`POST <url>/jsonrpc`, default) or Odoo 19's JSON-2
//! (`POST <url>/json/2/<model>/<method>` with a bearer API key), shared by every push task.
//!
//! Owns the HTTP client, the credentials, the session (the uid from `common.authenticate`), the
//! detected Odoo version, the pace (`max_rps` calls per second for the whole relay on average: a
//! token bucket, [`Pace`], every call takes a slot from) and the per-method call counters. The session is
//! opened lazily with `common.version()` then (JSON-RPC) `common.authenticate(db, login, key,
//! {})`. When a call is refused with `AccessDenied` (or a session expiry), the client
//! authenticates again once and repeats the call once (a refused call had no effect); a second
//! refusal is returned as an alarm for the pusher to log loudly and retry later. Every answer
//! goes through [`parse_rpc_response`] or [`json2::parse_response`], so failures arrive
//! classified.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::{ApiKey, OdooConfig};
use crate::odoo::errors::{parse_rpc_response, Class, OdooError};
use crate::odoo::json2;
use crate::odoo::settings::{Api, FlowSettings, VersionChoice};
use crate::odoo::version::OdooVersion;

/// Connect timeout, capped so an unreachable Odoo is noticed quickly.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls made and failures seen, for `/metrics` and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpcStats {
    /// `(model, method)` → calls sent (`common`/`version` etc. for the session calls).
    pub calls: BTreeMap<(String, String), u64>,
    pub transient_errors: u64,
    pub permanent_errors: u64,
}

impl RpcStats {
    /// All HTTP round trips.
    pub fn total(&self) -> u64 {
        self.calls.values().sum()
    }
}

/// Odoo client with its session; share it behind an `Arc`.
pub struct OdooClient {
    http: reqwest::Client,
    /// Base URL without a trailing slash.
    url: String,
    api: Api,
    version_choice: VersionChoice,
    database: String,
    login: String,
    key: ApiKey,
    /// The authenticated user id, once logged in (JSON-RPC).
    uid: Mutex<Option<i64>>,
    /// The Odoo version, once known.
    version: Mutex<Option<OdooVersion>>,
    /// JSON-RPC request ids, for correlating with Odoo's logs.
    next_id: AtomicU64,
    /// One slot per call: the relay-wide rate limit.
    pace: Mutex<Pace>,
    stats: Mutex<RpcStats>,
    /// The `[odoo]` flow settings (stations, readings, concurrency) the pusher reads.
    settings: FlowSettings,
}

/// Seconds of `max_rps` the pace may save up while the callers are busy elsewhere (committing,
/// reading the inbox): at 50 calls/s, 5 calls. Without it a strictly sequential caller whose
/// calls take less than one period waits out every period although its average rate is far
/// below the limit (an interval pace halved the chain's end-to-end rate at 20-40 calls/s).
const PACE_BURST_SECS: f64 = 0.1;

/// The relay-wide call pace: a token bucket refilled at `rate` calls per second, holding at most
/// `rate` × [`PACE_BURST_SECS`] slots (at least one). A caller takes a slot and waits for it when
/// none is left; slots are handed out in the order they were asked for. Over any interval of
/// `t` seconds at most `rate × t` + the burst calls start.
#[derive(Debug)]
struct Pace {
    rate: f64,
    burst: f64,
    /// Free slots at `at` (negative: slots already promised to waiting callers).
    slots: f64,
    at: Instant,
}

impl Pace {
    fn new(rate: f64, now: Instant) -> Pace {
        let rate = rate.max(0.001);
        let burst = (rate * PACE_BURST_SECS).max(1.0);
        Pace {
            rate,
            burst,
            slots: burst,
            at: now,
        }
    }

    /// Takes one slot at `now`; returns how long the caller waits before its call.
    fn take(&mut self, now: Instant) -> Duration {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.slots = (self.slots + refill).min(self.burst) - 1.0;
        self.at = self.at.max(now);
        if self.slots >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.slots / self.rate)
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl OdooClient {
    /// Builds the client (no network I/O yet). Call from within a tokio runtime.
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
        let version = match config.flows.version {
            VersionChoice::Fixed(v) => OdooVersion::new(v).ok(),
            VersionChoice::Auto => None,
        };
        Ok(OdooClient {
            http,
            url: config.url.clone(),
            api: config.flows.api,
            version_choice: config.flows.version,
            database: config.database.clone(),
            login: config.login.clone(),
            key: config.api_key.clone(),
            uid: Mutex::new(None),
            version: Mutex::new(version),
            next_id: AtomicU64::new(1),
            pace: Mutex::new(Pace::new(config.flows.max_rps, Instant::now())),
            stats: Mutex::new(RpcStats::default()),
            settings: config.flows.clone(),
        })
    }

    /// The `[odoo]` flow settings.
    pub fn settings(&self) -> &FlowSettings {
        &self.settings
    }

    /// Calls made so far.
    pub fn stats(&self) -> RpcStats {
        lock(&self.stats).clone()
    }

    /// Waits for the next slot of the rate limit and counts the call.
    async fn paced(&self, model: &str, method: &str) {
        let wait = lock(&self.pace).take(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        *lock(&self.stats)
            .calls
            .entry((model.to_string(), method.to_string()))
            .or_default() += 1;
    }

    fn count_error(&self, e: &OdooError) {
        let mut stats = lock(&self.stats);
        match e.class() {
            Class::Permanent => stats.permanent_errors += 1,
            _ => stats.transient_errors += 1,
        }
    }

    /// Reports one finished call to the relay's `/metrics`
    /// (`scanbridge_odoo_rpc_total{model,method}`, `scanbridge_odoo_rpc_errors_total{class}`).
    fn report<T>(model: &str, method: &str, result: &Result<T, OdooError>) {
        let class = match result {
            Ok(_) => None,
            Err(e) => Some(match e.class() {
                Class::Transient { .. } => "transient",
                Class::Permanent | Class::Alarm => "permanent",
            }),
        };
        crate::admin::metrics::record_rpc(model, method, class);
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
            .post(format!("{}/jsonrpc", self.url))
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
    pub async fn server_version(&self) -> Result<Value, OdooError> {
        self.paced("common", "version").await;
        let result = self.call("common", "version", json!([])).await;
        Self::report("common", "version", &result);
        result?.ok_or_else(|| OdooError::Unexpected {
            call: "common.version".into(),
            detail: "no result".into(),
        })
    }

    /// `common.authenticate(db, login, key, {})` → uid; `false` becomes [`OdooError::AccessDenied`].
    pub async fn authenticate(&self) -> Result<i64, OdooError> {
        self.paced("common", "authenticate").await;
        let args = json!([self.database, self.login, self.key.expose(), {}]);
        let result = self.call("common", "authenticate", args).await;
        Self::report("common", "authenticate", &result);
        let result = result?;
        match result {
            Some(Value::Number(n)) if n.as_i64().is_some_and(|uid| uid > 0) => {
                let uid = n.as_i64().unwrap_or_default();
                *lock(&self.uid) = Some(uid);
                Ok(uid)
            }
            Some(Value::Bool(false)) | None => {
                *lock(&self.uid) = None;
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

    /// Opens the session if needed: `version()` (unless configured) then `authenticate()`
    /// (JSON-RPC only: JSON-2 sends the key with every call). Returns the uid (0 for JSON-2).
    pub async fn ensure_session(&self) -> Result<i64, OdooError> {
        if let Some(uid) = *lock(&self.uid) {
            return Ok(uid);
        }
        let known = *lock(&self.version);
        let version = match known {
            Some(v) if self.version_choice != VersionChoice::Auto => v,
            _ => {
                let info = self.server_version().await?;
                let detected =
                    OdooVersion::from_version_info(&info).map_err(|e| OdooError::Unexpected {
                        call: "common.version".into(),
                        detail: e.to_string(),
                    })?;
                *lock(&self.version) = Some(detected);
                detected
            }
        };
        if self.api == Api::Json2 && !version.has_json2() {
            return Err(OdooError::Unexpected {
                call: "common.version".into(),
                detail: format!(
                    "Odoo {} has no JSON-2 API; set [odoo] api = \"jsonrpc\"",
                    version.major()
                ),
            });
        }
        let uid = match self.api {
            Api::JsonRpc => self.authenticate().await?,
            Api::Json2 => {
                *lock(&self.uid) = Some(0);
                0
            }
        };
        tracing::info!(odoo_version = version.major(), uid, database = %self.database, api = ?self.api, "connected to Odoo");
        Ok(uid)
    }

    /// The Odoo version (opens the session when not known yet).
    pub async fn version(&self) -> Result<OdooVersion, OdooError> {
        self.ensure_session().await?;
        let known = *lock(&self.version);
        known.ok_or_else(|| OdooError::Unexpected {
            call: "common.version".into(),
            detail: "version unknown after login".into(),
        })
    }

    /// `object.execute_kw(db, uid, key, model, method, args[, kwargs])` (JSON-RPC; `kwargs`
    /// omitted when `None`) or the same call over JSON-2. Re-authenticates once on
    /// `AccessDenied`.
    pub async fn execute_kw(
        &self,
        model: &str,
        method: &str,
        args: Value,
        kwargs: Option<Value>,
    ) -> Result<Option<Value>, OdooError> {
        let uid = self.ensure_session().await?;
        let first = self
            .execute_once(uid, model, method, &args, kwargs.as_ref())
            .await;
        let result = match first {
            Err(e) if e.needs_login() && self.api == Api::JsonRpc => {
                tracing::warn!(error = %e, model, method, "Odoo refused the session; logging in again");
                *lock(&self.uid) = None;
                let uid = self.authenticate().await?;
                self.execute_once(uid, model, method, &args, kwargs.as_ref())
                    .await
            }
            other => other,
        };
        if let Err(e) = &result {
            self.count_error(e);
        }
        result
    }

    async fn execute_once(
        &self,
        uid: i64,
        model: &str,
        method: &str,
        args: &Value,
        kwargs: Option<&Value>,
    ) -> Result<Option<Value>, OdooError> {
        self.paced(model, method).await;
        let result = self.send_once(uid, model, method, args, kwargs).await;
        Self::report(model, method, &result);
        result
    }

    async fn send_once(
        &self,
        uid: i64,
        model: &str,
        method: &str,
        args: &Value,
        kwargs: Option<&Value>,
    ) -> Result<Option<Value>, OdooError> {
        match self.api {
            Api::JsonRpc => {
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
            Api::Json2 => {
                let body = json2::body(method, args, kwargs)?;
                let response = self
                    .http
                    .post(format!("{}/json/2/{model}/{method}", self.url))
                    .header("Authorization", format!("bearer {}", self.key.expose()))
                    .header("X-Odoo-Database", &self.database)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| OdooError::from_transport(&e))?;
                let status = response.status().as_u16();
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| OdooError::from_transport(&e))?;
                json2::parse_response(status, &bytes)
            }
        }
    }

    /// Forgets the session (the next call logs in again).
    pub fn reset_session(&self) {
        *lock(&self.uid) = None;
    }
}

#[cfg(test)]
mod pace_tests {
    use super::*;

    #[test]
    fn a_sequential_caller_below_the_rate_never_waits() {
        let t0 = Instant::now();
        let mut pace = Pace::new(50.0, t0);
        // Two quick calls per 60 ms step (about 33 calls/s, below 50).
        for step in 0..100u64 {
            let at = t0 + Duration::from_millis(60 * step);
            assert_eq!(pace.take(at), Duration::ZERO, "step {step}");
            assert_eq!(
                pace.take(at + Duration::from_millis(5)),
                Duration::ZERO,
                "step {step}"
            );
        }
    }

    #[test]
    fn callers_asking_at_once_are_spaced_to_the_rate_after_the_burst() {
        let t0 = Instant::now();
        let mut pace = Pace::new(50.0, t0);
        let waits: Vec<Duration> = (0..105).map(|_| pace.take(t0)).collect();
        assert!(waits[..5].iter().all(|w| w.is_zero()), "{:?}", &waits[..5]);
        // The 105th call starts 100 slots of 20 ms after the burst: 2 s.
        let last = waits[104].as_secs_f64();
        assert!((last - 2.0).abs() < 1e-6, "{last}");
    }

    #[test]
    fn a_slow_rate_allows_no_burst() {
        let t0 = Instant::now();
        let mut pace = Pace::new(5.0, t0);
        assert_eq!(pace.take(t0), Duration::ZERO);
        let second = pace.take(t0 + Duration::from_secs(10)).as_secs_f64();
        assert_eq!(second, 0.0);
        let third = pace.take(t0 + Duration::from_secs(10)).as_secs_f64();
        assert!((third - 0.2).abs() < 1e-6, "{third}");
    }
}

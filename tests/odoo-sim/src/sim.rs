//! The simulator instance shared by all connections: configuration, the database behind a
//! mutex (calls are serialised, each one a transaction rolled back on error), fault settings, call
//! statistics and the per-IP login failure book of the cooldown.
//!
//! Mirrors the transaction boundary of `odoo/service/model.py` `execute` (one cursor per call,
//! committed only when the call returns) and `res.users._assert_can_auth` (cooldown after
//! `base.login_cooldown_after` = 5 failures for `base.login_cooldown_duration` = 60 s).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::db::Db;
use crate::faults::{FaultAction, Faults};
use crate::models;
use crate::rpc::errors::OdooError;
use crate::version::OdooVersion;

/// Failures from one IP before the cooldown starts.
pub const LOGIN_COOLDOWN_AFTER: u32 = 5;
/// Cooldown length after the last failure.
pub const LOGIN_COOLDOWN: Duration = Duration::from_secs(60);

/// Command-line configuration of the simulated instance.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Version impersonated.
    pub version: OdooVersion,
    /// The only database name that exists.
    pub db_name: String,
    /// Login of uid 2.
    pub login: String,
    /// API key of uid 2.
    pub api_key: String,
    /// Display name of uid 2 (appears in inventory move names).
    pub user_name: String,
}

/// Per-method call counts.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// `"model.method"` → number of object calls received.
    pub calls: BTreeMap<String, u64>,
    /// Every well-formed `/jsonrpc` request.
    pub rpc_total: u64,
    /// Every authenticated JSON-2 call with a JSON object body.
    pub json2_total: u64,
}

/// Setup errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The base data could not be created (a bug in the seed data).
    #[error("cannot create the base data of the simulated database: {0}")]
    Seed(OdooError),
}

/// One simulated Odoo instance.
#[derive(Debug)]
pub struct Sim {
    /// Configuration.
    pub config: SimConfig,
    db: Mutex<Db>,
    faults: Mutex<Faults>,
    stats: Mutex<Stats>,
    login_failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// 19 logs once that `/jsonrpc` is deprecated.
    deprecation_logged: std::sync::atomic::AtomicBool,
    /// Diagnostic call log ([`Sim::log_calls_to`]): one JSON line per object call.
    call_log: Mutex<Option<std::io::BufWriter<std::fs::File>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data (every mutation replaces whole
    // values), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sim {
    /// A fresh instance with the base data (users, standard locations).
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        let db = models::base_db(config.version, &config.login, &config.user_name)
            .map_err(SimError::Seed)?;
        Ok(Self {
            config,
            db: Mutex::new(db),
            faults: Mutex::new(Faults::default()),
            stats: Mutex::new(Stats::default()),
            login_failures: Mutex::new(HashMap::new()),
            deprecation_logged: std::sync::atomic::AtomicBool::new(false),
            call_log: Mutex::new(None),
        })
    }

    /// Append every object call from now on to `path` as one JSON line
    /// `{"model","method","args","kwargs","ok"}` (`ok`: committed), written when the call has
    /// finished (calls from one client, like the relay's pusher for one site, appear in their
    /// order). A diagnostic for "what exactly did the relay send", off by default; the binary
    /// turns it on when `SCANBRIDGE_SIM_CALL_LOG` names a file.
    pub fn log_calls_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        *lock(&self.call_log) = Some(std::io::BufWriter::new(file));
        Ok(())
    }

    fn log_call(
        &self,
        model: &str,
        method: &str,
        args: &[Value],
        kwargs: &Map<String, Value>,
        ok: bool,
    ) {
        use std::io::Write;
        let mut log = lock(&self.call_log);
        if let Some(w) = log.as_mut() {
            let line = serde_json::json!({"model": model, "method": method, "args": args,
                                          "kwargs": kwargs, "ok": ok});
            if let Err(e) = writeln!(w, "{line}").and_then(|()| w.flush()) {
                tracing::warn!(error = %e, "cannot write the call log; it is turned off");
                *log = None;
            }
        }
    }

    /// Run `f` as one transaction: committed only on `Ok`; an error (or a panic) rolls every
    /// change of `f` back through the database's undo journal.
    pub fn transaction<T>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, OdooError>,
    ) -> Result<T, OdooError> {
        let mut guard = lock(&self.db);
        // Whatever a previous panic left uncommitted was rolled back below; start clean.
        guard.commit();
        let start = guard.savepoint();
        let db: &mut Db = &mut guard;
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(db)));
        match out {
            Ok(Ok(v)) => {
                guard.commit();
                Ok(v)
            }
            Ok(Err(e)) => {
                guard.rollback_to(start);
                guard.commit();
                Err(e)
            }
            Err(panic) => {
                guard.rollback_to(start);
                guard.commit();
                drop(guard);
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Read-only access.
    pub fn read<T>(&self, f: impl FnOnce(&Db) -> T) -> T {
        f(&lock(&self.db))
    }

    /// Current fault settings.
    pub fn faults(&self) -> Faults {
        *lock(&self.faults)
    }

    /// Change fault settings.
    pub fn update_faults(&self, u: crate::faults::FaultsUpdate) -> Faults {
        let mut f = lock(&self.faults);
        f.update(u);
        *f
    }

    /// Consume the fault of one object call; returns it with the latency to apply.
    pub fn take_fault(&self) -> (FaultAction, Duration) {
        let mut f = lock(&self.faults);
        (f.take(), Duration::from_millis(f.latency_ms))
    }

    /// Count one well-formed `/jsonrpc` request (19: and warn once that the endpoint is
    /// deprecated, as Odoo 19 does).
    pub fn count_rpc(&self) {
        lock(&self.stats).rpc_total += 1;
        if self.config.version >= OdooVersion::V19
            && !self
                .deprecation_logged
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!("the /jsonrpc endpoint is deprecated in Odoo 19; use /json/2");
        }
    }

    /// Count one JSON-2 call.
    pub fn count_json2(&self) {
        lock(&self.stats).json2_total += 1;
    }

    /// Count one object call of `model.method`.
    pub fn count_call(&self, model: &str, method: &str) {
        *lock(&self.stats)
            .calls
            .entry(format!("{model}.{method}"))
            .or_insert(0) += 1;
    }

    /// Snapshot of the statistics.
    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }

    /// `_assert_can_auth` around a credential check from `ip`.
    pub fn guarded_auth(
        &self,
        ip: IpAddr,
        check: impl FnOnce() -> Result<i64, OdooError>,
    ) -> Result<i64, OdooError> {
        {
            let book = lock(&self.login_failures);
            if let Some((failures, last)) = book.get(&ip) {
                if *failures >= LOGIN_COOLDOWN_AFTER && last.elapsed() < LOGIN_COOLDOWN {
                    tracing::warn!(%ip, failures, "login cooldown: refusing authentication");
                    return Err(OdooError::login_cooldown());
                }
            }
        }
        match check() {
            Ok(uid) => {
                lock(&self.login_failures).remove(&ip);
                Ok(uid)
            }
            Err(e) => {
                let mut book = lock(&self.login_failures);
                let entry = book.entry(ip).or_insert((0, Instant::now()));
                entry.0 += 1;
                entry.1 = Instant::now();
                Err(e)
            }
        }
    }

    /// `common.authenticate` / `login`: uid, or `None` for bad credentials (also during the
    /// cooldown).
    pub fn authenticate(&self, ip: IpAddr, login: &str, key: &str) -> Option<i64> {
        let res = self.guarded_auth(ip, || {
            let uid = self
                .read(|db| models::users::uid_for_login(db, login))
                .ok_or_else(OdooError::access_denied)?;
            self.read(|db| models::users::check(db, uid, key, &self.config.api_key))?;
            Ok(uid)
        });
        res.ok()
    }

    /// `security.check(db, uid, key)` of every object call.
    pub fn check_key(&self, ip: IpAddr, uid: i64, key: &str) -> Result<(), OdooError> {
        self.guarded_auth(ip, || {
            self.read(|db| models::users::check(db, uid, key, &self.config.api_key))?;
            Ok(uid)
        })
        .map(|_| ())
    }

    /// `execute_kw` body: one transaction.
    pub fn execute_kw(
        &self,
        uid: i64,
        model: &str,
        method: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Option<Value>, OdooError> {
        let logged = lock(&self.call_log)
            .is_some()
            .then(|| (args.clone(), kwargs.clone()));
        let out = self.transaction(|db| models::call_kw(db, uid, model, method, args, kwargs));
        if let Some((args, kwargs)) = logged {
            self.log_call(model, method, &args, &kwargs, out.is_ok());
        }
        out.map_err(OdooError::into_client_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> Sim {
        Sim::new(SimConfig {
            version: OdooVersion::V17,
            db_name: "scanbridge".into(),
            login: "scanbridge".into(),
            api_key: "k".into(),
            user_name: "Administrator".into(),
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_failed_call_leaves_nothing_and_the_call_log_records_both_outcomes() {
        let sim = sim();
        let path =
            std::env::temp_dir().join(format!("odoo-sim-calls-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        sim.log_calls_to(&path).unwrap_or_else(|e| panic!("{e}"));
        let before = sim.read(|db| db.all_ids("res.partner"));
        // A create that fails after writing one record (the second dict names no field that
        // exists) is rolled back as a whole.
        let bad = sim.execute_kw(
            2,
            "res.partner",
            "create",
            vec![serde_json::json!([{"name": "Azure"}, {"nope": 1}])],
            Map::new(),
        );
        assert!(bad.is_err(), "{bad:?}");
        assert_eq!(sim.read(|db| db.all_ids("res.partner")), before);
        let good = sim.execute_kw(
            2,
            "res.partner",
            "create",
            vec![serde_json::json!({"name": "Azure"})],
            Map::new(),
        );
        assert!(good.is_ok(), "{good:?}");
        assert_eq!(
            sim.read(|db| db.all_ids("res.partner")).len(),
            before.len() + 1
        );

        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
            .collect();
        let _ = std::fs::remove_file(&path);
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["method"], "create");
        assert_eq!(lines[0]["ok"], false);
        assert_eq!(lines[1]["ok"], true);
        assert_eq!(lines[1]["args"][0]["name"], "Azure");
    }
}

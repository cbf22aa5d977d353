//! The `common`, `object` and `db` services behind `POST /jsonrpc`, with fault injection on
//! object calls.
//!
//! Mirrors `odoo/addons/base/controllers/rpc.py` `jsonrpc(service, method, args)` (missing
//! params → TypeError, extra params ignored), `odoo/http.py` `dispatch_rpc` (unknown service →
//! KeyError), `odoo/service/common.py` (`version`, `login`, `authenticate` returning False on
//! AccessDenied, unknown method → `Exception("Method not found: x")`), `odoo/service/db.py`
//! (`list`, `db_exist`, `server_version`) and `odoo/service/model.py` `dispatch`
//! (`db, uid, passwd = params[0], int(params[1]), params[2]`, `security.check` on every call,
//! `execute_kw` / `execute`, anything else `NameError("Method not available x")`).

use std::net::IpAddr;

use serde_json::{json, Map, Value};

use crate::faults::FaultAction;
use crate::models::bind;
use crate::models::orm::py_type;
use crate::rpc::envelope::{self, RpcRequest};
use crate::rpc::errors::{names, OdooError};
use crate::sim::Sim;

/// What the HTTP layer must do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Answer HTTP 200 with this JSON body.
    Reply(Value),
    /// Answer HTTP 500 (injected fault).
    Http500,
    /// Close the connection without writing anything (injected fault).
    Drop,
}

fn no_database(db: &str) -> OdooError {
    OdooError::new(
        names::OPERATIONAL_ERROR,
        format!("connection to server on socket \"/var/run/postgresql/.s.PGSQL.5432\" failed: FATAL:  database \"{db}\" does not exist\n"),
    )
}

fn check_db(sim: &Sim, db: &Value) -> Result<(), OdooError> {
    match db.as_str() {
        Some(name) if name == sim.config.db_name => Ok(()),
        Some(name) => Err(no_database(name)),
        None => Err(OdooError::type_error(format!(
            "expected str for the database name, got {}",
            py_type(db)
        ))),
    }
}

fn str_arg(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

/// `int(value)` as Python does it.
fn py_int(v: &Value) -> Result<i64, OdooError> {
    match v {
        Value::Bool(b) => Ok(i64::from(*b)),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.trunc() as i64))
            .ok_or_else(|| {
                OdooError::value_error(format!("invalid literal for int() with base 10: '{n}'"))
            }),
        Value::String(s) => s.trim().parse::<i64>().map_err(|_| {
            OdooError::value_error(format!("invalid literal for int() with base 10: '{s}'"))
        }),
        other => Err(OdooError::type_error(format!(
            "int() argument must be a string, a bytes-like object or a real number, not '{}'",
            py_type(other)
        ))),
    }
}

fn common(sim: &Sim, ip: IpAddr, method: &str, args: &[Value]) -> Result<Option<Value>, OdooError> {
    let none = Map::new();
    match method {
        "version" => {
            bind("exp_version", &[], args, &none)?;
            Ok(Some(sim.config.version.version_info()))
        }
        "about" => {
            let a = bind("exp_about", &[("extended", false)], args, &none)?;
            let info = "See http://openerp.com";
            if a[0].as_bool() == Some(true) {
                Ok(Some(json!([
                    info,
                    format!("{}.0", sim.config.version.major())
                ])))
            } else {
                Ok(Some(json!(info)))
            }
        }
        "login" | "authenticate" => {
            let params: &[(&str, bool)] = if method == "login" {
                &[("db", true), ("login", true), ("password", true)]
            } else {
                &[
                    ("db", true),
                    ("login", true),
                    ("password", true),
                    ("user_agent_env", true),
                ]
            };
            let a = bind(&format!("exp_{method}"), params, args, &none)?;
            check_db(sim, &a[0])?;
            Ok(Some(
                match sim.authenticate(ip, &str_arg(&a[1]), &str_arg(&a[2])) {
                    Some(uid) => Value::from(uid),
                    None => Value::Bool(false),
                },
            ))
        }
        other => Err(OdooError::new(
            names::EXCEPTION,
            format!("Method not found: {other}"),
        )),
    }
}

fn db_service(sim: &Sim, method: &str, args: &[Value]) -> Result<Option<Value>, OdooError> {
    let none = Map::new();
    match method {
        "list" => Ok(Some(json!([sim.config.db_name]))),
        "server_version" => Ok(Some(json!(format!("{}.0", sim.config.version.major())))),
        "db_exist" => {
            let a = bind("exp_db_exist", &[("db_name", true)], args, &none)?;
            Ok(Some(Value::Bool(
                a[0].as_str() == Some(sim.config.db_name.as_str()),
            )))
        }
        other => Err(OdooError::key_error(&format!("Method not found: {other}"))),
    }
}

/// The object call after faults: auth, then `execute_kw` / `execute`.
fn object(sim: &Sim, ip: IpAddr, method: &str, args: &[Value]) -> Result<Option<Value>, OdooError> {
    if args.len() < 3 {
        return Err(OdooError::new(
            names::INDEX_ERROR,
            "list index out of range",
        ));
    }
    let uid = py_int(&args[1])?;
    check_db(sim, &args[0])?;
    sim.check_key(ip, uid, &str_arg(&args[2]))?;
    let rest = &args[3..];
    let none = Map::new();
    match method {
        "execute_kw" => {
            let a = bind(
                "execute_kw",
                &[
                    ("obj", true),
                    ("method", true),
                    ("args", true),
                    ("kw", false),
                ],
                rest,
                &none,
            )?;
            let call_args = match &a[2] {
                Value::Array(v) => v.clone(),
                other => {
                    return Err(OdooError::type_error(format!(
                        "odoo.service.model.execute() argument after * must be an iterable, not {}",
                        py_type(other)
                    )))
                }
            };
            let kwargs = match &a[3] {
                Value::Object(m) => m.clone(),
                Value::Null | Value::Bool(false) => Map::new(),
                other => {
                    return Err(OdooError::type_error(format!(
                        "odoo.service.model.execute() argument after ** must be a mapping, not {}",
                        py_type(other)
                    )))
                }
            };
            sim.execute_kw(uid, &str_arg(&a[0]), &str_arg(&a[1]), call_args, kwargs)
        }
        "execute" => {
            if rest.len() < 2 {
                return Err(OdooError::type_error(format!(
                    "execute() missing {} required positional argument{}",
                    2 - rest.len(),
                    if rest.len() == 1 {
                        ": 'method'"
                    } else {
                        "s: 'obj' and 'method'"
                    }
                )));
            }
            sim.execute_kw(
                uid,
                &str_arg(&rest[0]),
                &str_arg(&rest[1]),
                rest[2..].to_vec(),
                Map::new(),
            )
        }
        other => Err(OdooError::new(
            names::NAME_ERROR,
            format!("Method not available {other}"),
        )),
    }
}

/// Serve one parsed `/jsonrpc` request from `ip`.
pub async fn handle(sim: &Sim, ip: IpAddr, req: RpcRequest) -> Outcome {
    sim.count_rpc();
    let version = sim.config.version;
    let reply = |r: Result<Option<Value>, OdooError>| match r {
        Ok(v) => Outcome::Reply(envelope::success(&req.id, v)),
        Err(e) => {
            tracing::debug!(error = %e, "rpc error");
            Outcome::Reply(envelope::error(&req.id, &e, version))
        }
    };
    let p = &req.params;
    let missing: Vec<(&str, bool)> = ["service", "method", "args"]
        .into_iter()
        .filter(|k| !p.contains_key(*k))
        .map(|k| (k, true))
        .collect();
    if !missing.is_empty() {
        return reply(bind("jsonrpc", &missing, &[], &Map::new()).map(|_| None));
    }
    let service = str_arg(&p["service"]);
    let method = str_arg(&p["method"]);
    let args: Vec<Value> = match &p["args"] {
        Value::Array(a) => a.clone(),
        other => {
            return reply(Err(OdooError::type_error(format!(
                "dispatch() argument after * must be an iterable, not {}",
                py_type(other)
            ))))
        }
    };
    match service.as_str() {
        "common" => reply(common(sim, ip, &method, &args)),
        "db" => reply(db_service(sim, &method, &args)),
        "object" => {
            let target = match method.as_str() {
                "execute_kw" | "execute" => args.get(3).zip(args.get(4)),
                _ => None,
            };
            if let Some((Value::String(m), Value::String(f))) = target {
                sim.count_call(m, f);
            }
            let (fault, latency) = sim.take_fault();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            match fault {
                FaultAction::None => reply(object(sim, ip, &method, &args)),
                FaultAction::Http500 => Outcome::Http500,
                FaultAction::SerializationFailure => reply(Err(OdooError::serialization_failure())),
                FaultAction::DropBeforeCommit => Outcome::Drop,
                FaultAction::DropAfterCommit => {
                    let result = object(sim, ip, &method, &args);
                    tracing::debug!(
                        committed = result.is_ok(),
                        "dropping the connection after the call"
                    );
                    Outcome::Drop
                }
            }
        }
        other => reply(Err(OdooError::key_error(other))),
    }
}

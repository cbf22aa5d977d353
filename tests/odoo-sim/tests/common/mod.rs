//! Shared helpers of the picking and JSON-2 integration tests: start the real simulator binary
//! on port 0, call it over HTTP (JSON-RPC, JSON-2, `/__sim/*`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

pub const KEY: &str = "test-api-key";
pub const DB: &str = "scanbridge";

/// A running simulator process, killed on drop.
pub struct SimProcess {
    child: Child,
    pub base: String,
    pub addr: String,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(version: &str) -> SimProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_scanbridge-odoo-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--odoo-version",
            version,
            "--db",
            DB,
            "--login",
            "scanbridge",
            "--api-key",
            KEY,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the simulator: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("reading stdout: {e}"));
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    SimProcess {
        child,
        base: format!("http://{addr}"),
        addr,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"))
}

/// `object.execute_kw` over `/jsonrpc`; the whole envelope.
pub async fn execute_kw(
    sim: &SimProcess,
    model: &str,
    method: &str,
    args: Value,
    kwargs: Value,
) -> Value {
    let body = json!({"jsonrpc": "2.0", "method": "call", "id": 1, "params": {
        "service": "object", "method": "execute_kw",
        "args": [DB, 2, KEY, model, method, args, kwargs]}});
    let resp = client()
        .post(format!("{}/jsonrpc", sim.base))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{model}.{method}: {e}"));
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap_or_else(|e| panic!("json: {e}"))
}

/// `execute_kw` that must succeed; its `result` (`null` when absent).
pub async fn call(
    sim: &SimProcess,
    model: &str,
    method: &str,
    args: Value,
    kwargs: Value,
) -> Value {
    let v = execute_kw(sim, model, method, args, kwargs).await;
    assert!(v.get("error").is_none(), "{model}.{method} failed: {v}");
    v.get("result").cloned().unwrap_or(Value::Null)
}

/// `execute_kw` that must fail; `error.data`.
pub async fn call_err(
    sim: &SimProcess,
    model: &str,
    method: &str,
    args: Value,
    kwargs: Value,
) -> Value {
    let v = execute_kw(sim, model, method, args, kwargs).await;
    v.get("error")
        .map(|e| e["data"].clone())
        .unwrap_or_else(|| panic!("{model}.{method} should have failed: {v}"))
}

/// `POST /json/2/<model>/<method>` with the right key: (status, body, headers).
pub async fn json2(sim: &SimProcess, model: &str, method: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(format!("{}/json/2/{model}/{method}", sim.base))
        .header("Authorization", format!("bearer {KEY}"))
        .header("X-Odoo-Database", DB)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("json2 {model}.{method}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub async fn seed(sim: &SimProcess, body: Value) -> Value {
    let resp = client()
        .post(format!("{}/__sim/seed", sim.base))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("seed: {e}"));
    let status = resp.status();
    let v: Value = resp
        .json()
        .await
        .unwrap_or_else(|e| panic!("seed json: {e}"));
    assert_eq!(status, 200, "seed refused: {v}");
    v
}

pub async fn faults(sim: &SimProcess, body: Value) {
    let resp = client()
        .post(format!("{}/__sim/faults", sim.base))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("faults: {e}"));
    assert_eq!(resp.status(), 200);
}

pub async fn state(sim: &SimProcess) -> Value {
    client()
        .get(format!("{}/__sim/state", sim.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("state: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("state json: {e}"))
}

/// The `/__sim/state` entry of `list` with this id.
pub fn by_id<'a>(list: &'a Value, id: &Value) -> &'a Value {
    list.as_array()
        .and_then(|a| a.iter().find(|r| &r["id"] == id))
        .unwrap_or_else(|| panic!("no record {id} in {list}"))
}

/// Quantity on hand of a product in a location (sum of quants).
pub fn on_hand(state: &Value, product: &Value, location: &Value) -> f64 {
    state["quants"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|q| &q["product_id"] == product && &q["location_id"] == location)
                .map(|q| q["quantity"].as_f64().unwrap_or(0.0))
                .sum()
        })
        .unwrap_or(0.0)
}

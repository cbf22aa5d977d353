//! The Odoo simulator (`scanbridge-odoo-sim`) as a child process, and a typed client for its
//! test-control endpoints (`/__sim/seed`, `/__sim/state`, `/__sim/faults`) per CONTRACTS.md.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::bins;
use crate::error::{HarnessError, Result};
use crate::process::{wait_for_line, ChildProcess, LogPaths};

/// Database name the harness uses everywhere.
pub const DATABASE: &str = "scanbridge";
/// Login the harness uses everywhere.
pub const LOGIN: &str = "scanbridge";

/// How long the simulator may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How to start the simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// `--odoo-version`: 17, 18 or 19.
    pub odoo_version: String,
    /// `--api-key`.
    pub api_key: String,
    /// `--demo-data`.
    pub demo_data: bool,
    /// `RUST_LOG` for the child.
    pub rust_log: String,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            odoo_version: "17".into(),
            api_key: "e2e-odoo-api-key-0123456789abcdef".into(),
            demo_data: false,
            rust_log: "info".into(),
        }
    }
}

/// A product to seed.
#[derive(Debug, Clone, Serialize)]
pub struct SeedProduct {
    pub barcode: String,
    pub name: String,
}

/// A location to seed (created as an internal child of WH/Stock).
#[derive(Debug, Clone, Serialize)]
pub struct SeedLocation {
    pub barcode: String,
    pub name: String,
}

/// `POST /__sim/seed` body.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SeedRequest {
    pub products: Vec<SeedProduct>,
    pub locations: Vec<SeedLocation>,
}

/// `POST /__sim/seed` answer: database ids by barcode.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SeedResponse {
    pub products: BTreeMap<String, i64>,
    pub locations: BTreeMap<String, i64>,
}

/// `POST /__sim/faults` body; the next N `execute_kw` calls fail that way.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Faults {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_500_next: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serialization_failure_next: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_after_commit_next: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_before_commit_next: Option<u32>,
}

/// A many2one value as Odoo writes it: an id, `[id, "display name"]`, or `false`.
fn many2one<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::Array(a) => a.first().and_then(|x| x.as_i64()),
        _ => None,
    })
}

/// One `stock.quant` row of `/__sim/state`.
#[derive(Debug, Clone, Deserialize)]
pub struct Quant {
    pub id: i64,
    #[serde(deserialize_with = "many2one")]
    pub product_id: Option<i64>,
    #[serde(deserialize_with = "many2one")]
    pub location_id: Option<i64>,
    #[serde(default, deserialize_with = "many2one")]
    pub lot_id: Option<i64>,
    pub quantity: f64,
    #[serde(default)]
    pub inventory_quantity: f64,
    #[serde(default)]
    pub inventory_quantity_set: bool,
}

/// One `stock.move` row of `/__sim/state`.
#[derive(Debug, Clone, Deserialize)]
pub struct Move {
    pub id: i64,
    #[serde(default)]
    pub name: String,
    #[serde(deserialize_with = "many2one")]
    pub product_id: Option<i64>,
    #[serde(deserialize_with = "many2one")]
    pub location_id: Option<i64>,
    #[serde(deserialize_with = "many2one")]
    pub location_dest_id: Option<i64>,
    pub product_uom_qty: f64,
    #[serde(default)]
    pub quantity: f64,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub is_inventory: bool,
    #[serde(default)]
    pub reference: serde_json::Value,
}

/// One `ir.model.data` row of `/__sim/state`.
#[derive(Debug, Clone, Deserialize)]
pub struct XmlId {
    pub module: String,
    pub name: String,
    pub model: String,
    pub res_id: i64,
}

/// A product or location with a barcode, as `/__sim/state` lists them.
#[derive(Debug, Clone, Deserialize)]
pub struct BarcodeRecord {
    pub id: i64,
    pub barcode: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub usage: Option<String>,
}

/// `GET /__sim/state`.
#[derive(Debug, Clone, Deserialize)]
pub struct SimState {
    /// Products with a barcode (the simulator lists them beyond the contract; empty otherwise).
    #[serde(default)]
    pub products: Vec<BarcodeRecord>,
    /// Locations with a barcode (likewise).
    #[serde(default)]
    pub locations: Vec<BarcodeRecord>,
    pub quants: Vec<Quant>,
    pub moves: Vec<Move>,
    #[serde(default)]
    pub xmlids: Vec<XmlId>,
    #[serde(default)]
    pub calls: BTreeMap<String, u64>,
    #[serde(default)]
    pub rpc_total: u64,
}

impl SimState {
    /// The quant of `(product, location)` without lot, if any.
    pub fn quant(&self, product: i64, location: i64) -> Option<&Quant> {
        self.quants.iter().find(|q| {
            q.product_id == Some(product) && q.location_id == Some(location) && q.lot_id.is_none()
        })
    }

    /// The id of the virtual "Inventory adjustment" location, when the simulator registers the
    /// xmlid real Odoo has for it (`stock.stock_location_inventory` or `stock.location_inventory`).
    pub fn inventory_location_id(&self) -> Option<i64> {
        self.xmlids
            .iter()
            .find(|x| {
                x.module == "stock"
                    && x.model == "stock.location"
                    && (x.name == "stock_location_inventory" || x.name == "location_inventory")
            })
            .map(|x| x.res_id)
    }
}

/// A running Odoo simulator.
pub struct OdooSim {
    process: ChildProcess,
    url: String,
    api_key: String,
    http: reqwest::Client,
}

impl OdooSim {
    /// Starts the simulator on a port of its choosing and waits for its `listening on` line.
    pub async fn start(dir: &Path, opts: &SimOptions) -> Result<OdooSim> {
        let program = bins::binary(bins::ODOO_SIM)?;
        let mut cmd = Command::new(&program);
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--odoo-version",
            &opts.odoo_version,
        ])
        .args([
            "--db",
            DATABASE,
            "--login",
            LOGIN,
            "--api-key",
            &opts.api_key,
        ])
        .env("RUST_LOG", &opts.rust_log);
        if opts.demo_data {
            cmd.arg("--demo-data");
        }
        let logs = LogPaths::in_dir(dir, "odoo-sim");
        let mut process = ChildProcess::spawn("the Odoo simulator", cmd, logs.clone())?;
        let addr = wait_for_line(
            &logs.stdout,
            &mut process,
            START_TIMEOUT,
            "the Odoo simulator's `listening on 127.0.0.1:PORT` line on stdout",
            parse_listening_line,
        )
        .await?;
        // A state dump after a million-event drain is hundreds of megabytes: allow for it.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(180))
            .build()
            .map_err(|source| HarnessError::Http {
                url: addr.clone(),
                source,
            })?;
        Ok(OdooSim {
            process,
            url: format!("http://{addr}"),
            api_key: opts.api_key.clone(),
            http,
        })
    }

    /// `http://127.0.0.1:PORT`, what the relay's `[odoo] url` points at.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The API key the simulator accepts.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The simulator process.
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }

    /// `POST /__sim/seed`.
    pub async fn seed(&self, req: &SeedRequest) -> Result<SeedResponse> {
        let body = self.post("/__sim/seed", req).await?;
        serde_json::from_slice(&body).map_err(|source| HarnessError::Json {
            what: "POST /__sim/seed".into(),
            source,
        })
    }

    /// `GET /__sim/state`.
    pub async fn state(&self) -> Result<SimState> {
        let url = format!("{}/__sim/state", self.url);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| HarnessError::Http {
                url: url.clone(),
                source,
            })?;
        let body = checked_body(&url, resp).await?;
        serde_json::from_slice(&body).map_err(|source| HarnessError::Json {
            what: "GET /__sim/state".into(),
            source,
        })
    }

    /// `POST /__sim/faults`.
    pub async fn faults(&self, faults: &Faults) -> Result<()> {
        self.post("/__sim/faults", faults).await.map(|_| ())
    }

    /// An Odoo JSON-RPC `execute_kw` call through `/jsonrpc`, as an integrator would make it
    /// (used by the demo to list the demo data's products and locations).
    pub async fn execute_kw(
        &self,
        uid: i64,
        model: &str,
        method: &str,
        args: serde_json::Value,
        kwargs: serde_json::Value,
    ) -> Result<serde_json::Value> {
        self.jsonrpc(
            "object",
            "execute_kw",
            serde_json::json!([DATABASE, uid, self.api_key, model, method, args, kwargs]),
        )
        .await
    }

    /// `common.authenticate` through `/jsonrpc`: the uid, or `None` if refused.
    pub async fn authenticate(&self) -> Result<Option<i64>> {
        let v = self
            .jsonrpc(
                "common",
                "authenticate",
                serde_json::json!([DATABASE, LOGIN, self.api_key, {}]),
            )
            .await?;
        Ok(v.as_i64())
    }

    async fn jsonrpc(
        &self,
        service: &str,
        method: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value> {
        let body = serde_json::json!({"jsonrpc":"2.0","method":"call","id":1,
            "params":{"service":service,"method":method,"args":args}});
        let raw = self.post("/jsonrpc", &body).await?;
        let v: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|source| HarnessError::Json {
                what: format!("/jsonrpc {service}.{method}"),
                source,
            })?;
        if let Some(err) = v.get("error") {
            return Err(HarnessError::HttpStatus {
                url: format!("{}/jsonrpc ({service}.{method})", self.url),
                status: 200,
                body: err.to_string(),
            });
        }
        Ok(v.get("result").cloned().unwrap_or(serde_json::Value::Null))
    }

    async fn post<T: Serialize>(&self, path: &str, body: &T) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.url);
        let resp = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|source| HarnessError::Http {
                url: url.clone(),
                source,
            })?;
        checked_body(&url, resp).await
    }
}

async fn checked_body(url: &str, resp: reqwest::Response) -> Result<Vec<u8>> {
    let status = resp.status();
    let body = resp.bytes().await.map_err(|source| HarnessError::Http {
        url: url.to_string(),
        source,
    })?;
    if !status.is_success() {
        return Err(HarnessError::HttpStatus {
            url: url.to_string(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok(body.to_vec())
}

/// `127.0.0.1:PORT` from the line `listening on 127.0.0.1:PORT`.
pub fn parse_listening_line(line: &str) -> Option<String> {
    let addr = line.trim().strip_prefix("listening on ")?.trim();
    addr.parse::<std::net::SocketAddr>().ok()?;
    Some(addr.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_yields_the_socket_address() {
        assert_eq!(
            parse_listening_line("listening on 127.0.0.1:40123\n").as_deref(),
            Some("127.0.0.1:40123")
        );
        assert_eq!(parse_listening_line("listening on nowhere"), None);
        assert_eq!(parse_listening_line("starting"), None);
    }

    #[test]
    fn state_rows_accept_many2one_as_id_pair_or_false() {
        let state: SimState = serde_json::from_value(serde_json::json!({
            "quants":[{"id":1,"product_id":[7,"Widget"],"location_id":9,"lot_id":false,
                       "quantity":3.0,"inventory_quantity":0.0,"inventory_quantity_set":false}],
            "moves":[{"id":2,"name":"scanbridge:WH01:1-3","product_id":7,"location_id":[14,"Inv"],
                      "location_dest_id":9,"product_uom_qty":3.0,"quantity":3.0,"state":"done",
                      "is_inventory":true,"reference":false}],
            "xmlids":[], "calls":{"stock.quant.load":1}, "rpc_total":4
        }))
        .expect("state");
        assert_eq!(state.quant(7, 9).map(|q| q.quantity), Some(3.0));
        assert_eq!(state.moves[0].location_id, Some(14));
        assert_eq!(state.quants[0].lot_id, None);
    }
}

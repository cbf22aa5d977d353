//! Support for the flow tests: the Odoo simulator (`scanbridge-odoo-sim`, built by
//! `cargo build --workspace --bins`, which `tests/run.sh` does first) as a child process with its
//! test-control endpoints, and a relay started in-process with `[odoo]` flow keys.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::{start_with_config, Harness};

pub const KEY: &str = "test-key";

/// The simulator binary next to this test executable (`target/<profile>/`).
fn sim_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let bin = dir.join("scanbridge-odoo-sim");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

/// A running simulator; killed when dropped.
pub struct Sim {
    child: Child,
    pub url: String,
    pub version: String,
    http: reqwest::Client,
}

impl Sim {
    /// Starts the simulator on a port from the OS (or on `listen`, to restart on the same one).
    pub async fn start(version: &str) -> Sim {
        Sim::start_on(version, "127.0.0.1:0").await
    }

    pub async fn start_on(version: &str, listen: &str) -> Sim {
        let mut child = Command::new(sim_binary())
            .args([
                "--listen",
                listen,
                "--odoo-version",
                version,
                "--db",
                "scanbridge",
                "--login",
                "scanbridge",
                "--api-key",
                KEY,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn scanbridge-odoo-sim");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("simulator prints its address within 30 s")
            .expect("read stdout")
            .expect("a line");
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim()
            .to_string();
        Sim {
            child,
            url: format!("http://{addr}"),
            version: version.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// The `host:port` the simulator listens on.
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    /// Stops the process and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }

    pub async fn seed(&self, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/__sim/seed", self.url))
            .json(&body)
            .send()
            .await
            .expect("seed");
        let status = r.status();
        let value: Value = r.json().await.expect("seed answer");
        assert!(status.is_success(), "seed refused: {value}");
        value
    }

    pub async fn state(&self) -> Value {
        self.http
            .get(format!("{}/__sim/state", self.url))
            .send()
            .await
            .expect("state")
            .json()
            .await
            .expect("state json")
    }

    pub async fn faults(&self, body: Value) {
        let r = self
            .http
            .post(format!("{}/__sim/faults", self.url))
            .json(&body)
            .send()
            .await
            .expect("faults");
        assert!(r.status().is_success());
    }

    /// Object calls received so far for `model.method`.
    pub async fn calls(&self, model_method: &str) -> u64 {
        self.state().await["calls"][model_method]
            .as_u64()
            .unwrap_or(0)
    }
}

/// Starts a relay whose `[odoo]` section points at `odoo_url` and ends with `odoo_extra`
/// (flow keys, `[[odoo.stations]]`, `[[odoo.readings]]`).
pub async fn start_relay_with(odoo_url: &str, odoo_extra: &str) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    scanbridge_relay::ca::init(
        &dir.path().join("ca"),
        &["localhost".into()],
        &["127.0.0.1".parse().expect("ip")],
    )
    .expect("ca init");
    std::fs::write(dir.path().join("odoo-api-key"), format!("{KEY}\n")).expect("write key");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\n[tls]\nserver_cert = \"ca/server.pem\"\nserver_key = \"ca/server.key\"\nclient_ca = \"ca/ca.pem\"\n[odoo]\nurl = \"{odoo_url}\"\ndatabase = \"scanbridge\"\nlogin = \"scanbridge\"\napi_key_file = \"odoo-api-key\"\ntimeout_secs = 5\n{odoo_extra}\n"
    );
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, text).expect("write config");
    start_with_config(Arc::new(dir), &path).await
}

/// Records with `key == value` in one `/__sim/state` list.
pub fn rows<'a>(state: &'a Value, list: &str, key: &str, value: &Value) -> Vec<&'a Value> {
    state[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| &r[key] == value)
        .collect()
}

/// `json!` shortcut for ids from seed answers.
pub fn id(v: &Value) -> Value {
    json!(v.as_i64().expect("an id"))
}

/// A pass-through HTTP proxy in front of the simulator that records how many calls are in
/// flight at once and when each arrived (for the concurrency and rate tests).
pub struct Proxy {
    pub url: String,
    pub stats: Arc<std::sync::Mutex<ProxyStats>>,
}

#[derive(Debug, Default)]
pub struct ProxyStats {
    pub in_flight: usize,
    pub max_in_flight: usize,
    pub arrivals: Vec<std::time::Instant>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        use axum::body::Bytes;
        use axum::extract::State;
        use axum::http::HeaderMap;
        use axum::http::Uri;
        use axum::response::IntoResponse;

        type S = (String, reqwest::Client, Arc<std::sync::Mutex<ProxyStats>>);
        async fn forward(
            State((upstream, http, stats)): State<S>,
            uri: Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> axum::response::Response {
            {
                let mut s = stats.lock().unwrap();
                s.in_flight += 1;
                s.max_in_flight = s.max_in_flight.max(s.in_flight);
                s.arrivals.push(std::time::Instant::now());
            }
            let mut request = http.post(format!("{upstream}{}", uri.path())).body(body);
            for name in ["content-type", "authorization", "x-odoo-database"] {
                if let Some(v) = headers.get(name) {
                    request = request.header(name, v.as_bytes());
                }
            }
            let result = request.send().await;
            let response = match result {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let bytes = r.bytes().await.unwrap_or_default();
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        [("content-type", "application/json")],
                        bytes,
                    )
                        .into_response()
                }
                Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
            };
            stats.lock().unwrap().in_flight -= 1;
            response
        }

        let stats = Arc::new(std::sync::Mutex::new(ProxyStats::default()));
        let app = axum::Router::new()
            .fallback(axum::routing::post(forward))
            .with_state((upstream.to_string(), reqwest::Client::new(), stats.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy {
            url: format!("http://{addr}"),
            stats,
        }
    }
}

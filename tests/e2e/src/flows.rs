//! A world for the warehouse-flow scenarios (`tests/warehouse_flows.rs`): mosquitto, the Odoo
//! simulator, the relay with `[[odoo.stations]]`, `[[odoo.readings]]` and its `[admin]` listener,
//! and the agent with `[[stations]]`, the text and Kepware formats, `[[tags]]` and `[[serial]]`
//! ports, all as separate processes. Owns the configuration those sections need (the shared
//! [`crate::stack::Stack`] writes only the count-flow configuration), raw-JSON access to the
//! simulator's picking state, the relay's admin API (event outcomes, dead letters) and its
//! `dead-letters replay` CLI, and pseudo-terminals standing in for serial scanners.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, PtyMaster};
use serde_json::Value;

use crate::agent::{agent_config, check_config, AgentOptions};
use crate::bins;
use crate::error::{HarnessError, Result};
use crate::mosquitto::Mosquitto;
use crate::odoo_sim::{OdooSim, SimOptions};
use crate::process::{free_port, wait_for_line, wait_for_tcp, ChildProcess, LogPaths, StateDir};
use crate::publisher::preregister_session;
use crate::relay::{ca_init, ca_issue, relay_config, toml_string, CaDir, RelayOptions};

/// How long a process may take to come up on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Admin token of the relay in these worlds (at least 16 characters).
const ADMIN_TOKEN: &str = "e2e-flows-admin-token-0123456789";

/// A PLC tag as the agent maps it (`[[tags]]`) and the relay writes it (`[[odoo.readings]]`).
#[derive(Debug, Clone)]
pub struct TagMapping {
    /// The Kepware tag id in the payload (`Channel1.Scale1.Weight`).
    pub id: String,
    /// The reading's tag (`scale1.weight`).
    pub tag: String,
    /// The reading's device (`SCALE-1`).
    pub device: String,
    /// The scanner whose open picking gets the value.
    pub target_device: String,
    /// The `stock.picking` field written.
    pub field: String,
}

/// A `[[serial]]` port of the agent.
#[derive(Debug, Clone)]
pub struct SerialPort {
    pub name: String,
    pub path: PathBuf,
    pub device: String,
}

/// What the flow world is configured with.
#[derive(Debug, Clone)]
pub struct FlowOptions {
    pub site: String,
    pub odoo_version: String,
    /// Extra `[odoo]` keys, one `key = value` a line (`api = "json2"`, `version = "19"`).
    pub odoo_keys: String,
    /// Agent `[[stations]]`: (device, op).
    pub stations: Vec<(String, String)>,
    /// Relay `[[odoo.stations]]`: (device, backorder).
    pub backorder: Vec<(String, bool)>,
    pub tags: Vec<TagMapping>,
    pub serial: Vec<SerialPort>,
    pub rust_log: String,
}

impl Default for FlowOptions {
    fn default() -> Self {
        FlowOptions {
            site: "WH01".into(),
            odoo_version: "17".into(),
            odoo_keys: String::new(),
            stations: Vec::new(),
            backorder: Vec::new(),
            tags: Vec::new(),
            serial: Vec::new(),
            rust_log: "info".into(),
        }
    }
}

/// The MQTT topics the agent subscribes to: canonical JSON, plain text, Kepware tag JSON.
pub const TOPICS: [&str; 3] = ["scanbridge/+/scan", "scanners/+/raw", "plc/+/tags"];

/// `scanners/<device>/raw`, read with the `text` format.
pub fn text_topic(device: &str) -> String {
    format!("scanners/{device}/raw")
}

/// `plc/<line>/tags`, read with the `kepware` format.
pub fn tags_topic(line: &str) -> String {
    format!("plc/{line}/tags")
}

/// The relay configuration's flow and admin sections, appended after its `[odoo]` keys.
pub fn relay_extra(opts: &FlowOptions, admin_port: u16, token_file: &Path) -> String {
    let mut conf = opts.odoo_keys.clone();
    if !conf.is_empty() && !conf.ends_with('\n') {
        conf.push('\n');
    }
    for (device, backorder) in &opts.backorder {
        conf.push_str(&format!(
            "\n[[odoo.stations]]\nsite = {}\ndevice = {}\nbackorder = {backorder}\n",
            toml_string(&opts.site),
            toml_string(device)
        ));
    }
    for t in &opts.tags {
        conf.push_str(&format!(
            "\n[[odoo.readings]]\ntag = {}\nmodel = \"stock.picking\"\nfield = {}\ndevice = {}\n",
            toml_string(&t.tag),
            toml_string(&t.field),
            toml_string(&t.target_device)
        ));
    }
    conf.push_str(&format!(
        "\n[admin]\nlisten = {}\ntoken_file = {}\n",
        toml_string(&format!("127.0.0.1:{admin_port}")),
        toml_string(&token_file.to_string_lossy())
    ));
    conf
}

/// The agent configuration's format rules, stations, tags and serial ports, appended after its
/// one `[[mqtt]]` broker.
pub fn agent_extra(opts: &FlowOptions) -> String {
    let mut conf = String::from(
        "\n[[mqtt.formats]]\nfilter = \"scanners/+/raw\"\nformat = \"text\"\ndevice_level = 1\n\
         \n[[mqtt.formats]]\nfilter = \"plc/+/tags\"\nformat = \"kepware\"\n",
    );
    for (device, op) in &opts.stations {
        conf.push_str(&format!(
            "\n[[stations]]\ndevice = {}\nop = {}\n",
            toml_string(device),
            toml_string(op)
        ));
    }
    for t in &opts.tags {
        conf.push_str(&format!(
            "\n[[tags]]\nid = {}\ntag = {}\nunit = \"kg\"\ndevice = {}\n",
            toml_string(&t.id),
            toml_string(&t.tag),
            toml_string(&t.device)
        ));
    }
    for s in &opts.serial {
        conf.push_str(&format!(
            "\n[[serial]]\nname = {}\npath = {}\nbaud = 9600\nframing = \"cr\"\ndevice = {}\naim = true\n",
            toml_string(&s.name),
            toml_string(&s.path.to_string_lossy()),
            toml_string(&s.device)
        ));
    }
    conf
}

/// What [`FlowStack::wait_until`] polls.
#[derive(Debug, Clone)]
pub enum Probe {
    /// The site's events with outcomes (a JSON array, oldest first).
    Events,
    /// `/__sim/state`.
    State,
    /// A text document at this URL (a JSON string).
    Text(String),
}

/// Every process of a flow world, killed on drop (the state directory last).
pub struct FlowStack {
    pub agent: ChildProcess,
    pub relay: ChildProcess,
    pub sim: OdooSim,
    pub mosquitto: Mosquitto,
    pub site: String,
    relay_config: PathBuf,
    relay_port: u16,
    rust_log: String,
    admin_url: String,
    agent_status_url: String,
    admin_http: reqwest::Client,
    http: reqwest::Client,
    /// Declared last so it is dropped after every process (and kept if a test panics).
    pub dir: StateDir,
}

impl FlowStack {
    /// Brings the world up in `dir`; `seed` (a `/__sim/seed` body) is applied before the relay
    /// starts. A failed step keeps the directory for its logs.
    pub async fn start(mut dir: StateDir, opts: &FlowOptions, seed: &Value) -> Result<FlowStack> {
        match FlowStack::start_in(&dir, opts, seed).await {
            Ok(p) => Ok(FlowStack {
                agent: p.agent,
                relay: p.relay,
                sim: p.sim,
                mosquitto: p.mosquitto,
                site: p.site,
                relay_config: p.relay_config,
                relay_port: p.relay_port,
                rust_log: p.rust_log,
                admin_url: p.admin_url,
                agent_status_url: p.agent_status_url,
                admin_http: p.admin_http,
                http: p.http,
                dir,
            }),
            Err(e) => {
                dir.keep_for_diagnosis();
                Err(e)
            }
        }
    }

    async fn start_in(dir: &StateDir, opts: &FlowOptions, seed: &Value) -> Result<Parts> {
        let root = dir.path().to_path_buf();
        let mosquitto = Mosquitto::start(&root).await?;
        let sim = OdooSim::start(
            &root,
            &SimOptions {
                odoo_version: opts.odoo_version.clone(),
                ..SimOptions::default()
            },
        )
        .await?;
        let http = client(None)?;
        post_json(&http, &format!("{}/__sim/seed", sim.url()), seed).await?;

        let ca = ca_init(&dir.subdir("ca")?).await?;
        let bundle = ca_issue(
            &ca,
            &opts.site,
            &dir.subdir(&format!("site-{}", opts.site))?,
        )
        .await?;
        let (relay, relay_port, relay_config, admin_port) =
            start_relay(&root, &ca, opts, sim.url(), sim.api_key()).await?;
        let admin_url = format!("https://127.0.0.1:{admin_port}");
        let ca_pem =
            std::fs::read(ca.ca_cert()).map_err(|e| HarnessError::io("read", ca.ca_cert(), e))?;
        let admin_http = client(Some(&ca_pem))?;

        let mut agent_opts = AgentOptions::new(
            bundle,
            format!("https://127.0.0.1:{relay_port}"),
            mosquitto.port(),
        );
        agent_opts.topics = TOPICS.iter().map(|t| t.to_string()).collect();
        agent_opts.rust_log = opts.rust_log.clone();
        agent_opts.retry_max_ms = Some(500);
        let agent_status_url = agent_opts
            .status_url()
            .ok_or_else(|| HarnessError::Setup("no free port for the agent status API".into()))?;
        preregister_session(mosquitto.port(), &agent_opts.client_id, &agent_opts.topics).await?;
        let state_dir = dir.subdir("agent-state")?;
        let config_path = root.join("agent.toml");
        let text = agent_config(&state_dir, &agent_opts) + &agent_extra(opts);
        std::fs::write(&config_path, text)
            .map_err(|e| HarnessError::io("write", &config_path, e))?;
        check_config(&config_path).await?;
        let mut cmd = Command::new(bins::binary(bins::AGENT)?);
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", &opts.rust_log);
        let agent = ChildProcess::spawn("the agent", cmd, LogPaths::in_dir(&root, "agent"))?;
        Ok(Parts {
            agent,
            relay,
            sim,
            mosquitto,
            site: opts.site.clone(),
            relay_config,
            relay_port,
            rust_log: opts.rust_log.clone(),
            admin_url,
            agent_status_url,
            admin_http,
            http,
        })
    }

    /// SIGKILLs the relay and starts it again with the same configuration (same ports, same
    /// relay.redb), waiting for its listeners.
    pub async fn kill_and_restart_relay(&mut self) -> Result<()> {
        self.relay.kill_hard()?;
        self.relay = spawn_relay(
            &self.relay_config,
            self.dir.path(),
            self.relay_port,
            &self.rust_log,
        )
        .await?;
        let admin: std::net::SocketAddr = self
            .admin_url
            .trim_start_matches("https://")
            .parse()
            .map_err(|_| HarnessError::Setup(format!("admin url {}", self.admin_url)))?;
        wait_for_tcp(admin, &mut self.relay, START_TIMEOUT).await
    }

    /// Fails with the log to read if any process has died.
    pub fn ensure_all_running(&mut self) -> Result<()> {
        self.mosquitto.process().ensure_running()?;
        self.sim.process().ensure_running()?;
        self.relay.ensure_running()?;
        self.agent.ensure_running()
    }

    /// `POST /__sim/seed` with a raw body; the answer (ids by barcode / name).
    pub async fn seed(&self, body: &Value) -> Result<Value> {
        post_json(&self.http, &format!("{}/__sim/seed", self.sim.url()), body).await
    }

    /// `POST /__sim/faults` with a raw body.
    pub async fn faults(&self, body: &Value) -> Result<Value> {
        post_json(
            &self.http,
            &format!("{}/__sim/faults", self.sim.url()),
            body,
        )
        .await
    }

    /// `GET /__sim/state` as raw JSON (pickings, move lines, lots, calls, ...).
    pub async fn state(&self) -> Result<Value> {
        get_json(&self.http, &format!("{}/__sim/state", self.sim.url()), None).await
    }

    /// The relay admin API `GET <path>` with the admin token.
    pub async fn admin_get(&self, path: &str) -> Result<Value> {
        get_json(
            &self.admin_http,
            &format!("{}{path}", self.admin_url),
            Some(ADMIN_TOKEN),
        )
        .await
    }

    /// The site's events with their outcomes (`/v1/sites/<site>/events`), oldest first.
    pub async fn events(&self) -> Result<Vec<Value>> {
        let v = self
            .admin_get(&format!("/v1/sites/{}/events?limit=1000", self.site))
            .await?;
        let mut list = v.as_array().cloned().unwrap_or_default();
        list.sort_by_key(|e| e["seq"].as_u64().unwrap_or(0));
        Ok(list)
    }

    /// The site's dead letters (`/v1/dead-letters?site=`).
    pub async fn dead_letters(&self) -> Result<Vec<Value>> {
        let v = self
            .admin_get(&format!("/v1/dead-letters?site={}", self.site))
            .await?;
        Ok(match v {
            Value::Array(list) => list,
            other => other["dead_letters"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// `scanbridge-relay dead-letters replay --config <relay.toml> <site> <seq>`; its stdout.
    pub async fn replay_with_cli(&self, seq: u64) -> Result<String> {
        let program = bins::binary(bins::RELAY)?;
        let config = self.relay_config.to_string_lossy().into_owned();
        let seq_text = seq.to_string();
        let args = [
            "dead-letters",
            "replay",
            "--config",
            config.as_str(),
            self.site.as_str(),
            seq_text.as_str(),
        ];
        let out = tokio::process::Command::new(&program)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .await
            .map_err(|source| HarnessError::Spawn {
                what: "scanbridge-relay dead-letters replay".into(),
                program: program.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(HarnessError::Command {
                command: format!("scanbridge-relay {}", args.join(" ")),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn probe(&self, probe: &Probe) -> Result<Value> {
        match probe {
            Probe::Events => self.events().await.map(Value::Array),
            Probe::State => self.state().await,
            Probe::Text(url) => get_text(&self.http, url).await.map(Value::String),
        }
    }

    /// Polls `probe` until `done` holds for its value, failing after `timeout` with the last
    /// value, or early if a process died.
    pub async fn wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        probe: Probe,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_all_running()?;
            let last = self.probe(&probe).await;
            if let Ok(v) = &last {
                if done(v) {
                    return last;
                }
            }
            if Instant::now() >= deadline {
                let got = match &last {
                    Ok(v) => v.to_string(),
                    Err(e) => e.to_string(),
                };
                return Err(HarnessError::Timeout {
                    what: format!("{what} (last: {})", truncate(&got, 4000)),
                    waited: timeout,
                    look_at: self.dir.path().to_path_buf(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the relay has stored `n` events of the site and none is pending (each has
    /// an outcome: applied, dead_lettered, held or quarantined); returns them oldest first.
    pub async fn wait_outcomes(&mut self, n: usize, timeout: Duration) -> Result<Vec<Value>> {
        self.wait_until(
            timeout,
            &format!("{n} events of the site with an outcome in the relay"),
            Probe::Events,
            |v| {
                v.as_array().is_some_and(|list| {
                    list.len() >= n && list.iter().all(|e| e["outcome"] != "pending")
                })
            },
        )
        .await
        .map(|v| v.as_array().cloned().unwrap_or_default())
    }

    /// Waits until the picking named `name` is in `state` in Odoo; returns the whole state.
    pub async fn wait_picking_state(
        &mut self,
        name: &str,
        state: &str,
        timeout: Duration,
    ) -> Result<Value> {
        self.wait_until(
            timeout,
            &format!("picking {name} to be {state} in the Odoo simulator"),
            Probe::State,
            |v| picking(v, name).is_some_and(|p| p["state"] == state),
        )
        .await
    }

    /// Waits until the agent reports its serial port `name` open.
    pub async fn wait_serial_up(&mut self, name: &str, timeout: Duration) -> Result<()> {
        let url = format!("{}/metrics", self.agent_status_url);
        let want = format!("source=\"{name}\"");
        self.wait_until(
            timeout,
            &format!("the agent to open serial port {name}"),
            Probe::Text(url),
            |text| {
                text.as_str().unwrap_or("").lines().any(|l| {
                    l.starts_with("scanbridge_agent_source_up{")
                        && l.contains(&want)
                        && l.trim_end().ends_with(" 1")
                })
            },
        )
        .await
        .map(|_| ())
    }
}

/// A flow world without its directory, while it is being started.
struct Parts {
    agent: ChildProcess,
    relay: ChildProcess,
    sim: OdooSim,
    mosquitto: Mosquitto,
    site: String,
    relay_config: PathBuf,
    relay_port: u16,
    rust_log: String,
    admin_url: String,
    agent_status_url: String,
    admin_http: reqwest::Client,
    http: reqwest::Client,
}

async fn start_relay(
    root: &Path,
    ca: &CaDir,
    opts: &FlowOptions,
    odoo_url: &str,
    api_key: &str,
) -> Result<(ChildProcess, u16, PathBuf, u16)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match start_relay_on(root, ca, opts, odoo_url, api_key).await {
            // A free port can be taken before the relay binds it: retry on others (twice).
            Err(HarnessError::Exited { .. }) if attempt < 3 => continue,
            other => return other,
        }
    }
}

async fn start_relay_on(
    root: &Path,
    ca: &CaDir,
    opts: &FlowOptions,
    odoo_url: &str,
    api_key: &str,
) -> Result<(ChildProcess, u16, PathBuf, u16)> {
    let port = free_port()?;
    let admin_port = free_port()?;
    let state_dir = root.join("relay-state");
    std::fs::create_dir_all(&state_dir).map_err(|e| HarnessError::io("create", &state_dir, e))?;
    let key_file = root.join("odoo-api-key");
    std::fs::write(&key_file, format!("{api_key}\n"))
        .map_err(|e| HarnessError::io("write", &key_file, e))?;
    let token_file = root.join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n"))
        .map_err(|e| HarnessError::io("write", &token_file, e))?;
    let relay_opts = RelayOptions {
        odoo_url: odoo_url.to_string(),
        odoo_api_key: api_key.to_string(),
        max_chunk: Some(200),
        rust_log: opts.rust_log.clone(),
    };
    let config_path = root.join("relay.toml");
    let text = relay_config(port, &state_dir, ca, &key_file, &relay_opts)
        + &relay_extra(opts, admin_port, &token_file);
    std::fs::write(&config_path, text).map_err(|e| HarnessError::io("write", &config_path, e))?;
    let program = bins::binary(bins::RELAY)?;
    let check = tokio::process::Command::new(&program)
        .arg("check-config")
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .map_err(|source| HarnessError::Spawn {
            what: "scanbridge-relay check-config".into(),
            program: program.clone(),
            source,
        })?;
    if !check.status.success() {
        return Err(HarnessError::Command {
            command: format!("scanbridge-relay check-config {}", config_path.display()),
            status: check.status,
            stderr: String::from_utf8_lossy(&check.stderr).trim().to_string(),
        });
    }
    let mut process = spawn_relay(&config_path, root, port, &opts.rust_log).await?;
    wait_for_tcp(
        std::net::SocketAddr::from(([127, 0, 0, 1], admin_port)),
        &mut process,
        START_TIMEOUT,
    )
    .await?;
    Ok((process, port, config_path, admin_port))
}

/// `scanbridge-relay run --config <config>`, waiting for its `listening on` line.
async fn spawn_relay(
    config: &Path,
    root: &Path,
    port: u16,
    rust_log: &str,
) -> Result<ChildProcess> {
    let logs = LogPaths::in_dir(root, "relay");
    let mut cmd = Command::new(bins::binary(bins::RELAY)?);
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", rust_log);
    let mut process = ChildProcess::spawn("the relay", cmd, logs.clone())?;
    let expected = format!("listening on 127.0.0.1:{port}");
    wait_for_line(
        &logs.stderr,
        &mut process,
        START_TIMEOUT,
        &format!("the relay's `{expected}` log line"),
        |line| line.contains(&expected).then_some(()),
    )
    .await?;
    Ok(process)
}

fn client(ca_pem: Option<&[u8]>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(pem) = ca_pem {
        let cert = reqwest::Certificate::from_pem(pem).map_err(|source| HarnessError::Http {
            url: "the relay CA certificate".into(),
            source,
        })?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|source| HarnessError::Http {
        url: "(building an HTTP client)".into(),
        source,
    })
}

async fn read_body(url: &str, resp: reqwest::Response) -> Result<Value> {
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|source| HarnessError::Http {
        url: url.to_string(),
        source,
    })?;
    if !(200..300).contains(&status) {
        return Err(HarnessError::HttpStatus {
            url: url.to_string(),
            status,
            body,
        });
    }
    serde_json::from_str(&body).map_err(|source| HarnessError::Json {
        what: url.to_string(),
        source,
    })
}

async fn post_json(http: &reqwest::Client, url: &str, body: &Value) -> Result<Value> {
    let resp = http
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|source| HarnessError::Http {
            url: url.to_string(),
            source,
        })?;
    read_body(url, resp).await
}

async fn get_json(http: &reqwest::Client, url: &str, bearer: Option<&str>) -> Result<Value> {
    let mut req = http.get(url);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.map_err(|source| HarnessError::Http {
        url: url.to_string(),
        source,
    })?;
    read_body(url, resp).await
}

async fn get_text(http: &reqwest::Client, url: &str) -> Result<String> {
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|source| HarnessError::Http {
            url: url.to_string(),
            source,
        })?;
    resp.text().await.map_err(|source| HarnessError::Http {
        url: url.to_string(),
        source,
    })
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The rows of `/__sim/state` list `list` whose `key` equals `value`.
pub fn rows<'a>(state: &'a Value, list: &str, key: &str, value: &Value) -> Vec<&'a Value> {
    state[list]
        .as_array()
        .map(|l| l.iter().filter(|r| &r[key] == value).collect())
        .unwrap_or_default()
}

/// The picking named `name` in `/__sim/state`.
pub fn picking<'a>(state: &'a Value, name: &str) -> Option<&'a Value> {
    rows(state, "pickings", "name", &Value::from(name))
        .into_iter()
        .next()
}

/// The pickings whose `backorder_id` is picking `id`.
pub fn backorders_of(state: &Value, id: &Value) -> Vec<Value> {
    rows(state, "pickings", "backorder_id", id)
        .into_iter()
        .cloned()
        .collect()
}

/// The move lines of picking `picking_id`: (product id, lot name or "", quantity, picked).
pub fn lines_of(state: &Value, picking_id: &Value) -> Vec<(i64, String, f64, bool)> {
    let lots = state["lots"].as_array().cloned().unwrap_or_default();
    rows(state, "move_lines", "picking_id", picking_id)
        .into_iter()
        .map(|l| {
            let lot = match l["lot_id"].as_i64() {
                Some(id) => lots
                    .iter()
                    .find(|x| x["id"] == id)
                    .and_then(|x| x["name"].as_str())
                    .unwrap_or("")
                    .to_string(),
                None => l["lot_name"].as_str().unwrap_or("").to_string(),
            };
            (
                l["product_id"].as_i64().unwrap_or(0),
                lot,
                l["quantity"].as_f64().unwrap_or(0.0),
                l["picked"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// The quantity of product `product` on picking `picking_id`'s lines (lot `lot`, or any lot).
pub fn qty_on(state: &Value, picking_id: &Value, product: i64, lot: Option<&str>) -> f64 {
    lines_of(state, picking_id)
        .into_iter()
        .filter(|(p, l, _, _)| *p == product && lot.is_none_or(|want| l == want))
        .map(|(_, _, q, _)| q)
        .sum()
}

/// The demand of product `product` on picking `picking_id`'s moves that are not cancelled.
pub fn demand_on(state: &Value, picking_id: &Value, product: i64) -> f64 {
    rows(state, "moves", "picking_id", picking_id)
        .into_iter()
        .filter(|m| m["product_id"] == product && m["state"] != "cancel")
        .map(|m| m["product_uom_qty"].as_f64().unwrap_or(0.0))
        .sum()
}

/// A pseudo-terminal standing in for a serial scanner: the test holds the master, the agent
/// opens the slave through `link` (as it would open `/dev/serial/by-id/...`).
pub struct PtyScanner {
    master: PtyMaster,
    link: PathBuf,
}

impl PtyScanner {
    /// A new pty whose slave is reachable at `link`.
    pub fn plug(link: &Path) -> Result<PtyScanner> {
        let errno = |what: &'static str, e: nix::errno::Errno| {
            HarnessError::io(what, link, std::io::Error::from(e))
        };
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY)
            .map_err(|e| errno("open a pseudo-terminal for", e))?;
        grantpt(&master).map_err(|e| errno("grantpt for", e))?;
        unlockpt(&master).map_err(|e| errno("unlockpt for", e))?;
        let slave = ptsname_r(&master).map_err(|e| errno("ptsname for", e))?;
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&slave, link)
            .map_err(|e| HarnessError::io("symlink the pty slave to", link, e))?;
        Ok(PtyScanner {
            master,
            link: link.to_path_buf(),
        })
    }

    /// Where the agent opens it.
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// Writes `bytes` as the scanner would send them.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.master
            .write_all(bytes)
            .map_err(|e| HarnessError::io("write to the pty behind", &self.link, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> FlowOptions {
        FlowOptions {
            odoo_keys: "api = \"json2\"".into(),
            stations: vec![("SC-01".into(), "receive".into())],
            backorder: vec![("SC-01".into(), false)],
            tags: vec![TagMapping {
                id: "Channel1.Scale1.Weight".into(),
                tag: "scale1.weight".into(),
                device: "SCALE-1".into(),
                target_device: "SC-01".into(),
                field: "shipping_weight".into(),
            }],
            serial: vec![SerialPort {
                name: "dock".into(),
                path: PathBuf::from("/dev/serial/by-id/x"),
                device: "SC-07".into(),
            }],
            ..FlowOptions::default()
        }
    }

    #[test]
    fn the_relay_sections_land_in_odoo_and_admin() {
        let text = format!(
            "[odoo]\nurl = \"http://x:1\"\n{}",
            relay_extra(&opts(), 9443, Path::new("/t/admin-token"))
        );
        let v: toml::Value = toml::from_str(&text).expect("toml");
        assert_eq!(v["odoo"]["api"].as_str(), Some("json2"));
        assert_eq!(v["odoo"]["stations"][0]["site"].as_str(), Some("WH01"));
        assert_eq!(v["odoo"]["stations"][0]["backorder"].as_bool(), Some(false));
        assert_eq!(v["odoo"]["readings"][0]["device"].as_str(), Some("SC-01"));
        assert_eq!(v["admin"]["listen"].as_str(), Some("127.0.0.1:9443"));
    }

    #[test]
    fn the_agent_sections_attach_formats_to_the_broker() {
        let text = format!("[[mqtt]]\nname = \"site\"\n{}", agent_extra(&opts()));
        let v: toml::Value = toml::from_str(&text).expect("toml");
        let formats = v["mqtt"][0]["formats"].as_array().expect("formats");
        assert_eq!(formats[0]["format"].as_str(), Some("text"));
        assert_eq!(formats[1]["filter"].as_str(), Some("plc/+/tags"));
        assert!(v["stations"][0].get("location").is_none());
        assert_eq!(v["tags"][0]["tag"].as_str(), Some("scale1.weight"));
        assert_eq!(v["serial"][0]["framing"].as_str(), Some("cr"));
    }
}

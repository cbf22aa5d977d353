//! The site agent (`scanbridge-agent`) as a child process: its TOML configuration, start, SIGKILL
//! and restart (the crash test), clean stop, and its peak RSS from `/proc`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use nix::unistd::Pid;

use crate::bins;
use crate::error::{HarnessError, Result};
use crate::process::{vm_hwm_kib, ChildProcess, LogPaths};
use crate::relay::{toml_string, SiteBundle};

/// The shipped systemd unit of the agent: the harness runs the agent with its `Environment=`.
pub const AGENT_UNIT: &str = include_str!("../../../deploy/systemd/scanbridge-agent.service");

/// The `Environment=NAME=value` settings of a systemd unit, in order (one assignment per line,
/// as the shipped units write them; quoting is not interpreted).
pub fn unit_environment(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A station: the op and location a device's scans default to.
#[derive(Debug, Clone)]
pub struct Station {
    pub device: String,
    pub op: String,
    pub location: String,
}

/// What the agent's configuration needs from the rest of the stack.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub site: String,
    pub agent_id: String,
    pub relay_url: String,
    pub bundle: SiteBundle,
    pub mqtt_port: u16,
    /// Stable client id: the broker keeps this persistent session's queue while the agent is down.
    pub client_id: String,
    pub topics: Vec<String>,
    pub stations: Vec<Station>,
    /// `[relay] heartbeat_secs`, when not the agent's default.
    pub heartbeat_secs: Option<u64>,
    /// `RUST_LOG` for the child.
    pub rust_log: String,
    /// `[status] listen` port on 127.0.0.1 (a free one by default, so parallel agents never
    /// fight over the shipped default 9187); `None` disables the local status API.
    pub status_port: Option<u16>,
    /// `[store] max_bytes`, when not the agent's default.
    pub store_max_bytes: Option<u64>,
    /// `[relay] retry_max_ms`, when not the agent's default (fault scenarios shorten it so a
    /// healed link is used again within seconds).
    pub retry_max_ms: Option<u64>,
    /// Where the agent keeps `agent.redb`, when not `<dir>/agent-state` (the disk-full scenario
    /// puts it on a small tmpfs).
    pub state_dir: Option<PathBuf>,
    /// Extra environment for the child (`LD_PRELOAD` of libfaketime for the clock-jump scenario).
    pub env: Vec<(String, String)>,
    /// Raw TOML appended to the configuration (a `[[serial]]` port, for example).
    pub extra_config: String,
}

impl AgentOptions {
    /// The defaults every harness user shares: site from the bundle, `scanbridge/+/scan`.
    pub fn new(bundle: SiteBundle, relay_url: String, mqtt_port: u16) -> AgentOptions {
        let site = bundle.site.clone();
        AgentOptions {
            agent_id: format!("gw-{}", site.to_lowercase()),
            client_id: format!("scanbridge-agent-{site}"),
            site,
            relay_url,
            bundle,
            mqtt_port,
            topics: vec!["scanbridge/+/scan".into()],
            stations: Vec::new(),
            heartbeat_secs: None,
            rust_log: "info".into(),
            status_port: crate::process::free_port().ok(),
            store_max_bytes: None,
            retry_max_ms: None,
            state_dir: None,
            env: Vec::new(),
            extra_config: String::new(),
        }
    }

    /// `http://127.0.0.1:PORT` of the agent's local status API, when enabled.
    pub fn status_url(&self) -> Option<String> {
        self.status_port.map(|p| format!("http://127.0.0.1:{p}"))
    }
}

/// The agent's TOML configuration.
pub fn agent_config(state_dir: &Path, opts: &AgentOptions) -> String {
    let p = |p: &Path| toml_string(&p.to_string_lossy());
    let topics: Vec<String> = opts.topics.iter().map(|t| toml_string(t)).collect();
    let mut conf = format!(
        "site = {site}\nagent_id = {agent}\nstate_dir = {state}\n\n[relay]\nurl = {url}\nca_cert = {ca}\n\
         client_cert = {cert}\nclient_key = {key}\n",
        site = toml_string(&opts.site),
        agent = toml_string(&opts.agent_id),
        state = p(state_dir),
        url = toml_string(&opts.relay_url),
        ca = p(&opts.bundle.ca_cert()),
        cert = p(&opts.bundle.cert()),
        key = p(&opts.bundle.key()),
    );
    if let Some(h) = opts.heartbeat_secs {
        conf.push_str(&format!("heartbeat_secs = {h}\n"));
    }
    if let Some(ms) = opts.retry_max_ms {
        conf.push_str(&format!(
            "retry_initial_ms = {}\nretry_max_ms = {ms}\n",
            ms.min(200)
        ));
    }
    if let Some(bytes) = opts.store_max_bytes {
        conf.push_str(&format!("\n[store]\nmax_bytes = {bytes}\n"));
    }
    conf.push_str(&format!(
        "\n[status]\nlisten = {}\n",
        toml_string(
            &opts
                .status_port
                .map(|p| format!("127.0.0.1:{p}"))
                .unwrap_or_default()
        )
    ));
    conf.push_str(&format!(
        "\n[[mqtt]]\nname = \"site\"\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = {cid}\ntopics = [{topics}]\n",
        port = opts.mqtt_port,
        cid = toml_string(&opts.client_id),
        topics = topics.join(", "),
    ));
    for s in &opts.stations {
        conf.push_str(&format!(
            "\n[[stations]]\ndevice = {}\nop = {}\nlocation = {}\n",
            toml_string(&s.device),
            toml_string(&s.op),
            toml_string(&s.location)
        ));
    }
    if !opts.extra_config.is_empty() {
        conf.push('\n');
        conf.push_str(&opts.extra_config);
    }
    conf
}

/// The agent process, possibly restarted many times; all runs append to one log file.
pub struct Agent {
    process: Option<ChildProcess>,
    config_path: PathBuf,
    state_dir: PathBuf,
    logs: LogPaths,
    rust_log: String,
    env: Vec<(String, String)>,
    starts: u32,
    peak_hwm_kib: u64,
}

impl Agent {
    /// Writes the configuration into `dir`, validates it with `check-config` and starts the agent.
    pub async fn start(dir: &Path, opts: &AgentOptions) -> Result<Agent> {
        let state_dir = opts
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.join("agent-state"));
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| HarnessError::io("create", &state_dir, e))?;
        let config_path = dir.join("agent.toml");
        std::fs::write(&config_path, agent_config(&state_dir, opts))
            .map_err(|e| HarnessError::io("write", &config_path, e))?;
        check_config(&config_path).await?;
        let mut agent = Agent {
            process: None,
            config_path,
            state_dir,
            logs: LogPaths::in_dir(dir, "agent"),
            rust_log: opts.rust_log.clone(),
            env: opts.env.clone(),
            starts: 0,
            peak_hwm_kib: 0,
        };
        agent.spawn()?;
        Ok(agent)
    }

    fn spawn(&mut self) -> Result<()> {
        let program = bins::binary(bins::AGENT)?;
        let mut cmd = Command::new(program);
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", &self.rust_log)
            .envs(unit_environment(AGENT_UNIT))
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        self.process = Some(ChildProcess::spawn("the agent", cmd, self.logs.clone())?);
        self.starts += 1;
        Ok(())
    }

    /// Its configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Its state directory (agent.redb).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Its log file (all runs).
    pub fn log_path(&self) -> &Path {
        &self.logs.stderr
    }

    /// How many times it was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// The pid of the current run.
    pub fn pid(&self) -> Option<Pid> {
        self.process.as_ref().map(|p| p.pid())
    }

    /// Ok while the current run is alive; an error naming the log once it has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.process.as_mut() {
            Some(p) => p.ensure_running(),
            None => Err(HarnessError::Timeout {
                what: "an agent process (none is running)".into(),
                waited: Duration::ZERO,
                look_at: self.logs.stderr.clone(),
            }),
        }
    }

    /// Peak RSS (VmHWM) of the current run in KiB, remembered across samples and runs.
    pub fn sample_peak_rss_kib(&mut self) -> Option<u64> {
        let now = vm_hwm_kib(self.pid()?)?;
        self.peak_hwm_kib = self.peak_hwm_kib.max(now);
        Some(self.peak_hwm_kib)
    }

    /// SIGKILL the current run (nix `kill`), and reap it.
    pub fn kill_hard(&mut self) -> Result<Option<ExitStatus>> {
        self.sample_peak_rss_kib();
        match self.process.take() {
            Some(mut p) => p.kill_hard().map(Some),
            None => Ok(None),
        }
    }

    /// Start a new run with the same configuration (after [`Agent::kill_hard`] or a stop).
    pub fn restart(&mut self) -> Result<()> {
        if self.process.is_some() {
            self.kill_hard()?;
        }
        self.spawn()
    }

    /// SIGTERM and wait up to `grace`; returns the exit status and whether it stopped by itself.
    pub fn stop(&mut self, grace: Duration) -> Result<Option<(ExitStatus, bool)>> {
        self.sample_peak_rss_kib();
        match self.process.take() {
            Some(mut p) => p.terminate(grace).map(Some),
            None => Ok(None),
        }
    }
}

/// The agent's local status API (`[status] listen`), as a site technician's tools read it.
pub struct StatusApi {
    base: String,
    http: reqwest::Client,
}

impl StatusApi {
    /// A client for `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: String) -> Result<StatusApi> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|source| HarnessError::Http {
                url: base.clone(),
                source,
            })?;
        Ok(StatusApi { base, http })
    }

    async fn get(&self, path: &str) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| HarnessError::Http {
                url: url.clone(),
                source,
            })?;
        let status = resp.status().as_u16();
        let body = resp
            .text()
            .await
            .map_err(|source| HarnessError::Http { url, source })?;
        Ok((status, body))
    }

    /// `GET /metrics`, parsed: unlabelled samples by name (`scanbridge_agent_backlog_events`, ...).
    pub async fn metrics(&self) -> Result<BTreeMap<String, f64>> {
        let (_, body) = self.get("/metrics").await?;
        Ok(parse_metrics(&body))
    }

    /// `GET /healthz`: the HTTP status (200 healthy, 503 with the reason) and body.
    pub async fn healthz(&self) -> Result<(u16, String)> {
        self.get("/healthz").await
    }

    /// `GET /status` as JSON.
    pub async fn status(&self) -> Result<serde_json::Value> {
        let (_, body) = self.get("/status").await?;
        serde_json::from_str(&body).map_err(|source| HarnessError::Json {
            what: "the agent's GET /status".into(),
            source,
        })
    }
}

/// Unlabelled samples of a Prometheus text exposition, by metric name.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?;
            let value = parts.next()?.parse().ok()?;
            (!name.contains('{')).then(|| (name.to_string(), value))
        })
        .collect()
}

/// `scanbridge-agent check-config <file>`.
pub async fn check_config(path: &Path) -> Result<()> {
    let program = bins::binary(bins::AGENT)?;
    let out = tokio::process::Command::new(&program)
        .arg("check-config")
        .arg(path)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .map_err(|source| HarnessError::Spawn {
            what: "scanbridge-agent check-config".into(),
            program: program.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            command: format!("scanbridge-agent check-config {}", path.display()),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_environment_is_read_in_order_and_the_shipped_unit_limits_malloc_arenas() {
        let unit =
            "[Service]\nEnvironment=A=1\n# Environment=B=2\n  Environment=C=x=y\nExecStart=/x\n";
        assert_eq!(
            unit_environment(unit),
            vec![
                ("A".to_string(), "1".to_string()),
                ("C".to_string(), "x=y".to_string())
            ]
        );
        assert!(unit_environment(AGENT_UNIT)
            .contains(&("MALLOC_ARENA_MAX".to_string(), "2".to_string())));
    }

    #[test]
    fn unlabelled_prometheus_samples_are_read_by_name() {
        let m = parse_metrics(
            "# HELP x y\nscanbridge_agent_backlog_events 12\nscanbridge_agent_source_up{source=\"a\"} 1\nscanbridge_agent_ingest_paused 0\n",
        );
        assert_eq!(m.get("scanbridge_agent_backlog_events"), Some(&12.0));
        assert_eq!(m.get("scanbridge_agent_ingest_paused"), Some(&0.0));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn the_agent_config_has_the_contract_shape() {
        let bundle = SiteBundle {
            site: "WH01".into(),
            dir: PathBuf::from("/b"),
        };
        let mut opts = AgentOptions::new(bundle, "https://127.0.0.1:8443".into(), 1883);
        opts.stations.push(Station {
            device: "SC-01".into(),
            op: "count".into(),
            location: "WH-STOCK-A01".into(),
        });
        let v: toml::Value = toml::from_str(&agent_config(Path::new("/s"), &opts)).expect("toml");
        assert_eq!(v["site"].as_str(), Some("WH01"));
        assert_eq!(v["relay"]["client_key"].as_str(), Some("/b/site.key"));
        assert_eq!(
            v["mqtt"][0]["client_id"].as_str(),
            Some("scanbridge-agent-WH01")
        );
        assert_eq!(
            v["mqtt"][0]["topics"][0].as_str(),
            Some("scanbridge/+/scan")
        );
        assert_eq!(v["stations"][0]["location"].as_str(), Some("WH-STOCK-A01"));
        let listen = v["status"]["listen"].as_str().expect("status listen");
        assert!(listen.starts_with("127.0.0.1:") && listen != "127.0.0.1:9187");
    }
}

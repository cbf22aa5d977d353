//! Helpers for the tests that run the `scanbridge-agent` binary as a process (status API,
//! rotation, reload, store upgrade): a config writer, the process with its log, SIGHUP/SIGTERM,
//! and a plain HTTP GET for the loopback status API.
#![allow(dead_code, clippy::unwrap_used)]

pub mod recording_relay;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_scanbridge-agent");

/// What goes into the agent's config file.
pub struct AgentSetup {
    pub relay_url: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub mqtt_port: u16,
    pub topics: Vec<String>,
    pub status_port: u16,
    pub heartbeat_secs: u64,
    /// Appended verbatim (extra tables).
    pub extra: String,
    pub max_bytes: u64,
}

impl AgentSetup {
    pub fn new(pki: &crate::common::Pki, relay_url: &str, mqtt_port: u16) -> AgentSetup {
        AgentSetup {
            relay_url: relay_url.to_string(),
            ca: pki.path("ca.pem"),
            cert: pki.path("site.pem"),
            key: pki.path("site.key"),
            mqtt_port,
            topics: vec!["scanbridge/+/scan".into()],
            status_port: crate::common::free_port(),
            heartbeat_secs: 60,
            extra: String::new(),
            max_bytes: 1 << 30,
        }
    }

    pub fn text(&self) -> String {
        let topics: Vec<String> = self.topics.iter().map(|t| format!("{t:?}")).collect();
        format!(
            r#"site = "WH01"
agent_id = "test-gw"
state_dir = "state"

[store]
commit_linger_ms = 2
max_bytes = {max_bytes}

[relay]
url = "{relay_url}"
ca_cert = "{ca}"
client_cert = "{cert}"
client_key = "{key}"
batch_max_events = 500
heartbeat_secs = {hb}
retry_initial_ms = 20
retry_max_ms = 200

[status]
listen = "127.0.0.1:{status_port}"

[[mqtt]]
name = "site"
host = "127.0.0.1"
port = {mqtt_port}
client_id = "scanbridge-agent-WH01"
topics = [{topics}]
{extra}"#,
            max_bytes = self.max_bytes,
            relay_url = self.relay_url,
            ca = self.ca.display(),
            cert = self.cert.display(),
            key = self.key.display(),
            hb = self.heartbeat_secs,
            status_port = self.status_port,
            mqtt_port = self.mqtt_port,
            topics = topics.join(", "),
            extra = self.extra,
        )
    }

    /// Writes `dir/agent.toml`.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("agent.toml");
        std::fs::write(&path, self.text()).unwrap();
        path
    }

    pub fn status_addr(&self) -> String {
        format!("127.0.0.1:{}", self.status_port)
    }
}

/// The agent process; SIGKILLed on drop if still running.
pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
}

impl Agent {
    pub fn spawn(config: &Path, log: &Path) -> Agent {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info,scanbridge_agent=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Agent {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            sig,
        )
        .unwrap();
    }

    pub fn sighup(&self) {
        self.signal(nix::sys::signal::Signal::SIGHUP);
    }

    /// SIGTERM and wait; panics (with the log) unless it exits cleanly within 30 s.
    pub fn stop(mut self) -> String {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = self.log_text();
                assert!(status.success(), "agent exit {status:?}\n{log}");
                return log;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "agent did not stop on SIGTERM\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (polling) until the log contains `needle` a `count`-th time.
    pub async fn wait_log(&self, needle: &str, count: usize, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let log = self.log_text();
            if log.matches(needle).count() >= count {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {needle:?} in the agent log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET http://addr/path` → (status, body); `None` when nothing answers.
pub async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().await.ok()?))
}

/// `scanbridge-agent status --config FILE`, run on a blocking thread.
pub async fn status_cli(config: &Path) -> Output {
    let config = config.to_path_buf();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg("status")
            .arg("--config")
            .arg(&config)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// The JSON status report via `/status`, once the agent answers.
pub async fn report(addr: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((200, body)) = get(addr, "/status").await {
            return serde_json::from_str(&body).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status API at {addr} never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

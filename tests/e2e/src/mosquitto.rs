//! A real mosquitto broker for tests, the demo and the bench, configured with the very fragment we
//! ship to gateway boxes (`deploy/mosquitto/scanbridge.conf`) plus the shipped listener file with
//! its port rewritten, a persistence directory in the state directory, and logging to stderr.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{HarnessError, Result};
use crate::process::{free_port, wait_for_tcp, ChildProcess, LogPaths};

/// The broker settings fragment shipped for gateway boxes.
pub const FRAGMENT: &str = include_str!("../../../deploy/mosquitto/scanbridge.conf");
/// The shipped listener file (loopback, port 1883).
pub const LISTENER_FRAGMENT: &str =
    include_str!("../../../deploy/mosquitto/scanbridge-listener.conf");
/// Where Debian installs the broker.
pub const MOSQUITTO_PATH: &str = "/usr/sbin/mosquitto";

/// How long the broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The shipped listener file with every `listener <port> [address]` line moved to `port`.
pub fn rewrite_listener_port(listener_conf: &str, port: u16) -> String {
    let mut out = String::with_capacity(listener_conf.len());
    for line in listener_conf.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("listener") {
            let _old_port = words.next();
            let rest: Vec<&str> = words.collect();
            out.push_str(&format!("listener {port}"));
            for w in rest {
                out.push(' ');
                out.push_str(w);
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The complete configuration the harness runs: the shipped fragment, the shipped listener on
/// `port`, then the harness's own lines (persistence directory, log to stderr, and `user root`
/// when running as root so mosquitto can write into the state directory).
pub fn harness_config(port: u16, persistence_dir: &Path, running_as_root: bool) -> String {
    let mut conf = String::new();
    conf.push_str(FRAGMENT);
    conf.push_str(
        "\n# ---- deploy/mosquitto/scanbridge-listener.conf, port rewritten by the harness\n",
    );
    conf.push_str(&rewrite_listener_port(LISTENER_FRAGMENT, port));
    conf.push_str("\n# ---- harness only\n");
    conf.push_str(&format!(
        "persistence_location {}/\n",
        persistence_dir.display()
    ));
    conf.push_str("log_dest stderr\n");
    conf.push_str("log_type error\nlog_type warning\nlog_type notice\nlog_type information\n");
    conf.push_str("connection_messages true\n");
    if running_as_root {
        conf.push_str("user root\n");
    }
    conf
}

/// A running mosquitto broker on 127.0.0.1.
pub struct Mosquitto {
    process: ChildProcess,
    port: u16,
    conf_path: PathBuf,
    logs: LogPaths,
}

impl Mosquitto {
    /// Starts a broker on a free port with its persistence in `dir/mosquitto/`. A free port can
    /// be taken by someone else before mosquitto binds it, so a broker that exits at once is
    /// retried on another port (twice).
    pub async fn start(dir: &Path) -> Result<Mosquitto> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Mosquitto::start_on(dir, free_port()?).await {
                Err(HarnessError::Exited { .. }) if attempt < 3 => continue,
                other => return other,
            }
        }
    }

    /// Starts a broker on `port` with its persistence in `dir/mosquitto/`.
    pub async fn start_on(dir: &Path, port: u16) -> Result<Mosquitto> {
        let program = PathBuf::from(MOSQUITTO_PATH);
        if !program.is_file() {
            return Err(HarnessError::MosquittoMissing { path: program });
        }
        let data_dir = dir.join("mosquitto");
        std::fs::create_dir_all(&data_dir).map_err(|e| HarnessError::io("create", &data_dir, e))?;
        let conf_path = dir.join("mosquitto.conf");
        let root = nix::unistd::geteuid().is_root();
        std::fs::write(&conf_path, harness_config(port, &data_dir, root))
            .map_err(|e| HarnessError::io("write", &conf_path, e))?;
        let logs = LogPaths::in_dir(dir, "mosquitto");
        let process = spawn(&program, &conf_path, &logs, port).await?;
        Ok(Mosquitto {
            process,
            port,
            conf_path,
            logs,
        })
    }

    /// The broker's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its configuration file.
    pub fn conf_path(&self) -> &Path {
        &self.conf_path
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.logs.stderr
    }

    /// Whether the broker has logged dropping messages for a client (its queue cap was reached):
    /// scans it PUBACKed and then threw away.
    pub fn dropped_messages(&self) -> bool {
        std::fs::read_to_string(&self.logs.stderr)
            .is_ok_and(|log| log.contains("Outgoing messages are being dropped"))
    }

    /// The broker process.
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }

    /// Stops the broker cleanly (SIGTERM; it saves its store) and starts it again on the same port
    /// with the same persistence directory.
    pub async fn restart(&mut self) -> Result<()> {
        self.process.terminate(Duration::from_secs(10))?;
        self.process = spawn(
            &PathBuf::from(MOSQUITTO_PATH),
            &self.conf_path,
            &self.logs,
            self.port,
        )
        .await?;
        Ok(())
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self, grace: Duration) -> Result<()> {
        self.process.terminate(grace).map(|_| ())
    }
}

async fn spawn(program: &Path, conf: &Path, logs: &LogPaths, port: u16) -> Result<ChildProcess> {
    let mut cmd = Command::new(program);
    cmd.arg("-c").arg(conf);
    let mut process = ChildProcess::spawn("mosquitto", cmd, logs.clone())?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_for_tcp(addr, &mut process, START_TIMEOUT).await?;
    Ok(process)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_port_is_rewritten_and_the_address_kept() {
        let out = rewrite_listener_port(
            "# c\nlistener 1883 127.0.0.1\nallow_anonymous true\n",
            40001,
        );
        assert_eq!(out, "# c\nlistener 40001 127.0.0.1\nallow_anonymous true\n");
    }

    #[test]
    fn the_shipped_fragment_holds_no_listener_and_no_persistence_location() {
        for line in FRAGMENT.lines() {
            let key = line.split_whitespace().next().unwrap_or("");
            assert_ne!(key, "listener", "fragment must not hold a listener: {line}");
            assert_ne!(
                key, "persistence_location",
                "fragment must not set it: {line}"
            );
        }
    }

    #[test]
    fn every_setting_of_the_shipped_fragments_is_explained_by_a_comment_above_it() {
        for text in [FRAGMENT, LISTENER_FRAGMENT] {
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.trim().is_empty() || line.starts_with('#') {
                    continue;
                }
                assert!(
                    i > 0 && lines[i - 1].starts_with('#'),
                    "setting without a comment above it: {line}"
                );
            }
        }
    }

    #[test]
    fn the_fragment_lifts_the_limits_that_lose_qos1_messages() {
        let setting = |key: &str| {
            FRAGMENT.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(key)).then(|| w.next().unwrap_or("").to_string())
            })
        };
        assert_eq!(setting("persistence").as_deref(), Some("true"));
        assert_eq!(setting("max_queued_messages").as_deref(), Some("0"));
        let bytes: u64 = setting("max_queued_bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(bytes > 0, "max_queued_bytes must be the real cap");
        // It counts payload bytes only: a million canonical scans (~150 bytes) must fit.
        assert!(
            bytes >= 150_000_000,
            "max_queued_bytes {bytes} cannot hold 1,000,000 scans"
        );
        // No in-flight window: with one, mosquitto 2.0.11 delivers out of order (the fragment's
        // comment); unset means its default of 20.
        assert_eq!(setting("max_inflight_messages").as_deref(), Some("0"));
        assert_eq!(setting("max_inflight_bytes").as_deref(), Some("0"));
        let autosave: u64 = setting("autosave_interval")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1800);
        assert!((1..=10).contains(&autosave));
    }
}

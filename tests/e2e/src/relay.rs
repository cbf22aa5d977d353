//! The relay (`scanbridge-relay`) as a child process: its site CA and a site bundle made with the
//! relay's own `ca init` / `ca issue` commands, its TOML configuration, and the running server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bins;
use crate::error::{HarnessError, Result};
use crate::odoo_sim::{DATABASE, LOGIN};
use crate::process::{free_port, wait_for_line, ChildProcess, LogPaths};

/// How long the relay may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A site CA created by `scanbridge-relay ca init`.
#[derive(Debug, Clone)]
pub struct CaDir {
    pub dir: PathBuf,
}

impl CaDir {
    /// `CA_DIR/ca.pem`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// `CA_DIR/server.pem`.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    /// `CA_DIR/server.key`.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

/// A site certificate bundle created by `scanbridge-relay ca issue`.
#[derive(Debug, Clone)]
pub struct SiteBundle {
    pub site: String,
    pub dir: PathBuf,
}

impl SiteBundle {
    /// `BUNDLE_DIR/ca.pem`, the trust anchor for the relay's server certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// `BUNDLE_DIR/site.pem`.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("site.pem")
    }
    /// `BUNDLE_DIR/site.key`.
    pub fn key(&self) -> PathBuf {
        self.dir.join("site.key")
    }
}

/// Runs a one-shot relay command, returning its stdout; failure carries its stderr.
async fn run_relay_command(args: &[&str]) -> Result<String> {
    let program = bins::binary(bins::RELAY)?;
    let out = tokio::process::Command::new(&program)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .map_err(|source| HarnessError::Spawn {
            what: format!("scanbridge-relay {}", args.join(" ")),
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

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `scanbridge-relay ca init --dir <dir>` (server name localhost, ip 127.0.0.1 by default).
pub async fn ca_init(dir: &Path) -> Result<CaDir> {
    run_relay_command(&["ca", "init", "--dir", &path_str(dir)]).await?;
    let ca = CaDir {
        dir: dir.to_path_buf(),
    };
    for f in [ca.ca_cert(), ca.server_cert(), ca.server_key()] {
        if !f.is_file() {
            return Err(HarnessError::io(
                "`ca init` did not create",
                f,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
    }
    Ok(ca)
}

/// `scanbridge-relay ca issue --dir <ca> --site <site> --out <out>`.
pub async fn ca_issue(ca: &CaDir, site: &str, out: &Path) -> Result<SiteBundle> {
    run_relay_command(&[
        "ca",
        "issue",
        "--dir",
        &path_str(&ca.dir),
        "--site",
        site,
        "--out",
        &path_str(out),
    ])
    .await?;
    let bundle = SiteBundle {
        site: site.to_string(),
        dir: out.to_path_buf(),
    };
    for f in [bundle.ca_cert(), bundle.cert(), bundle.key()] {
        if !f.is_file() {
            return Err(HarnessError::io(
                "`ca issue` did not create",
                f,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
    }
    Ok(bundle)
}

/// What the relay's configuration needs from the rest of the stack.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub odoo_url: String,
    pub odoo_api_key: String,
    /// `[odoo] max_chunk`, when not the relay's default.
    pub max_chunk: Option<u32>,
    /// `RUST_LOG` for the child; must let `info` of the relay through (the harness waits for the
    /// `listening on` line).
    pub rust_log: String,
}

/// The relay's TOML configuration for `port`, state in `state_dir`, TLS from `ca`.
pub fn relay_config(
    port: u16,
    state_dir: &Path,
    ca: &CaDir,
    api_key_file: &Path,
    opts: &RelayOptions,
) -> String {
    let q = |p: &Path| toml_string(&path_str(p));
    let mut conf = format!(
        "listen = {listen}\nstate_dir = {state}\n\n[tls]\nserver_cert = {cert}\nserver_key = {key}\nclient_ca = {ca}\n\n\
         [odoo]\nurl = {url}\ndatabase = {db}\nlogin = {login}\napi_key_file = {keyfile}\ntimeout_secs = 30\n",
        listen = toml_string(&format!("127.0.0.1:{port}")),
        state = q(state_dir),
        cert = q(&ca.server_cert()),
        key = q(&ca.server_key()),
        ca = q(&ca.ca_cert()),
        url = toml_string(&opts.odoo_url),
        db = toml_string(DATABASE),
        login = toml_string(LOGIN),
        keyfile = q(api_key_file),
    );
    if let Some(chunk) = opts.max_chunk {
        conf.push_str(&format!("max_chunk = {chunk}\n"));
    }
    conf
}

/// A TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A running relay.
pub struct Relay {
    process: ChildProcess,
    port: u16,
    config_path: PathBuf,
    state_dir: PathBuf,
    logs: LogPaths,
}

impl Relay {
    /// Writes the configuration into `dir`, checks it with `check-config`, starts the relay and
    /// waits until it accepts TCP connections.
    pub async fn start(dir: &Path, ca: &CaDir, opts: &RelayOptions) -> Result<Relay> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A free port can be taken before the relay binds it: retry on another (twice).
            match Relay::start_on(dir, ca, opts, free_port()?).await {
                Err(HarnessError::Exited { .. }) if attempt < 3 => continue,
                other => return other,
            }
        }
    }

    async fn start_on(dir: &Path, ca: &CaDir, opts: &RelayOptions, port: u16) -> Result<Relay> {
        let state_dir = dir.join("relay-state");
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| HarnessError::io("create", &state_dir, e))?;
        let key_file = dir.join("odoo-api-key");
        std::fs::write(&key_file, format!("{}\n", opts.odoo_api_key))
            .map_err(|e| HarnessError::io("write", &key_file, e))?;
        let config_path = dir.join("relay.toml");
        std::fs::write(
            &config_path,
            relay_config(port, &state_dir, ca, &key_file, opts),
        )
        .map_err(|e| HarnessError::io("write", &config_path, e))?;
        run_relay_command(&["check-config", &path_str(&config_path)]).await?;
        let logs = LogPaths::in_dir(dir, "relay");
        let process = spawn(&config_path, &logs, port, &opts.rust_log).await?;
        Ok(Relay {
            process,
            port,
            config_path,
            state_dir,
            logs,
        })
    }

    /// `https://127.0.0.1:PORT`, what the agent's `[relay] url` points at.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Its configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Its state directory (relay.redb).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.logs.stderr
    }

    /// The relay process.
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }

    /// SIGKILL and start again with the same configuration.
    pub async fn kill_and_restart(&mut self, rust_log: &str) -> Result<()> {
        self.process.kill_hard()?;
        self.process = spawn(&self.config_path, &self.logs, self.port, rust_log).await?;
        Ok(())
    }
}

async fn spawn(config: &Path, logs: &LogPaths, port: u16, rust_log: &str) -> Result<ChildProcess> {
    let program = bins::binary(bins::RELAY)?;
    let mut cmd = Command::new(program);
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", rust_log);
    let mut process = ChildProcess::spawn("the relay", cmd, logs.clone())?;
    // The relay logs `listening on <addr>` once bound (CONTRACTS.md); waiting for that line rather
    // than probing the port keeps a bogus failed-handshake warning out of its log.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_config_has_the_contract_keys_and_quotes_paths() {
        let ca = CaDir {
            dir: PathBuf::from("/tmp/c a"),
        };
        let opts = RelayOptions {
            odoo_url: "http://127.0.0.1:8069".into(),
            odoo_api_key: "k".into(),
            max_chunk: Some(200),
            rust_log: "info".into(),
        };
        let text = relay_config(8443, Path::new("/tmp/s"), &ca, Path::new("/tmp/key"), &opts);
        let v: toml::Value = toml::from_str(&text).expect("valid toml");
        assert_eq!(v["listen"].as_str(), Some("127.0.0.1:8443"));
        assert_eq!(v["tls"]["client_ca"].as_str(), Some("/tmp/c a/ca.pem"));
        assert_eq!(v["odoo"]["max_chunk"].as_integer(), Some(200));
        assert_eq!(v["odoo"]["database"].as_str(), Some("scanbridge"));
    }
}

//! The harness's error type: every way starting, driving or checking the real processes can fail,
//! with messages that say what to do next (which command to run, which log file to read).

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why the end-to-end harness could not do what a test, the demo or the bench asked.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A workspace binary the harness runs as a process has not been built.
    #[error(
        "binary `{name}` not found at {}: run `cargo build --workspace --bins` first \
         (tests/run.sh does it before the tests)",
        path.display()
    )]
    BinaryMissing { name: String, path: PathBuf },

    /// The harness could not find where the workspace binaries live.
    #[error("cannot locate the directory of the current executable: {0}")]
    NoExeDir(#[source] std::io::Error),

    /// mosquitto is not installed where the harness expects it.
    #[error("mosquitto is not installed at {}: run tests/run.sh, it installs mosquitto", path.display())]
    MosquittoMissing { path: PathBuf },

    /// A child process could not be started.
    #[error("could not start {what} ({}): {source}", program.display())]
    Spawn {
        what: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A child process exited while the harness still needed it.
    #[error("{what} exited unexpectedly with {status}; its log is {}", log.display())]
    Exited {
        what: String,
        status: ExitStatus,
        log: PathBuf,
    },

    /// Something the harness waits for did not happen before the deadline.
    #[error("timed out after {:.1} s waiting for {what}; look at {}", waited.as_secs_f64(), look_at.display())]
    Timeout {
        what: String,
        waited: Duration,
        look_at: PathBuf,
    },

    /// A file or directory operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A one-shot command (relay `ca init`, `ca issue`, `check-config`) failed.
    #[error("`{command}` failed with {status}: {stderr}")]
    Command {
        command: String,
        status: ExitStatus,
        stderr: String,
    },

    /// An HTTP call to the Odoo simulator's control endpoints failed.
    #[error("HTTP call to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The Odoo simulator answered a control call with an error status.
    #[error("{url} answered HTTP {status}: {body}")]
    HttpStatus {
        url: String,
        status: u16,
        body: String,
    },

    /// A JSON document from a child process did not have the shape the contract describes.
    #[error("unexpected JSON from {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// The MQTT client of the harness failed.
    #[error("MQTT client {client_id}: {detail}")]
    Mqtt { client_id: String, detail: String },

    /// A signal could not be delivered to a child process.
    #[error("could not send {signal} to {what} (pid {pid}): {source}")]
    Signal {
        what: String,
        signal: &'static str,
        pid: i32,
        #[source]
        source: nix::errno::Errno,
    },

    /// TLS material for the probe relay could not be loaded.
    #[error("TLS setup of the probe relay: {0}")]
    Tls(String),

    /// The harness was asked for something its setup does not provide.
    #[error("harness setup: {0}")]
    Setup(String),
}

/// Shorthand used throughout the harness.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

impl HarnessError {
    /// An [`HarnessError::Io`] for `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HarnessError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

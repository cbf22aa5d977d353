//! Child processes owned by the harness, the directory their state and logs live in, and the
//! small waiting helpers (free port, TCP readiness, file contents) everything else builds on.
//!
//! Rules this module enforces: every child's stdout and stderr go to files in the state directory;
//! every child is killed (SIGKILL) and reaped when its [`ChildProcess`] is dropped, also while a
//! test panics; and when a test panics the state directory is kept and its path and log files are
//! printed, so the failure can be read from the logs.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{HarnessError, Result};

/// How often the waiting helpers look again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A directory for one test's (or the demo's) state and logs.
///
/// A temporary directory is deleted when dropped, unless the thread is panicking (or
/// `SCANBRIDGE_KEEP_STATE` is set): then it is kept and its path and log files are printed to
/// stderr, so a failed test leaves its evidence.
pub struct StateDir {
    path: PathBuf,
    temp: Option<tempfile::TempDir>,
}

impl StateDir {
    /// A fresh temporary directory named after `label`.
    pub fn temp(label: &str) -> Result<StateDir> {
        let temp = tempfile::Builder::new()
            .prefix(&format!("scanbridge-{label}-"))
            .tempdir()
            .map_err(|e| {
                HarnessError::io("create a temporary directory", std::env::temp_dir(), e)
            })?;
        Ok(StateDir {
            path: temp.path().to_path_buf(),
            temp: Some(temp),
        })
    }

    /// `path`, wiped and created afresh; it is kept when dropped (the demo's `./demo-state`).
    pub fn wiped(path: &Path) -> Result<StateDir> {
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(|e| HarnessError::io("wipe", path, e))?;
        }
        std::fs::create_dir_all(path).map_err(|e| HarnessError::io("create", path, e))?;
        let path = std::fs::canonicalize(path).map_err(|e| HarnessError::io("resolve", path, e))?;
        Ok(StateDir { path, temp: None })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A subdirectory, created if missing.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| HarnessError::io("create", &dir, e))?;
        Ok(dir)
    }

    /// Keeps a temporary directory after all (a setup step failed before any test assertion)
    /// and prints where it is and which logs it holds.
    pub fn keep_for_diagnosis(&mut self) {
        if let Some(temp) = self.temp.take() {
            let kept = temp.keep();
            eprintln!(
                "\n==> setup failed; state and logs kept in {}",
                kept.display()
            );
            for log in self.log_files() {
                eprintln!("    {}", log.display());
            }
        }
    }

    /// Every `*.log` / `*.out` file in the directory, for failure reports.
    pub fn log_files(&self) -> Vec<PathBuf> {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.path)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "log" || x == "out"))
                    .collect()
            })
            .unwrap_or_default();
        logs.sort();
        logs
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("SCANBRIDGE_KEEP_STATE").is_some() {
            if let Some(temp) = self.temp.take() {
                let kept = temp.keep();
                eprintln!(
                    "\n==> test failed; state and logs kept in {}",
                    kept.display()
                );
                for log in self.log_files() {
                    eprintln!("    {}", log.display());
                }
            }
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| HarnessError::io("bind a free port on", "127.0.0.1:0", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| HarnessError::io("read the address of", "127.0.0.1:0", e))?
        .port();
    Ok(port)
}

/// Where a child's output goes.
#[derive(Debug, Clone)]
pub struct LogPaths {
    /// stderr (the tracing log of our binaries, mosquitto's log).
    pub stderr: PathBuf,
    /// stdout (the simulator's `listening on` line).
    pub stdout: PathBuf,
}

impl LogPaths {
    /// `<dir>/<name>.log` for stderr and `<dir>/<name>.out` for stdout.
    pub fn in_dir(dir: &Path, name: &str) -> LogPaths {
        LogPaths {
            stderr: dir.join(format!("{name}.log")),
            stdout: dir.join(format!("{name}.out")),
        }
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| HarnessError::io("open log file", path, e))
}

/// A running child process, killed and reaped when dropped.
pub struct ChildProcess {
    what: String,
    program: PathBuf,
    child: Child,
    logs: LogPaths,
    exited: Option<ExitStatus>,
}

impl ChildProcess {
    /// Spawns `cmd` with stdin closed and stdout/stderr appended to `logs`. A header line naming
    /// the command goes to the stderr log first, so restarts are visible in one file.
    pub fn spawn(what: &str, mut cmd: Command, logs: LogPaths) -> Result<ChildProcess> {
        let program = PathBuf::from(cmd.get_program());
        let mut stderr = open_append(&logs.stderr)?;
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let stamp = time::OffsetDateTime::now_utc();
        // Best effort: the header only helps a reader; a failed write shows up on the spawn below.
        let _ = writeln!(
            stderr,
            "==> {stamp} harness starts {what}: {} {}",
            program.display(),
            args.join(" ")
        );
        let stdout = open_append(&logs.stdout)?;
        // Plain text in the log files: tracing-subscriber honours NO_COLOR.
        cmd.env("NO_COLOR", "1");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        let child = cmd.spawn().map_err(|source| HarnessError::Spawn {
            what: what.to_string(),
            program: program.clone(),
            source,
        })?;
        Ok(ChildProcess {
            what: what.to_string(),
            program,
            child,
            logs,
            exited: None,
        })
    }

    /// What this process is, for messages.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The program that was started.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Its process id.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Its log files.
    pub fn logs(&self) -> &LogPaths {
        &self.logs
    }

    /// `Some(status)` once it has exited (reaped), `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
            }
        }
        self.exited
    }

    /// Ok while it runs; an error naming its log once it has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.exit_status() {
            None => Ok(()),
            Some(status) => Err(HarnessError::Exited {
                what: self.what.clone(),
                status,
                log: self.logs.stderr.clone(),
            }),
        }
    }

    fn signal(&self, signal: Signal, name: &'static str) -> Result<()> {
        kill(self.pid(), signal).map_err(|source| HarnessError::Signal {
            what: self.what.clone(),
            signal: name,
            pid: self.pid().as_raw(),
            source,
        })
    }

    /// SIGKILL, then reap. Returns the exit status (signalled).
    pub fn kill_hard(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exit_status() {
            return Ok(status);
        }
        self.signal(Signal::SIGKILL, "SIGKILL")?;
        let status = self
            .child
            .wait()
            .map_err(|e| HarnessError::io("wait for", &self.program, e))?;
        self.exited = Some(status);
        Ok(status)
    }

    /// SIGTERM, then wait up to `grace` for a clean exit; SIGKILL after that.
    /// Returns the exit status and whether the process exited by itself within the grace period.
    pub fn terminate(&mut self, grace: Duration) -> Result<(ExitStatus, bool)> {
        if let Some(status) = self.exit_status() {
            return Ok((status, true));
        }
        self.signal(Signal::SIGTERM, "SIGTERM")?;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                return Ok((status, true));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        Ok((self.kill_hard()?, false))
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            // Nothing useful can be done about a failure here; the process is gone or ours to reap.
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Waits until something accepts TCP connections on `addr`, failing early if `process` exits.
pub async fn wait_for_tcp(
    addr: SocketAddr,
    process: &mut ChildProcess,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        process.ensure_running()?;
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: format!("{} to accept TCP connections on {addr}", process.what()),
                waited: timeout,
                look_at: process.logs().stderr.clone(),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The part of a log file written by the latest run (after the last harness header line).
pub fn latest_run(text: &str) -> &str {
    match text.rfind("==> ") {
        Some(i) => &text[i..],
        None => text,
    }
}

/// Waits until the latest run's part of `path` has a line for which `pick` returns `Some`,
/// failing early if `process` exits. Reads the simulator's `listening on` line from its stdout
/// and the relay's from its log.
pub async fn wait_for_line<T>(
    path: &Path,
    process: &mut ChildProcess,
    timeout: Duration,
    what: &str,
    pick: impl Fn(&str) -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Some(found) = latest_run(&text).lines().find_map(&pick) {
                return Ok(found);
            }
        }
        process.ensure_running()?;
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: what.to_string(),
                waited: timeout,
                look_at: path.to_path_buf(),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Peak resident set size (`VmHWM`) of process `pid` in KiB, from `/proc/<pid>/status`.
pub fn vm_hwm_kib(pid: Pid) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.as_raw())).ok()?;
    parse_status_kib(&status, "VmHWM")
}

/// Current resident set size (`VmRSS`) of process `pid` in KiB.
pub fn vm_rss_kib(pid: Pid) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.as_raw())).ok()?;
    parse_status_kib(&status, "VmRSS")
}

/// The value in kB of `key` in the text of a `/proc/<pid>/status` file.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut parts = rest.split_whitespace();
        let value = parts.next()?.parse().ok()?;
        (parts.next() == Some("kB")).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_is_read_from_the_vmhwm_line_in_kib() {
        let status = "Name:\tagent\nVmPeak:\t  900 kB\nVmHWM:\t   12345 kB\nVmRSS:\t  9000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(12345));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(9000));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn the_running_test_process_has_a_peak_rss() {
        let me = Pid::from_raw(std::process::id() as i32);
        assert!(vm_hwm_kib(me).is_some_and(|kib| kib > 0));
    }

    #[test]
    fn dropping_a_child_process_kills_it() {
        let dir = StateDir::temp("drop").expect("dir");
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let child = ChildProcess::spawn("sleep", cmd, LogPaths::in_dir(dir.path(), "sleep"))
            .expect("spawn sleep");
        let pid = child.pid();
        drop(child);
        // Reaped by drop: the pid no longer names a live process of ours.
        assert!(kill(pid, None).is_err());
    }
}

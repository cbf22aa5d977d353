//! Opening a serial port with its configured line settings (tokio-serial, raw mode, exclusive),
//! the capped backoff between reopen attempts, and the words health and logs use for each failure.
//!
//! A USB scanner that is unplugged shows up as a read error (EIO) or end of file on the open port,
//! then as "No such file or directory" on reopen until it is plugged in again; the source keeps
//! trying at the backoff's pace and never restarts the agent for it.

use std::io;
use std::time::Duration;

use tokio_serial::{DataBits, FlowControl, Parity, SerialPortBuilderExt, SerialStream, StopBits};

use crate::config::{SerialConfig, SerialParity};

/// Why a port could not be opened or stopped delivering bytes. `Display` is the health detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("open failed: {0}")]
    NotFound(String),
    #[error("open failed: {0}; add the agent's user to the dialout group (or the group owning the device)")]
    PermissionDenied(String),
    #[error("open failed: {0}; another program holds the port open")]
    Busy(String),
    #[error("open failed: {0}; check baud, data_bits, parity and stop_bits")]
    Settings(String),
    #[error("open failed: {0}")]
    Open(String),
    #[error("port lost: {0}")]
    Lost(String),
    #[error("port lost: end of file (device hung up)")]
    Eof,
}

/// Opens `cfg.path` with the configured line settings, exclusively, in raw mode.
pub fn open(cfg: &SerialConfig) -> Result<SerialStream, PortError> {
    let path = cfg.path.to_string_lossy().into_owned();
    let data_bits = match cfg.data_bits {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        _ => DataBits::Eight,
    };
    let stop_bits = if cfg.stop_bits == 2 {
        StopBits::Two
    } else {
        StopBits::One
    };
    let parity = match cfg.parity {
        SerialParity::None => Parity::None,
        SerialParity::Even => Parity::Even,
        SerialParity::Odd => Parity::Odd,
    };
    tokio_serial::new(path, cfg.baud)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .parity(parity)
        .flow_control(FlowControl::None)
        .open_native_async()
        .map_err(classify_open)
}

/// Sorts an open error into what the technician should do about it.
fn classify_open(e: tokio_serial::Error) -> PortError {
    use tokio_serial::ErrorKind as K;
    let detail = e.description.clone();
    match e.kind {
        K::Io(io::ErrorKind::NotFound) => PortError::NotFound(detail),
        K::Io(io::ErrorKind::PermissionDenied) => PortError::PermissionDenied(detail),
        K::NoDevice => PortError::Busy(detail),
        K::InvalidInput => PortError::Settings(detail),
        _ => PortError::Open(detail),
    }
}

/// A read error on an open port (unplugged: EIO; hung up; gone).
pub fn lost(e: &io::Error) -> PortError {
    PortError::Lost(e.to_string())
}

/// Capped exponential backoff between open attempts (no jitter: nothing else competes for a
/// local device).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The wait before the next attempt; doubles up to the cap.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// After a successful open: the next failure starts over at the initial wait.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// `250ms`, `4s`, `1.5s`: how a wait reads in a health detail.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// `9600 8N1`: the line settings in the usual notation.
pub fn line_settings(cfg: &SerialConfig) -> String {
    let parity = match cfg.parity {
        SerialParity::None => 'N',
        SerialParity::Even => 'E',
        SerialParity::Odd => 'O',
    };
    format!("{} {}{}{}", cfg.baud, cfg.data_bits, parity, cfg.stop_bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::serial::framing::Framing;

    fn cfg(path: &str) -> SerialConfig {
        SerialConfig {
            name: "s".into(),
            path: path.into(),
            baud: 9600,
            parity: SerialParity::Even,
            data_bits: 7,
            stop_bits: 1,
            framing: Framing::Cr,
            idle_gap: Duration::from_millis(50),
            max_line: 256,
            device: "SC-07".into(),
            aim: true,
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_starts_over_after_a_reset() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(4));
        let waits: Vec<_> = (0..7).map(|_| human(b.next_wait())).collect();
        assert_eq!(waits, ["250ms", "500ms", "1s", "2s", "4s", "4s", "4s"]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(250));
    }

    #[test]
    fn a_missing_device_is_reported_as_open_failed_with_the_system_message() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let _guard = rt.enter();
        let err = open(&cfg("/nonexistent/scanbridge-tty")).expect_err("no such device");
        assert_eq!(
            err.to_string(),
            "open failed: No such file or directory",
            "{err:?}"
        );
    }

    #[test]
    fn a_permission_error_tells_the_technician_about_the_dialout_group() {
        let e = classify_open(tokio_serial::Error::new(
            tokio_serial::ErrorKind::Io(io::ErrorKind::PermissionDenied),
            "Permission denied",
        ));
        assert!(e.to_string().contains("dialout group"), "{e}");
    }

    #[test]
    fn line_settings_read_in_the_usual_notation() {
        assert_eq!(line_settings(&cfg("/dev/x")), "9600 7E1");
    }

    #[test]
    fn waits_read_naturally() {
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human(Duration::from_secs(10)), "10s");
    }
}

//! Serial scanners (`[[serial]]`): one [`SerialSource`] per port reads bytes, frames them into
//! lines ([`framing`]), turns each line into an event ([`line`]) and hands it to the store writer.
//!
//! Serial has no acknowledgement, so "accepted" means committed: a line is counted as accepted
//! only when the writer's commit notice for it arrives. A line read but not yet committed when the
//! process dies is lost with the process (as is a partial line); nothing else is.
//!
//! One `select!` loop per port owns everything: the port (or the reopen timer while it is gone),
//! the framer, the idle-gap timer (`framing = "idle"`), a small queue of events waiting for room
//! in the writer's bounded channel, and the commit notices. The port is read only while that queue
//! is empty, so a writer that pauses (buffer cap, disk full) stops the reads and the bytes wait in
//! the kernel's tty buffer (a scanner without flow control may then lose bytes at the UART once that
//! fills; the agent never drops what it has read).
//!
//! A port that disappears (USB unplugged: EIO or end of file on read, then "No such file or
//! directory" on open) is reopened with capped backoff ([`port::Backoff`]) until it returns; its
//! health (`SourceKind::Serial`, name = `[[serial]] name`) says why it is down and when the next
//! attempt is. A line cut off by the unplug is quarantined ("cut off"), not dropped.

pub mod framing;
pub mod line;
pub mod port;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_serial::SerialStream;
use tokio_util::sync::CancellationToken;

use self::framing::{Frame, Framer, Framing};
use self::line::PortLabels;
use self::port::{Backoff, PortError};
use crate::config::SerialConfig;
use crate::normalise::Stations;
use crate::sources::{newer_tables, Health, TablesRx};
use crate::store::{Committed, IngestItem, SourceId};

/// Bytes asked for per read (a few hundred scans at most).
const READ_CHUNK: usize = 4096;
/// How long shutdown waits for the writer to take and commit what was read.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// First wait before reopening a port, and the cap.
const RETRY_INITIAL: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Why a serial source stopped.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("serial port {port}: the store writer has stopped, cannot ingest")]
    WriterGone { port: String },
}

/// One configured serial port feeding the store writer.
pub struct SerialSource {
    cfg: SerialConfig,
    stations: Arc<Stations>,
    /// Newer stations from a configuration reload.
    tables: Option<TablesRx>,
    /// This source's slot at the writer (commit notices come back for it).
    source_id: SourceId,
    /// Into the store writer; dropped when the source stops so the writer can drain and finish.
    ingest: mpsc::Sender<IngestItem>,
    /// Commit notices from the writer.
    committed: mpsc::Receiver<Committed>,
    health: Health,
    health_slot: usize,
    cancel: CancellationToken,
    retry_initial: Duration,
    retry_max: Duration,
}

impl SerialSource {
    pub fn new(
        cfg: SerialConfig,
        stations: Arc<Stations>,
        source_id: SourceId,
        ingest: mpsc::Sender<IngestItem>,
        committed: mpsc::Receiver<Committed>,
        health: Health,
        cancel: CancellationToken,
    ) -> SerialSource {
        let health_slot = health.register(&cfg.name, scanbridge_protocol::SourceKind::Serial);
        SerialSource {
            cfg,
            stations,
            tables: None,
            source_id,
            ingest,
            committed,
            health,
            health_slot,
            cancel,
            retry_initial: RETRY_INITIAL,
            retry_max: RETRY_MAX,
        }
    }

    /// Takes newer stations from `tables` (configuration reload) from the next line on; the
    /// current value of `tables` replaces the stations given so far.
    pub fn with_table_updates(mut self, mut tables: TablesRx) -> SerialSource {
        self.stations = tables.borrow_and_update().stations.clone();
        self.tables = Some(tables);
        self
    }

    /// This source's slot on the [`Health`] board.
    pub fn health_slot(&self) -> usize {
        self.health_slot
    }

    /// Overrides the reopen backoff (tests).
    pub fn with_retry(mut self, initial: Duration, max: Duration) -> SerialSource {
        self.retry_initial = initial;
        self.retry_max = max;
        self
    }

    /// Runs until cancelled. A missing or lost port is retried forever; only a vanished writer
    /// ends it early.
    pub async fn run(self) -> Result<(), SerialError> {
        let SerialSource {
            cfg,
            stations,
            tables,
            source_id,
            ingest,
            committed,
            health,
            health_slot,
            cancel,
            retry_initial,
            retry_max,
        } = self;
        let mut reader = Reader {
            labels: PortLabels {
                port: cfg.name.clone(),
                device: cfg.device.clone(),
                aim: cfg.aim,
            },
            framer: Framer::new(cfg.framing, cfg.max_line),
            backoff: Backoff::new(retry_initial, retry_max),
            cfg,
            stations,
            tables,
            source_id,
            ingest: Some(ingest),
            committed,
            health,
            health_slot,
            cancel,
            queue: VecDeque::new(),
            frames: Vec::new(),
            next_token: 0,
            in_flight: 0,
            lines_committed: 0,
            noise_reported: 0,
            open_failures: 0,
        };
        let result = reader.run().await;
        reader.shutdown().await;
        result
    }
}

/// The state of one port's loop.
struct Reader {
    cfg: SerialConfig,
    labels: PortLabels,
    stations: Arc<Stations>,
    tables: Option<TablesRx>,
    source_id: SourceId,
    /// `None` once shutdown has handed everything over (dropping it lets the writer finish).
    ingest: Option<mpsc::Sender<IngestItem>>,
    committed: mpsc::Receiver<Committed>,
    health: Health,
    health_slot: usize,
    cancel: CancellationToken,
    framer: Framer,
    backoff: Backoff,
    /// Events waiting for room in the writer's channel, in line order.
    queue: VecDeque<IngestItem>,
    /// Scratch space for the framer's output.
    frames: Vec<Frame>,
    next_token: u64,
    /// Events handed to the writer and not yet reported committed.
    in_flight: u64,
    /// Lines (and quarantine records) committed since start: the accepted count.
    lines_committed: u64,
    /// Skipped bytes (noise, overlong rests) already logged.
    noise_reported: u64,
    /// Consecutive failed opens (the first is logged at WARN, the rest at DEBUG).
    open_failures: u64,
}

impl Reader {
    async fn run(&mut self) -> Result<(), SerialError> {
        let mut port: Option<SerialStream> = None;
        // An open in progress on the blocking pool (a dying USB device can stall open(2)).
        let mut opening: Option<tokio::task::JoinHandle<Result<SerialStream, PortError>>> = None;
        let mut reopen_at = Instant::now();
        let mut last_byte = Instant::now();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let idle_due = (self.cfg.framing == Framing::Idle && self.framer.in_progress())
                .then(|| last_byte + self.cfg.idle_gap);
            let Some(ingest) = self.ingest.clone() else {
                return Ok(());
            };
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    if port.take().is_some() {
                        self.close_framer();
                    }
                    return Ok(());
                }
                notice = self.committed.recv() => match notice {
                    Some(c) => self.on_committed(&c),
                    None => return Err(self.writer_gone()),
                },
                permit = ingest.reserve(), if !self.queue.is_empty() => match (permit, self.queue.pop_front()) {
                    (Ok(permit), Some(item)) => {
                        permit.send(item);
                        self.in_flight += 1;
                    }
                    (Ok(_), None) => {}
                    (Err(_), _) => return Err(self.writer_gone()),
                },
                read = read_some(&mut port, &mut buf), if port.is_some() && self.queue.is_empty() => match read {
                    Ok(0) => {
                        port = None;
                        reopen_at = self.port_lost(PortError::Eof);
                    }
                    Ok(n) => {
                        last_byte = Instant::now();
                        self.framer.push(&buf[..n], &mut self.frames);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        port = None;
                        reopen_at = self.port_lost(port::lost(&e));
                    }
                },
                // After the read branch: bytes already waiting are never taken for a gap, and no gap
                // is declared while the reads are held back by a full writer queue.
                _ = sleep_until_some(idle_due), if idle_due.is_some() && self.queue.is_empty() => {
                    self.framer.gap(&mut self.frames);
                }
                _ = tokio::time::sleep_until(reopen_at), if port.is_none() && opening.is_none() => {
                    let cfg = self.cfg.clone();
                    opening = Some(tokio::task::spawn_blocking(move || port::open(&cfg)));
                }
                opened = join_opening(&mut opening), if opening.is_some() => {
                    opening = None;
                    match opened {
                        Ok(p) => {
                            port = Some(p);
                            self.opened();
                        }
                        Err(e) => reopen_at = self.open_failed(e),
                    }
                }
            }
            self.drain_frames();
        }
    }

    /// Frames → events at the back of the queue.
    fn drain_frames(&mut self) {
        if self.frames.is_empty() {
            return;
        }
        if let Some(t) = newer_tables(&mut self.tables) {
            self.stations = t.stations;
        }
        let received_at = crate::now_micros();
        for frame in self.frames.drain(..) {
            let event = line::event_for(&self.labels, &self.stations, frame, received_at);
            let token = self.next_token;
            self.next_token += 1;
            self.queue.push_back(IngestItem {
                source: self.source_id,
                token,
                event,
                mqtt: None,
                scan_id: None,
            });
        }
        let stats = self.framer.stats();
        let skipped = stats.noise_bytes + stats.skipped_bytes;
        if skipped > self.noise_reported {
            tracing::debug!(port = %self.cfg.name, noise_bytes = stats.noise_bytes, overlong_skipped_bytes = stats.skipped_bytes, "serial bytes skipped (NUL bytes between lines, empty lines, the rest of overlong lines)");
            self.noise_reported = skipped;
        }
    }

    fn on_committed(&mut self, c: &Committed) {
        let n = c.tokens.len() as u64;
        self.in_flight = self.in_flight.saturating_sub(n);
        self.lines_committed += n;
    }

    fn opened(&mut self) {
        self.backoff.reset();
        self.open_failures = 0;
        let detail = format!(
            "open ({}, framing {})",
            port::line_settings(&self.cfg),
            self.cfg.framing
        );
        tracing::info!(port = %self.cfg.name, path = %self.cfg.path.display(), settings = %detail, "serial port open");
        self.health.set(self.health_slot, true, detail);
    }

    /// Records a failed open; returns when to try again.
    fn open_failed(&mut self, e: PortError) -> Instant {
        let wait = self.backoff.next_wait();
        let detail = format!("{e}, retrying in {}", port::human(wait));
        if self.open_failures == 0 {
            tracing::warn!(port = %self.cfg.name, path = %self.cfg.path.display(), error = %e, "cannot open serial port; retrying with backoff");
        } else {
            tracing::debug!(port = %self.cfg.name, error = %e, "serial port still unavailable");
        }
        self.open_failures += 1;
        self.health.set(self.health_slot, false, detail);
        Instant::now() + wait
    }

    /// The open port failed: quarantine any partial line, report, schedule the reopen.
    fn port_lost(&mut self, e: PortError) -> Instant {
        self.close_framer();
        let wait = self.backoff.next_wait();
        tracing::warn!(port = %self.cfg.name, path = %self.cfg.path.display(), error = %e, lines_committed = self.lines_committed, "serial port lost (unplugged?); reopening when it returns");
        self.health.set(
            self.health_slot,
            false,
            format!("{e}, reopening in {}", port::human(wait)),
        );
        Instant::now() + wait
    }

    /// The port closed: a line in progress ends here (cut off, or complete in idle framing).
    fn close_framer(&mut self) {
        self.framer.finish(&mut self.frames);
        self.drain_frames();
    }

    fn writer_gone(&self) -> SerialError {
        SerialError::WriterGone {
            port: self.cfg.name.clone(),
        }
    }

    /// Hands the queue to the writer and waits for the commits (bounded), then lets go of the
    /// writer so it can finish.
    async fn shutdown(&mut self) {
        let deadline = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(deadline);
        while let Some(ingest) = self.ingest.clone() {
            if self.queue.is_empty() {
                break;
            }
            tokio::select! {
                _ = &mut deadline => break,
                notice = self.committed.recv() => match notice {
                    Some(c) => self.on_committed(&c),
                    None => break,
                },
                permit = ingest.reserve() => match (permit, self.queue.pop_front()) {
                    (Ok(permit), Some(item)) => {
                        permit.send(item);
                        self.in_flight += 1;
                    }
                    _ => break,
                },
            }
        }
        self.ingest = None;
        while self.in_flight > 0 {
            tokio::select! {
                _ = &mut deadline => break,
                notice = self.committed.recv() => match notice {
                    Some(c) => self.on_committed(&c),
                    None => break,
                },
            }
        }
        if self.in_flight > 0 || !self.queue.is_empty() {
            tracing::warn!(port = %self.cfg.name, uncommitted = self.in_flight + self.queue.len() as u64, "shutdown before every serial line read was committed; those lines are lost");
        }
        tracing::info!(port = %self.cfg.name, lines_committed = self.lines_committed, "serial port stopped");
        self.health.set(self.health_slot, false, "stopped");
    }
}

/// Reads from the port if there is one (the branch guard makes sure there is).
async fn read_some(port: &mut Option<SerialStream>, buf: &mut [u8]) -> std::io::Result<usize> {
    match port {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Waits for the open in progress, if any (the branch guard makes sure there is).
async fn join_opening(
    opening: &mut Option<tokio::task::JoinHandle<Result<SerialStream, PortError>>>,
) -> Result<SerialStream, PortError> {
    match opening {
        Some(handle) => match handle.await {
            Ok(result) => result,
            Err(e) => Err(PortError::Open(format!("open task failed: {e}"))),
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

//! The serial source and the store on real pseudo-terminals: the test holds the pty master (the
//! "scanner"), the agent opens the slave through a symlink as it would open
//! `/dev/serial/by-id/...`. Normal lines, lines split across writes, noise, overlong lines,
//! invalid UTF-8, idle framing, several ports at once, and unplug/replug (master closed and link
//! removed, then a new pty behind the same link) with the agent running throughout. Every line
//! must be committed exactly once, in order per port.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, PtyMaster};
use scanbridge_agent::config::{SerialConfig, SerialParity, Station, StoreConfig};
use scanbridge_agent::normalise::Stations;
use scanbridge_agent::sources::serial::framing::Framing;
use scanbridge_agent::sources::serial::{SerialError, SerialSource};
use scanbridge_agent::sources::Health;
use scanbridge_agent::store::{Store, StoreError, Writer};
use scanbridge_protocol::{Event, EventBody, Operation, Source, SourceHealth, Symbology};
use tokio_util::sync::CancellationToken;

/// A pseudo-terminal standing in for a plugged-in scanner, reachable through `link`.
struct Scanner {
    master: PtyMaster,
    link: PathBuf,
}

impl Scanner {
    /// A new pty whose slave is reachable at `link` (as udev's by-id link would be).
    fn plug(link: &Path) -> Scanner {
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).expect("posix_openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let slave = ptsname_r(&master).expect("ptsname");
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&slave, link).expect("symlink to the pty slave");
        Scanner {
            master,
            link: link.to_path_buf(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.master
            .write_all(bytes)
            .expect("write to the pty master");
    }

    /// The USB cable is pulled: the device node goes away, then the line hangs up.
    fn unplug(self) {
        std::fs::remove_file(&self.link).expect("remove link");
        drop(self.master);
    }
}

struct Agent {
    store: Store,
    health: Health,
    cancel: CancellationToken,
    sources: Vec<tokio::task::JoinHandle<Result<(), SerialError>>>,
    writer: std::thread::JoinHandle<Result<(), StoreError>>,
}

fn port(name: &str, path: &Path, framing: Framing) -> SerialConfig {
    SerialConfig {
        name: name.into(),
        path: path.to_path_buf(),
        baud: 115_200,
        parity: SerialParity::None,
        data_bits: 8,
        stop_bits: 1,
        framing,
        idle_gap: Duration::from_millis(50),
        max_line: 64,
        device: "SC-07".into(),
        aim: true,
    }
}

fn start(dir: &Path, ports: Vec<SerialConfig>) -> Agent {
    let store = Store::open(&dir.join("agent.redb"), 1 << 30).expect("open store");
    let notify = Arc::new(tokio::sync::Notify::new());
    let (mut writer, ingest) = Writer::new(store.clone(), &StoreConfig::default(), 8192, notify);
    let stations = Arc::new(Stations::new(&[Station {
        device: "SC-07".into(),
        op: Operation::Receive,
        location: Some("WH-IN-01".into()),
    }]));
    let health = Health::default();
    let cancel = CancellationToken::new();
    let mut sources = Vec::new();
    for p in ports {
        let (id, notices) = writer.add_source(256);
        let source = SerialSource::new(
            p,
            stations.clone(),
            id,
            ingest.clone(),
            notices,
            health.clone(),
            cancel.clone(),
        )
        .with_retry(Duration::from_millis(50), Duration::from_millis(400));
        sources.push(tokio::spawn(source.run()));
    }
    drop(ingest);
    let writer = writer
        .spawn(tokio::runtime::Handle::current(), cancel.clone())
        .expect("writer");
    Agent {
        store,
        health,
        cancel,
        sources,
        writer,
    }
}

impl Agent {
    async fn port_health(&self, i: usize, what: &str, f: impl Fn(&SourceHealth) -> bool) {
        let h = self.health.clone();
        common::eventually(Duration::from_secs(30), what, || {
            h.snapshot().get(i).filter(|s| f(s)).map(|_| ())
        })
        .await;
    }

    async fn port_up(&self, i: usize) {
        self.port_health(i, "the serial port to open", |s| s.up)
            .await;
    }

    async fn committed(&self, n: u64) {
        let store = self.store.clone();
        common::eventually(
            Duration::from_secs(60),
            &format!("{n} events committed"),
            || (store.stats().backlog_events >= n).then_some(()),
        )
        .await;
    }

    /// Stops the agent and returns every committed event in seq order.
    async fn stop(self) -> Vec<Event> {
        self.cancel.cancel();
        for s in self.sources {
            tokio::time::timeout(Duration::from_secs(30), s)
                .await
                .expect("source stops")
                .expect("source task")
                .expect("source ok");
        }
        let w = self.writer;
        let joined = tokio::task::spawn_blocking(move || w.join())
            .await
            .expect("join");
        assert!(matches!(joined, Ok(Ok(()))), "writer ended cleanly");
        let events = self.store.read_oldest_blocking(usize::MAX).expect("read");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1, "seqs are consecutive from 1");
        }
        events
    }
}

fn code(e: &Event) -> &str {
    match &e.body {
        EventBody::Scan(s) => &s.code,
        other => panic!("event {} is not a scan: {other:?}", e.seq),
    }
}

fn quarantine(e: &Event) -> (&[u8], &str) {
    match &e.body {
        EventBody::Quarantined(q) => (&q.raw, &q.reason),
        other => panic!("event {} is not quarantined: {other:?}", e.seq),
    }
}

/// `SC-<port>-<n>` style codes that pass the normaliser (no GTIN length, no control characters).
fn line(tag: &str, n: usize) -> String {
    format!("LOT-{tag}-{n:06}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_written_to_a_pty_are_committed_once_in_order_with_symbology_and_station() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("ttySCAN0");
    let mut scanner = Scanner::plug(&link);
    let agent = start(dir.path(), vec![port("dock", &link, Framing::Cr)]);
    agent.port_up(0).await;

    scanner.send(b"]E04006381333931\r]C10109501101530003\x1d10LOT42\r");
    const N: usize = 2000;
    let mut bytes = Vec::new();
    for i in 0..N {
        bytes.extend_from_slice(line("A", i).as_bytes());
        bytes.push(b'\r');
    }
    scanner.send(&bytes);
    agent.committed(N as u64 + 2).await;
    let events = agent.stop().await;

    assert_eq!(events.len(), N + 2, "every line once, nothing else");
    let first = match &events[0].body {
        EventBody::Scan(s) => s,
        other => panic!("not a scan: {other:?}"),
    };
    assert_eq!(first.code, "4006381333931");
    assert_eq!(first.symbology, Symbology::Ean13, "from the ]E0 prefix");
    assert_eq!(
        first.op,
        Some(Operation::Receive),
        "from the device's station"
    );
    assert_eq!(first.location.as_deref(), Some("WH-IN-01"));
    assert_eq!(events[0].device, "SC-07");
    assert_eq!(
        events[0].source,
        Source::Serial {
            port: "dock".into()
        }
    );
    match &events[1].body {
        EventBody::Scan(s) => {
            assert_eq!(s.symbology, Symbology::Gs1_128);
            let gs1 = s.gs1.as_ref().expect("GS1 parsed");
            assert_eq!(gs1.gtin.as_deref(), Some("09501101530003"));
            assert_eq!(gs1.lot.as_deref(), Some("LOT42"));
        }
        other => panic!("not a scan: {other:?}"),
    }
    for (i, e) in events[2..].iter().enumerate() {
        assert_eq!(code(e), line("A", i), "line order kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_split_across_writes_are_reassembled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("ttySCAN0");
    let mut scanner = Scanner::plug(&link);
    let agent = start(dir.path(), vec![port("dock", &link, Framing::CrLf)]);
    agent.port_up(0).await;

    const N: usize = 200;
    for i in 0..N {
        let l = format!("{}\r\n", line("S", i));
        let b = l.as_bytes();
        // Split at a different place each time, including inside the CRLF.
        let cut = 1 + i % (b.len() - 1);
        scanner.send(&b[..cut]);
        if i % 10 == 0 {
            // Let the agent read the first half on its own now and then.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        scanner.send(&b[cut..]);
    }
    agent.committed(N as u64).await;
    let events = agent.stop().await;
    let codes: Vec<&str> = events.iter().map(code).collect();
    let want: Vec<String> = (0..N).map(|i| line("S", i)).collect();
    assert_eq!(codes, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_overlong_lines_and_invalid_utf8_are_quarantined_and_the_lines_around_them_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("ttySCAN0");
    let mut scanner = Scanner::plug(&link);
    let agent = start(dir.path(), vec![port("dock", &link, Framing::Lf)]);
    agent.port_up(0).await;

    let overlong = "X".repeat(100); // max_line is 64
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"\0\0\0GOOD-1\n"); // power-up NULs: noise
    bytes.extend_from_slice(b"\n\r\n"); // empty lines: noise
    bytes.extend_from_slice(format!("{overlong}\r\n").as_bytes());
    bytes.extend_from_slice(b"GOOD-2\r\n");
    bytes.extend_from_slice(b"caf\xe9\n"); // Latin-1, not UTF-8
    bytes.extend_from_slice(b"GO\x00OD\n"); // a corrupted byte
    bytes.extend_from_slice(b"\x1b\n"); // a lone control character
    bytes.extend_from_slice(b"GOOD-3\n");
    scanner.send(&bytes);
    agent.committed(7).await;
    let events = agent.stop().await;
    assert_eq!(events.len(), 7, "{events:#?}");

    assert_eq!(code(&events[0]), "GOOD-1");
    let (raw, reason) = quarantine(&events[1]);
    assert_eq!(raw, &overlong.as_bytes()[..64], "the bytes seen so far");
    assert!(reason.contains("longer than 64 bytes"), "{reason}");
    assert_eq!(
        code(&events[2]),
        "GOOD-2",
        "framing resynced after the overlong line"
    );
    let (raw, reason) = quarantine(&events[3]);
    assert_eq!(raw, b"caf\xe9");
    assert!(reason.contains("not UTF-8"), "{reason}");
    let (raw, reason) = quarantine(&events[4]);
    assert_eq!(raw, b"GO\x00OD");
    assert!(reason.contains("NUL"), "{reason}");
    let (raw, reason) = quarantine(&events[5]);
    assert_eq!(raw, b"\x1b");
    assert!(reason.contains("control characters"), "{reason}");
    assert_eq!(code(&events[6]), "GOOD-3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_idle_framing_a_quiet_gap_ends_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("ttySCAN0");
    let mut scanner = Scanner::plug(&link);
    let agent = start(dir.path(), vec![port("dock", &link, Framing::Idle)]);
    agent.port_up(0).await;

    // One write each: two writes with a pause between them on a loaded machine could be a gap.
    scanner.send(b"]E04006381333931");
    agent.committed(1).await;
    scanner.send(b"SECOND-SCAN");
    agent.committed(2).await;
    let events = agent.stop().await;
    assert_eq!(events.len(), 2);
    assert_eq!(code(&events[0]), "4006381333931");
    assert_eq!(code(&events[1]), "SECOND-SCAN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplugged_port_reports_down_and_is_reopened_when_it_returns_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("usb-Scanner-if00");
    let mut scanner = Scanner::plug(&link);
    let agent = start(dir.path(), vec![port("dock", &link, Framing::Cr)]);
    agent.port_up(0).await;

    // 50 lines and half of the 51st in one write: the agent reads them together.
    let mut bytes = Vec::new();
    for i in 0..50 {
        bytes.extend_from_slice(format!("{}\r", line("U", i)).as_bytes());
    }
    bytes.extend_from_slice(b"HALF-A-LI");
    scanner.send(&bytes);
    agent.committed(50).await;

    scanner.unplug();
    agent
        .port_health(0, "the port to be reported gone", |s| {
            !s.up
                && s.detail.contains("No such file or directory")
                && s.detail.contains("retrying in")
        })
        .await;
    // The cut-off line is kept as a quarantine record.
    agent.committed(51).await;

    let mut scanner = Scanner::plug(&link);
    agent.port_up(0).await;
    let mut bytes = Vec::new();
    for i in 50..100 {
        bytes.extend_from_slice(format!("{}\r", line("U", i)).as_bytes());
    }
    scanner.send(&bytes);
    agent.committed(101).await;
    let events = agent.stop().await;

    assert_eq!(events.len(), 101, "{:#?}", &events[45..]);
    for (i, e) in events[..50].iter().enumerate() {
        assert_eq!(code(e), line("U", i));
    }
    let (raw, reason) = quarantine(&events[50]);
    assert_eq!(raw, b"HALF-A-LI");
    assert!(reason.contains("cut off"), "{reason}");
    for i in 50..100 {
        assert_eq!(
            code(&events[i + 1]),
            line("U", i),
            "lines after the replug, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_ports_are_read_at_once_each_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let links: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("ttySCAN{i}")))
        .collect();
    let mut scanners: Vec<Scanner> = links.iter().map(|l| Scanner::plug(l)).collect();
    let ports = links
        .iter()
        .enumerate()
        .map(|(i, l)| port(&format!("p{i}"), l, Framing::Cr))
        .collect();
    let agent = start(dir.path(), ports);
    for i in 0..3 {
        agent.port_up(i).await;
    }
    const N: usize = 500;
    for chunk in 0..10 {
        for (p, s) in scanners.iter_mut().enumerate() {
            let mut bytes = Vec::new();
            for i in chunk * N / 10..(chunk + 1) * N / 10 {
                bytes.extend_from_slice(format!("{}\r", line(&format!("P{p}"), i)).as_bytes());
            }
            s.send(&bytes);
        }
    }
    agent.committed(3 * N as u64).await;
    let events = agent.stop().await;
    assert_eq!(events.len(), 3 * N);
    for p in 0..3 {
        let name = format!("p{p}");
        let codes: Vec<&str> = events
            .iter()
            .filter(|e| e.source == Source::Serial { port: name.clone() })
            .map(code)
            .collect();
        let want: Vec<String> = (0..N).map(|i| line(&format!("P{p}"), i)).collect();
        assert_eq!(codes, want, "port {name}: every line once, in order");
    }
}

//! Configuration reload on SIGHUP (real binary, real mosquitto, mutual TLS): topic filters and
//! stations change without a restart while messages keep flowing, every message arrives exactly
//! once, a removed filter stops delivering; a bad file, or a change of `site`, is refused with
//! the reason and the running configuration stays in force. Sources whose entry did not change
//! keep running across a reload: a serial port stays open (a line written half before and half
//! after arrives whole) and an MQTT connection is not dropped (the broker's own log counts the
//! connections) while a changed source restarts.
#![allow(clippy::unwrap_used)]

mod common;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use scanbridge_protocol::{EventBody, Operation};
use support::recording_relay::RecordingRelay;
use support::{Agent, AgentSetup};

fn payloads(prefix: &str, range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    range
        .map(|i| format!(r#"{{"code":"{prefix}-{i}","qty":{i}}}"#).into_bytes())
        .collect()
}

/// Codes at the relay (acknowledged), with how many times each was acknowledged.
fn codes(relay: &RecordingRelay) -> BTreeMap<String, u32> {
    let s = relay.seen.lock().unwrap();
    let mut out = BTreeMap::new();
    for (e, n) in s.acked.values() {
        if let EventBody::Scan(sc) = &e.body {
            *out.entry(sc.code.clone()).or_insert(0) += *n;
        }
    }
    out
}

async fn wait_subscribed(addr: &str, sources: usize) {
    let a = addr.to_string();
    common::eventually_async(Duration::from_secs(60), "sources subscribed", || {
        let a = a.clone();
        async move {
            let r = support::report(&a).await;
            let s = r["status"]["sources"].as_array()?.clone();
            (s.len() == sources && s.iter().all(|x| x["detail"] == "connected, subscribed"))
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_switches_topics_and_stations_while_messages_flow_and_none_is_lost() {
    const N: u32 = 10_000;
    let broker = common::Broker::start();
    let pki = common::Pki::new();
    let relay = RecordingRelay::start(&pki.ca_pem, &pki.server_cert_pem, &pki.server_key_pem).await;
    let dir = tempfile::tempdir().unwrap();
    let mut setup = AgentSetup::new(&pki, &relay.url(), broker.port);
    setup.topics = vec!["scanbridge/+/scan".into(), "legacy/+/scan".into()];
    let cfg = setup.write(dir.path());
    let addr = setup.status_addr();
    let agent = Agent::spawn(&cfg, &dir.path().join("agent.log"));
    wait_subscribed(&addr, 1).await;

    // A steady stream on a filter that stays, spanning the reload.
    let port = broker.port;
    let stream = tokio::spawn(async move {
        common::publish_all(
            port,
            "stream",
            "scanbridge/SC-01/scan",
            payloads("KEEP", 0..N),
        )
        .await;
    });
    let seen = relay.seen.clone();
    common::eventually(Duration::from_secs(60), "the stream under way", || {
        (seen.lock().unwrap().acked.len() >= 100).then_some(())
    })
    .await;

    let before = seen.lock().unwrap().acked.len();
    eprintln!("{before} of {N} stream events acknowledged when SIGHUP was sent");
    setup.topics = vec!["scanbridge/+/scan".into(), "plant/+/scan".into()];
    setup.extra =
        "\n[[stations]]\ndevice = \"SC-02\"\nop = \"count\"\nlocation = \"LOC-NEW\"\n".into();
    setup.write(dir.path());
    agent.sighup();
    agent
        .wait_log("configuration reloaded", 1, Duration::from_secs(60))
        .await;
    let log = agent.log_text();
    assert!(log.contains("sources_restarted=true"), "{log}");
    assert!(
        log.contains("unsubscribed topic filters removed from the configuration"),
        "{log}"
    );
    wait_subscribed(&addr, 1).await;

    // The removed filter no longer delivers, the added one does, with the new station.
    common::publish_all(
        broker.port,
        "old",
        "legacy/SC-09/scan",
        payloads("LEGACY", 0..5),
    )
    .await;
    common::publish_all(
        broker.port,
        "new",
        "plant/SC-02/scan",
        payloads("PLANT", 0..5),
    )
    .await;
    stream.await.unwrap();
    let relay_ref = &relay;
    common::eventually(
        Duration::from_secs(120),
        "stream and plant events at the relay",
        || {
            let c = codes(relay_ref);
            let keep = c.keys().filter(|k| k.starts_with("KEEP-")).count();
            let plant = c.keys().filter(|k| k.starts_with("PLANT-")).count();
            (keep == N as usize && plant == 5).then_some(())
        },
    )
    .await;
    let c = codes(&relay);
    assert!(c.values().all(|n| *n == 1), "a message acknowledged twice");
    assert!(
        !c.keys().any(|k| k.starts_with("LEGACY-")),
        "the removed filter still delivered"
    );
    let s = relay.seen.lock().unwrap();
    let seqs: Vec<u64> = s.acked.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "seqs contiguous"
    );
    assert_eq!(seqs.len(), N as usize + 5, "no event stored twice");
    for (e, _) in s.acked.values() {
        if let EventBody::Scan(sc) = &e.body {
            if sc.code.starts_with("PLANT-") {
                assert_eq!(sc.op, Some(Operation::Count), "new station applied");
                assert_eq!(sc.location.as_deref(), Some("LOC-NEW"));
            }
        }
    }
    drop(s);
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_or_a_site_change_is_refused_and_the_running_configuration_stays() {
    let broker = common::Broker::start();
    let pki = common::Pki::new();
    let relay = RecordingRelay::start(&pki.ca_pem, &pki.server_cert_pem, &pki.server_key_pem).await;
    let dir = tempfile::tempdir().unwrap();
    let mut setup = AgentSetup::new(&pki, &relay.url(), broker.port);
    let cfg = setup.write(dir.path());
    let addr = setup.status_addr();
    let agent = Agent::spawn(&cfg, &dir.path().join("agent.log"));
    wait_subscribed(&addr, 1).await;

    let good = setup.text();
    std::fs::write(
        &cfg,
        good.replace("batch_max_events = 500", "batch_max_events = 0"),
    )
    .unwrap();
    agent.sighup();
    agent
        .wait_log("refusing the new configuration", 1, Duration::from_secs(60))
        .await;
    assert!(agent.log_text().contains("relay.batch_max_events"));

    std::fs::write(&cfg, good.replace("site = \"WH01\"", "site = \"WH02\"")).unwrap();
    agent.sighup();
    agent
        .wait_log(
            "`site` changed (WH01 → WH02): that needs a restart of the agent",
            1,
            Duration::from_secs(60),
        )
        .await;

    // Still running on the old configuration.
    common::publish_all(
        broker.port,
        "p",
        "scanbridge/SC-01/scan",
        payloads("A", 0..10),
    )
    .await;
    common::eventually(Duration::from_secs(60), "10 events", || {
        (codes(&relay).len() == 10).then_some(())
    })
    .await;
    assert!(!agent.log_text().contains("configuration reloaded"));

    // A change that waits for a restart is applied around: sources reload, agent_id waits.
    setup.topics = vec!["other/+/scan".into()];
    std::fs::write(
        &cfg,
        setup
            .text()
            .replace("agent_id = \"test-gw\"", "agent_id = \"renamed\""),
    )
    .unwrap();
    agent.sighup();
    agent
        .wait_log("configuration reloaded", 1, Duration::from_secs(60))
        .await;
    assert!(agent
        .log_text()
        .contains("changed in the configuration; takes effect at the next restart"));
    wait_subscribed(&addr, 1).await;
    common::publish_all(broker.port, "p", "other/SC-01/scan", payloads("B", 0..3)).await;
    common::eventually(Duration::from_secs(60), "13 events", || {
        (codes(&relay).len() == 13).then_some(())
    })
    .await;
    agent.stop();
}

/// A pseudo-terminal standing in for a serial scanner, its slave reachable at `link`.
struct Pty {
    master: nix::pty::PtyMaster,
}

impl Pty {
    fn plug(link: &std::path::Path) -> Pty {
        use nix::fcntl::OFlag;
        use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        std::os::unix::fs::symlink(ptsname_r(&master).unwrap(), link).unwrap();
        Pty { master }
    }

    fn send(&mut self, line: &str) {
        use std::io::Write;
        self.master.write_all(line.as_bytes()).unwrap();
    }
}

fn serial_table(name: &str, link: &std::path::Path, device: &str) -> String {
    format!(
        "\n[[serial]]\nname = \"{name}\"\npath = \"{}\"\nframing = \"lf\"\ndevice = \"{device}\"\naim = false\n",
        link.display()
    )
}

async fn wait_sources_up(addr: &str, n: usize) {
    let a = addr.to_string();
    common::eventually_async(Duration::from_secs(60), "every source up", || {
        let a = a.clone();
        async move {
            let r = support::report(&a).await;
            let s = r["status"]["sources"].as_array()?.clone();
            (s.len() == n && s.iter().all(|x| x["up"] == true)).then_some(())
        }
    })
    .await;
}

/// Device of each acknowledged scan, by code.
fn devices(relay: &RecordingRelay) -> BTreeMap<String, String> {
    let s = relay.seen.lock().unwrap();
    s.acked
        .values()
        .filter_map(|(e, _)| match &e.body {
            EventBody::Scan(sc) => Some((sc.code.clone(), e.device.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_serial_port_and_changes_another_ports_device() {
    let broker = common::Broker::start();
    let pki = common::Pki::new();
    let relay = RecordingRelay::start(&pki.ca_pem, &pki.server_cert_pem, &pki.server_key_pem).await;
    let dir = tempfile::tempdir().unwrap();
    let (link_a, link_b) = (dir.path().join("ttyA"), dir.path().join("ttyB"));
    let mut a = Pty::plug(&link_a);
    let mut b = Pty::plug(&link_b);
    let mut setup = AgentSetup::new(&pki, &relay.url(), broker.port);
    setup.extra = serial_table("dock", &link_a, "SC-07");
    let cfg = setup.write(dir.path());
    let addr = setup.status_addr();
    let agent = Agent::spawn(&cfg, &dir.path().join("agent.log"));
    wait_sources_up(&addr, 2).await;
    a.send("DOCK-1\n");
    let relay_ref = &relay;
    common::eventually(Duration::from_secs(60), "DOCK-1", || {
        devices(relay_ref).contains_key("DOCK-1").then_some(())
    })
    .await;

    setup.extra = format!(
        "{}{}",
        serial_table("dock", &link_a, "SC-08"),
        serial_table("gate", &link_b, "SC-09")
    );
    setup.write(dir.path());
    agent.sighup();
    agent
        .wait_log("configuration reloaded", 1, Duration::from_secs(60))
        .await;
    wait_sources_up(&addr, 3).await;
    a.send("DOCK-2\n");
    b.send("GATE-1\n");
    common::eventually(Duration::from_secs(60), "DOCK-2 and GATE-1", || {
        let d = devices(relay_ref);
        (d.contains_key("DOCK-2") && d.contains_key("GATE-1")).then_some(())
    })
    .await;
    let d = devices(&relay);
    assert_eq!(d["DOCK-1"], "SC-07");
    assert_eq!(d["DOCK-2"], "SC-08", "the port's new device applies");
    assert_eq!(d["GATE-1"], "SC-09");
    assert!(relay
        .seen
        .lock()
        .unwrap()
        .acked
        .values()
        .all(|(_, n)| *n == 1));
    assert_eq!(d.len(), 3);
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_serial_port_stays_open_across_sighup_and_a_line_spanning_it_arrives_whole() {
    let broker = common::Broker::start();
    let pki = common::Pki::new();
    let relay = RecordingRelay::start(&pki.ca_pem, &pki.server_cert_pem, &pki.server_key_pem).await;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyA");
    let mut a = Pty::plug(&link);
    let mut setup = AgentSetup::new(&pki, &relay.url(), broker.port);
    setup.extra = serial_table("dock", &link, "SC-07");
    let cfg = setup.write(dir.path());
    let addr = setup.status_addr();
    let agent = Agent::spawn(&cfg, &dir.path().join("agent.log"));
    wait_sources_up(&addr, 2).await;
    // One write: the agent reads the half line with FIRST, which is at the relay before SIGHUP.
    a.send("FIRST\nHALF-");
    let relay_ref = &relay;
    common::eventually(Duration::from_secs(60), "FIRST", || {
        devices(relay_ref).contains_key("FIRST").then_some(())
    })
    .await;

    // The broker's topics and the stations change; the port's own entry does not.
    setup.topics = vec!["other/+/scan".into()];
    setup.extra = format!(
        "{}\n[[stations]]\ndevice = \"SC-07\"\nop = \"count\"\nlocation = \"LOC-DOCK\"\n",
        serial_table("dock", &link, "SC-07")
    );
    setup.write(dir.path());
    agent.sighup();
    agent
        .wait_log("configuration reloaded", 1, Duration::from_secs(60))
        .await;
    let log = agent.log_text();
    assert!(log.contains("kept=[\"dock\"]"), "{log}");
    assert!(log.contains("started=[\"site\"]"), "{log}");
    a.send("DONE\n");
    // Reopening the port would have cut the line: "DONE" alone would arrive.
    common::eventually(Duration::from_secs(60), "the line ending in DONE", || {
        devices(relay_ref)
            .keys()
            .any(|k| k.ends_with("DONE"))
            .then_some(())
    })
    .await;

    let s = relay.seen.lock().unwrap();
    let mut scans = BTreeMap::new();
    for (e, n) in s.acked.values() {
        match &e.body {
            EventBody::Scan(sc) => {
                scans.insert(sc.code.clone(), (sc.location.clone(), *n));
            }
            other => panic!("only whole scans expected, got {other:?}"),
        }
    }
    drop(s);
    assert_eq!(scans.len(), 2, "{scans:?}");
    assert_eq!(scans["FIRST"], (None, 1));
    assert_eq!(
        scans["HALF-DONE"],
        (Some("LOC-DOCK".to_string()), 1),
        "the new stations apply to the port that kept running"
    );
    assert!(!agent.log_text().contains("cut off"));
    agent.stop();
}

/// A mosquitto process that logs every connection to a file; killed on drop.
struct LoggingBroker {
    port: u16,
    log: std::path::PathBuf,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl LoggingBroker {
    fn start() -> LoggingBroker {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let log = dir.path().join("mosquitto.log");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\n{}log_dest stderr\nlog_type all\nconnection_messages true\n",
                common::shipped_broker_settings()
            ),
        )
        .unwrap();
        let binary = [
            "/usr/sbin/mosquitto",
            "/usr/bin/mosquitto",
            "/usr/local/sbin/mosquitto",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("mosquitto is not installed: run tests/run.sh (it installs mosquitto)");
        let child = std::process::Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            // Started as root, mosquitto drops privileges before opening a log file: its stderr.
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        LoggingBroker {
            port,
            log,
            child,
            _dir: dir,
        }
    }

    /// How many times the broker accepted a connection from `client_id`.
    fn connections(&self, client_id: &str) -> usize {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let needle = format!(" as {client_id} (");
        text.lines()
            .filter(|l| l.contains("New client connected") && l.contains(&needle))
            .count()
    }
}

impl Drop for LoggingBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_broker_keeps_its_connection_while_a_changed_one_restarts() {
    let broker = LoggingBroker::start();
    let pki = common::Pki::new();
    let relay = RecordingRelay::start(&pki.ca_pem, &pki.server_cert_pem, &pki.server_key_pem).await;
    let dir = tempfile::tempdir().unwrap();
    let plc = |topic: &str| {
        format!(
            "\n[[mqtt]]\nname = \"plc\"\nhost = \"127.0.0.1\"\nport = {}\nclient_id = \"plc-gw\"\ntopics = [\"{topic}\"]\n",
            broker.port
        )
    };
    let mut setup = AgentSetup::new(&pki, &relay.url(), broker.port);
    setup.extra = plc("plc/+/scan");
    let cfg = setup.write(dir.path());
    let addr = setup.status_addr();
    let agent = Agent::spawn(&cfg, &dir.path().join("agent.log"));
    wait_subscribed(&addr, 2).await;
    common::eventually(
        Duration::from_secs(30),
        "both connections in the broker log",
        || {
            (broker.connections("scanbridge-agent-WH01") == 1 && broker.connections("plc-gw") == 1)
                .then_some(())
        },
    )
    .await;
    common::publish_all(
        broker.port,
        "p1",
        "scanbridge/SC-01/scan",
        payloads("SITE", 0..3),
    )
    .await;
    let relay_ref = &relay;
    common::eventually(Duration::from_secs(60), "3 events", || {
        (codes(relay_ref).len() == 3).then_some(())
    })
    .await;

    setup.extra = plc("plc2/+/scan");
    setup.write(dir.path());
    agent.sighup();
    agent
        .wait_log("configuration reloaded", 1, Duration::from_secs(60))
        .await;
    let log = agent.log_text();
    assert!(log.contains("kept=[\"site\"]"), "{log}");
    assert!(log.contains("stopped=[\"plc\"]"), "{log}");
    wait_subscribed(&addr, 2).await;
    // The changed broker reconnected (the unsubscribe connection may come in between).
    common::eventually(
        Duration::from_secs(30),
        "the plc broker reconnected",
        || (broker.connections("plc-gw") >= 2).then_some(()),
    )
    .await;

    common::publish_all(
        broker.port,
        "p2",
        "scanbridge/SC-01/scan",
        payloads("SITE", 3..6),
    )
    .await;
    common::publish_all(broker.port, "p3", "plc2/SC-02/scan", payloads("PLC", 0..3)).await;
    common::publish_all(broker.port, "p4", "plc/SC-02/scan", payloads("OLD", 0..3)).await;
    common::eventually(Duration::from_secs(60), "9 events", || {
        (codes(relay_ref).len() == 9).then_some(())
    })
    .await;
    let c = codes(&relay);
    assert!(c.values().all(|n| *n == 1), "a message acknowledged twice");
    assert!(!c.keys().any(|k| k.starts_with("OLD-")), "{c:?}");
    assert_eq!(
        broker.connections("scanbridge-agent-WH01"),
        1,
        "the unchanged broker's connection was dropped and made again"
    );
    assert_eq!(
        agent
            .log_text()
            .matches("connected to MQTT broker broker=site")
            .count(),
        1
    );
    agent.stop();
}

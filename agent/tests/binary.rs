//! The `scanbridge-agent` binary as a process: command line, exit codes, and invariant 1 under
//! `kill -9` — with a real mosquitto, the real binary and a fake mutual-TLS relay, every message
//! the broker accepted reaches the relay exactly once, in seq order, however often the agent is
//! killed mid-stream.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::relay::FakeRelay;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use scanbridge_protocol::EventBody;

const BIN: &str = env!("CARGO_BIN_EXE_scanbridge-agent");

fn write_config(dir: &Path, pki: &common::Pki, relay_url: &str, mqtt_port: u16) -> PathBuf {
    let text = format!(
        r#"site = "WH01"
agent_id = "test-gw"
state_dir = "state"

[store]
commit_linger_ms = 2

[relay]
url = "{relay_url}"
ca_cert = "{ca}"
client_cert = "{cert}"
client_key = "{key}"
batch_max_events = 500
heartbeat_secs = 60
retry_initial_ms = 20
retry_max_ms = 200

[[mqtt]]
name = "site"
host = "127.0.0.1"
port = {mqtt_port}
client_id = "scanbridge-agent-WH01"
topics = ["scanbridge/+/scan"]
"#,
        ca = pki.path("ca.pem").display(),
        cert = pki.path("site.pem").display(),
        key = pki.path("site.key").display(),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn spawn_agent(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start agent")
}

#[test]
fn check_config_prints_ok_for_a_good_file() {
    let pki = common::Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &pki, "https://127.0.0.1:8443", 1883);
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn a_bad_config_exits_64_naming_key_and_line_for_check_config_and_run() {
    let pki = common::Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &pki, "https://127.0.0.1:8443", 1883);
    let text = std::fs::read_to_string(&cfg)
        .expect("read")
        .replace("batch_max_events = 500", "batch_max_events = 0");
    std::fs::write(&cfg, text).expect("write");
    for args in [
        vec!["check-config".to_string()],
        vec!["run".into(), "--config".into()],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .arg(&cfg)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("relay.batch_max_events") && err.contains("line 13"),
            "{args:?}: {err}"
        );
    }
    assert!(
        !dir.path().join("state").exists(),
        "a refused config creates no state"
    );
}

/// Creates the agent's persistent session (and subscription) so the broker queues for it while
/// the agent is down.
async fn create_session(port: u16) {
    let mut o = MqttOptions::new("scanbridge-agent-WH01", "127.0.0.1", port);
    o.set_clean_session(false);
    let (client, mut el) = AsyncClient::new(o, 10);
    client
        .subscribe("scanbridge/+/scan", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), el.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("cannot create the agent session: {other:?}"),
        }
    }
    client.disconnect().await.expect("disconnect");
    let _ = tokio::time::timeout(Duration::from_secs(2), el.poll()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_reaches_the_relay_exactly_once_although_the_agent_is_killed_mid_stream() {
    const N: usize = 30_000;
    let broker = common::Broker::start();
    let pki = common::Pki::new();
    let relay = FakeRelay::start(
        &pki.ca_pem,
        &pki.server_cert_pem,
        &pki.server_key_pem,
        vec![],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &pki, &relay.url(), broker.port);
    let log = dir.path().join("agent.log");
    create_session(broker.port).await;

    let port = broker.port;
    let publisher = tokio::spawn(async move {
        let payloads = (0..N)
            .map(|i| format!(r#"{{"code":"4006381333931","qty":{i}}}"#).into_bytes())
            .collect();
        common::publish_all(port, "publisher", "scanbridge/SC-01/scan", payloads).await;
    });

    let mut agent = spawn_agent(&cfg, &log);
    for (round, fraction) in [0.05, 0.3, 0.6].into_iter().enumerate() {
        let want = (N as f64 * fraction) as usize;
        let rec = relay.recorded.clone();
        common::eventually(
            Duration::from_secs(120),
            "relay progress before a kill",
            || (rec.lock().expect("lock").events.len() >= want).then_some(()),
        )
        .await;
        agent.kill().expect("SIGKILL the agent");
        agent.wait().expect("reap");
        eprintln!("killed the agent (round {round}) at >= {want} events at the relay");
        agent = spawn_agent(&cfg, &log);
    }
    publisher.await.expect("publisher");

    let rec = relay.recorded.clone();
    let outcome = common::eventually(
        Duration::from_secs(180),
        "every message at the relay",
        || {
            let r = rec.lock().expect("lock");
            let qtys: std::collections::BTreeSet<u64> = r
                .events
                .values()
                .filter_map(|e| match &e.body {
                    EventBody::Scan(s) => s.qty.map(|q| q as u64),
                    _ => None,
                })
                .collect();
            (qtys.len() == N).then(|| {
                let mut by_qty: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
                for (seq, e) in &r.events {
                    if let EventBody::Scan(s) = &e.body {
                        by_qty
                            .entry(s.qty.unwrap_or(-1.0) as u64)
                            .or_default()
                            .push(*seq);
                    }
                }
                let dups: Vec<(u64, Vec<u64>)> = by_qty
                    .into_iter()
                    .filter(|(_, v)| v.len() > 1)
                    .take(10)
                    .collect();
                (
                    r.events.len(),
                    r.events.keys().copied().collect::<Vec<_>>(),
                    dups,
                )
            })
        },
    )
    .await;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(agent.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = agent.wait().expect("wait");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status:?}\n{log_text}"
    );

    let (count, seqs, dups) = outcome;
    assert!(
        dups.is_empty(),
        "messages stored twice (qty → seqs): {dups:?}\nagent log:\n{}",
        log_text
            .lines()
            .filter(|l| !l.contains("committed"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        count, N,
        "no message stored twice (duplicates would take extra seqs)"
    );
    assert_eq!(
        seqs,
        (1..=N as u64).collect::<Vec<_>>(),
        "seqs consecutive, none reused"
    );
}

//! Broker access against a real mosquitto with a TLS listener (certificates made here with
//! rcgen), a client certificate requirement and a password file (mosquitto_passwd): the agent
//! connects with the broker's CA, its client certificate and username + password_file; a wrong
//! password or a wrong CA shows as a clear reason in the source's health while the agent keeps
//! retrying; and one agent takes in from two brokers at once (TLS and plain) into one store.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event as MqttEvent, Incoming, MqttOptions, QoS, Transport};
use scanbridge_agent::config::{MqttConfig, MqttTls, Password, StoreConfig};
use scanbridge_agent::normalise::Stations;
use scanbridge_agent::sources::mqtt::{MqttError, MqttSource, SUBSCRIBED};
use scanbridge_agent::sources::Health;
use scanbridge_agent::store::{Store, StoreError, Writer};
use scanbridge_protocol::{EventBody, Source};
use tokio_util::sync::CancellationToken;

const USER: &str = "agent-wh01";
const PASSWORD: &str = "correct horse battery";

/// CA, broker certificate for 127.0.0.1, and a client certificate, as PEM files in `dir`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        for ca_name in ["ca", "other-ca"] {
            let ca_key = KeyPair::generate().unwrap();
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            // OpenSSL (mosquitto) takes a certificate whose subject equals its issuer for a
            // self-signed one: every certificate gets its own name.
            ca_params
                .distinguished_name
                .push(DnType::CommonName, format!("Scanbridge test {ca_name}"));
            let ca = ca_params.self_signed(&ca_key).unwrap();
            write(&format!("{ca_name}.pem"), ca.pem());
            if ca_name != "ca" {
                continue;
            }
            let server_key = KeyPair::generate().unwrap();
            let mut sp = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            sp.distinguished_name
                .push(DnType::CommonName, "test broker");
            sp.subject_alt_names
                .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
            write(
                "server.pem",
                sp.signed_by(&server_key, &ca, &ca_key).unwrap().pem(),
            );
            write("server.key", server_key.serialize_pem());
            let client_key = KeyPair::generate().unwrap();
            let mut cp = CertificateParams::new(vec!["agent-wh01".to_string()]).unwrap();
            cp.distinguished_name.push(DnType::CommonName, "agent-wh01");
            write(
                "client.pem",
                cp.signed_by(&client_key, &ca, &ca_key).unwrap().pem(),
            );
            write("client.key", client_key.serialize_pem());
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// mosquitto with one TLS listener requiring a client certificate and a password; killed on drop.
struct TlsBroker {
    port: u16,
    child: Child,
    passwd: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsBroker {
    fn start(pki: &Pki) -> TlsBroker {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        set_password(&passwd, PASSWORD);
        let port = common::free_port();
        let conf = dir.path().join("mosquitto.conf");
        let mut text = format!(
            "listener {port} 127.0.0.1\n\
             cafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
             require_certificate true\n\
             allow_anonymous false\npassword_file {passwd}\n\
             {shipped}",
            ca = pki.path("ca.pem").display(),
            cert = pki.path("server.pem").display(),
            key = pki.path("server.key").display(),
            passwd = passwd.display(),
            shipped = common::shipped_broker_settings(),
        );
        if running_as_root() {
            // Keep root so mosquitto can read the files of the test's temp directories.
            text.push_str("user root\n");
        }
        std::fs::write(&conf, text).unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto (run tests/run.sh first: it installs mosquitto)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsBroker {
            port,
            child,
            passwd,
            _dir: dir,
        }
    }

    /// Replaces the password of `USER` and makes mosquitto reload its password file.
    fn change_password(&self, password: &str) {
        set_password(&self.passwd, password);
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the effective uid is 0 (from /proc, without unsafe code).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn set_password(file: &Path, password: &str) {
    let status = Command::new("mosquitto_passwd")
        .arg("-c")
        .arg("-b")
        .arg(file)
        .arg(USER)
        .arg(password)
        .stdout(Stdio::null())
        .status()
        .expect("mosquitto_passwd (package mosquitto)");
    assert!(status.success(), "mosquitto_passwd failed");
}

fn tls_config(pki: &Pki, ca: &str, port: u16, name: &str, password: &str) -> MqttConfig {
    MqttConfig {
        name: name.into(),
        host: "127.0.0.1".into(),
        port,
        client_id: format!("scanbridge-{name}"),
        topics: vec!["scanbridge/+/scan".into()],
        tls: Some(MqttTls {
            ca_cert: pki.path(ca),
            client_cert: Some(pki.path("client.pem")),
            client_key: Some(pki.path("client.key")),
        }),
        username: Some(USER.into()),
        password: Some(Password(password.into())),
        ..MqttConfig::default()
    }
}

struct Agent {
    store: Store,
    health: Health,
    cancel: CancellationToken,
    sources: Vec<tokio::task::JoinHandle<Result<(), MqttError>>>,
    writer: std::thread::JoinHandle<Result<(), StoreError>>,
}

fn start_agent(dir: &Path, brokers: Vec<MqttConfig>) -> Agent {
    let store = Store::open(&dir.join("agent.redb"), 1 << 30).unwrap();
    let notify = Arc::new(tokio::sync::Notify::new());
    let (mut writer, ingest) = Writer::new(store.clone(), &StoreConfig::default(), 1024, notify);
    let health = Health::default();
    let cancel = CancellationToken::new();
    let mut sources = Vec::new();
    for cfg in brokers {
        let (id, notices) = writer.add_source(256);
        let source = MqttSource::new(
            cfg,
            Arc::new(Stations::default()),
            id,
            ingest.clone(),
            notices,
            health.clone(),
            cancel.clone(),
        )
        .with_keep_alive(Duration::from_secs(5));
        sources.push(tokio::spawn(source.run()));
    }
    drop(ingest);
    let writer = writer
        .spawn(tokio::runtime::Handle::current(), cancel.clone())
        .unwrap();
    Agent {
        store,
        health,
        cancel,
        sources,
        writer,
    }
}

impl Agent {
    /// Waits until source `slot`'s health detail satisfies `pred`; returns it.
    async fn health_until(&self, slot: usize, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let detail = self.health.snapshot()[slot].detail.clone();
            if pred(&detail) {
                return detail;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; health says {detail:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) -> Store {
        self.cancel.cancel();
        for s in self.sources {
            tokio::time::timeout(Duration::from_secs(30), s)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        let w = self.writer;
        let joined = tokio::task::spawn_blocking(move || w.join()).await.unwrap();
        assert!(matches!(joined, Ok(Ok(()))), "writer ended cleanly");
        self.store
    }
}

/// Publishes one QoS 1 message and waits for the broker's PUBACK; TLS + credentials when given.
async fn publish_one(port: u16, tls: Option<&Pki>, code: &str) {
    let mut opts = MqttOptions::new(format!("publisher-{code}"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    if let Some(pki) = tls {
        opts.set_transport(Transport::tls(
            std::fs::read(pki.path("ca.pem")).unwrap(),
            Some((
                std::fs::read(pki.path("client.pem")).unwrap(),
                std::fs::read(pki.path("client.key")).unwrap(),
            )),
            None,
        ));
        opts.set_credentials(USER, PASSWORD);
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    client
        .publish(
            "scanbridge/SC-01/scan",
            QoS::AtLeastOnce,
            false,
            format!(r#"{{"code":"{code}"}}"#),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no PUBACK for {code}");
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(MqttEvent::Incoming(Incoming::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher failed: {e}"),
            Err(_) => panic!("publisher stalled"),
        }
    }
    let _ = client.disconnect().await;
}

fn scans(store: &Store) -> Vec<(String, String)> {
    store
        .read_oldest_blocking(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| match (e.source, e.body) {
            (Source::Mqtt { broker, .. }, EventBody::Scan(s)) => (broker, s.code),
            other => panic!("unexpected event {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_takes_in_from_a_tls_broker_with_password_and_a_plain_broker_at_once() {
    let pki = Pki::new();
    let tls_broker = TlsBroker::start(&pki);
    let plain_broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let plain = MqttConfig {
        name: "plain".into(),
        host: "127.0.0.1".into(),
        port: plain_broker.port,
        client_id: "scanbridge-plain".into(),
        topics: vec!["scanbridge/+/scan".into()],
        ..MqttConfig::default()
    };
    let agent = start_agent(
        dir.path(),
        vec![
            tls_config(&pki, "ca.pem", tls_broker.port, "secure", PASSWORD),
            plain,
        ],
    );
    agent
        .health_until(0, "the TLS source to subscribe", |d| d == SUBSCRIBED)
        .await;
    agent
        .health_until(1, "the plain source to subscribe", |d| d == SUBSCRIBED)
        .await;

    publish_one(tls_broker.port, Some(&pki), "TLS-1").await;
    publish_one(plain_broker.port, None, "PLAIN-1").await;
    let store = agent.store.clone();
    common::eventually(Duration::from_secs(30), "both scans committed", || {
        (store.stats().backlog_events >= 2).then_some(())
    })
    .await;
    let store = agent.stop().await;
    let mut got = scans(&store);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("plain".to_string(), "PLAIN-1".to_string()),
            ("secure".to_string(), "TLS-1".to_string())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_shows_in_health_and_the_agent_keeps_retrying_until_it_is_accepted() {
    let pki = Pki::new();
    let broker = TlsBroker::start(&pki);
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(
        dir.path(),
        vec![tls_config(
            &pki,
            "ca.pem",
            broker.port,
            "secure",
            "not the password",
        )],
    );
    let detail = agent
        .health_until(0, "the refused login in health", |d| d.contains("refused"))
        .await;
    assert!(
        detail.contains("username") && detail.contains("password_file"),
        "the detail says what to check: {detail}"
    );
    assert!(
        !agent.health.snapshot()[0].up,
        "a refused source is shown down"
    );

    // The site fixes the broker side; the agent, still retrying, gets in without a restart.
    broker.change_password("not the password");
    agent
        .health_until(0, "the agent to connect after the fix", |d| d == SUBSCRIBED)
        .await;
    publish_one_with_password(broker.port, &pki, "not the password", "AFTER-FIX").await;
    let store = agent.store.clone();
    common::eventually(Duration::from_secs(30), "the scan committed", || {
        (store.stats().backlog_events >= 1).then_some(())
    })
    .await;
    let store = agent.stop().await;
    assert_eq!(
        scans(&store),
        vec![("secure".to_string(), "AFTER-FIX".to_string())]
    );
}

async fn publish_one_with_password(port: u16, pki: &Pki, password: &str, code: &str) {
    let mut opts = MqttOptions::new(format!("publisher-{code}"), "127.0.0.1", port);
    opts.set_transport(Transport::tls(
        std::fs::read(pki.path("ca.pem")).unwrap(),
        Some((
            std::fs::read(pki.path("client.pem")).unwrap(),
            std::fs::read(pki.path("client.key")).unwrap(),
        )),
        None,
    ));
    opts.set_credentials(USER, password);
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    client
        .publish(
            "scanbridge/SC-01/scan",
            QoS::AtLeastOnce,
            false,
            format!(r#"{{"code":"{code}"}}"#),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no PUBACK for {code}");
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(MqttEvent::Incoming(Incoming::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher failed: {e}"),
            Err(_) => panic!("publisher stalled"),
        }
    }
    let _ = client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_from_another_ca_shows_a_tls_failure_in_health() {
    let pki = Pki::new();
    let broker = TlsBroker::start(&pki);
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(
        dir.path(),
        vec![tls_config(
            &pki,
            "other-ca.pem",
            broker.port,
            "secure",
            PASSWORD,
        )],
    );
    let detail = agent
        .health_until(0, "the TLS failure in health", |d| {
            d.starts_with("TLS with broker")
        })
        .await;
    assert!(detail.contains("tls.ca_cert"), "{detail}");
    assert!(!agent.health.snapshot()[0].up);
    let store = agent.stop().await;
    assert_eq!(store.stats().backlog_events, 0);
}
